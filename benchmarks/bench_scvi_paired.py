"""Paired before/after timing of the course's scVI: two copies of the package, one process, epochs in turn.

``bench_scvi_genes.py --before`` times whole fits in fresh processes; on this machine such runs
scatter by about 5 %, so a change worth 1-3 % needs many rounds to show. Here an older copy of the
package (``--before``: the folder that holds its ``sclecture/``) and this checkout's (or another
copy: ``--after``) fit the same data in one process, in two threads that take turns epoch by epoch
(only one runs at a time, in the order ABBA ABBA ..., so that a drift of the machine's speed
cancels). Each epoch of one is timed next to an epoch of the other, and the report gives the median
of the after/before ratios of the pairs.

Each fit keeps its own random stream (saved and restored at every turn), so both train exactly as
they would alone: the report also says whether the two fits end with bit-for-bit equal weights,
which a change meant to leave training's arithmetic alone must keep.

    OMP_WAIT_POLICY=PASSIVE SCLECTURE_DATA_DIR=../shared/data python benchmarks/bench_scvi_paired.py \\
        --before /tmp/before --datasets pbmc3k-2000 zeisel_cortex-558 --epochs 40

(``git worktree add /tmp/before <commit>`` makes the older copy.)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see GUIDE: busy-waiting threads)

import argparse
import importlib
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def paired_epochs(before, after, adata, epochs: int, seed: int = 0) -> dict:
    """Fit ``before.SCVI`` and ``after.SCVI`` (two packages' ``scvi`` modules) on ``adata`` for ``epochs`` epochs
    each, taking turns.

    Returns the seconds of every epoch of each (``"before"``, ``"after"``, in the order they ran), the
    order of the turns, whether the two fits' weights end bit for bit equal, and the fitted models.
    """
    if int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1 (each pair of epochs is one measurement), got {epochs}")
    schedule = [("before", "after") if i % 2 == 0 else ("after", "before") for i in range(epochs)]
    schedule = [name for pair in schedule for name in pair]  # ABBA ABBA ...
    turn = threading.Condition()
    state = {"pos": 0, "error": None}
    times: dict[str, list[float]] = {"before": [], "after": []}
    rng: dict[str, torch.Tensor] = {}
    models: dict = {}

    def wait_for(name):
        with turn:
            turn.wait_for(lambda: state["error"] is not None
                          or (state["pos"] < len(schedule) and schedule[state["pos"]] == name))
        if state["error"] is not None:
            raise RuntimeError("the other fit failed")

    def pass_turn():
        with turn:
            state["pos"] += 1
            turn.notify_all()

    def gated(scvi_module, name):
        training = importlib.import_module(scvi_module.__name__.rpartition(".")[0] + ".training")
        loader = training.MinibatchLoader
        plain_iter = loader.__iter__

        def epoch_in_turn(self):
            if not self.shuffle:  # only the training minibatches take turns
                yield from plain_iter(self)
                return
            if times[name]:  # the first epoch's turn was taken before the fit began
                wait_for(name)
                torch.set_rng_state(rng[name])
            start = time.perf_counter()
            yield from plain_iter(self)
            times[name].append(time.perf_counter() - start)
            rng[name] = torch.get_rng_state()
            if len(times[name]) < epochs:  # after the last epoch, the fit finishes before the turn passes
                pass_turn()

        loader.__iter__ = epoch_in_turn
        return loader, plain_iter

    def run(scvi_module, name):
        try:
            wait_for(name)
            models[name] = scvi_module.SCVI(epochs=epochs, random_state=seed, progress=False).fit(adata)
            pass_turn()
        except BaseException as err:  # noqa: BLE001 (reported by the main thread)
            with turn:
                state["error"] = state["error"] or err  # the first failure; the other fit then stops too
                turn.notify_all()

    if before.MinibatchLoader is after.MinibatchLoader:
        raise ValueError("before and after are the same package: load the older copy under another name")
    modules = {"before": before, "after": after}
    plain = [gated(m, name) for name, m in modules.items()]
    try:
        threads = [threading.Thread(target=run, args=(m, name)) for name, m in modules.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for loader, plain_iter in plain:
            loader.__iter__ = plain_iter
    if state["error"] is not None:
        raise state["error"]
    weights = [[w.detach() for w in models[name].module_.state_dict().values()] for name in ("before", "after")]
    same = len(weights[0]) == len(weights[1]) and all(torch.equal(a, b) for a, b in zip(*weights))
    return {"before": times["before"], "after": times["after"], "order": schedule, "same_weights": same,
            "models": models}


def summary(res: dict, skip: int = 1) -> dict:
    """Median after/before ratio of the pairs of epochs (the first ``skip`` pairs left out: warm-up), and the
    95 % interval of the geometric mean ratio (t interval of the log ratios)."""
    from scipy import stats

    before, after = np.asarray(res["before"][skip:]), np.asarray(res["after"][skip:])
    logs = np.log(after / before)
    half = stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs))
    return {"pairs": len(logs), "before_s": float(np.median(before)), "after_s": float(np.median(after)),
            "median_ratio": float(np.exp(np.median(logs))), "ci": (float(np.exp(logs.mean() - half)),
                                                                   float(np.exp(logs.mean() + half)))}


def main(argv=None) -> None:
    import bench_scvi_genes

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="folder holding the older copy's sclecture/")
    p.add_argument("--after", help="folder holding the newer copy's sclecture/ (default: this checkout's)")
    p.add_argument("--datasets", nargs="+", default=["pbmc3k-2000", "zeisel_cortex-558"],
                   choices=list(bench_scvi_genes.DATASETS))
    p.add_argument("--epochs", type=int, default=40, help="epochs of each fit (pairs of epochs timed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from common import check_args

    check_args(p, args, {"epochs": 3, "threads": 1})  # the first epoch of each is dropped; an interval needs 2 pairs
    for option, folder in (("--before", args.before), ("--after", args.after)):
        if folder is not None and not (Path(folder) / "sclecture" / "__init__.py").exists():
            p.error(f"{option} {folder}: no sclecture/__init__.py there")
    torch.set_num_threads(args.threads)
    from bench_likelihood import load_package

    import sclecture.scvi

    before = load_package(args.before)
    after = load_package(args.after, "sclecture_after") if args.after else sclecture.scvi
    for key in args.datasets:
        adata = bench_scvi_genes.data(key)[0]
        res = paired_epochs(before, after, adata, args.epochs, args.seed)
        s = summary(res)
        print(f"{key}: {s['pairs']} pairs of epochs, median epoch {s['before_s']:.4f} s before, {s['after_s']:.4f} s "
              f"after; after/before {s['median_ratio']:.3f} (median), geometric mean 95 % CI "
              f"[{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]; weights bit for bit equal: {res['same_weights']}")


if __name__ == "__main__":
    main()
