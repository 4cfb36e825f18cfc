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

import ast
import contextlib
import copy
import html
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
import papermill as pm
import yaml
from papermill.engines import NBClientEngine, papermill_engines

from ._io import atomic_write_text
from .paths import (
    DRY_RUN_ENV,
    FORECAST_ENV,
    MIN_FORECAST_STEPS,
    PART_ENV,
    PROFILES,
    RUNS_ENV,
    DryRun,
    executed_dir,
    notebooks_dir,
    repo_root,
    runs_dir,
)

RUNNER_ENV = "DROPOUTLAB_RUNNER"  # set for kernels the runner starts: parameters were injected
REGISTRY_ENV = "DROPOUTLAB_REGISTRY"  # the claims registry a kernel's Ledger reads
PROGRESS_ENV = "DROPOUTLAB_PROGRESS"  # a file the kernel appends progress lines to; the runner prints them
STORE_PROFILES = ("full", "paper")  # profiles whose training runs go to runs/<profile>/ (train once, resume)
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


def profile_parameters(name: str, profile: str, root: Path | None = None) -> dict[str, Any]:
    """``notebooks.<name>.common`` ∪ ``notebooks.<name>.<profile>`` from params.yaml, plus ``profile``."""
    if profile not in PROFILES:
        raise NotebookParameterError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    section = load_params(root).get("notebooks", {}).get(name)
    if section is None:
        raise NotebookParameterError(f"params.yaml has no section notebooks.{name}")
    return {**section.get("common", {}), **(section.get(profile) or {}), "profile": profile}


def use_profile(name: str, namespace: dict[str, Any]) -> None:
    """Give an interactively run notebook the parameters of the profile its parameters cell names.

    Called right after a notebook's imports with ``globals()``. Under the runner (and so under DVC)
    papermill has already injected the profile's parameters and this does nothing. In JupyterLab
    the parameters cell's defaults are the ``smoke`` profile's; set ``profile = "quick"`` there and
    this loads the quick profile's values from params.yaml, so the notebook computes — and writes to
    ``figures/quick/`` and ``reports/quick/`` — exactly what the pipeline would.
    """
    if os.environ.get(RUNNER_ENV) == "1":
        return
    profile = namespace.get("profile")
    if profile == "smoke":
        return
    params = profile_parameters(name, profile)
    changed = {k: v for k, v in params.items() if namespace.get(k) != v}
    namespace.update(params)
    if changed:
        print(f"{name}: the {profile} profile's parameters from params.yaml: "
              + ", ".join(f"{k}={v!r}" for k, v in changed.items()))


def _shape(value: Any) -> str:
    """A value's type as the parameter checks compare it: 'int', 'float', 'str', 'bool', 'None', 'list[int]', …"""
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        inner = sorted({_shape(v) for v in value})
        return f"list[{'|'.join(inner)}]" if inner else "list"
    return type(value).__name__


def _accepts(allowed: set[str], value: Any) -> bool:
    shape = _shape(value)
    if shape in allowed or (shape == "int" and "float" in allowed):
        return True
    if shape.startswith("list") and any(a.startswith("list") for a in allowed):
        inner = {t for a in allowed if a.startswith("list[") for t in a[5:-1].split("|")}
        return all(_accepts(inner, v) for v in value) if inner else True
    return False


