"""Benchmark: sclecture.factor's PPCA and FactorAnalysis against scikit-learn.

Fit time (median over repeats), average log-likelihood (training cells and, for pbmc3k,
held-out cells) and the peak memory of the fit, on

* pbmc3k, log-normalised, the 2,000 most variable genes (80 % of the cells to fit, 20 % held out);
* 100,000 synthetic cells x 2,000 genes, float32, drawn from a factor-analysis model with L = 10
  (the check of issue 7: PPCA must fit in under 20 s and 4 GB without an n x n matrix).

Every (dataset, method) runs in its own Python process, so that its peak resident memory is its
own: the process resets the kernel's high-water mark (VmHWM) after the data are ready, and the
peak it then reports is what the fit adds on top of the data plus the data themselves.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_factor.py [--threads 2] [--repeats 3] [--quick]

Writes benchmarks/results/factor.csv and benchmarks/results/factor.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
N_COMPONENTS = 10

# (dataset, method): method names say whose code and which algorithm
CASES = [
    ("pbmc3k", "sclecture PPCA"),
    ("pbmc3k", "sklearn PCA full"),
    ("pbmc3k", "sklearn PCA covariance_eigh"),
    ("pbmc3k", "sklearn PCA randomized"),
    ("pbmc3k", "sclecture FA"),
    ("pbmc3k", "sklearn FA"),
    ("synthetic", "sclecture PPCA"),
    ("synthetic", "sklearn PCA covariance_eigh"),
    ("synthetic", "sklearn PCA randomized"),
    ("synthetic", "sclecture FA"),
    ("synthetic", "sklearn FA"),
]
SLOW = {("synthetic", "sklearn FA")}  # run once, not `repeats` times
SKLEARN_FA_BIG_MAX_ITER = 30  # scikit-learn's FA redoes a randomised SVD of the n x D data every iteration


# ---------------------------------------------------------------------------------------
# worker: one (dataset, method) in a fresh process


def _vm(key: str) -> float:
    """A VmXXX line of /proc/self/status, in MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def load(dataset: str, quick: bool):
    import numpy as np

    if dataset == "pbmc3k":
        from sclecture import datasets, preprocessing

        adata = datasets.pbmc3k()
        genes = preprocessing.highly_variable_genes(adata, 2000)
        X = preprocessing.log1p_normalize(adata.X[:, genes]).toarray().astype(np.float32)
        perm = np.random.default_rng(0).permutation(X.shape[0])
        cut = int(0.8 * len(perm))
        return X[perm[:cut]], X[perm[cut:]]
    n = 10_000 if quick else 100_000
    rng = np.random.default_rng(0)
    D, L = 2000, N_COMPONENTS
    W = rng.standard_normal((D, L)).astype(np.float32)
    X = rng.standard_normal((n, D), dtype=np.float32)
    X *= rng.uniform(0.5, 2.0, D).astype(np.float32)              # eps ~ N(0, Psi), heteroscedastic
    X += rng.standard_normal((n, L), dtype=np.float32) @ W.T      # x = W z + eps
    X += rng.uniform(0, 3, D).astype(np.float32)                  # + mu
    return X, None


def make(dataset: str, method: str, seed: int):
    from sklearn import decomposition as skd

    from sclecture import factor

    L = N_COMPONENTS
    if method == "sclecture PPCA":
        return factor.PPCA(L)
    if method == "sclecture FA":
        return factor.FactorAnalysis(L, max_iter=1000, tol=1e-5, random_state=seed)
    if method.startswith("sklearn PCA"):
        return skd.PCA(L, svd_solver=method.split()[-1], random_state=seed)
    if method == "sklearn FA":
        if dataset == "synthetic":
            return skd.FactorAnalysis(L, random_state=seed, max_iter=SKLEARN_FA_BIG_MAX_ITER)
        return skd.FactorAnalysis(L, random_state=seed)
    raise ValueError(method)


def worker(dataset: str, method: str, repeats: int, threads: int, quick: bool) -> dict:
    import warnings

    import numpy as np
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        X, X_test = load(dataset, quick)
        data_mib = _vm("VmRSS")
        times, cpus, peaks = [], [], []
        for r in range(repeats):
            model = make(dataset, method, seed=r)
            exact_peak = _reset_peak()
            start, cpu = time.perf_counter(), time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X)
            times.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
            peaks.append(_vm("VmHWM") if exact_peak else float("nan"))
        # log-likelihoods (scikit-learn's PCA.score forms a D x D precision and n x D products:
        # score a 10,000-cell subset of the big data set, the same one for every method)
        X_eval = X[:10_000].astype(np.float64)
        out = {
            "dataset": dataset, "method": method, "n_cells": X.shape[0], "n_genes": X.shape[1],
            "n_components": N_COMPONENTS, "threads": threads, "repeats": repeats,
            "fit_s_median": statistics.median(times), "fit_s_all": times,
            "fit_cpu_s_median": statistics.median(cpus), "load_avg": os.getloadavg()[0],
            "data_rss_mib": data_mib, "peak_rss_mib": max(peaks),
            "loglik_train": float(model.score(X_eval)),
            "loglik_test": float(model.score(X_test.astype(np.float64))) if X_test is not None else float("nan"),
            "n_iter": int(getattr(model, "n_iter_", 0)),
        }
    return out


