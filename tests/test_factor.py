"""sclecture.factor against independent implementations: scikit-learn's PCA (the PPCA likelihood)
and FactorAnalysis, SciPy's multivariate normal, Gaussian conditioning written out in full,
the stationarity condition of the PPCA likelihood, Monte Carlo; and its bad-input errors."""

from __future__ import annotations

import tracemalloc

import anndata
import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.stats
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SkFA
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.utils.estimator_checks import check_estimator

from sclecture import factor


def fa_data(rng, n=400, D=12, L=3, dtype=np.float64):
    """Cells drawn from a factor-analysis model (written here with NumPy only), and its parameters."""
    W = rng.normal(size=(D, L))
    mu = rng.normal(size=D)
    psi = rng.uniform(0.2, 2.0, size=D)
    X = rng.normal(size=(n, L)) @ W.T + mu + rng.normal(size=(n, D)) * np.sqrt(psi)
    return X.astype(dtype), W, mu, psi


def random_spd(rng, D):
    A = rng.normal(size=(D, D))
    return A @ A.T / D + 0.5 * np.eye(D)


# ---------------------------------------------------------------------------------------
# the functions of the exercises


def test_mvn_logpdf_matches_scipy():
    rng = np.random.default_rng(0)
    for D in (1, 3, 20):
        cov, mean = random_spd(rng, D), rng.normal(size=D)
        X = rng.normal(size=(15, D))
        expected = scipy.stats.multivariate_normal(mean, cov).logpdf(X)
        np.testing.assert_allclose(factor.mvn_logpdf(X, mean, cov), np.atleast_1d(expected), rtol=1e-10)


def test_lowrank_log_likelihood_matches_full_covariance_dense_and_sparse():
    rng = np.random.default_rng(1)
    X, W, mu, psi = fa_data(rng, n=50, D=9, L=2)
    expected = scipy.stats.multivariate_normal(mu, W @ W.T + np.diag(psi)).logpdf(X)
    np.testing.assert_allclose(factor.lowrank_mvn_logpdf(X, mu, W, psi), expected, rtol=1e-10)
    Xs = sp.random(30, 9, density=0.3, random_state=2, format="csr")
    expected = scipy.stats.multivariate_normal(mu, W @ W.T + np.diag(psi)).logpdf(Xs.toarray())
    np.testing.assert_allclose(factor.lowrank_mvn_logpdf(Xs, mu, W, psi), expected, rtol=1e-10)


def test_marginal_covariance_and_monte_carlo_sampling():
    rng = np.random.default_rng(2)
    W, mu, psi = rng.normal(size=(5, 2)), rng.normal(size=5), rng.uniform(0.1, 1, 5)
    C = factor.marginal_covariance(W, psi)
    np.testing.assert_allclose(C, W @ W.T + np.diag(psi))
    np.testing.assert_allclose(factor.marginal_covariance(W, 0.3), W @ W.T + 0.3 * np.eye(5))
    X, Z = factor.sample_fa(W, mu, psi, 200_000, np.random.default_rng(3))
    assert X.shape == (200_000, 5) and Z.shape == (200_000, 2)
    # sample moments approach the marginal N(mu, W W^T + Psi); standard errors ~ 1/sqrt(n)
    np.testing.assert_allclose(X.mean(0), mu, atol=0.02)
    np.testing.assert_allclose(np.cov(X.T), C, atol=0.03)
    # x - W z - mu is the noise: variance psi, uncorrelated with z
    eps = X - Z @ W.T - mu
    np.testing.assert_allclose(eps.var(0), psi, rtol=0.02)
    assert np.abs(eps.T @ Z / len(Z)).max() < 0.01
    # the same generator state gives the same draws
    X2, _ = factor.sample_fa(W, mu, psi, 200_000, np.random.default_rng(3))
    np.testing.assert_array_equal(X, X2)


