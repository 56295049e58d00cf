# %% [markdown]
# # Lesson 04: factor analysis and probabilistic PCA
#
# {{colab_badge}}
#
# Principal component analysis (PCA) finds the directions along which cells vary most, but it says
# nothing about how likely a cell is, or how sure we can be of its coordinates. This lesson turns
# dimension reduction into a **generative model**: a recipe that produces cells from a few hidden
# numbers. Writing the recipe down gives us a likelihood, and with it a way to fit the model, to
# compare models on cells they have not seen, and to ask how uncertain a cell's position is.
#
# 1. **Factor analysis (FA).** A latent vector $\mathbf{z}$ generates an observation $\mathbf{x}$;
#    sampling from the model, and the marginal distribution $p(\mathbf{x})$ once $\mathbf{z}$ is
#    integrated out.
# 2. **The likelihood** of a data set under a Gaussian, computed stably with a Cholesky factor.
# 3. **Probabilistic PCA (PPCA),** the special case with one noise variance $\sigma^2$: its
#    maximum-likelihood parameters follow from an eigendecomposition.
# 4. **The posterior** $p(\mathbf{z} \mid \mathbf{x})$: where a cell sits in the latent space, and how
#    sure we are; what happens when $\sigma^2 \to 0$.
# 5. **Factor analysis fitted by EM,** when no formula gives the answer.
# 6. **Real cells:** `pbmc3k` and the Zeisel mouse cortex. The eigenvalue spectrum, the held-out
#    log-likelihood as the latent dimension grows, latent spaces coloured by cell type, and which
#    genes FA considers noisy.
#
# You will write five short functions (each followed by a test cell) and two written answers: a
# derivation of the PPCA posterior, and what becomes of it as the noise vanishes. The reference
# versions live in `sclecture.factor`, together with the estimators `PPCA` and `FactorAnalysis`
# that the later parts use. The references in `sclecture` may be read but not called in an
# exercise: grading gives no points for a call.
#
# **Time:** about 2 hours: 50 minutes of reading and running the cells, 70 minutes for the
# exercises and the written answers. Running the whole notebook takes under a minute.

# %% [colab-setup]

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.linalg

import sclecture
import sclecture.diagrams
import sclecture.factor
from sclecture.grading import fallback

sclecture.set_seed(0)

# %% [markdown]
# ## 1. Factor analysis: a model that generates cells
#
# A cell is a vector $\mathbf{x} \in \mathbb{R}^D$: its (log-normalised) expression of $D$ genes. We
# suppose that behind it sits a much shorter vector $\mathbf{z} \in \mathbb{R}^L$, $L \ll D$, which
# we never observe: think of a handful of programmes (cell identity, cell cycle, stress) whose
# activities set the expression of all genes at once. The **factor analysis** model says
#
# $$\begin{aligned}
# p(\mathbf{z}) &= \mathcal{N}(\mathbf{z} \mid \mathbf{0}, \mathbf{I}), \\
# p(\mathbf{x} \mid \mathbf{z}) &= \mathcal{N}(\mathbf{x} \mid \mathbf{W}\mathbf{z} + \boldsymbol{\mu}, \boldsymbol{\Psi}).
# \end{aligned}$$
#
# * $\mathbf{W}$ is a $D \times L$ matrix, the **factor loadings**: column $l$ says how strongly each
#   gene responds to latent factor $l$.
# * $\boldsymbol{\mu} \in \mathbb{R}^D$ is the average expression.
# * $\boldsymbol{\Psi} = \text{diag}(\psi_1, \dots, \psi_D)$ is **diagonal**: given $\mathbf{z}$, the
#   genes vary independently, each with its own noise variance $\psi_d$. Everything genes have in
#   common must therefore pass through $\mathbf{z}$.
#
# Read as a recipe, the model generates a cell in two steps: first draw the latent
# $\mathbf{z} \sim \mathcal{N}(\mathbf{0}, \mathbf{I})$, then draw $\mathbf{x}$ around
# $\mathbf{W}\mathbf{z} + \boldsymbol{\mu}$. Because $\boldsymbol{\Psi}$ is diagonal, the second step is
# $\mathbf{x} = \mathbf{W}\mathbf{z} + \boldsymbol{\mu} + \boldsymbol{\epsilon}$ with independent
# $\epsilon_d \sim \mathcal{N}(0, \psi_d)$.
#
# The diagram below draws the model as a *graphical model*: one circle per random vector, shaded
# for what we observe ($\mathbf{x}$) and white for what we do not ($\mathbf{z}$, $\boldsymbol{\epsilon}$),
# an arrow wherever one quantity enters the recipe of another, and dots for the parameters
# $\mathbf{W}$, $\boldsymbol{\mu}$, $\boldsymbol{\Psi}$ that all cells share. The box (a *plate*) says that
# its contents are repeated, independently, for every cell (the diagram indexes cells by $n$).
# The lecture's own figure, the process for $L = 1$ and $D = 2$, follows after Exercise 1.

# %%
sclecture.diagrams.fa_generative()
plt.show()

# %% [markdown]
# **Exercise 1.** Write `sample_fa(W, mu, psi, n_samples, rng)`, which draws `n_samples` cells this
# way and returns them together with the latents that produced them: `(X, Z)` with `X` of shape
# `(n_samples, D)` and `Z` of shape `(n_samples, L)`, one cell per row. `psi` is the vector
# $(\psi_1, \dots, \psi_D)$ and `rng` a NumPy random generator. Draw the latents first with
# `rng.standard_normal((n_samples, L))`, then the noise with `rng.standard_normal((n_samples, D))`
# (scaled by $\sqrt{\psi_d}$), and use no other source of randomness.

# %% [solution] id=fa-sample
def sample_fa(W, mu, psi, n_samples, rng):
    """Draw z ~ N(0, I), then x ~ N(W z + mu, diag(psi)); return (X, Z), one sample per row."""
    ### BEGIN SOLUTION
    D, L = W.shape
    Z = rng.standard_normal((n_samples, L))
    eps = rng.standard_normal((n_samples, D)) * np.sqrt(psi)
    X = Z @ W.T + mu + eps
    return X, Z
    ### END SOLUTION

# %% [test] id=fa-sample-test points=2
import numpy as np

import sclecture.factor
import sclecture.grading
from sclecture.grading import assert_close, assert_shape

record = sclecture.grading.recorder("fa-sample-test")
W_t = np.array([[1.0], [2.0], [0.0]])
X_t, Z_t = record("sample_fa with psi = 0", lambda: sample_fa(W_t, np.array([1.0, -1.0, 3.0]), np.zeros(3), 5, np.random.default_rng(0)))
assert_shape(X_t, (5, 3), name="X (5 samples of D = 3 genes)")
assert_shape(Z_t, (5, 1), name="Z (5 latents of L = 1 dimension)")
# with no noise, x = W z + mu exactly
assert_close(X_t, Z_t @ W_t.T + np.array([1.0, -1.0, 3.0]), name="X when psi = 0 (should equal Z W^T + mu)")
X_a, _ = record("sample_fa, seed 7", lambda: sample_fa(W_t, np.zeros(3), np.ones(3), 4, np.random.default_rng(7)))
X_b, _ = record("sample_fa, seed 7 again", lambda: sample_fa(W_t, np.zeros(3), np.ones(3), 4, np.random.default_rng(7)))
assert_close(X_a, X_b, name="two draws from generators with the same seed (use only `rng` for randomness)")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(123)
D, L, n = 4, 2, 100_000
W = rng.normal(size=(D, L))
mu = rng.normal(size=D)
psi = rng.uniform(0.2, 1.5, size=D)
X, Z = record("sample_fa, 100000 samples", lambda: sample_fa(W, mu, psi, n, np.random.default_rng(5)))
assert_shape(X, (n, D), name="X")
assert_shape(Z, (n, L), name="Z")
# the latents are standard normal
assert_close(Z.mean(0), np.zeros(L), atol=0.02, rtol=0, name="mean of the sampled z (should be 0)")
assert_close(np.cov(Z.T), np.eye(L), atol=0.02, rtol=0, name="covariance of the sampled z (should be I)")
# the noise x - W z - mu has variance psi and is independent of z
eps = X - Z @ W.T - mu
assert_close(eps.mean(0), np.zeros(D), atol=0.02, rtol=0, name="mean of x - W z - mu (should be 0)")
assert_close(eps.var(0), psi, rtol=0.03, name="variance of x - W z - mu (should be psi, not its square root)")
assert_close(eps.T @ Z / n, np.zeros((D, L)), atol=0.02, rtol=0, name="correlation of the noise with z (should be 0)")
# following the prescribed order of draws gives exactly the reference samples
X_s, Z_s = record("sample_fa, seed 9", lambda: sample_fa(W, mu, psi, 50, np.random.default_rng(9)))
X_ref, Z_ref = sclecture.factor.sample_fa(W, mu, psi, 50, np.random.default_rng(9))
assert_close(Z_s, Z_ref, rtol=1e-12, name="Z: draw the latents first, with rng.standard_normal((n_samples, L))")
assert_close(X_s, X_ref, rtol=1e-12, name="X: draw the noise second, with rng.standard_normal((n_samples, D)) * sqrt(psi)")
### END HIDDEN TESTS

