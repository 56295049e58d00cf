"""The compiled loops of scVI's likelihood (sclecture/_native.c): as exact as the plain formulas on every CPU
code path they may be built for, used only after they pass a check, and never the only way to train."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from sclecture import _native, scvi
from sclecture.distributions import _log_zinb
from test_scvi import _likelihood_inputs

# CPU code paths a user's machine may have: this CPU's, AVX2 (most laptops), and the SSE2 baseline
MARCH = {"native": "-march=native", "avx2": "-march=x86-64-v3", "sse2": "-march=x86-64"}


def _buildable() -> bool:
    return _native._unsupported() is None and _native._compiler() is not None


needs_compiler = pytest.mark.skipif(
    not _buildable(), reason=f"the loops are not built here: {_native._unsupported() or 'no C compiler'}")


@pytest.fixture(autouse=True)
def fresh_decision(monkeypatch, tmp_path):
    """Each test decides anew, and builds into a folder of its own (never the user's cache)."""
    monkeypatch.setenv("SCLECTURE_CACHE_DIR", str(tmp_path / "cache"))
    _native.reset()
    yield
    _native.reset()


def _flags(march: str) -> list[str]:
    return [MARCH[march] if f == "-march=native" else f for f in _native.COMPILE]


def _layout(sparse: bool):
    return type("Layout", (scvi.CountTerms,), {"SPARSE_BELOW": 1.0 if sparse else 0.0})


def _value_and_grads(lib, x, mu, theta, eta, weights, sparse):
    args = [t.float().clone().requires_grad_() for t in (mu, theta, eta)]
    out = scvi._ZINBLogLik.apply(*args, _layout(sparse)(x.float()), lib)
    return [out.detach().double(), *(g.double() for g in torch.autograd.grad((out * weights.float()).sum(), args))]


@needs_compiler
@pytest.mark.parametrize("march", list(MARCH))
@pytest.mark.parametrize("sparse", [True, False], ids=["nonzero-entries", "dense"])
def test_loops_match_the_plain_formulas(march, sparse, tmp_path):
    """Against distributions._log_zinb in float64, on counts with zeros, 1e4 and whole-zero cells, mu from 1e-4 to
    1e4 and theta from 1e-6 to 1e6: values to 1e-5 and gradients to 1e-5 where float32 can hold them (theta within
    1e-3 .. 1e3), and, for any theta, values as close as the torch code's float32 and gradients to 1e-5."""
    lib = _native.load(_native.build(tmp_path, _flags(march)))
    for seed in range(3):
        x, mu, theta, eta = _likelihood_inputs(seed, (16, 200))
        for clamp in (True, False):
            th = theta.clamp(1e-3, 1e3) if clamp else theta
            exact_args = [t.clone().requires_grad_() for t in (mu, th, eta)]
            exact = _log_zinb(x, *exact_args).sum(-1)
            weights = torch.rand(16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            exact_grads = torch.autograd.grad((exact * weights).sum(), exact_args)
            got = _value_and_grads(lib, x, mu, th, eta, weights, sparse)
            torch_code = _value_and_grads(None, x, mu, th, eta, weights, sparse)
            error = ((got[0] - exact).abs() / exact.abs()).max()
            if clamp:
                assert error < 1e-5, f"{march}, seed {seed}: values {error:.2g} (relative) off"
            else:  # lgamma(x + theta) - lgamma(theta) cancels in float32 for theta = 1e6, in both codes
                torch_error = ((torch_code[0] - exact).abs() / exact.abs()).max()
                assert error <= 2 * torch_error + 1e-6, f"{march}, seed {seed}: {error:.2g} against {torch_error:.2g}"
            for name, a, b in zip(("mu", "theta", "pi_logits"), got[1:], exact_grads):
                scale = float(b.abs().max())
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * scale,
                                           msg=lambda m, name=name: f"{march}, d/d {name}: {m}")


@needs_compiler
@pytest.mark.parametrize("sparse", [True, False], ids=["nonzero-entries", "dense"])
def test_a_nan_reaches_the_same_cells_as_in_the_torch_code(sparse):
    """-ffast-math lets the compiler assume there is no NaN; a diverging fit must still show one in its loss, which
    stops training (sclecture.training names the step)."""
    lib = _native.library()
    assert lib is not None, _native.status()
    x, mu, theta, eta = (t.float() for t in _likelihood_inputs(2, (12, 50)))
    for which in range(3):
        args = [t.clone() for t in (mu, theta, eta)]
        args[which].view(-1)[7] = float("nan")  # an entry of cell 0 (for theta: gene 7, in every cell)
        nan_cells = [scvi._ZINBLogLik.apply(*args, _layout(sparse)(x), code).isnan().nonzero().flatten().tolist()
                     for code in (lib, None)]
        assert nan_cells[0] == nan_cells[1] == ([0] if which != 1 else list(range(12)))


@needs_compiler
def test_training_uses_the_loops_and_trains_as_the_torch_code_does(monkeypatch):
    """A fit calls the loops where they are built; with SCLECTURE_NATIVE=0 it does not; the two fits follow each
    other to float32 rounding."""
    import anndata as ad

    counts = np.random.default_rng(0).poisson(np.random.default_rng(1).gamma(0.3, 4.0, size=(400, 60)))
    adata = ad.AnnData(counts.astype(np.float32))
    calls = []
    forward = scvi._native_forward
    monkeypatch.setattr(scvi, "_native_forward", lambda *a: calls.append(1) or forward(*a))
    runs = {}
    for setting in ("1", "0"):
        monkeypatch.setenv("SCLECTURE_NATIVE", setting)
        _native.reset()
        calls.clear()
        model = scvi.SCVI(epochs=3, progress=False, random_state=0, device="cpu").fit(adata)
        runs[setting] = (len(calls), np.asarray(model.history_["loss"]), model.get_latent_representation(adata))
    (used, loss_on, z_on), (unused, loss_off, z_off) = runs["1"], runs["0"]
    assert used >= 3 * 4 and unused == 0  # 4 minibatches of 128 cells per epoch, and the scores after
    np.testing.assert_allclose(loss_on, loss_off, rtol=1e-4)
    np.testing.assert_allclose(z_on, z_off, atol=1e-3)


FALLBACKS = {  # what a machine may lack, and what status() then says
    "turned off": (lambda mp: mp.setenv("SCLECTURE_NATIVE", "0"), ["SCLECTURE_NATIVE=0"]),
    "macOS": (lambda mp: mp.setattr(platform, "system", lambda: "Darwin"), ["needs Linux on x86-64", "Darwin"]),
    "ARM": (lambda mp: mp.setattr(platform, "machine", lambda: "aarch64"), ["needs Linux on x86-64", "aarch64"]),
    "old glibc": (lambda mp: mp.setattr(platform, "libc_ver", lambda: ("glibc", "2.31")), ["glibc 2.35", "2.31"]),
    "musl": (lambda mp: mp.setattr(platform, "libc_ver", lambda: ("", "")), ["glibc 2.35", "no glibc"]),
    "no compiler": (lambda mp: mp.setattr(_native, "_compiler", lambda: None), ["no C compiler", "CC"]),
    "compiler fails": (lambda mp: mp.setattr(_native, "COMPILE", [*_native.COMPILE, "-fno-such-option"]),
                       ["could not build", "-fno-such-option"]),  # the compiler's own complaint
}


@pytest.mark.parametrize("case", list(FALLBACKS))
def test_each_missing_requirement_falls_back_to_the_torch_code_and_says_why(case, monkeypatch):
    patch, words = FALLBACKS[case]
    if case in ("no compiler", "compiler fails") and _native._unsupported() is not None:
        pytest.skip(f"the platform checks already fail here: {_native._unsupported()}")
    patch(monkeypatch)
    _native.reset()
    assert _native.library() is None
    assert all(w in _native.status() for w in words), _native.status()
    # the likelihood is then the torch code's, and training runs
    x, mu, theta, eta = (t.float() for t in _likelihood_inputs(2, (12, 50)))
    torch.testing.assert_close(scvi.zinb_log_likelihood(x, mu, theta, eta),
                               scvi._ZINBLogLik.apply(mu, theta, eta, scvi.CountTerms(x), None), rtol=0, atol=0)
    counts = np.random.default_rng(0).poisson(2.0, size=(200, 30)).astype(np.float32)
    assert np.isfinite(scvi.SCVI(epochs=1, progress=False, device="cpu").fit(counts).history_["loss"]).all()


@needs_compiler
def test_a_library_that_gets_it_wrong_is_not_used(monkeypatch, tmp_path):
    """The check that library() runs before training may use the loops refuses loops that compute something else
    (here: part 2, the nonzero-count terms, left out)."""
    real = _native.load(_native.build(tmp_path))
    assert scvi._native_matches_torch(real) is None
    wrong = types.SimpleNamespace(zinb_all_entries=real.zinb_all_entries, scale_by_cell=real.scale_by_cell,
                                  nb_nonzero_dense=lambda *a: None, nb_nonzero_sparse=lambda *a: None)
    assert "value" in scvi._native_matches_torch(wrong)
    monkeypatch.setattr(_native, "load", lambda path: wrong)
    assert _native.library() is None and "differ from the torch code" in _native.status()


@needs_compiler
def test_built_once_per_source_flags_and_cpu(tmp_path):
    first = _native.build(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert _native.build(tmp_path) == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    other = _native.build(tmp_path, _flags("sse2"))
    assert other != first and sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])
    shared = tmp_path / "read-only"
    shared.mkdir()
    shared.chmod(0o555)  # a cache this user may not write: built elsewhere, and the folder is left as it was
    aside = _native.build(shared)
    assert aside.parent != shared and not list(shared.iterdir()) and _native.load(aside).scale_by_cell


