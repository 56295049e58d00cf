"""Installing the course: where torch comes from on each platform, how fast setup gives up on
an unreachable index, and a conda environment that holds everything the course needs.

The platform cases are dry runs of ``tools/setup_env.py``'s decision (nothing is installed);
pip runs only in ``--dry-run`` mode, against small wheels that the tests build themselves.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import setup_env  # noqa: E402  (tools/setup_env.py)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

CPU_STEP = ["--index-url", setup_env.CPU_INDEX, "torch"]
DEFAULT_STEP = ["torch"]
PIPC = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-c", str(ROOT / "constraints.txt")]


# ---------------------------------------------------------------- which torch, where
def test_linux_laptop_without_gpu_gets_the_cpu_build_first():
    plan = setup_env.torch_install_plan("Linux", "x86_64", has_gpu=False, torch_works=False)
    assert plan == [CPU_STEP, DEFAULT_STEP], "CPU index first, the default registry only as a fallback"
    assert setup_env.torch_install_plan("Linux", "aarch64", False, False) == [CPU_STEP, DEFAULT_STEP]


def test_linux_with_an_nvidia_gpu_gets_the_default_cuda_build():
    assert setup_env.torch_install_plan("Linux", "x86_64", has_gpu=True, torch_works=False) == [DEFAULT_STEP]


def test_apple_silicon_mac_gets_the_default_wheel():
    # macOS wheels have no CUDA; PyTorch's CPU index would add nothing there
    assert setup_env.torch_install_plan("Darwin", "arm64", has_gpu=False, torch_works=False) == [DEFAULT_STEP]


def test_intel_mac_stops_with_a_way_out():
    with pytest.raises(SystemExit, match=r"no wheels for Intel Macs.*Colab"):
        setup_env.torch_install_plan("Darwin", "x86_64", has_gpu=False, torch_works=False)


@pytest.mark.parametrize("system,machine,gpu", [("Linux", "x86_64", False), ("Linux", "x86_64", True),
                                                ("Darwin", "arm64", False), ("Darwin", "x86_64", False)])
def test_a_working_torch_is_kept(system, machine, gpu):
    assert setup_env.torch_install_plan(system, machine, gpu, torch_works=True) == []


def test_the_course_environment_counts_as_working():
    """This environment's torch imports and satisfies constraints.txt: setup would keep it."""
    assert setup_env.torch_works(PIPC)


def test_a_torch_outside_the_constraints_does_not_count(tmp_path):
    other = tmp_path / "constraints.txt"
    other.write_text("torch==1.0.0\n")
    assert not setup_env.torch_works([*PIPC[:-1], str(other)])


