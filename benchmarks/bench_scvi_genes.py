"""Lesson 06 benchmark across gene counts: the course's scVI against scvi-tools at 558, 2,000 and 4,000 genes.

``bench_scvi.py`` compares the two on zeisel_cortex's 558 genes; scvi-tools' tutorials train on
2,000 or more highly variable genes, where the likelihood's elementwise work grows with the genes.
Same model and training settings as ``bench_scvi.py`` (10 latent, one hidden layer of 128, dropout
0.1, ZINB, gene-wise theta, observed library, Adam lr 1e-3, minibatches of 128, KL warm-up over a
quarter of the epochs). Data sets (genes of largest raw-count variance; cells without counts in
them dropped):

* ``zeisel_cortex-558``: zeisel_cortex, 558 genes (the scVI paper's CORTEX selection);
* ``pbmc3k-2000``: pbmc3k, 2,000 genes (the size of scvi-tools' tutorials' gene sets);
* ``pbmc3k-4000``: pbmc3k, 4,000 genes.

Measured in one run:

* equivalence, per data set: scvi-tools' ``VAE`` and the course's ``SCVIModule`` given the same
  weights, minibatch and noise give the same loss and gradients (``bench_scvi.module_check``), and,
  trained side by side from the same weights on the same minibatches and noise with each one's
  optimiser, stay together for ``--trajectory-steps`` steps (``bench_scvi.trajectory_check``);
* throughput: the whole fit call (``SCVI.fit``; scvi-tools' ``model.train``) of ``--timing-epochs``
  epochs on all cells, each run in a fresh process, ``--rounds`` interleaved rounds (the order of the
  implementations alternates); cells x epochs / seconds of the call, the median over rounds and
  each round's ratio. ``--before PATH`` adds a third implementation: the same runs with an older copy
  of the package (the folder that holds its ``sclecture/``), for before/after ratios (fresh processes
  scatter by about 5 %; ``bench_scvi_paired.py`` times a change of a few percent more finely);
* quality, on ``--quality`` data sets: one full fit per seed and implementation on a stratified
  75/25 split, held-out -ELBO and importance-sampled -log p(x) per cell, k-means ARI / NMI and the
  silhouette of the labelled cells' latent space, the Welch 95 % interval of the difference in
  -log p(x) (``bench_scvi.welch_interval``), and one seed's scvi-tools model scored by both
  codes. Each fit's rows record its settings (epochs, importance samples K, threads), and ``--resume``
  refuses to pool fits of other settings.

Writes ``benchmarks/results/<--out>.md`` and ``.csv`` (default ``scvi_genes``). The committed results:
``scvi_genes_idle`` (throughput on an idle machine) and ``scvi_genes_quality`` (the full fits).

    OMP_WAIT_POLICY=PASSIVE SCLECTURE_DATA_DIR=../shared/data nice python benchmarks/bench_scvi_genes.py --threads 1
    python benchmarks/bench_scvi_genes.py --rounds 1 --timing-epochs 3 --quality --datasets pbmc3k-2000  # a quick look
    python benchmarks/bench_scvi_genes.py --rounds 0 --quality --out scvi_genes_checks  # the equivalence checks only
    # more seeds for the committed quality results (only the fits they lack run; the csv is rewritten after each fit)
    python benchmarks/bench_scvi_genes.py --resume --out scvi_genes_quality --rounds 0 --trajectory-steps 0 \
        --datasets pbmc3k-2000 --quality pbmc3k-2000 --epochs 400 --seeds $(seq 0 39)

The likelihood verdict also says how many seeds per code the interval's upper end would need to come
within +0.5 nats (``seeds_for_bound``), were the means and spreads to stay as measured.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see GUIDE: busy-waiting threads)

import argparse
import csv
import importlib
import importlib.util
import json
import re
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_scvi  # noqa: E402  (Course, Peer, module_check, copy_peer_weights, welch_interval)
from common import SETTINGS, check_args, copy_name, package_worker, top_variance_genes  # noqa: E402

ROOT = HERE.parent
RESULTS = HERE / "results"
DATASETS = {"zeisel_cortex-558": ("zeisel_cortex", 558), "pbmc3k-2000": ("pbmc3k", 2000),
            "pbmc3k-4000": ("pbmc3k", 4000)}
UNLABELLED = "unlabelled"


def load(key: str):
    """(all cells, train split, test split) of a data set, its genes of largest raw-count variance."""
    import sclecture.datasets as ds
    from sklearn.model_selection import train_test_split

    name, n_genes = DATASETS[key]
    adata = getattr(ds, name)()
    adata = top_variance_genes(adata, n_genes)
    adata = adata[np.asarray(adata.X.sum(axis=1)).ravel() > 0].copy()
    labels = adata.obs["cell_type"].astype(object).where(adata.obs["cell_type"].notna(), UNLABELLED).astype(str)
    adata.obs["label"] = labels.to_numpy()
    train, test = train_test_split(np.arange(adata.n_obs), test_size=0.25, stratify=adata.obs["label"],
                                   random_state=0)
    return adata, adata[train].copy(), adata[test].copy()


_DATA: dict = {}


def data(key: str):
    if key not in _DATA:
        _DATA[key] = load(key)
    return _DATA[key]


IMPLS = {"sclecture": bench_scvi.Course, "scvi-tools": bench_scvi.Peer}


# --------------------------------------------------------------------------- throughput, one fit per fresh process

def throughput_worker(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    adata = data(spec["dataset"])[0]
    impl = IMPLS["scvi-tools" if spec["impl"] == "scvi-tools" else "sclecture"](spec["epochs"], spec["warmup"],
                                                                                spec["seed"])
    # torch.optim imports torch._dynamo on first use (about a second); `import scvi` has already done it,
    # so it is timed apart: a one-time library import, not training
    start = time.perf_counter()
    importlib.import_module("torch._dynamo")
    dynamo_s = time.perf_counter() - start
    impl.fit(adata)
    return {"fit_s": impl.fit_call_s, "dynamo_s": dynamo_s, "n_cells": adata.n_obs,
            "sclecture": str(Path(sys.modules["sclecture"].__file__).parent)}


def run_worker(spec: dict, before: str | None) -> dict:
    """One throughput fit in a fresh interpreter (the older package first on the path for 'before')."""
    return package_worker(__file__, spec, before if spec["impl"] == "before" else ROOT, f"{spec['impl']} worker")


# --------------------------------------------------------------------------- quality, one full fit per seed

def full_fit(name: str, key: str, seed: int, epochs: int, warmup: int, mc_samples: int, threads: int,
             score_with_course: bool = False) -> tuple[list, str]:
    torch.set_num_threads(threads)
    adata, train, test = data(key)
    impl = IMPLS[name](epochs, warmup, seed)
    impl.fit(train)
    labelled = adata.obs["label"].to_numpy() != UNLABELLED
    res, diff = bench_scvi.evaluate(impl, adata, adata.obs["label"].to_numpy(), train, test, mc_samples, seed,
                                    score_with_course, scored=labelled)
    rows = [(key, name, k, v, f"seed {seed}") for k, v in res.items()]
    line = f"{key} seed {seed} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items())
    if diff is not None:
        rows.append((key, "check", "eval_diff", diff, f"seed {seed}: scvi-tools' model, -log p(x) by sclecture minus by scvi-tools"))
        line += f"\n  scvi-tools' model scored by both codes: {res['neg_marginal_ll'] + diff:.2f} (sclecture) vs {res['neg_marginal_ll']:.2f}"
    return rows, line


def full_fits(tasks: list[tuple], jobs: int):
    return bench_scvi.full_fits(tasks, jobs, fit=full_fit)


# --------------------------------------------------------------------------- the run

def _seed_of(detail: str) -> int | None:
    m = re.match(r"seed (\d+)", detail)
    return int(m.group(1)) if m else None


def load_rows(out: str) -> list[tuple]:
    """The rows of an earlier run's results/<out>.csv (empty when there is none)."""
    path = RESULTS / f"{out}.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [(r["dataset"], r["implementation"], r["measure"], float(r["value"]), r["detail"]) for r in csv.DictReader(f)]


