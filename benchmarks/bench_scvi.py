"""Lesson 06 benchmark: the course's scVI (sclecture.scvi) side by side with scvi-tools.

Same data, same model, same training settings for both:

* data: ``zeisel_cortex`` (the scVI paper's CORTEX), the 558 genes of largest raw-count variance,
  a fixed stratified 75/25 split of the cells (``random_state=0``);
* model: 10 latent dimensions, one hidden layer of 128 units with BatchNorm, dropout 0.1 in the
  encoder, ZINB likelihood, gene-wise theta, observed library size, no covariates;
* training: Adam (lr 1e-3, eps 0.01, weight decay 1e-6, scvi-tools' defaults), minibatches of
  128, ``--epochs`` epochs with the same linear KL warm-up, every training cell used (scvi-tools:
  ``train_size=1.0``), the same seeds, ``torch.set_num_threads(--threads)`` in both.

Measured (interleaved: the two implementations alternate, so that the load of a shared machine
hits both alike; medians reported):

* import time of ``sclecture.scvi`` and of ``scvi`` (fresh interpreters);
* training throughput: cells per second within an epoch (``--rounds`` short runs of
  ``--timing-epochs`` epochs each; the first epoch of a run is dropped as warm-up);
* for each seed, a full fit: time to fit, held-out ELBO and importance-sampled marginal
  log-likelihood per test cell (``--mc-samples`` draws), and ARI / NMI / silhouette of k-means
  (7 clusters) on the latent space of all cells against the 7 annotated classes;
* whether the two compute the same thing: scvi-tools' ``VAE`` module and the course's
  ``SCVIModule`` given the same weights, minibatch and noise (loss and gradients), and the first
  seed's scvi-tools model scored by both codes (held-out -log p(x));
* the likelihood verdict: the difference of the mean held-out -log p(x) over seeds with a Welch
  95 % confidence interval. Both trainers end wherever a constant learning rate leaves them, so
  one run's final likelihood varies by a few nats from seed to seed: the default 8 seeds make
  the interval narrower than that spread.

Writes ``benchmarks/results/scvi.md`` and ``benchmarks/results/scvi.csv`` (without scvi-tools:
``scvi_course_only.md`` and ``.csv``).

    OMP_WAIT_POLICY=PASSIVE SCLECTURE_DATA_DIR=../shared/data python benchmarks/bench_scvi.py
    python benchmarks/bench_scvi.py --epochs 50 --seeds 0 --rounds 2   # a quick look

scvi-tools is an optional peer (``pip install -c constraints.txt "sclecture[peers]"``); without it
only the course's numbers are measured, into ``scvi_course_only.{md,csv}``: the comparison in
``scvi.{md,csv}``, which the README cites, is left as it was.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see GUIDE: busy-waiting threads)

import argparse
import csv
import logging
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import check_args, top_variance_genes, welch_half_width, welch_interval  # noqa: E402,F401  (the Welch maths, for bench_scvi_genes too)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
N_GENES = 558

# the scVI paper (Lopez et al. 2018) on its CORTEX (558 of 19,972 genes): clustering of the latent space
PAPER = {"scVI ARI": 0.778, "FA ARI": 0.591}


def load_cortex():
    from sklearn.model_selection import train_test_split

    from sclecture.datasets import zeisel_cortex

    adata = zeisel_cortex()
    adata = top_variance_genes(adata, N_GENES)
    train, test = train_test_split(np.arange(adata.n_obs), test_size=0.25, stratify=adata.obs["cell_type"],
                                   random_state=0)
    return adata, adata[train].copy(), adata[test].copy()


def import_seconds(module: str, reps: int = 3) -> list[float]:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = []
    for _ in range(reps):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if res.returncode != 0:
            raise RuntimeError(f"importing {module} failed:\n{res.stderr}")
        out.append(float(res.stdout.strip().splitlines()[-1]))
    return out


# --------------------------------------------------------------------------- the two implementations

class Course:
    name = "sclecture"

    def __init__(self, epochs: int, warmup: int, seed: int):
        import inspect

        from sclecture.scvi import SCVI

        # "epochs" since the estimators share one name; a copy of older code (--before) says "n_epochs"
        name = "epochs" if "epochs" in inspect.signature(SCVI).parameters else "n_epochs"
        self.model = SCVI(n_latent=10, n_hidden=128, n_layers=1, dropout=0.1, likelihood="zinb", **{name: epochs},
                          n_epochs_kl_warmup=warmup, lr=1e-3, batch_size=128, random_state=seed, device="cpu",
                          progress=False)

    def fit(self, adata) -> list[float]:
        start = time.perf_counter()
        self.model.fit(adata)
        self.fit_call_s = time.perf_counter() - start  # the whole fit call
        return list(self.model.epoch_seconds_)

    def latent(self, adata):
        return self.model.get_latent_representation(adata)

    def elbo(self, adata):
        return self.model.get_elbo(adata)

    def marginal_ll(self, adata, n):
        return self.model.get_marginal_ll(adata, n_samples=n)


class Peer:
    name = "scvi-tools"

    def __init__(self, epochs: int, warmup: int, seed: int):
        import scvi

        for name in ("scvi", "lightning", "lightning.pytorch", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self.scvi, self.epochs, self.warmup, self.seed = scvi, epochs, warmup, seed

    def fit(self, adata) -> list[float]:
        from lightning.pytorch.callbacks import Callback

        scvi = self.scvi
        scvi.settings.seed = self.seed
        adata = adata.copy()
        scvi.model.SCVI.setup_anndata(adata)
        self.model = scvi.model.SCVI(adata, n_latent=10, n_hidden=128, n_layers=1, dropout_rate=0.1,
                                     gene_likelihood="zinb")
        stamps: list[float] = []

        class EpochTimer(Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                stamps.append(time.perf_counter())

            def on_train_epoch_end(self, trainer, pl_module):
                stamps.append(time.perf_counter())

        start = time.perf_counter()
        self.model.train(max_epochs=self.epochs, train_size=1.0, batch_size=128, accelerator="cpu", devices=1,
                         plan_kwargs={"lr": 1e-3, "n_epochs_kl_warmup": self.warmup},
                         enable_progress_bar=False, enable_model_summary=False, logger=False,
                         callbacks=[EpochTimer()])
        self.fit_call_s = time.perf_counter() - start  # the whole train call
        return [b - a for a, b in zip(stamps[::2], stamps[1::2])]

    def latent(self, adata):
        return self.model.get_latent_representation(self._prepare(adata))

    def _prepare(self, adata):
        adata = adata.copy()
        self.scvi.model.SCVI.setup_anndata(adata)
        return adata

    def elbo(self, adata):
        # scvi-tools 1.4: get_elbo returns the ELBO (higher is better); return_mean=False gives it per cell
        return np.asarray(self.model.get_elbo(self._prepare(adata), return_mean=False), dtype=np.float64)

    def marginal_ll(self, adata, n):
        # per-cell log p(x) (higher is better); its return_mean=True would average per-minibatch means
        ll = self.model.get_marginal_ll(self._prepare(adata), n_mc_samples=n, return_mean=False)
        return np.asarray(ll, dtype=np.float64)


# --------------------------------------------------------------------------- do the two compute the same thing?

# scvi-tools' VAE parameter (prefix) -> the course's SCVIModule parameter (prefix)
PEER_TO_COURSE = {
    "px_r": "log_theta",
    "z_encoder.encoder.fc_layers.Layer 0.0": "z_encoder.body.0",  # Linear
    "z_encoder.encoder.fc_layers.Layer 0.1": "z_encoder.body.1",  # BatchNorm
    "z_encoder.mean_encoder": "z_encoder.mean",
    "z_encoder.var_encoder": "z_encoder.logvar",
    "decoder.px_decoder.fc_layers.Layer 0.0": "decoder.linears.0",
    "decoder.px_decoder.fc_layers.Layer 0.1": "decoder.norms.0",
    "decoder.px_scale_decoder.0": "decoder.scale",
    "decoder.px_dropout_decoder": "decoder.pi_logits",
}


def _course_name(peer_key: str) -> str | None:
    for a, b in PEER_TO_COURSE.items():
        if peer_key == a:
            return b
        if peer_key.startswith(a + "."):
            return b + peer_key[len(a):]
    return None  # l_encoder, px_r_decoder: built by scvi-tools but unused with an observed library


def copy_peer_weights(peer_module, course_module) -> None:
    """Load scvi-tools' VAE weights and BatchNorm statistics into the course's SCVIModule."""
    state = course_module.state_dict()
    for k, v in peer_module.state_dict().items():
        name = _course_name(k)
        if name is not None:
            if state[name].shape != v.shape:
                raise ValueError(f"{k} {tuple(v.shape)} does not fit {name} {tuple(state[name].shape)}")
            state[name] = v.detach().clone()
    course_module.load_state_dict(state)


def module_check(train_adata, batch_size: int = 128) -> dict:
    """Same weights, minibatch and noise eps in both modules (train mode, dropout off): loss and gradients."""
    from scvi.module import VAE

    from sclecture.scvi import SCVIModule, kl_normal

    torch.manual_seed(0)
    n_genes = train_adata.n_vars
    peer = VAE(n_input=n_genes, n_latent=10, n_hidden=128, n_layers=1, dropout_rate=0.0, gene_likelihood="zinb")
    course = SCVIModule(n_genes, 1, 10, 128, 1, dropout=0.0, likelihood="zinb")
    copy_peer_weights(peer, course)
    X = train_adata.X[:batch_size]
    x = torch.as_tensor(X.toarray() if hasattr(X, "toarray") else np.asarray(X), dtype=torch.float32)
    b = torch.zeros(x.shape[0], 1, dtype=torch.long)
    eps, kl_weight = torch.randn(x.shape[0], 10), 0.3
    peer.train(), course.train()
    inf = peer.inference(x, batch_index=b)
    inf["z"] = inf["qz"].loc + inf["qz"].scale * eps  # z = mu + sigma eps, the same eps in both
    gen = peer.generative(z=inf["z"], library=inf["library"], batch_index=b)
    loss_peer = peer.loss({"X": x, "batch": b}, inf, gen, kl_weight=kl_weight).loss
    inf_c = course.inference(x)
    z = inf_c["qz_mu"] + inf_c["qz_var"].sqrt() * eps
    gen_c = course.generative(z, inf_c["library"])
    loss_course = (-course.log_likelihood(x, gen_c) + kl_weight * kl_normal(inf_c["qz_mu"], inf_c["qz_var"])).mean()
    loss_peer.backward(), loss_course.backward()
    course_params = dict(course.named_parameters())
    g_peer, g_course = [], []
    for k, p in peer.named_parameters():
        name = _course_name(k)
        if name is not None:
            g_peer.append(p.grad.reshape(-1)), g_course.append(course_params[name].grad.reshape(-1))
    g_peer, g_course = torch.cat(g_peer), torch.cat(g_course)
    return {"loss_rel_diff": abs(loss_peer.item() - loss_course.item()) / abs(loss_peer.item()),
            "grad_rel_diff": ((g_peer - g_course).norm() / g_peer.norm()).item(),
            "n_parameters": int(g_peer.numel())}


def trajectory_check(train_adata, steps: int = 200, batch_size: int = 128, kl_weight: float = 0.5,
                     report_at=(1, 10, 50, 200), control: float = 1.01, dtype=torch.float64) -> dict:
    """Train both from the same weights on the same minibatches and noise eps (dropout off): scvi-tools'
    VAE with its training plan's Adam (lr 1e-3, eps 0.01, weight decay 1e-6), the course's
    ``SCVIModule.loss`` (the path ``SCVI.fit`` trains: nonzero-count likelihood, ``CountTerms`` from the
    sparse minibatch) with ``fused_adam``. Returns the relative difference of all mapped weights and
    BatchNorm statistics after the steps in ``report_at``, and of the last step's loss. A control shows
    what the check can see: a third model, the course's with its KL weight times ``control``.

    In float64 by default: training amplifies differences, and in float32 the rounding of either code
    alone can, along some minibatch sequences, grow to the control's size within a few hundred steps."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # for the tensors either code makes on the way
    try:
        return _trajectory(train_adata, steps, batch_size, kl_weight, report_at, control, dtype)
    finally:
        torch.set_default_dtype(default)