# %% [markdown]
# The recipe is easiest to see with $L = 1$ latent dimension and $D = 2$ genes, where the noise has
# the same variance in both genes. The latent $z$ picks a point $\boldsymbol{\mu} + z\mathbf{w}$ on
# the line through $\boldsymbol{\mu}$ along $\mathbf{w}$; the noise then scatters the cell in a round
# cloud around that point. Sliding the round cloud along the line (as $z$ varies) paints an
# elongated, elliptical cloud: its long axis is $\mathbf{w}$. Colours show the $z$ each cell came from.

# %%
sample_fa_ = fallback(sample_fa, sclecture.factor.sample_fa)

w = np.array([[2.0], [1.0]])
mu_2d = np.array([1.0, 1.0])
X_2d, Z_2d = sample_fa_(w, mu_2d, np.full(2, 0.1), 600, np.random.default_rng(0))

fig, ax = plt.subplots(figsize=(4.5, 3.5))
sc = ax.scatter(X_2d[:, 0], X_2d[:, 1], c=Z_2d[:, 0], cmap="coolwarm", s=6)
t = np.linspace(-3, 3, 2)
ax.plot(mu_2d[0] + t * w[0, 0], mu_2d[1] + t * w[1, 0], "k-", lw=1, label=r"$\mu + z\,\mathbf{w}$")
ax.plot(*mu_2d, "k*", ms=10, label=r"$\mu$")
ax.set_xlabel("gene 1")
ax.set_ylabel("gene 2")
ax.set_aspect("equal")
ax.legend(frameon=False, loc="upper left")
plt.colorbar(sc, ax=ax, label="z")
plt.show()

# %% [markdown]
# ## 2. The marginal distribution of a cell
#
# We never see $\mathbf{z}$, so what the data can tell us about is the distribution of $\mathbf{x}$
# alone. It comes from integrating the latent out of the joint
# $p(\mathbf{x}, \mathbf{z}) = p(\mathbf{x} \mid \mathbf{z})\, p(\mathbf{z})$:
#
# $$p(\mathbf{x}) = \int \mathcal{N}(\mathbf{x} \mid \mathbf{W}\mathbf{z} + \boldsymbol{\mu}, \boldsymbol{\Psi})\,
# \mathcal{N}(\mathbf{z} \mid \mathbf{0}, \mathbf{I})\, d\mathbf{z}
# = \mathcal{N}(\mathbf{x} \mid \boldsymbol{\mu}, \mathbf{W}\mathbf{W}^T + \boldsymbol{\Psi}).$$
#
# No integral needs to be computed by hand: $\mathbf{x} = \mathbf{W}\mathbf{z} + \boldsymbol{\mu} +
# \boldsymbol{\epsilon}$ is a linear function of independent Gaussians, hence Gaussian, with mean
# $\boldsymbol{\mu}$ (both $\mathbf{z}$ and $\boldsymbol{\epsilon}$ have mean zero) and covariance
# $\mathbf{W}\,\text{Cov}[\mathbf{z}]\,\mathbf{W}^T + \text{Cov}[\boldsymbol{\epsilon}] = \mathbf{W}\mathbf{W}^T + \boldsymbol{\Psi}$.
#
# This is the heart of the model: a $D \times D$ covariance with $D(D+1)/2$ free entries is described
# by only $DL + D$ numbers. The low-rank part $\mathbf{W}\mathbf{W}^T$ carries all correlations between
# genes; $\boldsymbol{\Psi}$ adds each gene's private noise on the diagonal.
#
# **Exercise 2.** Write `marginal_covariance(W, psi)` returning the $D \times D$ matrix
# $\mathbf{W}\mathbf{W}^T + \boldsymbol{\Psi}$, where `psi` is the vector of the diagonal of $\boldsymbol{\Psi}$.

# %% [solution] id=fa-marginal
def marginal_covariance(W, psi):
    """Cov[x] = W W^T + diag(psi) under the factor analysis model."""
    ### BEGIN SOLUTION
    return W @ W.T + np.diag(psi)
    ### END SOLUTION

# %% [test] id=fa-marginal-test points=1
import numpy as np

import sclecture.factor
import sclecture.grading
from sclecture.grading import assert_close

record = sclecture.grading.recorder("fa-marginal-test")
C_t = record("marginal_covariance([[1], [2]], [0.5, 0.25])",
             lambda: marginal_covariance(np.array([[1.0], [2.0]]), np.array([0.5, 0.25])))
assert_close(C_t, [[1.5, 2.0], [2.0, 4.25]], name="marginal_covariance([[1], [2]], [0.5, 0.25])")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(77)
for D, L in [(6, 2), (1, 1), (9, 4)]:
    W = rng.normal(size=(D, L))
    psi = rng.uniform(0.1, 2.0, size=D)
    assert_close(record(f"marginal_covariance, D = {D}, L = {L}", lambda: marginal_covariance(W, psi)),
                 sclecture.factor.marginal_covariance(W, psi), rtol=1e-10, name=f"marginal_covariance for D = {D}, L = {L}")
### END HIDDEN TESTS

# %% [markdown]
# Two checks of the formula. First, the sample covariance of many cells drawn with `sample_fa`
# approaches $\mathbf{W}\mathbf{W}^T + \boldsymbol{\Psi}$ as the number of cells grows (the error
# shrinks like $1/\sqrt{n}$). Second, rotating the latent space changes nothing: for any orthogonal
# $\mathbf{R}$, the loadings $\mathbf{W}\mathbf{R}$ give the same covariance, because
# $\mathbf{W}\mathbf{R}\mathbf{R}^T\mathbf{W}^T = \mathbf{W}\mathbf{W}^T$. The data can therefore fix
# $\mathbf{W}$ only up to a rotation, a fact we meet again in PPCA.

# %%
# NBVAL_CHECK_OUTPUT
marginal_covariance_ = fallback(marginal_covariance, sclecture.factor.marginal_covariance)

rng = np.random.default_rng(1)
W_true = rng.normal(size=(5, 2))
mu_true = rng.normal(size=5)
psi_true = rng.uniform(0.1, 1.0, size=5)
C_true = marginal_covariance_(W_true, psi_true)
for n in [100, 1_000, 10_000, 100_000]:
    X_mc, _ = sample_fa_(W_true, mu_true, psi_true, n, np.random.default_rng(2))
    err = np.abs(np.cov(X_mc.T) - C_true).max()
    print(f"n = {n:>9,}: largest |sample covariance - (W W^T + Psi)| = {err:.4f}")

R, _ = np.linalg.qr(rng.normal(size=(2, 2)))  # a random orthogonal 2 x 2 matrix
change = np.abs(marginal_covariance_(W_true @ R, psi_true) - C_true).max()
print(f"largest change of W W^T + Psi when W is rotated: {change:.1e}")

