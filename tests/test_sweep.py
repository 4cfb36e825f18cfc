"""``dropoutlab sweep``: planning, resuming, the submitit engine (its local executor) and DVC's experiment queue.

The slow tests run notebook 01 in the smoke profile (seconds per run): a submitit sweep of two seeds that
is interrupted and resumed, and two experiments queued on DVC's queue in a temporary clone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dropoutlab import sweep
from dropoutlab.cli import main
from dropoutlab.notebooks import NotebookParameterError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_dropout_vs_none"


def test_values_split_at_top_level_commas():
    assert sweep.split_values("0.1,0.5") == ["0.1", "0.5"]
    assert sweep.split_values("[32,32],[64]") == ["[32,32]", "[64]"]
    assert sweep.parse_grid(["lr=0.001,0.01", "widths=[32,32],[64]"]) == {"lr": [0.001, 0.01],
                                                                          "widths": [[32, 32], [64]]}


@pytest.mark.parametrize("bad", ["lr", "lr=", "=1,2", "lr=1,,2", "seeds=[0],[1]", "lr=[1,2"])
def test_bad_grid_is_refused(bad):
    with pytest.raises(ValueError, match="-p"):
        sweep.parse_grid([bad])


def test_a_key_given_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        sweep.parse_grid(["lr=0.1", "lr=0.2"])


def test_seeds():
    assert sweep.parse_seeds("0,1,2") == [0, 1, 2]
    assert sweep.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert sweep.parse_seeds(None) is None
    for bad in ("a", "-1", "3-1", "0,0", "1,"):
        with pytest.raises(ValueError, match="--seeds"):
            sweep.parse_seeds(bad)


def test_plan_is_the_product_in_order_with_one_folder_per_job(tmp_path):
    jobs = sweep.plan(NOTEBOOK, "smoke", {"lr": [0.001, 0.01]}, [3, 4], root=ROOT, out=tmp_path)
    assert [job.name for job in jobs] == ["lr-0.001_seed-3", "lr-0.001_seed-4", "lr-0.01_seed-3", "lr-0.01_seed-4"]
    assert [job.overrides for job in jobs][1] == {"lr": 0.001, "seeds": [4]}
    assert all(job.folder.parent == tmp_path / f"{NOTEBOOK}-smoke" for job in jobs)
    assert jobs[0].metrics == jobs[0].folder / "reports" / "smoke" / "metrics" / f"{NOTEBOOK}.json"
    assert jobs[0].params["lr"] == 0.001 and jobs[0].params["epochs"] == 2  # the profile's, plus the overrides
    assert all(job.share for job in jobs) and not jobs[0].finished()
    assert sweep.plan(NOTEBOOK, "smoke", root=ROOT, out=tmp_path)[0].name == "main"
    assert not any(tmp_path.iterdir()), "planning writes nothing"


def test_the_default_output_root_is_the_sweeps_folder_never_the_pipelines():
    job = sweep.plan(NOTEBOOK, "quick", {"lr": [0.01]}, root=ROOT, name="try")[0]
    assert job.folder == ROOT / "sweeps" / "try" / "lr-0.01"
    assert job.metrics == ROOT / "sweeps" / "try" / "lr-0.01" / "reports" / "quick" / "metrics" / f"{NOTEBOOK}.json"


@pytest.mark.parametrize(("grid", "message"), [({"nope": [1]}, "unknown parameter"), ({"lr": [-1.0]}, "learning rate"),
                                               ({"epochs": ["many"]}, "not allowed")])
def test_bad_values_are_refused_before_anything_runs(tmp_path, grid, message):
    with pytest.raises(NotebookParameterError, match=message):
        sweep.plan(NOTEBOOK, "smoke", grid, root=ROOT, out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_bad_names_and_engines_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--name"):
        sweep.plan(NOTEBOOK, "smoke", root=ROOT, out=tmp_path, name="../up")
    jobs = sweep.plan(NOTEBOOK, "smoke", root=ROOT, out=tmp_path)
    with pytest.raises(ValueError, match="--engine"):
        sweep.run_sweep(jobs, engine="ray")
    with pytest.raises(ValueError, match="--cluster"):
        sweep.run_sweep(jobs, engine="submitit", cluster="pbs")


def test_cli_refuses_a_bad_value_with_the_parameters_name(tmp_path, capsys):
    assert main(["sweep", NOTEBOOK, "--profile", "smoke", "-p", "nope=1,2", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_job_that_ran_with_other_parameters_is_not_resumed(tmp_path):
    job = sweep.plan(NOTEBOOK, "smoke", {"lr": [0.01]}, root=ROOT, out=tmp_path)[0]
    sweep._prepare(job)
    assert (job.folder / "params.yaml").resolve() == (ROOT / "params.yaml").resolve()
    sweep.check_unchanged(job)  # as recorded: fine
    record = json.loads((job.folder / "job.json").read_text())
    record["params"]["epochs"] = 99  # as if params.yaml had said 99 when it ran
    (job.folder / "job.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="epochs"):
        sweep.check_unchanged(job)


def test_overrides_change_only_their_values_in_params_yaml():
    text = (ROOT / "params.yaml").read_text()
    changed = sweep.with_overrides(text, NOTEBOOK, "quick", {"lr": 0.003, "seeds": [7, 8]})
    params = yaml.safe_load(changed)
    assert params["notebooks"][NOTEBOOK]["quick"]["lr"] == 0.003
    assert params["notebooks"][NOTEBOOK]["quick"]["seeds"] == [7, 8]
    before, after = text.splitlines(), changed.splitlines()
    assert len(before) == len(after), "comments, nulls and flow lists are kept"
    differ = [(a, b) for a, b in zip(before, after) if a != b]
    assert [b.strip() for _, b in differ] == ["seeds: [7, 8]", "lr: 0.003"]
    assert sweep.with_overrides(text, NOTEBOOK, "quick", {}) == text


def test_dvc_queue_needs_a_stage_and_puts_params_yaml_back(tmp_path, monkeypatch):
    for item in ("params.yaml", "claims.yaml", "dvc.yaml", "notebooks"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, tmp_path / item)
    original = (tmp_path / "params.yaml").read_bytes()
    with pytest.raises(ValueError, match="no stage 01_dropout_vs_none-smoke"):
        sweep.queue_dvc(sweep.plan(NOTEBOOK, "smoke", {"lr": [0.01]}, root=tmp_path))
    with pytest.raises(ValueError, match="training parts"):
        sweep.queue_dvc(sweep.plan(NOTEBOOK, "full", {"lr": [0.01]}, root=tmp_path))
    seen = []

    def fake_run(cmd, cwd, **kwargs):
        seen.append(yaml.safe_load((Path(cwd) / "params.yaml").read_text())["notebooks"][NOTEBOOK]["quick"]["lr"])
        return subprocess.CompletedProcess(cmd, 1 if len(seen) == 2 else 0, "", "boom")

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="boom"):
        sweep.queue_dvc(sweep.plan(NOTEBOOK, "quick", {"lr": [0.01, 0.02]}, root=tmp_path))
    assert seen == [0.01, 0.02], "each experiment is queued with its own values"
    assert (tmp_path / "params.yaml").read_bytes() == original, "params.yaml is put back, even after a failure"


@pytest.mark.slow
def test_submitit_sweep_resumes_and_gives_the_local_engines_results(tmp_path):
    """Two one-seed jobs on submitit's local executor (subprocesses); one 'interrupted'; resumed; same bytes."""
    record = ROOT / "reports" / "smoke" / "metrics" / f"{NOTEBOOK}.json"
    record_before = record.stat().st_mtime_ns if record.exists() else None
    jobs = sweep.plan(NOTEBOOK, "smoke", seeds=[0, 1], root=ROOT, out=tmp_path)
    first = sweep.run_sweep(jobs, "submitit", "local", log=lambda *_: None)
    assert (first.ran, first.skipped, first.failed) == (["seed-0", "seed-1"], [], {})
    assert all(job.finished() and job.executed.with_suffix(".html").is_file() for job in jobs)
    assert (first.root / "submitit").is_dir(), "submitit's logs go to the sweep's folder"
    metrics = [json.loads(job.metrics.read_text()) for job in jobs]
    claim = metrics[0]["claims"]["SR-T2"]
    assert claim["verdict"] == "inconclusive" and claim["reason"].startswith("not judged")  # one seed: recorded
    assert len(claim["measurements"]["a"]) == 1 and metrics[0] != metrics[1]

    seed0, seed1 = jobs
    kept = seed0.metrics.stat().st_mtime_ns
    seed1_bytes = seed1.metrics.read_bytes()
    seed1.metrics.unlink()  # interrupted before its metrics were written
    again = sweep.run_sweep(jobs, "submitit", "local", log=lambda *_: None)
    assert (again.ran, again.skipped, again.failed) == (["seed-1"], ["seed-0"], {})
    assert seed0.metrics.stat().st_mtime_ns == kept, "a finished job is not run again"
    assert seed1.metrics.read_bytes() == seed1_bytes, "same seed, same results"

    local = sweep.plan(NOTEBOOK, "smoke", seeds=[1], root=ROOT, out=tmp_path, name="local")
    assert sweep.run_sweep(local, "local", log=lambda *_: None).ran == ["seed-1"]
    assert local[0].metrics.read_bytes() == seed1_bytes, "the local engine and submitit run the same job"
    assert (record.stat().st_mtime_ns if record.exists() else None) == record_before, "the record is untouched"
    rows = sweep.summary(jobs)
    assert {(r["job"], r["claim"]) for r in rows} == {(j, c) for j in ("seed-0", "seed-1") for c in ("SR-GAP", "SR-T2")}


