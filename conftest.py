"""Loaded by pytest for every test of the course, notebooks included: nbval compares printed
numbers with a tolerance (tests/nbval_tolerance.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))

pytest_plugins = ["nbval_tolerance"]
