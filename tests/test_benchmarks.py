"""The benchmarks' own code paths run against the current package (tiny sizes, no timing claims)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_scaling  # noqa: E402  (benchmarks/bench_scaling.py)
import bench_scvi  # noqa: E402


@pytest.mark.parametrize("trainer", bench_scaling.TRAINERS)
def test_scaling_worker_trains_every_trainer_on_a_small_problem(tmp_path, trainer):
    bench_scaling.make_data([300], tmp_path)
    r = bench_scaling.worker(trainer, 300, tmp_path, threads=1)
    assert r["trainer"] == trainer and r["n"] == 300
    assert len(r["epoch_s"]) == bench_scaling.epochs_for(300)  # one timestamp per epoch: the hooks saw every epoch
    assert all(s > 0 for s in r["epoch_s"]) and r["cpu_per_epoch"] > 0
    assert r["data_mib"] > 0 and np.isfinite(r["train_extra"])


def test_welch_interval_agrees_with_scipys_welch_test():
    rng = np.random.default_rng(0)
    for shift in (0.0, 0.5, 3.0):
        a, b = rng.normal(shift, 1.0, 8), rng.normal(0.0, 2.0, 8)
        d, lo, hi = bench_scvi.welch_interval(a, b)
        assert d == pytest.approx(a.mean() - b.mean())
        p = stats.ttest_ind(a, b, equal_var=False).pvalue
        assert (lo > 0 or hi < 0) == (p < 0.05)  # the 95 % interval excludes 0 exactly when the test rejects


def test_likelihood_verdict_reads_the_interval_of_a_loss():
    assert bench_scvi.likelihood_verdict(-1.0, -2.0, -0.1) == "better"  # lower -log p(x) is better
    assert bench_scvi.likelihood_verdict(1.0, 0.1, 2.0) == "worse"
    assert bench_scvi.likelihood_verdict(0.3, -1.0, 1.6).startswith("no difference")


def test_scvi_full_fit_gives_every_measure_for_the_course(monkeypatch):
    monkeypatch.setattr(bench_scvi, "N_GENES", 100)  # a smaller problem; the split and pipeline are the same
    monkeypatch.setattr(bench_scvi, "_DATA", {})
    rows, line = bench_scvi.full_fit("sclecture", 3, epochs=2, warmup=1, mc_samples=3, threads=1)
    measures = {r[1]: r[2] for r in rows}
    assert set(measures) == {"fit_s", "fit_epoch_s", "neg_elbo", "neg_marginal_ll", "ari", "nmi", "silhouette"}
    assert all(r[0] == "sclecture" and r[3] == "seed 3" for r in rows)
    assert all(np.isfinite(v) for v in measures.values()) and measures["neg_marginal_ll"] > 0
    assert -1 <= measures["ari"] <= 1 and line.startswith("seed 3 sclecture:")


def _genes_args(**given):
    """Settings of bench_scvi_genes.py's command line (the report and resume code read them), ``given`` changed."""
    import argparse

    settings = dict(datasets=[], rounds=0, timing_epochs=20, before=None, quality=[], threads=1, mc_samples=100,
                    out="q", epochs=400, seeds=[0], jobs=1, resume=False)
    return argparse.Namespace(**{**settings, **given})


def test_scvi_genes_report_gives_each_rounds_ratio(tmp_path, monkeypatch):
    import bench_scvi_genes

    monkeypatch.setattr(bench_scvi_genes, "RESULTS", tmp_path)
    key = "pbmc3k-2000"
    rows = [(key, "check", "loss_rel_diff", 0.0, ""), (key, "check", "grad_rel_diff", 1e-7, "")]
    for r, (ours, peer) in enumerate([(7000.0, 3500.0), (6600.0, 3000.0)]):
        rows += [(key, "sclecture", "cells_per_s", ours, ""), (key, "scvi-tools", "cells_per_s", peer, ""),
                 (key, "sclecture", "dynamo_import_s", 1.0, ""), (key, "ratio", "speedup", ours / peer, ""),
                 (key, "ratio", "speedup_with_dynamo_import", 1.5, "")]
    args = _genes_args(datasets=[key], rounds=2, out="genes", epochs=100)
    bench_scvi_genes.write(rows, args, ["sclecture", "scvi-tools"], quiet=True)
    md = (tmp_path / "genes.md").read_text()
    assert "| pbmc3k | 2,000 | 6800 | 3250 | **2.10x** | 2.00, 2.20 |" in md
    assert (tmp_path / "genes.csv").exists()


