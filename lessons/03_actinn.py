# %% [markdown]
# # Lesson 03: ACTINN, supervised cell-type identification
#
# {{colab_badge}}
#
# Naming the cell types in a new single-cell data set is one of the first things an analysis has
# to do. This lesson treats it as supervised learning: a classifier is trained on cells that an
# expert has already labelled, then applied to cells nobody has labelled yet. The method is
# **ACTINN** (Ma and Pellegrini, 2019), a multilayer perceptron like the ones of lesson 02, and we
# rebuild it from its published code:
#
# 1. the data: a labelled reference (pbmc3k) and a query of control and interferon-stimulated cells (Kang et al. 2018);
# 2. ACTINN's preprocessing: shared genes, a per-cell normalisation, a percentile filter on genes;
# 3. the network, its categorical likelihood and the L2 penalty;
# 4. training with Adam and a staircase learning-rate decay;
# 5. scoring predictions: accuracy, macro-F1, per-type F1, a confusion matrix;
# 6. the honest part: where the lecture's summary and the published code differ, how ACTINN compares
#    with plain logistic regression and scikit-learn's MLP, and whether its published training
#    settings suit a small reference.
#
# Five exercises are graded automatically, and one written answer by your instructor. Training
# happens in ungraded cells; on a CPU each ACTINN fit takes half a minute to a minute. The
# references in `sclecture` may be read but not called in an exercise: grading gives no points for
# a call.

# %% [colab-setup]

# %%
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import sclecture
from sclecture import actinn, datasets
from sclecture.grading import fallback
from sclecture.training import expect_result, n_epochs

sclecture.set_seed(0)
print("models run on:", sclecture.get_device())

# %% [markdown]
# ## 1. Cell types from labelled examples
#
# A common route to cell types is unsupervised: cluster the cells, then name each cluster by the
# marker genes it expresses. That takes an expert, is hard to repeat, and starts from scratch with
# every data set. The supervised route reuses earlier work. We collect labelled expression profiles
# $D = \{(\mathbf{x}_1, y_1), \dots, (\mathbf{x}_n, y_n)\}$, where $\mathbf{x}_i$ holds the
# expression of cell $i$ and $y_i \in \{1, \dots, k\}$ is one of $k$ cell types, fit a model of
# $p(y \mid \mathbf{x})$, and predict the most probable type of every new cell.
#
# ACTINN ("automated cell type identification using neural networks") is one of many such methods.
# A large comparison by Shao et al. (2021), shown in the lecture, tested annotation methods on
# dozens of external data sets; re-scoring the authors' published per-cell results gives ACTINN a
# pooled accuracy of 77.0 % over 73 test sets, second only to the authors' own graph neural network
# scDeepSort (82.0 %). A plain MLP is therefore a serious baseline, and a good one to understand in
# full.
#
# ### The data
#
# * **Reference** (training set): `pbmc3k`, 2,638 blood cells of a healthy donor, labelled with the
#   nine types of the Seurat tutorial (62 cells that the tutorial's quality control removed have no
#   label and are left out).
# * **Query** (test set): `kang_ifnb`, 2,800 blood cells of Kang et al. (2018), about half of them
#   untreated (CTRL) and half stimulated with interferon beta (STIM). Its 13 labels are renamed to pbmc3k's
#   names with `datasets.KANG_TO_PBMC3K`; four of them (activated T and B cells, plasmacytoid
#   dendritic cells, erythrocytes) have no counterpart in pbmc3k. Those cells still get a
#   prediction, but they cannot be scored.

# %%
pbmc = datasets.pbmc3k()
pbmc = pbmc[pbmc.obs["cell_type"].notna()].copy()
kang = datasets.kang_ifnb()
kang.obs["label"] = datasets.harmonize_labels(kang.obs["cell_type"], datasets.KANG_TO_PBMC3K, drop_unmapped=True)

y_train = pbmc.obs["cell_type"].astype(str).to_numpy()
y_kang = kang.obs["label"].astype(object).to_numpy()  # NaN where the type has no pbmc3k name
scored = kang.obs["label"].notna().to_numpy()
condition = kang.obs["condition"].astype(str).to_numpy()

# %%
# NBVAL_CHECK_OUTPUT
print(f"pbmc3k: {pbmc.n_obs:,} cells x {pbmc.n_vars:,} genes; Kang: {kang.n_obs:,} cells x {kang.n_vars:,} genes")
table = pd.DataFrame({
    "pbmc3k": pbmc.obs["cell_type"].astype(str).value_counts(),
    "Kang CTRL": kang.obs.loc[condition == "CTRL", "label"].astype(str).value_counts(),
    "Kang STIM": kang.obs.loc[condition == "STIM", "label"].astype(str).value_counts(),
}).fillna(0).astype(int)
table.index = [("(no pbmc3k type)" if i in ("nan", "None") else i) for i in table.index]
print(table.sort_values("pbmc3k", ascending=False).to_string())

# %% [markdown]
# ## 2. ACTINN's preprocessing
#
# The lecture summarises ACTINN's preprocessing in four steps. We follow the authors' code
# (`actinn_format.py` and `actinn_predict.py` on GitHub), which is what produced the paper's
# results, and note each place where it differs from the summary.
#
# ### 2.1 Only the genes that every data set has
#
# A classifier can only use features that the query also measures, so ACTINN keeps the genes
# present in all data sets. In the code, each data set first loses its repeated gene names and the
# genes with no count in any of its cells; names are compared in upper case.

# %%
# NBVAL_CHECK_OUTPUT
shared = pbmc.var_names.intersection(kang.var_names)
print(f"gene names in both data sets: {len(shared):,}")
no_counts_pbmc = int((np.asarray(pbmc[:, shared].X.sum(axis=0)).ravel() == 0).sum())
no_counts_kang = int((np.asarray(kang[:, shared].X.sum(axis=0)).ravel() == 0).sum())
print(f"of these, without a single count: {no_counts_pbmc} in pbmc3k, {no_counts_kang} in Kang")

