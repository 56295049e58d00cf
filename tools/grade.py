"""Grade a class's submissions for one lesson and print a table per student.

    python tools/grade.py LESSON SUBMISSIONS [options]      (or: make grade LESSON=... SUBMISSIONS=...)

SUBMISSIONS is one of
  * a zip file downloaded from a learning-management system, or a folder of notebooks,
    whose file names start with the student id: ``<student>_<anything>.ipynb``
    (``--named-regexp`` sets another pattern; it is handed to ``nbgrader zip_collect``);
  * a folder in nbgrader's layout, ``<student>/<LESSON>/<LESSON>.ipynb`` (what
    ``nbgrader collect`` or a JupyterHub exchange gives).

The submissions themselves are never modified: they are copied into the course folder's
``submitted/`` and graded there, one ``nbgrader autograde`` run per student (``--jobs`` at
once), each notebook's kernel in a bubblewrap sandbox (tools/sandbox.py) that sees nothing of
the course, with a per-cell timeout, a per-notebook timeout and one memory budget over all its
processes. nbgrader and this process never run student code. For lessons whose test cells
record the student's values, the points come from the trusted replay of tools/verdict.py and
only this process writes them into the gradebook. The gradebook (``gradebook.db``) keeps every
grade and comment: running the command again gives the same grades, keeps manual grades made
in Formgrader, and loses nothing. A notebook that cannot be read (truncated JSON) is reported
for that student without stopping the others.

Without bubblewrap the command refuses to run student code (``--unsafe-no-sandbox``
overrides this); see the README, "Grading runs student code".
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from notebooks import tools_env, use_environment_tools  # tools/notebooks.py: nbgrader needs `alembic` on PATH

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
    reasons: dict[str, str] = field(default_factory=dict)  # grade_id -> why the trusted replay gave 0


def _nbgrader(args: list[str], course: Path, env: dict | None = None, memory_gb: float | None = None,
              log: Path | None = None, timeout: float | None = None) -> subprocess.CompletedProcess | None:
    """Run nbgrader; None if it ran past ``timeout`` seconds (it is then killed)."""
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"]

    def limit():  # runs in the child: the kernel it starts inherits the limit
        if memory_gb:
            import resource

            b = int(memory_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (b, b))

    try:
        res = subprocess.run(cmd, cwd=course, env=tools_env(env), capture_output=True, text=True,
                             preexec_fn=limit if memory_gb else None, timeout=timeout)
        text = f"{res.stdout}\n{res.stderr}"
    except subprocess.TimeoutExpired:
        res, text = None, f"(killed after {timeout} s)\n"
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n{text}", encoding="utf-8")
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

    known = set()  # a new gradebook is made by generate_assignment below, whose PATH finds `alembic`
    if (course / "gradebook.db").exists():
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
            try:
                known = {nb.name for nb in gb.find_assignment(lesson).notebooks}
            except MissingEntry:
                pass
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


def normalise_submission(folder: Path, lesson: str, result: StudentResult, release: Path | None = None) -> bool:
    """Fix what can be fixed in the copy (name, encoding, lost metadata when ``release`` is the
    release notebook); False if it cannot be graded."""
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
    if release is not None and not any("nbgrader" in c.get("metadata", {}) for c in nb["cells"]
                                       if isinstance(c, dict)):
        restore_metadata(nb, json.loads(release.read_text(encoding="utf-8")), result)
        expected.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
    return True


def _norm(source) -> str:
    text = "".join(source) if isinstance(source, list) else str(source)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def restore_metadata(nb: dict, release: dict, result: StudentResult) -> None:
    """Give a notebook that lost nbgrader's cell metadata (cells copied into a new notebook,
    saved by a tool that drops it) the release's metadata, matching cells by content.

    Unchanged cells (narrative, test cells) match exactly; a solution cell matches the cell
    that sits in its place between two matched cells. Graded cells that cannot be found are
    named in the notes: they earn 0, never silently."""
    import difflib

    mine = [c for c in nb["cells"] if isinstance(c, dict)]
    theirs = release["cells"]
    matcher = difflib.SequenceMatcher(None, [_norm(c.get("source", "")) for c in theirs],
                                      [_norm(c.get("source", "")) for c in mine], autojunk=False)
    pairs = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            pairs += list(zip(range(i1, i2), range(j1, j2)))
        elif op == "replace":  # changed cells in place: pair them by kind, in order
            for kind in ("code", "markdown"):
                a = [i for i in range(i1, i2) if theirs[i].get("cell_type") == kind]
                b = [j for j in range(j1, j2) if mine[j].get("cell_type") == kind]
                if len(a) == len(b):
                    pairs += list(zip(a, b))
    restored, matched = 0, set()
    for i, j in pairs:
        meta = theirs[i].get("metadata", {}).get("nbgrader")
        if meta and mine[j].get("cell_type") == theirs[i].get("cell_type"):
            mine[j].setdefault("metadata", {})["nbgrader"] = meta
            restored += 1
            matched.add(i)
    graded = [i for i, c in enumerate(theirs) if c.get("metadata", {}).get("nbgrader", {}).get("grade")]
    missing = [theirs[i]["metadata"]["nbgrader"]["grade_id"] for i in graded if i not in matched]
    if missing:
        result.notes.append(
            f"metadata lost (the notebook was saved without nbgrader's cell metadata) and the cells of "
            f"{', '.join(missing)} could not be found: they earn 0 unless the student pastes the answers "
            f"into a fresh copy of the release and submits again")
    else:
        result.notes.append(f"metadata lost (saved without nbgrader's cell metadata): {restored} cells "
                            f"matched to the release by their content and graded")


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
              env: dict, timeout: int, memory_gb: float | None, sandboxed: bool = True, jobs: int = 1,
              notebook_timeout: float | None = None) -> None:
    """Autograde ``students``, each in an nbgrader run of its own whose kernel is sandboxed.

    ``jobs`` submissions are graded at once. nbgrader (trusted: it runs no student code) drives
    a kernel in a bubblewrap sandbox (tools/sandbox.py); the grading process alone then writes
    the trusted verdict into the gradebook. A submission that cannot be graded is reported for
    that student; the others are graded all the same.
    """
    run = Path(tempfile.mkdtemp(prefix="sclecture-grading-"))  # short: IPC socket paths have a length limit
    try:
        settings = None
        if sandboxed:
            settings = _sandbox_settings(run, env, memory_gb or 8.0,
                                         notebook_timeout or max(1800.0, 6.0 * timeout), timeout)
        free = queue.Queue()
        for slot in range(min(max(1, jobs), 64)):
            free.put(slot)

        def one(student: str) -> tuple[str, Path | None]:
            slot = free.get()
            try:
                return student, _autograde_one(course, lesson, student, results[student], env, timeout, memory_gb,
                                               settings, slot, run)
            finally:
                free.put(slot)

        with ThreadPoolExecutor(max_workers=min(max(1, jobs), 64)) as pool:
            futures = [pool.submit(one, s_) for s_ in students]
            for fut in as_completed(futures):
                student, record = fut.result()
                # only this (trusted) process writes the verdict into the gradebook, one at a time
                _write_verdict(course, lesson, student, record, results[student])
    finally:
        shutil.rmtree(run, ignore_errors=True)


def _sandbox_settings(run: Path, env: dict, memory_gb: float, notebook_timeout: float, timeout: int):
    import sandbox
    import verdict

    package = run / "package"
    verdict.build_grading_package(package)  # the read-only copy of sclecture that sandboxed kernels import
    import compileall

    compileall.compile_dir(str(package), quiet=2)  # the copy is read-only in the sandbox: compile it here
    os.chmod(run, 0o755)
    for p in [package, *package.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    try:
        from sclecture.datasets import cache_dir, data_dir

        data, cache = str(data_dir()), str(cache_dir())
    except Exception:  # noqa: BLE001 - no data folders: lessons that need data will say so
        data = cache = None
    inner = {k: env[k] for k in ("SCLECTURE_QUICK",) if k in env}
    return sandbox.Settings(run_dir=str(run), package_dir=str(package), memory_gb=memory_gb,
                            notebook_timeout=notebook_timeout, grace=float(min(10, max(2, round(timeout / 3)))),
                            data_dir=data, cache_dir=cache, env=inner, numba_cache=_numba_cache(run, cache))


def _numba_cache(run: Path, cache: str | None) -> str | None:
    """The warm numba cache that every sandbox gets a copy of: kept beside the data cache, else per run."""
    import sandbox
    from sclecture.datasets import _writable

    folders = ([Path(cache) / "numba"] if cache else []) + [run / "numba"]
    for folder in folders:  # one already warm, even read-only: it is only copied
        warm = sandbox.warm_numba_cache(folder, write=False)
        if warm:
            return str(warm)
    writable = next((f for f in folders if _writable(f)), None)  # else the first that may be written
    warm = sandbox.warm_numba_cache(writable) if writable is not None else None
    return str(warm) if warm else None


def _autograde_one(course, lesson, student, r: StudentResult, env, timeout, memory_gb, settings, slot,
                   run: Path) -> Path | None:
    """One nbgrader autograde run for ``student``; returns the record file of its sandbox."""
    log = course / "logs" / lesson / f"{student}.log"
    run_env = dict(env)
    extra = []
    record = None
    if settings is not None:
        import sandbox

        s = sandbox.Settings(**{**settings.__dict__})
        # a user id of its own per job slot and grading run (concurrent runs must not share one)
        s.uid = sandbox.UID_BASE + (os.getpid() % 100_000) * 64 + slot if os.geteuid() == 0 else None
        _kill_user(s.uid)
        job = sandbox.prepare_job(s, f"{slot}-{re.sub(r'[^A-Za-z0-9.-]', '_', student)[:40]}")
        s.job = str(job)
        record = job / "record.jsonl"
        run_env[sandbox.ENV] = s.to_env()
        run_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tools"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        extra = ["--Execute.kernel_manager_class=sandbox.SandboxKernelManager"]
        wall = s.notebook_timeout + 300
    else:  # unsandboxed: the kernel inherits nbgrader's environment, and with it the record file
        record = run / f"{slot}-{re.sub(r'[^A-Za-z0-9.-]', '_', student)[:40]}.record.jsonl"
        record.unlink(missing_ok=True)
        run_env["SCLECTURE_RECORD"] = str(record)
        wall = None
    start = time.time()
    res = _nbgrader(["autograde", lesson, f"--student={student}", "--force",
                     f"--Execute.timeout={timeout}", "--Execute.interrupt_on_timeout=True",
                     "--Execute.kernel_name=python3", "--Execute.iopub_timeout=120", *extra,
                     f"--CourseDirectory.db_url=sqlite:///{course / 'gradebook.db'}?timeout=120"],
                    course, env=run_env, memory_gb=None if settings is not None else memory_gb, log=log,
                    timeout=wall)
    if settings is not None:
        _kill_user(s.uid)
        shutil.rmtree(job / "numba", ignore_errors=True)  # this kernel's copy of the numba cache
        outcome = job.parent / f"{job.name}.outcome.json"
        if outcome.exists():
            killed = json.loads(outcome.read_text()).get("killed")
            if killed:
                r.notes.append(f"the notebook's kernel was stopped: it {killed}")
    graded = course / "autograded" / student / lesson / f"{lesson}.ipynb"
    if res is None:
        r.notes.append(f"grading did not finish within {wall:g} s; see {log.relative_to(course)}")
    failed = res is None or res.returncode != 0 or "There was an error processing assignment" in (res.stdout + res.stderr)
    if failed and not (graded.exists() and graded.stat().st_mtime >= start - 1):
        recorded = record is not None and record.exists() and record.stat().st_size > 0
        if recorded and _recorder_lesson(lesson, course) and not _submission_missing(course, lesson, student):
            r.notes.append(f"nbgrader could not run this notebook to the end{_first_error(log, student)}; "
                           f"graded on the values recorded until then; see {log.relative_to(course)}")
        else:
            r.ungradable = True
            r.notes.append(f"nbgrader could not grade this submission{_first_error(log, student)}; "
                           f"see {log.relative_to(course)}")
    elif graded.exists():
        sanitise_outputs(graded)
        timed_out = _timeouts(course, lesson, student)
        if timed_out:
            r.notes.append(f"timed out after {timeout} s in {', '.join(timed_out)}")
    if record is not None and record.exists():
        kept = course / "logs" / lesson / f"{student}.record.jsonl"
        shutil.copyfile(record, kept)  # read after the sandbox is gone; kept for the instructor
        return kept
    return None


def _submission_missing(course: Path, lesson: str, student: str) -> bool:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            gb.find_submission(lesson, student)
            return False
        except MissingEntry:
            return True


def _kill_user(uid: int | None) -> None:
    """Kill every process of a sandbox's own user id (a leftover of an earlier run)."""
    if uid is None:
        return
    for _ in range(50):
        left = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    if os.stat(f"/proc/{p}").st_uid == uid:
                        left.append(int(p))
                except OSError:
                    pass
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


