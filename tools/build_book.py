"""Build the course as a static website with Jupyter Book 1.x (Sphinx, myst-nb), offline.

    python tools/build_book.py                                  every lesson -> book/_build/html
    python tools/build_book.py --lessons 01_logistic_regression  a subset (the landing page lists only these)
    python tools/build_book.py --output /tmp/site                 another output folder (html/ inside it)

The pages show only what a student receives: each lesson's release (notebooks/NN/NN.ipynb),
never solutions/. A release is executed from a temporary copy of its folder, with the
environment of the tests (OMP_WAIT_POLICY=PASSIVE, SCLECTURE_DATA_DIR) and matplotlib's default
backend, so that every figure is stored. The exercises stay unsolved: the cells after them run
on the reference code (`fallback`), the exercise cells raise NotImplementedError and their test
cells fail. Those error outputs are dropped (nbgrader's cell metadata says which cells they
are); an error in any other cell stops the build and names the cell.

The book's settings and landing page live in book/ (_config.yml, _toc.yml, intro.md). The
script copies them into <output>/source, fills in the lesson table and the repository URL
(``[project.urls] Repository`` in pyproject.toml), installs MathJax from npm into
<output>/npm and copies it into the site, so that the pages load nothing from elsewhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebooks as nbtool  # noqa: E402  (tools/notebooks.py: lesson list, repository URL, Colab badge)

ROOT = nbtool.ROOT
BOOK = ROOT / "book"
MATHJAX = "mathjax@3.2.2"  # npm package; its es5/ folder is self-contained (script, fonts, extensions)
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE_IMAGE = "../_static/colab-badge.svg"  # book/_static/colab-badge.svg, relative to lessons/
CELL_TIMEOUT = 900  # s, as tools/notebooks.py execute


def lesson_environment() -> dict[str, str]:
    """The tests' environment for a lesson's kernel, with matplotlib's default backend."""
    env = dict(os.environ)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env.pop("MPLBACKEND", None)  # a non-interactive backend (Agg) would leave plt.show() without a figure
    shared = ROOT.parent / "shared" / "data"
    if "SCLECTURE_DATA_DIR" not in env and shared.is_dir():
        env["SCLECTURE_DATA_DIR"] = str(shared)
    if env.get("SCLECTURE_DATA_DIR"):  # the kernel runs in another folder
        env["SCLECTURE_DATA_DIR"] = str(Path(env["SCLECTURE_DATA_DIR"]).resolve())
    return env


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _describe(cell, index: int) -> str:
    first = next((line for line in cell.source.splitlines() if line.strip()), "")
    return f"cell {index} (id {cell.get('id', '?')}, starting {first[:60]!r})"


def drop_exercise_errors(nb: nbformat.NotebookNode, name: str) -> int:
    """Remove the error outputs of exercise (solution) and test cells; fail on any other error.

    Returns how many error outputs were dropped."""
    dropped = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if not errors:
            continue
        meta = _nbgrader(cell)
        if meta.get("solution") or meta.get("grade"):
            cell.outputs = [o for o in cell.outputs if o.output_type != "error"]
            dropped += len(errors)
        else:
            err = errors[0]
            raise SystemExit(f"{name}: {_describe(cell, i)} raised {err.ename}: {err.evalue}\n"
                             "Only exercise and test cells may fail in an unsolved release; fix the lesson "
                             f"(lessons/{name}.py, then `make notebooks LESSONS={name}`) and build again.")
    return dropped


def execute_release(notebook: Path, name: str, timeout: int = CELL_TIMEOUT) -> nbformat.NotebookNode:
    """Run a release top to bottom in a temporary copy of its folder; return it, outputs stored."""
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix=f"book-{name}-") as tmp:
        work = Path(tmp) / name
        shutil.copytree(notebook.parent, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        nb = nbformat.read(work / notebook.name, as_version=4)
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(work)}})
        client.execute(env=lesson_environment())
    nbtool._scrub(nb)  # no widget state: the page would load require.js from a CDN for it
    drop_exercise_errors(nb, name)
    return nb


