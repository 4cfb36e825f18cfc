"""The DVC pipeline: a stage per notebook, declared outputs, committed lock."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dropoutlab.notebooks import list_notebooks

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_a_stage_per_notebook_plus_data_and_report():
    stages = set(DVC["stages"])
    assert {"data", "report"} <= stages
    assert set(list_notebooks(ROOT)) <= stages


@pytest.mark.parametrize("name", list_notebooks(ROOT))
def test_notebook_stage_declares_its_outputs(name):
    stage = DVC["stages"][name]
    assert f"dropoutlab run-notebook {name}" in stage["cmd"]
    assert f"notebooks/{name}.ipynb" in stage["deps"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
    assert f"reports/notebooks/{name}.ipynb" in outs
    metrics = [next(iter(m)) for m in stage["metrics"]]
    assert metrics == [f"reports/metrics/{name}.json"]
    assert f"notebooks.{name}" in stage["params"]


def test_report_depends_on_every_metrics_file():
    assert "reports/metrics" in DVC["stages"]["report"]["deps"]


def test_dvc_config_has_no_analytics():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "analytics = false" in config and "check_update = false" in config


@pytest.mark.skipif(shutil.which("dvc") is None or not (ROOT / ".git").exists(), reason="needs dvc and a git checkout")
def test_dvc_lists_every_stage():
    result = subprocess.run(["dvc", "stage", "list"], cwd=ROOT, capture_output=True, text=True, check=True)
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert set(list_notebooks(ROOT)) | {"data", "report"} <= listed