# %% [markdown]
# ## 3. The likelihood of a data set
#
# Because $p(\mathbf{x})$ is a Gaussian, the log-likelihood of cells $\mathbf{x}_1, \dots, \mathbf{x}_n$
# under a model with mean $\boldsymbol{\mu}$ and covariance $\mathbf{C} = \mathbf{W}\mathbf{W}^T + \boldsymbol{\Psi}$ is
#
# $$\log p(D) = \sum_{i=1}^n \log \mathcal{N}(\mathbf{x}_i \mid \boldsymbol{\mu}, \mathbf{C}), \qquad
# \log \mathcal{N}(\mathbf{x} \mid \boldsymbol{\mu}, \mathbf{C}) = -\frac{1}{2}\Big[D \log 2\pi + \log|\mathbf{C}|
# + (\mathbf{x} - \boldsymbol{\mu})^T \mathbf{C}^{-1} (\mathbf{x} - \boldsymbol{\mu})\Big].$$
#
# We will use it to fit models and, more importantly, to compare them on cells held out from fitting.
# Dividing by $n$ gives the **average log-likelihood per cell**, which does not grow with the size of
# the data set.
#
# Written naively, the formula asks for a determinant and an inverse. Both are bad ideas with
# thousands of genes: $|\mathbf{C}|$ is a product of $D$ eigenvalues and overflows or underflows
# double precision (a $400 \times 400$ covariance $10\,\mathbf{I}$ has determinant $10^{400}$), and an
# explicit inverse loses accuracy. The standard route is the **Cholesky factor**: the lower-triangular
# $\mathbf{K}$ with $\mathbf{C} = \mathbf{K}\mathbf{K}^T$ (`scipy.linalg.cholesky(C, lower=True)`). Then
#
# * $\log|\mathbf{C}| = 2 \sum_d \log K_{dd}$, a sum of logarithms that never overflows;
# * $(\mathbf{x} - \boldsymbol{\mu})^T \mathbf{C}^{-1} (\mathbf{x} - \boldsymbol{\mu}) = \lVert \mathbf{r} \rVert^2$,
#   where $\mathbf{r}$ solves the triangular system $\mathbf{K}\mathbf{r} = \mathbf{x} - \boldsymbol{\mu}$
#   (`scipy.linalg.solve_triangular(K, ..., lower=True)`, which can solve for all cells at once
#   when they are the columns of its right-hand side).
#
# **Exercise 3.** Write `average_log_likelihood(X, mean, cov)` returning
# $\frac{1}{n}\sum_i \log \mathcal{N}(\mathbf{x}_i \mid \texttt{mean}, \texttt{cov})$ as a float, for
# the rows $\mathbf{x}_i$ of `X`, using the Cholesky factor (no `np.linalg.inv` or `np.linalg.det`).

# %% [solution] id=gauss-loglik
def average_log_likelihood(X, mean, cov):
    """Average over the rows x_i of X of log N(x_i | mean, cov), through a Cholesky factor."""
    ### BEGIN SOLUTION
    D = X.shape[1]
    K = scipy.linalg.cholesky(cov, lower=True)
    R = scipy.linalg.solve_triangular(K, (X - mean).T, lower=True)
    log_det = 2 * np.log(np.diag(K)).sum()
    return float(np.mean(-0.5 * (D * np.log(2 * np.pi) + log_det + (R**2).sum(axis=0))))
    ### END SOLUTION

# %% [test] id=gauss-loglik-test points=2
import numpy as np

import sclecture.factor
import sclecture.grading
from sclecture.grading import assert_close

record = sclecture.grading.recorder("gauss-loglik-test")
# one gene: log N(x | 1, 4) averaged over x = 1 and x = 3
expected = np.mean([-0.5 * (np.log(2 * np.pi) + np.log(4.0) + (x - 1.0) ** 2 / 4.0) for x in (1.0, 3.0)])
assert_close(record("x = 1 and x = 3 under N(1, 4)",
                    lambda: average_log_likelihood(np.array([[1.0], [3.0]]), np.array([1.0]), np.array([[4.0]]))),
             expected, name="average log-likelihood of x = 1 and x = 3 under N(1, 4)")
# 400 genes, covariance 10 I: |C| = 10^400 overflows, its logarithm does not
X400 = np.ones((2, 400))
expected = -0.5 * (400 * np.log(2 * np.pi) + 400 * np.log(10.0) + 400 / 10.0)
got = record("400 genes, covariance 10 I", lambda: average_log_likelihood(X400, np.zeros(400), 10 * np.eye(400)))
assert_close(got, expected, name="average log-likelihood with 400 genes and covariance 10 I "
             "(inf or nan here means the determinant overflowed: use the Cholesky factor)")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(31)
for D, n in [(3, 20), (12, 1), (30, 50)]:
    A = rng.normal(size=(D, D))
    cov = A @ A.T / D + 0.3 * np.eye(D)
    mean = rng.normal(size=D)
    X = rng.normal(size=(n, D)) * 2
    assert_close(record(f"average_log_likelihood, D = {D}, n = {n}", lambda: average_log_likelihood(X, mean, cov)),
                 sclecture.factor.average_log_likelihood(X, mean, cov), rtol=1e-8,
                 name=f"average_log_likelihood with D = {D} genes and n = {n} cells")
# a badly scaled covariance: variances from 1e-6 to 1e6
d = np.logspace(-6, 6, 25)
X = rng.normal(size=(10, 25)) * np.sqrt(d)
assert_close(record("variances from 1e-6 to 1e6", lambda: average_log_likelihood(X, np.zeros(25), np.diag(d))),
             sclecture.factor.average_log_likelihood(X, np.zeros(25), np.diag(d)),
             rtol=1e-8, name="average_log_likelihood with variances from 1e-6 to 1e6")
# tiny variances: |C| underflows to 0
assert_close(record("300 genes, covariance 0.001 I", lambda: average_log_likelihood(np.zeros((3, 300)), np.zeros(300), 1e-3 * np.eye(300))),
             sclecture.factor.average_log_likelihood(np.zeros((3, 300)), np.zeros(300), 1e-3 * np.eye(300)),
             rtol=1e-8, name="average_log_likelihood with 300 genes and covariance 0.001 I (|C| underflows)")
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Probabilistic PCA
#
# Factor analysis has no closed-form maximum-likelihood solution; we return to it in part 6. A
# simpler special case does have one. **Probabilistic PCA (PPCA)** gives every gene the same noise
# variance, $\boldsymbol{\Psi} = \sigma^2\mathbf{I}$, and looks for loadings $\mathbf{W}$ with mutually
# orthogonal columns. The lecture also sets $\boldsymbol{\mu} = \mathbf{0}$, which amounts to working
# with centred data; we keep $\boldsymbol{\mu}$ and estimate it by the mean cell $\bar{\mathbf{x}}$. Then
#
# $$p(\mathbf{x}) = \int \mathcal{N}(\mathbf{x} \mid \mathbf{W}\mathbf{z} + \boldsymbol{\mu}, \sigma^2 \mathbf{I})\,
# \mathcal{N}(\mathbf{z} \mid \mathbf{0}, \mathbf{I})\, d\mathbf{z} =
# \mathcal{N}(\mathbf{x} \mid \boldsymbol{\mu}, \mathbf{W}\mathbf{W}^T + \sigma^2\mathbf{I}).$$
#
# Given cells $D = (\mathbf{x}_1, \dots, \mathbf{x}_n)$, the maximum-likelihood parameters come from
# the **sample covariance** and its eigendecomposition:
#
# 1. $\mathbf{S} = \frac{1}{n}\sum_{i=1}^n (\mathbf{x}_i - \bar{\mathbf{x}})(\mathbf{x}_i - \bar{\mathbf{x}})^T$;
# 2. $\mathbf{S} = \mathbf{U}\boldsymbol{\Lambda}\mathbf{U}^T$, eigenvalues sorted so that
#    $\lambda_1 \ge \lambda_2 \ge \dots \ge \lambda_D$, eigenvectors the columns of $\mathbf{U}$;
# 3. $\sigma^2 = \frac{1}{D - L}\sum_{i=L+1}^{D} \lambda_i$: the noise variance is the average variance
#    in the $D - L$ directions the model leaves out;
# 4. $\mathbf{W} = \mathbf{U}_L(\boldsymbol{\Lambda}_L - \sigma^2\mathbf{I})^{1/2}$, where $\mathbf{U}_L$
#    holds the first $L$ eigenvectors and $\boldsymbol{\Lambda}_L$ the first $L$ eigenvalues, up to an
#    arbitrary rotation $\mathbf{W}\mathbf{R}$ (as we saw above).
#
# So PPCA keeps the top $L$ principal directions, as PCA does, and stretches each by
# $\sqrt{\lambda_i - \sigma^2}$: the part of its variance that the noise does not already explain.
# The model covariance $\mathbf{W}\mathbf{W}^T + \sigma^2\mathbf{I}$ reproduces the top $L$ eigenvalues
# of $\mathbf{S}$ exactly and replaces all others by their average.
#
# A note on the lecture's wording: the slide calls the columns of $\mathbf{W}$ *orthonormal*. They
# are orthogonal, but not of unit length: $\mathbf{W}^T\mathbf{W} = \boldsymbol{\Lambda}_L - \sigma^2\mathbf{I}$,
# so column $i$ has length $\sqrt{\lambda_i - \sigma^2}$. Unit-length columns would give every kept
# direction the same variance $1 + \sigma^2$, and the model could not follow the data's largest
# variances. (Orthogonality itself is a choice among equally good solutions: a rotated
# $\mathbf{W}\mathbf{R}$ has the same likelihood, and its columns are in general not orthogonal.)
#
# **Exercise 4.** Write `ppca_mle(eigenvalues, eigenvectors, n_components)` that returns
# `(W, sigma2)`: the $D \times L$ matrix $\mathbf{W}$ and the float $\sigma^2$, given the eigenvalues
# and eigenvectors (one per column) of $\mathbf{S}$. Careful: `np.linalg.eigh` returns eigenvalues in
# *increasing* order, so sort them (and the eigenvectors with them) in decreasing order first.

