"""The course's whole test suite, as `make test` runs it.

    unit tests of sclecture        tests/test_*.py
    notebooks                      nbval on every solutions/ notebook (stored outputs compared
                                   in cells marked # NBVAL_CHECK_OUTPUT, under tests/nbval_sanitize.cfg)
    releases and grading           tests/test_notebooks.py, tests/test_grading_workflow.py

Extra arguments go to pytest (e.g. `make test PYTEST_ARGS="-k linear"`).
A run that collects no test fails: an empty suite must never look green.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("MPLBACKEND", "Agg")
    shared = ROOT.parent / "shared" / "data"
    if "SCLECTURE_DATA_DIR" not in os.environ and shared.is_dir():
        os.environ["SCLECTURE_DATA_DIR"] = str(shared)
    if os.environ.get("SCLECTURE_DATA_DIR"):  # kernels run in other folders: make it absolute
        os.environ["SCLECTURE_DATA_DIR"] = str(Path(os.environ["SCLECTURE_DATA_DIR"]).resolve())
    cmd = [
        sys.executable, "-m", "pytest", "tests", "solutions",
        "--nbval-lax", "--nbval-current-env",
        "--nbval-sanitize-with", "tests/nbval_sanitize.cfg",
        "--nbval-cell-timeout", "900",
        "--durations", "15",
        # two workers on a 2-core machine; loadscope keeps a notebook's cells (one kernel) on one
        # worker and spreads the grading corpus, one class per lesson; the longest groups start
        # first (order set in tests/conftest.py) so that the workers finish together
        "-n", os.environ.get("SCLECTURE_TEST_WORKERS", "2"), "--dist", "loadscope", "--no-loadscope-reorder",
        *argv,
    ]
    print("+", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=ROOT)
    if code == 5:
        print("error: pytest collected no tests; the suite must never pass empty", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
