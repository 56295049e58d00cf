"""Grade a class's submissions for one lesson and print a table per student.

    python tools/grade.py LESSON SUBMISSIONS [options]      (or: make grade LESSON=... SUBMISSIONS=...)

SUBMISSIONS is one of
  * a zip file downloaded from a learning-management system, or a folder of notebooks,
    whose file names start with the student id: ``<student>_<anything>.ipynb``
    (``--named-regexp`` sets another pattern; it is handed to ``nbgrader zip_collect``);
  * a folder in nbgrader's layout, ``<student>/<LESSON>/<LESSON>.ipynb`` (what
    ``nbgrader collect`` or a JupyterHub exchange gives).

The submissions themselves are never modified: they are copied into the course folder's
``submitted/`` and graded there with one ``nbgrader autograde`` run (a fresh kernel per
notebook), with a per-cell timeout and a memory limit. The gradebook (``gradebook.db``) keeps every grade and
comment: running the command again gives the same grades, keeps manual grades made in
Formgrader, and loses nothing. A notebook that cannot be read (truncated JSON) is reported
for that student without stopping the others.

Autograding runs student code with your rights; see the README's instructor section for
running it as a separate user or in a container.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from notebooks import use_environment_tools  # noqa: E402  (tools/notebooks.py: nbgrader needs `alembic` on PATH)

use_environment_tools()

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REGEXP = r"^(?P<student_id>[A-Za-z0-9.\-]+)_(?P<file_id>.+\.ipynb)$"
# zip_collect matches the whole path of each extracted file
ARCHIVE_REGEXP = r"^(?:.*/)?(?P<student_id>[^/]+?)__(?P<file_id>[^/]+\.ipynb)$"


@dataclass
class StudentResult:
    student: str
    score: float | None = None
    max_score: float = 0.0
    needs_manual: int = 0
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ungradable: bool = False  # nbgrader could not grade it: no score, a note instead


def _nbgrader(args: list[str], course: Path, env: dict | None = None, memory_gb: float | None = None,
              log: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"]

    def limit():  # runs in the child: the kernel it starts inherits the limit
        if memory_gb:
            import resource

            b = int(memory_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (b, b))

    res = subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True,
                         preexec_fn=limit if memory_gb else None)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n{res.stdout}\n{res.stderr}", encoding="utf-8")
    return res


def prepare_course(course: Path, lesson: str) -> None:
    """Make ``course`` an nbgrader course that knows ``lesson`` (source and gradebook)."""
    src = ROOT / "solutions" / lesson / f"{lesson}.ipynb"
    if not src.exists():
        known = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
        raise SystemExit(f"unknown lesson {lesson!r}; the lessons are {known}")
    course.mkdir(parents=True, exist_ok=True)
    if course.resolve() != ROOT:
        if not (course / "nbgrader_config.py").exists():
            shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
        for kind in ("solutions", "notebooks"):  # zip_collect checks names against the release
            target = course / kind / lesson
            if not target.exists():
                shutil.copytree(ROOT / kind / lesson, target)
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            known = {nb.name for nb in gb.find_assignment(lesson).notebooks}
        except MissingEntry:
            known = set()
    if lesson not in known:
        # records the lesson's cells and checksums in the gradebook; the release goes to a
        # scratch folder so that the course's notebooks/ stay as they are
        with tempfile.TemporaryDirectory() as scratch:
            res = _nbgrader(["generate_assignment", lesson, "--force",
                             f"--CourseDirectory.release_directory={scratch}"], course)
        if res.returncode != 0:
            raise SystemExit(f"nbgrader generate_assignment {lesson} failed:\n{res.stdout}\n{res.stderr}")


def _is_nbgrader_layout(folder: Path, lesson: str) -> bool:
    return any(p.is_dir() and (p / lesson).is_dir() for p in folder.iterdir())


def import_submissions(course: Path, lesson: str, submissions: Path, named_regexp: str,
                       renamed: dict[str, str] | None = None) -> list[str]:
    """Copy submissions into ``course/submitted``; return the student ids found.

    ``renamed`` collects students whose only notebook had another name."""
    renamed = {} if renamed is None else renamed
    submitted = course / "submitted"
    if submissions.is_dir() and _is_nbgrader_layout(submissions, lesson):
        students = []
        in_place = submissions.resolve() == submitted.resolve()  # after `nbgrader collect`
        for sdir in sorted(p for p in submissions.iterdir() if p.is_dir() and (p / lesson).is_dir()):
            if in_place:
                students.append(sdir.name)
                continue
            dest = submitted / sdir.name / lesson
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(sdir / lesson, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
            students.append(sdir.name)
        return students

    # a zip or a flat folder: nbgrader zip_collect with the named regexp
    rx = re.compile(named_regexp)
    archive = course / "downloaded" / lesson / "archive"
    if archive.exists():
        shutil.rmtree(archive)
    archive.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        if submissions.is_file() and zipfile.is_zipfile(submissions):
            with zipfile.ZipFile(submissions) as zf:
                zf.extractall(tmp)
            source = Path(tmp)
        elif submissions.is_dir():
            source = submissions
        else:
            raise SystemExit(f"{submissions} is neither a folder nor a zip file")
        files = [p for p in source.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and "__MACOSX" not in p.parts]
        if not files:
            raise SystemExit(f"no .ipynb files in {submissions}")
        by_student: dict[str, list[Path]] = {}
        for p in files:
            m = rx.match(p.name)
            if not m:
                print(f"warning: {p.name!r} does not match --named-regexp; skipped", file=sys.stderr)
                continue
            by_student.setdefault(m.group("student_id"), []).append(p)
        for student, paths in by_student.items():
            # a lone notebook under another name ("Copy of ...", "(1)") is the student's submission
            if len(paths) == 1 and rx.match(paths[0].name).group("file_id") != f"{lesson}.ipynb":
                renamed[student] = paths[0].name
                shutil.copy(paths[0], archive / f"{student}__{lesson}.ipynb")
            else:
                for p in paths:
                    shutil.copy(p, archive / f"{student}__{rx.match(p.name).group('file_id')}")
    # the archive now holds <student>__<file>: one fixed pattern for nbgrader zip_collect
    res = _nbgrader(["zip_collect", lesson, "--force",
                     "--ZipCollectApp.collector_plugin=nbgrader.plugins.zipcollect.FileNameCollectorPlugin",
                     f"--FileNameCollectorPlugin.named_regexp={ARCHIVE_REGEXP}"], course)
    if res.returncode != 0:
        raise SystemExit(f"nbgrader zip_collect failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return sorted(by_student)


def normalise_submission(folder: Path, lesson: str, result: StudentResult) -> bool:
    """Fix what can be fixed in the copy (name, encoding); False if it cannot be graded."""
    expected = folder / f"{lesson}.ipynb"
    notebooks = sorted(p for p in folder.glob("*.ipynb"))
    if not expected.exists():
        if len(notebooks) == 1:
            notebooks[0].rename(expected)
            result.notes.append(f"notebook renamed from {notebooks[0].name!r}")
        else:
            result.notes.append(f"no {lesson}.ipynb in the submission (found {[p.name for p in notebooks]})")
            return False
    raw = expected.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        expected.write_text(text, encoding="utf-8")
        result.notes.append("invalid UTF-8 bytes replaced")
    try:
        nb = json.loads(text)
        if not isinstance(nb, dict) or "cells" not in nb:
            raise ValueError("no 'cells' in the file")
    except (json.JSONDecodeError, ValueError) as err:
        result.notes.append(f"not a readable notebook ({err}); ask for a new submission")
        return False
    return True


def read_grades(course: Path, lesson: str, results: dict[str, StudentResult]) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student, r in results.items():
            if r.ungradable:
                continue
            try:
                sub = gb.find_submission(lesson, student)
            except MissingEntry:
                continue
            r.score, r.max_score = sub.score, sub.max_score
            for nb in sub.notebooks:
                for g in nb.grades:
                    if g.needs_manual_grade:
                        r.needs_manual += 1
                    elif g.max_score and (g.score or 0) < g.max_score:
                        r.failed.append(g.name)


def _timeouts(course: Path, lesson: str, student: str) -> list[str]:
    path = course / "autograded" / student / lesson / f"{lesson}.ipynb"
    if not path.exists():
        return []
    nb = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, cell in enumerate(nb["cells"]):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error" and "Timeout" in (o.get("ename", "") + "".join(o.get("traceback", []))):
                out.append(cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", f"cell {i}"))
    return out


def autograde(course: Path, lesson: str, students: list[str], results: dict[str, StudentResult],
              env: dict, timeout: int, memory_gb: float | None) -> None:
    """Autograde ``students`` in one nbgrader process (each notebook still gets its own kernel).

    Other students in ``submitted/`` are left alone. A submission that nbgrader cannot grade
    is reported for that student; the others are graded all the same.
    """
    others = sorted(p.name for p in (course / "submitted").iterdir() if p.is_dir() and p.name not in students)
    if any("," in s_ for s_ in others + students):  # nbgrader takes the exclusions as a comma-separated list
        batches = [[s_] for s_ in students]
    else:
        batches = [students]
    retry: list[str] = []
    for batch in batches:
        outcome = _autograde_run(course, lesson, batch, others, results, env, timeout, memory_gb)
        retry += [s_ for s_ in batch if outcome[s_] == "not reached"]
    # an error that stops nbgrader altogether (e.g. a notebook with a newer metadata schema)
    # must cost only that student: grade whoever it left out one at a time
    for student in retry:
        _autograde_run(course, lesson, [student], others, results, env, timeout, memory_gb)


def _autograde_run(course, lesson, batch, others, results, env, timeout, memory_gb) -> dict[str, str]:
    select = ([f"--student={batch[0]}"] if len(batch) == 1
              else [f"--CourseDirectory.student_id_exclude={','.join(others)}"] if others else [])
    log = course / "logs" / lesson / (f"{batch[0]}.log" if len(batch) == 1 else "autograde.log")
    start = time.time()
    res = _nbgrader(["autograde", lesson, *select, "--force",
                     f"--Execute.timeout={timeout}", "--Execute.interrupt_on_timeout=True",
                     "--Execute.kernel_name=python3", "--Execute.iopub_timeout=120"],
                    course, env=env, memory_gb=memory_gb, log=log)
    failed = set(re.findall(r"There was an error processing assignment '[^']*' for student '([^']*)'",
                            res.stdout + res.stderr))
    outcome = {}
    for student in batch:
        graded = course / "autograded" / student / lesson / f"{lesson}.ipynb"
        if student in failed:
            outcome[student] = "failed"
        elif graded.exists() and graded.stat().st_mtime >= start - 1:
            outcome[student] = "graded"
        else:
            outcome[student] = "not reached"
        r = results[student]
        if outcome[student] == "failed" or (outcome[student] == "not reached" and len(batch) == 1):
            r.ungradable = True
            r.notes.append(f"nbgrader could not grade this submission{_first_error(log, student)}; "
                           f"see {log.relative_to(course)}")
        timed_out = _timeouts(course, lesson, student) if outcome[student] == "graded" else []
        if timed_out:
            r.notes.append(f"timed out after {timeout} s in {', '.join(timed_out)}")
    return outcome


def _first_error(log: Path, student: str) -> str:
    """nbgrader's first error message about ``student`` in ``log``, as ' (message)', or ''."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    for m in re.finditer(r"\[AutogradeApp \| ERROR\] (.*(?:\n(?!\[)[^\n]*)*)", text):
        message = " ".join(m.group(1).split())
        if not message.startswith("There was an error processing assignment") or student in message:
            return f" ({message[:200]})"
    return ""


