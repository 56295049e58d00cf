"""Shared plots draw what they promise and reject mismatched input."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from sclecture.plotting import plot_confusion, plot_embedding, plot_history


def test_embedding_colours_each_label_and_greys_missing():
    emb = np.random.default_rng(0).normal(size=(30, 2))
    labels = np.array(["B"] * 10 + ["T"] * 15 + [None] * 5, dtype=object)
    ax = plot_embedding(emb, labels, title="test")
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names == ["unlabelled", "B", "T"]
    assert ax.get_title() == "test"


def test_embedding_errors():
    with pytest.raises(ValueError, match="one label per row"):
        plot_embedding(np.zeros((5, 2)), ["a"] * 4)
    with pytest.raises(ValueError, match="cells x 2"):
        plot_embedding(np.zeros(5))


def test_history_and_confusion():
    ax = plot_history({"loss": [2, 1], "val_loss": [3, 2]})
    assert len(ax.get_lines()) == 2
    with pytest.raises(KeyError, match="no \\['acc'\\]"):
        plot_history({"loss": [1]}, keys=["acc"])
    ax = plot_confusion(["a", "a", "b"], ["a", "b", "b"])
    img = ax.get_images()[0].get_array()
    np.testing.assert_allclose(img, [[0.5, 0.5], [0, 1]])
