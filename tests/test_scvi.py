"""sclecture.scvi: its pieces against torch.distributions and closed forms, the trained model
on simulated counts with known cell types and batches, and its bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import distributions as td

from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from sclecture import scvi
from sclecture.datasets import simulate_counts


@pytest.fixture(scope="module")
def sim():
    return simulate_counts(n_cells=800, n_genes=200, n_types=4, n_batches=2, seed=3)


@pytest.fixture(scope="module")
def fitted(sim):
    model = scvi.SCVI(epochs=40, progress=False, random_state=0).fit(sim, batch_key="batch")
    return model


# --------------------------------------------------------------------------- pieces

def test_library_prior_per_batch():
    rng = np.random.default_rng(0)
    X = rng.poisson(3.0, size=(60, 15))
    b = np.repeat([0, 1, 2], 20)
    l_mu, l_var = scvi.library_prior(sp.csr_matrix(X), b, 3)
    log_l = np.log(X.sum(1))
    for s in range(3):
        assert np.isclose(l_mu[s], log_l[b == s].mean()) and np.isclose(l_var[s], log_l[b == s].var())
    with pytest.raises(ValueError, match="no counts"):
        scvi.library_prior(np.vstack([X, np.zeros((1, 15))]))
    with pytest.raises(ValueError, match="batch 3 has no cells"):
        scvi.library_prior(X, b, 4)


def test_kl_normal_and_elbo_loss_against_torch_distributions():
    rng = np.random.default_rng(1)
    mu = torch.tensor(rng.normal(size=(7, 4)))
    var = torch.tensor(rng.gamma(2.0, 0.5, size=(7, 4)))
    q = td.Normal(mu, var.sqrt())
    expected = td.kl_divergence(q, td.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    torch.testing.assert_close(scvi.kl_normal(mu, var), expected)
    pm, pv = torch.tensor(0.7), torch.tensor(2.5)
    torch.testing.assert_close(scvi.kl_normal(mu, var, pm, pv),
                               td.kl_divergence(q, td.Normal(pm.expand_as(mu), pv.sqrt().expand_as(mu))).sum(-1))
    log_px = torch.tensor(rng.normal(-100, 5, size=7))
    torch.testing.assert_close(scvi.elbo_loss(log_px, mu, var, 0.3), (-log_px + 0.3 * expected).mean())
    assert [scvi.kl_warmup_weight(e, 4) for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert scvi.kl_warmup_weight(0, 0) == 1.0 and scvi.kl_warmup_weight(3, None) == 1.0


@pytest.mark.parametrize("likelihood", ["zinb", "nb", "poisson"])
def test_module_likelihood_against_torch_distributions(likelihood):
    torch.manual_seed(0)
    m = scvi.SCVIModule(n_genes=12, n_batches=2, n_latent=3, n_hidden=16, likelihood=likelihood).double()
    m.eval()
    x = torch.poisson(torch.full((9, 12), 2.0)).double()
    b = torch.tensor([0, 1] * 4 + [0])
    inf = m.inference(x, b)
    gen = m.generative(inf["z"], inf["library"], b)
    mu, theta = gen["mu"], gen["theta"]
    assert torch.allclose(gen["rho"].sum(-1), torch.ones(9, dtype=torch.float64))
    assert torch.allclose(mu.sum(-1), x.sum(-1)), "mu = l rho, and l is the observed library size"
    # torch's NegativeBinomial: successes before `total_count` failures; logits = log(mu / theta)
    nb = td.NegativeBinomial(total_count=theta, logits=torch.log(mu) - torch.log(theta)).log_prob(x)
    if likelihood == "nb":
        expected = nb
    elif likelihood == "poisson":
        expected = td.Poisson(mu).log_prob(x)
    else:
        pi = torch.sigmoid(gen["pi_logits"])
        expected = torch.log(pi * (x == 0) + (1 - pi) * nb.exp())
    torch.testing.assert_close(m.log_likelihood(x, gen), expected.sum(-1))


def _likelihood_inputs(seed, shape=(9, 40), dtype=torch.float64):
    """Random counts with many zeros, some huge counts, and mu, theta, eta over wide ranges."""
    g = torch.Generator().manual_seed(seed)
    n, n_genes = shape[-2], shape[-1]
    x = torch.poisson(torch.exp(torch.randn(shape, generator=g) * 1.5 - 0.5), generator=g)
    x[..., 0, :4] = torch.tensor([1e4, 3e3, 1.0, 250.0])  # large counts
    x[..., 1, :] = 0  # a cell of zeros
    mu = torch.exp(torch.randn(shape, generator=g) * 3).to(dtype)  # about 1e-4 to 1e4
    theta = torch.exp(torch.randn(n_genes, generator=g) * 2).to(dtype)
    theta[:3] = torch.tensor([1e-6, 1e-3, 1e6])  # tiny and huge dispersions
    theta[3:6] = torch.tensor([1e4, 5e-2, 1e5])
    eta = (torch.randn(shape, generator=g) * 4).to(dtype)
    assert n > 2 and (x == 0).float().mean() > 0.3
    return x.to(dtype), mu, theta, eta


@pytest.mark.parametrize("zero_inflated", [True, False])
@pytest.mark.parametrize("shape", [(9, 40), (3, 9, 40)])
@pytest.mark.parametrize("sparse_below", [1.0, 0.0], ids=["nonzero-entries", "dense"])
def test_fast_likelihood_matches_the_plain_formulas(zero_inflated, shape, sparse_below, monkeypatch):
    """The likelihood the module trains with against distributions._log_zinb / _log_nb: values and gradients,
    both where the lgamma terms run on the nonzero counts only and where they run on every entry."""
    from sclecture.distributions import _log_nb, _log_zinb

    monkeypatch.setattr(scvi.CountTerms, "SPARSE_BELOW", sparse_below)
    for seed in range(3):
        x, mu, theta, eta = _likelihood_inputs(seed, shape)
        args = [mu.requires_grad_(), theta.requires_grad_()] + ([eta.requires_grad_()] if zero_inflated else [])
        plain = (_log_zinb(x, mu, theta, eta) if zero_inflated else _log_nb(x, mu, theta)).sum(-1)
        fast = scvi.zinb_log_likelihood(x, mu, theta, eta if zero_inflated else None)
        assert fast.shape == plain.shape == shape[:-1]
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
        weights = torch.rand(plain.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
        expected = torch.autograd.grad((plain * weights).sum(), args)
        got = torch.autograd.grad((fast * weights).sum(), args)
        for name, a, b in zip(["mu", "theta", "pi_logits"], got, expected):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"d/d {name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("zero_inflated", [True, False])
@pytest.mark.parametrize("sparse_below", [1.0, 0.0], ids=["nonzero-entries", "dense"])
def test_fast_likelihood_updates_only_its_own_temporaries(zero_inflated, sparse_below, dtype, monkeypatch):
    """The likelihood updates its temporaries in place: its inputs, the counts and what it saved for backward
    stay as they were, so a second backward through the same graph gives the same gradients (float32 with zero
    inflation: in the compiled loops, where they are built)."""
    monkeypatch.setattr(scvi.CountTerms, "SPARSE_BELOW", sparse_below)
    x, mu, theta, eta = _likelihood_inputs(7, (12, 30), dtype=dtype)
    x = x.to(dtype)
    args = [mu.requires_grad_(), theta.requires_grad_()] + ([eta.requires_grad_()] if zero_inflated else [])
    before = [t.detach().clone() for t in (x, *args)]
    terms = scvi.CountTerms(x)
    kept = [t.clone() for t in (terms.x, terms.zero, terms.log_x_fact)]
    out = scvi.zinb_log_likelihood(x, mu, theta, eta if zero_inflated else None, terms=terms).sum()
    first = torch.autograd.grad(out, args, retain_graph=True)
    second = torch.autograd.grad(out, args)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for t, b in zip((x, *args), before):
        torch.testing.assert_close(t.detach(), b, rtol=0, atol=0)
    for t, b in zip((terms.x, terms.zero, terms.log_x_fact), kept):
        torch.testing.assert_close(t, b, rtol=0, atol=0)


def test_fast_likelihood_gradcheck_and_float32():
    x, mu, theta, eta = _likelihood_inputs(5, (4, 7))
    theta = theta.clamp(1e-2, 1e2)  # finite differences need moderate theta
    terms = scvi.CountTerms(x)
    assert torch.autograd.gradcheck(lambda m, t, e: scvi.zinb_log_likelihood(x, m, t, e, terms=terms),
                                    (mu.clamp(1e-2, 1e3).requires_grad_(), theta.requires_grad_(),
                                     eta.requires_grad_()))
    # float32, as in training: within float32 rounding of the exact (float64) value, as the plain formula is
    from sclecture.distributions import _log_zinb

    x, mu, theta, eta = _likelihood_inputs(6, (16, 200))
    theta = theta.clamp(1e-3, 1e3)  # lgamma(x + theta) - lgamma(theta) cancels in float32 for huge theta
    exact = _log_zinb(x, mu, theta, eta).sum(-1)
    f32 = [t.float() for t in (x, mu, theta, eta)]
    for name, value in (("plain", _log_zinb(*f32).sum(-1)), ("fast", scvi.zinb_log_likelihood(*f32))):
        rel = ((value.double() - exact).abs() / exact.abs()).max()
        assert rel < 1e-5, f"{name} float32 log-likelihood is {rel:.2g} (relative) off the float64 value"


def test_module_loss_equals_the_plain_formula_loss():
    """Same weights, same noise: the training loss with the fast likelihood equals the plain formula's."""
    from sclecture.distributions import _log_zinb

    torch.manual_seed(0)
    m = scvi.SCVIModule(n_genes=30, n_batches=2, n_latent=3, n_hidden=16).double()
    x = torch.poisson(torch.full((11, 30), 0.7)).double()
    x[:, 0] += 1
    b = torch.tensor([0, 1] * 5 + [0])
    torch.manual_seed(1)
    loss = m.loss(x, b, kl_weight=0.5)["loss"]
    grads = torch.autograd.grad(loss, list(m.parameters()))
    torch.manual_seed(1)
    inf = m.inference(x, b)
    gen = m.generative(inf["z"], inf["library"], b)
    log_px = _log_zinb(x, gen["mu"], gen["theta"], gen["pi_logits"]).sum(-1)
    plain = (-log_px + 0.5 * scvi.kl_normal(inf["qz_mu"], inf["qz_var"])).mean()
    torch.testing.assert_close(loss, plain, rtol=1e-10, atol=1e-10)
    for a, e in zip(grads, torch.autograd.grad(plain, list(m.parameters()))):
        torch.testing.assert_close(a, e, rtol=1e-8, atol=1e-10)


