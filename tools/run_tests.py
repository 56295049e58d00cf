"""The course's test suite, as `make test` runs it; `make test-notebooks` runs only the notebooks.

    unit tests of sclecture        tests/test_*.py
    notebooks                      nbval on every solutions/ notebook (stored outputs compared
                                   in cells marked # NBVAL_CHECK_OUTPUT: numbers within the tolerance
                                   a cell declares, tests/nbval_tolerance.py)
    releases and grading           tests/test_notebooks.py, tests/test_grading_workflow.py

    python tools/run_tests.py [PYTEST ARGS]            everything
    python tools/run_tests.py --notebooks [LESSON ...] only the solution notebooks (all, or those named)
    python tools/run_tests.py --matrix [LESSON ...]    the notebooks once per machine variation below,
                                                       a summary table at the end

Extra arguments go to pytest (e.g. `make test PYTEST_ARGS="-k linear"`).
A run that collects no test fails: an empty suite must never look green.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from notebooks import use_environment_tools  # tools/notebooks.py

ROOT = Path(__file__).resolve().parents[1]

# What differs between healthy machines and changes the last bits of trained results:
# thread counts, torch's CPU code path, MKL's code path, and how many test workers share the CPU.
MATRIX = {
    "default": {},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "SCLECTURE_TEST_WORKERS=1": {"SCLECTURE_TEST_WORKERS": "1"},
}


def _environment() -> None:
    use_environment_tools()  # the tests run nbgrader and jupyter, which find their tools by name
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("MPLBACKEND", "Agg")
    shared = ROOT.parent / "shared" / "data"
    if "SCLECTURE_DATA_DIR" not in os.environ and shared.is_dir():
        os.environ["SCLECTURE_DATA_DIR"] = str(shared)
    if os.environ.get("SCLECTURE_DATA_DIR"):  # kernels run in other folders: make it absolute
        os.environ["SCLECTURE_DATA_DIR"] = str(Path(os.environ["SCLECTURE_DATA_DIR"]).resolve())


def _pytest(paths: list[str], argv: list[str], env: dict | None = None) -> int:
    env = {**os.environ, **(env or {})}
    cmd = [
        sys.executable, "-m", "pytest", *paths,
        "--nbval-lax", "--nbval-current-env",
        "--nbval-sanitize-with", "tests/nbval_sanitize.cfg",
        "--nbval-cell-timeout", "900",
        "--durations", "15",
        # two workers on a 2-core machine; loadscope keeps a notebook's cells (one kernel) on one
        # worker and spreads the grading corpus, one class per lesson; the longest groups start
        # first (order set in tests/conftest.py) so that the workers finish together
        "-n", env.get("SCLECTURE_TEST_WORKERS", "2"), "--dist", "loadscope", "--no-loadscope-reorder",
        *argv,
    ]
    print("+", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    if code == 5:
        print("error: pytest collected no tests; the suite must never pass empty", file=sys.stderr)
        return 1
    return code


def _notebook_paths(lessons: list[str]) -> list[str]:
    known = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
    unknown = [name for name in lessons if name not in known]
    if unknown:
        raise SystemExit(f"unknown lesson(s) {unknown}; the lessons are {known}")
    return [f"solutions/{name}" for name in lessons] or ["solutions"]


def matrix(lessons: list[str]) -> int:
    """The notebook checks once per variation of MATRIX; a table of outcomes and times."""
    rows = []
    for label, env in MATRIX.items():
        print(f"\n=== notebook checks with {label}", flush=True)
        start = time.perf_counter()
        code = _pytest(_notebook_paths(lessons), ["-q"], env)
        rows.append((label, "passed" if code == 0 else f"FAILED (exit {code})", time.perf_counter() - start))
    print("\nnotebook checks under each variation:")
    for label, outcome, seconds in rows:
        print(f"  {label:<30} {outcome:<18} {seconds / 60:5.1f} min")
    return 0 if all(outcome == "passed" for _, outcome, _ in rows) else 1


def main(argv: list[str]) -> int:
    _environment()
    if argv[:1] == ["--matrix"]:
        return matrix(argv[1:])
    if argv[:1] == ["--notebooks"]:
        lessons = [a for a in argv[1:] if not a.startswith("-")]
        return _pytest(_notebook_paths(lessons), [a for a in argv[1:] if a.startswith("-")])
    return _pytest(["tests", "solutions"], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
