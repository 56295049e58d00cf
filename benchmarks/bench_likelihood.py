"""The ZINB likelihood that scVI trains with, alone: forward and backward on one real minibatch, this
package against an older copy of it.

    python benchmarks/bench_likelihood.py --before PATH [--datasets zeisel_cortex-558 pbmc3k-2000] [--rounds 7]

PATH is a folder that holds an older ``sclecture/`` (``git worktree add /tmp/before <commit>`` makes one).
Both packages are imported into this process, the older one under another name, and time the same
minibatch of 128 cells (a scVI model's mu, theta and dropout logits after 3 epochs) in alternating order:
per round, the median of 50 calls after 10 unmeasured ones; then the median over rounds. "hot": one call
after another; "caches flushed": 16 MB are written between two calls, as in a training step, where
weights, activations and Adam's state pass through the caches between two likelihoods.

"same arithmetic": both packages train scVI for 2 epochs from the same seed, and every minibatch's loss
and every weight come out bitwise equal (or not).

Writes benchmarks/results/scvi_likelihood.{md,csv}.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads OpenMP)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sclecture.scvi as current  # noqa: E402


def load_package(folder, name: str = "sclecture_before"):
    """The ``scvi`` module of the package in ``folder``/sclecture, imported as ``name`` (beside this one)."""
    init = Path(folder).resolve() / "sclecture" / "__init__.py"
    if not init.exists():
        raise SystemExit(f"--before {folder}: no sclecture/__init__.py there")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{name}.scvi")


def minibatch(X, seed: int = 0):
    """(x, nonzero index or nothing, mu, theta, dropout logits): the first minibatch of 128 cells of ``X`` and
    what a model trained on ``X`` for 3 epochs makes of it."""
    from sclecture.training import MinibatchLoader

    model = current.SCVI(epochs=3, random_state=seed, progress=False, device="cpu").fit(X)
    batch = next(iter(MinibatchLoader((model._X, model._batch), batch_size=128, shuffle=False, device="cpu",
                                      nonzero_index=True)))
    module = model.module_.train()
    with torch.no_grad():
        inf = module.inference(batch[0])
        gen = module.generative(inf["z"], inf["library"])
    return batch[0], batch[2:], model._X, [gen[k].detach().clone().requires_grad_() for k in ("mu", "theta", "pi_logits")]


def time_likelihood(scvi_module, x, extra, X, params, flush: bool, calls: int = 50, warmup: int = 10) -> float:
    """Median ms of one forward and backward of ``scvi_module.zinb_log_likelihood`` (with its CountTerms)."""
    table = scvi_module.log_factorial_table(X, whole=True)
    junk = torch.zeros(4_000_000) if flush else None  # 16 MB
    times = []
    for i in range(warmup + calls):
        if junk is not None:
            junk.add_(1)
        start = time.perf_counter()
        terms = scvi_module.CountTerms(x, *extra, table=table)
        scvi_module.zinb_log_likelihood(x, *params, terms=terms).sum().backward()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def same_arithmetic(before, X, epochs: int = 2, seed: int = 1) -> bool:
    """Whether both packages train to bitwise equal minibatch losses and weights."""
    fits = [m.SCVI(epochs=epochs, random_state=seed, progress=False, device="cpu").fit(X) for m in (before, current)]
    a, b = fits
    return (np.array_equal(a.history_.step_loss, b.history_.step_loss)
            and all(torch.equal(p, q) for p, q in zip(a.module_.state_dict().values(), b.module_.state_dict().values())))


def measure(before, X, rounds: int, calls: int = 50) -> dict:
    x, extra, X_fit, params = minibatch(X)
    out = {}
    for flush in (False, True):
        got = {"before": [], "now": []}
        for r in range(rounds):
            order = (("before", before), ("now", current)) if r % 2 == 0 else (("now", current), ("before", before))
            for name, module in order:
                got[name].append(time_likelihood(module, x, extra, X_fit, params, flush, calls))
        out["flushed" if flush else "hot"] = (statistics.median(got["before"]), statistics.median(got["now"]),
                                              [n / b for b, n in zip(got["before"], got["now"])])
    out["same"] = same_arithmetic(before, X)
    return out


def main(argv=None) -> None:
    import bench_scvi_genes

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="folder holding the older sclecture/")
    p.add_argument("--datasets", nargs="+", default=["zeisel_cortex-558", "pbmc3k-2000", "pbmc3k-4000"],
                   choices=list(bench_scvi_genes.DATASETS))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=50)
    args = p.parse_args(argv)
    common.check_args(p, args, {"rounds": 1, "calls": 1})
    torch.set_num_threads(1)
    before = load_package(args.before)
    rows = []
    for key in args.datasets:
        adata = bench_scvi_genes.data(key)[0]
        res = measure(before, adata, args.rounds, args.calls)
        for cache in ("hot", "flushed"):
            b, n, ratios = res[cache]
            rows.append({"data": key, "caches": cache, "before ms": b, "now ms": n, "now / before": n / b,
                         "per round": ", ".join(f"{v:.2f}" for v in ratios), "same arithmetic": res["same"]})
        print(key, "done", flush=True)
    common.write_table(
        "scvi_likelihood", "scVI's ZINB likelihood alone: forward and backward of one minibatch, before and now", rows,
        f"1 torch thread, torch {torch.__version__}. `before`: the package in `{Path(args.before).name}/`; `now`: this "
        f"one. One minibatch of 128 cells, {args.rounds} rounds in alternating order, per round the median of "
        f"{args.calls} calls; `caches flushed`: 16 MB written between calls. `same arithmetic`: 2 epochs of "
        "`SCVI.fit` from one seed give bitwise equal minibatch losses and weights in both packages.")


if __name__ == "__main__":
    main()
