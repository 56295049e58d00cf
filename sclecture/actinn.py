"""Lesson 03: ACTINN, supervised cell-type identification (Ma and Pellegrini, 2019).

A faithful port of ACTINN's published code (``actinn_format.py`` and
``actinn_predict.py`` in github.com/mafeiyang/ACTINN), built on the course's MLP and
training loop:

1. per data set: gene names in upper case, repeated names and all-zero genes dropped;
2. only the genes present in every data set, sorted by name;
3. per cell i: x_i = log2(1e4 * x~_i / N_i + 1), N_i = the cell's total over those genes
   (the lecture writes log2(1e4 (x~_i + 1) / N_i): ``variant="lecture"``);
4. genes filtered on training and test cells together: summed expression within its
   1st-99th percentile, then the coefficient of variation std/mean within its 1st-99th
   percentile (the lecture: standard deviation);
5. y = f_4(f_3(f_2(f_1(x)))) with hidden widths 100, 50, 25, ReLU, softmax over k types,
   trained on the categorical likelihood plus an L2 penalty, Adam with a staircase decay.

The one deliberate change: classes are numbered in sorted order (the original numbers
them in the order of a Python ``set``, which can change from run to run).

``ACTINN(preprocess="code")`` does steps 1 to 4 on the reference alone, so that a trained
model annotates any later query, matched to the model's genes by name.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import accuracy_score
from sklearn.utils.multiclass import type_of_target
from torch import nn

from ._validation import (check_choice, check_counts, check_fitted, check_labels, check_matrix, check_positive,
                          feature_names, is_anndata)
from .base import SaveLoadMixin, StoreMixin
from .mlp import make_torch_mlp
from .training import History, fused_adam, get_device, train

__all__ = [
    "VARIANTS",
    "normalize",
    "filter_genes",
    "Features",
    "actinn_preprocess",
    "ACTINNNet",
    "actinn_loss",
    "staircase_lr",
    "accuracy_macro_f1",
    "per_class_f1",
    "ACTINN",
]

VARIANTS = ("code", "lecture")
TARGET_SUM = 1e4


# ---------------------------------------------------------------------------------------
# Preprocessing


def normalize(counts, variant: str = "code") -> np.ndarray:
    """Per-cell normalisation of a cells x genes count matrix, as float32.

    variant="code":    x_i = log2(1e4 * x~_i / N_i + 1)    (actinn_predict.py)
    variant="lecture": x_i = log2(1e4 * (x~_i + 1) / N_i)  (the slide)
    N_i = sum_g x~_ig, the cell's total over the genes given.
    """
    check_choice(variant, "variant", VARIANTS)
    X = check_matrix(counts, name="counts", dtype=np.float32)
    return _scale(X, _library_size(X), variant)


def _library_size(counts) -> np.ndarray:
    """N_i = sum_g x~_ig as a column (float64: exact for counts), refusing cells without counts."""
    N = np.asarray(counts.sum(axis=1, dtype=np.float64)).reshape(-1, 1)
    if (N <= 0).any():
        bad = np.flatnonzero(N.ravel() <= 0)
        raise ValueError(
            f"{len(bad)} cell(s) (rows {bad[:5].tolist()}) have no counts over these genes, so N_i = 0 "
            "and the normalisation divides by zero: remove those cells first"
        )
    return N


def _scale(X: np.ndarray, N: np.ndarray, variant: str) -> np.ndarray:
    """normalize's formula for float32 counts X and library sizes N; a new array (X is left unchanged)."""
    scale = (TARGET_SUM / N).astype(np.float32)
    if variant == "code":
        out = np.multiply(X, scale, dtype=np.float32)  # 1e4 * x~ / N
        out += 1
    else:
        out = np.add(X, 1, dtype=np.float32)
        out *= scale  # 1e4 (x~ + 1) / N
    return np.log2(out, out=out)


TIE_RTOL = 1e-6


