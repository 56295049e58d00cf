"""How far the numbers of the checked notebook cells move: the measurement behind each
``# NBVAL_TOLERANCE``.

    python benchmarks/bench_notebook_spread.py [--lessons 03_actinn ...] [--seeds 1 2]
                                               [--variants omp1 aten-default mkl-compatible]

Each solution notebook is executed on a temporary copy (solutions/ is not touched), once per
model seed (initial weights, minibatch order and Monte Carlo draws take the seed; the data,
its train/test splits and the evaluation keep theirs: see MODEL_SEEDS) and once per machine variation at the stored
seed:

    omp1             OMP_NUM_THREADS=1 (one thread instead of the machine's cores)
    aten-default     ATEN_CPU_CAPABILITY=default (torch's kernels without AVX2/AVX-512)
    mkl-compatible   MKL_CBWR=COMPATIBLE (MKL's conditional-numerical-reproducibility path)

For every number printed by a cell marked ``# NBVAL_CHECK_OUTPUT`` the stored value is
compared with each run's; the table gives the largest absolute and relative move per cell and
whether the cell's declared tolerance covers it (and by what margin).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import LESSONS, ROOT, check_args, write_table  # noqa: E402
from nbval_tolerance import NUMBER, _last_digit, _value, declared_tolerance  # noqa: E402

VARIANTS = {
    "omp1": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
}
# lessons whose checked cells print numbers that come from training or sampling
TRAINED = ["02_mlp", "03_actinn", "05_vae", "06_scvi"]
# Model seeds only: the initial weights and minibatch order (set_seed, seed=, random_state= of a
# model) and Monte Carlo draws (torch.manual_seed). The data, its splits and the evaluation keep
# their seeds, so a run differs from the stored one as a training on another machine would.
MODEL_SEEDS = [(re.compile(r"\b(set_seed)\(0\)"), r"\1({seed})"),
               (re.compile(r"\b(seed)=0\b"), r"\1={seed}"),
               (re.compile(r"\b(torch\.manual_seed)\((\d+)\)"), None)]
DATA_SEEDS = re.compile(r"train_test_split|KFold|make_circles|PCA\(|clustering_scores|default_rng")
MODEL_RANDOM_STATE = re.compile(r"\b(random_state)=0\b")


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "text/plain" in out.get("data", {}):
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


def checked_cells(nb) -> dict[int, tuple[str, str]]:
    """{cell index: (source, printed text)} of the cells nbval compares."""
    return {i: (c.source, _text(c)) for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source}


def reseed(nb, seed: int):
    """A copy of ``nb`` in which every model seed is ``seed`` (see MODEL_SEEDS)."""
    nb = nbformat.from_dict(nb)
    if seed == 0:
        return nb
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = cell.source.split("\n")
        for i, line in enumerate(lines):
            for pattern, repl in MODEL_SEEDS:
                if repl is None:  # torch.manual_seed(k) -> k + 1000 * seed
                    line = pattern.sub(lambda m: f"{m.group(1)}({int(m.group(2)) + 1000 * seed})", line)
                else:
                    line = pattern.sub(repl.format(seed=seed), line)
            statement = (lines[i - 1] if i else "") + line  # a call may continue from the line above
            if not DATA_SEEDS.search(statement):
                line = MODEL_RANDOM_STATE.sub(f"random_state={seed}", line)
            lines[i] = line
        cell.source = "\n".join(lines)
    return nb


def execute(nb, env: dict, folder: Path):
    from nbclient import NotebookClient

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return nb


def compare(stored: str, new: str) -> tuple[float, float, str]:
    """Largest absolute and relative move of the numbers, or a note when the text differs."""
    a, b = NUMBER.findall(stored), NUMBER.findall(new)
    if len(a) != len(b):
        return float("nan"), float("nan"), f"{len(a)} numbers stored, {len(b)} printed"
    moves = [(abs(_value(y) - _value(x)), abs(_value(y) - _value(x)) / max(abs(_value(x)), 1e-12), x)
             for x, y in zip(a, b) if _value(x) == _value(x)]
    if not moves:
        return 0.0, 0.0, ""
    worst_abs = max(m[0] for m in moves)
    worst_rel = max(m[1] for m in moves)
    return worst_abs, worst_rel, ""


def covered(source: str, stored: str, new: str) -> str:
    tol = declared_tolerance(source)
    a, b = NUMBER.findall(stored), NUMBER.findall(new)
    if len(a) != len(b):
        return "text differs"
    worst = 0.0  # the largest move as a share of what the declaration allows
    for x, y in zip(a, b):
        allowed = (tol[0] + tol[1] * abs(_value(x))) if tol else max(_last_digit(x), _last_digit(y))
        move = abs(_value(y) - _value(x))
        worst = max(worst, move / allowed if allowed else (0.0 if move == 0 else float("inf")))
    return f"{worst:.2f}"


def run(lessons, seeds, variants, out_name="notebook_spread"):
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    rows = []
    for lesson in lessons:
        path = ROOT / "solutions" / lesson / f"{lesson}.ipynb"
        stored_nb = nbformat.read(path, as_version=4)
        stored = checked_cells(stored_nb)
        runs = [(f"seed {s}", s, {}) for s in seeds] + [(v, 0, VARIANTS[v]) for v in variants]
        for label, seed, env in runs:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                try:
                    nb = execute(reseed(stored_nb, seed), {"OMP_WAIT_POLICY": "PASSIVE", **env}, Path(tmp))
                    error = ""
                except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
                    # a failing run is a result too: report it (its last line), go on. Anything else (such as
                    # nbclient stopping the kernel on SIGTERM or Ctrl-C) stops the measurement
                    lines = [l for l in str(exc).splitlines() if l.strip()]
                    nb, error = None, f"{type(exc).__name__}: {lines[-1][:300] if lines else ''}"
                seconds = time.perf_counter() - start
            print(f"{lesson} {label}: {seconds:.0f} s {error}", flush=True)
            new = checked_cells(nb) if nb is not None else {}
            for i, (source, text) in stored.items():
                if i not in new:
                    rows.append({"lesson": lesson, "cell": i, "run": label, "max_abs_move": "",
                                 "max_rel_move": "", "tolerance": "", "used": "", "note": error or "not run"})
                    continue
                worst_abs, worst_rel, note = compare(text, new[i][1])
                tol = declared_tolerance(source)
                rows.append({"lesson": lesson, "cell": i, "run": label,
                             "max_abs_move": f"{worst_abs:.4g}", "max_rel_move": f"{worst_rel:.3g}",
                             "tolerance": f"abs={tol[0]:g} rel={tol[1]:g}" if tol else "last digit",
                             "used": covered(source, text, new[i][1]), "note": note})
            _write(rows, out_name)  # after every run, so an interrupted measurement keeps what it has
    return rows


def _write(rows, out_name):
    moved = [r for r in rows if r["max_abs_move"] not in ("", "0")] or rows
    write_table(out_name, "How far the checked notebook numbers move between seeds and machine variations", moved,
                notes="max_abs_move / max_rel_move: the largest move of any number the cell prints, against the "
                      "stored output (seed 0, default settings). used: that move as a share of what the cell's "
                      "tolerance allows (must stay below 1; 'last digit': one unit of the last printed digit; "
                      "for a tolerance with both parts, an upper bound). Rows where nothing moved are left out. "
                      "seed k: the model's seeds (initial weights, minibatch order, Monte Carlo draws) set to k, "
                      "data and splits unchanged; omp1: OMP_NUM_THREADS=1; aten-default: "
                      "ATEN_CPU_CAPABILITY=default; mkl-compatible: MKL_CBWR=COMPATIBLE. "
                      "Cells compared to the last digit print numbers that depend on their seed but not on the "
                      "machine (a seeded Monte Carlo estimate or draw, a perceptron's updates, EM from a seeded "
                      "start): no machine variation moved them, and their seed rows only show what another seed "
                      "would print.")


def report(tables: list[str], out_name: str = "notebook_spread"):
    """Merge earlier runs' tables and judge them against the tolerances the lessons declare now.

    A declaration is either absolute or relative, so the share of it that a run used is the
    cell's largest absolute (or relative) move divided by the declared one.
    """
    import csv

    rows = []
    for name in tables:
        with open(ROOT / "benchmarks" / "results" / f"{name}.csv", newline="") as f:
            rows += list(csv.DictReader(f))
    sources = {}
    for r in rows:
        lesson, cell = r["lesson"], int(r["cell"])
        if lesson not in sources:
            sources[lesson] = nbformat.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
        source = sources[lesson].cells[cell].source
        tol = declared_tolerance(source)
        r["tolerance"] = f"abs={tol[0]:g} rel={tol[1]:g}" if tol else "last digit"
        if r["max_abs_move"] in ("", "nan") or r["note"]:
            r["used"] = "text differs" if r["note"] else ""
        elif tol:
            shares = [float(r["max_abs_move"]) / tol[0] if tol[0] else 0.0,
                      float(r["max_rel_move"]) / tol[1] if tol[1] else 0.0]
            r["used"] = f"{min(s for s, t in zip(shares, tol) if t):.2f}"
        r["checked"] = "yes" if "NBVAL_CHECK_OUTPUT" in source else "no (moved out of the check)"
    rows.sort(key=lambda r: (r["lesson"], int(r["cell"]), r["run"]))
    _write(rows, out_name)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lessons", nargs="*", default=TRAINED, choices=LESSONS)
    p.add_argument("--seeds", nargs="*", type=int, default=[1, 2])
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", default="notebook_spread", help="name of the result table in benchmarks/results/")
    p.add_argument("--report", nargs="*", metavar="TABLE",
                   help="instead of running: merge these earlier tables (names in benchmarks/results/) into --out, "
                        "judged against the tolerances declared now")
    args = p.parse_args(argv)
    if args.report is not None and not args.report:  # else it would measure, not merge
        p.error("--report needs the names of the tables to merge")
    check_args(p, args, {"seeds": 0})
    if args.report:
        return report(args.report, args.out)
    run(args.lessons, args.seeds, args.variants, args.out)


if __name__ == "__main__":
    main()
