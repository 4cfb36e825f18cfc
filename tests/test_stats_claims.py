from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from dropoutlab.analysis import diff_ci, directional_verdict, holm, mean_ci
from dropoutlab.claims import Ledger, load_claims, render_summary, write_report


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


def test_directional_verdict():
    assert directional_verdict(mean_ci([1.0, 1.1, 0.9])) is True
    assert directional_verdict(mean_ci([1.0, -0.5, 0.8])) is None
    assert directional_verdict(mean_ci([-1.0, -0.9])) is False


def test_bad_values():
    with pytest.raises(ValueError, match="finite"):
        mean_ci([1.0, float("nan")])


def test_ledger_and_report(tmp_path):
    ledger = Ledger("01_demo", root=tmp_path)
    ledger.check("X-1", claim="a | b", source="paper", paper="1.0", measured=mean_ci([1.0, 1.2, 1.1]), passed=True)
    ledger.check("X-2", claim="c", source="paper", paper="2", measured=0.5, ci=0.1, n_seeds=3, passed=False)
    ledger.check("X-3", claim="d", source="paper", paper="—", measured="qualitative", passed=None)
    path = ledger.save()
    data = json.loads(path.read_text())
    assert data["claims"]["X-2"]["ci_low"] == pytest.approx(0.4) and data["claims"]["X-2"]["passed"] == 0
    assert [r["verdict"] for r in load_claims(tmp_path)] == ["reproduced", "not reproduced", "inconclusive"]
    report = write_report(tmp_path).read_text()
    assert "a \\| b" in report and "1 reproduced, 1 not reproduced, 1 inconclusive" in report
    assert "01_demo" in (tmp_path / "reports" / "index.html").read_text()
    summary = render_summary(load_claims(tmp_path)).splitlines()
    assert summary[0] == "3 claims: 1 reproduced, 1 not reproduced, 1 inconclusive"
    assert summary[1] == "01_demo"
    assert summary[3].split() == ["X-2", "not", "reproduced", "0.5", "±", "0.1"]


def test_ledger_rejects_bad_verdict(tmp_path):
    with pytest.raises(ValueError, match="passed"):
        Ledger("x", root=tmp_path).check("A", "c", "s", "p", 1.0, passed="yes")


def test_corrupt_metrics_file(tmp_path):
    (tmp_path / "reports" / "metrics").mkdir(parents=True)
    (tmp_path / "reports" / "metrics" / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_claims(tmp_path)
