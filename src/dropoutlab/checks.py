"""Argument checks shared by the package: one message format, raised before any work starts.

Each check returns the value in its canonical type or raises ``ValueError`` naming the argument and
what is allowed. (Older modules still carry private copies of these; they move here as they are
next edited, so that a stage's recorded dependencies change only when its own code does.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["integer"]


def integer(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` ≥ ``minimum`` (booleans and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)