def test_ppca_mle_is_a_stationary_point_and_unsorted_input_is_fine():
    rng = np.random.default_rng(4)
    X, *_ = fa_data(rng, n=300, D=8, L=2)
    S = np.cov(X.T, bias=True)
    lam, U = np.linalg.eigh(S)  # increasing order
    for L in (1, 2, 5):
        W, sigma2 = factor.ppca_mle(lam, U, L)
        assert W.shape == (8, L)
        np.testing.assert_allclose(sigma2, np.sort(lam)[: 8 - L].mean())
        C = W @ W.T + sigma2 * np.eye(8)
        Ci = np.linalg.inv(C)
        # d log L / d W = n (C^-1 S C^-1 W - C^-1 W) = 0 at the maximum (Tipping & Bishop 1999)
        np.testing.assert_allclose(Ci @ S @ Ci @ W, Ci @ W, atol=1e-10)
        # d log L / d sigma^2 = n/2 (tr(C^-1 S C^-1) - tr(C^-1)) = 0
        np.testing.assert_allclose(np.trace(Ci @ S @ Ci), np.trace(Ci), rtol=1e-10)
        # W has orthogonal columns
        WtW = W.T @ W
        np.testing.assert_allclose(WtW - np.diag(np.diag(WtW)), 0, atol=1e-10)
        # shuffled eigenpairs give the same model
        perm = rng.permutation(8)
        W2, s2 = factor.ppca_mle(lam[perm], U[:, perm], L)
        np.testing.assert_allclose(W2 @ W2.T, W @ W.T, atol=1e-12)
        assert s2 == pytest.approx(sigma2)


def test_ppca_posterior_matches_gaussian_conditioning():
    rng = np.random.default_rng(5)
    D, L = 7, 3
    W, mu, sigma2 = rng.normal(size=(D, L)), rng.normal(size=D), 0.4
    X = rng.normal(size=(11, D))
    mean, cov = factor.ppca_posterior(X, W, mu, sigma2)
    # joint Gaussian (z, x): Cov[z, x] = W^T, Cov[x] = C, so E[z|x] = W^T C^-1 (x - mu), Cov = I - W^T C^-1 W
    C = W @ W.T + sigma2 * np.eye(D)
    np.testing.assert_allclose(mean, (W.T @ np.linalg.solve(C, (X - mu).T)).T, atol=1e-12)
    np.testing.assert_allclose(cov, np.eye(L) - W.T @ np.linalg.solve(C, W), atol=1e-12)


# ---------------------------------------------------------------------------------------
# PPCA against scikit-learn


@pytest.mark.parametrize("L", [1, 3, 6])
def test_ppca_matches_sklearn_pca(L):
    rng = np.random.default_rng(6)
    X, *_ = fa_data(rng, n=250, D=15, L=4)
    X_test, *_ = fa_data(np.random.default_rng(7), n=60, D=15, L=4)
    sk = PCA(L, svd_solver="full").fit(X)
    ours = factor.PPCA(L, ddof=1).fit(X)  # scikit-learn estimates S with 1/(n - 1)
    for data in (X, X_test):
        assert ours.score(data) == pytest.approx(sk.score(data), rel=1e-6)
        np.testing.assert_allclose(ours.score_samples(data), sk.score_samples(data), rtol=1e-6)
    assert ours.noise_variance_ == pytest.approx(sk.noise_variance_, rel=1e-9)
    np.testing.assert_allclose(ours.get_covariance(), sk.get_covariance(), atol=1e-10)
    angles = sla.subspace_angles(ours.W_, sk.components_.T)
    assert angles.max() < 1e-6, f"PPCA and PCA subspaces differ by {angles.max():.3g} rad"
    # same sign convention, so the posterior mean is PCA's projection, shrunk: (Lambda - sigma^2)^(1/2) / Lambda
    lam = sk.explained_variance_
    np.testing.assert_allclose(ours.transform(X_test), sk.transform(X_test) * np.sqrt(lam - sk.noise_variance_) / lam,
                               atol=1e-9)
    # the maximum-likelihood S (1/n, the default) scores the training cells at least as well
    ml = factor.PPCA(L).fit(X)
    assert ml.score(X) >= sk.score(X)
    assert ml.noise_variance_ == pytest.approx(sk.noise_variance_ * (len(X) - 1) / len(X), rel=1e-9)


