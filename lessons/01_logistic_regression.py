# %% [markdown]
# # Lesson 01: logistic regression and the perceptron
#
# {{colab_badge}}
#
# Many questions about a cell have a yes-or-no answer: is it a B cell? Is it dividing? Did it
# respond to the stimulus? This lesson builds the simplest model for such a binary answer and
# then turns it into the smallest possible neural network.
#
# 1. **The model.** A binary response follows a Bernoulli distribution; the generalised linear
#    model (GLM) ties its probability to a linear function of the features through the logit link.
# 2. **Its likelihood** for a whole data set, and the gradient of the log-likelihood.
# 3. **Fitting** by gradient ascent, because no formula gives the best parameters directly.
# 4. **The neural-network view:** activation functions, linear classifiers, Rosenblatt's
#    perceptron and its learning rule, and a problem no linear classifier can solve (XOR).
# 5. **Real cells:** telling B cells from all other blood cells in the `pbmc3k` data set.
#
# You will write five short functions (each followed by a test cell) and one written answer.
# The reference versions live in `sclecture.linear`, together with the estimators
# `LogisticRegression` and `Perceptron` that the last part uses. The references in `sclecture` may
# be read but not called in an exercise: grading gives no points for a call.
#
# **Time:** about 2 hours: 45 minutes reading and running the cells, 75 minutes for the exercises
# and the written answer. A "Going further" list at the end suggests more to try, ungraded.

# %% [colab-setup]

# %%
import matplotlib.pyplot as plt
import numpy as np

import sclecture
import sclecture.diagrams
import sclecture.linear
from sclecture.grading import fallback

sclecture.set_seed(0)

# %% [markdown]
# ## 1. A model for binary responses
#
# Our data are pairs $D = \{(\mathbf{x}_1, y_1), \dots, (\mathbf{x}_n, y_n)\}$. For cell $i$,
# $\mathbf{x}_i = (x_{i1}, \dots, x_{ik})^T$ collects $k$ explanatory variables (here: the
# expression of $k$ genes) and the response $y_i$ is either $0$ or $1$ (here: "not a B cell" or
# "a B cell").
#
# A variable that takes only the values $0$ and $1$ has the **Bernoulli** distribution
#
# $$\text{Ber}(y \mid p) = p^{y} (1 - p)^{1 - y},$$
#
# which equals $p$ when $y = 1$ and $1 - p$ when $y = 0$. Its single parameter is the probability
# of a one, which is also the mean: $\mathbb{E}(Y) = p$.
#
# Before any features enter, consider one $p$ shared by all cells. The log-likelihood of
# responses $y_1, \dots, y_n$ is $\sum_i \log \text{Ber}(y_i \mid p)$; the plot shows it for 20
# responses of which 6 are ones. It peaks at $p = 6/20$: with no other information, the best
# guess for the probability is the observed fraction.

# %%
y_coin = np.array([1] * 6 + [0] * 14)
p_grid = np.linspace(0.01, 0.99, 99)
loglik = [sclecture.linear.bernoulli_log_likelihood(y_coin, np.full(len(y_coin), p)) for p in p_grid]

fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot(p_grid, loglik)
ax.axvline(y_coin.mean(), color="0.5", ls="--", label=r"$\bar y = 0.3$")
ax.set_xlabel("$p$")
ax.set_ylabel(r"$\sum_i \log \mathrm{Ber}(y_i \mid p)$")
ax.legend(frameon=False)
plt.show()

# %% [markdown]
# ### The logit link and the sigmoid
#
# A GLM lets the mean depend on the features through a linear predictor
# $\mathbf{x}_i^T \boldsymbol{\beta} + \beta_0$. A probability must stay between 0 and 1 while the
# linear predictor can be any real number, so the GLM for binary data models the **log-odds**:
#
# $$\log\left(\frac{p_i}{1 - p_i}\right) = \mathbf{x}_i^T \boldsymbol{\beta} + \beta_0
# \quad\iff\quad
# p_i = \frac{1}{1 + \exp\left(-(\mathbf{x}_i^T \boldsymbol{\beta} + \beta_0)\right)}
# = \text{sigm}(\mathbf{x}_i^T \boldsymbol{\beta} + \beta_0).$$
#
# The **sigmoid** $\text{sigm}(z) = 1 / (1 + e^{-z})$ maps the whole real line onto the interval
# $(0, 1)$ and undoes the logit. The complete model is
# $y_i \sim \text{Ber}\left(y_i \mid \text{sigm}(\mathbf{x}_i^T \boldsymbol{\beta} + \beta_0)\right)$.
#
# ### Exercise 1: the sigmoid
#
# Write `sigmoid(z)` for a NumPy array `z` of any shape (or a single number), applied element by
# element. Take care with large $|z|$: `np.exp(1000.0)` is `inf`, and NumPy warns about the
# overflow. A formula that only ever exponentiates a number $\le 0$ avoids it. For $z \ge 0$ use
# $1 / (1 + e^{-z})$; for $z < 0$ multiply numerator and denominator by $e^{z}$ to get the equal
# $e^{z} / (1 + e^{z})$. With $e = \exp(-|z|)$ both cases need only $e$.

# %% [solution] id=linear-sigmoid
def sigmoid(z):
    """sigm(z) = 1 / (1 + exp(-z)), element-wise, without overflow for large |z|."""
    ### BEGIN SOLUTION
    z = np.asarray(z, dtype=float)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)
    ### END SOLUTION

# %% [test] id=linear-sigmoid-test points=2
import numpy as np

import sclecture.grading
import sclecture.linear
from sclecture.grading import assert_close, assert_shape, warnings_as_errors

