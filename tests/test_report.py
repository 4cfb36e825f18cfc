"""The claims report (dropoutlab.report): renderers on a small fixture repository, the diff with a committed
record, and the HTML page in a headless browser (skipped when Chromium is not installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from dropoutlab import report
from dropoutlab.report import (
    diff_records,
    load_records,
    load_records_at,
    load_registry_for,
    records_json,
    render_diff,
    render_index,
    render_markdown,
    render_summary,
    section_anchor,
    verdict_of_record,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]

ENTRIES = """\
- id: A-1
  notebook: 01_alpha
  statement: Dropout lowers the test error
  source: Srivastava et al. 2014, JMLR 15, Table 2
  paper_value: 1.60 % → 1.25 %
  kind: directional
  measure: test error (%) without dropout − with dropout
  unit: pp
  margin: 0
  side: greater
  design: paired
  replication: independent training runs (seeds)
  family: null
  profiles: [quick, full, paper]
  planning: {n: 3, effect: 1.0}
  figure: curves
  section: Claim check
  why: The paper reports a lower error; any improvement counts.
  exploratory: false
  history:
    - {date: '2026-11-30', old: "margin 0.1 pp", reason: "the margin was set before the unit changed to pp"}
- id: A-2
  notebook: 01_alpha
  statement: Gaussian and Bernoulli dropout give the same error
  source: Srivastava et al. 2014, Section 10
  paper_value: equal within noise
  kind: equivalence
  measure: test error (%) Gaussian − Bernoulli
  unit: pp
  margin: 0.2
  design: paired
  replication: independent training runs (seeds)
  family: null
  profiles: [quick, full, paper]
  planning: {n: 3, effect: 0.5}
  figure: missing_figure
  section: "Equivalence: `gaussian` vs bernoulli"
  why: An exploratory look, not a claim of the paper.
  exploratory: true
  history: []
- id: A-CHK
  notebook: 01_alpha
  statement: The dropout mask keeps the expected activation
  source: Srivastava et al. 2014, Section 4
  paper_value: exact identity
  kind: check
  measure: largest relative deviation
  unit: ''
  tolerance: 1.0e-10
  design: exact
  replication: one computation
  family: null
  profiles: [quick, full, paper]
  figure: null
  section: Implementation check
  why: An identity; only a bug can break it.
  exploratory: false
  history: []
- id: B-1
  notebook: 02_beta
  statement: Concrete | grid error differ by < 0.25 pp
  source: Gal et al. 2017, Table 1
  paper_value: 0.8 % vs 0.8 %
  kind: non-inferiority
  measure: test error (%) concrete − grid
  unit: pp
  margin: 0.25
  side: less
  design: paired
  replication: independent training runs (seeds)
  family: rates
  profiles: [quick, full, paper]
  planning: {n: 5, effect: 1.0}
  figure: rates
  section: Claim check
  why: Concrete dropout should not lose more than a quarter point.
  exploratory: false
  history: []
- id: B-2
  notebook: 02_beta
  statement: The learned rate grows with the model size
  source: Gal et al. 2017, Figure 3
  paper_value: rising
  kind: directional
  measure: rate slope per layer width
  unit: ''
  margin: 0
  side: greater
  design: one-sample
  replication: independent training runs (seeds)
  family: rates
  profiles: [full, paper]
  planning: {n: 5, effect: 1.0}
  figure: null
  section: Rates
  why: The paper's figure shows a rise.
  exploratory: false
  history: []
- id: C-1
  notebook: 03_gamma
  statement: Batch norm before dropout is best
  source: the Stack Overflow answer (Q39691902)
  paper_value: BN → dropout
  kind: directional
  measure: error (%) other order − this order
  unit: pp
  margin: 0
  side: greater
  design: paired
  replication: independent training runs (seeds)
  family: null
  profiles: [quick, full, paper]
  planning: {n: 3, effect: 1.0}
  figure: orderings
  section: Claim check
  why: A recommendation; any advantage counts.
  exploratory: false
  history: []