def _derived(row) -> bool:
    """Rows that write() computes from the others (recomputed at every write)."""
    return row[2] in ("speedup_median", "neg_marginal_ll_diff", "neg_elbo_diff")


def fitted_seeds(rows, key: str, impl: str) -> list[int]:
    seeds = {_seed_of(r[4]) for r in rows if r[0] == key and r[1] == impl and r[2] == "neg_marginal_ll"}
    return sorted(s for s in seeds if s is not None)


def fit_settings(args) -> str:
    """What a full fit's rows record of the settings that decide its numbers."""
    return f"{args.epochs} epochs, K={args.mc_samples}, {args.threads} thread(s)"


def check_resumable(rows, args) -> None:
    """Full fits of other settings must not be pooled with this run's: refuse, naming the difference."""
    want = SETTINGS.search(fit_settings(args)).groups()
    for r in rows:
        if r[0] in args.quality and r[1] in ("sclecture", "scvi-tools") and r[2] == "neg_marginal_ll":
            m = SETTINGS.search(r[4])
            if m is None or m.groups() != want:
                raise SystemExit(f"results/{args.out}.csv holds a full fit ({r[0]}, {r[1]}, {r[4]!r}) made with other "
                                 f"settings than this run's ({fit_settings(args)}), or with none recorded: resume "
                                 "with the same --epochs, --mc-samples and --threads, or choose another --out")