record = sclecture.grading.recorder("linear-sigmoid-test")
assert_close(record("sigmoid(0)", lambda: sigmoid(0.0)), 0.5, name="sigmoid(0)")
z = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
s_z = record("sigmoid(z)", lambda: sigmoid(z))
assert_close(s_z, 1 / (1 + np.exp(-z)), name="sigmoid([-2, -0.5, 0, 0.5, 2])")
assert_close(record("sigmoid(-z)", lambda: sigmoid(-z)), 1 - s_z, name="sigmoid(-z) = 1 - sigmoid(z)")
assert_shape(record("sigmoid of a 3 x 4 array", lambda: sigmoid(np.zeros((3, 4)))), (3, 4), name="sigmoid of a 3 x 4 array")
try:
    big = record("sigmoid([-1000, 1000])", lambda: warnings_as_errors(sigmoid, np.array([-1000.0, 1000.0])))
except RuntimeWarning as w:
    raise AssertionError(f"sigmoid overflowed for z = +-1000 ({w}): exponentiate only -|z|") from None
assert_close(big, [0.0, 1.0], name="sigmoid([-1000, 1000])")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(11)
z = 8 * rng.normal(size=(7, 3))
assert_close(record("sigmoid on a random 7 x 3 array", lambda: sigmoid(z)), sclecture.linear.sigmoid(z), rtol=1e-9,
             name="sigmoid on a random 7 x 3 array")
z = np.array([-1e5, -800.0, -40.0, 40.0, 800.0, 1e5])
try:
    got = record("sigmoid for very large |z|", lambda: warnings_as_errors(sigmoid, z))
except RuntimeWarning as w:
    raise AssertionError(f"sigmoid overflowed for large |z| ({w})") from None
assert_close(got, sclecture.linear.sigmoid(z), rtol=1e-9, atol=1e-300, name="sigmoid for very large |z|")
assert_close(record("sigmoid of an integer array", lambda: sigmoid(np.arange(-3, 4))),
             sclecture.linear.sigmoid(np.arange(-3, 4)), rtol=1e-9, name="sigmoid of an integer array")
### END HIDDEN TESTS

# %% [markdown]
# The sigmoid turns a linear predictor into a probability. Where
# $\mathbf{x}^T\boldsymbol{\beta} + \beta_0 = 0$ the model is undecided ($p = 1/2$); a predictor of
# $\pm 4$ already means near certainty. A steeper (larger) $\boldsymbol{\beta}$ makes the change
# from "no" to "yes" more abrupt.

# %%
sigmoid_ = fallback(sigmoid, sclecture.linear.sigmoid)
z = np.linspace(-8, 8, 400)
fig, ax = plt.subplots(figsize=(4.5, 3))
for scale in [0.5, 1, 3]:
    ax.plot(z, sigmoid_(scale * z), label=rf"sigm$({scale} z)$")
ax.axhline(0.5, color="0.7", lw=0.8)
ax.set_xlabel("$z$")
ax.set_ylabel("probability $p$")
ax.legend(frameon=False)
plt.show()

# %% [markdown]
# ## 2. The likelihood of a data set
#
# Cells are modelled as independent, so the likelihood of the whole data set is a product over
# cells and its logarithm a sum. Writing $\boldsymbol{\theta} = (\boldsymbol{\beta}, \beta_0)$ and
# $\eta_i = \mathbf{x}_i^T\boldsymbol{\beta} + \beta_0$ for cell $i$'s linear predictor,
#
# $$\mathcal{L}(\boldsymbol{\theta}) = p(D \mid \boldsymbol{\theta})
# = \prod_{i=1}^n \text{Ber}\left(y_i \mid \text{sigm}(\eta_i)\right),
# \qquad
# \log \mathcal{L}(\boldsymbol{\theta}) = \sum_{i=1}^n \Big[ y_i \log p_i + (1 - y_i) \log(1 - p_i) \Big],
# \quad p_i = \text{sigm}(\eta_i).$$
#
# The logs of the sigmoid simplify nicely: $\log p_i = -\log(1 + e^{-\eta_i})$ and
# $\log(1 - p_i) = -\log(1 + e^{\eta_i})$. Since $\log(1 + e^{-\eta}) = \log(1 + e^{\eta}) - \eta$,
# each term becomes
#
# $$y_i \log p_i + (1 - y_i) \log(1 - p_i) = y_i \eta_i - \log\left(1 + e^{\eta_i}\right).$$
#
# ### Exercise 2: the log-likelihood
#
# Write `log_likelihood(X, y, beta, beta0)`: `X` is an $n \times k$ array (cells by features), `y`
# a vector of $n$ zeros and ones, `beta` a vector of $k$ weights and `beta0` a number. Return
# $\log \mathcal{L}$ as one number. It must stay finite for confident predictions: when
# $\eta_i = 800$, `sigmoid` returns exactly `1.0` and $\log(1 - p_i)$ would be $-\infty$. The
# second form above avoids that; `np.logaddexp(0, eta)` computes $\log(1 + e^{\eta})$ safely.

# %% [solution] id=linear-loglik
def log_likelihood(X, y, beta, beta0):
    """log L(beta, beta_0) = sum_i [y_i log p_i + (1 - y_i) log(1 - p_i)], p_i = sigm(x_i^T beta + beta_0)."""
    ### BEGIN SOLUTION
    eta = X @ beta + beta0
    return float(np.sum(y * eta - np.logaddexp(0, eta)))
    ### END SOLUTION

# %% [test] id=linear-loglik-test points=2
import numpy as np

import sclecture.grading
import sclecture.linear
from sclecture.grading import assert_close

record = sclecture.grading.recorder("linear-loglik-test")
X = np.zeros((4, 2))
y = np.array([0, 1, 1, 0])
assert_close(record("log L when every p_i = 1/2", lambda: log_likelihood(X, y, np.array([1.0, -1.0]), 0.0)), 4 * np.log(0.5),
             name="log L when every p_i = 1/2 (X = 0, beta_0 = 0)")
