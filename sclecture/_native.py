"""The compiled loops of scVI's likelihood (``_native.c``): built once per machine, or not used at all.

:func:`library` compiles ``_native.c`` with the system C compiler the first time it is needed and caches
the shared library under ``<cache_dir()>/native``, keyed by the source, the compiler, its flags and the
CPU (``-march=native`` code runs only on the CPU it was built for). It returns None, and
``sclecture.scvi`` keeps its torch code, when any of these holds; :func:`status` says which:

- ``SCLECTURE_NATIVE=0`` is set;
- the machine is not Linux on x86-64 with glibc 2.35 or newer (glibc's vector maths, libmvec, has
  log1pf from 2.35 on);
- no C compiler is found (``CC``, else ``cc`` or ``gcc``), or it fails;
- the built library does not reproduce the torch code on a small check.

Flags: ``-ffast-math`` at compile time lets the compiler call libmvec; the library is linked without
it, because gcc then links ``crtfastmath.o``, whose start-up code would switch the whole process to
flush denormals to zero.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

SOURCE = Path(__file__).with_name("_native.c")
COMPILE = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-fPIC", "-std=c99"]
LINK = ["-shared"]

_state: dict = {}  # "lib": the loaded library or None; "why": what status() reports
_lock = threading.Lock()  # one thread decides; the others wait for its decision


def _unsupported() -> str | None:
    if os.environ.get("SCLECTURE_NATIVE", "1").strip() == "0":
        return "turned off by SCLECTURE_NATIVE=0"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"needs Linux on x86-64, this is {platform.system()} on {platform.machine()}"
    libc, version = platform.libc_ver()
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if libc != "glibc" or parts < (2, 35):
        return f"needs glibc 2.35 or newer (for libmvec's log1pf), found {libc or 'no glibc'} {version}".rstrip()
    return None


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu() -> str:
    """The CPU's feature flags (what -march=native compiles for)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def build(folder: Path | None = None, compile_flags: list[str] | None = None) -> Path:
    """Compile ``_native.c`` (unless already built) and return the shared library's path. ``folder``: where
    to keep it (default ``<cache_dir()>/native``; when it may not be written, a fresh temporary folder);
    ``compile_flags`` replace :data:`COMPILE` (tests build for other CPUs). Raises RuntimeError naming the
    compiler's complaint."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found: install gcc, or name one in the CC environment variable")
    flags = COMPILE if compile_flags is None else list(compile_flags)
    version = _run([cc, "--version"]).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), cc, version, *flags, *LINK, _cpu()]).encode()).hexdigest()
    from .datasets import _writable, cache_dir

    folder = Path(cache_dir() / "native" if folder is None else folder)
    target = folder / f"sclecture_native_{key[:16]}.so"
    if target.exists():
        return target
    if not _writable(folder):  # a read-only cache (a shared one, a sandbox's): build for this process alone
        target = Path(tempfile.mkdtemp(prefix="sclecture-native-")) / target.name
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # built aside, then moved in one step
        obj, lib = Path(tmp) / "native.o", Path(tmp) / "native.so"
        for cmd in ([cc, *flags, "-c", str(SOURCE), "-o", str(obj)], [cc, *LINK, str(obj), "-o", str(lib), "-lm"]):
            done = _run(cmd)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")
        os.replace(lib, target)
    return target


def load(path: Path) -> ctypes.CDLL:
    """Load a built library and declare its functions' arguments."""
    lib = ctypes.CDLL(str(path))
    p, i = ctypes.c_void_p, ctypes.c_int64
    lib.zinb_all_entries.argtypes = [p, p, p, p, i, i, p, p, p, p]
    lib.nb_nonzero_dense.argtypes = [p, p, p, p, p, p, p, i, i, p, p, p]
    lib.nb_nonzero_sparse.argtypes = [p, p, p, p, p, p, p, p, p, p, i, p, p, p]
    lib.scale_by_cell.argtypes = [p, p, p, p, i, i, p, p, p]
    for f in (lib.zinb_all_entries, lib.nb_nonzero_dense, lib.nb_nonzero_sparse, lib.scale_by_cell):
        f.restype = None
    return lib


def _load_built() -> ctypes.CDLL:
    """load(build()), building again once if the cached file cannot be loaded (cut short, damaged). A library
    built into a temporary folder (read-only cache) is deleted once loaded: the process keeps it mapped."""
    path = build()
    try:
        lib = load(path)
    except OSError:
        path.unlink(missing_ok=True)
        path = build()
        lib = load(path)
    if path.parent.name.startswith("sclecture-native-"):
        shutil.rmtree(path.parent, ignore_errors=True)
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded library, built on first use; None where it cannot be used (see :func:`status`)."""
    if "lib" in _state:
        return _state["lib"]
    with _lock:
        if "lib" not in _state:
            why = _unsupported()
            lib = None
            if why is None:
                try:
                    lib = _load_built()
                    from .scvi import _native_matches_torch

                    why = _native_matches_torch(lib)
                except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                    why = f"could not build or load it: {err}"
            _state["why"], _state["lib"] = why, (lib if why is None else None)
    return _state["lib"]


def status() -> str:
    """What computes scVI's likelihood on a CPU here: "compiled loops", or "torch code: <why not the loops>"."""
    library()
    return "compiled loops" if _state["lib"] is not None else f"torch code: {_state['why']}"


def reset() -> None:
    """Forget the decision, so that the next :func:`library` call decides again (tests, after changing the
    environment)."""
    with _lock:
        _state.clear()
