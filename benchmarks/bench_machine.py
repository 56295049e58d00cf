"""Against the machine: how close the scVI and ACTINN trainers come to the CPU's matrix-multiply peak.

Measured in one run, with the thread count set explicitly (1 and 2 threads by default):

* the machine's float32 matrix-multiply peak: ``torch.mm`` of square 1024 and 2048 matrices
  (2 n^3 FLOPs each), median of repeats per size, the better size taken as the peak;
* the training epochs of the package's real code path, on realistic shapes:
  ``ACTINN().fit`` (published settings, minibatch 128) on pbmc3k through ``actinn_preprocess``
  (its 2,638 labelled cells as both training and test set: ~16,000 genes, dense features), and ``SCVI().fit`` (ZINB, 128 hidden,
  10 latent, minibatch 128) on zeisel_cortex, its 558 genes of largest variance (3,005 cells), and on
  pbmc3k, its 2,000 genes of largest variance (2,700 cells; the size of scvi-tools' tutorials' gene
  sets), CSR counts densified one minibatch at a time;
* their floating-point rate, counted from the layer sizes: forward hooks on every ``nn.Linear``
  see one minibatch of n cells, and each layer counts 2 n in out FLOPs forward, 2 n in out for
  the weight gradient and 2 n in out for the input gradient, the last only when the layer's input
  needs a gradient (not for the first layer, which reads the data). That is training = 3x forward,
  2x for the first layer. Elementwise work (activations, BatchNorm, softmax, the ZINB
  log-likelihood's lgamma/log/exp, Adam) is not counted, so the rate is a GEMM-FLOP rate;
* the ACTINN fit again on a row-major (C-order) copy of the same features, which shows what the
  memory order of ``actinn_preprocess``'s output costs;
* a profile of one epoch (``torch.profiler``, CPU, 1 thread; the mean of epochs 2-4 of a fit, so
  that set-up and first-call costs are left out): the top ops by self CPU time, and the epoch split into
  matrix multiplies, elementwise ops, data movement, densifying the minibatch, optimiser, autograd
  engine, and Python / untracked time (the epoch's wall time minus every op's self time).

Rounds interleave the matmul peak and both trainers, so that the load of a shared machine hits all
alike; medians over rounds are reported, with the load average.

    OMP_WAIT_POLICY=PASSIVE SCLECTURE_DATA_DIR=... python benchmarks/bench_machine.py [--threads 1 2] [--rounds 3]

Writes benchmarks/results/machine.{md,csv} (rates), machine_profile.{md,csv} (where an epoch's
time goes) and machine_ops.{md,csv} (top ops). About 2 minutes on an idle 2-core machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import check_args, median, top_variance_genes, write_table  # noqa: E402

import sclecture.actinn as actinn_mod  # noqa: E402
import sclecture.scvi as scvi_mod  # noqa: E402
from sclecture import training  # noqa: E402

EPOCHS = 3  # per timed fit; the first epoch of each fit is dropped
SCVI_GENES = 558
SCVI_DATA = {"scVI": ("zeisel_cortex", SCVI_GENES), "scVI, 2,000 genes": ("pbmc3k", 2000)}  # trainer: (data, genes)
MATMUL_SIZES = {1024: 5, 2048: 3}  # size: repeats per round


# ---------------------------------------------------------------------------------------
# data


def load_actinn():
    from sclecture.datasets import pbmc3k

    adata = pbmc3k()
    adata = adata[adata.obs["cell_type"].notna()].copy()
    t = time.perf_counter()
    feats = actinn_mod.actinn_preprocess(adata, adata)  # genes chosen on these cells (train = test here)
    return feats.train, adata.obs["cell_type"].astype(str).to_numpy(), time.perf_counter() - t


def load_scvi(name: str = "zeisel_cortex", n_genes: int = SCVI_GENES):
    from sclecture import datasets

    adata = getattr(datasets, name)()
    adata = top_variance_genes(adata, n_genes)
    return adata[np.asarray(adata.X.sum(axis=1)).ravel() > 0].copy()  # scVI needs every cell's library size


# ---------------------------------------------------------------------------------------
# the machine's matmul peak


def matmul_rates() -> tuple[dict[int, float], dict[int, float]]:
    """GFLOP per second of wall time and per second of process CPU time of float32 n x n
    matmuls, median over repeats, per size."""
    out, out_cpu = {}, {}
    for n, reps in MATMUL_SIZES.items():
        g = torch.Generator().manual_seed(n)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        c = torch.empty(n, n)
        torch.mm(a, b, out=c)  # warm-up
        rates, cpu_rates = [], []
        for _ in range(reps):
            t, tc = time.perf_counter(), time.process_time()
            torch.mm(a, b, out=c)
            rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
            cpu_rates.append(2 * n**3 / max(time.process_time() - tc, 1e-9) / 1e9)
        out[n], out_cpu[n] = median(rates), median(cpu_rates)
    return out, out_cpu


# ---------------------------------------------------------------------------------------
# counting FLOPs from the layer sizes


def linear_flops_per_cell(module: torch.nn.Module, run_one_step) -> tuple[float, list[str]]:
    """GEMM FLOPs of one training step per cell: forward hooks on every nn.Linear record
    (in, out, whether the input needs a gradient) during one forward pass."""
    seen = []

    def hook(mod, inputs, output):
        x = inputs[0]
        seen.append((mod.in_features, mod.out_features, x.requires_grad, x.reshape(-1, x.shape[-1]).shape[0]))

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Linear)]
    try:
        rows = run_one_step()  # cells in the minibatch
    finally:
        for h in handles:
            h.remove()
    total, desc = 0.0, []
    for d_in, d_out, grad_in, n in seen:
        per_cell = 2 * d_in * d_out * (3 if grad_in else 2) * (n / rows)
        total += per_cell
        desc.append(f"{d_in}x{d_out}{'' if grad_in else '*'}")
    return total, desc


def actinn_flops(X, labels):
    net = actinn_mod.ACTINNNet(X.shape[1], len(np.unique(labels)))
    xb, yb = torch.from_numpy(X[:128]), torch.zeros(128, dtype=torch.long)

    def step():
        net.loss(xb, yb)
        return xb.shape[0]

    return linear_flops_per_cell(net, step)


def scvi_flops(adata):
    mod = scvi_mod.SCVIModule(adata.n_vars)  # the SCVI estimator's defaults: 128 hidden, 10 latent, ZINB
    xb = torch.from_numpy(adata.X[:128].toarray())

    def step():
        mod.loss(xb)
        return xb.shape[0]

    return linear_flops_per_cell(mod, step)


# ---------------------------------------------------------------------------------------
# timed fits through the estimators, with a hook at every step


class StepHook:
    """Calls ``on_epoch(epoch)`` at the first step of every epoch, from a module-level function
    the estimator's training step calls once per step (patched for the fit only)."""

    def __init__(self, module, name: str, epoch_of):
        self.module, self.name, self.epoch_of = module, name, epoch_of
        self.stamps: list[float] = []
        self.cpu_stamps: list[float] = []
        self.callbacks = {}

    def __enter__(self):
        self.orig = getattr(self.module, self.name)

        def hooked(*args, **kwargs):
            e = self.epoch_of(*args)
            if len(self.stamps) == e:
                self.stamps.append(time.perf_counter())
                self.cpu_stamps.append(time.process_time())
                if e in self.callbacks:
                    self.callbacks[e]()
            return self.orig(*args, **kwargs)

        setattr(self.module, self.name, hooked)
        return self

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.orig)


