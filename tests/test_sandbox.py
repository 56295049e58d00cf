"""The sandbox that every submission's kernel runs in (tools/sandbox.py), tested without nbgrader.

A short Python program runs in the sandbox as a kernel would, and reports what it can see and
do; the limits are tested with programs that break them. tests/test_attacks.py tests the same
through the grading command, with whole submissions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import grade as grading_tool  # noqa: E402  (tools/grade.py)
import sandbox  # noqa: E402  (tools/sandbox.py)


@pytest.fixture()
def settings(tmp_path_factory):
    import tempfile

    run = Path(tempfile.mkdtemp(prefix="sclecture-test-"))  # short: socket paths have a length limit
    package = run / "package"
    shutil.copytree(ROOT / "sclecture", package / "sclecture", ignore=shutil.ignore_patterns("__pycache__"))
    os.chmod(run, 0o755)
    for p in [package, *package.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    s = sandbox.Settings(run_dir=str(run), package_dir=str(package), memory_gb=1.0, notebook_timeout=60,
                         uid=sandbox.UID_BASE + 63 if os.geteuid() == 0 else None)
    s.job = str(sandbox.prepare_job(s, "job"))
    yield s
    shutil.rmtree(run, ignore_errors=True)


def run_inside(settings, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    sandbox.check_available()
    return subprocess.run(sandbox.command(settings, [sys.executable, "-c", code]), capture_output=True,
                          text=True, timeout=timeout)


PROBE = r"""
import json, os, socket, sys
out = {"uid": os.getuid(), "cwd": os.getcwd(), "root": sorted(os.listdir("/")),
       "repo": sorted(os.listdir(sys.argv[1])) if os.path.exists(sys.argv[1]) else None,
       "processes": len([p for p in os.listdir("/proc") if p.isdigit()])}
import sclecture
from sclecture import _native
out["package"], out["scVI on CPU"] = sclecture.__file__, _native.status()
for name, path in (("package", sclecture.__file__), ("venv", sys.prefix + "/pyvenv.cfg")):
    try:
        open(path, "a").write("#")
        out["wrote " + name] = True
    except OSError as err:
        out["wrote " + name] = type(err).__name__
try:
    socket.create_connection(("pypi.org", 443), timeout=3)
    out["network"] = True
except OSError as err:
    out["network"] = type(err).__name__
