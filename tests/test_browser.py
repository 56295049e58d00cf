"""JupyterLab in a real browser: the course as a student and an instructor open it.

Debian's Chromium, headless, driven by Selenium, against `jupyter lab` started on
127.0.0.1 with a token in a temporary copy of the course (nbgrader_config.py, solutions/,
notebooks/), lesson 01 with its stored outputs cleared:

- the lesson opens in JupyterLab, Run > Run All Cells runs it in the browser's kernel,
  every code cell gets an execution count, its figures render as images and the final
  held-out accuracy is printed;
- Nbgrader > Formgrader opens nbgrader's formgrader inside JupyterLab, and Manage
  Assignments lists every lesson as an assignment.

Chromium and ChromeDriver come from Debian (`tools/install_browser.sh`, run by this test
when they are missing); the test is skipped, saying so, only where they cannot be
installed. Screenshots go to .artifacts/browser/ (their paths are printed).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import LESSONS, ROOT, nbtool, shared_data_dir

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
INSTALLER = ROOT / "tools" / "install_browser.sh"
ARTIFACTS = ROOT / ".artifacts" / "browser"

LESSON = "01_logistic_regression"
ACCURACY = re.compile(r"held-out accuracy, B cells vs rest, 500 genes: (\d+\.\d+)")

SERVER_START_TIMEOUT = 180  # s: a busy 2-core machine imports jupyter_server and nbgrader slowly
PAGE_TIMEOUT = 180  # s: JupyterLab's first load, the formgrader's assignment list
RUN_TIMEOUT = 600  # s: the lesson itself takes ~45 s on an idle machine


# ------------------------------------------------------------------------ the browser
@pytest.fixture(scope="module")
def browser_binaries():
    """Debian's chromium and chromedriver: installed with apt when missing, else a skip."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        try:
            proc = subprocess.run(["sh", str(INSTALLER)], capture_output=True, text=True, timeout=1200)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"chromium/chromedriver missing and {INSTALLER.name} could not run ({exc}); "
                        "install Debian's `chromium` and `chromium-driver` packages")
        if proc.returncode != 0 or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            pytest.skip(f"chromium/chromedriver missing and could not be installed "
                        f"(tools/install_browser.sh exited {proc.returncode}: {' | '.join(tail)}); "
                        "as root run `apt-get install chromium chromium-driver`")
    return CHROMIUM, CHROMEDRIVER


