"""The ledger: measurements in, the registry's rule decides, one metrics file per notebook and profile."""

from __future__ import annotations

import json

import pytest

from dropoutlab.claims import Ledger
from dropoutlab.registry import Registry

ENTRY = dict(notebook="01_demo", statement="s", source="paper", paper_value="1.0", measure="a − b", why="w",
             unit="pp", replication="seeds", profiles=["quick"], planning={"n": 3, "effect": 1.0})
REGISTRY = Registry.from_entries([
    {**ENTRY, "id": "X-1", "kind": "directional", "margin": 0, "side": "greater", "design": "paired"},
    {**ENTRY, "id": "X-2", "kind": "check", "tolerance": 1e-10, "design": "exact"},
    {**ENTRY, "id": "X-3", "kind": "directional", "margin": 0, "side": "greater", "design": "paired",
     "profiles": ["paper"]},
    {**ENTRY, "id": "Y-1", "notebook": "02_other", "kind": "check", "tolerance": 0.1, "design": "exact"},
])


def test_record_decides_by_the_registry_and_saves_per_profile(tmp_path):
    ledger = Ledger("01_demo", "quick", root=tmp_path, registry=REGISTRY)
    assert ledger.record("X-1", a=[2.0, 3.0, 4.0, 5.0], b=[1.0, 2.1, 2.9, 4.0]).verdict == "reproduced"
    assert ledger.record("X-2", value=1e-3).verdict == "not reproduced"
    path = ledger.save()
    assert path == tmp_path / "reports" / "quick" / "metrics" / "01_demo.json"
    data = json.loads(path.read_text())
    assert data["profile"] == "quick" and set(data["claims"]) == {"X-1", "X-2"}
    x1 = data["claims"]["X-1"]
    assert x1["n"] == 4 and x1["measurements"]["a"] == [2.0, 3.0, 4.0, 5.0] and x1["ci_low"] > 0
    assert "ttest_rel" in x1["test"] or "paired" in x1["test"]
    assert list(ledger.table()["id"]) == ["X-1", "X-2"]


def test_saving_is_refused_while_a_registered_claim_is_missing(tmp_path):
    ledger = Ledger("01_demo", "quick", root=tmp_path, registry=REGISTRY)
    ledger.record("X-1", a=[2.0, 3.0, 4.0], b=[1.0, 2.1, 2.9])
    with pytest.raises(ValueError, match="X-2"):
        ledger.save()
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("cid, message", [("NOPE-1", "NOPE-1"), ("Y-1", "02_other")])
def test_unknown_or_foreign_claim_is_refused(tmp_path, cid, message):
    with pytest.raises(ValueError, match=message):
        Ledger("01_demo", "quick", root=tmp_path, registry=REGISTRY).record(cid, value=0.0)


def test_paired_arrays_of_unequal_length_name_the_claim(tmp_path):
    with pytest.raises(ValueError, match="X-1"):
        Ledger("01_demo", "quick", root=tmp_path, registry=REGISTRY).record("X-1", a=[1.0, 2.0, 3.0], b=[1.0, 2.0])


def test_recorded_twice_and_bad_profile(tmp_path):
    ledger = Ledger("01_demo", "quick", root=tmp_path, registry=REGISTRY)
    ledger.record("X-2", value=0.0)
    with pytest.raises(ValueError, match="twice"):
        ledger.record("X-2", value=0.0)
    with pytest.raises(ValueError, match="profile"):
        Ledger("01_demo", "fast", root=tmp_path, registry=REGISTRY)


def test_a_training_part_records_its_share_without_judging(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPOUTLAB_PART", "seed-3")
    ledger = Ledger("01_demo", "quick", root=tmp_path, registry=REGISTRY)
    decision = ledger.record("X-1", a=[2.0], b=[1.0], note="one seed")  # one run: no interval, no verdict
    assert decision.verdict == "inconclusive" and decision.p is None and "training part seed-3" in decision.reason
    assert decision.measurements == {"a": [2.0], "b": [1.0]} and decision.note == "one seed"
    ledger.record("X-2", value=1.0)
    saved = json.loads(ledger.save().read_text())
    assert {c["verdict"] for c in saved["claims"].values()} == {"inconclusive"}
    with pytest.raises(ValueError, match="X-1: recorded twice"):
        ledger.record("X-1", a=[2.0], b=[1.0])