# %% [solution] id=ppca-mle
def ppca_mle(eigenvalues, eigenvectors, n_components):
    """Maximum-likelihood PPCA parameters (W, sigma2) from the eigendecomposition of S."""
    ### BEGIN SOLUTION
    order = np.argsort(eigenvalues)[::-1]
    lam, U = eigenvalues[order], eigenvectors[:, order]
    L = n_components
    sigma2 = lam[L:].mean()
    W = U[:, :L] * np.sqrt(lam[:L] - sigma2)
    return W, float(sigma2)
    ### END SOLUTION

# %% [test] id=ppca-mle-test points=2
import numpy as np

import sclecture.factor
import sclecture.grading
from sclecture.grading import assert_close, assert_shape

record = sclecture.grading.recorder("ppca-mle-test")
# S = diag(1, 4, 2, 1): eigenvalues 4 > 2 > 1 = 1; with L = 1, sigma^2 = (2 + 1 + 1) / 3
lam_t, U_t = np.linalg.eigh(np.diag([1.0, 4.0, 2.0, 1.0]))
W_t, s2_t = record("ppca_mle for S = diag(1, 4, 2, 1), L = 1", lambda: ppca_mle(lam_t, U_t, 1))
assert_shape(W_t, (4, 1), name="W for D = 4 genes and L = 1")
assert_close(s2_t, 4 / 3, name="sigma^2 (the mean of the discarded eigenvalues 2, 1, 1)")
assert_close(W_t @ W_t.T, np.diag([0.0, 4 - 4 / 3, 0.0, 0.0]), atol=1e-12,
             name="W W^T (W should be the eigenvector of the largest eigenvalue, times sqrt(4 - sigma^2))")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(4)
for D, L in [(8, 3), (5, 4), (20, 1)]:
    A = rng.normal(size=(D + 10, D))
    lam, U = np.linalg.eigh(np.cov(A.T, bias=True))
    W, s2 = record(f"ppca_mle, D = {D}, L = {L}", lambda: ppca_mle(lam, U, L))
    W_ref, s2_ref = sclecture.factor.ppca_mle(lam, U, L)
    assert_shape(W, (D, L), name=f"W for D = {D}, L = {L}")
    assert_close(s2, s2_ref, rtol=1e-10, name=f"sigma^2 for D = {D}, L = {L}")
    # W is defined up to a rotation (and signs): compare W W^T, which is not
    assert_close(W @ W.T, W_ref @ W_ref.T, rtol=1e-8, atol=1e-10, name=f"W W^T for D = {D}, L = {L}")
    WtW = W.T @ W
    assert_close(WtW - np.diag(np.diag(WtW)), np.zeros((L, L)), atol=1e-8, name="off-diagonal of W^T W (columns should be orthogonal)")
    # eigenpairs in a scrambled order must give the same answer
    perm = rng.permutation(D)
    W2, s2b = record(f"ppca_mle, unsorted eigenpairs, D = {D}, L = {L}", lambda: ppca_mle(lam[perm], U[:, perm], L))
    assert_close(s2b, s2_ref, rtol=1e-10, name="sigma^2 when the eigenvalues come in no particular order (sort them)")
    assert_close(W2 @ W2.T, W_ref @ W_ref.T, rtol=1e-8, atol=1e-10, name="W W^T when the eigenvalues come unsorted")
### END HIDDEN TESTS

# %% [markdown]
# Does this really maximise the likelihood? On cells drawn from a known model we can compare the
# average log-likelihood of the PPCA solution with that of the true parameters and with that of a
# perturbed solution. The maximum-likelihood fit should score the training cells at least as well as
# both (it may even beat the truth, which it has never seen: that is overfitting in miniature).

# %%
# NBVAL_CHECK_OUTPUT
ppca_mle_ = fallback(ppca_mle, sclecture.factor.ppca_mle)
average_log_likelihood_ = fallback(average_log_likelihood, sclecture.factor.average_log_likelihood)

rng = np.random.default_rng(3)
D_sim, L_sim = 10, 2
W_sim = rng.normal(size=(D_sim, L_sim))
X_sim, _ = sample_fa_(W_sim, np.zeros(D_sim), np.full(D_sim, 0.5), 2000, rng)
xbar = X_sim.mean(axis=0)
S_sim = (X_sim - xbar).T @ (X_sim - xbar) / len(X_sim)     # S = 1/n sum (x_i - xbar)(x_i - xbar)^T
lam_sim, U_sim = np.linalg.eigh(S_sim)
W_ml, s2_ml = ppca_mle_(lam_sim, U_sim, L_sim)

ll_ml = average_log_likelihood_(X_sim, xbar, W_ml @ W_ml.T + s2_ml * np.eye(D_sim))
ll_true = average_log_likelihood_(X_sim, np.zeros(D_sim), W_sim @ W_sim.T + 0.5 * np.eye(D_sim))
ll_off = average_log_likelihood_(X_sim, xbar, 1.1 * W_ml @ W_ml.T + s2_ml * np.eye(D_sim))
print(f"sigma^2: fitted {s2_ml:.3f}, true 0.500")
print(f"average log-likelihood, maximum-likelihood PPCA: {ll_ml:.4f}")
print(f"average log-likelihood, true parameters:         {ll_true:.4f}")
print(f"average log-likelihood, W scaled by sqrt(1.1):   {ll_off:.4f}")

# %% [markdown]
# ## 5. Where is a cell in the latent space? The posterior
#
# Having fitted $\mathbf{W}$ and $\sigma^2$, we can reduce a cell to its latent coordinates. The model
# answers this question with a distribution, the posterior given by Bayes' rule. For PPCA it is again
# Gaussian:
#
# $$p(\mathbf{z} \mid \mathbf{x}) = \mathcal{N}\big(\mathbf{z} \mid \mathbf{M}^{-1}\mathbf{W}^T(\mathbf{x} - \boldsymbol{\mu}),\;
# \sigma^2\mathbf{M}^{-1}\big), \qquad \mathbf{M} = \mathbf{W}^T\mathbf{W} + \sigma^2\mathbf{I}.$$
#
# * The **posterior mean** $\mathbf{M}^{-1}\mathbf{W}^T(\mathbf{x} - \boldsymbol{\mu})$ is the cell's
#   position in the latent space: this is what `PPCA.transform` returns and what we plot below.
# * The **posterior covariance** $\sigma^2\mathbf{M}^{-1}$ says how sure we are of that position. It is
#   the same for every cell: noise of known size blurs all cells alike.
#
# $\mathbf{M}$ is a small $L \times L$ matrix. Rather than inverting it, solve the linear system
# $\mathbf{M}\mathbf{A} = \mathbf{W}^T(\mathbf{X} - \boldsymbol{\mu})^T$ (`np.linalg.solve` works on
# all cells at once when they are the columns of the right-hand side).
#
# **Exercise 5.** Write `ppca_posterior(X, W, mu, sigma2)` returning `(mean, cov)`: the $n \times L$
# posterior means, one row per row of `X`, and the $L \times L$ posterior covariance.

