"""Submissions that attack the grader, the course or the other students instead of solving the lesson.

Each attack is written into the solution cell of lesson 00's release (so the attacker also solves
the exercise) and graded in a class between honest students: one with the full solution and
one with the untouched release, graded before the attackers (ids starting with ``a-``) and after
them (``z-``). For every class the test proves that

* the honest students get full marks and the blank ones 0, in the table and in the gradebook,
  also when read again 20 s after grading returned (a process left behind could still write);
* every file of the course (the course folder's solutions, releases, submissions and its
  configuration, the original download) is byte-identical before and after grading, and the
  repository's package and lesson carry no attacker's mark;
* no process of any submission is left: none with the sandbox's marker in its environment and
  none running under a sandbox's user id;
* the attackers' own outcome is what the sandbox promises (killed for memory, killed for ignoring
  an interrupt, the kernel's exit reported, scripts in outputs neutralised in the feedback).

The file checks of the feedback HTML are static (the HTML is searched for the attack's active
markup), not a browser run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import grade as grading_tool  # noqa: E402  (tools/grade.py)
import sandbox  # noqa: E402  (tools/sandbox.py)
from test_grading_workflow import _is_solution, _is_test, _points, _release, _solve, _source  # noqa: E402

pytestmark = pytest.mark.notebooks

LESSON = "00_setup"
TIMEOUT = 20  # seconds per cell (quick mode: the slowest honest cell takes a few seconds)


# ---------------------------------------------------------------- building the class
def _with_code(code: str, solved: bool = True) -> nbformat.NotebookNode:
    """The release with ``code`` run at the top of its first exercise cell (solved, or not)."""
    release, source = _release(LESSON), _source(LESSON)
    nb = _solve(release, source) if solved else nbformat.from_dict(json.loads(json.dumps(release)))
    cell = next(c for c in nb.cells if _is_solution(c) and c.cell_type == "code")
    cell.source = code.strip() + "\n\n" + cell.source
    return nb


def _total() -> float:
    return sum(_points(c) for c in _release(LESSON).cells if _is_test(c))


def _paths(tmp_path: Path) -> dict[str, str]:
    course = tmp_path / "course"
    return {
        "course": str(course), "gradebook": str(course / "gradebook.db"), "solutions": str(course / "solutions"),
        "submitted": str(course / "submitted"), "autograded": str(course / "autograded"),
        "download": str(tmp_path / "download"), "repo": str(ROOT),
        "other": str(course / "submitted" / "z-honest" / LESSON / f"{LESSON}.ipynb"),
    }


VANDAL = '''
import glob, os, shutil, sqlite3
P = {paths!r}
def _try(what, f, *a):
    try:
        f(*a)
        print("ATTACK-SUCCEEDED", what)
    except Exception as err:
        print("attack failed:", what, type(err).__name__)
def _append(p):  # a harmless comment, so that a failing sandbox cannot break the repository
    with open(p, "a") as fh:
        fh.write("\\n# vandalised\\n")
def _zero(p):
    c = sqlite3.connect(p, timeout=1)
    c.execute("update grade set auto_score = 0, manual_score = 0")
    c.commit()
import sclecture
for p in sorted(glob.glob(os.path.dirname(sclecture.__file__) + "/*.py")) + sorted(glob.glob(P["repo"] + "/sclecture/*.py")):
    _try("package " + p, _append, p)
_try("zero the gradebook", _zero, P["gradebook"])
_try("delete the gradebook", os.remove, P["gradebook"])
_try("blank another student", _append, P["other"])
for key in ("solutions", "submitted", "autograded", "download"):
    _try("delete " + key, shutil.rmtree, P[key])
_try("repository lessons", _append, P["repo"] + "/solutions/{lesson}/{lesson}.ipynb")
'''

READER = '''
import glob, os
P = {paths!r}
def _show(what, f):
    try:
        text = f()
        print("ATTACK-SUCCEEDED", what, str(text)[:2000])
    except Exception as err:
        print("attack failed:", what, type(err).__name__)
_show("read solutions", lambda: open(P["solutions"] + "/{lesson}/{lesson}.ipynb").read())
_show("read repository solutions", lambda: open(P["repo"] + "/solutions/{lesson}/{lesson}.ipynb").read())
_show("read the gradebook", lambda: open(P["gradebook"], "rb").read(100))
_show("list the download", lambda: os.listdir(P["download"]))
_show("list the course", lambda: os.listdir(P["course"]))
# the original download through /proc: another process's files or working folder
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    _show("cwd of process " + pid, lambda: os.listdir(f"/proc/{{pid}}/cwd/") if os.path.realpath(f"/proc/{{pid}}/cwd").startswith(("/work", "/tmp/pytest", P["course"])) else 1 / 0)
print("processes visible:", len([p for p in os.listdir("/proc") if p.isdigit()]))
'''

LURKER = '''
import os, subprocess, sys, time
P = {paths!r}
late = """
import os, sqlite3, time
time.sleep(8)
for _ in range(30):
    try:
        c = sqlite3.connect({gradebook!r}, timeout=1)
        c.execute("update grade set auto_score = 0, manual_score = 0")
        c.commit()
    except Exception:
        pass
    try:
        open({other!r}, "a").write("late")
    except Exception:
        pass
    time.sleep(1)