def test_scvi_genes_report_states_the_likelihood_intervals_welch_gives(tmp_path, monkeypatch):
    import bench_scvi_genes

    monkeypatch.setattr(bench_scvi_genes, "RESULTS", tmp_path)
    key, rng = "pbmc3k-2000", np.random.default_rng(3)
    ours, peer = rng.normal(1499.0, 2.4, 40), rng.normal(1498.8, 2.3, 41)
    rows = [(key, "check", "loss_rel_diff", 0.0, ""), (key, "check", "grad_rel_diff", 1e-7, "")]
    rows += [(key, impl, "neg_marginal_ll", v, f"seed {i}") for impl, vs in (("sclecture", ours), ("scvi-tools", peer))
             for i, v in enumerate(vs)]
    rows += [(key, impl, m, v + 14.0 if m == "neg_elbo" else 0.5, f"seed {i}") for impl, vs in
             (("sclecture", ours), ("scvi-tools", peer)) for i, v in enumerate(vs)
             for m in ("neg_elbo", "fit_s", "ari", "nmi", "silhouette")]
    args = _genes_args(quality=[key])
    bench_scvi_genes.write(rows, args, ["sclecture", "scvi-tools"], quiet=True)
    line = next(x for x in (tmp_path / "q.md").read_text().splitlines() if x.startswith(f"- {key}, held-out -log p(x)"))
    d, lo, hi = bench_scvi.welch_interval(ours, peer)
    _, lo99, hi99 = bench_scvi.welch_interval(ours, peer, level=0.99)
    assert lo99 < lo < d < hi < hi99
    assert f"{d:+.2f}, 95 % CI [{lo:+.2f}, {hi:+.2f}] (40 and 41 seeds)" in line
    assert line.endswith(f"The 99 % interval, for a reader who discounts looks taken as seeds were added: "
                         f"[{lo99:+.2f}, {hi99:+.2f}].")


