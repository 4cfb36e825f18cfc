"""Descriptive summaries over seeds (mean ± t-interval, Welch difference, Holm)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dropoutlab.analysis import diff_ci, holm, mean_ci


def test_mean_ci_matches_scipy():
    values = [1.0, 2.0, 4.0, 3.5]
    s = mean_ci(values)
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (s.low, s.high) == pytest.approx((low, high))


def test_diff_ci_matches_welch():
    a, b = [2.0, 2.5, 3.0, 2.2], [1.0, 1.4, 0.9]
    d, p = diff_ci(a, b)
    assert p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert d.mean == pytest.approx(np.mean(a) - np.mean(b))


def test_holm():
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])


def test_bad_values():
    with pytest.raises(ValueError, match="finite"):
        mean_ci([1.0, float("nan")])
