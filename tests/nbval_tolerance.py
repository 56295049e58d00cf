"""nbval with numeric tolerance: printed numbers are compared as numbers, the text around them exactly.

A checked cell (``# NBVAL_CHECK_OUTPUT``) may declare how far its printed numbers may move:

    # NBVAL_CHECK_OUTPUT
    # NBVAL_TOLERANCE abs=0.03 rel=0.01

Every number the cell prints (in stream text and ``text/plain``) then passes when
``|new - stored| <= abs + rel * |stored|``; the words, the order and the count of numbers must
be the same (runs of spaces may differ, since table columns widen with a wider number). Set the
tolerance from measurement: ``benchmarks/bench_notebook_spread.py`` reruns the checked cells
under other seeds, thread counts and CPU code paths and reports how far each number moved.

A cell without a declaration is deterministic: integers must match exactly and a decimal may
differ by one unit of its last printed digit (the same value, rounded on either side of a
boundary, e.g. 0.8895 printed as 0.889 or 0.890; so is -0.000 against 0.000).
"""

from __future__ import annotations

import copy
import math
import re

import pytest

TOLERANCE = re.compile(r"^\s*#\s*NBVAL_TOLERANCE\b(?P<opts>.*)$", re.MULTILINE)
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?(?![\w])")


def declared_tolerance(source: str) -> tuple[float, float] | None:
    """(abs, rel) from the cell's ``# NBVAL_TOLERANCE`` line, or None."""
    m = TOLERANCE.search(source)
    if m is None:
        return None
    opts = {"abs": 0.0, "rel": 0.0}
    for token in m.group("opts").split():
        key, _, value = token.partition("=")
        if key not in opts or not value:
            raise ValueError(f"# NBVAL_TOLERANCE takes abs=... and rel=...; got {token!r}")
        opts[key] = float(value)
    return opts["abs"], opts["rel"]


def _value(token: str) -> float:
    return float(token.replace(",", ""))


def _last_digit(token: str) -> float:
    """One unit of the last printed digit of a decimal (0 for an integer)."""
    mantissa, _, exponent = token.lower().partition("e")
    if "." not in mantissa:
        return 0.0
    decimals = len(mantissa.split(".", 1)[1])
    return 10.0 ** (-decimals + (int(exponent) if exponent else 0))


def _numbers_agree(new: str, stored: str, tol: tuple[float, float] | None) -> bool:
    a, b = _value(new), _value(stored)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if tol is None:
        allowed = max(_last_digit(new), _last_digit(stored)) * (1 + 1e-9)
    else:
        allowed = tol[0] + tol[1] * abs(b)
    return abs(a - b) <= allowed


def same_text(new: str, stored: str, tol: tuple[float, float] | None) -> bool:
    """Whether ``new`` equals ``stored`` up to the numbers' tolerance and runs of spaces."""
    if new == stored:
        return True
    words = lambda s: [re.sub(r"[ \t]+", " ", part).strip(" \t") for part in NUMBER.split(s)]
    new_nums, stored_nums = NUMBER.findall(new), NUMBER.findall(stored)
    if len(new_nums) != len(stored_nums) or words(new) != words(stored):
        return False
    return all(_numbers_agree(n, s, tol) for n, s in zip(new_nums, stored_nums))


def _text_fields(output):
    """(container, key) of each text field of an output that nbval compares."""
    if output.get("output_type") == "stream":
        yield output, "text"
    for mime in ("text/plain",):
        if mime in output.get("data", {}):
            yield output["data"], mime


def align_outputs(test: list, ref: list, tol: tuple[float, float] | None) -> list:
    """A copy of ``test`` in which each text that agrees with its stored twin is replaced by it."""
    test = copy.deepcopy(test)
    for new, stored in zip(test, ref):
        if new.get("output_type") != stored.get("output_type") or new.get("name") != stored.get("name"):
            continue
        for (cn, key), (cs, key_s) in zip(_text_fields(new), _text_fields(stored)):
            if key == key_s and isinstance(cn[key], str) and isinstance(cs[key_s], str) \
                    and same_text(cn[key], cs[key_s], tol):
                cn[key] = cs[key_s]
    return test


def _merge_streams(outputs: list) -> list:
    """Consecutive stream outputs of one name as one (how the kernel splits prints is not content)."""
    merged = []
    for out in outputs:
        if (merged and out.get("output_type") == "stream" and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1] = copy.deepcopy(merged[-1])
            merged[-1]["text"] += out["text"]
        else:
            merged.append(out)
    return merged


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval not installed: nothing to extend
        return
    if getattr(IPyNbCell.compare_outputs, "_tolerant", False):
        return
    original = IPyNbCell.compare_outputs

    def compare_outputs(self, test, ref, skip_compare=None):
        tol = declared_tolerance(self.cell.source)
        test, ref = _merge_streams(test), _merge_streams(ref)
        return original(self, align_outputs(test, ref, tol), ref, skip_compare)

    compare_outputs._tolerant = True
    IPyNbCell.compare_outputs = compare_outputs