def test_scvi_genes_resume_runs_only_the_fits_an_earlier_run_lacks(tmp_path, monkeypatch):
    import csv

    import bench_scvi_genes

    monkeypatch.setattr(bench_scvi_genes, "RESULTS", tmp_path)
    key = "pbmc3k-2000"
    fitted = [("sclecture", 0), ("scvi-tools", 0), ("sclecture", 1)]
    with open(tmp_path / "q.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "implementation", "measure", "value", "detail"])
        for impl, seed in fitted:
            for m, v in (("neg_marginal_ll", 1498.0 + seed), ("neg_elbo", 1512.0), ("fit_s", 100.0), ("ari", 0.5),
                         ("nmi", 0.6), ("silhouette", 0.1)):
                w.writerow([key, impl, m, v, f"seed {seed}, 400 epochs, K=100, 1 thread(s), up to 2 fit(s) at a time"])
        w.writerow([key, "check", "neg_marginal_ll_diff", 9.9, "derived: recomputed"])
    ran = []

    def fake_full_fits(tasks, jobs):
        for name, k, seed, epochs, warmup, mc, threads, score in tasks:
            ran.append((name, seed, score))
            rows = [(k, name, m, 1497.0 + seed, f"seed {seed}") for m in ("neg_marginal_ll", "neg_elbo")]
            rows += [(k, name, m, 0.5, f"seed {seed}") for m in ("fit_s", "ari", "nmi", "silhouette")]
            yield rows, f"{name} {seed}"

    monkeypatch.setattr(bench_scvi_genes, "full_fits", fake_full_fits)
    args = _genes_args(quality=[key], seeds=[0, 1, 2], resume=True, trajectory_steps=0)
    bench_scvi_genes.run(args)
    # seed 1's scvi-tools fit, then seed 2 (sclecture first for even seeds); the first scvi-tools fit is also
    # scored by the course's code, since the earlier run has no such check
    assert ran == [("scvi-tools", 1, True), ("sclecture", 2, False), ("scvi-tools", 2, False)]
    rows = bench_scvi_genes.load_rows("q")
    for impl in ("sclecture", "scvi-tools"):
        assert bench_scvi_genes.fitted_seeds(rows, key, impl) == [0, 1, 2]
    assert [r[4] for r in rows if r[1] == "scvi-tools" and r[2] == "ari"][-1] == \
        "seed 2, 400 epochs, K=100, 1 thread(s), up to 1 fit(s) at a time"
    assert sum(r[2] == "neg_marginal_ll_diff" for r in rows) == 1 and 9.9 not in [r[3] for r in rows]
    assert "seeds: sclecture 3 (0-2), scvi-tools 3 (0-2)" in (tmp_path / "q.md").read_text()
    ran.clear()
    bench_scvi_genes.run(args)  # nothing left to do
    assert ran == []
    args.epochs = 200  # fits of other settings are not pooled with these
    with pytest.raises(SystemExit, match="other settings"):
        bench_scvi_genes.run(args)
    assert ran == []


def test_seeds_for_bound_is_the_smallest_count_that_brings_welchs_upper_end_under_it():
    import bench_scvi_genes

    def like(sample, n):  # n values with the sample's mean and variance (ddof=1)
        z = np.linspace(-1.0, 1.0, n)
        return sample.mean() + (z - z.mean()) / z.std(ddof=1) * sample.std(ddof=1)

    rng = np.random.default_rng(1)
    for a, b in ((rng.normal(0.1, 2.0, 8), rng.normal(0.0, 1.5, 8)),
                 (np.array([0.0, 0.26, -0.26]), np.array([0.0, 0.001, -0.001]))):  # very unequal spreads
        text = bench_scvi_genes.seeds_for_bound(a, b, 0.5)
        n = int(text.split("at about ")[1].split()[0])
        assert n > max(len(a), len(b))
        assert bench_scvi.welch_interval(like(a, n), like(b, n))[2] <= 0.5  # the same interval the report gives
        assert bench_scvi.welch_interval(like(a, n - 1), like(b, n - 1))[2] > 0.5
    a, b = rng.normal(0.1, 2.0, 8), rng.normal(0.0, 1.5, 8)
    assert "would not bring" in bench_scvi_genes.seeds_for_bound(a + 5, b, 0.5)
    assert "more than" in bench_scvi_genes.seeds_for_bound(b + 0.4999, b, 0.5)  # capped, and quickly
    assert bench_scvi_genes._ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"


def test_compile_break_even_counts_the_steps_that_repay_the_compile_time():
    import bench_scvi_compile

    assert bench_scvi_compile.break_even(10.0, eager_ms=16.0, compiled_ms=14.0) == 5000  # 10 s / 2 ms
    assert bench_scvi_compile.break_even(10.0, eager_ms=16.0, compiled_ms=17.8) is None  # slower: never
    assert bench_scvi_compile.break_even(10.0, eager_ms=16.0, compiled_ms=16.0) is None


@pytest.mark.parametrize("key", ["zeisel_cortex-558", "pbmc3k-2000"])
def test_compile_benchmark_runs_on_minibatches_kept_dense_and_as_csr(key, monkeypatch):
    """zeisel_cortex (77 % nonzero) is kept dense by the loader, so its minibatches carry no nonzero index;
    pbmc3k (26 %) stays CSR and they do. The benchmark's code runs on both, torch.compile aside (the identity
    here: compiling takes half a minute and a C++ compiler)."""
    import bench_scvi_compile
    import torch

    monkeypatch.setattr(bench_scvi_compile, "N_MINIBATCHES", 2)
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    _, batches, _ = bench_scvi_compile.minibatches(key)
    assert len(batches[0]) == (1 if key.startswith("zeisel") else 2)
    rows = bench_scvi_compile.measure(key, rounds=1)
    assert [r["what"].split(",")[0] for r in rows] == ["training step (loss", "ZINB likelihood"]
    assert all(not str(r["compiled ms"]).startswith("failed") and float(r["compiled ms"]) > 0 for r in rows)


@pytest.mark.parametrize("module, given", [
    ("bench_scvi", ["--jobs", "0"]), ("bench_scvi", ["--timing-epochs", "1"]), ("bench_scvi", ["--rounds", "0"]),
    ("bench_scvi", ["--epochs", "0"]), ("bench_scvi", ["--mc-samples", "0"]), ("bench_scvi", ["--import-reps", "0"]), ("bench_scvi", ["--seeds", "-1"]),
    ("bench_scvi", ["--warmup", "-1"]), ("bench_scvi_genes", ["--timing-epochs", "0"]),
    ("bench_scvi_genes", ["--epochs", "0"]), ("bench_scvi_genes", ["--mc-samples", "0"]),
    ("bench_scvi_genes", ["--seeds", "-1"]), ("bench_scvi_genes", ["--trajectory-steps", "-1"])])
def test_scvi_benchmarks_refuse_settings_that_measure_nothing(module, given, capsys, monkeypatch):
    import importlib

    bench = importlib.import_module(module)
    monkeypatch.setattr(bench, "run", lambda args: pytest.fail(f"{given} was not refused"))  # nor run
    with pytest.raises(SystemExit):
        bench.main(given)
    assert given[0] in capsys.readouterr().err  # the error names the option


def test_scvi_benchmark_without_scvi_tools_leaves_the_comparison_alone(tmp_path, monkeypatch):
    """A run without the peer (``make benchmarks`` in a plain .venv) writes the course's numbers beside the
    comparison that the README cites, not over it."""
    import argparse

    monkeypatch.setattr(bench_scvi, "RESULTS", tmp_path)
    (tmp_path / "scvi.md").write_text("the comparison")
    args = argparse.Namespace(mc_samples=10, epochs=4, seeds=[0, 1], rounds=1, timing_epochs=2, jobs=1, threads=1)
    rows = [(name, m, v, "") for name in ("sclecture", "scvi-tools") for m, v in
            (("cells_per_s", 9000.0), ("neg_marginal_ll", 1270.0), ("ari", 0.6))]
    course_only = [r for r in rows if r[0] == "sclecture"]
    bench_scvi.write(course_only, args, [bench_scvi.Course], 2253, 1, 3005)
    assert (tmp_path / "scvi.md").read_text() == "the comparison"
    md = (tmp_path / "scvi_course_only.md").read_text()
    assert "| measure | sclecture |" in md and "| training cells per second | 9000 |" in md
    assert "scvi-tools was not installed" in md and "speed-ups" not in md
    assert (tmp_path / "scvi_course_only.csv").exists()
    bench_scvi.write(rows, args, [bench_scvi.Course, bench_scvi.Peer], 2253, 1, 3005)
    assert "| training cells per second | 9000 | 9000 | 1.00x |" in (tmp_path / "scvi.md").read_text()


def test_notebook_spread_records_a_failing_notebook_and_stops_when_it_is_interrupted(tmp_path, monkeypatch):
    """A notebook that fails is a result (a row saying why); anything else, such as nbclient shutting the kernel
    down on SIGTERM, stops the measurement instead of being recorded as a failed run."""
    import bench_notebook_spread
    import common
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    lesson = "01_logistic_regression"

    def failing(nb, env, folder):
        raise CellExecutionError("ValueError: the cell failed", "", "ValueError")

    monkeypatch.setattr(bench_notebook_spread, "execute", failing)
    bench_notebook_spread.run([lesson], [1], [], out_name="spread")
    assert "the cell failed" in (tmp_path / "spread.csv").read_text()

    def interrupted(nb, env, folder):
        raise AssertionError  # what a kernel shut down under nbclient's feet gave

    monkeypatch.setattr(bench_notebook_spread, "execute", interrupted)
    with pytest.raises(AssertionError):
        bench_notebook_spread.run([lesson], [1], [], out_name="spread2")
    assert not (tmp_path / "spread2.csv").exists()


BAD_COMMAND_LINES = [  # (script, arguments, what the error must say); bench_scvi(_genes): above
    ("bench_datasets", ["--cold", "0"], "--cold must be at least 1"),
    ("bench_datasets", ["--datasets"], "--datasets needs at least one value"),
    ("bench_actinn", ["--threads", "0"], "--threads must be at least 1"),
    ("bench_actinn", ["--folds", "1"], "--folds must be at least 2"),
    ("bench_factor", ["--repeats", "0"], "--repeats must be at least 1"),
    ("bench_factor", ["--only", "no such case"], "matches no case"),
    ("bench_grading", ["--class-size", "0"], "--class-size must be at least 1"),
    ("bench_grading", ["--jobs", "0"], "--jobs must be at least 1"),
    ("bench_grading", ["--lesson", "07_nothing"], "invalid choice"),
    ("bench_likelihood", ["--before", "{root}", "--rounds", "0"], "--rounds must be at least 1"),
    ("bench_machine", ["--rounds", "0"], "--rounds must be at least 1"),
    ("bench_notebook_spread", ["--report"], "--report needs the names"),
    ("bench_notebook_spread", ["--lessons", "07_nothing"], "invalid choice"),
    ("bench_notebooks", ["--repeats", "0"], "--repeats must be at least 1"),
    ("bench_scaling", ["--sizes", "1"], "--sizes must be at least 100"),
    ("bench_scvi_compile", ["--threads", "0"], "--threads must be at least 1"),
    ("bench_scvi_paired", ["--before", "{root}", "--epochs", "2"], "--epochs must be at least 3"),
    ("bench_scvi_paired", ["--before", "{root}", "--after", "{root}/no-such-copy"], "--after"),
    ("bench_scvi_seed_pairs", [], "--seeds: name the stored seeds"),
    ("bench_scvi_seed_pairs", ["--seeds", "1", "2", "3", "--jobs", "0"], "--jobs must be at least 1"),
    ("bench_scvi_seed_pairs", ["--seeds", "1", "2", "3", "--after", "{root}/no-such-copy"], "--after"),
    ("bench_threads", ["--rounds", "0"], "--rounds must be at least 1"),
    ("bench_threads", ["--trainers"], "--trainers needs at least one value"),
    ("run_all", ["--only", "no_such_benchmark"], "not a benchmark that runs here"),
    ("run_all", ["--only"], "--only needs the names"),
]


@pytest.mark.parametrize("script, given, says", BAD_COMMAND_LINES,
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_benchmark_command_lines_that_would_measure_nothing_are_refused(script, given, says, tmp_path):
    """Each refusal comes from argparse before any work, names the option, exits with status 2. The scripts run
    from a copy of benchmarks/, so that one which stopped refusing would write its results there, not here."""
    import shutil
    import subprocess

    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks",
                    ignore=shutil.ignore_patterns("results", "__pycache__"))
    for folder in ("lessons", "tests"):  # read at import: the lessons' names, the notebook tolerances
        (tmp_path / folder).symlink_to(ROOT / folder)
    args = [a.format(root=ROOT) for a in given]
    res = subprocess.run([sys.executable, str(tmp_path / "benchmarks" / f"{script}.py"), *args], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2 and says in res.stderr, (res.returncode, res.stderr[-800:])


def test_worst_case_reads_the_upper_end_of_the_interval():
    assert bench_scvi.worst_case(0.24, 1269.3) == ("at 95 % confidence sclecture is at most 0.24 nats per cell "
                                                  "(0.019 %) worse")
    assert bench_scvi.worst_case(-0.1, 1269.3) == "at 95 % confidence sclecture is better"


def test_actinn_report_keeps_the_budget_section_of_an_earlier_budget_run(tmp_path, monkeypatch):
    import bench_actinn

    monkeypatch.setattr(bench_actinn, "RESULTS", tmp_path)
    md = bench_actinn.write_report(["# ACTINN", "", "first comparison"])
    assert "Not measured yet" in md.read_text()
    budget = bench_actinn.BUDGET_HEADER + "\n\n| 1 | 22.7 | PASS |"
    md.write_text("# ACTINN\n\nold comparison\n\n" + budget + "\n")  # what a --budget run leaves
    bench_actinn.write_report(["# ACTINN", "", "new comparison"])
    text = md.read_text()
    assert "new comparison" in text and "old comparison" not in text
    assert text.rstrip().endswith(budget) and "Not measured yet" not in text


def test_machine_profile_sorts_an_scvi_epoch_into_its_categories():
    """bench_machine's profile wraps the loader's row taking; a tiny sparse scVI fit goes through it."""
    import anndata as ad
    import scipy.sparse as sp

    import bench_machine

    rng = np.random.default_rng(0)
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(0.3, size=(300, 40)).astype(np.float32) + sp.eye(300, 40)))
    cats, top, wall, gflops = bench_machine.profile_epoch(
        lambda epochs, callbacks: bench_machine.fit_scvi(adata, epochs, callbacks), 1e-3, adata.n_obs)
    assert set(cats) == set(bench_machine.CATEGORIES) and wall > 0 and gflops > 0
    assert cats["minibatch: take rows / densify CSR"] > 0, "the labelled loader ran"
    assert bench_machine.training.MinibatchLoader._take.__name__ == "_take", "the loader is restored"


