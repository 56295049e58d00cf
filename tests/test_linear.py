"""Tests of sclecture.linear against independent implementations: scipy's expit and
Bernoulli pmf, scikit-learn's LogisticRegression and log_loss, finite differences, torch
autograd, and Novikoff's bound on the perceptron's mistakes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.special
import scipy.stats
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.utils.estimator_checks import check_estimator

from sclecture import linear


def well_conditioned(n=400, d=3, seed=0):
    """Standardised features, a moderate true beta: overlapping classes, a unique MLE."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    beta = np.linspace(-1.5, 1.0, d)
    y = (rng.random(n) < scipy.special.expit(X @ beta + 0.3)).astype(int)
    return X, y


def xor_data(n_per_corner=25, seed=0):
    rng = np.random.default_rng(seed)
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    X = np.repeat(corners, n_per_corner, axis=0) + 0.1 * rng.normal(size=(4 * n_per_corner, 2))
    y = np.repeat([0, 1, 1, 0], n_per_corner)
    return X, y


# --- sigmoid and the Bernoulli log-likelihood ----------------------------------------------


def test_sigmoid_matches_expit_and_is_stable():
    z = np.concatenate([np.linspace(-40, 40, 101), [-1e4, -750.0, 750.0, 1e4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning allowed
        got = linear.sigmoid(z)
    np.testing.assert_allclose(got, scipy.special.expit(z), rtol=1e-12, atol=0)
    assert got[-1] == 1.0 and got[-4] == 0.0
    t = linear.sigmoid(torch.tensor(z))
    np.testing.assert_allclose(t.numpy(), scipy.special.expit(z), rtol=1e-12, atol=0)
    assert float(linear.sigmoid(0.0)) == 0.5


def test_step_is_the_lectures_sign():
    np.testing.assert_array_equal(linear.step(np.array([-2.0, -1e-12, 0.0, 3.0])), [0, 0, 1, 1])


def test_bernoulli_log_likelihood_matches_scipy():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.99, 50)
    y = rng.integers(0, 2, 50)
    expected = scipy.stats.bernoulli.logpmf(y, p).sum()
    np.testing.assert_allclose(linear.bernoulli_log_likelihood(y, p), expected, rtol=1e-12)
    np.testing.assert_allclose(linear.bernoulli_log_likelihood(y, logits=scipy.special.logit(p)), expected, rtol=1e-10)
    # certain outcomes: 0 log 0 = 0, and a certain mistake is -inf
    assert linear.bernoulli_log_likelihood(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0
    assert linear.bernoulli_log_likelihood(np.array([1]), np.array([0.0])) == -np.inf
    # extreme logits stay finite
    got = linear.bernoulli_log_likelihood(np.array([1.0, 0.0, 0.0]), logits=np.array([800.0, -800.0, 800.0]))
    np.testing.assert_allclose(got, -800.0, rtol=1e-12)
    with pytest.raises(TypeError, match="exactly one"):
        linear.bernoulli_log_likelihood(y)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        linear.bernoulli_log_likelihood(y, p + 1)


def test_log_likelihood_matches_sklearn_log_loss():
    X, y = well_conditioned(seed=2)
    beta, beta0 = np.array([0.3, -0.2, 0.1]), -0.4
    p = scipy.special.expit(X @ beta + beta0)
    expected = -log_loss(y, p, normalize=False)
    np.testing.assert_allclose(linear.log_likelihood(X, y, beta, beta0), expected, rtol=1e-10)


# --- the gradient --------------------------------------------------------------------------


def test_gradient_matches_finite_differences():
    X, y = well_conditioned(n=60, d=4, seed=3)
    rng = np.random.default_rng(4)
    beta, beta0 = rng.normal(size=4), 0.2
    g_beta, g_beta0 = linear.log_likelihood_gradient(X, y, beta, beta0)
    h = 1e-6
    fd = np.array([
        (linear.log_likelihood(X, y, beta + h * e, beta0) - linear.log_likelihood(X, y, beta - h * e, beta0)) / (2 * h)
        for e in np.eye(4)
    ])
    fd0 = (linear.log_likelihood(X, y, beta, beta0 + h) - linear.log_likelihood(X, y, beta, beta0 - h)) / (2 * h)
    np.testing.assert_allclose(g_beta, fd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g_beta0, fd0, rtol=1e-6, atol=1e-6)


def test_gradient_matches_torch_autograd():
    X, y = well_conditioned(n=80, d=5, seed=5)
    beta = torch.tensor(np.random.default_rng(6).normal(size=5), requires_grad=True)
    beta0 = torch.tensor(-0.3, dtype=torch.float64, requires_grad=True)
    Xt, yt = torch.tensor(X), torch.tensor(y, dtype=torch.float64)
    ll = torch.distributions.Bernoulli(logits=Xt @ beta + beta0).log_prob(yt).sum()
    ll.backward()
    g_beta, g_beta0 = linear.log_likelihood_gradient(X, y, beta.detach().numpy(), beta0.item())
    np.testing.assert_allclose(g_beta, beta.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(g_beta0, beta0.grad.item(), rtol=1e-10)
    np.testing.assert_allclose(linear.log_likelihood(X, y, beta.detach().numpy(), beta0.item()), ll.item(), rtol=1e-12)


# --- logistic regression -------------------------------------------------------------------


def test_logistic_regression_matches_unpenalised_sklearn():
    X, y = well_conditioned()
    ours = linear.LogisticRegression(lr=1.0, n_iter=10_000, tol=1e-9).fit(X, y)
    ref = SkLogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(X, y)
    assert ours.converged_
    np.testing.assert_allclose(ours.coef_, ref.coef_[0], atol=1e-4)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_[0], atol=1e-4)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert ours.score(X, y) == pytest.approx(ref.score(X, y))


def test_l2_penalty_is_sklearns_inverse_C():
    X, y = well_conditioned(seed=7)
    ours = linear.LogisticRegression(lr=1.0, n_iter=10_000, l2=20.0, tol=1e-9).fit(X, y)
    ref = SkLogisticRegression(C=1 / 20.0, tol=1e-12, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_[0], atol=1e-4)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_[0], atol=1e-4)


def test_log_likelihood_never_decreases_at_a_safe_step():
    X, y = well_conditioned(n=300, d=6, seed=8)
    X = X * np.array([1, 2, 3, 0.5, 1, 4])  # unequal scales: a harder problem
    Z = np.column_stack([X, np.ones(len(X))])
    # log L has a Lipschitz gradient with constant lambda_max(Z^T Z) / 4, so Delta = 1 / that is safe
    lipschitz = np.linalg.eigvalsh(Z.T @ Z).max() / 4
    model = linear.LogisticRegression(lr=len(X) / lipschitz, n_iter=500, tol=0).fit(X, y)
    ll = np.array(model.log_likelihood_)
    assert len(ll) == 500
    assert np.all(np.diff(ll) >= -1e-9), f"log L decreased by {-np.diff(ll).min():.3g}"
    assert ll[-1] > linear.log_likelihood(X, y, np.zeros(6), 0.0)


def test_gradient_ascent_same_in_numpy_and_torch():
    X, y = well_conditioned(n=100, d=3, seed=9)
    b_np, b0_np, h_np = linear.gradient_ascent(X, y.astype(float), lr=0.5, n_iter=30)
    b_t, b0_t, h_t = linear.gradient_ascent(torch.tensor(X), torch.tensor(y, dtype=torch.float64), lr=0.5, n_iter=30)
    np.testing.assert_allclose(b_np, b_t.numpy(), rtol=1e-10)
    np.testing.assert_allclose(b0_np, float(b0_t), rtol=1e-10)
    np.testing.assert_allclose(h_np, h_t, rtol=1e-10)
    assert len(h_np) == 30


def test_sparse_and_anndata_inputs_give_the_same_fit():
    anndata = pytest.importorskip("anndata")
    import pandas as pd

    X, y = well_conditioned(n=120, d=4, seed=10)
    X = np.abs(X)
    dense = linear.LogisticRegression(n_iter=200).fit(X, y)
    sparse = linear.LogisticRegression(n_iter=200).fit(sp.csr_matrix(X), y)
    adata = anndata.AnnData(X=sp.csr_matrix(X), obs=pd.DataFrame({"is_b": y.astype(bool)}, index=[f"c{i}" for i in range(len(y))]))
    from_obs = linear.LogisticRegression(n_iter=200).fit(adata, "is_b")
    np.testing.assert_allclose(sparse.coef_, dense.coef_)
    np.testing.assert_allclose(from_obs.coef_, dense.coef_)
    assert from_obs.score(adata, "is_b") == dense.score(X, y)


def test_random_state_repeats_and_changes_the_start():
    X, y = well_conditioned(n=80, seed=11)
    a = linear.LogisticRegression(n_iter=3, random_state=1).fit(X, y).coef_
    b = linear.LogisticRegression(n_iter=3, random_state=1).fit(X, y).coef_
    c = linear.LogisticRegression(n_iter=3, random_state=2).fit(X, y).coef_
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_logistic_regression_on_cuda_matches_cpu():
    X, y = well_conditioned(seed=12)
    gpu = linear.LogisticRegression(n_iter=300, device="cuda").fit(X, y)
    cpu = linear.LogisticRegression(n_iter=300, device="cpu").fit(X, y)
    np.testing.assert_allclose(gpu.coef_, cpu.coef_, rtol=1e-8)
    assert isinstance(gpu.coef_, np.ndarray)


# --- the perceptron ------------------------------------------------------------------------


def test_perceptron_update_rule():
    beta, beta0 = np.array([1.0, -1.0]), 0.0
    # misclassified positive: eta = -1 < 0 -> y_hat = 0, so add x
    b, b0 = linear.perceptron_update(np.array([0.0, 1.0]), 1, beta, beta0)
    np.testing.assert_array_equal(b, [1.0, 0.0])
    assert b0 == 1.0
    # misclassified negative, on the boundary: eta = 0 -> y_hat = 1, so subtract x
    b, b0 = linear.perceptron_update(np.array([1.0, 1.0]), 0, beta, beta0)
    np.testing.assert_array_equal(b, [0.0, -2.0])
    assert b0 == -1.0
    # correctly classified: unchanged, and the input is not modified in place
    b, b0 = linear.perceptron_update(np.array([2.0, 0.0]), 1, beta, beta0)
    np.testing.assert_array_equal(b, beta)
    assert b0 == beta0
    np.testing.assert_array_equal(beta, [1.0, -1.0])


def test_perceptron_converges_within_novikoffs_bound():
    rng = np.random.default_rng(13)
    w_star, b_star = np.array([2.0, -1.0]), 0.5
    X = rng.uniform(-3, 3, size=(300, 2))
    eta = X @ w_star + b_star
    keep = np.abs(eta) > 0.5  # a margin between the classes
    X, y = X[keep], (eta[keep] > 0).astype(int)
    model = linear.Perceptron(max_epochs=1000, random_state=0).fit(X, y)
    assert model.converged_
    assert model.score(X, y) == 1.0
    # Novikoff: with x~ = (x, 1), at most (R / gamma)^2 mistakes
    Xa = np.column_stack([X, np.ones(len(X))])
    w = np.append(w_star, b_star) / np.linalg.norm(np.append(w_star, b_star))
    gamma = np.min(np.where(y == 1, 1, -1) * (Xa @ w))
    R = np.linalg.norm(Xa, axis=1).max()
    assert 0 < model.n_updates_ <= (R / gamma) ** 2
    assert model.mistakes_[-1] == 0 and model.n_updates_ == sum(model.mistakes_)


def test_perceptron_reports_non_convergence_on_xor():
    X, y = xor_data()
    model = linear.Perceptron(max_epochs=50, random_state=0).fit(X, y)
    assert not model.converged_
    assert model.n_iter_ == 50
    assert min(model.mistakes_) > 0
    assert model.score(X, y) <= 0.75  # no line gets more than 3 of the 4 corners right
    lr = linear.LogisticRegression(n_iter=500).fit(X, y)
    assert lr.score(X, y) <= 0.75


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("Model", [linear.LogisticRegression, linear.Perceptron])
def test_bad_input_fails_early_with_a_message(Model):
    X, y = well_conditioned(n=20, seed=14)
    with pytest.raises(ValueError, match="Only binary classification is supported. y holds 3 classes"):
        Model().fit(X, np.arange(20) % 3)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        Model().fit(X, X[:, 0])
    with pytest.raises(ValueError, match="requires y to be passed"):
        Model().fit(X, None)
    X_nan = X.copy()
    X_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Model().fit(X_nan, y)
    with pytest.raises(ValueError, match="20 cells .* 19 labels"):
        Model().fit(X, y[:-1])
    with pytest.raises(ValueError, match="one class only"):
        Model().fit(X, np.zeros(20))
    with pytest.raises(ValueError, match="2-d"):
        Model().fit(X[:, 0], y)
    with pytest.raises(NotFittedError, match=f"this {Model.__name__} is not fitted yet"):
        Model().predict(X)
    fitted = Model().fit(X, y)
    with pytest.raises(ValueError, match="fitted on 3"):
        fitted.predict(X[:, :2])


def test_bad_hyperparameters():
    X, y = well_conditioned(n=20, seed=15)
    for kwargs in [{"lr": 0}, {"lr": -1.0}, {"n_iter": 0}, {"n_iter": 2.5}, {"l2": -1.0}, {"tol": "small"}]:
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=f"{name} must be a"):
            linear.LogisticRegression(**kwargs).fit(X, y)
    with pytest.raises(ValueError, match="max_epochs"):
        linear.Perceptron(max_epochs=0).fit(X, y)
    with pytest.raises(FloatingPointError, match="lower lr"):
        linear.LogisticRegression(lr=1e308, n_iter=5, tol=0).fit(X * 1e10, y)


# --- scikit-learn compatibility and AnnData ------------------------------------------------

# Checks of scikit-learn's suite that the course's one validation layer (sclecture._validation)
# answers in its own words or by its own rules; both estimators share them.
EXPECTED_FAILED_CHECKS = {
    "check_n_features_in_after_fitting": "a feature-count mismatch is refused in the course's wording "
                                         "('X has 3 features (genes) but the model was fitted on 4')",
    "check_complex_data": "complex input is refused with a TypeError that names the dtype",
    "check_dtype_object": "object arrays are refused with a TypeError: convert them with np.asarray(X, dtype=float)",
    "check_estimators_empty_data_messages": "an empty matrix is refused in the course's wording ('X is empty')",
    "check_supervised_y_2d": "a column vector y of shape (n, 1) is taken as one label per cell, without a warning",
    "check_fit2d_predict1d": "a 1-d X is refused in the course's wording ('X must be a 2-d cells x features matrix')",
}


@pytest.mark.parametrize("model", [linear.LogisticRegression(lr=1.0, n_iter=200), linear.Perceptron(max_epochs=20)],
                         ids=["LogisticRegression", "Perceptron"])
def test_scikit_learn_estimator_checks(model):
    check_estimator(model, expected_failed_checks=EXPECTED_FAILED_CHECKS)


def test_clone_params_and_grid_search():
    X, y = well_conditioned(n=90, seed=16)
    model = linear.LogisticRegression(lr=1.0, n_iter=100, l2=0.5, random_state=3)
    assert model.get_params() == {"lr": 1.0, "n_iter": 100, "l2": 0.5, "tol": 1e-6, "random_state": 3, "device": None}
    twin = clone(model).set_params(l2=2.0)
    assert twin.get_params()["l2"] == 2.0 and model.l2 == 0.5 and not hasattr(twin, "coef_")
    np.testing.assert_array_equal(clone(model).fit(X, y).coef_, model.fit(X, y).coef_)
    scores = cross_val_score(linear.LogisticRegression(lr=1.0, n_iter=100), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.6
    search = GridSearchCV(linear.LogisticRegression(lr=1.0, n_iter=100), {"l2": [0.0, 1e4]}, cv=3).fit(X, y)
    assert search.best_params_ == {"l2": 0.0}  # l2 = 1e4 shrinks beta to 0: chance level
    assert cross_val_score(linear.Perceptron(max_epochs=5), X, y, cv=3).min() > 0.5


def test_any_two_labels_and_the_caller_random_state():
    X, y = well_conditioned(n=80, seed=17)
    names = np.where(y == 1, "B", "T")  # sorted: classes_ = [B, T], so "T" plays y = 1
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    model = linear.LogisticRegression(n_iter=200, random_state=0).fit(X, names)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()
    assert list(model.classes_) == ["B", "T"]
    coded = linear.LogisticRegression(n_iter=200, random_state=0).fit(X, 1 - y)
    np.testing.assert_allclose(model.coef_, coded.coef_)
    assert set(model.predict(X)) <= {"B", "T"} and model.score(X, names) == coded.score(X, 1 - y)
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], scipy.special.expit(model.decision_function(X)))
    perceptron = linear.Perceptron(max_epochs=3).fit(X, y.astype(bool))
    assert perceptron.predict(X).dtype == bool


