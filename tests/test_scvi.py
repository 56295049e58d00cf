"""sclecture.scvi: its pieces against torch.distributions and closed forms, the trained model
on simulated counts with known cell types and batches, and its bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import distributions as td

from sclecture import scvi
from sclecture.datasets import simulate_counts


@pytest.fixture(scope="module")
def sim():
    return simulate_counts(n_cells=800, n_genes=200, n_types=4, n_batches=2, seed=3)


@pytest.fixture(scope="module")
def fitted(sim):
    model = scvi.SCVI(n_epochs=40, progress=False, random_state=0).fit(sim, batch_key="batch")
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
    assert hist.n_epochs == 40 and hist["loss"][-1] < hist["loss"][0]


def test_outputs(fitted, sim):
    rho = fitted.get_normalized_expression(sim[:50], library_size=1e4)
    np.testing.assert_allclose(rho.sum(1), 1e4, rtol=1e-4)
    as_b0 = fitted.get_normalized_expression(sim[:50], transform_batch="batch0")
    as_b1 = fitted.get_normalized_expression(sim[:50], transform_batch="batch1")
    assert not np.allclose(as_b0, as_b1)
    e1, e2 = fitted.get_elbo(sim[:50]), fitted.get_elbo(sim[:50])
    np.testing.assert_array_equal(e1, e2)  # evaluation is seeded


def test_sparse_and_dense_input_give_the_same_model(sim):
    dense = sim.X.toarray()
    a = scvi.SCVI(n_epochs=2, progress=False).fit(sp.csr_matrix(dense))
    b = scvi.SCVI(n_epochs=2, progress=False).fit(dense)
    np.testing.assert_allclose(a.history_["loss"], b.history_["loss"], rtol=1e-5)
    np.testing.assert_allclose(a.get_latent_representation(), b.get_latent_representation(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(likelihood="nb"), dict(likelihood="poisson"), dict(library="latent", n_layers=2)])
def test_other_settings_train(sim, kw):
    m = scvi.SCVI(n_epochs=2, progress=False, **kw).fit(sim[:300], batch_key="batch")
    assert np.all(np.isfinite(m.get_elbo())) and np.all(np.isfinite(m.get_marginal_ll(n_samples=5)))


# --------------------------------------------------------------------------- bad input

def test_bad_input(sim, fitted):
    model = scvi.SCVI(n_epochs=1, progress=False)
    X = sim.X.toarray()
    with pytest.raises(ValueError, match="non-integer"):
        model.fit(X + 0.5)
    with pytest.raises(ValueError, match="negative"):
        model.fit(X - 1)
    Z = X.copy()
    Z[5] = 0
    with pytest.raises(ValueError, match="no counts at all"):
        model.fit(Z)
    with pytest.raises(KeyError, match="no column 'sample'"):
        model.fit(sim, batch_key="sample")
    with pytest.raises(ValueError, match="likelihood"):
        scvi.SCVI(likelihood="gaussian").fit(sim)
    with pytest.raises(RuntimeError, match="not fitted"):
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
