"""Input checks shared by every estimator of the course: one place, one wording.

Each check fails early, before any model sees the data, with a message that names the
problem and the fix (scikit-learn's ``utils/validation.py`` plays the same role there).
Data may come as a NumPy array, a SciPy sparse matrix, a pandas DataFrame, a torch tensor or
an AnnData (counts in ``.X`` or a named layer; labels and batches as ``obs`` keys).
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "NotFittedError", "is_anndata", "get_matrix", "feature_names", "check_matrix", "check_counts",
    "obs_column", "check_labels", "check_binary_labels", "check_positive", "check_choice", "check_fitted",
]


def is_anndata(obj) -> bool:
    """True for an AnnData (checked by name and shape of the object: anndata is imported lazily)."""
    return type(obj).__name__ == "AnnData" and hasattr(obj, "obs") and hasattr(obj, "layers")


def get_matrix(data, layer: str | None = None):
    """The cells x genes matrix of ``data``: ``adata.layers[layer]``, ``adata.X``, or the array itself.

    Sparse matrices pass through (as CSR); lists, DataFrames and tensors become NumPy arrays.
    """
    if is_anndata(data):
        if layer is None:
            X = data.X
        elif layer in data.layers:
            X = data.layers[layer]
        else:
            raise KeyError(
                f"the AnnData has no layer {layer!r}; its layers are {sorted(k for k in data.layers if isinstance(k, str))}: "
                "pass one of them, or layer=None for adata.X"
            )
        if X is None:
            raise ValueError("the AnnData has no matrix in .X: pass layer='...' naming a layer that holds it")
    else:
        if layer is not None:
            raise TypeError(f"layer={layer!r} only applies to an AnnData; got {type(data).__name__}")
        X = data
    if X is None:
        raise TypeError("X is None: pass a cells x features matrix (NumPy array, SciPy sparse matrix or AnnData)")
    if sp.issparse(X):
        return X.tocsr() if X.format != "csr" else X
    if hasattr(X, "detach"):  # a torch tensor
        X = X.detach().cpu().numpy()
    if hasattr(X, "to_numpy"):  # pandas
        X = X.to_numpy()
    try:
        X = np.asarray(X)
    except ValueError as err:  # ragged lists
        raise TypeError(f"X must be a numeric cells x features matrix (NumPy, SciPy sparse or AnnData): {err}") from None
    if X.dtype == object:
        raise TypeError("the matrix holds Python objects, not numbers: convert it with np.asarray(X, dtype=float)")
    return X


def feature_names(data) -> np.ndarray | None:
    """Gene names: ``adata.var_names`` or a DataFrame's columns; ``None`` for a bare matrix."""
    if is_anndata(data):
        return np.asarray(data.var_names, dtype=str)
    if isinstance(data, pd.DataFrame):
        return np.asarray(data.columns, dtype=str)
    return None


def check_matrix(X, *, layer: str | None = None, name: str = "X", dtype=np.float64, sparse: bool = False,
                 n_features: int | None = None, finite: bool = True):
    """``X`` as a checked 2-d cells x features matrix: numeric, non-empty, finite.

    ``dtype``: the float type of the result (``None`` keeps float32 and makes the rest float64).
    ``sparse=True`` keeps a sparse input as CSR (else it is densified). ``n_features``: the
    number of features the model was fitted on.
    """
    X = get_matrix(X, layer)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-d cells x features matrix, got shape {X.shape}: "
                         "use x.reshape(1, -1) for one cell, or X.reshape(-1, 1) for one feature")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {X.dtype}: convert it with np.asarray(X, dtype=float)")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape}): it needs at least one cell and one feature")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features (genes) but the model was fitted on {n_features}: "
                         "give the same genes, in the same order, as in fit")
    if dtype is None:
        dtype = np.float32 if X.dtype == np.float32 else np.float64
    if sp.issparse(X):
        X = X.astype(dtype, copy=False) if sparse else X.toarray().astype(dtype, copy=False)
    else:
        X = np.asarray(X, dtype=dtype)
    values = X.data if sp.issparse(X) else X
    if finite and not np.isfinite(values.sum(dtype=np.float64)):  # one cheap pass; count only on failure
        n_bad = int(np.size(values) - np.isfinite(values).sum())
        if n_bad:
            raise ValueError(f"{name} contains {n_bad} NaN or infinite value(s): remove those cells or features, "
                             "or fill them in, before fitting or scoring")
    return X


