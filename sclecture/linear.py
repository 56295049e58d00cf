"""Lesson 01: logistic regression and the perceptron.

Binary responses y_i in {0, 1} follow Ber(y | p) = p^y (1 - p)^(1 - y). The GLM for binary
data links p to a linear model through the logit, log(p / (1 - p)) = x^T beta + beta_0, so
p = sigm(x^T beta + beta_0). There is no closed form for the maximum-likelihood (beta, beta_0):
it is found by gradient ascent, theta^(s+1) := theta^(s) + Delta * d log L / d theta.
The perceptron swaps the sigmoid for the step activation and learns by Rosenblatt's rule.

The functions work on NumPy arrays and, unchanged, on torch tensors (the estimator runs
them on ``sclecture.get_device()``); the lesson's exercises re-implement them in NumPy.
"""

from __future__ import annotations

import numpy as np
import scipy.special
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets

from ._validation import check_fitted, check_labels, check_matrix, check_positive, feature_names
from .base import StoreMixin

__all__ = [
    "sigmoid",
    "step",
    "bernoulli_log_likelihood",
    "log_likelihood",
    "log_likelihood_gradient",
    "gradient_ascent",
    "perceptron_update",
    "LogisticRegression",
    "Perceptron",
    "plot_decision_boundary",
]


def _xp(a):
    """The array library of ``a``: torch for tensors, NumPy otherwise."""
    return torch if isinstance(a, torch.Tensor) else np


def _float_array(a):
    return a if isinstance(a, torch.Tensor) else np.asarray(a, dtype=float)


def sigmoid(z):
    """sigm(z) = 1 / (1 + exp(-z)), without overflow for large |z|.

    exp is only ever taken of -|z| (a number in (0, 1]): for z >= 0 this is
    1 / (1 + e^{-z}), for z < 0 the equal e^{z} / (1 + e^{z}).
    """
    z = _float_array(z)
    xp = _xp(z)
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0, e) / (1.0 + e)


def step(z):
    """The perceptron's activation: sign(z) = 1 if z >= 0, else 0 (the lecture's convention)."""
    z = _float_array(z)
    return (z >= 0) * 1.0


def bernoulli_log_likelihood(y, p=None, *, logits=None):
    """sum_i log Ber(y_i | p_i) = sum_i [y_i log p_i + (1 - y_i) log(1 - p_i)].

    Give either the probabilities ``p`` (0 log 0 counts as 0) or ``logits``
    eta_i = log(p_i / (1 - p_i)); with logits the sum is computed as
    sum_i [y_i eta_i - log(1 + exp(eta_i))], which stays finite for any eta.
    """
    if (p is None) == (logits is None):
        raise TypeError("give exactly one of p= (probabilities) or logits=")
    y = _float_array(y)
    xp = _xp(y)
    if logits is not None:
        eta = _float_array(logits)
        # log Ber(y | sigm(eta)) = y eta - log(1 + e^eta)
        return (y * eta - xp.logaddexp(xp.zeros_like(eta), eta)).sum()
    p = _float_array(p)
    if xp is np and np.any((p < 0) | (p > 1)):
        raise ValueError("p must hold probabilities in [0, 1]; to pass log-odds, use logits=")
    xlogy = torch.xlogy if xp is torch else scipy.special.xlogy  # x log y, with 0 log 0 = 0
    return (xlogy(y, p) + xlogy(1 - y, 1 - p)).sum()


def log_likelihood(X, y, beta, beta0):
    """log L(beta, beta_0) = sum_i log Ber(y_i | sigm(x_i^T beta + beta_0)) of a data set."""
    eta = X @ beta + beta0  # eta_i = x_i^T beta + beta_0
    return bernoulli_log_likelihood(y, logits=eta)


def log_likelihood_gradient(X, y, beta, beta0):
    """(d log L / d beta, d log L / d beta_0) = (sum_i (y_i - p_i) x_i, sum_i (y_i - p_i))."""
    residual = y - sigmoid(X @ beta + beta0)  # y_i - p_i
    return X.T @ residual, residual.sum()


def gradient_ascent(X, y, lr=0.1, n_iter=100, *, beta=None, beta0=0.0, l2=0.0, tol=0.0):
    """Maximise log L(beta, beta_0) - (l2 / 2) ||beta||^2 by full-batch gradient ascent.

    theta^(s+1) := theta^(s) + Delta * d objective / d theta with Delta = lr / n, i.e. steps
    on the average log-likelihood, so that one ``lr`` suits data sets of any size.
    Starts from ``beta`` (zeros by default) and ``beta0``; stops after ``n_iter`` updates or
    once every entry of the averaged gradient is below ``tol`` in absolute value.

    Returns ``(beta, beta0, history)``; ``history[s]`` is log L (without the penalty) after
    update s + 1.
    """
    n, d = X.shape
    xp = _xp(X)
    if beta is None:
        beta = X.new_zeros(d) if xp is torch else np.zeros(d)
    history = []
    for _ in range(int(n_iter)):
        g_beta, g_beta0 = log_likelihood_gradient(X, y, beta, beta0)
        g_beta = g_beta - l2 * beta  # d/d beta of -(l2/2) ||beta||^2
        if tol > 0 and max(float(xp.abs(g_beta).max()), abs(float(g_beta0))) / n < tol:
            break
        beta = beta + lr / n * g_beta  # theta <- theta + Delta * d log L / d theta
        beta0 = beta0 + lr / n * g_beta0
        history.append(float(log_likelihood(X, y, beta, beta0)))
    return beta, beta0, history


