"""Argument checks shared by the package: one message format, raised before any work starts.

Each check returns the value in its canonical type or raises ``ValueError`` naming the argument and
what is allowed. ``name`` is the argument as the caller should read it; a function that prefixes its
own name passes ``"owner: argument"``.

A list argument is a list, tuple, range or NumPy array; a single value alone stands for a list of
one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["choice", "choices", "finite", "integer", "integers", "is_integer", "is_real", "keep_probability",
           "optional_integer", "positive", "positives", "probabilities", "probability", "seed_list", "settle"]

_LISTS = (list, tuple, range, np.ndarray)


def is_integer(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy integer (booleans are not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy real number (booleans are not; NaN and ±inf are)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _items(values: Any) -> list[Any]:
    return list(values) if isinstance(values, _LISTS) else [values]


def integer(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` ≥ ``minimum`` (booleans and floats are refused)."""
    if not is_integer(value) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def optional_integer(value: Any, name: str, minimum: int = 1) -> int | None:
    """``None`` (for "all" or "not set"), or ``value`` as an ``int`` ≥ ``minimum``."""
    return None if value is None else integer(value, name, minimum)


def integers(values: Any, name: str, minimum: int = 1, *, distinct: bool = False) -> list[int]:
    """``values`` as a non-empty list of ``int`` ≥ ``minimum`` (``distinct``: no value twice)."""
    items = _items(values)
    if (not items or not all(is_integer(v) and v >= minimum for v in items)
            or (distinct and len(set(items)) != len(items))):
        raise ValueError(f"{name} must be a non-empty list of {'distinct ' if distinct else ''}integers ≥ {minimum}, "
                         f"got {values!r}")
    return [int(v) for v in items]


def seed_list(values: Any, name: str = "seeds") -> list[int]:
    """Random seeds: a non-empty list of distinct integers ≥ 0."""
    return integers(values, name, 0, distinct=True)


def _interval(zero: bool, one: bool) -> str:
    return f"{'[' if zero else '('}0, 1{']' if one else ')'}"


def probability(value: Any, name: str, *, zero: bool = True, one: bool = False,
                what: str = "a drop probability") -> float:
    """``value`` as a ``float`` in [0, 1) — ``zero=False`` leaves 0 out, ``one=True`` lets 1 in."""
    if (not is_real(value) or not 0.0 <= value <= 1.0 or (value == 0.0 and not zero)
            or (value == 1.0 and not one)):
        raise ValueError(f"{name} must be {what} in {_interval(zero, one)}, got {value!r}")
    return float(value)


def keep_probability(value: Any, name: str) -> float:
    """``value`` as a keep (retain) probability in (0, 1]."""
    return probability(value, name, zero=False, one=True, what="a keep (retain) probability")


def probabilities(values: Any, name: str, *, zero: bool = True, one: bool = False, distinct: bool = False,
                  what: str = "drop probabilities") -> list[float]:
    """``values`` as a non-empty list of probabilities (the interval as in :func:`probability`)."""
    items = _items(values)
    if (not items or not all(is_real(v) and 0.0 <= v <= 1.0 and (zero or v != 0.0) and (one or v != 1.0)
                             for v in items)
            or (distinct and len(set(items)) != len(items))):
        raise ValueError(f"{name} must be a non-empty list of {'distinct ' if distinct else ''}{what} in "
                         f"{_interval(zero, one)}, got {values!r}")
    return [float(v) for v in items]


def finite(value: Any, name: str) -> float:
    """``value`` as a finite ``float``."""
    if not is_real(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def positive(value: Any, name: str, *, zero: bool = False) -> float:
    """``value`` as a finite ``float`` > 0 (``zero=True``: ≥ 0)."""
    if not is_real(value) or not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be a finite number {'≥' if zero else '>'} 0, got {value!r}")
    return float(value)


def positives(values: Any, name: str) -> list[float]:
    """``values`` as a non-empty list of finite ``float`` > 0."""
    items = _items(values)
    if not items or not all(is_real(v) and math.isfinite(v) and v > 0 for v in items):
        raise ValueError(f"{name} must be a non-empty list of finite numbers > 0, got {values!r}")
    return [float(v) for v in items]


def choice(value: Any, allowed: Sequence[Any], name: str) -> Any:
    """``value`` if it is one of ``allowed``."""
    if isinstance(value, (list, dict, set)) or value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def choices(values: Any, allowed: Sequence[Any], name: str) -> tuple[Any, ...]:
    """``values`` as a non-empty tuple of items of ``allowed`` (a single name stands for a list of one)."""
    items = [values] if isinstance(values, str) else _items(values)
    if not items or any(isinstance(v, (list, dict, set)) or v not in allowed for v in items):
        raise ValueError(f"{name} must be a non-empty list of names from {tuple(allowed)}, got {values!r}")
    return tuple(items)


def settle(config: Any, **values: Any) -> None:
    """Store checked, canonical field values on a frozen dataclass, from its ``__post_init__``.

    A study's settings are validated once, when its config is built; ``settle`` writes the
    canonical forms (tuples for lists, floats for numbers) that the checks above return.
    """
    for key, value in values.items():
        object.__setattr__(config, key, value)
