"""The one training loop: it decreases a loss, repeats under a seed, shows progress."""

import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sclecture
from sclecture.training import FusedAdam, History, MinibatchLoader, fused_adam, shuffle_seed, train


def _regression(n=400, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, 1)).astype(np.float32)
    y = X @ w + 0.01 * rng.normal(size=(n, 1)).astype(np.float32)
    return X, y, w


def _mse(model, batch, epoch):
    x, y = batch
    return torch.mean((model(x) - y) ** 2)


def test_training_decreases_the_loss_and_recovers_weights():
    X, y, w = _regression()
    sclecture.set_seed(0)
    model = torch.nn.Linear(5, 1)
    hist = train(model, _mse, (X, y), epochs=30, batch_size=32, lr=0.05, progress=False)
    losses = hist["loss"]
    assert len(losses) == 30 and len(hist) == 30
    assert losses[-1] < 0.01 * losses[0]
    np.testing.assert_allclose(model.weight.detach().numpy().ravel(), w.ravel(), atol=0.02)
    assert len(hist.step_loss) == 30 * 13  # ceil(400 / 32) steps per epoch
    assert not model.training, "the model is left in eval mode"


def test_same_seed_same_result():
    X, y, _ = _regression()
    out = []
    for _ in range(2):
        sclecture.set_seed(1)
        model = torch.nn.Linear(5, 1)
        h = train(model, _mse, (X, y), epochs=3, batch_size=50, seed=7, progress=False)
        out.append((h.step_loss, model.weight.detach().clone()))
    assert out[0][0] == out[1][0]
    assert torch.equal(out[0][1], out[1][1])


def test_progress_bar_is_shown(capsys):
    X, y, _ = _regression(n=64)
    train(torch.nn.Linear(5, 1), _mse, (X, y), epochs=2, batch_size=16, desc="fitting toy", progress=True)
    err = capsys.readouterr().err
    assert "fitting toy" in err and "2/2" in err and "loss=" in err


def test_dict_losses_and_validation_are_logged():
    X, y, _ = _regression()

    def loss(model, batch, epoch):
        x, t = batch
        mse = torch.mean((model(x) - t) ** 2)
        return {"loss": mse, "mse_copy": mse.detach() * 2}

    h = train(torch.nn.Linear(5, 1), loss, (X[:300], y[:300]), validation=(X[300:], y[300:]),
              epochs=4, lr=0.05, progress=False)
    assert set(h.keys()) == {"loss", "mse_copy", "val_loss", "val_mse_copy"}
    np.testing.assert_allclose(h["mse_copy"], 2 * np.array(h["loss"]), rtol=1e-5)
    assert h["val_loss"][-1] < h["val_loss"][0]


def test_lr_schedule_is_applied():
    X, y, _ = _regression(n=64)
    model = torch.nn.Linear(5, 1)
    before = model.weight.detach().clone()
    train(model, _mse, (X, y), epochs=2, lr=0.1, lr_schedule=lambda step: 0.0, progress=False)
    assert torch.equal(before, model.weight.detach()), "a zero learning-rate factor must freeze the weights"


def test_non_finite_loss_stops_with_a_clear_error():
    X, y, _ = _regression(n=64)
    X[3, 0] = np.nan
    with pytest.raises(FloatingPointError, match="NaN"):
        train(torch.nn.Linear(5, 1), _mse, (X, y), epochs=1, batch_size=64, progress=False)


def test_non_finite_loss_names_its_step_after_the_epoch():
    X, y, _ = _regression(n=64)
    X[40, 0] = np.inf  # in one of the first epoch's four minibatches

    seen = []

    def loss(model, batch, epoch):
        x, t = batch
        seen.append(bool(torch.isfinite(x).all()))
        return torch.mean((model(x) - t) ** 2)

    with pytest.raises(FloatingPointError, match=r"at epoch 0, step (\d+)") as err:
        train(torch.nn.Linear(5, 1), loss, (X, y), epochs=3, batch_size=16, progress=False)
    first_bad = seen.index(False)
    assert f"step {first_bad};" in str(err.value), "the error names the first step whose loss was not finite"
    assert len(seen) == 4, "training stops at the end of the epoch that went wrong"