- id: C-ALL
  notebook: 03_gamma
  statement: The error has its minimum inside the range and underfits at high rates
  source: Srivastava et al. 2014, Figure 9a
  paper_value: minimum near p = 0.5
  kind: all
  measure: see the parts
  replication: independent training runs (seeds)
  family: null
  profiles: [quick, full, paper]
  planning: {n: 3, effect: 1.0}
  figure: null
  section: Claim check
  why: Both shapes must hold.
  exploratory: false
  history: []
  parts:
    min_inside: {kind: directional, margin: 0, side: greater, design: one-sample, unit: pp, measure: curvature}
    underfit: {kind: directional, margin: 0, side: greater, design: paired, unit: pp, measure: error gap}
- id: C-CHKS
  notebook: 03_gamma
  statement: The closed form matches Monte Carlo and an enumeration of every mask
  source: Mianjy et al. 2018
  paper_value: identity
  kind: all
  measure: see the parts
  replication: one computation
  family: null
  profiles: [quick, full, paper]
  figure: null
  section: Claim check
  why: Two identities; only a bug can break them.
  exploratory: false
  history: []
  parts:
    monte_carlo: {kind: check, tolerance: 0.005, design: exact, unit: '', measure: relative error}
    enumeration: {kind: check, tolerance: 1.0e-9, design: exact, unit: '', measure: relative error}
"""
CLAIMS_YAML = "version: 1\nalpha: 0.025\nclaims:\n" + textwrap.indent(ENTRIES, "  ")


def _claim(cid, kind, verdict, estimate, lo, hi, n=3, p=0.01, margin=0.0, side="greater", unit="pp", **extra):
    return {"id": cid, "kind": kind, "verdict": verdict, "estimate": estimate, "ci_low": lo, "ci_high": hi,
            "n": n, "test": "paired t (scipy.stats.ttest_rel)", "p": p, "p_for": p,
            "p_against": None if p is None else 1 - p,
            "margin": margin, "side": side, "unit": unit, "half_width": None if lo is None else (hi - lo) / 2,
            "n_needed": 41 if verdict == "inconclusive" else None, "note": "", "reason": "", "parts": None,
            "measurements": {"a": [1.0, 2.0, 3.0], "b": [0.5, 1.5, 2.5]}, **extra}


METRICS = {
    ("quick", "01_alpha"): {
        "A-1": _claim("A-1", "directional", "inconclusive", 0.25, -0.66, 1.16, p=0.18,
                      note="test error 2.21 % → 1.96 %. A second sentence that the report leaves out."),
        "A-2": _claim("A-2", "equivalence", "reproduced", 0.05, -0.1, 0.15, margin=0.2, side=None),
        "A-CHK": _claim("A-CHK", "check", "reproduced", 3.1e-12, None, None, n=None, p=None, margin=1e-10,
                        side=None, unit="", test="implementation check"),
    },
    ("full", "01_alpha"): {
        "A-1": _claim("A-1", "directional", "reproduced", 0.4, 0.2, 0.6, n=8, p=0.0004),
        "A-CHK": _claim("A-CHK", "check", "reproduced", 2.0e-12, None, None, n=None, p=None, margin=1e-10,
                        side=None, unit="", test="implementation check"),
    },
    ("quick", "02_beta"): {
        "B-1": _claim("B-1", "non-inferiority", "reproduced", 0.1, -0.05, 0.2, margin=0.25, side="less",
                      note="concrete | grid\n0.8 % vs 0.7 %"),
        "B-2": _claim("B-2", "directional", "reproduced", 0.3, 0.1, 0.5, unit=""),
    },
    ("quick", "03_gamma"): {
        "C-ALL": _claim("C-ALL", "all", "inconclusive", None, None, None, p=None, margin=None, side=None, unit="",
                        test="all parts", n_needed=None, parts={
                            "min_inside": {"verdict": "reproduced", "estimate": 0.2, "ci_low": 0.1, "ci_high": 0.3},
                            "underfit": {"verdict": "inconclusive", "estimate": 0.1, "ci_low": -0.1, "ci_high": 0.3}}),
        "C-CHKS": _claim("C-CHKS", "all", "reproduced", 1.1e-4, None, None, n=None, p=0.0, margin=0.005, side=None,
                         unit="", test="all of 2 parts", parts={
                             "monte_carlo": {"kind": "check", "verdict": "reproduced", "estimate": 1.1e-4,
                                             "margin": 0.005},
                             "enumeration": {"kind": "check", "verdict": "reproduced", "estimate": 1.6e-15,
                                             "margin": 1e-9}}),
    },
}


def _write_metrics(root: Path, metrics: dict) -> None:
    for (profile, notebook), claims in metrics.items():
        path = root / "reports" / profile / "metrics" / f"{notebook}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"notebook": notebook, "profile": profile, "claims": claims}, indent=2,
                                   sort_keys=True))


def _png(path: Path, color: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1, 2], [2, 1, 1.5], color=color)
    fig.savefig(path)
    plt.close(fig)


def _notebook_html(path: Path, headings: list[str]) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"## {h}\n\nText.") for h in headings]
    body, _ = HTMLExporter().from_notebook_node(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")


HEADINGS = ["Claim check", "Equivalence: `gaussian` vs bernoulli", "Implementation check",
            "3. Results, part (a|b) é!?"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A small repository: claims.yaml, metrics of two profiles, figures, one executed notebook per profile."""
    root = tmp_path_factory.mktemp("repo")
    (root / "params.yaml").write_text("profile: smoke\n")
    (root / "claims.yaml").write_text(CLAIMS_YAML, encoding="utf-8")
    _write_metrics(root, METRICS)
    _png(root / "figures/quick/01_alpha/curves.png", "tab:blue")
    _png(root / "figures/full/01_alpha/curves.png", "tab:orange")
    _png(root / "figures/quick/02_beta/rates.png", "tab:green")
    (root / "figures/quick/01_alpha/curves.pdf").write_bytes(b"%PDF-1.4\n")  # never linked from the page
    _notebook_html(root / "reports/quick/notebooks/01_alpha.html", HEADINGS)
    (root / "reports/full/notebooks").mkdir(parents=True)
    shutil.copy(root / "reports/quick/notebooks/01_alpha.html", root / "reports/full/notebooks/01_alpha.html")
    (root / "reports/quick/notebooks/02_beta.ipynb").write_text("{}")
    return root


