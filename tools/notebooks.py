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
The [colab-setup] cell installs the package from that repository as of the last commit that
changed sclecture/ or pyproject.toml (see ``package_commit``): commit changes to the package
before building, and build again after such a commit.

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
from functools import lru_cache
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package (declared in pyproject's extras)
    import tomli as tomllib

import nbformat

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
SOLUTIONS = ROOT / "solutions"
RELEASES = ROOT / "notebooks"


def tools_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: this process's environment) with this Python's bin folder
    first on PATH, for a subprocess that runs the course's tools.

    nbgrader runs `alembic` by name, in its commands and inside ``Gradebook()`` itself, so
    the tools must be found even when the course's environment is not activated.
    """
    env = dict(os.environ if env is None else env)
    bin_dir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        env["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
    return env


def use_environment_tools() -> None:
    """Put this Python's bin folder first on PATH for this process and all it starts: for the
    ``main()`` of a command-line tool (importing a tool changes nothing)."""
    os.environ["PATH"] = tools_env()["PATH"]

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


# What a lesson's Colab cell installs is the package as of the last commit that changed it.
# Committing rebuilt notebooks changes neither path, so a rebuild after that commit gives the
# same cells: the build is reproducible and the check "solution is built from its source" holds.
PACKAGE_PATHS = ("sclecture", "pyproject.toml")
INSTALL_SOURCE_VARIABLE = "SCLECTURE_INSTALL_SOURCE"


def _git(*args: str, root: Path) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


@lru_cache(maxsize=None)
def _package_commit(root: Path) -> str | None:
    try:
        commit = _git("log", "-1", "--format=%H", "--", *PACKAGE_PATHS, root=root)
        shallow = Path(root, _git("rev-parse", "--git-path", "shallow", root=root))
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout (a downloaded archive): the cell installs the default branch
    if shallow.exists() and commit in shallow.read_text().split():
        raise SystemExit(f"{root} is a shallow git clone: the last commit that changed {', '.join(PACKAGE_PATHS)} "
                         "may be older than its history. Run `git fetch --unshallow` and build again.")
    return commit or None


def package_commit() -> str | None:
    """The commit whose package the Colab cells install: the last one that changed sclecture/ or
    pyproject.toml (None outside a git checkout). Uncommitted changes are not in it; `build` says so."""
    return _package_commit(ROOT)


def uncommitted_package_changes() -> list[str]:
    try:
        return _git("status", "--porcelain", "--", *PACKAGE_PATHS, root=ROOT).splitlines()
    except (OSError, subprocess.CalledProcessError):
        return []


def install_source(extras: str = "") -> str:
    """The pip requirement a lesson's Colab cell installs: the repository at `package_commit()`."""
    commit = package_commit()
    return f"sclecture{extras} @ git+{repository_url()}" + (f"@{commit}" if commit else "")


COLAB_SETUP_MARK = "# Colab setup"  # first line of the cell; `build` recognises the cell by it


def colab_setup_source(extras: str = "") -> str:
    """The second cell of every lesson. On Colab it installs the course at the pinned commit
    without changing the version of any package Colab ships; anywhere else it does nothing."""
    return f'''{COLAB_SETUP_MARK}: on Google Colab this installs the course; anywhere else it does nothing.
# It never changes a package Colab already has. To install from elsewhere (a fork, a mirror,
# a local wheel), set the environment variable {INSTALL_SOURCE_VARIABLE} to a pip requirement or path.
def colab_setup(source="{install_source(extras)}"):
    import importlib.metadata, os, re, subprocess, sys, tempfile
    try:
        import google.colab  # noqa: F401 (exists only on Colab)
    except ImportError:
        return
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version
    def installed():  # {{name: version}} of what this Python imports (the first on sys.path wins)
        dists = list(importlib.metadata.distributions())[::-1]
        return {{canonicalize_name(d.metadata["Name"]): d.version for d in dists if d.metadata["Name"]}}
    def pin(name, version):  # a constraint for pip, which rejects versions that are not PEP 440
        try:
            return f"{{name}}=={{Version(version)}}\\n" if name != "sclecture" else ""
        except InvalidVersion:
            return ""
    source = os.environ.get("{INSTALL_SOURCE_VARIABLE}", source)
    before = installed()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:  # pip may add, never replace
        pins.write("".join(pin(n, v) for n, v in before.items()))
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-c", pins.name]
    run = lambda args: subprocess.run(pip + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = run([source])
    os.remove(pins.name)
    if done.returncode != 0:
        print(*done.stdout.splitlines()[-30:], sep="\\n")  # the end of pip's own account
        kept = re.findall(r"The user requested \\(constraint\\) ([\\w.-]+)==", done.stdout)
        if kept:
            raise RuntimeError(f"The course needs other versions of {{', '.join(sorted(set(kept)))}} than Colab has, and "
                               "this cell does not replace Colab's packages. To replace them anyway, run "
                               f"`%pip install \'{{source}}\'` in a new cell, then Runtime -> Restart session.") from None
        raise RuntimeError(f"Could not install the course from {{source}} (pip's message is above). If that address "
                           "cannot be reached: a fork sets `Repository` under [project.urls] in pyproject.toml to "
                           f"its own URL and rebuilds the notebooks, or set {INSTALL_SOURCE_VARIABLE} before this cell.") from None
    after = installed()
    changed = [f"{{n}} {{v}} -> {{after[n]}}" for n, v in before.items() if after.get(n, v) != v]
    if changed or "sclecture" in sys.modules:
        print("Replaced: " + (", ".join(changed) or "sclecture, already imported") + ". Restart before going on: "
              "Runtime -> Restart session, then run the notebook from the top.")
    else:
        print("Course installed:", source)
colab_setup()'''


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


def _code_key(nb: nbformat.NotebookNode) -> list[str]:
    """The code cells' sources, with the Colab setup cell as a mark only: outside Colab its
    output is empty, so a change of the commit it installs leaves the stored outputs valid."""
    return [COLAB_SETUP_MARK if c.source.startswith(COLAB_SETUP_MARK) else c.source
            for c in nb.cells if c.cell_type == "code"]


def build(lessons: list[str]) -> None:
    """Build solutions/ from lessons/. The Colab cells install the package as of `package_commit()`:
    with uncommitted changes to it the build still uses that commit (reproducible), and says so."""
    dirty = uncommitted_package_changes()
    if dirty:
        print(f"note: uncommitted changes to {', '.join(PACKAGE_PATHS)} ({len(dirty)} files) are not in commit "
              f"{package_commit()}, which the Colab cells install: commit them and build again before releasing.")
    for name in lessons:
        nb = parse_lesson(LESSONS / f"{name}.py")
        out = SOLUTIONS / name / f"{name}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            old = nbformat.read(out, as_version=4)
            if _same_sources(old, nb):
                print(f"{name}: unchanged")
                continue
            if _code_key(old) == _code_key(nb):  # only narrative or Colab setup changed: the outputs still hold
                outputs = iter([c for c in old.cells if c.cell_type == "code"])
                for cell in nb.cells:
                    if cell.cell_type == "code":
                        prev = next(outputs)
                        cell.outputs, cell.execution_count = prev.outputs, prev.execution_count
                nbformat.write(nb, out)
                print(f"{name}: narrative or Colab setup updated, code unchanged: stored outputs kept")
                continue
        nbformat.write(nb, out)
        print(f"{name}: built {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} ({len(nb.cells)} cells, not executed yet)")


def execute(lessons: list[str], timeout: int = 900) -> None:
    from nbclient import NotebookClient

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # the stored outputs carry the figures: a non-interactive backend (MPLBACKEND=Agg, as the
    # tests set it) would leave every plt.show() without an image
    os.environ.pop("MPLBACKEND", None)
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
        res = subprocess.run(cmd, cwd=course, capture_output=True, text=True, env=tools_env())
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
    use_environment_tools()  # kernels and nbgrader find the environment's tools without activating it
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
