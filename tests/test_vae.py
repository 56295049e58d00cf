"""sclecture.vae against independent implementations.

- the analytic KL against torch.distributions and a Monte Carlo estimate;
- the reparameterised draw's mean, variance and gradients (autograd, gradcheck);
- the log-likelihoods against torch.distributions / a NumPy formula;
- the ELBO against closed forms: a linear decoder's expected log-likelihood, and the exact
  PPCA log-likelihood when q is the true posterior (the bound is then an equality);
- training: a linear-decoder VAE on PPCA data gets within 2 % of PPCA's exact
  log-likelihood, from below;
- the estimator's API (shapes, determinism, sparse / AnnData input) and its bad-input errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.utils.estimator_checks import check_estimator

from sclecture import vae
from sclecture.vae import (
    VAE,
    Encoder,
    VariationalAutoencoder,
    bernoulli_log_px,
    gaussian_kl,
    gaussian_log_px,
    minibatch_elbo,
    reparameterize,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ppca_data(n=2000, D=10, L=2, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    W, mu = rng.normal(size=(D, L)), rng.normal(size=D)
    return (rng.normal(size=(n, L)) @ W.T + mu + noise * rng.normal(size=(n, D))).astype(np.float32)


def ppca_exact_loglik(X, L):
    """Mean log N(x | xbar, W W^T + s2 I) at PPCA's closed-form maximum-likelihood parameters."""
    X = np.asarray(X, dtype=np.float64)
    S = np.cov(X.T, bias=True)
    lam, U = np.linalg.eigh(S)
    lam, U = lam[::-1], U[:, ::-1]
    s2 = lam[L:].mean()
    W = U[:, :L] * np.sqrt(lam[:L] - s2)
    return multivariate_normal(X.mean(0), W @ W.T + s2 * np.eye(X.shape[1])).logpdf(X).mean()


# ---------------------------------------------------------------------------------------
# KL and reparameterisation


def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = 2 * torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)
    assert gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)).abs().max() == 0


def test_gaussian_kl_matches_monte_carlo():
    mu, logvar = torch.tensor([[0.8, -1.5, 0.1]], dtype=torch.float64), torch.tensor([[-0.5, 0.7, -2.0]], dtype=torch.float64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(0.0, 1.0)
    gen = torch.Generator().manual_seed(1)
    z = mu + torch.exp(0.5 * logvar) * torch.randn((400_000, 3), generator=gen, dtype=torch.float64)
    terms = (q.log_prob(z) - p.log_prob(z)).sum(-1)
    se = terms.std() / math.sqrt(len(terms))
    assert abs(terms.mean() - gaussian_kl(mu, logvar)[0]) < 4 * se


def test_reparameterize_has_the_right_mean_and_variance():
    n = 200_000
    mu, logvar = torch.tensor([0.5, -2.0, 1.0]), torch.tensor([-1.0, 0.0, 1.5])
    z = reparameterize(mu.expand(n, 3), logvar.expand(n, 3), generator=torch.Generator().manual_seed(0))
    sd = torch.exp(0.5 * logvar)
    assert torch.all((z.mean(0) - mu).abs() < 4 * sd / math.sqrt(n))
    # the variance of a sample variance is 2 sigma^4 / (n - 1)
    assert torch.all((z.var(0) - sd**2).abs() < 4 * math.sqrt(2 / n) * sd**2)


def test_reparameterize_gradients_flow_to_mu_and_logvar():
    mu = torch.randn(4, 3, requires_grad=True)
    logvar = torch.randn(4, 3, requires_grad=True)
    z = reparameterize(mu, logvar)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(4, 3))
    torch.testing.assert_close(logvar.grad, 0.5 * (z - mu).detach())


def test_reparameterize_gradcheck_with_fixed_noise():
    mu = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    f = lambda m, lv: reparameterize(m, lv, generator=torch.Generator().manual_seed(5))  # noqa: E731
    assert torch.autograd.gradcheck(f, (mu, logvar))


def test_reparameterize_generator_repeats_and_global_draws_differ():
    mu, logvar = torch.zeros(5, 2), torch.zeros(5, 2)
    a = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(3))
    b = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(reparameterize(mu, logvar), reparameterize(mu, logvar))


# ---------------------------------------------------------------------------------------
# log-likelihoods