# %% [markdown]
# ### 2.2 The per-cell normalisation
#
# Cells are sequenced to different depths, so raw counts $\tilde{\mathbf{x}}_i$ are first scaled by
# the cell's total $N_i = \sum_g \tilde{x}_{ig}$ (over the shared genes) to 10,000 counts, then
# log-transformed. The lecture writes
#
# $$\mathbf{x}_i = \log_2 \frac{10^4 \cdot (\tilde{\mathbf{x}}_i + \mathbf{1})}{N_i},$$
#
# while the code computes
#
# $$\mathbf{x}_i = \log_2 \left( \frac{10^4 \cdot \tilde{\mathbf{x}}_i}{N_i} + \mathbf{1} \right).$$
#
# The difference looks small, but it is not: in the code a gene with no counts stays at exactly 0,
# whereas the lecture's formula maps it to $\log_2(10^4 / N_i)$, a value that depends on the cell.
# Most entries of a single-cell matrix are zeros, so that offset is what most inputs of the network
# carry.
#
# **Exercise 1.** Write `normalize_counts(counts, variant="code")` for a NumPy array of counts
# (cells $\times$ genes): `variant="code"` gives the code's formula, `variant="lecture"` the
# lecture's. Return a float array of the same shape. You may assume every cell has at least one count.

# %% [solution] id=actinn-normalise
def normalize_counts(counts, variant="code"):
    """ACTINN's per-cell normalisation of a cells x genes count matrix (log base 2)."""
    ### BEGIN SOLUTION
    counts = np.asarray(counts, dtype=float)
    N = counts.sum(axis=1, keepdims=True)
    if variant == "code":
        return np.log2(1e4 * counts / N + 1)
    if variant == "lecture":
        return np.log2(1e4 * (counts + 1) / N)
    raise ValueError(f"variant must be 'code' or 'lecture', got {variant!r}")
    ### END SOLUTION

# %% [test] id=actinn-normalise-test points=2
import numpy as np

import sclecture.actinn
import sclecture.grading
from sclecture.grading import assert_close, assert_shape

record = sclecture.grading.recorder("actinn-normalise-test")
counts = np.array([[0, 1, 3], [2, 2, 4]])
code = record("normalize_counts(counts)", lambda: normalize_counts(counts))
assert_shape(code, (2, 3), name="normalize_counts(counts)")
assert_close(code, np.log2([[1, 2501, 7501], [2501, 2501, 5001]]), rtol=1e-6, name="variant='code'")
lecture = record("normalize_counts(counts, variant='lecture')", lambda: normalize_counts(counts, variant="lecture"))
assert_close(lecture, np.log2([[2500, 5000, 10000], [3750, 3750, 6250]]), rtol=1e-6, name="variant='lecture'")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(31)
for variant in ["code", "lecture"]:
    for shape in [(1, 5), (7, 40), (25, 3)]:
        X = rng.poisson(rng.gamma(0.5, 2.0, size=shape[1]), size=shape)
        X[:, 0] += 1  # every cell has a count
        X0 = X.copy()
        assert_close(record(f"normalize_counts {shape}, {variant}", lambda: normalize_counts(X, variant=variant)),
                     sclecture.actinn.normalize(X0, variant), rtol=1e-5, atol=1e-5,
                     name=f"normalize_counts on random {shape} counts, variant={variant!r}")
X = rng.poisson(3.0, size=(4, 6)).astype(float) + 1
before = X.copy()
assert_close(record("the input after normalize_counts", lambda: (normalize_counts(X), X)[1]), before, rtol=0, atol=0,
             name="the input matrix (normalize_counts must not modify it)")
### END HIDDEN TESTS

# %% [markdown]
# How large is the lecture's offset on real cells? The cell with the most counts and the one with
# the fewest show the range:

# %%
normalize_counts_ = fallback(normalize_counts, actinn.normalize)

# %%
# NBVAL_CHECK_OUTPUT
counts = pbmc[:, shared].X.toarray()
N = counts.sum(axis=1)
extremes = counts[[N.argmax(), N.argmin()]]
for variant in ["code", "lecture"]:
    x = normalize_counts_(extremes, variant=variant)
    deep, shallow = x[0][extremes[0] == 0][0], x[1][extremes[1] == 0][0]
    print(f"{variant:>8}: a zero count becomes {deep:.2f} in the deepest cell (N = {N.max():,.0f}) "
          f"and {shallow:.2f} in the shallowest (N = {N.min():,.0f})")
print(f"share of zeros in pbmc3k over the shared genes: {np.mean(counts == 0):.3f}")
del counts

# %% [markdown]
# ### 2.3 Dropping genes at the extremes
#
# The lecture says: ignore the genes with the highest and lowest 1 % of mean expression, then those
# with the highest and lowest 1 % of standard deviation. The code does this on the normalised
# values of the **training and test cells together**:
#
# 1. $s_g = \sum_i x_{ig}$, the summed expression of gene $g$ (the mean up to a constant); keep the
#    genes with $P_1(s) \le s_g \le P_{99}(s)$, where $P_q$ is the $q$-th percentile over genes;
# 2. among those, $c_g = \mathrm{std}_g / \mathrm{mean}_g$, the **coefficient of variation** (not the
#    standard deviation); keep the genes with $P_1(c) \le c_g \le P_{99}(c)$.
#
# There is a trap. A gene with no counts in any cell has mean 0, so $c_g = 0/0$ = NaN; a single NaN
# makes `np.percentile` return NaN, every comparison with NaN is `False`, and **no gene survives**.
# The original code never meets it because `actinn_format.py` has already removed such genes; a
# filter that can be called on its own must guard against it.
#
# **Exercise 2.** Write `filter_genes(X, variant="code")` for a normalised matrix `X` (cells
# $\times$ genes) returning a boolean mask over the genes. First exclude every gene whose values are
# all 0; then apply steps 1 and 2 to the remaining genes, with `np.percentile` (its default linear
# interpolation), inclusive bounds and the standard deviation with `ddof=0` (NumPy's default). With
# `variant="lecture"`, step 2 uses the standard deviation instead of the coefficient of variation.

