"""Plots the lessons share: training curves and 2-D embeddings coloured by a label."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _axes(ax, figsize=(5, 3.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_history(history, keys: Sequence[str] | None = None, ax=None, logy: bool = False, title: str | None = None):
    """Training curve: one line per logged quantity of a :class:`~sclecture.training.History`
    (or a dict of lists), against the epoch. Validation curves are dashed."""
    epochs = history.epoch if hasattr(history, "epoch") else dict(history)
    if not epochs:
        raise ValueError("the history is empty: train for at least one epoch first")
    keys = list(keys) if keys is not None else [k for k in epochs if not k.startswith("val_")]
    missing = [k for k in keys if k not in epochs]
    if missing:
        raise KeyError(f"no {missing} in the history; it has {sorted(epochs)}")
    ax = _axes(ax)
    for k in keys:
        line = ax.plot(np.arange(1, len(epochs[k]) + 1), epochs[k], label=k)[0]
        if f"val_{k}" in epochs:
            ax.plot(np.arange(1, len(epochs[f"val_{k}"]) + 1), epochs[f"val_{k}"], "--", color=line.get_color(), label=f"val_{k}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss" if keys == ["loss"] else "value")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return ax


def plot_embedding(
    embedding,
    labels=None,
    ax=None,
    title: str | None = None,
    s: float = 4,
    legend: bool = True,
    cmap: str = "tab20",
    xlabel: str = "dimension 1",
    ylabel: str = "dimension 2",
):
    """Scatter of a 2-D embedding (cells x 2), coloured by a categorical label.

    Missing labels (NaN / None) are drawn in light grey and named "unlabelled".
    A numeric, non-integer label gets a colour bar instead of a legend.
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    emb = np.asarray(embedding)
    if emb.ndim != 2 or emb.shape[1] < 2:
        raise ValueError(f"embedding must be cells x 2 (or more; the first two columns are drawn), got shape {emb.shape}")
    ax = _axes(ax, figsize=(5, 4.5))
    if labels is None:
        ax.scatter(emb[:, 0], emb[:, 1], s=s, color="0.3", linewidths=0)
    else:
        lab = pd.Series(np.asarray(labels, dtype=object) if not hasattr(labels, "cat") else labels)
        if len(lab) != emb.shape[0]:
            raise ValueError(f"{len(lab)} labels for {emb.shape[0]} points: give one label per row of the embedding")
        numeric = pd.api.types.is_numeric_dtype(pd.Series(labels)) and pd.Series(labels).nunique() > 20
        if numeric:
            sc = ax.scatter(emb[:, 0], emb[:, 1], c=np.asarray(labels, dtype=float), s=s, cmap="viridis", linewidths=0)
            plt.colorbar(sc, ax=ax)
        else:
            missing = lab.isna().to_numpy()
            cats = sorted(pd.unique(lab[~missing]).tolist(), key=str)
            colours = plt.get_cmap(cmap if len(cats) > 10 else "tab10")
            if missing.any():
                ax.scatter(emb[missing, 0], emb[missing, 1], s=s, color="0.85", linewidths=0, label="unlabelled")
            for i, c in enumerate(cats):
                m = (lab == c).to_numpy()
                ax.scatter(emb[m, 0], emb[m, 1], s=s, color=colours(i % colours.N), linewidths=0, label=str(c))
            if legend:
                ax.legend(markerscale=3 / max(s, 1) * 3, frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def plot_confusion(y_true, y_pred, labels: Sequence | None = None, ax=None, normalize: bool = True, title: str | None = None):
    """Confusion matrix (rows: true label, columns: predicted), as fractions of each row."""
    from sklearn.metrics import confusion_matrix

    labels = list(labels) if labels is not None else sorted(set(np.asarray(y_true).tolist()) | set(np.asarray(y_pred).tolist()), key=str)
    cm = confusion_matrix(y_true, y_pred, labels=labels).astype(float)
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax = _axes(ax, figsize=(0.45 * len(labels) + 2.5, 0.45 * len(labels) + 2))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(labels)), [str(l) for l in labels], rotation=90)
    ax.set_yticks(range(len(labels)), [str(l) for l in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j] > 0:
                ax.text(j, i, f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}", ha="center", va="center",
                        fontsize=7, color="white" if cm[i, j] > 0.6 * cm.max() else "black")
    if title:
        ax.set_title(title)
    return ax
