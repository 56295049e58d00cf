"""Lesson 05: the variational autoencoder.

p(z) = N(z | 0, I),  p(x | z) = N(x | f(z; theta), sigma^2 I),
q(z | x, phi) = N(z | f_mu(x, phi), f_sigma2(x, phi)),
ELBO = E_q[log p(x | z, theta)] - KL(q(z | x, phi) || p(z)).

The pieces a lesson shows one at a time are plain functions (:func:`reparameterize`,
:func:`gaussian_kl`, :func:`gaussian_log_px`, :func:`bernoulli_log_px`, :func:`minibatch_elbo`);
:class:`VAE` is the torch module that holds the encoder and the decoder, and
:class:`VariationalAutoencoder` the estimator (fit / transform / reconstruct / sample / store /
save / load) trained with :func:`sclecture.training.train`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from torch import nn
from torch.nn import functional as F

from ._validation import check_choice, check_fitted, check_matrix, check_positive, feature_names
from .base import SaveLoadMixin, StoreMixin
from .mlp import make_torch_mlp
from .training import MinibatchLoader, get_device, train

__all__ = [
    "Encoder",
    "reparameterize",
    "gaussian_kl",
    "gaussian_log_px",
    "bernoulli_log_px",
    "minibatch_elbo",
    "VAE",
    "VariationalAutoencoder",
]

LOG_2PI = math.log(2 * math.pi)
LIKELIHOODS = ("gaussian", "bernoulli")


class Encoder(nn.Module):
    """The inference network q(z | x, phi) = N(z | f_mu(x), diag f_sigma2(x)).

    A shared MLP body reads x (and, for scVI, one-hot covariates such as the batch,
    concatenated to x); two linear heads give the mean mu and the log-variance
    log sigma^2. ``forward(x, cat=None)`` returns ``(mu, logvar)``.
    """

    def __init__(
        self,
        n_input: int,
        n_latent: int,
        hidden: Sequence[int] = (128,),
        n_cat: int = 0,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ValueError("the encoder needs at least one hidden layer")
        self.n_input, self.n_latent, self.n_cat = int(n_input), int(n_latent), int(n_cat)
        # body: all hidden layers, each followed by its activation
        self.body = make_torch_mlp((self.n_input + self.n_cat, *hidden, hidden[-1]), activation=activation,
                                   dropout=dropout, batch_norm=batch_norm)[:-2]
        self.mean = nn.Linear(hidden[-1], self.n_latent)  # f_mu(x, phi)
        self.logvar = nn.Linear(hidden[-1], self.n_latent)  # log f_sigma2(x, phi)

    def forward(self, x: torch.Tensor, cat: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] != self.n_input:
            raise ValueError(f"the encoder expects {self.n_input} features per cell, got {x.shape[-1]}")
        if self.n_cat:
            if cat is None:
                raise ValueError(f"this encoder was built with n_cat={self.n_cat} covariates; pass them as `cat`")
            x = torch.cat([x, cat.to(x.dtype)], dim=-1)
        h = self.body(x)
        return self.mean(h), self.logvar(h)


# ---------------------------------------------------------------------------------------
# the pieces of the ELBO


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw z ~ q(z | x) = N(mu, diag sigma^2) that gradients can flow through.

    z = mu + sigma * eps with eps ~ N(0, I) and sigma = exp(logvar / 2): the randomness
    sits in eps, so dz/dmu = 1 and dz/dlogvar = (z - mu) / 2. ``generator`` (a CPU
    ``torch.Generator``) makes the draw repeatable without touching the global seed.
    """
    if generator is None:
        eps = torch.randn_like(mu)
    else:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
    return mu + torch.exp(0.5 * logvar) * eps  # z = mu + sigma * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)), summed over the latent dimensions (last axis).

    KL(q(z | x) || p(z)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1); one value per cell.
    """
    return 0.5 * torch.sum(mu**2 + torch.exp(logvar) - logvar - 1.0, dim=-1)


def gaussian_log_px(x: torch.Tensor, mean: torch.Tensor, logvar) -> torch.Tensor:
    """log p(x | z) = log N(x | mean, sigma^2 I), summed over the features (last axis); one value per cell.

    log N(x | f(z), sigma^2 I) = -1/2 sum_d [log 2 pi + log sigma^2 + (x_d - f_d(z))^2 / sigma^2].
    ``logvar`` (log sigma^2) may be a number, a scalar tensor, one value per feature, or
    one per entry of ``x``.
    """
    logvar = torch.as_tensor(logvar, dtype=mean.dtype, device=mean.device)
    per_entry = LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar)
    return -0.5 * torch.sum(per_entry, dim=-1)


def bernoulli_log_px(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x | z) = log Ber(x | sigm(logits)), summed over the features (last axis); one value per cell.

    log Ber(x | p) = x log p + (1 - x) log(1 - p) with p = sigm(h), computed stably from the
    logits h as x h - log(1 + e^h). ``x`` may be any value in [0, 1] (grey levels), as in
    the usual binary cross-entropy of image VAEs.
    """
    return torch.sum(x * logits - F.softplus(logits), dim=-1)


