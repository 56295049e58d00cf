"""Lesson 06: the count distributions of scVI, and its generative model step by step.

The lecture's model for the count x_ng of gene g in cell n:

    z_n ~ Normal(0, I),  l_n ~ LogNormal(l_mu, l_sigma^2),  rho_n = f_w(z_n, s_n),
    w_ng ~ Gamma(rho_n^g, theta)   (mean rho_n^g, shape theta),
    y_ng ~ Poisson(l_n w_ng),
    h_ng ~ Bernoulli(f_h^g(z_n, s_n)),  x_ng = y_ng if h_ng = 0 else 0.

Integrating w out gives y ~ NB(mu = l rho, theta) (the Gamma-Poisson mixture); summing
over h gives x ~ ZINB(mu, theta, pi). Both are written here in the mean /
inverse-dispersion parameterisation that scVI uses:

    NB(x | mu, theta) = Gamma(x + theta) / (Gamma(theta) x!) (theta / (theta + mu))^theta (mu / (theta + mu))^x

with Var(x) = mu + mu^2 / theta. The functions accept torch tensors (and then return a
tensor that gradients flow through) or NumPy arrays (and then return NumPy, in float64).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "log_poisson",
    "log_nb",
    "log_zinb",
    "sample_counts",
    "sample_scvi_generative",
]


# ---------------------------------------------------------------------------------------
# log-probabilities (the maths, without input checks: the model calls these in its loop)
# ---------------------------------------------------------------------------------------

def _log(t: torch.Tensor) -> torch.Tensor:
    """log(t) with 0 mapped to log(tiny) instead of -inf, so that 0 * log(0) stays 0."""
    return torch.log(t.clamp_min(torch.finfo(t.dtype).tiny))


def _log_poisson(x, mu):
    # log Poisson(x | mu) = x log mu - mu - log x!
    return torch.xlogy(x, mu) - mu - torch.lgamma(x + 1)


def _log_nb(x, mu, theta):
    # log NB(x | mu, theta) = lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
    #                         + theta log(theta / (theta + mu)) + x log(mu / (theta + mu)).
    # With d = log(mu / theta):  log(theta / (theta + mu)) = -softplus(d)  and
    # log(mu / (theta + mu)) = d - softplus(d): no cancellation for tiny or huge mu / theta,
    # and x = 0 contributes exactly 0 to the last term.
    d = _log(mu) - _log(theta)
    softplus_d = F.softplus(d)
    return (torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1)
            - theta * softplus_d + x * (d - softplus_d))


def _log_zinb(x, mu, theta, pi_logits):
    # p(x) = pi 1[x = 0] + (1 - pi) NB(x | mu, theta),  pi = sigm(eta),  eta = pi_logits
    # log(1 - pi) = -softplus(eta),  log pi = eta - softplus(eta), so
    # log p(x) = -softplus(eta) + { logaddexp(eta, log NB(0)) if x = 0;  log NB(x) if x > 0 }
    log_nb = _log_nb(x, mu, theta)
    return -F.softplus(pi_logits) + torch.where(x == 0, torch.logaddexp(pi_logits, log_nb), log_nb)


# ---------------------------------------------------------------------------------------
# the public, checked versions
# ---------------------------------------------------------------------------------------

def _prepare(named: dict):
    """Tensors from the arguments (float64 when all are NumPy), and whether to return NumPy."""
    as_numpy = not any(isinstance(v, torch.Tensor) for v in named.values())
    ref = next((v for v in named.values() if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
    dtype = torch.float64 if ref is None else ref.dtype
    device = None if ref is None else ref.device
    out = {}
    for k, v in named.items():
        t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v, dtype=float))
        out[k] = t.to(dtype=dtype, device=device)
    return out, as_numpy


def _check(name: str, t: torch.Tensor, positive: bool = False) -> None:
    with torch.no_grad():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf; pass finite values")
        if positive and not bool((t > 0).all()):
            raise ValueError(f"{name} must be > 0 everywhere (the inverse dispersion of the NB); "
                             f"smallest value {float(t.min()):.3g}: pass e.g. exp(log_theta)")
        if not positive and not bool((t >= 0).all()):
            raise ValueError(f"{name} must be >= 0 everywhere; smallest value {float(t.min()):.3g}")


def _finish(out: torch.Tensor, as_numpy: bool):
    return out.detach().cpu().numpy() if as_numpy else out


def log_poisson(x, mu):
    """log Poisson(x | mu), elementwise (broadcasting); x counts, mu >= 0 the mean."""
    t, as_numpy = _prepare({"x": x, "mu": mu})
    _check("x", t["x"])
    _check("mu", t["mu"])
    return _finish(_log_poisson(t["x"], t["mu"]), as_numpy)


def log_nb(x, mu, theta):
    """log NB(x | mu, theta), elementwise (broadcasting), in the mean / inverse-dispersion form.

    ``x`` counts, ``mu`` >= 0 the mean, ``theta`` > 0 the inverse dispersion
    (Var = mu + mu^2 / theta). The Gamma-Poisson mixture w ~ Gamma(mean mu, shape theta),
    x ~ Poisson(w) has exactly this distribution. Stable for x = 0, huge mu, tiny theta.
    """
    t, as_numpy = _prepare({"x": x, "mu": mu, "theta": theta})
    _check("x", t["x"])
    _check("mu", t["mu"])
    _check("theta", t["theta"], positive=True)
    return _finish(_log_nb(t["x"], t["mu"], t["theta"]), as_numpy)


def log_zinb(x, mu, theta, pi_logits):
    """log ZINB(x | mu, theta, pi), elementwise: with probability pi = sigm(pi_logits) the count
    is replaced by a zero (h = 1), otherwise it is NB(mu, theta).

    ``pi_logits`` is the logit of the zero-inflation probability, log(pi / (1 - pi)).
    """
    t, as_numpy = _prepare({"x": x, "mu": mu, "theta": theta, "pi_logits": pi_logits})
    _check("x", t["x"])
    _check("mu", t["mu"])
    _check("theta", t["theta"], positive=True)
    if bool(torch.isnan(t["pi_logits"]).any()):
        raise ValueError("pi_logits contains NaN; pass finite logits")
    return _finish(_log_zinb(t["x"], t["mu"], t["theta"], t["pi_logits"]), as_numpy)


# ---------------------------------------------------------------------------------------
# sampling the generative model
# ---------------------------------------------------------------------------------------

def sample_counts(rho, theta, l, pi, rng):
    """One draw of x_ng for every cell n and gene g, step by step (NumPy).

    ``rho`` (cells x genes) the expected proportions rho_n^g, ``theta`` (genes,) or a scalar,
    ``l`` (cells,) the library sizes l_n, ``pi`` (cells x genes, or broadcastable) the
    dropout probabilities f_h^g, ``rng`` a ``numpy.random.Generator``. Returns integer counts.
    """
    rho, theta, l, pi = (np.asarray(a, dtype=float) for a in (rho, theta, l, pi))
    w = rng.gamma(shape=theta, scale=rho / theta, size=rho.shape)  # w_ng ~ Gamma(rho_n^g, theta): mean rho, shape theta
    y = rng.poisson(l[:, None] * w)  # y_ng ~ Poisson(l_n w_ng)
    h = rng.random(y.shape) < pi  # h_ng ~ Bernoulli(f_h^g)
    return np.where(h, 0, y)  # x_ng = y_ng if h_ng = 0, else 0


def _per_batch(value, batch, name):
    v = np.asarray(value, dtype=float)
    if v.ndim == 0:
        return np.full(batch.shape, float(v))
    if v.ndim != 1 or batch.max() >= len(v):
        raise ValueError(f"{name} must be a scalar or one value per batch ({batch.max() + 1} batches); got shape {v.shape}")
    return v[batch]


def sample_scvi_generative(n_cells, rho, theta, l_mu, l_var, dropout=None, *, n_latent=10,
                           batch=None, seed=0, return_all=True):
    """Draw ``n_cells`` cells from the lecture's generative model, one step at a time.

    ``rho`` is f_w: a callable ``(z, s) -> (n_cells, genes)`` proportions (rows summing to 1),
    or a fixed array of proportions, (genes,) or (n_cells, genes). ``dropout`` is f_h: a callable
    ``(z, s) -> probabilities``, a fixed array of probabilities, or None (no zero inflation).
    ``theta`` (genes,) or a scalar; ``l_mu`` and ``l_var`` the LogNormal prior of the library
    size, scalars or one value per batch; ``batch`` the batch index s_n of each cell (default 0).

    Returns a dict of NumPy arrays ``z, s, l, rho, w, y, h, x`` (only ``x`` with
    ``return_all=False``).
    """
    n_cells = int(n_cells)
    if n_cells < 1:
        raise ValueError(f"n_cells must be a positive integer, got {n_cells}")
    theta = np.asarray(theta, dtype=float)
    if np.any(theta <= 0):
        raise ValueError("theta must be > 0 (the inverse dispersion)")
    rng = np.random.default_rng(seed)
    s = np.zeros(n_cells, dtype=int) if batch is None else np.asarray(batch, dtype=int)
    if s.shape != (n_cells,) or s.min() < 0:
        raise ValueError(f"batch must hold one non-negative batch index per cell ({n_cells}), got shape {s.shape}")
    l_mu_n, l_var_n = _per_batch(l_mu, s, "l_mu"), _per_batch(l_var, s, "l_var")
    if np.any(l_var_n < 0):
        raise ValueError("l_var (a variance) must be >= 0")

    z = rng.standard_normal((n_cells, n_latent))  # z_n ~ Normal(0, I)
    l = np.exp(l_mu_n + np.sqrt(l_var_n) * rng.standard_normal(n_cells))  # l_n ~ LogNormal(l_mu, l_sigma^2)
    r = np.asarray(rho(z, s) if callable(rho) else rho, dtype=float)  # rho_n = f_w(z_n, s_n)
    r = np.broadcast_to(r, (n_cells, r.shape[-1])).copy()
    if np.any(r < 0):
        raise ValueError("rho (the proportions f_w) must be >= 0")
    w = rng.gamma(shape=np.broadcast_to(theta, r.shape), scale=r / theta)  # w_ng ~ Gamma(rho_n^g, theta)
    y = rng.poisson(l[:, None] * w)  # y_ng ~ Poisson(l_n w_ng)
    if dropout is None:
        p = np.zeros_like(r)
    else:
        p = np.broadcast_to(np.asarray(dropout(z, s) if callable(dropout) else dropout, dtype=float), r.shape)
    h = rng.random(r.shape) < p  # h_ng ~ Bernoulli(f_h^g(z_n, s_n))
    x = np.where(h, 0, y)  # x_ng = y_ng if h_ng = 0, else 0
    if not return_all:
        return {"x": x}
    return {"z": z, "s": s, "l": l, "rho": r, "w": w, "y": y, "h": h, "x": x}
