"""Would torch.compile pay off for scVI's training step on a CPU? Measured, not assumed.

Issue #20 asks whether fusing the step's elementwise chains (by hand or with ``torch.compile``)
pays off after its compile time. This benchmark compiles, with TorchInductor (the default
backend, which writes and builds C++ on a CPU), the code ``SCVI.fit`` trains, and times it
against the eager code, in one process per data set, on realistic minibatches:

* ``step``: one training step as ``SCVI.fit`` takes it: ``SCVIModule.loss`` (the nonzero-count
  likelihood with ``CountTerms``), backward, fused Adam; compiled: the same loss function under
  ``torch.compile(dynamic=True)`` (minibatches differ in their number of nonzero counts);
* ``likelihood``: the ZINB log-likelihood alone, forward and backward: the course's
  ``zinb_log_likelihood``, the plain formula of the lesson (``distributions._log_zinb``), and
  that plain formula compiled, which is what a fused kernel of the textbook formula would give.

Data: zeisel_cortex's 558 and pbmc3k's 2,000 genes of largest variance, a model trained for one
epoch, 12 minibatches of 128 cells. The compile time is the wall time of the first two compiled
calls (tracing, code generation, building, first run, and a recompile for dynamic shapes) minus
two eager calls; ``break-even``: the training steps after which compiling would have paid for
itself (compile time / per-step saving; for the likelihood, the saving over the course's eager
likelihood, which a compiled plain formula would replace), none when the compiled code is not faster. Rounds
alternate eager and compiled code; medians over rounds. Inductor caches what it builds on disk,
so a second process compiles faster; the benchmark measures the cold case a student meets (a fresh,
empty cache folder) unless ``--warm-cache`` keeps the usual one.

    OMP_WAIT_POLICY=PASSIVE SCLECTURE_DATA_DIR=../shared/data python benchmarks/bench_scvi_compile.py

Writes benchmarks/results/scvi_compile.{md,csv}. About 2 minutes on an idle 2-core machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import check_args, median, write_table  # noqa: E402

DATASETS = ("zeisel_cortex-558", "pbmc3k-2000")
N_MINIBATCHES = 12


def break_even(compile_s: float, eager_ms: float, compiled_ms: float) -> int | None:
    """Training steps after which compiling has paid for itself; None when the compiled step is not faster."""
    saving_s = (eager_ms - compiled_ms) / 1000
    return None if saving_s <= 0 else int(np.ceil(compile_s / saving_s))


def minibatches(key: str):
    """A model trained for one epoch on the data set, and minibatches as SCVI.fit makes them."""
    import bench_scvi_genes

    from sclecture.scvi import SCVI, log_factorial_table
    from sclecture.training import MinibatchLoader

    adata = bench_scvi_genes.data(key)[0]
    X = sp.csr_matrix(adata.X, dtype=np.float32)
    X.sum_duplicates()
    X.eliminate_zeros()
    model = SCVI(epochs=1, progress=False, random_state=0).fit(adata)
    loader = MinibatchLoader([X], batch_size=128, seed=0, nonzero_index=True, drop_last=True)
    return model.module_, list(loader)[:N_MINIBATCHES], log_factorial_table(X)


def _timed(fn, batches, rounds: int) -> float:
    """Median over rounds of the mean ms per minibatch."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for b in batches:
            fn(b)
        times.append((time.perf_counter() - start) / len(batches) * 1e3)
    return median(times)


