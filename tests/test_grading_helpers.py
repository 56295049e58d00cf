"""The assertion helpers of the test cells: readable failures, immune to monkeypatching."""

import numpy as np
import pytest
import torch

import sclecture
from sclecture import grading
from sclecture.grading import (assert_close, assert_equal, assert_finite, assert_probabilities,
                               assert_raises, assert_shape, fallback, trusted)


def test_assert_close_passes_and_reports_the_worst_difference():
    assert_close(np.array([1.0, 2.0]), [1.0, 2.0 + 1e-9])
    assert_close(torch.tensor([[1.0]]), np.ones((1, 1)))
    with pytest.raises(AssertionError) as e:
        assert_close(np.array([[1.0, 2.0], [3.0, 4.5]]), [[1.0, 2.0], [3.0, 4.0]], name="W")
    msg = str(e.value)
    assert "W: 1 of 4 value(s) differ" in msg and "index [1, 1]" in msg
    assert "expected 4, got 4.5" in msg


def test_assert_close_shape_nan_and_none():
    with pytest.raises(AssertionError, match=r"should have shape \(3,\), got \(2,\)"):
        assert_close([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(AssertionError, match="differ"):
        assert_close([np.nan], [1.0])
    assert_close([np.nan, np.inf], [np.nan, np.inf])
    with pytest.raises(AssertionError, match="forget to `return`"):
        assert_close(None, [1.0])


def test_assert_shape_and_equal():
    assert_shape(np.zeros((3, 4)), (3, None))
    with pytest.raises(AssertionError, match=r"should have shape \(3, any\), got \(4, 3\)"):
        assert_shape(np.zeros((4, 3)), (3, None), name="logits")
    assert_equal(np.array([1, 2, 3]), [1, 2, 3])
    with pytest.raises(AssertionError, match=r"1 value\(s\) of labels are wrong: labels\[2\]: expected 3, got 4"):
        assert_equal([1, 2, 4], [1, 2, 3], name="labels")


def test_assert_probabilities_messages():
    assert_probabilities(np.array([[0.2, 0.8], [0.5, 0.5]]))
    with pytest.raises(AssertionError, match="must sum to 1 over classes; row 1 sums to 1.37"):
        assert_probabilities(np.array([[0.2, 0.8], [0.5, 0.87]]))
    with pytest.raises(AssertionError, match=r"must lie in \[0, 1\]"):
        assert_probabilities([1.5, -0.5])
    assert_probabilities(np.array([[0.2, 0.5], [0.8, 0.5]]), axis=0)


def test_assert_finite_and_raises():
    assert_finite([1.0, 2.0])
    with pytest.raises(AssertionError, match="1 non-finite"):
        assert_finite([1.0, np.inf])

    def bad(x):
        raise ValueError("x must be positive")

    assert_raises(ValueError, bad, -1, match="positive")
    with pytest.raises(AssertionError, match="should mention 'negative'"):
        assert_raises(ValueError, bad, -1, match="negative")
    with pytest.raises(AssertionError, match="returned normally"):
        assert_raises(ValueError, lambda: 1)
    with pytest.raises(AssertionError, match="raised KeyError"):
        assert_raises(ValueError, lambda: {}["a"])


def test_trusted_copies_ignore_monkeypatching(monkeypatch):
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(grading, "assert_close", lambda *a, **k: None)
    G = trusted()
    with pytest.raises(AssertionError):
        G.assert_close([1.0], [2.0])
    assert G.assert_close is not grading.assert_close


def test_trusted_reference_modules_are_fresh(monkeypatch):
    import sclecture.training as tr

    monkeypatch.setattr(tr, "n_epochs", lambda full, quick=2: -1)
    G = trusted("training")
    assert G.training.n_epochs(5, 2) in (5, 2)
    with pytest.raises(ValueError, match="no module 'sclecture.os' in the course package"):
        trusted("os")


def test_fallback_uses_the_reference_until_implemented(capsys):
    def student(x):
        raise NotImplementedError()

    f = fallback(student, np.sqrt)
    assert f(4.0) == 2.0 and f(9.0) == 3.0
    out = capsys.readouterr().out
    assert out.count("not implemented yet") == 1 and "numpy.sqrt" in out

    def broken(x):
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        fallback(broken, np.sqrt)(1.0)
