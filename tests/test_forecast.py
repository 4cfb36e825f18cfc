"""Time forecasts (``dropoutlab run-notebook NAME --profile full --forecast``): each training loop stops after
a few timed updates and logs what the whole loop would take; the runner adds the rest of the notebook's time.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from dropoutlab.analysis.concrete_experiments import HeteroscedasticConcreteMLP, fit_heteroscedastic, toy_data
from dropoutlab.data import Dataset
from dropoutlab.metalearning import EpisodeSampler, build_model, meta_train
from dropoutlab.notebooks import NotebookParameterError, format_forecast, run_notebook, summarise_forecast
from dropoutlab.paths import FORECAST_ENV, MIN_FORECAST_STEPS, RUNS_ENV, forecast
from dropoutlab.train import ForecastClock, TrainConfig, fit


def _data(n: int = 100, seed: int = 0) -> dict[str, Dataset]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    split = Dataset(x=x, y=y, name="toy", split="train", num_classes=3, indices=torch.arange(n))
    return {"train": split, "val": split}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("value", ["x", "20", "4:/tmp/log", "abc:/tmp/log", "20:", f"{MIN_FORECAST_STEPS - 1}:f"])
def test_forecast_env_is_checked(monkeypatch, value):
    monkeypatch.setenv(FORECAST_ENV, value)
    with pytest.raises(ValueError, match=FORECAST_ENV):
        forecast()


def test_forecast_env_parsed(monkeypatch, tmp_path):
    monkeypatch.delenv(FORECAST_ENV, raising=False)
    assert forecast() is None
    monkeypatch.setenv(FORECAST_ENV, f"12:{tmp_path / 'a:b.jsonl'}")  # the log path may hold a colon
    settings = forecast()
    assert settings.steps == 12 and settings.log == tmp_path / "a:b.jsonl"


def test_clock_does_nothing_outside_a_forecast(monkeypatch):
    monkeypatch.delenv(FORECAST_ENV, raising=False)
    clock = ForecastClock("fit", "x", 0)
    clock.tick()
    assert not clock.active and clock.cap(1000) == 1000 and clock.finish(1000) is None


@pytest.mark.parametrize("epochs, batch_size, max_steps, steps", [(3, 10, None, 8), (2, 32, None, 6), (5, 10, 7, 20),
                                                                  (1, 100, None, 5)])
def test_fit_times_the_first_updates_and_logs_the_plan(monkeypatch, tmp_path, epochs, batch_size, max_steps, steps):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(FORECAST_ENV, f"{steps}:{log}")
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "store"))  # a forecast neither stores nor loads runs
    config = TrainConfig(epochs=epochs, batch_size=batch_size, max_steps=max_steps, eval_splits=("val",),
                         progress=False)
    history = fit(_model(), _data(), config)
    per_epoch = math.ceil(100 / batch_size)
    planned = epochs * per_epoch if max_steps is None else min(epochs * per_epoch, max_steps)
    (record,) = _lines(log)
    assert record["planned_updates"] == planned
    assert max(r["step"] for r in history.records) == min(steps, planned)
    assert record["timed_updates"] == max(min(steps, planned) - ForecastClock.WARMUP, 0) or planned <= 2
    assert record["evaluations"] == math.ceil(planned / per_epoch)
    expected = planned * record["seconds_per_update"] + record["evaluations"] * record["evaluation_seconds"]
    assert record["forecast_seconds"] == pytest.approx(expected)
    assert record["seconds_per_update"] > 0 and record["measured_seconds"] > 0
    assert not (tmp_path / "store").exists()


def test_fit_outside_a_forecast_is_unchanged(monkeypatch, tmp_path):
    monkeypatch.delenv(FORECAST_ENV, raising=False)
    config = TrainConfig(epochs=2, batch_size=10, eval_splits=("val",), progress=False)
    history = fit(_model(), _data(), config)
    assert max(r["step"] for r in history.records) == 20


def test_meta_train_and_heteroscedastic_loops_log_their_plan(monkeypatch, tmp_path):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(FORECAST_ENV, f"6:{log}")
    pools = {str(c): torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(c)) for c in range(4)}
    run = meta_train(build_model((1, 8, 8), 2, 4, 0), EpisodeSampler(pools, 2, 1, 2), arm="MAML", iterations=50,
                     meta_batch=1, inner_steps=1, inner_lr=0.1, meta_lr=1e-3, second_order=False, seed=0, log_every=1)
    assert run.history["iteration"].max() == 6
    x, y = toy_data(64, seed=0)
    fit_heteroscedastic(HeteroscedasticConcreteMLP(1, 8, 1), x, y, epochs=4, batch_size=16, seed=0)
    meta, hetero = _lines(log)
    assert (meta["loop"], meta["planned_updates"], meta["timed_updates"]) == ("meta_train", 50, 4)
    assert (hetero["loop"], hetero["planned_updates"]) == ("fit_heteroscedastic", 16)


def test_summary_adds_the_loops_forecasts_to_the_rest(tmp_path):
    log = tmp_path / "log.jsonl"
    loops = [dict(loop="fit", what="MLP", seed=0, measured_seconds=2.0, forecast_seconds=100.0),
             dict(loop="fit", what="MLP", seed=1, measured_seconds=3.0, forecast_seconds=140.0),
             dict(loop="meta_train", what="MAML", seed=0, measured_seconds=1.0, forecast_seconds=60.0)]
    log.write_text("".join(json.dumps(loop) + "\n" for loop in loops))
    summary = summarise_forecast(log, 50.0, name="nb", profile="full")
    assert summary["training_seconds"] == 300.0 and summary["other_seconds"] == 44.0
    assert summary["total_seconds"] == 344.0 and summary["loops"] == 3
    text = format_forecast(summary, parts=4)
    assert "5.7 min in all" in text and "about 1.4 min per part (4 parts)" in text
    assert text.index("fit MLP 4.0 min") < text.index("meta_train MAML 1.0 min")


@pytest.mark.parametrize("kwargs, match", [(dict(forecast=MIN_FORECAST_STEPS - 1), "forecast must be an integer"),
                                           (dict(forecast=True), "forecast must be an integer"),
                                           (dict(forecast=20, dry_run=True), "neither a dry run nor a part"),
                                           (dict(forecast=20, part="seed-0"), "neither a dry run nor a part")])
def test_run_notebook_refuses_a_bad_forecast_before_any_kernel(kwargs, match):
    with pytest.raises(NotebookParameterError, match=match):
        run_notebook("01_dropout_vs_none", "full", **kwargs)