def test_ppca_many_genes_lanczos_path_matches_sklearn():
    rng = np.random.default_rng(8)
    X, *_ = fa_data(rng, n=600, D=300, L=5)
    sk = PCA(5, svd_solver="full").fit(X)
    ours = factor.PPCA(5, ddof=1).fit(X)  # D > 200 and 20 L <= D: the ARPACK path
    assert ours.score(X) == pytest.approx(sk.score(X), rel=1e-6)
    assert sla.subspace_angles(ours.W_, sk.components_.T).max() < 1e-6


def test_ppca_input_types_agree():
    rng = np.random.default_rng(9)
    X = sp.random(200, 30, density=0.2, random_state=9, format="csr", dtype=np.float64) * 5
    dense = factor.PPCA(4).fit(X.toarray())
    sparse = factor.PPCA(4).fit(X)
    adata = factor.PPCA(4).fit(anndata.AnnData(X))
    single = factor.PPCA(4).fit(X.toarray().astype(np.float32))
    for other, tol in [(sparse, 1e-9), (adata, 1e-9), (single, 1e-4)]:
        np.testing.assert_allclose(other.W_, dense.W_, atol=tol)
        assert other.score(X) == pytest.approx(dense.score(X), rel=tol)
    np.testing.assert_allclose(sparse.transform(X), dense.transform(X.toarray()), atol=1e-9)


def test_ppca_without_an_n_by_n_matrix():
    # 60,000 cells: an n x n float64 matrix would need 27 GiB; the fit needs a few MiB beyond the data
    rng = np.random.default_rng(10)
    X = rng.normal(size=(60_000, 40))
    tracemalloc.start()
    model = factor.PPCA(5).fit(X)
    model.score(X[:1000])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * X.nbytes, f"PPCA.fit allocated {peak / 2**20:.0f} MiB for {X.nbytes / 2**20:.0f} MiB of data"


def test_sampling_from_fitted_models_recovers_their_covariance():
    rng = np.random.default_rng(11)
    X, *_ = fa_data(rng, n=500, D=6, L=2)
    for model in (factor.PPCA(2).fit(X), factor.FactorAnalysis(2).fit(X)):
        draws = model.sample(100_000, random_state=0)
        np.testing.assert_allclose(draws.mean(0), model.mean_, atol=0.03)
        np.testing.assert_allclose(np.cov(draws.T), model.get_covariance(), atol=0.06)
        np.testing.assert_array_equal(draws[:5], model.sample(100_000, random_state=0)[:5])


# ---------------------------------------------------------------------------------------
# factor analysis against scikit-learn


@pytest.mark.parametrize("init", ["ppca", "random"])
def test_fa_em_is_monotone_and_reaches_sklearn(init):
    rng = np.random.default_rng(12)
    X, *_ = fa_data(rng, n=500, D=20, L=3)
    ours = factor.FactorAnalysis(3, max_iter=5000, tol=1e-9, random_state=0, init=init).fit(X)
    gains = np.diff(ours.loglik_)
    assert gains.min() >= -1e-10 * abs(ours.loglik_[-1]), f"the log-likelihood fell by {-gains.min():.3g} in one EM step"
    assert ours.converged_
    sk = SkFA(3, tol=1e-8, max_iter=10_000, random_state=0).fit(X)
    assert ours.score(X) == pytest.approx(sk.score(X), rel=1e-3)
    assert ours.loglik_[-1] == pytest.approx(ours.score(X), rel=1e-10)  # the EM bookkeeping is the real likelihood
    np.testing.assert_allclose(ours.get_covariance(), sk.get_covariance(), atol=0.02)


def test_fa_recovers_the_generating_noise_and_scores_like_scipy():
    rng = np.random.default_rng(13)
    X, W, mu, psi = fa_data(rng, n=20_000, D=10, L=2)
    fa = factor.FactorAnalysis(2).fit(X)
    np.testing.assert_allclose(fa.psi_, psi, rtol=0.1)
    np.testing.assert_allclose(fa.get_covariance(), W @ W.T + np.diag(psi), rtol=0.05, atol=0.05)
    expected = scipy.stats.multivariate_normal(fa.mean_, fa.get_covariance()).logpdf(X[:100])
    np.testing.assert_allclose(fa.score_samples(X[:100]), expected, rtol=1e-10)
    # posterior mean by Gaussian conditioning: E[z|x] = W^T C^-1 (x - mu), Cov = I - W^T C^-1 W
    C = fa.get_covariance()
    mean, cov = fa.posterior(X[:50])
    np.testing.assert_allclose(mean, (fa.W_.T @ np.linalg.solve(C, (X[:50] - fa.mean_).T)).T, atol=1e-9)
    np.testing.assert_allclose(cov, np.eye(2) - fa.W_.T @ np.linalg.solve(C, fa.W_), atol=1e-9)


