"""Diagrams of the lecture's models, drawn with matplotlib in the lecture's notation.

Each function draws one picture on ``ax`` (a new figure when ``ax`` is None), turns the
axes off and returns them. Coordinates are inches of the figure that ``ax=None`` creates.

=========================  ======  ==============================================
function                   lesson  picture
=========================  ======  ==============================================
``mlp_graph((3, 1))``      01      logistic regression / perceptron as one unit
``mlp_graph()``            02      a multilayer perceptron as a graph of layers
``backprop_graph()``       02      forward and backward pass of a two-layer network
``actinn_pipeline()``      03      ACTINN from raw counts to cell types
``fa_generative()``        04      factor analysis / PPCA as a graphical model
``vae_architecture()``     05      encoder, reparameterisation, decoder, ELBO terms
``scvi_graphical_model()`` 06      scVI's generative model with its plates
=========================  ======  ==============================================
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Polygon

__all__ = ["mlp_graph", "backprop_graph", "actinn_pipeline", "fa_generative", "vae_architecture",
           "scvi_graphical_model"]

FWD, BWD = "#0b4f8a", "#d55e00"  # forward / generative arrows (blue), backward arrows and losses (vermillion)
OBSERVED, BOX = "#c8c8c8", "#eaf2fa"  # shading of observed variables, fill of computation boxes
FS = 12  # font size of labels, in points


# ----------------------------------------------------------------------------- helpers

def _canvas(ax, width: float, height: float):
    """Axes whose data units are inches of a width x height figure (made when ``ax`` is None)."""
    if ax is None:
        ax = plt.figure(figsize=(width, height)).add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return ax


def _node(ax, xy, text="", w=None, h=0.7, r=0.32, fc="white", fs=FS, **kw):
    """A circle of radius ``r`` (or a rounded box ``w`` x ``h`` when ``w`` is given) with a centred label."""
    x, y = xy
    if w is None:
        patch = Circle(xy, r, fc=fc, ec="black", lw=1.3, zorder=2)
    else:
        patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.1",
                               fc=fc, ec="black", lw=1.1, zorder=2)
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fs, zorder=3, **kw)
    return patch


def _param(ax, xy, text):
    """A model parameter: a small filled dot, its label to the right."""
    dot = Circle(xy, 0.07, fc="black", zorder=2)
    ax.add_patch(dot)
    ax.text(xy[0] + 0.15, xy[1], text, va="center", fontsize=FS)
    return dot


def _arrow(ax, a, b, color=FWD, rad=0.0, style="-|>", ls="-", lw=1.4):
    """An arrow from ``a`` to ``b`` (points or patches; a patch's outline clips the arrow)."""
    pa, pb = [(p, _centre(p)) if hasattr(p, "get_path") else (None, p) for p in (a, b)]
    arrow = FancyArrowPatch(pa[1], pb[1], patchA=pa[0], patchB=pb[0], arrowstyle=style, mutation_scale=14,
                            color=color, lw=lw, ls=ls, shrinkA=2, shrinkB=2, connectionstyle=f"arc3,rad={rad}",
                            zorder=1)
    ax.add_patch(arrow)
    return arrow


def _centre(patch):
    """The centre of a patch's bounding box, in data coordinates."""
    box = patch.get_path().get_extents(patch.get_patch_transform())
    return ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)


def _plate(ax, x0, y0, x1, y1, text):
    """A plate: the variables inside repeat once per index; the label sits in the lower right corner."""
    ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0,rounding_size=0.12",
                                fc="none", ec="0.35", lw=1.2, zorder=0))
    ax.text(x1 - 0.12, y0 + 0.1, text, ha="right", va="bottom", fontsize=FS - 1)


def _lines(ax, x, y, lines):
    """Several lines of text, one under the other, left-aligned below (x, y)."""
    ax.text(x, y, "\n".join(lines), va="top", fontsize=FS, linespacing=1.7)


# ----------------------------------------------------------------------------- lessons 01 and 02

def _column(n: int, top: float, step: float):
    """(y positions of the nodes drawn, their 1-based indices, y of a vertical ellipsis or None)."""
    if n <= 7:
        return [top - i * step for i in range(n)], list(range(1, n + 1)), None
    ys = [top - i * step for i in (0, 1, 2, 3, 5, 6)]
    return ys, [1, 2, 3, 4, n - 1, n], top - 4 * step


