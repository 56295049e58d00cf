"""What the grading sandbox costs: per submission, and for a whole class.

    python benchmarks/bench_grading.py [--lesson 01_logistic_regression] [--class-size 40]
                                       [--repeats 3] [--jobs 1 2]

1. Overhead per submission: one solved submission graded by ``tools/grade.py`` with each
   kernel in its bubblewrap sandbox, and with ``--unsafe-no-sandbox``, ``--repeats`` times
   each in alternation (the course and its gradebook prepared once beforehand); medians.
2. A class: ``--class-size`` copies of the solved lesson graded with ``--jobs`` 1 and 2.

Quick mode (``SCLECTURE_QUICK=1``) as the grading command uses it; torch and BLAS on one
thread per kernel. Writes benchmarks/results/grading.md and .csv (another lesson:
grading_<lesson>.md and .csv).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import LESSONS, ROOT, check_args, median, write_table  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")


def solved_notebook(lesson: str):
    from test_grading_workflow import _release, _solve, _source  # the test corpus's "solved" student

    return _solve(_release(lesson), _source(lesson))


def write_class(folder: Path, lesson: str, n: int) -> None:
    import nbformat

    nb = solved_notebook(lesson)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        nbformat.write(nb, folder / f"s{i:03d}_{lesson}.ipynb")


def timed_grade(lesson: str, subs: Path, course: Path, **options) -> tuple[float, dict]:
    import grade

    start = time.perf_counter()
    results = grade.grade(lesson, subs, course=course, quiet=True, **options)
    return time.perf_counter() - start, results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lesson", default="01_logistic_regression", choices=LESSONS)
    ap.add_argument("--class-size", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, nargs="*", default=[1, 2])
    a = ap.parse_args(argv)
    check_args(ap, a, {"class_size": 1, "repeats": 1, "jobs": 1})
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        one = tmp / "one"
        write_class(one, a.lesson, 1)
        course = tmp / "course"
        timed_grade(a.lesson, one, course)  # prepares the course (gradebook, release); not measured
        times = {"sandbox": [], "no sandbox": []}
        for _ in range(a.repeats):
            for mode in times:
                seconds, results = timed_grade(a.lesson, one, course, unsafe_no_sandbox=(mode == "no sandbox"))
                times[mode].append(seconds)
                print(f"one submission, {mode}: {seconds:.1f} s, score {results['s000'].score}", flush=True)
        for mode, xs in times.items():
            rows.append({"what": f"one submission, {mode}", "jobs": 1, "submissions": 1, "runs": len(xs),
                         "median_s": median(xs), "per_submission_s": median(xs)})
        overhead = median(times["sandbox"]) - median(times["no sandbox"])
        print(f"sandbox overhead per submission: {overhead:.1f} s (median)", flush=True)

        cls = tmp / "class"
        write_class(cls, a.lesson, a.class_size)
        for jobs in a.jobs:
            course = tmp / f"course-jobs{jobs}"
            shutil.rmtree(course, ignore_errors=True)
            seconds, results = timed_grade(a.lesson, cls, course, jobs=jobs)
            scores = sorted({r.score for r in results.values()}, key=str)
            print(f"class of {a.class_size}, --jobs {jobs}: {seconds:.0f} s, scores {scores}", flush=True)
            rows.append({"what": f"class of {a.class_size}, sandboxed", "jobs": jobs, "submissions": a.class_size,
                         "runs": 1, "median_s": seconds, "per_submission_s": seconds / a.class_size})
    notes = (f"Lesson {a.lesson}, quick mode. A submission's time covers a whole `tools/grade.py` run "
             "(importing it, nbgrader's start, the kernel's start, the notebook, the gradebook). The sandbox "
             f"added {overhead:.1f} s per submission (median of {a.repeats} alternated runs). The class rows "
             f"include preparing the course once. Load average when the run started and ended: "
             f"{load_before:.1f} and {os.getloadavg()[0]:.1f} (on {os.cpu_count()} cores).")
    name = "grading" if a.lesson == "01_logistic_regression" else f"grading_{a.lesson}"
    write_table(name, f"Grading: the sandbox's cost (lesson {a.lesson})", rows, notes)


if __name__ == "__main__":
    main()