# ---------------------------------------------------------------------------------------
# driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads (set explicitly in every worker)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10,000 synthetic cells instead of 100,000")
    parser.add_argument("--only", default=None, help="run only the cases whose 'dataset/method' contains this text")
    parser.add_argument("--report", action="store_true", help="only rewrite factor.md from factor.csv")
    parser.add_argument("--worker", nargs=2, metavar=("DATASET", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    from common import check_args

    check_args(parser, args, {"threads": 1, "repeats": 1})
    if args.only and not any(args.only in f"{d}/{m}" for d, m in CASES):
        parser.error(f"--only {args.only!r} matches no case; the cases are " + ", ".join(f"{d}/{m}" for d, m in CASES))

    if args.report:
        args.only = "\x00"  # matches no case: every row comes from factor.csv
    if args.worker:
        print("RESULT " + json.dumps(worker(*args.worker, args.repeats, args.threads, args.quick)))
        return

    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    env.setdefault("SCLECTURE_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    rows = []
    kept = {}  # with --only, the other cases keep their last results from factor.csv
    if args.only and (RESULTS / "factor.csv").exists():
        with open(RESULTS / "factor.csv", newline="") as f:
            for old in csv.DictReader(f):
                old = {k: (v if k in ("dataset", "method") else
                           [float(t) for t in v.split()] if k == "fit_s_all" else float(v)) for k, v in old.items()}
                kept[(old["dataset"], old["method"])] = old
    for dataset, method in CASES:
        if args.only and args.only not in f"{dataset}/{method}":
            if (dataset, method) in kept:
                rows.append(kept[(dataset, method)])
            continue
        repeats = 1 if (dataset, method) in SLOW else args.repeats
        cmd = [sys.executable, __file__, "--worker", dataset, method, "--repeats", str(repeats),
               "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [l for l in res.stdout.splitlines() if l.startswith("RESULT ")]
        if res.returncode != 0 or not line:
            raise SystemExit(f"{dataset} / {method} failed:\n{res.stdout}\n{res.stderr}")
        row = json.loads(line[0][7:])
        rows.append(row)
        print(f"{dataset:>9} {method:<28} fit {row['fit_s_median']:7.2f} s (cpu {row['fit_cpu_s_median']:6.2f} s)  peak {row['peak_rss_mib']:7.0f} MiB  "
              f"loglik {row['loglik_train']:.4f} / {row['loglik_test']:.4f}", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    fields = ["dataset", "method", "n_cells", "n_genes", "n_components", "threads", "repeats", "fit_s_median",
              "fit_s_all", "fit_cpu_s_median", "load_avg", "data_rss_mib", "peak_rss_mib", "loglik_train", "loglik_test", "n_iter"]
    with open(RESULTS / "factor.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in rows:
            w.writerow({**row, "fit_s_all": " ".join(f"{t:.3f}" for t in row["fit_s_all"])})

    import numpy, scipy, sklearn

    lines = [
        "# PPCA and factor analysis: sclecture.factor against scikit-learn",
        "",
        f"Generated by `benchmarks/bench_factor.py` on {time.strftime('%Y-%m-%d')}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores (shared with other jobs), {args.threads} BLAS thread(s) set explicitly; "
        f"Python {platform.python_version()}, NumPy {numpy.__version__}, SciPy {scipy.__version__}, scikit-learn {sklearn.__version__}.",
        "",
        f"L = {N_COMPONENTS} components. Fit time: median of {args.repeats} fits (one for the synthetic scikit-learn FA). "
        "CPU s: the fit's process CPU time (all threads), which contention from other jobs inflates less than the wall time; "
        "load: the 1-minute load average when the case ended. "
        "Peak memory: the process's peak resident set during the fit, data included (data alone: the `data MiB` column). "
        "Log-likelihood: average log p(x) per cell, on the training cells (the first 10,000 for the synthetic data) "
        "and on 20 % held-out pbmc3k cells. PPCA's noise variance is the maximum-likelihood one (S with 1/n); "
        "scikit-learn's PCA uses 1/(n - 1), hence its slightly lower training log-likelihood. "
        f"scikit-learn's FA gets at most {SKLEARN_FA_BIG_MAX_ITER} iterations on the synthetic data, each a randomised SVD "
        "of the whole n x D matrix (its iterations are not EM steps; the column counts them); sclecture's FA runs EM "
        "on the D x D covariance, so its iterations cost the same for any n.",
        "",
        "| data | cells x genes | method | fit s (median) | CPU s | load | peak MiB | data MiB | log-lik train | log-lik held-out | iterations |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        test = "" if r["loglik_test"] != r["loglik_test"] else f"{r['loglik_test']:.4f}"
        lines.append(f"| {r['dataset']} | {int(r['n_cells']):,} x {int(r['n_genes']):,} | {r['method']} | {r['fit_s_median']:.2f} | "
                     f"{r['fit_cpu_s_median']:.2f} | {r['load_avg']:.1f} | {r['peak_rss_mib']:.0f} | {r['data_rss_mib']:.0f} | {r['loglik_train']:.4f} | {test} | "
                     f"{int(r['n_iter']) or ''} |")
    big = [r for r in rows if r["dataset"] == "synthetic" and r["method"] == "sclecture PPCA"]
    if big:
        r = big[0]
        ok = r["fit_s_median"] < 20 and r["peak_rss_mib"] < 4096
        lines += ["", f"Check (issue 7): PPCA on {int(r['n_cells']):,} x {int(r['n_genes']):,} float32 fits in "
                      f"{r['fit_s_median']:.1f} s and {r['peak_rss_mib']:.0f} MiB peak: "
                      f"{'PASS' if ok else 'FAIL'} (limits 20 s, 4096 MiB; the n x n matrix alone would take "
                      f"{int(r['n_cells']) ** 2 * 4 / 2**30:.0f} GiB). Wall time depends on how busy the shared "
                      "machine is (see the load column); the CPU time does much less."]
    (RESULTS / "factor.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'factor.md'} and {RESULTS / 'factor.csv'}")


if __name__ == "__main__":
    main()
