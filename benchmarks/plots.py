"""Figures of the benchmark tables: benchmarks/results/<name>.png from <name>.csv.

    python benchmarks/plots.py          (run_all.py calls it after the benchmarks)

A table that has not been measured yet is skipped with a message; nothing is drawn from
numbers that are not in the CSV files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SETTINGS, welch_interval  # noqa: E402


_OUT = [RESULTS]  # where main() writes


def _save(fig, name: str) -> Path:
    path = _OUT[0] / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def plot_notebooks(df: pd.DataFrame) -> Path:
    """Each solution notebook's wall time against its budget, and one autograde."""
    df = df[df["lesson"] != "all"]
    y = np.arange(len(df))
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(df) + 1.5))
    ax.barh(y + 0.2, df["execute_s"], height=0.4, color="tab:blue", label="solution notebook, full epochs")
    ax.barh(y - 0.2, df["autograde_s"], height=0.4, color="tab:orange", label="autograding one submission (quick)")
    ax.scatter(df["budget_s"], y + 0.2, marker="|", s=300, color="k", label="budget")
    ax.set_yticks(y, df["lesson"])
    ax.invert_yaxis()
    ax.set_xlabel("seconds (median)")
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8)
    return _save(fig, "notebooks")


def plot_scaling(df: pd.DataFrame) -> Path:
    """Seconds per epoch against the number of cells, with the line of a linear cost."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for trainer, d in df.groupby("trainer", sort=False):
        d = d.sort_values("cells")
        line, = ax.loglog(d["cells"], d["s / epoch"], "o-", label=trainer)
        first = d.iloc[0]
        ax.loglog(d["cells"], first["s / epoch"] * d["cells"] / first["cells"], ":", color=line.get_color())
    ax.set_xlabel("cells (sparse input)")
    ax.set_ylabel("seconds per epoch")
    ax.set_title("dotted: cost proportional to the cells", fontsize=9)
    ax.legend(frameon=False)
    return _save(fig, "scaling")


def plot_actinn(df: pd.DataFrame) -> Path:
    """Median accuracy of each method on the three tasks."""
    df = df.assign(task=df["setting"].str.replace(" CV", "") + " " + df["subset"])
    med = df.groupby(["method", "task"], sort=False)["accuracy"].median().unstack("task")
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(med.shape[1])
    width = 0.8 / len(med)
    for i, (method, row) in enumerate(med.iterrows()):
        ax.bar(x + (i - (len(med) - 1) / 2) * width, row.values, width, label=method)
    ax.set_xticks(x, med.columns)
    ax.set_ylabel("accuracy (median over folds or seeds)")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=7, ncol=2, loc="lower left")
    return _save(fig, "actinn")


def plot_factor(df: pd.DataFrame) -> Path:
    """Fit time of PPCA / FA and scikit-learn's counterparts."""
    datasets = list(dict.fromkeys(df["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.5), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        d = df[df["dataset"] == name]
        colors = ["tab:blue" if m.startswith("sclecture") else "0.6" for m in d["method"]]
        bars = ax.barh(d["method"], d["fit_s_median"], color=colors)
        ax.bar_label(bars, labels=[f"{v:.1f} s" for v in d["fit_s_median"]], padding=3, fontsize=8)
        ax.set_xlim(0, 1.2 * d["fit_s_median"].max())
        ax.invert_yaxis()
        n, g = int(d["n_cells"].iloc[0]), int(d["n_genes"].iloc[0])
        ax.set_title(f"{name}: {n:,} cells x {g:,} genes", fontsize=9)
        ax.set_xlabel("fit seconds (median)")
    return _save(fig, "factor")


def plot_scvi(df: pd.DataFrame) -> Path:
    """sclecture's scVI against scvi-tools: throughput, held-out likelihood (every seed), latent quality."""
    df = df[df["implementation"] != "check"]  # the equivalence checks are numbers for the table, not bars
    wide = df.pivot_table(index="measure", columns="implementation", values="value", aggfunc="median")  # over seeds
    panels = [("cells_per_s", "training cells / s"), ("neg_elbo", "held-out -ELBO per cell"),
              ("neg_marginal_ll", "held-out -log p(x) per cell"), ("ari", "k-means ARI"), ("nmi", "k-means NMI")]
    panels = [(m, t) for m, t in panels if m in wide.index]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 3))
    for ax, (measure, title) in zip(np.atleast_1d(axes), panels):
        row = wide.loc[measure]
        colors = ["tab:blue" if i == "sclecture" else "0.6" for i in row.index]
        if measure.startswith("neg_"):  # close values that vary by seed: every seed as a dot, the mean as a bar
            for k, impl in enumerate(row.index):
                v = df[(df["measure"] == measure) & (df["implementation"] == impl)]["value"].to_numpy(float)
                ax.scatter(np.full(len(v), k) + np.linspace(-0.15, 0.15, len(v)), v, s=12, color=colors[k], zorder=3)
                ax.hlines(v.mean(), k - 0.3, k + 0.3, color="k", lw=1.5)
            ax.set_xticks(range(len(row.index)), row.index)
            ax.set_xlim(-0.6, len(row.index) - 0.4)
            ax.set_ylabel("nats (lower is better)", fontsize=8)
        else:
            ax.bar(row.index, row.values, color=colors)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    return _save(fig, "scvi")


def plot_machine(df: pd.DataFrame) -> Path:
    """Training steps as a fraction of the machine's measured matmul peak."""
    d = df[df["what"].str.contains("training epoch")]
    labels = [f"{w.replace(' training epoch', '')} ({t} thr.)" for w, t in zip(d["what"], d["threads"])]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(d) + 1.2))
    ax.barh(labels, d["% of peak"].astype(float), color="tab:blue")
    ax.invert_yaxis()
    ax.axvline(40, color="tab:red", ls="--", lw=1, label="goal for scVI's step")
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of float32 matmul peak (from layer sizes)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, "machine")