def grade(lesson: str, submissions: Path, course: Path | None = None, timeout: int = 300,
          memory_gb: float | None = 8.0, quick: bool = True, named_regexp: str = DEFAULT_REGEXP,
          feedback: bool = False, quiet: bool = False) -> dict[str, StudentResult]:
    course = (course or ROOT).resolve()
    submissions = submissions.resolve()
    if not submissions.exists():
        raise SystemExit(f"{submissions} does not exist")
    prepare_course(course, lesson)
    renamed: dict[str, str] = {}
    students = import_submissions(course, lesson, submissions, named_regexp, renamed)
    if not students:
        raise SystemExit(f"no submissions for {lesson} found in {submissions}")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg")
    if quick:
        env["SCLECTURE_QUICK"] = "1"
    results = {s: StudentResult(s) for s in students}
    for s_, old_name in renamed.items():
        results[s_].notes.append(f"notebook renamed from {old_name!r}")
    ready = [s_ for s_ in students
             if normalise_submission(course / "submitted" / s_ / lesson, lesson, results[s_])]
    if ready:
        autograde(course, lesson, ready, results, env, timeout, memory_gb)
    read_grades(course, lesson, results)
    if feedback:
        res = _nbgrader(["generate_feedback", lesson, "--force"], course)
        if res.returncode != 0:
            print(f"warning: generate_feedback failed:\n{res.stderr[-2000:]}", file=sys.stderr)
    write_table(course, lesson, results, quiet=quiet)
    return results


