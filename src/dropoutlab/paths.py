"""Where the compendium's files live, found from the working directory (not the install).

Every profile has its own output places, so no profile overwrites another's results:
``figures/<profile>/<notebook>/`` and ``reports/<profile>/{notebooks,metrics}/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MARKERS = ("dvc.yaml", "params.yaml")
PROFILES = ("smoke", "quick", "full", "paper")
PART_ENV = "DROPOUTLAB_PART"  # set in a training stage's kernel: its ledger records without judging
RUNS_ENV = "DROPOUTLAB_RUNS"  # run store of a kernel: folder new runs go to, then folders searched (os.pathsep)
DRY_RUN_ENV = "DROPOUTLAB_DRY_RUN"  # "STEPS:EXAMPLES" in a dry run's kernel: see dry_run()
FORECAST_ENV = "DROPOUTLAB_FORECAST"  # "STEPS:LOG" in a forecast's kernel: see forecast()


@dataclass(frozen=True)
class DryRun:
    """A dry run's caps: every training run stops after ``steps`` updates and every dataset split
    loaded is a class-stratified subset of at most ``examples`` images."""

    steps: int
    examples: int


def dry_run() -> DryRun | None:
    """The caps of a dry run (``dropoutlab run-notebook NAME --profile paper --dry-run``), or None.

    A dry run builds a profile's models, data pipeline, optimisers and loops as the profile says
    and steps each one a few times on a data slice, so a configuration error shows on a CPU in
    seconds rather than on a GPU after hours.
    """
    value = os.environ.get(DRY_RUN_ENV)
    if not value:
        return None
    try:
        steps, examples = (int(part) for part in value.split(":"))
    except ValueError:
        raise ValueError(f"{DRY_RUN_ENV} must be 'STEPS:EXAMPLES' (two positive integers), got {value!r}") from None
    if steps < 1 or examples < 1:
        raise ValueError(f"{DRY_RUN_ENV} must be 'STEPS:EXAMPLES' (two positive integers), got {value!r}")
    return DryRun(steps, examples)


@dataclass(frozen=True)
class Forecast:
    """A time forecast: every training loop times its first ``steps`` updates (and one evaluation),
    stops there, and appends what the whole loop would take to ``log`` (one JSON object per line)."""

    steps: int
    log: Path


#: The fewest updates a forecast times: the first two (warm-up) are left out of the per-update time.
MIN_FORECAST_STEPS = 5


def forecast() -> Forecast | None:
    """The settings of a time forecast (``dropoutlab run-notebook NAME --profile full --forecast``), or None.

    A forecast runs a notebook as the profile says — full data, full analysis sizes, every seed —
    but stops each training loop after ``steps`` timed updates; the runner adds up what the
    loops would have taken (:class:`dropoutlab.train.ForecastClock`) and the time everything else
    took, so a profile's cost is known before hours are spent on it.
    """
    value = os.environ.get(FORECAST_ENV)
    if not value:
        return None
    steps, _, log = value.partition(":")
    try:
        count = int(steps)
    except ValueError:
        count = 0
    if count < MIN_FORECAST_STEPS or not log:
        raise ValueError(f"{FORECAST_ENV} must be 'STEPS:LOG' with STEPS an integer ≥ {MIN_FORECAST_STEPS} and LOG "
                         f"a file path, got {value!r}")
    return Forecast(count, Path(log))


def find_repo_root(start: Path | str) -> Path | None:
    """The nearest parent of ``start`` (itself included) holding ``dvc.yaml`` or ``params.yaml``, else None.

    The one walk up to the repository: :func:`repo_root` (where outputs go) and
    :func:`dropoutlab.data.default_root` (where the data are) both use it.
    """
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).is_file() for marker in MARKERS):
            return folder
    return None


def repo_root(start: Path | str | None = None) -> Path:
    """Where outputs go: the repository above ``start`` (default: cwd), see :func:`find_repo_root`.

    ``DROPOUTLAB_ROOT`` overrides; without a marker the working directory itself is used, so
    a notebook executed in a scratch folder writes its outputs there. JupyterLab runs a kernel in
    ``notebooks/``: its parent holds the markers, so outputs land where the pipeline puts them.
    """
    if os.environ.get("DROPOUTLAB_ROOT"):
        return Path(os.environ["DROPOUTLAB_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    return find_repo_root(here) or here


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
