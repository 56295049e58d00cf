# %% [markdown]
# # Lesson 00: check your setup
#
# {{colab_badge}}
#
# This short notebook makes sure that everything the course needs is in place before the
# real lessons begin. It shows how every lesson is organised:
#
# 1. a setup cell that installs the course when you run it on Google Colab (and does nothing on your own machine);
# 2. imports, and one call to `sclecture.set_seed`, so that random numbers repeat from run to run;
# 3. explanations, then **exercises**: a cell where you write a few lines of code, followed by a
#    locked **test cell** that checks them. Some checks are visible to you; others are hidden and run
#    only when your instructor grades the notebook.
#
# Replace every `raise NotImplementedError()` with your own code, run the test cell below it, and move
# on when it passes silently. The reference implementations in the `sclecture` package may be read
# but not called in an exercise: grading gives no points for a call. (So that a lesson still runs past an
# exercise you have not solved yet, later cells use the reference in its place; during grading it returns
# slightly altered numbers, so an exercise of yours that builds on an unsolved one cannot pass either.)

# %% [colab-setup]

# %%
import numpy as np
import torch

import sclecture
from sclecture.grading import assert_close

sclecture.set_seed(0)

# %% [markdown]
# ## What is installed, and where will models run?
#
# The cell below lists the versions of the packages the course stands on and the device that models
# will be trained on: `cuda` when a GPU is available (on Colab: *Runtime → Change runtime type → GPU*),
# `cpu` otherwise. Every lesson runs on a CPU in a few minutes; a GPU only makes training faster.

# %%
for package, version in sclecture.versions().items():
    print(f"{package:>13}: {version}")

# %% [markdown]
# Seeds make an experiment repeatable. After `set_seed(0)`, NumPy and PyTorch draw the same numbers
# every time the notebook is run on the same machine:

# %%
# NBVAL_CHECK_OUTPUT
sclecture.set_seed(0)
a = np.random.rand(3)
sclecture.set_seed(0)
b = np.random.rand(3)
print("same numbers after re-seeding:", bool(np.all(a == b)))
print("first draws:", np.round(a, 4))

# %% [markdown]
# ## A first exercise: counts per million
#
# Single-cell data arrive as a matrix of counts: one row per cell, one column per gene. Cells are
# sequenced to different depths, so the first step of many analyses rescales each cell to the same
# total. Write `counts_per_million(X)` that divides every row of `X` by its row sum and multiplies
# by $10^6$. A cell with no counts at all has no meaningful proportions: return zeros for it rather
# than dividing by zero.

# %% [solution] id=setup-cpm
def counts_per_million(X):
    """Rescale each row (cell) of the count matrix X to sum to one million."""
    ### BEGIN SOLUTION
    X = np.asarray(X, dtype=float)
    totals = X.sum(axis=1, keepdims=True)
    return np.divide(X * 1e6, totals, out=np.zeros_like(X), where=totals > 0)
    ### END SOLUTION

# %% [test] id=setup-cpm-test points=2
# Test cells pass every value your code computes through `record(name, lambda: ...)`: here it just
# calls your function and returns the result. When your notebook is graded, it also keeps the value,
# and the grader repeats these checks on it, outside your notebook.
import numpy as np

import sclecture.grading
from sclecture.grading import assert_close

record = sclecture.grading.recorder("setup-cpm-test")
X = np.array([[1, 3, 0], [5, 5, 10]])
cpm = record("counts_per_million(X)", lambda: counts_per_million(X))
assert_close(cpm, [[250000, 750000, 0], [250000, 250000, 500000]], name="counts_per_million(X)")
assert_close(record("a cell with no counts", lambda: counts_per_million(np.zeros((1, 4)))), np.zeros((1, 4)),
             name="a cell with no counts")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(1)
X = rng.poisson(2.0, size=(20, 7))
X[3] = 0
got = record("counts_per_million on random counts", lambda: counts_per_million(X))
expected = np.zeros(X.shape)  # computed after the call, so that the function cannot read it
nz = X.sum(1) > 0
expected[nz] = X[nz] / X[nz].sum(1, keepdims=True) * 1e6
assert_close(got, expected, rtol=1e-9, name="counts_per_million on random counts")
### END HIDDEN TESTS

# %% [markdown]
# When the test cell above runs without an error, your environment is ready for lesson 01.