X = np.array([[1.0, 2.0]])
got_1 = record("log L of one cell with y = 1", lambda: log_likelihood(X, np.array([1]), np.array([0.5, -0.25]), 0.3))
got_0 = record("log L of one cell with y = 0", lambda: log_likelihood(X, np.array([0]), np.array([0.5, -0.25]), 0.3))
p = 1 / (1 + np.exp(-(1.0 * 0.5 + 2.0 * -0.25 + 0.3)))
assert_close(got_1, np.log(p), name="log L of one cell with y = 1")
assert_close(got_0, np.log(1 - p), name="log L of one cell with y = 0")
assert_close(record("log L of a confident mistake", lambda: log_likelihood(np.array([[800.0]]), np.array([0]), np.array([1.0]), 0.0)),
             -800.0, name="log L of a confident mistake (eta = 800, y = 0): must be -800, not -inf or nan")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(12)
X = rng.normal(size=(50, 4))
y = rng.integers(0, 2, size=50)
beta, beta0 = rng.normal(size=4), float(rng.normal())
assert_close(record("log_likelihood on random data", lambda: log_likelihood(X, y, beta, beta0)),
             float(sclecture.linear.log_likelihood(X, y, beta, beta0)), rtol=1e-8, name="log_likelihood on random data")
X = 100 * rng.normal(size=(30, 3))
y = rng.integers(0, 2, size=30)
assert_close(record("log_likelihood with very large |eta|", lambda: log_likelihood(X, y, beta[:3], beta0)),
             float(sclecture.linear.log_likelihood(X, y, beta[:3], beta0)), rtol=1e-8,
             name="log_likelihood with very large |x^T beta + beta_0|")
assert_close(record("log_likelihood with beta = 0", lambda: log_likelihood(X[:, :1], y, np.array([0.0]), -2.0)),
             float(sclecture.linear.log_likelihood(X[:, :1], y, np.array([0.0]), -2.0)), rtol=1e-8,
             name="log_likelihood with beta = 0 (only the intercept)")
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 3: the gradient
#
# To climb the log-likelihood we need its slope in every direction. Differentiating the term
# $y_i \eta_i - \log(1 + e^{\eta_i})$ with respect to $\eta_i$ gives
# $y_i - e^{\eta_i} / (1 + e^{\eta_i}) = y_i - p_i$, and $\partial \eta_i / \partial \boldsymbol{\beta} = \mathbf{x}_i$,
# $\partial \eta_i / \partial \beta_0 = 1$. Hence
#
# $$\frac{\partial \log \mathcal{L}}{\partial \boldsymbol{\beta}} = \sum_{i=1}^n (y_i - p_i)\, \mathbf{x}_i = X^T(\mathbf{y} - \mathbf{p}),
# \qquad
# \frac{\partial \log \mathcal{L}}{\partial \beta_0} = \sum_{i=1}^n (y_i - p_i).$$
#
# Each cell pulls the parameters by its residual $y_i - p_i$: a B cell that the model already gives
# $p_i = 0.99$ hardly pulls at all, a misclassified one pulls hard.
#
# Write `log_likelihood_gradient(X, y, beta, beta0)` returning the pair
# `(grad_beta, grad_beta0)`: a vector of length $k$ and a number. (You may call `sigmoid_`, defined after exercise 1: your
# `sigmoid`, or the reference while yours is unfinished.)

# %% [solution] id=linear-gradient
def log_likelihood_gradient(X, y, beta, beta0):
    """(d log L / d beta, d log L / d beta_0) = (X^T (y - p), sum_i (y_i - p_i))."""
    ### BEGIN SOLUTION
    residual = y - sigmoid_(X @ beta + beta0)
    return X.T @ residual, float(residual.sum())
    ### END SOLUTION

# %% [test] id=linear-gradient-test points=3
import numpy as np

import sclecture.grading
import sclecture.linear
from sclecture.grading import assert_close, assert_shape

record = sclecture.grading.recorder("linear-gradient-test")
X = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
y = np.array([1, 0, 1])
out = record("log_likelihood_gradient at beta = 0", lambda: log_likelihood_gradient(X, y, np.zeros(2), 0.0))
assert isinstance(out, tuple) and len(out) == 2, "return a pair (grad_beta, grad_beta0)"
grad_beta, grad_beta0 = out
assert_shape(grad_beta, (2,), name="grad_beta")
# at beta = 0, beta_0 = 0 every p_i = 1/2, so the residuals are y - 1/2 = (0.5, -0.5, 0.5)
assert_close(grad_beta, [1.0, -0.5], name="grad_beta at beta = 0")
assert_close(grad_beta0, 0.5, name="grad_beta0 at beta = 0")
# compare with finite differences of log L: (log L(theta + h e_j) - log L(theta - h e_j)) / 2h
rng = np.random.default_rng(0)
X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, size=20)
beta, beta0, h = rng.normal(size=3), 0.4, 1e-6
g_beta, g_beta0 = record("log_likelihood_gradient on random data", lambda: log_likelihood_gradient(X, y, beta, beta0))
log_l = sclecture.linear.log_likelihood
fd = [(log_l(X, y, beta + h * e, beta0) - log_l(X, y, beta - h * e, beta0)) / (2 * h) for e in np.eye(3)]
assert_close(g_beta, fd, rtol=1e-5, atol=1e-6, name="grad_beta against finite differences")
fd0 = (log_l(X, y, beta, beta0 + h) - log_l(X, y, beta, beta0 - h)) / (2 * h)
assert_close(g_beta0, fd0, rtol=1e-5, atol=1e-6, name="grad_beta0 against finite differences")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(13)
for n, k in [(40, 5), (1, 3), (25, 1)]:
    X, y = rng.normal(size=(n, k)), rng.integers(0, 2, size=n)
    beta, beta0 = 2 * rng.normal(size=k), float(rng.normal())
    got = record(f"log_likelihood_gradient (n={n}, k={k})", lambda: log_likelihood_gradient(X, y, beta, beta0))
    want = sclecture.linear.log_likelihood_gradient(X, y, beta, beta0)
    assert_close(got[0], want[0], rtol=1e-8, atol=1e-10, name=f"grad_beta on random data (n={n}, k={k})")
    assert_close(got[1], float(want[1]), rtol=1e-8, atol=1e-10, name=f"grad_beta0 on random data (n={n}, k={k})")
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Fitting by gradient ascent
#
# Setting the gradient to zero gives equations in $\boldsymbol{\beta}$ and $\beta_0$ that have no
# closed-form solution: the $p_i$ depend on the parameters through the sigmoid. Instead we climb
# step by step. From a starting point $\boldsymbol{\theta}^{(0)}$ we repeat
#
# $$\boldsymbol{\theta}^{(s+1)} := \boldsymbol{\theta}^{(s)} + \Delta \left. \frac{\partial \log \mathcal{L}}{\partial \boldsymbol{\theta}} \right|_{\boldsymbol{\theta}^{(s)}},$$
#
# moving a little uphill each time. The step size $\Delta$ matters: too small and the climb takes
# forever, too large and a step overshoots the top. Because $\log \mathcal{L}$ is a sum over cells,
# its gradient grows with $n$; we therefore write $\Delta = \texttt{lr} / n$, so that the same
# learning rate `lr` works for 100 cells or 100,000. The log-likelihood of logistic regression is
# concave, so there is a single hill and, when that hill has a top (a maximum exists), gradient
# ascent with a small enough step reaches it. (On data that a line separates perfectly, there is
# no top; we meet that case with many genes below.)
#
# ### Exercise 4: the fitting loop
#
# Write `gradient_ascent(X, y, lr, n_iter)`. Start from $\boldsymbol{\beta} = \mathbf{0}$ and
# $\beta_0 = 0$, then make `n_iter` updates with $\Delta = \texttt{lr}/n$. After every update append
# the new $\log \mathcal{L}$ (a float) to a list `history`. Return `(beta, beta0, history)`.
#
# Use `log_likelihood_gradient_` and `log_likelihood_`, defined in the next cell: they are your
# functions from above, or the reference versions while yours still raise `NotImplementedError`.

