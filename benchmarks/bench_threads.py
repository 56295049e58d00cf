"""How many torch threads to train with: 1 against all cores, under OpenMP's two wait policies,
on an idle machine and while another process keeps one core busy.

    python benchmarks/bench_threads.py [--rounds 2] [--trainers scVI "scVI, 2,000 genes" ACTINN]

The course exports OMP_WAIT_POLICY=PASSIVE wherever its notebooks, tests and benchmarks run
(`make lab`, `make test`): idle OpenMP threads then sleep instead of spinning, so a busy machine
is not slowed down by threads that wait for a core. Waking them costs time at every parallel
region, though, and a scVI step is a few hundred small ones. Google Colab sets no policy, which
leaves GNU OpenMP's default (spin about 3 ms, then sleep).

Each measurement is a fresh process (the policy is read once, when torch loads OpenMP): one
trainer, one thread count, a fit of 4 epochs, the first dropped, the median epoch. "one core
busy": a pure-Python busy loop runs beside it for the whole measurement. Rounds interleave every
configuration. Writes benchmarks/results/threads.{md,csv}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
POLICIES = {"PASSIVE": "PASSIVE", "unset (GNU OpenMP's default)": None}  # label: value of OMP_WAIT_POLICY
LOADS = ("idle", "one core busy")
TRAINERS = ("scVI", "scVI, 2,000 genes", "ACTINN")  # as in bench_machine.py
EPOCHS = 4


def worker(trainer: str, threads: int) -> dict:
    """Training cells / s of one trainer at one thread count, in this process (its policy set by the caller)."""
    policy = os.environ.get("OMP_WAIT_POLICY")  # as torch's OpenMP reads it (bench_machine sets PASSIVE if unset)
    import torch

    import bench_machine as bm

    torch.set_num_threads(threads)
    if trainer == "ACTINN":
        X, labels, _ = bm.load_actinn()
        epoch_s, _ = bm.fit_actinn(X, labels, EPOCHS)
        n = X.shape[0]
    else:
        adata = bm.load_scvi(*bm.SCVI_DATA[trainer])
        epoch_s, _ = bm.fit_scvi(adata, EPOCHS)
        n = adata.n_obs
    return {"cells_per_s": n / statistics.median(epoch_s[1:]), "threads": torch.get_num_threads(),
            "policy": policy}


def measure(trainer: str, threads: int, policy: str | None, busy: bool) -> float:
    """cells / s from a fresh process with OMP_WAIT_POLICY=policy (None: unset), beside a busy loop if asked."""
    env = dict(os.environ, SCLECTURE_BENCH_POLICY=policy or "")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", trainer, str(threads)], env=env, check=True,
                             capture_output=True, text=True, timeout=1800).stdout
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    r = json.loads(out.strip().splitlines()[-1])
    if r["threads"] != threads or r["policy"] != policy:
        raise RuntimeError(f"the worker ran {r}, not {threads} thread(s) under OMP_WAIT_POLICY={policy}")
    return r["cells_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--trainers", nargs="*", default=list(TRAINERS), choices=TRAINERS)
    ap.add_argument("--worker", nargs=2, metavar=("TRAINER", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    from common import check_args, write_table  # only here: importing common sets OMP_WAIT_POLICY (not a worker's)

    check_args(ap, args, {"rounds": 1}, nonempty=("trainers",))

    cores = os.cpu_count() or 1
    counts = sorted({1, cores})
    configs = [(t, p, load, n) for t in args.trainers for p in POLICIES for load in LOADS for n in counts]
    results: dict = {c: [] for c in configs}
    start = time.perf_counter()
    for r in range(args.rounds):
        for c in configs:
            t, p, load, n = c
            results[c].append(measure(t, n, POLICIES[p], load != "idle"))
            print(f"round {r}: {t}, {p}, {load}, {n} thread(s): {results[c][-1]:,.0f} cells/s", flush=True)
    rows = []
    for t in args.trainers:
        for p in POLICIES:
            for load in LOADS:
                med = {n: statistics.median(results[(t, p, load, n)]) for n in counts}
                row = {"trainer": t, "OMP_WAIT_POLICY": p, "machine": load}
                row.update({f"cells/s, {n} thread(s)": round(med[n]) for n in counts})
                row[f"{cores} threads / 1"] = round(med[cores] / med[1], 2)
                row["best"] = f"{max(counts, key=med.get)} thread(s)"
                rows.append(row)
    write_table("threads", "Threads: 1 against every core, by OpenMP wait policy and load", rows,
                f"Training cells / s, median epoch of a {EPOCHS}-epoch fit (first dropped) in a fresh process, median "
                f"over {args.rounds} interleaved round(s); trainers and data as in `bench_machine.py`. `one core busy`: "
                f"a pure-Python busy loop runs beside the fit. Total run {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    if "--worker" in sys.argv:  # the policy must be in place before torch loads OpenMP ("": unset)
        if os.environ.get("SCLECTURE_BENCH_POLICY"):
            os.environ["OMP_WAIT_POLICY"] = os.environ["SCLECTURE_BENCH_POLICY"]
        elif "SCLECTURE_BENCH_POLICY" in os.environ:
            os.environ.pop("OMP_WAIT_POLICY", None)
    main()