LOAD_AND_MULTIPLY = """
import sys, numpy as np, torch
from sclecture import _native
_native.load(sys.argv[1])
print(float(torch.tensor(1e-39) * 1), float(np.float32(1e-39) * np.float32(1)))
"""


@needs_compiler
def test_loading_the_library_keeps_denormal_numbers(tmp_path):
    """-ffast-math at link time would add start-up code that makes the whole process flush denormals to zero
    (torch, NumPy, the student's code); the library is linked without it. The second library, linked with it,
    shows that the check would catch it."""
    def products(path):
        done = subprocess.run([sys.executable, "-c", LOAD_AND_MULTIPLY, str(path)], capture_output=True, text=True,
                              check=True)
        return [float(v) for v in done.stdout.split()]

    assert products(_native.build(tmp_path)) == [pytest.approx(1e-39, rel=1e-3)] * 2
    cc, obj, linked = _native._compiler(), tmp_path / "fm.o", tmp_path / "fm.so"
    subprocess.run([cc, *_native.COMPILE, "-c", str(_native.SOURCE), "-o", str(obj)], check=True)

    def link(*flags):  # the linker's command line (-###), and the library it makes
        plan = subprocess.run([cc, *_native.LINK, *flags, str(obj), "-o", str(linked), "-lm", "-###"],
                              capture_output=True, text=True, check=True).stderr
        subprocess.run([cc, *_native.LINK, *flags, str(obj), "-o", str(linked), "-lm"], check=True)
        return plan

    assert "crtfastmath" not in link()  # the course's link never adds the start-up code
    if "crtfastmath" in link("-ffast-math"):  # gcc before 13 adds it to shared libraries too
        assert products(linked) == [0.0, 0.0]