def notebook_url(name: str) -> str:
    return f"{nbtool.repository_url()}/blob/main/notebooks/{name}/{name}.ipynb"


def _local_badge(markdown: str) -> str:
    return markdown.replace(COLAB_BADGE_IMAGE, LOCAL_BADGE_IMAGE)


def links_line(name: str) -> str:
    """The released notebook on GitHub and its Colab badge, as a line of markdown."""
    return (f"**This lesson's notebook:** [{name}.ipynb]({notebook_url(name)}) in the course's repository "
            f"(download it to run it in JupyterLab), or {_local_badge(nbtool.colab_badge(name))}")


def lesson_page(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The executed release with the notebook's links where its Colab badge was (or after the title)."""
    badge = nbtool.colab_badge(name)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and badge in cell.source:
            cell.source = cell.source.replace(badge, links_line(name))
            break
    else:
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(links_line(name)))
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _local_badge(cell.source)
    return nb


def lesson_title(nb: nbformat.NotebookNode, name: str) -> str:
    for cell in nb.cells:
        for line in cell.source.splitlines() if cell.cell_type == "markdown" else []:
            if line.startswith("# "):
                return line[2:].strip()
    return name


def _readme_summary(name: str) -> str:
    """The "what you learn" column of README.md's lesson table, when it has a row for the lesson."""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and f"notebooks/{name}/" in line:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            return cells[1] if len(cells) > 1 else ""
    return ""


def lesson_table(pages: dict[str, nbformat.NotebookNode]) -> str:
    rows = ["| lesson | what you learn | notebook |", "|---|---|---|"]
    for name, nb in pages.items():
        badge = nbtool.colab_badge(name).replace(COLAB_BADGE_IMAGE, "_static/colab-badge.svg")
        rows.append(f"| [{lesson_title(nb, name)}](lessons/{name}.ipynb) | {_readme_summary(name)} | "
                    f"[on GitHub]({notebook_url(name)}) {badge} |")
    return "\n".join(rows)


def install_mathjax(npm_dir: Path) -> Path:
    """MathJax's es5/ folder, installed from the npm registry into npm_dir once."""
    es5 = npm_dir / "node_modules" / "mathjax" / "es5"
    if not (es5 / "tex-mml-chtml.js").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm not found: install Node.js (Debian: apt-get install npm); the site's maths "
                             f"is typeset by MathJax from the npm package {MATHJAX}")
        npm_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([npm, "install", "--prefix", str(npm_dir), "--no-audit", "--no-fund",
                               "--loglevel=error", MATHJAX], capture_output=True, text=True)
        if proc.returncode != 0 or not (es5 / "tex-mml-chtml.js").exists():
            raise SystemExit(f"npm install {MATHJAX} failed (exit {proc.returncode}); the npm registry must be "
                             f"reachable:\n{proc.stdout}{proc.stderr}")
    return es5


def stage(pages: dict[str, nbformat.NotebookNode], source: Path) -> None:
    """book/ with the lesson pages, the lesson table and the repository URL, in `source`."""
    import yaml

    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(BOOK, source, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    config_path = source / "_config.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["sphinx"]["config"]["html_theme_options"]["repository_url"] = nbtool.repository_url()
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    intro = source / "intro.md"
    text = intro.read_text(encoding="utf-8")
    text = text.replace("{{lesson_table}}", lesson_table(pages))
    text = text.replace("{{repository_link}}", f"[the repository]({nbtool.repository_url()})")
    intro.write_text(text, encoding="utf-8")
    (source / "lessons").mkdir()
    for name, nb in pages.items():
        nbformat.write(nb, source / "lessons" / f"{name}.ipynb")


# Jupyter Book extensions that would fetch code from elsewhere: thebe (live code cells, from unpkg.com)
UNWANTED_EXTENSIONS = ["sphinx_thebe"]


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.stderr.strip():
        print(proc.stderr.rstrip(), file=sys.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")


def sphinx_build(source: Path, html: Path) -> None:
    """Jupyter Book's Sphinx configuration for `source` (conf.py), then Sphinx's HTML builder into `html`."""
    _run([sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "config", "sphinx", str(source)],
         "jupyter-book config sphinx")
    conf = source / "conf.py"
    conf.write_text(conf.read_text(encoding="utf-8")
                    + f"\nextensions = [e for e in extensions if e not in {UNWANTED_EXTENSIONS!r}]\n", encoding="utf-8")
    _run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "--keep-going", "-E", str(source), str(html)],
         "sphinx-build")
    for template in (html / "_static").glob("*webpack-macros.html"):  # the themes' Jinja macros, not pages
        template.unlink()