def run(args) -> None:
    torch.set_num_threads(args.threads)
    # (dataset, implementation, measure, value, detail); --resume keeps an earlier run's rows and does only what
    # they lack: a stopped run picks up where it stopped, and more seeds can be added to a finished one
    rows = [r for r in load_rows(args.out) if not _derived(r)] if args.resume else []
    if rows:
        check_resumable(rows, args)
        print(f"resuming from results/{args.out}.csv: {len(rows)} rows", flush=True)
    impls = ["sclecture", "scvi-tools"] + (["before"] if args.before else [])
    warmup = args.timing_epochs // 4
    for key in args.datasets:
        adata, train, test = data(key)
        print(f"{key}: {adata.n_obs} cells x {adata.n_vars} genes, {adata.X.nnz / np.prod(adata.shape):.0%} nonzero",
              flush=True)
        done = {r[2] for r in rows if r[0] == key and r[1] == "check"}
        if "loss_rel_diff" not in done:
            check = bench_scvi.module_check(train)
            for k in ("loss_rel_diff", "grad_rel_diff"):
                rows.append((key, "check", k, check[k], f"same weights, minibatch and noise; {check['n_parameters']} parameters"))
            print(f"  same weights: loss differs by {check['loss_rel_diff']:.1e}, gradients by "
                  f"{check['grad_rel_diff']:.1e}", flush=True)
        if not args.trajectory_steps or any(d.startswith("weights_rel_diff_") for d in done):
            continue
        traj = bench_scvi.trajectory_check(train, steps=args.trajectory_steps,
                                           report_at=sorted({1, 10, 50, args.trajectory_steps}))
        for k, v in traj.items():
            if k != "steps":
                what = "control: the course's KL weight x 1.01" if k.startswith("control_") else "same start, minibatches and noise"
                rows.append((key, "check", k, v, f"{what}; {traj['steps']} Adam steps"))
        print(f"  same start, {traj['steps']} Adam steps: weights differ by "
              + ", ".join(f"{v:.1e} (step {k.rsplit('_', 1)[1]})" for k, v in traj.items() if k.startswith("weights_"))
              + f"; last loss by {traj['loss_rel_diff_last']:.1e}; control (KL weight x 1.01) "
              + f"{traj['control_rel_diff_' + str(traj['steps'])]:.1e}", flush=True)

    for r in range(args.rounds):
        for key in args.datasets:
            if len(_values(rows, key, "ratio", "speedup")) > r:  # this round is in the resumed rows already
                continue
            order = impls if r % 2 == 0 else impls[::-1]
            got, with_import = {}, {}
            for impl in order:
                spec = {"impl": impl, "dataset": key, "epochs": args.timing_epochs, "warmup": warmup, "seed": 100 + r,
                        "threads": args.threads}
                out = run_worker(spec, args.before)
                got[impl] = out["n_cells"] * args.timing_epochs / out["fit_s"]
                with_import[impl] = out["n_cells"] * args.timing_epochs / (out["fit_s"] + out["dynamo_s"])
                rows.append((key, impl, "cells_per_s", got[impl], f"round {r}: {out['n_cells']} cells x "
                             f"{args.timing_epochs} epochs / {out['fit_s']:.2f} s (whole fit call)"))
                rows.append((key, impl, "dynamo_import_s", out["dynamo_s"], f"round {r}: import torch._dynamo "
                             "before the fit call"))
            rows.append((key, "ratio", "speedup", got["sclecture"] / got["scvi-tools"], f"round {r}"))
            rows.append((key, "ratio", "speedup_with_dynamo_import", with_import["sclecture"] / with_import["scvi-tools"],
                         f"round {r}: fit call + the one-time torch._dynamo import"))
            if args.before:
                rows.append((key, "ratio", "speedup_before", got["before"] / got["scvi-tools"], f"round {r}"))
            print(f"round {r} {key}: " + ", ".join(f"{k} {v:.0f} cells/s" for k, v in got.items())
                  + f"; ratio {got['sclecture'] / got['scvi-tools']:.2f}x, load {os.getloadavg()[0]:.1f}", flush=True)
        write(list(rows), args, impls, quiet=True)  # a stopped run keeps its finished rounds

    tasks = []
    for key in args.quality:
        w = args.epochs // 4
        scored = any(r[0] == key and r[2] == "eval_diff" for r in rows)
        for i, seed in enumerate(args.seeds):
            for name in (["sclecture", "scvi-tools"] if i % 2 == 0 else ["scvi-tools", "sclecture"]):
                if seed in fitted_seeds(rows, key, name):
                    continue
                tasks.append((name, key, seed, args.epochs, w, args.mc_samples, args.threads,
                              name == "scvi-tools" and not scored))
                scored = scored or name == "scvi-tools"
    if args.quality:
        print(f"{len(tasks)} full fit(s) to run", flush=True)
    for fit_rows, line in full_fits(tasks, args.jobs):
        rows += [r[:4] + (f"{r[4]}, {fit_settings(args)}, up to {args.jobs} fit(s) at a time",)
                 if r[1] != "check" else r for r in fit_rows]
        print(line, flush=True)
        write(list(rows), args, impls, quiet=True)  # a stopped run keeps its finished fits
    write(rows, args, impls)


