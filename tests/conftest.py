"""Shared fixtures: the course root, the lessons, the real-data folder, quick mode."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import notebooks as nbtool  # noqa: E402  (tools/notebooks.py)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")

LESSONS = nbtool.lesson_names()


def shared_data_dir() -> Path | None:
    """The seeded copy of the real datasets, if this machine has one."""
    env = os.environ.get("SCLECTURE_DATA_DIR")
    if env and Path(env).is_dir():
        return Path(env)
    candidate = ROOT.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


# notebooks, kernels and nbgrader started by the tests read the seeded data, never the network
if shared_data_dir() is not None:
    os.environ["SCLECTURE_DATA_DIR"] = str(shared_data_dir().resolve())  # absolute: kernels run elsewhere


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture()
def real_data(monkeypatch, tmp_path_factory):
    """Point the loaders at the seeded datasets (skip, saying why, where there are none)."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("real datasets not found: set SCLECTURE_DATA_DIR or put the seeded copy in ../shared/data")
    monkeypatch.setenv("SCLECTURE_DATA_DIR", str(d))
    return d


def lesson_params():
    return [pytest.param(name, id=name) for name in LESSONS]



# ---------------------------------------------------------------- the order of a parallel run
# Rough minutes of the slowest groups of tests (a notebook under nbval, a grading corpus).
# tools/run_tests.py hands groups to its two workers in collection order, so the longest
# go first and the many short unit tests fill the gaps at the end.
_MINUTES = {"03_actinn": 4, "06_scvi": 4, "05_vae": 3, "04_fa_ppca": 2.5, "02_mlp": 2,
            "01_logistic_regression": 1.5, "00_setup": 1}


# modules whose tests share one group (loadscope): the whole module's minutes
_MODULE_MINUTES = {"test_attacks.py": 6, "test_verdict.py": 4, "test_colab.py": 3,
                   "test_grading_workflow.py": 2.5, "test_gitignore.py": 1.5, "test_browser.py": 1.5,
                   "test_book.py": 1.5, "test_sandbox.py": 0.5}


def _weight(item) -> float:
    nodeid = item.nodeid
    for lesson, minutes in _MINUTES.items():
        if nodeid.startswith(f"solutions/{lesson}/"):
            return minutes
        if f"::TestCorpus_{lesson}::" in nodeid:
            return minutes * 1.2
        if f"::TestExtendedCorpus_{lesson}::" in nodeid:
            return minutes
    for module, minutes in _MODULE_MINUTES.items():
        if nodeid.startswith(f"tests/{module}::"):
            return minutes
    return 0.0


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: -_weight(item))  # stable: each group keeps its own order
