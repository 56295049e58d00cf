"""Benchmark: sclecture.actinn.ACTINN against scikit-learn's LogisticRegression and
MLPClassifier((100, 50, 25)) on the same ACTINN features.

Two settings:

* pbmc3k, stratified 5-fold cross-validation (2,638 labelled cells); the features of each fold
  come from ``actinn_preprocess(train_fold, test_fold)``, so the genes are chosen per fold, as
  the original code would choose them;
* pbmc3k -> Kang et al. 2018, control (CTRL) and interferon-stimulated (STIM) cells scored
  separately, on the cells whose type exists in pbmc3k (``KANG_TO_PBMC3K``).

Methods: ACTINN with the published settings (lr 1e-4, 50 epochs, minibatch 128), ACTINN with
lr 1e-3 (the option the lesson recommends for small references), ACTINN with the lecture's
normalisation (``variant="lecture"``), multinomial logistic regression (lbfgs, C = 1) and
MLPClassifier((100, 50, 25)) with scikit-learn's defaults. Every seeded method runs with
several seeds (``--seeds``); on CV, seed 0 only unless ``--cv-seeds`` says otherwise.

Reported: accuracy, macro-F1 (mean over folds; median and range over seeds), fit time
(wall and CPU seconds, medians), prediction speed (cells/s, median of 3 timed predictions on
the test matrix, features ready). ``--budget`` checks the time budget of issue 6 (ACTINN,
pbmc3k, 50 epochs < 30 s; prediction >= 20,000 cells/s). Thread counts are set explicitly.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_actinn.py [--threads 1] [--seeds 0 1 2] [--folds 5] [--quick]
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_actinn.py --budget   # the time budget only, 1 and 2 threads
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_actinn.py --query    # a model fitted on pbmc3k alone annotates Kang

Writes benchmarks/results/actinn.csv (one row per fit) and benchmarks/results/actinn.md; ``--budget``
writes benchmarks/results/actinn_budget.csv and replaces the budget section of actinn.md; ``--query`` writes
benchmarks/results/actinn_query.csv and actinn_query.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

METHODS = ["ACTINN lr 1e-4 (published)", "ACTINN lr 1e-3", "ACTINN lecture normalisation",
           "LogisticRegression (multinomial)", "MLPClassifier((100, 50, 25))"]
SEEDED = {m for m in METHODS if not m.startswith("Logistic")}


def make(method: str, seed: int, quick: bool):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from sclecture import actinn

    epochs = 2 if quick else 50
    if method == "ACTINN lr 1e-4 (published)" or method == "ACTINN lecture normalisation":
        return actinn.ACTINN(epochs=epochs, random_state=seed)
    if method == "ACTINN lr 1e-3":
        return actinn.ACTINN(lr=1e-3, epochs=epochs, random_state=seed)
    if method.startswith("LogisticRegression"):
        return LogisticRegression(max_iter=20 if quick else 1000)
    return MLPClassifier((100, 50, 25), max_iter=2 if quick else 200, random_state=seed)


def run_one(method, seed, Xtr, ytr, Xte, quick):
    """Fit once; return (model, fit wall s, fit CPU s, prediction cells/s, predictions)."""
    model = make(method, seed, quick)
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning in quick mode
        model.fit(Xtr, ytr)
    fit_s, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
    speeds = []
    for _ in range(3):
        t = time.perf_counter()
        pred = model.predict(Xte)
        speeds.append(Xte.shape[0] / (time.perf_counter() - t))
    return fit_s, fit_cpu, statistics.median(speeds), pred


BUDGET_HEADER = "## Budget (issue 6)"


def budget(pbmc, kang, y, args) -> None:
    """Fit time of the published ACTINN on pbmc3k (2,638 cells, 50 epochs) and its prediction
    speed on Kang's 2,800 cells, with 1 and 2 threads; written into the results' budget section."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from sclecture import actinn

    F = actinn.actinn_preprocess(pbmc, kang)
    epochs = 2 if args.quick else 50
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        threadpool_limits(threads)
        for seed in args.seeds:
            model = actinn.ACTINN(epochs=epochs, random_state=seed)
            wall, cpu, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
            model.fit(F.train, y)
            fit_s, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
            speeds = []
            for _ in range(5):
                t = time.perf_counter()
                model.predict(F.test)
                speeds.append(F.test.shape[0] / (time.perf_counter() - t))
            rows.append({"threads": threads, "seed": seed, "fit_s": fit_s, "fit_cpu_s": fit_cpu,
                         "predict_cells_per_s": statistics.median(speeds), "load_avg": (load0 + os.getloadavg()[0]) / 2})
            print(rows[-1], flush=True)
    lines = [BUDGET_HEADER, "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M')} with `--budget`{' (QUICK: 2 epochs)' if args.quick else ''}: "
             f"ACTINN with the published settings on pbmc3k ({F.train.shape[0]:,} cells x {F.train.shape[1]:,} genes, "
             f"{epochs} epochs, {model.n_steps_} steps), seeds {args.seeds}; prediction: median of 5 `predict` calls on "
             f"Kang's {F.test.shape[0]:,} cells (features ready). Limits: fit < 30 s, prediction >= 20,000 cells/s. "
             "`load`: mean 1-minute load average during the fit (2 cores shared with other jobs).", "",
             "| threads | fit s (median) | fit s (min) | CPU s | cells/s (median) | load | fit < 30 s | >= 20,000 cells/s |",
             "|---:|---:|---:|---:|---:|---:|---|---|"]
    for threads in (1, 2):
        r = [row for row in rows if row["threads"] == threads]
        fit = statistics.median(x["fit_s"] for x in r)
        speed = statistics.median(x["predict_cells_per_s"] for x in r)
        lines.append(f"| {threads} | {fit:.1f} | {min(x['fit_s'] for x in r):.1f} | {statistics.median(x['fit_cpu_s'] for x in r):.1f} | "
                     f"{speed:,.0f} | {statistics.median(x['load_avg'] for x in r):.1f} | {'PASS' if fit < 30 else 'FAIL'} | "
                     f"{'PASS' if speed >= 20000 else 'FAIL'} |")
    md = RESULTS / "actinn.md"
    text = md.read_text() if md.exists() else "# ACTINN against logistic regression and scikit-learn's MLP\n\n"
    text = text.split(BUDGET_HEADER)[0].rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    with open(RESULTS / "actinn_budget.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("\n".join(lines))


PIPELINES = ("joint", "reference only", "reference only, genes seen in the query")
# Query transforms tried for preprocess="code", on the same fitted model as "reference only" (which is variant a)
VARIANTS = ("absent genes at zero (before)", "absent at the mean + clipped to the reference's range",
            "clipped to the reference's range, absent at zero")


def variant_features(model, reference, query):
    """The query's features under each rule of VARIANTS, from the adopted transform (absent genes at the reference's
    mean_g): zero instead of mean_g, and/or each gene clipped to [0, max over the reference's cells]."""
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Q = model._query_features(query)
    absent = ~np.isin(model.feature_names_in_, np.char.upper(np.asarray(query.var_names, dtype=str)))
    top = model._reference_features(reference)[0].max(axis=0)
    zero = Q.copy()
    zero[:, absent] = 0
    return dict(zip(VARIANTS, (zero, np.minimum(Q, top), np.minimum(zero, top))))


def query(pbmc, kang, y, y_kang, scored, condition, args) -> None:
    """A trained model annotates a query with another gene set: ``ACTINN(preprocess="code").fit(pbmc3k)
    .predict(kang)`` (normalised and filtered on the reference alone) against the joint pipeline
    (``actinn_preprocess(pbmc3k, kang)``, genes filtered on both), same seeds; written to actinn_query.*."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from sclecture import actinn

    epochs = 2 if args.quick else 50
    threadpool_limits(args.threads)
    rows = []
    seen = np.asarray(kang.X.sum(axis=0)).ravel() > 0  # genes with counts in some query cell
    in_query = np.isin(np.char.upper(np.asarray(pbmc.var_names, dtype=str)), np.char.upper(np.asarray(kang.var_names[seen], dtype=str)))
    for pipeline in PIPELINES:
        for seed in args.seeds:
            extra = {}
            wall = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if pipeline == "joint":
                    F = actinn.actinn_preprocess(pbmc, kang)
                    model = actinn.ACTINN(epochs=epochs, random_state=seed).fit(F.train, y)
                    pred = model.predict(F.test)
                    n_genes, n_missing = len(F.genes), 0
                else:
                    reference = pbmc if pipeline == "reference only" else pbmc[:, in_query]
                    model = actinn.ACTINN(preprocess="code", epochs=epochs, random_state=seed).fit(reference, y)
                    pred = model.predict(kang)
                    if pipeline == "reference only":
                        for name, Q in variant_features(model, pbmc, kang).items():
                            with torch.inference_mode():
                                extra[name] = model.classes_[model.module_(torch.from_numpy(Q)).argmax(1).numpy()]
                    n_genes, n_missing = model.n_features_in_, int((~np.isin(model.feature_names_in_, np.char.upper(np.asarray(kang.var_names, dtype=str)))).sum())
            seconds = time.perf_counter() - wall
            for name, p in {pipeline: pred, **{f"reference only, {v}": q for v, q in extra.items()}}.items():
                for c in ("CTRL", "STIM"):
                    keep = scored & (condition == c)
                    acc, f1 = actinn.accuracy_macro_f1(y_kang[keep], p[keep])
                    rows.append({"pipeline": name, "subset": c, "seed": seed, "accuracy": acc, "macro_f1": f1, "n_genes": n_genes,
                                 "genes_missing_in_query": n_missing, "seconds": seconds,
                                 "warnings": len(caught), "load_avg": os.getloadavg()[0]})
                    print(rows[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "actinn_query.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def stats(pipeline, subset, key):
        vals = [r[key] for r in rows if r["pipeline"] == pipeline and r["subset"] == subset]
        return statistics.mean(vals), (max(vals) - min(vals)), vals

    lines = ["# ACTINN annotating a query with another gene set", "",
             f"Generated by `benchmarks/bench_actinn.py --query` on {time.strftime('%Y-%m-%d')}"
             f"{' (QUICK smoke test: 2 epochs, not real results)' if args.quick else ''}, {args.threads} thread(s); "
             f"pbmc3k ({len(y):,} labelled cells) -> Kang et al. 2018, the cells whose type exists in pbmc3k, CTRL and STIM "
             f"scored separately; ACTINN's published settings ({epochs} epochs), seeds {args.seeds}.", "",
             "* joint: `F = actinn_preprocess(pbmc3k, kang)`; `ACTINN().fit(F.train, y).predict(F.test)` (genes shared by "
             "both sets, library sizes over those genes, genes filtered on both sets' cells);",
             "* reference only: `ACTINN(preprocess=\"code\").fit(pbmc3k, y).predict(kang)` (library sizes over each "
             "cell's own genes, genes filtered on pbmc3k alone, a model gene absent from Kang at its mean over pbmc3k's cells: "
             "the documented behaviour);",
             "* reference only, <rule>: the same fitted models (same seeds), the query's features made by another rule: "
             "absent genes at zero (the behaviour before), and/or every gene clipped to [0, its maximum over pbmc3k's cells] "
             "so that expression beyond anything in the reference (interferon genes in STIM) cannot drive the network further;",
             "* reference only, genes seen in the query: the same, fitted on pbmc3k's genes that have counts in Kang "
             "(`pbmc3k[:, in_query]`), as the joint pipeline's gene list has: possible when the query is known at training time.", "",
             "Mean over seeds, spread = max - min, then the values per seed; `x - joint`: the difference of the means "
             "(requirement: |accuracy difference| <= 0.02).", "",
             "| subset | pipeline | accuracy (mean) | spread | per seed | macro-F1 (mean) | spread | genes | missing in Kang |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    names = [PIPELINES[0], PIPELINES[1], *(f"reference only, {v}" for v in VARIANTS), PIPELINES[2]]
    for c in ("CTRL", "STIM"):
        for pipeline in names:
            acc, acc_sp, vals = stats(pipeline, c, "accuracy")
            f1, f1_sp, _ = stats(pipeline, c, "macro_f1")
            r = next(r for r in rows if r["pipeline"] == pipeline and r["subset"] == c)
            lines.append(f"| {c} | {pipeline} | {acc:.3f} | {acc_sp:.3f} | {', '.join(f'{v:.3f}' for v in vals)} | {f1:.3f} | "
                         f"{f1_sp:.3f} | {r['n_genes']:,} | {r['genes_missing_in_query']:,} |")
        for pipeline in names[1:]:
            d_acc = stats(pipeline, c, "accuracy")[0] - stats("joint", c, "accuracy")[0]
            d_f1 = stats(pipeline, c, "macro_f1")[0] - stats("joint", c, "macro_f1")[0]
            lines.append(f"| {c} | {pipeline} - joint | {d_acc:+.3f} | | | {d_f1:+.3f} | | | |")
    (RESULTS / "actinn_query.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def write_report(lines: list[str]) -> Path:
    """Write actinn.md from the comparison's lines, keeping the budget section of an earlier ``--budget`` run."""
    md = RESULTS / "actinn.md"
    old = md.read_text() if md.exists() else ""
    if BUDGET_HEADER in old:
        lines = lines + ["", BUDGET_HEADER + old.split(BUDGET_HEADER, 1)[1].rstrip("\n")]
    else:
        lines = lines + ["", BUDGET_HEADER, "",
                         "Not measured yet: run `python benchmarks/bench_actinn.py --budget` on a quiet machine."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines) + "\n")
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (default 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cv-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 folds, 1 seed, 2 epochs: a smoke test")
    parser.add_argument("--skip-cv", action="store_true")
    parser.add_argument("--budget", action="store_true",
                        help="only the budget check (published ACTINN on pbmc3k, one fit per seed, 1 and 2 threads); "
                             "replaces the budget section of the results")
    parser.add_argument("--query", action="store_true",
                        help="only the query comparison: ACTINN(preprocess='code') fitted on pbmc3k alone against the "
                             "joint preprocessing, on Kang; writes actinn_query.csv and actinn_query.md")
    args = parser.parse_args()
    from common import check_args

    check_args(parser, args, {"threads": 1, "folds": 2, "seeds": 0, "cv_seeds": 0})
    if args.quick:
        args.seeds, args.cv_seeds, args.folds = [0], [0], 2

    import numpy as np
    import scipy
    import sklearn
    import torch
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    from sclecture import actinn, datasets

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)

    pbmc = datasets.pbmc3k()
    pbmc = pbmc[pbmc.obs["cell_type"].notna()].copy()
    kang = datasets.kang_ifnb()
    y = pbmc.obs["cell_type"].astype(str).to_numpy()
    y_kang = np.asarray(datasets.harmonize_labels(kang.obs["cell_type"], datasets.KANG_TO_PBMC3K, drop_unmapped=True), dtype=object)
    scored = np.array([isinstance(v, str) for v in y_kang])
    condition = kang.obs["condition"].astype(str).to_numpy()

    if args.budget:
        return budget(pbmc, kang, y, args)
    if args.query:
        return query(pbmc, kang, y, y_kang, scored, condition, args)

    rows = []

    def record(setting, method, seed, fold, fit_s, fit_cpu, speed, scores, n_genes, n_train):
        for subset, (acc, f1) in scores.items():
            rows.append({"setting": setting, "subset": subset, "method": method, "seed": seed, "fold": fold,
                         "accuracy": acc, "macro_f1": f1, "fit_s": fit_s, "fit_cpu_s": fit_cpu,
                         "predict_cells_per_s": speed, "n_genes": n_genes, "n_train": n_train,
                         "load_avg": os.getloadavg()[0]})
        print(f"{setting:>9} {method:<34} seed {seed} fold {fold}: "
              + ", ".join(f"{k} acc {a:.3f} F1 {f:.3f}" for k, (a, f) in scores.items())
              + f"; fit {fit_s:.1f} s ({fit_cpu:.1f} s CPU), {speed:,.0f} cells/s", flush=True)

    # pbmc3k -> Kang
    prep_s = {}
    feats = {}
    for variant in ["code", "lecture"]:
        t = time.perf_counter()
        feats[variant] = actinn.actinn_preprocess(pbmc, kang, variant=variant)
        prep_s[variant] = time.perf_counter() - t
    for method in METHODS:
        F = feats["lecture" if "lecture" in method else "code"]
        for seed in (args.seeds if method in SEEDED else [0]):
            fit_s, fit_cpu, speed, pred = run_one(method, seed, F.train, y, F.test, args.quick)
            scores = {c: actinn.accuracy_macro_f1(y_kang[scored & (condition == c)], pred[scored & (condition == c)])
                      for c in ["CTRL", "STIM"]}
            record("Kang", method, seed, -1, fit_s, fit_cpu, speed, scores, len(F.genes), len(y))
    del feats

    # pbmc3k 5-fold CV, genes chosen per fold
    if not args.skip_cv:
        folds = StratifiedKFold(args.folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y)
        for fold, (tr, te) in enumerate(folds):
            F = {v: actinn.actinn_preprocess(pbmc[tr], pbmc[te], variant=v) for v in ["code", "lecture"]}
            for method in METHODS:
                Fm = F["lecture" if "lecture" in method else "code"]
                for seed in (args.cv_seeds if method in SEEDED else [0]):
                    fit_s, fit_cpu, speed, pred = run_one(method, seed, Fm.train, y[tr], Fm.test, args.quick)
                    record("pbmc3k CV", method, seed, fold, fit_s, fit_cpu, speed,
                           {"5-fold": actinn.accuracy_macro_f1(y[te], pred)}, len(Fm.genes), len(tr))

    RESULTS.mkdir(parents=True, exist_ok=True)
    out_csv = RESULTS / "actinn.csv"
    with open(out_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    # summary
    def group(setting, subset, method):
        return [r for r in rows if r["setting"] == setting and r["subset"] == subset and r["method"] == method]

    lines = [
        "# ACTINN against logistic regression and scikit-learn's MLP",
        "",
        f"Generated by `benchmarks/bench_actinn.py` on {time.strftime('%Y-%m-%d')}"
        f"{' (QUICK smoke test: 2 epochs, not real results)' if args.quick else ''}: "
        f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), {args.threads} torch/BLAS thread(s) "
        f"set explicitly; Python {platform.python_version()}, torch {torch.__version__}, NumPy {np.__version__}, "
        f"SciPy {scipy.__version__}, scikit-learn {sklearn.__version__}.",
        "",
        "Features: `actinn_preprocess` (ACTINN's code: log2(1e4 x / N + 1), genes filtered on training and test "
        "cells together), the same matrices for every method; `ACTINN lecture normalisation` uses "
        "`variant=\"lecture\"` (log2(1e4 (x + 1) / N), filter on the standard deviation). "
        f"Preprocessing pbmc3k + Kang took {prep_s['code']:.1f} s (code) and {prep_s['lecture']:.1f} s (lecture).",
        "",
        f"Seeds for pbmc3k -> Kang: {args.seeds} (logistic regression is deterministic: one fit). "
        f"Cross-validation: stratified {args.folds}-fold, shuffled with seed 0, genes chosen per fold, "
        f"seed(s) {args.cv_seeds}. Accuracy and macro-F1: median over seeds [min-max] for Kang, mean over folds for CV. "
        "Fit: median wall seconds (and CPU seconds: less sensitive to other jobs on the machine); prediction: "
        "median cells/s over the fits (each the median of 3 timed `predict` calls on the test matrix). "
        "`load`: the 1-minute load average at the end of the fits (2 cores).",
        "",
    ]

    def per_fold(g):
        return ", ".join(format(r["accuracy"], ".3f") for r in g)

    def rng(vals):
        return f"{statistics.median(vals):.3f} [{min(vals):.3f}-{max(vals):.3f}]" if len(vals) > 1 else f"{vals[0]:.3f}"

    lines += ["## pbmc3k -> Kang", "",
              "| method | CTRL accuracy | CTRL macro-F1 | STIM accuracy | STIM macro-F1 | fit s | CPU s | cells/s | load |",
              "|---|---|---|---|---|---:|---:|---:|---:|"]
    for method in METHODS:
        c, s = group("Kang", "CTRL", method), group("Kang", "STIM", method)
        if not c:
            continue
        lines.append(f"| {method} | {rng([r['accuracy'] for r in c])} | {rng([r['macro_f1'] for r in c])} | "
                     f"{rng([r['accuracy'] for r in s])} | {rng([r['macro_f1'] for r in s])} | "
                     f"{statistics.median(r['fit_s'] for r in c):.1f} | {statistics.median(r['fit_cpu_s'] for r in c):.1f} | "
                     f"{statistics.median(r['predict_cells_per_s'] for r in c):,.0f} | {statistics.median(r['load_avg'] for r in c):.1f} |")
    if not args.skip_cv:
        lines += ["", f"## pbmc3k, {args.folds}-fold cross-validation", "",
                  "| method | accuracy (mean) | macro-F1 (mean) | accuracy per fold | fit s | CPU s | cells/s | genes |",
                  "|---|---:|---:|---|---:|---:|---:|---:|"]
        for method in METHODS:
            g = group("pbmc3k CV", "5-fold", method)
            if not g:
                continue
            lines.append(f"| {method} | {statistics.mean(r['accuracy'] for r in g):.3f} | {statistics.mean(r['macro_f1'] for r in g):.3f} | "
                         f"{per_fold(g)} | {statistics.median(r['fit_s'] for r in g):.1f} | "
                         f"{statistics.median(r['fit_cpu_s'] for r in g):.1f} | {statistics.median(r['predict_cells_per_s'] for r in g):,.0f} | "
                         f"{statistics.median(r['n_genes'] for r in g):,.0f} |")
    write_report(lines)
    print("\n".join(lines))
    print(f"\nwrote {out_csv} and {RESULTS / 'actinn.md'}")


if __name__ == "__main__":
    main()