def test_loss_is_the_negative_elbo_and_warmup_weights_only_kl_z():
    torch.manual_seed(0)
    m = scvi.SCVIModule(n_genes=10, n_latent=3, n_hidden=8, library="latent", l_mu=[3.0], l_var=[0.2])
    m.eval()
    x = torch.poisson(torch.full((6, 10), 3.0))
    torch.manual_seed(1)
    full = m.loss(x, kl_weight=1.0)
    torch.manual_seed(1)
    elbo = m.elbo(x)
    torch.testing.assert_close(full["loss"], -elbo.mean())
    torch.manual_seed(1)
    half = m.loss(x, kl_weight=0.5)
    torch.testing.assert_close(half["loss"], full["reconstruction"] + 0.5 * full["kl_z"] + full["kl_l"])
    assert float(full["kl_l"].detach()) > 0


def test_marginal_ll_is_above_the_elbo_and_converges(fitted, sim):
    sub = sim[:60].copy()
    elbo = fitted.get_elbo(sub)
    ll = fitted.get_marginal_ll(sub, n_samples=100)
    assert ll.shape == (60,) and np.all(np.isfinite(ll))
    assert ll.mean() > elbo.mean(), "log p(x) >= ELBO (Jensen), on average over cells"
    ll2 = fitted.get_marginal_ll(sub, n_samples=300)
    assert abs(ll2.mean() - ll.mean()) < 2.0, "more importance samples should change log p(x) only a little"


