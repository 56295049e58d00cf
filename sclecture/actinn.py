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
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from .mlp import make_torch_mlp
from .preprocessing import check_counts, get_matrix
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


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be 'code' (ACTINN's published code) or 'lecture' (the slide's formula); got {variant!r}")


# ---------------------------------------------------------------------------------------
# Preprocessing


def normalize(counts, variant: str = "code") -> np.ndarray:
    """Per-cell normalisation of a cells x genes count matrix, as float32.

    variant="code":    x_i = log2(1e4 * x~_i / N_i + 1)    (actinn_predict.py)
    variant="lecture": x_i = log2(1e4 * (x~_i + 1) / N_i)  (the slide)
    N_i = sum_g x~_ig, the cell's total over the genes given.
    """
    _check_variant(variant)
    X = get_matrix(counts)
    if X.ndim != 2:
        raise ValueError(f"counts must be a cells x genes matrix, got shape {X.shape}")
    X = X.toarray().astype(np.float32, copy=False) if sp.issparse(X) else np.array(X, dtype=np.float32)
    N = X.sum(axis=1, keepdims=True, dtype=np.float64)
    if (N <= 0).any():
        bad = np.flatnonzero(N.ravel() <= 0)
        raise ValueError(
            f"{len(bad)} cell(s) (rows {bad[:5].tolist()}) have no counts over these genes, so N_i = 0 "
            "and the normalisation divides by zero: remove those cells first"
        )
    scale = (TARGET_SUM / N).astype(np.float32)
    if variant == "code":
        X *= scale  # 1e4 * x~ / N
        np.log2(X + 1, out=X)  # log2(1e4 x~ / N + 1)
    else:
        X += 1
        X *= scale  # 1e4 (x~ + 1) / N
        np.log2(X, out=X)
    return X


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
    _check_variant(variant)
    X = get_matrix(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a cells x genes matrix, got shape {X.shape}")
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values: normalise raw counts with actinn.normalize first")
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


def _is_anndata(obj) -> bool:
    return type(obj).__name__ == "AnnData" and hasattr(obj, "layers")


def _counts_and_names(data, genes, name: str, layer: str | None):
    """(cells x genes counts as CSR or array, gene names, cell names or None)."""
    cells = None
    if _is_anndata(data):
        X = get_matrix(data, layer)
        names = np.asarray(data.var_names if genes is None else genes, dtype=str)
        cells = np.asarray(data.obs_names, dtype=str)
    elif isinstance(data, pd.DataFrame):
        X = data.to_numpy()
        names = np.asarray(data.columns if genes is None else genes, dtype=str)
        cells = np.asarray(data.index, dtype=str)
    else:
        X = get_matrix(data)
        if genes is None:
            raise ValueError(
                f"{name} is a bare matrix without gene names: pass {name}_genes=[...] (one name per column), "
                "or an AnnData / a pandas DataFrame (cells x genes) that carries them"
            )
        names = np.asarray(genes, dtype=str)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a cells x genes matrix, got shape {X.shape}")
    if names.ndim != 1 or len(names) != X.shape[1]:
        hint = " (it looks genes x cells: transpose it)" if len(names) == X.shape[0] else ""
        raise ValueError(f"{name} has {X.shape[1]} columns but {len(names)} gene names were given{hint}")
    X = check_counts(X, name=name)  # raw counts only: ACTINN normalises them itself
    return X, names, cells


def _format(X, names: np.ndarray):
    """actinn_format.py, per data set: upper-case names, first of repeated names, no all-zero genes."""
    upper = np.char.upper(names.astype(str))
    _, first = np.unique(upper, return_index=True)
    first = np.sort(first)
    totals = np.asarray(X[:, first].sum(axis=0)).ravel()
    keep = first[totals > 0]
    return upper[keep], keep


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
    _check_variant(variant)
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


class ACTINN:
    """ACTINN's classifier with the published settings as defaults.

    ``fit(X, labels)``: X is the normalised, filtered matrix from :func:`actinn_preprocess`
    (NumPy, SciPy sparse, a pandas DataFrame or an AnnData); ``labels`` is an array with one
    label per cell or, for an AnnData, the name of an ``obs`` column. Classes are sorted
    (``classes_``). Training: Adam, learning rate lr * decay_rate ** floor(step / decay_steps),
    minibatches of ``batch_size``, ``epochs`` passes, loss = mean cross-entropy +
    l2 * sum ||W||^2 / 2. Runs on CUDA when available.

    The defaults are the paper's. They give a small reference few steps (pbmc3k: 21
    minibatches x 50 epochs = 1,050 steps at 1e-4); ``lr=1e-3`` (or more ``epochs``) fits
    the reference faster and suits larger references or longer schedules, but on pbmc3k it
    did not predict better, within pbmc3k or on Kang et al.'s cells, and it depended more
    on the seed (lesson 03; benchmarks/results/actinn.md).
    """

    def __init__(
        self,
        hidden: Sequence[int] = (100, 50, 25),
        lr: float = 1e-4,
        decay_rate: float = 0.95,
        decay_steps: int = 1000,
        l2: float = 0.005,
        epochs: int = 50,
        batch_size: int = 128,
        random_state: int = 0,
        device: str | None = None,
        progress: bool = False,
    ):
        self.hidden = hidden
        self.lr = lr
        self.decay_rate = decay_rate
        self.decay_steps = decay_steps
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.random_state = random_state
        self.device = device
        self.progress = progress

    # -- input handling --------------------------------------------------------------
    def _matrix(self, X, fitting: bool) -> np.ndarray:
        names = None
        if _is_anndata(X):
            names, X = np.asarray(X.var_names, dtype=str), get_matrix(X)
        elif isinstance(X, pd.DataFrame):
            names, X = np.asarray(X.columns, dtype=str), X.to_numpy()
        else:
            X = get_matrix(X)
        if X.ndim != 2:
            raise ValueError(f"X must be a cells x genes matrix, got shape {X.shape}")
        X = np.ascontiguousarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)  # rows = cells, contiguous
        if fitting and not np.isfinite(X).all():  # at prediction time, the logits are checked instead (faster)
            raise ValueError("X contains NaN or infinite values: pass the output of actinn_preprocess")
        if fitting:
            self.feature_names_in_ = names
            self.n_features_in_ = X.shape[1]
            return X
        if names is not None and self.feature_names_in_ is not None:
            pos = pd.Index(names).get_indexer(self.feature_names_in_)
            if (pos < 0).any():
                missing = self.feature_names_in_[pos < 0]
                raise ValueError(f"{len(missing)} gene(s) of the training data are missing from X, e.g. {missing[:5].tolist()}: "
                                 "preprocess both sets together with actinn_preprocess")
            X = X[:, pos]  # same genes, in the training order
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} genes but the model was trained on {self.n_features_in_}: "
                             "preprocess both sets together with actinn_preprocess")
        return X

    def _label_array(self, X, labels) -> np.ndarray:
        if isinstance(labels, str):
            if not _is_anndata(X):
                raise TypeError(f"labels={labels!r} names an obs column, which needs an AnnData; pass an array of labels instead")
            if labels not in X.obs:
                raise KeyError(f"the AnnData has no obs column {labels!r}; its columns are {list(X.obs.columns)}")
            labels = X.obs[labels]
        y = pd.Series(np.asarray(labels.to_numpy() if hasattr(labels, "to_numpy") else labels, dtype=object))
        if y.ndim != 1:
            raise ValueError("labels must hold one label per cell")
        if y.isna().any():
            raise ValueError(f"{int(y.isna().sum())} label(s) are missing (NaN/None): drop those cells before fitting, "
                             "e.g. adata[adata.obs['cell_type'].notna()]")
        return y.to_numpy()

    # -- scikit-learn API ------------------------------------------------------------
    def fit(self, X, labels) -> "ACTINN":
        y = self._label_array(X, labels)
        Xm = self._matrix(X, fitting=True)
        if len(y) != Xm.shape[0]:
            raise ValueError(f"X has {Xm.shape[0]} cells but {len(y)} labels were given")
        try:
            classes, y_idx = np.unique(y, return_inverse=True)  # sorted class order
        except TypeError:
            raise TypeError("labels mix types that cannot be sorted (e.g. strings and numbers): convert them with .astype(str)") from None
        classes = np.asarray(classes.tolist())
        if len(classes) < 2:
            raise ValueError(f"the labels hold a single class ({classes[0]!r}): a classifier needs at least two cell types")
        self.classes_ = classes
        dev = get_device(self.device)
        torch.manual_seed(int(self.random_state))
        self.module_ = ACTINNNet(Xm.shape[1], len(classes), self.hidden).to(dev)
        optimizer = fused_adam(self.module_.parameters(), lr=self.lr)
        l2 = float(self.l2)

        def loss_fn(module, batch, epoch):
            xb, yb = batch
            return module.loss(xb, yb, l2)

        self.history_: History = train(
            self.module_, loss_fn, (Xm, y_idx.astype(np.int64)),
            epochs=self.epochs, batch_size=self.batch_size, optimizer=optimizer,
            lr_schedule=lambda s: staircase_lr(s, 1.0, self.decay_rate, self.decay_steps),
            device=dev, seed=int(self.random_state), progress=self.progress, desc="ACTINN",
        )
        self.n_steps_ = len(self.history_.step_loss)
        return self

    def _check_fitted(self):
        if not hasattr(self, "module_"):
            raise RuntimeError("this ACTINN model is not fitted yet: call fit(X, labels) first")

    @torch.inference_mode()
    def decision_function(self, X, batch_size: int = 1024) -> np.ndarray:
        """Logits h (cells x k)."""
        self._check_fitted()
        Xm = self._matrix(X, fitting=False)
        dev = next(self.module_.parameters()).device
        self.module_.eval()
        out = [self.module_(torch.from_numpy(Xm[i:i + batch_size]).to(dev)).cpu() for i in range(0, len(Xm), batch_size)]
        h = torch.cat(out).numpy() if out else np.zeros((0, len(self.classes_)), np.float32)
        bad = ~np.isfinite(h).all(axis=1)
        if bad.any():
            raise ValueError(f"X contains NaN or infinite values: the logits of {int(bad.sum())} cell(s), e.g. row "
                             f"{int(np.flatnonzero(bad)[0])}, are not finite; pass the output of actinn_preprocess")
        return h

    def predict_proba(self, X) -> np.ndarray:
        """p(y = j | x) = softmax(h)_j, cells x k, columns in the order of ``classes_``."""
        h = torch.from_numpy(self.decision_function(X))
        return torch.softmax(h.double(), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable cell type of each cell (argmax of the logits)."""
        self._check_fitted()
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X, labels) -> float:
        """Accuracy on labelled cells."""
        y = self._label_array(X, labels)
        return float(np.mean(self.predict(X) == y))
