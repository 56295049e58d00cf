"""Every lesson, as a maintainer and a student meet it.

- the stored solution notebook is what its lesson source builds to (no stale edits);
- the committed release equals a fresh `nbgrader generate_assignment` of the source;
- no solution code, hidden test or model answer leaks into `notebooks/`;
- every lesson has graded code cells (the solution's full marks under autograde are checked
  by the corpus in tests/test_grading_workflow.py); an untouched release fails the Validator;
- (the release run top to bottom as a student opens it, raising only in the graded test
  cells, is checked by the untouched-release case of tests/test_grading_workflow.py);
- the Colab badge and setup cell come from pyproject's repository URL, and the setup cell
  installs the course on Colab only.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import types
from pathlib import Path

import nbformat
import pytest

from conftest import LESSONS, ROOT, lesson_params, nbtool

pytestmark = pytest.mark.notebooks


def _solution(name: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)


def _release(name: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "notebooks" / name / f"{name}.ipynb", as_version=4)


def _cell_key(cell) -> tuple:
    return (cell.cell_type, cell.source, json.dumps(cell.metadata.get("nbgrader"), sort_keys=True))


def test_every_lesson_has_source_solution_and_release():
    assert LESSONS, "no lessons found in lessons/"
    assert LESSONS[0] == "00_setup"
    for name in LESSONS:
        assert (ROOT / "solutions" / name / f"{name}.ipynb").exists(), f"{name}: run `make notebooks LESSONS={name}`"
        assert (ROOT / "notebooks" / name / f"{name}.ipynb").exists(), f"{name}: run `make releases LESSONS={name}`"
    stray = {p.name for p in (ROOT / "solutions").iterdir() if p.is_dir()} - set(LESSONS)
    assert not stray, f"solutions/ has folders without a lesson source in lessons/: {sorted(stray)}"


@pytest.mark.parametrize("name", lesson_params())
def test_solution_is_built_from_its_lesson_source(name):
    built = nbtool.parse_lesson(ROOT / "lessons" / f"{name}.py")
    stored = _solution(name)
    assert [_cell_key(c) for c in stored.cells] == [_cell_key(c) for c in built.cells], (
        f"solutions/{name} differs from lessons/{name}.py: run `make notebooks LESSONS={name}`"
    )
    executed = [c for c in stored.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count for c in executed), f"solutions/{name} is not fully executed: run `make execute LESSONS={name}`"


@pytest.mark.parametrize("name", lesson_params())
def test_release_is_in_sync_with_its_source(name, tmp_path):
    nbtool._generate(name, ROOT / "solutions", tmp_path)
    fresh = nbformat.read(tmp_path / name / f"{name}.ipynb", as_version=4)
    committed = _release(name)
    assert len(fresh.cells) == len(committed.cells), f"notebooks/{name} is stale: run `make releases LESSONS={name}`"
    for i, (a, b) in enumerate(zip(fresh.cells, committed.cells)):
        assert _cell_key(a) == _cell_key(b), (
            f"cell {i} of notebooks/{name} differs from a fresh release; run `make releases LESSONS={name}`"
        )
    extra = sorted(p.name for p in (ROOT / "notebooks" / name).iterdir()) 
    assert extra == sorted(p.name for p in (tmp_path / name).iterdir()), "the release folder holds other files"


def _protected_lines(nb) -> set[str]:
    """Lines of solutions, hidden tests and model answers that must not reach students."""
    public = set()
    secret = set()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "markdown" and meta.get("solution"):
            secret.update(l.strip() for l in cell.source.splitlines())
            continue
        inside = False
        for line in cell.source.splitlines():
            s = line.strip()
            if s in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
                inside = True
            elif s in ("### END SOLUTION", "### END HIDDEN TESTS"):
                inside = False
            elif inside:
                secret.add(s)
            else:
                public.add(s)
    return {s for s in secret - public if len(s) >= 12}


@pytest.mark.parametrize("name", lesson_params())
def test_checked_outputs_are_printed_text_only(name):
    """nbval compares the cells marked NBVAL_CHECK_OUTPUT; a figure in one makes that check flaky."""
    checked = [c for c in _solution(name).cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source]
    for cell in checked:
        kinds = {o.output_type for o in cell.outputs}
        assert kinds == {"stream"}, (
            f"{name}: a cell marked NBVAL_CHECK_OUTPUT must only print text (found {sorted(kinds)}); "
            f"move its plot to a separate cell:\n{cell.source[:300]}")


@pytest.mark.parametrize("name", lesson_params())
def test_release_leaks_no_solution_or_hidden_test(name):
    text = (ROOT / "notebooks" / name / f"{name}.ipynb").read_text(encoding="utf-8")
    for marker in ["BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"]:
        assert marker not in text, f"notebooks/{name} contains {marker!r}"
    release = _release(name)
    blob = "\n".join(
        [c.source for c in release.cells]
        + [json.dumps(c.get("outputs", [])) for c in release.cells]
        + [json.dumps(c.metadata) for c in release.cells]
        + [json.dumps(release.metadata)]
    )
    leaked = sorted(line for line in _protected_lines(_solution(name)) if line in blob)
    assert not leaked, f"notebooks/{name} contains solution or hidden-test lines: {leaked[:5]}"
    assert all(not c.get("outputs") for c in release.cells if c.cell_type == "code"), "releases carry no outputs"
    graded = [c for c in release.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"]
    assert graded and all("raise NotImplementedError()" in c.source for c in graded)


def _graded_points(nb) -> float:
    return sum(c.metadata["nbgrader"].get("points", 0) for c in nb.cells
               if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code")


@pytest.mark.parametrize("name", lesson_params())
def test_every_lesson_has_graded_code_cells(name):
    # that the solution earns all of these points is checked by autograding it, in the
    # "solved" case of tests/test_grading_workflow.py
    assert _graded_points(_solution(name)) > 0, f"{name} has no graded code cells"


def test_setup_release_fails_the_validator(tmp_path, monkeypatch):
    from nbgrader.validator import Validator

    work = tmp_path / "00_setup"
    shutil.copytree(ROOT / "notebooks" / "00_setup", work)
    results = Validator().validate(str(work / "00_setup.ipynb"))
    assert results.get("failed"), "an untouched release must fail its tests"
    assert all("NotImplementedError" in f["raw_error"] for f in results["failed"])


REPO_URL = nbtool.repository_url()


@pytest.mark.parametrize("name", lesson_params())
def test_colab_badge_and_setup_cell(name):
    nb = _release(name)
    first, second = nb.cells[0], nb.cells[1]
    owner_repo = REPO_URL.split("github.com/", 1)[1]
    assert first.cell_type == "markdown"
    assert f"colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{name}/{name}.ipynb" in first.source
    assert second.cell_type == "code" and second.source == nbtool.colab_setup_source()


def _run_setup_cell(source: str, monkeypatch, on_colab: bool) -> list[list[str]]:
    calls = []
    fake_subprocess = types.SimpleNamespace(check_call=lambda cmd, **kw: calls.append(cmd) or 0)
    monkeypatch.setitem(sys.modules, "subprocess", fake_subprocess)
    if on_colab:
        google = types.ModuleType("google")
        colab = types.ModuleType("google.colab")
        google.colab = colab
        monkeypatch.setitem(sys.modules, "google", google)
        monkeypatch.setitem(sys.modules, "google.colab", colab)
    else:
        monkeypatch.setitem(sys.modules, "google.colab", None)  # import fails, as off Colab
    exec(compile(source, "<colab-setup>", "exec"), {})
    return calls


def test_colab_setup_cell_is_a_no_op_off_colab(monkeypatch):
    assert _run_setup_cell(nbtool.colab_setup_source(), monkeypatch, on_colab=False) == []


def test_repository_url_comes_from_pyproject(tmp_path, monkeypatch):
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^Repository = "https://github\.com/[\w.-]+/[\w.-]+"$', text, re.M)
    fork = tmp_path / "pyproject.toml"
    fork.write_text(text.replace(REPO_URL, "https://github.com/someone/fork"))
    monkeypatch.setattr(nbtool, "ROOT", tmp_path)
    assert "colab.research.google.com/github/someone/fork/blob/main/notebooks/00_setup" in nbtool.colab_badge("00_setup")
    assert "git+https://github.com/someone/fork" in nbtool.colab_setup_source()


@pytest.mark.parametrize("name", lesson_params())
def test_stored_solution_shows_its_figures(name):
    """Every plt.show() of a solution left a figure in the stored outputs (they render on GitHub and in the site)."""
    nb = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            images = sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
            assert images, f"{name} cell {i} calls plt.show() but stored no figure: execute with `make execute`, not under MPLBACKEND=Agg"