def _exp_metrics(show: list[dict], path: str) -> dict[str, dict]:
    """Experiment name → its metrics file's data, from ``dvc exp show --json``."""
    found = {}
    for baseline in show:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                data = (rev.get("data") or {}).get("metrics", {}).get(path, {}).get("data")
                if rev.get("name") and data:
                    found[rev["name"]] = {"metrics": data, "params": rev["data"]["params"]["params.yaml"]["data"]}
    return found


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a git checkout")
def test_dvc_queue_runs_two_experiments_and_shows_both(tmp_path):
    """In a temporary clone whose pipeline has smoke stages: queue two, run them in two workers, read both back."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["pipeline"] = {"profiles": ["smoke"], "data": {name: [] for name in params["notebooks"]}}  # digits
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ignore = clone / ".gitignore"  # smoke outputs are git-ignored in the repository; an experiment commits them
    ignore.write_text("".join(line for line in ignore.read_text().splitlines(True) if "smoke" not in line))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(ROOT / "src"), "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("DROPOUTLAB_ROOT", None)

    def run(*cmd: str) -> str:
        return subprocess.run(cmd, cwd=clone, env=env, check=True, capture_output=True, text=True).stdout

    run(sys.executable, "-m", "dropoutlab.cli", "pipeline")
    (clone / "dvc.lock").unlink()
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "smoke stages")
    out = run(sys.executable, "-m", "dropoutlab.cli", "sweep", NOTEBOOK, "--profile", "smoke", "-p", "lr=0.001,0.01",
              "--engine", "dvc-queue")
    names = [f"{NOTEBOOK}-smoke-lr-0.001", f"{NOTEBOOK}-smoke-lr-0.01"]
    assert all(name in out for name in names)
    assert run("git", "status", "--porcelain") == "", "params.yaml put back"
    run(sys.executable, "-m", "dvc", "queue", "start", "-j", "2")
    try:
        deadline = time.monotonic() + 900
        while any(word in run(sys.executable, "-m", "dvc", "queue", "status") for word in ("Queued", "Running")):
            assert time.monotonic() < deadline, run(sys.executable, "-m", "dvc", "queue", "status")
            time.sleep(3)
    finally:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "stop"], cwd=clone, env=env, capture_output=True)
    status = run(sys.executable, "-m", "dvc", "queue", "status")
    assert status.count("Success") == 2, status
    found = _exp_metrics(json.loads(run(sys.executable, "-m", "dvc", "exp", "show", "--json")),
                         f"reports/smoke/metrics/{NOTEBOOK}.json")
    assert sorted(found) == names
    for name, lr in zip(names, (0.001, 0.01)):
        assert found[name]["params"]["notebooks"][NOTEBOOK]["smoke"]["lr"] == lr
        assert found[name]["metrics"]["claims"]["SR-T2"]["n"] == 2  # the smoke profile's two seeds, judged
    assert not (clone / "reports" / "smoke").exists(), "the experiments ran in DVC's own workspaces"
