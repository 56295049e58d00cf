"""Shared helpers of the benchmarks: machine description, timing, result tables."""

from __future__ import annotations

import csv
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# what decides a full scVI fit's numbers, as its rows record it (bench_scvi_genes.fit_settings)
SETTINGS = re.compile(r"(\d+) epochs, K=(\d+), (\d+) thread")

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def machine() -> str:
    """One line that says what the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    import torch

    dev = f", CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{os.cpu_count()} cores ({cpu}){mem}{dev}; Python {platform.python_version()}, torch {torch.__version__}"


LESSONS = sorted(p.stem for p in (ROOT / "lessons").glob("[0-9][0-9]_*.py"))  # the lessons' names, in order


def check_args(parser, args, at_least: dict | None = None, nonempty: tuple = ()) -> None:
    """Refuse (``parser.error``: a message naming the option, exit status 2) a command line that would measure
    nothing or crash later: a number, or any number of a list, below its minimum, or a list left empty."""
    for name in nonempty:
        if not getattr(args, name):
            parser.error(f"--{name.replace('_', '-')} needs at least one value")
    for name, low in (at_least or {}).items():
        value = getattr(args, name)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and v < low:
                parser.error(f"--{name.replace('_', '-')} must be at least {low}, got {v}")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def top_variance_genes(adata, n_genes: int):
    """``adata`` restricted to its ``n_genes`` genes of largest raw-count variance, in their original order
    (the selection of the scVI benchmarks, as the scVI paper's CORTEX)."""
    X = adata.X
    mean = np.asarray(X.mean(axis=0)).ravel()
    var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean**2
    return adata[:, np.sort(np.argsort(-var, kind="stable")[:n_genes])].copy()


class PeakMemory:
    """Peak resident memory (MiB) of a process and its children, sampled every 0.1 s."""

    def __init__(self, pid: int):
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.proc] + self.proc.children(recursive=True)
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
                self.peak = max(self.peak, rss / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_measured(cmd: list[str], cwd: Path | None = None, env: dict | None = None, timeout: int = 1800):
    """Run a command; return (seconds, peak MiB of its process tree, CompletedProcess-like)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakMemory(proc.pid) as mem:
        out, err = proc.communicate(timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
    return seconds, mem.peak


def package_worker(script: str, spec: dict, folder: Path, what: str) -> dict:
    """``script --worker <spec as JSON>`` in a fresh interpreter that imports sclecture from ``folder``: the dict
    its last output line holds. Refuses an answer from another copy of the package (the worker reports its
    ``sclecture`` folder)."""
    import json

    folder = Path(folder).resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, str(Path(script).resolve()), "--worker", json.dumps(spec)],
                         capture_output=True, text=True, env=env, cwd=ROOT)  # (relative data paths as set)
    if res.returncode != 0:
        raise RuntimeError(f"{what} {spec} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if Path(out["sclecture"]).resolve() != folder / "sclecture":
        raise RuntimeError(f"the {what} imported sclecture from {out['sclecture']}, not {folder / 'sclecture'}")
    return out


def copy_name(folder: Path) -> str:
    """What a copy of the package is, for a report: the last git commit that changed its sclecture/ ("1d3669d",
    "1d3669d + uncommitted changes to sclecture/ (<hash of those changes>)"), or its folder where it is not a git
    checkout."""
    folder = Path(folder).resolve()

    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)

    commit = git("log", "-1", "--format=%h", "--", "sclecture")
    top = git("rev-parse", "--show-toplevel").stdout.strip()
    if commit.returncode != 0 or not commit.stdout.strip() or not top or Path(top).resolve() != folder:
        return str(folder)
    dirty = git("status", "--porcelain", "--", "sclecture").stdout.strip()
    if not dirty:
        return commit.stdout.strip()
    import hashlib  # two different sets of changes get different names

    diff = hashlib.sha256((dirty + git("diff", "HEAD", "--", "sclecture").stdout).encode()).hexdigest()[:8]
    return f"{commit.stdout.strip()} + uncommitted changes to sclecture/ ({diff})"


def write_table(name: str, title: str, rows: list[dict], notes: str = "") -> Path:
    """benchmarks/results/<name>.csv and .md, with the machine line."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0].keys())
    with open(RESULTS / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)

    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = [f"## {title}", "", f"Measured on: {machine()}.", ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in rows:
        lines.append("| " + " | ".join(fmt(r[c]) for c in cols) + " |")
    if notes:
        lines += ["", notes]
    md = RESULTS / f"{name}.md"
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return md


def welch_half_width(var_a: float, var_b: float, n_a: int, n_b: int, level: float = 0.95) -> float:
    """Half the width of Welch's confidence interval for samples of these variances (ddof=1) and sizes."""
    from scipy import stats

    va, vb = var_a / n_a, var_b / n_b
    se = float(np.sqrt(va + vb))
    dof = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1)) if se > 0 else float("inf")
    return float(stats.t.ppf(0.5 + level / 2, dof)) * se


def welch_interval(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its Welch confidence interval (unequal variances)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    half = welch_half_width(a.var(ddof=1), b.var(ddof=1), len(a), len(b), level)
    d = float(a.mean() - b.mean())
    return d, d - half, d + half