# %%
log_likelihood_ = fallback(log_likelihood, sclecture.linear.log_likelihood)
log_likelihood_gradient_ = fallback(log_likelihood_gradient, sclecture.linear.log_likelihood_gradient)

# %% [solution] id=linear-ascent
def gradient_ascent(X, y, lr, n_iter):
    """Maximise log L by n_iter full-batch steps theta <- theta + (lr / n) d log L / d theta."""
    ### BEGIN SOLUTION
    n, k = X.shape
    beta, beta0 = np.zeros(k), 0.0
    history = []
    for _ in range(n_iter):
        g_beta, g_beta0 = log_likelihood_gradient_(X, y, beta, beta0)
        beta = beta + lr / n * g_beta
        beta0 = beta0 + lr / n * g_beta0
        history.append(float(log_likelihood_(X, y, beta, beta0)))
    return beta, beta0, history
    ### END SOLUTION

# %% [test] id=linear-ascent-test points=3
import numpy as np

import sclecture.grading
import sclecture.linear
from sclecture.grading import assert_close, assert_shape

record = sclecture.grading.recorder("linear-ascent-test")
X = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]])
y = np.array([1, 0, 1, 0])
beta, beta0, history = record("gradient_ascent, one step", lambda: gradient_ascent(X, y, lr=0.8, n_iter=1))
# one step from zero: the residuals are y - 1/2, so beta = (0.8 / 4) X^T (y - 1/2)
assert_shape(beta, (2,), name="beta")
assert_close(beta, 0.2 * X.T @ (y - 0.5), name="beta after one step from beta = 0")
assert_close(beta0, 0.2 * np.sum(y - 0.5), atol=1e-12, name="beta0 after one step from beta_0 = 0")
assert isinstance(history, list) and len(history) == 1, f"history should be a list with one log L per update; got {history!r}"
beta, beta0, history = record("gradient_ascent, 50 steps", lambda: gradient_ascent(X, y, lr=0.5, n_iter=50))
assert len(history) == 50, f"history should hold 50 values after 50 updates, got {len(history)}"
assert all(b >= a - 1e-12 for a, b in zip(history, history[1:])), "log L should never decrease at this small step size"
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(14)
X = rng.normal(size=(60, 3))
y = (rng.random(60) < 1 / (1 + np.exp(-(X @ np.array([1.0, -2.0, 0.5]) + 0.3)))).astype(int)
for lr, n_iter in [(0.5, 40), (2.0, 5)]:
    beta, beta0, history = record(f"gradient_ascent (lr={lr}, n_iter={n_iter})", lambda: gradient_ascent(X, y, lr, n_iter))
    rb, rb0, rh = sclecture.linear.gradient_ascent(X, y, lr, n_iter)
    assert_close(beta, rb, rtol=1e-7, atol=1e-10, name=f"beta after {n_iter} steps with lr={lr}")
    assert_close(beta0, float(rb0), rtol=1e-7, atol=1e-10, name=f"beta0 after {n_iter} steps with lr={lr}")
    assert_close(list(history), rh, rtol=1e-7, name=f"history of log L ({n_iter} steps, lr={lr})")
beta, beta0, history = record("gradient_ascent with n_iter=0", lambda: gradient_ascent(X, y, 0.5, 0))
assert_close(beta, np.zeros(3), name="beta with n_iter=0 (the starting point)")
assert len(history) == 0, "history should be empty when n_iter=0"
### END HIDDEN TESTS

# %% [markdown]
# ### Gradient ascent on a toy problem
#
# Two overlapping groups of points in the plane stand in for cells measured on two genes.
# We fit them with your loop and watch $\log \mathcal{L}$ climb. The right panel shows the fitted
# model: the background colour is $p = \text{sigm}(\mathbf{x}^T\boldsymbol{\beta} + \beta_0)$ and the
# black line is where $p = 1/2$, i.e. $\mathbf{x}^T\boldsymbol{\beta} + \beta_0 = 0$. Because the
# predictor is linear in $\mathbf{x}$, this **decision boundary** is always a straight line (a
# hyperplane in more dimensions): logistic regression is a **linear classifier**.

