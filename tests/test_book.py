"""The course as a website (tools/build_book.py, `make book`), built here for one lesson.

- the build executes lesson 01's release and writes the landing page, the lesson page (with
  its notebook's link and Colab badge) and the search page;
- the pages hold no solution code, hidden test or model answer from solutions/, and no error
  output; the same scan finds all of them in a site built from a solution notebook;
- every local link and image of every page points to a file of the site, and no page, script
  or stylesheet loads anything from the network;
- in headless Chromium, with the site served on 127.0.0.1, every page opens without console
  errors and loads nothing from elsewhere,
  MathJax typesets every formula, each figure of the executed notebook is an image on the page,
  the lesson page fits a phone's 390 px (screenshots in .artifacts/book/), and the search box
  finds the lesson.
"""

from __future__ import annotations

import html
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import LESSONS, ROOT
from test_browser import browser_binaries  # noqa: F401  (fixture: Debian's chromium, installed when missing)
from test_browser import start_chromium
from test_notebooks import _protected_lines

sys.path.insert(0, str(ROOT / "tools"))
import build_book  # noqa: E402  (tools/build_book.py)

pytestmark = pytest.mark.notebooks

LESSON = "01_logistic_regression"  # the cheapest lesson with figures, maths and every kind of graded cell
ARTIFACTS = ROOT / ".artifacts" / "book"
REMOTE = re.compile(r"^\s*(https?:)?//", re.I)
ERROR_MARKS = ("Traceback (most recent call last)", 'class="output traceback')


