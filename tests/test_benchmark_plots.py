"""The benchmark figures are drawn from the measured tables, and only from them."""

from __future__ import annotations

import shutil
import sys

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