def _values(rows, key, impl, measure):
    return [r[3] for r in rows if r[0] == key and r[1] == impl and r[2] == measure]


BOUND = 0.5  # nats per cell: the margin within which the course's held-out -log p(x) should be shown to lie


def _scored_seed(rows, key: str) -> str:
    detail = next((r[4] for r in rows if r[0] == key and r[2] == "eval_diff"), "")
    seed = _seed_of(detail)
    return "?" if seed is None else str(seed)


def _ranges(seeds: list[int]) -> str:
    """[0, 1, 2, 5, 6] -> '0-2, 5-6'."""
    parts, start = [], None
    for i, s in enumerate(seeds):
        start = s if start is None else start
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            parts.append(f"{start}-{s}" if s > start else f"{s}")
            start = None
    return ", ".join(parts) or "none"


MAX_SEEDS = 1_000_000


def seeds_for_bound(a, b, bound: float) -> str:
    """How many seeds per code the Welch interval's upper end needs to fall below ``bound``, if the means and
    spreads stay as measured (a planning figure, not a result)."""
    d, lo, hi = bench_scvi.welch_interval(a, b)
    if hi <= bound:
        return f"The upper end is within +{bound} nats."
    if d >= bound:
        return (f"The estimated difference ({d:+.2f}) is itself above +{bound} nats: at this estimate more seeds would "
                f"not bring the upper end below +{bound}, only narrow the interval around it.")
    var_a, var_b = float(np.var(a, ddof=1)), float(np.var(b, ddof=1))
    fits = lambda n: d + bench_scvi.welch_half_width(var_a, var_b, n, n) <= bound  # noqa: E731  (n seeds per code)
    low, high = max(len(a), len(b)), max(len(a), len(b), 2)
    while not fits(high):  # the upper end falls as n grows: double, then halve the gap
        low, high = high, 2 * high
        if high > MAX_SEEDS:
            return f"With these means and spreads, more than {MAX_SEEDS:,} seeds per code would be needed."
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    return (f"With these means and spreads, the upper end would come within +{bound} nats at about {high} seeds per "
            f"code ({high - len(a)} more for sclecture, {high - len(b)} more for scvi-tools; `--resume` adds them).")