@pytest.fixture(scope="module")
def records(repo):
    return load_records(repo)


@pytest.fixture(scope="module")
def registry(repo):
    return load_registry_for(repo)


@pytest.fixture(scope="module")
def built(repo) -> Path:
    """The report written by write_report into the fixture repository; returns reports/index.html."""
    write_report(repo)
    return repo / "reports" / "index.html"


# --------------------------------------------------------------------------------------------- records


def test_load_records_reads_every_profile_sorted(records):
    keys = [(r["notebook"], r["id"], r["profile"]) for r in records]
    assert keys == [("01_alpha", "A-1", "quick"), ("01_alpha", "A-1", "full"), ("01_alpha", "A-2", "quick"),
                    ("01_alpha", "A-CHK", "quick"), ("01_alpha", "A-CHK", "full"), ("02_beta", "B-1", "quick"),
                    ("02_beta", "B-2", "quick"), ("03_gamma", "C-ALL", "quick"),
                    ("03_gamma", "C-CHKS", "quick")]
    assert records[1]["estimate"] == 0.4 and records[1]["verdict"] == "reproduced"


def test_load_records_ignores_smoke(tmp_path):
    _write_metrics(tmp_path, {("smoke", "01_alpha"): METRICS[("full", "01_alpha")]})
    assert load_records(tmp_path) == []


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"notebook": "01_alpha"}', "no 'claims' object"),
    ('{"claims": {"A-1": {"verdict": "maybe"}}}', "verdict 'maybe'"),
    ('{"profile": "full", "claims": {}}', "says profile 'full'"),
    ('{"claims": {"A-1": {"id": "A-9", "verdict": "reproduced"}}}', "carries id 'A-9'"),
    ('{"claims": {"A-1": {"verdict": "reproduced", "estimate": "big"}}}', "non-numeric estimate"),
])
def test_load_records_names_a_malformed_file(tmp_path, text, message):
    path = tmp_path / "reports/quick/metrics/01_alpha.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        load_records(tmp_path)
    assert "reports/quick/metrics/01_alpha.json" in str(err.value)