@pytest.mark.parametrize("logvar_shape", [(), (5,), (6, 5)])
def test_gaussian_log_px_matches_torch_distributions(logvar_shape):
    torch.manual_seed(2)
    x, mean = 2 * torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    logvar = torch.randn(logvar_shape, dtype=torch.float64)
    expected = torch.distributions.Normal(mean, torch.exp(0.5 * logvar)).log_prob(x).sum(-1)
    torch.testing.assert_close(gaussian_log_px(x, mean, logvar), expected)


def test_gaussian_log_px_accepts_a_number():
    x = torch.ones(2, 3)
    expected = -0.5 * 3 * (math.log(2 * math.pi) + math.log(4.0) + 0.25)
    torch.testing.assert_close(gaussian_log_px(x, torch.zeros(2, 3), math.log(4.0)), torch.full((2,), expected))


def test_bernoulli_log_px_matches_torch_and_numpy():
    torch.manual_seed(3)
    logits = 3 * torch.randn(7, 4, dtype=torch.float64)
    x_bin = (torch.rand(7, 4, dtype=torch.float64) < 0.5).double()
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x_bin).sum(-1)
    torch.testing.assert_close(bernoulli_log_px(x_bin, logits), expected)
    # grey levels in [0, 1]: x log p + (1 - x) log (1 - p) in NumPy
    x, h = torch.rand(7, 4, dtype=torch.float64), logits
    p = 1 / (1 + np.exp(-h.numpy()))
    ref = (x.numpy() * np.log(p) + (1 - x.numpy()) * np.log1p(-p)).sum(-1)
    np.testing.assert_allclose(bernoulli_log_px(x, h).numpy(), ref, rtol=1e-10)


def test_bernoulli_log_px_is_stable_for_large_logits():
    logits = torch.tensor([[200.0, -200.0]])
    out = bernoulli_log_px(torch.tensor([[1.0, 0.0]]), logits)
    assert torch.isfinite(out).all() and abs(out.item()) < 1e-6


# ---------------------------------------------------------------------------------------
# the ELBO


def _linear_decoder_setup():
    W = torch.tensor([[0.8, -0.3], [0.2, 1.0], [-0.6, 0.3]], dtype=torch.float64)
    b = torch.tensor([0.2, -0.1, 0.5], dtype=torch.float64)
    return W, b, 0.5


def test_minibatch_elbo_matches_closed_form_for_a_linear_decoder():
    """E_q log N(x | W z + b, s2 I) = -D/2 log(2 pi s2) - (|x - W mu - b|^2 + sum_j |W_j|^2 sigma_j^2) / (2 s2)."""
    W, b, s2 = _linear_decoder_setup()
    x = torch.tensor([[0.6, -0.6, 0.4]], dtype=torch.float64)
    m, lv = torch.tensor([[0.3, -0.8]], dtype=torch.float64), torch.tensor([[-0.5, 0.2]], dtype=torch.float64)
    n = 200_000
    torch.manual_seed(4)
    got = minibatch_elbo(x.expand(n, 3), lambda x: (m.expand(len(x), 2), lv.expand(len(x), 2)), lambda z: z @ W.T + b,
                         lambda x, mean: gaussian_log_px(x, mean, torch.tensor(math.log(s2), dtype=torch.float64)))
    r = x[0] - (W @ m[0] + b)
    rec = -1.5 * math.log(2 * math.pi * s2) - (float(r @ r) + float((W**2).sum(0) @ lv[0].exp())) / (2 * s2)
    kl = 0.5 * float((m**2 + lv.exp() - lv - 1).sum())
    assert got.shape == ()
    assert abs(float(got) - (rec - kl)) < 0.03  # about 5 standard errors


def _exact_posterior_vae(W, mu, s2):
    """A VAE with linear decoder W z + mu and an encoder that outputs the exact PPCA posterior
    N(M^-1 W^T (x - mu), s2 M^-1), M = W^T W + s2 I (diagonal when W's columns are orthogonal)."""
    D, L = W.shape
    model = VAE(D, L, hidden=(D,), decoder_hidden=(), activation="identity").double()
    M = W.T @ W + s2 * np.eye(L)
    Minv = np.linalg.inv(M)
    assert np.allclose(M, np.diag(np.diag(M))), "W must have orthogonal columns for a diagonal posterior"
    with torch.no_grad():
        model.encoder.body[0].weight.copy_(torch.eye(D))
        model.encoder.body[0].bias.zero_()
        model.encoder.mean.weight.copy_(torch.from_numpy(Minv @ W.T))
        model.encoder.mean.bias.copy_(torch.from_numpy(-Minv @ W.T @ mu))
        model.encoder.logvar.weight.zero_()
        model.encoder.logvar.bias.copy_(torch.from_numpy(np.log(s2 * np.diag(Minv))))
        model.decoder[0].weight.copy_(torch.from_numpy(W))
        model.decoder[0].bias.copy_(torch.from_numpy(mu))
        model.log_sigma2.fill_(math.log(s2))
    return model


