"""sclecture.actinn against independent implementations: the original ACTINN rules
re-written here with pandas and NumPy (genes x cells, as actinn_format.py and
actinn_predict.py do it), torch's cross-entropy, scikit-learn's metrics, a hand-written
Adam step; plus repeatability, gene-order invariance and the bad-input errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from sclecture import actinn

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------
# An independent implementation of the original rules (float64, pandas, genes x cells)


def original_format(df: pd.DataFrame) -> pd.DataFrame:
    """actinn_format.py on a genes x cells frame, then the upper-casing of actinn_predict.py."""
    df = df.copy()
    df.index = [str(s).upper() for s in df.index]
    first = np.unique(df.index, return_index=True)[1]  # first occurrence of each name
    df = df.iloc[sorted(first)]
    return df.loc[df.sum(axis=1) > 0, :]


def within(v, lo_hi, tol):
    lo, hi = np.percentile(v, lo_hi)
    return (v >= lo - tol * abs(lo)) & (v <= hi + tol * abs(hi))


def original_scale_sets(sets: list[pd.DataFrame], guard: bool = True, tol: float = 1e-6):
    """scale_sets() of actinn_predict.py, in float64; returns (matrices genes x cells, genes).

    ``tol``: the relative slack at the percentile bounds that sclecture documents (ties that
    differ only by rounding error stay together); tol=0 is the literal original."""
    common = set(sets[0].index)
    for s in sets[1:]:
        common &= set(s.index)
    common = sorted(common)
    sizes = [s.shape[1] for s in sets]
    total = np.array(pd.concat([s.loc[common] for s in sets], axis=1), dtype=np.float64)
    total = total / total.sum(axis=0, keepdims=True) * 10000
    total = np.log2(total + 1)
    genes = np.array(common)
    if guard:
        nz = total.sum(axis=1) > 0
        total, genes = total[nz], genes[nz]
    expr = total.sum(axis=1)
    keep = within(expr, (1, 99), tol)
    total, genes = total[keep], genes[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = total.std(axis=1) / total.mean(axis=1)
    keep = within(cv, (1, 99), tol)
    total, genes = total[keep], genes[keep]
    cuts = np.cumsum([0] + sizes)
    return [total[:, cuts[i]:cuts[i + 1]] for i in range(len(sets))], genes


def random_sets(seed=0, n_a=60, n_b=45, n_genes=300):
    """Two count frames (cells x genes) with all-zero genes, genes absent from one set,
    a repeated name and mixed-case names."""
    rng = np.random.default_rng(seed)
    genes = np.array([f"Gene{g:03d}" for g in range(n_genes)])
    mean = rng.gamma(0.6, 2.0, size=n_genes)
    A = rng.poisson(mean * rng.gamma(4, 0.25, size=(n_a, 1)))
    B = rng.poisson(mean * rng.gamma(4, 0.25, size=(n_b, 1)))
    A[:, :7] = 0  # zero in the training set only
    B[:, 5:12] = 0  # zero in the test set only (5, 6: zero in both)
    ga, gb = genes.copy(), genes.copy()
    ga[-10:] = [f"OnlyA{i}" for i in range(10)]
    gb[-20:-10] = [f"OnlyB{i}" for i in range(10)]
    ga[20] = ga[21].lower()  # "gene021" collides with "Gene021" once upper-cased: the first one wins
    return pd.DataFrame(A, columns=ga), pd.DataFrame(B, columns=gb)


# ---------------------------------------------------------------------------------------
# Preprocessing


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_preprocess_matches_the_original_rules(seed):
    A, B = random_sets(seed)
    (ref_a, ref_b), ref_genes = original_scale_sets([original_format(A.T), original_format(B.T)])
    out = actinn.actinn_preprocess(A, B)
    assert out.genes.tolist() == ref_genes.tolist()
    np.testing.assert_allclose(out.train, ref_a.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.test, ref_b.T, rtol=1e-5, atol=1e-5)
    assert out.train.dtype == np.float32 and out.train.flags["C_CONTIGUOUS"], "float32, one row per cell in contiguous memory"
    assert not any(g.startswith("ONLY") for g in out.genes), "genes absent from one set must go"
    assert "GENE005" not in out.genes and "GENE000" not in out.genes, "genes with no counts in a set must go"


def test_preprocess_accepts_anndata_sparse_and_bare_matrices_alike():
    import anndata

    A, B = random_sets(3)
    ref = actinn.actinn_preprocess(A, B)
    ad_a = anndata.AnnData(sp.csr_matrix(A.to_numpy(dtype=np.float32)))
    ad_a.var_names = A.columns
    out = actinn.actinn_preprocess(ad_a, B.to_numpy(), test_genes=B.columns)
    np.testing.assert_array_equal(out.train, ref.train)
    np.testing.assert_array_equal(out.test, ref.test)


def test_gene_order_of_the_test_set_does_not_matter():
    A, B = random_sets(4)
    perm = np.random.default_rng(0).permutation(B.shape[1])
    a = actinn.actinn_preprocess(A, B)
    b = actinn.actinn_preprocess(A, B.iloc[:, perm])
    assert a.genes.tolist() == b.genes.tolist()
    np.testing.assert_array_equal(a.test, b.test)
    np.testing.assert_array_equal(a.train, b.train)


def test_normalize_closed_forms_and_sparse_input():
    rng = np.random.default_rng(5)
    X = rng.poisson(1.5, size=(8, 20)).astype(float)
    X[:, 0] += 1  # no empty cell
    N = X.sum(1, keepdims=True)
    np.testing.assert_allclose(actinn.normalize(X, "code"), np.log2(1e4 * X / N + 1), rtol=1e-6)
    np.testing.assert_allclose(actinn.normalize(X, "lecture"), np.log2(1e4 * (X + 1) / N), rtol=1e-6)
    np.testing.assert_array_equal(actinn.normalize(sp.csr_matrix(X)), actinn.normalize(X))
    # the lecture's formula turns a zero count into a per-cell offset log2(1e4 / N_i)
    lec = actinn.normalize(X, "lecture")
    zeros = X == 0
    np.testing.assert_allclose(lec[zeros], np.broadcast_to(np.log2(1e4 / N), X.shape)[zeros], rtol=1e-6)
    assert X.dtype == float and X[0, 0] == X[0, 0], "the input is left unchanged"


def test_filter_guard_and_the_nan_trap():
    rng = np.random.default_rng(6)
    C = rng.poisson(2.0, size=(40, 150))
    C[:, [3, 70, 71]] = 0  # genes with no counts anywhere
    C[:, 0] += 1  # no empty cell
    frame = pd.DataFrame(C.T, index=[f"G{i:03d}" for i in range(150)])
    (ref,), genes = original_scale_sets([frame])
    # unguarded, the original rules keep nothing: CV = 0/0 = NaN makes every percentile NaN
    _, unguarded = original_scale_sets([frame], guard=False)
    assert len(unguarded) == 0
    X = actinn.normalize(C)
    mask = actinn.filter_genes(X)
    assert not mask[[3, 70, 71]].any()
    assert [f"G{i:03d}" for i in np.flatnonzero(mask)] == genes.tolist()
    np.testing.assert_allclose(X[:, mask], ref.T, rtol=1e-5)
    # the guard equals filtering the matrix without those genes
    nz = X.any(axis=0)
    np.testing.assert_array_equal(mask[nz], actinn.filter_genes(X[:, nz]))


def test_filter_lecture_variant_uses_std_and_drops_two_percent_each_time():
    rng = np.random.default_rng(7)
    X = rng.gamma(2.0, 1.0, size=(30, 500))
    mask = actinn.filter_genes(X, variant="lecture")
    s = X.sum(0)
    keep1 = (s >= np.percentile(s, 1)) & (s <= np.percentile(s, 99))
    sd = X[:, keep1].std(0)
    keep2 = (sd >= np.percentile(sd, 1)) & (sd <= np.percentile(sd, 99))
    expected = np.zeros(500, bool)
    expected[np.flatnonzero(keep1)[keep2]] = True
    np.testing.assert_array_equal(mask, expected)
    assert 500 * 0.96 - 2 <= mask.sum() <= 500 * 0.98 + 2


# ---------------------------------------------------------------------------------------
# Loss, schedule, metrics


def test_loss_matches_torch_cross_entropy_and_tf_l2_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(17, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (17,), generator=g)
    Ws = [torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    got = actinn.actinn_loss(logits, y, Ws, l2=0.005)
    want = torch.nn.functional.cross_entropy(logits.detach(), y) + 0.005 * sum(float((W.numpy() ** 2).sum()) / 2 for W in Ws)
    assert abs(got.item() - float(want)) < 1e-12
    got.backward()
    p = torch.softmax(logits.detach(), 1).numpy()
    p[np.arange(17), y.numpy()] -= 1
    np.testing.assert_allclose(logits.grad.numpy(), p / 17, rtol=1e-10)
    terms = actinn.actinn_loss(logits, y, Ws, l2=0.005, return_terms=True)
    assert set(terms) == {"loss", "nll", "l2"}


def test_staircase_schedule():
    assert actinn.staircase_lr(0) == 1e-4
    assert actinn.staircase_lr(999) == 1e-4
    assert math.isclose(actinn.staircase_lr(1000), 1e-4 * 0.95)
    assert math.isclose(actinn.staircase_lr(2999, lr=0.1, decay_rate=0.5, decay_steps=1000), 0.1 * 0.25)
    with pytest.raises(ValueError, match="decay_steps"):
        actinn.staircase_lr(3, decay_steps=0)


def test_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(8)
    for _ in range(5):
        t = rng.choice(list("abcde"), size=60)
        p = np.where(rng.random(60) < 0.6, t, rng.choice(list("abcdf"), size=60))
        acc, f1 = actinn.accuracy_macro_f1(t, p)
        assert math.isclose(acc, accuracy_score(t, p))
        assert math.isclose(f1, f1_score(t, p, average="macro", zero_division=0.0))
        per = actinn.per_class_f1(t, p)
        np.testing.assert_allclose(per.to_numpy(), f1_score(t, p, average=None, labels=per.index.tolist(), zero_division=0.0))


# ---------------------------------------------------------------------------------------
# The network and the estimator


def small_problem(seed=0, n=240, d=40, k=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    centres = rng.normal(0, 1.5, size=(k, d))
    X = np.abs(centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    names = np.array(["T cell", "B cell", "Mono"])[y]
    return X, names


def test_network_shape_and_xavier_init():
    torch.manual_seed(0)
    net = actinn.ACTINNNet(300, 7)
    sizes = [(m.in_features, m.out_features) for m in net.linear_layers()]
    assert sizes == [(300, 100), (100, 50), (50, 25), (25, 7)]
    for (fan_in, fan_out), layer in zip(sizes, net.linear_layers()):
        bound = math.sqrt(6 / (fan_in + fan_out))
        w = layer.weight.detach().numpy()
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
        assert abs(w.var() - bound**2 / 3) < 0.25 * bound**2 / 3
        assert not layer.bias.detach().numpy().any()
    assert isinstance(list(net.mlp.children())[1], torch.nn.ReLU)


def test_training_steps_follow_adam_with_the_staircase_and_l2():
    """Two full-batch steps of ACTINN.fit against Adam written out by hand."""
    X, y = small_problem(n=50, d=12)
    model = actinn.ACTINN(hidden=(6, 5, 4), lr=0.01, decay_rate=0.5, decay_steps=1, l2=0.1,
                          epochs=2, batch_size=50, random_state=3, device="cpu").fit(X, y)
    torch.manual_seed(3)
    net = actinn.ACTINNNet(12, 3, (6, 5, 4)).double()
    params = list(net.parameters())
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    y_idx = torch.as_tensor(np.unique(y, return_inverse=True)[1])
    Xt = torch.as_tensor(X, dtype=torch.float64)
    for t, lr in [(1, 0.01), (2, 0.005)]:
        logits = net(Xt)
        loss = torch.nn.functional.cross_entropy(logits, y_idx) + 0.1 * sum((W**2).sum() / 2 for W in net.weights())
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, mi, vi in zip(params, grads, m, v):
                mi.mul_(0.9).add_(0.1 * g)
                vi.mul_(0.999).add_(0.001 * g * g)
                p -= lr * (mi / (1 - 0.9**t)) / (torch.sqrt(vi / (1 - 0.999**t)) + 1e-8)
    for got, want in zip(model.module_.parameters(), params):
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-4, atol=1e-6)
    assert model.n_steps_ == 2 and len(model.history_["loss"]) == 2


def test_fit_predict_learns_and_is_repeatable():
    X, y = small_problem()
    Xtr, ytr, Xte, yte = X[:180], y[:180], X[180:], y[180:]
    kw = dict(hidden=(32, 16, 8), lr=3e-3, epochs=15, batch_size=32, device="cpu")
    a = actinn.ACTINN(random_state=1, **kw).fit(Xtr, ytr)
    b = actinn.ACTINN(random_state=1, **kw).fit(Xtr, ytr)
    c = actinn.ACTINN(random_state=2, **kw).fit(Xtr, ytr)
    assert a.classes_.tolist() == ["B cell", "Mono", "T cell"], "classes are sorted"
    np.testing.assert_array_equal(a.predict_proba(Xte), b.predict_proba(Xte))
    assert not np.array_equal(a.predict_proba(Xte), c.predict_proba(Xte)), "the seed should matter"
    assert a.score(Xte, yte) > 0.9
    proba = a.predict_proba(Xte)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-9)
    np.testing.assert_array_equal(a.classes_[proba.argmax(1)], a.predict(Xte))
    assert a.history_["loss"][-1] < a.history_["loss"][0]


def test_anndata_input_obs_key_and_gene_alignment():
    import anndata

    X, y = small_problem(seed=1, n=120, d=20)
    ad = anndata.AnnData(X, obs=pd.DataFrame({"cell_type": y}, index=[f"c{i}" for i in range(120)]))
    ad.var_names = [f"g{j}" for j in range(20)]
    kw = dict(hidden=(16, 8, 4), lr=3e-3, epochs=3, batch_size=32, device="cpu")
    m = actinn.ACTINN(**kw).fit(ad, "cell_type")
    perm = np.random.default_rng(0).permutation(20)
    shuffled = ad[:, perm].copy()
    np.testing.assert_array_equal(m.predict(shuffled), m.predict(ad))
    np.testing.assert_array_equal(m.predict(ad), m.predict(X))


# ---------------------------------------------------------------------------------------
# Bad input


def test_bad_inputs_fail_early_with_a_fix():
    import anndata

    A, B = random_sets(9)
    other = B.copy()
    other.columns = [f"ENSG{i:05d}" for i in range(other.shape[1])]
    with pytest.raises(ValueError, match="share no gene names"):
        actinn.actinn_preprocess(A, other)
    # a test set given genes x cells: detected by its row names
    ad_b = anndata.AnnData(B.to_numpy(dtype=np.float32).T)
    ad_b.obs_names, ad_b.var_names = B.columns, [f"cell{i}" for i in range(B.shape[0])]
    with pytest.raises(ValueError, match="transpose"):
        actinn.actinn_preprocess(A, ad_b)
    with pytest.raises(ValueError, match="transpose"):
        actinn.actinn_preprocess(A, B.to_numpy().T, test_genes=B.columns)
    with pytest.raises(ValueError, match="gene names"):
        actinn.actinn_preprocess(A, B.to_numpy())
    with pytest.raises(ValueError, match="non-integer"):
        actinn.actinn_preprocess(np.log1p(A), B)
    with pytest.raises(ValueError, match="negative"):
        actinn.actinn_preprocess(A - 1, B)
    with pytest.raises(ValueError, match="variant"):
        actinn.actinn_preprocess(A, B, variant="paper")
    with pytest.raises(ValueError, match="no counts"):
        actinn.normalize(np.zeros((2, 3)))

    X, y = small_problem(n=30, d=5)
    with pytest.raises(ValueError, match="single class"):
        actinn.ACTINN(epochs=1).fit(X, np.full(30, "T cell"))
    y_nan = y.astype(object)
    y_nan[3] = np.nan
    with pytest.raises(ValueError, match="missing"):
        actinn.ACTINN(epochs=1).fit(X, y_nan)
    with pytest.raises(ValueError, match="labels were given"):
        actinn.ACTINN(epochs=1).fit(X, y[:-1])
    X_bad = X.copy()
    X_bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        actinn.ACTINN(epochs=1).fit(X_bad, y)
    with pytest.raises(RuntimeError, match="not fitted"):
        actinn.ACTINN().predict(X)
    m = actinn.ACTINN(hidden=(4, 4, 4), epochs=1, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="trained on 5"):
        m.predict(X[:, :4])
    with pytest.raises(ValueError, match="NaN"):
        m.predict(X_bad)
    with pytest.raises(TypeError, match="AnnData"):
        actinn.ACTINN(epochs=1).fit(X, "cell_type")


# ---------------------------------------------------------------------------------------
# Real data


@pytest.mark.data
def test_real_data_preprocessing_matches_the_original_rules(real_data):
    """pbmc3k -> Kang on the original rules; and the NaN trap that the all-zero step
    prevents: within pbmc3k, thousands of its 32,738 genes have no counts at all."""
    from sclecture import datasets

    pbmc = datasets.pbmc3k()
    pbmc = pbmc[pbmc.obs["cell_type"].notna()]
    kang = datasets.kang_ifnb()
    a, b = pbmc[::6], kang[::6]  # a subset keeps the test fast; the rules are the same
    out = actinn.actinn_preprocess(a, b)
    to_frame = lambda ad: pd.DataFrame(ad.X.toarray().T, index=ad.var_names)  # noqa: E731
    (ref_a, ref_b), genes = original_scale_sets([original_format(to_frame(a)), original_format(to_frame(b))])
    assert out.genes.tolist() == genes.tolist()
    assert len(genes) > 10000
    np.testing.assert_allclose(out.train, ref_a.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.test, ref_b.T, rtol=1e-5, atol=1e-5)
    # pbmc3k against itself, without actinn_format's all-zero step: nothing survives
    first, second = pbmc[0::12], pbmc[1::12]
    _, unguarded = original_scale_sets([to_frame(first), to_frame(second)], guard=False, tol=0)
    assert len(unguarded) == 0
    _, guarded = original_scale_sets([to_frame(first), to_frame(second)])
    X = np.vstack([actinn.normalize(first.X), actinn.normalize(second.X)])
    mask = actinn.filter_genes(X)
    assert sorted(np.asarray(first.var_names)[mask]) == guarded.tolist() and mask.sum() > 5000
    # the literal rules (no slack) split a tie of genes seen in one cell only, at the CV's 99th percentile
    _, literal = original_scale_sets([to_frame(first), to_frame(second)], tol=0)
    assert set(literal) <= set(guarded) and len(guarded) - len(literal) < 0.02 * len(guarded)