def mlp_graph(layer_sizes=(3, 4, 4, 2), ax=None):
    """An MLP as a graph: inputs x_i, hidden layers h_l = phi(W_l^T h_{l-1} + b_l), output y = psi(...).

    ``layer_sizes=(D, 1)`` draws logistic regression / the perceptron as one unit with weights
    beta_i and bias beta_0; layers wider than 7 units are drawn with an ellipsis.
    """
    sizes = [int(s) for s in layer_sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"layer_sizes needs an input and an output width, all >= 1; got {layer_sizes}")
    single, last = len(sizes) == 2 and sizes[1] == 1, len(sizes) - 1
    step, gap = 0.75, (3.0 if single else 2.5)
    rows = max(min(s, 7) for s in sizes) + single  # the single unit's bias input takes a row
    height = rows * step + (0.95 if single else 1.45)
    ax = _canvas(ax, gap * last + (3.7 if single else 2.6), height)
    cols = []
    for l, n in enumerate(sizes):
        ys, idx, dots = _column(n, height - 0.65 - (rows - min(n, 7) - (single and l == 0)) * step / 2, step)
        names = [f"$x_{{{i}}}$" if l == 0 else r"$\phi$" if single else r"$\psi$" if l == last else "" for i in idx]
        cols.append([_node(ax, (1.0 + l * gap, y), name, r=0.27, fc=OBSERVED if l == 0 else "white")
                     for y, name in zip(ys, names)])
        if dots is not None:
            ax.text(1.0 + l * gap, dots, r"$\vdots$", ha="center", va="center", fontsize=FS)
    bottom = min(node.center[1] for col in cols for node in col) - 0.45
    if single:  # lesson 01: one unit, weights beta_i, bias beta_0
        unit = cols[1][0]
        for k, node in enumerate(cols[0] + [_node(ax, (1.0, bottom - 0.3), "$1$", r=0.27)]):
            _arrow(ax, node, unit, color="0.3")
            y, t = node.center[1], 0.22
            ax.text(1.0 + t * gap, y + t * (unit.center[1] - y) + (0.2 if y > unit.center[1] else -0.2),
                    rf"$\beta_{{{(k + 1) % (sizes[0] + 1)}}}$", ha="center", va="center", fontsize=FS, color=FWD)
        out = (1.0 + gap + 0.55, unit.center[1])
        _arrow(ax, unit, out, color="0.3")
        ax.text(out[0] + 0.08, out[1], r"$y = \phi(\boldsymbol{\beta}^T\mathbf{x} + \beta_0)$", va="center", fontsize=FS)
        _lines(ax, 1.0 + gap - 0.3, unit.center[1] - 0.5, [r"logistic regression: $\phi = \mathrm{sigm}$",
                                                          r"perceptron: $\phi = \mathrm{sign}$"])
        ax.text(1.0, bottom - 0.75, r"inputs $\mathbf{x}$", ha="center", va="top", fontsize=FS)
        return ax
    for l in range(1, len(sizes)):
        for a in cols[l - 1]:
            for b in cols[l]:
                _arrow(ax, a, b, color="0.6", style="-", lw=0.8)
        ax.text(1.0 + (l - 0.5) * gap, height - 0.3, rf"$\mathbf{{W}}_{{{l}}}, \mathbf{{b}}_{{{l}}}$", ha="center",
                va="center", fontsize=FS, color=FWD)
    for l in range(len(sizes)):
        prev = r"\mathbf{x}" if l == 1 else rf"\mathbf{{h}}_{{{l - 1}}}"
        affine = rf"(\mathbf{{W}}_{{{l}}}^T{prev} + \mathbf{{b}}_{{{l}}})$"
        label = (["input", rf"$\mathbf{{x}} \in \mathbb{{R}}^{{{sizes[0]}}}$"] if l == 0 else
                 [f"hidden layer {l}", rf"$\mathbf{{h}}_{{{l}}} = \phi" + affine] if l < last else
                 ["output", r"$\mathbf{y} = \psi" + affine])
        ax.text(1.0 + l * gap, bottom, "\n".join(label), ha="center", va="top", fontsize=FS - 1, linespacing=1.6)
    return ax