def test_no_host_sync_per_step():
    """Logged values stay on the device until the epoch ends: a GPU never waits for the host between steps.
    Counted here as the training loop's own conversions of tensors to host values (each one a device sync
    on a GPU; torch.optim's CPU-side step counters are not the loop's)."""
    import sys

    from torch.overrides import TorchFunctionMode

    syncing = {torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.__bool__, torch.Tensor.__int__,
               torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu}
    calls = []

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in syncing and sys._getframe(1).f_code.co_filename == sclecture.training.__file__:
                calls.append(func.__name__)
            return func(*args, **(kwargs or {}))

    X, y, _ = _regression(n=320)

    def loss(model, batch, epoch):
        x, t = batch
        mse = torch.mean((model(x) - t) ** 2)
        return {"loss": mse, "mae": torch.mean(torch.abs(model(x) - t))}

    with Count():
        h = train(torch.nn.Linear(5, 1), loss, (X, y), epochs=3, batch_size=16, progress=False)
    assert len(h.step_loss) == 60
    assert len(calls) <= 3 * 2, f"{len(calls)} host syncs in 60 steps: {sorted(set(calls))}"
    np.testing.assert_allclose(np.mean(h.step_loss[-20:]), h["loss"][-1], rtol=1e-6)  # equal minibatches


def test_loader_nonzero_index_matches_the_dense_rows():
    rng = np.random.default_rng(1)
    dense = rng.poisson(0.4, size=(37, 11)).astype(np.float32)
    other = rng.poisson(0.2, size=(37, 5)).astype(np.float32)
    loader = MinibatchLoader((sp.csr_matrix(dense), np.arange(37), sp.csr_matrix(other)), batch_size=8,
                             shuffle=True, seed=2, nonzero_index=True)
    n_batches = 0
    for xb, ib, ob, x_nz, o_nz in loader:
        np.testing.assert_array_equal(xb.numpy(), dense[ib.numpy()])
        assert torch.equal(x_nz, torch.nonzero(xb.reshape(-1)).squeeze(1)), "same entries, same order"
        assert torch.equal(o_nz, torch.nonzero(ob.reshape(-1)).squeeze(1))
        n_batches += 1
    assert n_batches == 5  # the last minibatch has 5 cells
    plain = next(iter(MinibatchLoader((sp.csr_matrix(dense), np.arange(37)), batch_size=8)))
    assert len(plain) == 2, "without nonzero_index the minibatch holds the arrays only"