def test_reads_what_the_ledger_writes(tmp_path):
    """End to end with the real Ledger: its metrics files load and render."""
    from dropoutlab.claims import Ledger

    (tmp_path / "claims.yaml").write_text(CLAIMS_YAML, encoding="utf-8")
    registry = load_registry_for(tmp_path)
    ledger = Ledger("01_alpha", "full", root=tmp_path, registry=registry)
    ledger.record("A-1", a=[2.3, 2.1, 2.4, 2.2], b=[1.9, 1.8, 2.0, 1.9], note="error 2.25 % → 1.9 %")
    ledger.record("A-2", a=[1.0, 1.1, 0.9], b=[1.0, 1.05, 0.95])
    ledger.record("A-CHK", value=2e-12)
    ledger.save()
    records = load_records(tmp_path)
    assert {(r["id"], r["profile"]) for r in records} == {("A-1", "full"), ("A-2", "full"), ("A-CHK", "full")}
    text = render_markdown(records, registry, root=tmp_path)
    assert "reproduced (full)" in _row(text, "A-1") and "error 2.25 % → 1.9 %" in _row(text, "A-1")
    checks = text.split("## Implementation checks")[1]
    assert _cells(_row(checks, "A-CHK"))[2:] == ["≤ 1e-10", "—", "passed — 2e-12", "—"]
    assert re.search(r"^  A-CHK\s+passed\s+2e-12  \(full, tolerance ≤ 1e-10\)$", render_summary(records, registry),
                     re.M)
    assert len(json.loads(records_json(records, registry))) == 3


# --------------------------------------------------------------------------------------------- markdown


@pytest.fixture(scope="module")
def markdown(repo, records, registry) -> str:
    return render_markdown(records, registry, root=repo)


def _row(markdown: str, cid: str) -> str:
    rows = [line for line in markdown.splitlines() if re.match(rf"\| (\[)?{re.escape(cid)}\b", line)]
    assert len(rows) == 1, rows
    return rows[0]


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]


def test_verdict_of_record_is_the_highest_judged_profile(records, registry):
    record = verdict_of_record(records, registry)
    assert record["A-1"] == ("full", "reproduced")          # quick said inconclusive, full reproduced
    assert record["A-2"] == ("quick", "reproduced")
    assert record["B-1"] == ("quick", "reproduced")
    assert record["B-2"] == (None, "not run")                # only quick ran, and B-2 is judged in full/paper
    assert record["C-1"] == (None, "not run")                # nothing ran


@pytest.mark.parametrize("line", [
    "- **Empirical claims: 5** (verdict of record) — 2 reproduced, 0 not reproduced, 1 inconclusive, 2 not run.",
    "- **Exploratory claims: 1** (shown, not counted above) — 1 reproduced, 0 not reproduced, 0 inconclusive.",
    "- **Implementation checks: 2** (identities that only a bug can break) — 2 passed, 0 failed.",
    "- Records per profile: quick 7, full 2, paper 0.",
])
def test_markdown_counts_split_checks_from_empirical_claims(markdown, line):
    assert line in markdown.splitlines()


def test_markdown_empirical_row(markdown):
    header = _cells(next(line for line in markdown.splitlines() if line.startswith("| id | claim")))
    row = dict(zip(header, _cells(_row(markdown, "A-1")), strict=True))
    assert row["id"] == "[A-1](full/notebooks/01_alpha.html#Claim-check)"
    assert row["quick run"] == "inconclusive — 0.25 [-0.66, 1.16] pp, n=3"
    assert row["full run"] == "reproduced — 0.4 [0.2, 0.6] pp, n=8"
    assert row["paper run"] == "—"
    assert row["verdict of record"] == "reproduced (full)"
    assert row["p"] == "< 0.001" and row["margin"] == "> 0" and row["n for 80 % power"] == ""
    assert row["figure"] == "[curves](../figures/full/01_alpha/curves.png)"
    b1 = dict(zip(header, _cells(_row(markdown, "B-1")), strict=True))
    assert b1["figure"] == "[rates](../figures/quick/02_beta/rates.png)"
    assert "rule changed" in row["note"]
    a2 = dict(zip(header, _cells(_row(markdown, "A-2")), strict=True))
    assert a2["margin"] == "±0.2" and "*(exploratory)*" in a2["claim"]
    assert a2["figure"] == "—"  # figure named in the registry but absent on disk: no link
    # an anchor for a heading with inline code, as nbconvert writes it
    assert a2["id"] == "[A-2](quick/notebooks/01_alpha.html#Equivalence:-gaussian-vs-bernoulli)"


