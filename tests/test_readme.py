"""The README's generated blocks match claims.yaml and the committed metrics; it links nothing outside."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dropoutlab import readme, report
from dropoutlab.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_generated_blocks_are_current():
    records, registry = report.load_records(ROOT), load_registry(ROOT / "claims.yaml")
    assert README == readme.render(README, records, registry, ROOT), "README is stale: run `dropoutlab report`"


def test_every_key_figure_claim_is_registered():
    registry = load_registry(ROOT / "claims.yaml")
    for claim_id, _ in readme.KEY_FIGURES:
        assert registry.get(claim_id).figure, f"{claim_id} needs a figure in claims.yaml"


@pytest.mark.parametrize("target", sorted(set(re.findall(r"\]\(([^)#]+)\)", README))))
def test_relative_links_resolve(target):
    if target.startswith(("http://", "https://")):
        return
    assert (ROOT / target).exists(), f"README links to {target}, which is not in the repository"


def test_missing_block_is_a_clear_error():
    with pytest.raises(ValueError, match="claims-table"):
        readme.render("no blocks here", [], load_registry(ROOT / "claims.yaml"), ROOT)
