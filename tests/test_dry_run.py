"""The paper profile, dry-run on CPU: every notebook's paper configuration built and stepped.

A dry run (``dropoutlab run-notebook NAME --profile paper --dry-run``) builds the paper profile's
models, data pipeline, optimisers and loops, stops every training run after ``dry_run.steps``
updates on at most ``dry_run.examples`` images per split (params.yaml), and cuts only analysis
sizes (``dry_run.shrink``), so a configuration error shows here rather than after GPU time is spent.
The notebooks' code runs in this process (a kernel start per notebook would double the cost): the
same cells, in order, with the parameters the runner would inject.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import pytest
import torch

from dropoutlab import data as data_module
from dropoutlab.analysis.concrete_experiments import HeteroscedasticConcreteMLP, fit_heteroscedastic, toy_data
from dropoutlab.models import MLP
from dropoutlab.notebooks import (
    RUNNER_ENV,
    NotebookParameterError,
    dry_run_settings,
    kernel_env,
    list_notebooks,
    load_params,
    notebook_parameters,
    run_notebook,
)
from dropoutlab.paths import DRY_RUN_ENV, DryRun, dry_run
from dropoutlab.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = list_notebooks(ROOT)
# what a shrink may never touch: the settings that make a configuration (models, optimisers, data, loops)
CONFIGURATION = {"widths", "hidden", "channels", "optimizer", "lr", "momentum", "max_norm", "batch_size", "dataset",
                 "epochs", "updates", "device"}


def _execute_in_process(name: str, params: dict) -> None:
    """The notebook's code cells in order, the injected parameters right after the parameters cell: what the
    runner's kernel runs."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    namespace: dict = {"__name__": "__main__"}
    try:
        for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
            exec(compile("".join(cell["source"]), f"{name}[code cell {i + 1}]", "exec"), namespace)
            if "parameters" in cell["metadata"].get("tags", []):
                namespace.update(params)
    finally:
        plt.close("all")


def test_shrinks_name_known_notebooks_and_parameters_and_never_a_configuration():
    shrink = load_params(ROOT)["dry_run"]["shrink"]
    assert set(shrink) == set(NOTEBOOKS), "every notebook has its dry-run sizes (an empty mapping is fine)"
    for name, values in shrink.items():
        assert not set(values) & CONFIGURATION, f"{name}: a dry run keeps the paper configuration"
        notebook_parameters(name, "paper", values, root=ROOT)  # declared names, allowed types and ranges


@pytest.mark.slow
@pytest.mark.filterwarnings("default")  # as in a kernel: a library's deprecation warning does not stop a notebook
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_paper_configuration_builds_and_steps(name, tmp_path, monkeypatch):
    caps, shrink = dry_run_settings(name, ROOT)
    params = notebook_parameters(name, "paper", shrink, root=ROOT)
    monkeypatch.setenv(RUNNER_ENV, "1")
    monkeypatch.setenv(DRY_RUN_ENV, f"{caps.steps}:{caps.examples}")
    monkeypatch.setenv("DROPOUTLAB_ROOT", str(tmp_path))
    monkeypatch.setenv("DROPOUTLAB_DATA", os.environ.get("DROPOUTLAB_DATA", str(ROOT / "data" / "raw")))
    monkeypatch.setenv("DROPOUTLAB_REGISTRY", str(ROOT / "claims.yaml"))
    monkeypatch.delenv("DROPOUTLAB_RUNS", raising=False)
    monkeypatch.delenv("DROPOUTLAB_PART", raising=False)
    _execute_in_process(name, params)
    metrics = json.loads((tmp_path / "reports" / "paper" / "metrics" / f"{name}.json").read_text())
    assert metrics["profile"] == "paper" and metrics["claims"]
    assert list((tmp_path / "figures" / "paper" / name).glob("*.png")), "the figures were drawn"
    assert not (tmp_path / "runs").exists(), "a dry run keeps no training runs"


def test_fit_stops_after_the_dry_run_steps(toy_data, monkeypatch):
    config = TrainConfig(epochs=3, batch_size=32, eval_splits=(), device="cpu")
    assert fit(MLP(12, [8], 3), toy_data, config).records[-1]["step"] == 24
    monkeypatch.setenv(DRY_RUN_ENV, "2:64")
    assert [r["step"] for r in fit(MLP(12, [8], 3), toy_data, config).records] == [2]
    own = TrainConfig(epochs=3, batch_size=32, max_steps=1, eval_splits=(), device="cpu")
    assert [r["step"] for r in fit(MLP(12, [8], 3), toy_data, own).records] == [1], "a smaller budget stays"


def test_heteroscedastic_fit_stops_after_the_dry_run_steps(monkeypatch):
    x, y = toy_data(100, seed=0)

    def model():
        torch.manual_seed(0)
        return HeteroscedasticConcreteMLP(1, 8, 2, weight_regularizer=1e-6, dropout_regularizer=1e-3, p_init=0.2)

    assert len(fit_heteroscedastic(model(), x, y, epochs=3, batch_size=10, device="cpu")) == 3
    monkeypatch.setenv(DRY_RUN_ENV, "2:64")
    stepped, untouched = model(), model()
    records = fit_heteroscedastic(stepped, x, y, epochs=3, batch_size=10, device="cpu")
    assert len(records) == 1
    assert any(not torch.equal(a, b) for a, b in zip(stepped.parameters(), untouched.parameters()))


def test_datasets_are_stratified_slices_in_a_dry_run(monkeypatch):
    full = data_module.load_dataset("digits", "train")
    monkeypatch.setenv(DRY_RUN_ENV, "2:50")
    sliced = data_module.load_dataset("digits", "train")
    assert len(full) > 50 and len(sliced) == 50
    assert set(sliced.y.tolist()) == set(full.y.tolist()), "every class is in the slice"
    assert len(data_module.load_dataset("digits", "train", n=20)) == 20, "a smaller request stays"


@pytest.mark.parametrize("value", ["2", "a:b", "0:10", "2:0", "2:3:4"])
def test_a_bad_dry_run_setting_is_refused_naming_it(value, monkeypatch):
    monkeypatch.setenv(DRY_RUN_ENV, value)
    with pytest.raises(ValueError, match=f"{DRY_RUN_ENV} must be 'STEPS:EXAMPLES'"):
        dry_run()


def test_the_kernel_gets_the_dry_run_caps(tmp_path):
    assert DRY_RUN_ENV not in os.environ
    with kernel_env(2, ROOT, output_root=tmp_path, dry=DryRun(2, 64)):
        assert os.environ[DRY_RUN_ENV] == "2:64" and dry_run() == DryRun(2, 64)
    assert DRY_RUN_ENV not in os.environ


def test_a_dry_run_has_no_parts_and_refuses_bad_settings_before_a_kernel(tmp_path):
    with pytest.raises(NotebookParameterError, match="a dry run has no parts"):
        run_notebook("01_dropout_vs_none", "paper", part="seed-0", dry_run=True, root=ROOT)
    with pytest.raises(NotebookParameterError, match="epochs"):
        run_notebook("01_dropout_vs_none", "paper", {"epochs": 0}, dry_run=True, root=ROOT)
    for item in ("claims.yaml", "notebooks"):
        (tmp_path / item).symlink_to(ROOT / item)
    params = load_params(ROOT)
    params["dry_run"] = {**params["dry_run"], "steps": 0}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    with pytest.raises(NotebookParameterError, match="dry_run.steps must be a positive integer, got 0"):
        run_notebook("01_dropout_vs_none", "paper", dry_run=True, root=tmp_path)
