"""What every estimator of the course shares beyond scikit-learn's ``BaseEstimator``.

- :class:`StoreMixin`: ``model.store(adata)`` writes a model's result where scanpy and
  scvi-tools users look for it: a latent space in ``adata.obsm["X_<model>"]``, predicted cell
  types and their confidence in ``adata.obs``.
- :class:`SaveLoadMixin`: ``model.save(path)`` / ``Model.load(path)`` for the torch models:
  hyperparameters, learned attributes (gene names, classes, batches) and weights in one file,
  read back with ``torch.load(weights_only=True)``, which never runs code from the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._validation import check_fitted, is_anndata

FORMAT = "sclecture-model-1"


class StoreMixin:
    """``store(adata)``: the fitted model's result for ``adata``, written into ``adata``.

    Subclasses set ``_store_kind`` to ``"obsm"`` (a latent representation, from
    ``transform``) or ``"obs"`` (a cell-type prediction, from ``predict_proba``), and
    ``_store_key``, the default name (``"vae"`` gives ``adata.obsm["X_vae"]``).
    """

    _store_kind = "obsm"
    _store_key = "model"

    def store(self, adata, key_added: str | None = None, overwrite: bool = False, **kwargs):
        """Write the result for ``adata`` into it and return ``adata``.

        Latent spaces go to ``adata.obsm[key_added]`` (default ``"X_<model>"``); predictions
        to ``adata.obs[key_added]`` (default ``"<model>_prediction"``) with the probability
        of the predicted class in ``adata.obs[key_added + "_confidence"]``. Existing entries
        are kept unless ``overwrite=True``. Other arguments go to ``transform`` / ``predict_proba``.
        """
        if not is_anndata(adata):
            raise TypeError(f"store writes into an AnnData; got {type(adata).__name__}: for a matrix, "
                            "use the result of transform / predict directly")
        check_fitted(self)
        if self._store_kind == "obsm":
            key = key_added or f"X_{self._store_key}"
            targets = {key: adata.obsm}
        else:
            key = key_added or f"{self._store_key}_prediction"
            targets = {key: adata.obs, f"{key}_confidence": adata.obs}
        taken = [k for k, where in targets.items() if k in where]
        if taken and not overwrite:
            raise ValueError(f"adata already holds {taken}: pass key_added='...' for a new name, or overwrite=True")
        if self._store_kind == "obsm":
            adata.obsm[key] = np.asarray(self.transform(adata, **kwargs))
        else:
            proba = self.predict_proba(adata, **kwargs)
            best = np.argmax(proba, axis=1)
            adata.obs[key] = np.asarray(self.classes_)[best]
            adata.obs[key] = adata.obs[key].astype("category")
            adata.obs[f"{key}_confidence"] = proba[np.arange(len(best)), best]
        return adata


def _plain(value):
    """Learned attributes in types that ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _unplain(value):
    if isinstance(value, dict) and "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    if isinstance(value, (list, tuple)):
        return type(value)(_unplain(v) for v in value)
    if isinstance(value, dict):
        return {k: _unplain(v) for k, v in value.items()}
    return value


class SaveLoadMixin:
    """``save(path)`` / ``load(path)`` for an estimator whose learned weights are ``module_``.

    Subclasses list the learned attributes that rebuild the model in ``_saved_attributes``
    (those a fit did not set, such as ``feature_names_in_`` for a bare matrix, are skipped)
    and build an untrained ``module_`` from them in ``_build_module()``.
    """

    _saved_attributes: tuple[str, ...] = ()

    def _build_module(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def save(self, path, overwrite: bool = False) -> Path:
        """Save hyperparameters, learned attributes and weights to ``path`` (one file)."""
        import torch

        check_fitted(self)
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists: choose another path, or pass overwrite=True to replace it")
        state = {
            "format": FORMAT,
            "class": type(self).__name__,
            "params": _plain(self.get_params(deep=False)),
            "attributes": {k: _plain(getattr(self, k)) for k in self._saved_attributes if hasattr(self, k)},
            "weights": {k: v.detach().cpu() for k, v in self.module_.state_dict().items()},
        }
        tmp = path.with_name(f".{path.name}.partial")
        torch.save(state, tmp)
        os.replace(tmp, path)  # a crash never leaves half a model under the final name
        return path

    @classmethod
    def load(cls, path, device: str | None = None):
        """A fitted estimator from a file written by ``save``, on ``device`` (default: CUDA when available)."""
        import torch

        from .training import get_device

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no saved model at {path}: check the path (model.save(path) writes one file)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle.UnpicklingError for anything but tensors and plain data
            raise ValueError(f"{path} is not a model saved by sclecture (or it holds more than weights and plain "
                             f"data, which is refused for safety): {err}") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{path} is not a model saved by sclecture's save()")
        if state["class"] != cls.__name__:
            raise TypeError(f"{path} holds a {state['class']}, not a {cls.__name__}: use {state['class']}.load")
        params = _unplain(state["params"])
        params["device"] = device  # where it lives now (a model saved on CUDA loads on a CPU machine)
        model = cls(**params)
        for k, v in state["attributes"].items():
            setattr(model, k, _unplain(v))
        model.module_ = model._build_module()
        model.module_.load_state_dict(state["weights"])
        model.module_.to(get_device(device)).eval()  # saved on CUDA, loaded on a CPU machine, or back
        return model
