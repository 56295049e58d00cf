"""Small shared helpers: pull a matrix out of an AnnData, check counts, normalise, pick genes.

Every function takes a dense array, a SciPy sparse matrix or an ``AnnData`` (its ``.X``,
or the layer named by ``layer=``) and leaves its input unchanged. Matrices are
cells x genes. Sparse input gives sparse (CSR) output, dense gives dense.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._validation import check_counts, get_matrix
from ._validation import is_anndata as _is_anndata

__all__ = [
    "get_matrix",
    "to_dense_float",
    "check_counts",
    "normalize_total",
    "log1p_normalize",
    "highly_variable_genes",
    "select_genes",
]


def _check_2d(X, name: str):
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-d cells x genes matrix; got shape {X.shape}: reshape it, e.g. X.reshape(1, -1) for one cell")


def to_dense_float(data, dtype=np.float32, layer: str | None = None) -> np.ndarray:
    """A dense NumPy array of ``dtype`` (float32 by default, what torch models expect)."""
    X = get_matrix(data, layer)
    X = X.toarray() if sp.issparse(X) else X
    return np.asarray(X, dtype=dtype)


def _float(X):
    """X as a floating matrix: float dtypes are kept, integers become float32."""
    return X if X.dtype.kind == "f" else X.astype(np.float32)


def normalize_total(data, target_sum: float = 1e4, layer: str | None = None):
    """Scale every cell to ``target_sum`` counts: x_ng * target_sum / N_n with N_n = sum_g x_ng.

    Cells with no counts stay zero. Returns a new matrix (sparse CSR for sparse input).
    """
    if not np.isscalar(target_sum) or not target_sum > 0:
        raise ValueError(f"target_sum must be a positive number, got {target_sum!r}")
    X = _float(get_matrix(data, layer))
    _check_2d(X, "X")
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    scale = scale.astype(X.dtype)
    if sp.issparse(X):
        return sp.csr_matrix(sp.diags(scale) @ X)
    return X * scale[:, None]


def log1p_normalize(data, target_sum: float = 1e4, layer: str | None = None):
    """log(1 + target_sum * x_ng / N_n): the usual log-normalisation (natural log)."""
    Y = normalize_total(data, target_sum, layer)
    if sp.issparse(Y):
        Y = Y.copy()
        Y.data = np.log1p(Y.data)
        return Y
    return np.log1p(Y)


def _mean_var(X):
    """Per-gene mean and (unbiased) variance, without densifying a sparse matrix."""
    n = X.shape[0]
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    if sp.issparse(X):
        sq = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel()
    else:
        sq = np.mean(np.asarray(X, dtype=np.float64) ** 2, axis=0)
    var = (sq - mean**2) * (n / max(n - 1, 1))
    return mean, np.maximum(var, 0.0)


def highly_variable_genes(data, n_top: int = 2000, flavor: str = "variance", layer: str | None = None) -> np.ndarray:
    """Indices (ascending) of the ``n_top`` most variable genes; ``data`` holds raw counts.

    flavor="variance": variance of log1p_normalize(X) per gene.
    flavor="dispersion": Seurat's recipe: dispersion var/mean of the normalised counts,
    log-transformed and z-scored within 20 bins of mean expression, so highly and lowly
    expressed genes compete fairly.
    """
    X = get_matrix(data, layer)
    _check_2d(X, "X")
    n_genes = X.shape[1]
    if not isinstance(n_top, (int, np.integer)) or isinstance(n_top, bool) or not 1 <= n_top <= n_genes:
        raise ValueError(f"n_top must be an integer from 1 to the number of genes ({n_genes}); got {n_top!r}")
    if flavor == "variance":
        _, score = _mean_var(log1p_normalize(X))
    elif flavor == "dispersion":
        mean, var = _mean_var(normalize_total(X))
        expressed = mean > 0
        disp = np.full(n_genes, np.nan)
        disp[expressed] = np.log(np.maximum(var[expressed], 1e-12) / mean[expressed])
        bins = np.full(n_genes, -1)
        log_mean = np.log1p(mean[expressed])
        edges = np.linspace(log_mean.min(), log_mean.max(), 21)[1:-1]
        bins[expressed] = np.digitize(log_mean, edges)
        score = np.full(n_genes, -np.inf)
        for b in np.unique(bins[expressed]):
            idx = np.flatnonzero(bins == b)
            sd = disp[idx].std(ddof=1) if len(idx) > 1 else 0.0
            # a bin with one gene (or no spread) gives no evidence: score 0, not NaN
            score[idx] = (disp[idx] - disp[idx].mean()) / sd if sd > 0 else 0.0
    else:
        raise ValueError(f"flavor must be 'variance' or 'dispersion', got {flavor!r}")
    order = np.argsort(-score, kind="stable")
    return np.sort(order[:n_top])


def select_genes(data, genes, layer: str | None = None):
    """Keep the given genes: indices, a boolean mask, or names (names need an AnnData).

    An AnnData gives a new AnnData (all layers kept); a matrix gives the column subset.
    """
    n_genes = data.n_vars if _is_anndata(data) else get_matrix(data, layer).shape[1]
    genes = np.asarray(genes)
    if genes.dtype.kind in "USO":
        if not _is_anndata(data):
            raise TypeError("gene names can only be looked up in an AnnData (its var_names); pass indices or a boolean mask for a matrix")
        missing = [g for g in genes if g not in data.var_names]
        if missing:
            raise KeyError(f"{len(missing)} gene(s) are not in var_names, e.g. {missing[:5]}: check the spelling or the species")
        idx = data.var_names.get_indexer(genes)
    elif genes.dtype.kind == "b":
        if genes.shape != (n_genes,):
            raise ValueError(f"a boolean mask needs one entry per gene ({n_genes}); got shape {genes.shape}")
        idx = np.flatnonzero(genes)
    elif genes.dtype.kind in "iu":
        if genes.size and (genes.min() < -n_genes or genes.max() >= n_genes):
            raise IndexError(f"gene indices must lie in [0, {n_genes}); got {genes.min()}..{genes.max()}")
        idx = genes
    else:
        raise TypeError(f"genes must be indices, a boolean mask or names; got dtype {genes.dtype}")
    if _is_anndata(data):
        return data[:, idx].copy()
    return get_matrix(data, layer)[:, idx]
