"""The numeric comparison behind the notebook checks (tests/nbval_tolerance.py), and the
declarations the lessons make with it."""

from __future__ import annotations

import nbformat
import pytest
from nbval_tolerance import align_outputs, declared_tolerance, same_text

from conftest import LESSONS, ROOT


def test_declaration_is_parsed_and_bad_ones_are_refused():
    assert declared_tolerance("# NBVAL_CHECK_OUTPUT\nprint(1)") is None
    assert declared_tolerance("# NBVAL_CHECK_OUTPUT\n# NBVAL_TOLERANCE abs=0.03 rel=0.01\n") == (0.03, 0.01)
    assert declared_tolerance("# NBVAL_TOLERANCE rel=0.005") == (0.0, 0.005)
    with pytest.raises(ValueError, match="abs=... and rel="):
        declared_tolerance("# NBVAL_TOLERANCE 0.03")


def test_without_a_declaration_integers_are_exact_and_decimals_agree_to_the_last_digit():
    assert same_text("accuracy 0.890\n", "accuracy 0.889\n", None)        # a rounding boundary
    assert same_text("gap -0.000", "gap 0.000", None)                    # negative zero
    assert not same_text("accuracy 0.887", "accuracy 0.889", None)
    assert not same_text("2638 cells", "2639 cells", None)
    assert not same_text("12,559 genes", "12,560 genes", None)
    assert same_text("lr 9.5e-05", "lr 9.6e-05", None)                  # the last digit of the mantissa
    assert not same_text("lr 9.5e-05", "lr 9.7e-05", None)


def test_a_declared_tolerance_covers_every_number_and_nothing_else():
    tol = (0.02, 0.0)
    assert same_text("CTRL 0.738 STIM 0.481", "CTRL 0.721 STIM 0.499", tol)
    assert not same_text("CTRL 0.738 STIM 0.481", "CTRL 0.700 STIM 0.481", tol)
    assert not same_text("CTRL 0.738 STIM 0.481", "CTRL 0.738 STEM 0.481", tol)   # words stay exact
    assert not same_text("CTRL 0.738", "CTRL 0.738 0.1", tol)                    # and so does the count
    assert same_text("zeros 99,399", "zeros 99,884", (0, 0.01))                  # relative, with thousands
    assert not same_text("zeros 99,399", "zeros 101,884", (0, 0.01))
    assert same_text(" B   0.99\n", " B   1.00\n", tol)                          # table columns may re-pad
    assert same_text("nan and 1.0", "nan and 1.0", tol)


def test_aligned_outputs_take_the_stored_text_only_where_they_agree():
    stored = [nbformat.v4.new_output("stream", name="stdout", text="acc 0.889\n")]
    close = [nbformat.v4.new_output("stream", name="stdout", text="acc 0.890\n")]
    far = [nbformat.v4.new_output("stream", name="stdout", text="acc 0.850\n")]
    assert align_outputs(close, stored, None)[0]["text"] == "acc 0.889\n"
    assert align_outputs(far, stored, None)[0]["text"] == "acc 0.850\n"
    assert far[0]["text"] == "acc 0.850\n"  # the new outputs themselves are not changed


def test_nbval_fails_a_cell_whose_numbers_move_beyond_its_tolerance(tmp_path):
    """End to end through nbval: a stored output within tolerance passes, one beyond fails."""
    import subprocess
    import sys

    def notebook(printed_value: str, tolerance_line: str):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell(f"# NBVAL_CHECK_OUTPUT\n{tolerance_line}\nprint('accuracy 0.800')")
        cell.execution_count = 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"accuracy {printed_value}\n")]
        nb.cells.append(cell)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        return nb

    cases = {"within.ipynb": ("0.790", "# NBVAL_TOLERANCE abs=0.02", 0),
             "beyond.ipynb": ("0.750", "# NBVAL_TOLERANCE abs=0.02", 1),
             "exact.ipynb": ("0.790", "", 1)}
    for name, (value, line, _) in cases.items():
        nbformat.write(notebook(value, line), tmp_path / name)
    (tmp_path / "conftest.py").write_text((ROOT / "conftest.py").read_text().replace(
        'Path(__file__).resolve().parent / "tests"', repr(str(ROOT / "tests"))))
    for name, (_, _, expected) in cases.items():
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
                              "--nbval-current-env", str(tmp_path / name)],
                             cwd=tmp_path, capture_output=True, text=True)
        assert res.returncode == expected, f"{name}: exit {res.returncode}\n{res.stdout[-2000:]}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_tolerance_of_a_lesson_is_well_formed(lesson):
    nb = nbformat.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "NBVAL_TOLERANCE" in cell.source:
            assert "NBVAL_CHECK_OUTPUT" in cell.source, f"{lesson} cell {i}: a tolerance without # NBVAL_CHECK_OUTPUT"
            tol = declared_tolerance(cell.source)
            assert tol is not None and (tol[0] > 0 or tol[1] > 0), f"{lesson} cell {i}: an empty tolerance"