def test_markdown_escapes_pipes_and_newlines(markdown):
    row = _row(markdown, "B-1")
    assert "Concrete \\| grid error" in row and "concrete \\| grid 0.8 % vs 0.7 %" in row
    header = next(line for line in markdown.splitlines() if line.startswith("| id | claim"))
    assert len(_cells(row)) == len(_cells(header))
    assert "< 0.25" in row and "Holm family rates" in row
    assert _cells(row)[0] == "[B-1](quick/notebooks/02_beta.ipynb)"  # no .html: the .ipynb stands in
    b2 = _cells(_row(markdown, "B-2"))
    assert b2[0] == "B-2" and "(not judged here)" in b2[3] and b2[6] == "not run"
    assert "no run yet in full/paper" in b2[-1]
    assert _cells(_row(markdown, "C-1"))[3:7] == ["—", "—", "—", "not run"]


def test_markdown_composite_row(markdown):
    row = _cells(_row(markdown, "C-ALL"))
    assert row[3] == "inconclusive, n=3" and row[6] == "inconclusive (quick)"
    assert row[9] == "all of: min_inside > 0, underfit > 0"
    assert "parts: min_inside reproduced, underfit inconclusive" in row[-1]


def test_markdown_checks_table(markdown):
    section = markdown.split("## Implementation checks")[1].split("## Deviations log")[0]
    row = _row(section, "A-CHK")
    assert _cells(row)[2:] == ["≤ 1e-10", "passed — 3.1e-12", "passed — 2e-12", "—"]
    assert "A-CHK" not in markdown.split("## Implementation checks")[0].split("## Empirical claims")[1]


def test_composite_of_checks_is_counted_and_shown_as_a_check(markdown):
    """An ``all`` claim whose parts are all checks is an implementation check, not an empirical claim."""
    empirical = markdown.split("## Empirical claims")[1].split("## Implementation checks")[0]
    assert "C-CHKS" not in empirical and "C-ALL" in empirical
    section = markdown.split("## Implementation checks")[1].split("## Deviations log")[0]
    assert _cells(_row(section, "C-CHKS"))[2:] == ["all of: monte_carlo ≤ 0.005, enumeration ≤ 1e-09",
                                                   "passed — monte_carlo 0.00011, enumeration 1.6e-15", "—", "—"]


def test_markdown_deviations_log_lists_history_and_exploratory(markdown):
    log = markdown.split("## Deviations log")[1]
    assert "| 2026-11-30 | A-1 | margin 0.1 pp | the margin was set before the unit changed to pp |" in log
    assert "**A-2** (01_alpha): Gaussian and Bernoulli dropout give the same error — reproduced." in log


def test_markdown_links_resolve(repo, markdown):
    for target in re.findall(r"\]\(<?([^)>]+)>?\)", markdown):
        path, _, anchor = target.partition("#")
        assert (repo / "reports" / path).is_file(), target
        if anchor:
            assert f'id="{anchor}"' in (repo / "reports" / path).read_text(encoding="utf-8"), target


def test_markdown_without_root_links_by_contract(records, registry):
    text = render_markdown(records, registry)
    assert "[missing_figure](../figures/full/01_alpha/missing_figure.png)" not in text
    assert "[missing_figure](../figures/quick/01_alpha/missing_figure.png)" in text
    assert "[A-2](quick/notebooks/01_alpha.html#Equivalence:-gaussian-vs-bernoulli)" in text


