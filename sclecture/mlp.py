"""Lesson 02: the multilayer perceptron.

A node computes y = phi(w^T x + b); a layer h = phi(W^T x + b); an MLP composes layers,
y = f_L(... f_2(f_1(x; theta_1); theta_2) ...; theta_L).

Two implementations of the same network:

* :class:`MLP`, in NumPy, with an explicit ``forward`` and ``backward`` (backpropagation,
  the chain rule through the layers) and plain gradient descent, so every step is visible;
* :func:`make_torch_mlp`, an ``nn.Sequential`` whose gradients come from autograd, and the
  thin estimator :class:`TorchMLPClassifier` that fits it with minibatch Adam through
  :func:`sclecture.training.train`.

Matrices hold one cell (example) per row, so a layer applied to n cells at once is
H = phi(X W + b): W has one column w_j per node, as in the lecture's W = (w_1, ..., w_m).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from torch import nn

from ._validation import (check_binary_labels, check_choice, check_fitted, check_labels, check_matrix, check_positive,
                          feature_names)
from .base import StoreMixin
from .linear import bernoulli_log_likelihood

__all__ = [
    "identity", "identity_derivative", "sigmoid", "sigmoid_derivative", "tanh", "tanh_derivative",
    "relu", "relu_derivative", "ACTIVATIONS", "OUTPUTS",
    "softmax", "log_softmax", "categorical_log_likelihood", "gaussian_log_likelihood", "dense_layer", "numerical_gradient", "relative_error",
    "initial_loss_check", "tiny_subset",
    "MLP", "two_layer_backward", "make_torch_mlp", "categorical_nll_loss", "TorchMLPClassifier", "plot_decision_surface",
]


# --------------------------------------------------------------------------- activations
# Each derivative is taken with respect to the pre-activation a = w^T x + b.

def identity(a):
    """phi(a) = a."""
    return np.asarray(a, dtype=float)


def identity_derivative(a):
    """phi'(a) = 1."""
    return np.ones_like(np.asarray(a, dtype=float))


def sigmoid(a):
    """sigm(a) = 1 / (1 + exp(-a)), computed as (1 + tanh(a / 2)) / 2, which never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(a, dtype=float)))


def sigmoid_derivative(a):
    """sigm'(a) = sigm(a) (1 - sigm(a))."""
    s = sigmoid(a)
    return s * (1.0 - s)


def tanh(a):
    """tanh(a) = (exp(a) - exp(-a)) / (exp(a) + exp(-a))."""
    return np.tanh(np.asarray(a, dtype=float))


def tanh_derivative(a):
    """tanh'(a) = 1 - tanh(a)^2."""
    return 1.0 - np.tanh(np.asarray(a, dtype=float)) ** 2


def relu(a):
    """Relu(a) = max(0, a)."""
    return np.maximum(np.asarray(a, dtype=float), 0.0)


def relu_derivative(a):
    """Relu'(a) = 1 if a > 0 else 0 (at a = 0 we take 0, as PyTorch does)."""
    return (np.asarray(a, dtype=float) > 0).astype(float)


ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "identity": (identity, identity_derivative),
    "sigmoid": (sigmoid, sigmoid_derivative),
    "tanh": (tanh, tanh_derivative),
    "relu": (relu, relu_derivative),
}
# output activation psi and the likelihood it pairs with
OUTPUTS = {"identity": "Gaussian", "sigmoid": "Bernoulli", "softmax": "categorical"}


# ---------------------------------------------------------------- softmax and likelihoods

def log_softmax(H, axis: int = -1):
    """log softmax(h)(j) = h(j) - log sum_l exp(h(l)), via the log-sum-exp trick (max subtracted)."""
    H = np.asarray(H, dtype=float)
    shifted = H - np.max(H, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(H, axis: int = -1):
    """softmax(h)(j) = exp(h(j)) / sum_l exp(h(l)); stable for any finite h."""
    H = np.asarray(H, dtype=float)
    e = np.exp(H - np.max(H, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _check_class_codes(X, y, k: int) -> np.ndarray:
    """Labels y_i in {0, ..., k-1}, one per row of X, as integers (the categorical likelihood's y)."""
    y = check_labels(X, y)
    if y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y)))):
        raise ValueError(f"y holds non-integer labels (dtype {y.dtype}, e.g. {y[0]!r}): labels are integers 0..{k - 1}; "
                         "encode class names with np.unique(names, return_inverse=True)")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() > k - 1):
        raise ValueError(f"labels must lie in 0..{k - 1} for {k} classes; got values {y.min()}..{y.max()}: "
                         "encode them with np.unique(labels, return_inverse=True) or widen the output layer")
    return y


