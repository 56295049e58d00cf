"""Lesson 06: scVI, a variational autoencoder for single-cell counts (Lopez et al., 2018).

Generative model (the lecture's notation; s_n is the batch of cell n):

    z_n ~ Normal(0, I),  l_n ~ LogNormal(l_mu, l_sigma^2),  rho_n = f_w(z_n, s_n),
    w_ng ~ Gamma(rho_n^g, theta),  y_ng ~ Poisson(l_n w_ng)   =>  y_ng ~ NB(l_n rho_n^g, theta_g),
    h_ng ~ Bernoulli(f_h^g(z_n, s_n)),  x_ng = y_ng if h_ng = 0 else 0   =>  x_ng ~ ZINB.

Inference: q(z_n | x_n, s_n) = Normal(f_mu(x_n, s_n), f_sigma2(x_n, s_n)) (and, for a latent
library size, q(log l_n | x_n, s_n) = Normal(...)), fitted by maximising

    ELBO = E_q[log p(x | z, l, s)] - KL(q(z | x, s) || p(z)) [- KL(q(l | x, s) || p(l | s))].

``SCVIModule`` holds the maths (``inference`` / ``generative`` / ``loss``) as a plain torch
module; ``SCVI`` is the scikit-learn style estimator around it, trained with
:func:`sclecture.training.train`. The architecture and the optimiser follow scvi-tools'
defaults (one hidden layer of 128 units with BatchNorm, dropout 0.1 in the encoder, a
gene-wise theta, Adam with eps=0.01 and weight decay 1e-6) so that the two can be compared.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from sklearn.base import BaseEstimator, TransformerMixin

from . import _native
from ._validation import check_choice, check_counts, check_fitted, check_positive, is_anndata, obs_column
from .base import SaveLoadMixin, StoreMixin
from .distributions import _log_nb, _log_poisson, _log_zinb
from .training import MinibatchLoader, fused_adam, get_device, train
from .vae import Encoder

__all__ = [
    "library_prior",
    "kl_warmup_weight",
    "kl_normal",
    "elbo_loss",
    "scvi_loss",
    "CountTerms",
    "log_factorial_table",
    "zinb_log_likelihood",
    "Decoder",
    "SCVIModule",
    "SCVI",
    "clustering_scores",
    "batch_mixing_entropy",
    "knn_label_agreement",
]

LIKELIHOODS = ("zinb", "nb", "poisson")
LIBRARIES = ("observed", "latent")


# ---------------------------------------------------------------------------------------
# small pieces that the lesson asks students to write
# ---------------------------------------------------------------------------------------

def library_prior(counts, batch_index=None, n_batches=None):
    """The LogNormal prior of the library size, per batch: (l_mu, l_var), each (n_batches,).

    l_mu_s = mean of log(sum_g x_ng) over the cells n of batch s, l_var_s = their variance
    (ddof=0), as scVI sets them from the data.
    """
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    if np.any(totals <= 0):
        raise ValueError(f"{int(np.sum(totals <= 0))} cell(s) have no counts at all (log library size -inf): "
                         "remove all-zero cells first, e.g. X[X.sum(axis=1) > 0]")
    b = np.zeros(len(totals), dtype=int) if batch_index is None else np.asarray(batch_index).astype(int).ravel()
    if b.shape != totals.shape:
        raise ValueError(f"batch_index needs one entry per cell ({len(totals)}), got shape {np.shape(batch_index)}")
    n_batches = int(b.max()) + 1 if n_batches is None else int(n_batches)
    log_l = np.log(totals)
    l_mu, l_var = np.zeros(n_batches), np.zeros(n_batches)
    for s in range(n_batches):
        m = b == s
        if not m.any():
            raise ValueError(f"batch {s} has no cells: every batch index from 0 to {n_batches - 1} needs at least one cell")
        l_mu[s], l_var[s] = log_l[m].mean(), log_l[m].var()  # l_mu = mean log l_n, l_sigma^2 = var log l_n
    return l_mu, l_var


def kl_warmup_weight(epoch: int, n_epochs_kl_warmup: int | None) -> float:
    """beta = min(1, epoch / n_epochs_kl_warmup): the KL term is switched on gradually."""
    if not n_epochs_kl_warmup:
        return 1.0
    return min(1.0, epoch / n_epochs_kl_warmup)


def kl_normal(mu, var, prior_mu=0.0, prior_var=1.0):
    """KL(N(mu, var) || N(prior_mu, prior_var)), summed over the last axis (torch)."""
    # KL = 1/2 sum_k [ log(prior_var / var) + (var + (mu - prior_mu)^2) / prior_var - 1 ]
    if isinstance(prior_mu, float) and isinstance(prior_var, float) and prior_mu == 0.0 and prior_var == 1.0:
        return 0.5 * (var + mu**2 - torch.log(var) - 1).sum(-1)  # the standard normal prior of z
    prior_var = torch.as_tensor(prior_var, dtype=mu.dtype, device=mu.device)
    return 0.5 * (torch.log(prior_var) - torch.log(var) + (var + (mu - prior_mu) ** 2) / prior_var - 1).sum(-1)


def elbo_loss(log_px, qz_mu, qz_var, kl_weight=1.0):
    """The minibatch loss -1/N sum_n [ log p(x_n | z_n) - beta KL(q(z_n | x_n) || p(z)) ].

    ``log_px`` (N,) the reconstruction log-likelihood of each cell (summed over genes),
    ``qz_mu``, ``qz_var`` (N, L) the encoder's mean and variance, ``kl_weight`` beta.
    """
    return (-log_px + kl_weight * kl_normal(qz_mu, qz_var)).mean()


def scvi_loss(log_px, qz_mu, qz_var, epoch: int, n_epochs_kl_warmup: int | None):
    """The loss of epoch ``epoch``: :func:`elbo_loss` with beta = :func:`kl_warmup_weight`."""
    return elbo_loss(log_px, qz_mu, qz_var, kl_warmup_weight(epoch, n_epochs_kl_warmup))


# ---------------------------------------------------------------------------------------
# the likelihood the module trains with: the same formulas as distributions._log_nb /
# _log_zinb (which the lesson shows), summed over genes, with the expensive work done only
# where it is needed. For x_ng = 0, lgamma(x + theta) - lgamma(theta) = 0, lgamma(x + 1) = 0
# and x log(...) = 0, so for mostly-zero counts lgamma, digamma and log(mu) run on the
# nonzero counts only; lgamma(x + 1) depends on the data alone and is computed once per
# minibatch, outside autograd; terms of theta alone are n_genes values; the gradients are
# written out, so that autograd keeps a few tensors instead of every intermediate, and their
# temporaries are updated in place (a fresh cells x genes tensor costs more than its arithmetic).
# tests/test_scvi.py checks values and gradients against the plain formulas.
# ---------------------------------------------------------------------------------------

def _digamma_above_one(z: torch.Tensor) -> torch.Tensor:
    """digamma(z) for z >= 1 (here x + theta with x >= 1), a few vectorised ops instead of torch.digamma's
    scalar loop: psi(z) = psi(z + 3) - 1/z - 1/(z + 1) - 1/(z + 2), then the asymptotic series of psi(w) for
    w = z + 3 >= 4 (truncation error below 2e-9)."""
    w = z + 3
    shift = torch.reciprocal(z).add_((z + 1).reciprocal_()).add_((z + 2).reciprocal_())
    iw2 = (w * w).reciprocal_()
    # psi(w) = log w - 1/(2w) - 1/(12 w^2) + 1/(120 w^4) - 1/(252 w^6) + 1/(240 w^8) - 1/(132 w^10),
    # the series iw2 (1/12 - iw2 (1/120 - iw2 (1/252 - iw2 (1/240 - iw2 / 132)))) evaluated from the inside
    series = iw2 * (1 / 132)
    for c in (1 / 240, 1 / 252, 1 / 120, 1 / 12):
        series.neg_().add_(c).mul_(iw2)
    return torch.log(w).sub_(w.reciprocal_().mul_(0.5)).sub_(series).sub_(shift)


_LOG_FACTORIALS: dict = {}


def _factorial_table(top: float, dtype: torch.dtype, device) -> torch.Tensor:
    """log k! for k = 0 .. at least top (a power of two in length, cached)."""
    size = 1 << max(10, math.ceil(math.log2(top + 1)))
    key = (size, dtype, torch.device(device))
    if key not in _LOG_FACTORIALS:
        _LOG_FACTORIALS[key] = torch.lgamma(torch.arange(size, dtype=torch.float64) + 1).to(dtype).to(device)
    return _LOG_FACTORIALS[key]


def log_factorial_table(*counts, whole: bool = False, dtype: torch.dtype = torch.float32,
                        device="cpu") -> torch.Tensor | None:
    """The table of log k! that covers every count of ``counts`` (NumPy arrays or SciPy sparse matrices), or
    None unless they are all non-negative whole numbers below 2^16. ``whole=True``: the caller has checked
    that they are non-negative whole numbers (as ``check_counts`` does), so only their maximum is looked at.
    A fit makes the table once, and its minibatches look lgamma(x + 1) up in it without checking x again
    (``CountTerms(..., table=)``): x must come from the data the table was made for."""
    values = []
    for c in counts:
        if sp.issparse(c):
            c = sp.csr_matrix(c)
            if not c.has_canonical_format:  # duplicates summed, on a copy: the entries a minibatch will hold
                c = c.copy()
                c.sum_duplicates()
            c = c.data
        values.append(np.asarray(c))
    top = max((float(v.max()) for v in values if v.size), default=0.0)
    if not top < 2**16:
        return None
    if not whole and not all(v.size == 0 or (v.min() >= 0 and np.array_equal(v, np.trunc(v))) for v in values):
        return None
    return _factorial_table(top, dtype, device)


def _log_factorial(x: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
    """lgamma(x + 1); for whole numbers below 2^16 (counts), looked up in a table of log k!. ``table``: one from
    :func:`log_factorial_table` of the data x comes from (x is then not checked again)."""
    if table is None:
        if x.numel() == 0 or not x.is_floating_point():
            return torch.lgamma(x + 1)
        top = float(x.max())
        if not (0 <= top < 2**16) or not torch.equal(x, torch.trunc(x)):
            return torch.lgamma(x + 1)
        table = _factorial_table(top, x.dtype, x.device)
    elif table.dtype != x.dtype or table.device != x.device:
        table = _factorial_table(len(table) - 1, x.dtype, x.device)  # the same table, in x's precision and place
    return table.index_select(0, x.reshape(-1).long()).reshape(x.shape)


class CountTerms:
    """What a minibatch of counts x (cells x genes, any leading axes) alone decides, computed once.

    ``zero``: 1[x_ng = 0] as floats. Mostly-zero counts (``sparse``, at most ``SPARSE_BELOW`` of the
    entries nonzero) also keep their nonzero entries (flat index, cell, gene, value) and lgamma(x_ng + 1)
    there; denser counts keep x and lgamma(x + 1) whole. ``nonzero_index``, the flat index of the nonzero
    entries in ascending order, may be given when known (``MinibatchLoader(nonzero_index=True)`` reads it
    off a CSR matrix), which spares a scan of x; so may ``table``, a :func:`log_factorial_table` of the data
    x comes from.
    """

    SPARSE_BELOW = 0.5

    def __init__(self, x: torch.Tensor, nonzero_index: torch.Tensor | None = None, table: torch.Tensor | None = None):
        x2 = x.reshape(-1, x.shape[-1])
        self.shape = x2.shape
        self.zero = torch.sign(x2).neg_().add_(1)  # 1[x_ng = 0] (counts are >= 0)
        n_nonzero = x2.numel() - int(self.zero.sum()) if nonzero_index is None else nonzero_index.numel()
        self.sparse = n_nonzero <= self.SPARSE_BELOW * x2.numel()
        if self.sparse:
            self.idx = (torch.nonzero(x2.reshape(-1)).squeeze(1) if nonzero_index is None
                        else nonzero_index.reshape(-1))
            if nonzero_index is not None and not bool((self.idx[1:] > self.idx[:-1]).all()):
                raise ValueError("nonzero_index must list distinct flat indices in ascending order "
                                 "(as torch.nonzero(x.reshape(-1)) does)")
            # the index ascends, so each cell's entries lie between n * n_genes and (n + 1) * n_genes
            row_starts = torch.arange(x2.shape[0] + 1, device=x2.device) * x2.shape[1]
            self.starts = torch.searchsorted(self.idx, row_starts)  # cell n's entries: starts[n] .. starts[n + 1] - 1
            self.row_counts = self.starts.diff()
            self.rows = torch.repeat_interleave(torch.arange(x2.shape[0], device=x2.device), self.row_counts)
            self.genes = self.idx - self.rows * x2.shape[1]
            self.x = x2.reshape(-1).index_select(0, self.idx)
        else:
            self.x = x2
        self.log_x_fact = _log_factorial(self.x, table)  # log x_ng! (0 where x_ng = 0)

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """The entries of a cells x genes tensor where the terms below are kept."""
        return t.reshape(-1).index_select(0, self.idx) if self.sparse else t

    def take_genes(self, v: torch.Tensor) -> torch.Tensor:
        """A per-gene vector at those entries."""
        return v.index_select(0, self.genes) if self.sparse else v

    def cell_sums(self, v: torch.Tensor) -> torch.Tensor:
        if not self.sparse:
            return v.sum(1)
        return torch.segment_reduce(v, "sum", lengths=self.row_counts)  # the entries come cell by cell

    def gene_sums(self, v: torch.Tensor) -> torch.Tensor:
        if not self.sparse:
            return v.sum(0)
        return torch.zeros(self.shape[1], dtype=v.dtype, device=v.device).scatter_add_(0, self.genes, v)

    def add_into(self, dense: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """dense += v at the kept entries."""
        if not self.sparse:
            return dense.add_(v)
        dense.reshape(-1).scatter_add_(0, self.idx, v)
        return dense


class _ZINBLogLik(torch.autograd.Function):
    """sum_g log ZINB(x_ng | mu_ng, theta_g, pi_ng) per cell (NB when pi_logits is None), with hand-written
    gradients for mu, theta and pi_logits. With r = mu / theta and sp = log(1 + r) (= softplus(log mu - log theta)):

        log NB(x) = lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) - theta sp + x (log mu - log theta - sp),
        log NB(0) = -theta sp,
        log ZINB(x) = -softplus(eta) + { logaddexp(eta, log NB(0)) if x = 0;  log NB(x) if x > 0 }.

    -theta sp and the zero inflation are computed for every entry; the other terms are 0 where x = 0, so
    for mostly-zero counts they are computed on the nonzero entries only, and lgamma(theta),
    digamma(theta) once per gene. ``lib`` (float32 and zero inflation only, from :mod:`sclecture._native`):
    the same sums and derivatives in its compiled loops, one pass over the entries for each part.
    """

    @staticmethod
    def forward(ctx, mu, theta, pi_logits, terms: CountTerms, lib=None):
        ctx.lib = lib
        if lib is not None:  # the same sums in the compiled loops of _native.c (float32, zero-inflated)
            return _native_forward(ctx, lib, mu, theta, pi_logits, terms)
        tiny = torch.finfo(mu.dtype).tiny
        r = mu / theta  # mu / theta
        sp = torch.log1p(r)  # log(1 + mu / theta) = -log(theta / (theta + mu))
        nb0 = sp * theta.neg()  # log NB(0 | mu, theta) = -theta sp
        if pi_logits is not None:
            eta = pi_logits
            # where x = 0: logaddexp(eta, log NB(0)) = log(pi + (1 - pi) NB(0)) + softplus(eta)
            both = torch.logaddexp(eta, nb0)
            dense = torch.lerp(nb0, both, terms.zero, out=both).sub_(F.softplus(eta))  # written over `both`
        else:
            dense = nb0
        # where x > 0: lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) + x (log mu - log theta - sp)
        # (for denser counts these run on every entry, and are 0 where x = 0)
        x, th, mu_k = terms.x, terms.take_genes(theta), terms.take(mu)
        log_r = mu_k.clamp_min(tiny).log_().sub_(terms.take_genes(torch.log(theta.clamp_min(tiny))))
        kept = (x + th).lgamma_().sub_(terms.log_x_fact).add_(log_r.sub_(terms.take(sp)).mul_(x))
        if terms.sparse:  # - lgamma(theta_g) at each nonzero entry
            out = dense.sum(1) + terms.cell_sums(kept.sub_(terms.take_genes(torch.lgamma(theta))))
        else:  # every entry is kept, so - sum_g lgamma(theta_g) once
            out = dense.sum(1) + kept.sum(1) - torch.lgamma(theta).sum()
        if pi_logits is not None:
            ctx.save_for_backward(theta, r, sp, eta, nb0, mu_k)
        else:
            ctx.save_for_backward(theta, r, sp, mu_k)
        ctx.terms, ctx.zi = terms, pi_logits is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.lib is not None:  # d/d mu, d/d eta and d/d theta per entry were saved; times grad_out per cell
            d_mu, d_eta, d_theta = ctx.saved_tensors
            n, g = d_mu.shape
            g_mu, g_eta, g_theta = torch.empty_like(d_mu), torch.empty_like(d_eta), d_theta.new_empty(g)
            go = grad_out.contiguous()  # (a name keeps the copy alive while C reads it)
            ctx.lib.scale_by_cell(*_pointers(go, d_mu, d_eta, d_theta), n, g,
                                  *_pointers(g_mu, g_eta, g_theta))
            return g_mu, g_theta, g_eta, None, None
        terms = ctx.terms
        n, g = terms.shape
        if ctx.zi:
            theta, r, sp, eta, nb0, mu_k = ctx.saved_tensors
        else:
            theta, r, sp, mu_k = ctx.saved_tensors
        go = grad_out.reshape(n, 1)
        q = (r + 1).reciprocal_()  # theta / (theta + mu)
        g_eta = None
        if ctx.zi:
            # where x = 0, the NB part's share of p(x = 0) is w = sigmoid(log NB(0) - eta); b = 1[x = 0] (1 - w)
            b = (eta - nb0).sigmoid_().mul_(terms.zero)
            g_eta = torch.sigmoid(eta).neg_().add_(b).mul_(go)  # d/d eta = 1[x = 0] (1 - w) - sigmoid(eta)
            wg = b.sub_(1).mul_(go)  # minus d/d log NB(0): -w where x = 0, -1 where x > 0
        else:
            wg = go.neg().expand(n, g)
        # log NB(0) = -theta sp:  d/d mu = -q,  d/d theta = 1 - q - sp = r q - sp
        g_theta = torch.addcmul(sp, r, q, value=-1).mul_(wg).sum(0)
        g_mu = wg.mul_(q) if ctx.zi else q * wg  # (without zero inflation, wg is -grad_out spread over the genes)
        # where x > 0: d/d mu = x (1 / mu - q / theta),  d/d theta = digamma(x + theta) - digamma(theta) - x q / theta
        x, th = terms.x, terms.take_genes(theta)
        gk = grad_out.index_select(0, terms.rows) if terms.sparse else go
        xq_t = (x * terms.take(q)).div_(th)
        terms.add_into(g_mu, (x / mu_k.clamp_min(torch.finfo(mu_k.dtype).tiny)).sub_(xq_t).mul_(gk))
        if terms.sparse:  # x >= 1 here
            dig = _digamma_above_one(x + th).sub_(terms.take_genes(torch.digamma(theta)))
            g_theta += terms.gene_sums(dig.sub_(xq_t).mul_(gk))
        else:  # where x = 0: digamma(theta) = digamma(theta + 1) - 1 / theta
            dig = _digamma_above_one((x + th).add_(terms.zero)).addcdiv_(terms.zero, th.expand(n, g), value=-1)
            g_theta += terms.gene_sums(dig.sub_(xq_t).mul_(gk))
            g_theta -= torch.digamma(theta) * grad_out.sum()
        return g_mu, g_theta, g_eta, None, None


def _pointers(*tensors):
    """The addresses of tensors that C reads as plain arrays: the caller holds each tensor while C runs."""
    for t in tensors:
        if not t.is_contiguous() or t.device.type != "cpu":
            raise ValueError("the compiled loops read contiguous CPU tensors only")
    return [t.data_ptr() for t in tensors]


def _native_forward(ctx, lib, mu, theta, eta, terms: CountTerms):
    """_ZINBLogLik.forward in _native.c's loops: the per-cell sums, and the derivatives of each entry's term by
    mu, eta and theta, kept for the backward."""
    if not _uses_native(mu, theta, eta, terms):
        raise ValueError("the compiled loops take float32 CPU tensors with zero-inflation logits and int64 indices")
    n, g = terms.shape
    if mu.shape != (n, g) or eta.shape != (n, g) or theta.shape != (g,):
        raise ValueError(f"the compiled loops take mu and eta of shape {(n, g)} and theta of shape {(g,)}")
    mu, theta, eta = mu.contiguous(), theta.contiguous(), eta.contiguous()
    out, d_mu, d_eta, d_theta = mu.new_empty(n), torch.empty_like(mu), torch.empty_like(mu), torch.empty_like(mu)
    zero = terms.zero.contiguous()
    lib.zinb_all_entries(*_pointers(mu, theta, eta, zero), n, g,
                         *_pointers(out, d_mu, d_eta, d_theta))
    # n_genes values: lgamma, log and digamma of theta
    per_gene = [torch.lgamma(theta), torch.log(theta.clamp_min(torch.finfo(mu.dtype).tiny)), torch.digamma(theta)]
    x, log_x_fact = terms.x.contiguous(), terms.log_x_fact.contiguous()
    if terms.sparse:
        where = [t.contiguous() for t in (terms.idx, terms.genes, terms.starts)]
        lib.nb_nonzero_sparse(*_pointers(x, mu, *where, theta, *per_gene, log_x_fact), n, *_pointers(out, d_mu, d_theta))
    else:
        lib.nb_nonzero_dense(*_pointers(x, mu, theta, *per_gene, log_x_fact), n, g, *_pointers(out, d_mu, d_theta))
    ctx.save_for_backward(d_mu, d_eta, d_theta)
    return out


def _uses_native(mu, theta, pi_logits, terms: CountTerms) -> bool:
    """The compiled loops take float32 CPU tensors, with zero inflation; the index tensors must be int64."""
    tensors = [mu, theta, pi_logits, terms.x, terms.log_x_fact, terms.zero]
    return (pi_logits is not None and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
            and (not terms.sparse or all(t.dtype == torch.int64 for t in (terms.idx, terms.genes, terms.starts))))


def _native_matches_torch(lib) -> str | None:
    """None when ``lib`` gives the torch code's values and gradients (to 1e-4) on a small mixed input, dense and
    sparse; else what differs. _native.library() runs it once, before it lets training use the loops."""
    with torch.enable_grad(), torch.inference_mode(False):  # whatever mode the first caller is in
        gen = torch.Generator().manual_seed(0)
        n, g, f32 = 16, 67, torch.float32
        x = torch.poisson(torch.rand(n, g, generator=gen, dtype=f32) ** 4 * 50, generator=gen)
        x[0, :5] = torch.tensor([0.0, 1.0, 7000.0, 3.0, 0.0])
        mu = torch.rand(n, g, generator=gen, dtype=f32) * 20 + 1e-3
        theta = torch.exp(torch.randn(g, generator=gen, dtype=f32) * 3)
        eta = torch.randn(n, g, generator=gen, dtype=f32) * 4
        for sparse_below in (1.0, 0.0):
            layout = type("Layout", (CountTerms,), {"SPARSE_BELOW": sparse_below})  # nonzero entries, then dense
            where = "nonzero entries" if sparse_below == 1.0 else "dense"
            results = []
            for which in (lib, None):
                args = [t.clone().requires_grad_() for t in (mu, theta, eta)]
                terms = layout(x)
                out = _ZINBLogLik.apply(args[0], args[1], args[2], terms, which)
                grads = torch.autograd.grad((out * torch.linspace(0.5, 1.5, n, dtype=f32)).sum(), args)
                results.append([out.detach(), *grads])
            for name, a, b in zip(("value", "d/d mu", "d/d theta", "d/d eta"), *results):
                if not torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max())):
                    return (f"the compiled loops' {name} ({where}) differ from the torch code's by "
                            f"{float((a - b).abs().max()):.3g}")
            # -ffast-math lets a compiler assume no NaN: a diverging fit must still show one in its loss
            nan_mu = mu.clone()
            nan_mu[3, 5] = float("nan")
            lost = [_ZINBLogLik.apply(nan_mu, theta, eta, layout(x), which).isnan().nonzero().flatten().tolist()
                    for which in (lib, None)]
            if lost[0] != lost[1]:
                return f"the compiled loops ({where}) give NaN in cells {lost[0]}, the torch code in cells {lost[1]}"
    return None


def zinb_log_likelihood(x, mu, theta, pi_logits=None, terms: CountTerms | None = None) -> torch.Tensor:
    """sum_g log ZINB(x_ng | mu_ng, theta_g, pi_ng) for each cell (sum_g log NB when ``pi_logits`` is None).

    The values and gradients of ``distributions._log_zinb(x, mu, theta, pi_logits).sum(-1)``, computed
    faster: ``terms`` (:class:`CountTerms` of x) may be passed when x is reused.
    """
    terms = CountTerms(x) if terms is None else terms
    n, g = terms.shape
    mu = mu.expand(x.shape).reshape(n, g)
    pi_logits = None if pi_logits is None else pi_logits.expand(x.shape).reshape(n, g)
    theta = torch.as_tensor(theta, dtype=mu.dtype, device=mu.device).expand(g)
    lib = _native.library() if _uses_native(mu, theta, pi_logits, terms) else None
    return _ZINBLogLik.apply(mu, theta, pi_logits, terms, lib).reshape(x.shape[:-1])


# ---------------------------------------------------------------------------------------
# the torch module
# ---------------------------------------------------------------------------------------

def _bn(n: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(n, momentum=0.01, eps=1e-3)  # scvi-tools' BatchNorm settings


class Decoder(nn.Module):
    """f_w and f_h: (z_n, s_n) -> rho_n (a softmax over genes) and the dropout logits.

    Hidden layers Linear -> BatchNorm -> ReLU; the one-hot batch s_n is fed to every one.
    """

    def __init__(self, n_latent: int, n_genes: int, n_hidden: int = 128, n_layers: int = 1,
                 n_batches: int = 1, zero_inflated: bool = True):
        super().__init__()
        self.n_cat = n_batches if n_batches > 1 else 0
        sizes = [n_latent] + [n_hidden] * n_layers
        self.linears = nn.ModuleList(nn.Linear(a + self.n_cat, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(_bn(b) for b in sizes[1:])
        self.scale = nn.Linear(n_hidden, n_genes)  # rho_n = softmax(W h + b) = f_w(z_n, s_n)
        self.pi_logits = nn.Linear(n_hidden, n_genes) if zero_inflated else None  # logit f_h(z_n, s_n)

    def forward(self, z: torch.Tensor, s_onehot: torch.Tensor | None = None):
        h = z
        for lin, bn in zip(self.linears, self.norms):
            if self.n_cat:
                h = torch.cat([h, s_onehot], dim=-1)
            h = F.relu(bn(lin(h)))
        rho = torch.softmax(self.scale(h), dim=-1)
        pi_logits = self.pi_logits(h) if self.pi_logits is not None else None
        return rho, pi_logits


class SCVIModule(nn.Module):
    """scVI's maths: ``inference`` (x -> q(z), q(l)), ``generative`` (z, l -> p(x | z, l)) and ``loss``.

    Tensors travel in dicts, as in scvi-tools. ``x`` is a minibatch of raw counts (cells x
    genes, float), ``batch_index`` the batch s_n of each cell (long).
    """

    var_eps = 1e-4  # added to the encoder's variance, as in scvi-tools, so that it never collapses to 0

    def __init__(self, n_genes: int, n_batches: int = 1, n_latent: int = 10, n_hidden: int = 128,
                 n_layers: int = 1, dropout: float = 0.1, likelihood: str = "zinb", library: str = "observed",
                 l_mu: Sequence[float] | None = None, l_var: Sequence[float] | None = None,
                 encode_batch: bool = True):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if library not in LIBRARIES:
            raise ValueError(f"library must be one of {LIBRARIES}, got {library!r}")
        self.n_genes, self.n_batches, self.n_latent = int(n_genes), int(n_batches), int(n_latent)
        self.likelihood, self.library = likelihood, library
        n_cat = self.n_batches if (encode_batch and self.n_batches > 1) else 0
        hidden = (int(n_hidden),) * int(n_layers)
        self.z_encoder = Encoder(self.n_genes, self.n_latent, hidden=hidden, n_cat=n_cat, dropout=dropout,
                                 batch_norm=True)
        self.l_encoder = (Encoder(self.n_genes, 1, hidden=(int(n_hidden),), n_cat=n_cat, dropout=dropout,
                                  batch_norm=True) if library == "latent" else None)
        for enc in (self.z_encoder, self.l_encoder):
            for m in (enc.modules() if enc is not None else ()):
                if isinstance(m, nn.BatchNorm1d):
                    m.momentum, m.eps = 0.01, 1e-3  # as in scvi-tools
        self.decoder = Decoder(self.n_latent, self.n_genes, int(n_hidden), int(n_layers), self.n_batches,
                               zero_inflated=likelihood == "zinb")
        self.log_theta = nn.Parameter(torch.randn(self.n_genes))  # theta_g = exp(log_theta_g), one per gene
        l_mu = torch.zeros(self.n_batches) if l_mu is None else torch.as_tensor(np.asarray(l_mu), dtype=torch.float32)
        l_var = torch.ones(self.n_batches) if l_var is None else torch.as_tensor(np.asarray(l_var), dtype=torch.float32)
        self.register_buffer("l_mu", l_mu)  # prior log l_n ~ Normal(l_mu_s, l_var_s), per batch s
        self.register_buffer("l_var", l_var.clamp_min(1e-4))  # a batch of identical libraries would give 0

    def _onehot(self, batch_index):
        if self.n_batches == 1:
            return None
        return F.one_hot(batch_index.long().view(-1), self.n_batches).to(torch.float32)

    def inference(self, x: torch.Tensor, batch_index: torch.Tensor | None = None, n_samples: int | None = None) -> dict:
        """q(z | x, s) and the library size; draws z by reparameterisation (``n_samples`` draws add a leading axis)."""
        s = self._onehot(batch_index)
        x_enc = torch.log1p(x)  # the encoder reads log(1 + x): counts span orders of magnitude
        cat = s if self.z_encoder.n_cat else None
        qz_mu, logvar = self.z_encoder(x_enc, cat)
        qz_var = torch.exp(logvar) + self.var_eps  # f_sigma2(x, s)
        shape = qz_mu.shape if n_samples is None else (int(n_samples), *qz_mu.shape)
        z = qz_mu + qz_var.sqrt() * torch.randn(shape, device=x.device)  # z = mu + sigma * eps, eps ~ N(0, I)
        out = {"qz_mu": qz_mu, "qz_var": qz_var, "z": z}
        if self.library == "observed":
            out["library"] = torch.log(x.sum(-1, keepdim=True))  # log l_n = log sum_g x_ng, observed
        else:
            ql_mu, ql_logvar = self.l_encoder(x_enc, cat)
            ql_var = torch.exp(ql_logvar) + self.var_eps
            shape = ql_mu.shape if n_samples is None else (int(n_samples), *ql_mu.shape)
            out.update(ql_mu=ql_mu, ql_var=ql_var,
                       library=ql_mu + ql_var.sqrt() * torch.randn(shape, device=x.device))  # log l_n ~ q(l | x, s)
        return out

    def generative(self, z: torch.Tensor, library: torch.Tensor, batch_index: torch.Tensor | None = None) -> dict:
        """p(x | z, l, s): rho = f_w(z, s), mu = l rho, theta, and the dropout logits f_h(z, s)."""
        s = self._onehot(batch_index)
        lead = z.shape[:-1]
        if s is not None and z.dim() == 3:
            s = s.expand(z.shape[0], *s.shape)
        rho, pi_logits = self.decoder(z.reshape(-1, z.shape[-1]), None if s is None else s.reshape(-1, s.shape[-1]))
        rho = rho.reshape(*lead, -1)
        pi_logits = None if pi_logits is None else pi_logits.reshape(*lead, -1)
        mu = torch.exp(library) * rho  # mean of x_ng: l_n rho_n^g
        return {"rho": rho, "mu": mu, "theta": torch.exp(self.log_theta), "pi_logits": pi_logits}

    def log_likelihood(self, x: torch.Tensor, gen: dict, terms: CountTerms | None = None) -> torch.Tensor:
        """log p(x_n | z_n, l_n, s_n) summed over genes, one value per cell (``terms``: :class:`CountTerms` of x)."""
        if self.likelihood == "poisson":
            return _log_poisson(x, gen["mu"]).sum(-1)
        if x.device.type == "cpu":  # the same values and gradients, with lgamma & co on the nonzero counts only
            return zinb_log_likelihood(x, gen["mu"], gen["theta"], gen["pi_logits"], terms=terms)
        # on a GPU the dense formulas are cheap, and finding the nonzero counts would wait for the device
        if self.likelihood == "zinb":
            return _log_zinb(x, gen["mu"], gen["theta"], gen["pi_logits"]).sum(-1)
        return _log_nb(x, gen["mu"], gen["theta"]).sum(-1)

    def kl_library(self, inf: dict, batch_index: torch.Tensor | None) -> torch.Tensor:
        """KL(q(log l | x, s) || N(l_mu_s, l_var_s)) per cell (0 when l is observed)."""
        if self.library == "observed":
            return torch.zeros(inf["qz_mu"].shape[0], device=inf["qz_mu"].device)
        b = torch.zeros(inf["qz_mu"].shape[0], dtype=torch.long, device=inf["qz_mu"].device) \
            if batch_index is None else batch_index.long().view(-1)
        return kl_normal(inf["ql_mu"], inf["ql_var"], self.l_mu[b].unsqueeze(-1), self.l_var[b].unsqueeze(-1))

    def loss(self, x: torch.Tensor, batch_index: torch.Tensor | None = None, kl_weight: float = 1.0,
             terms: CountTerms | None = None) -> dict:
        """-ELBO averaged over the minibatch, with the KL of z weighted by beta (warm-up).

        loss = 1/N sum_n [ -log p(x_n | z_n, l_n) + beta KL(q(z_n) || p(z)) + KL(q(l_n) || p(l_n)) ]

        ``terms``: :class:`CountTerms` of x, when the caller knows them already.
        """
        inf = self.inference(x, batch_index)
        gen = self.generative(inf["z"], inf["library"], batch_index)
        log_px = self.log_likelihood(x, gen, terms)
        kl_z = kl_normal(inf["qz_mu"], inf["qz_var"])  # KL(q(z | x, s) || N(0, I))
        if self.library == "observed":  # KL(q(l) || p(l)) = 0
            loss, kl_l = (-log_px + kl_weight * kl_z).mean(), log_px.new_zeros(())
        else:
            kl_l = self.kl_library(inf, batch_index)
            loss, kl_l = (-log_px + kl_weight * kl_z + kl_l).mean(), kl_l.mean()
        return {"loss": loss, "reconstruction": -log_px.mean(), "kl_z": kl_z.mean(), "kl_l": kl_l}

    def elbo(self, x: torch.Tensor, batch_index: torch.Tensor | None = None) -> torch.Tensor:
        """ELBO_n = log p(x_n | z_n, l_n) - KL_z - KL_l per cell, one z drawn from q."""
        inf = self.inference(x, batch_index)
        gen = self.generative(inf["z"], inf["library"], batch_index)
        return self.log_likelihood(x, gen) - kl_normal(inf["qz_mu"], inf["qz_var"]) - self.kl_library(inf, batch_index)

    def marginal_ll(self, x: torch.Tensor, batch_index: torch.Tensor | None = None, n_samples: int = 100) -> torch.Tensor:
        """Importance-sampled log p(x_n | s_n) per cell:
        log p(x) ~ logsumexp_k [log p(x | z_k, l_k) + log p(z_k) + log p(l_k) - log q(z_k | x) - log q(l_k | x)] - log K.
        """
        K = int(n_samples)
        inf = self.inference(x, batch_index, n_samples=K)
        gen = self.generative(inf["z"], inf["library"], batch_index)
        log_w = self.log_likelihood(x.expand(K, *x.shape), gen)
        log_w = log_w + _log_normal(inf["z"], 0.0, 1.0) - _log_normal(inf["z"], inf["qz_mu"], inf["qz_var"])
        if self.library == "latent":
            b = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if batch_index is None else batch_index.long().view(-1)
            log_w = (log_w + _log_normal(inf["library"], self.l_mu[b].unsqueeze(-1), self.l_var[b].unsqueeze(-1))
                     - _log_normal(inf["library"], inf["ql_mu"], inf["ql_var"]))
        return torch.logsumexp(log_w, dim=0) - math.log(K)


def _log_normal(v, mu, var):
    # log N(v | mu, var), summed over the last axis
    var = torch.as_tensor(var, dtype=v.dtype, device=v.device)
    return (-0.5 * (math.log(2 * math.pi) + torch.log(var) + (v - mu) ** 2 / var)).sum(-1)


# ---------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------

class SCVI(SaveLoadMixin, StoreMixin, TransformerMixin, BaseEstimator):
    """scVI as a scikit-learn estimator.

    ``SCVI(...).fit(adata, batch_key="batch")`` trains on the raw counts in ``adata.X`` (or
    ``adata.layers[layer]``); ``transform`` (= ``get_latent_representation``),
    ``get_normalized_expression``, ``get_elbo`` and ``get_marginal_ll`` then work on the training
    data (``adata=None``) or on new cells with the same genes and known batches. A NumPy array or
    SciPy sparse matrix of counts works too (without batches). Sparse counts are densified one
    minibatch at a time. ``model.store(adata)`` writes the latent space to
    ``adata.obsm["X_scvi"]``; ``model.save(path)`` / ``SCVI.load(path)`` keep a trained model.

    ``n_epochs_kl_warmup``: the KL weight beta grows linearly from 0 to 1 over this many
    epochs (None: a quarter of ``epochs``; 0: no warm-up). ``encode_batch``: whether the
    encoder also reads the batch (the decoder always does).

    Attributes after ``fit``: ``module_`` (the :class:`SCVIModule`), ``history_`` (per-epoch
    means of the loss and its terms), ``epoch_seconds_`` (wall time of each epoch),
    ``batch_key_``, ``batch_categories_``, ``n_features_in_``, ``feature_names_in_`` (gene
    names, for an AnnData), ``l_mu_`` and ``l_var_`` (the library-size prior per batch).
    """

    _store_key = "scvi"
    _saved_attributes = ("batch_key_", "batch_categories_", "n_features_in_", "feature_names_in_", "l_mu_", "l_var_")

    def __init__(self, n_latent: int = 10, n_hidden: int = 128, n_layers: int = 1, dropout: float = 0.1,
                 likelihood: str = "zinb", library: str = "observed", epochs: int = 400,
                 n_epochs_kl_warmup: int | None = None, lr: float = 1e-3, batch_size: int = 128,
                 weight_decay: float = 1e-6, encode_batch: bool = True, random_state: int = 0,
                 device: str | None = None, progress: bool = True):
        self.n_latent, self.n_hidden, self.n_layers, self.dropout = n_latent, n_hidden, n_layers, dropout
        self.likelihood, self.library = likelihood, library
        self.epochs, self.n_epochs_kl_warmup = epochs, n_epochs_kl_warmup
        self.lr, self.batch_size, self.weight_decay = lr, batch_size, weight_decay
        self.encode_batch, self.random_state, self.device, self.progress = encode_batch, random_state, device, progress

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # sparse counts: CSR densified one minibatch at a time, or dense if smaller
        tags.input_tags.positive_only = True
        tags.non_deterministic = False  # the same random_state gives the same model
        return tags

    # -- input handling ------------------------------------------------------------------
    def _counts(self, data, layer):
        X = check_counts(data, layer=layer, name="the counts")
        totals = np.asarray(X.sum(axis=1)).ravel()
        if np.any(totals <= 0):
            raise ValueError(f"{int(np.sum(totals <= 0))} cell(s) have no counts at all; scVI needs every cell's "
                             "library size: drop them first, e.g. adata = adata[adata.X.sum(axis=1).A1 > 0]")
        if sp.issparse(X):  # kept sparse, or dense when that is smaller (see MinibatchLoader)
            X = sp.csr_matrix(X, dtype=np.float32, copy=True)  # a copy: the caller's matrix stays as it was
            X.sum_duplicates()
            X.eliminate_zeros()  # the stored entries are exactly the nonzero counts (MinibatchLoader's nonzero_index)
        else:
            X = np.asarray(X, dtype=np.float32)
        return X

    def _batches(self, data, batch_key, fitting: bool):
        n = data.shape[0]
        if batch_key is None:
            return np.zeros(n, dtype=np.int64)
        values = obs_column(data, batch_key, "batch_key").astype(str)
        if fitting:
            self.batch_categories_ = sorted(set(values.tolist()))
        lookup = {c: i for i, c in enumerate(self.batch_categories_)}
        unknown = sorted(set(values.tolist()) - set(lookup))
        if unknown:
            raise ValueError(f"batch(es) {unknown} in adata.obs[{batch_key!r}] were not seen during fit (the model knows "
                             f"{self.batch_categories_}); scVI has no decoder input for a new batch: refit on data that includes it")
        return np.array([lookup[v] for v in values], dtype=np.int64)

    def _data(self, adata, layer):
        """(X, batch_index) of new data, or of the training data when adata is None."""
        check_fitted(self)
        if adata is None:
            if not hasattr(self, "_X"):
                raise ValueError("this model was loaded from a file and keeps no training data: pass the cells, "
                                 "e.g. model.get_latent_representation(adata)")
            return self._X, self._batch
        X = self._counts(adata, layer)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"the model was trained on {self.n_features_in_} genes, this data has {X.shape[1]}: "
                             "select the same genes (in the same order) first")
        names = self.feature_names_in_
        if names is not None and is_anndata(adata) and not np.array_equal(np.asarray(adata.var_names, dtype=str), names):
            raise ValueError("the genes (var_names) differ from the training data's: subset to the training genes, "
                             "in the same order, e.g. adata[:, model.feature_names_in_]")
        return X, self._batches(adata, self.batch_key_, fitting=False)

    def _build_module(self) -> "SCVIModule":
        return SCVIModule(self.n_features_in_, len(self.batch_categories_), self.n_latent, self.n_hidden,
                          self.n_layers, self.dropout, self.likelihood, self.library, self.l_mu_, self.l_var_,
                          self.encode_batch)

    # -- training ------------------------------------------------------------------------
    def fit(self, adata, y=None, batch_key: str | None = None, layer: str | None = None, validation=None) -> "SCVI":
        """Train on the raw counts of ``adata`` (batches from ``adata.obs[batch_key]``); ``y`` is ignored.

        ``validation``: other cells (counts checked like the training counts, the same genes,
        batches under the same ``batch_key``) scored after every epoch, in eval mode and with
        beta = 1: ``history_["val_loss"]`` is their -ELBO, next to ``val_reconstruction``,
        ``val_kl_z``, ``val_kl_l``. Their random draws leave training's random stream alone, so
        the trained model is the same with or without them.
        """
        check_choice(self.likelihood, "likelihood", LIKELIHOODS)
        check_choice(self.library, "library", LIBRARIES)
        check_positive(self.epochs, "epochs", integer=True, allow_zero=True)
        for name in ("batch_size", "n_latent", "n_hidden", "n_layers"):
            check_positive(getattr(self, name), name, integer=True)
        check_positive(self.lr, "lr")
        check_positive(self.weight_decay, "weight_decay", allow_zero=True)
        check_positive(self.random_state, "random_state", integer=True, allow_zero=True)
        if self.n_epochs_kl_warmup is not None:  # a negative one would make beta, the KL weight, negative
            check_positive(self.n_epochs_kl_warmup, "n_epochs_kl_warmup", integer=True, allow_zero=True)
        if not 0 <= check_positive(self.dropout, "dropout", allow_zero=True) < 1:
            raise ValueError(f"dropout is the probability of zeroing a hidden unit, in [0, 1); got {self.dropout}")
        X = self._counts(adata, layer)
        if batch_key is None:
            self.batch_categories_ = ["0"]
        batch = self._batches(adata, batch_key, fitting=True)
        self.batch_key_, self.n_features_in_ = batch_key, X.shape[1]
        self.feature_names_in_ = np.asarray(adata.var_names, dtype=str) if is_anndata(adata) else None
        self.l_mu_, self.l_var_ = library_prior(X, batch, len(self.batch_categories_))
        val = None
        if validation is not None:
            val_X = self._counts(validation, layer)
            if val_X.shape[1] != X.shape[1]:
                raise ValueError(f"the validation cells have {val_X.shape[1]} genes, the training cells {X.shape[1]}: "
                                 "select the same genes (in the same order) in both")
            if (self.feature_names_in_ is not None and is_anndata(validation)
                    and not np.array_equal(np.asarray(validation.var_names, dtype=str), self.feature_names_in_)):
                raise ValueError("the validation cells' genes (var_names) differ from the training cells': subset both "
                                 "to the same genes, in the same order, e.g. validation[:, adata.var_names]")
            val = (val_X, self._batches(validation, batch_key, fitting=False))
        device = get_device(self.device)
        rng_devices = [device] if device.type == "cuda" else []
        warmup = self.epochs // 4 if self.n_epochs_kl_warmup is None else int(self.n_epochs_kl_warmup)

        stamps: list[float] = []  # when each epoch's first minibatch starts
        # on the CPU the NB / ZINB likelihood works on the nonzero counts (CountTerms), and minibatches of
        # sparse counts kept as CSR bring their nonzero entries along
        with_terms = device.type == "cpu" and self.likelihood != "poisson"
        table = log_factorial_table(X, *(val[:1] if val else ()), whole=True) if with_terms else None  # log x!

        def loss_fn(module, minibatch, epoch):
            x, s = minibatch[:2]  # then, for counts kept as CSR on the CPU, the flat index of the nonzero entries
            terms = CountTerms(x, *minibatch[2:], table=table) if with_terms else None
            if not module.training:  # a validation pass: -ELBO (beta = 1), its draws of z on a forked stream
                with torch.random.fork_rng(devices=rng_devices):
                    return module.loss(x, s, kl_weight=1.0, terms=terms)
            if len(stamps) == epoch:
                stamps.append(time.perf_counter())
            return module.loss(x, s, kl_weight=kl_warmup_weight(epoch, warmup), terms=terms)

        # a last minibatch of one or two cells would make BatchNorm's statistics meaningless
        drop_last = 0 < X.shape[0] % int(self.batch_size) < 3 and X.shape[0] > int(self.batch_size)
        with torch.random.fork_rng(devices=rng_devices):  # global RNG state untouched
            torch.manual_seed(int(self.random_state))
            self.module_ = self._build_module().to(device)
            optimizer = fused_adam(self.module_.parameters(), lr=self.lr, eps=0.01,
                                   weight_decay=self.weight_decay)  # scvi-tools' settings
            self.history_ = train(self.module_, loss_fn, (X, batch), epochs=self.epochs, batch_size=self.batch_size,
                                  optimizer=optimizer, device=device, seed=self.random_state, progress=self.progress,
                                  desc="scVI", drop_last=drop_last, validation=val, nonzero_index=with_terms)
        self.epoch_seconds_ = np.diff(stamps + [time.perf_counter()])  # wall time of each epoch
        self._X, self._batch = X, batch
        return self

    # -- what the trained model gives ----------------------------------------------------
    @torch.no_grad()
    def _map(self, X, batch, fn, batch_size=None):
        module = self.module_
        module.eval()
        device = next(module.parameters()).device
        loader = MinibatchLoader((X, batch), batch_size=batch_size or max(int(self.batch_size), 512), shuffle=False,
                                 device=device)
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.random_state)
            return np.concatenate([fn(x, s).detach().cpu().numpy() for x, s in loader])

    def get_latent_representation(self, adata=None, layer: str | None = None, give_mean: bool = True) -> np.ndarray:
        """The posterior mean E_q[z_n] (or one draw of z_n), cells x n_latent."""
        X, batch = self._data(adata, layer)
        key = "qz_mu" if give_mean else "z"
        return self._map(X, batch, lambda x, s: self.module_.inference(x, s)[key])

    def transform(self, X, layer: str | None = None) -> np.ndarray:
        """scikit-learn's name for :meth:`get_latent_representation` of new cells ``X``."""
        return self.get_latent_representation(X, layer=layer)

    def get_normalized_expression(self, adata=None, layer: str | None = None, library_size: float = 1.0,
                                  transform_batch: str | None = None) -> np.ndarray:
        """Denoised expression rho_n = f_w(E_q[z_n], s_n), scaled to ``library_size`` counts per cell.

        ``transform_batch`` decodes every cell as if it came from that batch: expression with
        the batch effect removed.
        """
        X, batch = self._data(adata, layer)
        if transform_batch is not None:
            if str(transform_batch) not in self.batch_categories_:
                raise ValueError(f"transform_batch={transform_batch!r} is not a batch of the training data "
                                 f"({self.batch_categories_})")
            batch = np.full_like(batch, self.batch_categories_.index(str(transform_batch)))

        def fn(x, s):
            inf = self.module_.inference(x, s)
            return self.module_.generative(inf["qz_mu"], inf["library"], s)["rho"] * library_size

        return self._map(X, batch, fn)

    def get_elbo(self, adata=None, layer: str | None = None) -> np.ndarray:
        """The ELBO of each cell (nats; a lower bound of log p(x_n); higher is better)."""
        X, batch = self._data(adata, layer)
        return self._map(X, batch, self.module_.elbo)

    def get_marginal_ll(self, adata=None, layer: str | None = None, n_samples: int = 100) -> np.ndarray:
        """Importance-sampled log p(x_n) of each cell with ``n_samples`` draws from q (higher is better)."""
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        X, batch = self._data(adata, layer)
        return self._map(X, batch, lambda x, s: self.module_.marginal_ll(x, s, int(n_samples)),
                         batch_size=max(16, 16384 // int(n_samples)))


# ---------------------------------------------------------------------------------------
# judging a latent space
# ---------------------------------------------------------------------------------------

def clustering_scores(latent, labels, n_clusters: int | None = None, random_state: int = 0) -> dict:
    """k-means on the latent space against known labels: ARI, NMI, and the silhouette of the labels."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    latent = np.asarray(latent, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    if latent.ndim != 2 or latent.shape[0] != labels.shape[0]:
        raise ValueError(f"latent must be cells x dimensions with one label per cell; got {latent.shape} and {labels.shape}")
    k = len(np.unique(labels)) if n_clusters is None else int(n_clusters)
    pred = KMeans(n_clusters=k, n_init=10, random_state=random_state).fit_predict(latent)
    return {"ari": float(adjusted_rand_score(labels, pred)), "nmi": float(normalized_mutual_info_score(labels, pred)),
            "silhouette": float(silhouette_score(latent, labels))}


def batch_mixing_entropy(latent, batches, k: int = 50) -> float:
    """Mean entropy of the batch labels among each cell's k nearest neighbours, divided by
    log(number of batches): 1 when the neighbourhoods are as mixed as they can be, 0 when
    every cell sees only its own batch."""
    from sklearn.neighbors import NearestNeighbors

    latent = np.asarray(latent, dtype=np.float64)
    codes, batches = np.unique(np.asarray(batches).astype(str), return_inverse=True)
    if len(codes) < 2:
        raise ValueError("batch mixing needs at least two batches")
    if latent.shape[0] != batches.shape[0]:
        raise ValueError(f"{batches.shape[0]} batch labels for {latent.shape[0]} cells")
    k = min(int(k), latent.shape[0] - 1)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(latent).kneighbors(latent, return_distance=False)[:, 1:]
    counts = np.stack([(batches[idx] == b).sum(1) for b in range(len(codes))], axis=1) / k
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(counts > 0, counts * np.log(counts), 0.0).sum(1)
    return float(ent.mean() / np.log(len(codes)))


def knn_label_agreement(latent, labels, batches, k: int = 15) -> float:
    """Mean over cells of the fraction of the cell's k nearest neighbours *from the other
    batches* that share its label: 1 when each cell type meets its own kind across batches,
    lower when a correction has merged different types (over-correction)."""
    from sklearn.neighbors import NearestNeighbors

    latent = np.asarray(latent, dtype=np.float64)
    labels, batches = np.asarray(labels).astype(str), np.asarray(batches).astype(str)
    if latent.ndim != 2 or not latent.shape[0] == labels.shape[0] == batches.shape[0]:
        raise ValueError(f"latent must be cells x dimensions with one label and one batch per cell; got {latent.shape}, "
                         f"{labels.shape} labels and {batches.shape} batches")
    if len(np.unique(batches)) < 2:
        raise ValueError("label agreement across batches needs at least two batches")
    agree = np.empty(latent.shape[0])
    for b in np.unique(batches):
        own, other = batches == b, batches != b
        k_b = min(int(k), int(other.sum()))
        idx = NearestNeighbors(n_neighbors=k_b).fit(latent[other]).kneighbors(latent[own], return_distance=False)
        agree[own] = (labels[other][idx] == labels[own][:, None]).mean(1)  # neighbours of the other batches only
    return float(agree.mean())
