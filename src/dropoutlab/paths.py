"""Where the compendium's files live, found from the working directory (not the install)."""

from __future__ import annotations

import os
from pathlib import Path

MARKERS = ("dvc.yaml", "params.yaml")


def repo_root(start: Path | str | None = None) -> Path:
    """The nearest parent of ``start`` (default: cwd) holding ``dvc.yaml`` or ``params.yaml``.

    ``DROPOUTLAB_ROOT`` overrides; without a marker the working directory itself is used, so
    a notebook executed in a scratch folder writes its outputs there.
    """
    if os.environ.get("DROPOUTLAB_ROOT"):
        return Path(os.environ["DROPOUTLAB_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).is_file() for marker in MARKERS):
            return folder
    return here


def figures_dir(notebook: str, root: Path | None = None) -> Path:
    return (root or repo_root()) / "figures" / notebook


def metrics_dir(root: Path | None = None) -> Path:
    return (root or repo_root()) / "reports" / "metrics"


def notebooks_dir(root: Path | None = None) -> Path:
    return (root or repo_root()) / "notebooks"
