"""The course's one torch training loop: device, seeds, minibatches, progress bar, history.

Every model of the course (the MLP of lesson 02, ACTINN, the VAE, scVI) is fitted by
:func:`train`, which does stochastic gradient steps on minibatches

    theta^(s+1) := theta^(s) - Delta * d loss / d theta |_theta^(s)

(the lecture's gradient ascent on log L, written as descent on loss = -log L).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "get_device",
    "set_seed",
    "shuffle_seed",
    "quick_mode",
    "quick_epochs",
    "expect_result",
    "MinibatchLoader",
    "History",
    "train",
    "FusedAdam",
    "fused_adam",
]

QUICK_ENV = "SCLECTURE_QUICK"


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device every model of the course runs on: CUDA when available, else CPU.

    ``device`` overrides the choice ("cpu", "cuda", "cuda:1"); the environment variable
    ``SCLECTURE_DEVICE`` does the same for a whole session.
    """
    device = device or os.environ.get("SCLECTURE_DEVICE")
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {str(device)!r} was requested but CUDA is not available here; "
            "use device='cpu' (or unset SCLECTURE_DEVICE)"
        )
    return device


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run can be repeated."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def shuffle_seed(seed: int) -> int:
    """The seed of the minibatch order: a stream of its own, derived from ``seed``.

    ``torch.Generator().manual_seed(seed)`` would replay the very random numbers that
    ``set_seed(seed)`` hands to the weight initialisation, so each epoch's order would be a
    function of the initial weights. NumPy's SeedSequence mixes ``seed`` into another state.
    """
    return int(np.random.SeedSequence([int(seed) % 2**64, 0x5EED]).generate_state(1, dtype=np.uint64)[0] >> 1)


