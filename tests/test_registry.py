"""The claims registry: loading claims.yaml and validating every entry once, with errors naming the claim."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import yaml

from dropoutlab.registry import KINDS, History, Planning, Registry, Rule, load_registry

REPO_CLAIMS = Path(__file__).resolve().parents[1] / "claims.yaml"

ENTRY = dict(id="SR-T2", notebook="01_dropout_vs_none",
             statement="Dropout lowers the test error of a permutation-invariant MNIST MLP",
             source="Srivastava et al. 2014, JMLR 15, Table 2", paper_value="1.60 % → 1.25 %", kind="directional",
             measure="test error (%) without dropout − with dropout", unit="pp", margin=0, side="greater",
             design="paired", replication="independent training runs (seeds)", family=None,
             profiles=["quick", "full", "paper"], planning={"n": 3, "effect": 1.0}, figure="learning_curves",
             section="Claim check", why="a direction, paired by seed", exploratory=False, history=[])

OTHERS = [
    dict(ENTRY, id="EQ", kind="equivalence", margin=0.3, side=None, family="F"),
    dict(ENTRY, id="SH", notebook="02_other", kind="share", margin=0.7, design=None, planning={"n": 20, "effect": 1}),
    dict(ENTRY, id="RK", notebook="02_other", kind="ranking", margin=0, design="independent",
         reference={"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0}),
    dict(ENTRY, id="OM", kind="omnibus", margin=0.5, side=None, design="independent", family="F",
         planning={"n": 5, "effect": 1, "groups": 10}),
    dict(ENTRY, id="CK", kind="check", margin=None, side=None, design="exact", tolerance=1e-10, planning=None),
    dict(ENTRY, id="ALL", kind="all", margin=None, side=None, design=None, precondition="rates have plateaued",
         history=[{"date": "2026-11-30", "old": "margin 0.5", "reason": "typo"}],
         parts={"inside": dict(kind="threshold", margin=1, side="less", design="one-sample", measure="m", unit="%"),
                "exact": dict(kind="check", tolerance="from-data", measure="residual")}),
]


def write(tmp_path: Path, entries: list[dict], **top) -> Path:
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "alpha": 0.025, "claims": entries, **top}, allow_unicode=True,
                                   sort_keys=False), encoding="utf-8")
    return path


def test_loads_a_small_registry(tmp_path):
    reg = load_registry(write(tmp_path, [ENTRY, *OTHERS]))
    assert list(reg.claims) == ["SR-T2", "EQ", "SH", "RK", "OM", "CK", "ALL"] and len(reg) == 7
    assert reg.alpha == 0.025
    rule = reg.get("SR-T2")
    assert isinstance(rule, Rule) and rule.margin == 0.0 and rule.planning == Planning(3, 1.0)
    assert rule.profiles == ("quick", "full", "paper") and rule.unit == "pp" and rule.figure == "learning_curves"
    assert reg.get("SH").design == "one-sample" and reg.get("RK").reference["c"] == 3.0
    assert reg.get("CK").tolerance == 1e-10 and reg.get("OM").planning.groups == 10
    composite = reg.get("ALL")
    assert list(composite.parts) == ["inside", "exact"] and composite.history == (History("2026-11-30", "margin 0.5",
                                                                                          "typo"),)
    part = reg.get("ALL/inside")
    assert part.id == "ALL/inside" and part.notebook == "01_dropout_vs_none" and part.unit == "%"
    assert part.planning == Planning(3, 1.0) and part.family is None and part.precondition is None
    assert reg.get("ALL/exact").tolerance == "from-data"
    assert [r.id for r in reg.for_notebook("02_other")] == ["SH", "RK"] and reg.for_notebook("nope") == []
    with pytest.raises(AttributeError):
        rule.margin = 1  # frozen


def test_default_path_is_the_repository_root(tmp_path, monkeypatch):
    write(tmp_path, [ENTRY])
    monkeypatch.setenv("DROPOUTLAB_ROOT", str(tmp_path))
    assert list(load_registry().claims) == ["SR-T2"]


def test_from_entries_and_unknown_ids():
    reg = Registry.from_entries([ENTRY], alpha=0.05)
    assert reg.alpha == 0.05 and reg.get("SR-T2").alpha == 0.05
    with pytest.raises(ValueError, match=r"^SR-T3: no such claim .*close: SR-T2.*notebook"):
        reg.get("SR-T3")
    with pytest.raises(ValueError, match=r"^SR-T2/x: no such claim"):
        reg.get("SR-T2/x")


def without(entry: dict, key: str) -> dict:
    return {k: v for k, v in entry.items() if k != key}


BAD = [
    (dict(ENTRY, kind="directonal"), "unknown kind"),
    (without(ENTRY, "margin"), "margin is required"),
    (dict(ENTRY, margin="zero"), "margin must be a finite number"),
    (dict(ENTRY, kind="equivalence", side=None, margin=0), "margin δ > 0"),
    (dict(ENTRY, kind="omnibus", side=None, design="independent", margin=-1,
          planning={"n": 3, "effect": 1, "groups": 3}), "margin δ > 0"),
    (dict(ENTRY, kind="share", design=None, margin=1.2), "strictly between 0 and 1"),
    (dict(ENTRY, side="more"), "side must be one of greater, less"),
    (dict(ENTRY, kind="equivalence", margin=1), "side is not used"),
    (dict(ENTRY, design="crossed"), "design must be one of paired, independent, one-sample"),
    (dict(ENTRY, kind="share", margin=0.5, design="paired"), "design must be one of one-sample"),
    (dict(ENTRY, statement=""), "statement is required"),
    (without(ENTRY, "source"), "source is required"),
    (without(ENTRY, "why"), "why is required"),
    (without(ENTRY, "notebook"), "notebook is required"),
    (dict(ENTRY, paper_value=None), "paper_value is required"),
    (dict(ENTRY, measure="  "), "measure is required"),
    (dict(ENTRY, profiles=["quick", "huge"]), "profiles must be a non-empty list"),
    (dict(ENTRY, profiles=[]), "profiles must be a non-empty list"),
    (dict(ENTRY, planning={"n": 1, "effect": 1}), "planning.n must be an integer ≥ 2"),
    (dict(ENTRY, planning={"n": 2.5, "effect": 1}), "planning.n must be an integer ≥ 2"),
    (dict(ENTRY, planning={"n": 3, "effect": 0}), "planning.effect must be > 0"),
    (without(ENTRY, "planning"), "planning: {n: integer ≥ 2"),
    (dict(ENTRY, kind="omnibus", side=None, margin=1, design="independent"), "planning.groups"),
    (dict(ENTRY, kind="ranking", design="independent"), "a ranking needs reference"),
    (dict(ENTRY, kind="ranking", design="independent", reference={"a": 1, "b": 2, "c": 3}), "≥ 5 items"),
    (dict(ENTRY, kind="ranking", design="independent", margin=0.5,
          reference={"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}), "margin must be 0"),
    (dict(ENTRY, kind="ranking", design="independent", reference=dict.fromkeys("abcde", 1.0)), "all equal"),
    (dict(ENTRY, kind="check", margin=None, side=None, design="exact"), "a check needs tolerance"),
    (dict(ENTRY, kind="check", margin=None, side=None, design="exact", tolerance="loose"), "tolerance"),
    (dict(ENTRY, kind="check", margin=None, side=None, design="paired", tolerance=1e-6), "one of exact"),
    (dict(ENTRY, tolerance=1e-3), "tolerance is only used by check"),
    (dict(ENTRY, kind="all", margin=None, side=None, design=None), "needs parts"),
    (dict(ENTRY, kind="all", margin=None, side=None, design=None, parts={}), "needs parts"),
    (dict(ENTRY, kind="all", margin=None, side=None, design=None, parts={"x": {"kind": "all", "measure": "m"}}),
     "cannot be composites"),
    (dict(ENTRY, kind="all", parts={"x": {"kind": "check", "tolerance": 1, "measure": "m"}}),
     "keeps margin, side, design"),
    (dict(ENTRY, parts={"x": {"kind": "check", "tolerance": 1, "measure": "m"}}), "parts are only used by"),
    (dict(ENTRY, history=[{"date": "2026-11-30", "old": "margin 0.5"}]), "date, old and reason"),
    (dict(ENTRY, history="changed"), "history must be a list"),
    (dict(ENTRY, history=[{"date": datetime.date(2026, 11, 30), "old": "o", "reason": "r"}]),
     "must be a quoted string"),
    (dict(ENTRY, tolerence=1e-3), "unknown keys tolerence"),
    (dict(ENTRY, exploratory="yes"), "exploratory must be true or false"),
    (dict(ENTRY, departures={"smoke": "digits"}), "departures must map profiles the claim is judged in"),
    (dict(ENTRY, departures={"full": ""}), "departures must map"),
    (dict(ENTRY, departures="fewer epochs"), "departures must map"),
    (dict(ENTRY, family=""), "family must be a non-empty text"),
    (dict(ENTRY, kind="check", margin=None, side=None, design="exact", tolerance=1e-6, family="F"),
     "cannot be in a Holm family"),
]


@pytest.mark.parametrize("entry, words", BAD)
def test_each_validation_error_names_the_claim(tmp_path, entry, words):
    with pytest.raises(ValueError, match=r"^SR-T2\b") as err:
        load_registry(write(tmp_path, [entry]))
    assert words in str(err.value)


def test_part_errors_name_the_part():
    composite = dict(ENTRY, kind="all", margin=None, side=None, design=None,
                     parts={"inside": {"kind": "threshold", "side": "less", "design": "one-sample", "measure": "m"}})
    with pytest.raises(ValueError, match=r"^SR-T2/inside: margin is required"):
        Registry.from_entries([composite])
    composite["parts"]["inside"].update(margin=1, colour="red")
    with pytest.raises(ValueError, match=r"^SR-T2/inside: unknown keys colour"):
        Registry.from_entries([composite])


def test_registry_level_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^SR-T2: duplicate claim id"):
        load_registry(write(tmp_path, [ENTRY, ENTRY]))
    split = [dict(ENTRY, family="F"), dict(ENTRY, id="X", notebook="other", family="F")]
    with pytest.raises(ValueError, match=r"^SR-T2, X: Holm family 'F' spans notebooks"):
        load_registry(write(tmp_path, split))
    with pytest.raises(ValueError, match="unsupported version"):
        load_registry(write(tmp_path, [ENTRY], version=2))
    with pytest.raises(ValueError, match="alpha must be a number"):
        load_registry(write(tmp_path, [ENTRY], alpha=0.7))
    with pytest.raises(ValueError, match="exactly version, alpha and claims"):
        (tmp_path / "claims.yaml").write_text("- id: SR-T2\n", encoding="utf-8")
        load_registry(tmp_path / "claims.yaml")
    with pytest.raises(ValueError, match="no claims registry"):
        load_registry(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=r"every claim needs an id"):
        Registry.from_entries([without(ENTRY, "id")])


def test_the_repository_claims_validate():
    reg = load_registry(REPO_CLAIMS)
    assert len(reg) > 0 and reg.alpha == 0.025
    for rule in reg.claims.values():
        assert rule.kind in KINDS
        for leaf in rule.parts.values() if rule.parts else [rule]:
            assert leaf.kind == "check" or leaf.planning is not None


def test_departures_are_kept_per_profile_and_shown_in_the_report():
    from dropoutlab.report import render_markdown

    registry = Registry.from_entries([dict(ENTRY, departures={"full": "50 of the check's 40 epochs"})], alpha=0.025)
    assert registry.get("SR-T2").departures == (("full", "50 of the check's 40 epochs"),)
    text = render_markdown([], registry)
    assert "Departures from the checks" in text and "| SR-T2 | full | 50 of the check's 40 epochs |" in text


def test_every_claims_section_is_a_heading_of_its_notebook():
    """The report links each claim to ``notebook.html#section``: a section that is not a heading loses its anchor."""
    registry = load_registry(REPO_CLAIMS)
    missing = []
    for rule in registry:
        if rule.section is None:
            continue
        cells = json.loads((REPO_CLAIMS.parent / "notebooks" / f"{rule.notebook}.ipynb").read_text())["cells"]
        headings = {line.lstrip("#").strip() for cell in cells if cell["cell_type"] == "markdown"
                    for line in "".join(cell["source"]).splitlines() if line.startswith("#")}
        if rule.section not in headings:
            missing.append(f"{rule.id}: {rule.section!r} is not a heading of {rule.notebook}")
    assert not missing, "\n".join(missing)
