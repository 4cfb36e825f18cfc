"""Descriptive statistics over seeds: means with t-intervals, Welch differences, Holm correction.

These summarise measurements for figures and notes; verdicts are decided only by
:mod:`dropoutlab.verdicts` from the rules in claims.yaml.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    """Mean of ``n`` values with the half-width of its two-sided confidence interval."""

    mean: float
    half_width: float
    n: int
    level: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def __format__(self, spec: str) -> str:
        spec = spec or ".3g"
        return f"{self.mean:{spec}} ± {self.half_width:{spec}}"


def _values(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{name}: need at least one value")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite, got {arr.tolist()}")
    return arr


def mean_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> Summary:
    """Mean and Student-t confidence half-width (NaN half-width for a single value)."""
    arr = _values(values, "mean_ci")
    n = arr.size
    if n == 1:
        return Summary(float(arr[0]), float("nan"), 1, level)
    sem = arr.std(ddof=1) / np.sqrt(n)
    return Summary(float(arr.mean()), float(stats.t.ppf(0.5 + level / 2, n - 1) * sem), n, level)


summarize = mean_ci


def diff_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[Summary, float]:
    """Mean of ``a − b`` with a Welch confidence interval, and the Welch t-test p-value.

    For one value per group no interval exists: the half-width and p-value are NaN.
    """
    x, y = _values(a, "diff_ci(a)"), _values(b, "diff_ci(b)")
    diff = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return Summary(diff, float("nan"), min(x.size, y.size), level), float("nan")
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = np.sqrt(vx + vy)
    if se == 0:
        return Summary(diff, 0.0, min(x.size, y.size), level), (0.0 if diff != 0 else 1.0)
    dof = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof) * se)
    p_value = float(2 * stats.t.sf(abs(diff) / se, dof))
    return Summary(diff, half, min(x.size, y.size), level), p_value


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (monotone, capped at 1)."""
    p = _values(p_values, "holm")
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, (p.size - rank) * p[idx])
        adjusted[idx] = min(1.0, running)
    return adjusted
