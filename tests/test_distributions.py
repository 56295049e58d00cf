"""sclecture.distributions against independent implementations: scipy's negative binomial
(its n, p form), a direct sum over the dropout indicator h for the ZINB, autograd gradient
checks, and Monte Carlo draws of the generative model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from sclecture import distributions as D


def _random_params(rng, n=400):
    x = rng.poisson(rng.gamma(1.0, 5.0, size=n)).astype(float)
    x[:50] = 0
    mu = rng.gamma(1.0, 5.0, size=n) + 1e-3
    theta = rng.gamma(0.7, 2.0, size=n) + 1e-3
    pi = rng.uniform(0.01, 0.99, size=n)
    return x, mu, theta, pi


def scipy_nb_logpmf(x, mu, theta):
    # scipy's nbinom(n, p): failures before n successes, mean n (1 - p) / p, so n = theta, p = theta / (theta + mu)
    return stats.nbinom.logpmf(x, theta, theta / (theta + mu))


def test_log_nb_matches_scipy_nbinom():
    x, mu, theta, _ = _random_params(np.random.default_rng(0))
    np.testing.assert_allclose(D.log_nb(x, mu, theta), scipy_nb_logpmf(x, mu, theta), rtol=1e-6, atol=1e-10)


def test_log_nb_float32_tensors_and_broadcasting():
    rng = np.random.default_rng(1)
    x = rng.poisson(3.0, size=(30, 8)).astype(float)
    mu = rng.gamma(2.0, 2.0, size=(30, 8))
    theta = rng.gamma(2.0, 1.0, size=8)  # one theta per gene, broadcast over cells
    got = D.log_nb(torch.tensor(x, dtype=torch.float32), torch.tensor(mu, dtype=torch.float32),
                   torch.tensor(theta, dtype=torch.float32))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == (30, 8)
    np.testing.assert_allclose(got.numpy(), scipy_nb_logpmf(x, mu, theta[None, :]), rtol=1e-5, atol=1e-4)


def test_log_nb_is_a_distribution_with_the_right_moments():
    mu, theta = 7.5, 1.7
    k = np.arange(0, 3000)
    p = np.exp(D.log_nb(k, mu, theta))
    assert abs(p.sum() - 1) < 1e-9
    assert abs((k * p).sum() - mu) < 1e-8
    assert abs(((k - mu) ** 2 * p).sum() - (mu + mu**2 / theta)) < 1e-6  # Var = mu + mu^2 / theta


def test_log_poisson_matches_scipy():
    x, mu, _, _ = _random_params(np.random.default_rng(2))
    np.testing.assert_allclose(D.log_poisson(x, mu), stats.poisson.logpmf(x, mu), rtol=1e-9, atol=1e-12)


def test_log_zinb_is_the_sum_over_h():
    x, mu, theta, pi = _random_params(np.random.default_rng(3))
    # p(x) = sum_h p(h) p(x | h) = pi * 1[x = 0] + (1 - pi) * NB(x | mu, theta)
    direct = np.log(pi * (x == 0) + (1 - pi) * stats.nbinom.pmf(x, theta, theta / (theta + mu)))
    logits = np.log(pi) - np.log1p(-pi)
    np.testing.assert_allclose(D.log_zinb(x, mu, theta, logits), direct, rtol=1e-6, atol=1e-10)


def test_log_zinb_limits():
    rng = np.random.default_rng(4)
    x, mu, theta, _ = _random_params(rng, 100)
    # pi -> 0: the NB; pi -> 1: all mass at zero
    np.testing.assert_allclose(D.log_zinb(x, mu, theta, np.full(100, -40.0)), D.log_nb(x, mu, theta), atol=1e-12)
    at_one = D.log_zinb(x, mu, theta, np.full(100, 40.0))
    np.testing.assert_allclose(at_one[x == 0], 0.0, atol=1e-12)
    assert np.all(at_one[x > 0] < -30)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stable_at_the_edges(dtype):
    x = torch.tensor([0.0, 0.0, 0.0, 5.0, 5.0, 1e4, 0.0, 3.0], dtype=dtype)
    mu = torch.tensor([1e30, 1.0, 0.0, 1e30, 1e-30, 1e-3, 1e8, 2.0], dtype=dtype)
    theta = torch.tensor([1e-30, 1e-30, 1.0, 1e-8, 1e3, 1e-20, 1e-8, 1e6], dtype=dtype)
    logits = torch.tensor([0.0, 30.0, -30.0, 5.0, -5.0, 0.0, 100.0, -100.0], dtype=dtype)
    for name, fn in [("log_nb", lambda m, t: D.log_nb(x, m, t)),
                     ("log_zinb", lambda m, t: D.log_zinb(x, m, t, logits))]:
        m = mu.clone().requires_grad_(True)
        t = theta.clone().requires_grad_(True)
        lp = fn(m, t)
        assert torch.isfinite(lp).all(), f"{name} not finite: {lp}"
        assert (lp <= 1e-6).all(), f"{name} is a log-probability of a count, so <= 0; got {lp}"
        lp.sum().backward()
        assert torch.isfinite(m.grad).all() and torch.isfinite(t.grad).all(), f"{name} gradients not finite"
    # known limits: NB(0 | mu, theta -> 0) -> 1, NB(0 | mu = 0) = 1
    nb = D.log_nb(x, mu, theta)
    assert float(nb[:3].abs().max()) < 1e-20, f"NB(0) should be 1 in these limits; log NB(0) = {nb[:3]}"


def test_tiny_theta_agrees_with_scipy_in_float64():
    x = np.array([0.0, 1, 2, 10, 100])
    for theta in [1e-3, 1e-6, 1e-9]:
        np.testing.assert_allclose(D.log_nb(x, 50.0, theta), scipy_nb_logpmf(x, 50.0, theta), rtol=1e-6)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.poisson(4.0, size=12), dtype=torch.float64)
    mu = torch.tensor(rng.gamma(2.0, 2.0, size=12), dtype=torch.float64, requires_grad=True)
    theta = torch.tensor(rng.gamma(2.0, 1.0, size=12), dtype=torch.float64, requires_grad=True)
    logits = torch.tensor(rng.normal(size=12), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, t: D.log_nb(x, m, t), (mu, theta))
    assert torch.autograd.gradcheck(lambda m, t, p: D.log_zinb(x, m, t, p), (mu, theta, logits))


def test_monte_carlo_draws_follow_log_zinb():
    """The step-by-step generative model (Gamma, Poisson, Bernoulli) against the closed form."""
    n = 40000
    rho = np.array([0.5, 0.3, 0.15, 0.05])
    theta = np.array([0.8, 2.0, 10.0, 3.0])
    dropout = np.array([0.0, 0.2, 0.5, 0.1])
    out = D.sample_scvi_generative(n, rho, theta, l_mu=np.log(20.0), l_var=0.0, dropout=dropout, seed=0)
    assert np.allclose(out["l"], 20.0)
    mu = 20.0 * rho
    logits = np.log(np.maximum(dropout, 1e-12)) - np.log1p(-dropout)
    for g in range(4):
        x = out["x"][:, g]
        for k in range(6):
            p = float(np.exp(D.log_zinb(float(k), mu[g], theta[g], logits[g])))
            freq = np.mean(x == k)
            se = np.sqrt(p * (1 - p) / n)
            assert abs(freq - p) < 5 * se + 1e-4, f"gene {g}, count {k}: frequency {freq:.4f}, ZINB says {p:.4f}"
        # the Gamma layer: mean rho, variance rho^2 / theta (shape theta)
        w = out["w"][:, g]
        assert abs(w.mean() - rho[g]) < 5 * rho[g] / np.sqrt(theta[g] * n)
        assert abs(w.var() / (rho[g] ** 2 / theta[g]) - 1) < 0.1
    # before dropout, y is NB(l rho, theta); x = 0 wherever h = 1
    assert np.all(out["x"][out["h"]] == 0) and np.array_equal(out["x"][~out["h"]], out["y"][~out["h"]])


def test_sample_scvi_generative_with_networks_and_batches():
    G = 6
    W = np.random.default_rng(0).normal(size=(3, G))

    def f_w(z, s):
        logits = z @ W + s[:, None]
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    batch = np.repeat([0, 1], 500)
    out = D.sample_scvi_generative(1000, f_w, np.ones(G), l_mu=[np.log(100), np.log(1000)], l_var=[0.1, 0.1],
                                   dropout=lambda z, s: np.full((len(s), G), 0.1), n_latent=3, batch=batch, seed=1)
    assert out["x"].shape == (1000, G) and out["z"].shape == (1000, 3)
    assert np.allclose(out["rho"].sum(1), 1)
    ratio = out["x"][batch == 1].sum(1).mean() / out["x"][batch == 0].sum(1).mean()
    assert 7 < ratio < 13, f"batch 1 has 10x the library size; the totals' ratio is {ratio:.2f}"
    again = D.sample_scvi_generative(1000, f_w, np.ones(G), [np.log(100), np.log(1000)], [0.1, 0.1],
                                     lambda z, s: np.full((len(s), G), 0.1), n_latent=3, batch=batch, seed=1)
    assert np.array_equal(out["x"], again["x"]), "the same seed must give the same draws"


def test_sample_counts():
    rng = np.random.default_rng(0)
    n, G = 20000, 3
    rho = np.tile([0.6, 0.3, 0.1], (n, 1))
    l = np.full(n, 50.0)
    x = D.sample_counts(rho, np.array([1.0, 5.0, 2.0]), l, np.array([0.0, 0.3, 1.0]), rng)
    assert x.shape == (n, G) and np.issubdtype(x.dtype, np.integer)
    assert np.all(x[:, 2] == 0)  # pi = 1: every count dropped
    assert abs(x[:, 0].mean() - 30.0) < 5 * np.sqrt((30 + 30**2) / n)  # E x = l rho when pi = 0
    assert abs(x[:, 1].mean() - 0.7 * 15.0) < 0.3  # E x = (1 - pi) l rho


@pytest.mark.parametrize("bad, match", [
    (dict(x=[-1.0]), "x must be >= 0"),
    (dict(theta=[0.0]), "theta must be > 0"),
    (dict(theta=[-2.0]), "theta must be > 0"),
    (dict(mu=[np.nan]), "mu contains NaN"),
    (dict(mu=[-0.5]), "mu must be >= 0"),
])
def test_bad_input(bad, match):
    args = dict(x=[1.0], mu=[2.0], theta=[1.0])
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        D.log_nb(**args)
    with pytest.raises(ValueError, match=match):
        D.log_zinb(**args, pi_logits=[0.0])
    with pytest.raises(ValueError, match="pi_logits"):
        D.log_zinb([1.0], [2.0], [1.0], [np.nan])
    with pytest.raises(ValueError, match="theta"):
        D.sample_scvi_generative(10, np.ones(3) / 3, [1.0, 0.0, 1.0], 0.0, 0.0)
