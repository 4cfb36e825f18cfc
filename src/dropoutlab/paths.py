"""Where the compendium's files live, found from the working directory (not the install).

Every profile has its own output places, so no profile overwrites another's results:
``figures/<profile>/<notebook>/`` and ``reports/<profile>/{notebooks,metrics}/``.
"""

from __future__ import annotations

import os
from pathlib import Path

MARKERS = ("dvc.yaml", "params.yaml")
PROFILES = ("smoke", "quick", "full", "paper")
PART_ENV = "DROPOUTLAB_PART"  # set in a training stage's kernel: its ledger records without judging
RUNS_ENV = "DROPOUTLAB_RUNS"  # run store of a kernel: folder new runs go to, then folders searched (os.pathsep)


def repo_root(start: Path | str | None = None) -> Path:
    """The nearest parent of ``start`` (default: cwd) holding ``dvc.yaml`` or ``params.yaml``.

    ``DROPOUTLAB_ROOT`` overrides; without a marker the working directory itself is used, so
    a notebook executed in a scratch folder writes its outputs there. JupyterLab runs a kernel in
    ``notebooks/``: its parent holds the markers, so outputs land where the pipeline puts them.
    """
    if os.environ.get("DROPOUTLAB_ROOT"):
        return Path(os.environ["DROPOUTLAB_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).is_file() for marker in MARKERS):
            return folder
    return here


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    return profile


def figures_dir(notebook: str, profile: str, root: Path | None = None) -> Path:
    return (root or repo_root()) / "figures" / check_profile(profile) / notebook


def reports_dir(profile: str, root: Path | None = None) -> Path:
    return (root or repo_root()) / "reports" / check_profile(profile)


def metrics_dir(profile: str, root: Path | None = None) -> Path:
    return reports_dir(profile, root) / "metrics"


def executed_dir(profile: str, root: Path | None = None) -> Path:
    return reports_dir(profile, root) / "notebooks"


def notebooks_dir(root: Path | None = None) -> Path:
    return (root or repo_root()) / "notebooks"


def runs_dir(profile: str, root: Path | None = None) -> Path:
    """Training runs (checkpoints) of a profile that keeps them (full, paper): ``runs/<profile>/``, not committed."""
    return (root or repo_root()) / "runs" / check_profile(profile)