@needs_compiler
@pytest.mark.parametrize("sparse", [True, False], ids=["nonzero-entries", "dense"])
def test_huge_dispersions_stay_finite(sparse):
    """theta = exp(log theta) may grow without bound for a Poisson-like gene; the loops' lgamma must not overflow
    (z (z + 1) (z + 2) does beyond z = 7e12) where the torch code stays finite."""
    lib = _native.library()
    assert lib is not None, _native.status()
    x, mu, theta, eta = (t.float() for t in _likelihood_inputs(4, (12, 50)))
    for big in (1e9, 1e13, 1e20, 1e30):
        th = theta.clone()
        th[10:20] = big
        results = [_value_and_grads(code, x, mu, th, eta, torch.ones(12), sparse) for code in (lib, None)]
        for name, a, b in zip(("value", "d/d mu", "d/d theta", "d/d eta"), *results):
            assert bool(b.isfinite().all()) and bool(a.isfinite().all()), f"theta {big:g}: {name} not finite"


@needs_compiler
def test_the_first_call_may_come_from_any_mode_and_default_dtype():
    """library() checks the loops once per process, from whatever code first needs them: scoring a loaded model
    under no_grad or inference_mode, or a session whose default dtype is float64."""
    for mode in (torch.no_grad, torch.inference_mode):
        _native.reset()
        with mode():
            assert _native.library() is not None, _native.status()
    _native.reset()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert _native.library() is not None, _native.status()
    finally:
        torch.set_default_dtype(default)