def perceptron_update(x, y, beta, beta0):
    """One step of the perceptron learning rule for a single example (x, y):

    y_hat = sign(beta^T x + beta_0);  beta <- beta + (y - y_hat) x;  beta_0 <- beta_0 + (y - y_hat).
    Nothing changes when the example is classified correctly. Returns new (beta, beta0).
    """
    x = np.asarray(x, dtype=float)
    error = y - step(x @ beta + beta0)  # y - y_hat, one of -1, 0, 1
    return np.asarray(beta, dtype=float) + error * x, float(beta0 + error)


# --- estimators --------------------------------------------------------------------------


class _BinaryLinearClassifier(ClassifierMixin, BaseEstimator):
    """What logistic regression and the perceptron share: two classes, eta = x^T beta + beta_0.

    Any two labels work; ``classes_[1]`` plays y = 1 (scikit-learn's convention), so with
    labels 0/1 (or False/True) y means what it does in the lecture.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.input_tags.sparse = True
        return tags

    def _check_fit_data(self, X, y, layer):
        """The checked matrix and y coded 0/1; sets ``classes_``, ``n_features_in_``, ``feature_names_in_``."""
        Xm = check_matrix(X, layer=layer)
        y = check_labels(X, y)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) == 1:
            raise ValueError(f"y holds one class only ({self.classes_[0]!r}): a classifier needs examples of two classes")
        if len(self.classes_) > 2:
            raise ValueError(
                f"Only binary classification is supported. y holds {len(self.classes_)} classes "
                f"{list(self.classes_[:5])}: encode the class of interest, e.g. y = (labels == 'B'), "
                "and fit one model per cell type (one-vs-rest)"
            )
        self.n_features_in_ = Xm.shape[1]
        names = feature_names(X)
        if names is not None:
            self.feature_names_in_ = names
        return Xm, (y == self.classes_[1]).astype(np.float64)

    def decision_function(self, X, layer=None):
        """eta = x^T beta + beta_0 for every cell (for logistic regression: the log-odds)."""
        check_fitted(self)
        return check_matrix(X, layer=layer, n_features=self.n_features_in_) @ self.coef_ + self.intercept_

    def predict(self, X, layer=None):
        """``classes_[1]`` where x^T beta + beta_0 >= 0 (sign = 1, p >= 1/2), else ``classes_[0]``."""
        eta = self.decision_function(X, layer)
        return self.classes_[(eta >= 0).astype(int)]

    def score(self, X, y, layer=None):
        """Accuracy: the fraction of cells whose predicted label equals y (labels or an obs key)."""
        return float(np.mean(self.predict(X, layer) == check_labels(X, y)))


class LogisticRegression(StoreMixin, _BinaryLinearClassifier):
    """Logistic regression, p(y = 1 | x) = sigm(x^T beta + beta_0), fitted by gradient ascent.

    Parameters
    ----------
    lr : step size on the average log-likelihood (Delta = lr / n).
    n_iter : maximal number of full-batch gradient steps.
    l2 : ridge penalty; the objective is log L - (l2 / 2) ||beta||^2 (beta_0 is not
        penalised), so ``l2 = 1 / C`` of scikit-learn's ``LogisticRegression(C=...)``.
    tol : stop once every entry of the averaged gradient is below ``tol``.
    random_state : seed of the starting point: ``None`` starts from beta = 0, an integer
        from small random weights N(0, 0.01^2).
    device : where the arithmetic runs (default ``sclecture.get_device()``).

    Attributes: ``coef_`` (beta), ``intercept_`` (beta_0), ``classes_`` (``classes_[1]`` is
    y = 1), ``log_likelihood_`` (log L after each step), ``n_iter_``, ``converged_``.
    ``store(adata)`` writes the prediction to ``adata.obs["logreg_prediction"]``.
    """

    _store_kind, _store_key = "obs", "logreg"

    def __init__(self, lr=0.5, n_iter=1000, l2=0.0, tol=1e-6, random_state=None, device=None):
        self.lr = lr
        self.n_iter = n_iter
        self.l2 = l2
        self.tol = tol
        self.random_state = random_state
        self.device = device

    def fit(self, X, y, layer=None):
        """Maximise log L(beta, beta_0) - (l2 / 2) ||beta||^2 on the cells of X with labels y."""
        check_positive(self.lr, "lr")
        check_positive(self.n_iter, "n_iter", integer=True)
        check_positive(self.l2, "l2", allow_zero=True)
        check_positive(self.tol, "tol", allow_zero=True)
        Xm, y = self._check_fit_data(X, y, layer)
        from .training import get_device

        dev = get_device(self.device)
        beta = torch.zeros(Xm.shape[1], dtype=torch.float64)
        if self.random_state is not None:
            beta = 0.01 * torch.randn(Xm.shape[1], generator=torch.Generator().manual_seed(int(self.random_state)), dtype=torch.float64)
        Xt = torch.as_tensor(Xm, device=dev)
        yt = torch.as_tensor(y, device=dev)
        beta, beta0, history = gradient_ascent(
            Xt, yt, self.lr, self.n_iter, beta=beta.to(dev), beta0=torch.zeros((), dtype=torch.float64, device=dev),
            l2=self.l2, tol=self.tol,
        )
        if not np.all(np.isfinite(history)):
            raise FloatingPointError(f"the log-likelihood became non-finite: lower lr (now {self.lr})")
        self.coef_ = beta.cpu().numpy()
        self.intercept_ = float(beta0)
        self.log_likelihood_ = history
        self.n_iter_ = len(history)
        self.converged_ = self.n_iter_ < self.n_iter
        return self

    def predict_proba(self, X, layer=None):
        """cells x 2 matrix of (p(y = classes_[0] | x), p(y = classes_[1] | x)), p = sigm(x^T beta + beta_0)."""
        p1 = sigmoid(self.decision_function(X, layer))
        return np.column_stack([1 - p1, p1])


class Perceptron(_BinaryLinearClassifier):
    """Rosenblatt's perceptron, y = sign(beta^T x + beta_0), with the classic learning rule.

    Every epoch visits the cells in a new random order (seeded by ``random_state``) and applies
    :func:`perceptron_update` to each; training stops after the first epoch without a
    mistake (``converged_ = True``) or after ``max_epochs``. On linearly separable data the
    rule makes finitely many updates; otherwise it never settles. Sequential updates run on
    the CPU in NumPy.

    Attributes: ``coef_``, ``intercept_``, ``classes_``, ``n_updates_`` (updates made),
    ``n_iter_`` (epochs run), ``converged_``, ``mistakes_`` (mistakes per epoch).
    """

    def __init__(self, max_epochs=100, random_state=0):
        self.max_epochs = max_epochs
        self.random_state = random_state

    def fit(self, X, y, layer=None):
        """Run the perceptron rule over the cells, epoch after epoch, until an epoch without a mistake."""
        check_positive(self.max_epochs, "max_epochs", integer=True)
        Xm, y = self._check_fit_data(X, y, layer)
        rng = np.random.default_rng(self.random_state)
        beta, beta0 = np.zeros(Xm.shape[1]), 0.0
        self.n_updates_, self.mistakes_, self.converged_ = 0, [], False
        for _ in range(self.max_epochs):
            mistakes = 0
            for i in rng.permutation(len(y)):
                new_beta, new_beta0 = perceptron_update(Xm[i], y[i], beta, beta0)
                if new_beta0 != beta0 or np.any(new_beta != beta):
                    mistakes += 1
                beta, beta0 = new_beta, new_beta0
            self.mistakes_.append(mistakes)
            self.n_updates_ += mistakes
            if mistakes == 0:
                self.converged_ = True
                break
        self.coef_, self.intercept_ = beta, beta0
        self.n_iter_ = len(self.mistakes_)
        return self


# --- plotting ------------------------------------------------------------------------------


def plot_decision_boundary(X, y, beta, beta0, ax=None, proba=True, labels=("0", "1"), s=12, title=None):
    """Two features (columns of X) coloured by y, with the line x^T beta + beta_0 = 0.

    With ``proba=True`` the background shows p = sigm(x^T beta + beta_0) from 0 (blue) to
    1 (red); otherwise the two half-planes that sign(x^T beta + beta_0) assigns to 0 and 1.
    """
    import matplotlib.pyplot as plt

    X, y = np.asarray(X, dtype=float), np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"X must have exactly two columns (features) to draw in the plane; got shape {X.shape}")
    beta = np.asarray(beta, dtype=float).ravel()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    pad = 0.1 * (X.max(0) - X.min(0)) + 1e-9
    lo, hi = X.min(0) - pad, X.max(0) + pad
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 150), np.linspace(lo[1], hi[1], 150))
    eta = g0 * beta[0] + g1 * beta[1] + float(beta0)  # x^T beta + beta_0 on a grid
    surface = sigmoid(eta) if proba else step(eta)
    ax.contourf(g0, g1, surface, levels=np.linspace(0, 1, 11), cmap="coolwarm", alpha=0.35, vmin=0, vmax=1)
    if np.any(eta > 0) and np.any(eta < 0):
        ax.contour(g0, g1, eta, levels=[0], colors="k", linewidths=1.5)
    for value, colour, label in zip((0, 1), ("tab:blue", "tab:red"), labels):
        m = y == value
        ax.scatter(X[m, 0], X[m, 1], s=s, color=colour, edgecolors="white", linewidths=0.3, label=label)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.legend(frameon=True, fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    return ax