def backprop_graph(ax=None):
    """Backpropagation in a two-layer network: the forward pass top to bottom (blue), the backward
    pass bottom to top (vermillion), with the names of ``two_layer_backward`` (lesson 02)."""
    ax = _canvas(ax, 9.6, 6.6)
    rows = [5.8 - 1.06 * i for i in range(6)]
    fwd = [_node(ax, (3.1, y), t, w=2.3, h=0.6, fc=BOX) for y, t in zip(rows, [
        r"$\mathbf{X}$", r"$\mathbf{A}_1 = \mathbf{X}\mathbf{W}_1 + \mathbf{b}_1$",
        r"$\mathbf{H}_1 = \phi(\mathbf{A}_1)$, ReLU", r"$\mathbf{A}_2 = \mathbf{H}_1\mathbf{W}_2 + \mathbf{b}_2$",
        r"$\mathbf{P} = \psi(\mathbf{A}_2)$, softmax", r"$\mathrm{loss} = -\log\mathcal{L}\,/\,n$"])]
    fwd[0].set_facecolor(OBSERVED)
    for a, b in zip(fwd, fwd[1:]):
        _arrow(ax, a, b)
    for y, t, target in [(rows[1], r"$\mathbf{W}_1, \mathbf{b}_1$", fwd[1]),
                         (rows[3], r"$\mathbf{W}_2, \mathbf{b}_2$", fwd[3]), (rows[5], r"$\mathbf{Y}$", fwd[5])]:
        _arrow(ax, _node(ax, (0.8, y), t, w=1.1, h=0.6, fc=OBSERVED if target is fwd[5] else "white"), target)
    ax.text(3.1, 6.25, "forward pass", ha="center", fontsize=FS, color=FWD, weight="bold")
    ax.text(5.75, 6.25, "backward pass", ha="center", fontsize=FS, color=BWD, weight="bold")
    d = r"\partial\,\mathrm{loss}/\partial"
    back = [_node(ax, (5.75, y), t, w=2.45, h=0.7, fc="white", color=BWD, linespacing=1.4, fs=FS - 1) for y, t in [
        (rows[3], rf"$\boldsymbol{{\Delta}}_2 = {d}\mathbf{{A}}_2$" + "\n" + r"$= (\mathbf{P} - \mathbf{Y})\,/\,n$"),
        (rows[2], rf"${d}\mathbf{{H}}_1$" + "\n" + r"$= \boldsymbol{\Delta}_2\mathbf{W}_2^T$"),
        (rows[1], rf"$\boldsymbol{{\Delta}}_1 = {d}\mathbf{{A}}_1$" + "\n"
         + rf"$= {d}\mathbf{{H}}_1 \odot \phi'(\mathbf{{A}}_1)$")]]
    _arrow(ax, fwd[5], back[0], color=BWD, rad=0.25)
    for a, b in zip(back, back[1:]):
        _arrow(ax, a, b, color=BWD)
    for src, y, l, h in [(back[0], rows[3], 2, r"\mathbf{H}_1"), (back[2], rows[1], 1, r"\mathbf{X}")]:
        grad = _node(ax, (8.45, y), rf"${d}\mathbf{{W}}_{l} = {h}^T\boldsymbol{{\Delta}}_{l}$" + "\n"
                     + rf"${d}\mathbf{{b}}_{l} = \mathbf{{1}}^T\boldsymbol{{\Delta}}_{l}$", w=2.1, h=0.7,
                     fc="white", color=BWD, linespacing=1.4, fs=FS - 1)
        _arrow(ax, src, grad, color=BWD)
    return ax


# ----------------------------------------------------------------------------- lesson 03

def actinn_pipeline(ax=None):
    """ACTINN (``sclecture.actinn``): raw counts -> normalise -> gene filter -> 100-50-25 ReLU
    network -> softmax -> cell type; training on the reference, prediction on a query."""
    ax = _canvas(ax, 10.0, 6.6)
    x, fs = 5.0, FS - 1
    steps = [(6.1, 0.6, "reference: raw counts $\\tilde{\\mathbf{x}}$ (cells $\\times$ genes)"),
             (5.05, 0.8, "normalise each cell\n$\\mathbf{x} = \\log_2(10^4\\,\\tilde{\\mathbf{x}}\\,/\\,N + 1)$,"
              " $N$ = its total"),
             (3.65, 1.35, "gene filter\ndrop genes that are 0 in every cell;\nkeep the total $s_g$ within "
              "$P_1$ to $P_{99}$,\nthen $\\mathrm{CV}_g = \\mathrm{std}_g\\,/\\,\\mathrm{mean}_g$ within $P_1$ to $P_{99}$"),
             (2.3, 0.6, "network: 100, 50, 25 units, ReLU"),
             (1.4, 0.6, "softmax over $k$ cell types"),
             (0.5, 0.6, "cell type: the most probable")]
    boxes = [_node(ax, (x, y), t, w=3.3, h=h, fc=BOX, fs=fs, linespacing=1.5) for y, h, t in steps]
    boxes[0].set_facecolor(OBSERVED)
    for a, b in zip(boxes, boxes[1:]):
        _arrow(ax, a, b)
    side = dict(w=2.6, h=1.9, fs=fs, linespacing=1.5)
    query = _node(ax, (1.4, 2.3), "prediction on a query:\nraw counts, its own genes,\nmatched by name to\n"
                  "the kept genes (missing: their\nreference mean), normalised\nwith its own $N$", fc=OBSERVED, **side)
    _arrow(ax, boxes[2], query, ls="--", rad=0.35)
    ax.text(2.75, 3.78, "kept genes", ha="right", va="bottom", fontsize=fs, color=FWD)
    _arrow(ax, query, boxes[3])
    train = _node(ax, (8.6, 2.3), "training updates $\\mathbf{W}_l, \\mathbf{b}_l$\nto lower $-\\log\\mathcal{L}\\,/\\,n$"
                  " (labels $y_i$)\n+ L2 penalty on $\\mathbf{W}_l$;\nAdam, staircase rate\n"
                  "$10^{-4} \\cdot 0.95^{\\lfloor s/1000 \\rfloor}$ at step $s$", color=BWD, **side)
    _arrow(ax, boxes[4], train, color=BWD, rad=0.3)
    _arrow(ax, train, boxes[3], color=BWD, ls="--")
    return ax