# %%
gradient_ascent_ = fallback(gradient_ascent, sclecture.linear.gradient_ascent)
rng = np.random.default_rng(0)
n_per_class = 100
X_toy = np.vstack([rng.normal([-1.0, -0.5], 1.0, size=(n_per_class, 2)),
                   rng.normal([1.0, 1.0], 1.0, size=(n_per_class, 2))])
y_toy = np.repeat([0, 1], n_per_class)

beta_toy, beta0_toy, history_toy = gradient_ascent_(X_toy, y_toy, 1.0, 200)

fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
axes[0].plot(np.arange(1, len(history_toy) + 1), history_toy)
axes[0].set_xlabel("update $s$")
axes[0].set_ylabel(r"$\log \mathcal{L}(\theta^{(s)})$")
axes[0].set_title("gradient ascent")
sclecture.linear.plot_decision_boundary(X_toy, y_toy, beta_toy, beta0_toy, ax=axes[1], title="fitted model")
plt.tight_layout()
plt.show()

# %% [markdown]
# After 200 updates the parameters agree with those of `sclecture.linear.LogisticRegression`
# run to convergence, and the training accuracy (the fraction of points on the correct side of
# the line) is printed too:

# %%
# NBVAL_CHECK_OUTPUT
converged = sclecture.linear.LogisticRegression(lr=1.0, n_iter=5000, tol=1e-8).fit(X_toy, y_toy)
accuracy_toy = np.mean((X_toy @ beta_toy + beta0_toy >= 0) == y_toy)
print(f"log L after 200 updates:  {history_toy[-1]:.3f}")
print(f"your loop:   beta = ({beta_toy[0]:.3f}, {beta_toy[1]:.3f}), beta_0 = {beta0_toy:.3f}")
print(f"converged:   beta = ({converged.coef_[0]:.3f}, {converged.coef_[1]:.3f}), beta_0 = {converged.intercept_:.3f}")
print(f"training accuracy: {accuracy_toy:.3f}")

# %% [markdown]
# ## 4. The neural-network view: the perceptron
#
# Machine learning uses its own words for the same model. The function that turns the linear
# predictor into an output is the **activation function** $\phi(\cdot)$, and logistic regression
# becomes
#
# $$y = f(\mathbf{x}) = \phi(\boldsymbol{\beta}^T\mathbf{x} + \beta_0), \qquad \phi = \text{sigm}.$$
#
# Rosenblatt's **perceptron**, the first neural network, is the same formula with a hard step as
# the activation:
#
# $$y = f(\mathbf{x}) = \text{sign}(\boldsymbol{\beta}^T\mathbf{x} + \beta_0), \qquad
# \text{sign}(z) = \begin{cases} 1 & z \ge 0 \\ 0 & z < 0. \end{cases}$$
#
# Drawn as a network, both are a single **unit** (a node). Each input $x_j$ reaches it along an
# edge weighted by $\beta_j$; the bias $\beta_0$ is the weight of an extra input that is always $1$.
# The unit adds up the weighted inputs, $\boldsymbol{\beta}^T\mathbf{x} + \beta_0$, and applies its
# activation $\phi$. Here with three inputs (three genes, say):

# %%
sclecture.diagrams.mlp_graph(layer_sizes=(3, 1))
plt.show()

# %% [markdown]
# The step has no useful derivative (it is flat everywhere except at 0), so the perceptron is not
# trained by gradient ascent on a likelihood but by a simple rule. Visit the cells one at a time;
# for cell $(\mathbf{x}_i, y_i)$ predict $\hat y_i = \text{sign}(\boldsymbol{\beta}^T\mathbf{x}_i + \beta_0)$ and update
#
# $$\boldsymbol{\beta} \leftarrow \boldsymbol{\beta} + (y_i - \hat y_i)\, \mathbf{x}_i, \qquad \beta_0 \leftarrow \beta_0 + (y_i - \hat y_i).$$
#
# A correct prediction changes nothing ($y_i - \hat y_i = 0$). A missed one ($y_i = 1$, $\hat y_i = 0$)
# adds $\mathbf{x}_i$, which raises $\boldsymbol{\beta}^T\mathbf{x}_i + \beta_0$ for this cell by
# $\|\mathbf{x}_i\|^2 + 1$; a false alarm subtracts it. Compare the logistic regression gradient
# $\sum_i (y_i - p_i)\mathbf{x}_i$: the same shape, with the hard prediction $\hat y_i$ in place of $p_i$.
#
# Today the word perceptron is also used for a unit $\phi(\boldsymbol{\beta}^T\mathbf{x} + \beta_0)$
# with a smooth activation, which is the building block of the multilayer perceptron of lesson 02.

# %%
fig, ax = plt.subplots(figsize=(4.5, 3))
z = np.linspace(-6, 6, 601)
ax.plot(z, sclecture.linear.sigmoid(z), label=r"$\phi = \mathrm{sigm}$ (logistic regression)")
ax.plot(z, sclecture.linear.step(z), label=r"$\phi = \mathrm{sign}$ (perceptron)")
ax.set_xlabel(r"$\beta^T x + \beta_0$")
ax.set_ylabel(r"$\phi$")
ax.legend(frameon=False, fontsize=8)
plt.show()

# %% [markdown]
# ### Exercise 5: the perceptron update
#
# Write `perceptron_update(x, y, beta, beta0)` for one cell: `x` is a vector of $k$ features and
# `y` its label (0 or 1). Predict with the step activation (remember: $\text{sign}(0) = 1$) and
# return the updated pair `(beta, beta0)`.

# %% [solution] id=linear-perceptron
def perceptron_update(x, y, beta, beta0):
    """One perceptron step: y_hat = sign(beta^T x + beta_0); beta += (y - y_hat) x; beta_0 += (y - y_hat)."""
    ### BEGIN SOLUTION
    y_hat = 1.0 if x @ beta + beta0 >= 0 else 0.0
    return beta + (y - y_hat) * x, beta0 + (y - y_hat)
    ### END SOLUTION