def write_table(course: Path, lesson: str, results: dict[str, StudentResult], quiet: bool = False) -> Path:
    out = course / "grades" / f"{lesson}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "score", "max_score", "failed_tests", "needs_manual_grading", "notes"])
        for r in results.values():
            w.writerow([r.student, "" if r.score is None else f"{r.score:g}", f"{r.max_score:g}",
                        " ".join(r.failed), r.needs_manual, "; ".join(r.notes)])
    if not quiet:
        width = max(7, *(len(s) for s in results))
        print(f"\n{lesson}: {len(results)} submission(s)\n")
        print(f"{'student':<{width}}  {'score':>11}  {'manual':>6}  failed tests / notes")
        for r in results.values():
            score = "not graded" if r.score is None else f"{r.score:g} / {r.max_score:g}"
            detail = ", ".join(r.failed + r.notes)
            print(f"{r.student:<{width}}  {score:>11}  {r.needs_manual:>6}  {detail}")
        print(f"\ntable written to {out}; gradebook: {course / 'gradebook.db'}")
        print("written answers: grade them in Formgrader (JupyterLab: Nbgrader > Formgrader), then "
              "`nbgrader generate_feedback` and `nbgrader export`.")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lesson", help="e.g. 01_logistic_regression")
    p.add_argument("submissions", type=Path, help="a zip, a folder of <student>_*.ipynb, or nbgrader's <student>/<lesson>/ layout")
    p.add_argument("--course-dir", type=Path, default=None, help="nbgrader course folder (default: this repository)")
    p.add_argument("--timeout", type=int, default=300, help="seconds per cell before it is interrupted (default 300)")
    p.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit of the grading kernel, GiB (0: none)")
    p.add_argument("--full", action="store_true", help="train for the full number of epochs (default: SCLECTURE_QUICK=1)")
    p.add_argument("--named-regexp", default=DEFAULT_REGEXP, help="how file names give the student id (zip / flat folder)")
    p.add_argument("--feedback", action="store_true", help="also run nbgrader generate_feedback")
    a = p.parse_args(argv)
    grade(a.lesson, a.submissions, a.course_dir, a.timeout, a.memory_gb or None, not a.full, a.named_regexp, a.feedback)


if __name__ == "__main__":
    main()