# ------------------------------------------------------------------------------ builds
def _need_jupyter_book():
    try:
        import jupyter_book  # noqa: F401
    except ImportError:
        pytest.fail("Jupyter Book is not installed: `make book` installs it, or "
                    "pip install -c constraints.txt -e '.[book]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Lesson 01 built as the course builds it: its release executed, every page written."""
    _need_jupyter_book()
    out = tmp_path_factory.mktemp("book")
    start = time.perf_counter()
    html_dir = build_book.build([LESSON], out)
    print(f"\nbuilt lesson {LESSON} in {time.perf_counter() - start:.1f} s")
    return html_dir


def _executed(site: Path) -> nbformat.NotebookNode:
    """The executed release the lesson page was made from (the build's staged copy)."""
    return nbformat.read(site.parent / "source" / "lessons" / f"{LESSON}.ipynb", as_version=4)


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def _redirect(page: Path) -> str | None:
    """Where a page's <meta http-equiv="Refresh"> sends the browser, if it has one (the landing page does)."""
    found = re.search(r'http-equiv="Refresh" content="\d+; url=([^"]+)"', page.read_text(encoding="utf-8"), re.I)
    return found.group(1) if found else None


# ------------------------------------------------------------------------- the scan
def _normalise(text: str) -> str:
    return " ".join(text.split())


def _visible_text(path: Path) -> str:
    """A file of the site as text: tags of HTML pages removed, entities decoded, whitespace collapsed."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".html":
        text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return _normalise(text)


def scan(site: Path) -> list[str]:
    """What a student must not see, wherever it is in the site: lines of solutions, hidden tests
    and model answers of every lesson (tests/test_notebooks.py's extraction) that no release shows
    (`rng = np.random.default_rng(1)` may be hidden in one lesson and public in another), and
    error outputs."""
    secrets, public = set(), set()
    for name in LESSONS:
        nb = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
        secrets |= {_normalise(line) for line in _protected_lines(nb)}
        release = nbformat.read(ROOT / "notebooks" / name / f"{name}.ipynb", as_version=4)
        public |= {_normalise(line) for cell in release.cells for line in cell.source.splitlines()}
    secrets -= public
    found = []
    for path in sorted(p for p in site.rglob("*") if p.suffix in {".html", ".js", ".txt", ".json", ".ipynb"}
                       and "mathjax" not in p.parts):
        raw = path.read_text(encoding="utf-8", errors="replace")
        text = _visible_text(path)
        found += [f"{path.relative_to(site)}: {line!r}" for line in sorted(secrets) if line in text]
        found += [f"{path.relative_to(site)}: error output ({mark!r})" for mark in ERROR_MARKS if mark in raw]
    return found


def test_site_has_the_landing_page_the_lesson_and_search(site):
    for page in ["index.html", "intro.html", "search.html", "searchindex.js", f"lessons/{LESSON}.html",
                 "_static/mathjax/tex-mml-chtml.js"]:
        assert (site / page).is_file(), f"the site has no {page}"
    lesson = (site / "lessons" / f"{LESSON}.html").read_text(encoding="utf-8")
    notebook = f"{build_book.nbtool.repository_url()}/blob/main/notebooks/{LESSON}/{LESSON}.ipynb"
    colab = re.search(r"\]\((https://colab\.research\.google\.com/github/[^)]+)\)$", build_book.nbtool.colab_badge(LESSON)).group(1)
    assert f'href="{notebook}"' in lesson, "the lesson page does not link its released notebook"
    assert f'href="{colab}"' in lesson, "the lesson page has no Colab badge"
    landing = (site / "intro.html").read_text(encoding="utf-8")
    assert f'href="lessons/{LESSON}.html"' in landing, "the landing page's table does not link the lesson"
    assert "make lab" in _visible_text(site / "intro.html") and "make grade" in _visible_text(site / "intro.html")


def test_site_shows_no_solution_hidden_test_model_answer_or_error(site):
    leaks = scan(site)
    assert not leaks, "the site shows what students must not see:\n" + "\n".join(leaks[:20])
    executed = _executed(site)
    errors = [i for i, c in enumerate(executed.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert not errors, f"cells {errors} of the lesson page kept an error output"
    assert "note: `sigmoid` is not implemented yet" in (site / "lessons" / f"{LESSON}.html").read_text(encoding="utf-8"), (
        "the lesson ran without the release's unsolved exercises (fallback to the reference)")


def test_scan_finds_solutions_hidden_tests_answers_and_errors(tmp_path):
    """A site built from a solution notebook (stored outputs, one error added) fails the scan."""
    _need_jupyter_book()
    solution = nbformat.read(ROOT / "solutions" / LESSON / f"{LESSON}.ipynb", as_version=4)
    code = next(c for c in solution.cells if c.cell_type == "code" and not c.metadata.get("nbgrader"))
    code.outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="boom",
                                               traceback=["Traceback (most recent call last)", "ValueError: boom"]))
    (tmp_path / "src" / LESSON).mkdir(parents=True)
    nbformat.write(solution, tmp_path / "src" / LESSON / f"{LESSON}.ipynb")
    leaks = "\n".join(scan(build_book.build([LESSON], tmp_path / "out", releases=tmp_path / "src", execute=False)))

    protected = _protected_lines(solution)

    def region(begin, end):
        return {line.strip() for c in solution.cells if c.cell_type == "code"
                for block in re.findall(rf"{begin}\n(.*?){end}", c.source, re.S) for line in block.splitlines()}

    answers = {line.strip() for c in solution.cells if c.cell_type == "markdown"
               and c.metadata.get("nbgrader", {}).get("solution") for line in c.source.splitlines()}
    kinds = {"solution code": region("### BEGIN SOLUTION", "### END SOLUTION"),
             "hidden test": region("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"), "model answer": answers}
    for kind, lines in kinds.items():
        assert lines & protected, f"lesson {LESSON} has no {kind} to look for"
        assert any(repr(_normalise(line)) in leaks for line in lines & protected), (
            f"the scan missed the {kind}; it found:\n{leaks[:2000]}")
    assert "error output" in leaks


def test_build_fails_naming_a_cell_that_errors_outside_the_exercises():
    nb = nbformat.v4.new_notebook()
    ok = nbformat.v4.new_code_cell("raise NotImplementedError()")
    ok.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "ex"}
    bad = nbformat.v4.new_code_cell("1 / 0")
    bad.id = "plot-cell"
    error = nbformat.v4.new_output("error", ename="NotImplementedError", evalue="", traceback=[])
    ok.outputs = [nbformat.v4.new_output("stream", name="stdout", text="kept\n"), error]
    bad.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])]
    nb.cells = [ok]
    assert build_book.drop_exercise_errors(nb, "lesson") == 1 and [o.output_type for o in ok.outputs] == ["stream"]
    nb.cells.append(bad)
    with pytest.raises(SystemExit, match=r"cell 1 \(id plot-cell, starting '1 / 0'\) raised ZeroDivisionError"):
        build_book.drop_exercise_errors(nb, "lesson")


# ---------------------------------------------------------------- links and offline
def _attributes(page: Path) -> list[tuple[str, str, str]]:
    """(tag, attribute, value) of every href and src on a page."""
    text = page.read_text(encoding="utf-8")
    return [(m.group(1).lower(), m.group(2).lower(), html.unescape(m.group(3)))
            for m in re.finditer(r"<(\w+)\b[^>]*?\b(href|src)=\"([^\"]*)\"", text)]


def test_every_local_link_and_image_resolves_to_a_file(site):
    broken = []
    for page in _pages(site):
        for tag, attr, value in _attributes(page):
            if REMOTE.match(value) or value.startswith(("#", "mailto:", "javascript:", "data:")):
                continue
            target = value.split("#")[0].split("?")[0]
            if target and not (page.parent / target).resolve().is_file() and not (page.parent / target / "index.html").is_file():
                broken.append(f"{page.relative_to(site)}: <{tag} {attr}={value!r}>")
    refresh = _redirect(site / "index.html")
    if refresh and not (site / refresh).is_file():
        broken.append(f"index.html redirects to a missing {refresh}")
    assert not broken, "broken local links:\n" + "\n".join(broken[:30])


def test_pages_load_no_script_stylesheet_or_image_from_the_network(site):
    remote = []
    for page in _pages(site):
        text = page.read_text(encoding="utf-8")
        for tag, attr, value in _attributes(page):
            if REMOTE.match(value) and (attr == "src" or tag == "link"):
                remote.append(f"{page.relative_to(site)}: <{tag} {attr}={value!r}>")
        for script in re.findall(r"<script\b[^>]*>(.*?)</script>", text, re.S):
            remote += [f"{page.relative_to(site)}: inline script names {u}" for u in re.findall(r"https?://[^\s\"'<>]+", script)]
    for css in site.rglob("*.css"):
        remote += [f"{css.relative_to(site)}: {u}" for u in re.findall(r"(?:url\(|@import)\s*[\"']?(?:https?:)?//[^\s\"')]+",
                                                                    css.read_text(encoding="utf-8", errors="replace"))]
    assert not remote, "the site would load from the network:\n" + "\n".join(remote[:30])


# ------------------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def driver(browser_binaries, tmp_path_factory):  # noqa: F811
    browser = start_chromium(browser_binaries, tmp_path_factory.mktemp("chromium-profile"), "1280,900", 60,
                             console_log=True)
    yield browser
    browser.quit()


PAGE_STATE = """
const done = arguments[arguments.length - 1];
const loaded = document.readyState === 'complete' ? Promise.resolve()
  : new Promise(r => window.addEventListener('load', r, {once: true}));
const typeset = () => (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
// the theme's scripts rearrange outputs after loading: read the page once its figures stop changing
const settled = () => new Promise(r => {
  let last = -1, same = 0, tries = 0;
  const poll = () => {
    const n = document.querySelectorAll('div.cell_output img').length;
    same = n === last ? same + 1 : 0; last = n; tries += 1;
    if (same >= 3 || tries > 100) r(); else setTimeout(poll, 100);
  };
  poll();
});
const ready = loaded.then(typeset).then(settled);
ready.then(() => done({
  maths: document.querySelectorAll('.math').length,
  typeset: [...document.querySelectorAll('.math')].filter(m => m.querySelector('mjx-container')).length,
  errors: document.querySelectorAll('mjx-merror').length,
  figures: document.querySelectorAll('div.cell_output img').length,
  loaded: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  resources: performance.getEntriesByType('resource').map(r => r.name).concat([location.href]),
  width: document.documentElement.scrollWidth,
}), e => done({failed: String(e)}));
"""


@pytest.fixture(scope="module")
def served(site):
    """The site over HTTP on 127.0.0.1, as a reader of the published pages gets it (from file://,
    Chromium refuses the search page's fetches of page excerpts)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _open(driver, base: str, page: str, redirect: str | None = None) -> dict:
    """Open a page and read its state once it has loaded, typeset and settled. A page that redirects
    is read where it lands: a navigation while the script waits would lose its answer (a script timeout)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base + page)
    if redirect:
        target = base + redirect
        try:
            WebDriverWait(driver, 30).until(lambda d: d.current_url == target
                                            and d.execute_script("return document.readyState") == "complete")
        except TimeoutException:
            pytest.fail(f"{page} should redirect to {redirect}; after 30 s the browser is at {driver.current_url}")
    state = driver.execute_async_script(PAGE_STATE)
    assert "failed" not in state, f"{page}: MathJax failed: {state.get('failed')}"
    problems = [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, f"{page}: console errors:\n" + "\n".join(problems)
    assert not state["loaded"], f"{page}: images that did not load: {state['loaded']}"
    remote = [url for url in state["resources"] if not url.startswith(base)]
    assert not remote, f"{page} loaded from the network: {remote}"
    return state


def test_every_page_opens_in_a_browser_with_maths_and_figures(site, served, driver):
    pages = [p.relative_to(site).as_posix() for p in _pages(site)]
    assert len(pages) >= 4, pages
    assert _redirect(site / "index.html"), "index.html should send the reader on to the course's first page"
    for page in pages:
        state = _open(driver, served, page, _redirect(site / page))
        assert state["typeset"] == state["maths"] and not state["errors"], (
            f"{page}: MathJax typeset {state['typeset']} of {state['maths']} formulas, {state['errors']} errors")
    lesson = f"lessons/{LESSON}.html"
    state = _open(driver, served, lesson)
    expected = sum(any(k.startswith("image/") for k in o.get("data", {})) for c in _executed(site).cells
                   if c.cell_type == "code" for o in c.outputs)
    assert state["maths"] > 10, f"only {state['maths']} formulas on the lesson page"
    assert expected > 0 and state["figures"] == expected, (
        f"the lesson page shows {state['figures']} figures, the executed notebook has {expected}")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width, name in [(390, "phone"), (1280, "desktop")]:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": 844 if width < 500 else 900, "deviceScaleFactor": 1,
                                "mobile": width < 500})
        state = _open(driver, served, lesson)
        assert state["width"] <= width, f"at {width} px the lesson page is {state['width']} px wide: it scrolls sideways"
        driver.save_screenshot(str(ARTIFACTS / f"lesson-{name}.png"))
        print(f"\nscreenshot: {ARTIFACTS / f'lesson-{name}.png'}")
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_search_box_finds_the_lesson(served, driver):
    from selenium.webdriver.support.ui import WebDriverWait

    _open(driver, served, "search.html?q=perceptron")
    hits = WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('ul.search li a')].map(a => a.getAttribute('href'))"))
    assert any(LESSON in href for href in hits), f"searching 'perceptron' found {hits}"
    time.sleep(1)  # the excerpts of the hits are fetched after the list appears
    problems = [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, "console errors on the search page:\n" + "\n".join(problems)
