"""Sweeps over seeds and parameters: one notebook run per (parameters, seed), locally or on a cluster.

``dropoutlab sweep 01_dropout_vs_none --profile quick -p lr=0.001,0.01 --seeds 0,1,2 --engine submitit``

Every combination of the ``-p`` values and seeds is one *job*: the notebook executed by
:func:`dropoutlab.notebooks.run_notebook` with those overrides (a seed ``s`` is ``seeds=[s]``). Jobs run

* ``local``: one after another in this process;
* ``submitit``: one job each of `submitit <https://github.com/facebookincubator/submitit>`_'s executor —
  Slurm when ``sbatch`` is there (``--cluster slurm``), or its own ``local`` (subprocesses) and ``debug``
  (in this process) modes (the tests use ``local``). Executor settings (partition, time, CPUs, GPUs) come from a
  YAML file (``--config``) and are passed to ``AutoExecutor.update_parameters`` unchanged;
* ``dvc-queue``: one queued DVC experiment each (:func:`queue_dvc`), run by ``dvc queue start -j N``.

A one-seed job (``--seeds``) records its measurements without judging them, as a pipeline training part
does (a rule needs several runs); without ``--seeds`` a job runs the profile's seeds and is judged.

Why submitit and not Ray: submitit is a pure-Python Slurm client (``sbatch``/``sacct``) with no daemon or
cluster of its own to start, and its local executor runs the same job objects on one machine; Ray needs a
running Ray cluster (on Slurm, one started inside an allocation) for what is here one independent job per
run. Scheduling is submitit's (or Slurm's); this module only plans jobs and skips finished ones.

Where results go — never over the pipeline's: a sweep has its own output root,
``sweeps/<sweep name>/<job>/`` (job = its overrides, e.g. ``lr-0.01_seed-3``), laid out like the
repository: ``reports/<profile>/metrics/<notebook>.json``, ``reports/<profile>/notebooks/<notebook>.ipynb``
(+ ``.html``), ``figures/<profile>/<notebook>/`` and, for the full and paper profiles, the job's own training
runs ``runs/<profile>/`` — a job folder is a small root of its own whose ``params.yaml``, ``claims.yaml`` and
``notebooks/`` are links to the repository's, so nothing is written under the repository's ``reports/``,
``figures/`` or ``runs/``. ``sweeps/`` ignores itself (its own ``.gitignore``): nothing of it is committed.

Resuming: a job is finished when its metrics file and executed notebook exist (the runner writes both
atomically, the notebook last); running a sweep again submits only the unfinished jobs. ``job.json`` in
each job folder holds the parameters the job ran with; if params.yaml has changed since, the sweep
refuses to mix old and new results (start a sweep with another ``--name``).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import submitit
import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from ._io import atomic_write_text
from .notebooks import load_params, notebook_parameters, run_notebook
from .paths import PART_ENV, PROFILES, executed_dir, metrics_dir, repo_root
from .pipeline import notebook_parts

ENGINES = ("local", "submitit")
CLUSTERS = ("auto", "slurm", "local", "debug")  # submitit's: auto = Slurm when available, else local
LINKED = ("params.yaml", "claims.yaml", "notebooks")  # what a job folder shares with the repository
SWEEPS_DIR = "sweeps"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Job:
    """One notebook run of a sweep: ``overrides`` on top of the profile, outputs under ``folder``."""

    notebook: str
    profile: str
    overrides: dict[str, Any]
    folder: Path
    params: dict[str, Any] = field(repr=False)  # every parameter the run gets (profile ∪ overrides)
    source: Path = field(repr=False)  # the repository: params.yaml, claims.yaml, notebooks/, data/

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def metrics(self) -> Path:
        return metrics_dir(self.profile, self.folder) / f"{self.notebook}.json"

    @property
    def executed(self) -> Path:
        return executed_dir(self.profile, self.folder) / f"{self.notebook}.ipynb"

    @property
    def share(self) -> bool:
        """One seed's share of a run (``--seeds``): recorded, not judged (see :func:`_job_env`)."""
        return "seeds" in self.overrides

    def finished(self) -> bool:
        """Metrics and executed notebook both written (atomically, the notebook last) by an earlier run."""
        return self.metrics.is_file() and self.executed.is_file()


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did: jobs found finished (skipped), run now, and failed (job name → error)."""

    root: Path
    skipped: list[str]
    ran: list[str]
    failed: dict[str, str]


def split_values(text: str) -> list[str]:
    """``"0.1,0.5"`` → ``["0.1", "0.5"]``; commas inside ``[...]``/``{...}`` belong to one value (``[32,32],[64]``)."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    return values


