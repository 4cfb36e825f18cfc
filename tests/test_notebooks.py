"""The notebook runner, and every notebook executed end to end in the smoke profile.

Each notebook runs through the runner (as DVC runs it). Notebook 01 also runs as JupyterLab runs it —
the kernel's working directory at ``notebooks/``, no parameters injected, the parameters cell's own
defaults — and both runs must write the same files with the same contents; it stands for every
notebook because none does file I/O of its own (checked statically) and every parameters cell's
defaults are the smoke profile (checked against params.yaml).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import papermill as pm
import pytest

from dropoutlab.notebooks import (
    PROGRESS_ENV,
    RUNNER_ENV,
    NotebookParameterError,
    check_clean,
    kernel_env,
    list_notebooks,
    notebook_parameters,
    profile_parameters,
    run_notebook,
    strip_volatile,
)
from dropoutlab.train import progress_line

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = list_notebooks(ROOT)
PIPELINE_PROFILES = ("smoke", "quick", "paper")


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
@pytest.mark.parametrize("profile", PIPELINE_PROFILES)
def test_params_yaml_matches_the_notebook(name, profile):
    params = notebook_parameters(name, profile, root=ROOT)
    assert params["profile"] == profile


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_defaults_are_the_smoke_profile(name):
    """What JupyterLab runs by default is exactly what `run-notebook NAME --profile smoke` runs."""
    declared = pm.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
    defaults = {key: ast.literal_eval(info["default"]) for key, info in declared.items()}
    assert defaults == profile_parameters(name, "smoke", ROOT)


def test_unknown_parameter_is_refused():
    with pytest.raises(NotebookParameterError, match="nosuch"):
        notebook_parameters("01_dropout_vs_none", "smoke", {"nosuch": 1}, root=ROOT)


def test_unknown_notebook_and_profile():
    with pytest.raises(NotebookParameterError, match="unknown notebook 'nope'.*01_dropout_vs_none"):
        notebook_parameters("nope", "smoke", root=ROOT)
    with pytest.raises(NotebookParameterError, match="unknown profile 'fast'"):
        notebook_parameters("01_dropout_vs_none", "fast", root=ROOT)


@pytest.mark.parametrize("override, message", [
    ({"epochs": "abc"}, r"'epochs' = 'abc' \(str\) is not allowed: expected int"),
    ({"seeds": "notalist"}, r"'seeds' = 'notalist' \(str\) is not allowed: expected list\[int\]"),
    ({"seeds": 3}, r"'seeds' = 3 \(int\) is not allowed"),
    ({"seeds": [0, 0]}, r"'seeds' = \[0, 0\]: expected a non-empty list of distinct"),
    ({"epochs": 0}, r"'epochs' = 0: expected a positive integer"),
    ({"keep_hidden": 1.5}, r"'keep_hidden' = 1.5: expected keep rates in \(0, 1\]"),
    ({"lr": -1.0}, r"'lr' = -1.0: expected a positive learning rate"),
])
def test_bad_override_is_refused_naming_the_parameter(override, message):
    with pytest.raises(NotebookParameterError, match=message):
        notebook_parameters("01_dropout_vs_none", "quick", override, root=ROOT)


def test_good_overrides_pass():
    params = notebook_parameters("01_dropout_vs_none", "quick", {"epochs": 20, "seeds": [0, 1, 2, 3, 4], "lr": 1},
                                 root=ROOT)
    assert params["epochs"] == 20 and params["seeds"] == [0, 1, 2, 3, 4] and params["lr"] == 1


def test_cli_refuses_a_bad_value_before_any_kernel_starts(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dropoutlab.cli", "run-notebook", "01_dropout_vs_none",
                             "-p", "epochs=abc"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "'epochs'" in result.stderr and "Traceback" not in result.stderr


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


def test_strip_volatile_merges_consecutive_stream_chunks():
    def stream(name, text):
        return {"output_type": "stream", "name": name, "text": text}

    figure = {"output_type": "display_data", "data": {"text/plain": "<Figure>"}, "metadata": {}}
    chunked = [stream("stdout", "a\nb"), stream("stdout", "c\n"), stream("stderr", "w\n"), figure,
               stream("stdout", "d\n")]
    nb = {"metadata": {}, "cells": [{"cell_type": "code", "id": "c", "metadata": {}, "source": "",
                                     "execution_count": 1, "outputs": chunked}]}
    outputs = strip_volatile(nb)["cells"][0]["outputs"]
    assert [(o["output_type"], o.get("name"), o.get("text")) for o in outputs] == [
        ("stream", "stdout", "a\nbc\n"), ("stream", "stderr", "w\n"), ("display_data", None, None),
        ("stream", "stdout", "d\n")]  # merged only where consecutive: the order of outputs is kept
    assert len(nb["cells"][0]["outputs"]) == 5  # the input is not modified


def test_kernel_env_is_set_and_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.delenv(RUNNER_ENV, raising=False)
    with kernel_env(3, ROOT):
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "3"
        assert "MPLBACKEND" not in os.environ, "executed notebooks must show their figures inline"
        assert os.environ[RUNNER_ENV] == "1"
        assert Path(os.environ[PROGRESS_ENV]).is_file()
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ
    assert os.environ["MPLBACKEND"] == "Agg" and RUNNER_ENV not in os.environ and PROGRESS_ENV not in os.environ
    with pytest.raises(NotebookParameterError, match="cpu_threads"):
        with kernel_env(0, ROOT):
            pass


def test_kernel_env_of_a_training_part(monkeypatch, tmp_path):
    for key in ("DROPOUTLAB_RUNS", "DROPOUTLAB_PART", "DROPOUTLAB_ROOT", "DROPOUTLAB_DATA"):
        monkeypatch.delenv(key, raising=False)
    runs = [tmp_path / "runs" / "nb" / "seed-0" / "checkpoints", tmp_path / "runs"]
    with kernel_env(None, ROOT, runs, tmp_path / "runs" / "nb" / "seed-0", "seed-0"):
        assert os.environ["DROPOUTLAB_RUNS"] == os.pathsep.join(map(str, runs))
        assert os.environ["DROPOUTLAB_PART"] == "seed-0"
        assert os.environ["DROPOUTLAB_ROOT"] == str(tmp_path / "runs" / "nb" / "seed-0")  # its outputs go there
        assert os.environ["DROPOUTLAB_DATA"] == str(ROOT / "data" / "raw")  # its data come from the repository
    with kernel_env(None, ROOT, runs, ROOT):  # the notebook's own stage: outputs in the repository, judged
        assert "DROPOUTLAB_PART" not in os.environ and "DROPOUTLAB_ROOT" not in os.environ
    assert not {"DROPOUTLAB_RUNS", "DROPOUTLAB_PART", "DROPOUTLAB_ROOT", "DROPOUTLAB_DATA"} & set(os.environ)


@pytest.mark.parametrize(("profile", "part"), [("quick", "seed-0"), ("smoke", "seed-0"), ("full", "../x"),
                                               ("full", "a b")])
def test_parts_only_in_profiles_that_keep_runs(profile, part, tmp_path):
    with pytest.raises(NotebookParameterError, match="part"):
        run_notebook("01_dropout_vs_none", profile, root=ROOT, output_root=tmp_path, part=part)
    assert not list(tmp_path.iterdir()), "refused before anything was written"


def test_progress_lines_reach_the_runners_stderr(capfd):
    with kernel_env(None, ROOT):
        progress_line("    fit: a line for the log")
    assert "fit: a line for the log" in capfd.readouterr().err
    progress_line("outside a runner: nowhere")  # no file named: nothing happens
    assert capfd.readouterr().err == ""


@pytest.mark.slow
def test_a_failed_run_keeps_its_partial_notebook(tmp_path):
    with pytest.raises(Exception, match="nosuch"):
        run_notebook("01_dropout_vs_none", "smoke", {"dataset": "nosuch"}, root=ROOT, output_root=tmp_path)
    partial = tmp_path / "reports" / "smoke" / "notebooks" / "01_dropout_vs_none.failed.ipynb"
    assert partial.is_file() and "nosuch" in partial.read_text()
    assert not (tmp_path / "reports" / "smoke" / "notebooks" / "01_dropout_vs_none.ipynb").exists()


def _written(root: Path) -> dict[str, bytes]:
    """Every file a run wrote under figures/ and reports/, by relative path (executed notebooks aside)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for folder in ("figures", "reports")
            for p in sorted((root / folder).rglob("*")) if p.is_file() and "notebooks" not in p.parts}