def fit_actinn(X, labels, epochs, callbacks=None):
    steps = -(-X.shape[0] // 128)
    with StepHook(actinn_mod, "staircase_lr", lambda step, *a: step // steps) as h:  # the lr schedule: once per step
        h.callbacks = callbacks or {}
        actinn_mod.ACTINN(epochs=epochs, random_state=0).fit(X, labels)
        end, cpu_end = time.perf_counter(), time.process_time()
    return list(np.diff(h.stamps + [end])), list(np.diff(h.cpu_stamps + [cpu_end]))


def fit_scvi(adata, epochs, callbacks=None):
    with StepHook(scvi_mod, "kl_warmup_weight", lambda epoch, *a: epoch) as h:  # the KL weight: once per step
        h.callbacks = callbacks or {}
        scvi_mod.SCVI(epochs=epochs, progress=False, random_state=0).fit(adata)
        end, cpu_end = time.perf_counter(), time.process_time()
    return list(np.diff(h.stamps + [end])), list(np.diff(h.cpu_stamps + [cpu_end]))


# ---------------------------------------------------------------------------------------
# profile of one epoch

MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv", "aten::dot"}
MOVEMENT = {"aten::copy_", "aten::to", "aten::_to_copy", "aten::index", "aten::index_select", "aten::cat",
            "aten::stack", "aten::clone", "aten::contiguous", "aten::empty", "aten::empty_like",
            "aten::empty_strided", "aten::resize_", "aten::fill_", "aten::zero_", "aten::zeros", "aten::zeros_like",
            "aten::ones", "aten::ones_like", "aten::full", "aten::t", "aten::transpose", "aten::view",
            "aten::reshape", "aten::_reshape_alias", "aten::expand", "aten::as_strided", "aten::permute",
            "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::narrow", "aten::detach",
            "aten::alias", "aten::lift_fresh", "aten::from_numpy", "aten::numpy_T", "aten::one_hot",
            "aten::scalar_tensor", "aten::_local_scalar_dense", "aten::item", "aten::gather", "aten::scatter_",
            "aten::_unsafe_view", "detach"}
DENSIFY = "MinibatchLoader._take (rows, CSR -> dense)"
CATEGORIES = ["matrix multiplies (mm/addmm)", "elementwise & reductions", "data movement, allocation, views",
              "minibatch: take rows / densify CSR", "optimiser (Adam step, zero_grad)",
              "autograd engine & dispatch", "Python & untracked"]


def _ancestors(ev):
    p = ev.cpu_parent
    while p is not None:
        yield p.name
        p = p.cpu_parent


def _category(ev) -> str:
    anc = list(_ancestors(ev))
    if ev.name == DENSIFY or DENSIFY in anc:
        return CATEGORIES[3]
    if ev.name.startswith("Optimizer.") or any(a.startswith("Optimizer.") for a in anc):
        return CATEGORIES[4]
    if ev.name in MATMUL:
        return CATEGORIES[0]
    if ev.name in MOVEMENT:
        return CATEGORIES[2]
    if not ev.name.startswith("aten::"):  # autograd::engine::evaluate_function, record_functions
        return CATEGORIES[5]
    return CATEGORIES[1]


PROFILED_EPOCHS = 3


def profile_epoch(fit, flops_per_cell, n_cells):
    """Profile epochs 2.. of a fit (PROFILED_EPOCHS of them, averaged: more robust to other jobs on the
    machine); per epoch: (categories in ms, top ops, wall s, matmul GFLOP/s)."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    take = training.MinibatchLoader._take

    def labelled_take(self, array, idx, *rest):
        with record_function(DENSIFY):
            return take(self, array, idx, *rest)

    state = {}

    def start():
        state["t0"] = time.perf_counter()
        prof.start()

    training.MinibatchLoader._take = labelled_take
    try:
        fit(1 + PROFILED_EPOCHS, {1: start})  # from epoch 1's first step (its first minibatch is already taken)
        prof.stop()
        wall = (time.perf_counter() - state["t0"]) / PROFILED_EPOCHS
    finally:
        training.MinibatchLoader._take = take
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    cats = dict.fromkeys(CATEGORIES, 0.0)
    for ev in events:
        cats[_category(ev)] += ev.self_cpu_time_total / 1e3 / PROFILED_EPOCHS  # ms per epoch
    cats[CATEGORIES[6]] = max(0.0, wall * 1e3 - sum(cats.values()))
    ops = sorted(prof.key_averages(), key=lambda k: -k.self_cpu_time_total)[:8]
    top = [(k.key, k.count / PROFILED_EPOCHS, k.self_cpu_time_total / 1e3 / PROFILED_EPOCHS) for k in ops]
    mm_s = cats[CATEGORIES[0]] / 1e3
    return cats, top, wall, flops_per_cell * n_cells / mm_s / 1e9 if mm_s else float("nan")


# ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    check_args(ap, args, {"threads": 1, "rounds": 1})
    start = time.perf_counter()
    load0 = os.getloadavg()

    torch.set_num_threads(1)
    X_a, y_a, prep_s = load_actinn()
    ad_scvi = {name: load_scvi(*spec) for name, spec in SCVI_DATA.items()}
    print(f"ACTINN data: pbmc3k, {X_a.shape[0]} cells x {X_a.shape[1]} genes (actinn_preprocess {prep_s:.1f} s); "
          "scVI data: " + ", ".join(f"{SCVI_DATA[k][0]} {a.n_obs} cells x {a.n_vars} genes" for k, a in ad_scvi.items()),
          flush=True)
    fpc_a, layers_a = actinn_flops(X_a, y_a)
    flops_s = {name: scvi_flops(a) for name, a in ad_scvi.items()}
    layers_s = flops_s["scVI"][1]
    fit_a = lambda e, cb=None: fit_actinn(X_a, y_a, e, cb)  # noqa: E731
    X_c = np.ascontiguousarray(X_a)  # row-major copy: a minibatch's rows are then contiguous in memory
    fit_c = lambda e, cb=None: fit_actinn(X_c, y_a, e, cb)  # noqa: E731
    order_a = "C" if X_a.flags.c_contiguous else "F" if X_a.flags.f_contiguous else "strided"
    trainers = {"ACTINN": (fit_a, fpc_a, X_a.shape[0], layers_a, f"pbmc3k {X_a.shape[0]} x {X_a.shape[1]}"),
                "ACTINN, C-order input": (fit_c, fpc_a, X_a.shape[0], layers_a, f"pbmc3k {X_a.shape[0]} x {X_a.shape[1]}")}
    for name, a in ad_scvi.items():
        trainers[name] = (lambda e, cb=None, a=a: fit_scvi(a, e, cb), flops_s[name][0], a.n_obs, flops_s[name][1],
                          f"{SCVI_DATA[name][0].split('_')[0]} {a.n_obs} x {a.n_vars}")
    fit_a(1), trainers["scVI"][0](1)  # warm-up: lazy imports (the first optimiser imports torch._dynamo), first calls

    rows, peaks = [], {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        rates = {n: [] for n in MATMUL_SIZES}
        cpu_rates = {n: [] for n in MATMUL_SIZES}
        epoch_s = {name: [] for name in trainers}
        epoch_cpu = {name: [] for name in trainers}
        loads = []
        for r in range(args.rounds):
            wall_r, cpu_r = matmul_rates()
            for n in MATMUL_SIZES:
                rates[n].append(wall_r[n])
                cpu_rates[n].append(cpu_r[n])
            for name, (fit, *_rest) in trainers.items():
                wall_e, cpu_e = fit(EPOCHS)
                epoch_s[name] += wall_e[1:]
                epoch_cpu[name] += cpu_e[1:]
            loads.append(os.getloadavg()[0])
            print(f"{threads} thread(s), round {r + 1}: matmul {', '.join(f'{n}: {median(v):.1f}' for n, v in rates.items())} "
                  f"GFLOP/s; s/epoch {', '.join(f'{k} {median(v):.3f}' for k, v in epoch_s.items())}; "
                  f"load {loads[-1]:.1f}", flush=True)
        by_size = {n: median(v) for n, v in rates.items()}
        by_size_cpu = {n: median(v) for n, v in cpu_rates.items()}
        best = max(by_size, key=by_size.get)
        peak = peaks[threads] = by_size[best]
        peak_cpu = by_size_cpu[best]
        load = round(median(loads), 1)
        for n in sorted(by_size, key=lambda k: k != best):
            rows.append({"what": f"float32 matmul {n}x{n}" + (" (peak)" if n == best else ""), "threads": threads,
                         "data": "-", "GEMM MFLOP / cell": "-", "s / epoch": "-", "cells / s": "-",
                         "GFLOP/s": round(by_size[n], 1), "% of peak": round(100 * by_size[n] / peak, 1),
                         "GFLOP / CPU s": round(by_size_cpu[n], 1),
                         "% of peak (CPU time)": round(100 * by_size_cpu[n] / peak_cpu, 1), "load (1 min)": load})
        for name, (fit, fpc, n_cells, layers, data) in trainers.items():
            s, cpu = median(epoch_s[name]), median(epoch_cpu[name])
            gflops, gflops_cpu = fpc * n_cells / s / 1e9, fpc * n_cells / cpu / 1e9
            rows.append({"what": f"{name} training epoch", "threads": threads, "data": data,
                         "GEMM MFLOP / cell": round(fpc / 1e6, 3), "s / epoch": round(s, 3),
                         "cells / s": round(n_cells / s), "GFLOP/s": round(gflops, 2),
                         "% of peak": round(100 * gflops / peak, 2), "GFLOP / CPU s": round(gflops_cpu, 2),
                         "% of peak (CPU time)": round(100 * gflops_cpu / peak_cpu, 2), "load (1 min)": load})

    # profile: one epoch each, 1 thread
    torch.set_num_threads(1)
    prof_rows, op_rows, mm_rates = [], [], {}
    for name, (fit, fpc, n_cells, layers, data) in trainers.items():
        if name == "ACTINN, C-order input":
            continue
        cats, top, wall, mm_rate = profile_epoch(fit, fpc, n_cells)
        mm_rates[name] = mm_rate
        total = sum(cats.values())
        for c in CATEGORIES:
            prof_rows.append({"trainer": name, "where the time goes": c, "ms / epoch": round(cats[c], 1),
                              "% of epoch": round(100 * cats[c] / total, 1)})
        prof_rows.append({"trainer": name, "where the time goes": "epoch (profiled wall time)", "ms / epoch": round(1e3 * wall, 1),
                          "% of epoch": 100.0})
        for op, count, ms in top:
            op_rows.append({"trainer": name, "op (self CPU time)": op, "calls / epoch": round(count), "ms / epoch": round(ms, 1),
                            "% of epoch": round(100 * ms / (1e3 * wall), 1)})
        print(f"profile {name}: {wall:.2f} s, matmul {cats[CATEGORIES[0]]:.0f} ms ({100 * cats[CATEGORIES[0]] / total:.0f} %), "
              f"GEMM rate inside matmuls {mm_rate:.1f} GFLOP/s", flush=True)

    load1 = os.getloadavg()
    loaded = (f"The machine was shared with other jobs: 1-minute load average {load0[0]:.1f} at the start and "
              f"{load1[0]:.1f} at the end, on {os.cpu_count()} cores, so every figure here is lower and noisier than on an "
              "idle machine; the ratios (% of peak) are measured in the same rounds and suffer less."
              if max(load0[0], load1[0]) > 0.8 * os.cpu_count() else
              f"1-minute load average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end ({os.cpu_count()} cores).")
    peak1 = peaks.get(1, float("nan"))
    mm_text = ", ".join(f"{k} {v:.1f} GFLOP/s ({100 * v / peak1:.0f} % of the 1-thread peak)" for k, v in mm_rates.items())
    notes = (
        "Peak: `torch.mm` on square float32 matrices, median of repeats per size and round, then median over "
        f"{args.rounds} rounds; the better size is the peak. Trainers: `ACTINN().fit` (pbmc3k through "
        "`actinn_preprocess`, published settings) and `SCVI().fit` (zeisel_cortex, 558 genes of largest variance, "
        "and pbmc3k, 2,000 genes of largest variance: `scVI, 2,000 genes`; CSR counts, scvi-tools' architecture), "
        f"{EPOCHS} epochs per fit, first epoch dropped, median over rounds; "
        "rounds interleave peak and trainers. `GFLOP/s` and `% of peak` use wall time; `GFLOP / CPU s` and "
        "`% of peak (CPU time)` use the process's CPU time (all its threads), which other jobs on a shared machine "
        "disturb much less.\n\n"
        "FLOP count (GEMMs only): per `nn.Linear` seen by forward hooks, 2 n in out forward + 2 n in out weight "
        "gradient + 2 n in out input gradient, the last only if the layer's input needs a gradient (* below). "
        f"ACTINN layers: {', '.join(layers_a)}; scVI layers (558 genes): {', '.join(layers_s)}. Elementwise work "
        "(activations, BatchNorm, softmax, the ZINB likelihood's lgamma/log/exp, Adam) is not counted: at 558 genes "
        "it is a large part of scVI's step, so its `% of peak` says how much of the epoch is matrix "
        "multiplication, not that the CPU idles. The likelihood's lgamma/digamma terms vanish where x = 0, so for "
        "mostly-zero counts (pbmc3k's 2,000 genes: 26 % nonzero) they run on the nonzero entries only; "
        "zeisel_cortex's 558 genes are 77 % nonzero.\n\n"
        "Inside the profiled epochs (1 thread) the matrix multiplies themselves ran at " + mm_text +
        " (counted FLOPs / self time of mm and addmm, profiler overhead included).\n\n"
        f"`ACTINN, C-order input`: the same fit on `np.ascontiguousarray` of the features. `actinn_preprocess` "
        f"returned them in {order_a} order here"
        + (" (column-major), so every minibatch is a strided gather of 128 rows across the whole matrix "
           "(`aten::index` in `machine_ops.md`); with row-major input each row is one contiguous copy."
           if order_a != "C" else ", so the two rows measure the same thing.") + "\n\n" + loaded +
        f" Total run {time.perf_counter() - start:.0f} s."
    )
    write_table("machine", "Against the machine: GEMM FLOP rate of a training epoch vs the matmul peak", rows, notes)
    write_table("machine_profile", "Against the machine: where one training epoch's time goes (torch.profiler, 1 thread)",
                prof_rows,
                f"Epochs 2-{1 + PROFILED_EPOCHS} of a fit under `torch.profiler` (CPU), per epoch (mean). Each op's self CPU time is put in one "
                "category: ops under `Optimizer.*` -> optimiser; inside `MinibatchLoader._take` (labelled for the "
                "profile: SciPy row indexing + `toarray` for CSR, a gather for dense) -> minibatch; `aten::mm/addmm` -> "
                "matrix multiplies; copies, allocation and views -> data movement; other `aten::` ops -> elementwise; "
                "`autograd::engine` nodes and other labels -> autograd engine & dispatch. `Python & untracked`: the "
                "epoch's wall time minus the sum of self times (the training loop, module calls, the loss's Python code). "
                "The profiler adds a few microseconds per op, so the profiled epoch is slower than the timed ones in "
                "`machine.md`. " + loaded)
    write_table("machine_ops", "Against the machine: top ops of one training epoch by self CPU time (1 thread)", op_rows,
                "Same profiled epochs as `machine_profile.md`; `% of epoch`: of its profiled wall time.")


if __name__ == "__main__":
    main()
