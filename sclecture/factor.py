"""Lesson 04: factor analysis and probabilistic PCA, dimension reduction as a generative model.

Factor analysis (FA):   p(z) = N(z | 0, I),   p(x | z) = N(x | W z + mu, Psi),  Psi diagonal,
so that                 p(x) = N(x | mu, W W^T + Psi).
Probabilistic PCA (PPCA) is the special case Psi = sigma^2 I, W with orthogonal columns. From the
sample covariance S = U Lambda U^T its maximum-likelihood parameters are
    W = U_L (Lambda_L - sigma^2 I)^(1/2)   (up to a rotation),   sigma^2 = 1/(D-L) sum_{i>L} lambda_i,
and the posterior of the latent variable is
    p(z | x) = N(z | M^-1 W^T (x - mu), sigma^2 M^-1),   M = W^T W + sigma^2 I.
FA has no closed form; :class:`FactorAnalysis` fits it by expectation-maximisation (EM).

The pieces a lesson asks for are plain functions (:func:`sample_fa`, :func:`marginal_covariance`,
:func:`ppca_mle`, :func:`ppca_posterior`, :func:`mvn_logpdf`); :class:`PPCA` and
:class:`FactorAnalysis` are scikit-learn estimators (fit / transform / posterior / score /
score_samples / sample / store). Pure NumPy/SciPy: cells x genes matrices, dense or sparse, or an AnnData.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.linalg import blas
from sklearn.base import BaseEstimator, TransformerMixin

from ._validation import check_choice, check_fitted, check_matrix, check_positive, feature_names
from .base import StoreMixin

__all__ = [
    "sample_fa",
    "marginal_covariance",
    "mvn_logpdf",
    "average_log_likelihood",
    "lowrank_mvn_logpdf",
    "ppca_mle",
    "ppca_posterior",
    "PPCA",
    "FactorAnalysis",
]

LOG_2PI = math.log(2 * math.pi)
_CHUNK = 8192  # rows per block when streaming over cells (keeps temporaries at a few tens of MB)


# ---------------------------------------------------------------------------------------
# Input checks (shared ones in sclecture._validation)


def _check_n_components(n_components, n_samples: int, n_features: int) -> int:
    check_positive(n_components, "n_components", integer=True)
    if n_components >= n_features:
        raise ValueError(f"n_components={n_components} must be smaller than the number of genes D={n_features}: "
                         "the noise variance is estimated from the D - L discarded dimensions; choose L < D")
    if n_samples <= n_components:
        raise ValueError(f"only {n_samples} cell(s) for n_components={n_components}: the covariance of so few cells "
                         "cannot determine L directions; use more cells than components")
    return int(n_components)


def _rows(X, start: int, stop: int, mean: np.ndarray) -> np.ndarray:
    """Rows start:stop of X, dense, centred: x_n - mu (float64)."""
    block = X[start:stop]
    block = block.toarray() if sp.issparse(block) else block
    return np.asarray(block, dtype=np.float64) - mean


def _mean_and_covariance(X, ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """mu = mean of the rows and S = 1/(n - ddof) sum_n (x_n - mu)(x_n - mu)^T, never an n x n matrix.

    Dense input is streamed in row blocks through a BLAS rank-k update (syrk) in the input's
    precision, accumulated in float64; sparse input uses X^T X - n mu mu^T.
    """
    n, D = X.shape
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    if sp.issparse(X):
        X = X.astype(np.float64)
        XtX = (X.T @ X).toarray()
        scatter = XtX - n * np.outer(mean, mean)
    else:
        syrk = blas.ssyrk if X.dtype == np.float32 else blas.dsyrk
        scatter = np.zeros((D, D))
        for start in range(0, n, _CHUNK):
            block = X[start:start + _CHUNK] - mean.astype(X.dtype)
            # block.T is Fortran-ordered: syrk(trans=0) gives block^T block (lower triangle) without a copy
            scatter += syrk(1.0, block.T, trans=0, lower=1)
        scatter = np.tril(scatter) + np.tril(scatter, -1).T
    return mean, scatter / (n - ddof)


def _leading_eigh(S: np.ndarray, L: int) -> tuple[np.ndarray, np.ndarray]:
    """The L largest eigenvalues of the symmetric S (decreasing) and their eigenvectors (columns).

    Few components of many genes: Lanczos (ARPACK, converged to machine precision) needs only
    products S v and is many times faster than a full decomposition; otherwise LAPACK.
    """
    D = S.shape[0]
    if D > 200 and 20 * L <= D:
        from scipy.sparse.linalg import eigsh

        lam, U = eigsh(S, k=L, which="LA", v0=np.ones(D) / math.sqrt(D))  # fixed start: repeatable
        order = np.argsort(lam)[::-1]
        return lam[order], U[:, order]
    lam, U = np.linalg.eigh(S)  # all of them: here faster than LAPACK's subset drivers
    return lam[::-1][:L], U[:, ::-1][:, :L]


# ---------------------------------------------------------------------------------------
# The pieces of the lesson


def sample_fa(W, mu, psi, n_samples: int, rng=None):
    """Ancestral sampling from FA: z ~ N(0, I), then x | z ~ N(W z + mu, Psi) with Psi = diag(psi).

    ``rng`` is a ``numpy.random.Generator`` (or a seed). Draws z first, as
    ``rng.standard_normal((n_samples, L))``, then the noise as ``rng.standard_normal((n_samples, D))``.
    Returns ``(X, Z)``: n_samples x D observations and the n_samples x L latents behind them.
    """
    W = np.asarray(W, dtype=np.float64)
    mu, psi = np.asarray(mu, dtype=np.float64), np.asarray(psi, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"W must be a D x L matrix, got shape {W.shape}")
    D, L = W.shape
    if mu.shape != (D,) or psi.shape != (D,):
        raise ValueError(f"mu and psi must be vectors of length D={D}, got shapes {mu.shape} and {psi.shape}")
    if (psi < 0).any():
        raise ValueError("psi holds variances and must be non-negative")
    rng = np.random.default_rng(rng)
    Z = rng.standard_normal((n_samples, L))                   # z ~ N(0, I)
    eps = rng.standard_normal((n_samples, D)) * np.sqrt(psi)  # eps ~ N(0, Psi)
    return Z @ W.T + mu + eps, Z                              # x = W z + mu + eps


def marginal_covariance(W, psi):
    """Cov[x] = W W^T + Psi of the FA marginal p(x) = N(x | mu, W W^T + Psi); ``psi`` is diag(Psi)
    (a length-D vector, or a scalar sigma^2 for PPCA)."""
    W = np.asarray(W, dtype=np.float64)
    psi = np.broadcast_to(np.asarray(psi, dtype=np.float64), (W.shape[0],))
    return W @ W.T + np.diag(psi)


def mvn_logpdf(X, mean, cov):
    """log N(x_n | mean, cov) for every row x_n of X, through the Cholesky factor cov = C C^T.

    log N(x | m, S) = -1/2 [D log 2 pi + log|S| + (x - m)^T S^-1 (x - m)], with
    log|S| = 2 sum_d log C_dd and (x - m)^T S^-1 (x - m) = ||C^-1 (x - m)||^2 (a triangular solve);
    no inverse or determinant is ever formed.
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    cov = np.asarray(cov, dtype=np.float64)
    D = X.shape[1]
    if cov.shape != (D, D):
        raise ValueError(f"cov must be {D} x {D} to match X's {D} columns, got shape {cov.shape}")
    try:
        C = sla.cholesky(cov, lower=True)
    except sla.LinAlgError:
        raise ValueError("cov is not positive definite (no Cholesky factor): check that it is a covariance "
                         "matrix, or add a small multiple of the identity") from None
    R = sla.solve_triangular(C, (X - mean).T, lower=True)  # C^-1 (x - m), one column per cell
    return -0.5 * (D * LOG_2PI + 2 * np.log(np.diag(C)).sum() + (R**2).sum(axis=0))