open(os.environ["HOME"] + "/scratch", "w").write("ok")
open(os.environ["SCLECTURE_RECORD"], "a").write("recorded\n")
print(json.dumps(out))
"""


def test_the_kernel_sees_nothing_of_the_course(settings):
    res = run_inside(settings, PROBE.replace("sys.argv[1]", repr(str(ROOT))))
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["package"].startswith("/opt/sclecture-grading/"), out  # the copy, not the checkout
    assert out["scVI on CPU"] == "torch code: turned off by SCLECTURE_NATIVE=0", out  # no compiler runs inside
    # of the repository only the environment is there when it lives inside it
    assert out["repo"] in (None, [".venv"]), out["repo"]
    assert out["wrote package"] != True and out["wrote venv"] != True, out  # noqa: E712
    assert out["network"] != True, out  # noqa: E712
    assert out["processes"] <= 3, out  # its own PID namespace: init, the program (and nothing else)
    if os.geteuid() == 0:
        assert out["uid"] == settings.uid, out
    assert (Path(settings.job) / "record.jsonl").read_text() == "recorded\n"


def test_memory_over_all_processes_is_limited_and_nothing_outlives_the_sandbox(settings):
    # four children of 400 MB each: each under the per-process ceiling, together over 1 GiB
    code = ("import subprocess, sys, time\n"
            "ps = [subprocess.Popen([sys.executable, '-c', \"import time; b = b'x' * (400 << 20); time.sleep(60)\"]) "
            "for _ in range(4)]\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen(sandbox.command(settings, [sys.executable, "-c", code]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watchdog = sandbox.Watchdog(settings, proc.pid)
    start = time.monotonic()
    assert watchdog.ns is not None
    proc.wait(timeout=50)
    watchdog.thread.join(timeout=5)
    assert "more than 1 GiB of memory" in watchdog.reason, watchdog.reason
    assert time.monotonic() - start < 40
    assert sandbox.processes_in(watchdog.ns) == []
    outcome = json.loads((Path(settings.job).parent / "job.outcome.json").read_text())
    assert outcome["killed"] == watchdog.reason and outcome["peak_memory_bytes"] > 2**30


def test_a_detached_process_ends_with_the_sandbox(settings):
    code = ("import os, subprocess, sys\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True)\n"
            "if os.fork() == 0:\n    os.setsid()\n    os.execv('/bin/sleep', ['sleep', '300'])\n")
    proc = subprocess.Popen(sandbox.command(settings, [sys.executable, "-c", code]))
    watchdog = sandbox.Watchdog(settings, proc.pid)
    proc.wait(timeout=60)  # the program returns at once; its init then ends the namespace
    watchdog.stop()
    assert sandbox.processes_in(watchdog.ns) == []
    assert watchdog.reason == ""


def test_without_bubblewrap_grading_refuses_unless_told(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        sandbox.check_available()
    with pytest.raises(SystemExit, match="(?s)refusing to run student code without a sandbox.*--unsafe-no-sandbox"):
        grading_tool.grade("00_setup", tmp_path, course=tmp_path / "c", quiet=True)
    # the explicit flag goes past the check (and on to the next problem: no submissions here)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no .ipynb files"):
        grading_tool.grade("00_setup", tmp_path / "empty", course=tmp_path / "c", quiet=True,
                           unsafe_no_sandbox=True)


NUMBA_PROBE = r"""
import json, os, sys
from numba.core.caching import NullCache
exec(WARMUP)
hits = misses = 0
for name, mod in list(sys.modules.items()):
    if name.split(".")[0] in ("scanpy", "umap", "pynndescent"):
        for obj in list(vars(mod).values()):
            stats = getattr(obj, "stats", None)
            cache = getattr(obj, "_cache", None)  # functions declared with cache=True only
            if cache is not None and not isinstance(cache, NullCache) and hasattr(stats, "cache_hits"):
                hits += sum(stats.cache_hits.values())
                misses += sum(stats.cache_misses.values())
seen = os.path.exists(os.environ["NUMBA_CACHE_DIR"] + "/written-by-a-kernel")
try:
    open(os.environ["NUMBA_CACHE_DIR"] + "/written-by-a-kernel", "w").write("x")
    wrote = True
except OSError:
    wrote = False
print(json.dumps({"hits": hits, "misses": misses, "cache": os.environ["NUMBA_CACHE_DIR"], "wrote": wrote, "seen": seen}))
"""


def test_kernels_load_the_warm_numba_cache_from_a_private_copy(tmp_path):
    """UMAP and scanpy do not compile again in every kernel, and no kernel changes another's cache."""
    run = Path(__import__("tempfile").mkdtemp(prefix="sclecture-test-"))
    try:
        from sclecture.datasets import cache_dir

        warm = grading_tool._numba_cache(run, str(cache_dir()))  # the one the grading command uses
        assert warm is not None and (Path(warm) / sandbox.WARM_MARKER).exists()
        before = sorted(p.name for p in Path(warm).rglob("*"))
        os.chmod(run, 0o755)
        outs = []
        for i in range(2):
            s = sandbox.Settings(run_dir=str(run), package_dir=str(ROOT), memory_gb=4.0, notebook_timeout=300,
                                 uid=sandbox.UID_BASE + 60 + i if os.geteuid() == 0 else None, numba_cache=warm)
            s.job = str(sandbox.prepare_job(s, f"job{i}"))
            res = run_inside(s, NUMBA_PROBE.replace("exec(WARMUP)", sandbox.WARMUP), timeout=300)
            assert res.returncode == 0, res.stderr[-2000:]
            outs.append(json.loads(res.stdout.strip().splitlines()[-1]))
        for i, out in enumerate(outs):
            # its own copy, writable, without what the other kernel wrote there
            assert out["cache"] == f"{run}/jobs/job{i}/numba" and out["wrote"] and not out["seen"], out
            assert out["hits"] > 0 and out["misses"] == 0, out  # every cached function loaded, none compiled
        # the warm cache itself is unchanged
        assert sorted(p.name for p in Path(warm).rglob("*")) == before
    finally:
        shutil.rmtree(run, ignore_errors=True)