def start_chromium(browser_binaries, profile_dir, window_size: str, page_timeout: float, console_log: bool = False):
    """Headless Chromium under selenium, with a fresh profile; the browser tests and the website tests share it."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium not installed: pip install -c constraints.txt -e '.[test]'")
    chromium, chromedriver = browser_binaries
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--window-size={window_size}", "--force-device-scale-factor=1",
                f"--user-data-dir={profile_dir}"):
        options.add_argument(arg)
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(chromedriver)))
    browser.set_page_load_timeout(page_timeout)
    browser.set_script_timeout(60)
    return browser


@pytest.fixture(scope="module")
def driver(browser_binaries, tmp_path_factory):
    browser = start_chromium(browser_binaries, tmp_path_factory.mktemp("chromium-profile"), "1400,1100", PAGE_TIMEOUT)
    yield browser
    browser.quit()


# ------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course directory: the config, every lesson's solution and release; lesson 01 unrun."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
    shutil.copytree(ROOT / "solutions", course / "solutions", ignore=ignore)
    shutil.copytree(ROOT / "notebooks", course / "notebooks", ignore=ignore)
    path = course / "solutions" / LESSON / f"{LESSON}.ipynb"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path)
    return course


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the server then shuts its kernels down), then SIGKILL to its own group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group is the server's own (start_new_session)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def lab(course, tmp_path_factory):
    """`jupyter lab` on 127.0.0.1, a free port and a random token; yields its base URL and token."""
    data = shared_data_dir()
    if data is None:
        pytest.skip("real datasets not found: set SCLECTURE_DATA_DIR or put the seeded copy in ../shared/data")
    state = tmp_path_factory.mktemp("jupyter-state")
    # Lab's own settings, fresh: no news toast, no update check, no saved workspace.
    notification = state / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = nbtool.tools_env()  # with the environment's tools on PATH: formgrader runs `alembic` by name
    env.pop("MPLBACKEND", None)  # the tests' Agg would keep the kernel from showing figures
    env.update(
        SCLECTURE_DATA_DIR=str(data),
        OMP_WAIT_POLICY="PASSIVE",
        JUPYTER_CONFIG_DIR=str(state / "config"),  # no personal jupyter config (passwords, ...)
        JUPYTER_RUNTIME_DIR=str(state / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
    )
    port, token = _free_port(), secrets.token_hex(24)
    log_path = state / "jupyter-lab.log"
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={course}",
    ]
    if os.geteuid() == 0:  # CI containers run as root; the server refuses without this
        cmd.append("--allow-root")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=10) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer in {SERVER_START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield base, token
    finally:
        _stop(proc)
        print(f"\njupyter lab log: {log_path}")


# -------------------------------------------------------------------------- helpers
def _wait(driver, condition, timeout, what):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=1).until(lambda d: condition(d))
    except TimeoutException:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"\nscreenshot: {path}")
    return path


@contextlib.contextmanager
def _screenshot_on_failure(driver, name: str):
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            driver.switch_to.default_content()
            _screenshot(driver, f"{name}-FAILED")
        raise


def _open_menu(driver, menu: str, item: str):
    """Click a JupyterLab main-menu entry, e.g. Run > Run All Cells."""
    from selenium.webdriver.common.by import By

    bar = _wait(driver, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                                   if e.text.strip() == menu], 60, f"the {menu} menu")
    bar[0].click()
    entry = _wait(driver, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
                                     if e.is_displayed() and e.text.split("\n")[0].strip() == item],
                  30, f"{menu} > {item}")
    entry[0].click()


# JavaScript run in the page: what the notebook shows now.
NOTEBOOK_STATE = """
const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
if (!nb) return null;
const prompts = [...nb.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim());
const imgs = [...nb.querySelectorAll('.jp-OutputArea .jp-RenderedImage img')];
const indicator = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
return {
  prompts: prompts,
  images: imgs.length,
  images_loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
  outputs: [...nb.querySelectorAll('.jp-OutputArea-output')].map(o => o.textContent).join('\\n'),
  status: indicator ? indicator.getAttribute('data-status') : null,
};
"""


def _wait_for_run(driver, started: float) -> dict:
    """Poll until every code cell has an execution count, the kernel is idle and images loaded.

    Run All queues every cell (prompt [*]); a cell that raises stops the run and leaves the
    cells after it unnumbered: that fails at once, with the end of the outputs.
    """
    seen_running = False
    while True:
        s = driver.execute_script(NOTEBOOK_STATE)
        running = any("*" in p for p in s["prompts"])
        seen_running |= running
        numbered = all(re.fullmatch(r"\[\d+\]:", p) for p in s["prompts"])
        if numbered and s["status"] == "idle" and s["images_loaded"] == s["images"]:
            return s
        if seen_running and not running and not numbered and s["status"] == "idle":
            pytest.fail("Run All Cells stopped before the last cell (a cell raised?):\n" + s["outputs"][-3000:])
        if time.monotonic() - started > RUN_TIMEOUT:
            pytest.fail(f"Run All Cells did not finish in {RUN_TIMEOUT} s; prompts: {s['prompts']}")
        time.sleep(2)


# ------------------------------------------------------------------------- the steps
def _run_lesson_01(base, token, driver):
    from selenium.webdriver.common.by import By

    stored = nbformat.read(ROOT / "solutions" / LESSON / f"{LESSON}.ipynb", as_version=4)
    n_code = sum(c.cell_type == "code" for c in stored.cells)
    n_figures = sum("image/png" in o.get("data", {}) for c in stored.cells if c.cell_type == "code"
                    for o in c.outputs)

    with _screenshot_on_failure(driver, "01-lesson"):
        driver.get(f"{base}/lab/tree/solutions/{LESSON}/{LESSON}.ipynb?token={token}")
        state = _wait(driver, lambda d: (s := d.execute_script(NOTEBOOK_STATE)) and len(s["prompts"]) == n_code
                      and s["status"] == "idle" and s, PAGE_TIMEOUT, "the notebook to open with an idle kernel")
        assert state["images"] == 0 and not ACCURACY.search(state["outputs"]), "the copy should have no outputs"
        assert all(p in ("[ ]:", "") for p in state["prompts"]), state["prompts"]
        _screenshot(driver, "01-lesson-opened")

        started = time.monotonic()
        _open_menu(driver, "Run", "Run All Cells")
        state = _wait_for_run(driver, started)
        print(f"\nRun All Cells: {time.monotonic() - started:.0f} s for {n_code} code cells")

        assert "Traceback" not in state["outputs"], "a cell raised:\n" + state["outputs"][-3000:]
        assert state["images"] >= 1, "no figure rendered"
        assert state["images"] == n_figures, f"{state['images']} figures rendered, the stored notebook has {n_figures}"
        match = ACCURACY.search(state["outputs"])
        assert match, "the final accuracy was not printed:\n" + state["outputs"][-2000:]
        assert 0.0 <= float(match.group(1)) <= 1.0
        print(f"figures: {state['images']}; {match.group(0)}")

        figure = driver.find_element(By.CSS_SELECTOR, ".jp-OutputArea .jp-RenderedImage img")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", figure)
        time.sleep(1)
        _screenshot(driver, "02-lesson-figure")
        last = driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell")[-1]
        driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", last)
        time.sleep(1)
        _screenshot(driver, "03-lesson-accuracy")


def _formgrader_lists_lessons(driver):
    from selenium.webdriver.common.by import By

    with _screenshot_on_failure(driver, "04-formgrader"):
        _open_menu(driver, "Nbgrader", "Formgrader")
        frame = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#formgrader-iframe iframe"),
                      PAGE_TIMEOUT, "the Formgrader panel")
        driver.switch_to.frame(frame[0])
        try:
            names = _wait(driver, lambda d: (n := [e.text.strip() for e in d.find_elements(By.CSS_SELECTOR, "td.name")])
                          and set(LESSONS) <= set(n) and n, PAGE_TIMEOUT,
                          f"Manage Assignments to list the lessons {LESSONS}")
            title = " / ".join(h.text for h in driver.find_elements(By.CSS_SELECTOR, ".page-header h1"))
        finally:
            driver.switch_to.default_content()
        assert "Manage Assignments" in title, title
        assert sorted(names) == sorted(LESSONS), f"assignments listed: {names}"
        print(f"\nformgrader assignments: {', '.join(names)}")
        _screenshot(driver, "04-formgrader-assignments")


def test_jupyterlab_runs_lesson_01_and_formgrader_lists_lessons(driver, lab):
    """One browser, one server: the lesson first (as the issue orders it), then Formgrader."""
    base, token = lab
    try:
        urllib.request.urlopen(f"{base}/formgrader/manage_assignments?token={token}", timeout=60).close()
    except urllib.error.HTTPError as exc:
        pytest.fail(f"nbgrader's formgrader is not served ({exc}): enable it with `jupyter server "
                    "extension enable --sys-prefix nbgrader.server_extensions.formgrader`")
    _run_lesson_01(base, token, driver)
    _formgrader_lists_lessons(driver)


# ------------------------------------------------------------------ feedback is inert
ACTIVE = [  # what a submission's outputs and markdown could carry into an HTML page
    ("text/html", '<script>window.PWNED = (window.PWNED || 0) + 1;</script><b>bold</b>'),
    ("text/html", '<img src="x.png" onerror="window.PWNED = (window.PWNED || 0) + 1">'),
    ("image/svg+xml", '<svg xmlns="http://www.w3.org/2000/svg" onload="window.PWNED = (window.PWNED || 0) + 1"></svg>'),
    ("application/javascript", "window.PWNED = (window.PWNED || 0) + 1;"),
]


def _feedback_html(nb, folder: Path) -> Path:
    """The notebook as nbgrader's generate_feedback renders it (HTMLExporter, its 'feedback' template)."""
    import nbgrader
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    formgrader = Path(nbgrader.__file__).parent / "server_extensions" / "formgrader"
    c = Config()  # as nbgrader's GenerateFeedback configures it
    c.HTMLExporter.template_name = "feedback"
    c.HTMLExporter.extra_template_basedirs = [str(formgrader / "templates")]
    c.HTMLExporter.extra_template_paths = [str(formgrader / "static" / "node_modules" / "bootstrap" / "dist" / "css")]
    html, _ = HTMLExporter(config=c).from_notebook_node(nb, resources={"nbgrader": {"score": 0, "max_score": 1, "late_penalty": 0, "notebook": "feedback"}})
    path = folder / "feedback.html"
    path.write_text(html, encoding="utf-8")
    return path


