"""Held-out likelihood of a change to scVI's training arithmetic, by refitting a few seeds instead of all.

The committed quality fits (``results/scvi_genes_quality.csv``, made by ``bench_scvi_genes.py``)
describe the package only while it trains bit for bit the same weights. A change that rounds
differently (another order of a sum, another exp) trains other weights, and refitting the 200-odd
seeds that the Welch interval needs takes hours. But a fit is decided mostly by its seed: the
initial weights, the minibatch order and the noise. The same seed trained by code that differs only
in rounding ends close to where it ended before: on this machine, taking log1p from NumPy instead of
torch moved the held-out -log p(x) of 16 seeds by 0.39 nats per cell (sd), while seeds spread by 2.3
(``results/scvi_seed_pairs_calibration.md``). So the changed code (``--after``, default this
checkout) is fitted on a few seeds S' that the stored fits already hold (chosen before looking, say
the next 16 by number), and the difference in held-out -log p(x) from scvi-tools is estimated as

    D = mean_{s in S'} (new_s - old_s) + mean_{s in S} old_s - mean peer

(S: every stored seed of the course, peer: scvi-tools' stored seeds), with

    Var D = var(new - old) / m + var(old) / n + 2 cov(new - old, old) / n + var(peer) / n_peer

(m = |S'|, n = |S|), each estimated from the samples; a negative covariance is left out, which can
only widen the interval. The interval takes the t quantile of Welch-Satterthwaite's degrees of
freedom. Clustering scores do not pair (a rounding change lands in other clusters), so they are
compared unpaired: the new seeds' mean against the stored means, in units of the seeds' spread.

Every fit has the stored fits' settings (epochs, importance samples, threads), read from the csv.
``--check-before PATH`` first refits the first seed with the code that made the stored fits (the
folder that holds its ``sclecture/``): on another machine or torch the stored numbers may not
reproduce, and the pairing then compares more than the change.

    OMP_WAIT_POLICY=PASSIVE SCLECTURE_DATA_DIR=../shared/data python benchmarks/bench_scvi_seed_pairs.py \
        --seeds $(seq 205 220) --jobs 2 --check-before /tmp/before

Writes ``benchmarks/results/<--out>.md`` and ``.csv`` (default ``scvi_seed_pairs``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see GUIDE: busy-waiting threads)

import argparse
import csv
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, ROOT, SETTINGS, check_args, copy_name, machine, package_worker  # noqa: E402

MEASURES = ("neg_marginal_ll", "neg_elbo", "ari", "nmi")


def stored_fits(path: Path, key: str) -> tuple[dict, tuple[int, int, int]]:
    """{implementation: {seed: {measure: value}}} of the full fits of ``key`` in a bench_scvi_genes csv, and the
    settings (epochs, importance samples, threads) they share; refuses fits of mixed or unrecorded settings."""
    if not path.exists():
        raise SystemExit(f"{path}: no such file (the quality fits of bench_scvi_genes.py)")
    fits: dict = {"sclecture": {}, "scvi-tools": {}}
    settings = set()
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["dataset"] != key or r["implementation"] not in fits or r["measure"] not in MEASURES:
                continue
            seed, found = re.match(r"seed (\d+)", r["detail"]), SETTINGS.search(r["detail"])
            if seed is None or found is None:
                raise SystemExit(f"{path}: the row {r} names no seed or settings")
            settings.add(tuple(int(v) for v in found.groups()))
            fits[r["implementation"]].setdefault(int(seed.group(1)), {})[r["measure"]] = float(r["value"])
    if not all(fits.values()):
        raise SystemExit(f"{path}: no full fits of both codes for {key}")
    if len(settings) != 1:
        raise SystemExit(f"{path}: the fits of {key} were made with different settings {sorted(settings)}: "
                         "the pairing needs one")
    return fits, settings.pop()


def paired_interval(new: dict, old: dict, peer: dict, level: float = 0.95) -> dict:
    """D = mean_{S'}(new - old) + mean_S old - mean peer, and its confidence interval (see the module's text).
    ``new``, ``old``, ``peer``: {seed: value}; every seed of ``new`` must be in ``old``."""
    from scipy import stats

    missing = sorted(set(new) - set(old))
    if missing:
        raise ValueError(f"seeds {missing} have no stored fit to pair with")
    if len(new) < 3:
        raise ValueError(f"{len(new)} paired seed(s): at least 3 are needed for a spread")
    seeds = sorted(new)
    diff = np.array([new[s] - old[s] for s in seeds])
    o_pair = np.array([old[s] for s in seeds])
    o, p = np.array(list(old.values())), np.array(list(peer.values()))
    m, n, n_p = len(diff), len(o), len(p)
    cov = float(np.cov(diff, o_pair)[0, 1])
    parts = [(diff.var(ddof=1) / m, m - 1), (o.var(ddof=1) / n, n - 1), (p.var(ddof=1) / n_p, n_p - 1)]
    var = sum(v for v, _ in parts) + 2 * max(cov, 0.0) / n
    dof = sum(v for v, _ in parts) ** 2 / sum(v**2 / k for v, k in parts if v > 0)
    d = float(diff.mean() + o.mean() - p.mean())
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * float(np.sqrt(var))
    return {"d": d, "lo": d - half, "hi": d + half, "m": m, "n": n, "n_peer": n_p, "mean_diff": float(diff.mean()),
            "sd_diff": float(diff.std(ddof=1)), "sd_seeds": float(o.std(ddof=1)), "cov": cov, "dof": dof}


def worker(spec: dict) -> dict:
    """One full fit (in a fresh interpreter whose sclecture is the copy under test)."""
    import bench_scvi_genes

    rows, _ = bench_scvi_genes.full_fit("sclecture", spec["dataset"], spec["seed"], spec["epochs"], spec["epochs"] // 4,
                                        spec["mc_samples"], spec["threads"])
    return {"values": {r[2]: r[3] for r in rows}, "sclecture": str(Path(sys.modules["sclecture"].__file__).parent)}


def fit(spec: dict, folder: Path) -> dict:
    """worker(spec) run by the copy of the package in ``folder``."""
    return package_worker(__file__, spec, folder, "fit")["values"]


def refits(path: Path, seeds: list[int], copy: str) -> dict:
    """The refits of ``seeds`` by ``copy`` (see common.copy_name) that an earlier run wrote to ``path``: all four
    measures of a seed, or none. Rows of another copy (or of a run that did not record its copy) are left out,
    and the run says how many."""
    found: dict = {}
    other = 0
    if path.exists():
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if r.get("copy") != copy:
                    other += 1
                    continue
                found.setdefault(int(r["seed"]), {})[r["measure"]] = float(r["new"])
    if other:
        print(f"--resume: {other} row(s) of {path.name} are refits of another copy than {copy}: fitted again")
    return {s: v for s, v in found.items() if s in seeds and set(MEASURES) <= set(v)}


def report(args, fits: dict, new: dict, check: str) -> None:
    from bench_scvi_genes import BOUND  # the margin the issue sets, one place

    old, peer = fits["sclecture"], fits["scvi-tools"]
    rows = [{"seed": s, "measure": k, "stored": old[s][k], "new": new[s][k], "new_minus_stored": new[s][k] - old[s][k],
             "copy": args.copy} for s in sorted(new) for k in MEASURES]
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{args.out}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"## Held-out likelihood of {args.label or args.copy} by seed pairs ({args.dataset})", "",
             f"Measured on: {machine()}.", "",
             f"{len(new)} seeds refitted ({', '.join(map(str, sorted(new)))}) and paired with the stored fits of "
             f"results/{args.against}.csv ({len(old)} sclecture and {len(peer)} scvi-tools seeds). {check}", "",
             "| seed | stored -log p(x) | new -log p(x) | difference | stored ARI | new ARI |", "|---|---|---|---|---|---|"]
    lines += [f"| {s} | {old[s]['neg_marginal_ll']:.3f} | {new[s]['neg_marginal_ll']:.3f} | "
              f"{new[s]['neg_marginal_ll'] - old[s]['neg_marginal_ll']:+.3f} | {old[s]['ari']:.3f} | {new[s]['ari']:.3f} |"
              for s in sorted(new)]
    lines.append("")
    for k, name in (("neg_marginal_ll", "held-out -log p(x), K importance samples"), ("neg_elbo", "held-out -ELBO")):
        r = paired_interval({s: v[k] for s, v in new.items()}, {s: v[k] for s, v in old.items()},
                            {s: v[k] for s, v in peer.items()})
        verdict = "within" if r["hi"] <= BOUND else "not within"
        lines.append(f"- **{name}**: new minus stored, per seed: mean {r['mean_diff']:+.3f}, sd {r['sd_diff']:.3f} "
                     f"(the seeds' own sd: {r['sd_seeds']:.2f}). Estimated new minus scvi-tools: **{r['d']:+.2f}** "
                     f"nats per cell, 95 % interval [{r['lo']:+.2f}, {r['hi']:+.2f}] ({r['dof']:.0f} degrees of "
                     f"freedom): the upper end is {verdict} +{BOUND}.")
    for k in ("ari", "nmi"):
        a = np.array([v[k] for v in new.values()])
        o, p = np.array([v[k] for v in old.values()]), np.array([v[k] for v in peer.values()])
        spread = p.std(ddof=1)
        lines.append(f"- **{k.upper()}** (unpaired): new {a.mean():.3f} ± {a.std(ddof=1):.3f} ({len(a)} seeds), stored "
                     f"{o.mean():.3f}, scvi-tools {p.mean():.3f} ± {spread:.3f}: new minus scvi-tools is "
                     + (f"{(a.mean() - p.mean()) / spread:+.2f} of the seeds' sd." if spread > 0 else
                        f"{a.mean() - p.mean():+.3f} (the scvi-tools seeds do not spread)."))
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--after", default=str(ROOT), help="folder holding the changed copy's sclecture/ (default: this checkout)")
    p.add_argument("--against", default="scvi_genes_quality", help="the stored fits: results/<name>.csv")
    p.add_argument("--dataset", default="pbmc3k-2000", help="the data set of the stored fits")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds to refit (each must be stored; at least 3)")
    p.add_argument("--jobs", type=int, default=1, help="fits at a time")
    p.add_argument("--check-before", default=None,
                   help="folder holding the code that made the stored fits: its refit of the first seed must match")
    p.add_argument("--label", default=None, help="what the changed copy is, for the report's title (default: its git commit, else its path)")
    p.add_argument("--out", default="scvi_seed_pairs", help="name of the result files in benchmarks/results")
    p.add_argument("--resume", action="store_true",
                   help="keep the refits that results/<out>.csv holds of the same --after copy (the same commit, "
                        "or folder outside git) and fit only the seeds it lacks")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.seeds is None:
        p.error("--seeds: name the stored seeds to refit (at least 3)")
    check_args(p, args, {"jobs": 1})  # (--seeds takes one value or more: argparse refuses it empty)
    for option, folder in (("--after", args.after), ("--check-before", args.check_before)):
        if folder is not None and not (Path(folder) / "sclecture" / "scvi.py").exists():
            p.error(f"{option} {folder}: no sclecture/scvi.py there")
    fits, (epochs, mc_samples, threads) = stored_fits(RESULTS / f"{args.against}.csv", args.dataset)
    unstored = sorted(set(args.seeds) - set(fits["sclecture"]))
    if unstored:
        p.error(f"--seeds {unstored}: no stored sclecture fit of results/{args.against}.csv to pair with")
    if len(set(args.seeds)) < 3:
        p.error("--seeds: at least 3 different seeds are needed for a spread")
    spec = {"dataset": args.dataset, "epochs": epochs, "mc_samples": mc_samples, "threads": threads}
    check = "The stored fits were not refitted with their own code (no --check-before)."
    if args.check_before:
        seed = args.seeds[0]
        again = fit({**spec, "seed": seed}, Path(args.check_before).resolve())["neg_marginal_ll"]
        stored = fits["sclecture"][seed]["neg_marginal_ll"]
        if abs(again - stored) > 1e-3:
            raise SystemExit(f"{args.check_before} refits seed {seed} to -log p(x) {again:.4f}, but the stored fit has "
                             f"{stored:.4f}: the stored fits do not reproduce here, so pairs would compare more than "
                             "the change (run where they were made, or refit them)")
        check = f"Seed {seed} refitted with {copy_name(args.check_before)} reproduces its stored -log p(x) ({again:.4f})."
    after, seeds = Path(args.after).resolve(), sorted(set(args.seeds))
    args.copy = copy_name(after)
    new = refits(RESULTS / f"{args.out}.csv", seeds, args.copy) if args.resume else {}
    todo = [s for s in seeds if s not in new]
    print(f"{len(todo)} fit(s) to run", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        new.update(zip(todo, pool.map(lambda s: fit({**spec, "seed": s}, after), todo)))
    report(args, fits, new, check)


if __name__ == "__main__":
    main()