def average_log_likelihood(X, mean, cov) -> float:
    """1/n sum_n log N(x_n | mean, cov): the average log-likelihood of the rows of X (Cholesky, as above)."""
    return float(np.mean(mvn_logpdf(X, mean, cov)))


def lowrank_mvn_logpdf(X, mean, W, psi):
    """log N(x_n | mean, W W^T + diag(psi)) for every row, without forming the D x D covariance.

    Woodbury: C^-1 = Psi^-1 - Psi^-1 W A^-1 W^T Psi^-1 and the determinant lemma
    log|C| = log|A| + sum_d log psi_d, with the L x L matrix A = I + W^T Psi^-1 W (Cholesky).
    Costs O(n D L); X may be dense or sparse.
    """
    W = np.asarray(W, dtype=np.float64)
    D, L = W.shape
    psi = np.broadcast_to(np.asarray(psi, dtype=np.float64), (D,))
    mean = np.asarray(mean, dtype=np.float64)
    if (psi <= 0).any():
        raise ValueError("psi must be positive for the covariance W W^T + Psi to be invertible")
    X = X if sp.issparse(X) else np.atleast_2d(np.asarray(X))
    PiW = W / psi[:, None]                                         # Psi^-1 W
    cA = sla.cholesky(np.eye(L) + W.T @ PiW, lower=True)           # A = I + W^T Psi^-1 W = cA cA^T
    logdet = 2 * np.log(np.diag(cA)).sum() + np.log(psi).sum()     # log|W W^T + Psi|
    out = np.empty(X.shape[0])
    for start in range(0, X.shape[0], _CHUNK):
        Xc = _rows(X, start, start + _CHUNK, mean)                # x - mu
        T = sla.solve_triangular(cA, (Xc @ PiW).T, lower=True)    # cA^-1 W^T Psi^-1 (x - mu)
        maha = (Xc**2 / psi).sum(axis=1) - (T**2).sum(axis=0)     # (x - mu)^T C^-1 (x - mu)
        out[start:start + _CHUNK] = -0.5 * (D * LOG_2PI + logdet + maha)
    return out