# %% [solution] id=ppca-posterior
def ppca_posterior(X, W, mu, sigma2):
    """Posterior p(z | x) of PPCA: (n x L means M^-1 W^T (x - mu), L x L covariance sigma2 M^-1)."""
    ### BEGIN SOLUTION
    L = W.shape[1]
    M = W.T @ W + sigma2 * np.eye(L)
    mean = np.linalg.solve(M, W.T @ (X - mu).T).T
    cov = sigma2 * np.linalg.solve(M, np.eye(L))
    return mean, cov
    ### END SOLUTION

# %% [test] id=ppca-posterior-test points=2
import numpy as np

import sclecture.factor
import sclecture.grading
from sclecture.grading import assert_close, assert_shape

record = sclecture.grading.recorder("ppca-posterior-test")
# W = (2, 0)^T, sigma^2 = 1: M = 4 + 1 = 5, so E[z | x] = 2 x_1 / 5 and Var[z | x] = 1 / 5
mean_t, cov_t = record("ppca_posterior for W = (2, 0), sigma^2 = 1",
                       lambda: ppca_posterior(np.array([[1.0, 5.0], [-2.5, 0.0]]), np.array([[2.0], [0.0]]), np.zeros(2), 1.0))
assert_shape(mean_t, (2, 1), name="posterior means (one row per cell)")
assert_shape(cov_t, (1, 1), name="posterior covariance (L x L)")
assert_close(mean_t, [[0.4], [-1.0]], name="posterior means for W = (2, 0), sigma^2 = 1")
assert_close(cov_t, [[0.2]], name="posterior covariance for W = (2, 0), sigma^2 = 1")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(8)
for D, L, n in [(6, 2, 15), (10, 4, 1), (3, 1, 7)]:
    W = rng.normal(size=(D, L))
    mu = rng.normal(size=D)
    sigma2 = float(rng.uniform(0.05, 2.0))
    X = rng.normal(size=(n, D)) + mu
    m, c = record(f"ppca_posterior, D = {D}, L = {L}, n = {n}", lambda: ppca_posterior(X, W, mu, sigma2))
    m_ref, c_ref = sclecture.factor.ppca_posterior(X, W, mu, sigma2)
    assert_close(m, m_ref, rtol=1e-8, atol=1e-10, name=f"posterior means for D = {D}, L = {L}, n = {n}")
    assert_close(c, c_ref, rtol=1e-8, atol=1e-12, name=f"posterior covariance for D = {D}, L = {L}")
# a non-zero mean must be subtracted
W = rng.normal(size=(4, 2))
mu = np.array([10.0, -5.0, 3.0, 0.0])
m, _ = record("ppca_posterior of the cell x = mu", lambda: ppca_posterior(mu[None, :], W, mu, 0.5))
assert_close(m, np.zeros((1, 2)), atol=1e-10, name="posterior mean of the cell x = mu (should be 0: subtract mu)")
### END HIDDEN TESTS

# %% [markdown]
# ### Written answer: where does the posterior come from?
#
# The lecture states the posterior of PPCA without proof ("can be shown"). Derive it. Start from
# Bayes' rule, $p(\mathbf{z} \mid \mathbf{x}) \propto p(\mathbf{x} \mid \mathbf{z})\, p(\mathbf{z})$
# with $p(\mathbf{x} \mid \mathbf{z}) = \mathcal{N}(\mathbf{x} \mid \mathbf{W}\mathbf{z} + \boldsymbol{\mu}, \sigma^2\mathbf{I})$
# and $p(\mathbf{z}) = \mathcal{N}(\mathbf{z} \mid \mathbf{0}, \mathbf{I})$, and show step by step that
#
# $$p(\mathbf{z} \mid \mathbf{x}) = \mathcal{N}\big(\mathbf{z} \mid \mathbf{M}^{-1}\mathbf{W}^T(\mathbf{x} - \boldsymbol{\mu}),\;
# \sigma^2\mathbf{M}^{-1}\big), \qquad \mathbf{M} = \mathbf{W}^T\mathbf{W} + \sigma^2\mathbf{I}.$$
#
# Hint: write $\log p(\mathbf{z} \mid \mathbf{x})$ as a function of $\mathbf{z}$, dropping every term
# that does not contain $\mathbf{z}$; it is a quadratic, and completing the square identifies the
# Gaussian. (Another route: the joint distribution of $(\mathbf{z}, \mathbf{x})$ is Gaussian, and
# conditioning a Gaussian has a formula.) Then say in one or two sentences where $\mathbf{M}$, the
# mean and the covariance appear in `sclecture.factor.ppca_posterior` (read its code), and why it
# never inverts a $D \times D$ matrix.

# %% [answer] id=ppca-posterior-derivation points=3
# **Completing the square.** Everything that does not depend on $\mathbf{z}$ goes into a constant:
#
# $$\begin{aligned}
# \log p(\mathbf{z} \mid \mathbf{x}) &= \log p(\mathbf{x} \mid \mathbf{z}) + \log p(\mathbf{z}) - \log p(\mathbf{x}) \\
# &= -\frac{1}{2\sigma^2}\lVert \mathbf{x} - \boldsymbol{\mu} - \mathbf{W}\mathbf{z} \rVert^2 - \frac{1}{2}\mathbf{z}^T\mathbf{z} + \text{const} \\
# &= -\frac{1}{2\sigma^2}\Big[\mathbf{z}^T\mathbf{W}^T\mathbf{W}\mathbf{z} - 2\,\mathbf{z}^T\mathbf{W}^T(\mathbf{x} - \boldsymbol{\mu})\Big] - \frac{1}{2}\mathbf{z}^T\mathbf{z} + \text{const} \\
# &= -\frac{1}{2\sigma^2}\Big[\mathbf{z}^T(\mathbf{W}^T\mathbf{W} + \sigma^2\mathbf{I})\mathbf{z} - 2\,\mathbf{z}^T\mathbf{b}\Big] + \text{const}
#  = -\frac{1}{2\sigma^2}\Big[\mathbf{z}^T\mathbf{M}\mathbf{z} - 2\,\mathbf{z}^T\mathbf{b}\Big] + \text{const},
# \end{aligned}$$
#
# with $\mathbf{b} = \mathbf{W}^T(\mathbf{x} - \boldsymbol{\mu})$ (the term
# $\lVert \mathbf{x} - \boldsymbol{\mu} \rVert^2$ went into the constant). $\mathbf{M}$ is symmetric and
# positive definite, so with $\mathbf{m} = \mathbf{M}^{-1}\mathbf{b}$ the square completes as
# $\mathbf{z}^T\mathbf{M}\mathbf{z} - 2\,\mathbf{z}^T\mathbf{M}\mathbf{m} = (\mathbf{z} - \mathbf{m})^T\mathbf{M}(\mathbf{z} - \mathbf{m}) - \mathbf{m}^T\mathbf{M}\mathbf{m}$,
# and the last term is another constant:
#
# $$\log p(\mathbf{z} \mid \mathbf{x}) = -\frac{1}{2}(\mathbf{z} - \mathbf{m})^T\big(\sigma^2\mathbf{M}^{-1}\big)^{-1}(\mathbf{z} - \mathbf{m}) + \text{const}.$$
#
# This is the logarithm of a Gaussian density in $\mathbf{z}$ with mean
# $\mathbf{m} = \mathbf{M}^{-1}\mathbf{W}^T(\mathbf{x} - \boldsymbol{\mu})$ and covariance $\sigma^2\mathbf{M}^{-1}$.
# Since $p(\mathbf{z} \mid \mathbf{x})$ integrates to one, the constant must be that Gaussian's
# normalising constant, so the posterior is exactly this Gaussian. The covariance came from the
# quadratic term alone, which does not contain $\mathbf{x}$: every cell gets the same uncertainty.
#
# **Via the joint Gaussian (the other route).** $\mathbf{z}$ and $\mathbf{x} = \mathbf{W}\mathbf{z} + \boldsymbol{\mu} + \boldsymbol{\epsilon}$
# are jointly Gaussian with $\text{Cov}[\mathbf{z}] = \mathbf{I}$, $\text{Cov}[\mathbf{z}, \mathbf{x}] = \mathbf{W}^T$ and
# $\text{Cov}[\mathbf{x}] = \mathbf{C} = \mathbf{W}\mathbf{W}^T + \sigma^2\mathbf{I}$. Conditioning gives
# $\mathbb{E}[\mathbf{z} \mid \mathbf{x}] = \mathbf{W}^T\mathbf{C}^{-1}(\mathbf{x} - \boldsymbol{\mu})$ and
# $\text{Cov}[\mathbf{z} \mid \mathbf{x}] = \mathbf{I} - \mathbf{W}^T\mathbf{C}^{-1}\mathbf{W}$. From
# $\mathbf{W}^T(\mathbf{W}\mathbf{W}^T + \sigma^2\mathbf{I}) = (\mathbf{W}^T\mathbf{W} + \sigma^2\mathbf{I})\mathbf{W}^T$ follows
# $\mathbf{W}^T\mathbf{C}^{-1} = \mathbf{M}^{-1}\mathbf{W}^T$, hence the same mean, and
# $\mathbf{I} - \mathbf{M}^{-1}\mathbf{W}^T\mathbf{W} = \mathbf{M}^{-1}(\mathbf{M} - \mathbf{W}^T\mathbf{W}) = \sigma^2\mathbf{M}^{-1}$, the same covariance.
#
# **In the code.** `sclecture.factor.ppca_posterior` forms the $L \times L$ matrix
# `M = W.T @ W + sigma2 * np.eye(L)`, factorises it once (Cholesky, `cho_factor`), solves
# $\mathbf{M}\mathbf{A} = \mathbf{W}^T(\mathbf{X} - \boldsymbol{\mu})^T$ for all cells at once to get the means, and
# returns `sigma2` times $\mathbf{M}^{-1}$ as the one covariance. Only $\mathbf{M}$ is ever solved with,
# which is what the first route buys: the joint-Gaussian formula would need the $D \times D$ matrix
# $\mathbf{C}^{-1}$, the completed square needs only an $L \times L$ one.