def _recorder_lesson(lesson: str, course: Path) -> bool:
    """Whether the lesson's test cells record the student's values for a trusted replay."""
    src = course / "solutions" / lesson / f"{lesson}.ipynb"
    src = src if src.exists() else ROOT / "solutions" / lesson / f"{lesson}.ipynb"
    nb = json.loads(src.read_text(encoding="utf-8"))
    return any(c.get("metadata", {}).get("nbgrader", {}).get("grade") and "record" in "".join(c.get("source", ""))
               for c in nb["cells"] if c.get("cell_type") == "code")


def _write_verdict(course: Path, lesson: str, student: str, record: Path | None, r: StudentResult) -> None:
    """The trusted replay's points become the test cells' auto scores (lessons that record values).

    Lessons whose test cells do not record values yet keep nbgrader's own scores."""
    if r.ungradable or not _recorder_lesson(lesson, course):
        return
    import verdict
    from nbgrader.api import Gradebook, MissingEntry

    source = course / "solutions" if (course / "solutions" / lesson).exists() else ROOT / "solutions"
    verdicts = verdict.score(lesson, record, source_root=source)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            nb = gb.find_submission_notebook(lesson, lesson, student)
        except MissingEntry:
            r.ungradable = True
            r.notes.append("no submission in the gradebook")
            return
        for g in nb.grades:
            v = verdicts.get(g.name)
            if v is not None:
                g.auto_score = v.points
                g.needs_manual_grade = False
                if v.reason:
                    r.reasons[g.name] = v.reason
        for c in nb.comments:  # Formgrader and the feedback show these under the cell
            v = verdicts.get(c.name)
            if v is not None:
                c.auto_comment = v.reason or None
        gb.db.commit()
    _annotate(course / "autograded" / student / lesson / f"{lesson}.ipynb", verdicts)


