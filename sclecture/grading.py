"""Assertion helpers and the recorder of the test cells of the lessons.

The helpers fail with messages that say what is wrong ("probabilities must sum to 1 over
classes; row 3 sums to 1.37"), never with a bare ``AssertionError``.

Grading does not trust the student's kernel. In a test cell every value that comes from the
student's code goes through a recorder::

    record = sclecture.grading.recorder("linear-sigmoid-test")   # the cell's grade_id
    got = record("sigmoid(0)", lambda: sigmoid(0.0))

Outside grading (JupyterLab, Colab) ``record`` just calls the function and returns its value,
so the checks below it give feedback at once. During grading (environment variable
``SCLECTURE_RECORD`` names a file) it also appends the value, as plain JSON data, to that file;
the grader then replays the test cell in its own process with the recorded values and fresh
references (``tools/verdict.py``), and only that replay decides the points. In the student's
kernel the checks then report nothing, since the replay repeats them.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import os
import sys

__all__ = [
    "assert_close",
    "assert_shape",
    "assert_probabilities",
    "assert_equal",
    "assert_finite",
    "assert_raises",
    "fallback",
    "warnings_as_errors",
    "value_and_grad",
    "recorder",
    "record",
]

_MAX_REPORTED = 3


def _to_list(x):
    """Nested Python lists (or a scalar) from a NumPy array, torch tensor or number."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    if hasattr(x, "toarray"):  # scipy sparse
        x = x.toarray()
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [_to_list(v) for v in x]
    return x


def _shape(v) -> tuple:
    shape = []
    while isinstance(v, list):
        shape.append(len(v))
        if not v:
            break
        v = v[0]
    return tuple(shape)


def _flat(v, prefix=()):
    if isinstance(v, list):
        for i, item in enumerate(v):
            yield from _flat(item, prefix + (i,))
    else:
        yield prefix, v


def _fmt_index(idx: tuple) -> str:
    return "[" + ", ".join(str(i) for i in idx) + "]" if idx else ""


