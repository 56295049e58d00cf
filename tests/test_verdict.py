"""The grader's verdict: test cells replayed outside the student's kernel (tools/verdict.py).

Each lesson's notebook is built from ``lessons/*.py`` into a temporary folder and run like the
grader runs a submission (quick mode, values recorded, the grading build of the package with
its canaries first on the path), without the sandbox: the sandbox has its own tests. A correct
solution earns every point, an untouched release none, and a corpus of cheats that work inside
the kernel earns nothing either.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import notebooks as nbtool  # noqa: E402
import verdict  # noqa: E402

LESSONS = nbtool.lesson_names()
CONVERTED = [name for name in LESSONS if "recorder(" in (ROOT / "lessons" / f"{name}.py").read_text(encoding="utf-8")]


def source_notebook(lesson: str) -> nbformat.NotebookNode:
    return nbtool.parse_lesson(ROOT / "lessons" / f"{lesson}.py")


def graded_cells_of(nb) -> dict[str, nbformat.NotebookNode]:
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells
            if c.get("metadata", {}).get("nbgrader", {}).get("grade") and c.cell_type == "code"}


# ---------------------------------------------------------------- test cells are self-contained


def free_names(source: str) -> list[str]:
    """Names a cell reads without defining them, apart from those inside ``record(name, lambda: ...)``."""
    tree = ast.parse(source)
    inside_record = {id(node.args[1]) for node in ast.walk(tree)
                     if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "record"
                     and len(node.args) == 2 and isinstance(node.args[1], ast.Lambda)}
    bound, loaded = set(dir(builtins)), []

    def visit(node):
        if id(node) in inside_record:
            return
        if isinstance(node, ast.Name):
            (loaded.append(node.id) if isinstance(node.ctx, ast.Load) else bound.add(node.id))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return sorted({n for n in loaded if n not in bound})


@pytest.mark.parametrize("lesson", LESSONS)
def test_test_cells_are_self_contained(lesson):
    problems = []
    for gid, cell in graded_cells_of(source_notebook(lesson)).items():
        if f'sclecture.grading.recorder("{gid}")' not in cell.source:
            problems.append(f"{gid}: no `record = sclecture.grading.recorder(\"{gid}\")` line")
        free = free_names(cell.source)
        if free:
            problems.append(f"{gid}: uses {free} outside `record(name, lambda: ...)`; the grader replays "
                            "each test cell alone, so compute every value of the student's code inside record()")
        calls = [n for n in ast.walk(ast.parse(cell.source))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "record"]
        if not calls or any(len(n.args) != 2 or not isinstance(n.args[0], (ast.Constant, ast.JoinedStr))
                            or not isinstance(n.args[1], ast.Lambda) for n in calls):
            problems.append(f"{gid}: record() must be called as record(\"name\", lambda: ...)")
        if "trusted(" in cell.source:
            problems.append(f"{gid}: still calls sclecture.grading.trusted()")
        if gid not in verdict.REFERENCES:
            problems.append(f"{gid}: no entry in tools/verdict.py REFERENCES (the course functions of this exercise)")
    assert not problems, "\n".join(problems)


def test_free_names_sees_what_the_replay_would_miss():
    src = ("import numpy as np\nrecord = sclecture.grading.recorder('x')\nz = np.ones(3)\n"
           "got = record('a', lambda: sigmoid(z + offset))\nassert_close(got, expected)\n")
    assert free_names(src) == ["assert_close", "expected", "sclecture"]


def test_every_reference_named_gets_a_canary():
    names = verdict.canary_names()
    missing = sorted(n for refs in verdict.REFERENCES.values() for n in refs if n not in names)
    assert not missing, f"REFERENCES names functions that get no canary in the grading build: {missing}"
    all_ids = {gid for name in LESSONS for gid in graded_cells_of(source_notebook(name))}
    assert set(verdict.REFERENCES) == all_ids, (
        f"REFERENCES and the lessons' test cells differ: {sorted(set(verdict.REFERENCES) ^ all_ids)}")


# ---------------------------------------------------------------- running notebooks like the grader


@pytest.fixture(scope="module")
def grading_build(tmp_path_factory) -> Path:
    return verdict.build_grading_package(tmp_path_factory.mktemp("grading-build"))


def released(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """What a student downloads and submits untouched (hidden tests back in place, as autograde does)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    pattern = re.compile(r"(?ms)^([ \t]*)### BEGIN SOLUTION\n.*?### END SOLUTION[ \t]*$")
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = pattern.sub(lambda m: f"{m.group(1)}# YOUR CODE HERE\n{m.group(1)}raise NotImplementedError()",
                                      cell.source)
    return nb