def _annotate(path: Path, verdicts: dict) -> None:
    """Below each test cell of the graded notebook, the verdict and its reason (for the feedback)."""
    if not path.exists():
        return
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        v = verdicts.get(cell.get("metadata", {}).get("nbgrader", {}).get("grade_id"))
        if v is not None and cell.get("cell_type") == "code":
            text = f"Grader: {v.points:g} / {v.max_points:g} points" + (f". {v.reason}" if v.reason else "") + "\n"
            cell.setdefault("outputs", []).append({"output_type": "stream", "name": "stdout", "text": text})
    mode = path.stat().st_mode
    os.chmod(path, mode | 0o200)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
    os.chmod(path, mode)


def _first_error(log: Path, student: str) -> str:
    """nbgrader's first error message about ``student`` in ``log``, as ' (message)', or ''."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    for m in re.finditer(r"\[AutogradeApp \| ERROR\] (.*(?:\n(?!\[)[^\n]*)*)", text):
        message = " ".join(m.group(1).split())
        if not message.startswith("There was an error processing assignment") or student in message:
            return f" ({message[:200]})"
    return ""


SAFE_MIME = ("text/plain", "image/png", "image/jpeg")
_TAG = re.compile(r"<(?=[A-Za-z/!?])")


def sanitise_outputs(path: Path) -> None:
    """Keep only inert outputs in an autograded notebook (Formgrader and feedback render it):
    text, PNG and JPEG; HTML, JavaScript, SVG, widgets and markdown outputs are dropped, and
    raw HTML in the student's markdown cells is shown as text."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown" and not cell.get("metadata", {}).get("nbgrader", {}).get("locked"):
            src = "".join(cell.get("source", ""))
            cell["source"] = _TAG.sub("&lt;", src)
            cell.pop("attachments", None)
        for out in cell.get("outputs", []):
            if "data" in out:
                dropped = sorted(k for k in out["data"] if k not in SAFE_MIME)
                out["data"] = {k: v for k, v in out["data"].items() if k in SAFE_MIME}
                if dropped and "text/plain" not in out["data"]:
                    out["data"]["text/plain"] = f"[output of type {', '.join(dropped)} removed by the grader]"
                out.get("metadata", {}).pop("application/vnd.jupyter.widget-view+json", None)
    nb.get("metadata", {}).pop("widgets", None)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")


