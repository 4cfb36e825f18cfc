from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from dropoutlab import train as train_module
from dropoutlab.models import MLP
from dropoutlab.train import (
    TrainConfig,
    TrainingDiverged,
    apply_max_norm,
    dropout_rates,
    evaluate,
    fit,
    load_checkpoint,
    regularization,
    regularized_modules,
)


def small_mlp(dropout: str = "inverted") -> MLP:
    torch.manual_seed(0)
    return MLP(12, [16, 16], 3, dropout=dropout, p_input=0.1, p_hidden=0.3)


def test_same_seed_same_history(toy_data):
    config = TrainConfig(epochs=3, batch_size=32, seed=7)
    first = fit(small_mlp(), toy_data, config).to_frame()
    second = fit(small_mlp(), toy_data, config).to_frame()
    assert first.equals(second)
    assert set(first["split"]) == {"train_running", "val"}


def test_different_seed_different_history(toy_data):
    a = fit(small_mlp(), toy_data, TrainConfig(epochs=2, batch_size=32, seed=1)).to_frame()
    b = fit(small_mlp(), toy_data, TrainConfig(epochs=2, batch_size=32, seed=2)).to_frame()
    assert not a.equals(b)


def test_learns_and_logs_rates(toy_data):
    history = fit(small_mlp(), toy_data, TrainConfig(epochs=8, batch_size=32, lr=1e-2))
    frame = history.to_frame()
    assert history.last("val") < 0.2
    assert {"rate/1", "rate/4", "rate/7"} <= set(frame.columns)
    assert frame["rate/4"].iloc[0] == pytest.approx(0.3)
    assert "seconds" not in frame and "seconds" in history.to_frame(drop_timing=False)


def test_resume_is_exact(toy_data, tmp_path):
    config = TrainConfig(epochs=4, batch_size=32, seed=3, checkpoint=str(tmp_path / "ckpt.pt"))
    straight = small_mlp()
    full = fit(straight, toy_data, config)

    interrupted = small_mlp()
    fit(interrupted, toy_data, TrainConfig(**{**config.__dict__, "epochs": 2}))
    resumed = small_mlp()  # fresh weights: everything must come from the checkpoint
    history = fit(resumed, toy_data, TrainConfig(**{**config.__dict__, "resume": True}))
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert history.to_frame().equals(full.to_frame())
    assert load_checkpoint(tmp_path / "ckpt.pt")["epoch"] == 4