def categorical_log_likelihood(H, y) -> float:
    """log L = sum_i log Cat(y_i | softmax(h_i)) = sum_i log softmax(h_i)(y_i), from logits H (n x k)."""
    H = np.asarray(H, dtype=float)
    if H.ndim != 2:
        raise ValueError(f"H must be an n x k matrix of logits; got shape {H.shape}")
    y = _check_class_codes(H, y, H.shape[1])
    return float(np.sum(log_softmax(H, axis=1)[np.arange(H.shape[0]), y]))


def gaussian_log_likelihood(y, mean, sigma2: float = 1.0) -> float:
    """log L = sum_i log N(y_i | f(x_i; theta), sigma^2) = -sum_i (y_i - f_i)^2 / (2 sigma^2) - n/2 log(2 pi sigma^2)."""
    check_positive(sigma2, "sigma2")
    y, mean = np.asarray(y, dtype=float), np.asarray(mean, dtype=float)
    if y.shape != mean.shape:
        raise ValueError(f"y and mean must have the same shape; got {y.shape} and {mean.shape}")
    return float(-0.5 * np.sum((y - mean) ** 2) / sigma2 - 0.5 * y.size * np.log(2 * np.pi * sigma2))


# ------------------------------------------------------------------------- layers

def dense_layer(X, W, b, phi: Callable = identity):
    """One layer for n inputs at once: H = phi(X W + b), row i being h_i = phi(W^T x_i + b)."""
    X, W, b = np.asarray(X, dtype=float), np.asarray(W, dtype=float), np.asarray(b, dtype=float)
    if X.ndim != 2 or W.ndim != 2 or b.ndim != 1:
        raise ValueError(f"X must be n x d, W d x m and b of length m; got {X.shape}, {W.shape}, {b.shape}")
    if X.shape[1] != W.shape[0] or W.shape[1] != b.shape[0]:
        raise ValueError(f"shapes do not fit: X {X.shape} @ W {W.shape} + b {b.shape}")
    return phi(X @ W + b)


# ------------------------------------------------------------------ gradient checks

def numerical_gradient(f: Callable[[], float], theta: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences d f / d theta_j ~ (f(theta + eps e_j) - f(theta - eps e_j)) / (2 eps).

    ``f`` takes no arguments and reads ``theta`` (an array of floats, for example one weight
    matrix of a network), which is changed in place one entry at a time and restored.
    """
    if not isinstance(theta, np.ndarray) or theta.dtype.kind != "f":
        raise TypeError("theta must be a NumPy array of floats that f reads (changed in place and restored); "
                        f"got {type(theta).__name__}{'' if not isinstance(theta, np.ndarray) else ' of dtype ' + str(theta.dtype)}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    grad = np.zeros_like(theta, dtype=float)
    it = np.nditer(theta, flags=["multi_index"])
    for _ in it:
        j = it.multi_index
        old = theta[j]
        theta[j] = old + eps
        f_plus = float(f())
        theta[j] = old - eps
        f_minus = float(f())
        theta[j] = old
        grad[j] = (f_plus - f_minus) / (2 * eps)
    return grad


def relative_error(a, b) -> float:
    """max |a - b| / max(|a| + |b|): the usual yardstick of a gradient check (1e-7 or less is good)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    denom = max(float(np.max(np.abs(a) + np.abs(b), initial=0.0)), 1e-300)
    return float(np.max(np.abs(a - b), initial=0.0)) / denom


# ---------------------------------------------------------- sanity checks before training

def initial_loss_check(H, y, tol: float = 0.1) -> tuple[float, bool]:
    """The loss -log L / n of logits H (n x k) for labels y, and whether it lies within tol * log k of
    log k: an untrained network gives every class probability about 1/k, so -log(1/k) per cell."""
    check_positive(tol, "tol")
    H = np.asarray(H, dtype=float)
    loss = -categorical_log_likelihood(H, y) / H.shape[0]
    log_k = float(np.log(H.shape[1]))
    return loss, bool(abs(loss - log_k) <= tol * log_k)


def tiny_subset(y, per_class: int = 2) -> np.ndarray:
    """Indices of the first ``per_class`` cells of every class (classes in increasing order, cells in
    the order of y): a training set so small that a working network must fit it perfectly."""
    check_positive(per_class, "per_class", integer=True)
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be a vector of labels, one per cell; got shape {y.shape}")
    return np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)]).astype(np.int64)