# %% [test] id=linear-perceptron-test points=2
import numpy as np

import sclecture.grading
import sclecture.linear
from sclecture.grading import assert_close

record = sclecture.grading.recorder("linear-perceptron-test")
beta, beta0 = np.array([1.0, -1.0]), 0.0
b, b0 = record("a missed positive", lambda: perceptron_update(np.array([0.0, 1.0]), 1, beta.copy(), beta0))
assert_close(b, [1.0, 0.0], name="beta after a missed positive (y=1, predicted 0): beta + x")
assert_close(b0, 1.0, name="beta0 after a missed positive: beta_0 + 1")
b, b0 = record("a false alarm", lambda: perceptron_update(np.array([2.0, 1.0]), 0, beta.copy(), beta0))
assert_close(b, [-1.0, -2.0], name="beta after a false alarm (y=0, predicted 1): beta - x")
assert_close(b0, -1.0, name="beta0 after a false alarm: beta_0 - 1")
b, b0 = record("a correct prediction", lambda: perceptron_update(np.array([2.0, 1.0]), 1, beta.copy(), beta0))
assert_close(b, [1.0, -1.0], name="beta after a correct prediction (unchanged)")
assert_close(b0, 0.0, name="beta0 after a correct prediction (unchanged)")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(15)
for trial in range(20):
    k = int(rng.integers(1, 6))
    x, beta, beta0, y = rng.normal(size=k), rng.normal(size=k), float(rng.normal()), int(rng.integers(0, 2))
    got = record(f"perceptron_update, random case {trial}", lambda: perceptron_update(x.copy(), y, beta.copy(), beta0))
    want = sclecture.linear.perceptron_update(x.copy(), y, beta.copy(), beta0)
    assert_close(got[0], want[0], rtol=1e-12, name=f"beta after an update (random case {trial})")
    assert_close(got[1], want[1], rtol=1e-12, name=f"beta0 after an update (random case {trial})")
# on the boundary, beta^T x + beta_0 = 0 predicts 1 (the lecture's sign(0) = 1)
got = record("on the boundary with y = 0", lambda: perceptron_update(np.array([1.0, 1.0]), 0, np.array([1.0, -1.0]), 0.0))
assert_close(got[0], [0.0, -2.0], name="beta for a cell exactly on the boundary with y = 0 (sign(0) = 1)")
assert_close(got[1], -1.0, name="beta0 for a cell exactly on the boundary with y = 0")
got = record("on the boundary with y = 1", lambda: perceptron_update(np.array([1.0, 1.0]), 1, np.array([1.0, -1.0]), 0.0))
assert_close(got[0], [1.0, -1.0], name="beta for a cell exactly on the boundary with y = 1 (no change)")
### END HIDDEN TESTS

# %% [markdown]
# ### Training a perceptron, and where it fails
#
# The loop below sweeps over the cells in a random order, epoch after epoch, applying your update
# to each, and stops after the first epoch without a mistake. We run it on two data sets:
#
# * 100 points labelled by the side of a line they fall on, with an empty band along the line:
#   a line can separate the classes **(linearly separable)**;
# * **XOR**: four clusters at the corners of a square, where opposite corners share a label.
#   This is the pattern "gene A or gene B, but not both".

# %%
perceptron_update_ = fallback(perceptron_update, sclecture.linear.perceptron_update)


def train_perceptron(X, y, max_epochs, seed=0):
    """Sweep over the cells in random order until an epoch makes no mistake (or max_epochs)."""
    rng = np.random.default_rng(seed)
    beta, beta0 = np.zeros(X.shape[1]), 0.0
    mistakes = []
    for epoch in range(max_epochs):
        n_wrong = 0
        for i in rng.permutation(len(y)):
            n_wrong += int((X[i] @ beta + beta0 >= 0) != y[i])
            beta, beta0 = perceptron_update_(X[i], y[i], beta, beta0)
        mistakes.append(n_wrong)
        if n_wrong == 0:
            break
    return beta, beta0, mistakes


rng = np.random.default_rng(2)
X_sep = rng.uniform(-2, 2, size=(160, 2))
eta_sep = 1.0 * X_sep[:, 0] - 0.8 * X_sep[:, 1] + 0.3
gap = np.abs(eta_sep) > 0.3  # leave an empty band around the line 1.0 x_1 - 0.8 x_2 + 0.3 = 0
X_sep, y_sep = X_sep[gap][:100], (eta_sep[gap][:100] > 0).astype(int)
corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
X_xor = np.repeat(corners, 25, axis=0) + 0.12 * rng.normal(size=(100, 2))
y_xor = np.repeat([0, 1, 1, 0], 25)

max_epochs = sclecture.training.quick_epochs(50, 3)
beta_sep, beta0_sep, mistakes_sep = train_perceptron(X_sep, y_sep, max_epochs)
beta_xor, beta0_xor, mistakes_xor = train_perceptron(X_xor, y_xor, max_epochs)

fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
sclecture.linear.plot_decision_boundary(X_sep, y_sep, beta_sep, beta0_sep, ax=axes[0], proba=False, title="separable")
sclecture.linear.plot_decision_boundary(X_xor, y_xor, beta_xor, beta0_xor, ax=axes[1], proba=False, title="XOR, after the last epoch")
axes[2].plot(np.arange(1, len(mistakes_sep) + 1), mistakes_sep, "o-", label="separable")
axes[2].plot(np.arange(1, len(mistakes_xor) + 1), mistakes_xor, "o-", ms=3, label="XOR")
axes[2].set_xlabel("epoch")
axes[2].set_ylabel("mistakes (updates) in the epoch")
axes[2].legend(frameon=False)
plt.tight_layout()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
def accuracy(X, y, beta, beta0):
    return np.mean((X @ beta + beta0 >= 0) == y)


print(f"separable: {sum(mistakes_sep)} updates in {len(mistakes_sep)} epochs, "
      f"converged: {mistakes_sep[-1] == 0}, accuracy {accuracy(X_sep, y_sep, beta_sep, beta0_sep):.3f}")