def _ppca_with_orthogonal_w(seed):
    rng = np.random.default_rng(seed)
    D, s2 = 6, 0.3
    Q, _ = np.linalg.qr(rng.normal(size=(D, 2)))
    W, mu = Q * np.array([2.0, 0.7]), rng.normal(size=D)  # orthogonal columns
    X = rng.multivariate_normal(mu, W @ W.T + s2 * np.eye(D), size=50)
    return W, mu, s2, X, multivariate_normal(mu, W @ W.T + s2 * np.eye(D)).logpdf(X)


def test_exact_posterior_makes_log_weights_constant():
    """With q = p(z | x): log p(x | z) + log p(z) - log q(z | x) = log p(x) for every draw z."""
    W, mu, s2, X, exact = _ppca_with_orthogonal_w(0)
    model = _exact_posterior_vae(W, mu, s2)
    x = torch.from_numpy(X)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        m, lv = model.encode(x)
        q = torch.distributions.Normal(m, torch.exp(0.5 * lv))
        for _ in range(3):
            z = reparameterize(m, lv, generator=gen)
            log_w = (model.log_likelihood(x, model.decode(z))
                     + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1))
            np.testing.assert_allclose(log_w.numpy(), exact, rtol=1e-9, atol=1e-9)


def test_elbo_equals_exact_loglik_when_q_is_the_true_posterior():
    W, mu, s2, X, exact = _ppca_with_orthogonal_w(0)
    model = _exact_posterior_vae(W, mu, s2)
    with torch.no_grad():
        elbo = model.elbo(torch.from_numpy(X), n_samples=4000, generator=torch.Generator().manual_seed(0))["elbo"].numpy()
    # E_q log p(x | z) by Monte Carlo, the KL in closed form: equal to log p(x) up to sampling noise
    assert abs(elbo.mean() - exact.mean()) < 0.02
    np.testing.assert_allclose(elbo, exact, atol=0.15)


def test_elbo_is_below_exact_loglik_for_a_wrong_posterior():
    W, mu, s2, X, exact = _ppca_with_orthogonal_w(1)
    model = _exact_posterior_vae(W, mu, s2)
    with torch.no_grad():
        model.encoder.logvar.bias.add_(1.0)   # q now too wide
        model.encoder.mean.bias.add_(0.3)     # and off-centre
        elbo = model.elbo(torch.from_numpy(X), n_samples=2000, generator=torch.Generator().manual_seed(0))["elbo"].numpy()
    assert np.all(elbo < exact)


def test_loss_terms_are_consistent():
    torch.manual_seed(0)
    model = VAE(5, 2, hidden=(8,))
    x = torch.randn(7, 5)
    inf = model.inference(x)
    out = model.loss(x, inf, model.generative(inf["z"]), kl_weight=0.5)
    torch.testing.assert_close(out["elbo"], out["reconstruction"] - out["kl"])
    torch.testing.assert_close(out["loss"], -(out["reconstruction"] - 0.5 * out["kl"]))


def test_linear_vae_reaches_ppca_loglik_from_below():
    """The issue's check: a VAE with a linear decoder and learned sigma on PPCA data gets an ELBO
    within 2 % of PPCA's exact maximum log-likelihood, and not above it."""
    X = ppca_data()
    exact = ppca_exact_loglik(X, 2)
    model = VariationalAutoencoder(n_latent=2, hidden=(64,), decoder_hidden=(), lr=1e-2, epochs=60,
                                   random_state=0, progress=False, device="cpu").fit(X)
    bound = model.score(X, n_samples=50)
    assert bound < exact, f"ELBO {bound:.4f} above the exact maximum log-likelihood {exact:.4f}"
    assert (exact - bound) / abs(exact) < 0.02, f"ELBO {bound:.4f} is not within 2 % of {exact:.4f}"
    assert abs(math.exp(model.module_.log_sigma2.item()) - 0.25) < 0.05  # noise sd 0.5


# ---------------------------------------------------------------------------------------
# modules and estimator