def test_loader_stores_a_sparse_matrix_dense_when_that_takes_no_more_memory(monkeypatch):
    """About half nonzero or more, a dense copy is no larger than the CSR: the loader stores it dense (a
    minibatch is then a copy of rows), gives the same minibatches, and appends no nonzero index for it."""
    rng = np.random.default_rng(4)
    full = rng.poisson(3.0, size=(40, 30)).astype(np.float32)  # about 95 % nonzero
    thin = rng.poisson(0.2, size=(40, 30)).astype(np.float32)  # about 18 %
    csr = sp.csr_matrix(full)
    loader = MinibatchLoader((csr, np.arange(40), sp.csr_matrix(thin)), batch_size=16, shuffle=True, seed=5,
                             nonzero_index=True)
    stored, _, kept = loader.arrays
    assert isinstance(stored, torch.Tensor) and stored.dtype == torch.float32 and sp.issparse(kept)
    assert stored.device.type == "cpu"
    assert stored.numel() * stored.element_size() <= csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes
    n = 0
    for xb, ib, tb, t_nz in loader:  # one nonzero index: the thin matrix's
        np.testing.assert_array_equal(xb.numpy(), full[ib.numpy()])
        np.testing.assert_array_equal(tb.numpy(), thin[ib.numpy()])
        assert torch.equal(t_nz, torch.nonzero(tb.reshape(-1)).squeeze(1))
        n += 1
    assert n == 3
    # the rule weighs the dtype the minibatches will have: 63 % nonzero float64 counts with int32 indices
    # take 12 bytes per stored entry, 7.6 per cell and gene; dense float32 takes 4, dense float64 8
    mid = sp.csr_matrix(rng.poisson(1.0, size=(200, 50)).astype(np.float64))
    assert isinstance(MinibatchLoader(mid, dtype=torch.float32).arrays[0], torch.Tensor)
    assert sp.issparse(MinibatchLoader(mid, dtype=None).arrays[0])
    first = next(iter(MinibatchLoader(mid, batch_size=200, shuffle=False)))[0]
    assert first.dtype == torch.float32
    np.testing.assert_array_equal(first.numpy(), mid.toarray().astype(np.float32))
    # duplicate entries are summed and stored zeros stay zeros, as when each minibatch was densified
    messy = sp.coo_matrix((np.r_[1.0, 2.0, 0.0], ([0, 0, 1], [0, 0, 1])), shape=(2, 2))
    assert isinstance(MinibatchLoader(messy).arrays[0], torch.Tensor)
    np.testing.assert_array_equal(next(iter(MinibatchLoader(messy, shuffle=False)))[0].numpy(), [[3, 0], [0, 0]])
    # above DENSE_COPY_MAX_BYTES a dense-enough matrix stays CSR: training never holds a big second copy
    monkeypatch.setattr(sclecture.training, "DENSE_COPY_MAX_BYTES", csr.shape[0] * csr.shape[1] * 4 - 1)
    assert sp.issparse(MinibatchLoader(csr).arrays[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loader_keeps_sparse_input_on_the_host_and_sends_minibatches_to_the_gpu():
    rng = np.random.default_rng(6)
    full = rng.poisson(3.0, size=(40, 30)).astype(np.float32)  # stored dense
    thin = rng.poisson(0.2, size=(40, 30)).astype(np.float32)  # kept as CSR
    loader = MinibatchLoader((sp.csr_matrix(full), sp.csr_matrix(thin), np.arange(40)), batch_size=16,
                             device="cuda", nonzero_index=True)
    assert loader.arrays[0].device.type == "cpu" and sp.issparse(loader.arrays[1])  # no GPU memory for the data
    assert loader.arrays[2].device.type == "cuda"  # dense input goes to the device once
    for xb, tb, ib, t_nz in loader:
        assert xb.device.type == tb.device.type == t_nz.device.type == "cuda"
        np.testing.assert_array_equal(xb.cpu().numpy(), full[ib.cpu().numpy()])
        np.testing.assert_array_equal(tb.cpu().numpy(), thin[ib.cpu().numpy()])


def test_loader_batches_sparse_rows_without_densifying_everything():
    rng = np.random.default_rng(0)
    dense = rng.poisson(0.3, size=(50, 20)).astype(np.float32)
    labels = np.arange(50)
    loader = MinibatchLoader((sp.csr_matrix(dense), labels), batch_size=16, shuffle=True, seed=3)
    assert sp.issparse(loader.arrays[0]), "sparse input stays sparse on the host"
    seen = []
    for xb, lb in loader:
        assert xb.shape[1] == 20 and xb.dtype == torch.float32
        np.testing.assert_array_equal(xb.numpy(), dense[lb.numpy()])
        seen.extend(lb.tolist())
    assert sorted(seen) == list(range(50)) and seen != list(range(50))
    assert len(loader) == 4


def test_loader_errors():
    with pytest.raises(ValueError, match="same number of rows"):
        MinibatchLoader((np.zeros((3, 2)), np.zeros(4)))
    with pytest.raises(ValueError, match="empty"):
        MinibatchLoader((np.zeros((0, 2)),))
    with pytest.raises(ValueError, match="batch_size"):
        MinibatchLoader((np.zeros((3, 2)),), batch_size=0)


def test_history_plot():
    import matplotlib

    matplotlib.use("Agg")
    h = History(epoch={"loss": [3.0, 2.0, 1.0], "val_loss": [3.5, 2.5, 1.8]})
    ax = h.plot()
    assert [l.get_label() for l in ax.get_lines()] == ["loss", "val_loss"]
    with pytest.raises(ValueError, match="empty"):
        History().plot()


def test_fused_adam_takes_a_generator_of_parameters_and_falls_back_to_plain_adam_with_it(monkeypatch):
    """module.parameters() is a generator: fused_adam must hand the same weights to plain Adam when the fused
    optimiser cannot be built (an older torch), not the generator it has already run through."""
    def refuse(self, params, **kwargs):  # as torch's Optimizer.__init__ would: the parameters read, then refused
        list(params)
        raise RuntimeError("fused=True is not supported here")

    for fused in (True, False):
        net = torch.nn.Linear(5, 2)
        if not fused:
            monkeypatch.setattr(FusedAdam, "__init__", refuse)
        opt = fused_adam(net.parameters(), lr=1e-2)
        assert isinstance(opt, FusedAdam) is fused and isinstance(opt, torch.optim.Adam)
        assert [p for g in opt.param_groups for p in g["params"]] == list(net.parameters())
        before = net.weight.detach().clone()
        net(torch.ones(3, 5)).sum().backward()
        opt.step()
        assert not torch.equal(net.weight, before)


def _adam_run(make, steps=30):
    """Weights and Adam state after ``steps`` steps of a small net with two parameter groups (other lr and
    weight decay); the second group's weight gets no gradient on every third step."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x, y = torch.randn(64, 20), torch.randn(64, 3)
    opt = make([{"params": net[0].parameters()},
                {"params": net[2].parameters(), "lr": 3e-3, "weight_decay": 1e-2}])
    for t in range(steps):
        opt.zero_grad(set_to_none=True)
        ((net(x) - y) ** 2).mean().backward()
        if t % 3 == 2:
            net[2].weight.grad = None  # torch's Adam skips it; so must the lean step
        opt.step()
    state = [v for p in net.parameters() for v in opt.state[p].values()]
    return [p.detach().clone() for p in net.parameters()] + [v.clone() for v in state], opt


def test_fused_adam_steps_are_bit_for_bit_torchs_fused_adam_and_close_to_the_loop_version(monkeypatch):
    kw = dict(lr=1e-2, eps=0.01, weight_decay=1e-6)
    ours, opt = _adam_run(lambda groups: fused_adam(groups, **kw))
    assert isinstance(opt, FusedAdam) and isinstance(opt, torch.optim.Adam)
    torch_fused, _ = _adam_run(lambda groups: torch.optim.Adam(groups, fused=True, **kw))
    for a, b in zip(ours, torch_fused):
        assert torch.equal(a, b)
    loop, _ = _adam_run(lambda groups: torch.optim.Adam(groups, foreach=False, **kw))  # torch's per-tensor code
    for a, b in zip(ours, loop):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    # after the first step (which makes the state) the lean step runs: torch's grouping code is not called again,
    # and step hooks still run once per step, whether or not torch has wrapped Adam.step with them
    calls = []
    adam_module = sys.modules[torch.optim.Adam.__module__]
    real = adam_module._fused_adam
    monkeypatch.setattr(adam_module, "_fused_adam", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # wraps Adam.step with the hooks, as any plain Adam does
    seen = []
    def make(groups):
        o = fused_adam(groups, **kw)
        o.register_step_pre_hook(lambda *a: seen.append("pre"))
        o.register_step_post_hook(lambda *a: seen.append("post"))
        return o
    again, _ = _adam_run(make, steps=5)
    assert len(calls) == 2 and seen == ["pre", "post"] * 5  # torch's code: the first step, once per group
    for a, b in zip(again, _adam_run(lambda groups: torch.optim.Adam(groups, fused=True, **kw), steps=5)[0]):
        assert torch.equal(a, b)


def test_fused_adam_leaves_what_its_lean_step_does_not_cover_to_torch():
    torch.manual_seed(0)
    for options in ({"amsgrad": True}, {"maximize": True}):
        paths = []
        for make in (FusedAdam, lambda p, **k: torch.optim.Adam(p, fused=True, **k)):
            w = torch.nn.Parameter(torch.ones(4))
            opt = make([w], lr=0.1, **options)
            for _ in range(3):
                opt.zero_grad()
                (w * torch.arange(4.0)).sum().backward()
                opt.step()
            paths.append(w.detach())
        assert torch.equal(paths[0], paths[1]), options
    w = torch.nn.Parameter(torch.ones(3))
    opt = FusedAdam([w], lr=0.1)
    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss
    assert opt.step(closure).item() == 3.0 and opt.step(closure).item() < 3.0  # a closure's loss comes back
    opt.zero_grad(set_to_none=False)
    assert torch.equal(w.grad, torch.zeros(3))


def test_fused_adam_falls_back_to_torchs_step_for_good_when_the_kernel_refuses_its_call(monkeypatch):
    # another torch may spell the private kernel's arguments differently: the refused call must change nothing
    kw = dict(lr=1e-2, eps=0.01, weight_decay=1e-6)
    real, calls, refused = torch._fused_adam_, [], []

    def refuse_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # torch's first step makes two calls (one per group); the third is the lean step's
            refused.append(1)
            raise TypeError("_fused_adam_() got an unexpected keyword argument")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", refuse_once)
    ours, opt = _adam_run(lambda groups: fused_adam(groups, **kw))
    monkeypatch.setattr(torch, "_fused_adam_", real)
    assert refused and opt._lean is False
    for a, b in zip(ours, _adam_run(lambda groups: torch.optim.Adam(groups, fused=True, **kw))[0]):
        assert torch.equal(a, b)


def test_minibatch_order_does_not_replay_the_weight_initialisation_stream():
    # torch.Generator().manual_seed(seed) would draw the same numbers that set_seed(seed) gives to
    # nn.Linear's initialisation, making every epoch's order a function of the initial weights
    n = 2253
    for seed in (0, 1, 5):
        first = next(iter(MinibatchLoader((np.arange(n),), batch_size=n, shuffle=True, seed=seed)))[0]
        replay = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        assert not torch.equal(first.long(), replay)
        again = next(iter(MinibatchLoader((np.arange(n),), batch_size=n, shuffle=True, seed=seed)))[0]
        assert torch.equal(first, again)  # still repeatable from the seed
    assert shuffle_seed(0) != shuffle_seed(1) and all(0 <= shuffle_seed(s) < 2**63 for s in (2**40, -1))


def test_expect_result_stops_a_run_that_contradicts_the_text_except_in_quick_mode(monkeypatch):
    from sclecture.training import expect_result

    monkeypatch.delenv("SCLECTURE_QUICK", raising=False)
    expect_result(True, "holds")
    with pytest.raises(AssertionError, match="the lesson's text says: B cells transfer well"):
        expect_result(False, "B cells transfer well")
    monkeypatch.setenv("SCLECTURE_QUICK", "1")
    expect_result(False, "a two-epoch run is not held to the full run's results")