def test_bench_threads_measures_each_wait_policy_in_a_process_that_loaded_torch_under_it():
    import bench_threads

    for policy in (None, "PASSIVE"):  # None: unset, so that GNU OpenMP keeps its default
        assert bench_threads.measure("scVI", 1, policy, busy=False) > 0  # the worker reports what it ran under


def _package_copies(tmp_path):
    """Two copies of the package: one unchanged, one whose encoder variance floor differs (other arithmetic)."""
    import shutil

    same_copy, changed_copy = tmp_path / "same", tmp_path / "changed"
    for folder in (same_copy, changed_copy):
        shutil.copytree(ROOT / "sclecture", folder / "sclecture", ignore=shutil.ignore_patterns("__pycache__"))
    scvi_py = changed_copy / "sclecture" / "scvi.py"
    text = scvi_py.read_text()
    assert text.count("var_eps = 1e-4") == 1
    scvi_py.write_text(text.replace("var_eps = 1e-4", "var_eps = 2e-4"))
    return same_copy, changed_copy


def test_bench_likelihood_times_both_packages_and_tells_a_change_of_arithmetic(tmp_path):
    """An unchanged copy of the package trains bitwise alike; one whose encoder variance floor differs does not."""
    import bench_likelihood

    rng = np.random.default_rng(0)
    X = rng.poisson(0.8, size=(300, 40)).astype(np.float32)
    X[:, 0] += 1
    same_copy, changed_copy = _package_copies(tmp_path)

    res = bench_likelihood.measure(bench_likelihood.load_package(same_copy, "sclecture_same"), X, rounds=2, calls=3)
    assert res["same"] is True
    for cache in ("hot", "flushed"):
        before, now, ratios = res[cache]
        assert before > 0 and now > 0 and len(ratios) == 2
    changed = bench_likelihood.load_package(changed_copy, "sclecture_changed")
    assert bench_likelihood.same_arithmetic(changed, X) is False


