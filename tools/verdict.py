"""The grader's verdict on a submission, decided outside the student's kernel.

During grading a submission's kernel runs each test cell as usual, but every value its code
computes goes through ``sclecture.grading.recorder`` and lands, as plain JSON data, in a results
file. :func:`score` then *replays* each graded test cell of the instructor's source notebook
(``solutions/LESSON/LESSON.ipynb``, never the submission) in a separate trusted Python process:
``record(...)`` there returns the recorded value instead of calling the student's code, the
references come fresh from the course's own package, and the cell's asserts decide. A cell earns
its points when the replay raises nothing, else 0 with the failed check's message as the reason.

:func:`build_grading_package` writes the copy of ``sclecture`` that the submission's kernel
imports during grading: every function of the reference modules returns slightly perturbed
numbers there (a "canary") and notes the call, so an exercise that calls the course's reference
instead of computing the answer itself earns nothing, and :data:`REFERENCES` lets the reason
name the reference it called.

    python tools/verdict.py LESSON RESULTS.jsonl     print the verdict of one results file
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sclecture"
REPLAY_TIMEOUT = 300  # seconds for replaying all test cells of one lesson
CELL_TIMEOUT = 60  # seconds for one test cell's replay

# Modules whose functions become canaries in the grading build. The others hold no exercise's
# answer: data loading, the training loop, plotting, the grading helpers themselves.
CANARY_MODULES = ("linear", "mlp", "actinn", "factor", "vae", "scvi", "distributions", "preprocessing")
# plumbing that returns the data it was given (or checks it): perturbing it helps nobody
NOT_CANARIES = {"get_matrix", "to_dense_float", "check_counts", "select_genes", "_is_anndata"}
# canaries whose exercise returns whole numbers (counts, masks): they change some entries
DISCRETE_CANARIES = {"sclecture.distributions.sample_counts", "sclecture.actinn.filter_genes"}

# For each test cell: the course functions that compute what its exercise asks for. A student
# function that called one of them (seen through the canary) earns 0 for the cell, and the
# reason names it. Functions not listed still give perturbed values during grading.
REFERENCES: dict[str, list[str]] = {
    "setup-cpm-test": ["sclecture.preprocessing.normalize_total"],
    "linear-sigmoid-test": ["sclecture.linear.sigmoid", "sclecture.mlp.sigmoid",
                            "sclecture.linear.LogisticRegression.predict_proba"],
    "linear-loglik-test": ["sclecture.linear.log_likelihood", "sclecture.linear.bernoulli_log_likelihood",
                           "sclecture.vae.bernoulli_log_px"],
    "linear-gradient-test": ["sclecture.linear.log_likelihood_gradient"],
    "linear-ascent-test": ["sclecture.linear.gradient_ascent", "sclecture.linear.LogisticRegression.fit"],
    "linear-perceptron-test": ["sclecture.linear.perceptron_update", "sclecture.linear.Perceptron.fit"],
    "mlp-dense-test": ["sclecture.mlp.dense_layer", "sclecture.mlp.MLP.forward"],
    "mlp-relu-test": ["sclecture.mlp.relu", "sclecture.mlp.relu_derivative"],
    "mlp-softmax-test": ["sclecture.mlp.softmax", "sclecture.mlp.log_softmax", "sclecture.mlp.MLP.forward",
                         "sclecture.mlp.MLP.predict_proba", "sclecture.mlp.MLP._psi"],
    "mlp-categorical-test": ["sclecture.mlp.categorical_log_likelihood", "sclecture.mlp.log_softmax",
                             "sclecture.mlp.MLP.loss", "sclecture.mlp.MLP._nll",
                             "sclecture.mlp.categorical_nll_loss", "sclecture.actinn.actinn_loss"],
    "mlp-backward-test": ["sclecture.mlp.two_layer_backward", "sclecture.mlp.MLP.backward",
                          "sclecture.mlp.MLP._backward"],
    "mlp-gradcheck-test": ["sclecture.mlp.numerical_gradient"],
    "mlp-initial-loss-test": ["sclecture.mlp.initial_loss_check"],
    "mlp-tiny-subset-test": ["sclecture.mlp.tiny_subset"],
    "actinn-normalise-test": ["sclecture.actinn.normalize", "sclecture.preprocessing.normalize_total",
                              "sclecture.preprocessing.log1p_normalize"],
    "actinn-filter-test": ["sclecture.actinn.filter_genes", "sclecture.actinn._gene_moments"],
    "actinn-loss-test": ["sclecture.actinn.actinn_loss", "sclecture.actinn.ACTINNNet.loss"],
    "actinn-schedule-test": ["sclecture.actinn.staircase_lr"],
    "actinn-metrics-test": ["sclecture.actinn.accuracy_macro_f1", "sclecture.actinn.per_class_f1"],
    "actinn-reject-test": ["sclecture.actinn.reject_uncertain"],
    "actinn-choose-test": ["sclecture.actinn.choose_setting"],
    "fa-sample-test": ["sclecture.factor.sample_fa", "sclecture.factor._LinearGaussian.sample"],
    "fa-marginal-test": ["sclecture.factor.marginal_covariance", "sclecture.factor._LinearGaussian.get_covariance"],
    "gauss-loglik-test": ["sclecture.factor.average_log_likelihood", "sclecture.factor.mvn_logpdf",
                          "sclecture.factor.lowrank_mvn_logpdf"],
    "ppca-mle-test": ["sclecture.factor.ppca_mle", "sclecture.factor.PPCA.fit"],
    "ppca-posterior-test": ["sclecture.factor.ppca_posterior", "sclecture.factor.PPCA.posterior",
                            "sclecture.factor._LinearGaussian.posterior", "sclecture.factor._LinearGaussian.transform"],
    "vae-encoder-test": ["sclecture.vae.Encoder.forward"],
    "vae-kl-test": ["sclecture.vae.gaussian_kl", "sclecture.scvi.kl_normal"],
    "vae-gaussian-loglik-test": ["sclecture.vae.gaussian_log_px", "sclecture.mlp.gaussian_log_likelihood"],
    "vae-reparameterize-test": ["sclecture.vae.reparameterize"],
    "vae-elbo-test": ["sclecture.vae.minibatch_elbo", "sclecture.vae.VAE.elbo", "sclecture.vae.VAE.loss"],
    "scvi-log-nb-test": ["sclecture.distributions.log_nb", "sclecture.distributions._log_nb"],
    "scvi-log-zinb-test": ["sclecture.distributions.log_zinb", "sclecture.distributions._log_zinb"],
    "scvi-sample-test": ["sclecture.distributions.sample_counts"],
    "scvi-library-prior-test": ["sclecture.scvi.library_prior"],
    "scvi-elbo-test": ["sclecture.scvi.scvi_loss", "sclecture.scvi.elbo_loss", "sclecture.scvi.kl_normal"],
}


@dataclass
class Verdict:
    grade_id: str
    points: float
    max_points: float
    reason: str = ""  # "" when the cell earned its points


# ---------------------------------------------------------------- the grading build


def _canary_source(module: str, source: str) -> tuple[str, list[str]]:
    """``source`` with ``@_sclecture_canary("sclecture.module.name")`` on every function and method."""
    tree = ast.parse(source)
    names = []

    def decorate(node, qualname):
        short = node.name
        if short in NOT_CANARIES or short.startswith(("_check", "plot_")) or (short.startswith("__") and short.endswith("__")):
            return
        keywords = [ast.keyword("discrete", ast.Constant(True))] if qualname in DISCRETE_CANARIES else []
        node.decorator_list.append(ast.Call(func=ast.Name("_sclecture_canary", ast.Load()),
                                            args=[ast.Constant(qualname)], keywords=keywords))
        names.append(qualname)

    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            decorate(node, f"sclecture.{module}.{node.name}")
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    decorate(item, f"sclecture.{module}.{node.name}.{item.name}")
    at = 0
    for i, node in enumerate(tree.body):  # after the docstring and `from __future__` imports
        if (i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) or (
                isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            at = i + 1
    tree.body.insert(at, ast.ImportFrom(module="grading", names=[ast.alias("canary", "_sclecture_canary")], level=1))
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n", names


def build_grading_package(dest: Path) -> Path:
    """Write the grading build of ``sclecture`` to ``dest/sclecture``; return ``dest`` (for PYTHONPATH).

    Every function and method of the reference modules (:data:`CANARY_MODULES`) is wrapped in
    ``sclecture.grading.canary``: it still runs, so the lesson's ungraded cells that use the
    references (plots, training in quick mode) work, but its floating-point results are shrunk
    by a random 0.05 % to 0.15 % and the call is noted. The canary is applied where each
    function is defined, so aliases, ``getattr``, ``importlib`` and the references' own
    internal calls all reach it.
    """
    dest = Path(dest)
    target = dest / "sclecture"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for module in CANARY_MODULES:
        path = target / f"{module}.py"
        source, _ = _canary_source(module, path.read_text(encoding="utf-8"))
        path.write_text(source, encoding="utf-8")
    (target / "GRADING_BUILD").write_text(
        "This copy of the course package is the grading build: the reference functions return\n"
        "perturbed values. Exercises must be solved with your own code.\n", encoding="utf-8")
    return dest


def canary_names() -> set[str]:
    """The qualified names that get a canary in the grading build."""
    out = set()
    for module in CANARY_MODULES:
        out.update(_canary_source(module, (PACKAGE / f"{module}.py").read_text(encoding="utf-8"))[1])
    return out


# ---------------------------------------------------------------- test cells and results


def graded_test_cells(lesson: str, source_root: Path = ROOT / "solutions") -> list[tuple[str, float, str]]:
    """``(grade_id, points, source)`` of every autograded test cell of the lesson's source notebook."""
    import nbformat

    nb = nbformat.read(Path(source_root) / lesson / f"{lesson}.ipynb", as_version=4)
    cells = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            cells.append((meta["grade_id"], float(meta.get("points", 0)), cell.source))
    return cells


