"""Run a claim notebook with a profile from ``params.yaml``: strict parameters, clean outputs.

``run_notebook("01_dropout_vs_none", "quick", {"seeds": 5})``

* parameters = ``notebooks.<name>.common`` ∪ ``notebooks.<name>.<profile>`` ∪ overrides, plus
  ``profile`` itself; a name the notebook's parameters cell does not declare is refused
  (papermill itself only warns);
* the kernel (``python3``) runs in ``root``, so the notebook writes ``figures/<name>/`` and
  ``reports/metrics/<name>.json`` there;
* the executed notebook is written to ``reports/notebooks/<name>.ipynb`` with volatile
  metadata (timings, papermill paths, random cell ids) removed, plus an HTML export;
* the kernel gets ``cpu_threads`` (params.yaml) as OMP/MKL thread count: CPU results are
  bit-identical only at a fixed thread count, so the count is a recorded parameter.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from ._io import atomic_write_text
from .paths import notebooks_dir, repo_root

PROFILES = ("smoke", "quick", "paper")
VOLATILE_CELL_KEYS = ("papermill", "execution")


class NotebookParameterError(ValueError):
    """Unknown notebook, profile or parameter."""


def load_params(root: Path | None = None) -> dict[str, Any]:
    path = (root or repo_root()) / "params.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"params.yaml not found at {path}")
    return yaml.safe_load(path.read_text()) or {}


def list_notebooks(root: Path | None = None) -> list[str]:
    return sorted(p.stem for p in notebooks_dir(root).glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(name: str, profile: str, overrides: dict[str, Any] | None = None,
                        root: Path | None = None) -> dict[str, Any]:
    """The parameters a run of ``name`` under ``profile`` gets, validated against the notebook."""
    import papermill as pm

    root = root or repo_root()
    if profile not in PROFILES:
        raise NotebookParameterError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    known = list_notebooks(root)
    if name not in known:
        raise NotebookParameterError(f"unknown notebook {name!r}; known: {', '.join(known) or '(none)'}")
    section = load_params(root).get("notebooks", {}).get(name, {})
    params = {**section.get("common", {}), **section.get(profile, {}), **(overrides or {}), "profile": profile}
    declared = set(pm.inspect_notebook(str(notebooks_dir(root) / f"{name}.ipynb")))
    unknown = sorted(set(params) - declared)
    if unknown:
        raise NotebookParameterError(
            f"{name}: unknown parameter(s) {', '.join(unknown)}; the notebook declares: {', '.join(sorted(declared))}")
    return params


def strip_volatile(nb: dict[str, Any]) -> dict[str, Any]:
    """Remove what changes from run to run: papermill/timing metadata and random cell ids."""
    nb = copy.deepcopy(nb)
    nb.get("metadata", {}).pop("papermill", None)
    for index, cell in enumerate(nb.get("cells", [])):
        for key in VOLATILE_CELL_KEYS:
            cell.get("metadata", {}).pop(key, None)
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            cell["id"] = "injected-parameters"
        elif "id" in cell and not cell["id"]:
            cell["id"] = f"cell-{index}"
    return nb


@contextlib.contextmanager
def _thread_env(threads: int | None):
    """Set the thread-count variables a kernel started inside the block inherits."""
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {key: os.environ.get(key) for key in keys}
    try:
        if threads is not None:
            if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
                raise NotebookParameterError(f"cpu_threads must be a positive integer or null, got {threads!r}")
            os.environ.update({key: str(threads) for key in keys})
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def export_html(nb_path: Path) -> Path:
    import nbconvert
    import nbformat

    body, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(nb_path, as_version=4))
    return atomic_write_text(nb_path.with_suffix(".html"), body)


def run_notebook(name: str, profile: str = "quick", overrides: dict[str, Any] | None = None,
                 root: Path | None = None, output_root: Path | None = None, html: bool = True) -> Path:
    """Execute ``notebooks/<name>.ipynb`` and return the path of the executed copy.

    ``root`` holds params.yaml and notebooks/; ``output_root`` (default ``root``) is the
    kernel's working directory, where figures, metrics and the executed notebook go.
    """
    import nbformat
    import papermill as pm

    root = root or repo_root()
    output_root = Path(output_root or root)
    params = notebook_parameters(name, profile, overrides, root)
    out = output_root / "reports" / "notebooks" / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.running.ipynb")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    threads = load_params(root).get("cpu_threads")
    try:
        with _thread_env(threads):
            pm.execute_notebook(str(notebooks_dir(root) / f"{name}.ipynb"), str(tmp), parameters=params,
                                kernel_name="python3", progress_bar=False, cwd=str(output_root))
        nb = strip_volatile(nbformat.read(tmp, as_version=4))
        atomic_write_text(out, nbformat.writes(nbformat.from_dict(nb)) + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    if html:
        export_html(out)
    return out


def script_to_notebook(script: Path, notebook: Path) -> Path:
    """Convert a jupytext percent script into a clean source notebook with stable cell ids.

    Authoring route for new notebooks: ``python -m dropoutlab.notebooks --from-script X.py notebooks/NN_x.ipynb``.
    """
    import jupytext
    import nbformat

    nb = jupytext.read(script)
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index:02d}"
        cell.metadata.pop("lines_to_next_cell", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    return atomic_write_text(notebook, nbformat.writes(nb) + "\n")


def check_clean(paths: list[Path]) -> list[str]:
    """Problems with source notebooks: outputs, execution counts, no 'parameters' cell."""
    import nbformat

    problems = []
    for path in paths:
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as err:  # noqa: BLE001 — any parse failure is reported by name
            problems.append(f"{path}: unreadable ({err})")
            continue
        code = [c for c in nb.cells if c.cell_type == "code"]
        if any(c.get("outputs") or c.get("execution_count") for c in code):
            problems.append(f"{path}: has outputs or execution counts (clear them before committing)")
        if not any("parameters" in c.metadata.get("tags", []) for c in code):
            problems.append(f"{path}: no cell tagged 'parameters'")
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m dropoutlab.notebooks FILE...``: fail if a source notebook has outputs.

    ``python -m dropoutlab.notebooks --from-script SCRIPT.py NOTEBOOK.ipynb`` converts instead.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--from-script"]:
        if len(args) != 3:
            print("usage: python -m dropoutlab.notebooks --from-script SCRIPT.py NOTEBOOK.ipynb", file=sys.stderr)
            return 2
        print(f"wrote {script_to_notebook(Path(args[1]), Path(args[2]))}")
        return 0
    paths = [Path(a) for a in args]
    problems = check_clean(paths)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{len(paths)} notebook(s) clean")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
