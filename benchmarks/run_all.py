"""Run every benchmark and gather their tables into benchmarks/results/README.md.

    python benchmarks/run_all.py [--only NAME ...] [--summary]      (or: make benchmarks)

Each bench_*.py writes benchmarks/results/<name>.md and .csv itself; this script runs them
one after another (never in parallel: they time the machine), draws the figures
(benchmarks/plots.py) and writes the summary. The before/after instruments (``BEFORE_AFTER``)
compare the package with an older copy of it that only their user can name (``--before``, or the
stored seeds to refit, ``--seeds``), so they run by hand, not here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, machine  # noqa: E402

ORDER = ["bench_datasets", "bench_factor", "bench_actinn", "bench_scvi", "bench_scaling", "bench_machine", "bench_notebooks"]
BEFORE_AFTER = {"bench_likelihood", "bench_scvi_paired", "bench_scvi_seed_pairs"}  # need --before PATH or --seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", help="names of benchmarks to run (default: all)")
    ap.add_argument("--summary", action="store_true", help="run nothing: redraw the figures and rewrite the summary")
    args = ap.parse_args()
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg")
    names = [n for n in ORDER if (ROOT / "benchmarks" / f"{n}.py").exists()]
    names += sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py")
                    if p.stem not in names and p.stem not in BEFORE_AFTER)
    if args.only is not None:
        unknown = [o for o in args.only if f"bench_{o.removeprefix('bench_')}" not in names]
        if not args.only:
            ap.error("--only needs the names of the benchmarks to run")
        if unknown:
            ap.error(f"--only {' '.join(unknown)}: not a benchmark that runs here; choose among "
                     + ", ".join(n.removeprefix("bench_") for n in names)
                     + f" (the before/after ones, {', '.join(sorted(BEFORE_AFTER))}, run by hand)")
        names = [n for n in names if n in args.only or n.removeprefix("bench_") in args.only]
    if args.summary:
        names = []
    failed = []
    for n in names:
        print(f"\n=== {n}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(ROOT / "benchmarks" / f"{n}.py")], env=env, cwd=ROOT)
        print(f"=== {n}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(n)
    parts = [f"# Benchmark results\n\nMeasured on: {machine()}.\n",
             "Each figure is a median of repeated runs unless its table says otherwise; comparisons with "
             "other tools are ratios measured in the same run. Regenerate with `make benchmarks`.\n"]
    import plots

    plots.main()
    for md in sorted(RESULTS.glob("*.md")):
        if md.name != "README.md":
            parts.append(md.read_text())
            if md.with_suffix(".png").exists():
                parts.append(f"![{md.stem}]({md.stem}.png)\n")
    (RESULTS / "README.md").write_text("\n".join(parts))
    print(f"\nsummary: {RESULTS / 'README.md'}")
    if failed:
        sys.exit(f"benchmarks that failed: {failed}")


if __name__ == "__main__":
    main()