def write_site(pages: dict[str, nbformat.NotebookNode], output: Path) -> Path:
    """The site of these lesson pages (executed notebooks, in order) in output/html; returns that folder."""
    es5 = install_mathjax(output / "npm")
    source, html = output / "source", output / "html"
    stage(pages, source)
    if html.exists():
        shutil.rmtree(html)
    sphinx_build(source, html)
    # where `mathjax_path` points (relative to _static): the combined script the pages load, with the
    # fonts and TeX extensions it loads on demand; the other combined builds, the SVG output and the
    # speech-rule engine (sre, for screen-reader menus that are off by default) are left out
    shutil.copytree(es5, html / "_static" / "mathjax", ignore=shutil.ignore_patterns(
        "sre", "*.map", "svg", "node-main.js", "tex-chtml*.js", "tex-svg*.js", "mml-*.js", "tex-mml-svg.js"))
    (html / ".nojekyll").touch()  # GitHub Pages would otherwise hide the folders that start with _
    # the entry point: Jupyter Book's redirect to the landing page, with the site's icon (without
    # one, browsers ask the server for /favicon.ico)
    (html / "index.html").write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta http-equiv="Refresh" content="0; url=intro.html">\n'
        '<link rel="icon" href="_static/favicon.svg"><title>Machine learning for scRNA-seq analysis</title></head>\n'
        '<body><a href="intro.html">Machine learning for scRNA-seq analysis</a></body></html>\n', encoding="utf-8")
    return html


def build(lessons: list[str], output: Path, releases: Path = nbtool.RELEASES,
          execute: bool = True) -> Path:
    """Execute the releases of `lessons` (in order) and build the site; return its html folder.

    `releases` and `execute=False` exist for the tests, which build pages from stored notebooks."""
    start = time.perf_counter()
    pages = {}
    for name in lessons:
        path = releases / name / f"{name}.ipynb"
        if not path.exists():
            raise SystemExit(f"{path} does not exist: run `make releases LESSONS={name}`")
        t0 = time.perf_counter()
        nb = execute_release(path, name) if execute else nbformat.read(path, as_version=4)
        figures = sum(any(k.startswith("image/") for k in o.get("data", {}))
                      for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        pages[name] = lesson_page(nb, name)
        print(f"{name}: {'executed' if execute else 'read'} in {time.perf_counter() - t0:.1f} s, "
              f"{figures} figures", flush=True)
    t0 = time.perf_counter()
    html = write_site(pages, output)
    print(f"site: {len(pages)} lesson pages in {time.perf_counter() - t0:.1f} s -> {html / 'index.html'}")
    print(f"total build time: {time.perf_counter() - start:.1f} s")
    return html


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lessons", nargs="+", metavar="LESSON", help="lesson names (default: all), e.g. 01_logistic_regression")
    parser.add_argument("--output", type=Path, default=BOOK / "_build",
                        help="build folder: the site goes to OUTPUT/html (default: book/_build)")
    args = parser.parse_args(argv)
    known = nbtool.lesson_names()
    lessons = args.lessons or known
    unknown = [name for name in lessons if name not in known]
    if unknown:
        raise SystemExit(f"unknown lesson(s) {unknown}; the lessons are {known}")
    build([name for name in known if name in lessons], args.output.resolve())


if __name__ == "__main__":
    main()