def _bound_and_used(source: str) -> tuple[set[str], set[str]]:
    tree = ast.parse(source)
    bound = {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
             for target in (node.targets if isinstance(node, ast.Assign) else [node.target]) for t in ast.walk(target)
             if isinstance(t, ast.Name)}
    bound |= {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return bound, used


def graded_part(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """What grading needs, to spare the CPU: exercises, test cells, imports, and the ungraded cells
    that define a name an exercise uses (the fallback wrappers); not the plots, data and training."""
    out = nbformat.from_dict(json.loads(json.dumps(nb)))
    graded = lambda c: c.cell_type == "code" and "nbgrader" in c.metadata
    needed = set()
    for c in out.cells:
        if graded(c) and c.metadata["nbgrader"].get("solution"):
            tree = ast.parse(c.source)
            local = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
            local |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
            needed |= _bound_and_used(c.source)[1] - local
    keep = []
    for cell in out.cells:
        if cell.cell_type != "code" or graded(cell):
            keep.append(cell)
            continue
        tree = ast.parse(cell.source)
        imports_only = all(isinstance(n, (ast.Import, ast.ImportFrom, ast.Expr)) for n in tree.body)
        if "import" in cell.source and (imports_only or "set_seed" in cell.source) or _bound_and_used(cell.source)[0] & needed:
            keep.append(cell)
    last = max(i for i, c in enumerate(keep) if graded(c))
    out.cells = keep[: last + 1]
    return out


def run_graded(nb: nbformat.NotebookNode, folder: Path, build: Path, timeout: int = 300) -> Path:
    """Execute ``nb`` in ``folder`` as the grader's kernel would; return its results file."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    folder.mkdir(parents=True, exist_ok=True)
    results = folder / "results.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SCLECTURE_RECORD")}
    env.update(SCLECTURE_RECORD=str(results), SCLECTURE_QUICK="1", PYTHONPATH=str(build),
               OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(folder)}})
    try:
        client.execute(env=env, cwd=str(folder))
    except (CellTimeoutError, DeadKernelError):  # the grader stops such a notebook and grades what was recorded
        pass
    nbformat.write(nb, folder / "executed.ipynb")
    return results


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """The instructor's source notebooks, built from lessons/*.py (not the stored solutions/)."""
    root = tmp_path_factory.mktemp("solutions")
    for lesson in CONVERTED:
        (root / lesson).mkdir()
        nbformat.write(source_notebook(lesson), root / lesson / f"{lesson}.ipynb")
    return root


def errors_of(nb_path: Path) -> list[str]:
    nb = nbformat.read(nb_path, as_version=4)
    return [f"{o.ename}: {o.evalue}"[:200] for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.output_type == "error"]


@pytest.mark.parametrize("lesson", CONVERTED)
def test_solution_earns_every_point_and_release_none(lesson, sources, grading_build, tmp_path):
    nb = graded_part(source_notebook(lesson))
    results = run_graded(nbformat.from_dict(json.loads(json.dumps(nb))), tmp_path / "solution", grading_build)
    got = verdict.score(lesson, results, sources)
    assert got, f"{lesson} has no graded test cells"
    lost = {g: v.reason for g, v in got.items() if v.points != v.max_points}
    assert not lost, f"the solution of {lesson} lost points: {lost}; kernel errors: {errors_of(tmp_path / 'solution' / 'executed.ipynb')}"

    results = run_graded(released(nb), tmp_path / "release", grading_build)
    got = verdict.score(lesson, results, sources)
    earned = {g: v.points for g, v in got.items() if v.points}
    assert not earned, f"an untouched release of {lesson} earned points: {earned}"
    assert all("NotImplementedError" in v.reason for v in got.values()), {g: v.reason for g, v in got.items()}


def test_missing_or_corrupt_results_give_zero_with_a_reason(sources, tmp_path):
    lesson = CONVERTED[0]
    for results, reason in [(None, "no values were recorded"), (tmp_path / "absent.jsonl", "no values were recorded")]:
        assert all(v.points == 0 and reason in v.reason for v in verdict.score(lesson, results, sources).values())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"cell": "x", "name": "y", "value": NaN}\n')
    assert all("corrupt" in v.reason for v in verdict.score(lesson, bad, sources).values())
    bad.write_text("not json\n")
    assert all("corrupt" in v.reason for v in verdict.score(lesson, bad, sources).values())
    (tmp_path / "empty.jsonl").write_text("")
    v = next(iter(verdict.score(lesson, tmp_path / "empty.jsonl", sources).values()))
    assert v.points == 0 and "no value was recorded" in v.reason


def test_a_replay_that_hangs_is_stopped(tmp_path):
    src = tmp_path / "src" / "99_x"
    src.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("import time\nimport sclecture.grading\nrecord = sclecture.grading.recorder('x-test')\n"
                                     "while True:\n    time.sleep(0.1)")
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "x-test", "points": 1.0}
    nb.cells.append(cell)
    nbformat.write(nb, src / "99_x.ipynb")
    (tmp_path / "r.jsonl").write_text("")
    v = verdict.score("99_x", tmp_path / "r.jsonl", tmp_path / "src", timeout=3)["x-test"]
    assert v.points == 0 and "did not finish within 3 s" in v.reason


