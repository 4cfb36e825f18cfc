"""The README's generated parts: the claims table and the key figures with their verdict lines.

Blocks between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` are rewritten by
``dropoutlab report`` from claims.yaml and the committed metrics; everything else in the README is
written by hand. A test regenerates them and compares, so the README cannot go stale.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._io import atomic_write_text
from .report import REPORTED_PROFILES, verdict_of_record

# (claim id, figure caption): the four figures of the key claims shown in the README.
KEY_FIGURES = (
    ("CO-ABL", "Co-adaptation: test error as random top-layer units are removed, with and without dropout"),
    ("SR-F11", "Ensemble averaging: Monte Carlo averaging over k thinned nets against weight scaling"),
    ("LI-F1", "Variance shift: BN's running variance against the test-time variance, six placements of the noise"),
    ("CD-MN", "Concrete dropout: learned drop probability per layer against the training-set size"),
)


def _block(name: str, body: str) -> str:
    return f"<!-- generated: {name} -->\n{body.rstrip()}\n<!-- end: {name} -->"


def _value(record: Mapping[str, Any] | None) -> str:
    if not record or record.get("estimate") is None:
        return ""
    unit = f" {record['unit']}" if record.get("unit") else ""
    text = f"{record['estimate']:.3g}{unit}"
    if record.get("ci_low") is not None and record.get("ci_high") is not None:
        text += f" [{record['ci_low']:.3g}, {record['ci_high']:.3g}]"
    return text + (f", n = {record['n']}" if record.get("n") else "")


def claims_table(records: list[Mapping[str, Any]], registry: Any) -> str:
    """One row per claim: notebook, id, statement, kind and the verdict of record."""
    of_record = verdict_of_record(records, registry)
    lines = ["| notebook | claim | statement | kind | verdict of record |", "|---|---|---|---|---|"]
    for rule in registry.claims.values():
        profile, verdict = of_record.get(rule.id, (None, "not run"))
        label = f"{verdict} ({profile})" if profile else verdict
        tag = " *(exploratory)*" if rule.exploratory else ""
        lines.append(f"| `{rule.notebook}` | {rule.id}{tag} | {rule.statement.replace('|', '/')} | {rule.kind} | "
                     f"{label} |")
    return "\n".join(lines)


def key_figures(records: list[Mapping[str, Any]], registry: Any, root: Path) -> str:
    """The key claims' figures (of the highest profile that ran) with one verdict line each."""
    by_key = {(r["id"], r["profile"]): r for r in records}
    parts = []
    for claim_id, caption in KEY_FIGURES:
        rule = registry.get(claim_id)
        profile = next((p for p in reversed(REPORTED_PROFILES) if (claim_id, p) in by_key), None)
        record = by_key.get((claim_id, profile))
        figure = f"figures/{profile}/{rule.notebook}/{rule.figure}.png" if profile and rule.figure else None
        parts.append(f"**{caption}** (`{rule.notebook}`)\n")
        if figure and (root / figure).is_file():
            parts.append(f"![{caption}]({figure})\n")
        verdict = record["verdict"] if record else "not run"
        detail = [profile or "no profile has run"]
        if record and record.get("reason"):
            detail.append(record["reason"])
        if record and not rule.parts and record.get("estimate") is not None:
            detail.append(_value(record))
        parts.append(f"{claim_id} — {rule.statement}: **{verdict}** ({'; '.join(detail)}).\n")
    return "\n".join(parts)


def render(text: str, records: list[Mapping[str, Any]], registry: Any, root: Path) -> str:
    """``text`` (the README) with its generated blocks rewritten."""
    blocks = {"claims-table": claims_table(records, registry), "key-figures": key_figures(records, registry, root)}
    for name, body in blocks.items():
        pattern = re.compile(rf"<!-- generated: {name} -->.*?<!-- end: {name} -->", re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"README.md has no block '<!-- generated: {name} -->' … '<!-- end: {name} -->'")
        text = pattern.sub(lambda _m, body=body, name=name: _block(name, body), text)
    return text


def update(root: Path, records: list[Mapping[str, Any]], registry: Any) -> Path:
    path = root / "README.md"
    return atomic_write_text(path, render(path.read_text(), records, registry, root))