def test_batch_mixing_entropy_extremes_and_clustering_scores():
    rng = np.random.default_rng(2)
    apart = np.vstack([rng.normal(0, 1, (100, 3)), rng.normal(50, 1, (100, 3))])
    batches = np.repeat(["a", "b"], 100)
    assert scvi.batch_mixing_entropy(apart, batches, k=20) == 0.0
    mixed = scvi.batch_mixing_entropy(rng.normal(size=(200, 3)), rng.permutation(batches), k=50)
    assert mixed > 0.95, f"random batch labels should look fully mixed, got {mixed:.3f}"
    with pytest.raises(ValueError, match="two batches"):
        scvi.batch_mixing_entropy(apart, np.repeat("a", 200))
    labels = np.repeat(["x", "y"], 100)
    s = scvi.clustering_scores(apart, labels)
    assert s["ari"] == 1.0 and s["nmi"] == 1.0 and s["silhouette"] > 0.9


# --------------------------------------------------------------------------- the fitted model

def test_recovers_cell_types_and_mixes_batches(fitted, sim):
    z = fitted.get_latent_representation()
    assert z.shape == (sim.n_obs, 10)
    scores = scvi.clustering_scores(z, sim.obs["cell_type"])
    assert scores["ari"] > 0.9, f"latent k-means ARI {scores['ari']:.3f} against the simulated types"
    mixing = scvi.batch_mixing_entropy(z, sim.obs["batch"])
    # the same neighbourhoods in log-normalised counts keep the batches apart
    from sklearn.decomposition import PCA
    from sclecture.preprocessing import log1p_normalize
    pcs = PCA(10, random_state=0).fit_transform(log1p_normalize(sim).toarray())
    before = scvi.batch_mixing_entropy(pcs, sim.obs["batch"])
    assert mixing > 0.8 and mixing > before + 0.2, f"batch mixing {mixing:.3f} in scVI, {before:.3f} in PCA"
    hist = fitted.history_
    assert len(hist) == 40 and hist["loss"][-1] < hist["loss"][0]


