"""One figure style for the compendium; ``save_figure`` writes PNG + PDF atomically and reproducibly."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from ._io import atomic_path
from .paths import figures_dir

# Fixed metadata: no dates or versions in the files, so re-runs give identical bytes (dvc.lock stays put).
_PNG_META = {"Software": None}
_PDF_META = {"Creator": None, "Producer": None, "CreationDate": None}


def set_style() -> None:
    """Seaborn's paper style with the compendium's palette and sizes."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "figure.figsize": (6.4, 4.0),
                                "axes.titlesize": "medium", "svg.hashsalt": "dropoutlab"})


def save_figure(fig, name: str, notebook: str | None = None, directory: Path | str | None = None) -> Path:
    """Save ``fig`` as ``<directory>/<name>.png`` and ``.pdf`` (default ``figures/<notebook>/``).

    Returns the PNG path. Each file is written to a temporary name and renamed, so an
    interrupted run never leaves half a figure behind.
    """
    if directory is None:
        if notebook is None:
            raise ValueError("save_figure: give the notebook name or a directory")
        directory = figures_dir(notebook)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for ext, meta in (("png", _PNG_META), ("pdf", _PDF_META)):
        with atomic_path(directory / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, metadata=meta, bbox_inches="tight")
    return directory / f"{name}.png"
