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
# 5. scoring predictions: accuracy, macro-F1, per-type F1, a confusion matrix, a check of the
#    predictions with marker genes, and calling uncertain cells "unknown";
# 6. the honest part: where the lecture's summary and the published code differ, how ACTINN compares
#    with plain logistic regression and scikit-learn's MLP, and how to choose settings (the
#    normalisation, the learning rate) on a validation split of the reference, over several seeds,
#    before the query is scored;
# 7. the results where scanpy users look for them: predictions in `obs`, a UMAP, and the one-line
#    annotation of a query measured on another gene set.
#
# Seven exercises are graded automatically (the last two: rejecting uncertain cells, choosing a
# setting from validation scores), and one written answer by your instructor. Training happens in
# ungraded cells; on a CPU each ACTINN fit takes a quarter of a minute to a minute. The references
# in `sclecture` may be read but not called in an exercise: grading gives no points for a call.
#
# **Time:** about 2.5 hours: 75 minutes of reading and running the cells, 75 minutes for the
# exercises and the written answer. Running the whole notebook takes about four minutes on a
# laptop's CPU (ten ACTINN fits).

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
from sclecture.training import expect_result, quick_epochs

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
# ACTINN ("automated cell type identification using neural networks") is one of many such methods,
# and new methods are compared with ones like it. The comparison of Shao et al. (2021) shown in the
# lecture is such a study: by the paper's abstract, the authors' own graph neural network,
# scDeepSort, did better than the other methods on 76 external test data sets, labelling 83.79 % of
# 265,489 cells correctly. ACTINN, a plain MLP, is among the simplest neural networks for the task,
# and a good one to understand in full.
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
# results, and note each place where it differs from the summary. The whole pipeline, from raw
# counts to a cell type, as this lesson builds it:

# %%
sclecture.diagrams.actinn_pipeline()
plt.show()