"""
# a detached grandchild (double fork, new session) and a plain background child
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", late])
    os._exit(0)
subprocess.Popen([sys.executable, "-c", late], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
'''

HOG = '''
import subprocess, sys, time
# three children of 1 GiB each: every one is under any per-process limit, together they are not
children = [subprocess.Popen([sys.executable, "-c", "import time; b = b'x' * (1 << 30); time.sleep(120)"])
            for _ in range(3)]
time.sleep(120)
'''

DEAF = '''
import signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    pass
'''

STUBBORN = '''
import time
while True:
    try:
        time.sleep(0.1)
    except KeyboardInterrupt:
        pass
'''

EXITER = '''
import os
os._exit(0)
'''

SCRIPTER = '''
from IPython.display import HTML, SVG, Javascript, display
display(HTML("<b>bold</b><script>window.PWNED = 1</script><img src=x onerror='window.PWNED = 2'>"))
display(Javascript("window.PWNED = 3"))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg"><script>window.PWNED = 4</script></svg>'))
'''


def _scripter() -> nbformat.NotebookNode:
    nb = _with_code(SCRIPTER)
    nb.cells.insert(3, nbformat.v4.new_markdown_cell(
        "My notes <script>window.PWNED = 5</script> <img src=x onerror=\"window.PWNED = 6\">"))
    return nb


def _write_class(tmp_path: Path, attackers: dict[str, nbformat.NotebookNode]) -> Path:
    download = tmp_path / "download"
    download.mkdir()
    release, source = _release(LESSON), _source(LESSON)
    honest = {"a-honest": _solve(release, source), "a-blank": release,
              "z-honest": _solve(release, source), "z-blank": release}
    for student, nb in {**honest, **attackers}.items():
        nbformat.write(nb, download / f"{student}_{LESSON}.ipynb")
    return download


# ---------------------------------------------------------------- what must hold afterwards
def _tree_hash(paths: list[Path]) -> dict[str, str]:
    out = {}
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()) if top.exists() else []
        for p in files:
            if "__pycache__" in p.parts:
                continue
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        if not files:
            out[str(top)] = "missing"
    return out


def _protected(tmp_path: Path) -> list[Path]:
    course = tmp_path / "course"
    return [course / "solutions", course / "notebooks", course / "submitted", course / "nbgrader_config.py",
            tmp_path / "download"]


def _repository_vandalised() -> list[str]:
    """Files of the repository that carry an attacker's mark (the repository itself may be edited
    while the tests run, so it is searched for the marks rather than hashed)."""
    files = [*(ROOT / "sclecture").glob("*.py"), ROOT / "solutions" / LESSON / f"{LESSON}.ipynb"]
    return [str(p) for p in files if "# vandalised" in p.read_text(encoding="utf-8", errors="replace")]


def _sandbox_processes(students) -> list[str]:
    """Processes of these students' sandboxes: the marker in their environment names the job."""
    found = []
    ours = tuple(f"-{s}".encode() for s in students)
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            uid = os.stat(f"/proc/{p}").st_uid
            environ = open(f"/proc/{p}/environ", "rb").read()
        except OSError:
            continue
        marks = [v for v in environ.split(b"\0") if v.startswith(sandbox.MARKER.encode() + b"=")]
        if any(m.endswith(ours) for m in marks):
            cmd = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ")[:200]
            found.append(f"{p} uid={uid} {cmd.decode(errors='replace')}")
    return found


