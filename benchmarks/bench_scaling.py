"""Scaling: scVI and ACTINN fit time per epoch at 1k, 10k and 100k synthetic cells (sparse input).

What it shows: whether the cost of an epoch grows linearly with the number of cells (the
per-cell cost at 100k relative to 1k should be ~1) and whether the memory a fit needs on top
of the data stays bounded by the minibatch.

Data: ``sclecture.datasets.simulate_counts(10_000, 2_000 genes, 5 types, 2 batches)`` (CSR
float32 counts, ~23 % non-zero). 1k is its first 1,000 cells; 100k is the 10k simulation stacked
10 times with the rows shuffled (``simulate_counts`` at 100k cells would take ~3 minutes and
~10 GB here; for timing, repeated cells cost the same as new ones). ACTINN gets the counts
normalised as ACTINN does (log2(1e4 x / N + 1)), kept sparse.

Trainers, each through the package's real code path:

* ``scVI``: ``SCVI(...).fit(adata, batch_key="batch")`` (ZINB, 128 hidden, 10 latent, BatchNorm,
  fused Adam); the counts stay CSR and are densified one minibatch (128 cells) at a time;
* ``ACTINN``: ``ACTINN(...).fit(X_csr, labels)``, published settings (100-50-25, minibatch 128);
  note that the estimator densifies its whole input first (``ACTINN.fit``);
* ``ACTINN (train, CSR)``: ``ACTINNNet`` trained by ``sclecture.training.train`` on the CSR
  matrix directly, same optimiser and schedule: the training loop alone.

Each (trainer, size) runs in a fresh subprocess that loads the data, then fits. Seconds per
epoch: the median over epochs after the first (9 epochs at 1k, 3 at 10k, 1 at 100k, where
first-call costs are negligible), in wall and in process CPU time; the per-cell cost ratio uses
CPU time, which one thread makes much less sensitive to other jobs on a shared machine. Memory: the kernel's peak-RSS counter (VmHWM, reset through
/proc/self/clear_refs) read (a) at the first training step, giving the setup peak (input checks,
copies), and (b) at the end, giving the peak during training steps; both as MiB above the RSS just
before ``fit`` (the data already loaded). One thread (``--threads``), OMP_WAIT_POLICY=PASSIVE.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_scaling.py [--threads 1] [--sizes 1000 10000 100000]

Writes benchmarks/results/scaling.md and scaling.csv. About 3-5 minutes on an idle 2-core machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import check_args, median, write_table  # noqa: E402

TRAINERS = ["scVI", "ACTINN", "ACTINN (train, CSR)"]
N_GENES = 2000
BATCH_SIZE = 128


def epochs_for(n: int) -> int:
    return 9 if n <= 1_000 else 3 if n <= 10_000 else 1


# ---------------------------------------------------------------------------------------
# memory: the kernel's own peak-RSS counter


def _status_kib(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def peak_mib() -> float:
    return _status_kib("VmHWM") / 1024


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# data


def make_data(sizes: list[int], folder: Path) -> dict:
    from sclecture.datasets import simulate_counts

    base_n = min(max(sizes), 10_000)
    t = time.perf_counter()
    ad = simulate_counts(base_n, N_GENES, n_types=5, n_batches=2, seed=0)
    sim_s = time.perf_counter() - t
    X0 = sp.csr_matrix(ad.X, dtype=np.float32)
    types0 = ad.obs["cell_type"].cat.codes.to_numpy().astype(np.int64)
    batch0 = ad.obs["batch"].cat.codes.to_numpy().astype(np.int64)
    info = {"simulate_s": sim_s, "density": X0.nnz / (X0.shape[0] * X0.shape[1])}
    rng = np.random.default_rng(0)
    for n in sizes:
        reps = -(-n // base_n)
        rows = np.tile(np.arange(base_n), reps)[:n]
        if reps > 1:
            rows = rng.permutation(rows)
        X = X0[rows]
        sp.save_npz(folder / f"X{n}.npz", X, compressed=False)
        np.savez(folder / f"obs{n}.npz", types=types0[rows], batch=batch0[rows])
    return info


def actinn_normalise_csr(X: sp.csr_matrix) -> sp.csr_matrix:
    """log2(1e4 x / N + 1) on the non-zeros (ACTINN's normalisation, variant="code"), kept sparse."""
    N = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    Y = X.copy()
    Y.data = np.log2(Y.data * np.repeat(1e4 / N, np.diff(Y.indptr)).astype(np.float32) + 1).astype(np.float32)
    return Y


# ---------------------------------------------------------------------------------------
# one (trainer, size) in its own process


def worker(trainer: str, n: int, folder: Path, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    import anndata
    import pandas as pd

    import sclecture.actinn as actinn_mod
    import sclecture.scvi as scvi_mod
    from sclecture.training import fused_adam, train

    X = sp.load_npz(folder / f"X{n}.npz").tocsr()
    obs = np.load(folder / f"obs{n}.npz")
    types, batch = obs["types"], obs["batch"]
    epochs = epochs_for(n)
    steps_per_epoch = -(-n // BATCH_SIZE)
    if trainer == "scVI":
        data = anndata.AnnData(X=X, obs=pd.DataFrame({"batch": pd.Categorical([f"b{b}" for b in batch])},
                                                      index=[str(i) for i in range(n)]))
    else:
        data = actinn_normalise_csr(X)
        del X
    labels = np.array([f"type{t}" for t in types])
    data_mib = (data.X if trainer == "scVI" else data)
    data_mib = (data_mib.data.nbytes + data_mib.indices.nbytes + data_mib.indptr.nbytes) / 2**20

    # the first optimiser built in a process imports torch._dynamo (seconds, ~70 MiB): pay it before measuring
    t, m = time.perf_counter(), rss_mib()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    first_optimizer_s, first_optimizer_mib = time.perf_counter() - t, rss_mib() - m

    stamps: list[float] = []  # start of each epoch's first training step (wall)
    cpu_stamps: list[float] = []  # the same in process CPU time: less sensitive to other jobs on the machine
    marks: dict[str, float] = {}

    def on_step(epoch: int) -> None:
        if len(stamps) == epoch:
            stamps.append(time.perf_counter())
            cpu_stamps.append(time.process_time())
            if epoch == 0:  # setup is over: its peak, then count the training steps alone
                marks["setup_peak"] = peak_mib()
                reset_peak()

    gc.collect()
    rss0 = rss_mib()
    can_reset = reset_peak()
    t0 = time.perf_counter()
    if trainer == "scVI":
        kl = scvi_mod.kl_warmup_weight

        def kl_hooked(epoch, warmup):  # called once per step by SCVI.fit's loss_fn
            on_step(epoch)
            return kl(epoch, warmup)

        scvi_mod.kl_warmup_weight = kl_hooked
        scvi_mod.SCVI(epochs=epochs, progress=False, random_state=0).fit(data, batch_key="batch")
    elif trainer == "ACTINN":
        stair = actinn_mod.staircase_lr

        def stair_hooked(step, *a, **k):  # called once per step by ACTINN.fit's lr schedule
            on_step(step // steps_per_epoch)
            return stair(step, *a, **k)

        actinn_mod.staircase_lr = stair_hooked
        actinn_mod.ACTINN(epochs=epochs, random_state=0).fit(data, labels)
    else:
        torch.manual_seed(0)
        classes, y = np.unique(labels, return_inverse=True)
        net = actinn_mod.ACTINNNet(data.shape[1], len(classes))
        opt = fused_adam(net.parameters(), lr=1e-4)

        def lr(step):
            on_step(step // steps_per_epoch)
            return actinn_mod.staircase_lr(step, 1.0, 0.95, 1000)

        train(net, lambda m, b, e: m.loss(b[0], b[1], 0.005), (data, y.astype(np.int64)), epochs=epochs,
              batch_size=BATCH_SIZE, optimizer=opt, lr_schedule=lr, device="cpu", seed=0, progress=False)
    t_end, cpu_end = time.perf_counter(), time.process_time()
    epoch_s = list(np.diff(stamps + [t_end]))
    epoch_cpu = list(np.diff(cpu_stamps + [cpu_end]))
    timed = epoch_s[1:] if len(epoch_s) > 1 else epoch_s
    timed_cpu = epoch_cpu[1:] if len(epoch_cpu) > 1 else epoch_cpu
    return {
        "trainer": trainer, "n": n, "epochs": epochs, "epoch_s": epoch_s, "s_per_epoch": median(timed), "cpu_per_epoch": median(timed_cpu),
        "setup_s": stamps[0] - t0, "fit_s": t_end - t0, "data_mib": data_mib, "rss0": rss0,
        "setup_extra": marks["setup_peak"] - rss0, "train_extra": peak_mib() - rss0, "peak_reset": can_reset,
        "load": os.getloadavg()[0], "first_optimizer_s": first_optimizer_s,
        "first_optimizer_mib": first_optimizer_mib,
    }


# ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trainers", nargs="+", default=TRAINERS, choices=TRAINERS)
    ap.add_argument("--worker", nargs=3, metavar=("TRAINER", "N", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    check_args(ap, args, {"sizes": 100, "threads": 1})  # fewer cells leave classes empty
    if args.worker:
        trainer, n, folder = args.worker
        print(json.dumps(worker(trainer, int(n), Path(folder), args.threads)))
        return

    sizes = sorted(args.sizes)
    start = time.perf_counter()
    load_start = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="sclecture-scaling-") as tmp:
        folder = Path(tmp)
        info = make_data(sizes, folder)
        print(f"data: simulate_counts({min(max(sizes), 10_000)}) in {info['simulate_s']:.1f} s, "
              f"{100 * info['density']:.0f} % non-zero", flush=True)
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        for n in sizes:
            for trainer in args.trainers:
                cmd = [sys.executable, __file__, "--threads", str(args.threads), "--worker", trainer, str(n), str(folder)]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"{trainer} at {n} cells failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results.append(r)
                print(f"{trainer:20s} {n:>7,d} cells: {r['s_per_epoch']:.2f} s/epoch ({r['cpu_per_epoch']:.2f} CPU s), setup +{r['setup_extra']:.0f} MiB, "
                      f"training +{r['train_extra']:.0f} MiB (data {r['data_mib']:.0f} MiB), load {r['load']:.1f}", flush=True)

    rows = []
    for trainer in args.trainers:
        ref = next(r for r in results if r["trainer"] == trainer)  # smallest size
        for r in (r for r in results if r["trainer"] == trainer):
            per_cell = r["cpu_per_epoch"] / r["n"]
            rows.append({
                "trainer": trainer,
                "cells": r["n"],
                "epochs timed": max(1, r["epochs"] - 1),
                "s / epoch": round(r["s_per_epoch"], 3),
                "CPU s / epoch": round(r["cpu_per_epoch"], 3),
                "cells / s": round(r["n"] / r["s_per_epoch"]),
                f"per-cell CPU cost vs {ref['n']:,}": round(per_cell / (ref["cpu_per_epoch"] / ref["n"]), 2),
                "setup s": round(r["setup_s"], 2),
                "data MiB (CSR)": round(r["data_mib"], 1),
                "setup peak +MiB": round(r["setup_extra"], 1),
                "training peak +MiB": round(r["train_extra"], 1),
                "load (1 min)": round(r["load"], 1),
            })
    load_end = os.getloadavg()
    dense_100k = max(sizes) * N_GENES * 4 / 2**20
    notes = (
        f"Synthetic counts from `simulate_counts` (10k cells x {N_GENES} genes, {100 * info['density']:.0f} % non-zero; "
        f"1k = its first cells, 100k = 10 copies, rows shuffled), sparse CSR input. {args.threads} torch thread(s), "
        "minibatch 128, one subprocess per row. `s / epoch` (wall) and `CPU s / epoch` (process CPU time): medians "
        "over the epochs after the first (9 epochs at 1k, 3 at 10k; 1 at 100k, a single measurement). "
        "`per-cell CPU cost`: (CPU s/epoch / cells) relative to the smallest size, from CPU time because with "
        "one thread it is much less sensitive than wall time to other jobs on the machine; linear growth gives ~1. Memory: peak RSS (kernel VmHWM) above the RSS just before `fit` with the "
        "data loaded; `setup`: up to the first training step (input checks, copies), `training`: during the "
        f"training steps. A dense float32 copy of {max(sizes):,} cells would be {dense_100k:.0f} MiB; a dense "
        f"minibatch is {BATCH_SIZE * N_GENES * 4 / 2**20:.1f} MiB.\n\n"
        "`ACTINN` (the estimator) densifies its whole input before training (`ACTINN.fit`: `X.toarray()`), "
        "so its memory grows with the data; `ACTINN (train, CSR)` is the same network and optimiser fed to "
        "`train` on the CSR matrix, which densifies one minibatch at a time. scVI's setup peak includes "
        "`check_counts` (temporaries the size of the non-zeros).\n\n"
        "Not counted above: the first `torch.optim.Adam` built in a fresh process imports `torch._dynamo` "
        f"(median {median([r['first_optimizer_s'] for r in results]):.1f} s and "
        f"{median([r['first_optimizer_mib'] for r in results]):.0f} MiB here): each worker builds a throwaway optimiser "
        "before the measured fit to exclude this one-off cost, which a notebook's first fit pays.\n\n"
        f"Machine load: 1-minute load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end "
        f"(on {os.cpu_count()} cores; >~1 means other jobs shared the CPU and the seconds are inflated/noisy). "
        f"Total run {time.perf_counter() - start:.0f} s."
    )
    if not all(r["peak_reset"] for r in results):
        notes += " Peak RSS could not be reset here: memory figures are peaks since the process started."
    write_table("scaling", "Scaling with the number of cells (sparse input)", rows, notes)


if __name__ == "__main__":
    main()