# %% [markdown]
# Sections 2 to 4 take its boxes from top to bottom; the query's path on the left is the one-line
# annotation of section 7.
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
# Bernoulli likelihood of lesson 01, is
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
model = actinn.ACTINN(epochs=quick_epochs(50, 2), random_state=0, progress=True).fit(features.train, y_train)
print(f"{model.n_steps_} steps in {time.perf_counter() - start:.1f} s")

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.04
print("classes:", ", ".join(model.classes_))
print(f"after {len(model.history_)} epochs: mean cross-entropy {model.history_['nll'][-1]:.3f}, "
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
ctrl, stim = (pd.crosstab(y_kang[scored & (condition == c)], pred_kang[scored & (condition == c)], normalize="index")
              .reindex(columns=model.classes_, fill_value=0) for c in ["CTRL", "STIM"])
expect_result(min(r.loc[m, m] for r in (ctrl, stim) for m in ["CD14+ Mono", "FCGR3A+ Mono"]) > 0.75
              and ctrl.loc["B", "B"] > 0.85 and 0.55 < stim.loc["B", "B"] < 0.8 and stim.loc["B", "Memory CD4 T"] > 0.75 * (1 - stim.loc["B", "B"])
              and all(stim.loc[t].drop(t).idxmax() == "Memory CD4 T" and 0.25 < stim.loc[t, "Memory CD4 T"] < 0.75 for t in ["CD8 T", "DC", "Naive CD4 T", "Platelet"])
              and all(0.1 < ctrl.loc[t, "Memory CD4 T"] < 0.5 for t in ["CD8 T", "DC", "Naive CD4 T"]) and 0.04 < stim.loc["CD14+ Mono", "Memory CD4 T"] < 0.2
              and stim.loc["Memory CD4 T", "Memory CD4 T"] > 0.8 and f1_types.loc["Memory CD4 T", "STIM"] < 0.65
              and ctrl.loc["Naive CD4 T", "Naive CD4 T"] > 0.7 and 0.25 < stim.loc["Naive CD4 T", "Naive CD4 T"] < 0.55,
              "monocytes transfer well; stimulation sends about a third of the B cells, and 40 to 60 % of the CD8 T, DC, naive CD4 T "
              "cells and platelets, to memory CD4 T, a label that keeps its own cells but has a low F1")

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
# Read the confusion matrices row by row: a row is one true type, and its entries are the fractions
# of its cells given each label. Both kinds of monocytes transfer well, with and without
# stimulation. B cells transfer well only without it: about nine in ten control B cells are called
# B, but of the stimulated ones only about two thirds, and nearly all the rest are called memory
# CD4 T cells.
#
# That label is a sink. Already in the control cells, Memory CD4 T takes a fifth to a third of the
# CD8 T cells, dendritic cells and naive CD4 T cells; after stimulation it takes about 40 to 60 % of
# the CD8 T cells, dendritic cells, naive CD4 T cells and platelets, and about a tenth even of the
# CD14+ monocytes. It keeps nearly all of its own stimulated cells, but that recall is cheap: a
# label that collects many cells of other types is often right about its own, and its F1 (about
# 0.5 in the table above) shows the price. These numbers do not say why this type draws the cells
# in; they do say that, on this query, a prediction of "Memory CD4 T" deserves little trust.
#
# The T cells are hard even without stimulation: naive against memory CD4 T cells, and CD8 against
# CD4 T cells, are told apart in pbmc3k by a handful of genes, and two data sets (different donors,
# a different protocol, a different annotator) need not draw those lines in the same place.
# Platelets fail because the reference has only 14 of them, and dendritic cells (32) transfer only
# moderately. Stimulation costs most where the differences are subtle: interferon beta switches on
# hundreds of interferon-stimulated genes in nearly every cell, so stimulated cells lie away from
# every cell the network has seen, and the naive CD4 T cells lose most (about four in five keep
# their label in the control cells, about two in five after stimulation, the rest going to memory
# CD4 T). The cells of the four types that pbmc3k lacks are forced into a known type (activated T
# cells become memory or naive CD4 T cells; activated B cells become B cells or, again, memory CD4
# T cells). A classifier is only as good as the match between its reference and the cells it is
# asked about.
#
# ### 5.1 A check with marker genes
#
# The confusion matrices need the query's labels, and a new data set has none. What an analyst
# looks at instead is known marker genes: do the cells given a label express that type's markers?
# We write the predictions where scanpy looks for them (`model.store` puts the label and its
# probability in `obs`), and `sc.pl.dotplot` draws, per predicted type, the mean log-normalised
# expression of classic blood markers (colour) and the share of cells in which each was detected
# (size of the dot).

# %%
import anndata
import scanpy as sc

# The model predicts from ACTINN's features, not from counts: an AnnData with Kang's cells and
# those features takes the predictions, which then go to Kang's own obs.
kang_features = anndata.AnnData(features.test, obs=pd.DataFrame(index=kang.obs_names),
                                var=pd.DataFrame(index=features.genes))
model.store(kang_features)
stored = ["actinn_prediction", "actinn_prediction_confidence"]
kang.obs[stored] = kang_features.obs[stored]

kang_log = kang.copy()  # scanpy's convention: counts scaled to 10^4 per cell, then log(1 + x)
sc.pp.normalize_total(kang_log, target_sum=1e4)
sc.pp.log1p(kang_log)
markers = {"B": ["MS4A1", "CD79A"], "T": ["CD3E"], "CD8 T": ["CD8A"], "NK": ["GNLY", "NKG7"],
           "CD14+ Mono": ["CD14", "LYZ"], "FCGR3A+ Mono": ["FCGR3A"], "DC": ["FCER1A"], "Platelet": ["PPBP"]}
sc.pl.dotplot(kang_log, markers, groupby="actinn_prediction", show=False)
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.15
called = kang.obs["actinn_prediction"].astype(str).to_numpy()
genes = ["CD3E", "CD8A", "MS4A1", "CD79A", "LYZ"]
detected = pd.DataFrame({f"{t}, {c}": (kang_log[(called == t) & (condition == c), genes].X.toarray() > 0).mean(axis=0)
                         for t in ["Naive CD4 T", "Memory CD4 T", "CD8 T", "B"] for c in ["CTRL", "STIM"]}, index=genes).T
print("share of the cells given each label in which a marker was detected:")
print(detected.to_string(float_format=lambda v: f"{v:.2f}"))
share = {(t, c): detected.loc[f"{t}, {c}"] for t in ["Naive CD4 T", "Memory CD4 T", "CD8 T", "B"] for c in ["CTRL", "STIM"]}
expect_result(all(share["Memory CD4 T", c]["CD3E"] > max(0.15, 0.5 * share["Naive CD4 T", c]["CD3E"])
                  and max(share["Memory CD4 T", c][["MS4A1", "CD79A"]]) < 0.1 and min(share["B", c][["MS4A1", "CD79A"]]) > 0.3
                  and share["Memory CD4 T", c]["CD8A"] < 0.5 * share["CD8 T", c]["CD8A"]
                  and share["Memory CD4 T", c]["LYZ"] > max(0.06, 3 * share["Naive CD4 T", c]["LYZ"]) for c in ["CTRL", "STIM"]),
              "the cells called Memory CD4 T express CD3E like T cells, hardly any B-cell marker or CD8A, "
              "and LYZ in a minority")
sources = pd.Series(kang.obs["cell_type"].astype(str).to_numpy()[(called == "Memory CD4 T") & (condition == "STIM")])
expect_result(sources.value_counts().index[0] == "CD4 Naive T", "naive CD4 T cells are the sink's largest source after stimulation")

# %% [markdown]
# Read the dot plot column by column. Each predicted type expresses its own markers: MS4A1 and
# CD79A in the cells called B, GNLY and NKG7 in NK and CD8 T cells, CD14 and LYZ in CD14+
# monocytes, FCGR3A in FCGR3A+ monocytes, PPBP in the few cells called platelets. (Single-cell
# counts are sparse: even a good marker is detected in only part of the cells of its type.)
#
# And the Memory CD4 T sink? By its markers it is mostly made of T cells. CD3E is detected in
# somewhat fewer of its cells than of the cells called naive CD4 T, and in hardly any of the cells
# called B (after stimulation it is detected in fewer cells of every T label); B-cell markers (MS4A1, CD79A) and CD8A
# are rare in it, so the B and CD8 T cells that the confusion matrix saw going there are a minority
# of the label, not its bulk. LYZ, absent from naive CD4 T cells, is detected in about one cell in
# eight: the monocytes among them. What these markers cannot show is naive against memory, and
# that is the sink's main confusion after stimulation (the naive CD4 T cells are its largest
# source); markers such as CCR7 and IL7R against S100A4 would be the next look. Without the
# query's labels, this is how an analyst would have found the problem: a label whose cells carry
# other types' markers deserves a closer look.
#
# ### 5.2 Calling uncertain cells "unknown"
#
# A closed-set classifier always answers. Practitioners therefore reject: a cell whose most probable
# type has a probability $\max_j p(y = j \mid \mathbf{x})$ below a threshold is called "unknown"
# (CellTypist, for one, calls a cell "Unassigned" when no type's probability passes its threshold). Raising the threshold keeps fewer
# cells (the *coverage* falls) and, if the probabilities mean anything, the cells kept are more often
# right.
#
# **Exercise 6.** Write `reject_uncertain(proba, classes, threshold)`: `proba` is a cells $\times$
# $k$ array of probabilities whose columns belong to the $k$ labels in `classes` (in that order).
# Return an array with one label per cell: the most probable class, or the string `"unknown"` where
# the largest probability is below `threshold` (a cell whose largest probability equals the
# threshold is kept).

# %% [solution] id=actinn-reject
def reject_uncertain(proba, classes, threshold):
    """The most probable class of each cell, or "unknown" where its probability is below threshold."""
    ### BEGIN SOLUTION
    proba = np.asarray(proba, dtype=float)
    labels = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    labels[proba.max(axis=1) < threshold] = "unknown"
    return labels
    ### END SOLUTION

# %% [test] id=actinn-reject-test points=2
import numpy as np

import sclecture.actinn
import sclecture.grading
from sclecture.grading import assert_equal

record = sclecture.grading.recorder("actinn-reject-test")
proba = np.array([[0.9, 0.1, 0.0], [0.4, 0.35, 0.25], [0.2, 0.2, 0.6]])
classes = np.array(["B", "NK", "T"])
got = record("reject_uncertain(proba, classes, 0.5)", lambda: [str(v) for v in reject_uncertain(proba, classes, 0.5)])
assert_equal(got, ["B", "unknown", "T"], name="reject_uncertain(proba, classes, 0.5)")
got = record("reject_uncertain(proba, classes, 0.0)", lambda: [str(v) for v in reject_uncertain(proba, classes, 0.0)])
assert_equal(got, ["B", "B", "T"], name="reject_uncertain with threshold 0 (every cell keeps its label)")
got = record("reject_uncertain(proba, classes, 0.6)", lambda: [str(v) for v in reject_uncertain(proba, classes, 0.6)])
assert_equal(got, ["B", "unknown", "T"], name="reject_uncertain(proba, classes, 0.6) (0.6 equals the threshold: kept)")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(36)
for n, k, threshold in [(1, 2, 0.5), (60, 9, 0.8), (300, 4, 0.95), (25, 3, 0.0), (25, 3, 1.01)]:
    P = rng.dirichlet(np.full(k, 0.5), size=n)
    cls = np.array([f"type {j}" for j in range(k)])
    P0, cls0 = P.copy(), cls.copy()
    got = record(f"reject_uncertain on {n} cells, {k} types, threshold {threshold}",
                 lambda: [str(v) for v in reject_uncertain(P, cls, threshold)])
    assert_equal(got, [str(v) for v in sclecture.actinn.reject_uncertain(P0, cls0, threshold)],
                 name=f"reject_uncertain on {n} random cells, {k} types, threshold {threshold}")
### END HIDDEN TESTS

# %% [markdown]
# Let the threshold run from 0 (every cell keeps its label) towards 1 and follow, on the scorable
# Kang cells, the accuracy among the cells kept against the share kept:

# %%
reject_uncertain_ = fallback(reject_uncertain, actinn.reject_uncertain)

proba_kang = model.predict_proba(features.test)
thresholds = np.round(np.r_[0.0, np.linspace(0.4, 0.95, 12), 0.99], 2)
curves = {}
for cond in ["CTRL", "STIM"]:
    sel = scored & (condition == cond)
    rows = []
    for t in thresholds:
        labels = np.asarray(reject_uncertain_(proba_kang[sel], model.classes_, t), dtype=object)
        kept = labels != "unknown"
        rows.append((t, kept.mean(), np.mean(labels[kept] == y_kang[sel][kept]) if kept.any() else np.nan))
    curves[cond] = pd.DataFrame(rows, columns=["threshold", "coverage", "accuracy"]).set_index("threshold")
# the cells of the four types that pbmc3k lacks: the share still called something at each threshold
novel_kept = pd.Series([np.mean(proba_kang[~scored].max(axis=1) >= t) for t in thresholds], index=thresholds)

fig, ax = plt.subplots(figsize=(5.5, 3.8))
for cond, curve in curves.items():
    ax.plot(curve["coverage"], curve["accuracy"], "o-", ms=3, label=f"Kang {cond}")
    for t in [0.5, 0.9]:
        ax.annotate(f"{t}", (curve.loc[t, "coverage"], curve.loc[t, "accuracy"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=8)
ax.set(xlabel="coverage (share of cells kept)", ylabel="accuracy among the cells kept",
       title="rejection by the top probability (labels: thresholds)", xlim=(1.02, 0))
ax.legend(frameon=False)
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.12
for t in [0.0, 0.5, 0.9]:
    print(f"threshold {t}: " + "; ".join(f"{c} keeps {curves[c].loc[t, 'coverage']:.2f}, accuracy {curves[c].loc[t, 'accuracy']:.3f}"
                                         for c in curves) + f"; types pbmc3k lacks: keeps {novel_kept[t]:.2f}")
gain = {c: curves[c].loc[0.9, "accuracy"] - curves[c].loc[0.0, "accuracy"] for c in curves}
expect_result(gain["CTRL"] > 0.08 and 0.0 < gain["STIM"] < 0.7 * gain["CTRL"]
              and all(curves[c].loc[0.9, "coverage"] < 0.6 for c in curves)
              and abs(novel_kept[0.9] - np.mean([curves[c].loc[0.9, "coverage"] for c in curves])) < 0.15,
              "rejection raises the accuracy of the control cells clearly, that of the stimulated cells much less, "
              "and keeps the cells of unknown types about as often as the others")

# %% [markdown]
# What the curves show: on the control cells, rejection works as hoped. Keeping the cells whose top
# probability is at least 0.9 (about two in five) raises the accuracy among them from about 0.80 to
# about 0.94. On the stimulated cells it helps much less (from about 0.69 to about 0.76 at the
# same threshold): many of their errors are confident ones, above all the cells that went to the
# Memory CD4 T sink, so a threshold on the probability cannot remove them. Nor does it find the
# cells of the four types pbmc3k lacks: they are kept about as often as the cells of known types.
# A softmax probability says how far a cell lies from the boundaries between the types the network
# knows, not whether it resembles any of them; it is overconfident precisely on cells unlike the
# reference. Rejection is worth doing, but it is no substitute for a reference that covers the
# query.
#
# ## 6. How good is ACTINN here? Comparisons, and choosing settings fairly
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
    "logistic regression (softmax)": LogisticRegression(max_iter=quick_epochs(1000, 20)),
    "MLPClassifier((100, 50, 25))": MLPClassifier((100, 50, 25), max_iter=quick_epochs(200, 2), random_state=0),
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
# Each method here was run once with settings fixed in advance (ACTINN's are the paper's), so the
# query scores are fair. Choosing *among* settings is another matter, and comes next.
#
# ### 6.2 A validation split of the reference
#
# Kang is our test set. A setting chosen by its score on the query has been fitted to the query,
# and that score no longer says how well it would do on new cells. The fair procedure chooses
# settings on a **validation split** of the reference alone, and scores the query once, at the end,
# with the chosen setting. We hold out one fifth of the pbmc3k cells, **stratified** by cell type
# (one fold of scikit-learn's `StratifiedKFold`): every type keeps its share in both parts, so
# that even the 14 platelets leave a few cells for validation. The features are the ones above,
# whose genes were chosen with all cells, as ACTINN would choose them (no labels are used for
# that). The same three models, on the same split, first:

# %%
from sklearn.model_selection import StratifiedKFold

train_idx, val_idx = next(StratifiedKFold(5, shuffle=True, random_state=0).split(features.train, y_train))
print("validation cells per type:", pd.Series(y_train[val_idx]).value_counts().sort_index().to_dict())
within = {}
candidates = {"ACTINN (published settings)": actinn.ACTINN(epochs=quick_epochs(50, 2), random_state=0), **baselines}
for name, clf in candidates.items():
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(features.train[train_idx], y_train[train_idx])
    within[name] = accuracy_macro_f1_(y_train[val_idx], clf.predict(features.train[val_idx]))
    print(f"{name}: fitted in {time.perf_counter() - start:.1f} s")

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.07
print(f"pbmc3k, {len(val_idx)} held-out cells:")
for name, (acc, f1) in within.items():
    print(f"{name:<32} accuracy {acc:.3f}   macro-F1 {f1:.3f}")
accuracies = [acc for acc, _ in within.values()]
expect_result(max(accuracies) - min(accuracies) < 0.05, "within pbmc3k the three models are about equally accurate")

# %% [markdown]
# Within one data set the three models are about equally good; the network's advantage showed only
# on the other experiment.
#
# ### 6.3 Choosing the normalisation and the learning rate
#
# Two settings of ACTINN are worth questioning. The **normalisation**: what does the $+1$ in the
# wrong place cost? `variant="lecture"` gives the whole pipeline with the lecture's normalisation
# and the lecture's filter (standard deviation instead of the coefficient of variation). The
# **learning rate**: fifty epochs of 17 minibatches (21 on all of pbmc3k) are fewer than 1,100 Adam
# steps at $10^{-4}$. The recipe counts epochs, not steps, so a reference of tens of thousands of
# cells gets tens of thousands of steps from it, and a small one like pbmc3k very few. A ten times
# larger learning rate gives the network more learning at the same cost.
#
# A network's result also depends on its random initial weights and the order of its minibatches,
# so each ACTINN setting is trained with three seeds on the training part of the split (the
# published setting's seed 0 is the fit above), and scored by its accuracy on the validation cells.
# The lecture's normalisation gets one seed: on this split it was already far behind.

# %%
features_lecture = actinn.actinn_preprocess(pbmc, kang, variant="lecture")

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.2
print(f"genes kept: {len(features_lecture.genes):,}; inputs range from {features_lecture.train.min():.2f} to {features_lecture.train.max():.2f}")

# %%
PUBLISHED = "code, lr 1e-4 (published)"
settings = {PUBLISHED: (features, 1e-4, [0, 1, 2]), "code, lr 1e-3": (features, 1e-3, [0, 1, 2]),
            "lecture, lr 1e-4": (features_lecture, 1e-4, [0])}
validation, fits = {}, {}
start = time.perf_counter()
for name, (feats, lr, seeds) in settings.items():
    for seed in seeds:
        if name == PUBLISHED and seed == 0:
            clf = candidates["ACTINN (published settings)"]  # trained on the same split above
        else:
            clf = actinn.ACTINN(lr=lr, epochs=quick_epochs(50, 2), random_state=seed).fit(feats.train[train_idx], y_train[train_idx])
        fits[name, seed] = clf
        validation.setdefault(name, []).append(accuracy_macro_f1_(y_train[val_idx], clf.predict(feats.train[val_idx]))[0])
print(f"{len(fits) - 1} fits in {time.perf_counter() - start:.1f} s")
del features_lecture

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.35
print(f"validation accuracy ({len(val_idx)} pbmc3k cells), seeds 0, 1, 2:")
for name, acc in validation.items():
    print(f"{name:<28}" + "".join(f"{a:>8.3f}" for a in acc) + f"    mean {np.mean(acc):.3f}, spread {np.ptp(acc):.3f}")
fast, slow = validation["code, lr 1e-3"], validation[PUBLISHED]
expect_result(validation["lecture, lr 1e-4"][0] < min(slow) - 0.15 and min(slow) > 0.83 and np.ptp(slow) < 0.08
              and sorted(fast)[1] > 0.83,
              "the lecture's normalisation is far behind; the published setting is steady over seeds; "
              "at lr 1e-3 at least two seeds match it")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
for ax, name in zip(axes, [PUBLISHED, "code, lr 1e-3"]):
    for seed in [0, 1, 2]:
        ax.plot(fits[name, seed].history_.step_loss, lw=0.6, label=f"seed {seed}")
    ax.set(xlabel="minibatch step", yscale="log", title=name)
axes[0].set_ylabel("training loss")
axes[1].legend(frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# Look at the spread before concluding. The lecture's normalisation is about 0.3 behind: with its
# formula, the 94 % of entries that are zero counts all carry a cell-specific offset, between 0.2
# and 4.2 on pbmc3k (section 2.2), so the first layer mostly sees how deeply each cell was
# sequenced, and with about a thousand steps at $10^{-4}$ the network does not learn to look past
# it. Slides are summaries; when a method's results matter, read its code.
#
# The two learning rates are another story. With seeds 0 and 1, $10^{-3}$ does about as well as
# $10^{-4}$; with seed 2 it ends badly. The training curves show why: at
# $10^{-3}$ the loss jumps up now and then (Adam's steps grow large when the gradients have been
# tiny for a while), and a run that stops during such a jump predicts poorly. One seed would have
# told either story. (The seed that fails on your machine may be another, or none: where a jump
# falls is a matter of chance.)
#
# A rule for choosing has to say what counts as better. A cautious one, in the spirit of the
# "one standard error" rule of Hastie, Tibshirani and Friedman (*The Elements of Statistical
# Learning*, section 7.10): keep the default setting unless another one beats it on every seed,
# that is, unless the challenger's worst validation score is above the default's best.
#
# **Exercise 7.** Write `choose_setting(scores, default)`. `scores` is a dict that maps the name of
# each setting to a list of its validation scores, one per seed (higher is better); the lists may
# have different lengths. Return `default` unless some other setting's lowest score is strictly
# above the highest score of `default`; if several settings are, return the one among them with the
# highest mean score (the first in the dict on ties).

# %% [solution] id=actinn-choose
def choose_setting(scores, default):
    """The setting to use: the default, unless another setting beats it on every seed."""
    ### BEGIN SOLUTION
    best_default = max(scores[default])
    winners = [name for name, s in scores.items() if name != default and min(s) > best_default]
    if not winners:
        return default
    return max(winners, key=lambda name: np.mean(scores[name]))
    ### END SOLUTION

# %% [test] id=actinn-choose-test points=2
import copy

import numpy as np

import sclecture.actinn
import sclecture.grading
from sclecture.grading import assert_equal

record = sclecture.grading.recorder("actinn-choose-test")
scores = {"default": [0.86, 0.87, 0.89], "other": [0.88, 0.885, 0.888]}
assert_equal(record("better on average only", lambda: str(choose_setting(scores, "default"))), "default",
             name="choose_setting when the other setting loses to the default's best seed")
scores = {"default": [0.86, 0.87, 0.89], "other": [0.90, 0.91, 0.95]}
assert_equal(record("better on every seed", lambda: str(choose_setting(scores, "default"))), "other",
             name="choose_setting when the other setting beats the default on every seed")
scores = {"a": [0.5, 0.6], "b": [0.6, 0.7]}
assert_equal(record("a tie", lambda: str(choose_setting(scores, "a"))), "a",
             name="choose_setting when b's worst score only equals a's best (a tie is not a win)")
### BEGIN HIDDEN TESTS
scores = {"a": [0.5], "b": [0.7, 0.8], "c": [0.9, 0.61], "d": [0.2, 0.95]}
assert_equal(record("two winners", lambda: str(choose_setting(scores, "a"))), "c",
             name="choose_setting with two settings that beat the default (the higher mean wins)")
rng = np.random.default_rng(37)
for trial in range(40):
    names = [f"setting {i}" for i in range(int(rng.integers(2, 6)))]
    scores = {n: rng.normal(0.8, 0.05, size=int(rng.integers(1, 4))).tolist() for n in names}
    default = names[int(rng.integers(len(names)))]
    before = copy.deepcopy(scores)
    got, after = record(f"choose_setting and the scores after it, trial {trial}",
                        lambda: (str(choose_setting(scores, default)), copy.deepcopy(scores)))
    assert_equal(got, sclecture.actinn.choose_setting(copy.deepcopy(before), default),
                 name=f"choose_setting({before}, default={default!r})")
    assert_equal(after, before, name="the scores after choose_setting (it must not change them)")
### END HIDDEN TESTS

# %%
choose_setting_ = fallback(choose_setting, actinn.choose_setting)

# %%
# NBVAL_CHECK_OUTPUT
chosen = choose_setting_(validation, default=PUBLISHED)
print("chosen on the validation split:", chosen)
expect_result(chosen == PUBLISHED, "the rule keeps the published setting")

# %% [markdown]
# The rule keeps the published setting. (Choosing the highest mean would have kept it too, here
# because of the failed run; with seeds 0 and 1 only, the two learning rates would have looked
# equal within the spread of the seeds, and the highest mean could have gone either way.) The final model is therefore
# `model` of section 4, trained on all of pbmc3k with the published setting, and its query scores
# of section 5, computed once, are the ones to report:

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.1
show({"final: published settings": results["ACTINN (published settings)"]})

# %% [markdown]
# ### 6.4 What more seeds and folds say
#
# `benchmarks/bench_actinn.py` repeats these fits on a larger scale: three seeds on Kang, and the
# five-fold cross-validation within pbmc3k with the genes chosen anew for every fold. Its Kang
# columns score settings we did not choose; they are there to understand the method, not to choose
# a setting. On this course's machine it found:
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
#   0.69 against 0.48 for logistic regression), but on those cells they depend strongly on the
#   seed. Over seeds 0 to 2 ACTINN's accuracy moved by at most 0.005, yet over ten seeds
#   (`benchmarks/results/actinn_query.md`) it ranged from 0.37 to 0.74, with a mean of 0.57;
#   scikit-learn's MLP (learning rate $10^{-3}$, trained until its loss stalls) ranged from 0.52
#   to 0.73 over three. Three seeds can look steady by luck.
# * **Validation on the reference cannot see the shift to another experiment.** Over five folds
#   (seed 0 only, so no run of $10^{-3}$ that ended badly) the larger learning rate gains a little
#   within pbmc3k (0.861 against 0.855, macro-F1 0.865 against 0.845), by margins smaller than the
#   seed spread we saw; on Kang, over three seeds, it did worse (0.777 and 0.650 against 0.796 and
#   0.693), though the published setting's own spread over ten seeds on the stimulated cells is
#   wider than that difference. The short, slow training of the published recipe acts like early
#   stopping: it fits the reference less closely, which may transfer better; the seeds say it
#   does not always. A validation split drawn from the reference
#   measures how well a setting fits the reference's kind of cells; when the query comes from
#   another experiment, a validation set from another experiment (another donor, another lab)
#   measures what matters.
#
# `actinn.ACTINN` keeps the paper's values as its defaults because they reproduce the method.
# `lr=1e-3` remains available for larger references or longer schedules, where a run of 1,000
# steps at $10^{-4}$ would stop far too early; choose it, as any setting, on held-out cells of the
# reference and over several seeds, and keep the query for the final score.
#
# ## 7. The results where scanpy users look
#
# `model.store` put the final model's labels and their probabilities into `kang.obs` (section 5.1),
# the place where every scanpy tool looks for a grouping of the cells. A UMAP of the Kang cells,
# computed from the PCA of their log-normalised counts as a scanpy analysis would, shows where the
# predicted types lie, how sure the model is, and which cells were stimulated:

# %%
sc.pp.highly_variable_genes(kang_log, n_top_genes=2000)
sc.pp.pca(kang_log, n_comps=30, mask_var="highly_variable", random_state=0)
sc.pp.neighbors(kang_log, random_state=0)
sc.tl.umap(kang_log, random_state=0)
sc.pl.umap(kang_log, color=["actinn_prediction", "actinn_prediction_confidence", "condition"], ncols=2, wspace=0.4, show=False)
plt.show()
confidence = kang.obs["actinn_prediction_confidence"].to_numpy()
stim_conf = {t: np.median(confidence[(called == t) & (condition == "STIM")]) for t in ["Memory CD4 T", "Naive CD4 T"]}
expect_result(stim_conf["Memory CD4 T"] > 0.75 and stim_conf["Memory CD4 T"] > stim_conf["Naive CD4 T"],
              "the stimulated cells called Memory CD4 T are called with high confidence")

# %% [markdown]
# UMAP keeps neighbourhoods, not distances: read it for which cells sit together, and do not expect
# the same picture on another machine. Stimulation moves every type to its own region (bottom
# panel). The confidence (top right) is not lowest where the errors are: the stimulated cells called
# Memory CD4 T, most of them wrongly, are called with a median confidence above 0.75, higher than
# that of the stimulated cells called naive CD4 T, which are more often right. That is section
# 5.2's lesson again, in a picture.
#
# ### 7.1 One line for a query measured on another gene set
#
# The joint pipeline preprocessed pbmc3k and Kang together: the genes kept depend on the query, so
# every new query means a new model (the written answer of section 2). `ACTINN(preprocess="code")`
# fixes that as section 2's model answer proposes: it chooses the genes on the reference alone,
# stores them with the weights, and maps any later query of raw counts onto them by gene name (a
# gene the query lacks takes its mean over the reference's cells, and a warning says how many):

# %%
start = time.perf_counter()
model_ref = actinn.ACTINN(preprocess="code", epochs=quick_epochs(50, 2), random_state=0).fit(pbmc, "cell_type")
pred_ref = model_ref.predict(kang)
print(f"fitted on pbmc3k alone and applied to Kang in {time.perf_counter() - start:.1f} s; "
      f"{len(model_ref.feature_names_in_):,} genes")

# %%
# NBVAL_CHECK_OUTPUT
# NBVAL_TOLERANCE abs=0.2
results_ref = {"joint pipeline (section 5)": results["ACTINN (published settings)"],
               "reference only, one line": kang_scores(pred_ref)}
show(results_ref)
expect_result(all(results_ref["reference only, one line"][c][0] < results_ref["joint pipeline (section 5)"][c][0] - 0.03
                  for c in ["CTRL", "STIM"]),
              "with seed 0, the one-line annotation of the query is clearly less accurate than the joint pipeline")

# %% [markdown]
# With seed 0 it is clearly less accurate, most of all on the stimulated cells. But seed 0 is
# among the joint pipeline's best seeds and among the one-line model's worst: over ten seeds
# (`benchmarks/results/actinn_query.md`) the two are about equally accurate on average (0.79
# against 0.76 on the control cells, 0.60 against 0.57 on the stimulated ones), and on the
# stimulated cells both swing widely with the seed (0.50 to 0.69 for the one-line model, 0.37 to
# 0.74 for the joint pipeline). How much a network trained on unstimulated cells leans on the
# genes that interferon raises (ISG15, IFI6, ISG20, which the joint filter drops because it has
# seen the stimulated cells) is a matter of its seed. One seed per pipeline cannot compare them:
# section 6.3's lesson once more. The one-line model is the one that can be stored, shared and
# applied to the next experiment.
#
# For real work, the next step is a method built for mapping queries onto a reference:
# **CellTypist** (logistic regression on large curated immune references, with majority voting over
# clusters) and **scANVI** (lesson 06's scVI with the cell type as a partly observed latent
# variable: it corrects the batch effect between reference and query while it labels, and scArches
# maps new queries onto a trained model without retraining it). Both report per-cell probabilities, so the rejection of section 5.2 carries over.
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
# * Check predictions without labels: marker genes per predicted type, and "unknown" below a
#   probability threshold. The softmax probability is overconfident on cells unlike the reference.
# * Choose settings on a validation split of the reference, over several seeds, with a rule fixed
#   beforehand; score the query once. Within pbmc3k the linear model is as good as the networks;
#   across experiments the networks transfer better on average, but on the stimulated cells every
#   network depends strongly on its seed (ACTINN: 0.37 to 0.74 over ten seeds).
#
# ## Going further
#
# Ungraded exercises; each needs only the estimator and a few lines.
#
# 1. **A threshold chosen on the reference.** Choose the rejection threshold that keeps 90 % of the
#    validation cells of section 6.2, then apply it to Kang. What coverage and accuracy do CTRL and
#    STIM get, and what does that say about thresholds that travel between experiments?
# 2. **Validation from another experiment.** Use Kang's control cells as the validation set for the
#    learning rate, and score the stimulated cells once. Does this choice differ from the one made
#    within pbmc3k, and which of the two would you trust for a new stimulated sample?
# 3. **Early stopping by validation.** Train with `lr=1e-3` for 50 epochs, keeping the validation
#    accuracy after every 5 epochs (refit with `epochs=5, 10, ...` and the same seed). Does the
#    failed seed fail at the same epoch, and does stopping early remove the failure?
# 4. **Markers from the reference.** Log-normalise pbmc3k as Kang was in section 5.1, find five
#    marker genes per type with `sc.tl.rank_genes_groups(..., groupby="cell_type")`, and redraw the dot plot of section 5.1 with them. Which
#    predicted types of the stimulated cells lose their markers?
# 5. **CellTypist.** Install `celltypist`, annotate Kang with its `Immune_All_Low` model and
#    `majority_voting=True`, and compare its labels (mapped to pbmc3k's names) with ACTINN's in a
#    confusion matrix.