def _sign_flip(U):
    """Make the largest-magnitude entry of each column positive (the convention of scikit-learn's PCA)."""
    idx = np.abs(U).argmax(axis=0)
    return U * np.sign(U[idx, np.arange(U.shape[1])])


def ppca_mle(eigenvalues, eigenvectors, n_components: int):
    """PPCA's maximum-likelihood (W, sigma^2) from the eigendecomposition S = U Lambda U^T.

    sigma^2 = 1/(D-L) sum_{i=L+1}^D lambda_i  and  W = U_L (Lambda_L - sigma^2 I)^(1/2), where the
    eigenvalues are sorted in decreasing order (``np.linalg.eigh`` returns them increasing).
    ``eigenvectors`` holds one eigenvector per column.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    U = np.asarray(eigenvectors, dtype=np.float64)
    D = lam.shape[0]
    if U.shape != (D, D):
        raise ValueError(f"eigenvectors must be a {D} x {D} matrix (one eigenvector per column), got {U.shape}")
    if not 1 <= n_components < D:
        raise ValueError(f"n_components must be between 1 and D-1={D - 1}, got {n_components}")
    order = np.argsort(lam)[::-1]
    lam, U = lam[order], U[:, order]
    sigma2 = lam[n_components:].mean()                                           # sigma^2 = mean of discarded eigenvalues
    W = U[:, :n_components] * np.sqrt(np.maximum(lam[:n_components] - sigma2, 0.0))  # U_L (Lambda_L - sigma^2 I)^(1/2)
    return W, float(sigma2)


def ppca_posterior(X, W, mu, sigma2):
    """p(z | x) = N(z | M^-1 W^T (x - mu), sigma^2 M^-1) with M = W^T W + sigma^2 I.

    Returns ``(mean, cov)``: the n x L posterior means (one row per cell) and the L x L
    posterior covariance, which is the same for every cell.
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    W = np.asarray(W, dtype=np.float64)
    L = W.shape[1]
    M = W.T @ W + sigma2 * np.eye(L)                                       # M = W^T W + sigma^2 I
    cM = sla.cho_factor(M)
    mean = sla.cho_solve(cM, W.T @ (X - mu).T).T                           # M^-1 W^T (x - mu)
    cov = sigma2 * sla.cho_solve(cM, np.eye(L))                            # sigma^2 M^-1
    return mean, cov