def test_store_writes_the_prediction_into_obs():
    anndata = pytest.importorskip("anndata")
    import pandas as pd

    X, y = well_conditioned(n=60, seed=18)
    adata = anndata.AnnData(X=X, obs=pd.DataFrame({"is_b": np.where(y == 1, "B", "other")}, index=[f"c{i}" for i in range(60)]),
                            var=pd.DataFrame(index=["CD79A", "LYZ", "MS4A1"]))
    model = linear.LogisticRegression(n_iter=200).fit(adata, "is_b")
    np.testing.assert_array_equal(model.feature_names_in_, ["CD79A", "LYZ", "MS4A1"])
    model.store(adata)
    np.testing.assert_array_equal(adata.obs["logreg_prediction"].to_numpy(), model.predict(adata))
    np.testing.assert_allclose(adata.obs["logreg_prediction_confidence"], model.predict_proba(adata).max(axis=1))
    with pytest.raises(ValueError, match="already holds"):
        model.store(adata)
    model.store(adata, overwrite=True)
    with pytest.raises(NotFittedError):
        linear.LogisticRegression().store(adata)


# --- real data -----------------------------------------------------------------------------


def _data_dir():
    env = os.environ.get("SCLECTURE_DATA_DIR")
    if env:
        return env
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(shared) if shared.exists() else None