def test_outputs(fitted, sim):
    rho = fitted.get_normalized_expression(sim[:50], library_size=1e4)
    np.testing.assert_allclose(rho.sum(1), 1e4, rtol=1e-4)
    as_b0 = fitted.get_normalized_expression(sim[:50], transform_batch="batch0")
    as_b1 = fitted.get_normalized_expression(sim[:50], transform_batch="batch1")
    assert not np.allclose(as_b0, as_b1)
    e1, e2 = fitted.get_elbo(sim[:50]), fitted.get_elbo(sim[:50])
    np.testing.assert_array_equal(e1, e2)  # evaluation is seeded


def _spy_count_terms(monkeypatch, record) -> list:
    """``record(x, nonzero_index, table)`` for every CountTerms a fit builds, in a list."""
    seen = []
    original = scvi.CountTerms.__init__

    def spy(self, x, nonzero_index=None, table=None):
        seen.append(record(x, nonzero_index, table))
        original(self, x, nonzero_index, table)

    monkeypatch.setattr(scvi.CountTerms, "__init__", spy)
    return seen


@pytest.mark.parametrize("thin", [1, 3], ids=["65%-nonzero-stored-dense", "41%-nonzero-kept-csr"])
def test_sparse_and_dense_input_give_the_same_model(sim, thin, monkeypatch):
    dense = np.floor(sim.X.toarray() / thin)  # thin=3: fewer nonzero counts, so that the CSR is smaller than dense
    seen = _spy_count_terms(monkeypatch, lambda x, index, table: index is not None)  # from a CSR matrix?
    a = scvi.SCVI(epochs=2, progress=False, device="cpu").fit(sp.csr_matrix(dense))
    assert set(seen) == {thin == 3}, "minibatches of a CSR matrix carry its nonzero entries unless stored dense"
    b = scvi.SCVI(epochs=2, progress=False, device="cpu").fit(dense)
    np.testing.assert_array_equal(a.history_["loss"], b.history_["loss"])  # the same numbers, either way
    np.testing.assert_array_equal(a.get_latent_representation(), b.get_latent_representation())


