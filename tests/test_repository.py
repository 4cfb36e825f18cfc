"""The repository is self-contained: no pointer to a file outside it, every tag explained where used."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = ("CLAIMS.md", "DESIGN.md", "DATA.md", "ANCHORS.md", "ECOSYSTEM.md", "seed document", "seed file",
           "shared/", "seeds/")
THIS = Path(__file__).relative_to(ROOT).as_posix()


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout")
    files = [ROOT / f for f in out.splitlines() if f != THIS and not f.startswith("reports/")]
    return [f for f in files if f.is_file() and f.suffix in {".py", ".md", ".yaml", ".yml", ".ipynb", ".txt", ""}]


def test_no_pointer_to_files_outside_the_repository():
    found = [f"{path.relative_to(ROOT)}: {needle}" for path in _tracked_text_files()
             for needle in OUTSIDE if needle in path.read_text(errors="ignore")]
    assert found == []


def test_the_mem_tag_is_explained_where_it_is_used():
    unexplained = [str(path.relative_to(ROOT)) for path in _tracked_text_files()
                   if "[mem]" in (text := path.read_text(errors="ignore")) and "unverified" not in text]
    assert unexplained == []
