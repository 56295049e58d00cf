"""The lecture's diagrams draw, carry the lecture's symbols and stay readable (no overlapping labels)."""

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path

from sclecture import diagrams

# (function, keyword arguments, pieces of text the picture must show)
CASES = {
    "mlp": (diagrams.mlp_graph, {}, [r"$x_{1}$", r"\mathbf{W}_{1}", r"\mathbf{b}_{3}", r"\phi(", r"\psi", "hidden layer 2"]),
    "perceptron": (diagrams.mlp_graph, {"layer_sizes": (3, 1)},
                   [r"$x_{3}$", r"$\beta_{1}$", r"$\beta_{0}$", r"\mathrm{sigm}", r"\mathrm{sign}"]),
    "mlp_wide": (diagrams.mlp_graph, {"layer_sizes": (20, 8, 3)}, [r"$x_{20}$", r"$\vdots$"]),
    "backprop": (diagrams.backprop_graph, {},
                 [r"\mathbf{A}_1 = \mathbf{X}\mathbf{W}_1", r"\mathbf{H}_1 = \phi(\mathbf{A}_1)", r"\psi(\mathbf{A}_2)",
                  r"\partial\,\mathrm{loss}/\partial\mathbf{A}_2", r"\partial\,\mathrm{loss}/\partial\mathbf{H}_1",
                  r"\partial\,\mathrm{loss}/\partial\mathbf{A}_1", r"\partial\,\mathrm{loss}/\partial\mathbf{W}_2",
                  r"\partial\,\mathrm{loss}/\partial\mathbf{W}_1", "backward pass"]),
    "actinn": (diagrams.actinn_pipeline, {},
               [r"\log_2(10^4", "100, 50, 25 units, ReLU", "softmax", "$P_{99}$", r"\mathrm{CV}_g", "Adam",
                "staircase", "matched by name", "L2"]),
    "fa": (diagrams.fa_generative, {},
           [r"$\mathbf{z}_n$", r"$\mathbf{x}_n$", r"\boldsymbol{\epsilon}_n", r"\mathbf{I}_L", r"$\boldsymbol{\Psi}$",
            r"\sigma^2\mathbf{I}", r"$n = 1, \ldots, N$"]),
    "vae": (diagrams.vae_architecture, {},
            [r"q(\mathbf{z} \mid \mathbf{x}, \phi)", r"p(\mathbf{x} \mid \mathbf{z}, \theta)", r"\log\boldsymbol{\sigma}^2",
             r"\boldsymbol{\sigma} \odot \boldsymbol{\epsilon}", r"\mathcal{N}(\mathbf{0}, \mathbf{I})",
             r"\mathbb{E}_q[\log p(\mathbf{x} \mid \mathbf{z})]", r"KL$(q(\mathbf{z} \mid \mathbf{x})"]),
    "scvi": (diagrams.scvi_graphical_model, {},
             ["$z_n$", "$l_n$", "$s_n$", r"$\rho_n$", "$w_{ng}$", "$y_{ng}$", "$h_{ng}$", "$x_{ng}$", r"$\theta$",
              r"$n = 1, \ldots, N$", r"$g = 1, \ldots, G$", r"\mathrm{Gamma}(\rho_n^g, \theta)",
              r"\mathrm{Bernoulli}(f_h^g(z_n, s_n))", r"\mathrm{LogNormal}(\ell_\mu, \ell_\sigma^2)"]),
}


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def drawn(request):
    func, kwargs, symbols = CASES[request.param]
    ax = func(**kwargs)
    ax.figure.canvas.draw()
    yield ax, symbols
    plt.close(ax.figure)


def _labels(ax):
    return [t for t in ax.texts if t.get_text().strip()]


def test_draws_on_a_given_axes_and_turns_it_off():
    for func, kwargs, _ in CASES.values():
        fig, ax = plt.subplots(figsize=(4, 3))
        assert func(ax=ax, **kwargs) is ax, f"{func.__name__} must draw on the axes it is given and return them"
        assert not ax.axison and ax.texts, f"{func.__name__}: axes should be off and carry labels"
        plt.close(fig)


def test_new_figure_has_notebook_width(drawn):
    ax, _ = drawn
    assert isinstance(ax, matplotlib.axes.Axes) and not ax.axison
    width, height = ax.figure.get_size_inches()
    assert 6 <= width <= 10.5 and 3 <= height <= 7.5, f"figure of {width} x {height} inches"


def test_shows_the_lecture_symbols(drawn):
    ax, symbols = drawn
    text = "\n".join(t.get_text() for t in _labels(ax))
    missing = [s for s in symbols if s not in text]
    assert not missing, f"labels lack {missing}"


def test_labels_are_large_enough_and_inside_the_figure(drawn):
    ax, _ = drawn
    renderer, frame = ax.figure.canvas.get_renderer(), ax.figure.bbox
    for t in _labels(ax):
        assert t.get_fontsize() >= 10, f"{t.get_text()!r} is set in {t.get_fontsize()} pt"
        box = t.get_window_extent(renderer)
        assert (box.x0 >= frame.x0 and box.y0 >= frame.y0 and box.x1 <= frame.x1 and box.y1 <= frame.y1), \
            f"{t.get_text()!r} ({box}) leaves the figure ({frame})"


def test_no_two_labels_overlap(drawn):
    ax, _ = drawn
    renderer = ax.figure.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _labels(ax)]
    clashes = [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
    assert not clashes, f"overlapping labels: {clashes}"


def test_no_arrow_crosses_a_label(drawn):
    ax, _ = drawn
    renderer = ax.figure.canvas.get_renderer()
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert arrows, "each diagram connects its parts by arrows"
    # arrows in display coordinates, curves flattened into polylines
    lines = [Path(p) for a in arrows for p in a.get_transform().transform_path(a.get_path()).to_polygons(closed_only=False)]
    crossed = [t.get_text() for t in _labels(ax) if any(
        line.intersects_bbox(t.get_window_extent(renderer).padded(-1), filled=False) for line in lines)]
    assert not crossed, f"arrows run through {crossed}"


def test_mlp_graph_rejects_a_network_without_layers():
    with pytest.raises(ValueError, match="input and an output"):
        diagrams.mlp_graph((3,))
    with pytest.raises(ValueError, match="all >= 1"):
        diagrams.mlp_graph((3, 0))