# ---------------------------------------------------------------------------------------
# Estimators


class _LinearGaussian(StoreMixin, TransformerMixin, BaseEstimator):
    """What PPCA and FA share: p(x) = N(x | mu, W W^T + Psi); posterior, scores, sampling.

    ``store(adata)`` writes the posterior means into ``adata.obsm["X_ppca"]`` / ``["X_fa"]``.
    """

    _store_kind = "obsm"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # X^T X and X B never densify a sparse matrix
        return tags

    def _check_input(self, X, fitting: bool = False):
        """X checked (dense float32/float64 or CSR); ``fitting`` records the number and names of the genes."""
        if fitting:
            X_checked = check_matrix(X, layer=self.layer, dtype=None, sparse=True)
            self.n_features_in_ = X_checked.shape[1]
            names = feature_names(X)
            vars(self).pop("feature_names_in_", None)  # a refit on a bare matrix forgets earlier gene names
            if names is not None:
                self.feature_names_in_ = names
            return X_checked
        check_fitted(self)
        return check_matrix(X, layer=self.layer, dtype=None, sparse=True, n_features=self.n_features_in_)

    def _posterior_parts(self):
        """(B, G): E[z | x] = B^T (x - mu) and Cov[z | x] = G, G = (I + W^T Psi^-1 W)^-1, B = Psi^-1 W G."""
        W, psi = self.W_, self.psi_
        L = W.shape[1]
        PiW = W / psi[:, None]
        cA = sla.cho_factor(np.eye(L) + W.T @ PiW)
        G = sla.cho_solve(cA, np.eye(L))
        return PiW @ G, G

    def posterior(self, X):
        """p(z | x_n) = N(mean_n, cov): returns the n x L posterior means and the L x L covariance."""
        X = self._check_input(X)
        B, G = self._posterior_parts()
        mean = np.asarray(X @ B) - self.mean_ @ B  # (x - mu) B without densifying a sparse X
        return mean, G

    def transform(self, X):
        """The posterior means E[z | x_n] (n x L): the cells in the latent space."""
        return self.posterior(X)[0]

    def get_covariance(self):
        """The model covariance W W^T + Psi (D x D)."""
        check_fitted(self)
        return marginal_covariance(self.W_, self.psi_)

    def score_samples(self, X):
        """log p(x_n) = log N(x_n | mu, W W^T + Psi) for every cell."""
        X = self._check_input(X)
        return lowrank_mvn_logpdf(X, self.mean_, self.W_, self.psi_)

    def score(self, X, y=None):
        """Average log-likelihood 1/n sum_n log p(x_n) (as scikit-learn's PCA.score and FactorAnalysis.score)."""
        return float(self.score_samples(X).mean())

    def sample(self, n_samples: int = 1, random_state=None):
        """n_samples x D draws from the fitted model: z ~ N(0, I), x = W z + mu + eps, eps ~ N(0, Psi)."""
        check_fitted(self)
        return sample_fa(self.W_, self.mean_, self.psi_, n_samples, random_state)[0]