def check_counts(data, layer: str | None = None, name: str = "X"):
    """Check that ``data`` holds raw counts: finite, non-negative integers. Returns the matrix.

    Count models (ACTINN's normalisation, scVI's negative binomial) need raw UMI counts;
    log-normalised values, NaN or negative numbers fail here with a message instead of
    deep inside a model.
    """
    X = get_matrix(data, layer)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-d cells x genes matrix; got shape {X.shape}: reshape it, e.g. X.reshape(1, -1) for one cell")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape}): it needs at least one cell and one gene")
    values = X.data if sp.issparse(X) else X
    if values.dtype.kind not in "biuf":
        raise TypeError(f"{name} has dtype {values.dtype}; counts must be numbers: convert with X.astype(np.float32)")
    if values.dtype.kind == "f":
        n_nan = int(np.isnan(values).sum())
        if n_nan:
            raise ValueError(f"{name} contains {n_nan} NaN value(s): counts cannot be missing; drop those cells/genes or fill them with 0")
        n_inf = int(np.isinf(values).sum())
        if n_inf:
            raise ValueError(f"{name} contains {n_inf} infinite value(s): counts are finite; check how the matrix was made")
    n_neg = int((values < 0).sum())
    if n_neg:
        raise ValueError(
            f"{name} contains {n_neg} negative value(s) (minimum {values.min():g}): counts are >= 0; "
            "was the data scaled or centred? pass the raw counts (e.g. a 'counts' layer)"
        )
    if values.dtype.kind == "f":
        frac = values != np.round(values)
        if frac.any():
            example = values[frac].flat[0]
            raise ValueError(
                f"{name} holds non-integer values (e.g. {example:g}): it looks normalised or log-transformed, "
                "but raw integer counts are needed; pass the counts layer, or round(expm1(X)) if X is log1p of counts"
            )
    return X


def obs_column(data, key: str, what: str = "labels") -> np.ndarray:
    """``adata.obs[key]`` as an array, with errors that list the columns there are."""
    if not is_anndata(data):
        raise TypeError(f"{what}={key!r} names a column of adata.obs, which needs an AnnData; "
                        f"got {type(data).__name__}: pass the {what} themselves (one per cell)")
    if key not in data.obs:
        raise KeyError(f"the AnnData has no obs column {key!r}; its columns are {list(data.obs.columns)}")
    return data.obs[key].to_numpy()


def check_labels(X, y, name: str = "y") -> np.ndarray:
    """One label per cell of ``X``: an array, or the name of an ``obs`` column of an AnnData ``X``."""
    if y is None:
        raise ValueError(f"this model requires y to be passed, but the target y is None: give one label per cell, "
                         "or the name of an obs column of an AnnData")
    if isinstance(y, str):
        y = obs_column(X, y, name)
    y = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"{name} must hold one label per cell (a 1-d vector), got shape {y.shape}")
    n = X.shape[0] if hasattr(X, "shape") else get_matrix(X).shape[0]  # lists and other array-likes too
    if len(y) != n:
        raise ValueError(f"X has {n} cells (rows) but {name} has {len(y)} labels: give one label per cell")
    missing = pd.isna(y) if y.dtype == object or y.dtype.kind == "f" else np.zeros(len(y), bool)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} label(s) are missing (NaN/None): drop those cells before fitting, "
                         "e.g. adata[adata.obs['cell_type'].notna()]")
    return y


def check_binary_labels(y, both_classes: bool = True, name: str = "y") -> np.ndarray:
    """0/1 labels (True/False allowed) as float64; ``both_classes``: both must occur."""
    y = np.asarray(y)
    if y.dtype == bool:
        y = y.astype(float)
    if y.dtype.kind not in "iuf" or not np.all(np.isin(y, (0, 1))):
        values = np.unique(y.astype(object) if y.dtype.kind not in "iuf" else y)[:5]
        raise ValueError(f"{name} must hold binary labels 0/1 (or True/False); got values such as {list(values)}: "
                         "encode the class of interest, e.g. y = (labels == 'B').astype(int)")
    y = y.astype(np.float64)
    if both_classes and y.min() == y.max():
        raise ValueError(f"{name} holds a single class ({int(y[0])}) only: a classifier needs examples of both 0 and 1")
    return y


def check_positive(value, name: str, integer: bool = False, allow_zero: bool = False):
    """A hyperparameter that must be a positive number (or integer); returns it unchanged."""
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        sign = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {sign} {'integer' if integer else 'number'}, got {value!r}")
    return value


def check_choice(value, name: str, choices) -> str:
    """A hyperparameter that must be one of a few strings."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_fitted(estimator) -> None:
    """scikit-learn's ``NotFittedError`` (a ValueError and AttributeError) with the course's wording."""
    check_is_fitted(estimator, msg=f"this {type(estimator).__name__} is not fitted yet: call %(name)s.fit(...) first")