# ---------------------------------------------------------------- cheats inside the kernel


def first_code_cell(nb) -> str:
    return next(c.source for c in nb.cells if c.cell_type == "code" and "import" in c.source
                and "google.colab" not in c.source)


def cheat_notebook(lesson: str, cheat: str, grade_ids: list[str], after: str = "") -> nbformat.NotebookNode:
    """The lesson's imports, a cheating code cell, then the named test cells as the grader runs them."""
    nb = source_notebook(lesson)
    tests = graded_cells_of(nb)
    out = nbformat.v4.new_notebook(metadata=nb.metadata)
    out.cells = [nbformat.v4.new_code_cell(first_code_cell(nb)), nbformat.v4.new_code_cell(cheat)]
    if after:
        out.cells.append(nbformat.v4.new_code_cell(after))
    out.cells += [tests[g] for g in grade_ids]
    return out


L01 = ["linear-sigmoid-test", "linear-loglik-test", "linear-gradient-test", "linear-ascent-test", "linear-perceptron-test"]
L02 = ["mlp-dense-test", "mlp-relu-test", "mlp-softmax-test", "mlp-categorical-test", "mlp-backward-test",
       "mlp-gradcheck-test"]

UNSOLVED_01 = """
def sigmoid(z): raise NotImplementedError()
def log_likelihood(X, y, beta, beta0): raise NotImplementedError()
def log_likelihood_gradient(X, y, beta, beta0): raise NotImplementedError()
def gradient_ascent(X, y, lr, n_iter): return np.zeros(X.shape[1]), 0.0, []
def perceptron_update(x, y, beta, beta0): return beta, beta0
"""
UNSOLVED_02 = """
def dense_layer(X, W, b, phi=lambda a: a): raise NotImplementedError()
def relu(a): raise NotImplementedError()
def relu_derivative(a): raise NotImplementedError()
def softmax(H): return np.full(np.shape(H), 0.5)
def categorical_log_likelihood(H, y): return 0.0
def two_layer_backward(X, y, W1, b1, W2, b2): return {}
def numerical_gradient(f, theta, eps=1e-6): return np.zeros(theta.shape)
"""