print(f"XOR:       {sum(mistakes_xor)} updates in {len(mistakes_xor)} epochs, "
      f"converged: {mistakes_xor[-1] == 0}, accuracy {accuracy(X_xor, y_xor, beta_xor, beta0_xor):.3f}")
xor_logistic = sclecture.linear.LogisticRegression(lr=1.0, n_iter=2000).fit(X_xor, y_xor)
print(f"XOR with logistic regression: training accuracy {xor_logistic.score(X_xor, y_xor):.3f}")

# %% [markdown]
# On separable data the perceptron stops after a handful of epochs with every cell on the correct
# side. (A classic theorem guarantees this: if some line separates the classes with a margin, the
# rule makes only a finite number of updates.) On XOR it keeps making mistakes epoch after epoch
# and its line keeps jumping from one place to another; wherever the last epoch leaves it (here
# outside the square, so that every point lands on one side), about half of the points are wrong.
# Logistic regression, fitted by gradient ascent, does no better.
#
# ### Written answer: why does the perceptron fail on XOR?
#
# In a few sentences: why can no choice of $(\boldsymbol{\beta}, \beta_0)$ classify all four XOR
# corners correctly, and what does that do to the perceptron's learning rule? (Hint: write down
# the four inequalities that a perfect $\boldsymbol{\beta}, \beta_0$ would have to satisfy for the
# corners $(0,0), (0,1), (1,0), (1,1)$ and add them up in pairs.) What kind of model could solve
# the problem?

# %% [answer] id=linear-xor points=2
# A perceptron, like logistic regression, predicts 1 on one side of the straight line
# $\boldsymbol{\beta}^T\mathbf{x} + \beta_0 = 0$ and 0 on the other: it can only separate classes that a
# line (a hyperplane) separates. XOR is not linearly separable. A perfect line would need
# $\beta_0 < 0$ for $(0,0)$, $\beta_2 + \beta_0 \ge 0$ for $(0,1)$, $\beta_1 + \beta_0 \ge 0$ for $(1,0)$
# and $\beta_1 + \beta_2 + \beta_0 < 0$ for $(1,1)$. Adding the two middle inequalities gives
# $\beta_1 + \beta_2 + 2\beta_0 \ge 0$, adding the outer two gives $\beta_1 + \beta_2 + 2\beta_0 < 0$: a
# contradiction, so no $(\boldsymbol{\beta}, \beta_0)$ exists.
#
# The learning rule only stops when an epoch has no mistakes. On XOR every line misclassifies at
# least one corner (at best 3 of 4 are right), so every epoch triggers updates, each update that fixes
# one cell breaks another, and the parameters cycle forever without converging (the convergence
# theorem needs separable data). A model with a hidden layer, such as a multilayer perceptron that
# combines two linear units (e.g. "x_1 OR x_2" and "x_1 AND x_2"), or a linear model on extra
# features such as $x_1 x_2$, can represent XOR.

# %% [markdown]
# ## 5. Real cells: B cells against everything else
#
# Now the same model on real data. `pbmc3k` holds 2,700 peripheral blood mononuclear cells
# measured by 10x Genomics; 2,638 of them carry a cell-type label from the Seurat tutorial. We ask
# a binary question: **is this cell a B cell?** ($y_i = 1$ for the 344 B cells, $y_i = 0$ for all
# other labelled cells.)
#
# The features are log-normalised counts, $\log(1 + 10^4 \cdot \text{count} / \text{total count of the cell})$.
# We keep 30% of the cells aside as a **held-out test set**: a model must be judged on cells it did
# not see while fitting. Finally we standardise each gene (subtract its mean, divide by its
# standard deviation, both computed on the training cells), so that all genes live on the same
# scale and one learning rate suits them all.

# %%
from sklearn.model_selection import train_test_split

adata = sclecture.datasets.pbmc3k()
adata = adata[adata.obs["cell_type"].notna()].copy()
expression = sclecture.preprocessing.log1p_normalize(adata)  # cells x genes, sparse
y_cells = (adata.obs["cell_type"] == "B").to_numpy().astype(int)
train, test = train_test_split(np.arange(adata.n_obs), test_size=0.3, stratify=y_cells, random_state=0)


def standardised(genes):
    """Expression of the given genes, standardised with the training cells' mean and sd."""
    X = expression[:, adata.var_names.get_indexer(genes)].toarray().astype(float)
    mean, sd = X[train].mean(axis=0), X[train].std(axis=0)
    return (X - mean) / np.where(sd > 0, sd, 1.0)

# %% [markdown]
# The accuracy of a classifier only means something next to a baseline. B cells are 13% of the
# cells, so a "model" that always answers "not a B cell" is already right 87% of the time:

# %%
# NBVAL_CHECK_OUTPUT
print(f"{adata.n_obs} labelled cells, {y_cells.sum()} B cells; {len(train)} for training, {len(test)} held out")
print(f"baseline held-out accuracy (always 'not B'): {np.mean(y_cells[test] == 0):.3f}")

# %% [markdown]
# ### Two genes
#
# Start with two genes, so the model can be drawn: *LYZ* (lysozyme, high in monocytes) and
# *HLA-DRA* (an MHC class II gene, high in B cells, monocytes and dendritic cells). B cells should
# sit where *HLA-DRA* is high and *LYZ* low. We fit with the course's estimator
# `sclecture.linear.LogisticRegression`, which runs the same gradient ascent as your loop (on a GPU
# when one is available).

# %%
two_genes = ["LYZ", "HLA-DRA"]
X_two = standardised(two_genes)
model_two = sclecture.linear.LogisticRegression(lr=1.0, n_iter=sclecture.training.quick_epochs(300, 3))
model_two.fit(X_two[train], y_cells[train])

