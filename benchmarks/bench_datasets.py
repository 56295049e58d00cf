"""Load times of the course's datasets: cold (empty cache) vs warm (converted file present).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_datasets.py [--cold 3] [--warm 5]

Source files come from SCLECTURE_DATA_DIR (else ../shared/data next to the repository, else
the per-user data folder); converted files go to a fresh temporary cache per cold run.
Cold = verify the sources' sha256, parse them, write the .h5ad; warm = read the .h5ad (found
first, so the sources are not even looked at). Each number is the median of several runs inside
one Python process; "warm, new process" adds Python start-up and imports, which is what a
notebook's first cell pays. Writes benchmarks/results/datasets.{md,csv}.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sclecture import datasets as D  # noqa: E402

LOADERS = ["pbmc3k", "kang_ifnb", "pbmc_batches", "zeisel_cortex", "actinn_tabula_muris"]


def _time(fn) -> tuple[float, float]:
    """Wall and CPU seconds of fn() in this process."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def _fresh_process(name: str) -> tuple[float, float]:
    """Wall and CPU seconds of `python -c 'load'` in a new process, warm cache (imports included).
    CPU time shows the cost on a machine that other jobs keep busy, where wall time inflates."""
    code = f"from sclecture import datasets; datasets.{name}()"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=os.environ.copy())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=int, default=3, help="cold runs per dataset (default 3)")
    parser.add_argument("--warm", type=int, default=5, help="warm runs per dataset (default 5)")
    parser.add_argument("--datasets", nargs="*", default=LOADERS, choices=LOADERS)
    args = parser.parse_args()
    from common import check_args

    check_args(parser, args, {"cold": 1, "warm": 1}, nonempty=("datasets",))

    if "SCLECTURE_DATA_DIR" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
        os.environ["SCLECTURE_DATA_DIR"] = str(REPO.parent / "shared" / "data")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sclecture-bench-") as tmp:
        for name in args.datasets:
            loader = getattr(D, name)
            cold = []
            for i in range(args.cold):
                os.environ["SCLECTURE_CACHE_DIR"] = f"{tmp}/{name}-cold{i}"
                cold.append(_time(loader))
            warm = [_time(loader) for _ in range(args.warm)]  # the last cold run's cache
            fresh = _fresh_process(name)
            adata = loader()
            med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
            rows.append({
                "dataset": name, "cells": adata.n_obs, "genes": adata.n_vars,
                "cold_s": med(cold, 0), "cold_cpu_s": med(cold, 1), "warm_s": med(warm, 0), "warm_cpu_s": med(warm, 1),
                "new_process_s": fresh[0], "new_process_cpu_s": fresh[1], "cold_runs": args.cold, "warm_runs": args.warm,
            })
            r = rows[-1]
            print(f"{name:20s} cold {r['cold_s']:6.2f} s (cpu {r['cold_cpu_s']:5.2f})  warm {r['warm_s']:6.3f} s "
                  f"(cpu {r['warm_cpu_s']:5.3f})  new process {fresh[0]:6.2f} s (cpu {fresh[1]:5.2f})", flush=True)

    load = os.getloadavg()
    machine = f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the end"
    header = ("| dataset | cells x genes | cold wall (s) | cold CPU (s) | warm wall (s) | warm CPU (s) "
              "| new process, warm: wall (s) | new process, warm: CPU (s) |\n|---|---|---|---|---|---|---|---|\n")
    table = header + "".join(
        f"| {r['dataset']} | {r['cells']:,} x {r['genes']:,} | {r['cold_s']:.2f} | {r['cold_cpu_s']:.2f} "
        f"| {r['warm_s']:.3f} | {r['warm_cpu_s']:.3f} | {r['new_process_s']:.2f} | {r['new_process_cpu_s']:.2f} |\n"
        for r in rows
    )
    print("\n" + table)
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "datasets.md").write_text(
        "# Dataset load times\n\n"
        f"Produced by `benchmarks/bench_datasets.py` (medians of {args.cold} cold and {args.warm} warm runs "
        "in one process). Cold: empty cache, sources hashed, parsed and converted to .h5ad. Warm: the .h5ad "
        "is read. New process: `python -c 'from sclecture import datasets; datasets.NAME()'` with a warm "
        "cache, imports included (mostly torch, which `import sclecture` loads through `sclecture.training`, "
        "and anndata). Wall times grow several-fold when other jobs keep the CPUs busy; CPU times do not. "
        + "".join(f"Target: pbmc3k warm under 3 s: {'met' if r['warm_s'] < 3 else 'NOT met'} ({r['warm_s']:.2f} s)."
                  for r in rows if r["dataset"] == "pbmc3k")
        + "\n\n"
        f"Machine: {machine}.\n\n" + table
    )
    with open(out / "datasets.csv", "w") as fh:
        fh.write(",".join(rows[0]) + "\n")
        for r in rows:
            fh.write(",".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()) + "\n")
    print(f"wrote {out / 'datasets.md'} and {out / 'datasets.csv'}")


if __name__ == "__main__":
    main()