def quick_mode() -> bool:
    """True when ``SCLECTURE_QUICK=1``: lessons then train for a few epochs only and skip UMAPs.

    Autograding and the grading tests use it to stay within their time budget; the
    stored outputs of ``solutions/`` always come from the full setting.
    """
    return os.environ.get(QUICK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def quick_epochs(full: int, quick: int = 2) -> int:
    """``full`` epochs normally, ``quick`` epochs under ``SCLECTURE_QUICK=1``."""
    return min(full, quick) if quick_mode() else full


def expect_result(holds: bool, claim: str) -> None:
    """Fail loudly when a result that the lesson's text states does not hold in this run.

    The text and the printed numbers of a lesson must not drift apart: a change (of code, data
    or library) that breaks a stated result stops the notebook here, while noise within the
    claim's margin does not. Quick runs (``SCLECTURE_QUICK=1``) train too briefly to reproduce
    results, so they are not held to them.
    """
    if not holds and not quick_mode():
        raise AssertionError(f"the lesson's text says: {claim}; this run disagrees (see the numbers above)")


DENSE_COPY_MAX_BYTES = 2**28  # 256 MiB: a larger sparse matrix stays CSR, so training never holds a big second copy


def _as_batchable(array, device: torch.device, dtype: torch.dtype | None):
    """Dense arrays go to the device once. Sparse matrices stay on the host, as CSR densified
    one minibatch at a time, or dense when that takes no more memory than the CSR (about half
    the entries nonzero or more) and at most ``DENSE_COPY_MAX_BYTES``: taking rows of a dense
    array is about 10x less work."""
    if sp.issparse(array):
        csr = sp.csr_matrix(array)
        dense_bytes = csr.shape[0] * csr.shape[1] * (csr.dtype.itemsize if dtype is None else dtype.itemsize)
        if dense_bytes > min(csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes, DENSE_COPY_MAX_BYTES):
            return csr
        if dtype is not None:
            try:  # densified in the minibatches' dtype: no whole copy in a wider one first
                csr = csr.astype(torch.empty(0, dtype=dtype).numpy().dtype, copy=False)
            except (TypeError, ValueError):  # float16, bfloat16: not in scipy.sparse, converted once dense
                pass
        t = torch.from_numpy(csr.toarray())
        return t if dtype is None else t.to(dtype)
    if isinstance(array, torch.Tensor):
        t = array
    else:
        t = torch.as_tensor(np.ascontiguousarray(array))  # views with negative strides (X[::-1]) too
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t.to(device)


class MinibatchLoader:
    """Iterate over aligned rows of several arrays in minibatches.

    ``arrays`` may mix NumPy arrays, torch tensors and SciPy sparse matrices (rows are
    cells). Each minibatch is a tuple of tensors on ``device``. With ``shuffle=True`` the
    order is redrawn every epoch from a generator seeded with ``shuffle_seed(seed)``, so the
    same seed gives the same minibatches. Shuffling matters: data sets often come sorted by cell
    type, and a model that sees one type per minibatch learns nonsense.

    A sparse matrix stays on the host, as CSR densified one minibatch at a time, or dense
    when it has so many nonzero entries (about half or more) that a dense copy takes no more
    memory (up to ``DENSE_COPY_MAX_BYTES``). ``nonzero_index=True`` appends to each minibatch, for every array kept
    as CSR, the flat index (row * n_columns + column) of its nonzero entries, read off the
    CSR structure: what ``torch.nonzero`` would find in the dense rows, without scanning them.
    """

    def __init__(
        self,
        arrays: Sequence,
        batch_size: int = 128,
        shuffle: bool = True,
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = torch.float32,
        drop_last: bool = False,
        nonzero_index: bool = False,
    ):
        if not isinstance(arrays, (list, tuple)):
            arrays = (arrays,)
        if len(arrays) == 0:
            raise ValueError("MinibatchLoader needs at least one array")
        lengths = {a.shape[0] for a in arrays}
        if len(lengths) != 1:
            raise ValueError(
                f"all arrays must have the same number of rows (cells); got {sorted(lengths)}"
            )
        self.n = lengths.pop()
        if self.n == 0:
            raise ValueError("cannot make minibatches from an empty data set (0 rows)")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.nonzero_index = nonzero_index
        self.device = get_device(device)
        self.dtype = dtype
        self.arrays = [_as_batchable(a, self.device, dtype) for a in arrays]
        self.generator = torch.Generator().manual_seed(shuffle_seed(seed))

    def __len__(self) -> int:
        if self.drop_last and self.n >= self.batch_size:
            return self.n // self.batch_size
        return math.ceil(self.n / self.batch_size)

    def _take(self, array, idx: torch.Tensor, nonzero: list):
        if sp.issparse(array):
            rows = array[idx.numpy()]
            t = torch.from_numpy(rows.toarray())
            if self.dtype is not None:
                t = t.to(self.dtype)
            if self.nonzero_index:
                flat = np.repeat(np.arange(rows.shape[0]) * rows.shape[1], np.diff(rows.indptr)) + rows.indices
                nonzero.append(torch.from_numpy(flat.astype(np.int64)).to(self.device, non_blocking=True))
            return t.to(self.device, non_blocking=True)
        rows = array.index_select(0, idx.to(array.device))  # ~2x less CPU than array[idx]
        return rows.to(self.device, non_blocking=True)  # (rows of sparse input kept dense on the host)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            nonzero: list[torch.Tensor] = []
            yield tuple(self._take(a, idx, nonzero) for a in self.arrays) + tuple(nonzero)


@dataclass
class History:
    """What :func:`train` records: per-epoch means of every logged quantity."""

    epoch: dict[str, list[float]] = field(default_factory=dict)
    step_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def __getitem__(self, key: str) -> list[float]:
        return self.epoch[key]

    def __contains__(self, key: str) -> bool:
        return key in self.epoch

    def keys(self):
        return self.epoch.keys()

    def __len__(self) -> int:
        """The number of epochs recorded."""
        return len(self.epoch.get("loss", []))

    def plot(self, keys: Sequence[str] | None = None, ax=None, **kwargs):
        """Training curve; see :func:`sclecture.plotting.plot_history`."""
        from .plotting import plot_history

        return plot_history(self, keys=keys, ax=ax, **kwargs)


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm  # a widget in notebooks, a text bar in terminals

    return tqdm(iterable, desc=desc, leave=True, dynamic_ncols=True)


LossFn = Callable[[torch.nn.Module, tuple, int], "torch.Tensor | Mapping[str, torch.Tensor]"]


def _loss_terms(out) -> dict[str, torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return {"loss": out}
    if isinstance(out, Mapping) and "loss" in out:
        return dict(out)
    raise TypeError("loss_fn must return a scalar tensor or a dict with a 'loss' entry")


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` with a lean step: the same kernel, the same numbers.

    Adam (Kingma & Ba, 2015) per parameter w with gradient g (and weight decay lambda: g += lambda w):
    m := beta1 m + (1 - beta1) g,  v := beta2 v + (1 - beta2) g^2,
    w := w - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps).

    torch's own step sorts the parameters by device and type and rechecks every option at each
    step, Python work that costs as much as the update itself at the course's sizes (tens of
    thousands to a couple of million weights). Once every parameter has its state, this step hands the fused
    kernel ``torch._fused_adam_`` the same lists and settings that torch's step would, so the
    weights come out bit for bit the same (``tests/test_training.py``); anything else (a closure,
    amsgrad, maximize, a gradient scaler, mixed devices or types, a tensor learning rate, a torch
    without the kernel or whose kernel refuses the call) takes torch's step. Hooks, ``state_dict`` and
    ``param_groups`` are torch's.
    """

    def __init__(self, params, **adam_kwargs):
        super().__init__(params, fused=True, **adam_kwargs)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            return super().zero_grad(set_to_none=False)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def _lean_lists(self):
        """Per parameter group, the kernel's lists and settings; None where torch's step is needed."""
        if not hasattr(torch, "_fused_adam_") or getattr(self, "grad_scale", None) is not None \
                or getattr(self, "found_inf", None) is not None:
            return None
        calls, where = [], None
        for group in self.param_groups:
            if (group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]
                    or group.get("decoupled_weight_decay")
                    or not all(isinstance(v, (int, float)) for v in (group["lr"], *group["betas"]))):
                return None
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                where = where or (p.device, p.dtype)  # torch's step would make one call per device and type
                if not self.state.get(p) or p.grad.is_sparse or p.is_complex() or (p.device, p.dtype) != where:
                    return None
            if params:
                states = [self.state[p] for p in params]
                calls.append((group, params, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                              [s["step"] for s in states]))
        return calls

    _lean = True  # False once the kernel has refused this call (another torch's signature): torch's step then

    @torch.no_grad()
    def step(self, closure=None):
        calls = None if closure is not None or not self._lean else self._lean_lists()
        if calls:
            try:
                self._lean_step(calls[:1])  # the first group alone: a refused call has changed nothing else
            except (TypeError, RuntimeError):
                torch._foreach_sub_(calls[0][4], 1)  # its step counts back, since the kernel did not run
                self._lean = False
            else:
                self._lean_step(calls[1:])
                return None
        step = torch.optim.Adam.step
        if getattr(step, "hooked", False):  # torch wraps a class's step with the hooks, which ours has run
            step = step.__wrapped__
        return step(self, closure)

    @staticmethod
    def _lean_step(calls) -> None:
        for group, params, exp_avgs, exp_avg_sqs, steps in calls:  # what torch.optim.adam._fused_adam does
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                               lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1],
                               weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                               grad_scale=None, found_inf=None)


def fused_adam(params, **adam_kwargs) -> torch.optim.Optimizer:
    """``torch.optim.Adam(params, **adam_kwargs)``, fused where torch offers it (:class:`FusedAdam`).

    The fused version updates every parameter in one kernel instead of a Python loop
    (about 10x faster per step on this course's CPUs); older torch builds and devices
    without it get the plain version.
    """
    params = list(params)
    try:
        return FusedAdam(params, **adam_kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **adam_kwargs)


def train(
    module: torch.nn.Module,
    loss_fn: LossFn,
    data: Sequence,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    weight_decay: float = 0.0,
    lr_schedule: Callable[[int], float] | None = None,
    validation: Sequence | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    desc: str = "training",
    drop_last: bool = False,
    max_grad_norm: float | None = None,
    nonzero_index: bool = False,
) -> History:
    """Fit ``module`` by minibatch gradient descent on ``loss_fn``.

    ``loss_fn(module, minibatch, epoch)`` gets one minibatch (a tuple of tensors, rows of
    ``data``) and returns the loss to minimise, averaged over the minibatch, or a dict
    with a ``"loss"`` entry and any other tensors worth logging (for example the two
    terms of an ELBO). ``lr_schedule(step)`` multiplies the learning rate at each step
    (a staircase decay, say). ``validation`` is another tuple of arrays; its mean losses
    are logged as ``val_<name>`` after every epoch.

    ``nonzero_index``: minibatches carry the nonzero entries of sparse arrays kept as CSR
    (see :class:`MinibatchLoader`).

    Returns a :class:`History` with per-epoch means (weighted by minibatch size) and the
    loss of every step. The module stays on the chosen device, in eval mode. Logged values
    stay on the device until the epoch ends, so that a GPU never waits for the host between
    steps; a non-finite loss stops training at the end of its epoch, naming the step.
    """
    if int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    dev = get_device(device)
    module.to(dev)
    loader = MinibatchLoader(data, batch_size=batch_size, shuffle=True, seed=seed, device=dev, drop_last=drop_last,
                             nonzero_index=nonzero_index)
    val_loader = (
        MinibatchLoader(validation, batch_size=max(batch_size, 1024), shuffle=False, device=dev,
                        nonzero_index=nonzero_index)
        if validation is not None
        else None
    )
    if optimizer is None:
        optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    history = History()
    step = 0
    start = time.perf_counter()
    bar = _progress(range(int(epochs)), progress, desc)
    for epoch in bar:
        module.train()
        names: list[str] = []
        logged: list[torch.Tensor] = []  # per step: the minibatch's terms, on the device
        sizes: list[int] = []
        for minibatch in loader:
            if lr_schedule is not None:
                factor = float(lr_schedule(step + len(logged)))
                for g, base in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = base * factor
            terms = _loss_terms(loss_fn(module, minibatch, epoch))
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), max_grad_norm)
            optimizer.step()
            names = list(terms)
            logged.append(torch.stack([v.detach().reshape(()).float() for v in terms.values()]))
            sizes.append(minibatch[0].shape[0])
        values = torch.stack(logged).cpu().double().numpy()  # steps x terms: one wait for the device per epoch
        losses = values[:, names.index("loss")]
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            raise FloatingPointError(
                f"the loss became {losses[bad[0]]} at epoch {epoch}, step {step + bad[0]}; "
                "lower the learning rate or check the input for NaN / inf"
            )
        history.step_loss.extend(losses.tolist())
        step += len(sizes)
        means = np.asarray(sizes, dtype=np.float64) @ values / sum(sizes)  # weighted by minibatch size
        for k, v in zip(names, means):
            history.epoch.setdefault(k, []).append(float(v))
        if val_loader is not None:
            for k, v in evaluate(module, loss_fn, val_loader, epoch).items():
                history.epoch.setdefault(f"val_{k}", []).append(v)
        if progress and hasattr(bar, "set_postfix"):
            post = {"loss": f"{history.epoch['loss'][-1]:.4g}"}
            if "val_loss" in history.epoch:
                post["val_loss"] = f"{history.epoch['val_loss'][-1]:.4g}"
            bar.set_postfix(post)
    module.eval()
    history.seconds = time.perf_counter() - start
    return history


@torch.no_grad()
def evaluate(module: torch.nn.Module, loss_fn: LossFn, loader: MinibatchLoader, epoch: int = 0) -> dict[str, float]:
    """Mean of every term of ``loss_fn`` over ``loader``, in eval mode, without gradients."""
    was_training = module.training
    module.eval()
    sums: dict[str, float] = {}
    seen = 0
    for minibatch in loader:
        terms = _loss_terms(loss_fn(module, minibatch, epoch))
        n = minibatch[0].shape[0]
        seen += n
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
    module.train(was_training)
    return {k: v / seen for k, v in sums.items()}