# ----------------------------------------------------------------------------- lessons 04 to 06

def _legend(ax, x, y, lines, key="dot: parameter"):
    """The generative equations beside a graphical model, from (x, y) down; at the bottom, what
    shading, dots (and boxes) mean."""
    _lines(ax, x, y, lines)
    ax.text(x, 0.3, "shaded: observed, white: latent,\n" + key, va="bottom", fontsize=FS - 1, color="0.35",
            linespacing=1.5)


def fa_generative(ax=None):
    """Factor analysis as a graphical model: z_n -> x_n <- eps_n in a plate over n; W, mu, Psi."""
    ax = _canvas(ax, 9.0, 3.7)
    _plate(ax, 0.3, 0.3, 4.3, 3.35, r"$n = 1, \ldots, N$")
    z = _node(ax, (1.2, 2.45), r"$\mathbf{z}_n$", r=0.38)
    x = _node(ax, (3.1, 2.45), r"$\mathbf{x}_n$", r=0.38, fc=OBSERVED)
    eps = _node(ax, (3.1, 1.05), r"$\boldsymbol{\epsilon}_n$", r=0.38)
    _arrow(ax, z, x)
    _arrow(ax, eps, x)
    for y, name, target in [(3.05, r"$\mathbf{W}$", x), (2.45, r"$\boldsymbol{\mu}$", x),
                            (1.05, r"$\boldsymbol{\Psi}$", eps)]:
        _arrow(ax, _param(ax, (4.95, y), name), target)
    _legend(ax, 5.9, 3.3, [r"$\mathbf{z}_n \sim \mathcal{N}(\mathbf{0}, \mathbf{I}_L)$",
                           r"$\boldsymbol{\epsilon}_n \sim \mathcal{N}(\mathbf{0}, \boldsymbol{\Psi})$, "
                           r"$\boldsymbol{\Psi}$ diagonal",
                           r"$\mathbf{x}_n = \mathbf{W}\mathbf{z}_n + \boldsymbol{\mu} + \boldsymbol{\epsilon}_n$",
                           r"PPCA: $\boldsymbol{\Psi} = \sigma^2\mathbf{I}$"])
    return ax