def parse_grid(pairs: list[str]) -> dict[str, list[Any]]:
    """``["lr=0.001,0.01", "widths=[32,32],[64,64]"]`` → ``{"lr": [0.001, 0.01], "widths": [[32, 32], [64, 64]]}``.

    Each value is a YAML value, as for ``dropoutlab run-notebook -p``; a key may appear once.
    """
    grid: dict[str, list[Any]] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise ValueError(f"-p expects KEY=V1,V2,... (YAML values, e.g. lr=0.001,0.01), got {pair!r}")
        if key in grid:
            raise ValueError(f"-p {key}: given twice; list its values once, comma-separated")
        if key == "seeds":
            raise ValueError("-p seeds: use --seeds 0,1,2 (each seed is one job)")
        try:
            grid[key] = [yaml.safe_load(value) for value in split_values(text)]
        except yaml.YAMLError as err:
            raise ValueError(f"-p {key}: {text!r} is not a comma-separated list of YAML values ({err})") from None
        if any(not value.strip() for value in split_values(text)):
            raise ValueError(f"-p {key}: an empty value in {text!r}")
    return grid


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0,1,2"`` or ``"0-4"`` (inclusive), or both mixed: distinct non-negative integers, in order given."""
    if text is None:
        return None
    seeds: list[int] = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item)
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise ValueError(f"--seeds expects non-negative integers or ranges like 0,1,2 or 0-4, got {text!r}")
        seeds += range(int(match[1]), int(match[2] or match[1]) + 1)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: a seed is listed twice in {text!r}")
    return seeds


def _slug(value: Any) -> str:
    if isinstance(value, list):
        return "-".join(_slug(v) for v in value) or "none"
    return re.sub(r"[^A-Za-z0-9.]+", "", str(value)) or "none"


def job_name(overrides: dict[str, Any]) -> str:
    """A job folder's name from its overrides: ``{"lr": 0.01, "seeds": [3]}`` → ``lr-0.01_seed-3`` (``main`` if none)."""
    parts = []
    for key, value in overrides.items():
        label = "seed" if key == "seeds" else key
        parts.append(f"{label}-{_slug(value)}")
    return "_".join(parts) or "main"