def test_markdown_link_with_parentheses_is_bracketed():
    assert report._md_link("X|Y", "a.html#3.-part-(a%7Cb)") == "[X\\|Y](<a.html#3.-part-(a%7Cb)>)"
    assert report._md_link("X", None) == "X"


@pytest.mark.parametrize("heading", HEADINGS)
def test_section_anchor_matches_nbconvert(repo, heading):
    page = (repo / "reports/quick/notebooks/01_alpha.html").read_text(encoding="utf-8")
    assert f'id="{section_anchor(heading)}"' in page


# --------------------------------------------------------------------------------------------- summary, JSON


def test_summary_lines(records, registry):
    lines = render_summary(records, registry).splitlines()
    assert lines[:2] == ["5 empirical claims: 2 reproduced, 0 not reproduced, 1 inconclusive, 2 not run; "
                         "1 exploratory (not counted)", "2 implementation checks: 2 passed, 0 failed"]
    assert all(len(line) <= 120 for line in lines)
    assert lines[2] == "01_alpha"
    assert re.fullmatch(r"  A-1\s+reproduced\s+0\.4 \[0\.2, 0\.6\] pp  \(full, p < 0\.001\)", lines[3])
    assert any(re.fullmatch(r"  A-CHK\s+passed\s+2e-12  \(full, tolerance ≤ 1e-10\)", line) for line in lines)
    assert any(re.fullmatch(r"  B-2\s+not run", line) for line in lines)
    assert sum(line.startswith("  ") for line in lines) == 8
    assert any(re.fullmatch(r"  C-ALL\s+inconclusive\s+—  \(quick\)", line) for line in lines)
    assert [line for line in lines if not line.startswith(" ")][2:] == ["01_alpha", "02_beta", "03_gamma"]


def test_summary_keeps_lines_short(records, registry):
    long = [dict(r, unit="pp" * 80) for r in records]
    assert all(len(line) <= 120 for line in render_summary(long, registry).splitlines())


def test_records_json(records, registry):
    rows = json.loads(records_json(records, registry))
    assert len(rows) == len(records)
    assert [(r["notebook"], r["id"], r["profile"]) for r in rows] == sorted(
        [(r["notebook"], r["id"], r["profile"]) for r in rows],
        key=lambda k: (k[0], k[1], report.REPORTED_PROFILES.index(k[2])))
    assert set(rows[0]) == {"id", "notebook", "kind", "profile", "verdict", "estimate", "ci_low", "ci_high", "n",
                            "test", "p", "margin"}
    full = next(r for r in rows if r["id"] == "A-1" and r["profile"] == "full")
    assert (full["verdict"], full["estimate"], full["ci_low"], full["ci_high"], full["n"]) == (
        "reproduced", 0.4, 0.2, 0.6, 8)


# --------------------------------------------------------------------------------------------- diff


def test_diff_identical_matches(records):
    rows = diff_records(records, records)
    assert render_diff(rows) == "9 claims compared: matches the committed record\n"


def test_diff_finds_changes(records):
    new = [dict(r) for r in records if r["id"] != "A-2"]
    for r in new:
        if (r["id"], r["profile"]) == ("A-1", "full"):
            r["verdict"] = "inconclusive"
        if (r["id"], r["profile"]) == ("B-1", "quick"):
            r["estimate"] = 0.35  # committed interval [-0.05, 0.2]
    new.append(dict(records[0], id="A-3"))
    rows = {(r["profile"], r["id"]): r for r in diff_records(records, new)}
    assert rows[("full", "A-1")]["verdict_changed"] and not rows[("full", "A-1")]["outside_interval"]
    assert rows[("quick", "B-1")]["outside_interval"] and rows[("quick", "B-1")]["status"] == "changed"
    assert rows[("quick", "A-2")]["status"] == "removed" and rows[("quick", "A-3")]["status"] == "added"
    text = render_diff(list(rows.values()))
    assert "verdict reproduced → inconclusive" in text
    assert "estimate 0.35 pp outside the committed [-0.05, 0.2] (was 0.1)" in text
    assert text.splitlines()[-1] == ("8 claims compared: 1 verdicts changed, 1 estimates outside the committed "
                                     "interval; 1 added, 1 removed")


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.name=test", "-c", "user.email=test@example.org",
                    "-c", "commit.gpgsign=false", *args], check=True, capture_output=True)


