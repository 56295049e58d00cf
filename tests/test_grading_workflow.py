"""The instructor's workflow, proven on a corpus of submissions built from each release.

Every lesson is graded (with SCLECTURE_QUICK=1, as `make grade` does) for five students:
the full solution, the untouched release, a partial solution, one whose code raises and
one that loops forever. Two lessons also get the submissions students hand in when things
go wrong: edited and deleted test cells, moved and added cells, a renamed notebook, a
monkeypatching cheat, another kernel name, non-UTF-8 bytes, a truncated file, a
notebook saved by a newer nbgrader, and cells pasted into a new notebook without nbgrader's
metadata (matched to the release by content; a missing test cell reported, never a silent
0). Every kernel runs in the grading sandbox (tests/test_attacks.py proves what that stops).
The scores are read from the gradebook and compared
with the points each case must earn (the full solution's full marks also prove that the
solution passes its own hidden tests).
The exchange path (release, fetch, submit, collect) is tested with two students.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from conftest import LESSONS, ROOT, nbtool

sys.path.insert(0, str(ROOT / "tools"))
import grade as grading_tool  # noqa: E402  (tools/grade.py)

pytestmark = pytest.mark.notebooks

# seconds per cell. The lessons whose corpus holds the infinite loop (FAILING_CODE_LESSONS) get a
# short timeout, several times their slowest cell in quick mode (a few seconds); the others get
# one over ten times theirs (03 and 06: about 10 s idle, UMAP and ACTINN), since a loaded CI
# machine runs a cell several times slower and only the loop ever waits for a timeout.
TIMEOUT = 30
SLOW_LESSON_TIMEOUT = 120
SOLUTION_LINE = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


# ---------------------------------------------------------------- building submissions
def _source(name):
    return nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)


def _release(name):
    return nbformat.read(ROOT / "notebooks" / name / f"{name}.ipynb", as_version=4)


def _is_solution(cell):
    return cell.metadata.get("nbgrader", {}).get("solution", False)


def _is_test(cell):
    m = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and m.get("grade", False)


def _points(cell):
    return float(cell.metadata["nbgrader"].get("points", 0))


def _solve(release, source, which=None):
    """Fill the release's solution cells (all, or the indices in ``which``) as a student would."""
    nb = nbformat.from_dict(json.loads(json.dumps(release)))
    k = 0
    for cell, src in zip(nb.cells, source.cells):
        if _is_solution(cell) and cell.cell_type == "code":
            if which is None or k in which:
                cell.source = "\n".join(l for l in src.source.splitlines() if not SOLUTION_LINE.match(l))
            k += 1
        elif _is_solution(cell):  # written answer
            cell.source = "The perceptron draws one straight line; XOR needs two."
    return nb


def _replace_stub(nb, index, replacement):
    """Replace `raise NotImplementedError()` in the index-th code exercise (keeping its indent)."""
    cells = [c for c in nb.cells if _is_solution(c) and c.cell_type == "code"]
    cell = cells[index]
    lines = []
    for line in cell.source.splitlines():
        if line.strip() == "raise NotImplementedError()":
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + r for r in replacement.splitlines())
        else:
            lines.append(line)
    cell.source = "\n".join(lines)
    return nb


def _exercise_layout(nb):
    """(total points, points of the test cells after the last exercise, points up to exercise k)."""
    order = []
    for cell in nb.cells:
        if _is_solution(cell) and cell.cell_type == "code":
            order.append(("ex", 0.0))
        elif _is_test(cell):
            order.append(("test", _points(cell)))
    total = sum(p for kind, p in order if kind == "test")
    n_ex = sum(1 for kind, _ in order if kind == "ex")
    before = []  # before[k]: points of the tests that precede exercise k (0-based)
    acc = 0.0
    for kind, p in order:
        if kind == "ex":
            before.append(acc)
        else:
            acc += p
    last_tests = total - before[-1]
    return total, last_tests, before, n_ex