@pytest.fixture(scope="module")
def runner_outputs(tmp_path_factory):
    """Each notebook run once by the runner (smoke), cached for the tests below."""
    cache: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"runner-{name}")
            run_notebook(name, "smoke", root=ROOT, output_root=out)
            cache[name] = out
        return cache[name]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_profile(name, runner_outputs):
    out_root = runner_outputs(name)
    out = out_root / "reports" / "smoke" / "notebooks" / f"{name}.ipynb"
    text = out.read_text()
    assert str(out_root) not in text and str(ROOT) not in text, "absolute path in the executed notebook"
    assert "fit: " not in text, "progress lines belong in the runner's log, not in the executed notebook"
    nb = json.loads(text)
    assert "papermill" not in nb["metadata"]
    assert not any("execution" in c["metadata"] for c in nb["cells"])
    assert not any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))
    shown = sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
    saved = list((out_root / "figures" / "smoke" / name).glob("*.png"))
    assert saved, "the notebook saved no figure"
    assert shown >= len(saved), f"{len(saved)} figures saved but {shown} shown inline"
    metrics = json.loads((out_root / "reports" / "smoke" / "metrics" / f"{name}.json").read_text())
    assert metrics["notebook"] == name and metrics["profile"] == "smoke" and metrics["claims"]
    for claim in metrics["claims"].values():
        assert claim["verdict"] in {"reproduced", "not reproduced", "inconclusive"}
    assert out.with_suffix(".html").is_file()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_do_no_file_io_of_their_own(name):
    """Every file a notebook reads or writes goes through the package (params, data, figures, tables,
    metrics), whose paths do not depend on the kernel's working directory — so one notebook run as
    JupyterLab runs it (below) stands for all."""
    code = "\n".join("".join(c["source"]) for c in json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
                     if c["cell_type"] == "code")
    tree = ast.parse(code)
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    named = {f.id for f in calls if isinstance(f, ast.Name)} | {f.attr for f in calls if isinstance(f, ast.Attribute)}
    of_modules = {f"{f.value.id}.{f.attr}" for f in calls if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)}
    file_io = {"open", "Path", "savefig", "to_csv", "read_csv", "to_json", "read_json", "to_parquet", "write_text",
               "read_text", "write_bytes", "read_bytes", "chdir", "getcwd", "listdir", "glob", "mkdir"}
    assert not named & file_io, f"{name} does file I/O itself: {sorted(named & file_io)}"
    module_io = {f"{m}.{f}" for m in ("np", "numpy", "torch", "pd", "pickle", "json") for f in ("save", "load", "dump")}
    assert not of_modules & module_io, f"{name} does file I/O itself: {sorted(of_modules & module_io)}"
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names} | {node.module.split(".")[0] for node in ast.walk(tree)
                                            if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"os", "pathlib", "shutil", "pickle", "glob"}, f"{name} imports file-system modules"