def _range_problem(key: str, value: Any) -> str | None:
    """Ranges by naming convention: seeds, counts, keep rates, drop probabilities, learning rates."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if key == "seeds":
        if not value or len(set(value)) != len(value) or any(not isinstance(v, int) or v < 0 for v in value):
            return "a non-empty list of distinct non-negative integers, e.g. [0, 1, 2]"
    elif key in {"epochs", "batch_size"} or key.startswith("n_") or key.endswith(("_epochs", "_steps", "_samples")):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return "a positive integer"
    elif key.startswith("keep"):
        values = value if isinstance(value, list) else [value]
        if any(number(v) and not 0 < v <= 1 for v in values):
            return "keep rates in (0, 1]"
    elif key == "p" or key.startswith(("p_", "drop")):
        values = value if isinstance(value, list) else [value]
        if any(number(v) and not 0 <= v < 1 for v in values):
            return "drop probabilities in [0, 1)"
    elif key == "lr" or key.endswith("_lr"):
        if number(value) and value <= 0:
            return "a positive learning rate"
    return None


def check_overrides(name: str, overrides: dict[str, Any], declared: dict[str, Any], section: dict[str, Any]) -> None:
    """Check each ``-p`` value's type and range before any kernel starts; the error names the parameter.

    The allowed types are those of the parameters cell's default and of every profile's value in
    params.yaml (an ``int`` is accepted where a ``float`` is); ranges follow the naming conventions
    of :func:`_range_problem`.
    """
    for key, value in overrides.items():
        if key not in declared:
            continue  # reported as unknown by the caller, with the declared names
        examples = [ast.literal_eval(declared[key]["default"])] + [
            part[key] for part in section.values() if isinstance(part, dict) and key in part]
        allowed = {_shape(v) for v in examples}
        if not _accepts(allowed, value):
            shown = ", ".join(dict.fromkeys(repr(v) for v in examples))
            raise NotebookParameterError(
                f"{name}: parameter {key!r} = {value!r} ({_shape(value)}) is not allowed: expected "
                f"{' or '.join(sorted(allowed))}, as in the notebook and params.yaml ({shown})")
        problem = _range_problem(key, value)
        if problem:
            raise NotebookParameterError(f"{name}: parameter {key!r} = {value!r}: expected {problem}")


def notebook_parameters(name: str, profile: str, overrides: dict[str, Any] | None = None,
                        root: Path | None = None) -> dict[str, Any]:
    """The parameters a run of ``name`` under ``profile`` gets, validated against the notebook.

    Unknown notebooks, profiles and parameters, and ``overrides`` of the wrong type or range, are
    refused with an error naming them — before any kernel starts.
    """
    root = root or repo_root()
    if profile not in PROFILES:
        raise NotebookParameterError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    known = list_notebooks(root)
    if name not in known:
        raise NotebookParameterError(f"unknown notebook {name!r}; known: {', '.join(known) or '(none)'}")
    section = load_params(root).get("notebooks", {}).get(name, {})
    if profile not in section:
        raise NotebookParameterError(f"{name}: params.yaml has no {profile!r} section for this notebook "
                                     f"(it has: {', '.join(k for k in section if k != 'common')})")
    declared = pm.inspect_notebook(str(notebooks_dir(root) / f"{name}.ipynb"))
    overrides = dict(overrides or {})
    params = {**section.get("common", {}), **(section.get(profile) or {}), **overrides, "profile": profile}
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise NotebookParameterError(
            f"{name}: unknown parameter(s) {', '.join(unknown)}; the notebook declares: {', '.join(sorted(declared))}")
    check_overrides(name, overrides, declared, section)
    return params


def dry_run_settings(name: str, root: Path | None = None) -> tuple[DryRun, dict[str, Any]]:
    """``dry_run`` of params.yaml: the caps of a dry run, and notebook ``name``'s analysis sizes."""
    section = load_params(root).get("dry_run") or {}
    steps, examples, shrink = section.get("steps"), section.get("examples"), section.get("shrink") or {}
    for key, value in (("steps", steps), ("examples", examples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NotebookParameterError(f"params.yaml dry_run.{key} must be a positive integer, got {value!r}")
    unknown = sorted(set(shrink) - set(list_notebooks(root)))
    if unknown:
        raise NotebookParameterError(f"params.yaml dry_run.shrink: unknown notebook(s) {', '.join(unknown)}")
    return DryRun(steps, examples), dict(shrink.get(name) or {})


def strip_volatile(nb: dict[str, Any]) -> dict[str, Any]:
    """Remove what changes from run to run: papermill/timing metadata, random cell ids, stream chunking.

    The kernel sends a cell's printed output in chunks whose boundaries depend on timing, so
    consecutive ``stream`` outputs of the same name are merged (nbconvert's coalescing), as they read.
    """
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor  # heavy: loaded only when a run is written

    nb = nbformat.from_dict(copy.deepcopy(nb))
    CoalesceStreamsPreprocessor().preprocess(nb, {})
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
def kernel_env(threads: int | None, root: Path, runs: list[Path] | None = None, output_root: Path | None = None,
               part: str | None = None, dry: DryRun | None = None, forecast: str | None = None):
    """Environment a kernel started inside the block inherits, restored afterwards.

    * ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = ``cpu_threads``: CPU results are bit-identical only at
      a fixed thread count;
    * ``MPLBACKEND`` removed, so the kernel uses the inline backend and executed notebooks show their
      figures whoever starts the run (a Makefile or a CI job may export ``Agg``);
    * ``DROPOUTLAB_RUNNER=1`` (parameters were injected: :func:`use_profile` leaves them alone) and
      ``DROPOUTLAB_REGISTRY`` (the claims registry of ``root``, whatever the kernel's working directory);
    * ``DROPOUTLAB_PROGRESS``: a file the kernel appends progress lines to, printed here as they come
      (a kernel captures its own stdout and stderr into the notebook, so they cannot go there);
    * ``DROPOUTLAB_RUNS`` (``runs``: the folder new training runs go to, then the folders searched for
      finished ones; see :func:`dropoutlab.train.run_store`) for the full and paper profiles;
    * for a scratch run (``output_root`` other than ``root``): ``DROPOUTLAB_ROOT`` = ``output_root``, so
      figures and metrics go there, and ``DROPOUTLAB_DATA`` = ``root``'s data;
    * ``DROPOUTLAB_PART`` for a training stage (``part``): its ledger records without judging a share;
    * ``DROPOUTLAB_DRY_RUN`` for a dry run (``dry``): see :func:`dropoutlab.paths.dry_run`;
    * ``DROPOUTLAB_FORECAST`` for a time forecast (``forecast``, "STEPS:LOG"): see :func:`dropoutlab.paths.forecast`.
    """
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise NotebookParameterError(f"cpu_threads must be a positive integer or null, got {threads!r}")
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MPLBACKEND", RUNNER_ENV, REGISTRY_ENV, PROGRESS_ENV, RUNS_ENV,
            PART_ENV, DRY_RUN_ENV, FORECAST_ENV, "DROPOUTLAB_ROOT", "DROPOUTLAB_DATA")
    saved = {key: os.environ.get(key) for key in keys}
    try:
        if threads is not None:
            os.environ.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
        os.environ.pop("MPLBACKEND", None)
        os.environ[RUNNER_ENV] = "1"
        os.environ.setdefault(REGISTRY_ENV, str(root / "claims.yaml"))
        if runs:
            os.environ[RUNS_ENV] = os.pathsep.join(str(folder) for folder in runs)
        if part:
            os.environ[PART_ENV] = part
        if dry is not None:
            os.environ[DRY_RUN_ENV] = f"{dry.steps}:{dry.examples}"
        if forecast is not None:
            os.environ[FORECAST_ENV] = forecast
        if output_root is not None and Path(output_root).resolve() != Path(root).resolve():
            os.environ["DROPOUTLAB_ROOT"] = str(output_root)
            os.environ.setdefault("DROPOUTLAB_DATA", str(root / "data" / "raw"))
        with tempfile.TemporaryDirectory(prefix="dropoutlab-progress-") as folder:
            log = Path(folder) / "progress.log"
            log.touch()
            os.environ[PROGRESS_ENV] = str(log)
            stop = threading.Event()
            follower = threading.Thread(target=_follow, args=(log, stop), daemon=True)
            follower.start()
            try:
                yield
            finally:
                stop.set()
                follower.join()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _follow(path: Path, stop: threading.Event) -> None:
    """Print the lines a kernel appends to ``path`` (training runs: ``train.progress_line``) to stderr."""
    with open(path, encoding="utf-8") as log:
        while True:
            line = log.readline()
            if line:
                print(line, end="", file=sys.stderr, flush=True)
            elif stop.is_set():
                return
            else:
                time.sleep(0.2)


class _LoggingEngine(NBClientEngine):
    """papermill's nbclient engine, printing one line per code cell that ran ≥ 1 s, with elapsed times.

    The lines go to the runner's stderr (the terminal, DVC's log), never into the executed notebook.
    """

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
        started = time.perf_counter()
        cell_started = {"t": started}
        original_start, original_complete = nb_man.cell_start, nb_man.cell_complete
        code_cells = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]
        name = Path(nb_man.nb.metadata.get("papermill", {}).get("input_path") or "notebook").stem

        def cell_start(cell, cell_index=None, **kw):
            cell_started["t"] = time.perf_counter()
            return original_start(cell, cell_index=cell_index, **kw)

        def cell_complete(cell, cell_index=None, **kw):
            result = original_complete(cell, cell_index=cell_index, **kw)
            now = time.perf_counter()
            if cell.cell_type == "code" and now - cell_started["t"] >= 1.0:
                first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
                position = code_cells.index(cell_index) + 1 if cell_index in code_cells else "?"
                print(f"  {name}: cell {position}/{len(code_cells)} {now - cell_started['t']:6.1f} s "
                      f"(total {now - started:6.1f} s)  {first[:60]}", file=sys.stderr, flush=True)
            return result

        nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