def test_feedback_from_a_hostile_notebook_runs_nothing_in_a_browser(driver, tmp_path):
    """Scripts, event handlers, SVG and JavaScript outputs of a submission run in the raw page but not
    in the feedback that grading produces (tools/grade.py's sanitise_outputs)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import grade as grading_tool

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('hello')")
    cell.outputs = [nbformat.v4.new_output("display_data", data={mime: payload, "text/plain": "<a display>"})
                    for mime, payload in ACTIVE]
    nb.cells = [nbformat.v4.new_markdown_cell('My answer <img src="y.png" onerror="window.PWNED = 99">'), cell]

    def pwned(path: Path):
        driver.get(path.as_uri())
        time.sleep(0.5)  # onerror / onload handlers fire after the load
        return driver.execute_script("return window.PWNED || 0;")

    raw = tmp_path / "raw"
    raw.mkdir()
    assert pwned(_feedback_html(nb, raw)) > 0, "the unsanitised page should run the submission's scripts (test is blind)"

    graded = tmp_path / "graded.ipynb"
    nbformat.write(nb, graded)
    grading_tool.sanitise_outputs(graded)
    safe = tmp_path / "safe"
    safe.mkdir()
    page = _feedback_html(nbformat.read(graded, as_version=4), safe)
    assert pwned(page) == 0, "a script of the submission ran in the feedback page"
    assert "My answer" in page.read_text(encoding="utf-8")  # the student's text is still shown