def test_load_records_at_reads_the_committed_record(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "README.md").write_text("no record yet\n")
    _git(tmp_path, "add", "README.md")
    _git(tmp_path, "commit", "-q", "-m", "start")
    _write_metrics(tmp_path, METRICS)
    _git(tmp_path, "add", "reports")
    _git(tmp_path, "commit", "-q", "-m", "record")
    with pytest.raises(ValueError, match="holds no reports/<profile>/metrics"):
        load_records_at("HEAD~1", tmp_path)
    committed = load_records_at("HEAD", tmp_path)
    assert committed == load_records(tmp_path)
    changed = json.loads(json.dumps(METRICS[("full", "01_alpha")]))
    changed["A-1"]["verdict"] = "not reproduced"
    changed["A-1"]["estimate"] = -0.5
    _write_metrics(tmp_path, {("full", "01_alpha"): changed})
    text = render_diff(diff_records(committed, load_records(tmp_path)))
    assert text.splitlines()[-1] == ("9 claims compared: 1 verdicts changed, 1 estimates outside the committed "
                                     "interval")
    with pytest.raises(ValueError, match="unknown git revision 'nope'"):
        load_records_at("nope", tmp_path)


def test_load_records_at_outside_git(tmp_path):
    with pytest.raises(ValueError, match="not inside a git repository"):
        load_records_at("HEAD", tmp_path)


# --------------------------------------------------------------------------------------------- index.html


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.refs.append(value)
            if name == "id" and value is not None:
                self.ids.add(value)


def broken_refs(page: Path) -> list[str]:
    """Every href/src of ``page`` that does not resolve to an existing file (or, for '#x', an element)."""
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    broken = []
    for ref in parser.refs:
        parts = urlsplit(ref)
        if parts.scheme or parts.netloc:
            broken.append(f"{ref} (external)")
            continue
        target = (page.parent / unquote(parts.path)) if parts.path else page
        if not target.is_file():
            broken.append(ref)
        elif parts.fragment and target.suffix == ".html":
            text = target.read_text(encoding="utf-8")
            if f'id="{parts.fragment}"' not in text:
                broken.append(f"{ref} (no such heading)")
    return broken, parser.refs


def test_index_links_only_existing_files(built):
    broken, refs = broken_refs(built)
    assert broken == []
    assert "../figures/full/01_alpha/curves.png" in refs and "../figures/quick/02_beta/rates.png" in refs
    assert "full/notebooks/01_alpha.html#Claim-check" in refs
    assert "quick/notebooks/02_beta.ipynb" in refs and "claims.md" in refs
    assert not any(r.endswith(".pdf") or "missing_figure" in r or "02_beta.html" in r for r in refs)


def test_index_is_self_contained_and_marked(built):
    page = built.read_text(encoding="utf-8")
    assert '<meta name="generator" content="dropoutlab report">' in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "document.body.dataset.ready='1'" in page and "dataset.brokenImages" in page and "jsErrors" in page
    for select in ("f-verdict", "f-notebook", "f-profile"):
        assert f'<select id="{select}">' in page


def test_index_rows(repo, records, registry):
    page = render_index(records, registry, repo)
    rows = re.findall(r"<tr (data-[^>]*)>", page)
    assert len(rows) == len(records) + 2  # + the not-run rows of B-2 and C-1
    shown = [r for r in rows if not r.endswith("hidden")]
    assert len(shown) == 8  # one verdict-of-record row per claim
    assert any('data-verdict="passed"' in r and 'data-profile="full"' in r for r in shown)
    assert any('data-verdict="not run"' in r and 'data-notebook="02_beta"' in r for r in shown)


def test_index_lists_no_notebook_in_progress_or_failed(repo, records, registry, tmp_path):
    import shutil

    root = tmp_path / "repo"
    shutil.copytree(repo, root)
    folder = root / "reports" / "quick" / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".09_new.ipynb.running.ipynb").write_text("{}")
    (folder / "09_new.failed.ipynb").write_text("{}")
    page = render_index(records, registry, root)
    assert "09_new" not in page