def minibatch_elbo(
    x: torch.Tensor,
    encoder: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    decoder: Callable[[torch.Tensor], torch.Tensor],
    log_likelihood: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The ELBO of a minibatch, averaged over its cells, with one draw z ~ q(z | x) per cell.

    ELBO_i = log p(x_i | z_i) - KL(q(z | x_i) || p(z)),  z_i = mu_i + sigma_i * eps_i.
    ``encoder(x)`` gives ``(mu, logvar)``; ``decoder(z)`` the parameters of p(x | z) that
    ``log_likelihood(x, params)`` scores (one value per cell).
    """
    mu, logvar = encoder(x)
    z = reparameterize(mu, logvar)
    reconstruction = log_likelihood(x, decoder(z))  # E_q[log p(x | z)], one-sample estimate
    return torch.mean(reconstruction - gaussian_kl(mu, logvar))  # ELBO = E_q[log p(x|z)] - KL(q || p(z))


# ---------------------------------------------------------------------------------------
# the torch module


class VAE(nn.Module):
    """A variational autoencoder: inference network, decoder f(z; theta) and likelihood.

    ``likelihood="gaussian"``: p(x | z) = N(x | f(z; theta), sigma^2 I) with one learned
    log sigma^2 (``log_sigma2``), as in the lecture. ``likelihood="bernoulli"``:
    p(x | z) = prod_d Ber(x_d | sigm(f_d(z; theta))), for data in [0, 1] such as images.

    ``hidden`` are the encoder's hidden widths; the decoder mirrors them unless
    ``decoder_hidden`` is given. ``decoder_hidden=()`` makes f(z) = W z + mu linear: with
    the Gaussian likelihood the generative model is then exactly PPCA.

    Pieces, as in scvi-tools: :meth:`inference` (x -> mu, logvar, z), :meth:`generative`
    (z -> decoder output), :meth:`loss` (the ELBO's terms); :meth:`elbo` runs all three.
    """

    def __init__(
        self,
        n_input: int,
        n_latent: int = 10,
        hidden: Sequence[int] = (128,),
        likelihood: str = "gaussian",
        decoder_hidden: Sequence[int] | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {list(LIKELIHOODS)}")
        if int(n_input) < 1 or int(n_latent) < 1:
            raise ValueError(f"n_input and n_latent must be >= 1, got {n_input} and {n_latent}")
        hidden = tuple(int(h) for h in hidden)
        decoder_hidden = tuple(reversed(hidden)) if decoder_hidden is None else tuple(int(h) for h in decoder_hidden)
        self.n_input, self.n_latent, self.likelihood = int(n_input), int(n_latent), likelihood
        self.encoder = Encoder(self.n_input, self.n_latent, hidden, activation=activation,
                               dropout=dropout, batch_norm=batch_norm)  # q(z | x, phi)
        self.decoder = make_torch_mlp((self.n_latent, *decoder_hidden, self.n_input), activation=activation,
                                      dropout=dropout, batch_norm=batch_norm)  # f(z; theta)
        if likelihood == "gaussian":
            self.log_sigma2 = nn.Parameter(torch.zeros(()))  # log sigma^2 of p(x | z) = N(f(z), sigma^2 I)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z | x, phi) = N(z | f_mu(x), diag exp(logvar))."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """f(z; theta): the mean of p(x | z) (Gaussian) or its logits (Bernoulli)."""
        return self.decoder(z)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        """E[x | z] from the decoder output: f(z) itself, or sigm(f(z)) for the Bernoulli."""
        return torch.sigmoid(decoded) if self.likelihood == "bernoulli" else decoded

    def log_likelihood(self, x: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """log p(x | z, theta) for each cell, from the decoder output f(z)."""
        if self.likelihood == "bernoulli":
            return bernoulli_log_px(x, decoded)
        return gaussian_log_px(x, decoded, self.log_sigma2)

    def inference(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x)
        return {"mu": mu, "logvar": logvar, "z": reparameterize(mu, logvar, generator)}

    def generative(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"decoded": self.decode(z)}

    def loss(self, x: torch.Tensor, inference: dict, generative: dict, kl_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """Minibatch means of the ELBO's terms; ``loss`` = -(reconstruction - kl_weight * KL)."""
        reconstruction = self.log_likelihood(x, generative["decoded"])
        kl = gaussian_kl(inference["mu"], inference["logvar"])
        return {
            "loss": -torch.mean(reconstruction - kl_weight * kl),
            "elbo": torch.mean(reconstruction - kl),  # ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z))
            "reconstruction": torch.mean(reconstruction),
            "kl": torch.mean(kl),
        }

    def elbo(self, x: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-cell ELBO, reconstruction term and KL, the expectation over q estimated with
        ``n_samples`` draws z ~ q(z | x) per cell (the KL is exact)."""
        mu, logvar = self.encode(x)
        reconstruction = torch.zeros(x.shape[0], dtype=mu.dtype, device=mu.device)
        for _ in range(int(n_samples)):
            z = reparameterize(mu, logvar, generator)
            reconstruction = reconstruction + self.log_likelihood(x, self.decode(z)) / n_samples
        kl = gaussian_kl(mu, logvar)
        return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}


# ---------------------------------------------------------------------------------------
# the estimator


def _check_input(X, likelihood: str, n_features: int | None = None, layer: str | None = None):
    """X checked as float32 (dense, or CSR kept sparse); the Bernoulli likelihood needs values in [0, 1]."""
    X = check_matrix(X, layer=layer, dtype=np.float32, sparse=True, n_features=n_features)
    values = X.data if sp.issparse(X) else X
    if likelihood == "bernoulli" and values.size and (values.min() < 0 or values.max() > 1):
        raise ValueError(
            f"the Bernoulli likelihood needs values in [0, 1], got the range [{values.min():.3g}, {values.max():.3g}]; "
            "rescale X (e.g. divide by its maximum) or use likelihood='gaussian'"
        )
    return X


def _mean_feature_variance(X) -> float:
    """1/D sum_d Var(x_d): the best sigma^2 of a model that explains nothing of X."""
    if sp.issparse(X):
        mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
        sq = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel()
        return float(np.mean(np.maximum(sq - mean**2, 0.0)))
    return float(np.mean(np.var(X, axis=0, dtype=np.float64)))


class VariationalAutoencoder(SaveLoadMixin, StoreMixin, TransformerMixin, BaseEstimator):
    """A VAE as a scikit-learn estimator: ``fit`` / ``transform`` / ``reconstruct`` /
    ``sample`` / ``score``; ``store(adata)`` writes the latent means to ``adata.obsm["X_vae"]``,
    ``save(path)`` / ``VariationalAutoencoder.load(path)`` keep a fitted model.

    Maximises ELBO = E_q[log p(x | z, theta)] - KL(q(z | x, phi) || p(z)) by minibatch
    gradient steps (:func:`sclecture.training.train`, Adam). ``kl_weight`` scales the KL
    term in the training loss only (1 is the true ELBO; 0 leaves a noisy autoencoder);
    reported ELBOs always use weight 1. With the Gaussian likelihood, log sigma^2 starts at
    the log of the features' average variance: Adam moves a parameter by about ``lr`` per
    step, and from log sigma^2 = 0 a short run would spend all its steps getting there.

    Learned attributes: ``module_`` (the :class:`VAE`), ``history_`` (not saved),
    ``n_features_in_``, ``feature_names_in_`` (gene names, when the data have them).
    """

    _store_key = "vae"
    _saved_attributes = ("n_features_in_", "feature_names_in_")

    def __init__(
        self,
        n_latent: int = 10,
        hidden: Sequence[int] = (128,),
        likelihood: str = "gaussian",
        decoder_hidden: Sequence[int] | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        kl_weight: float = 1.0,
        epochs: int = 100,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        layer: str | None = None,
        random_state: int = 0,
        device: str | None = None,
        progress: bool = True,
    ):
        self.n_latent = n_latent
        self.hidden = hidden
        self.likelihood = likelihood
        self.decoder_hidden = decoder_hidden
        self.activation = activation
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.kl_weight = kl_weight
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.layer = layer
        self.random_state = random_state
        self.device = device
        self.progress = progress

    # -- helpers ---------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR densified one minibatch at a time, or dense if smaller
        tags.transformer_tags.preserves_dtype = ["float32"]  # the networks compute in float32
        return tags

    def _build_module(self) -> VAE:
        return VAE(self.n_features_in_, self.n_latent, self.hidden, self.likelihood, self.decoder_hidden,
                   self.activation, self.dropout, self.batch_norm)

    def _seeded(self, device: torch.device):
        """Fix torch's random state inside the block without changing it outside."""
        devices = [device] if device.type == "cuda" else []
        return torch.random.fork_rng(devices=devices)

    def _fitted_input(self, X):
        check_fitted(self)
        return _check_input(X, self.likelihood, self.n_features_in_, layer=self.layer)

    def _minibatches(self, X):
        return MinibatchLoader((X,), batch_size=1024, shuffle=False, device=self._device())

    def _device(self) -> torch.device:
        return next(self.module_.parameters()).device

    # -- fitting ---------------------------------------------------------------------
    def fit(self, X, y=None, validation=None):
        """Fit the VAE to X (cells x features); ``validation`` (another matrix) is scored
        after every epoch. Returns ``self``."""
        check_choice(self.likelihood, "likelihood", LIKELIHOODS)
        check_positive(self.n_latent, "n_latent", integer=True)
        check_positive(self.kl_weight, "kl_weight", allow_zero=True)
        check_positive(self.random_state, "random_state", integer=True, allow_zero=True)
        names = feature_names(X)
        X = _check_input(X, self.likelihood, layer=self.layer)
        val = None
        if validation is not None:
            val = (_check_input(validation, self.likelihood, X.shape[1], layer=self.layer),)
        device = get_device(self.device)
        kl_weight = float(self.kl_weight)

        def loss_fn(module, minibatch, epoch):
            (x,) = minibatch
            inf = module.inference(x)
            return module.loss(x, inf, module.generative(inf["z"]), kl_weight=kl_weight)

        self.n_features_in_ = X.shape[1]
        vars(self).pop("feature_names_in_", None)  # a refit on a bare matrix forgets earlier gene names
        if names is not None:
            self.feature_names_in_ = names
        with self._seeded(device):
            torch.manual_seed(int(self.random_state))
            self.module_ = self._build_module()
            if self.likelihood == "gaussian":  # start sigma^2 at the features' average variance
                with torch.no_grad():
                    self.module_.log_sigma2.fill_(math.log(max(_mean_feature_variance(X), 1e-8)))
            self.history_ = train(self.module_, loss_fn, (X,), validation=val, epochs=self.epochs,
                                  batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                                  device=device, seed=int(self.random_state), progress=self.progress, desc="VAE")
        return self

    # -- using the fitted model ------------------------------------------------------
    @torch.no_grad()
    def transform(self, X, return_logvar: bool = False):
        """The posterior mean mu = f_mu(x, phi) of every cell (cells x n_latent, NumPy);
        with ``return_logvar=True`` also log sigma^2 = log f_sigma2(x, phi)."""
        X = self._fitted_input(X)
        self.module_.eval()
        mus, logvars = [], []
        for (x,) in self._minibatches(X):
            mu, logvar = self.module_.encode(x)
            mus.append(mu.cpu())
            logvars.append(logvar.cpu())
        mu, logvar = torch.cat(mus).numpy(), torch.cat(logvars).numpy()
        return (mu, logvar) if return_logvar else mu

    @torch.no_grad()
    def reconstruct(self, X):
        """E[x | z = mu(x)]: the decoder's mean at each cell's posterior mean (NumPy)."""
        X = self._fitted_input(X)
        self.module_.eval()
        out = [self.module_.mean(self.module_.decode(self.module_.encode(x)[0])).cpu() for (x,) in self._minibatches(X)]
        return torch.cat(out).numpy()

    @torch.no_grad()
    def decode(self, Z):
        """E[x | z] for given latent points Z (points x n_latent), as NumPy."""
        check_fitted(self)
        Z = np.asarray(Z, dtype=np.float32)
        if Z.ndim != 2 or Z.shape[1] != self.module_.n_latent:
            raise ValueError(f"Z must have shape (points, {self.module_.n_latent}), got {Z.shape}")
        self.module_.eval()
        z = torch.from_numpy(Z).to(self._device())
        return self.module_.mean(self.module_.decode(z)).cpu().numpy()

    @torch.no_grad()
    def sample(self, n_samples: int = 1, random_state: int = 0, noise: bool = False):
        """New data from the generative model: z ~ p(z) = N(0, I), then E[x | z]
        (or, with ``noise=True``, a draw x ~ p(x | z)). Returns NumPy, n_samples x features."""
        check_fitted(self)
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        gen = torch.Generator().manual_seed(int(random_state))
        z = torch.randn(int(n_samples), self.module_.n_latent, generator=gen)  # z ~ N(0, I)
        self.module_.eval()
        mean = self.module_.mean(self.module_.decode(z.to(self._device()))).cpu()
        if not noise:
            return mean.numpy()
        if self.likelihood == "bernoulli":
            return torch.bernoulli(mean, generator=gen).numpy()  # x ~ Ber(sigm(f(z)))
        sigma = torch.exp(0.5 * self.module_.log_sigma2.detach().cpu())
        return (mean + sigma * torch.randn(mean.shape, generator=gen)).numpy()  # x ~ N(f(z), sigma^2 I)

    @torch.no_grad()
    def elbo(self, X, n_samples: int = 10, random_state: int = 0, return_terms: bool = False):
        """Per-cell ELBO (NumPy), E_q estimated with ``n_samples`` draws per cell; with
        ``return_terms=True`` a dict with ``elbo``, ``reconstruction`` and ``kl``."""
        X = self._fitted_input(X)
        self.module_.eval()
        gen = torch.Generator().manual_seed(int(random_state))
        parts: dict[str, list] = {"elbo": [], "reconstruction": [], "kl": []}
        for (x,) in self._minibatches(X):
            for k, v in self.module_.elbo(x, n_samples=n_samples, generator=gen).items():
                parts[k].append(v.cpu())
        out = {k: torch.cat(v).double().numpy() for k, v in parts.items()}
        return out if return_terms else out["elbo"]

    def score(self, X, y=None, n_samples: int = 10) -> float:
        """Mean ELBO per cell (a lower bound on the mean log-likelihood log p(x))."""
        return float(np.mean(self.elbo(X, n_samples=n_samples)))
