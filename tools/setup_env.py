"""Install PyTorch into the course's environment: the CPU build unless there is an NVIDIA GPU.

    python tools/setup_env.py torch PIP-INSTALL...     (the first install step of `make setup`)

PIP-INSTALL is the pip command that the Makefile uses for every install, constraints
included (``.venv/bin/python -m pip install -c constraints.txt``); this script only adds
where torch comes from (``torch_install_plan``):

  Linux without an NVIDIA GPU   PyTorch's CPU wheel index; when that cannot be reached, the
                                default registry, but only if it offers a CPU build there
                                (pip would install no ``nvidia-*`` package)
  Linux with an NVIDIA GPU      the default registry (its Linux wheels are the CUDA build)
  macOS on Apple silicon        the default registry (macOS wheels have no CUDA)
  macOS on Intel                stops with a message: PyTorch publishes no wheels for Intel
                                Macs after torch 2.2.2
  anything else                 the default registry

A torch that already imports in the environment and satisfies the constraints is kept as it
is (a CUDA or ROCm build that you installed yourself, or the one from an earlier run).
``--dry-run`` prints the pip commands instead of running them.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import threading
import urllib.request

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT = 5.0  # seconds: an unreachable index costs this, not pip's minutes of retries


def torch_install_plan(system: str, machine: str, has_gpu: bool, torch_works: bool,
                       cpu_index: str = CPU_INDEX) -> list[list[str]]:
    """pip arguments to try in turn (the first that succeeds wins); [] keeps the torch there is.

    ``system`` and ``machine`` as ``platform.system()`` / ``platform.machine()`` give them.
    """
    if torch_works:
        return []
    if system == "Darwin" and machine not in ("arm64", "aarch64"):
        raise SystemExit(
            "PyTorch publishes no wheels for Intel Macs after torch 2.2.2, and the course needs a "
            "newer one (constraints.txt). Run the lessons on Google Colab (each lesson's "
            "'Open in Colab' badge), or on Linux or an Apple-silicon Mac.")
    if system == "Linux" and not has_gpu:
        return [["--index-url", cpu_index, "torch"], ["torch"]]
    return [["torch"]]


def has_nvidia_gpu() -> bool:
    """True when `nvidia-smi` runs and finds a GPU (the CUDA build can then use it)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def index_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``url`` answers within ``timeout`` seconds (name lookup included)."""
    answer: list[bool] = []

    def probe():
        try:
            with urllib.request.urlopen(urllib.request.Request(url.rstrip("/") + "/torch/", method="HEAD"),
                                        timeout=timeout) as response:
                answer.append(response.status < 400)
        except Exception:  # noqa: BLE001 - any failure means: use the fallback
            answer.append(False)

    # urlopen's timeout does not bound the name lookup; a daemon thread does
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return bool(answer and answer[0])


def torch_works(pip: list[str]) -> bool:
    """torch imports with the environment's Python and already satisfies the constraints."""
    res = subprocess.run([*pip, "--dry-run", "--no-deps", "--no-index", "--quiet", "--report", "-", "torch"],
                         capture_output=True, text=True)
    if res.returncode != 0 or json.loads(res.stdout or "{}").get("install", [None]):
        return False  # none installed, or not the version the constraints ask for
    return subprocess.run([pip[0], "-c", "import torch; torch.zeros(1) + 1"], capture_output=True).returncode == 0


def cuda_packages(pip: list[str], args: list[str]) -> list[str] | None:
    """The ``nvidia-*`` packages that ``pip + args`` would install (None: pip cannot resolve)."""
    res = subprocess.run([*pip, "--dry-run", "--quiet", "--report", "-", *args], capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr[-2000:])
        return None
    names = [item["metadata"]["name"] for item in json.loads(res.stdout).get("install", [])]
    return sorted(n for n in names if n.lower().startswith("nvidia-"))


def install_torch(pip: list[str], cpu_index: str = CPU_INDEX, dry_run: bool = False) -> int:
    system, machine, gpu = platform.system(), platform.machine(), has_nvidia_gpu()
    plan = torch_install_plan(system, machine, gpu, torch_works(pip), cpu_index)
    if not plan:
        print("torch already works in this environment and satisfies the constraints: kept")
        return 0
    for args in plan:
        if "--index-url" in args:
            if not index_reachable(cpu_index):
                print(f"PyTorch's CPU index {cpu_index} cannot be reached; trying the default registry")
                continue
        elif system == "Linux" and not gpu:
            cuda = cuda_packages(pip, args)
            if cuda is None:
                continue
            if cuda:
                print(f"error: no NVIDIA GPU here, and the default registry offers only torch's CUDA build "
                      f"(it would install {', '.join(cuda)}: several GB). Connect to {cpu_index} and run "
                      f"`make setup` again, or install a CPU build of the torch that constraints.txt names into "
                      f"this environment yourself (setup keeps a torch that works).", file=sys.stderr)
                return 1
        command = [*pip, *args]
        print("+", " ".join(command), flush=True)
        if dry_run or subprocess.run(command).returncode == 0:
            return 0
    print(f"error: pip found no torch for Python {platform.python_version()} on {system} {machine} that "
          f"satisfies the constraints (see the pip output above). PyTorch's wheels cover a few Python "
          f"versions per release (https://pypi.org/project/torch/#files): run make with another one, "
          f"e.g. `make PYTHON=python3.12 setup`.", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["torch"])
    p.add_argument("--cpu-index", default=CPU_INDEX, help=f"PyTorch's CPU wheel index (default {CPU_INDEX})")
    p.add_argument("--dry-run", action="store_true", help="print the pip command instead of running it")
    p.add_argument("pip", nargs=argparse.REMAINDER, help="the pip install command, e.g. .venv/bin/python -m pip install -c constraints.txt")
    a = p.parse_args(argv)
    if not a.pip:
        p.error("give the pip install command to use, e.g. .venv/bin/python -m pip install -c constraints.txt")
    return install_torch(a.pip, a.cpu_index, a.dry_run)


if __name__ == "__main__":
    sys.exit(main())