# --------------------------------------------------------------------- NumPy MLP

class MLP(BaseEstimator):
    """A multilayer perceptron in NumPy with explicit backpropagation.

    ``layer_sizes = (d, m_1, ..., m_{L-1}, k)``: input width, hidden widths, output width
    (the default is the lesson's network for points in the plane and two classes).
    Hidden layers use ``activation`` phi ("relu", "tanh", "sigmoid", "identity"); the last
    layer uses ``output`` psi, which fixes the likelihood:

    * "sigmoid" (k = 1): Bernoulli, L(theta) = prod_i Ber(y_i | f(x_i; theta)), y_i in {0, 1};
    * "softmax" (k >= 2): categorical, y_i in {0, ..., k-1};
    * "identity": Gaussian, L(theta) = prod_i N(y_i | f(x_i; theta), sigma2).

    ``fit`` maximises log L by gradient steps theta <- theta + lr * d log L / d theta (the loss
    minimised is the mean negative log-likelihood, -log L / n), full batch or in minibatches
    of ``batch_size``. Parameters: ``weights_[l]`` (m_l x m_{l+1}) and ``biases_[l]``, drawn
    from ``random_state`` by ``initialize()`` (which ``fit`` calls first), or given with
    :meth:`from_weights`; ``forward`` and ``backward`` work on them.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int] = (2, 16, 2),
        activation: str = "relu",
        output: str = "softmax",
        lr: float = 0.1,
        n_iter: int = 1000,
        batch_size: int | None = None,
        sigma2: float = 1.0,
        random_state: int = 0,
    ):
        self.layer_sizes = layer_sizes
        self.activation = activation
        self.output = output
        self.lr = lr
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.sigma2 = sigma2
        self.random_state = random_state

    def _check_params(self) -> list[int]:
        """Check the hyperparameters; return the layer widths as integers."""
        sizes = [int(s) for s in self.layer_sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"layer_sizes must list at least an input and an output width, all >= 1; got {list(self.layer_sizes)}")
        check_choice(self.activation, "activation", ACTIVATIONS)
        check_choice(self.output, "output", OUTPUTS)
        if self.output == "sigmoid" and sizes[-1] != 1:
            raise ValueError(f"a sigmoid (Bernoulli) output needs one output node, got {sizes[-1]}: "
                             "use output='softmax' for several classes")
        if self.output == "softmax" and sizes[-1] < 2:
            raise ValueError("a softmax output needs k >= 2 output nodes; for two classes use k = 2 "
                             "or output='sigmoid' with one node")
        check_positive(self.lr, "lr")
        check_positive(self.n_iter, "n_iter", integer=True, allow_zero=True)
        check_positive(self.sigma2, "sigma2")
        if self.batch_size is not None:
            check_positive(self.batch_size, "batch_size (or None for full batch)", integer=True)
        return sizes

    @classmethod
    def from_weights(cls, weights, biases, activation: str = "relu", output: str = "softmax", **kwargs) -> "MLP":
        """A network with the given parameters (copied): ``weights[l]`` is m_l x m_{l+1}."""
        weights = [np.array(W, dtype=float) for W in weights]
        biases = [np.array(b, dtype=float).reshape(-1) for b in biases]
        if len(weights) != len(biases) or not weights:
            raise ValueError(f"give one bias vector per weight matrix; got {len(weights)} and {len(biases)}")
        sizes = [weights[0].shape[0]] + [W.shape[1] for W in weights]
        for l, (W, b) in enumerate(zip(weights, biases)):
            if W.ndim != 2 or W.shape[0] != sizes[l] or b.shape != (W.shape[1],):
                raise ValueError(f"layer {l + 1}: W has shape {W.shape} and b {b.shape}; expected "
                                 f"({sizes[l]}, m) and (m,) so that consecutive layers fit")
        net = cls(tuple(sizes), activation=activation, output=output, **kwargs)
        net._check_params()
        net.weights_, net.biases_, net.n_features_in_ = weights, biases, sizes[0]
        return net

    @property
    def n_layers(self) -> int:
        return len(self.layer_sizes) - 1

    def initialize(self) -> "MLP":
        """Fresh parameters: W_l ~ N(0, g / m_l) (g = 2 for ReLU, 1 otherwise), b_l = 0."""
        sizes = self._check_params()
        rng = np.random.default_rng(self.random_state)
        gain = 2.0 if self.activation == "relu" else 1.0
        self.weights_ = [rng.normal(0.0, np.sqrt(gain / m), size=(m, m_next)) for m, m_next in zip(sizes[:-1], sizes[1:])]
        self.biases_ = [np.zeros(m_next) for m_next in sizes[1:]]
        self.n_features_in_ = sizes[0]
        return self

    # ---- checks
    def _check_X(self, X, n_inputs: int | None = None) -> np.ndarray:
        """X as a float matrix with as many columns as the input layer (default: of the current weights)."""
        if n_inputs is None:
            check_fitted(self)
            n_inputs = self.weights_[0].shape[0]
        X = check_matrix(X)
        if X.shape[1] != n_inputs:
            raise ValueError(f"X has {X.shape[1]} features (columns) but the network's input layer expects "
                             f"{n_inputs}: pass the same features it was built for, or build it "
                             f"with layer_sizes[0] = {X.shape[1]}")
        return X

    def _check_y(self, X, y, k: int | None = None) -> np.ndarray:
        k = self.weights_[-1].shape[1] if k is None else k
        if self.output == "softmax":
            return _check_class_codes(X, y, k)
        if self.output == "sigmoid":
            return check_binary_labels(check_labels(X, y), both_classes=False)[:, None]
        n = X.shape[0]
        y = np.asarray(y, dtype=float)
        if y.ndim == 1:
            y = y[:, None]
        if y.shape != (n, k):
            raise ValueError(f"y must have shape ({n},) or ({n}, {k}) for {k} output(s); got {np.shape(y)}")
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinite values: remove those examples before fitting")
        return y

    # ---- the model
    def forward(self, X, return_cache: bool = False):
        """f(x; theta) = f_L(... f_1(x; theta_1) ...; theta_L) for every row of X.

        Returns the output psi(a_L) (n x k: class probabilities, or the Gaussian mean). With
        ``return_cache=True`` also a dict with the pre-activations ``A`` = [a_1, ..., a_L] and
        the layer inputs ``H`` = [x, h_1, ..., h_{L-1}] that ``backward`` needs.
        """
        X = self._check_X(X)
        phi = ACTIVATIONS[self.activation][0]
        H, As, Hs = X, [], []
        for l, (W, b) in enumerate(zip(self.weights_, self.biases_)):
            Hs.append(H)
            A = H @ W + b  # a_l = W_l^T h_{l-1} + b_l
            As.append(A)
            H = phi(A) if l < len(self.weights_) - 1 else self._psi(A)  # h_l = phi(a_l); y = psi(a_L)
        return (H, {"A": As, "H": Hs}) if return_cache else H

    def _psi(self, A):
        if self.output == "softmax":
            return softmax(A, axis=1)
        return sigmoid(A) if self.output == "sigmoid" else A

    def _nll(self, A_L, y) -> float:
        """Mean negative log-likelihood -log L / n from the output pre-activations a_L."""
        n = A_L.shape[0]
        if self.output == "softmax":
            return -categorical_log_likelihood(A_L, y) / n
        if self.output == "sigmoid":
            return -float(bernoulli_log_likelihood(y[:, 0], logits=A_L[:, 0])) / n
        return -gaussian_log_likelihood(y, A_L, self.sigma2) / n

    def loss(self, X, y) -> float:
        """Mean negative log-likelihood -log L(theta) / n of the data (X, y)."""
        X = self._check_X(X)
        y = self._check_y(X, y)
        _, cache = self.forward(X, return_cache=True)
        return self._nll(cache["A"][-1], y)

    def backward(self, X, y):
        """Backpropagation: the loss -log L / n and its gradient for every W_l and b_l.

        Returns ``(loss, grads)`` with ``grads["W"][l]`` and ``grads["b"][l]`` shaped like
        ``weights_[l]`` and ``biases_[l]``.
        """
        X = self._check_X(X)
        return self._backward(X, self._check_y(X, y))

    def _backward(self, X, y):
        n = X.shape[0]
        _, cache = self.forward(X, return_cache=True)
        A, H = cache["A"], cache["H"]
        dphi = ACTIVATIONS[self.activation][1]
        # delta_L = d loss / d a_L = (psi(a_L) - y) / n for each of the three output-likelihood
        # pairs (divided by sigma^2 for the Gaussian)
        if self.output == "softmax":
            target = np.zeros_like(A[-1])
            target[np.arange(n), y] = 1.0
            delta = (softmax(A[-1], axis=1) - target) / n
        elif self.output == "sigmoid":
            delta = (sigmoid(A[-1]) - y) / n
        else:
            delta = (A[-1] - y) / (self.sigma2 * n)
        L = len(self.weights_)
        gW, gb = [None] * L, [None] * L
        for l in reversed(range(L)):
            gW[l] = H[l].T @ delta  # d loss / d W_l = h_{l-1} delta_l^T, summed over examples
            gb[l] = delta.sum(axis=0)  # d loss / d b_l = delta_l, summed over examples
            if l > 0:
                delta = (delta @ self.weights_[l].T) * dphi(A[l - 1])  # delta_{l-1} = phi'(a_{l-1}) * (W_l delta_l)
        return self._nll(A[-1], y), {"W": gW, "b": gb}

    # ---- fitting and prediction
    def fit(self, X, y) -> "MLP":
        """Maximum likelihood by gradient descent on -log L / n from fresh parameters."""
        sizes = self._check_params()
        X = self._check_X(X, n_inputs=sizes[0])
        y = self._check_y(X, y, k=sizes[-1])
        self.initialize()
        rng = np.random.default_rng(self.random_state)
        n = X.shape[0]
        bs = n if self.batch_size is None else min(int(self.batch_size), n)
        self.loss_curve_ = []
        for _ in range(self.n_iter):
            order = rng.permutation(n) if bs < n else np.arange(n)
            total = 0.0
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                loss, grads = self._backward(X[idx], y[idx])
                for l in range(len(self.weights_)):
                    self.weights_[l] -= self.lr * grads["W"][l]  # theta <- theta + lr * d log L / d theta
                    self.biases_[l] -= self.lr * grads["b"][l]
                total += loss * len(idx)
            self.loss_curve_.append(total / n)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, n x k (for a sigmoid output: columns P(y=0), P(y=1))."""
        if self.output == "identity":
            raise ValueError("predict_proba needs a classifier (output 'sigmoid' or 'softmax'); use predict for regression")
        P = self.forward(X)
        return np.hstack([1.0 - P, P]) if self.output == "sigmoid" else P

    def predict(self, X) -> np.ndarray:
        """Most probable class for a classifier; the mean f(x; theta) for regression."""
        if self.output == "identity":
            out = self.forward(X)
            return out[:, 0] if out.shape[1] == 1 else out
        return np.argmax(self.predict_proba(X), axis=1)

    def score(self, X, y) -> float:
        """Accuracy for a classifier, R^2 for regression."""
        X = self._check_X(X)
        y = self._check_y(X, y)
        if self.output == "identity":
            resid = np.sum((y - self.forward(X)) ** 2)
            return float(1.0 - resid / np.sum((y - y.mean(axis=0)) ** 2))
        return float(np.mean(self.predict(X) == np.asarray(y).reshape(-1)))

    def to_torch(self, dtype: torch.dtype = torch.float64) -> nn.Sequential:
        """The same network as :func:`make_torch_mlp`, with these parameters (nn.Linear stores W^T)."""
        check_fitted(self)
        sizes = [self.weights_[0].shape[0]] + [W.shape[1] for W in self.weights_]
        module = make_torch_mlp(sizes, activation=self.activation, output=self.output).to(dtype)
        linears = [m for m in module if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for lin, W, b in zip(linears, self.weights_, self.biases_):
                lin.weight.copy_(torch.as_tensor(W.T))
                lin.bias.copy_(torch.as_tensor(b))
        return module


def two_layer_backward(X, y, W1, b1, W2, b2) -> dict:
    """Gradients of -log L / n for H1 = Relu(X W1 + b1), logits A2 = H1 W2 + b2, softmax output.

    The two-layer case of :meth:`MLP.backward`, as a dict with keys "W1", "b1", "W2", "b2".
    """
    _, g = MLP.from_weights([W1, W2], [b1, b2], activation="relu", output="softmax").backward(X, y)
    return {"W1": g["W"][0], "b1": g["b"][0], "W2": g["W"][1], "b2": g["b"][1]}


# -------------------------------------------------------------------- PyTorch MLP

TORCH_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "identity": nn.Identity}
TORCH_OUTPUTS = {"identity": nn.Identity, "sigmoid": nn.Sigmoid, "softmax": lambda: nn.Softmax(dim=-1),
                 "log_softmax": lambda: nn.LogSoftmax(dim=-1)}