def vae_architecture(ax=None):
    """The VAE: encoder q(z | x, phi) -> (mu, log sigma^2) -> z = mu + sigma * eps -> decoder
    p(x | z, theta), with the two terms of the ELBO where they are computed."""
    ax = _canvas(ax, 10.0, 4.7)
    y = 2.3
    x = _node(ax, (0.55, y), r"$\mathbf{x}$", r=0.36, fc=OBSERVED)
    nets = []
    for x0, x1, wide, text in [(1.25, 2.85, 0, "encoder\n$q(\\mathbf{z} \\mid \\mathbf{x}, \\phi)$"),
                               (6.05, 7.65, 1, "decoder\n$p(\\mathbf{x} \\mid \\mathbf{z}, \\theta)$")]:
        h0, h1 = (1.0, 0.5) if wide == 0 else (0.5, 1.0)
        nets.append(Polygon([(x0, y - h0), (x0, y + h0), (x1, y + h1), (x1, y - h1)], fc=BOX, ec="black",
                            lw=1.1, zorder=2))
        ax.add_patch(nets[-1])
        ax.text((x0 + x1) / 2, y, text, ha="center", va="center", fontsize=FS, linespacing=1.6, zorder=3)
    mu = _node(ax, (3.65, y + 0.55), r"$\boldsymbol{\mu}$", w=1.0, h=0.55)
    logvar = _node(ax, (3.65, y - 0.55), r"$\log\boldsymbol{\sigma}^2$", w=1.0, h=0.55)
    z = _node(ax, (5.2, y), r"$\mathbf{z}$", r=0.36)
    eps = _node(ax, (5.2, 0.7), r"$\boldsymbol{\epsilon}$", r=0.3)
    xhat = _node(ax, (8.45, y), r"$\hat{\mathbf{x}}$", r=0.36)
    for a, b in [(x, nets[0]), (nets[0], mu), (nets[0], logvar), (mu, z), (logvar, z), (eps, z),
                 (z, nets[1]), (nets[1], xhat)]:
        _arrow(ax, a, b)
    ax.text(5.6, 0.7, r"$\boldsymbol{\epsilon} \sim \mathcal{N}(\mathbf{0}, \mathbf{I})$", va="center", fontsize=FS)
    ax.text(5.35, 1.45, r"$\mathbf{z} = \boldsymbol{\mu} + \boldsymbol{\sigma} \odot \boldsymbol{\epsilon}$",
            va="center", fontsize=FS)
    ax.text(8.45, y - 0.5, r"$\hat{\mathbf{x}} = f(\mathbf{z}; \theta)$", ha="center", va="top", fontsize=FS)
    for xt, text in [(4.4, r"KL$(q(\mathbf{z} \mid \mathbf{x}) \,\|\, p(\mathbf{z}))$"),
                     (8.45, r"$\mathbb{E}_q[\log p(\mathbf{x} \mid \mathbf{z})]$")]:
        ax.text(xt, 3.3, ("regularisation" if xt < 5 else "reconstruction") + " term\n" + text, ha="center",
                va="bottom", fontsize=FS, color=BWD, linespacing=1.5)
    ax.text(5.0, 4.3, r"$\mathrm{ELBO} = \mathbb{E}_{q(\mathbf{z} \mid \mathbf{x}, \phi)} \log p(\mathbf{x} \mid "
            r"\mathbf{z}, \theta) - \mathrm{KL}(q(\mathbf{z} \mid \mathbf{x}, \phi) \,\|\, p(\mathbf{z}))$",
            ha="center", va="center", fontsize=FS)
    return ax


def scvi_graphical_model(ax=None):
    """scVI's generative model (lesson 06, ``sclecture.scvi``): cell-level z_n, l_n, s_n, rho_n and
    gene-level w_ng, y_ng, h_ng, x_ng in nested plates; theta and the library prior as parameters."""
    ax = _canvas(ax, 10.0, 5.7)
    _plate(ax, 0.25, 0.2, 6.75, 4.85, r"$n = 1, \ldots, N$")
    _plate(ax, 3.15, 0.7, 6.55, 3.85, r"$g = 1, \ldots, G$")
    z = _node(ax, (0.9, 3.55), "$z_n$")
    s = _node(ax, (0.9, 1.5), "$s_n$", fc=OBSERVED)
    rho = _node(ax, (2.3, 3.55), r"$\rho_n$", w=0.66, h=0.6)
    lib = _node(ax, (5.25, 4.3), "$l_n$")
    w = _node(ax, (3.85, 2.95), "$w_{ng}$")
    y = _node(ax, (5.25, 2.95), "$y_{ng}$")
    h = _node(ax, (3.85, 1.5), "$h_{ng}$")
    x = _node(ax, (5.9, 1.5), "$x_{ng}$", fc=OBSERVED)
    for a, b in [(z, rho), (s, rho), (z, h), (s, h), (rho, w), (w, y), (lib, y), (y, x), (h, x)]:
        _arrow(ax, a, b)
    _arrow(ax, _param(ax, (3.85, 5.35), r"$\theta$"), w)
    _arrow(ax, _param(ax, (5.25, 5.35), r"$\ell_\mu, \ell_\sigma^2$"), lib)
    _legend(ax, 7.0, 5.3, [r"$z_n \sim \mathrm{Normal}(0, I)$",
                           r"$l_n \sim \mathrm{LogNormal}(\ell_\mu, \ell_\sigma^2)$",
                           r"$\rho_n = f_w(z_n, s_n)$",
                           r"$w_{ng} \sim \mathrm{Gamma}(\rho_n^g, \theta)$",
                           r"$y_{ng} \sim \mathrm{Poisson}(l_n w_{ng})$",
                           r"$h_{ng} \sim \mathrm{Bernoulli}(f_h^g(z_n, s_n))$",
                           r"$x_{ng} = y_{ng}$ if $h_{ng} = 0$, else $0$"],
            key="dot: parameter, box: deterministic")
    return ax