def _gradebook_scores(course: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {s.student.id: s.score for s in gb.find_assignment(LESSON).submissions}


def _notebook(course: Path, student: str) -> dict:
    path = course / "autograded" / student / LESSON / f"{LESSON}.ipynb"
    return json.loads(path.read_text(encoding="utf-8"))


def _outputs(course: Path, student: str) -> str:
    """The text of every output of the student's graded notebook (not its code)."""
    text = []
    for cell in _notebook(course, student)["cells"]:
        for o in cell.get("outputs", []):
            text += [str(o.get("text", "")), str(o.get("data", {}).get("text/plain", "")), str(o.get("evalue", ""))]
    return "\n".join(text)


def grade_class(tmp_path: Path, attackers: dict, **options):
    """Grade honest students around ``attackers``; check what must hold for every class."""
    course = tmp_path / "course"
    download = _write_class(tmp_path, attackers)
    grading_tool.prepare_course(course, LESSON)
    grading_tool.import_submissions(course, LESSON, download, grading_tool.DEFAULT_REGEXP)
    protected = _protected(tmp_path)
    before = _tree_hash(protected)
    students = ["a-honest", "a-blank", "z-honest", "z-blank", *attackers]
    start = time.monotonic()
    results = grading_tool.grade(LESSON, course / "submitted", course=course, timeout=TIMEOUT, quiet=True,
                                 **options)
    elapsed = time.monotonic() - start
    total = _total()
    honest = {"a-honest": total, "a-blank": 0.0, "z-honest": total, "z-blank": 0.0}
    scores = {s: r.score for s, r in results.items()}
    detail = {s: (r.score, r.failed, r.notes) for s, r in results.items()}
    assert {s: scores[s] for s in honest} == honest, detail
    assert _tree_hash(protected) == before, "grading (or a submission) changed files of the course"
    assert _repository_vandalised() == []
    assert _sandbox_processes(students) == [], "a submission's process outlived its grading"
    time.sleep(20)  # a process left behind would have written by now
    assert {s: v for s, v in _gradebook_scores(course).items() if s in honest} == honest
    assert _tree_hash(protected) == before, "files of the course changed after grading returned"
    assert _repository_vandalised() == []
    assert _sandbox_processes(students) == []
    return results, elapsed


# ---------------------------------------------------------------- two classes of attackers
def test_attacks_on_files_and_processes(tmp_path):
    """Vandalism, reading what is not theirs, processes left behind, memory over several processes;
    graded two at a time with a 2 GiB memory budget per submission."""
    paths = _paths(tmp_path)
    late = {"gradebook": paths["gradebook"], "other": paths["other"]}
    attackers = {
        "vandal": _with_code(VANDAL.format(paths=paths, lesson=LESSON)),
        "reader": _with_code(READER.format(paths=paths, lesson=LESSON)),
        "lurker": _with_code(LURKER.format(paths=paths, **late)),
        "hog": _with_code(HOG),
    }
    results, _ = grade_class(tmp_path, attackers, jobs=2, memory_gb=2.0)
    course = tmp_path / "course"
    for student in ("vandal", "reader"):
        out = _outputs(course, student)
        assert "attack failed" in out, f"{student}'s attack did not run: {results[student].notes}"
        assert "ATTACK-SUCCEEDED" not in out, re.findall(r"ATTACK-SUCCEEDED.*", out)[:5]
        assert "BEGIN SOLUTION" not in out
    # attackers who also solved the exercise keep their points: the sandbox is not a penalty
    assert results["vandal"].score == _total() and results["lurker"].score == _total()
    assert any("more than 2 GiB of memory" in n for n in results["hog"].notes), results["hog"].notes


def test_attacks_on_time_kernel_and_feedback(tmp_path):
    """A loop that ignores SIGINT, one that swallows KeyboardInterrupt, a kernel that exits, and
    scripts in outputs; graded two at a time, with feedback."""
    attackers = {"deaf": _with_code(DEAF), "stubborn": _with_code(STUBBORN), "exiter": _with_code(EXITER),
                 "scripter": _scripter()}
    results, elapsed = grade_class(tmp_path, attackers, feedback=True, jobs=2)
    for student in ("deaf", "stubborn"):
        assert any("did not stop within" in n for n in results[student].notes), results[student].notes
        assert results[student].score in (None, 0.0)
    # each loop costs one cell timeout and the grace period, not a timeout per remaining cell
    assert elapsed < 8 * 60, f"grading the class took {elapsed:.0f} s"
    assert results["exiter"].score in (None, 0.0) and results["exiter"].notes, results["exiter"].notes
    assert results["scripter"].score == _total()
    course = tmp_path / "course"
    html = (course / "feedback" / "scripter" / LESSON / f"{LESSON}.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, flags=re.S | re.I)
    assert not [x for x in scripts if "PWNED" in x], "a script from the submission is live in the feedback"
    assert not re.search(r"<[a-z][^<>]*\son[a-z]+\s*=", html, flags=re.I), "an event handler is live in the feedback"
    assert not re.search(r"<svg", html, flags=re.I)
    notebook = _notebook(course, "scripter")
    mimes = {k for c in notebook["cells"] for o in c.get("outputs", []) for k in o.get("data", {})}
    assert mimes <= set(grading_tool.SAFE_MIME), mimes


# ---------------------------------------------------------------- cheats inside the kernel
HIDER = '''
import IPython, ipykernel.zmqshell
IPython.core.interactiveshell.InteractiveShell.showtraceback = lambda *a, **k: None
ipykernel.zmqshell.ZMQInteractiveShell._showtraceback = lambda *a, **k: None
IPython.core.interactiveshell.ExecutionResult.success = property(lambda self: True)
import numpy as np, builtins, sclecture.grading as g
np.allclose = lambda *a, **k: True
builtins.zip = lambda *a: iter(())
for name in dir(g):
    if name.startswith("assert"):
        setattr(g, name, lambda *a, **k: None)
'''

DELEGATOR = '''
def counts_per_million(X):
    import importlib
    return importlib.import_module("sclecture.preprocessing").normalize_total(X, 1e6)
'''


def test_in_kernel_cheats_earn_nothing(tmp_path):
    """Lesson 00 built from its source in lessons/: the points come from the trusted replay of
    the values its test cells recorded, so hiding failures in the kernel or calling the course's
    reference earns nothing (and the table says why)."""
    import notebooks as nbtool  # tools/notebooks.py

    course = tmp_path / "course"
    source = nbtool.parse_lesson(ROOT / "lessons" / f"{LESSON}.py")
    (course / "solutions" / LESSON).mkdir(parents=True)
    nbformat.write(source, course / "solutions" / LESSON / f"{LESSON}.ipynb")
    (course / "nbgrader_config.py").write_bytes((ROOT / "nbgrader_config.py").read_bytes())
    nbtool._generate(LESSON, course / "solutions", course / "notebooks")
    release = nbformat.read(course / "notebooks" / LESSON / f"{LESSON}.ipynb", as_version=4)
    assert grading_tool._recorder_lesson(LESSON, course), "lesson 00's test cells record no values"
    subs = tmp_path / "download"
    subs.mkdir()
    hider = nbformat.from_dict(json.loads(json.dumps(release)))
    next(c for c in hider.cells if _is_solution(c) and c.cell_type == "code").source += "\n" + HIDER
    delegator = _solve(release, source)
    next(c for c in delegator.cells if _is_solution(c) and c.cell_type == "code").source = DELEGATOR
    for student, nb in {"honest": _solve(release, source), "blank": release, "hider": hider,
                        "delegator": delegator}.items():
        nbformat.write(nb, subs / f"{student}_{LESSON}.ipynb")
    results = grading_tool.grade(LESSON, subs, course=course, timeout=TIMEOUT, quiet=True)
    total = sum(_points(c) for c in release.cells if _is_test(c))
    assert {s: r.score for s, r in results.items()} == {"honest": total, "blank": 0.0, "hider": 0.0,
                                                        "delegator": 0.0}, {s: (r.score, r.reasons, r.notes)
                                                                            for s, r in results.items()}
    assert "normalize_total" in " ".join(results["delegator"].reasons.values())
    assert "NotImplementedError" in " ".join(results["hider"].reasons.values())
    graded = _notebook(course, "delegator")
    assert "Grader: 0 /" in json.dumps(graded)  # the reason reaches the feedback