def test_csr_with_explicit_zeros_and_duplicates_trains_like_dense_and_stays_untouched(sim, monkeypatch):
    """The minibatches' nonzero entries come from the CSR structure: stored zeros and duplicate entries must
    not change the model, and the caller's matrix is not modified."""
    monkeypatch.setattr(scvi.CountTerms, "SPARSE_BELOW", 1.0)  # the likelihood uses those entries at any density
    seen = _spy_count_terms(monkeypatch, lambda x, index, table: index is not None)  # from a CSR matrix?
    dense = np.floor(sim.X.toarray()[:200] / 3)  # 41 % nonzero: the CSR stays CSR in the fit's minibatches
    rows, cols = np.nonzero(dense == 0)
    coo = sp.csr_matrix(dense).tocoo()
    # 50 stored zeros, and the counts >= 2 of the first 20 cells split into two duplicate entries (1 and the rest)
    split = (coo.data >= 2) & (coo.row < 20)
    r = np.concatenate([coo.row, rows[:50], coo.row[split]])
    c = np.concatenate([coo.col, cols[:50], coo.col[split]])
    v = np.concatenate([np.where(split, 1, coo.data), np.zeros(50), coo.data[split] - 1]).astype(np.float32)
    order = np.argsort(r, kind="stable")  # built from (data, indices, indptr): duplicates are kept, not summed
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=dense.shape[0]))])
    messy = sp.csr_matrix((v[order], c[order], indptr), shape=dense.shape)
    assert split.sum() > 0 and messy.nnz == len(v) and not messy.has_canonical_format, "zeros and duplicates stored"
    messy_copy = messy.copy()
    np.testing.assert_array_equal(messy.toarray(), dense)
    a = scvi.SCVI(epochs=2, progress=False, device="cpu").fit(messy)
    assert set(seen) == {True}, "the minibatches' nonzero entries came from the CSR structure"
    b = scvi.SCVI(epochs=2, progress=False, device="cpu").fit(dense)
    np.testing.assert_allclose(a.history_["loss"], b.history_["loss"], rtol=1e-5)
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(messy, name), getattr(messy_copy, name))


def test_log_factorial_table_and_its_fallbacks():
    from sclecture.scvi import _log_factorial

    counts = torch.tensor([0.0, 1.0, 2.0, 7.0, 170.0, 4095.0, 65535.0])
    exact = torch.lgamma(counts.double() + 1)
    torch.testing.assert_close(_log_factorial(counts).double(), exact, rtol=1e-7, atol=0)  # the table
    for x in (torch.tensor([0.5, 3.0]), torch.tensor([70000.0, 2.0]), torch.tensor([[1.0, 2.5], [3.0, 4.0]]).double()):
        torch.testing.assert_close(_log_factorial(x), torch.lgamma(x + 1))  # not whole numbers, or too large
    assert _log_factorial(torch.zeros(0)).shape == (0,)


def test_log_factorial_table_of_the_data_covers_every_count_once_checked():
    from sclecture.scvi import _log_factorial, log_factorial_table

    dense = np.array([[0.0, 3.0], [5.0, 1.0]])
    other = sp.csr_matrix(np.array([[0.0, 2000.0]]))
    table = log_factorial_table(dense, other)
    assert table is not None and table.dtype == torch.float32 and len(table) > 2000
    x = torch.tensor([0.0, 1.0, 5.0, 2000.0])
    exact = torch.lgamma(x.double() + 1)
    torch.testing.assert_close(_log_factorial(x, table).double(), exact, rtol=1e-7, atol=0)
    torch.testing.assert_close(_log_factorial(x.double(), table), exact, rtol=1e-12, atol=0)  # in x's precision
    assert log_factorial_table(np.array([0.0, 2.5])) is None  # not whole numbers
    assert log_factorial_table(np.array([-3.0, 5.0])) is None  # not counts
    assert log_factorial_table(sp.csr_matrix(np.array([[0.0, 70000.0]]))) is None  # beyond the table
    assert log_factorial_table(np.zeros((0, 3))) is not None  # nothing to look up
    dup = sp.coo_matrix((np.array([40000.0, 40000.0]), (np.array([0, 0]), np.array([1, 1]))), shape=(1, 2))
    assert log_factorial_table(dup) is None  # the entry is 80,000 once duplicates are summed
    assert dup.nnz == 2  # and the caller's matrix is left as it was
    assert len(log_factorial_table(np.array([[0.0, 1500.0]]), whole=True)) == 2048  # checked counts: the top only


def test_fit_looks_log_x_factorial_up_in_a_table_of_its_data(sim, monkeypatch):
    seen = _spy_count_terms(monkeypatch, lambda x, index, table: (table, float(x.max())))
    train, val = sim[300:400], sim[:300]
    top_train, top_val = float(np.max(train.X)), float(np.max(val.X))
    assert 2 ** np.ceil(np.log2(top_train + 1)) <= top_val  # a table of the training counts alone would be too short
    scvi.SCVI(epochs=1, progress=False, device="cpu").fit(train, validation=val)  # (CountTerms: CPU only)
    assert seen and all(t is not None and top < len(t) for t, top in seen)  # training and validation minibatches
    assert max(top for _, top in seen) == top_val


