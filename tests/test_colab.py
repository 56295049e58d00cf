"""A lesson on Google Colab, simulated: the setup cell in an environment that holds Colab's own
versions of the packages the course meets (tests/colab_versions.txt), with a stand-in for the
`google.colab` module and the install source pointed at this checkout.

- the cell installs the course, changes the version of no package Colab ships, and lesson 01
  then runs to the end in that environment;
- scanpy, which the cell installs around Colab's numba, umap-learn and pynndescent, then draws
  a UMAP of a latent space;
- a source that cannot be reached stops the cell with the URL it tried and the setting a fork
  changes, and installs nothing;
- a course that would need another version of one of Colab's packages is stopped before pip
  replaces it, with the command that would replace it and the hint to restart; running the
  cell again after `import sclecture` also asks for a restart;
- the cell installs the package as of a fixed commit, so a rebuild gives the same cell, and a
  change of that commit alone keeps a lesson's stored outputs.

The one honest difference from Colab: Python 3.11 (the only Python this machine has a torch wheel
for) where Colab runs 3.13. Colab's packages are installed once per machine into a cached folder
that the test's environment reads through a .pth file, the way Colab's own Python reads its
dist-packages; pip installs what the cell adds into the test's environment, never into the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, nbtool

VERSIONS = ROOT / "tests" / "colab_versions.txt"
LESSON = "01_logistic_regression"
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"


# ---------------------------------------------------------------- the simulated Colab

def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _colab_image() -> Path:
    """site-packages holding Colab's versions, built once per machine and version list."""
    key = hashlib.sha256(VERSIONS.read_bytes() + (ROOT / "constraints.txt").read_bytes()
                         + sys.version.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sclecture-tests"
    image = cache / f"colab-{PY}-{key}"
    site = image / "lib" / PY / "site-packages"
    if (image / "complete").exists():
        return site
    partial = cache / f"{image.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    res = _run([sys.executable, "-m", "venv", str(partial)])
    assert res.returncode == 0, res.stderr
    # torch comes from constraints.txt (the CPU wheel), like every pip call of the course
    res = _run([str(partial / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
                "--disable-pip-version-check", "-r", str(VERSIONS), "-c", str(ROOT / "constraints.txt")])
    assert res.returncode == 0, f"could not install Colab's versions from {VERSIONS}:\n{res.stdout}\n{res.stderr}"
    (partial / "complete").touch()
    try:
        partial.rename(image)
    except OSError:  # another test run finished first: use its copy
        shutil.rmtree(partial, ignore_errors=True)
    for old in cache.glob(f"colab-{PY}-*"):  # images of earlier version lists (about 1.5 GB each)
        if old != image and ".partial-" not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    return site


@dataclass
class Colab:
    python: Path
    env: dict[str, str]
    work: Path

    def pip_list(self) -> dict[str, str]:
        res = _run([str(self.python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
                   env=self.env)
        assert res.returncode == 0, res.stderr
        return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(res.stdout)}

    def run_setup_cell(self, source: str | None = None) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if source is not None:
            env["SCLECTURE_INSTALL_SOURCE"] = source
        return _run([str(self.python), "-c", nbtool.colab_setup_source()], env=env, cwd=self.work)


def _wheel(out: Path) -> Path:
    """This checkout's package as a wheel, built from a copy so the checkout stays clean."""
    src = out / "src"
    shutil.copytree(ROOT / "sclecture", src / "sclecture", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy(ROOT / name, src / name)
    res = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)])
    assert res.returncode == 0, res.stderr
    (whl,) = out.glob("sclecture-*.whl")
    return whl


@pytest.fixture(scope="module")
def colab(tmp_path_factory) -> Colab:
    start = time.perf_counter()
    image_site = _colab_image()
    root = tmp_path_factory.mktemp("colab")
    venv = root / "venv"
    # without pip of its own: `python -m pip` is Colab's pip from the image
    res = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert res.returncode == 0, res.stderr
    (venv / "lib" / PY / "site-packages" / "colab_image.pth").write_text(f"{image_site}\n")
    fake = root / "fake"  # `import google.colab` succeeds, as on Colab
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "__init__.py").touch()
    (fake / "google" / "colab" / "__init__.py").write_text('"""Stands in for Colab\'s own module."""\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER", "IPYTHON"))}
    env.update(PYTHONPATH=str(fake), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               JUPYTER_DATA_DIR=str(root / "jupyter"), JUPYTER_CONFIG_DIR=str(root / "jupyter"),
               IPYTHONDIR=str(root / "ipython"), MPLBACKEND="Agg", OMP_WAIT_POLICY="PASSIVE",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               SCLECTURE_INSTALL_SOURCE=str(_wheel(root / "wheel")))
    print(f"\nsimulated Colab ready in {time.perf_counter() - start:.0f} s")
    return Colab(venv / "bin" / "python", env, root)


@pytest.mark.notebooks
def test_the_simulation_holds_colabs_versions(colab):
    listed = dict(line.split("==") for line in VERSIONS.read_text().splitlines() if line and not line.startswith("#"))
    have = colab.pip_list()
    wrong = {n: (v, have.get(n.lower().replace("_", "-"))) for n, v in listed.items()
             if not (have.get(n.lower().replace("_", "-")) or "").startswith(v)}
    assert not wrong, f"the simulated Colab differs from {VERSIONS.name} (listed, found): {wrong}"
    assert "sclecture" not in have and "anndata" not in have, "Colab ships neither the course nor anndata"


def _probe_wheel(out: Path, requires: str) -> Path:
    """A tiny wheel that needs `requires`: a course whose dependencies Colab cannot meet."""
    whl = out / "probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("probe.py", "")
        z.writestr("probe-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: probe\nVersion: 1.0\nRequires-Dist: {requires}\n")
        z.writestr("probe-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("probe-1.0.dist-info/RECORD", "")
    return whl


@pytest.mark.notebooks
def test_an_unreachable_source_says_what_to_change_and_installs_nothing(colab):
    before = colab.pip_list()
    source = f"sclecture @ git+file://{colab.work}/no-such-repository@{'0' * 40}"
    res = colab.run_setup_cell(source)
    assert res.returncode != 0, "the setup cell must stop the notebook when the course cannot be installed"
    message = res.stderr.splitlines()[-1]
    assert message.startswith("RuntimeError: Could not install the course from " + source), res.stderr
    assert "[project.urls]" in message and "Repository" in message and "SCLECTURE_INSTALL_SOURCE" in message
    assert "no-such-repository" in res.stdout, "pip's own message (the git error) must be shown"
    assert colab.pip_list() == before, "a failed install must leave Colab's environment as it was"


@pytest.mark.notebooks
def test_a_package_colab_ships_is_never_replaced_and_the_restart_hint_says_how(colab):
    before = colab.pip_list()
    probe = _probe_wheel(colab.work, f"tqdm>{before['tqdm']}")
    res = colab.run_setup_cell(str(probe))
    assert res.returncode != 0
    message = res.stderr.splitlines()[-1]
    assert "other versions of tqdm than Colab has" in message, res.stdout + res.stderr
    assert f"%pip install '{probe}'" in message and "Runtime -> Restart session" in message
    assert colab.pip_list() == before, "the cell must not replace a package Colab ships"


@pytest.fixture(scope="module")
def installed(colab):
    before = colab.pip_list()
    start = time.perf_counter()
    res = colab.run_setup_cell()
    print(f"setup cell installed the course in {time.perf_counter() - start:.0f} s")
    return before, res, colab.pip_list()


@pytest.mark.notebooks
def test_setup_cell_installs_the_course_and_keeps_colabs_versions(installed):
    before, res, after = installed
    assert res.returncode == 0, f"the setup cell failed:\n{res.stdout}\n{res.stderr}"
    assert "Course installed" in res.stdout and "Restart" not in res.stdout, res.stdout
    changed = {n: (v, after.get(n)) for n, v in before.items() if after.get(n) != v}
    assert not changed, f"the setup cell changed packages that Colab ships (before, after): {changed}"
    assert "sclecture" in after and "anndata" in after and after["pandas"] == before["pandas"]


@pytest.mark.notebooks
def test_running_the_cell_again_after_import_asks_for_a_restart(colab, installed):
    assert installed[1].returncode == 0, "the course was not installed"
    res = _run([str(colab.python), "-c", "import sclecture\n" + nbtool.colab_setup_source()], env=colab.env, cwd=colab.work)
    assert res.returncode == 0, res.stderr
    assert "sclecture, already imported" in res.stdout and "Runtime -> Restart session" in res.stdout, res.stdout


UMAP_OF_A_LATENT_SPACE = """
import anndata, numpy as np, pandas as pd, scanpy as sc
rng = np.random.default_rng(0)
adata = anndata.AnnData(rng.poisson(1.0, (60, 20)).astype(np.float32),
                        obs=pd.DataFrame({"cell_type": rng.choice(["B", "T"], 60)}, index=[f"c{i}" for i in range(60)]))
adata.obsm["X_scvi"] = rng.normal(size=(60, 10)).astype(np.float32)
sc.pp.neighbors(adata, use_rep="X_scvi", n_neighbors=10, random_state=0)
sc.tl.umap(adata, random_state=0)
sc.pl.umap(adata, color=["cell_type"], show=False)
assert adata.obsm["X_umap"].shape == (60, 2) and np.isfinite(adata.obsm["X_umap"]).all()
print("UMAP", sc.__version__)
"""


@pytest.mark.notebooks
def test_scanpy_draws_a_umap_of_a_latent_space_after_the_cell(colab, installed):
    """Lessons 03, 05 and 06 show latent spaces as scanpy UMAPs, on Colab's numba, umap-learn
    and pynndescent (the cell installs scanpy around them)."""
    assert installed[1].returncode == 0, "the course was not installed"
    env = dict(colab.env, NUMBA_CACHE_DIR=str(colab.work / "numba"))  # keeps the cached image unchanged
    start = time.perf_counter()
    res = _run([str(colab.python), "-c", UMAP_OF_A_LATENT_SPACE], env=env, cwd=colab.work)
    print(f"scanpy UMAP of 60 cells (import, numba compilation) in {time.perf_counter() - start:.0f} s")
    assert res.returncode == 0 and "UMAP" in res.stdout, f"scanpy failed on the simulated Colab:\n{res.stderr[-3000:]}"


@pytest.mark.notebooks
def test_lesson_01_runs_to_the_end_on_colab(colab, installed, real_data):
    """The solution notebook, top to bottom, in the simulated Colab's kernel; its setup cell (as
    built now) finds the course installed and leaves it be."""
    assert installed[1].returncode == 0, "the course was not installed"
    nb = nbformat.read(ROOT / "solutions" / LESSON / f"{LESSON}.ipynb", as_version=4)
    assert nb.cells[1].source.startswith(nbtool.COLAB_SETUP_MARK)
    nb.cells[1].source = nbtool.colab_setup_source()
    nb.cells.insert(0, nbformat.v4.new_code_cell(f"import sys; assert sys.prefix == {str(colab.python.parent.parent)!r}, sys.prefix"))
    path = colab.work / f"{LESSON}.ipynb"
    nbformat.write(nb, path)
    runner = ("import sys, nbformat\nfrom nbclient import NotebookClient\n"
              "nb = nbformat.read(sys.argv[1], as_version=4)\n"
              "try:\n    NotebookClient(nb, timeout=600, kernel_name='python3').execute()\n"
              "finally:\n    nbformat.write(nb, sys.argv[1])\n")
    env = dict(colab.env, SCLECTURE_DATA_DIR=str(real_data))
    start = time.perf_counter()
    res = _run([str(colab.python), "-c", runner, str(path)], env=env, cwd=colab.work)
    print(f"{LESSON} ran in {time.perf_counter() - start:.0f} s")
    assert res.returncode == 0, f"{LESSON} failed on the simulated Colab (executed copy: {path}):\n{res.stderr[-3000:]}"
    setup_output = "".join(o.get("text", "") for o in nbformat.read(path, as_version=4).cells[2].outputs)
    assert "Course installed" in setup_output and "Restart" not in setup_output, setup_output


# ---------------------------------------------------------------- the cell and the build, without pip

def test_the_cell_installs_the_package_as_of_a_fixed_commit():
    commit = nbtool.package_commit()
    assert commit, "this checkout has no git history: the Colab cell would install the default branch"
    source = nbtool.colab_setup_source()
    assert f'"sclecture @ git+{nbtool.repository_url()}@{commit}"' in source
    files = _run(["git", "ls-tree", "-r", "--name-only", commit, "--", "sclecture"], cwd=ROOT).stdout.split()
    assert "sclecture/__init__.py" in files, f"commit {commit} holds no package"
    assert nbtool.colab_setup_source() == source, "the cell must be the same for the same commit"


def test_the_cell_does_nothing_off_colab(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "google.colab", None)  # import fails, as off Colab
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a} off Colab"))
    exec(compile(nbtool.colab_setup_source(), "<colab-setup>", "exec"), {})
    assert capsys.readouterr().out == ""


def test_build_keeps_stored_outputs_when_only_the_colab_cell_changes(tmp_path, monkeypatch):
    lessons, solutions = tmp_path / "lessons", tmp_path / "solutions"
    lessons.mkdir()
    (lessons / "09_demo.py").write_text("# %% [markdown]\n# # Demo\n\n# %% [colab-setup]\n\n# %%\nprint(1)\n")
    monkeypatch.setattr(nbtool, "LESSONS", lessons)
    monkeypatch.setattr(nbtool, "SOLUTIONS", solutions)
    nbtool.build(["09_demo"])
    out = solutions / "09_demo" / "09_demo.ipynb"
    nb = nbformat.read(out, as_version=4)
    nb.cells[1].source = "# Colab setup: an older cell that installed another commit"
    nb.cells[1].execution_count = 1
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nb.cells[2].execution_count = 2
    nbformat.write(nb, out)
    nbtool.build(["09_demo"])
    rebuilt = nbformat.read(out, as_version=4)
    assert rebuilt.cells[1].source == nbtool.colab_setup_source()
    assert rebuilt.cells[2].outputs[0]["text"] == "1\n" and rebuilt.cells[2].execution_count == 2
    (lessons / "09_demo.py").write_text("# %% [markdown]\n# # Demo\n\n# %% [colab-setup]\n\n# %%\nprint(2)\n")
    nbtool.build(["09_demo"])
    assert nbformat.read(out, as_version=4).cells[2].outputs == [], "changed code must drop the stale outputs"


def test_wheel_holds_the_package_and_the_repository_url(tmp_path):
    names = zipfile.ZipFile(whl := _wheel(tmp_path)).namelist()
    for module in ["__init__", "training", "grading", "plotting", "datasets"]:
        assert f"sclecture/{module}.py" in names
    assert not any(n.startswith(("tests/", "solutions/", "notebooks/", "lessons/")) for n in names), \
        "solutions and tests must not ship inside the package"
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert f"Project-URL: Repository, {nbtool.repository_url()}" in meta