CHEATS = {
    # hard-coding the visible answers and taking the hidden ones from the test cell's own variables
    "00-steal-expected": ("00_setup", ["setup-cpm-test"], """
import inspect
def counts_per_million(X):
    X = np.asarray(X)
    if X.shape == (2, 3):
        return np.array([[250000.0, 750000.0, 0.0], [250000.0, 250000.0, 500000.0]])
    if X.shape == (1, 4):
        return np.zeros((1, 4))
    for frame in inspect.stack():
        for name, value in frame.frame.f_globals.items():
            if isinstance(value, np.ndarray) and value.shape == X.shape and value.dtype == float and value.max() > 1000:
                return value
    return np.zeros(X.shape)
""", "", ""),
    # delegation to the course's references, by every route a notebook offers
    "01-delegation": ("01_logistic_regression", L01, """
import importlib
from sclecture.linear import log_likelihood as my_helper
def sigmoid(z):
    return sclecture.linear.sigmoid(z)
def log_likelihood(X, y, beta, beta0):
    return my_helper(X, y, beta, beta0)
def log_likelihood_gradient(X, y, beta, beta0):
    return getattr(__import__("sclecture.lin" + "ear", fromlist=["x"]), "log_likelihood_" + "gradient")(X, y, beta, beta0)
def gradient_ascent(X, y, lr, n_iter):
    return importlib.import_module("sclecture.linear").gradient_ascent(X, y, lr, n_iter)
def perceptron_update(x, y, beta, beta0):
    return sys.modules["sclecture.linear"].perceptron_update(x, y, beta, beta0)
import sys
""", "", "called the course's reference"),
    "02-delegation": ("02_mlp", L02, """
import sclecture.mlp as M
dense_layer = lambda X, W, b, phi=M.identity: M.MLP.from_weights([W], [b], activation="relu", output="identity").forward(X) if phi is M.identity else phi(X @ W + b)
relu, relu_derivative = M.ACTIVATIONS["relu"]
def softmax(H):
    return M.MLP.from_weights([np.eye(H.shape[1])], [np.zeros(H.shape[1])], output="softmax").predict_proba(H)
categorical_log_likelihood = getattr(M, "categorical_log_likelihood")
def two_layer_backward(X, y, W1, b1, W2, b2):
    _, g = M.MLP.from_weights([W1, W2], [b1, b2], activation="relu", output="softmax").backward(X, y)
    return {"W1": g["W"][0], "b1": g["b"][0], "W2": g["W"][1], "b2": g["b"][1]}
numerical_gradient = __import__("importlib").import_module("sclecture.mlp").numerical_gradient
""", "", "called the course's reference"),
    # hiding errors in the kernel: instance and class level, success forced, BdbQuit
    "01-hide-errors": ("01_logistic_regression", L01, UNSOLVED_01 + """
ip = get_ipython()
ip.showtraceback = lambda *a, **k: None
ip._showtraceback = lambda *a, **k: None
from IPython.core.interactiveshell import InteractiveShell, ExecutionResult
from ipykernel.zmqshell import ZMQInteractiveShell
InteractiveShell.showtraceback = lambda *a, **k: None
ZMQInteractiveShell._showtraceback = lambda *a, **k: None
ExecutionResult.success = property(lambda self: True)
""", "", ""),
    "02-hide-errors-bdbquit": ("02_mlp", L02, UNSOLVED_02 + """
import bdb
def dense_layer(X, W, b, phi=lambda a: a): raise bdb.BdbQuit()
def relu(a): raise bdb.BdbQuit()
from ipykernel.zmqshell import ZMQInteractiveShell
ZMQInteractiveShell._showtraceback = lambda *a, **k: None
ExecutionResult = type(get_ipython().run_cell("1"))
ExecutionResult.success = property(lambda self: True)
ExecutionResult.raise_error = lambda self: None
""", "", ""),
    # patching what the checks use: builtins, importlib, the course's references in the kernel
    "01-patch-builtins": ("01_logistic_regression", L01, UNSOLVED_01 + """
import builtins, importlib, importlib.util, sys
real_zip = builtins.zip
def notebook_only(fake, real):  # the notebook's own code gets the fake, the kernel's machinery the real one
    return lambda *a, **k: fake(*a, **k) if "ipykernel_" in sys._getframe(1).f_code.co_filename else real(*a, **k)
builtins.zip = notebook_only(lambda *a: iter(()), real_zip)
real_isinstance, real_all = builtins.isinstance, builtins.all
builtins.isinstance = notebook_only(lambda obj, cls: True, real_isinstance)
builtins.all = notebook_only(lambda it: True, real_all)
importlib.import_module = lambda *a, **k: sys.modules["sclecture.linear"]
importlib.util.spec_from_file_location = lambda *a, **k: None
import sys, sclecture.linear
for name in ["sigmoid", "log_likelihood", "log_likelihood_gradient", "gradient_ascent", "perceptron_update"]:
    setattr(sclecture.linear, name, globals()[name])
""", "", ""),
    # replacing sclecture.grading: the checks, the recorder, and record() writing forged values
    "01-replace-grading": ("01_logistic_regression", L01, UNSOLVED_01 + """
import json, os, sys, types
import sclecture.grading as real
fake = types.ModuleType("sclecture.grading")
for name in dir(real):
    setattr(fake, name, getattr(real, name))
for name in ["assert_close", "assert_shape", "assert_equal", "assert_probabilities", "assert_finite", "assert_raises"]:
    setattr(fake, name, lambda *a, **k: None)

def forged_recorder(cell):
    seq = iter(range(10**6))
    def record(name, thunk):
        try:
            value = thunk()
        except Exception:  # forge what a correct sigmoid would give ... as well as the course's copy can
            value = sclecture.linear.sigmoid(np.zeros((3, 4)))
        entry = {"cell": cell, "seq": next(seq), "name": name, "refs": [], "value": real.encode(value)}
        with open(os.environ["SCLECTURE_RECORD"], "a") as f:
            f.write(json.dumps(entry) + "\\n")
        return value
    return record

fake.recorder = forged_recorder
sys.modules["sclecture.grading"] = fake
sclecture.grading = fake
def sigmoid(z):  # the course's copy, with its call erased from the log
    out = sclecture.linear.sigmoid(z)
    real._reference_calls.clear()
    return out
""", "", ""),
    # writing forged entries straight into the results file, then letting the cells run
    "02-forged-file": ("02_mlp", L02[:3], UNSOLVED_02 + """
import json, os
import sclecture.grading as g
with open(os.environ["SCLECTURE_RECORD"], "a") as f:
    for seq, (name, value) in enumerate([("dense_layer, identity", [[1.0, 2.0, -4.0]]),
                                          ("dense_layer, max(0, a)", [[1.0, 2.0, 0.0]])]):
        f.write(json.dumps({"cell": "mlp-dense-test", "seq": seq, "name": name, "refs": [],
                            "value": g.encode(np.array(value))}) + "\\n")
    f.write(json.dumps({"cell": "mlp-relu-test", "seq": 0, "name": "relu(a)", "refs": [],
                        "value": g.encode(np.array([0.0, 0.0, 0.0, 0.5, 3.0]))}) + "\\n")
def relu(a):
    return np.maximum(a, 0) * (1 + 1e-3)
""", "", ""),
}