def test_paired_epochs_take_turns_and_tell_a_change_of_arithmetic(tmp_path):
    """Two copies of the package fit in turns (ABBA ...), each as it would alone: an unchanged copy ends with the
    same weights as the working tree, one whose encoder variance floor differs does not; the loaders are left as
    they were."""
    import bench_likelihood
    import bench_scvi_paired

    import sclecture.scvi
    import sclecture.training

    rng = np.random.default_rng(1)
    X = rng.poisson(0.8, size=(300, 30)).astype(np.float32)
    X[:, 0] += 1
    same_copy, changed_copy = _package_copies(tmp_path)
    plain_iter = sclecture.training.MinibatchLoader.__iter__

    same = bench_likelihood.load_package(same_copy, "sclecture_paired_same")
    res = bench_scvi_paired.paired_epochs(same, sclecture.scvi, X, epochs=3)
    assert res["order"] == ["before", "after", "after", "before", "before", "after"]
    assert len(res["before"]) == len(res["after"]) == 3 and min(res["before"] + res["after"]) > 0
    assert res["same_weights"] is True
    alone = sclecture.scvi.SCVI(epochs=3, random_state=0, progress=False).fit(X)  # each fit trains as if alone
    for a, b in zip(alone.module_.state_dict().values(), res["models"]["after"].module_.state_dict().values()):
        assert a.equal(b)
    changed = bench_likelihood.load_package(changed_copy, "sclecture_paired_changed")
    assert bench_scvi_paired.paired_epochs(changed, sclecture.scvi, X, epochs=2)["same_weights"] is False
    assert sclecture.training.MinibatchLoader.__iter__ is plain_iter
    with pytest.raises(ValueError, match="same package"):
        bench_scvi_paired.paired_epochs(sclecture.scvi, sclecture.scvi, X, epochs=1)
    with pytest.raises(ValueError, match="at least 1"):  # no turn would ever come: refused, not a hang
        bench_scvi_paired.paired_epochs(same, sclecture.scvi, X, epochs=0)

    s = bench_scvi_paired.summary({"before": [9.0, 1.0, 2.0, 4.0], "after": [1.0, 1.1, 2.2, 4.4]})
    assert s["pairs"] == 3 and s["median_ratio"] == pytest.approx(1.1) and s["ci"][0] == pytest.approx(1.1)