papermill_engines.register("dropoutlab", _LoggingEngine)


_HTML_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 72em; margin: 2em auto; padding: 0 1em; line-height: 1.45; }}
pre, code {{ font-family: ui-monospace, monospace; font-size: 0.85em; }}
.jp-InputArea pre {{ background: #f6f8fa; padding: .6em; overflow-x: auto; }}
.jp-OutputArea pre {{ padding: .3em .6em; overflow-x: auto; }}
.jp-InputPrompt, .jp-OutputPrompt {{ display: none; }}
img {{ max-width: 100%; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} td, th {{ border: 1px solid #ddd; padding: 2px 6px; }}
</style></head>
<body>
<p><a href="../../index.html">← all claims and notebooks</a></p>
{body}
</body></html>
"""


def export_html(nb_path: Path) -> Path:
    """A light, self-contained HTML page of an executed notebook (figures inline, headings anchored).

    nbconvert's ``basic`` template in a small page: no external scripts or fonts, so it reads the same
    offline; ``<h2 id="Claim-check">`` anchors let the claims report link to a notebook's section.
    """
    import nbconvert  # heavy (templates, bleach, ...): loaded only when a page is written

    body, _ = nbconvert.HTMLExporter(template_name="basic").from_notebook_node(nbformat.read(nb_path, as_version=4))
    return atomic_write_text(nb_path.with_suffix(".html"), _HTML_PAGE.format(title=html.escape(nb_path.stem), body=body))


def run_notebook(name: str, profile: str = "quick", overrides: dict[str, Any] | None = None,
                 root: Path | None = None, output_root: Path | None = None, html: bool = True,
                 part: str | None = None, dry_run: bool = False, forecast: int | None = None) -> Path:
    """Execute ``notebooks/<name>.ipynb`` and return the path of the executed copy.

    ``root`` holds params.yaml and notebooks/; ``output_root`` (default ``root``) is the
    kernel's working directory, where figures, metrics and the executed notebook go.

    Full and paper profiles keep their training runs in ``runs/<profile>/<name>/<part>/`` (``part``
    default ``main``) and reuse any finished run found under ``runs/<profile>/``: a stage re-run
    after an interruption resumes, an analysis re-run does not retrain. A ``part`` other than main
    is a training stage (say ``seed-3``, with ``-p seeds=[3]``): its executed notebook, figures and
    metrics go to that folder, never over the profile's record.

    ``dry_run``: the profile's models, data pipeline, optimisers and loops, each training run
    stopped after ``dry_run.steps`` updates (params.yaml) on at most ``dry_run.examples`` images per
    split, with the analysis sizes of ``dry_run.shrink.<name>`` (``overrides`` still win); nothing
    is stored in ``runs/``, and the outputs go to ``dry-run/`` (default ``output_root``), never over
    a profile's record. It checks a configuration on a CPU before GPU time is spent on it.

    ``forecast`` (a number of updates, ≥ 5): a time forecast of the profile on this machine — full
    data, full analysis sizes, every seed, but each training loop stops after ``forecast`` timed
    updates (:func:`dropoutlab.paths.forecast`); nothing is stored in or loaded from ``runs/``, the
    outputs go to ``forecast/`` and the forecast itself to ``forecast/<profile>/<name>.json``
    (:func:`summarise_forecast`). It says what a profile costs before hours are spent on it.
    """
    root = root or repo_root()
    dry = None
    forecast_log = None
    if forecast is not None:
        if (not isinstance(forecast, int) or isinstance(forecast, bool) or forecast < MIN_FORECAST_STEPS):
            raise NotebookParameterError(f"forecast must be an integer ≥ {MIN_FORECAST_STEPS} (updates timed per "
                                         f"training loop), got {forecast!r}")
        if dry_run or part is not None:
            raise NotebookParameterError("forecast: a forecast runs the whole notebook for real sizes; it takes "
                                         "neither a dry run nor a part")
    if dry_run:
        if part is not None:
            raise NotebookParameterError(f"part {part!r}: a dry run has no parts (it keeps no runs)")
        dry, shrink = dry_run_settings(name, root)
        overrides = {**shrink, **(overrides or {})}
    params = notebook_parameters(name, profile, overrides, root)
    runs, part = None, None if part == "main" else part
    if part is not None and (profile not in STORE_PROFILES or not part.replace("-", "").replace("_", "").isalnum()):
        raise NotebookParameterError(f"part {part!r}: only the {' and '.join(STORE_PROFILES)} profiles have parts, "
                                     "named with letters, digits, '-' and '_'")
    if dry is not None:
        output_root = output_root or root / "dry-run"
    elif forecast is not None:
        output_root = Path(output_root or root / "forecast")
        forecast_log = output_root / profile / f".{name}.forecast.jsonl"
        forecast_log.parent.mkdir(parents=True, exist_ok=True)
        forecast_log.unlink(missing_ok=True)
    elif profile in STORE_PROFILES:
        folder = runs_dir(profile, root) / name / (part or "main")
        runs = [folder / "checkpoints", runs_dir(profile, root)]
        runs[0].mkdir(parents=True, exist_ok=True)  # a DVC output even when every run was found done
        if part is not None:
            output_root = folder
    output_root = Path(output_root or root)
    out = executed_dir(profile, output_root) / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.running.ipynb")
    failed = out.with_name(f"{name}.failed.ipynb")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    threads = load_params(root).get("cpu_threads")
    started = time.perf_counter()
    try:
        with kernel_env(threads, root, runs, output_root, part, dry,
                        None if forecast_log is None else f"{forecast}:{forecast_log}"):
            pm.execute_notebook(str(notebooks_dir(root) / f"{name}.ipynb"), str(tmp), parameters=params,
                                kernel_name="python3", progress_bar=False, cwd=str(output_root),
                                engine_name="dropoutlab")
    except BaseException:
        if tmp.is_file():  # keep the partial run to look at, never over the committed result
            os.replace(tmp, failed)
            print(f"{name}: the partially executed notebook is in {failed}", file=sys.stderr)
        raise
    nb = strip_volatile(nbformat.read(tmp, as_version=4))
    atomic_write_text(out, nbformat.writes(nbformat.from_dict(nb)) + "\n")
    tmp.unlink(missing_ok=True)
    failed.unlink(missing_ok=True)
    if html:
        export_html(out)
    if forecast_log is not None:
        summary = summarise_forecast(forecast_log, time.perf_counter() - started, name=name, profile=profile)
        atomic_write_text(forecast_path(name, profile, output_root), json.dumps(summary, indent=2) + "\n")
        forecast_log.unlink(missing_ok=True)
    return out


def forecast_path(name: str, profile: str, output_root: Path) -> Path:
    """Where :func:`run_notebook` writes notebook ``name``'s time forecast for ``profile``."""
    return Path(output_root) / profile / f"{name}.forecast.json"


def summarise_forecast(log: Path, wall_seconds: float, *, name: str, profile: str) -> dict[str, Any]:
    """A forecast's total from its log (one JSON object per training loop, :class:`dropoutlab.train.ForecastClock`).

    ``total = wall − Σ measured + Σ forecast``: what ran at its real size (data, analysis, kernel)
    counts as measured, each training loop as its forecast.
    """
    loops = [json.loads(line) for line in Path(log).read_text(encoding="utf-8").splitlines() if line.strip()]
    training = sum(loop["forecast_seconds"] for loop in loops)
    other = max(wall_seconds - sum(loop["measured_seconds"] for loop in loops), 0.0)
    total = training + other
    return {"notebook": name, "profile": profile, "loops": len(loops), "training_seconds": training,
            "other_seconds": other, "total_seconds": total, "wall_seconds": wall_seconds, "by_loop": loops}


def format_forecast(summary: dict[str, Any], parts: int = 1) -> str:
    """A few lines for the terminal: the forecast total, its split, and per part of ``parts`` training stages."""
    def minutes(seconds: float) -> str:
        return f"{seconds / 60:.1f} min"

    by_what: dict[str, float] = {}
    for loop in summary["by_loop"]:
        by_what[f"{loop['loop']} {loop['what']}"] = by_what.get(f"{loop['loop']} {loop['what']}", 0.0) + \
            loop["forecast_seconds"]
    top = ", ".join(f"{k} {minutes(v)}" for k, v in sorted(by_what.items(), key=lambda kv: -kv[1])[:6])
    line = (f"forecast {summary['notebook']} ({summary['profile']}): {minutes(summary['total_seconds'])} in all — "
            f"training {minutes(summary['training_seconds'])} ({summary['loops']} loops), everything else "
            f"{minutes(summary['other_seconds'])}")
    if parts > 1:
        line += f"; about {minutes(summary['total_seconds'] / parts)} per part ({parts} parts)"
    return line + (f"\n  training by model: {top}" if top else "") + f"\n  (this forecast took " \
        f"{minutes(summary['wall_seconds'])}; {math.ceil(summary['wall_seconds'])} s)"


def script_to_notebook(script: Path, notebook: Path) -> Path:
    """Convert a jupytext percent script into a clean source notebook with stable cell ids.

    Authoring route for new notebooks: ``python -m dropoutlab.notebooks --from-script X.py notebooks/NN_x.ipynb``.
    """
    import jupytext  # an authoring tool, loaded only for this conversion

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