fig, ax = plt.subplots(figsize=(4.8, 4))
sclecture.linear.plot_decision_boundary(X_two[test], y_cells[test], model_two.coef_, model_two.intercept_, ax=ax,
                                        labels=("other cells", "B cells"), s=8, title="held-out cells")
ax.set_xlabel("LYZ (standardised)")
ax.set_ylabel("HLA-DRA (standardised)")
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print(f"two genes: beta = ({model_two.coef_[0]:.3f}, {model_two.coef_[1]:.3f}), beta_0 = {model_two.intercept_:.3f}")
print(f"two genes: held-out accuracy {model_two.score(X_two[test], y_cells[test]):.3f}")

# %% [markdown]
# ### Many genes
#
# Now let the model look at the 500 most variable genes at once. With 500 weights for 1,846
# training cells, a hyperplane separates the training cells perfectly (try `l2=0.0` and many
# updates: the training accuracy reaches 1), and then
# $\log \mathcal{L}$ has no maximum: pushing $\|\boldsymbol{\beta}\|$ towards infinity keeps making
# every $p_i$ more confident. A small penalty fixes this: we maximise
# $\log \mathcal{L}(\boldsymbol{\theta}) - \frac{\lambda}{2}\|\boldsymbol{\beta}\|^2$ (`l2=` $\lambda$),
# whose gradient adds $-\lambda\boldsymbol{\beta}$ to the one you derived. The step size is smaller
# here: with many correlated genes, the log-likelihood curves more sharply.

# %%
hvg = sclecture.preprocessing.highly_variable_genes(adata, n_top=500)
many_genes = adata.var_names[hvg]
X_many = standardised(many_genes)
model_many = sclecture.linear.LogisticRegression(lr=0.08, n_iter=sclecture.training.quick_epochs(300, 3), l2=1.0)
model_many.fit(X_many[train], y_cells[train])

top = np.argsort(-np.abs(model_many.coef_))[:15][::-1]
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
axes[0].plot(np.arange(1, model_many.n_iter_ + 1), model_many.log_likelihood_)
axes[0].set_xlabel("update $s$")
axes[0].set_ylabel(r"$\log \mathcal{L}$ (training cells)")
axes[0].set_title("gradient ascent, 500 genes")
axes[1].barh(np.asarray(many_genes[top]), model_many.coef_[top],
             color=np.where(model_many.coef_[top] > 0, "tab:red", "tab:blue"))
axes[1].set_xlabel(r"coefficient $\beta_j$ (standardised gene)")
axes[1].set_title(r"the 15 largest $|\beta_j|$")
plt.tight_layout()
plt.show()

# %% [markdown]
# The genes with the largest positive weights are the textbook B-cell markers (*CD79A*, *CD79B*,
# *MS4A1*, MHC class II genes), found without anyone telling the model about them. A large positive
# $\beta_j$ means: the higher this gene, the higher the odds of "B cell", with the other genes held
# fixed. Negative weights belong to genes of the other cell types (T cells, monocytes): they
# lower the odds. Correlated genes share the credit, so single coefficients should be read with care.
#
# **Summary.** Logistic regression is a Bernoulli GLM with the logit link; its log-likelihood is
# concave and fitted by gradient ascent, because no closed form exists. Seen as a neural unit it is
# a linear classifier $\phi(\boldsymbol{\beta}^T\mathbf{x} + \beta_0)$; the perceptron is the same unit
# with a step activation. Any such unit draws a single straight boundary, which suffices for
# "B cell or not" from gene expression but not for XOR. Lesson 02 stacks these units into layers:
# the multilayer perceptron.
#
# The last cell sums up the model on 500 genes; its final line is the number that counts, the
# accuracy on the held-out cells.

# %%
# NBVAL_CHECK_OUTPUT
print("largest positive coefficients:", ", ".join(many_genes[np.argsort(-model_many.coef_)[:5]]))
print(f"log L after {model_many.n_iter_} updates (training cells): {model_many.log_likelihood_[-1]:.3f}")
print(f"training accuracy: {model_many.score(X_many[train], y_cells[train]):.3f}")
print(f"held-out accuracy, B cells vs rest, {len(many_genes)} genes: {model_many.score(X_many[test], y_cells[test]):.3f}")

# %% [markdown]
# ## Going further
#
# Exercises to try on your own; they are not graded.
#
# 1. **The step size.** Run `gradient_ascent_(X_toy, y_toy, lr, 200)` with `lr` = 0.1, 1, 10 and 50
#    and plot the four histories of $\log\mathcal{L}$ together. Which climb steadily, which slowly,
#    and which jump about? What happens to `beta` when the step is too large?
# 2. **Separable data have no maximum.** Fit `gradient_ascent_` to the separable points `X_sep`,
#    `y_sep` of section 4 with 100, 1,000 and 10,000 updates and print $\|\boldsymbol{\beta}\|$ and
#    $\log\mathcal{L}$ each time. Explain what you see, then refit with
#    `sclecture.linear.LogisticRegression(l2=1.0)` and compare.
# 3. **XOR with one more feature.** Add the product $x_1 x_2$ as a third column of `X_xor` and fit
#    `sclecture.linear.LogisticRegression` again. What is the training accuracy now? Draw the
#    boundary $\beta_1 x_1 + \beta_2 x_2 + \beta_3 x_1 x_2 + \beta_0 = 0$ in the plane of $x_1, x_2$:
#    is it still a straight line? (Lesson 02 lets a network find such features itself.)
# 4. **Another cell type.** Ask "is this an NK cell?" (`"NK"`) or "a CD14+ monocyte?"
#    (`"CD14+ Mono"`) with the 500 genes, keeping the training and held-out split. Compare the
#    held-out accuracy with that question's baseline, and the genes with the largest positive
#    weights with the known markers (*GNLY*, *NKG7* for NK cells; *CD14*, *LYZ*, *S100A8* for
#    monocytes).
# 5. **Noisy labels.** Flip the labels of five points of `y_sep` and train the perceptron again.
#    Does it still stop? Compare its final accuracy with that of logistic regression on the same
#    points.