def plan(notebook: str, profile: str, grid: dict[str, list[Any]] | None = None, seeds: list[int] | None = None,
         name: str | None = None, root: Path | None = None, out: Path | None = None) -> list[Job]:
    """The jobs of a sweep, each checked like ``run-notebook -p`` (unknown names, types, ranges) before any runs.

    ``out`` (default ``<root>/sweeps``) / ``name`` (default ``<notebook>-<profile>``) / job name is each
    job's folder. The product of the ``grid`` values and ``seeds`` (each ``seeds=[s]``) in the order given.
    """
    root = Path(root or repo_root()).resolve()
    if profile not in PROFILES:
        raise ValueError(f"--profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    name = name or f"{notebook}-{profile}"
    if not _NAME.match(name):
        raise ValueError(f"--name {name!r}: letters, digits, '.', '-' and '_' only")
    grid = dict(grid or {})
    if seeds is not None:
        if not seeds:
            raise ValueError("--seeds: give at least one seed")
        grid["seeds"] = [[seed] for seed in seeds]
    sweep_dir = Path(out or root / SWEEPS_DIR).resolve() / name
    jobs, seen = [], set()
    for values in itertools.product(*grid.values()):
        overrides = dict(zip(grid, values))
        params = notebook_parameters(notebook, profile, overrides, root)
        folder = sweep_dir / job_name(overrides)
        if folder.name in seen:
            raise ValueError(f"two jobs would share the folder {folder.name!r}: give distinct values")
        seen.add(folder.name)
        jobs.append(Job(notebook, profile, overrides, folder, params, root))
    return jobs


def _prepare(job: Job) -> None:
    """The job folder as a small root: links to the repository's inputs, and ``job.json`` (what it runs with)."""
    job.folder.mkdir(parents=True, exist_ok=True)
    ignore = job.folder.parent.parent / ".gitignore"
    if job.folder.parent.parent.name == SWEEPS_DIR and not ignore.exists():
        atomic_write_text(ignore, "# sweep outputs (dropoutlab sweep): never committed\n*\n")
    for item in LINKED:
        link = job.folder / item
        if not link.is_symlink():
            if link.exists():
                raise RuntimeError(f"{link} exists and is not a link to the repository's {item}")
            link.symlink_to(job.source / item)
    record = {"notebook": job.notebook, "profile": job.profile, "overrides": job.overrides, "params": job.params}
    atomic_write_text(job.folder / "job.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def check_unchanged(job: Job) -> None:
    """Refuse to resume a job whose recorded parameters differ from today's params.yaml (no mixed sweeps)."""
    path = job.folder / "job.json"
    if not path.is_file():
        return
    before = json.loads(path.read_text())["params"]
    now = json.loads(json.dumps(job.params))
    if before != now:
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise ValueError(f"{job.folder}: ran with other parameters ({', '.join(changed)} changed since, "
                         "in params.yaml?); start a new sweep with --name, or delete that folder")


@contextlib.contextmanager
def _job_env(job: Job) -> Iterator[None]:
    """The job's kernel environment, restored afterwards.

    * ``DROPOUTLAB_DATA`` = the repository's ``data/raw`` unless set: a job folder has no data of its own;
    * ``DROPOUTLAB_PART`` = the job's name for a one-seed job (``--seeds``): the claims' rules need several
      runs, so its ledger records the seed's measurements without judging, as a pipeline training part does.
    """
    saved = {key: os.environ.get(key) for key in ("DROPOUTLAB_DATA", PART_ENV)}
    os.environ.setdefault("DROPOUTLAB_DATA", str(job.source / "data" / "raw"))
    if job.share:
        os.environ[PART_ENV] = job.name
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_job(job: Job) -> str:
    """Execute one job (in this process: the local engine, or a submitit worker) and return its metrics path.

    ``root`` and ``output_root`` of :func:`run_notebook` are both the job folder, so figures, metrics, the
    executed notebook and (full/paper) training runs all land under it.
    """
    _prepare(job)
    with _job_env(job):
        run_notebook(job.notebook, job.profile, job.overrides, root=job.folder, output_root=job.folder)
    if not job.metrics.is_file():
        raise RuntimeError(f"{job.notebook} ran but wrote no {job.metrics} (does it call ledger.save()?)")
    return str(job.metrics)


def _executor(folder: Path, cluster: str, config: dict[str, Any]):
    executor = submitit.AutoExecutor(folder=str(folder / "submitit"),
                                     cluster=None if cluster == "auto" else cluster)
    executor.update_parameters(**config)
    return executor


def run_sweep(jobs: list[Job], engine: str = "local", cluster: str = "auto", config: dict[str, Any] | None = None,
              log=print) -> SweepResult:
    """Run the unfinished ``jobs`` with ``engine``; wait for them; report skipped, ran and failed jobs.

    ``config``: submitit executor parameters (``timeout_min``, ``cpus_per_task``, ``slurm_partition``, …);
    unless given, ``cpus_per_task`` is params.yaml's ``cpu_threads`` and ``name`` is the sweep's name.
    A failed job does not stop the others; it is reported with its error (its log: ``<sweep>/submitit/``).
    """
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if cluster not in CLUSTERS:
        raise ValueError(f"--cluster must be one of {', '.join(CLUSTERS)}, got {cluster!r}")
    if not jobs:
        raise ValueError("a sweep needs at least one job")
    for job in jobs:
        check_unchanged(job)
    todo = [job for job in jobs if not job.finished()]
    skipped = [job.name for job in jobs if job.finished()]
    sweep_dir = jobs[0].folder.parent
    for name in skipped:
        log(f"  {name}: finished earlier (metrics found), skipped")
    ran, failed = [], {}
    if engine == "local":
        for job in todo:
            log(f"  {job.name}: running")
            try:
                run_job(job)
                ran.append(job.name)
            except Exception as err:  # noqa: BLE001 — one failed job is reported, the others still run
                failed[job.name] = f"{type(err).__name__}: {err}"
    elif todo:
        params = {"cpus_per_task": _cpu_threads(jobs[0].source),
                  "name": sweep_dir.name, **(config or {})}
        executor = _executor(sweep_dir, cluster, params)
        for job in todo:
            job.folder.mkdir(parents=True, exist_ok=True)
        with executor.batch():
            submitted = [(job, executor.submit(run_job, job)) for job in todo]
        for job, handle in submitted:
            log(f"  {job.name}: submitted as {handle.job_id}")
        for job, handle in submitted:
            try:
                handle.result()
                ran.append(job.name)
                log(f"  {job.name}: done")
            except Exception as err:  # noqa: BLE001 — submitit re-raises the job's error (or a lost job's)
                failed[job.name] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err) else ''}"
    for name, error in failed.items():
        log(f"  {name}: FAILED — {error}")
    return SweepResult(sweep_dir, skipped, ran, failed)


def _cpu_threads(root: Path) -> int:
    threads = (yaml.safe_load((root / "params.yaml").read_text()) or {}).get("cpu_threads")
    return threads if isinstance(threads, int) and threads > 0 else 1