def test_write_report_writes_both_files(built):
    reports = built.parent
    assert (reports / "claims.md").read_text(encoding="utf-8").startswith("# Claims report")
    assert not list(reports.glob(".*.tmp*"))


# --------------------------------------------------------------------------------------------- headless browser


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium_flags(tmp: Path) -> list[str]:
    return [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=5000"]


def dump_dom(url: str, tmp: Path) -> str:
    """The DOM of ``url`` after load (and 5 s of virtual time) in headless Chromium."""
    return subprocess.run([*_chromium_flags(tmp), "--dump-dom", url], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, HOME=str(tmp)), check=True).stdout


def browser_check(page: Path, tmp: Path) -> tuple[str, Path]:
    """Load ``page`` in headless Chromium: the dumped DOM after load and a screenshot."""
    flags = _chromium_flags(tmp)
    url = page.resolve().as_uri()
    env = dict(os.environ, HOME=str(tmp))
    dom = dump_dom(url, tmp)
    shot = tmp / "index.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2000", url], capture_output=True,
                   timeout=120, env=env, check=True)
    return dom, shot


def _assert_page_loads(page: Path, tmp: Path) -> Path:
    dom, shot = browser_check(page, tmp)
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    assert 'data-ready="1"' in body.group(0), body.group(0)
    assert 'data-broken-images="0"' in body.group(0), body.group(0)
    assert "data-js-errors" not in body.group(0), body.group(0)
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return shot


@pytest.mark.skipif(_chromium() is None, reason="headless browser check needs Chromium (apt-get install chromium)")
def test_index_in_headless_chromium(built, tmp_path):
    assert broken_refs(built)[0] == []
    shot = _assert_page_loads(built, tmp_path)
    keep = os.environ.get("DROPOUTLAB_KEEP_SCREENSHOT")
    if keep:  # to look at the page: DROPOUTLAB_KEEP_SCREENSHOT=/tmp/index.png pytest tests/test_report.py
        shutil.copy(shot, keep)


def test_index_filters_run_in_the_browser(built, tmp_path):
    """The filter script works: the query selects all profiles of one notebook, as the select boxes would."""
    if _chromium() is None:
        pytest.skip("headless browser check needs Chromium (apt-get install chromium)")
    dom = dump_dom(built.resolve().as_uri() + "?profile=all&notebook=01_alpha", tmp_path)
    rows = re.findall(r"<tr (data-[^>]*)>", dom)
    shown = [r for r in rows if "hidden" not in r]
    assert len(shown) == 5 and all('data-notebook="01_alpha"' in r for r in shown)
    assert '<span id="shown">5</span>' in dom
    dom = dump_dom(built.resolve().as_uri() + "?verdict=not%20run", tmp_path)
    assert re.search(r'<span id="shown">(\d+)</span>', dom).group(1) == "2"


def test_index_browser_check_sees_a_broken_image(built, tmp_path):
    """The page's own check counts an image that does not decode (a PNG file with junk bytes)."""
    if _chromium() is None:
        pytest.skip("headless browser check needs Chromium (apt-get install chromium)")
    page = built.parent / "index-broken-image.html"  # next to index.html, so its other links still resolve
    (built.parent / "bad.png").write_bytes(b"not a png")
    page.write_text(built.read_text(encoding="utf-8").replace("<h1>", '<img src="bad.png" alt="bad"><h1>', 1))
    dom, _ = browser_check(page, tmp_path)
    assert 'data-broken-images="1"' in re.search(r"<body[^>]*>", dom).group(0)


def test_repository_index_in_headless_chromium(tmp_path):
    page = REPO / "reports" / "index.html"
    assert page.is_file() and f'content="{report.GENERATOR}"' in page.read_text(encoding="utf-8"), \
        "the committed reports/index.html must be generated by dropoutlab.report (run `dropoutlab report`)"
    assert broken_refs(page)[0] == []
    if _chromium() is None:
        pytest.skip("headless browser check needs Chromium (apt-get install chromium)")
    _assert_page_loads(page, tmp_path)