def test_dev_shm_is_private_and_small(settings):
    """Semaphores work (numba's and joblib's locks), and /dev/shm cannot hold more than 64 MiB."""
    code = ("import multiprocessing, os\n"
            "multiprocessing.Lock()\n"
            "open('/dev/shm/mine', 'w').write('x')\n"
            "print(sorted(os.listdir('/dev/shm')))\n"
            "try:\n"
            "    with open('/dev/shm/big', 'wb') as f:\n"
            "        for _ in range(100):\n"
            "            f.write(bytes(2**20))\n"
            "    print('wrote 100 MiB')\n"
            "except OSError as err:\n"
            "    print('refused', err.errno)\n")
    res = run_inside(settings, code)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    listed = [n for n in eval(lines[0]) if not n.startswith("sem.")]  # (the lock's own file, on newer Pythons)
    assert listed == ["mine"], lines  # nothing of the machine's /dev/shm
    assert lines[1].startswith("refused"), lines
    assert not os.path.exists("/dev/shm/mine")


def test_a_bubblewrap_without_tmpfs_sizes_is_refused(monkeypatch, tmp_path):
    real = sandbox.bwrap_path()
    old = tmp_path / "bwrap"
    old.write_text("#!/bin/sh\necho 'bubblewrap 0.6.1'\n")
    old.chmod(0o755)
    assert sandbox.bwrap_version(str(old)) == (0, 6, 1)
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: str(old))
    with pytest.raises(sandbox.SandboxUnavailable, match=r"bubblewrap 0\.6\.1 is too old: grading needs 0\.7\.0"):
        sandbox.check_available()
    if real is not None:  # the one the other tests use
        assert (sandbox.bwrap_version(real) or sandbox.MIN_BWRAP) >= sandbox.MIN_BWRAP


def test_numba_warm_up_is_reused_read_only_and_a_failure_is_not_retried(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sandbox, "WARMUP", "import numba")  # a quick warm-up of its own (its own subfolder)
    cache, run = tmp_path / "cache", tmp_path / "run"
    shared = cache / "numba"  # where the grading command keeps it: beside the data cache
    warm = sandbox.warm_numba_cache(shared)
    assert warm is not None and warm.parent == shared and (warm / sandbox.WARM_MARKER).exists()
    assert sandbox.warm_numba_cache(shared, write=False) == warm
    # a marked folder is used even where it cannot be written, and nothing is warmed per run
    assert grading_tool._numba_cache(run, str(cache)) == str(warm)
    assert not (run / "numba").exists()
    # a failing warm-up is reported once, noted, and not run again
    monkeypatch.setattr(sandbox, "WARMUP", "import numba; raise SystemExit('no compiler here')")
    assert sandbox.warm_numba_cache(shared) is None
    assert "numba warm-up failed (no compiler here)" in capsys.readouterr().err
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    assert sandbox.warm_numba_cache(shared) is None and calls == []
    # the copy a kernel gets leaves the markers out
    s = sandbox.Settings(run_dir=str(run), package_dir=str(ROOT), numba_cache=str(warm))
    job = sandbox.prepare_job(s, "job")
    assert (job / "numba").is_dir() and not (job / "numba" / sandbox.WARM_MARKER).exists()