class PPCA(_LinearGaussian):
    """Probabilistic PCA, fitted in closed form from the eigendecomposition of the sample covariance.

    Parameters
    ----------
    n_components : L, the latent dimension (1 <= L < D).
    ddof : S = 1/(n - ddof) sum_n (x_n - mean)(x_n - mean)^T. 0 (default) is the maximum-likelihood
        estimate of the lecture; scikit-learn's PCA uses ddof=1.
    layer : for an AnnData, the layer to read instead of ``.X``.

    Attributes
    ----------
    mean_ (D,), W_ (D x L, orthogonal columns), noise_variance_ (sigma^2), psi_ (D,: sigma^2
    repeated), explained_variance_ (the L largest eigenvalues of S), total_variance_ (trace S),
    components_ (L x D, the principal directions U_L^T, as in scikit-learn).

    Only S (D x D, built in row blocks) and its L leading eigenpairs are computed; no n x n matrix
    is formed. Cost O(n D^2) for S, whatever L.
    """

    def __init__(self, n_components: int = 2, ddof: int = 0, layer: str | None = None):
        self.n_components = n_components
        self.ddof = ddof
        self.layer = layer

    _store_key = "ppca"

    def fit(self, X, y=None):
        X = self._check_input(X, fitting=True)
        n, D = X.shape
        L = _check_n_components(self.n_components, n, D)
        check_choice(self.ddof, "ddof (0: maximum likelihood, 1: unbiased)", (0, 1))
        self.mean_, S = _mean_and_covariance(X, self.ddof)                   # S = 1/n sum (x - xbar)(x - xbar)^T
        lam, U = _leading_eigh(S, L)                                         # the L leading eigenpairs of S = U Lambda U^T
        U = _sign_flip(U)
        total = float(np.trace(S))
        sigma2 = (total - lam.sum()) / (D - L)                               # sigma^2 = 1/(D-L) sum_{i>L} lambda_i
        if not sigma2 > 1e-12 * max(total, 1e-300):
            raise ValueError(f"the data lie (numerically) in an {L}-dimensional subspace, so sigma^2 = {sigma2:.3g}: "
                             "there is no noise left to model; use fewer components")
        self.explained_variance_, self.total_variance_ = lam, total
        self.components_ = U.T
        self.noise_variance_ = float(sigma2)
        self.W_ = U * np.sqrt(np.maximum(lam - sigma2, 0.0))                 # W = U_L (Lambda_L - sigma^2 I)^(1/2)
        self.psi_ = np.full(D, self.noise_variance_)                         # Psi = sigma^2 I
        return self

    def posterior(self, X):
        """p(z | x) = N(z | M^-1 W^T (x - mu), sigma^2 M^-1), M = W^T W + sigma^2 I: (n x L means, L x L covariance)."""
        return super().posterior(X)