def _within(values: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """values within [P_low, P_high], with a relative slack of TIE_RTOL at both ends.

    The slack keeps ties together: statistics that are equal in exact arithmetic (every
    gene seen in a single cell has CV = sqrt(n - 1)) differ by rounding error, and the
    original code (float32) keeps an arbitrary part of such a tie at a boundary.
    """
    lo, hi = np.percentile(values, percentiles)
    return (values >= lo - TIE_RTOL * abs(lo)) & (values <= hi + TIE_RTOL * abs(hi))


def _gene_moments(X: np.ndarray, block: int = 1024):
    """Per-gene sum, mean and standard deviation (ddof=0) in float64, a block of cells at a time."""
    total = np.zeros(X.shape[1])
    squares = np.zeros(X.shape[1])
    for i in range(0, X.shape[0], block):
        B = X[i:i + block].astype(np.float64)
        total += B.sum(axis=0)
        squares += np.einsum("ij,ij->j", B, B)
    mean = total / X.shape[0]
    return total, mean, np.sqrt(np.maximum(squares / X.shape[0] - mean**2, 0.0))


def filter_genes(X, variant: str = "code", percentiles: tuple[float, float] = (1, 99)) -> np.ndarray:
    """Boolean mask over the genes (columns) of a normalised cells x genes matrix.

    Genes whose values are 0 in every cell are dropped first: their mean is 0, so their
    coefficient of variation is 0/0 = NaN, and one NaN makes ``np.percentile`` NaN and
    the comparisons below drop every gene. Then, among the other genes,
    keep s_g = sum_i x_ig within [P_1(s), P_99(s)]; among those keep
    c_g = std_g / mean_g (variant="code"; "lecture": c_g = std_g) within [P_1(c), P_99(c)].
    Percentiles are NumPy's (linear interpolation), compared with a relative slack of
    1e-6 so that tied genes stay together; std divides by n (ddof=0).
    """
    check_choice(variant, "variant", VARIANTS)
    X = check_matrix(X, dtype=None)
    lo, hi = percentiles
    if not 0 <= lo < hi <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    keep = (X.max(axis=0) != 0) | (X.min(axis=0) != 0)  # the all-zero guard
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        raise ValueError("every gene is zero in every cell: there is nothing to filter")
    s, mean, sd = _gene_moments(X)
    idx = idx[_within(s[idx], percentiles)]  # s_g = sum_i x_ig
    c = sd[idx] / mean[idx] if variant == "code" else sd[idx]  # CV_g = std_g / mean_g, or std_g
    idx = idx[_within(c, percentiles)]
    mask = np.zeros(X.shape[1], dtype=bool)
    mask[idx] = True
    return mask


class Features(NamedTuple):
    """What :func:`actinn_preprocess` returns: aligned, normalised, filtered matrices."""

    train: np.ndarray
    test: np.ndarray
    genes: np.ndarray


def _counts_and_names(data, genes, name: str, layer: str | None):
    """(cells x genes counts as CSR or array, gene names, cell names or None)."""
    X = check_counts(data, layer, name=name)  # raw counts only: ACTINN normalises them itself
    names = feature_names(data) if genes is None else np.asarray(genes, dtype=str)
    if names is None:
        raise ValueError(
            f"{name} is a bare matrix without gene names: pass an AnnData or a pandas DataFrame (cells x genes) "
            f"that carries them (actinn_preprocess also takes {name}_genes=[...], one name per column)"
        )
    if names.ndim != 1 or len(names) != X.shape[1]:
        hint = " (it looks genes x cells: transpose it)" if len(names) == X.shape[0] else ""
        raise ValueError(f"{name} has {X.shape[1]} columns but {len(names)} gene names were given{hint}")
    cells = data.obs_names if is_anndata(data) else data.index if isinstance(data, pd.DataFrame) else None
    return X, names, None if cells is None else np.asarray(cells, dtype=str)


def _unique_upper(names: np.ndarray):
    """Gene names in upper case, the first of repeated names only: (names, their column indices)."""
    upper = np.char.upper(names.astype(str))
    first = np.sort(np.unique(upper, return_index=True)[1])
    return upper[first], first


def _format(X, names: np.ndarray):
    """actinn_format.py, per data set: upper-case names, first of repeated names, no all-zero genes."""
    upper, first = _unique_upper(names)
    totals = np.asarray(X[:, first].sum(axis=0)).ravel()
    return upper[totals > 0], first[totals > 0]


def actinn_preprocess(
    train,
    test,
    variant: str = "code",
    *,
    train_genes: Sequence[str] | None = None,
    test_genes: Sequence[str] | None = None,
    layer: str | None = None,
    percentiles: tuple[float, float] = (1, 99),
) -> Features:
    """ACTINN's preprocessing of a training and a test set of raw counts (cells x genes).

    ``train`` / ``test``: AnnData (counts in ``.X`` or ``layer``), pandas DataFrame
    (cells x genes), or a matrix with ``train_genes`` / ``test_genes``. Returns
    ``Features(train, test, genes)``: dense float32 matrices over the kept genes,
    in sorted gene order, so the genes' order in the inputs does not matter.
    Note that the gene filter sees the test cells too, as in the original.
    """
    check_choice(variant, "variant", VARIANTS)
    Xa, names_a, cells_a = _counts_and_names(train, train_genes, "train", layer)
    Xb, names_b, cells_b = _counts_and_names(test, test_genes, "test", layer)
    names_a, keep_a = _format(Xa, names_a)
    names_b, keep_b = _format(Xb, names_b)
    shared = np.intersect1d(names_a, names_b)  # sorted, unique
    if shared.size == 0:
        msg = f"train and test share no gene names (e.g. train: {names_a[:3].tolist()}, test: {names_b[:3].tolist()})"
        for other, cells, label in [(names_b, cells_a, "train"), (names_a, cells_b, "test")]:
            if cells is not None and np.isin(np.char.upper(cells), other).any():
                raise ValueError(f"{msg}; the {label} set's rows carry gene names: it is genes x cells, transpose it (adata.T)")
        raise ValueError(f"{msg}: use the same gene identifiers (symbols or Ensembl ids) in both, and the same species")
    cols_a = _columns(names_a, keep_a, shared)
    cols_b = _columns(names_b, keep_b, shared)
    A = normalize(Xa[:, cols_a], variant)
    B = normalize(Xb[:, cols_b], variant)
    mask = filter_genes(np.vstack([A, B]), variant, percentiles)
    # row-major (C order): a minibatch of cells is then a set of contiguous rows
    return Features(np.ascontiguousarray(A[:, mask]), np.ascontiguousarray(B[:, mask]), shared[mask])


def _columns(names: np.ndarray, keep: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """Column indices (into the original matrix) of the genes ``shared``, in that order."""
    lookup = pd.Index(names)
    return keep[lookup.get_indexer(shared)]


# ---------------------------------------------------------------------------------------
# The model and its loss


class ACTINNNet(nn.Module):
    """The network: logits h = W_4^T relu(W_3^T relu(W_2^T relu(W_1^T x + b_1) + b_2) + b_3) + b_4.

    p(y = j | x) = softmax(h)_j. Weights start Xavier-uniform (Glorot), biases at zero,
    as ``tf.contrib.layers.xavier_initializer`` and ``tf.zeros_initializer`` do.
    """

    def __init__(self, n_genes: int, n_types: int, hidden: Sequence[int] = (100, 50, 25)):
        super().__init__()
        self.mlp = make_torch_mlp((n_genes, *hidden, n_types), activation="relu", output="identity")
        for layer in self.linear_layers():
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.mlp.modules() if isinstance(m, nn.Linear)]

    def weights(self) -> list[torch.Tensor]:
        """W_1, ..., W_4 (the L2 penalty applies to these, not to the biases)."""
        return [m.weight for m in self.linear_layers()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)

    def loss(self, x: torch.Tensor, y: torch.Tensor, l2: float = 0.005) -> dict[str, torch.Tensor]:
        return actinn_loss(self(x), y, self.weights(), l2, return_terms=True)


def actinn_loss(logits, y, weights=(), l2: float = 0.005, return_terms: bool = False):
    """Mean softmax cross-entropy plus ACTINN's L2 penalty on the weights.

    loss = -(1/n) sum_i log softmax(h_i)_{y_i} + l2 * sum_l ||W_l||^2 / 2
    (the first term is -log L / n for the categorical likelihood; ``tf.nn.l2_loss(W)`` is
    sum(W^2) / 2). With ``return_terms`` a dict with "loss", "nll" and "l2".
    """
    y = torch.as_tensor(y, device=logits.device).long()
    if logits.ndim != 2 or y.shape != logits.shape[:1]:
        raise ValueError(f"logits must be n x k and y must hold n class indices; got {tuple(logits.shape)} and {tuple(y.shape)}")
    nll = -torch.log_softmax(logits, dim=1).gather(1, y[:, None]).mean()  # -(1/n) sum_i log p(y_i | x_i)
    penalty = sum((W.pow(2).sum() / 2 for W in weights), torch.zeros((), dtype=logits.dtype, device=logits.device))
    loss = nll + l2 * penalty
    return {"loss": loss, "nll": nll.detach(), "l2": (l2 * penalty).detach()} if return_terms else loss


def staircase_lr(step, lr: float = 1e-4, decay_rate: float = 0.95, decay_steps: int = 1000) -> float:
    """Learning rate at minibatch step s (counted from 0): lr * decay_rate ** floor(s / decay_steps).

    ``tf.train.exponential_decay(..., staircase=True)``, as in actinn_predict.py.
    """
    if int(decay_steps) < 1:
        raise ValueError(f"decay_steps must be a positive integer, got {decay_steps}")
    if step < 0:
        raise ValueError(f"step counts minibatch updates from 0; got {step}")
    return lr * decay_rate ** (int(step) // int(decay_steps))


# ---------------------------------------------------------------------------------------
# Scores


def _labels(y, name: str) -> np.ndarray:
    arr = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one label per cell (1-d), got shape {arr.shape}")
    return arr


def accuracy_macro_f1(y_true, y_pred) -> tuple[float, float]:
    """(accuracy, macro-F1) of predicted labels.

    accuracy = (1/n) sum_i [y_pred_i = y_true_i];
    F1_j = 2 TP_j / (2 TP_j + FP_j + FN_j) for every label j seen in y_true or y_pred
    (scikit-learn's convention), macro-F1 = their unweighted mean.
    """
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    if len(t) == 0:
        raise ValueError("no labels to score")
    f1 = per_class_f1(t, p)
    return float(np.mean(t == p)), float(f1.mean())


def per_class_f1(y_true, y_pred) -> pd.Series:
    """F1_j = 2 TP_j / (2 TP_j + FP_j + FN_j) per label (sorted), as a pandas Series."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    labels = set(t.tolist()) | set(p.tolist())
    try:
        classes = sorted(labels)
    except TypeError:  # mixed types: sort by their text
        classes = sorted(labels, key=str)
    out = {}
    for c in classes:
        tp = np.sum((t == c) & (p == c))
        denom = np.sum(t == c) + np.sum(p == c)  # 2 TP + FP + FN
        out[c] = 2 * tp / denom if denom else 0.0
    return pd.Series(out, name="F1", dtype=float)


# ---------------------------------------------------------------------------------------
# The estimator


class ACTINN(SaveLoadMixin, StoreMixin, ClassifierMixin, BaseEstimator):
    """ACTINN's classifier with the published settings as defaults.

    Two ways to use it, chosen by ``preprocess``:

    * ``preprocess=None`` (the default): ``X`` holds features made beforehand, e.g.
      ``actinn_preprocess(reference, query).train``; the model uses them as they are, and
      a query must have the same features (matched by name when ``X`` carries names).
    * ``preprocess="code"``: ``X`` holds raw counts with gene names (an AnnData, counts in
      ``.X`` or ``layer``, or a pandas DataFrame), and the model annotates a query measured
      on another gene set::

          ACTINN(preprocess="code").fit(reference, "cell_type").predict(query)

      ``fit`` formats the reference as ACTINN does (gene names upper-cased, the first of
      repeated names, no all-zero genes), normalises every cell over all its genes,
      x = log2(1e4 x~ / N + 1), and filters genes on the reference only (:func:`filter_genes`);
      the kept genes are ``feature_names_in_``. ``predict`` / ``predict_proba`` /
      ``store`` take the query's raw counts, match its genes to the model's by upper-cased
      name (any order, extra genes ignored) and normalise each query cell with its own library
      size N over all its genes. A model gene absent from the query (no column of that name)
      takes its mean over the reference's cells, mean_g = (1/n) sum_i x_ig
      (``feature_means_``): the input the network saw on average, a neutral value, as a
      scaled gene's zero is in CellTypist. Zero would not be neutral: for unscaled
      log-expression it claims the gene was measured and silent in every cell. A gene that is
      in the query but has no counts in a cell is measured: its value is 0. Values are not
      clipped: a query gene may exceed anything the reference showed (interferon-stimulated
      genes in stimulated cells) and enters the network as it is. A UserWarning says how
      many of the model's genes are missing; below ``min_gene_overlap`` (default 50 %) of
      them present, prediction refuses with a ValueError. ``"lecture"`` does the same with
      the lecture's normalisation and filter (``variant="lecture"``; lesson 03 shows why not
      to use it).

      Unlike ``actinn_preprocess``, the gene filter never sees the query, so the model does
      not depend on which cells it will annotate. On pbmc3k -> Kang (10 seeds,
      benchmarks/results/actinn_query.md) it was as accurate as the joint pipeline: mean
      accuracy 0.788 vs 0.756 on control cells and 0.599 vs 0.568 on interferon-stimulated
      ones, macro-F1 within 0.02. Both depend strongly on the seed on stimulated cells
      (0.50 to 0.69 here, 0.37 to 0.74 for the joint pipeline): the published settings take
      few steps, and how much a network leans on the genes stimulation raises (ISG15,
      IFI6, ...) varies from seed to seed. Absent genes at zero instead of their mean, or
      every gene clipped to [0, its maximum over the reference], moved accuracy by less than
      0.005 (the mean is kept as the principled choice). When the query is known at training
      time, fitting on the reference's genes that have counts in it (``reference[:, genes]``)
      did better still on stimulated cells (0.671).

    ``fit(X, y)``: ``y`` is an array with one label per cell or, for an AnnData, the name of
    an ``obs`` column. Classes are sorted (``classes_``). Training: Adam, learning rate
    lr * decay_rate ** floor(step / decay_steps), minibatches of ``batch_size``, ``epochs``
    passes, loss = mean cross-entropy + l2 * sum ||W||^2 / 2, seeded by ``random_state``
    without touching torch's global random state. Runs on CUDA when available.
    ``store(adata)`` writes ``adata.obs["actinn_prediction"]`` and
    ``adata.obs["actinn_prediction_confidence"]``; ``save(path)`` / ``ACTINN.load(path)``
    keep the hyperparameters, genes, classes, reference means and weights.

    The defaults are the paper's. They give a small reference few steps (pbmc3k: 21
    minibatches x 50 epochs = 1,050 steps at 1e-4); ``lr=1e-3`` (or more ``epochs``) fits
    the reference faster and suits larger references or longer schedules, but on pbmc3k it
    did not predict better, within pbmc3k or on Kang et al.'s cells, and it depended more
    on the seed (lesson 03; benchmarks/results/actinn.md).
    """

    _store_kind = "obs"
    _store_key = "actinn"

    def __init__(
        self,
        preprocess: str | None = None,
        hidden: Sequence[int] = (100, 50, 25),
        lr: float = 1e-4,
        decay_rate: float = 0.95,
        decay_steps: int = 1000,
        l2: float = 0.005,
        epochs: int = 50,
        batch_size: int = 128,
        min_gene_overlap: float = 0.5,
        layer: str | None = None,
        random_state: int = 0,
        device: str | None = None,
        progress: bool = False,
    ):
        self.preprocess = preprocess
        self.hidden = hidden
        self.lr = lr
        self.decay_rate = decay_rate
        self.decay_steps = decay_steps
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.min_gene_overlap = min_gene_overlap
        self.layer = layer
        self.random_state = random_state
        self.device = device
        self.progress = progress

    @property
    def _saved_attributes(self) -> tuple[str, ...]:
        names = tuple(k for k in ("feature_names_in_", "feature_means_") if hasattr(self, k))
        return ("classes_", "n_features_in_", "n_steps_", *names)

    def _build_module(self) -> ACTINNNet:
        return ACTINNNet(self.n_features_in_, len(self.classes_), self.hidden)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # sparse matrices are densified
        return tags

    def _check_params(self) -> None:
        check_choice(self.preprocess, "preprocess", (None, *VARIANTS))
        for name in ("lr", "decay_rate"):
            check_positive(getattr(self, name), name)
        check_positive(self.l2, "l2", allow_zero=True)
        check_positive(self.epochs, "epochs", integer=True, allow_zero=True)
        check_positive(self.random_state, "random_state", integer=True, allow_zero=True)
        for name in ("decay_steps", "batch_size"):
            check_positive(getattr(self, name), name, integer=True)
        for width in self.hidden:
            check_positive(width, "every width in hidden", integer=True)
        if not 0 < check_positive(self.min_gene_overlap, "min_gene_overlap") <= 1:
            raise ValueError(f"min_gene_overlap is the share of the model's genes a query must have, in (0, 1]; got {self.min_gene_overlap}")

    # -- raw counts in (preprocess="code" or "lecture") ----------------------------------
    def _reference_features(self, X):
        """The reference's normalised, filtered matrix and the kept genes' names (upper case)."""
        counts, names, _ = _counts_and_names(X, None, "X", self.layer)
        names, cols = _format(counts, names)
        order = np.argsort(names)  # sorted by name, as actinn_preprocess does
        names, cols = names[order], cols[order]
        A = normalize(counts[:, cols], self.preprocess)  # N_i over all the cell's genes
        mask = filter_genes(A, self.preprocess)  # on the reference only
        return np.ascontiguousarray(A[:, mask]), names[mask]

    def _query_features(self, X) -> np.ndarray:
        """A query's raw counts as the model's features: genes matched by name, missing ones at the reference's mean."""
        counts, names, _ = _counts_and_names(X, None, "X", self.layer)
        names, first = _unique_upper(names)
        N = _library_size(counts[:, first])  # the cell's own library size over all its genes
        pos = pd.Index(names).get_indexer(self.feature_names_in_)
        present = pos >= 0
        n, n_present = len(pos), int(present.sum())
        if n_present < self.min_gene_overlap * n:
            raise ValueError(
                f"only {n_present:,} of the model's {n:,} genes ({n_present / n:.0%}) are in X, fewer than "
                f"min_gene_overlap = {self.min_gene_overlap:.0%} (e.g. missing: {self.feature_names_in_[~present][:3].tolist()}): "
                "give the query's raw counts with the same kind of gene names as the reference (symbols or Ensembl ids, "
                "same species), or lower min_gene_overlap if you accept predictions from fewer genes"
            )
        if n_present < n:
            warnings.warn(f"{n - n_present:,} of the model's {n:,} genes ({1 - n_present / n:.1%}) are not in X; they take "
                          f"the reference's mean value, and the prediction rests on the other {n_present:,}",
                          UserWarning, stacklevel=2)
        Q = np.zeros((counts.shape[0], n), dtype=np.float32)
        sub = counts[:, first[pos[present]]]
        Q[:, present] = sub.toarray() if sp.issparse(sub) else sub
        Q = _scale(Q, N, self.preprocess)
        Q[:, ~present] = self.feature_means_[~present]  # not measured: mean_g over the reference's cells, a neutral value
        return Q

    # -- features in (preprocess=None) -------------------------------------------------
    def _features(self, X) -> np.ndarray:
        if self.preprocess is not None:
            return self._query_features(X)
        names, fitted = feature_names(X), getattr(self, "feature_names_in_", None)
        align = names is not None and fitted is not None
        Xm = check_matrix(X, layer=self.layer, dtype=np.float32, finite=False, n_features=None if align else self.n_features_in_)
        if align:
            pos = pd.Index(names).get_indexer(fitted)
            if (pos < 0).any():
                raise ValueError(f"{int((pos < 0).sum())} gene(s) of the training data are missing from X, e.g. "
                                 f"{fitted[pos < 0][:5].tolist()}: preprocess both sets together with actinn_preprocess, "
                                 "or fit ACTINN(preprocess='code') on raw counts to annotate a query with other genes")
            Xm = Xm[:, pos]  # same genes, in the training order
        return Xm

    # -- scikit-learn API ------------------------------------------------------------
    def fit(self, X, y) -> "ACTINN":
        """Train on ``X`` (features, or raw counts with ``preprocess``) and ``y``, one label per cell."""
        self._check_params()
        if not isinstance(y, str) and np.asarray(y).ndim == 2:
            warnings.warn("A column-vector y was passed when a 1d array was expected (one label per cell): y.ravel() is used",
                          DataConversionWarning, stacklevel=2)
        y = check_labels(X, y)
        if type_of_target(y) == "continuous":
            raise ValueError(f"y holds continuous values (e.g. {y[0]!r}): ACTINN predicts categories; pass cell-type labels")
        if self.preprocess is None:
            names = feature_names(X)
            Xm = np.ascontiguousarray(check_matrix(X, layer=self.layer, dtype=np.float32))  # rows = cells, contiguous
        else:
            Xm, names = self._reference_features(X)
        try:
            classes, y_idx = np.unique(y, return_inverse=True)  # sorted class order
        except TypeError:
            raise TypeError("labels mix types that cannot be sorted (e.g. strings and numbers): convert them with .astype(str)") from None
        classes = np.asarray(classes.tolist())
        if len(classes) < 2:
            raise ValueError(f"the labels hold one class only ({classes[0]!r}): a classifier needs at least two cell types")
        self.classes_, self.n_features_in_ = classes, Xm.shape[1]
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        if self.preprocess is not None:  # mean_g = (1/n) sum_i x_ig: what a gene missing from a query takes
            self.feature_means_ = Xm.mean(axis=0, dtype=np.float64).astype(np.float32)
        elif hasattr(self, "feature_means_"):
            del self.feature_means_
        dev = get_device(self.device)
        l2 = float(self.l2)

        def loss_fn(module, minibatch, epoch):
            xb, yb = minibatch
            return module.loss(xb, yb, l2)

        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):  # global RNG state left as it was
            torch.manual_seed(int(self.random_state))
            self.module_ = ACTINNNet(Xm.shape[1], len(classes), self.hidden).to(dev)
            self.history_: History = train(
                self.module_, loss_fn, (Xm, y_idx.astype(np.int64)),
                epochs=self.epochs, batch_size=self.batch_size, optimizer=fused_adam(self.module_.parameters(), lr=self.lr),
                lr_schedule=lambda s: staircase_lr(s, 1.0, self.decay_rate, self.decay_steps),
                device=dev, seed=int(self.random_state), progress=self.progress, desc="ACTINN",
            )
        self.n_steps_ = len(self.history_.step_loss)
        return self

    @torch.inference_mode()
    def _logits(self, X, batch_size: int = 1024) -> np.ndarray:
        """Logits h (cells x k)."""
        check_fitted(self)
        Xm = self._features(X)
        dev = next(self.module_.parameters()).device
        self.module_.eval()
        out = [self.module_(torch.from_numpy(Xm[i:i + batch_size]).to(dev)).cpu() for i in range(0, len(Xm), batch_size)]
        h = torch.cat(out).numpy()
        bad = ~np.isfinite(h).all(axis=1)
        if bad.any():  # checked here rather than on X: cheaper
            raise ValueError(f"X contains NaN or infinite values: the logits of {int(bad.sum())} cell(s), e.g. row "
                             f"{int(np.flatnonzero(bad)[0])}, are not finite; pass the output of actinn_preprocess")
        return h

    def decision_function(self, X, batch_size: int = 1024) -> np.ndarray:
        """Logits h (cells x k); for two classes, scikit-learn's log-odds h_1 - h_0 (one per cell)."""
        h = self._logits(X, batch_size)
        return h[:, 1] - h[:, 0] if h.shape[1] == 2 else h

    def predict_proba(self, X, batch_size: int = 1024) -> np.ndarray:
        """p(y = j | x) = softmax(h)_j, cells x k, columns in the order of ``classes_``."""
        return torch.softmax(torch.from_numpy(self._logits(X, batch_size)).double(), dim=1).numpy()

    def predict(self, X, batch_size: int = 1024) -> np.ndarray:
        """The most probable cell type of each cell (argmax of the logits)."""
        h = self._logits(X, batch_size)
        return self.classes_[np.argmax(h, axis=1)]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy on labelled cells (``y``: labels, or an obs column of an AnnData ``X``)."""
        return float(accuracy_score(check_labels(X, y), self.predict(X), sample_weight=sample_weight))


# ---------------------------------------------------------------------------------------
# Choosing a setting on validation cells, and rejecting uncertain cells (lesson 03)

UNKNOWN = "unknown"


def choose_setting(scores, default: str) -> str:
    """The setting to use, from validation scores per seed: the default unless beaten on every seed.

    ``scores`` maps each setting's name to its scores on the validation cells, one per seed
    (higher is better). A challenger c replaces ``default`` only if min_seeds(c) >
    max_seeds(default); among several, the one with the highest mean (the first on ties).
    """
    if not isinstance(scores, dict) or default not in scores:
        raise ValueError(f"scores must be a dict of setting -> list of scores per seed that includes the default "
                         f"{default!r}; got {type(scores).__name__}{' with ' + str(list(scores)[:5]) if isinstance(scores, dict) else ''}")
    values = {}
    for name, s in scores.items():
        s = np.asarray(s, dtype=float).ravel()
        if s.size == 0 or not np.isfinite(s).all():
            raise ValueError(f"the scores of {name!r} must be one finite number per seed, got {s.tolist()}")
        values[name] = s
    best_default = values[default].max()
    beaten = [name for name, s in values.items() if name != default and s.min() > best_default]
    if not beaten:
        return default
    return max(beaten, key=lambda name: values[name].mean())  # max keeps the first of equal means


def reject_uncertain(proba, classes, threshold: float, unknown: str = UNKNOWN) -> np.ndarray:
    """The most probable class per cell, or ``unknown`` where max_j p(y = j | x) < threshold.

    ``proba``: cells x k probabilities, columns in the order of ``classes``. Returns an
    array of labels (dtype object).
    """
    P = check_matrix(proba, name="proba", dtype=np.float64)
    classes = np.asarray(classes, dtype=object)
    if classes.ndim != 1 or len(classes) != P.shape[1]:
        raise ValueError(f"proba has {P.shape[1]} columns but {classes.size} classes were given: pass model.classes_")
    labels = classes[np.argmax(P, axis=1)]  # y_hat_i = argmax_j p(y = j | x_i)
    labels[P.max(axis=1) < threshold] = unknown  # max_j p(y = j | x_i) < threshold: no call
    return labels