def test_given_nonzero_index_gives_the_same_likelihood():
    x, mu, theta, eta = _likelihood_inputs(3, (12, 50), dtype=torch.float32)
    index = torch.nonzero(x.reshape(-1)).squeeze(1)
    outs = []
    for terms in (scvi.CountTerms(x), scvi.CountTerms(x, index)):
        assert terms.sparse
        args = [t.clone().requires_grad_() for t in (mu, theta, eta)]
        ll = scvi.zinb_log_likelihood(x, *args, terms=terms)
        outs.append((ll, torch.autograd.grad(ll.sum(), args)))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("kw", [dict(likelihood="nb"), dict(likelihood="poisson"), dict(library="latent", n_layers=2)])
def test_other_settings_train(sim, kw):
    m = scvi.SCVI(epochs=2, progress=False, **kw).fit(sim[:300], batch_key="batch")
    assert np.all(np.isfinite(m.get_elbo())) and np.all(np.isfinite(m.get_marginal_ll(n_samples=5)))


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("param, value, message", [
    ("n_epochs_kl_warmup", -1, "n_epochs_kl_warmup must be a non-negative integer"),  # beta would be negative
    ("random_state", -1, "random_state must be a non-negative integer"),
    ("dropout", 1.0, r"dropout is the probability .* in \[0, 1\)"), ("dropout", -0.1, "dropout must be"),
    ("lr", 0.0, "lr must be a positive number"), ("weight_decay", -1e-6, "weight_decay must be"),
    ("n_latent", 0, "n_latent must be a positive integer"), ("n_hidden", 2.5, "n_hidden must be"),
    ("n_layers", 0, "n_layers must be"), ("batch_size", 0, "batch_size must be")])
def test_hyperparameters_out_of_range_are_refused_before_training(sim, param, value, message, monkeypatch):
    monkeypatch.setattr(scvi, "train", lambda *a, **k: pytest.fail("it trained"))
    with pytest.raises(ValueError, match=message):
        scvi.SCVI(epochs=1, progress=False, **{param: value}).fit(sim)


def test_bad_input(sim, fitted):
    model = scvi.SCVI(epochs=1, progress=False)
    X = sim.X.toarray()
    with pytest.raises(ValueError, match="non-integer"):
        model.fit(X + 0.5)
    with pytest.raises(ValueError, match="negative"):
        model.fit(X - 1)
    Z = X.copy()
    Z[5] = 0
    with pytest.raises(ValueError, match="no counts at all"):
        model.fit(Z)
    with pytest.raises(KeyError, match="no obs column 'sample'"):
        model.fit(sim, batch_key="sample")
    with pytest.raises(ValueError, match="likelihood"):
        scvi.SCVI(likelihood="gaussian").fit(sim)
    with pytest.raises(NotFittedError, match="SCVI is not fitted yet"):
        model.get_latent_representation(sim)
    new = sim[:20].copy()
    new.obs["batch"] = new.obs["batch"].cat.add_categories(["batch9"])
    new.obs.loc[new.obs_names[0], "batch"] = "batch9"
    with pytest.raises(ValueError, match="not seen during fit"):
        fitted.get_latent_representation(new)
    with pytest.raises(ValueError, match="trained on 200 genes"):
        fitted.get_elbo(sim[:20, :150].copy())
    with pytest.raises(ValueError, match="transform_batch"):
        fitted.get_normalized_expression(sim[:20], transform_batch="batch7")


# --------------------------------------------------------------------------- estimator API

def test_scikit_learn_api_and_global_rng(sim):
    model = scvi.SCVI(epochs=2, n_latent=4, progress=False, random_state=5)
    twin = clone(model)
    assert twin.get_params() == model.get_params() and twin is not model
    twin.set_params(n_latent=3)
    assert twin.n_latent == 3 and model.n_latent == 4
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    Z = model.fit_transform(sim[:300])  # TransformerMixin: fit(X).transform(X)
    assert torch.equal(torch.get_rng_state(), torch_state)  # fit leaves the global RNGs alone
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    again = clone(model).fit(sim[:300]).transform(sim[:300])
    np.testing.assert_array_equal(Z, again)  # the same random_state, the same model