def make_torch_mlp(
    layer_sizes: Sequence[int],
    activation: str = "relu",
    output: str = "identity",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """An MLP as ``nn.Sequential``: ``layer_sizes = (d_in, h_1, ..., h_{L-1}, d_out)``.

    Hidden layers compute h = phi(W^T x + b) (optionally followed by BatchNorm and dropout);
    the last layer applies the output activation psi: "identity" (logits, or a Gaussian
    mean), "sigmoid" (Bernoulli), "softmax" / "log_softmax" (categorical).
    """
    sizes = [int(s) for s in layer_sizes]
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(f"layer_sizes must list at least an input and an output width, all >= 1; got {list(layer_sizes)}")
    check_choice(activation, "activation", TORCH_ACTIVATIONS)
    check_choice(output, "output", TORCH_OUTPUTS)
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(sizes) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(TORCH_ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    layers.append(TORCH_OUTPUTS[output]())
    return nn.Sequential(*layers)


def categorical_nll_loss(module: nn.Module, minibatch, epoch: int = 0) -> torch.Tensor:
    """Loss for :func:`sclecture.training.train`: -log L / n = -mean_i log softmax(f(x_i; theta))(y_i).

    ``module`` returns logits (output="identity"); ``minibatch`` is (x, y) with integer labels.
    """
    x, y = minibatch
    return nn.functional.cross_entropy(module(x), y.long())


class TorchMLPClassifier(StoreMixin, ClassifierMixin, BaseEstimator):
    """An MLP classifier in PyTorch: ReLU hidden layers, softmax output, categorical likelihood.

    Fitted by minibatch Adam on -log L / n with :func:`sclecture.training.train`.
    ``X`` may be a NumPy array, a SciPy sparse matrix or an AnnData (then ``y`` may name an
    ``obs`` column); ``y`` holds any labels, kept in ``classes_``. Runs on CUDA when present.
    ``store(adata)`` writes the predicted cell types to ``adata.obs["mlp_prediction"]``.
    """

    _store_kind, _store_key = "obs", "mlp"

    def __init__(
        self,
        hidden: Sequence[int] = (64,),
        activation: str = "relu",
        epochs: int = 20,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        dropout: float = 0.0,
        random_state: int = 0,
        device: str | None = None,
        progress: bool = False,
    ):
        self.hidden = hidden
        self.activation = activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.random_state = random_state
        self.device = device
        self.progress = progress

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def fit(self, X, y) -> "TorchMLPClassifier":
        """Minibatch Adam on -log L / n from weights drawn with ``random_state``."""
        from .training import get_device, train

        for name in ("epochs", "batch_size", "random_state"):
            check_positive(getattr(self, name), name, integer=True, allow_zero=name != "batch_size")
        check_positive(self.lr, "lr")
        M = check_matrix(X, dtype=np.float32, sparse=True)
        y = check_labels(X, y)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y holds one class only ({self.classes_[0]!r}): a classifier needs at least two")
        self.n_features_in_ = M.shape[1]
        if feature_names(X) is not None:
            self.feature_names_in_ = feature_names(X)
        self.device_ = get_device(self.device)
        with torch.random.fork_rng(devices=[self.device_] if self.device_.type == "cuda" else []):
            torch.manual_seed(int(self.random_state))  # the initial weights and dropout, without touching the caller's RNG
            self.module_ = make_torch_mlp((M.shape[1], *self.hidden, len(self.classes_)), activation=self.activation,
                                          output="identity", dropout=self.dropout)
            self.history_ = train(self.module_, categorical_nll_loss, (M, codes.astype(np.int64)), epochs=self.epochs,
                                  batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                                  device=self.device_, seed=int(self.random_state), progress=self.progress, desc="MLP")
        return self

    @torch.no_grad()
    def predict_proba(self, X) -> np.ndarray:
        """softmax(f(x; theta)) for every cell: n x k, columns in the order of ``classes_``."""
        check_fitted(self)
        M = check_matrix(X, dtype=np.float32, sparse=True, n_features=self.n_features_in_)
        self.module_.eval()
        out = []
        for start in range(0, M.shape[0], 1024):
            chunk = M[start:start + 1024]
            chunk = chunk.toarray() if sp.issparse(chunk) else chunk
            out.append(torch.softmax(self.module_(torch.as_tensor(chunk, device=self.device_)), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """The most probable class of every cell, from ``classes_``."""
        P = self.predict_proba(X)
        return self.classes_[np.argmax(P, axis=1)]

    def score(self, X, y) -> float:
        """Accuracy: the fraction of cells whose predicted label equals y (labels or an obs key)."""
        return float(np.mean(self.predict(X) == check_labels(X, y)))


# ------------------------------------------------------------------------- plotting

def plot_decision_surface(model, X, y, ax=None, title: str | None = None, s: float = 12,
                          labels: Sequence[str] = ("0", "1"), resolution: int = 150):
    """Two features coloured by a binary label y, over the model's P(y = 1 | x) on a grid.

    ``model`` is anything with ``predict_proba`` (column 1 is drawn) or a function from an
    m x 2 array to m probabilities; the black curve is the decision boundary P = 1/2.
    """
    import matplotlib.pyplot as plt

    X, y = np.asarray(X, dtype=float), np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"X must have exactly two columns (features) to draw in the plane; got shape {X.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    pad = 0.15 * (X.max(0) - X.min(0)) + 1e-9
    lo, hi = X.min(0) - pad, X.max(0) + pad
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.column_stack([g0.ravel(), g1.ravel()])
    p = model.predict_proba(grid) if hasattr(model, "predict_proba") else model(grid)
    p = np.asarray(p, dtype=float)
    p = (p[:, 1] if p.ndim == 2 and p.shape[1] == 2 else p.reshape(-1)).reshape(g0.shape)
    ax.contourf(g0, g1, p, levels=np.linspace(0, 1, 11), cmap="coolwarm", alpha=0.35, vmin=0, vmax=1)
    if p.min() < 0.5 < p.max():
        ax.contour(g0, g1, p, levels=[0.5], colors="k", linewidths=1.5)
    for value, colour, label in zip((0, 1), ("tab:blue", "tab:red"), labels):
        m = y == value
        ax.scatter(X[m, 0], X[m, 1], s=s, color=colour, edgecolors="white", linewidths=0.3, label=label)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax
