"""Run each submission's kernel in a bubblewrap sandbox, with limits enforced from outside.

The grading process (nbgrader autograde, driven by tools/grade.py) never runs student code:
it talks to a kernel that runs inside ``bwrap`` over IPC-transport sockets in a folder of its
own. Inside the sandbox the kernel sees

* the system folders, the Python installation and the course's virtual environment, read-only;
* a read-only *copy* of the ``sclecture`` package (the grading build), on ``PYTHONPATH``;
* the data cache, read-only;
* a throw-away working folder, ``/tmp`` and ``HOME`` in memory;
* a private, writable copy of the grading run's warm numba cache (``NUMBA_CACHE_DIR``), so that
  UMAP and scanpy load their compiled functions instead of compiling them again in every
  kernel (about 20 s each, several times that on a loaded machine). The cache is filled by the
  grading process, never by a sandbox, and no kernel's writes reach another kernel's copy;
* its job folder (its sockets and the file ``SCLECTURE_RECORD`` where test cells record
  what the student's code returned), and nothing else of the machine: not the course folder,
  the gradebook, ``solutions/``, other students' submissions or the original download.

It has no network (own network namespace), its own PID namespace (it cannot see or signal
any other process; when the sandbox ends every process started in it ends too) and, when the
grading command runs as root, it runs as an unprivileged user id of its own, without
capabilities. Limits, all enforced by the grading process:

* memory: one budget over all processes of the sandbox (a watchdog sums their proportional
  set sizes every 0.1 s and kills the whole sandbox beyond it) plus an address-space limit per
  process (RLIMIT_AS) as a hard ceiling, a process-count limit (RLIMIT_NPROC, with the user
  id of its own) and a file-size limit;
* time: a per-cell timeout (nbgrader interrupts the cell; a kernel still busy ``grace``
  seconds later -- a loop that ignores KeyboardInterrupt -- is killed) and a per-notebook
  deadline after which the sandbox is killed.

``SandboxKernelManager`` is the jupyter_client kernel manager that nbgrader uses for this
(``--Execute.kernel_manager_class=sandbox.SandboxKernelManager``); it reads its settings from
the environment variable ``SCLECTURE_SANDBOX`` (JSON, written by :func:`Settings.to_env`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ENV = "SCLECTURE_SANDBOX"
MARKER = "SCLECTURE_SANDBOX_JOB"  # set inside every sandbox: tests find leftover processes by it
INSIDE_DATA = "/data/source"
INSIDE_CACHE = "/data/cache"
INSIDE_HOME = "/tmp/home"
INSIDE_WORK = "/tmp/work"
UID_BASE = 1_200_000_000  # unprivileged user ids for sandboxes (root only): no account uses them


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create a sandbox here."""


def bwrap_path() -> str | None:
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.path.exists(p)), None)


MIN_BWRAP = (0, 7, 0)  # the first with --size for a tmpfs


def bwrap_version(exe: str) -> tuple[int, ...] | None:
    """``bwrap --version`` as numbers (None if it does not say)."""
    import re
    import subprocess

    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(g or 0) for g in m.groups()) if m else None


def check_available() -> str:
    """The bwrap executable, after a trial run; raises SandboxUnavailable saying what to do."""
    import subprocess

    exe = bwrap_path()
    if exe is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed. Student code must not run with your rights: install it "
            "(Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: `sudo dnf install bubblewrap`), or "
            "grade inside the course's container (see the README, 'Grading runs student code').")
    version = bwrap_version(exe)
    if version is not None and version < MIN_BWRAP:
        raise SandboxUnavailable(
            f"bubblewrap {'.'.join(map(str, version))} is too old: grading needs {'.'.join(map(str, MIN_BWRAP))} or "
            "newer (its --size option caps the sandbox's in-memory /tmp and /dev/shm, which no memory limit sees). "
            "Install a newer bubblewrap (Debian 12 and Ubuntu 24.04 ship one; on older systems build it "
            "from https://github.com/containers/bubblewrap) or grade inside the course's container (see the README).")
    res = subprocess.run([exe, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
                          "--dev", "/dev", "true"], capture_output=True, text=True)
    if res.returncode != 0:
        raise SandboxUnavailable(
            f"bubblewrap cannot create a sandbox here ({res.stderr.strip()[:300]}). It needs user namespaces "
            "(as a normal user: `sysctl kernel.unprivileged_userns_clone=1` on older Debian kernels; "
            "Ubuntu 24.04: an AppArmor profile for bwrap) or root; in a container, run it with "
            "`--security-opt seccomp=unconfined` or `--privileged` (see the README).")
    return exe


@dataclass
class Settings:
    """What every sandbox of one grading run gets (JSON-serialisable)."""

    run_dir: str  # folder of this grading run: package copy, one folder per job
    package_dir: str  # the folder to put on PYTHONPATH (holds the `sclecture` copy)
    job: str = ""  # this kernel's job folder (under run_dir/jobs), set per submission
    uid: int | None = None  # unprivileged uid for the kernel (when grading as root)
    memory_gb: float = 4.0  # over all processes of the sandbox
    max_processes: int = 64
    max_file_gb: float = 1.0
    notebook_timeout: float = 1800.0  # seconds from the kernel's start
    grace: float = 10.0  # seconds a kernel gets to answer an interrupt before it is killed
    data_dir: str | None = None  # SCLECTURE_DATA_DIR of the trusted side, bound read-only
    cache_dir: str | None = None  # converted-data cache, bound read-only
    numba_cache: str | None = None  # warm numba cache (warm_numba_cache), copied into every job folder
    env: dict = field(default_factory=dict)  # extra environment for the kernel (SCLECTURE_QUICK, ...)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "Settings":
        raw = os.environ.get(ENV)
        if not raw:
            raise SandboxUnavailable(f"{ENV} is not set: SandboxKernelManager is meant to be used by tools/grade.py")
        return cls(**json.loads(raw))


# The scanpy calls of the lessons (neighbours, UMAP, highly variable genes, marker genes) on
# data of the lessons' types: numba compiles for argument types, not sizes.
WARMUP = r"""
import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad, scanpy as sc
rng = np.random.default_rng(0)
a = ad.AnnData(sp.csr_matrix(rng.poisson(0.5, size=(300, 400)).astype(np.float32)))
a.obs["cell_type"] = pd.Categorical(rng.choice(["a", "b", "c"], 300))
sc.pp.normalize_total(a, target_sum=1e4)
sc.pp.log1p(a)
sc.pp.highly_variable_genes(a, n_top_genes=100)
sc.pp.pca(a, n_comps=30, mask_var="highly_variable", random_state=0)
sc.pp.neighbors(a, random_state=0)
sc.tl.umap(a, random_state=0)
a.obsm["X_rep"] = rng.normal(size=(300, 10)).astype(np.float32)
sc.pp.neighbors(a, n_neighbors=15, use_rep="X_rep", key_added="rep", random_state=0)
sc.tl.umap(a, neighbors_key="rep", key_added="X_umap_rep", random_state=0)
sc.tl.rank_genes_groups(a, groupby="cell_type")
"""
WARM_MARKER = "warm.json"


def _stamp() -> dict | None:
    """What a warm cache is valid for: this environment, its compiling packages and the warm-up."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    def _version(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    stamp = {"python": os.path.realpath(sys.executable), "prefix": os.path.realpath(sys.prefix),
             "warmup": hashlib.sha256(WARMUP.encode()).hexdigest(),
             **{n: _version(n) for n in ("numba", "scanpy", "umap-learn", "pynndescent", "anndata")}}
    return None if stamp["numba"] is None or stamp["scanpy"] is None else stamp


def warm_numba_cache(folder: Path, timeout: float = 600, write: bool = True) -> Path | None:
    """The warm numba cache for the lessons' scanpy calls, under ``folder``; None if there is none.

    Each environment (interpreter, venv, package versions, warm-up) has a subfolder of its own,
    named by a hash of those and marked by a file that names them. A marked subfolder is used
    as it is, even read-only: it is only ever copied. Otherwise, with ``write``, :data:`WARMUP`
    runs once in this (trusted) Python, isolated from the current folder and PYTHON* variables
    (``-I``), with ``NUMBA_CACHE_DIR`` set to the subfolder and the sandbox's thread settings,
    under a lock so that concurrent grading runs warm it once. A failed warm-up is noted, with
    its reason, so that later runs do not retry it (delete the subfolder to retry); numba itself
    also checks every entry against its source file and the CPU.
    """
    import fcntl
    import hashlib
    import subprocess

    stamp = _stamp()
    if stamp is None:
        return None
    sub = Path(folder) / hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]
    marker, failed = sub / WARM_MARKER, sub / "failed.json"

    def ready():
        try:
            return json.loads(marker.read_text()) == stamp
        except (OSError, ValueError):
            return False

    if ready():
        return sub
    if not write or failed.exists():
        return None
    try:
        sub.mkdir(parents=True, exist_ok=True)
        with open(Path(folder) / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another grading run may be warming it now
            if ready():
                return sub
            env = {**os.environ, "NUMBA_CACHE_DIR": str(sub), "MPLBACKEND": "Agg", "OMP_WAIT_POLICY": "PASSIVE",
                   "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
            print(f"compiling UMAP's and scanpy's numba functions once for the sandboxes (about 30 s; kept in {sub})",
                  file=sys.stderr, flush=True)
            try:
                res = subprocess.run([sys.executable, "-I", "-c", WARMUP], env=env, cwd=sub, capture_output=True,
                                     text=True, timeout=timeout)
                why = None if res.returncode == 0 else (res.stderr.strip().splitlines() or ["exit " + str(res.returncode)])[-1]
            except subprocess.TimeoutExpired:
                why = f"no result within {timeout:g} s"
            out = failed if why else marker
            tmp = sub / f".{out.name}.{os.getpid()}"
            tmp.write_text(json.dumps({**stamp, "error": why} if why else stamp))
            os.replace(tmp, out)  # the marker appears whole or not at all
    except OSError as err:
        why = str(err)
    if why:
        print(f"warning: the numba warm-up failed ({why[:300]}); each sandbox compiles UMAP again (about 20 s)",
              file=sys.stderr, flush=True)
        return None
    return sub


def prepare_job(settings: Settings, name: str) -> Path:
    """A fresh job folder (sockets, record file) that the sandbox's user may write."""
    job = Path(settings.run_dir) / "jobs" / name
    if job.exists():
        shutil.rmtree(job)
    job.mkdir(parents=True)
    record = job / "record.jsonl"
    record.touch()
    owned = [job, record]
    if settings.numba_cache and os.path.isdir(settings.numba_cache):
        shutil.copytree(settings.numba_cache, job / "numba", ignore=shutil.ignore_patterns(WARM_MARKER, "failed.json", ".*"))
        owned += [job / "numba", *(job / "numba").rglob("*")]
    for p in owned:
        if settings.uid is not None:
            os.chown(p, settings.uid, settings.uid)
    os.chmod(job, 0o700)
    os.chmod(record, 0o600)
    return job


def _parents(path: str) -> list[str]:
    out, p = [], Path(path).parent
    while str(p) != "/":
        out.append(str(p))
        p = p.parent
    return out[::-1]