#: seaborn functions that aggregate, with the default interval: a bootstrap ("ci") for errorbar, 95 for ci.
_AGGREGATING = {"lineplot": "errorbar", "barplot": "errorbar", "pointplot": "errorbar", "relplot": "errorbar",
                "catplot": "errorbar", "regplot": "ci", "lmplot": "ci"}


def _bootstraps(call: ast.Call) -> bool:
    """Whether a seaborn call draws a bootstrap interval (seaborn seeds it from fresh entropy unless seed= is given)."""
    keywords = {k.arg: k.value for k in call.keywords if k.arg}
    if isinstance(keywords.get("estimator"), ast.Constant) and keywords["estimator"].value is None:
        return False  # nothing is aggregated
    interval = keywords.get(_AGGREGATING[call.func.attr])
    if interval is None:
        return True  # the default: a bootstrap interval
    if isinstance(interval, ast.Tuple) and interval.elts:
        interval = interval.elts[0]
    if isinstance(interval, ast.Constant):
        return interval.value is not None and (interval.value == "ci" or isinstance(interval.value, int | float))
    return True  # computed: assume it may be a bootstrap


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_figures_draw_no_unseeded_bootstrap(name):
    """A seaborn bootstrap interval without seed= is drawn from fresh entropy, so the figure's bytes change on every
    run (the executed notebooks and figures must be stable on re-run)."""
    code = "\n".join("".join(c["source"]) for c in json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
                     if c["cell_type"] == "code")
    unseeded = [f"line {node.lineno}: sns.{node.func.attr}" for node in ast.walk(ast.parse(code))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "sns"
                and node.func.attr in _AGGREGATING and _bootstraps(node)
                and not any(k.arg == "seed" for k in node.keywords)]
    assert not unseeded, f"{name}: bootstrap intervals without seed=: {unseeded}"


@pytest.mark.slow
def test_notebook_runs_as_jupyterlab_runs_it(runner_outputs, tmp_path, monkeypatch):
    """Kernel in notebooks/, nothing injected: the same files, byte for byte, as the runner's smoke run."""
    name = "01_dropout_vs_none"
    for item in ("params.yaml", "claims.yaml", "notebooks"):
        source = ROOT / item
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, tmp_path / item)
    for key in (RUNNER_ENV, "DROPOUTLAB_REGISTRY", "DROPOUTLAB_ROOT", "MPLBACKEND"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    pm.execute_notebook(str(tmp_path / "notebooks" / f"{name}.ipynb"), str(tmp_path / "lab.ipynb"),
                        kernel_name="python3", progress_bar=False, cwd=str(tmp_path / "notebooks"))
    lab, runner = _written(tmp_path), _written(runner_outputs(name))
    assert sorted(lab) == sorted(runner)
    differing = [path for path in lab if lab[path] != runner[path]]
    assert differing == []