def test_every_pip_call_of_setup_carries_the_constraints(tmp_path):
    out = subprocess.run(["make", "-n", "setup", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    torch_lines = [l for l in out.splitlines() if "setup_env.py torch" in l]
    assert len(torch_lines) == 1, f"make setup installs torch through tools/setup_env.py:\n{out}"
    pip_lines = [l for l in out.splitlines() if re.search(r"-m pip (install|download)", l)]
    assert len(pip_lines) >= 2, out  # torch (through setup_env.py), then the course
    for line in pip_lines:
        assert "-c constraints.txt" in line, f"a pip call without the constraints (could pull CUDA torch): {line}"


# ---------------------------------------------------------------- the fallback, and how fast
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


def test_probe_refused_and_unroutable_index_answer_quickly():
    for url, timeout in [(f"http://127.0.0.1:{_closed_port()}/whl/cpu", 5.0),
                         ("http://192.0.2.1/whl/cpu", 2.0),  # TEST-NET-1: never routed
                         ("https://nonexistent.invalid/whl/cpu", 5.0)]:
        start = time.monotonic()
        assert not setup_env.index_reachable(url, timeout=timeout), url
        assert time.monotonic() - start < 20, f"probing {url} took {time.monotonic() - start:.1f} s"


def test_probe_finds_an_index_that_answers():
    class Index(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200 if self.path == "/whl/cpu/torch/" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert setup_env.index_reachable(f"http://127.0.0.1:{server.server_port}/whl/cpu")
        assert not setup_env.index_reachable(f"http://127.0.0.1:{server.server_port}/nothing")
    finally:
        server.shutdown()


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A minimal wheel: enough metadata for pip to resolve it."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                      + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}.dist-info/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    """A pip command whose only registry is a folder of test wheels (no config, no network)."""
    for var in [v for v in os.environ if v.startswith("PIP_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    folder = tmp_path / "wheels"
    folder.mkdir()
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--ignore-installed",
           "--no-index", "--find-links", str(folder)]
    return folder, pip


def _linux_without_gpu(monkeypatch):
    monkeypatch.setattr(setup_env.platform, "system", lambda: "Linux")
    monkeypatch.setattr(setup_env, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(setup_env, "torch_works", lambda pip: False)


def test_unreachable_cpu_index_falls_back_to_a_cpu_build_quickly(registry, monkeypatch, capsys):
    folder, pip = registry
    _wheel(folder, "torch", "2.13.0")  # a CPU build: no nvidia-* requirements
    _linux_without_gpu(monkeypatch)
    start = time.monotonic()
    rc = setup_env.main(["--dry-run", "--cpu-index", f"http://127.0.0.1:{_closed_port()}/whl/cpu", "torch", *pip])
    elapsed = time.monotonic() - start
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "cannot be reached; trying the default registry" in out
    command = [l for l in out.splitlines() if l.startswith("+ ")]
    assert command == ["+ " + " ".join([*pip, "torch"])], "the fallback installs torch from the default registry"
    assert elapsed < 20, f"the fallback took {elapsed:.1f} s"


def test_fallback_refuses_the_cuda_build_on_a_machine_without_gpu(registry, monkeypatch, capsys):
    folder, pip = registry
    _wheel(folder, "torch", "2.13.0", requires=("nvidia-cublas-cu12",))  # what PyPI's Linux wheel needs
    _wheel(folder, "nvidia-cublas-cu12", "12.9.1")
    _linux_without_gpu(monkeypatch)
    rc = setup_env.main(["--dry-run", "--cpu-index", f"http://127.0.0.1:{_closed_port()}/whl/cpu", "torch", *pip])
    captured = capsys.readouterr()
    assert rc == 1
    assert "+ " not in captured.out, "nothing may be installed"
    assert "only torch's CUDA build" in captured.err and "nvidia-cublas-cu12" in captured.err


def test_reachable_cpu_index_is_used(monkeypatch, capsys):
    _linux_without_gpu(monkeypatch)
    monkeypatch.setattr(setup_env, "index_reachable", lambda url, timeout=5.0: True)
    assert setup_env.main(["--dry-run", "torch", *PIPC]) == 0
    out = capsys.readouterr().out
    assert f"--index-url {setup_env.CPU_INDEX} torch" in out


# ---------------------------------------------------------------- Python versions
def test_python_versions_agree():
    """pyproject's requires-python, the Makefile's check and the README say the same."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.fullmatch(r">=\s*3\.(\d+)", requires)
    assert minimum, f"requires-python should be a plain lower bound, got {requires!r}"
    minor = int(minimum.group(1))
    assert f"sys.version_info >= (3, {minor})" in (ROOT / "Makefile").read_text(), \
        "the Makefile's Python check must match requires-python"
    assert f"Python 3.{minor} or newer" in (ROOT / "README.md").read_text(), \
        "the README's install paragraph must name the same minimum Python"


# ---------------------------------------------------------------- conda
CONDA_TO_PYPI = {"pytorch": "torch", "pytables": "tables"}


def _environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            for line in entry.get("pip", []):
                if not line.startswith("-"):
                    pip[canonicalize_name(Requirement(line).name)] = line
        else:
            name = re.split(r"[\s=<>!~\[]", entry, maxsplit=1)[0]
            conda[canonicalize_name(CONDA_TO_PYPI.get(name, name))] = entry
    return env, conda, pip


def test_environment_yml_has_every_dependency_of_the_course_and_its_tests():
    _, conda, pip = _environment()
    python = conda["python"].split("=")[1]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {"dependencies": project["dependencies"],
              "course": project["optional-dependencies"]["course"],
              "test": project["optional-dependencies"]["test"]}
    missing = []
    for group, requirements in wanted.items():
        for line in requirements:
            req = Requirement(line)
            if req.marker and not req.marker.evaluate({"python_version": python}):
                continue  # e.g. a backport that the environment's Python does not need
            name = canonicalize_name(req.name)
            if name not in conda and name not in pip:
                missing.append(f"{req.name} ({group})")
    assert not missing, (f"environment.yml lacks {', '.join(missing)}: add them to its dependencies "
                         f"(conda-forge name) or to its pip section")


def test_environment_yml_keeps_torch_cpu_only():
    _, conda, _ = _environment()
    spec = conda["torch"].split()
    assert spec[0] == "pytorch" and len(spec) == 3 and spec[2].startswith("cpu"), \
        f"environment.yml should ask conda-forge for a CPU build ('pytorch >=X cpu*'), got {conda['torch']!r}"


def test_containerfile_copies_everything_make_setup_reads():
    """The grading image runs `make setup` at build time: every file its recipe reads must be in it."""
    copied = set()
    for line in (ROOT / "Containerfile").read_text().splitlines():
        if line.startswith("COPY "):
            copied.update(p.rstrip("/") for p in line.split()[1:-1])
    recipe = subprocess.run(["make", "-n", "-B", "setup", "VENV=/nonexistent"], cwd=ROOT, capture_output=True,
                            text=True).stdout
    needed = {"pyproject.toml", "constraints.txt", "Makefile"} | {
        path.split("/")[0] for path in re.findall(r"\b(tools/[\w.]+\.py)", recipe)}
    needed |= {"sclecture"}  # installed by the recipe's `pip install -e .`
    assert needed <= copied, f"Containerfile does not COPY {sorted(needed - copied)}, which `make setup` needs"