GOALS = {"speedup": {"zeisel_cortex-558": 2.5, "pbmc3k-2000": 2.0, "pbmc3k-4000": 2.0},  # the README's goals for scVI
         "likelihood_bound": 0.5}


def plot_scvi_genes_idle(df: pd.DataFrame) -> Path:
    """Training throughput against scvi-tools by gene count: every round, its median, the code before, the goal."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(dict.fromkeys(df.loc[df["measure"] == "speedup", "dataset"]))
    for k, name in enumerate(names):
        for measure, color, dx, label in (("speedup_before", "0.6", -0.12, "the code before, same rounds"),
                                          ("speedup", "tab:blue", 0.12, "this code, each round")):
            v = df[(df["dataset"] == name) & (df["measure"] == measure)]["value"].to_numpy(float)
            ax.scatter(np.full(len(v), k + dx), v, s=16, color=color, zorder=3, label=label if k == 0 else None)
            if len(v):
                ax.hlines(np.median(v), k + dx - 0.1, k + dx + 0.1, color="k", lw=1.5)
        goal = GOALS["speedup"].get(name)
        if goal is not None:
            ax.hlines(goal, k - 0.35, k + 0.35, color="tab:red", ls="--", lw=1, label="goal" if k == 0 else None)
    ax.set_xticks(range(len(names)), [n.replace("-", "\n") + " genes" for n in names], fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("training throughput / scvi-tools'", fontsize=8)
    ax.set_title("scVI fit call, 20 epochs, 1 thread, fresh processes (bar: median)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, "scvi_genes_idle")


def running_welch(a: dict, b: dict) -> list[tuple[int, float, float, float]]:
    """(seeds per code, difference, low, high) of Welch's 95 % interval for mean(a) - mean(b), adding seeds in
    order: ``a`` and ``b`` map seed -> value; the k-th point uses the first k seeds of each (k >= 3)."""
    sa, sb = sorted(a), sorted(b)
    return [(k, *welch_interval([a[s] for s in sa[:k]], [b[s] for s in sb[:k]]))
            for k in range(3, min(len(sa), len(sb)) + 1)]


def plot_scvi_genes_quality(df: pd.DataFrame) -> Path:
    """Held-out -log p(x) of every seed of both codes, and the interval for their difference as seeds were added."""
    d = df[df["measure"] == "neg_marginal_ll"].copy()
    d["seed"] = d["detail"].str.extract(r"seed (\d+)", expand=False).astype(int)
    d["settings"] = d["detail"].map(lambda s: SETTINGS.search(s).group(0))
    settings = d["settings"].value_counts().index[0]  # fits made with other settings are not pooled
    d = d[d["settings"] == settings]
    by_code = {impl: dict(zip(g["seed"], g["value"].astype(float))) for impl, g in d.groupby("implementation")}
    course, peer = by_code["sclecture"], by_code["scvi-tools"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1, 2]})
    for k, (impl, values) in enumerate((("sclecture", course), ("scvi-tools", peer))):
        v = np.array(list(values.values()))
        left.scatter(np.full(len(v), k) + np.linspace(-0.2, 0.2, len(v)), v, s=8,
                     color="tab:blue" if k == 0 else "0.6", zorder=3)
        left.hlines(v.mean(), k - 0.3, k + 0.3, color="k", lw=1.5)
    left.set_xticks([0, 1], [f"sclecture\n{len(course)} seeds", f"scvi-tools\n{len(peer)} seeds"], fontsize=8)
    left.set_xlim(-0.6, 1.6)
    left.set_ylabel("held-out -log p(x), nats per cell", fontsize=8)
    left.set_title("every seed (bar: mean)", fontsize=9)
    run = np.array(running_welch(course, peer))
    right.fill_between(run[:, 0], run[:, 2], run[:, 3], color="tab:blue", alpha=0.25, label="95 % interval (Welch)")
    right.plot(run[:, 0], run[:, 1], color="tab:blue", lw=1.5, label="difference of the means")
    right.axhline(0, color="k", lw=0.8)
    right.axhline(GOALS["likelihood_bound"], color="tab:red", ls="--", lw=1, label="goal: upper end below this")
    right.set_xlabel("seeds per code (in seed order)", fontsize=8)
    right.set_ylabel("sclecture minus scvi-tools, nats", fontsize=8)
    right.set_title(f"the difference as seeds were added ({settings} per fit)", fontsize=9)
    right.legend(fontsize=7)
    return _save(fig, "scvi_genes_quality")


PLOTS = {"notebooks": plot_notebooks, "scaling": plot_scaling, "actinn": plot_actinn,
         "factor": plot_factor, "scvi": plot_scvi, "machine": plot_machine,
         "scvi_genes_idle": plot_scvi_genes_idle, "scvi_genes_quality": plot_scvi_genes_quality}


def main(results: Path = RESULTS) -> list[Path]:
    _OUT[0] = results
    written = []
    for name, plot in PLOTS.items():
        csv = results / f"{name}.csv"
        if not csv.exists():
            print(f"skipped {name}: {csv} not measured yet (run benchmarks/bench_{name}.py)")
            continue
        written.append(plot(pd.read_csv(csv)))
    return written


if __name__ == "__main__":
    main()