# the lessons whose core corpus also has a student whose last exercise raises and one whose
# last exercise never ends (the slowest submission to grade); the other lessons' corpora check
# that their solution, their untouched release and a half-solved notebook are graded exactly
FAILING_CODE_LESSONS = ("00_setup", "01_logistic_regression")


def build_core_corpus(name, folder: Path) -> dict[str, float]:
    """Write the core submissions of a lesson as <student>_<lesson>.ipynb; return expected scores."""
    source, release = _source(name), _release(name)
    total, last_tests, before, n_ex = _exercise_layout(release)
    half = max(1, n_ex // 2)
    expected = {}

    def write(student, nb, score):
        nbformat.write(nb, folder / f"{student}_{name}.ipynb")
        expected[student] = score

    write("solved", _solve(release, source), total)
    write("untouched", release, 0.0)
    write("partial", _solve(release, source, which=set(range(half))), before[half] if half < n_ex else total)
    if name not in FAILING_CODE_LESSONS:  # how a failing exercise is graded does not depend on the lesson
        return expected
    write("raises", _replace_stub(_solve(release, source, which=set(range(n_ex - 1))), n_ex - 1,
                                  'raise ValueError("a bug in my code")'), total - last_tests)
    write("loops", _replace_stub(_solve(release, source, which=set(range(n_ex - 1))), n_ex - 1,
                                 "while True:\n    pass"), total - last_tests)
    return expected


def _timeout(name):
    return TIMEOUT if name in FAILING_CODE_LESSONS else SLOW_LESSON_TIMEOUT


def _scores(results):
    return {s: r.score for s, r in results.items()}


# ---------------------------------------------------------------- the core corpus, every lesson
def check_core_corpus(name, tmp_path):
    subs = tmp_path / "submissions"
    subs.mkdir()
    expected = build_core_corpus(name, subs)
    before = {p.name: p.read_bytes() for p in subs.iterdir()}
    results = grading_tool.grade(name, subs, course=tmp_path / "course", timeout=_timeout(name), quiet=True)
    assert _scores(results) == expected, {s: (r.score, r.failed, r.notes) for s, r in results.items()}
    if "loops" in results:
        assert any("timed out" in n for n in results["loops"].notes), results["loops"].notes
    # the submissions themselves are untouched
    assert {p.name: p.read_bytes() for p in subs.iterdir()} == before
    # the untouched release failed only in its test cells, with NotImplementedError
    nb = nbformat.read(tmp_path / "course" / "autograded" / "untouched" / name / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if _is_test(cell):
            assert errors and errors[0].ename == "NotImplementedError", (cell.metadata["nbgrader"]["grade_id"], errors)
        elif cell.cell_type == "code":
            assert not errors, f"{name}: a non-test cell failed on the untouched release: {cell.source[:200]}"
    rows = list(csv.DictReader(open(tmp_path / "course" / "grades" / f"{name}.csv")))
    assert {r["student"]: float(r["score"]) for r in rows} == expected


def _corpus_class(name):
    # one class per lesson, so that pytest-xdist (--dist loadscope) spreads the lessons over workers
    return type(f"TestCorpus_{name}", (), {
        "test_core_corpus_grades_exactly": lambda self, tmp_path: check_core_corpus(name, tmp_path)})


for _name in LESSONS:
    globals()[f"TestCorpus_{_name}"] = _corpus_class(_name)


# ---------------------------------------------------------------- what goes wrong in real classes
EXTENDED = [n for n in ("00_setup", "01_logistic_regression") if n in LESSONS]

CHEAT = '''
import numpy as np
import sclecture.grading as _g
np.allclose = lambda *a, **k: True
np.testing.assert_allclose = lambda *a, **k: None
for _name in ("assert_close", "assert_shape", "assert_equal", "assert_probabilities", "assert_finite"):
    setattr(_g, _name, lambda *a, **k: None)
get_ipython().set_custom_exc((AssertionError, NameError, TypeError, ValueError), lambda *a, **k: None)
'''


def build_extended_corpus(name, folder: Path) -> dict[str, float]:
    source, release = _source(name), _release(name)
    total = sum(_points(c) for c in release.cells if _is_test(c))
    expected = {}

    def write(student, nb, score, filename=None):
        nbformat.write(nb, folder / (filename or f"{student}_{name}.ipynb"))
        expected[student] = score

    nb = _release(name)
    for cell in nb.cells:
        if _is_test(cell):
            cell.source = "pass  # tests? what tests?"
    write("edited", nb, 0.0)

    nb = _release(name)
    nb.cells = [c for c in nb.cells if not _is_test(c)]
    write("deleted", nb, 0.0)

    nb = _solve(release, source)
    nb.cells.insert(3, nbformat.v4.new_markdown_cell("My notes on this lesson."))
    nb.cells.insert(5, nbformat.v4.new_code_cell("scratch = 1 + 1"))
    plain = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "nbgrader" not in c.metadata]
    nb.cells.append(nb.cells.pop(plain[-1]))  # a narrative cell moved to the end
    write("rearranged", nb, total)

    write("renamed", _solve(release, source), total, filename=f"renamed_Copy of {name} (1).ipynb")

    nb = _release(name)
    nb = _replace_stub(nb, 0, "return None") if _stub_is_in_function(nb) else nb
    first = next(c for c in nb.cells if _is_solution(c) and c.cell_type == "code")
    first.source = CHEAT + "\n" + first.source
    write("cheater", nb, 0.0)

    nb = _solve(release, source)
    nb.metadata["kernelspec"] = {"name": "my-venv", "display_name": "My venv", "language": "python"}
    write("otherkernel", nb, total)

    nb = _solve(release, source)
    md = next(c for c in nb.cells if c.cell_type == "markdown")
    md.source += "\n\nGARBAGE_MARKER"
    raw = nbformat.writes(nb).encode("utf-8").replace(b"GARBAGE_MARKER", b"caf\xe9 \xff\xfe")
    (folder / f"garbled_{name}.ipynb").write_bytes(raw)
    expected["garbled"] = total

    text = nbformat.writes(_solve(release, source))
    (folder / f"truncated_{name}.ipynb").write_text(text[: len(text) // 3])
    expected["truncated"] = None

    # cells copied into a new notebook (or saved by a tool that drops cell metadata): matched
    # to the release by content and graded
    nb = nbformat.v4.new_notebook(cells=[_bare(c) for c in _solve(release, source).cells])
    write("nometa", nb, total)
    # ... and one whose last test cell is gone as well: reported, never a silent 0
    cells = [_bare(c) for c in _solve(release, source).cells]
    last = max(i for i, c in enumerate(release.cells) if _is_test(c))
    del cells[last]
    write("lostcells", nbformat.v4.new_notebook(cells=cells), total - _points(release.cells[last]))

    # saved by a newer nbgrader: it stops nbgrader's whole run, which must cost this student only
    nb = _solve(release, source)
    for cell in nb.cells:
        if "nbgrader" in cell.metadata:
            cell.metadata["nbgrader"]["schema_version"] = 99
    write("newerformat", nb, None)
    return expected


def _bare(cell):
    """The cell as a new notebook gets it when its content is pasted: no metadata, no outputs."""
    make = nbformat.v4.new_code_cell if cell.cell_type == "code" else nbformat.v4.new_markdown_cell
    return make(cell.source)


def _stub_is_in_function(nb):
    cell = next(c for c in nb.cells if _is_solution(c) and c.cell_type == "code")
    return any(l.startswith((" ", "\t")) and l.strip() == "raise NotImplementedError()" for l in cell.source.splitlines())


def check_extended_corpus(name, tmp_path):
    subs = tmp_path / "lms-download"
    subs.mkdir()
    expected = build_extended_corpus(name, subs)
    archive = tmp_path / "submissions.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(subs.iterdir()):
            zf.write(p, p.name)
    results = grading_tool.grade(name, archive, course=tmp_path / "course", timeout=_timeout(name), quiet=True)
    assert _scores(results) == expected, {s: (r.score, r.failed, r.notes) for s, r in results.items()}
    assert any("renamed" in n for n in results["renamed"].notes)
    assert any("UTF-8" in n for n in results["garbled"].notes)
    assert any("not a readable notebook" in n for n in results["truncated"].notes)
    assert any("could not grade" in n and "newer version" in n for n in results["newerformat"].notes), \
        results["newerformat"].notes
    assert any("metadata lost" in n and "matched to the release" in n for n in results["nometa"].notes)
    lost = _release(name).cells[max(i for i, c in enumerate(_release(name).cells) if _is_test(c))]
    assert any("metadata lost" in n and lost.metadata["nbgrader"]["grade_id"] in n and "could not be found" in n
               for n in results["lostcells"].notes), results["lostcells"].notes
    # the maximum counts every graded cell: autograded tests and manually graded answers
    max_scores = {r.max_score for s, r in results.items() if r.score is not None}
    graded = [c for c in _release(name).cells if c.metadata.get("nbgrader", {}).get("grade", False)]
    assert max_scores == {sum(_points(c) for c in graded)}


for _name in EXTENDED:
    globals()[f"TestExtendedCorpus_{_name}"] = type(f"TestExtendedCorpus_{_name}", (), {
        "test_extended_corpus": (lambda n: lambda self, tmp_path: check_extended_corpus(n, tmp_path))(_name)})


def test_regrading_is_repeatable_and_keeps_manual_grades(tmp_path):
    name = "00_setup"
    subs = tmp_path / "subs"
    subs.mkdir()
    expected = build_core_corpus(name, subs)
    for student in ("partial", "raises", "loops"):  # keep this test short
        (subs / f"{student}_{name}.ipynb").unlink()
        del expected[student]
    course = tmp_path / "course"
    first = grading_tool.grade(name, subs, course=course, timeout=TIMEOUT, quiet=True)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        sub = gb.find_submission_notebook(name, name, "untouched")
        g = sub.grades[0]
        g.manual_score = 1.0
        cmt = sub.comments[0]
        cmt.manual_comment = "Close: check the zero-count cell."
        gb.db.commit()
    second = grading_tool.grade(name, subs, course=course, timeout=TIMEOUT, quiet=True)
    assert _scores(first) == expected
    assert second["solved"].score == first["solved"].score
    assert second["untouched"].score == 1.0, "a manual grade must survive regrading"
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        sub = gb.find_submission_notebook(name, name, "untouched")
        assert sub.comments[0].manual_comment == "Close: check the zero-count cell."


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(SystemExit, match="unknown lesson 'nope'"):
        grading_tool.grade("nope", tmp_path, course=tmp_path / "c", quiet=True)
    with pytest.raises(SystemExit, match="does not exist"):
        grading_tool.grade("00_setup", tmp_path / "missing", course=tmp_path / "c", quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no .ipynb files"):
        grading_tool.grade("00_setup", tmp_path / "empty", course=tmp_path / "c", quiet=True)


def test_grading_tool_finds_nbgraders_tools_without_an_activated_environment(tmp_path):
    # nbgrader runs `alembic` by name when it makes a gradebook; `python tools/grade.py` must work
    # from a bare PATH. No notebooks to grade: it stops after making the course and its gradebook.
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "notes.txt").write_text("no notebooks here")
    course = tmp_path / "course"
    res = subprocess.run([sys.executable, "tools/grade.py", "00_setup", str(tmp_path / "subs"), "--course-dir", str(course),
                          "--unsafe-no-sandbox"], cwd=ROOT, env=dict(os.environ, PATH="/usr/bin:/bin"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "no .ipynb files" in res.stderr, res.stderr[-2000:]
    assert (course / "gradebook.db").is_file(), res.stderr[-2000:]


def test_importing_the_tools_changes_nothing_in_the_process():
    code = ("import json, os, sys; before = dict(os.environ); import tools.notebooks; sys.path.insert(0, 'tools'); "
            "import notebooks, grade, run_tests; after = dict(os.environ); "
            "print(json.dumps({k: [before.get(k), after.get(k)] for k in set(before) | set(after) if before.get(k) != after.get(k)}))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PATH="/usr/bin:/bin"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout) == {}, f"importing a tool changed the environment (before, after): {res.stdout}"


# ---------------------------------------------------------------- a class on a JupyterHub exchange
# nbgrader takes the user name from the operating system; each simulated person gets theirs
AS_USER = ("import sys, nbgrader.utils as u; user = sys.argv.pop(1); u.get_osusername = lambda: user; "
           "from nbgrader.apps.nbgraderapp import main; sys.argv[0] = 'nbgrader'; main()")


def _nbgrader(args, cwd, user, exchange):
    env = nbtool.tools_env(dict(os.environ, OMP_WAIT_POLICY="PASSIVE", SCLECTURE_QUICK="1"))  # nbgrader runs `alembic` by name
    cmd = [sys.executable, "-c", AS_USER, user, *args, f"--Exchange.root={exchange}",
           "--CourseDirectory.course_id=sclecture", "--Exchange.path_includes_course=True"]
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"nbgrader {' '.join(args)} as {user} failed:\n{res.stdout}\n{res.stderr}"
    return res


def test_exchange_release_fetch_submit_collect_autograde_export(tmp_path):
    name = "00_setup"
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o777)
    course = tmp_path / "instructor"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / name, course / "solutions" / name)
    _nbgrader(["generate_assignment", name, "--force"], course, "instructor", exchange)
    _nbgrader(["db", "student", "add", "ada"], course, "instructor", exchange)
    _nbgrader(["db", "student", "add", "ben"], course, "instructor", exchange)
    _nbgrader(["release_assignment", name, "--force"], course, "instructor", exchange)

    source = _source(name)
    for student, solved in (("ada", True), ("ben", False)):
        home = tmp_path / student
        home.mkdir()
        _nbgrader(["fetch_assignment", name], home, student, exchange)
        fetched = home / "sclecture" / name / f"{name}.ipynb"  # path_includes_course
        assert fetched.exists(), sorted(str(p) for p in home.rglob("*"))
        if solved:
            nbformat.write(_solve(nbformat.read(fetched, as_version=4), source), fetched)
        _nbgrader(["submit", name], home, student, exchange)

    _nbgrader(["collect", name], course, "instructor", exchange)
    assert sorted(p.name for p in (course / "submitted").iterdir()) == ["ada", "ben"]
    _nbgrader(["autograde", name, "--force"], course, "instructor", exchange)
    _nbgrader(["export", "--to", str(tmp_path / "grades.csv")], course, "instructor", exchange)
    rows = {r["student_id"]: float(r["score"]) for r in csv.DictReader(open(tmp_path / "grades.csv"))}
    total = sum(_points(c) for c in _release(name).cells if _is_test(c))
    assert rows == {"ada": total, "ben": 0.0}
    # the grading command on the collected folder grades in place and deletes nothing
    collected = sorted(str(p.relative_to(course)) for p in (course / "submitted").rglob("*.ipynb"))
    results = grading_tool.grade(name, course / "submitted", course=course, timeout=TIMEOUT, quiet=True)
    assert _scores(results) == {"ada": total, "ben": 0.0}
    assert sorted(str(p.relative_to(course)) for p in (course / "submitted").rglob("*.ipynb")) == collected