@pytest.mark.data
def test_b_cells_against_the_rest_on_pbmc3k(monkeypatch):
    data_dir = _data_dir()
    if data_dir is None:
        pytest.skip("no real data: set SCLECTURE_DATA_DIR (or place the data in ../shared/data)")
    monkeypatch.setenv("SCLECTURE_DATA_DIR", data_dir)
    from sklearn.model_selection import train_test_split

    from sclecture import datasets, preprocessing

    adata = datasets.pbmc3k()
    adata = adata[adata.obs["cell_type"].notna()]
    genes = preprocessing.highly_variable_genes(adata, n_top=300)
    X = preprocessing.log1p_normalize(adata).toarray()[:, genes]
    y = (adata.obs["cell_type"] == "B").to_numpy().astype(int)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    mu, sd = X_tr.mean(0), X_tr.std(0) + 1e-8
    model = linear.LogisticRegression(lr=0.1, n_iter=300, l2=1.0).fit((X_tr - mu) / sd, y_tr)
    assert model.score((X_te - mu) / sd, y_te) > 0.95
    top = np.asarray(adata.var_names[genes])[np.argsort(-model.coef_)[:10]]
    assert {"MS4A1", "CD79A", "CD79B"} & set(top), f"B-cell markers missing from the top coefficients {top}"
