"""sclecture: reference implementations for the course "Machine learning for scRNA-seq analysis".

One module per lesson topic (``linear``, ``mlp``, ``actinn``, ``factor``, ``vae``, ``scvi``,
``distributions``) and a few shared ones (``datasets``, ``preprocessing``, ``training``,
``plotting``, ``grading``, ``base``; input checks live in ``_validation``). Submodules are imported on first use, so ``import sclecture``
stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["__version__", "set_seed", "get_device", "quick_mode", "versions"]

_SUBMODULES = {
    "actinn", "datasets", "diagrams", "distributions", "factor", "grading", "linear", "mlp",
    "plotting", "preprocessing", "scvi", "training", "vae", "base",
}


_FROM_TRAINING = {"set_seed", "get_device", "quick_mode"}  # torch is imported on first use


def __getattr__(name: str):
    if name in _FROM_TRAINING:
        return getattr(importlib.import_module(".training", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'sclecture' has no attribute {name!r}")


def versions() -> dict[str, str]:
    """Versions of the course and of the packages it stands on, and the device in use."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "sclecture": __version__}
    for pkg in ["numpy", "scipy", "pandas", "torch", "scikit-learn", "anndata", "matplotlib", "nbgrader"]:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    import torch

    from .training import get_device

    dev = get_device()
    out["device"] = f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "cpu"
    from ._native import status

    out["scVI on CPU"] = status()  # its likelihood in compiled loops, or in torch code (and why)
    return out