# %% [markdown]
# ### The noise-free limit $\sigma^2 \to 0$
#
# PPCA has one more knob than PCA: the noise variance. To see what it does, keep the loadings $\mathbf{W}$
# of the simulated data fixed and shrink $\sigma^2$ towards zero. The cell below compares the posterior
# mean with the least-squares coordinates $(\mathbf{W}^T\mathbf{W})^{-1}\mathbf{W}^T(\mathbf{x} - \boldsymbol{\mu})$
# of the orthogonal projection of $\mathbf{x} - \boldsymbol{\mu}$ onto the columns of $\mathbf{W}$, the
# quantity PCA computes, and prints the total posterior variance.

# %%
# NBVAL_CHECK_OUTPUT
ppca_posterior_ = fallback(ppca_posterior, sclecture.factor.ppca_posterior)

projection = np.linalg.solve(W_ml.T @ W_ml, W_ml.T @ (X_sim - xbar).T).T   # (W^T W)^-1 W^T (x - mu)
for s2 in [s2_ml, 0.1, 0.01, 0.001, 0.0]:
    z_mean, z_cov = ppca_posterior_(X_sim, W_ml, xbar, s2)
    gap = np.abs(z_mean - projection).max()
    print(f"sigma^2 = {s2:.3f}: max |posterior mean - projection| = {gap:.4f}, trace of posterior covariance = {np.trace(z_cov):.4f}")

# %% [markdown]
# **Question.** What happens to the PPCA posterior $p(\mathbf{z} \mid \mathbf{x})$, and to the model
# $p(\mathbf{x})$ itself, as $\sigma^2 \to 0$? Use the numbers above and the formulas for $\mathbf{M}$,
# the posterior mean and the posterior covariance, and explain in what sense PCA is the noise-free
# special case of PPCA. What does PPCA offer that PCA does not?

# %% [answer] id=ppca-sigma0 points=2
# With $\sigma^2 \to 0$, $\mathbf{M} = \mathbf{W}^T\mathbf{W} + \sigma^2\mathbf{I} \to \mathbf{W}^T\mathbf{W}$,
# so the posterior mean becomes $(\mathbf{W}^T\mathbf{W})^{-1}\mathbf{W}^T(\mathbf{x} - \boldsymbol{\mu})$:
# the coordinates of the orthogonal projection of $\mathbf{x} - \boldsymbol{\mu}$ onto the span of the
# top $L$ eigenvectors, i.e. the PCA scores (each divided by $\sqrt{\lambda_i}$ when
# $\mathbf{W} = \mathbf{U}_L\boldsymbol{\Lambda}_L^{1/2}$). The posterior covariance
# $\sigma^2\mathbf{M}^{-1}$ goes to zero: $\mathbf{z}$ is no longer uncertain but a deterministic linear
# function of $\mathbf{x}$, which is exactly what PCA computes; the table shows the gap to the
# projection and the posterior variance both vanishing. For $\sigma^2 > 0$ the posterior mean is shrunk
# towards $\mathbf{0}$ (the prior), most strongly along weak directions, because part of every
# deviation is attributed to noise.
#
# The model itself degenerates: $\mathbf{W}\mathbf{W}^T + \sigma^2\mathbf{I}$ becomes a rank-$L$ matrix,
# so $p(\mathbf{x})$ puts all its mass on an $L$-dimensional plane and any cell off that plane has
# density zero (log-likelihood $-\infty$). PCA therefore is not a probability model of the data. PPCA
# adds what the noise buys: a proper likelihood (to compare dimensions $L$ or models on held-out cells,
# or to detect unusual cells), uncertainty about each cell's latent position, the ability to sample new
# cells, and a starting point for richer models (factor analysis, the VAE).

# %% [markdown]
# ## 6. Factor analysis, fitted by EM
#
# With a separate noise variance $\psi_d$ for every gene, the likelihood has no closed-form maximum.
# The **expectation-maximisation (EM)** algorithm climbs it step by step, alternating two easy problems:
#
# * **E-step.** With the current $\mathbf{W}$ and $\boldsymbol{\Psi}$, compute the posterior of each
#   cell's latent. It is Gaussian with covariance $\mathbf{G} = (\mathbf{I} + \mathbf{W}^T\boldsymbol{\Psi}^{-1}\mathbf{W})^{-1}$
#   and mean $\mathbb{E}[\mathbf{z}_i] = \mathbf{G}\mathbf{W}^T\boldsymbol{\Psi}^{-1}(\mathbf{x}_i - \bar{\mathbf{x}})$
#   (with $\boldsymbol{\Psi} = \sigma^2\mathbf{I}$ this is the PPCA posterior above), so that
#   $\mathbb{E}[\mathbf{z}_i\mathbf{z}_i^T] = \mathbf{G} + \mathbb{E}[\mathbf{z}_i]\mathbb{E}[\mathbf{z}_i]^T$.
# * **M-step.** Pretend the latents are known (replace them by these expectations) and solve the
#   resulting regression of $\mathbf{x}$ on $\mathbf{z}$:
#   $\mathbf{W} = \big[\sum_i (\mathbf{x}_i - \bar{\mathbf{x}})\mathbb{E}[\mathbf{z}_i]^T\big]\big[\sum_i \mathbb{E}[\mathbf{z}_i\mathbf{z}_i^T]\big]^{-1}$,
#   and each $\psi_d$ is the variance of gene $d$ that the new $\mathbf{W}$ leaves unexplained,
#   $\boldsymbol{\Psi} = \text{diag}\big(\mathbf{S} - \mathbf{W}\frac{1}{n}\sum_i \mathbb{E}[\mathbf{z}_i](\mathbf{x}_i - \bar{\mathbf{x}})^T\big)$.
#
# Each EM iteration can only raise the log-likelihood (it never decreases), so plotting it against the
# iteration is the standard check of an implementation. `sclecture.factor.FactorAnalysis` implements
# these two steps; both need only $\mathbf{S}$, so one iteration costs the same for 100 or 100,000 cells.
#
# We simulate cells whose genes differ a lot in their noise, so that PPCA's single $\sigma^2$ is the
# wrong model, start EM from random loadings, and compare the noise each model estimates with the truth.

# %%
rng = np.random.default_rng(5)
D_fa, L_fa = 30, 3
W_fa = rng.normal(size=(D_fa, L_fa))
psi_fa = rng.uniform(0.05, 3.0, size=D_fa)            # noise variances from 0.05 to 3
X_fa, _ = sample_fa_(W_fa, np.zeros(D_fa), psi_fa, 3000, rng)
X_fa_test, _ = sample_fa_(W_fa, np.zeros(D_fa), psi_fa, 1000, rng)

