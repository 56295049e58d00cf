"""Course budget: executing each solution notebook end to end, and autograding one
complete submission of each lesson (wall time and peak memory, medians of repeats).

    python benchmarks/bench_notebooks.py [--repeats 3] [--lessons 01_logistic_regression ...]

Notebooks run on temporary copies; the stored outputs in solutions/ are not touched.
Targets: every lesson within its budget; all notebooks together under 12 minutes here.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import LESSONS, ROOT, check_args, median, run_measured, write_table  # noqa: E402

BUDGET_S = {"00_setup": 30, "01_logistic_regression": 60, "02_mlp": 90, "03_actinn": 180,
            "04_fa_ppca": 60, "05_vae": 180, "06_scvi": 240}

EXECUTE = """
import sys, nbformat
from nbclient import NotebookClient
path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
"""


def solved_submission(name: str, folder: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_grading_workflow import _release, _solve, _source  # the corpus builder of the tests
    import nbformat

    nbformat.write(_solve(_release(name), _source(name)), folder / f"student_{name}.ipynb")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lessons", nargs="*", default=None, choices=LESSONS)
    args = ap.parse_args()
    check_args(ap, args, {"repeats": 1})
    lessons = args.lessons or sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg")
    rows = []
    for name in lessons:
        runs, peaks, grade_runs, grade_peaks = [], [], [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp) / name
                shutil.copytree(ROOT / "solutions" / name, work)
                s, m = run_measured([sys.executable, "-c", EXECUTE, str(work / f"{name}.ipynb"), str(work)], env=env)
                runs.append(s)
                peaks.append(m)
            with tempfile.TemporaryDirectory() as tmp:
                subs = Path(tmp) / "subs"
                subs.mkdir()
                solved_submission(name, subs)
                s, m = run_measured([sys.executable, str(ROOT / "tools" / "grade.py"), name, str(subs),
                                     "--course-dir", str(Path(tmp) / "course")], env=env)
                grade_runs.append(s)
                grade_peaks.append(m)
        row = {"lesson": name, "execute_s": median(runs), "budget_s": BUDGET_S.get(name, float("nan")),
               "within_budget": "yes" if median(runs) <= BUDGET_S.get(name, float("inf")) else "NO",
               "execute_peak_MiB": max(peaks), "autograde_s": median(grade_runs), "autograde_peak_MiB": max(grade_peaks),
               "runs": len(runs)}
        rows.append(row)
        print(row, flush=True)
    total = sum(r["execute_s"] for r in rows)
    rows.append({"lesson": "all", "execute_s": total, "budget_s": 720.0, "within_budget": "yes" if total <= 720 else "NO",
                 "execute_peak_MiB": max(r["execute_peak_MiB"] for r in rows),
                 "autograde_s": sum(r["autograde_s"] for r in rows),
                 "autograde_peak_MiB": max(r["autograde_peak_MiB"] for r in rows), "runs": args.repeats})
    write_table("notebooks", "Course budget: solution notebooks and autograding", rows,
                notes=("Environment: " + ("with" if importlib.util.find_spec("scvi") else "without")
                       + " scvi-tools (the optional `peers` extra; lesson 06 trains it for comparison only where it is "
                       "installed; the course's own environment does not install it). "
                       "execute_s: median wall time of running the solution notebook end to end (full epochs). "
                       "autograde_s: median wall time of `tools/grade.py` on one complete submission "
                       "(nbgrader autograde with SCLECTURE_QUICK=1, its default), including nbgrader's start-up."))


if __name__ == "__main__":
    main()