class ResultsError(Exception):
    """The results file is missing, too large or not what ``record`` writes."""


def read_results(path: Path | None) -> dict[str, list[dict]]:
    """The recorded entries of each test cell, in the order the kernel wrote them."""
    from sclecture.grading import MAX_FILE_BYTES

    if path is None or not Path(path).is_file():
        raise ResultsError("no values were recorded: the notebook did not run in the grader "
                           "(or it removed its results file)")
    size = Path(path).stat().st_size
    if size > MAX_FILE_BYTES + 2**20:
        raise ResultsError(f"the results file is too large ({size / 2**20:.0f} MB, at most "
                           f"{MAX_FILE_BYTES / 2**20:.0f} MB): it was written by something other than the test cells")
    by_cell: dict[str, list[dict]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(f"the results file cannot be read ({type(err).__name__})") from None
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                entry = json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            except (ValueError, RecursionError) as err:
                raise ResultsError(f"the results file is corrupt (line {lineno}: {str(err)[:100]})") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("cell"), str) or not isinstance(entry.get("name"), str):
                raise ResultsError(f"the results file is corrupt (line {lineno} is not a recorded value)")
            by_cell.setdefault(entry["cell"], []).append(entry)
    return by_cell


def score(lesson: str, results: Path | None, source_root: Path = ROOT / "solutions",
          timeout: float = REPLAY_TIMEOUT) -> dict[str, Verdict]:
    """Replay every graded test cell of ``lesson`` against the recorded ``results``.

    Never runs student code: the replay runs in a child process (so a bug in a test cell or
    a long reference computation cannot hang the grader) with the course's own package.
    """
    cells = graded_test_cells(lesson, source_root)
    verdicts = {gid: Verdict(gid, 0.0, pts, "") for gid, pts, _ in cells}
    try:
        records = read_results(results)
    except ResultsError as err:
        for v in verdicts.values():
            v.reason = str(err)
        return verdicts
    job = json.dumps({"cells": [[gid, src] for gid, _, src in cells],
                      "records": {gid: records.get(gid, []) for gid, _, _ in cells}})
    env = {k: v for k, v in os.environ.items() if k not in ("SCLECTURE_RECORD", "PYTHONPATH", "PYTHONSTARTUP")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg",
               PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen([sys.executable, "-X", "utf8", str(Path(__file__).resolve()), "--replay"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env=env, text=True)
    try:
        out, err = proc.communicate(job, timeout=timeout)
        problem = f"the grader's replay stopped (exit status {proc.returncode}): {err.strip()[-300:]}"
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        problem = f"the grader's replay of this cell did not finish within {timeout:g} s"
    done = {}
    for line in out.splitlines():
        try:
            item = json.loads(line)
            done[item["grade_id"]] = item
        except (ValueError, KeyError, TypeError):
            continue
    for gid, v in verdicts.items():
        item = done.get(gid)
        if item is None:
            v.reason = problem
            continue
        used = [r for r in item.get("refs", []) if r in REFERENCES.get(gid, [])]
        if used:
            v.reason = (f"called the course's reference {', '.join(used)}; exercises must be your own code "
                        "(the references in `sclecture` may be read, not called)")
        elif item["ok"]:
            v.points = v.max_points
        else:
            v.reason = item["reason"]
            others = [r for r in item.get("refs", []) if r not in REFERENCES.get(gid, [])]
            if others:
                v.reason += (f" (note: your code called {', '.join(others[:3])}, which gives slightly "
                             "perturbed values during grading; use your own functions)")
    return verdicts


# ---------------------------------------------------------------- the replay (child process)


class ReplayMismatch(AssertionError):
    """The recorded values do not belong to this cell as the grader runs it."""


def _recorded_exception(info: dict) -> Exception:
    """An exception like the one the student's code raised: same name, nearest built-in base."""
    base = Exception
    for name in info.get("bases", []):
        candidate = getattr(builtins, str(name), None)
        if isinstance(candidate, type) and issubclass(candidate, Exception):
            base = candidate
            break
    name = str(info.get("type", "Exception"))
    cls = base if base.__name__ == name else type(name, (base,), {"__module__": "submission"})
    try:
        err = cls(str(info.get("message", "")))
    except Exception:  # noqa: BLE001 - built-ins with other signatures (UnicodeError ...)
        err = type(name, (Exception,), {})(str(info.get("message", "")))
    err._recorded = True
    return err


class _Kept:
    """The replay's stand-in for a student's object recorded with ``keep=True``."""

    def __init__(self, name):
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr):
        raise ReplayMismatch(f"the test cell uses {self._name!r} outside record(): only record lambdas may use it")

    def __call__(self, *args, **kwargs):
        raise ReplayMismatch(f"the test cell calls {self._name!r} outside record(): only record lambdas may")


class _Replayer:
    def __init__(self, cell: str, own: str, entries: list[dict]):
        self.cell, self.own, self.entries, self.used, self.refs = cell, own, entries, 0, []

    def __call__(self, name, thunk=None, keep=False):
        from sclecture.grading import decode

        if self.cell != self.own:
            raise ReplayMismatch(f"this test cell records under {self.cell!r} but its grade_id is {self.own!r}")
        i = self.used
        if i >= len(self.entries):
            raise ReplayMismatch(
                f"no value was recorded for {name!r}: the test cell stopped early in the notebook "
                "(an error, a timeout or a crash before it), or the results file was changed")
        entry = self.entries[i]
        self.used += 1
        self.refs.extend(r for r in entry.get("refs", []) if isinstance(r, str))
        if entry.get("name") != str(name)[:500] or entry.get("seq") != i:
            raise ReplayMismatch(
                f"the recorded values do not match this test cell: value #{i + 1} should be {name!r}, "
                f"the results file has {str(entry.get('name'))[:80]!r} (tampering, or a cell run twice)")
        if keep:
            if "error" in entry:
                raise _recorded_exception(entry["error"] if isinstance(entry["error"], dict) else {})
            if "kept" not in entry:
                raise ReplayMismatch(f"{name}: the recorded entry is not the kept object the cell expects")
            return _Kept(str(name))
        if "oversized" in entry:
            raise AssertionError(f"{name}: the value is too large to grade ({entry['oversized'] / 2**20:.1f} MB)")
        if "unrecordable" in entry:
            raise AssertionError(f"{name}: returned {entry['unrecordable']}, which is not a number, array or tensor")
        if "error" in entry:
            raise _recorded_exception(entry["error"] if isinstance(entry["error"], dict) else {})
        if "value" not in entry:
            raise ReplayMismatch(f"{name}: the recorded entry holds no value")
        try:
            return decode(entry["value"])
        except (ValueError, TypeError, KeyError) as err:
            raise ReplayMismatch(f"{name}: the recorded value is corrupt ({err})") from None


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    if getattr(err, "_recorded", False):
        if isinstance(err, NotImplementedError):
            return "not implemented yet: your function raises NotImplementedError"
        return f"your code raised {type(err).__name__}: {text}"[:1000]
    if isinstance(err, AssertionError):
        return (text or "a check failed (AssertionError)")[:1000]
    return f"{type(err).__name__}: {text}"[:1000]


def _replay_main() -> None:
    import signal
    import warnings

    job = json.load(sys.stdin)
    import sclecture.grading as grading

    if Path(grading.__file__).resolve().parent != PACKAGE:
        raise SystemExit(f"the replay must use the course's own package, got {grading.__file__}")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    def on_alarm(signum, frame):
        raise TimeoutError(f"the grader's replay of this cell took longer than {CELL_TIMEOUT} s")

    signal.signal(signal.SIGALRM, on_alarm)
    for gid, source in job["cells"]:
        entries = job["records"].get(gid, [])
        replayers = []

        def recorder(cell, _gid=gid, _entries=entries):
            r = _Replayer(str(cell), _gid, _entries)
            replayers.append(r)
            return r

        grading.recorder = recorder
        namespace = {"__name__": "__main__"}
        ok, reason = True, ""
        signal.alarm(CELL_TIMEOUT)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                exec(compile(source, f"<test cell {gid}>", "exec"), namespace)  # noqa: S102 - instructor's source
            used = sum(r.used for r in replayers)
            if used != len(entries):
                raise ReplayMismatch(f"the results file holds {len(entries)} values for this cell, the cell asks "
                                     f"for {used} (tampering, or a cell run twice)")
        except Exception as err:  # noqa: BLE001 - any failure of the cell is the verdict
            ok, reason = False, _reason(err)
        finally:
            signal.alarm(0)
        refs = sorted({r for rep in replayers for r in rep.refs} |
                      {r for e in entries for r in (e.get("refs") or []) if isinstance(r, str)})
        print(json.dumps({"grade_id": gid, "ok": ok, "reason": reason, "refs": refs[:20]}), flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--replay"]:
        _replay_main()
        return
    if len(argv) != 2:
        raise SystemExit(__doc__)
    for v in score(argv[0], Path(argv[1])).values():
        print(f"{v.grade_id:32} {v.points:g}/{v.max_points:g}  {v.reason}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