fa_sim = sclecture.factor.FactorAnalysis(n_components=L_fa, init="random", random_state=0).fit(X_fa)
ppca_sim = sclecture.factor.PPCA(n_components=L_fa).fit(X_fa)

fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
axes[0].plot(np.arange(len(fa_sim.loglik_)), fa_sim.loglik_)
axes[0].axhline(ppca_sim.score(X_fa), color="C1", ls="--", label="PPCA (closed form)")
axes[0].set_xlabel("EM iteration")
axes[0].set_ylabel("average log-likelihood")
axes[0].set_ylim(fa_sim.loglik_[-1] - 6, fa_sim.loglik_[-1] + 1)
axes[0].legend(frameon=False)
axes[0].set_title("EM climbs the likelihood")
axes[1].scatter(psi_fa, fa_sim.psi_, s=12, label=r"FA: $\psi_d$")
axes[1].axhline(ppca_sim.noise_variance_, color="C1", ls="--", label=r"PPCA: $\sigma^2$")
axes[1].plot([0, 3], [0, 3], "k:", lw=1)
axes[1].set_xlabel(r"true noise variance $\psi_d$")
axes[1].set_ylabel("estimate")
axes[1].legend(frameon=False)
axes[1].set_title("noise per gene")
plt.tight_layout()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
gains = np.diff(fa_sim.loglik_)
print(f"the log-likelihood never decreased: {bool(gains.min() >= 0)}; first {fa_sim.loglik_[0]:.3f}, last {fa_sim.loglik_[-1]:.3f}")
print(f"held-out average log-likelihood: FA {fa_sim.score(X_fa_test):.3f}, PPCA {ppca_sim.score(X_fa_test):.3f}")
true_ll = sclecture.factor.average_log_likelihood(X_fa_test, np.zeros(D_fa), marginal_covariance_(W_fa, psi_fa))
print(f"held-out average log-likelihood of the true model: {true_ll:.3f}")

# %% [markdown]
# FA recovers every gene's noise level; PPCA must spread one compromise $\sigma^2$ over all genes and
# pays for it on held-out cells. The price of FA's flexibility is an iterative fit, which can need
# many iterations; and, like PPCA's, its loadings are defined only up to a rotation.
#
# ## 7. Real cells: PBMCs
#
# We load `pbmc3k` (2,700 blood cells), normalise each cell to $10^4$ counts, take $\log(1 + x)$ and keep
# the 1,000 genes whose log-normalised values vary most. This choice favours genes detected in many
# cells. Genes seen in only a handful of cells invite a known failure of FA, a *Heywood case*: EM
# drives their $\psi_d$ to almost zero and spends a factor on copying one gene, and the model then
# assigns absurdly low likelihoods to new cells. A fifth of the cells are held out to judge the models
# on cells they did not see. The cells the Seurat tutorial's quality control removed have no label; they stay in the
# data and are drawn in grey.

# %%
start = time.perf_counter()
pbmc = sclecture.datasets.pbmc3k()
genes = sclecture.preprocessing.highly_variable_genes(pbmc, n_top=1000, flavor="variance")
X_pbmc = sclecture.preprocessing.log1p_normalize(pbmc)[:, genes].toarray().astype(np.float64)
gene_names = np.asarray(pbmc.var_names[genes])
cell_types = pbmc.obs["cell_type"].to_numpy()
test_mask = np.random.default_rng(0).random(len(X_pbmc)) < 0.2
X_train, X_test = X_pbmc[~test_mask], X_pbmc[test_mask]
print(f"{X_pbmc.shape[0]} cells x {X_pbmc.shape[1]} genes ({len(X_train)} to fit, {len(X_test)} held out), "
      f"loaded in {time.perf_counter() - start:.1f} s")

# %% [markdown]
# ### The eigenvalue spectrum and the choice of $L$
#
# The eigenvalues of $\mathbf{S}$ are the variances along the principal directions. A few stand out;
# the rest decay slowly into a long tail, which PPCA summarises by their mean $\sigma^2$. Where to cut?
# The likelihood gives a principled answer: fit PPCA with increasing $L$ (one eigendecomposition serves
# them all, thanks to `ppca_mle`) and watch the average log-likelihood of the held-out cells. On the
# training cells it can only grow with $L$; on held-out cells it stops improving once extra dimensions
# model noise peculiar to the training cells.

# %%
xbar_train = X_train.mean(axis=0)
S_train = (X_train - xbar_train).T @ (X_train - xbar_train) / len(X_train)   # S = 1/n sum (x - xbar)(x - xbar)^T
lam_pbmc, U_pbmc = np.linalg.eigh(S_train)                                   # increasing order
lam_sorted = lam_pbmc[::-1]

L_grid = [1, 2, 5, 10, 15, 20, 30, 50, 100, 200, 300]
ll_train, ll_test = [], []
for L in L_grid:
    W_L, s2_L = ppca_mle_(lam_pbmc, U_pbmc, L)
    psi_L = np.full(len(W_L), s2_L)
    ll_train.append(sclecture.factor.lowrank_mvn_logpdf(X_train, xbar_train, W_L, psi_L).mean())
    ll_test.append(sclecture.factor.lowrank_mvn_logpdf(X_test, xbar_train, W_L, psi_L).mean())
L_best = L_grid[int(np.argmax(ll_test))]

fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
axes[0].semilogy(np.arange(1, 301), lam_sorted[:300], ".", ms=3)
axes[0].axvline(L_best, color="C3", ls="--", lw=1, label=f"L = {L_best}")
axes[0].set_xlabel("index i")
axes[0].set_ylabel(r"eigenvalue $\lambda_i$")
axes[0].set_title("spectrum of S (pbmc3k)")
axes[0].legend(frameon=False)
axes[1].plot(L_grid, ll_train, "o-", ms=3, label="training cells")
axes[1].plot(L_grid, ll_test, "o-", ms=3, label="held-out cells")
axes[1].axvline(L_best, color="C3", ls="--", lw=1)
axes[1].set_xscale("log")
axes[1].set_xlabel("latent dimension L")
axes[1].set_ylabel("average log-likelihood")
axes[1].set_title("PPCA as L grows")
axes[1].legend(frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# The function `sclecture.factor.lowrank_mvn_logpdf` used above never forms the $D \times D$ covariance:
# with the Woodbury identity it needs only an $L \times L$ Cholesky factor, which is what lets the
# estimators score 100,000 cells quickly. For one $L$ we can check it against your Cholesky version
# with the full covariance, and against scikit-learn, whose `PCA.score` is the PPCA log-likelihood
# (with $\mathbf{S}$ divided by $n - 1$ instead of $n$, hence a tiny difference in the last digits).

# %%
# NBVAL_CHECK_OUTPUT
from sklearn.decomposition import PCA

print(f"held-out log-likelihood is highest at L = {L_best} of {L_grid}")
for L, a, b in zip(L_grid, ll_train, ll_test):
    if L in (1, 10, L_best, 300):
        print(f"L = {L:>3}: average log-likelihood train {a:9.3f}, held-out {b:9.3f}")
W_10, s2_10 = ppca_mle_(lam_pbmc, U_pbmc, 10)
full = average_log_likelihood_(X_test, xbar_train, W_10 @ W_10.T + s2_10 * np.eye(len(W_10)))
sk = PCA(n_components=10, svd_solver="arpack", random_state=0).fit(X_train).score(X_test)
print(f"L = 10, held-out: Woodbury {ll_test[L_grid.index(10)]:.4f}, full Cholesky {full:.4f}, scikit-learn PCA.score {sk:.4f}")

# %% [markdown]
# ### Latent spaces: PPCA against FA
#
# We now fit both estimators with $L = 10$ (close to the best $L$ above, and a round number) on the training cells and draw the posterior means of all
# cells in the first two latent dimensions, coloured by the cell types of the Seurat tutorial. To compare the whole
# 10-dimensional spaces rather than two coordinates, the printed number is the accuracy of a
# 15-nearest-neighbour classifier that predicts a cell's type from its latent coordinates (5-fold
# cross-validation on the labelled cells): how well cells of one type stay together.

# %%
start = time.perf_counter()
ppca_pbmc = sclecture.factor.PPCA(n_components=10).fit(X_train)
fa_pbmc = sclecture.factor.FactorAnalysis(n_components=10, random_state=0).fit(X_train)
Z_ppca, Z_fa = ppca_pbmc.transform(X_pbmc), fa_pbmc.transform(X_pbmc)
print(f"PPCA and FA fitted in {time.perf_counter() - start:.1f} s ({fa_pbmc.n_iter_} EM iterations)")

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
sclecture.plotting.plot_embedding(Z_ppca, cell_types, ax=axes[0], legend=False, title="PPCA, posterior mean",
                                  xlabel="z1", ylabel="z2")
sclecture.plotting.plot_embedding(Z_fa, cell_types, ax=axes[1], title="FA, posterior mean", xlabel="z1", ylabel="z2")
plt.tight_layout()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier


def knn_accuracy(Z, labels):
    """5-fold accuracy of a 15-nearest-neighbour classifier on the labelled cells."""
    keep = pd.notna(labels)
    return cross_val_score(KNeighborsClassifier(15), Z[keep], labels[keep].astype(str), cv=5).mean()


print(f"pbmc3k, 15-NN cell-type accuracy in the latent space: PPCA {knn_accuracy(Z_ppca, cell_types):.3f}, "
      f"FA {knn_accuracy(Z_fa, cell_types):.3f}")
print(f"held-out log-likelihood, L = 10: PPCA {ppca_pbmc.score(X_test):.3f}, FA {fa_pbmc.score(X_test):.3f}")

# %% [markdown]
# ### Which genes does FA call noisy?
#
# PPCA gives every gene the same noise $\sigma^2$. FA estimates one $\psi_d$ per gene, and comparing it
# with the gene's total variance $S_{dd}$ tells us which fraction of a gene's variation the ten factors
# leave unexplained. Genes with a small fraction move together with the others: markers of the major
# cell types. Genes with a fraction near one vary on their own, typically because few of their molecules
# are captured and their counts are mostly sampling noise.

# %%
var_pbmc = X_train.var(axis=0)
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.scatter(var_pbmc, fa_pbmc.psi_, s=5, label=r"FA: $\psi_d$")
ax.axhline(ppca_pbmc.noise_variance_, color="C1", ls="--", label=r"PPCA: $\sigma^2$")
ax.plot([0, var_pbmc.max()], [0, var_pbmc.max()], "k:", lw=1, label=r"$\psi_d = S_{dd}$")
ax.set_xlabel(r"variance of the gene $S_{dd}$")
ax.set_ylabel("noise variance")
ax.legend(frameon=False)
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
unexplained = fa_pbmc.psi_ / var_pbmc
order = np.argsort(unexplained)
print("best explained by the factors:", ", ".join(f"{g} ({u:.2f})" for g, u in zip(gene_names[order[:8]], unexplained[order[:8]])))
print("mostly noise:                 ", ", ".join(f"{g} ({u:.2f})" for g, u in zip(gene_names[order[-8:]], unexplained[order[-8:]])))
print(f"PPCA sigma^2 = {ppca_pbmc.noise_variance_:.3f}; FA psi ranges from {fa_pbmc.psi_.min():.3f} to {fa_pbmc.psi_.max():.3f}")

# %% [markdown]
# ## 8. Real cells: the mouse cortex
#
# The same analysis on the Zeisel et al. (2015) cortex and hippocampus cells (3,005 cells, 7 classes).
# The first two factors already split neurons from oligodendrocytes; the smaller glial and vascular
# classes need the other factors, which the nearest-neighbour accuracy below takes into account. FA's
# picture is PPCA's mirrored: latent axes are defined only up to a rotation, signs included.

# %%
zeisel = sclecture.datasets.zeisel_cortex()
genes_z = sclecture.preprocessing.highly_variable_genes(zeisel, n_top=1000, flavor="variance")
X_z = sclecture.preprocessing.log1p_normalize(zeisel)[:, genes_z]
X_z = (X_z.toarray() if hasattr(X_z, "toarray") else X_z).astype(np.float64)
types_z = zeisel.obs["cell_type"].to_numpy()
test_z = np.random.default_rng(1).random(len(X_z)) < 0.2

ppca_z = sclecture.factor.PPCA(n_components=10).fit(X_z[~test_z])
fa_z = sclecture.factor.FactorAnalysis(n_components=10, random_state=0).fit(X_z[~test_z])
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
sclecture.plotting.plot_embedding(ppca_z.transform(X_z), types_z, ax=axes[0], legend=False, title="PPCA, posterior mean",
                                  xlabel="z1", ylabel="z2")
sclecture.plotting.plot_embedding(fa_z.transform(X_z), types_z, ax=axes[1], title="FA, posterior mean", xlabel="z1", ylabel="z2")
plt.tight_layout()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print(f"Zeisel cortex, held-out log-likelihood, L = 10: PPCA {ppca_z.score(X_z[test_z]):.3f}, FA {fa_z.score(X_z[test_z]):.3f}")
print(f"Zeisel cortex, 15-NN cell-type accuracy: PPCA {knn_accuracy(ppca_z.transform(X_z), types_z):.3f}, "
      f"FA {knn_accuracy(fa_z.transform(X_z), types_z):.3f}")

# %% [markdown]
# ## Looking ahead
#
# PPCA and FA are **linear-Gaussian latent variable models**: the mean of $\mathbf{x}$ is a linear
# function $\mathbf{W}\mathbf{z} + \boldsymbol{\mu}$ of the latent, and everything is Gaussian. That is
# why the integral for $p(\mathbf{x})$ and the posterior $p(\mathbf{z} \mid \mathbf{x})$ came out in
# closed form. Lesson 05 keeps the prior $p(\mathbf{z}) = \mathcal{N}(\mathbf{0}, \mathbf{I})$ and the
# Gaussian noise but makes the decoder nonlinear, $p(\mathbf{x} \mid \mathbf{z}) =
# \mathcal{N}(\mathbf{x} \mid f(\mathbf{z}; \theta), \sigma^2\mathbf{I})$ with a neural network $f$. Then
# neither $p(\mathbf{x})$ nor $p(\mathbf{z} \mid \mathbf{x})$ can be computed exactly, and the
# variational autoencoder learns an approximate posterior instead.
#
# ## Going further
#
# Ungraded exercises for those who want more; each takes a few lines with what this lesson built.
#
# 1. **Rotations.** Take the fitted `ppca_pbmc`, replace `W_` by $\mathbf{W}\mathbf{R}$ for a random
#    orthogonal $\mathbf{R}$ and check that the held-out log-likelihood does not change while the
#    posterior means become $\mathbf{R}^T$ times the old ones. Show that the posterior covariance
#    $\sigma^2\mathbf{M}^{-1}$ is diagonal exactly when the columns of $\mathbf{W}$ are orthogonal.
# 2. **EM for PPCA.** Adapt the two EM steps of part 6 to $\boldsymbol{\Psi} = \sigma^2\mathbf{I}$ (the M-step
#    then averages the diagonal into one $\sigma^2$), run it on the simulated cells of part 4 and
#    check that it reaches the log-likelihood of `ppca_mle`. How many iterations does it need as
#    the gap $\lambda_L - \lambda_{L+1}$ between kept and dropped eigenvalues shrinks?
# 3. **A Heywood case on purpose.** Select pbmc3k's genes with `flavor="dispersion"` instead of by
#    variance (Seurat's recipe, which lets lowly expressed genes compete with highly expressed
#    ones), and add a few genes detected in fewer than five cells; fit `FactorAnalysis` with $L = 10$,
#    and look for genes whose $\psi_d$ collapses towards zero. What happens to the held-out
#    log-likelihood, and to the loadings of those genes?
# 4. **Choosing $L$ for FA.** Repeat the held-out log-likelihood curve of part 7 with
#    `FactorAnalysis` for a few values of $L$. Does FA prefer the same $L$ as PPCA, and by how much
#    does it beat PPCA at each $L$?
# 5. **Uncertainty in the picture.** Draw the ellipse of two posterior standard deviations,
#    from $\sigma^2\mathbf{M}^{-1}$, around a few cells in PPCA's 2-D latent space of pbmc3k. Every
#    cell gets the same ellipse: why is that unrealistic for cells with very different numbers of
#    counts, and which model of the course gives each cell its own?