def test_seed_pairs_interval_is_its_formula_and_covers_the_true_difference():
    """The paired estimate of new minus scvi-tools: its variance is the module's formula, its 95 % interval
    covers the true difference about 95 % of the time, and pairing makes it far narrower than Welch's on the
    new seeds alone."""
    import bench_scvi_seed_pairs as sp

    rng = np.random.default_rng(0)
    true_old, shift, true_peer = 1498.8, 0.2, 1498.9

    def draw(m=12):
        old = dict(enumerate(rng.normal(true_old, 2.3, 200)))  # seeds spread by 2.3 nats, as measured
        new = {s: old[s] + shift + rng.normal(0, 0.3) for s in range(m)}  # a rounding change moves each by ~0.3
        peer = dict(enumerate(rng.normal(true_peer, 2.3, 200)))
        return new, old, peer

    new, old, peer = draw()
    r = sp.paired_interval(new, old, peer)
    diff = np.array([new[s] - old[s] for s in range(12)])
    o, p = np.array(list(old.values())), np.array(list(peer.values()))
    cov = max(np.cov(diff, [old[s] for s in range(12)])[0, 1], 0)
    var = diff.var(ddof=1) / 12 + o.var(ddof=1) / 200 + p.var(ddof=1) / 200 + 2 * cov / 200
    assert r["d"] == pytest.approx(diff.mean() + o.mean() - p.mean())
    assert r["hi"] - r["d"] == pytest.approx(stats.t.ppf(0.975, r["dof"]) * np.sqrt(var))
    assert r["m"] == 12 and r["n"] == 200 and r["sd_diff"] == pytest.approx(diff.std(ddof=1))
    _, lo, hi = bench_scvi.welch_interval([new[s] for s in range(12)], p)
    assert hi - lo > 1.8 * (r["hi"] - r["lo"])  # the 12 new seeds alone, unpaired
    truth = true_old + shift - true_peer
    covered = [r["lo"] <= truth <= r["hi"] for r in (sp.paired_interval(*draw()) for _ in range(400))]
    assert 0.92 <= np.mean(covered) <= 0.985
    with pytest.raises(ValueError, match="no stored fit"):
        sp.paired_interval({999: 1.0, 0: 1.0, 1: 1.0}, old, peer)
    with pytest.raises(ValueError, match="at least 3"):
        sp.paired_interval({0: 1.0, 1: 1.0}, old, peer)