def grade(lesson: str, submissions: Path, course: Path | None = None, timeout: int = 300,
          memory_gb: float | None = 8.0, quick: bool = True, named_regexp: str = DEFAULT_REGEXP,
          feedback: bool = False, quiet: bool = False, jobs: int = 1, unsafe_no_sandbox: bool = False,
          notebook_timeout: float | None = None) -> dict[str, StudentResult]:
    """Grade every submission of ``lesson`` found in ``submissions``; see the module's docstring."""
    if unsafe_no_sandbox:
        print("warning: --unsafe-no-sandbox: student code runs with your rights and can read the solutions, "
              "change the gradebook and the course package, and outlive grading", file=sys.stderr)
    else:
        import sandbox

        try:
            sandbox.check_available()
        except sandbox.SandboxUnavailable as err:
            raise SystemExit(f"refusing to run student code without a sandbox: {err}\n"
                             "(--unsafe-no-sandbox grades anyway, with none of these protections)") from None
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
    release = course / "notebooks" / lesson / f"{lesson}.ipynb"
    release = release if release.exists() else ROOT / "notebooks" / lesson / f"{lesson}.ipynb"
    ready = [s_ for s_ in students
             if normalise_submission(course / "submitted" / s_ / lesson, lesson, results[s_], release)]
    if ready:
        autograde(course, lesson, ready, results, env, timeout, memory_gb, sandboxed=not unsafe_no_sandbox,
                  jobs=jobs, notebook_timeout=notebook_timeout)
    read_grades(course, lesson, results)
    if feedback:
        res = _nbgrader(["generate_feedback", lesson, "--force"], course)
        if res is None or res.returncode != 0:
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
            notes = [f"{gid}: {why}" for gid, why in r.reasons.items()] + r.notes
            w.writerow([r.student, "" if r.score is None else f"{r.score:g}", f"{r.max_score:g}",
                        " ".join(r.failed), r.needs_manual, "; ".join(notes)])
    if not quiet:
        width = max(7, *(len(s) for s in results))
        print(f"\n{lesson}: {len(results)} submission(s)\n")
        print(f"{'student':<{width}}  {'score':>11}  {'manual':>6}  failed tests / notes")
        for r in results.values():
            score = "not graded" if r.score is None else f"{r.score:g} / {r.max_score:g}"
            detail = ", ".join([f"{g} ({r.reasons[g]})" if g in r.reasons else g for g in r.failed] + r.notes)
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
    p.add_argument("--memory-gb", type=float, default=8.0,
                   help="memory of one submission, all its processes together, GiB (default 8)")
    p.add_argument("--notebook-timeout", type=float, default=None,
                   help="seconds one notebook may run in all (default: 6 x --timeout, at least 1800)")
    p.add_argument("--jobs", "-j", type=int, default=1, help="submissions graded at once, each in its own sandbox")
    p.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="grade without bubblewrap: student code then runs with your rights (not recommended)")
    p.add_argument("--full", action="store_true", help="train for the full number of epochs (default: SCLECTURE_QUICK=1)")
    p.add_argument("--named-regexp", default=DEFAULT_REGEXP, help="how file names give the student id (zip / flat folder)")
    p.add_argument("--feedback", action="store_true", help="also run nbgrader generate_feedback")
    a = p.parse_args(argv)
    use_environment_tools()
    grade(a.lesson, a.submissions, a.course_dir, a.timeout, a.memory_gb or None, not a.full, a.named_regexp, a.feedback,
          jobs=a.jobs, unsafe_no_sandbox=a.unsafe_no_sandbox, notebook_timeout=a.notebook_timeout)


if __name__ == "__main__":
    main()
