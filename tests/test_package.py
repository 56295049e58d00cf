"""The package imports, exports its version and seeds, and picks a device."""

import re

import numpy as np
import pytest
import torch

import sclecture


def test_version_and_exports():
    assert re.fullmatch(r"\d+\.\d+\.\d+", sclecture.__version__)
    from importlib.metadata import version

    assert version("sclecture") == sclecture.__version__, "pyproject.toml and sclecture.__version__ disagree"
    for name in ["set_seed", "get_device", "quick_mode"]:
        assert callable(getattr(sclecture, name))


def test_unknown_attribute_is_a_clear_error():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        sclecture.nonexistent


def test_set_seed_repeats_numpy_and_torch():
    sclecture.set_seed(123)
    a = (np.random.rand(4), torch.rand(4), torch.randn(2, 2))
    sclecture.set_seed(123)
    b = (np.random.rand(4), torch.rand(4), torch.randn(2, 2))
    assert np.array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    sclecture.set_seed(124)
    assert not np.array_equal(np.random.rand(4), a[0])


def test_set_seed_rejects_non_integers():
    with pytest.raises(TypeError, match="integer"):
        sclecture.set_seed(1.5)


def test_device_choice(monkeypatch):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert sclecture.get_device().type == expected
    assert sclecture.get_device("cpu").type == "cpu"
    monkeypatch.setenv("SCLECTURE_DEVICE", "cpu")
    assert sclecture.get_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            sclecture.get_device("cuda")


def test_versions_report():
    v = sclecture.versions()
    assert v["sclecture"] == sclecture.__version__
    assert v["torch"].startswith(torch.__version__.split("+")[0])
    assert v["device"].split()[0] in {"cpu", "cuda"}
    from sclecture import _native

    buildable = _native._unsupported() is None and _native._compiler() is not None
    assert v["scVI on CPU"] == "compiled loops" if buildable else v["scVI on CPU"].startswith("torch code: ")


def test_quick_mode(monkeypatch):
    from sclecture.training import quick_epochs

    monkeypatch.delenv("SCLECTURE_QUICK", raising=False)
    assert not sclecture.quick_mode() and quick_epochs(50, 2) == 50
    monkeypatch.setenv("SCLECTURE_QUICK", "1")
    assert sclecture.quick_mode() and quick_epochs(50, 2) == 2


def test_every_listed_submodule_imports():
    import importlib

    for name in sorted(sclecture._SUBMODULES):
        assert importlib.import_module(f"sclecture.{name}") is getattr(sclecture, name)


def _estimators():
    import importlib
    import inspect

    found = []
    for name in ["linear", "mlp", "actinn", "factor", "vae", "scvi"]:
        module = importlib.import_module(f"sclecture.{name}")
        found += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                  if cls.__module__ == module.__name__ and hasattr(cls, "fit") and not issubclass(cls, torch.nn.Module)]
    return found


@pytest.mark.parametrize("cls", _estimators(), ids=lambda c: c.__name__)
def test_estimators_follow_scikit_learn(cls):
    """BaseEstimator subclasses whose __init__ only stores its arguments, so clone works;
    unfitted, every method that needs a fit raises scikit-learn's NotFittedError."""
    from sklearn.base import BaseEstimator, clone
    from sklearn.exceptions import NotFittedError

    assert issubclass(cls, BaseEstimator), f"{cls.__name__} does not subclass sklearn.base.BaseEstimator"
    est = cls()
    assert vars(est) == est.get_params(deep=False), f"{cls.__name__}.__init__ does more than store its arguments"
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    for method in ["predict", "predict_proba", "transform", "get_latent_representation"]:
        if hasattr(est, method):
            with pytest.raises(NotFittedError, match=f"{cls.__name__} is not fitted yet"):
                getattr(est, method)(np.ones((3, 4)))