def _stored_quality_csv(path, settings="400 epochs, K=100, 1 thread(s)"):
    """A bench_scvi_genes quality csv: 6 seeds of each code on pbmc3k-2000, one row of another data set."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "implementation", "measure", "value", "detail"])
        w.writerow(["pbmc3k-2000", "check", "eval_diff", 0.01, "seed 0: scored by both"])
        w.writerow(["zeisel_cortex-558", "sclecture", "neg_marginal_ll", 1200.0, f"seed 0, {settings}"])
        for impl, base in (("sclecture", 1498.0), ("scvi-tools", 1499.0)):
            for seed in range(6):
                for k, v in (("neg_marginal_ll", base + seed), ("neg_elbo", base + 14 + seed), ("ari", 0.5 + seed / 100),
                             ("nmi", 0.66), ("fit_s", 110.0)):
                    w.writerow(["pbmc3k-2000", impl, k, v, f"seed {seed}, {settings}, up to 2 fit(s) at a time"])


def test_seed_pairs_refit_with_the_stored_settings_and_report_each_pair(tmp_path, monkeypatch):
    """The run reads the stored fits' settings, refuses to pair with a stored fit that does not reproduce, and
    writes each seed's pair and the interval."""
    import bench_scvi_seed_pairs as sp

    _stored_quality_csv(tmp_path / "quality.csv")
    fits, settings = sp.stored_fits(tmp_path / "quality.csv", "pbmc3k-2000")
    assert settings == (400, 100, 1) and sorted(fits["sclecture"]) == list(range(6))
    assert fits["scvi-tools"][2] == {"neg_marginal_ll": 1501.0, "neg_elbo": 1515.0, "ari": 0.52, "nmi": 0.66}
    before, after = tmp_path / "before", tmp_path / "after"
    for folder in (before, after):
        (folder / "sclecture").mkdir(parents=True)
        (folder / "sclecture" / "scvi.py").touch()
    calls, drift = [], {"before": 0.1}

    def fake_fit(spec, folder):  # stands for a refit: the stored code gives the stored value (+ drift), the new
        calls.append((spec, folder))  # one 0.0, 0.1, 0.2 more for seeds 1, 2, 3
        extra = drift["before"] if folder == before else 0.1 * (spec["seed"] - 1)
        return {"neg_marginal_ll": 1498.0 + spec["seed"] + extra, "neg_elbo": 1512.0 + spec["seed"], "ari": 0.4,
                "nmi": 0.6}

    monkeypatch.setattr(sp, "RESULTS", tmp_path)
    monkeypatch.setattr(sp, "fit", fake_fit)
    with pytest.raises(SystemExit, match="do not reproduce"):
        sp.main(["--against", "quality", "--seeds", "1", "2", "3", "--check-before", str(before), "--after", str(after)])
    assert not (tmp_path / "scvi_seed_pairs.md").exists()
    drift["before"], calls[:] = 0.0, []
    sp.main(["--against", "quality", "--seeds", "3", "1", "2", "--check-before", str(before), "--after", str(after),
             "--jobs", "2"])
    assert calls[0][0]["seed"] == 3 and calls[0][1] == before
    assert sorted(c[0]["seed"] for c in calls[1:]) == [1, 2, 3] and all(c[1] == after for c in calls[1:])
    assert all(c[0]["epochs"] == 400 and c[0]["mc_samples"] == 100 and c[0]["threads"] == 1 for c in calls)
    md = (tmp_path / "scvi_seed_pairs.md").read_text()
    assert "Seed 3 refitted with" in md and "| 2 | 1500.000 | 1500.100 | +0.100 |" in md
    assert "mean +0.100, sd 0.100" in md  # the differences 0.0, 0.1, 0.2
    assert "new 0.400 ± 0.000 (3 seeds), stored 0.525, scvi-tools 0.525 ± 0.019" in md
    assert "(the scvi-tools seeds do not spread)" in md  # NMI: every stored seed 0.66
    rows = (tmp_path / "scvi_seed_pairs.csv").read_text().splitlines()
    assert rows[0] == "seed,measure,stored,new,new_minus_stored,copy" and len(rows) == 1 + 3 * 4
    assert md.startswith(f"## Held-out likelihood of {after} by seed pairs")  # a folder outside git: its path
    calls[:] = []  # --resume keeps the three refits, fits only seed 4, and titles the report with --label
    sp.main(["--against", "quality", "--seeds", "1", "2", "3", "4", "--after", str(after), "--resume", "--label", "X"])
    assert [(c[0]["seed"], c[1]) for c in calls] == [(4, after)]
    md = (tmp_path / "scvi_seed_pairs.md").read_text()
    assert md.startswith("## Held-out likelihood of X by seed pairs") and "| 4 | 1502.000 | 1502.300 | +0.300 |" in md
    calls[:] = []  # another copy resumes nothing: every seed is its own refit
    sp.main(["--against", "quality", "--seeds", "1", "2", "3", "--after", str(before), "--resume"])
    assert sorted((c[0]["seed"], c[1]) for c in calls) == [(1, before), (2, before), (3, before)]
    _stored_quality_csv(tmp_path / "mixed.csv")
    with open(tmp_path / "mixed.csv", "a") as f:
        f.write('pbmc3k-2000,sclecture,neg_marginal_ll,1490,"seed 9, 200 epochs, K=100, 1 thread(s)"\n')
    with pytest.raises(SystemExit, match="different settings"):
        sp.stored_fits(tmp_path / "mixed.csv", "pbmc3k-2000")