def test_fa_warns_when_it_stops_early():
    X, *_ = fa_data(np.random.default_rng(14), n=200, D=8, L=2)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        fa = factor.FactorAnalysis(2, max_iter=2, tol=0.0, init="random", random_state=0).fit(X)
    assert fa.n_iter_ == 2 and len(fa.loglik_) == 3 and not fa.converged_


# ---------------------------------------------------------------------------------------
# scikit-learn's estimator API and AnnData


def test_clone_params_and_model_selection_by_held_out_likelihood():
    """score() is the average log-likelihood, so cross-validation picks the latent dimension."""
    rng = np.random.default_rng(17)
    W = rng.normal(size=(10, 3)) * 2
    X = rng.normal(size=(300, 3)) @ W.T + 0.7 * rng.normal(size=(300, 10))  # PPCA data, L = 3
    for model in (factor.PPCA(2, ddof=1), factor.FactorAnalysis(2, tol=1e-4, init="random", random_state=4)):
        params = model.get_params()
        copy = clone(model)
        assert copy is not model and copy.get_params() == params and not hasattr(copy, "W_")
        assert copy.set_params(n_components=5).n_components == 5 and model.n_components == 2
        folds = KFold(4, shuffle=True, random_state=0)
        scores = cross_val_score(model, X, cv=folds)
        by_hand = [clone(model).fit(X[tr]).score(X[te]) for tr, te in folds.split(X)]
        np.testing.assert_allclose(scores, by_hand, rtol=1e-12)
        search = GridSearchCV(model, {"n_components": [1, 2, 3, 4, 6]}, cv=folds).fit(X)
        assert search.best_params_ == {"n_components": 3}, search.cv_results_["mean_test_score"]


def test_store_writes_the_latent_space_into_obsm():
    rng = np.random.default_rng(18)
    X, *_ = fa_data(rng, n=80, D=7, L=2)
    adata = anndata.AnnData(np.zeros_like(X), layers={"logcounts": X})
    adata.var_names = [f"gene{d}" for d in range(7)]
    for Model, key in [(factor.PPCA, "X_ppca"), (factor.FactorAnalysis, "X_fa")]:
        model = Model(2, layer="logcounts").fit(adata)
        np.testing.assert_array_equal(model.feature_names_in_, adata.var_names)
        assert model.store(adata) is adata
        np.testing.assert_allclose(adata.obsm[key], Model(2).fit(X).transform(X), atol=1e-10)
        with pytest.raises(ValueError, match="overwrite=True"):
            model.store(adata)
        model.store(adata, key_added="X_other", overwrite=True)
        assert adata.obsm["X_other"].shape == (80, 2)
        with pytest.raises(NotFittedError, match="not fitted"):
            Model(2).store(adata)
        with pytest.raises(TypeError, match="AnnData"):
            model.store(X)


def test_fits_leave_the_global_random_state_alone_and_repeat():
    X, *_ = fa_data(np.random.default_rng(19), n=100, D=6, L=2)
    np_state = np.random.get_state()
    a = factor.FactorAnalysis(2, init="random", random_state=3).fit(X)
    b = factor.FactorAnalysis(2, init="random", random_state=3).fit(X)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    np.testing.assert_array_equal(a.W_, b.W_)
    assert not np.array_equal(a.W_, factor.FactorAnalysis(2, init="random", random_state=4).fit(X).W_)