# %% [solution] id=actinn-filter
def filter_genes(X, variant="code"):
    """Boolean mask of the genes (columns of X) that ACTINN's percentile filter keeps."""
    ### BEGIN SOLUTION
    X = np.asarray(X, dtype=float)
    idx = np.flatnonzero(np.any(X != 0, axis=0))  # the guard: all-zero genes have no CV
    s = X[:, idx].sum(axis=0)
    idx = idx[(s >= np.percentile(s, 1)) & (s <= np.percentile(s, 99))]
    sd = X[:, idx].std(axis=0)
    c = sd / X[:, idx].mean(axis=0) if variant == "code" else sd
    idx = idx[(c >= np.percentile(c, 1)) & (c <= np.percentile(c, 99))]
    mask = np.zeros(X.shape[1], dtype=bool)
    mask[idx] = True
    return mask
    ### END SOLUTION

# %% [test] id=actinn-filter-test points=3
import numpy as np

import sclecture.actinn
import sclecture.grading
from sclecture.grading import assert_equal, assert_shape

record = sclecture.grading.recorder("actinn-filter-test")
# Gene g = 0..100 takes the values a_g (1 - b_g), a_g (1 + b_g), a_g (1 - b_g), a_g (1 + b_g) in the
# four cells: its sum is 4 a_g and its CV is b_g. Two more genes (the first two columns) are all-zero.
a = np.arange(1, 102, dtype=float)
b = ((np.arange(101) * 37) % 101 + 1) / 102  # distinct CVs in (0, 1), in shuffled order
X = np.zeros((4, 103))
X[:, 2:] = a * (1 + np.outer([-1, 1, -1, 1], b))
mask = np.asarray(record("filter_genes(X)", lambda: filter_genes(X)))
assert_shape(mask, (103,), name="filter_genes(X)")
assert mask.dtype == bool, f"filter_genes must return a boolean mask, got dtype {mask.dtype}"
assert not mask[:2].any(), "genes with no expression in any cell must be dropped first (their CV is 0/0)"
expected = np.ones(103, dtype=bool)
expected[[0, 1]] = False  # all-zero
expected[[2 + 0, 2 + 100]] = False  # step 1: the lowest and the highest sum (P_1 and P_99 of 101 sums)
rest = np.arange(1, 100)
expected[[2 + rest[np.argmin(b[rest])], 2 + rest[np.argmax(b[rest])]]] = False  # step 2: lowest and highest CV
assert_equal(mask, expected, name="the mask of 101 genes with known sums and CVs")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(32)
for variant in ["code", "lecture"]:
    for n_cells, n_genes in [(30, 400), (12, 150), (60, 1000)]:
        # continuous values, dense enough that no two genes tie on a statistic
        X = rng.gamma(0.7, 1.5, size=(n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < 0.7)
        X[:, rng.choice(n_genes, size=n_genes // 20, replace=False)] = 0.0  # 5 % all-zero genes
        X0 = X.copy()
        assert_equal(record(f"filter_genes {n_cells} x {n_genes}, {variant}", lambda: filter_genes(X, variant=variant)),
                     sclecture.actinn.filter_genes(X0, variant=variant),
                     name=f"filter_genes on a random {n_cells} x {n_genes} matrix, variant={variant!r}")
    X = rng.normal(size=(20, 300))  # the lecture's normalisation gives negative values too
    X0 = X.copy()
    assert_equal(record(f"filter_genes with negative values ({variant} loop)", lambda: filter_genes(X, variant="lecture")),
                 sclecture.actinn.filter_genes(X0, variant="lecture"),
                 name="filter_genes with negative values, variant='lecture'")
### END HIDDEN TESTS

# %% [markdown]
# The trap is real. Take a quarter of pbmc3k's cells with all of its 32,738 genes, as one would when
# cross-validating within pbmc3k, and apply the original rules without the guard:

# %%
filter_genes_ = fallback(filter_genes, actinn.filter_genes)

# %%
# NBVAL_CHECK_OUTPUT
X_quarter = normalize_counts_(pbmc.X[::4].toarray())
print(f"{X_quarter.shape[0]} cells x {X_quarter.shape[1]:,} genes, of which {int((X_quarter.sum(axis=0) == 0).sum()):,} have no counts")
with np.errstate(invalid="ignore"):
    s = X_quarter.sum(axis=0)
    kept = X_quarter[:, (s >= np.percentile(s, 1)) & (s <= np.percentile(s, 99))]
    cv = kept.std(axis=0) / kept.mean(axis=0)
    print(f"unguarded: 1st percentile of the CV = {np.percentile(cv, 1)}, genes kept: "
          f"{int(((cv >= np.percentile(cv, 1)) & (cv <= np.percentile(cv, 99))).sum())}")
print(f"with the guard: genes kept: {int(filter_genes_(X_quarter).sum()):,}")
del X_quarter, kept

# %% [markdown]
# `actinn.actinn_preprocess` runs the whole pipeline: per data set, upper-case names, no repeated
# names, no all-zero genes; the shared genes in sorted order (so the order of the genes in either
# input does not matter); the normalisation; the filter on both sets together. It returns the two
# matrices and the names of the genes kept.

# %%
start = time.perf_counter()
features = actinn.actinn_preprocess(pbmc, kang, variant="code")
print(f"preprocessing took {time.perf_counter() - start:.1f} s")

# %%
# NBVAL_CHECK_OUTPUT
print(f"training matrix {features.train.shape}, test matrix {features.test.shape}, genes kept: {len(features.genes):,}")
print("first genes:", ", ".join(features.genes[:6]))

# %% [markdown]
# **Written answer.** The gene filter above looked at the test cells as well as the training cells.
# What does that mean for using ACTINN in practice, say in a lab that annotates every new
# experiment with a model trained once on a reference atlas? Name at least two consequences, and
# say how you would change the pipeline to avoid them.

# %% [answer] id=actinn-deployment points=2
# *Model answer.* Because the kept genes depend on the query, the network's input layer changes
# with every new data set: there is no single trained model that can be stored, shared, validated
# once and reused. ACTINN therefore retrains for every query, which costs time and adds the
# randomness of a new fit. The prediction for a given cell also depends on which other cells are
# analysed with it (adding or removing a sample can change the gene set and hence the labels), so
# results are harder to reproduce, and cells that arrive one at a time cannot be annotated. In an
# evaluation, test cells influence the features the model is trained on, a mild leak (no labels
# are used, but the test distribution is), so the measured accuracy may be slightly optimistic.
# The fix is to choose the genes on the reference alone, store that gene list with the trained
# weights, and map every query onto it (a gene the query lacks is set to zero, and a warning says
# how many are missing).

# %% [markdown]
# ## 3. The network and its likelihood
#
# ACTINN's classifier is an MLP with three hidden layers of widths 100, 50 and 25,
#
# $$\mathbf{y} = \mathbf{f}_4(\mathbf{f}_3(\mathbf{f}_2(\mathbf{f}_1(\mathbf{x}; \boldsymbol{\theta}_1); \boldsymbol{\theta}_2); \boldsymbol{\theta}_3); \boldsymbol{\theta}_4),$$
#
# with $\mathrm{Relu}(h) = \max(0, h)$ after each hidden layer and the softmax after the last one,
#
# $$\mathrm{softmax}(\mathbf{h}) = \left( \frac{\exp(h_1)}{\sum_{j=1}^k \exp(h_j)}, \dots, \frac{\exp(h_k)}{\sum_{j=1}^k \exp(h_j)} \right),$$
#
# which turns the $k$ outputs $\mathbf{h}$ of the last linear layer (the *logits*) into $k$
# probabilities that sum to one. The categorical likelihood, the multi-class version of the
# Bernoulli likelihood of lesson 02, is
#
# $$\mathcal{L}(\boldsymbol{\theta}) = \prod_{i=1}^n \mathrm{softmax}(\mathbf{h}_i)_{y_i}, \qquad
# -\frac{1}{n} \log \mathcal{L}(\boldsymbol{\theta}) = -\frac{1}{n} \sum_{i=1}^n \log \mathrm{softmax}(\mathbf{h}_i)_{y_i},$$
#
# the mean *cross-entropy*. The code adds an L2 penalty on the weight matrices (not the biases),
# $\lambda \sum_{l=1}^4 \lVert \mathbf{W}_l \rVert^2 / 2$ with $\lambda = 0.005$ (TensorFlow's
# `l2_loss` halves the sum of squares). In `sclecture` the network is `actinn.ACTINNNet`, built with
# lesson 02's `make_torch_mlp`; it outputs logits and leaves the softmax to the loss, because
# $\log \mathrm{softmax}$ computed in one step (`torch.log_softmax`) is stable where
# $\log(\mathrm{softmax}(\cdot))$ can give $\log 0$.

# %%
# NBVAL_CHECK_OUTPUT
net = actinn.ACTINNNet(n_genes=len(features.genes), n_types=9)
print(net.mlp)
print(f"parameters: {sum(p.numel() for p in net.parameters()):,}, "
      f"of which the first layer holds {net.mlp[0].weight.numel() + net.mlp[0].bias.numel():,}")

# %% [markdown]
# **Exercise 3.** Write `actinn_loss(logits, y, weights, l2=0.005)` in torch: `logits` is an
# $n \times k$ tensor, `y` holds the $n$ class indices (integers from 0 to $k-1$) and `weights` is a
# list of weight tensors. Return the scalar tensor
# $-\frac{1}{n} \sum_i \log \mathrm{softmax}(\mathbf{h}_i)_{y_i} + \lambda \sum_l \lVert \mathbf{W}_l \rVert^2 / 2$.
# Use `torch.log_softmax`, and keep everything in torch so that gradients flow.

# %% [solution] id=actinn-loss
def actinn_loss(logits, y, weights, l2=0.005):
    """Mean softmax cross-entropy plus l2 * sum_l ||W_l||^2 / 2."""
    ### BEGIN SOLUTION
    y = torch.as_tensor(y).long()
    nll = -torch.log_softmax(logits, dim=1)[torch.arange(len(y)), y].mean()
    penalty = sum(W.pow(2).sum() / 2 for W in weights)
    return nll + l2 * penalty
    ### END SOLUTION

# %% [test] id=actinn-loss-test points=3
import math

import torch

import sclecture.actinn
import sclecture.grading
from sclecture.grading import assert_close, value_and_grad

record = sclecture.grading.recorder("actinn-loss-test")
logits = torch.zeros(4, 3)
y = torch.tensor([0, 1, 2, 0])
assert_close(float(record("uniform predictions", lambda: actinn_loss(logits, y, [], l2=0.005))), math.log(3), rtol=1e-6,
             name="the loss of uniform predictions over 3 classes (should be log 3)")
W = [torch.ones(2, 2), torch.full((1, 3), 2.0)]
assert_close(float(record("with the L2 term", lambda: actinn_loss(logits, y, W, l2=0.5))), math.log(3) + 0.5 * (4 + 12) / 2,
             rtol=1e-6, name="the loss with the L2 term (0.5 * sum W^2 / 2 = 4)")
logits = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
assert_close(float(record("the cross-entropy of two cells", lambda: actinn_loss(logits, torch.tensor([0, 1]), [], l2=0.0))),
             (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-3))) / 2, rtol=1e-6, name="the cross-entropy of two cells")
### BEGIN HIDDEN TESTS
gen = torch.Generator().manual_seed(33)
for n, k, l2 in [(1, 2, 0.005), (50, 9, 0.005), (17, 4, 0.3)]:
    logits = (5 * torch.randn(n, k, generator=gen, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(0, k, (n,), generator=gen)
    Ws = [torch.randn(6, 5, generator=gen, dtype=torch.float64, requires_grad=True),
          torch.randn(3, 6, generator=gen, dtype=torch.float64, requires_grad=True)]
    got, g_got = record(f"actinn_loss and its gradients, n={n}, k={k}, l2={l2}",
                        lambda: value_and_grad(lambda: actinn_loss(logits, y, Ws, l2=l2), [logits, *Ws]))
    want = sclecture.actinn.actinn_loss(logits, y, Ws, l2=l2)
    assert isinstance(got, torch.Tensor) and got.dim() == 0, "actinn_loss must return a scalar (0-d) torch tensor"
    assert g_got is not None, "actinn_loss must stay differentiable (no .item(), .detach() or NumPy inside)"
    assert_close(got.item(), want.item(), rtol=1e-9, name=f"actinn_loss for n={n}, k={k}, l2={l2}")
    g_want = torch.autograd.grad(want, [logits, *Ws])
    for name, a, b in zip(["logits", "W_1", "W_2"], g_got, g_want):
        assert a is not None, f"actinn_loss does not depend on {name}"
        assert_close(a, b, rtol=1e-8, atol=1e-12, name=f"the gradient of actinn_loss with respect to {name}")
big = torch.tensor([[1000.0, 0.0, -1000.0]], dtype=torch.float64)
assert_close(float(record("extreme logits", lambda: actinn_loss(big, torch.tensor([2]), [], l2=0.0))), 2000.0, rtol=1e-9,
             name="the loss for extreme logits (use log_softmax, not log(softmax))")
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Training: Adam with a staircase decay
#
# The lecture fits an MLP by following the gradient of $\log \mathcal{L}$,
# $\boldsymbol{\theta}^{(s+1)} := \boldsymbol{\theta}^{(s)} + \Delta\, \partial \log \mathcal{L} / \partial \boldsymbol{\theta}$,
# one minibatch at a time. ACTINN's code uses Adam, which scales each parameter's step by running
# averages of its gradients, with minibatches of 128 cells, 50 epochs, Xavier (Glorot) initial
# weights, and a learning rate that starts at $\Delta_0 = 10^{-4}$ and is multiplied by 0.95 after
# every 1,000 minibatch steps:
#
# $$\Delta_s = \Delta_0 \cdot 0.95^{\lfloor s / 1000 \rfloor}, \qquad s = 0, 1, 2, \dots$$
#
# (TensorFlow's `exponential_decay` with `staircase=True`).
#
# **Exercise 4.** Write `staircase_lr(step, lr=1e-4, decay_rate=0.95, decay_steps=1000)` returning
# $\Delta_s$ as a Python float.

# %% [solution] id=actinn-schedule
def staircase_lr(step, lr=1e-4, decay_rate=0.95, decay_steps=1000):
    """The learning rate at minibatch step `step` (counted from 0)."""
    ### BEGIN SOLUTION
    return float(lr * decay_rate ** (step // decay_steps))
    ### END SOLUTION

# %% [test] id=actinn-schedule-test points=2
import numpy as np

import sclecture.actinn
import sclecture.grading
from sclecture.grading import assert_close

record = sclecture.grading.recorder("actinn-schedule-test")
assert_close(record("staircase_lr(0)", lambda: staircase_lr(0)), 1e-4, rtol=1e-12, name="staircase_lr(0)")
assert_close(record("staircase_lr(999)", lambda: staircase_lr(999)), 1e-4, rtol=1e-12,
             name="staircase_lr(999) (no decay before step 1000)")
assert_close(record("staircase_lr(1000)", lambda: staircase_lr(1000)), 0.95e-4, rtol=1e-12, name="staircase_lr(1000)")
assert_close(record("staircase_lr(2500, ...)", lambda: staircase_lr(2500, lr=0.1, decay_rate=0.5, decay_steps=1000)), 0.025,
             rtol=1e-12, name="staircase_lr(2500, lr=0.1, decay_rate=0.5, decay_steps=1000)")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(34)
for _ in range(30):
    step, decay_steps = int(rng.integers(0, 100_000)), int(rng.integers(1, 5000))
    lr, rate = float(rng.uniform(1e-5, 1.0)), float(rng.uniform(0.1, 1.0))
    assert_close(record(f"staircase_lr({step}, {lr}, {rate}, {decay_steps})",
                        lambda: staircase_lr(step, lr=lr, decay_rate=rate, decay_steps=decay_steps)),
                 sclecture.actinn.staircase_lr(step, lr=lr, decay_rate=rate, decay_steps=decay_steps), rtol=1e-10,
                 name=f"staircase_lr({step}, lr={lr:.3g}, decay_rate={rate:.3g}, decay_steps={decay_steps})")
for step in [999, 1000, 1001, 1999, 2000]:
    assert_close(record(f"staircase_lr({step})", lambda: staircase_lr(step)), sclecture.actinn.staircase_lr(step),
                 rtol=1e-12, name=f"staircase_lr({step}) at a step boundary")
### END HIDDEN TESTS

# %% [markdown]
# How many steps does the published recipe take on pbmc3k? Each epoch has
# $\lceil 2638 / 128 \rceil = 21$ minibatches, so 50 epochs make 1,050 steps, and the decay
# happens once, near the end:

# %%
staircase_lr_ = fallback(staircase_lr, actinn.staircase_lr)

# %%
# NBVAL_CHECK_OUTPUT
steps = 50 * int(np.ceil(pbmc.n_obs / 128))
print(f"steps: {steps}; learning rate at step 0: {staircase_lr_(0):.3g}, at step {steps - 1}: {staircase_lr_(steps - 1):.3g}")
print(f"the paper's data sets are larger: 100,000 reference cells would give {50 * int(np.ceil(1e5 / 128)):,} steps, "
      f"ending at {staircase_lr_(50 * int(np.ceil(1e5 / 128)) - 1):.2g}")

# %% [markdown]
# `actinn.ACTINN` puts it together with the course's training loop (`sclecture.training.train`):
# Xavier initialisation, Adam, the staircase schedule, the loss of exercise 3. Its defaults are the
# published settings. `fit` takes the training matrix and the labels; `classes_` lists the cell
# types in sorted order. (The original numbers the types in the order of a Python `set`, which can
# change from one run to the next; sorting makes runs comparable.)

# %%
start = time.perf_counter()
model = actinn.ACTINN(epochs=n_epochs(50, 2), random_state=0, progress=True).fit(features.train, y_train)
print(f"{model.n_steps_} steps in {time.perf_counter() - start:.1f} s")

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.04
print("classes:", ", ".join(model.classes_))
print(f"after {model.history_.n_epochs} epochs: mean cross-entropy {model.history_['nll'][-1]:.3f}, "
      f"L2 term {model.history_['l2'][-1]:.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
model.history_.plot(keys=["loss", "nll"], ax=axes[0], logy=True, title="training loss per epoch")
axes[1].plot(model.history_.step_loss, lw=0.6)
axes[1].set(xlabel="minibatch step", ylabel="loss", yscale="log", title="every step")
plt.tight_layout()
plt.show()

# %% [markdown]
# The cross-entropy falls close to zero: the network fits its training cells almost perfectly, and
# what remains of the loss is mostly the L2 penalty. How well it does on cells it has not seen is
# the real question.
#
# ## 5. Scoring the predictions
#
# Accuracy, the share of cells with the right label, is dominated by the large types. The
# **macro-F1** gives every type the same weight: for type $j$, with $\mathrm{TP}_j$ cells of type $j$
# predicted as $j$, $\mathrm{FP}_j$ cells of other types predicted as $j$ and $\mathrm{FN}_j$ cells
# of type $j$ predicted as something else,
#
# $$F_{1,j} = \frac{2\,\mathrm{TP}_j}{2\,\mathrm{TP}_j + \mathrm{FP}_j + \mathrm{FN}_j},
# \qquad \text{macro-}F_1 = \frac{1}{|J|} \sum_{j \in J} F_{1,j},$$
#
# where $J$ is the set of labels that occur in the true or in the predicted labels (scikit-learn's
# convention; a label that never occurs in either is left out).
#
# **Exercise 5.** Write `accuracy_macro_f1(y_true, y_pred)` returning the pair
# `(accuracy, macro_f1)` as Python floats, for two equally long arrays of labels (strings or
# integers). A type with $2\,\mathrm{TP}_j + \mathrm{FP}_j + \mathrm{FN}_j = 0$ cannot occur in $J$,
# so there is no division by zero.

# %% [solution] id=actinn-metrics
def accuracy_macro_f1(y_true, y_pred):
    """(accuracy, macro-F1) of predicted labels."""
    ### BEGIN SOLUTION
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    accuracy = float(np.mean(y_true == y_pred))
    f1 = []
    for c in set(y_true.tolist()) | set(y_pred.tolist()):
        tp = np.sum((y_true == c) & (y_pred == c))
        f1.append(2 * tp / (np.sum(y_true == c) + np.sum(y_pred == c)))
    return accuracy, float(np.mean(f1))
    ### END SOLUTION

# %% [test] id=actinn-metrics-test points=2
import numpy as np

import sclecture.actinn
import sclecture.grading
from sclecture.grading import assert_close

record = sclecture.grading.recorder("actinn-metrics-test")
acc, f1 = record("3 right out of 4", lambda: accuracy_macro_f1(["B", "B", "T", "T"], ["B", "T", "T", "T"]))
assert_close(acc, 0.75, name="accuracy of 3 right out of 4")
assert_close(f1, (2 / 3 + 0.8) / 2, rtol=1e-9, name="macro-F1 (F1_B = 2/3, F1_T = 4/5)")
acc, f1 = record("a label only predicted", lambda: accuracy_macro_f1(np.array([0, 1, 2]), np.array([0, 1, 3])))
assert_close(f1, (1 + 1 + 0 + 0) / 4, rtol=1e-9, name="macro-F1 when a label is only predicted (it counts, with F1 = 0)")
assert isinstance(acc, float) and isinstance(f1, float), "return two Python floats"
### BEGIN HIDDEN TESTS
from sklearn.metrics import f1_score

rng = np.random.default_rng(35)
for n, labels in [(1, ["a"]), (50, ["CD14+ Mono", "B", "NK"]), (400, list("abcdefgh"))]:
    t = rng.choice(labels, size=n)
    p = np.where(rng.random(n) < 0.7, t, rng.choice(labels + ["other"], size=n))
    got = record(f"accuracy_macro_f1 on {n} random labels", lambda: accuracy_macro_f1(t, p))
    want = sclecture.actinn.accuracy_macro_f1(t, p)
    assert_close(list(got), list(want), rtol=1e-9, name=f"(accuracy, macro-F1) on {n} random labels")
    assert_close(got[1], f1_score(t, p, average="macro", zero_division=0.0), rtol=1e-9,
                 name="macro-F1 against scikit-learn's f1_score(average='macro')")
### END HIDDEN TESTS

# %% [markdown]
# Now the query. We score the control and the stimulated cells separately, on the cells whose type
# exists in pbmc3k.

# %%
accuracy_macro_f1_ = fallback(accuracy_macro_f1, actinn.accuracy_macro_f1)


def kang_scores(pred):
    """(accuracy, macro-F1) on the scorable Kang cells, CTRL and STIM separately."""
    return {cond: accuracy_macro_f1_(y_kang[scored & (condition == cond)], pred[scored & (condition == cond)])
            for cond in ["CTRL", "STIM"]}


def show(results):
    """Print a table of Kang scores, one row per method."""
    print(f"{'':<32}{'CTRL acc':>9}{'CTRL F1':>9}{'STIM acc':>9}{'STIM F1':>9}")
    for name, res in results.items():
        print(f"{name:<32}" + "".join(f"{v:>9.3f}" for cond in ["CTRL", "STIM"] for v in res[cond]))


start = time.perf_counter()
pred_kang = model.predict(features.test)
print(f"prediction: {features.test.shape[0] / (time.perf_counter() - start):,.0f} cells/s")

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.1
results = {"ACTINN (published settings)": kang_scores(pred_kang)}
show(results)

# %%
# (not compared by the notebook checks: the F1 of a rare type moves a lot with the seed)
f1_types = pd.DataFrame({cond: actinn.per_class_f1(y_kang[scored & (condition == cond)], pred_kang[scored & (condition == cond)])
                         for cond in ["CTRL", "STIM"]})
f1_types["cells (CTRL/STIM)"] = [f"{int(np.sum(scored & (condition == 'CTRL') & (y_kang == t)))}/"
                                 f"{int(np.sum(scored & (condition == 'STIM') & (y_kang == t)))}" for t in f1_types.index]
print("\nF1 per cell type:")
print(f1_types.to_string(float_format=lambda v: f"{v:.3f}"))

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 5))
for ax, cond in zip(axes, ["CTRL", "STIM"]):
    sel = scored & (condition == cond)
    sclecture.plotting.plot_confusion(y_kang[sel], pred_kang[sel], labels=list(model.classes_), ax=ax, title=f"Kang {cond}")
plt.tight_layout()
plt.show()

# %% [markdown]
# What do the cells whose type pbmc3k lacks become? A closed-set classifier has no "unknown"
# answer; it picks the nearest type it knows:

# %%
unknown = ~scored
became = pd.crosstab(pd.Series(kang.obs["cell_type"].astype(str).to_numpy()[unknown], name="Kang type"),
                     pd.Series(pred_kang[unknown], name="predicted as"))
print(became.to_string())
expect_result(became.loc["T activated"].idxmax() in ("Memory CD4 T", "Naive CD4 T") and became.loc["B Activated"].idxmax() == "B",
              "activated T cells become memory or naive CD4 T cells, activated B cells become B cells")

# %% [markdown]
# Read the confusion matrices row by row. B cells and both kinds of monocytes transfer well, even
# after stimulation. The T cells do not: naive against memory CD4 T cells, and CD8 against CD4 T
# cells, are told apart in pbmc3k by a handful of genes, and two data sets (different donors, a
# different protocol, a different annotator) need not draw those lines in the same place.
# Platelets fail because the reference has only 14 of them, and dendritic cells (32) transfer only
# moderately. Stimulation costs most where the differences are subtle: interferon beta switches on
# hundreds of interferon-stimulated genes in nearly every cell, so stimulated cells lie away from
# every cell the network has seen, and the naive CD4 T cells lose most. The cells of the four types
# that pbmc3k lacks are forced into the nearest known type (activated T cells become memory or naive
# CD4 T cells, activated B cells become B cells). A classifier is only as good as the match between
# its reference and the cells it is asked about.
#
# ## 6. How good is ACTINN here? Three comparisons
#
# ### 6.1 Simpler models on the same features
#
# Is the deep network needed? Multinomial logistic regression (a single softmax layer, lesson 01's
# model with $k$ classes) and scikit-learn's `MLPClassifier` with the same hidden widths (ReLU,
# Adam, learning rate $10^{-3}$, a small L2 penalty, stopping when the training loss stalls) get
# exactly the same matrices.

# %%
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

# scikit-learn computes with NumPy's BLAS (OpenBLAS). For problems of this size one BLAS thread
# is several times faster than two when other programs keep the CPU busy, so from here on NumPy
# uses one (torch keeps its own threads).
threadpool_limits(1, user_api="blas")

baselines = {
    "logistic regression (softmax)": LogisticRegression(max_iter=n_epochs(1000, 20)),
    "MLPClassifier((100, 50, 25))": MLPClassifier((100, 50, 25), max_iter=n_epochs(200, 2), random_state=0),
}
for name, clf in baselines.items():
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quick mode stops before convergence
        clf.fit(features.train, y_train)
    results[name] = kang_scores(clf.predict(features.test))
    print(f"{name}: fitted in {time.perf_counter() - start:.1f} s")

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.2
show(results)
expect_result(results["ACTINN (published settings)"]["STIM"][0] > results["logistic regression (softmax)"]["STIM"][0] + 0.1,
              "the network transfers to stimulated cells far better than logistic regression")

# %% [markdown]
# The same three models can also be compared within pbmc3k, where reference and test cells come
# from the same experiment. Five-fold cross-validation of all three would cost about three more
# minutes on a CPU, so here we hold out one fifth of the cells (one fold of a stratified five-fold
# split) and reuse the features above (whose genes were chosen with all cells, as ACTINN would
# choose them). The full five-fold comparison, with the genes chosen per fold, is in
# `benchmarks/bench_actinn.py`; its results are quoted in section 6.3.

# %%
from sklearn.model_selection import StratifiedKFold

train_idx, test_idx = next(StratifiedKFold(5, shuffle=True, random_state=0).split(features.train, y_train))
within = {}
candidates = {"ACTINN (published settings)": actinn.ACTINN(epochs=n_epochs(50, 2), random_state=0), **baselines}
for name, clf in candidates.items():
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(features.train[train_idx], y_train[train_idx])
    within[name] = accuracy_macro_f1_(y_train[test_idx], clf.predict(features.train[test_idx]))
    print(f"{name}: fitted in {time.perf_counter() - start:.1f} s")

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.07
print(f"pbmc3k, {len(test_idx)} held-out cells:")
for name, (acc, f1) in within.items():
    print(f"{name:<32} accuracy {acc:.3f}   macro-F1 {f1:.3f}")
accuracies = [acc for acc, _ in within.values()]
expect_result(max(accuracies) - min(accuracies) < 0.05, "within pbmc3k the three models are about equally accurate")

# %% [markdown]
# ### 6.2 The lecture's normalisation
#
# What does the $+1$ in the wrong place cost? We repeat the whole pipeline with
# `variant="lecture"`: the lecture's normalisation and the lecture's filter (standard deviation
# instead of the coefficient of variation).

# %%
features_lecture = actinn.actinn_preprocess(pbmc, kang, variant="lecture")
start = time.perf_counter()
model_lecture = actinn.ACTINN(epochs=n_epochs(50, 2), random_state=0).fit(features_lecture.train, y_train)
print(f"fitted in {time.perf_counter() - start:.1f} s")

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.2
print(f"genes kept: {len(features_lecture.genes):,}; inputs range from {features_lecture.train.min():.2f} to {features_lecture.train.max():.2f}")
results["ACTINN, lecture normalisation"] = kang_scores(model_lecture.predict(features_lecture.test))
show({k: results[k] for k in ["ACTINN (published settings)", "ACTINN, lecture normalisation"]})
del features_lecture
published, lecture = results["ACTINN (published settings)"], results["ACTINN, lecture normalisation"]
expect_result(all(lecture[c][1] < 0.35 and lecture[c][1] < published[c][1] - 0.2 and lecture[c][0] < published[c][0] - 0.05
                  for c in ["CTRL", "STIM"]),
              "the lecture's normalisation loses most cell types (macro-F1 near 0.2) and accuracy")

# %% [markdown]
# With the lecture's formula, the 94 % of entries that are zero counts all carry a cell-specific
# offset, between 0.2 and 4.2 on pbmc3k (section 2.2), so the first layer mostly sees how deeply
# each cell was sequenced, and the few informative values are buried under it. With a learning
# rate of $10^{-4}$ and about a thousand steps, the network does not learn to look past it, and
# most types are lost (macro-F1 near 0.2). Slides are summaries; when a method's results matter,
# read its code.
#
# ### 6.3 Are the published training settings right for a small reference?
#
# Fifty epochs of 21 minibatches are only about 1,000 Adam steps at a learning rate of $10^{-4}$.
# The recipe counts epochs, not steps, so a reference of tens of thousands of cells would get tens
# of thousands of steps from it, and a small one like pbmc3k gets very few. One way to give the
# network more learning on pbmc3k is a ten times larger learning rate, at the same cost. Does it
# help?

# %%
start = time.perf_counter()
model_fast = actinn.ACTINN(lr=1e-3, epochs=n_epochs(50, 2), random_state=0).fit(features.train, y_train)
print(f"fitted in {time.perf_counter() - start:.1f} s")

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.2
results["ACTINN, learning rate 1e-3"] = kang_scores(model_fast.predict(features.test))
show(results)
expect_result(results["ACTINN, learning rate 1e-3"]["STIM"][0] < results["ACTINN (published settings)"]["STIM"][0],
              "the larger learning rate transfers worse to the stimulated cells")

# %%
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(np.arange(1, model.history_.n_epochs + 1), model.history_["nll"], label="lr 1e-4 (published)")
ax.plot(np.arange(1, model_fast.history_.n_epochs + 1), model_fast.history_["nll"], label="lr 1e-3")
ax.set(xlabel="epoch", ylabel="mean cross-entropy (training)", yscale="log")
ax.legend(frameon=False)
plt.show()

# %% [markdown]
# One fit per setting says little, because a network's result depends on its random initial
# weights and on the order of its minibatches. `benchmarks/bench_actinn.py` repeats the fits of
# this section with three seeds and runs the five-fold cross-validation within pbmc3k, with the
# genes chosen anew for every fold. On this course's machine it found:
#
# | method | Kang CTRL accuracy | Kang STIM accuracy | pbmc3k 5-fold accuracy | 5-fold macro-F1 |
# |---|---|---|---|---|
# | ACTINN, published settings (lr $10^{-4}$) | 0.796 (0.791 to 0.796) | 0.693 (0.690 to 0.694) | 0.855 | 0.845 |
# | ACTINN, lr $10^{-3}$ | 0.777 (0.761 to 0.784) | 0.650 (0.622 to 0.673) | 0.861 | 0.865 |
# | ACTINN, lecture normalisation | 0.566 (0.551 to 0.634) | 0.553 (0.551 to 0.606) | 0.525 | 0.300 |
# | logistic regression (softmax) | 0.738 | 0.481 | 0.873 | 0.886 |
# | `MLPClassifier((100, 50, 25))` | 0.795 (0.786 to 0.821) | 0.608 (0.519 to 0.730) | 0.854 | 0.850 |
#
# (Kang: the median of three seeds, with the lowest and highest in brackets; logistic regression
# has no seed. Cross-validation: the mean over five folds, seed 0. The notebook's own numbers above
# differ slightly for the stimulated cells because it runs with two threads instead of one.)
#
# What the numbers say:
#
# * **Within one data set, depth buys nothing here.** All models reach 0.85 to 0.87, and the linear
#   softmax model is the best of them, with the highest macro-F1 too: 2,638 cells do not support
#   more than a linear boundary in 12,500 dimensions.
# * **Across data sets, the networks transfer better**, above all to the stimulated cells (ACTINN
#   0.69 against 0.48 for logistic regression), but they differ in how much they depend on the
#   seed: the accuracy of ACTINN with its published settings moves by at most 0.005, scikit-learn's MLP
#   (learning rate $10^{-3}$, trained until its loss stalls) ranges from 0.52 to 0.73 on the
#   stimulated cells.
# * **More learning fits the reference, not the other experiment.** The ten times larger learning
#   rate drives the training loss down faster and gains a little within pbmc3k (cross-validated
#   accuracy 0.861 against 0.855, macro-F1 0.865 against 0.845), but it transfers worse to Kang
#   (0.777 and 0.650 against 0.796 and 0.693) and makes the result depend more on the seed. The
#   short, slow training of the published recipe (about 1,000 steps at $10^{-4}$) acts like early
#   stopping: it fits the reference less closely, and that is what travels best to other data.
#
# So `actinn.ACTINN` keeps the paper's values as its defaults: they reproduce the method, and on
# data from another experiment they are the best setting we tried. `lr=1e-3` remains available for
# larger references or longer schedules, where a run of 1,000 steps at $10^{-4}$ would stop far too
# early; judge it, as any setting, over several seeds and on data from another experiment.
#
# ## Summary
#
# * Supervised cell-type identification trains a classifier $p(y \mid \mathbf{x})$ on a labelled
#   reference and applies it to new cells; it is only as good as the match between the two.
# * ACTINN: shared genes, $\log_2(10^4 \tilde{x} / N + 1)$, a percentile filter on the summed
#   expression and the coefficient of variation, an MLP with widths 100, 50, 25, softmax output,
#   cross-entropy plus L2, Adam with a staircase decay.
# * Where the lecture and the code differ (the normalisation, the filter statistic), the difference
#   changes the results; a filter on training and test cells together ties the model to one query.
# * Judge a classifier on data from another experiment, over several seeds, and against a linear
#   model on the same features: within pbmc3k the linear model wins; across experiments the networks
#   do, and the published, gently trained ACTINN is the most stable of them.
