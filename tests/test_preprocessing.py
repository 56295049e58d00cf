"""Tests of sclecture.preprocessing: closed forms on small matrices, dense/sparse/AnnData alike."""

from __future__ import annotations

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

from sclecture import preprocessing as pp

COUNTS = np.array([[1, 0, 3, 0], [0, 0, 0, 0], [2, 2, 0, 4]], dtype=np.float32)


def _forms(X):
    """The same matrix as dense array, CSR matrix and AnnData."""
    return [X, sp.csr_matrix(X), anndata.AnnData(X=sp.csr_matrix(X))]


@pytest.mark.parametrize("form", range(3))
def test_normalize_total_closed_form(form):
    out = pp.normalize_total(_forms(COUNTS)[form], target_sum=10)
    assert sp.issparse(out) == (form > 0)
    dense = out.toarray() if sp.issparse(out) else out
    expected = np.array([[2.5, 0, 7.5, 0], [0, 0, 0, 0], [2.5, 2.5, 0, 5]])
    np.testing.assert_allclose(dense, expected, rtol=1e-6)  # the empty cell stays 0, no NaN
    assert dense.dtype == np.float32


def test_normalize_total_keeps_input_and_casts_integers():
    X = COUNTS.astype(np.int64)
    out = pp.normalize_total(X)
    assert out.dtype == np.float32 and X.dtype == np.int64 and X[0, 0] == 1
    with pytest.raises(ValueError, match="target_sum"):
        pp.normalize_total(X, target_sum=0)


@pytest.mark.parametrize("form", range(3))
def test_log1p_normalize_formula(form):
    out = pp.log1p_normalize(_forms(COUNTS)[form])
    dense = out.toarray() if sp.issparse(out) else out
    totals = COUNTS.sum(1, keepdims=True)
    expected = np.log1p(np.divide(1e4 * COUNTS, totals, out=np.zeros_like(COUNTS), where=totals > 0))
    np.testing.assert_allclose(dense, expected, rtol=1e-5)


def test_get_matrix_layers_and_errors():
    adata = anndata.AnnData(X=np.zeros((3, 4), dtype=np.float32), layers={"counts": COUNTS})
    np.testing.assert_array_equal(pp.get_matrix(adata, layer="counts"), COUNTS)
    assert pp.get_matrix(sp.coo_matrix(COUNTS)).format == "csr"
    with pytest.raises(KeyError, match="'counts'"):
        pp.get_matrix(adata, layer="raw")
    with pytest.raises(TypeError, match="only applies to an AnnData"):
        pp.get_matrix(COUNTS, layer="counts")


def test_to_dense_float():
    out = pp.to_dense_float(sp.csr_matrix(COUNTS.astype(int)))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, COUNTS)


@pytest.mark.parametrize("form", range(3))
def test_check_counts_accepts_counts(form):
    assert pp.check_counts(_forms(COUNTS)[form]).shape == COUNTS.shape


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[1.0, -2.0]]), "negative"),
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.array([[1.0, np.inf]]), "infinite"),
        (np.array([[0.5, 1.0]]), "non-integer"),
        (np.array([1.0, 2.0]), "2-d"),
        (np.zeros((0, 3)), "empty"),
    ],
)
def test_check_counts_names_the_problem(bad, message):
    for X in [bad, sp.csr_matrix(bad)] if bad.ndim == 2 else [bad]:
        with pytest.raises(ValueError, match=message):
            pp.check_counts(X)


def test_check_counts_suggests_the_fix():
    with pytest.raises(ValueError, match=r"expm1"):
        pp.check_counts(np.log1p(COUNTS))


def _planted():
    """Poisson counts for 1,000 genes of varied means, except genes 7 and 42, which are
    strongly overdispersed (gamma-Poisson with shape 0.3) at an ordinary mean."""
    rng = np.random.default_rng(0)
    means = np.exp(rng.uniform(np.log(0.5), np.log(20), size=1000))
    means[[7, 42]] = 5.0
    rate = np.tile(means, (200, 1))
    rate[:, [7, 42]] = rng.gamma(0.3, 5.0 / 0.3, size=(200, 2))
    return rng.poisson(rate).astype(np.float32)


@pytest.mark.parametrize("flavor", ["variance", "dispersion"])
@pytest.mark.parametrize("form", range(3))
def test_highly_variable_genes_finds_planted_genes(flavor, form):
    X = _planted()
    idx = pp.highly_variable_genes(_forms(X)[form], n_top=2, flavor=flavor)
    np.testing.assert_array_equal(idx, [7, 42])


def test_highly_variable_genes_bad_input():
    with pytest.raises(ValueError, match="n_top"):
        pp.highly_variable_genes(COUNTS, n_top=5)
    with pytest.raises(ValueError, match="flavor"):
        pp.highly_variable_genes(COUNTS, n_top=2, flavor="seurat_v3")


def test_select_genes():
    adata = anndata.AnnData(X=COUNTS.copy(), layers={"counts": COUNTS.copy()})
    adata.var_names = ["A", "B", "C", "D"]
    sub = pp.select_genes(adata, ["C", "A"])
    assert list(sub.var_names) == ["C", "A"] and "counts" in sub.layers
    np.testing.assert_array_equal(pp.select_genes(COUNTS, [True, False, True, False]), COUNTS[:, [0, 2]])
    assert pp.select_genes(sp.csr_matrix(COUNTS), np.array([3])).shape == (3, 1)
    with pytest.raises(KeyError, match="'Z'"):
        pp.select_genes(adata, ["A", "Z"])
    with pytest.raises(TypeError, match="AnnData"):
        pp.select_genes(COUNTS, ["A"])
    with pytest.raises(ValueError, match="one entry per gene"):
        pp.select_genes(COUNTS, [True, False])
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        pp.select_genes(COUNTS, [4])
