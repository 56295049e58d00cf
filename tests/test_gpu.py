"""One training step of every model of the course, on each device this machine has.

The CPU run always happens (it keeps this file honest about the models' APIs); the CUDA
run, marked `gpu`, is skipped with a message where no CUDA device is present, as on the
course's CI machine. On Colab with a GPU runtime, or any CUDA machine:
`pytest -m gpu tests/test_gpu.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sclecture
from sclecture.training import train

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(),
                           reason="no CUDA device on this machine; run `pytest -m gpu` where one is (e.g. Colab GPU)"),
    ]),
]


def _step(module, loss_fn, data, device):
    sclecture.set_seed(0)
    before = [p.detach().clone() for p in module.parameters()]
    hist = train(module, loss_fn, data, epochs=1, batch_size=32, lr=1e-3, device=device, progress=False)
    assert np.isfinite(hist["loss"][0])
    params = list(module.parameters())
    assert all(p.device.type == device for p in params), "every parameter lives on the requested device"
    assert any(not torch.equal(b, p.detach().cpu().to(b.device)) for b, p in zip(before, params)), "a step changes the weights"


@pytest.fixture
def counts():
    rng = np.random.default_rng(0)
    return rng.poisson(2.0, size=(64, 30)).astype(np.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_logistic_regression(device):
    from sclecture.linear import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] > 0).astype(int)
    model = LogisticRegression(lr=0.5, n_iter=5, device=device).fit(X, y)
    assert model.predict_proba(X).shape[0] == 80


@pytest.mark.parametrize("device", DEVICES)
def test_mlp(device):
    from sclecture.mlp import make_torch_mlp

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    net = make_torch_mlp((4, 16, 3))
    _step(net, lambda m, b, e: torch.nn.functional.cross_entropy(m(b[0]), b[1]), (X, y), device)


@pytest.mark.parametrize("device", DEVICES)
def test_actinn(device, counts):
    from sclecture.actinn import ACTINNNet

    y = np.random.default_rng(1).integers(0, 4, len(counts))
    net = ACTINNNet(counts.shape[1], 4)
    _step(net, lambda m, b, e: m.loss(b[0], b[1]), (np.log1p(counts), y), device)


@pytest.mark.parametrize("device", DEVICES)
def test_vae(device, counts):
    from sclecture.vae import VAE

    vae = VAE(counts.shape[1], n_latent=2, hidden=(16,))
    _step(vae, lambda m, b, e: -m.elbo(b[0])["elbo"].mean(), (np.log1p(counts),), device)


@pytest.mark.parametrize("device", DEVICES)
def test_scvi(device, counts):
    from sclecture.scvi import SCVIModule

    batch = np.random.default_rng(2).integers(0, 2, len(counts))
    module = SCVIModule(counts.shape[1], n_batches=2, n_latent=3, n_hidden=16)
    _step(module, lambda m, b, e: m.loss(b[0], b[1]), (counts, batch), device)