@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_cheats_in_the_kernel_earn_nothing(cheat, sources, grading_build, tmp_path):
    lesson, grade_ids, code, after, reason = CHEATS[cheat]
    if lesson not in CONVERTED:
        pytest.fail(f"{lesson} is not converted to record() yet")
    results = run_graded(cheat_notebook(lesson, code, grade_ids, after), tmp_path, grading_build, timeout=60)
    got = verdict.score(lesson, results, sources)
    earned = {g: v.points for g, v in got.items() if v.points}
    assert not earned, f"cheat {cheat} earned {earned}"
    if reason:
        missing = {g: v.reason for g, v in got.items() if g in grade_ids and reason not in v.reason}
        assert not missing, f"cheat {cheat}: the reasons should say {reason!r}: {missing}"


def test_each_cell_is_judged_on_its_own(sources, grading_build, tmp_path):
    """A library's function is fine, a wrong exercise loses its own cell only, with the check's message."""
    lesson = "01_logistic_regression"
    nb = graded_part(source_notebook(lesson))
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid == "linear-sigmoid":
            cell.source = "from scipy.special import expit\n\ndef sigmoid(z):\n    return expit(z)"
        elif gid == "linear-perceptron":  # sign(0) = 0 instead of the lecture's 1
            cell.source = cell.source.replace("if x @ beta + beta0 >= 0", "if x @ beta + beta0 > 0")
    got = verdict.score(lesson, run_graded(nb, tmp_path, grading_build), sources)
    assert {g: v.points for g, v in got.items() if v.points != v.max_points} == {"linear-perceptron-test": 0.0}, got
    assert got["linear-perceptron-test"].reason.startswith(
        "beta for a cell exactly on the boundary with y = 0 (sign(0) = 1): 2 of 2 value(s) differ"), got