def _as_float(v, name: str, idx: tuple) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, complex):
        raise AssertionError(f"{name}{_fmt_index(idx)}: expected a real number, got complex {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise AssertionError(f"{name}{_fmt_index(idx)}: expected a number, got {v!r}") from None


def _is_nan(a: float) -> bool:
    return a != a


def _abs(a: float) -> float:
    return a if a >= 0 else -a


def _check_not_none(got, name: str):
    if got is None:
        raise AssertionError(
            f"{name} is None: did the function forget to `return` its result?"
        )


def assert_shape(got, expected_shape, name: str = "result") -> None:
    """``got`` has ``expected_shape``; ``None`` in ``expected_shape`` matches any length."""
    _check_not_none(got, name)
    shape = tuple(getattr(got, "shape", None) or _shape(_to_list(got)))
    expected_shape = tuple(expected_shape)
    ok = len(shape) == len(expected_shape) and all(
        e is None or int(s) == int(e) for s, e in zip(shape, expected_shape)
    )
    if not ok:
        want = "(" + ", ".join("any" if e is None else str(e) for e in expected_shape) + ")"
        raise AssertionError(f"{name} should have shape {want}, got {tuple(int(s) for s in shape)}")


def assert_finite(got, name: str = "result") -> None:
    """No NaN or infinite values in ``got``."""
    _check_not_none(got, name)
    bad = [(i, v) for i, v in _flat(_to_list(got)) if _as_float(v, name, i) in (float("inf"), float("-inf")) or _is_nan(_as_float(v, name, i))]
    if bad:
        shown = ", ".join(f"{name}{_fmt_index(i)} = {v}" for i, v in bad[:_MAX_REPORTED])
        raise AssertionError(f"{name} has {len(bad)} non-finite value(s) (NaN or inf): {shown}")


def assert_close(got, expected, *, rtol: float = 1e-6, atol: float = 1e-8, name: str = "result") -> None:
    """``|got - expected| <= atol + rtol * |expected|`` elementwise, shapes equal.

    The message gives the number of mismatches, the worst one with its index, and the
    expected and received values there.
    """
    _check_not_none(got, name)
    g, e = _to_list(got), _to_list(expected)
    gs, es = _shape(g), _shape(e)
    if gs != es:
        raise AssertionError(f"{name} should have shape {es}, got {gs}")
    bad = []
    worst = None
    for (idx, gv), (_, ev) in zip(_flat(g), _flat(e)):
        gv, ev = _as_float(gv, name, idx), _as_float(ev, name, idx)
        if _is_nan(ev) and _is_nan(gv):
            continue
        if _is_nan(gv) or _is_nan(ev):
            diff = float("inf")
        elif gv == ev:  # equal infinities included
            continue
        else:
            diff = _abs(gv - ev)
        if not diff <= atol + rtol * _abs(ev):
            bad.append((idx, gv, ev))
            if worst is None or diff > worst[0]:
                worst = (diff, idx, gv, ev)
    if bad:
        n = sum(1 for _ in _flat(e))
        diff, idx, gv, ev = worst
        where = f" at index {_fmt_index(idx)}" if idx else ""
        msg = (
            f"{name}: {len(bad)} of {n} value(s) differ from the expected ones "
            f"(rtol={rtol:g}, atol={atol:g}); the largest difference is {diff:.4g}{where}: "
            f"expected {ev:.6g}, got {gv:.6g}"
        )
        others = [b for b in bad if b[0] != idx][: _MAX_REPORTED - 1]
        if others:
            msg += "; also " + ", ".join(f"{_fmt_index(i)}: expected {x:.6g}, got {y:.6g}" for i, y, x in others)
        raise AssertionError(msg)


def assert_equal(got, expected, name: str = "result") -> None:
    """Exact equality, for integers, labels, booleans and strings (arrays elementwise)."""
    _check_not_none(got, name)
    g, e = _to_list(got), _to_list(expected)
    if _shape(g) != _shape(e):
        raise AssertionError(f"{name} should have shape {_shape(e)}, got {_shape(g)}")
    bad = [(i, gv, ev) for (i, gv), (_, ev) in zip(_flat(g), _flat(e)) if not gv == ev]
    if bad:
        shown = ", ".join(f"{name}{_fmt_index(i)}: expected {ev!r}, got {gv!r}" for i, gv, ev in bad[:_MAX_REPORTED])
        raise AssertionError(f"{len(bad)} value(s) of {name} are wrong: {shown}")


def assert_probabilities(got, axis: int = -1, *, atol: float = 1e-6, name: str = "probabilities") -> None:
    """Every entry lies in [0, 1] and entries sum to 1 along ``axis`` (a vector or a matrix)."""
    _check_not_none(got, name)
    g = _to_list(got)
    if not isinstance(g, list):
        g = [g]
    for idx, v in _flat(g):
        v = _as_float(v, name, idx)
        if _is_nan(v) or v < -atol or v > 1 + atol:
            raise AssertionError(f"{name} must lie in [0, 1]; {name}{_fmt_index(idx)} = {v:.6g}")
    shape = _shape(g)
    if len(shape) == 1:
        rows = [((), g)]
    elif len(shape) == 2:
        if axis in (-1, 1):
            rows = [((i,), row) for i, row in enumerate(g)]
        else:
            rows = [((j,), [row[j] for row in g]) for j in range(shape[1])]
    else:
        raise AssertionError(f"{name} should be a vector or a matrix, got shape {shape}")
    what = "over classes" if len(shape) == 2 else ""
    for idx, row in rows:
        s = sum(float(v) for v in row)
        if _abs(s - 1.0) > atol * max(1, len(row)):
            label = f"row {idx[0]}" if idx and (axis in (-1, 1)) else (f"column {idx[0]}" if idx else "the vector")
            raise AssertionError(f"{name} must sum to 1 {what}; {label} sums to {s:.6g}".replace("  ", " "))


def assert_raises(exception, func, *args, match: str | None = None, name: str | None = None, **kwargs) -> None:
    """Calling ``func(*args, **kwargs)`` raises ``exception`` (with ``match`` in its message)."""
    label = name or getattr(func, "__name__", "the function")
    try:
        func(*args, **kwargs)
    except exception as err:
        if match is not None and match.lower() not in str(err).lower():
            raise AssertionError(
                f"{label} raised {type(err).__name__} as expected, but its message should mention "
                f"{match!r}; got: {err}"
            ) from None
        return
    except Exception as err:  # noqa: BLE001 - report any other exception type
        raise AssertionError(
            f"{label} should raise {exception.__name__}, but raised {type(err).__name__}: {err}"
        ) from None
    raise AssertionError(f"{label} should raise {exception.__name__} for this input, but returned normally")


def warnings_as_errors(func, *args, **kwargs):
    """``func(*args, **kwargs)`` with ``RuntimeWarning`` (overflow, division by zero) raised as an error."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return func(*args, **kwargs)


def value_and_grad(thunk, wrt):
    """``(thunk(), its gradients with respect to the tensors in wrt)``: a torch loss with its gradients.

    Test cells record both, since a recorded tensor keeps its values but not its autograd graph.
    A result that is not a tensor comes back with ``None`` for the gradients.
    """
    import torch

    value = thunk()
    if not isinstance(value, torch.Tensor) or value.dim() != 0 or not value.requires_grad:
        return value, None
    return value, tuple(torch.autograd.grad(value, list(wrt), allow_unused=True))


def fallback(student_function, reference_function):
    """``student_function``, or ``reference_function`` while the exercise is unsolved.

    Ungraded cells that build on an exercise call the student's function through this
    wrapper: as long as it raises ``NotImplementedError`` the reference is used instead
    (with a note printed once), so the rest of the notebook still runs.
    """
    import functools

    name = getattr(student_function, "__name__", "this function")
    ref_name = f"{reference_function.__module__}.{reference_function.__name__}"
    warned = []

    @functools.wraps(student_function)
    def wrapper(*args, **kwargs):
        try:
            return student_function(*args, **kwargs)
        except NotImplementedError:
            if not warned:
                print(f"note: `{name}` is not implemented yet; using the reference `{ref_name}` instead")
                warned.append(True)
            return reference_function(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------- recording values for grading

RECORD_ENV = "SCLECTURE_RECORD"
MAX_RECORD_BYTES = 16 * 2**20  # one recorded value, as JSON text
MAX_FILE_BYTES = 64 * 2**20  # everything one notebook records
_MAX_DEPTH = 32
_MAX_MESSAGE = 2000
_ARRAY_KINDS = "biufc"  # bool, int, uint, float, complex: nothing that holds objects


class Unrecordable(TypeError):
    """A value that cannot be written as plain data (an object other than numbers and arrays)."""


def _recording() -> bool:
    return bool(os.environ.get(RECORD_ENV))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode(value, depth: int = 0):
    """``value`` as JSON-ready plain data: arrays and tensors as dtype, shape and raw bytes."""
    if depth > _MAX_DEPTH:
        raise Unrecordable("nested more than 32 levels deep")
    if value is None or isinstance(value, (bool, str)):
        return value
    if type(value) is int:
        return value
    if type(value) is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if type(value) is complex:
        return {"$complex": [encode(value.real), encode(value.imag)]}
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        name = str(t.dtype).removeprefix("torch.")
        if name == "bfloat16":
            t = t.float()
        arr = t.resolve_conj().resolve_neg().numpy() if hasattr(t, "resolve_conj") else t.numpy()
        return {"$tensor": name, "shape": list(arr.shape), "dtype": arr.dtype.str,
                "data": _b64(arr.tobytes()), "requires_grad": bool(value.requires_grad)}
    if hasattr(value, "toarray") and hasattr(value, "nnz"):  # scipy sparse
        value = value.toarray()
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, (np.ndarray, np.generic)):
        if isinstance(value, np.ndarray) and type(value) is not np.ndarray:
            value = np.asarray(value)
        if value.dtype.kind not in _ARRAY_KINDS:
            raise Unrecordable(f"a NumPy {'array' if isinstance(value, np.ndarray) else 'scalar'} of dtype {value.dtype}")
        if isinstance(value, np.ndarray):
            return {"$ndarray": value.dtype.str, "shape": list(value.shape),
                    "data": _b64(np.ascontiguousarray(value).tobytes())}
        return {"$scalar": value.dtype.str, "data": _b64(value.tobytes())}
    if isinstance(value, int):  # int subclasses (IntEnum ...): keep the number
        return int(value)
    if isinstance(value, float):
        return encode(float(value), depth)
    if isinstance(value, tuple):
        out = {"$tuple": [encode(v, depth + 1) for v in value]}
        if hasattr(value, "_fields"):
            out["fields"] = [str(f) for f in value._fields]
        return out
    if isinstance(value, list):
        return [encode(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {"$dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    raise Unrecordable(f"an object of type {type(value).__module__}.{type(value).__qualname__}")


def decode(data, depth: int = 0):
    """The inverse of :func:`encode`; raises ``ValueError`` on anything it did not write."""
    import numpy as np

    if depth > _MAX_DEPTH + 1:
        raise ValueError("nested too deep")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v, depth + 1) for v in data]
    if not isinstance(data, dict) or len(data) == 0:
        raise ValueError(f"unexpected item {str(data)[:80]!r}")
    if "$float" in data:
        text = data["$float"]
        if text not in ("nan", "inf", "-inf"):
            raise ValueError(f"unexpected float {text!r}")
        return float(text)
    if "$complex" in data:
        re_, im = (decode(v, depth + 1) for v in data["$complex"])
        return complex(float(re_), float(im))
    if "$tuple" in data:
        items = [decode(v, depth + 1) for v in data["$tuple"]]
        if "fields" in data:
            import collections

            fields = [str(f) for f in data["fields"]]
            return collections.namedtuple("RecordedTuple", fields, rename=True)(*items)
        return tuple(items)
    if "$dict" in data:
        out = {}
        for k, v in data["$dict"]:
            k = decode(k, depth + 1)
            out[tuple(k) if isinstance(k, list) else k] = decode(v, depth + 1)
        return out
    if "$ndarray" in data or "$tensor" in data or "$scalar" in data:
        dtype = np.dtype(data.get("dtype", data.get("$ndarray", data.get("$scalar"))))
        if dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"dtype {dtype} is not allowed")
        raw = base64.b64decode(data["data"], validate=True)
        if "$scalar" in data:
            if len(raw) != dtype.itemsize:
                raise ValueError("scalar of the wrong size")
            return np.frombuffer(raw, dtype=dtype)[0]
        shape = tuple(int(s) for s in data["shape"])
        if any(s < 0 for s in shape) or len(raw) != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"{len(raw)} bytes do not make an array of shape {shape} and dtype {dtype}")
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        if "$ndarray" in data:
            return arr
        import torch

        t = torch.from_numpy(arr)
        name = str(data["$tensor"])
        if name == "bfloat16":
            t = t.to(torch.bfloat16)
        if data.get("requires_grad") and t.is_floating_point():
            t.requires_grad_(True)
        return t
    raise ValueError(f"unexpected item {str(data)[:80]!r}")


def _error_entry(err: BaseException) -> dict:
    bases = [c.__name__ for c in type(err).__mro__ if c not in (object, BaseException)]
    return {"type": type(err).__name__, "bases": bases[:12], "message": str(err)[:_MAX_MESSAGE]}


def _append(path: str, entry: dict) -> None:
    line = json.dumps(entry, allow_nan=False)
    if len(line) > MAX_RECORD_BYTES:
        entry = {k: entry[k] for k in ("cell", "seq", "name", "refs")}
        entry["oversized"] = len(line)
        line = json.dumps(entry)
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    if size + len(line) > MAX_FILE_BYTES:
        entry = {k: entry[k] for k in ("cell", "seq", "name", "refs")}
        entry["oversized"] = len(line)
        line = json.dumps(entry)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def record(name: str, thunk, *, cell: str, seq: int | None = None, keep: bool = False):
    """``thunk()``, and during grading its result (or its exception) appended to the results file.

    ``cell`` is the test cell's grade_id and ``seq`` the position of this value in the cell; a
    cell usually gets both from :func:`recorder`. The value is returned (the exception
    re-raised) unchanged, so the checks that follow give feedback as usual. ``keep=True`` is
    for an object of the student's (a torch module) that later ``record`` calls use: only its
    type is recorded, and the grader's replay gets a stand-in that must not be used elsewhere.
    """
    path = os.environ.get(RECORD_ENV)
    if not path:
        return thunk()
    start = len(_reference_calls)
    entry = {"cell": str(cell), "seq": seq, "name": str(name)[:500]}
    try:
        value = thunk()
    except Exception as err:
        entry["refs"] = sorted(set(_reference_calls[start:]))[:20]
        entry["error"] = _error_entry(err)
        _append(path, entry)
        raise
    entry["refs"] = sorted(set(_reference_calls[start:]))[:20]
    if keep:
        entry["kept"] = f"{type(value).__module__}.{type(value).__qualname__}"[:200]
        _append(path, entry)
        return value
    try:
        entry["value"] = encode(value)
    except Unrecordable as err:
        entry["unrecordable"] = str(err)
    except Exception as err:  # noqa: BLE001 - a value that breaks the encoder is not gradable either
        entry["unrecordable"] = f"a value that cannot be recorded ({type(err).__name__}: {str(err)[:200]})"
    _append(path, entry)
    return value


def recorder(cell: str):
    """``record(name, thunk)`` for the test cell with grade_id ``cell``, numbering its values."""
    counter = iter(range(10**9))

    def record_value(name: str, thunk, keep: bool = False):
        return record(name, thunk, cell=cell, seq=next(counter), keep=keep)

    return record_value


# ---------------------------------------------------------------- canaries of the grading build
# tools/verdict.py builds a copy of the package for grading in which every function of the
# reference modules is wrapped by `canary`: it returns its result with each floating-point
# number shrunk by a random factor between 1 - 1.5e-3 and 1 - 0.5e-3 (probabilities stay in
# [0, 1], signs stay), and notes the call. A student function that calls the course's reference
# therefore computes wrong values during grading, and the grader can name the reference.

_reference_calls: list[str] = []
_canary_state: dict = {}


def _numpy_rng():
    if "np" not in _canary_state:
        import numpy as np

        _canary_state["np"] = np.random.default_rng()
    return _canary_state["np"]


def perturb(value, depth: int = 0):
    """``value`` with every float shrunk by a random relative 0.05 % to 0.15 %.

    (bfloat16 cannot hold so small a change: its values come back unchanged.)"""
    if depth > 8:
        return value
    mod = type(value).__module__
    if mod == "torch" and hasattr(value, "is_floating_point"):
        if not value.is_floating_point() or value.is_sparse:
            return value
        import torch

        if "torch" not in _canary_state:
            _canary_state["torch"] = torch.Generator().manual_seed(int(_numpy_rng().integers(2**62)))
        # factors 1 - 1e-3 (0.5 + u), made in the value's own precision (no float64 copy of a large value)
        exact = value.dtype in (torch.float32, torch.float64)
        u = torch.rand(value.shape, generator=_canary_state["torch"], dtype=value.dtype if exact else torch.float32)
        u.mul_(-1e-3).add_(1 - 5e-4)
        return value * u.to(dtype=value.dtype, device=value.device)
    if mod == "numpy" and hasattr(value, "dtype"):
        if value.dtype.kind != "f":
            return value
        import numpy as np

        if type(value) is np.ndarray and value.ndim and value.dtype in (np.dtype(np.float32), np.dtype(np.float64)):
            factor = _numpy_rng().random(value.shape, dtype=value.dtype)
            factor *= -1e-3
            factor += value.dtype.type(1 - 5e-4)
            return np.multiply(value, factor, out=factor)
        factor = 1 - 1e-3 * (0.5 + _numpy_rng().random(getattr(value, "shape", ())))
        if getattr(value, "ndim", 0):  # np.multiply: for np.matrix, `*` would be a matrix product
            return np.multiply(value, factor).astype(value.dtype)
        return value.dtype.type(value * factor)
    if isinstance(value, float):
        return value * (1 - 1e-3 * (0.5 + float(_numpy_rng().random())))
    if isinstance(value, tuple):
        items = [perturb(v, depth + 1) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [perturb(v, depth + 1) for v in value]
    if type(value) is dict:
        return {k: perturb(v, depth + 1) for k, v in value.items()}
    return value


def perturb_discrete(value):
    """A NumPy array of whole numbers or booleans with about 1 % of its entries (at least one) changed."""
    import numpy as np

    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biu" or value.size == 0:
        return perturb(value)
    out = value.copy()
    flat = out.reshape(-1)
    where = _numpy_rng().choice(flat.size, size=max(1, flat.size // 100), replace=False)
    flat[where] = ~flat[where] if out.dtype.kind == "b" else flat[where] + 1
    return out


def canary(qualname: str, discrete: bool = False):
    """Decorator of the grading build: perturbed results, and the call noted under ``qualname``."""
    change = perturb_discrete if discrete else perturb

    def wrap(func):
        @functools.wraps(func)
        def reference_in_grading(*args, **kwargs):
            if len(_reference_calls) < 100_000:
                _reference_calls.append(qualname)
            return change(func(*args, **kwargs))

        del reference_in_grading.__wrapped__
        return reference_in_grading

    return wrap


def _feedback_only(check):
    """During grading a failed check in the student's kernel raises nothing: the replay decides."""

    @functools.wraps(check)
    def checked(*args, **kwargs):
        if not _recording():
            return check(*args, **kwargs)
        try:
            return check(*args, **kwargs)
        except AssertionError:
            return None

    return checked


assert_shape = _feedback_only(assert_shape)
assert_finite = _feedback_only(assert_finite)
assert_close = _feedback_only(assert_close)
assert_equal = _feedback_only(assert_equal)
assert_probabilities = _feedback_only(assert_probabilities)
assert_raises = _feedback_only(assert_raises)