def test_encoder_keeps_its_interface():
    torch.manual_seed(0)
    enc = Encoder(5, 3, hidden=(8, 4), n_cat=2)
    mu, logvar = enc(torch.randn(6, 5), torch.eye(2)[[0, 1, 0, 1, 0, 1]])
    assert mu.shape == logvar.shape == (6, 3)
    with pytest.raises(ValueError, match="pass them as `cat`"):
        enc(torch.randn(6, 5))
    with pytest.raises(ValueError, match="expects 5 features"):
        enc(torch.randn(6, 4), torch.zeros(6, 2))


def test_vae_module_rejects_unknown_likelihood():
    with pytest.raises(ValueError, match="unknown likelihood"):
        VAE(5, 2, likelihood="poisson")


@pytest.fixture(scope="module")
def fitted():
    X = ppca_data(n=300, D=6, seed=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests that compare with it (the last bits depend on the thread count)
    try:
        return X, VariationalAutoencoder(n_latent=2, hidden=(16,), epochs=3, progress=False, device="cpu").fit(X)
    finally:
        torch.set_num_threads(threads)


def test_estimator_shapes_and_history(fitted):
    X, model = fitted
    assert model.transform(X).shape == (300, 2)
    mu, logvar = model.transform(X, return_logvar=True)
    assert mu.shape == logvar.shape == (300, 2) and isinstance(mu, np.ndarray)
    assert model.reconstruct(X).shape == (300, 6)
    assert model.sample(7).shape == (7, 6)
    assert model.sample(7, noise=True).shape == (7, 6)
    assert model.decode(np.zeros((4, 2))).shape == (4, 6)
    terms = model.elbo(X[:10], return_terms=True)
    np.testing.assert_allclose(terms["elbo"], terms["reconstruction"] - terms["kl"], rtol=1e-6)
    assert len(model.history_) == 3 and {"elbo", "kl", "reconstruction"} <= set(model.history_.keys())
    assert np.isfinite(model.score(X))


def test_estimator_is_repeatable_and_accepts_sparse_and_anndata(fitted):
    anndata = pytest.importorskip("anndata")
    X, model = fitted
    again = VariationalAutoencoder(n_latent=2, hidden=(16,), epochs=3, progress=False, device="cpu").fit(X)
    np.testing.assert_array_equal(model.transform(X), again.transform(X))
    np.testing.assert_array_equal(model.sample(5, random_state=1), again.sample(5, random_state=1))
    np.testing.assert_allclose(model.transform(sp.csr_matrix(X)), model.transform(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.transform(anndata.AnnData(X)), model.transform(X), rtol=1e-6, atol=1e-6)


def test_bernoulli_estimator_on_digits():
    from sklearn.datasets import load_digits

    X = load_digits().data[:400] / 16.0
    model = VariationalAutoencoder(n_latent=2, hidden=(32,), likelihood="bernoulli", epochs=3,
                                   progress=False, device="cpu").fit(X)
    rec, samples = model.reconstruct(X[:5]), model.sample(5, noise=True)
    assert rec.min() >= 0 and rec.max() <= 1
    assert set(np.unique(samples)) <= {0.0, 1.0}
    assert not hasattr(model.module_, "log_sigma2")


def test_bad_input_errors(fitted):
    X, model = fitted
    with pytest.raises(ValueError, match="fitted on 6"):
        model.transform(X[:, :5])
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        VariationalAutoencoder(epochs=1, progress=False).fit(bad)
    with pytest.raises(ValueError, match="NaN"):
        model.transform(bad)
    bad_sparse = sp.csr_matrix(X)
    bad_sparse.data[0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.transform(bad_sparse)
    with pytest.raises(ValueError, match="2-d"):
        model.transform(X[0])
    with pytest.raises(ValueError, match="empty"):
        model.transform(X[:0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        VariationalAutoencoder(likelihood="bernoulli", epochs=1, progress=False).fit(X)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VariationalAutoencoder(likelihood="poisson", epochs=1, progress=False).fit(X)
    with pytest.raises(NotFittedError, match="not fitted"):
        VariationalAutoencoder().transform(X)
    with pytest.raises(TypeError, match="must hold numbers"):
        model.transform(np.array([["a", "b"]] * 3))
    with pytest.raises(ValueError, match="shape"):
        model.decode(np.zeros((3, 5)))


def small_vae(**kw):
    return VariationalAutoencoder(**{"n_latent": 2, "hidden": (16,), "epochs": 3, "progress": False, "device": "cpu", **kw})


def test_fit_leaves_the_global_random_state_alone(fitted):
    X, model = fitted
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    again = small_vae().fit(X)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    np.testing.assert_array_equal(again.transform(X), model.transform(X))
    assert not np.array_equal(small_vae(random_state=1).fit(X).transform(X), model.transform(X))


def test_clone_params_and_cross_validation(fitted):
    X, model = fitted
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not hasattr(copy, "module_")
    assert copy.set_params(n_latent=3, kl_weight=0.5).get_params()["n_latent"] == 3 and model.n_latent == 2
    folds = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(small_vae(epochs=2), X, cv=folds)  # score(): the mean ELBO of the held-out cells
    by_hand = [small_vae(epochs=2).fit(X[tr]).score(X[te]) for tr, te in folds.split(X)]
    np.testing.assert_allclose(scores, by_hand, rtol=1e-6)
    search = GridSearchCV(small_vae(epochs=2), {"n_latent": [1, 2]}, cv=folds).fit(X)
    assert search.best_estimator_.n_latent == search.best_params_["n_latent"]
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


def test_store_writes_the_latent_means_into_obsm(fitted):
    anndata = pytest.importorskip("anndata")
    X, model = fitted
    adata = anndata.AnnData(np.zeros_like(X), layers={"logcounts": X})
    layered = small_vae(layer="logcounts").fit(adata)
    assert layered.store(adata) is adata
    np.testing.assert_allclose(adata.obsm["X_vae"], model.transform(X), rtol=1e-6)
    with pytest.raises(ValueError, match="overwrite=True"):
        layered.store(adata)
    layered.store(adata, key_added="X_vae_layer", overwrite=True)
    np.testing.assert_array_equal(adata.obsm["X_vae_layer"], adata.obsm["X_vae"])
    with pytest.raises(NotFittedError, match="not fitted"):
        small_vae().store(adata)


_CUDA = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("fit_device, load_device", [
    pytest.param("cpu", "cpu", id="cpu-to-cpu"),
    pytest.param("cuda", "cpu", id="cuda-to-cpu", marks=_CUDA),
    pytest.param("cpu", "cuda", id="cpu-to-cuda", marks=_CUDA),
])
def test_save_and_load_give_the_same_model(tmp_path, fit_device, load_device):
    anndata = pytest.importorskip("anndata")
    X = ppca_data(n=300, D=6, seed=3)
    adata = anndata.AnnData(X)
    adata.var_names = [f"gene{d}" for d in range(6)]
    model = small_vae(device=fit_device).fit(adata)
    path = model.save(tmp_path / "vae.pt")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(path)
    loaded = VariationalAutoencoder.load(path, device=load_device)
    assert next(loaded.module_.parameters()).device.type == load_device
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.feature_names_in_, adata.var_names)
    # the same device computes the same numbers; CUDA and CPU kernels differ in the last bits
    same = np.testing.assert_array_equal if fit_device == load_device else \
        (lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5))
    same(loaded.transform(X), model.transform(X))
    same(loaded.elbo(X, random_state=2), model.elbo(X, random_state=2))
    same(loaded.sample(4, random_state=1), model.sample(4, random_state=1))


# the checks of scikit-learn that VariationalAutoencoder fails on purpose, and why
EXPECTED_FAILED_CHECKS = {
    "check_complex_data": "complex numbers are refused with a TypeError (not a number type), not a ValueError",
    "check_dtype_object": "a matrix of Python objects is refused with a TypeError that says how to convert it",
    "check_estimators_empty_data_messages": "the course's wording: 'X is empty (shape ...)'",
    "check_fit2d_predict1d": "the course's wording: 'use x.reshape(1, -1) for one cell'",
    "check_n_features_in_after_fitting": "the course's wording: 'X has 3 features (genes) but the model was fitted on 4'",
}


def test_sklearn_check_estimator():
    check_estimator(VariationalAutoencoder(n_latent=2, hidden=(8,), epochs=2, progress=False, device="cpu"),
                    expected_failed_checks=EXPECTED_FAILED_CHECKS)


def test_module_api_is_documented():
    for name in vae.__all__:
        assert getattr(vae, name).__doc__, f"sclecture.vae.{name} has no docstring"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_estimator_runs_on_cuda():
    X = ppca_data(n=300, D=6, seed=3)
    model = VariationalAutoencoder(n_latent=2, hidden=(16,), epochs=2, progress=False, device="cuda").fit(X)
    assert next(model.module_.parameters()).device.type == "cuda"
    assert isinstance(model.transform(X), np.ndarray) and model.sample(3).shape == (3, 6)