def command(settings: Settings, argv: list[str], exe: str | None = None) -> list[str]:
    """The bwrap command line that runs ``argv`` in the sandbox of ``settings.job``."""
    exe = exe or bwrap_path() or "bwrap"
    job = settings.job
    binds: list[tuple[str, str, str]] = []  # (option, source, destination)
    for d in ("/usr", "/etc"):
        binds.append(("--ro-bind", d, d))
    prefixes = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    exe_real = os.path.realpath(argv[0]) if argv and os.path.isabs(argv[0]) else None
    if exe_real and not any(exe_real.startswith(p + "/") for p in prefixes | {"/usr"}):
        prefixes.add(str(Path(exe_real).parents[1]))
    for p in sorted(prefixes):
        if not p.startswith("/usr/"):
            binds.append(("--ro-bind", p, p))
    if sys.prefix != os.path.realpath(sys.prefix) and not sys.prefix.startswith("/usr/"):
        binds.append(("--ro-bind", sys.prefix, sys.prefix))  # the venv by the path its scripts use
    binds.append(("--ro-bind", settings.package_dir, "/opt/sclecture-grading"))
    if settings.data_dir and os.path.isdir(settings.data_dir):
        binds.append(("--ro-bind", settings.data_dir, INSIDE_DATA))
    if settings.cache_dir and os.path.isdir(settings.cache_dir):
        binds.append(("--ro-bind", settings.cache_dir, INSIDE_CACHE))
    binds.append(("--bind", job, job))

    args = [exe, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv", "--hostname", "grading"]
    root = os.geteuid() == 0
    if not root:  # without root, a user namespace maps the instructor's own user id
        args += ["--unshare-user", "--disable-userns"]
    for name in ("lib", "lib64", "bin", "sbin"):
        if os.path.islink(f"/{name}"):
            args += ["--symlink", os.readlink(f"/{name}"), f"/{name}"]
    # /dev/shm: the sandbox's own, small (its pages count against no process), for the semaphores of
    # numba's and joblib's multiprocessing locks
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(64 << 20), "--tmpfs", "/dev/shm",
             "--size", str(512 << 20), "--tmpfs", "/tmp",
             "--dir", INSIDE_HOME, "--dir", INSIDE_WORK]
    for opt, src, dest in binds:
        args += [opt, src, dest]
    # folders that bwrap creates for mount points are 0700: open them for the kernel's user
    made = sorted({p for _, _, dest in binds for p in _parents(dest)} - {d for _, _, d in binds} - {"/tmp"})
    for p in made:
        args += ["--chmod", "0755", p]
    if root and settings.uid is not None:
        args += ["--chmod", "0777", INSIDE_HOME, "--chmod", "0777", INSIDE_WORK]
    env = {
        "HOME": INSIDE_HOME, "PATH": f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
        "PYTHONPATH": "/opt/sclecture-grading", "PYTHONNOUSERSITE": "1", "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{INSIDE_HOME}/.matplotlib", "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "SCLECTURE_RECORD": f"{job}/record.jsonl",
        # no C compiler runs in the sandbox: scVI's likelihood stays in torch code (sclecture/_native.py)
        "SCLECTURE_NATIVE": "0",
        "SCLECTURE_CACHE_DIR": INSIDE_CACHE if settings.cache_dir and os.path.isdir(settings.cache_dir)
        else f"{INSIDE_HOME}/cache",
        MARKER: f"{os.path.basename(settings.run_dir)}/{os.path.basename(job)}", **settings.env,
    }
    if settings.data_dir and os.path.isdir(settings.data_dir):
        env["SCLECTURE_DATA_DIR"] = INSIDE_DATA
    env["NUMBA_CACHE_DIR"] = f"{job}/numba" if os.path.isdir(f"{job}/numba") else f"{INSIDE_HOME}/.cache/numba"
    for k, v in env.items():
        args += ["--setenv", k, str(v)]
    args += ["--chdir", INSIDE_WORK, "--"]
    gib = 2**30
    # per-process ceilings (the watchdog keeps the sum of all processes under memory_gb)
    args += ["prlimit", f"--as={int((max(settings.memory_gb, 1.0) + 2) * gib)}", f"--fsize={int(settings.max_file_gb * gib)}",
             "--core=0"]
    if root and settings.uid is not None:
        args += [f"--nproc={settings.max_processes}", "--",
                 "setpriv", f"--reuid={settings.uid}", f"--regid={settings.uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    else:
        args += ["--"]
    return args + list(argv)


# ----------------------------------------------------------------------------- processes
def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _pidns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def processes_in(ns: str) -> list[int]:
    """Host pids of every process in the PID namespace ``ns`` ("pid:[inode]")."""
    return [p for p in _pids() if _pidns(p) == ns]


def memory_of(pids: list[int]) -> int:
    """Bytes of memory the processes use: proportional set sizes (shared pages counted once)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError):
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError):
                pass
    return total


class Watchdog:
    """Watches one sandbox from outside: memory over all its processes, deadlines, the kill."""

    def __init__(self, settings: Settings, bwrap_pid: int, log=None):
        self.settings, self.bwrap_pid, self.log = settings, bwrap_pid, log
        self.started = time.monotonic()
        self.deadline = self.started + settings.notebook_timeout
        self.ns: str | None = None
        self.kernel_pid: int | None = None
        self.reason = ""  # why the sandbox was killed ("" while it was not)
        self.peak = 0
        self.interrupted_at: float | None = None
        self.idle_after_interrupt = threading.Event()
        self._stop = threading.Event()
        self._find_namespace()
        self.thread = threading.Thread(target=self._run, daemon=True, name="sandbox-watchdog")
        self.thread.start()

    def _find_namespace(self, wait: float = 10.0) -> None:
        end = time.monotonic() + wait
        while time.monotonic() < end and self.ns is None:
            init = next((p for p in _pids() if _ppid(p) == self.bwrap_pid), None)
            if init is not None:
                ns = _pidns(init)
                if ns and ns != _pidns(os.getpid()):
                    self.ns = ns
                    break
            time.sleep(0.01)

    def kernel(self) -> int | None:
        """Host pid of the kernel (the sandbox's init's child)."""
        if self.kernel_pid is None and self.ns:
            procs = processes_in(self.ns)
            init = next((p for p in procs if _ppid(p) == self.bwrap_pid), None)
            self.kernel_pid = next((p for p in procs if init is not None and _ppid(p) == init), None)
        return self.kernel_pid

    def _run(self) -> None:
        limit = self.settings.memory_gb * 2**30
        while not self._stop.wait(0.1):
            now = time.monotonic()
            if self.ns:
                used = memory_of(processes_in(self.ns))
                self.peak = max(self.peak, used)
                if used > limit:
                    self.kill(f"used more than {self.settings.memory_gb:g} GiB of memory (all its processes together)")
            if now > self.deadline:
                self.kill(f"ran longer than {self.settings.notebook_timeout:g} s (the limit per notebook)")
            if (self.interrupted_at is not None and not self.idle_after_interrupt.is_set()
                    and now > self.interrupted_at + self.settings.grace):
                self.kill(f"did not stop within {self.settings.grace:g} s of being interrupted "
                          "(a loop that ignores KeyboardInterrupt?)")
            if self.reason:
                return

    def interrupt(self) -> None:
        """SIGINT to the kernel, then a kill if it is not idle within ``grace`` seconds."""
        pid = self.kernel()
        self.idle_after_interrupt.clear()
        self.interrupted_at = time.monotonic()
        if pid:
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def kill(self, reason: str = "") -> None:
        """Kill every process of the sandbox and wait until none is left."""
        if reason and not self.reason:
            self.reason = reason
            if self.log:
                self.log.warning("sandbox %s killed: %s", os.path.basename(self.settings.job), reason)
        self.write_outcome()
        for _ in range(200):
            procs = processes_in(self.ns) if self.ns else []
            alive = [self.bwrap_pid] if os.path.exists(f"/proc/{self.bwrap_pid}") and _ppid(self.bwrap_pid) == os.getpid() else []
            for pid in alive + procs:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if not procs:
                return
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self.kill()
        self.thread.join(timeout=5)
        self.write_outcome()

    def write_outcome(self) -> None:
        """``jobs/<name>.outcome.json`` beside the job folder, where the sandbox cannot write."""
        job = Path(self.settings.job)
        (job.parent / f"{job.name}.outcome.json").write_text(json.dumps(
            {"killed": self.reason, "peak_memory_bytes": self.peak,
             "seconds": round(time.monotonic() - self.started, 2)}))


# ----------------------------------------------------------------------------- nbclient's side
try:
    from jupyter_client.manager import AsyncKernelManager
except ImportError:  # the module is also imported by tools that do not start kernels
    AsyncKernelManager = object  # type: ignore[assignment,misc]


class SandboxKernelManager(AsyncKernelManager):  # type: ignore[misc,valid-type]
    """A kernel manager whose kernel runs in the sandbox described by ``SCLECTURE_SANDBOX``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sandbox = Settings.from_env()
        self.job_dir = Path(self.sandbox.job)
        self.transport = "ipc"
        self.ip = str(self.job_dir / "kernel")
        self.connection_file = str(self.job_dir / "kernel.json")
        self.watchdog: Watchdog | None = None
        self._status_thread: threading.Thread | None = None

    def write_connection_file(self, **kwargs):
        super().write_connection_file(**kwargs)
        if self.sandbox.uid is not None:
            os.chown(self.connection_file, self.sandbox.uid, self.sandbox.uid)

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        kw.pop("cwd", None)  # the kernel works in a throw-away folder, not in the course
        kw["env"] = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # bwrap's own; the kernel's is set by --setenv
        await super()._async_launch_kernel(command(self.sandbox, kernel_cmd), **kw)
        self.watchdog = Watchdog(self.sandbox, self.provisioner.process.pid, self.log)
        self._status_thread = threading.Thread(target=self._watch_status, daemon=True, name="sandbox-status")
        self._status_thread.start()

    def _watch_status(self) -> None:
        """Follow the kernel's busy/idle messages (to tell an interrupted cell that stopped)."""
        import zmq

        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(f"ipc://{self.ip}-{self.iopub_port}")
        try:
            while self.watchdog is not None and not self.watchdog.reason and not self.watchdog._stop.is_set():
                if not sub.poll(200):
                    continue
                parts = sub.recv_multipart()
                try:
                    i = parts.index(b"<IDS|MSG>")
                    header = json.loads(parts[i + 2])
                    content = json.loads(parts[i + 5])
                except (ValueError, IndexError):
                    continue
                if header.get("msg_type") == "status" and content.get("execution_state") == "idle":
                    self.watchdog.idle_after_interrupt.set()
        except zmq.ZMQError:
            pass
        finally:
            sub.close()
            ctx.term()

    # AsyncKernelManager binds its public names to KernelManager's coroutines: override those names
    async def interrupt_kernel(self):
        """Interrupt the cell; a kernel not idle ``grace`` seconds later is killed (and nbclient told
        at once, rather than after waiting for output from a dead kernel)."""
        import asyncio

        from nbclient.exceptions import DeadKernelError

        w = self.watchdog
        if w is None:
            return
        w.interrupt()
        end = time.monotonic() + self.sandbox.grace
        while time.monotonic() < end and not w.idle_after_interrupt.is_set() and not w.reason:
            await asyncio.sleep(0.1)
        if not w.idle_after_interrupt.is_set():
            w.kill(f"did not stop within {self.sandbox.grace:g} s of being interrupted "
                   "(a loop that ignores KeyboardInterrupt?)")
            raise DeadKernelError(f"the kernel {w.reason}")

    async def signal_kernel(self, signum):
        pid = self.watchdog.kernel() if self.watchdog is not None else None
        if pid:
            os.kill(pid, signum)

    async def _kill_kernel(self, restart: bool = False):
        if self.watchdog is not None:
            self.watchdog.kill()
        await AsyncKernelManager._kill_kernel(self, restart=restart)

    async def shutdown_kernel(self, now: bool = False, restart: bool = False):
        # nothing of the submission deserves a graceful shutdown: kill it, then clean up
        try:
            await AsyncKernelManager.shutdown_kernel(self, now=True, restart=restart)
        finally:
            if self.watchdog is not None:
                self.watchdog.stop()
