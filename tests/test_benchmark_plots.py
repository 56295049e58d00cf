"""The benchmark figures are drawn from the measured tables, and only from them."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import plots  # noqa: E402  (benchmarks/plots.py)


def test_every_measured_table_gets_its_figure(tmp_path, capsys):
    measured = sorted(p for p in (ROOT / "benchmarks" / "results").glob("*.csv") if p.stem in plots.PLOTS)
    assert measured, "benchmarks/results holds no measured table with a figure"
    for csv in measured:
        shutil.copy(csv, tmp_path / csv.name)
    written = plots.main(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{c.stem}.png" for c in measured)
    for png in written:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    missing = set(plots.PLOTS) - {c.stem for c in measured}
    out = capsys.readouterr().out
    for name in missing:  # a table not measured yet is named, not drawn from made-up numbers
        assert f"skipped {name}" in out


def test_a_malformed_table_fails_loudly(tmp_path):
    (tmp_path / "scaling.csv").write_text("trainer,cells\nscVI,1000\n")
    with pytest.raises(KeyError):
        plots.main(tmp_path)


def test_the_running_interval_adds_seeds_in_order_and_ends_at_the_reported_one():
    from common import welch_interval

    rng = np.random.default_rng(1)
    a = {s: v for s, v in zip(rng.permutation(12), rng.normal(0, 2, 12))}  # seeds in any order
    b = {s: v for s, v in zip(rng.permutation(10), rng.normal(1, 1, 10))}
    run = plots.running_welch(a, b)
    assert [k for k, *_ in run] == list(range(3, 11))  # as many seeds as the code with fewer has
    assert run[-1][1:] == pytest.approx(welch_interval([a[s] for s in sorted(a)[:10]], list(b.values())))
    k, d, lo, hi = run[0]  # the first point: seeds 0, 1, 2 of each
    assert d == pytest.approx(np.mean([a[s] for s in (0, 1, 2)]) - np.mean([b[s] for s in (0, 1, 2)]))
    assert lo < d < hi
