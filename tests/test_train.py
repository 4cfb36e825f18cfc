from __future__ import annotations

import math

import pytest
import torch
from torch import nn

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