# the checks of scikit-learn that PPCA and FactorAnalysis fail on purpose, and why
EXPECTED_FAILED_CHECKS = {
    "check_complex_data": "complex numbers are refused with a TypeError (not a number type), not a ValueError",
    "check_dtype_object": "a matrix of Python objects is refused with a TypeError that says how to convert it",
    "check_estimators_empty_data_messages": "the course's wording: 'X is empty (shape ...)'",
    "check_fit2d_1sample": "the course's wording: 'use more cells than components'",
    "check_fit2d_1feature": "the course's wording: L must be smaller than the number of genes D",
    "check_fit2d_predict1d": "the course's wording: 'use x.reshape(1, -1) for one cell'",
    "check_n_features_in_after_fitting": "the course's wording: 'X has 3 features (genes) but the model was fitted on 4'",
}


@pytest.mark.parametrize("model", [factor.PPCA(1), factor.FactorAnalysis(1)], ids=["PPCA", "FactorAnalysis"])
def test_sklearn_check_estimator(model):
    check_estimator(model, expected_failed_checks=EXPECTED_FAILED_CHECKS)


# ---------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("Model", [factor.PPCA, factor.FactorAnalysis])
def test_bad_input_fails_early_and_says_how_to_fix_it(Model):
    X = np.random.default_rng(15).normal(size=(30, 6))
    with pytest.raises(ValueError, match="smaller than the number of genes"):
        Model(6).fit(X)
    with pytest.raises(ValueError, match="more cells than components"):
        Model(3).fit(X[:3])
    bad = X.copy()
    bad[2, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Model(2).fit(bad)
    with pytest.raises(ValueError, match="positive integer"):
        Model(0).fit(X)
    with pytest.raises(ValueError, match="positive integer"):
        Model(2.5).fit(X)
    with pytest.raises(ValueError, match="2-d"):
        Model(2).fit(X[0])
    with pytest.raises(NotFittedError, match="not fitted"):
        Model(2).transform(X)
    model = Model(2).fit(X)
    with pytest.raises(ValueError, match="fitted on 6"):
        model.transform(X[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        model.score(bad)


def test_bad_input_of_the_functions():
    rng = np.random.default_rng(16)
    with pytest.raises(ValueError, match="positive definite"):
        factor.mvn_logpdf(rng.normal(size=(3, 2)), np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="2 x 2"):
        factor.mvn_logpdf(rng.normal(size=(3, 2)), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="length D"):
        factor.sample_fa(np.ones((3, 1)), np.zeros(2), np.ones(3), 5)
    lam, U = np.linalg.eigh(random_spd(rng, 4))
    with pytest.raises(ValueError, match="between 1 and D-1"):
        factor.ppca_mle(lam, U, 4)
    # data with no variance outside L directions: sigma^2 = 0 cannot be a Gaussian model
    flat = rng.normal(size=(50, 2)) @ rng.normal(size=(2, 5))
    with pytest.raises(ValueError, match="fewer components"):
        factor.PPCA(2).fit(flat)
    with pytest.raises(ValueError, match="init"):
        factor.FactorAnalysis(2, init="svd").fit(rng.normal(size=(20, 4)))


# ---------------------------------------------------------------------------------------
# real data


@pytest.mark.data
def test_pbmc3k_ppca_and_fa_against_sklearn(real_data):
    from sclecture import datasets, preprocessing

    adata = datasets.pbmc3k()
    genes = preprocessing.highly_variable_genes(adata, 300)
    X = preprocessing.log1p_normalize(adata.X[:, genes]).astype(np.float64)
    ours = factor.PPCA(10, ddof=1).fit(X)  # sparse input
    sk = PCA(10, svd_solver="full").fit(X.toarray())
    assert ours.score(X) == pytest.approx(sk.score(X.toarray()), rel=1e-6)
    assert sla.subspace_angles(ours.W_, sk.components_.T).max() < 1e-6
    fa = factor.FactorAnalysis(10, tol=1e-6).fit(X)
    assert np.diff(fa.loglik_).min() >= -1e-10 * abs(fa.loglik_[-1])
    skfa = SkFA(10, tol=1e-4, random_state=0).fit(X.toarray())
    assert fa.score(X) == pytest.approx(skfa.score(X.toarray()), rel=1e-3)
    assert fa.score(X) > factor.PPCA(10).fit(X).score(X)  # per-gene noise fits better than one sigma^2
