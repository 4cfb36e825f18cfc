"""One figure style for the compendium; figures and their plot data saved atomically and reproducibly.

``save_figure(fig, name, notebook, profile)`` writes ``figures/<profile>/<notebook>/<name>.png`` and
``.pdf``; ``save_table(frame, name, notebook, profile)`` writes the plotted numbers next to them as CSV.
Paths come from the repository root (see :mod:`dropoutlab.paths`), never from the working directory,
so a notebook writes the same files from the pipeline, the runner or JupyterLab.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import seaborn as sns

from ._io import atomic_path, atomic_write_text
from .paths import figures_dir

# Fixed metadata: no dates or versions in the files, so re-runs give identical bytes (dvc.lock stays put).
_PNG_META = {"Software": None}
_PDF_META = {"Creator": None, "Producer": None, "CreationDate": None}


def set_style() -> None:
    """Seaborn's paper style with the compendium's palette and sizes."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    # figure.dpi sizes the inline images of the executed notebooks (screen resolution keeps a notebook
    # with a dozen wide figures near 1 MB); the saved PNGs under figures/ use savefig.dpi.
    matplotlib.rcParams.update({"figure.dpi": 72, "savefig.dpi": 150, "figure.figsize": (6.4, 4.0),
                                "axes.titlesize": "medium", "svg.hashsalt": "dropoutlab",
                                "legend.framealpha": 0.9, "axes.formatter.min_exponent": 3})


def _directory(notebook: str | None, profile: str | None, directory: Path | str | None) -> Path:
    if directory is not None:
        return Path(directory)
    if notebook is None or profile is None:
        raise ValueError("give the notebook name and the profile (or a directory)")
    return figures_dir(notebook, profile)


def save_figure(fig, name: str, notebook: str | None = None, profile: str | None = None,
                directory: Path | str | None = None) -> Path:
    """Save ``fig`` as ``<directory>/<name>.png`` and ``.pdf`` (default ``figures/<profile>/<notebook>/``).

    Returns the PNG path. Each file is written to a temporary name and renamed, so an
    interrupted run never leaves half a figure behind.
    """
    directory = _directory(notebook, profile, directory)
    for ext, meta in (("png", _PNG_META), ("pdf", _PDF_META)):
        with atomic_path(directory / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, metadata=meta, bbox_inches="tight")
    return directory / f"{name}.png"


def save_table(frame, name: str, notebook: str | None = None, profile: str | None = None,
               directory: Path | str | None = None) -> Path:
    """Save a DataFrame as ``<directory>/<name>.csv`` (default ``figures/<profile>/<notebook>/``), atomically.

    The numbers behind a figure, with 6 significant digits so that re-runs give identical bytes.
    """
    path = _directory(notebook, profile, directory) / f"{name}.csv"
    return atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))