def test_nan_guard_names_epoch_and_keeps_checkpoint(toy_data, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    model = small_mlp()
    fit(model, toy_data, TrainConfig(epochs=1, batch_size=32, checkpoint=str(ckpt)))
    before = ckpt.read_bytes()
    with torch.no_grad():
        model[-1].weight.fill_(math.inf)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 1;.*last good checkpoint"):
        fit(model, toy_data, TrainConfig(epochs=2, batch_size=32, checkpoint=str(ckpt)))
    assert ckpt.read_bytes() == before


def test_max_norm_caps_rows():
    layer = nn.Linear(10, 4)
    with torch.no_grad():
        layer.weight.mul_(100)
    apply_max_norm(nn.Sequential(layer), 2.0)
    assert torch.all(layer.weight.norm(dim=1) <= 2.0 + 1e-5)


def test_max_steps_budget(toy_data):
    history = fit(small_mlp(), toy_data, TrainConfig(epochs=50, batch_size=32, max_steps=20))
    assert history.records[-1]["step"] == 20


def test_regularizer_added(toy_data):
    class WithReg(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def regularizer(self):
            return self.w**2

    model = nn.Sequential(nn.Linear(12, 3), WithReg())
    model[1].forward = lambda x: x * model[1].w
    assert regularization(model).item() == pytest.approx(1.0)
    fit(model, toy_data, TrainConfig(epochs=3, batch_size=64, lr=0.1, regularizer_weight=10.0, eval_splits=()))
    assert abs(model[1].w.item()) < 1.0  # the penalty pulled w towards 0


def test_evaluate_restores_mode(toy_data):
    model = small_mlp().train()
    result = evaluate(model, toy_data["val"])
    assert model.training and set(result) == {"loss", "error"}


def test_dropout_rates_include_torch_modules():
    assert dropout_rates(nn.Sequential(nn.Dropout(0.25))) == {"rate/0": 0.25}


@pytest.mark.parametrize("bad", [{"task": "nope"}, {"optimizer": "lbfgs"}, {"epochs": 0}])
def test_bad_config(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_unknown_config_key():
    with pytest.raises(ValueError, match="nosuch"):
        TrainConfig.from_dict({"nosuch": 1})


def test_missing_split(toy_data):
    with pytest.raises(ValueError, match="test"):
        fit(small_mlp(), toy_data, TrainConfig(epochs=1, eval_splits=("test",)))


# ---- the run store (train once, analyse many times) -----------------------------------------


@pytest.fixture
def store(tmp_path, monkeypatch):
    folder = tmp_path / "runs" / "this-stage"
    monkeypatch.setenv("DROPOUTLAB_RUNS", os.pathsep.join([str(folder), str(tmp_path / "runs")]))
    return folder


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_run_store_serves_a_finished_run_without_training(toy_data, store, monkeypatch):
    config = TrainConfig(epochs=3, batch_size=32, seed=5, eval_splits=("train", "val"))
    trained = small_mlp()
    first = fit(trained, toy_data, config)
    after_training = torch.rand(4)  # the random state Monte Carlo passes would draw from next
    assert len(list(store.glob("*.pt"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("a stored run was trained again")

    monkeypatch.setattr(train_module, "_make_optimizer", no_training)
    loaded = small_mlp()
    second = fit(loaded, toy_data, config)
    assert _same_weights(trained, loaded)
    assert second.to_frame().equals(first.to_frame())
    assert torch.equal(torch.rand(4), after_training)
    # a request for fewer evaluation splits is served too, with exactly the rows a fresh run gives
    fewer = fit(small_mlp(), toy_data, TrainConfig(**{**config.__dict__, "eval_splits": ("val",)})).to_frame()
    monkeypatch.delenv("DROPOUTLAB_RUNS")
    monkeypatch.undo()
    fresh = fit(small_mlp(), toy_data, TrainConfig(**{**config.__dict__, "eval_splits": ("val",)})).to_frame()
    assert fewer.equals(fresh)


@pytest.mark.parametrize("change", [{"seed": 6}, {"lr": 2e-3}, {"epochs": 2}, {"max_norm": 3.0}])
def test_run_store_key_changes_with_what_decides_the_result(toy_data, store, change):
    config = TrainConfig(epochs=3, batch_size=32, seed=5)
    fit(small_mlp(), toy_data, config)
    fit(small_mlp(), toy_data, TrainConfig(**{**config.__dict__, **change}))
    assert len(list(store.glob("*.pt"))) == 2


def test_run_store_key_changes_with_weights_and_data(toy_data, store):
    config = TrainConfig(epochs=1, batch_size=32)
    fit(small_mlp(), toy_data, config)
    other_init = small_mlp()
    with torch.no_grad():
        other_init[2].weight.add_(1e-6)
    fit(other_init, toy_data, config)
    shifted = dict(toy_data, train=type(toy_data["train"])(toy_data["train"].x + 1e-6, toy_data["train"].y))
    fit(small_mlp(), shifted, config)
    assert len(list(store.glob("*.pt"))) == 3


def test_run_store_resumes_an_interrupted_run_exactly(toy_data, store, monkeypatch):
    config = TrainConfig(epochs=4, batch_size=32, seed=3, eval_splits=("val",))
    straight = small_mlp()
    monkeypatch.delenv("DROPOUTLAB_RUNS")
    expected = fit(straight, toy_data, config).to_frame()
    monkeypatch.setenv("DROPOUTLAB_RUNS", str(store))

    calls = {"n": 0}
    original = train_module.evaluate

    def interrupt_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", interrupt_in_epoch_3)
    monkeypatch.setattr(train_module, "STORE_CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every epoch
    with pytest.raises(KeyboardInterrupt):
        fit(small_mlp(), toy_data, config)
    (partial,) = store.glob("*.pt")
    assert load_checkpoint(partial)["epoch"] == 2 and not load_checkpoint(partial)["complete"]
    monkeypatch.setattr(train_module, "evaluate", original)
    resumed = small_mlp()
    history = fit(resumed, toy_data, config).to_frame()
    assert _same_weights(straight, resumed)
    assert history.equals(expected)
    assert load_checkpoint(partial)["complete"]


@pytest.mark.parametrize(("every", "saves"), [(0.0, 4 + 1), (3600.0, 1)])
def test_run_store_checkpoints_a_run_in_progress_at_most_every_interval(toy_data, store, monkeypatch, every, saves):
    """Intermediate checkpoints follow STORE_CHECKPOINT_SECONDS; the finished state is always written."""
    writes = []
    original = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint", lambda path, **state: (writes.append(state["complete"]),
                                                                                   original(path, **state)))
    monkeypatch.setattr(train_module, "STORE_CHECKPOINT_SECONDS", every)
    fit(small_mlp(), toy_data, TrainConfig(epochs=4, batch_size=32, seed=3))
    assert len(writes) == saves and writes[-1] is True and not any(writes[:-1])


def test_an_explicit_checkpoint_is_written_every_epoch(toy_data, tmp_path, monkeypatch):
    writes = []
    original = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint", lambda path, **state: (writes.append(state["epoch"]),
                                                                                   original(path, **state)))
    fit(small_mlp(), toy_data, TrainConfig(epochs=3, batch_size=32, checkpoint=str(tmp_path / "c.pt")))
    assert writes == [1, 2, 3, 3]


def test_only_modules_with_their_own_regularizer_are_summed():
    from dropoutlab.analysis.concrete_experiments import concrete_mlp

    assert regularized_modules(small_mlp()) == []  # the dropout base class's regularizer is an exact zero
    assert regularization(small_mlp()) is None
    concrete = concrete_mlp(12, [8, 8], 3, 100)
    found = regularized_modules(concrete)
    assert found and all(type(m).__name__.startswith("Concrete") for m in found)
    assert regularization(concrete).item() == pytest.approx(sum(m.regularizer().item() for m in found))


def test_a_stored_run_has_the_same_bytes_every_time(toy_data, tmp_path, monkeypatch):
    config = TrainConfig(epochs=2, batch_size=32, seed=1)
    digests = []
    for attempt in ("a", "b"):
        monkeypatch.setenv("DROPOUTLAB_RUNS", str(tmp_path / attempt))
        fit(small_mlp(), toy_data, config)
        (path,) = (tmp_path / attempt).glob("*.pt")
        digests.append(path.read_bytes())
    assert digests[0] == digests[1], "a run's checkpoint is a DVC output: no wall-clock times in it"
