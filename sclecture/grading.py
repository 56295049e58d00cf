"""Assertion helpers for the test cells of the lessons.

They fail with messages that say what is wrong ("probabilities must sum to 1 over
classes; row 3 sums to 1.37"), never with a bare ``AssertionError``.

Comparisons are done in plain Python on ``ndarray.tolist()`` output, not with NumPy
functions that a submission could replace (``numpy.allclose = lambda *a: True``).
Hidden tests call :func:`trusted`, which loads fresh copies of these helpers and of the
reference modules from their files, so monkeypatching ``sclecture.grading`` or
``sclecture.linear`` inside a notebook changes nothing for the grader.
"""

from __future__ import annotations

import importlib.util
import os
import types

__all__ = [
    "assert_close",
    "assert_shape",
    "assert_probabilities",
    "assert_equal",
    "assert_finite",
    "assert_raises",
    "fallback",
    "trusted",
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


def _load_fresh(module_name: str) -> types.ModuleType:
    """Execute ``module_name``'s source file into a new module object, bypassing sys.modules.

    A notebook can replace attributes of an imported module; a fresh copy from the file
    on disk is untouched by that.
    """
    parent, _, leaf = module_name.rpartition(".")
    here = os.path.dirname(os.path.abspath(__file__))
    if parent != "sclecture":
        raise ValueError(f"trusted references are the course's own modules, got {module_name!r}")
    path = os.path.join(here, leaf + ".py")
    if not os.path.exists(path):
        raise ValueError(f"no module {module_name!r} in the course package")
    spec = importlib.util.spec_from_file_location(f"{module_name}", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = parent  # relative imports resolve inside the package
    spec.loader.exec_module(module)
    return module


def trusted(*reference_modules: str) -> types.SimpleNamespace:
    """Fresh, unpatched copies of these helpers and of the named reference modules.

    ``G = trusted("linear")`` gives ``G.assert_close`` ... and ``G.linear`` (a fresh
    ``sclecture.linear``). Hidden tests use it so that a submission that replaces the
    checks or the references earns nothing from it.
    """
    fresh = _load_fresh("sclecture.grading")
    ns = types.SimpleNamespace(**{name: getattr(fresh, name) for name in __all__ if name != "trusted"})
    for name in reference_modules:
        setattr(ns, name.rpartition(".")[2], _load_fresh(name if name.startswith("sclecture.") else f"sclecture.{name}"))
    return ns