def test_save_load_round_trip(sim, fitted, tmp_path):
    path = fitted.save(tmp_path / "scvi.pt")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitted.save(path)
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        loaded = scvi.SCVI.load(path, device=device)
        assert next(loaded.module_.parameters()).device.type == device
        assert loaded.get_params() == {**fitted.get_params(), "device": device}
        assert loaded.batch_categories_ == fitted.batch_categories_
        np.testing.assert_allclose(loaded.get_latent_representation(sim[:100]),
                                   fitted.get_latent_representation(sim[:100]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(loaded.get_elbo(sim[:100]), fitted.get_elbo(sim[:100]), rtol=1e-5)
    with pytest.raises(ValueError, match="keeps no training data"):
        loaded.get_latent_representation()
    other = torch.load(path, weights_only=True)
    other["class"] = "ACTINN"
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(TypeError, match="holds a ACTINN, not a SCVI: use ACTINN.load"):
        scvi.SCVI.load(tmp_path / "other.pt")


def test_load_refuses_files_that_run_code(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("this ran on load",))

    bad = tmp_path / "model.pt"
    torch.save({"format": "sclecture-model-1", "class": "SCVI", "weights": Payload()}, bad)
    with pytest.raises(ValueError, match="refused for safety"):
        scvi.SCVI.load(bad)
    assert "this ran on load" not in capsys.readouterr().out


def test_store_writes_obsm_and_keeps_what_is_there(sim, fitted):
    adata = sim[:50].copy()
    fitted.store(adata)
    np.testing.assert_allclose(adata.obsm["X_scvi"], fitted.get_latent_representation(adata), rtol=1e-6)
    with pytest.raises(ValueError, match="already holds"):
        fitted.store(adata)
    fitted.store(adata, key_added="X_mine")
    assert "X_mine" in adata.obsm
    with pytest.raises(TypeError, match="writes into an AnnData"):
        fitted.store(adata.X)


# scikit-learn's check_estimator feeds real-valued, often negative matrices. scVI models counts,
# so it refuses them with check_counts' message, and every check that needs a fit on such data
# cannot run. What those checks assert (fit returns self, fit is idempotent, transform is
# deterministic, parameters are not overwritten, clone and pickle work) is tested above and in
# test_count_model_checks_on_counts with integer counts instead.
_NEEDS_REAL_VALUED_FIT = "fits real-valued or negative data; a count model refuses it (non-integer / negative counts)"
SCVI_EXPECTED_FAILED_CHECKS = {name: _NEEDS_REAL_VALUED_FIT for name in [
    "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_estimators_dtypes", "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_transformer_data_not_an_array", "check_transformer_general",
    "check_transformer_preserve_dtypes", "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in",
    "check_fit2d_predict1d", "check_estimator_sparse_tag", "check_estimator_sparse_array",
    "check_estimator_sparse_matrix", "check_fit2d_1sample", "check_fit2d_1feature",
]} | {
    "check_positive_only_tag_during_fit": "refuses negative values, in the course's wording (names the count and the fix)",
    "check_estimators_empty_data_messages": "refuses empty data, in the course's wording ('is empty (shape ...)')",
    "check_complex_data": "refuses complex numbers, in the course's wording (names the dtype)",
    "check_dtype_object": "refuses object arrays, in the course's wording ('holds Python objects')",
}


def test_check_estimator_fails_only_where_listed():
    import warnings

    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(scvi.SCVI(epochs=1, n_hidden=8, n_latent=2, progress=False), on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert failed == set(SCVI_EXPECTED_FAILED_CHECKS), (
        f"unexpected failures {sorted(failed - set(SCVI_EXPECTED_FAILED_CHECKS))}, "
        f"now passing {sorted(set(SCVI_EXPECTED_FAILED_CHECKS) - failed)}")
    assert sum(r["status"] == "passed" for r in results) >= 10


def test_count_model_checks_on_counts(sim):
    import pickle

    X = sim.X.toarray()[:200]
    model = scvi.SCVI(epochs=2, n_latent=3, progress=False)
    params = model.get_params()
    assert model.fit(X) is model and model.get_params() == params  # fit returns self, parameters untouched
    assert model.n_features_in_ == X.shape[1]
    Z = model.transform(X)
    np.testing.assert_array_equal(Z, model.fit(X).transform(X))  # idempotent fit
    np.testing.assert_array_equal(Z[::-1], model.transform(X[::-1]))  # cells are independent
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).transform(X), Z)


# --------------------------------------------------------------------------- validation and label agreement

def test_validation_cells_are_scored_every_epoch_and_leave_the_model_unchanged(sim):
    train_cells, val_cells = sim[:600].copy(), sim[600:].copy()
    kw = dict(epochs=4, n_latent=3, n_hidden=16, progress=False, random_state=0)
    plain = scvi.SCVI(**kw).fit(train_cells, batch_key="batch")
    watched = scvi.SCVI(**kw).fit(train_cells, batch_key="batch", validation=val_cells)
    hist = watched.history_
    for key in ["val_loss", "val_reconstruction", "val_kl_z", "val_kl_l"]:
        assert len(hist[key]) == 4 and np.all(np.isfinite(hist[key])), key
    assert "val_loss" not in plain.history_
    np.testing.assert_array_equal(watched.get_latent_representation(), plain.get_latent_representation())
    assert hist["loss"] == plain.history_["loss"], "scoring validation cells must not move training's random stream"
    # val_loss is the -ELBO (beta = 1) of the validation cells, from the model at the end of each epoch
    np.testing.assert_allclose(hist["val_loss"], np.add(hist["val_reconstruction"], hist["val_kl_z"]), rtol=1e-6)
    torch.manual_seed(123)
    elbo_end = -watched.get_elbo(val_cells).mean()
    assert abs(hist["val_loss"][-1] - elbo_end) < 0.02 * abs(elbo_end), (hist["val_loss"][-1], elbo_end)
    # without batches, a plain matrix works as validation too
    X = sim.X.toarray()
    assert len(scvi.SCVI(**kw).fit(X[:600], validation=X[600:]).history_["val_loss"]) == 4


def test_validation_cells_are_checked_like_the_training_cells(sim):
    model = scvi.SCVI(epochs=1, n_latent=3, n_hidden=16, progress=False)
    train_cells = sim[:600].copy()
    with pytest.raises(ValueError, match="validation cells have 150 genes"):
        model.fit(train_cells, batch_key="batch", validation=sim[600:, :150].copy())
    shuffled = sim[600:, ::-1].copy()
    with pytest.raises(ValueError, match="validation cells' genes"):
        model.fit(train_cells, batch_key="batch", validation=shuffled)
    with pytest.raises(ValueError, match="non-integer"):
        model.fit(sim.X.toarray()[:600], validation=sim.X.toarray()[600:] + 0.5)
    new = sim[600:].copy()
    new.obs["batch"] = new.obs["batch"].cat.add_categories(["batch9"])
    new.obs.loc[new.obs_names[0], "batch"] = "batch9"
    with pytest.raises(ValueError, match="not seen during fit"):
        model.fit(train_cells, batch_key="batch", validation=new)


def test_knn_label_agreement_against_brute_force():
    rng = np.random.default_rng(4)
    latent = rng.normal(size=(90, 3))
    labels = rng.choice(["x", "y", "z"], size=90)
    batches = rng.choice(["a", "b", "c"], size=90)
    for k in [1, 7, 200]:  # k beyond the size of the other batches: all of their cells
        got = scvi.knn_label_agreement(latent, labels, batches, k=k)
        d = ((latent[:, None] - latent[None]) ** 2).sum(-1)
        per_cell = []
        for i in range(90):
            other = np.flatnonzero(batches != batches[i])
            nearest = other[np.argsort(d[i, other])[:k]]
            per_cell.append(np.mean(labels[nearest] == labels[i]))
        assert np.isclose(got, np.mean(per_cell)), (k, got, np.mean(per_cell))
    # types that line up across batches agree fully; types merged across batches do not
    apart = np.vstack([rng.normal(0, 1, (100, 2)), rng.normal(50, 1, (100, 2))])
    types = np.repeat(["t1", "t2"], 100)
    assert scvi.knn_label_agreement(apart, types, np.tile(["a", "b"], 100), k=10) == 1.0
    blob = rng.normal(size=(200, 2))  # both types merged into one cloud: half of the neighbours agree
    merged = scvi.knn_label_agreement(blob, rng.permutation(types), np.tile(["a", "b"], 100), k=10)
    assert 0.35 < merged < 0.65, merged
    with pytest.raises(ValueError, match="two batches"):
        scvi.knn_label_agreement(apart, types, np.repeat("a", 200))