def _trajectory(train_adata, steps, batch_size, kl_weight, report_at, control, dtype) -> dict:
    from unittest import mock

    import scipy.sparse as sp
    from scvi.module import VAE

    from sclecture.scvi import CountTerms, SCVIModule
    from sclecture.training import MinibatchLoader, fused_adam

    torch.manual_seed(0)
    n_genes = train_adata.n_vars
    peer = VAE(n_input=n_genes, n_latent=10, n_hidden=128, n_layers=1, dropout_rate=0.0, gene_likelihood="zinb").to(dtype)
    course = SCVIModule(n_genes, 1, 10, 128, 1, dropout=0.0, likelihood="zinb").to(dtype)
    copy_peer_weights(peer, course)
    ctrl = SCVIModule(n_genes, 1, 10, 128, 1, dropout=0.0, likelihood="zinb").to(dtype)
    copy_peer_weights(peer, ctrl)
    opt_ctrl = fused_adam(ctrl.parameters(), lr=1e-3, eps=0.01, weight_decay=1e-6)
    opt_peer = torch.optim.Adam([p for p in peer.parameters() if p.requires_grad], lr=1e-3, eps=0.01, weight_decay=1e-6)
    opt_course = fused_adam(course.parameters(), lr=1e-3, eps=0.01, weight_decay=1e-6)
    # the minibatches SCVI.fit trains on: shuffled CSR rows with the flat index of their nonzero counts
    loader = MinibatchLoader((sp.csr_matrix(train_adata.X),), batch_size=batch_size, seed=0, dtype=dtype,
                             nonzero_index=True)
    minibatches = (mb for _ in range(-(-steps // len(loader))) for mb in loader)
    peer.train(), course.train(), ctrl.train()

    def state_diff(module):
        mine, num, den = module.state_dict(), 0.0, 0.0
        for k, v in peer.state_dict().items():
            name = _course_name(k)
            if name is not None and v.is_floating_point():
                num += float((v - mine[name]).double().pow(2).sum())
                den += float(v.double().pow(2).sum())
        return (num / den) ** 0.5

    out = {}
    for step, (x, flat) in zip(range(1, steps + 1), minibatches):
        b = torch.zeros(x.shape[0], 1, dtype=torch.long)
        eps = torch.randn(x.shape[0], 10, dtype=dtype)
        inf = peer.inference(x, batch_index=b)
        inf["z"] = inf["qz"].loc + inf["qz"].scale * eps  # z = mu + sigma eps, the same eps in both
        gen = peer.generative(z=inf["z"], library=inf["library"], batch_index=b)
        loss_peer = peer.loss({"X": x, "batch": b}, inf, gen, kl_weight=kl_weight).loss
        with mock.patch("torch.randn", lambda *a, **k: eps):  # the course's one draw of eps per step
            loss_course = course.loss(x, None, kl_weight=kl_weight, terms=CountTerms(x, flat))["loss"]
            loss_ctrl = ctrl.loss(x, None, kl_weight=kl_weight * control, terms=CountTerms(x, flat))["loss"]
        for opt, loss in ((opt_peer, loss_peer), (opt_course, loss_course), (opt_ctrl, loss_ctrl)):
            opt.zero_grad()
            loss.backward()
            opt.step()
        if step in report_at:
            out[f"weights_rel_diff_{step}"] = state_diff(course)
            out[f"control_rel_diff_{step}"] = state_diff(ctrl)
    out["loss_rel_diff_last"] = abs(loss_peer.item() - loss_course.item()) / abs(loss_peer.item())
    out["steps"] = steps
    return out


def likelihood_verdict(d: float, lo: float, hi: float) -> str:
    """Lower -log p(x) is better: the sign of the interval decides."""
    if hi < 0:
        return "better"
    if lo > 0:
        return "worse"
    return "no difference detected (the interval contains 0)"


def worst_case(hi: float, peer_mean: float) -> str:
    """The upper end of the interval read as a bound: how much worse the course can be, at 95 % confidence."""
    if hi <= 0:
        return "at 95 % confidence sclecture is better"
    return f"at 95 % confidence sclecture is at most {hi:.2f} nats per cell ({100 * hi / abs(peer_mean):.3f} %) worse"


# --------------------------------------------------------------------------- measuring

_DATA: dict = {}


def cortex():
    """load_cortex(), once per process."""
    if not _DATA:
        _DATA["adata"], _DATA["train"], _DATA["test"] = load_cortex()
    return _DATA["adata"], _DATA["train"], _DATA["test"]


def evaluate(impl, adata, labels, train, test, mc_samples: int, seed: int, score_with_course: bool = False,
             scored=slice(None)):
    """A fitted implementation's scores (clusters of the cells ``scored``); with ``score_with_course``, also
    its held-out -log p(x) as the course's code computes it for the same weights, minus its own (else None)."""
    from sclecture.scvi import SCVI, clustering_scores

    elbo, ll = impl.elbo(test), impl.marginal_ll(test, mc_samples)
    sc = clustering_scores(impl.latent(adata)[scored], np.asarray(labels)[scored], random_state=0)
    res = {"fit_s": impl.fit_call_s, "neg_elbo": -float(np.mean(elbo)), "neg_marginal_ll": -float(np.mean(ll)),
           "ari": sc["ari"], "nmi": sc["nmi"], "silhouette": sc["silhouette"]}
    diff = None
    if score_with_course:  # the same scvi-tools model scored by the course's code
        scorer = SCVI(epochs=0, random_state=seed, device="cpu", progress=False).fit(train)
        copy_peer_weights(impl.model.module, scorer.module_)
        diff = -float(np.mean(scorer.get_marginal_ll(test, n_samples=mc_samples))) - res["neg_marginal_ll"]
    return res, diff


def full_fit(name: str, seed: int, epochs: int, warmup: int, mc_samples: int, threads: int,
             score_with_course: bool = False) -> tuple[list, str]:
    """One full fit of one implementation: its result rows and a line to print (runs in a worker with --jobs)."""
    torch.set_num_threads(threads)
    adata, train, test = cortex()
    impl = {"sclecture": Course, "scvi-tools": Peer}[name](epochs, warmup, seed)
    secs = impl.fit(train)
    res, diff = evaluate(impl, adata, adata.obs["cell_type"], train, test, mc_samples, seed, score_with_course)
    res["fit_epoch_s"] = statistics.median(secs[1:]) if len(secs) > 1 else float("nan")
    rows = [(name, k, v, f"seed {seed}") for k, v in res.items()]
    line = f"seed {seed} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items())
    if diff is not None:
        rows.append(("check", "eval_diff", diff, f"seed {seed}: scvi-tools' model, -log p(x) by sclecture minus by scvi-tools"))
        line += (f"\nscvi-tools' model scored by both codes: -log p(x) {res['neg_marginal_ll'] + diff:.2f} (sclecture) vs "
                 f"{res['neg_marginal_ll']:.2f} (scvi-tools)")
    return rows, line


def full_fits(tasks: list[tuple], jobs: int, fit=None):
    """fit(*task) (default: full_fit) for each task, in order; with jobs > 1 in that many spawned processes
    (a forked torch may hang)."""
    fit = fit or full_fit
    if jobs == 1:
        yield from (fit(*t) for t in tasks)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from (f.result() for f in [pool.submit(fit, *t) for t in tasks])


def run(args) -> None:
    torch.set_num_threads(args.threads)
    have_peer = True
    try:
        import scvi  # noqa: F401
    except ImportError:
        have_peer = False
        print("scvi-tools is not installed: measuring the course's model only "
              "(pip install -c constraints.txt 'sclecture[peers]' for the comparison)", flush=True)
    impls = [Course] + ([Peer] if have_peer else [])
    adata, train, test = cortex()
    n_train = train.n_obs
    warmup = args.epochs // 4 if args.warmup is None else args.warmup
    print(f"CORTEX: {adata.n_obs} cells x {adata.n_vars} genes; train {n_train}, test {test.n_obs}; "
          f"{args.threads} thread(s); {args.epochs} epochs, KL warm-up {warmup}", flush=True)

    rows = []  # (implementation, measure, value, detail)

    if have_peer:
        check = module_check(train)
        for k in ("loss_rel_diff", "grad_rel_diff"):
            rows.append(("check", k, check[k], f"same weights, minibatch and noise; {check['n_parameters']} parameters"))
        print(f"same weights in both modules: loss differs by {check['loss_rel_diff']:.1e} (relative), "
              f"gradients by {check['grad_rel_diff']:.1e}", flush=True)

    # import time, interleaved
    imports = {c.name: [] for c in impls}
    for _ in range(args.import_reps):
        for c in impls:
            imports[c.name] += import_seconds("sclecture.scvi" if c is Course else "scvi", 1)
    for name, v in imports.items():
        rows.append((name, "import_s", statistics.median(v), f"median of {len(v)}"))
        print(f"import {name}: {statistics.median(v):.2f} s", flush=True)

    # throughput, interleaved short runs
    epoch_times = {c.name: [] for c in impls}
    for r in range(args.rounds):
        order = impls if r % 2 == 0 else impls[::-1]
        for c in order:
            secs = c(args.timing_epochs, warmup, seed=100 + r).fit(train)
            epoch_times[c.name] += secs[1:]
            print(f"round {r} {c.name}: {statistics.median(secs[1:]):.3f} s/epoch", flush=True)
    for name, v in epoch_times.items():
        med = statistics.median(v)
        rows.append((name, "epoch_s", med, f"median of {len(v)} epochs"))
        rows.append((name, "cells_per_s", n_train / med, f"{n_train} training cells / median epoch"))

    # quality, one full fit per seed and implementation (order alternates), --jobs at a time
    tasks = []
    for i, seed in enumerate(args.seeds):
        for c in (impls if i % 2 == 0 else impls[::-1]):
            tasks.append((c.name, seed, args.epochs, warmup, args.mc_samples, args.threads, c is Peer and i == 0))
    for fit_rows, line in full_fits(tasks, args.jobs):
        rows += fit_rows
        print(line, flush=True)

    write(rows, args, impls, n_train, warmup, adata.n_obs)


def _summary(rows, name, measure):
    v = [r[2] for r in rows if r[0] == name and r[1] == measure]
    if not v:
        return float("nan"), float("nan"), 0
    return float(np.mean(v)), float(np.std(v)), len(v)


def write(rows, args, impls, n_train, warmup, n_cells) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    names = [c.name for c in impls]
    out = "scvi" if len(names) == 2 else "scvi_course_only"  # a run without the peer keeps the comparison
    fmt = {"import_s": "{:.2f}", "epoch_s": "{:.3f}", "cells_per_s": "{:.0f}", "fit_s": "{:.1f}",
           "fit_epoch_s": "{:.3f}", "neg_elbo": "{:.1f}", "neg_marginal_ll": "{:.1f}", "ari": "{:.3f}",
           "nmi": "{:.3f}", "silhouette": "{:.3f}"}
    label = {"import_s": "import time (s)", "epoch_s": "seconds per epoch (throughput runs)",
             "cells_per_s": "training cells per second", "fit_s": "time to fit (s)",
             "fit_epoch_s": "seconds per epoch (full fits)", "neg_elbo": "held-out -ELBO per cell",
             "neg_marginal_ll": f"held-out -log p(x) per cell (K={args.mc_samples})", "ari": "k-means ARI (7 classes)",
             "nmi": "k-means NMI", "silhouette": "silhouette of the classes"}
    lines = [
        "# scVI: sclecture against scvi-tools" if len(names) == 2 else
        "# scVI: the course's model alone (scvi-tools was not installed; the comparison is in scvi.md)",
        "",
        f"Generated by `benchmarks/bench_scvi.py` on {time.strftime('%Y-%m-%d')}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU core(s), torch {torch.__version__}, {args.threads} torch thread(s), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}.",
        "",
        f"Data: zeisel_cortex (CORTEX), {N_GENES} genes of largest raw-count variance, stratified 75/25 split "
        f"(random_state=0): {n_train} training cells; clustering on the latent space of all {n_cells} cells. "
        f"Model and training{' identical for both' if len(names) == 2 else ''}: 10 latent dims, 1 x 128 hidden, "
        "BatchNorm, dropout 0.1, ZINB, "
        f"observed library, Adam lr 1e-3 (eps 0.01, weight decay 1e-6), batch 128, {args.epochs} epochs, KL warm-up "
        f"{warmup} epochs, seeds {list(args.seeds)}. Throughput: {args.rounds} interleaved runs of {args.timing_epochs} "
        "epochs per implementation, first epoch of each dropped, median. Quality: mean +/- sd over seeds; "
        f"{args.jobs} full fit(s) at a time, each in its own process"
        + (" (so the full fits' timings include the other job's load)." if args.jobs > 1 else "."),
        "",
        "| measure | " + " | ".join(names) + (" | ratio |" if len(names) == 2 else " |"),
        "|---|" + "---|" * len(names) + ("---|" if len(names) == 2 else ""),
    ]
    for measure in fmt:
        cells, means = [], []
        for n in names:
            m, s, k = _summary(rows, n, measure)
            means.append(m)
            cells.append(fmt[measure].format(m) + (f" +/- {fmt[measure].format(s)}" if k > 1 else ""))
        line = f"| {label[measure]} | " + " | ".join(cells) + " |"
        if len(names) == 2:
            ratio = {"cells_per_s": means[0] / means[1], "epoch_s": means[1] / means[0], "fit_s": means[1] / means[0],
                     "import_s": means[1] / means[0], "fit_epoch_s": means[1] / means[0]}.get(measure)
            line += f" {ratio:.2f}x |" if ratio is not None else " |"
        lines.append(line)
    lines += [
        "",
        ("Ratios are speed-ups of sclecture over scvi-tools (higher is faster). " if len(names) == 2 else "")
        + "-ELBO and -log p(x) are in nats per "
        "held-out cell, summed over the genes (lower is better); the ELBO uses one draw of z per cell.",
        "",
        f"For reference, the scVI paper (Lopez et al. 2018) reports on its CORTEX (558 of all 19,972 genes, "
        f"not this 4,000-gene copy) a k-means ARI of {PAPER['scVI ARI']} for scVI and {PAPER['FA ARI']} for factor "
        "analysis.",
        "",
    ]
    if len(names) == 2:
        lines += ["## Do the two compute the same thing?", ""]
        checks = {r[1]: r for r in rows if r[0] == "check"}
        if "loss_rel_diff" in checks:
            lines.append(f"- Same weights, minibatch and noise in scvi-tools' `VAE` and the course's `SCVIModule` "
                         f"(train mode, dropout off): the loss differs by {checks['loss_rel_diff'][2]:.1e} and the "
                         f"gradient vector by {checks['grad_rel_diff'][2]:.1e} (relative; float32 rounding).")
        if "eval_diff" in checks:
            lines.append(f"- The first seed's scvi-tools model scored by the course's `get_marginal_ll` minus its own "
                         f"`get_marginal_ll`: {checks['eval_diff'][2]:+.2f} nats per cell (independent importance "
                         f"samples, K={args.mc_samples}).")
        lines += ["", "## Likelihood verdict", ""]
        for measure, what in (("neg_marginal_ll", "held-out -log p(x)"), ("neg_elbo", "held-out -ELBO")):
            a = [r[2] for r in rows if r[0] == names[0] and r[1] == measure]
            b = [r[2] for r in rows if r[0] == names[1] and r[1] == measure]
            if len(a) >= 2 and len(b) >= 2:
                d, lo, hi = welch_interval(a, b)
                rows.append(("check", f"{measure}_diff", d, f"sclecture - scvi-tools, 95% CI [{lo:.3g}, {hi:.3g}]"))
                lines.append(f"- {what}, sclecture minus scvi-tools: {d:+.2f} nats per cell, 95 % CI [{lo:+.2f}, "
                             f"{hi:+.2f}] (Welch, {len(a)} and {len(b)} seeds; lower is better): "
                             f"**{likelihood_verdict(d, lo, hi)}**; {worst_case(hi, float(np.mean(b)))}. "
                             f"Seed-to-seed range: sclecture {min(a):.1f} to {max(a):.1f}, scvi-tools {min(b):.1f} to "
                             f"{max(b):.1f}.")
        lines.append("")
    with open(RESULTS / f"{out}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["implementation", "measure", "value", "detail"])
        for r in rows:
            w.writerow([r[0], r[1], f"{r[2]:.6g}", r[3]])

    (RESULTS / f"{out}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=400, help="epochs of each full fit (default 400, scvi-tools' default here)")
    p.add_argument("--warmup", type=int, default=None, help="KL warm-up epochs (default: a quarter of --epochs)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)),
                   help="seeds of the full fits (default 0-7; the verdict needs at least 2)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1,
                   help="full fits run at a time, each in its own process with --threads threads (default 1)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved throughput runs per implementation")
    p.add_argument("--timing-epochs", type=int, default=8)
    p.add_argument("--mc-samples", type=int, default=100, help="importance samples for log p(x)")
    p.add_argument("--import-reps", type=int, default=3)
    args = p.parse_args(argv)
    check_args(p, args, {"jobs": 1, "threads": 1, "epochs": 1, "rounds": 1, "mc_samples": 1, "import_reps": 1,
                         "timing_epochs": 2, "seeds": 0, "warmup": 0})  # (each run's first epoch is dropped)
    run(args)


if __name__ == "__main__":
    main()