class FactorAnalysis(_LinearGaussian):
    """Factor analysis p(x) = N(x | mu, W W^T + Psi), Psi diagonal, fitted by EM.

    Parameters
    ----------
    n_components : L, the number of factors (1 <= L < D).
    max_iter : most EM iterations.
    tol : stop when an iteration raises the average log-likelihood by less than ``tol``.
    random_state : seed for ``init="random"``.
    init : "ppca" (default: start from the PPCA solution) or "random".
    layer : for an AnnData, the layer to read instead of ``.X``.

    Attributes
    ----------
    mean_ (D,), W_ (D x L), psi_ (D,: the diagonal of Psi; also ``noise_variance_`` as in
    scikit-learn), loglik_ (average log-likelihood before each EM step and after the last one; it
    never decreases), n_iter_, converged_, components_ (W^T, L x D as in scikit-learn).

    EM works with the sample covariance S (D x D), so each iteration costs O(D^2 L), whatever n.
    """

    def __init__(self, n_components: int = 2, max_iter: int = 1000, tol: float = 1e-5,
                 random_state=None, init: str = "ppca", layer: str | None = None):
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.init = init
        self.layer = layer

    @staticmethod
    def _estep(S, W, psi):
        """Average log-likelihood of (W, psi) and the expected sufficient statistics under p(z | x).

        With A = I + W^T Psi^-1 W and G = A^-1 = Cov[z | x], E[z | x] = G W^T Psi^-1 (x - mu) = B^T (x - mu):
        1/n sum_n (x_n - mu) E[z_n]^T = S B and 1/n sum_n E[z_n z_n^T] = G + B^T S B.
        """
        D, L = W.shape
        PiW = W / psi[:, None]                                           # Psi^-1 W
        cA = sla.cho_factor(np.eye(L) + W.T @ PiW, lower=True)
        G = sla.cho_solve(cA, np.eye(L))                                 # Cov[z | x] = (I + W^T Psi^-1 W)^-1
        SPiW = S @ PiW                                                   # the one O(D^2 L) product
        # log-likelihood 1/n sum log N(x_n | mu, C) = -1/2 [D log 2pi + log|C| + tr(C^-1 S)], C = W W^T + Psi
        logdet = 2 * np.log(np.diag(cA[0])).sum() + np.log(psi).sum()
        trace = (np.diag(S) / psi).sum() - np.trace(sla.cho_solve(cA, PiW.T @ SPiW))
        ll = -0.5 * (D * LOG_2PI + logdet + trace)
        SB = SPiW @ G                                                    # 1/n sum (x - mu) E[z]^T
        Ezz = G + (PiW @ G).T @ SB                                       # 1/n sum E[z z^T]
        return ll, SB, Ezz

    _store_key = "fa"

    def fit(self, X, y=None):
        X = self._check_input(X, fitting=True)
        n, D = X.shape
        L = _check_n_components(self.n_components, n, D)
        check_positive(self.max_iter, "max_iter", integer=True)
        check_positive(self.tol, "tol", allow_zero=True)
        check_choice(self.init, "init", ("ppca", "random"))
        self.mean_, S = _mean_and_covariance(X)                          # mu = xbar, S = 1/n sum (x - xbar)(x - xbar)^T
        var = np.diag(S).copy()
        floor = 1e-8 * max(var.mean(), 1e-300)                           # keeps Psi invertible for constant genes
        if self.init == "ppca":
            lam, U = _leading_eigh(S, L)
            sigma2 = max((var.sum() - lam.sum()) / (D - L), floor)
            W = U * np.sqrt(np.maximum(lam - sigma2, 0.0))
        else:
            rng = np.random.default_rng(self.random_state)
            W = rng.standard_normal((D, L)) * np.sqrt(var.mean() / L)
        psi = np.maximum(var - (W**2).sum(axis=1), floor) if self.init == "ppca" else np.maximum(var, floor)

        history, converged = [], False
        for _ in range(self.max_iter):
            ll, SB, Ezz = self._estep(S, W, psi)                         # E-step
            history.append(ll)
            if len(history) > 1 and history[-1] - history[-2] < self.tol:
                converged = True
                break
            W = sla.solve(Ezz, SB.T, assume_a="pos").T                   # M-step: W = [sum x E[z]^T][sum E[z z^T]]^-1
            psi = np.maximum(var - (W * SB).sum(axis=1), floor)          # Psi = diag(S - W 1/n sum E[z] (x - mu)^T)
        if not converged:
            history.append(self._estep(S, W, psi)[0])
            warnings.warn(f"FactorAnalysis did not converge in {self.max_iter} EM iterations "
                          f"(last gain {history[-1] - history[-2]:.3g} > tol={self.tol:g}); raise max_iter or tol",
                          RuntimeWarning, stacklevel=2)
        self.W_, self.psi_ = W, psi
        self.noise_variance_ = psi
        self.components_ = W.T
        self.loglik_ = np.array(history)
        self.n_iter_ = len(history) - 1
        self.converged_ = converged
        return self
