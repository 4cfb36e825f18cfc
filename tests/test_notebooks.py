"""The notebook runner, and every notebook executed end to end in the smoke profile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dropoutlab.notebooks import (
    PROFILES,
    NotebookParameterError,
    _thread_env,
    check_clean,
    list_notebooks,
    notebook_parameters,
    run_notebook,
    strip_volatile,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = list_notebooks(ROOT)


def test_there_are_notebooks():
    assert "01_dropout_vs_none" in NOTEBOOKS


def test_source_notebooks_are_clean():
    assert check_clean(sorted((ROOT / "notebooks").glob("*.ipynb"))) == []


def test_check_clean_flags_outputs(tmp_path):
    nb = json.loads((ROOT / "notebooks" / "01_dropout_vs_none.ipynb").read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    (tmp_path / "nb.ipynb").write_text(json.dumps(nb))
    assert "has outputs" in check_clean([tmp_path / "nb.ipynb"])[0]


@pytest.mark.parametrize("name", NOTEBOOKS)
@pytest.mark.parametrize("profile", PROFILES)
def test_params_yaml_matches_the_notebook(name, profile):
    params = notebook_parameters(name, profile, root=ROOT)
    assert params["profile"] == profile


def test_unknown_parameter_is_refused():
    with pytest.raises(NotebookParameterError, match="nosuch"):
        notebook_parameters("01_dropout_vs_none", "smoke", {"nosuch": 1}, root=ROOT)


def test_unknown_notebook_and_profile():
    with pytest.raises(NotebookParameterError, match="unknown notebook 'nope'.*01_dropout_vs_none"):
        notebook_parameters("nope", "smoke", root=ROOT)
    with pytest.raises(NotebookParameterError, match="unknown profile 'fast'"):
        notebook_parameters("01_dropout_vs_none", "fast", root=ROOT)


def test_cli_exits_nonzero_naming_the_parameter():
    result = subprocess.run([sys.executable, "-m", "dropoutlab.cli", "run-notebook", "01_dropout_vs_none",
                             "-p", "nosuch=1"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "nosuch" in result.stderr


def test_strip_volatile():
    nb = {"metadata": {"papermill": {"duration": 1.2}}, "cells": [
        {"id": "abc123", "metadata": {"tags": ["injected-parameters"], "papermill": {}, "execution": {}}},
        {"id": "cell-1", "metadata": {"papermill": {"start_time": "now"}}},
    ]}
    clean = strip_volatile(nb)
    assert "papermill" not in clean["metadata"]
    assert clean["cells"][0]["id"] == "injected-parameters"
    assert clean["cells"][1]["metadata"] == {}
    assert nb["metadata"]["papermill"]  # the input is not modified


def test_kernel_thread_count_is_set_and_restored(monkeypatch):
    import os

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with _thread_env(3):
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "3"
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ
    with pytest.raises(NotebookParameterError, match="cpu_threads"):
        with _thread_env(0):
            pass


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_profile(name, tmp_path):
    out = run_notebook(name, "smoke", root=ROOT, output_root=tmp_path)
    text = out.read_text()
    assert str(tmp_path) not in text and str(ROOT) not in text, "absolute path in the executed notebook"
    nb = json.loads(text)
    assert "papermill" not in nb["metadata"]
    assert not any("execution" in c["metadata"] for c in nb["cells"])
    assert not any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))
    metrics = json.loads((tmp_path / "reports" / "metrics" / f"{name}.json").read_text())
    assert metrics["notebook"] == name and metrics["claims"]
    for claim in metrics["claims"].values():
        assert claim["verdict"] in {"reproduced", "not reproduced", "inconclusive"}
    assert list((tmp_path / "figures" / name).glob("*.png")), "the notebook saved no figure"
    assert out.with_suffix(".html").is_file()