def test_copy_name_is_the_commit_and_says_when_the_package_differs_from_it(tmp_path):
    """Reports name a copy of the package by its commit (not a path of the machine that ran them)."""
    from common import copy_name

    assert copy_name(tmp_path) == str(tmp_path.resolve())  # not a git checkout
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True, text=True)
    git("init", "-q")
    (tmp_path / "sclecture").mkdir()
    (tmp_path / "sclecture" / "scvi.py").write_text("A = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "--short", "HEAD").stdout.strip()
    assert copy_name(tmp_path) == head
    (tmp_path / "notes.txt").write_text("not the package\n")  # changes outside sclecture/ do not count,
    assert copy_name(tmp_path) == head
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "two")  # nor commits that leave it alone
    assert copy_name(tmp_path) == head != git("rev-parse", "--short", "HEAD").stdout.strip()
    (tmp_path / "sclecture" / "scvi.py").write_text("A = 2\n")
    two = copy_name(tmp_path)
    assert two.startswith(f"{head} + uncommitted changes to sclecture/ (") and copy_name(tmp_path) == two
    (tmp_path / "sclecture" / "scvi.py").write_text("A = 3\n")  # other changes, another name
    assert copy_name(tmp_path).startswith(f"{head} + uncommitted") and copy_name(tmp_path) != two
    (tmp_path / "inner").mkdir()  # a folder inside a checkout is not the checkout's copy
    assert copy_name(tmp_path / "inner") == str((tmp_path / "inner").resolve())


def test_seed_pairs_fit_runs_the_named_copy_of_the_package(tmp_path):
    """A real (tiny) fit in a fresh interpreter: the copy under test is the one imported, and its numbers come back."""
    import shutil

    import bench_scvi_seed_pairs as sp

    shutil.copytree(ROOT / "sclecture", tmp_path / "sclecture", ignore=shutil.ignore_patterns("__pycache__"))
    values = sp.fit({"dataset": "zeisel_cortex-558", "epochs": 2, "mc_samples": 2, "threads": 1, "seed": 1}, tmp_path)
    assert set(sp.MEASURES) <= set(values) and np.isfinite(values["neg_marginal_ll"])
    shutil.rmtree(tmp_path / "sclecture")
    (tmp_path / "sclecture").mkdir()
    (tmp_path / "sclecture" / "__init__.py").write_text("raise ImportError('not this copy')\n")
    with pytest.raises(RuntimeError, match="failed"):
        sp.fit({"dataset": "zeisel_cortex-558", "epochs": 2, "mc_samples": 2, "threads": 1, "seed": 1}, tmp_path)