def load_config(path: Path | None) -> dict[str, Any]:
    """The executor settings YAML (``--config``): a mapping of submitit parameters."""
    if path is None:
        return {}
    config = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ValueError(f"--config {path}: expected a mapping of submitit parameters (timeout_min: 60, ...)")
    return config


def summary(jobs: list[Job]) -> list[dict[str, Any]]:
    """One row per (finished job, claim): the job's overrides, the claim's verdict, estimate, interval and the
    per-run measurements (a one-seed job's verdict is 'inconclusive', not judged: its measurements are the data)."""
    rows = []
    for job in jobs:
        if not job.metrics.is_file():
            continue
        claims = json.loads(job.metrics.read_text()).get("claims", {})
        for claim_id, claim in sorted(claims.items()):
            rows.append({"job": job.name, **{k: json.dumps(v) for k, v in job.overrides.items()}, "claim": claim_id,
                         "verdict": claim.get("verdict"), "estimate": claim.get("estimate"),
                         "ci_low": claim.get("ci_low"), "ci_high": claim.get("ci_high"),
                         "measurements": json.dumps(claim.get("measurements"), sort_keys=True)})
    return rows


def write_summary(jobs: list[Job]) -> Path:
    """``sweeps/<name>/summary.csv``: :func:`summary` of every finished job, rewritten after each sweep run."""
    path = jobs[0].folder.parent / "summary.csv"
    return atomic_write_text(path, pd.DataFrame(summary(jobs)).to_csv(index=False))


def _round_trip_yaml():
    """ruamel.yaml (DVC's own YAML library) keeping params.yaml's comments, flow lists and ``null``s."""
    handler = YAML()
    handler.preserve_quotes = True
    handler.width = 4096
    handler.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return handler


def _flow(value: Any) -> Any:
    if isinstance(value, list):
        seq = CommentedSeq(_flow(v) for v in value)
        seq.fa.set_flow_style()
        return seq
    if isinstance(value, dict):
        mapping = CommentedMap((k, _flow(v)) for k, v in value.items())
        mapping.fa.set_flow_style()
        return mapping
    return value


def with_overrides(text: str, notebook: str, profile: str, overrides: dict[str, Any]) -> str:
    """params.yaml's text with ``notebooks.<notebook>.<profile>.<key>`` set to each override, comments kept."""
    handler = _round_trip_yaml()
    params = handler.load(text)
    section = params["notebooks"][notebook][profile]
    for key, value in overrides.items():
        section[key] = _flow(value)
    buffer = io.StringIO()
    handler.dump(params, buffer)
    return buffer.getvalue()


def queue_dvc(jobs: list[Job]) -> list[str]:
    """Queue one DVC experiment per job (``dvc exp run --queue <notebook>-<profile> -n <sweep>-<job>``).

    ``dvc exp run -S`` cannot address these parameters: its override grammar (Hydra's) refuses a key part
    that starts with a digit, as every notebook's name does (``notebooks.01_dropout_vs_none...``). So each
    job's overrides are written into params.yaml (comments kept), the experiment is queued — DVC snapshots
    the workspace, params.yaml included — and params.yaml is put back byte for byte, whatever happens.
    DVC then runs the queue (``dvc queue start -j N``) in its own temporary workspaces and keeps each
    experiment's results in a git ref, so nothing is written over the workspace's results;
    ``dvc exp show`` compares them, ``dvc exp apply NAME`` brings one into the workspace.
    """
    root = jobs[0].source
    notebook, profile = jobs[0].notebook, jobs[0].profile
    stage = f"{notebook}-{profile}"
    dvc_yaml = root / "dvc.yaml"
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}) if dvc_yaml.is_file() else {}
    if stage not in stages:
        listed = ", ".join((load_params(root).get("pipeline") or {}).get("profiles") or []) or "none"
        raise ValueError(f"dvc.yaml has no stage {stage} (params.yaml pipeline.profiles: {listed}); the DVC queue "
                         "runs pipeline stages: use a profile with stages, or --engine local/submitit")
    if notebook_parts(notebook, profile, load_params(root)):
        raise ValueError(f"{stage} is split into training parts fixed in dvc.yaml; sweep it with --engine "
                         "local/submitit")
    path = root / "params.yaml"
    original = path.read_bytes()
    queued = []
    try:
        for job in jobs:
            name = f"{job.folder.parent.name}-{job.name}"
            atomic_write_text(path, with_overrides(original.decode(), notebook, profile, job.overrides))
            done = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "--queue", stage, "-n", name],
                                  cwd=root, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"dvc exp run --queue {stage} -n {name} failed: "
                                   f"{(done.stderr or done.stdout).strip()}")
            queued.append(name)
    finally:
        path.write_bytes(original)
    return queued