@needs_compiler
def test_the_loops_refuse_what_they_cannot_read():
    """C reads raw float32 and int64 buffers: anything else is refused before the call, not misread."""
    lib = _native.library()
    x, mu, theta, eta = _likelihood_inputs(5, (6, 30))  # float64
    with pytest.raises(ValueError, match="float32"):
        scvi._ZINBLogLik.apply(mu, theta, eta, scvi.CountTerms(x.float()), lib)
    f = [t.float() for t in (mu, theta, eta)]
    with pytest.raises(ValueError, match="shape"):
        scvi._ZINBLogLik.apply(f[0], f[1][:-1], f[2], scvi.CountTerms(x.float()), lib)
    index = torch.nonzero(x.reshape(-1)).squeeze(1)
    with pytest.raises(ValueError, match="ascending"):  # the loops would read genes out of range
        scvi.CountTerms(x.float(), nonzero_index=index.flip(0))
    with pytest.raises(ValueError, match="ascending"):
        scvi.CountTerms(x.float(), nonzero_index=torch.cat([index[:1], index]))


@needs_compiler
def test_a_damaged_cached_library_is_built_again(tmp_path, monkeypatch):
    """A cached file that cannot be loaded (a build cut short, a full disk) is replaced, not trusted forever."""
    path = _native.build()
    path.write_bytes(b"not a shared library")
    _native.reset()
    assert _native.library() is not None, _native.status()
    assert _native.load(path).scale_by_cell


@needs_compiler
def test_a_read_only_cache_leaves_no_files_behind(tmp_path, monkeypatch):
    """With a cache this user may not write, each process builds into a temporary folder and removes it once the
    library is loaded."""
    import tempfile

    cache, scratch = tmp_path / "shared-cache", tmp_path / "tmp"
    (cache / "native").mkdir(parents=True)
    (cache / "native").chmod(0o555)
    scratch.mkdir()
    monkeypatch.setenv("SCLECTURE_CACHE_DIR", str(cache))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert _native.library() is not None, _native.status()
    assert not list(scratch.iterdir()) and not list((cache / "native").iterdir())


@needs_compiler
def test_threads_share_one_decision():
    """Two threads that start training at once get the same library, built and checked once."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        libs = list(pool.map(lambda _: _native.library(), range(8)))
    assert libs[0] is not None and all(lib is libs[0] for lib in libs)


def test_the_wheel_carries_the_source(tmp_path, root):
    """An installed (not editable) course builds the loops from the C file that the wheel ships."""
    import shutil
    import zipfile

    src = tmp_path / "src"  # a copy: setuptools builds inside the tree it is given
    shutil.copytree(root / "sclecture", src / "sclecture", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    wheel, = tmp_path.glob("sclecture-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sclecture/_native.c" in names and "sclecture/_native.py" in names