def write(rows, args, impls, quiet: bool = False) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rounds_done = max((len(_values(rows, k, "ratio", "speedup")) for k in args.datasets), default=0)
    label = {"sclecture": "sclecture", "scvi-tools": "scvi-tools 1.4.2", "before": "sclecture before"}
    lines = [
        "# scVI against scvi-tools across gene counts",
        "",
        f"Generated by `benchmarks/bench_scvi_genes.py` on {time.strftime('%Y-%m-%d')}: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU core(s), torch {torch.__version__}, "
        f"{args.threads} torch thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average at the end "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "Same model and settings for both: 10 latent dims, 1 x 128 hidden, BatchNorm, dropout 0.1, ZINB, gene-wise "
        "theta, observed library, Adam lr 1e-3 (eps 0.01, weight decay 1e-6), minibatches of 128. Genes of largest "
        "raw-count variance."
        + (f" Throughput: the whole fit call (`SCVI.fit`, scvi-tools' `model.train`) of "
           f"{args.timing_epochs} epochs on all cells (KL warm-up {args.timing_epochs // 4} epochs), each in a fresh "
           f"process, {rounds_done} interleaved round(s) (order alternating), median over rounds"
           + (f"; `sclecture` is the package as of {copy_name(ROOT)}, `sclecture before` as of {copy_name(args.before)}."
              if args.before else ".") if args.rounds else ""),
        "",
    ]
    if args.rounds:
        lines += [
            "## Throughput (training cells per second, whole fit call)",
            "",
            "| data | genes | " + " | ".join(label[i] for i in impls) + " | ratio (median of rounds) | ratio per round |"
            + (" before: ratio (per round) |" if "before" in impls else "")
            + " ratio counting the torch._dynamo import (per round) |",
            "|---|---|" + "---|" * len(impls) + "---|---|" + ("---|" if "before" in impls else "") + "---|",
        ]
    timed = [k for k in args.datasets if all(_values(rows, k, i, "cells_per_s") for i in impls)] if args.rounds else []
    for key in timed:
        med = {i: statistics.median(_values(rows, key, i, "cells_per_s")) for i in impls}
        per_round = _values(rows, key, "ratio", "speedup")
        ratio = statistics.median(per_round)  # each round's ratio is taken under that round's load
        rows.append((key, "ratio", "speedup_median", ratio, "median over rounds of sclecture / scvi-tools"))
        line = (f"| {DATASETS[key][0]} | {DATASETS[key][1]:,} | " + " | ".join(f"{med[i]:.0f}" for i in impls)
                + f" | **{ratio:.2f}x** | {', '.join(f'{v:.2f}' for v in per_round)} |")
        if "before" in impls:
            b = _values(rows, key, "ratio", "speedup_before")
            line += f" {statistics.median(b):.2f}x ({', '.join(f'{v:.2f}' for v in b)}) |"
        wi = _values(rows, key, "ratio", "speedup_with_dynamo_import")
        line += f" {statistics.median(wi):.2f}x ({', '.join(f'{v:.2f}' for v in wi)}) |"
        lines.append(line)
    if timed:
        dyn = _values(rows, timed[0], "sclecture", "dynamo_import_s")
        lines += ["", "`torch.optim` imports `torch._dynamo` when the first optimiser is made; `import scvi` has "
                  "already imported it, so each worker imports it before the timed call and the fit calls compare "
                  f"training alone (sclecture's workers took a median {statistics.median(dyn):.2f} s for that import, "
                  "once per process; the last column counts it in the course's fit call)."]
    lines += ["", "## Do the two compute the same thing?", ""]
    for key in args.datasets:
        c = {r[2]: r[3] for r in rows if r[0] == key and r[1] == "check"}
        lines.append(f"- {key}: same weights, minibatch and noise in scvi-tools' `VAE` and the course's `SCVIModule` "
                     f"(train mode, dropout off): loss differs by {c['loss_rel_diff']:.1e}, gradient vector by "
                     f"{c['grad_rel_diff']:.1e} (relative; float32 rounding)."
                     + (f" Seed {_scored_seed(rows, key)}'s scvi-tools model scored by the course's "
                        f"`get_marginal_ll` minus its own: {c['eval_diff']:+.2f} nats per cell (independent "
                        f"importance samples, K={args.mc_samples})." if "eval_diff" in c else ""))
        steps = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in c.items() if k.startswith("weights_rel_diff_"))
        if steps:
            lines.append(f"- {key}: trained side by side in float64 from the same weights on the same minibatches and noise "
                         f"(dropout off; scvi-tools' `VAE` with its training plan's Adam, the course's "
                         f"`SCVIModule.loss` on the nonzero counts with `fused_adam`): all weights and BatchNorm "
                         f"statistics differ by " + ", ".join(f"{v:.1e} after {n} step{'s' if n > 1 else ''}"
                                                              for n, v in steps)
                         + f" (relative); the last step's loss by {c['loss_rel_diff_last']:.1e}. Control: with the "
                         f"course's KL weight times 1.01 they are " + ", ".join(
                             f"{c[f'control_rel_diff_{n}']:.1e}" for n, _ in steps if f"control_rel_diff_{n}" in c)
                         + " apart at the same steps.")
    if args.quality:
        seeds = {i: sorted({x for k in args.quality for x in fitted_seeds(rows, k, i)}) for i in ("sclecture", "scvi-tools")}
        lines += ["", f"## Quality ({args.epochs} epochs, KL warm-up {args.epochs // 4}, stratified 75/25 split; seeds: "
                  + ", ".join(f"{i} {len(v)} ({_ranges(v)})" for i, v in seeds.items()) + ")", "",
                  "Fit-call times depend on how many fits ran at once (up to the number in the csv's detail column), "
                  "so they compare the two codes only roughly; the throughput table times them alone.", "",
                  "| data | measure | sclecture | scvi-tools |", "|---|---|---|---|"]
        names = {"fit_s": "fit call (s)", "neg_elbo": "held-out -ELBO per cell",
                 "neg_marginal_ll": f"held-out -log p(x) per cell (K={args.mc_samples})", "ari": "k-means ARI",
                 "nmi": "k-means NMI", "silhouette": "silhouette of the labels"}
        for key in args.quality:
            for m, what in names.items():
                a, b = _values(rows, key, "sclecture", m), _values(rows, key, "scvi-tools", m)
                f = "{:.1f}" if m in ("fit_s", "neg_elbo", "neg_marginal_ll") else "{:.3f}"
                lines.append(f"| {key} | {what} | {f.format(np.mean(a))} +/- {f.format(np.std(a))} | "
                             f"{f.format(np.mean(b))} +/- {f.format(np.std(b))} |")
        lines += ["", "Likelihood verdict (sclecture minus scvi-tools, nats per held-out cell, lower is better; "
                  "Welch 95 % interval over seeds):", ""]
        for key in args.quality:
            for m, what in (("neg_marginal_ll", "-log p(x)"), ("neg_elbo", "-ELBO")):
                a, b = _values(rows, key, "sclecture", m), _values(rows, key, "scvi-tools", m)
                if len(a) >= 2 and len(b) >= 2:
                    d, lo, hi = bench_scvi.welch_interval(a, b)
                    _, lo99, hi99 = bench_scvi.welch_interval(a, b, level=0.99)
                    rows.append((key, "check", f"{m}_diff", d, f"95% CI [{lo:.3g}, {hi:.3g}]"))
                    lines.append(f"- {key}, held-out {what}: {d:+.2f}, 95 % CI [{lo:+.2f}, {hi:+.2f}] ({len(a)} and "
                                 f"{len(b)} seeds): **{bench_scvi.likelihood_verdict(d, lo, hi)}**; "
                                 f"{bench_scvi.worst_case(hi, float(np.mean(b)))}. {seeds_for_bound(a, b, BOUND)} "
                                 # seeds were added while the interval was watched, which makes 95 % optimistic
                                 f"The 99 % interval, for a reader who discounts looks taken as seeds were added: "
                                 f"[{lo99:+.2f}, {hi99:+.2f}].")
    lines.append("")
    with open(RESULTS / f"{args.out}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "implementation", "measure", "value", "detail"])
        for r in rows:
            w.writerow([r[0], r[1], r[2], f"{r[3]:.10g}", r[4]])
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines))
    if not quiet:
        print("\n".join(lines))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4, help="interleaved throughput rounds")
    p.add_argument("--timing-epochs", type=int, default=20, help="epochs of each timed fit call")
    p.add_argument("--before", default=None, help="folder holding an older sclecture/ to time as well")
    p.add_argument("--quality", nargs="*", default=["pbmc3k-2000"], choices=list(DATASETS),
                   help="data sets of the full fits (none: throughput only)")
    p.add_argument("--epochs", type=int, default=200, help="epochs of each full fit")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--mc-samples", type=int, default=100)
    p.add_argument("--trajectory-steps", type=int, default=200,
                   help="Adam steps of the side-by-side training from the same weights (equivalence check; 0: skip it)")
    p.add_argument("--out", default="scvi_genes", help="name of the result files in benchmarks/results")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows of results/<out>.csv and run only what they lack (checks, throughput rounds "
                        "up to --rounds, full fits of --seeds): resumes a stopped run or adds seeds to a finished one")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(throughput_worker(json.loads(args.worker))))
        return
    check_args(p, args, {"jobs": 1, "threads": 1, "rounds": 0, "timing_epochs": 1, "epochs": 1, "mc_samples": 1,
                         "seeds": 0, "trajectory_steps": 0})  # (0 rounds: no throughput rounds)
    if args.before and not (Path(args.before) / "sclecture" / "scvi.py").exists():
        p.error(f"--before {args.before}: no sclecture/scvi.py there")
    if importlib.util.find_spec("scvi") is None:
        print("scvi-tools is not installed, and this benchmark is a comparison with it: nothing measured "
              "(pip install -c constraints.txt 'sclecture[peers]')")
        return
    run(args)


if __name__ == "__main__":
    main()