def measure(key: str, rounds: int) -> list[dict]:
    from sclecture.distributions import _log_zinb
    from sclecture.scvi import CountTerms, zinb_log_likelihood
    from sclecture.training import fused_adam

    torch._dynamo.reset()  # each data set compiles afresh (dynamo would reuse the last one's code)
    module, batches, table = minibatches(key)
    module.train()
    optimizer = fused_adam(module.parameters(), lr=1e-3, eps=0.01, weight_decay=1e-6)

    def loss(x, *nz):  # nz: the flat index of the nonzero counts, for counts the loader keeps as CSR
        return module.loss(x, None, kl_weight=0.5, terms=CountTerms(x, *nz, table=table))["loss"]

    compiled_loss = torch.compile(loss, dynamic=True)

    def step_with(fn):
        def step(b):
            value = fn(*b)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
        return step

    with torch.no_grad():  # the decoder's outputs for each minibatch, as leaves for the likelihood alone
        outs = []
        for x, *nz in batches:
            inf = module.inference(x)
            gen = module.generative(inf["z"], inf["library"])
            outs.append((x, nz, *(gen[k].clone() for k in ("mu", "theta", "pi_logits"))))
    plain = lambda x, mu, theta, eta: _log_zinb(x, mu, theta, eta).sum(-1)  # noqa: E731
    compiled_plain = torch.compile(plain, dynamic=True)

    def lik_with(fn, course: bool):
        def run(o):
            x, nz, *leaves = o
            leaves = [t.requires_grad_() for t in leaves]
            ll = zinb_log_likelihood(x, *leaves, terms=CountTerms(x, *nz, table=table)) if course else fn(x, *leaves)
            ll.sum().backward()
        return run

    variants = {  # name: (what, eager function, compiled function, inputs)
        "step": ("training step (loss, backward, Adam)", step_with(loss), step_with(compiled_loss), batches),
        "likelihood": ("ZINB likelihood, forward and backward", lik_with(plain, False), lik_with(compiled_plain, False),
                       outs),
    }
    rows = []
    course_lik = _timed(lik_with(None, True), outs, rounds)
    for name, (what, eager, compiled, inputs) in variants.items():
        _timed(eager, inputs[:2], 1)  # first eager calls out of the way
        start = time.perf_counter()
        error = None
        try:
            for b in inputs[:2]:
                compiled(b)
        except Exception as e:  # no C++ compiler, an unsupported op: the eager code is what trains
            error = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        first_two = time.perf_counter() - start
        eager_ms, compiled_ms = [], []
        for _ in range(rounds):
            eager_ms.append(_timed(eager, inputs, 1))
            if error is None:
                compiled_ms.append(_timed(compiled, inputs, 1))
        e = median(eager_ms)
        c = median(compiled_ms) if error is None else float("nan")
        compile_s = first_two - 2 * e / 1000
        # what it would replace: the eager step, or for the likelihood the course's eager code (what trains)
        be = break_even(compile_s, e if name == "step" else course_lik, c) if error is None else None
        rows.append({"data": key, "what": what,
                     "eager ms": round(e, 3) if name == "step" else f"{e:.3g} (plain formula); {course_lik:.3g} (course)",
                     "compiled ms": f"{c:.3g}" if error is None else f"failed: {error}",
                     "compile s": round(compile_s, 1) if error is None else "-",
                     "break-even steps": be if be is not None else "never (not faster)",
                     "load": round(os.getloadavg()[0], 1)})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--warm-cache", action="store_true", help="keep Inductor's usual on-disk cache (default: a fresh one)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_args(p, args, {"threads": 1, "rounds": 1})
    torch.set_num_threads(args.threads)
    cache = "the usual on-disk cache"
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")
        cache = "a fresh, empty cache folder (cold compile)"
    if args.worker:  # one data set, in a process of its own: nothing compiled for another data set is reused
        Path(args.worker).write_text(json.dumps(measure(args.datasets[0], args.rounds)))
        return
    rows = []
    for key in args.datasets:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--datasets", key, "--rounds", str(args.rounds),
                   "--threads", str(args.threads), "--worker", out.name] + (["--warm-cache"] if args.warm_cache else [])
            subprocess.run(cmd, check=True)
            rows += json.loads(Path(out.name).read_text())
    notes = (f"{args.threads} torch thread(s), torch {torch.__version__}, {args.rounds} rounds alternating eager and "
             "compiled code, median ms per minibatch of 128 cells. `compiled ms` of the step: the course's "
             "`SCVIModule.loss` under `torch.compile(dynamic=True)`, backward and fused Adam. `eager ms` of the "
             "likelihood: the lesson's plain formula, and the course's `zinb_log_likelihood` (what `SCVI.fit` "
             "trains with); `compiled ms`: the plain formula compiled. `compile s`: the first two compiled calls "
             f"minus two eager ones, with {cache}, each data set in a process of its own. `break-even steps`: "
             "against the eager step, and for the likelihood "
             "against the course's eager likelihood, which a compiled plain formula would replace. `load`: 1-minute "
             "load average after the row.")
    write_table("scvi_compile", "scVI on a CPU: eager code against torch.compile (TorchInductor)", rows, notes)


if __name__ == "__main__":
    main()
