"""Co-adaptation measurements: filter grids, sparsity, correlation, ablation, explicit regulariser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import blobs
from scipy.special import beta
from torch import nn

from dropoutlab.analysis.coadaptation import (
    _rate_feeding,
    ablation_curve,
    activation_statistics,
    autoencoder_study,
    classifier_study,
    degradation_area,
    dropout_regularizer,
    filter_grid,
    find_readout,
    mean_abs_correlation,
    readout_inputs,
)
from dropoutlab.data import Dataset
from dropoutlab.models import MLP, Autoencoder
from dropoutlab.train import TrainConfig, evaluate
from dropoutlab.variants import make_dropout

# ------------------------------------------------------------------------------ filters, sparsity


def test_filter_grid_tiles_filters_scaled_to_unit_max_with_blank_padding():
    w = torch.arange(1, 5 * 6 + 1, dtype=torch.float32).reshape(5, 6)  # 5 filters of 2×3
    grid = filter_grid(w, (1, 2, 3), columns=3, padding=1)
    assert grid.shape == (2 * 2 + 1, 3 * 3 + 2)
    np.testing.assert_allclose(grid[0:2, 4:7], (w[1] / w[1].abs().max()).reshape(2, 3).numpy())
    np.testing.assert_allclose(grid[3:5, 4:7], (w[4] / w[4].abs().max()).reshape(2, 3).numpy())
    assert np.isnan(grid[2]).all() and np.isnan(grid[:, 3]).all()  # padding
    assert np.isnan(grid[3:5, 8:11]).all()  # the sixth tile is empty
    assert filter_grid(w, (2, 3), n_filters=4).shape == (2 * 2 + 1, 2 * 3 + 1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_shape=(3, 3)), "weights must be"),
    (dict(image_shape=(2, 2, 3)), "image_shape"),
    (dict(image_shape=(2, 3), n_filters=9), "n_filters"),
    (dict(image_shape=(2, 3), columns=0), "columns"),
])
def test_filter_grid_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        filter_grid(torch.zeros(5, 6), **kwargs)


def test_activation_statistics_on_a_constructed_matrix():
    h = np.array([[0.0, 0.005, 2.0], [0.0, 1.0, 3.0]])
    stats = activation_statistics(h, threshold=0.01)
    assert stats["mean_activation"] == pytest.approx(6.005 / 6)
    assert stats["near_zero_fraction"] == pytest.approx(3 / 6)
    assert stats["zero_fraction"] == pytest.approx(2 / 6)
    assert stats["dead_fraction"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="threshold"):
        activation_statistics(h, threshold=0)
    with pytest.raises(ValueError, match="matrix"):
        activation_statistics(np.ones(3))


# ------------------------------------------------------------------------------ correlation


def test_affine_copies_and_mirror_images_have_correlation_one():
    x = torch.randn(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = torch.stack([x, 3 * x + 1, -2 * x], dim=1)
    value, active = mean_abs_correlation(h)
    assert value == pytest.approx(1.0, abs=1e-12) and active == 3


def test_independent_units_match_the_null_distribution_of_r():
    # Under independence |r| over n examples has mean 2/((n−2)·B(1/2, (n−2)/2)) and E r² = 1/(n−1).
    n, units = 400, 30
    h = np.random.default_rng(0).standard_normal((n, units))
    value, _ = mean_abs_correlation(h)
    expected = 2 / ((n - 2) * beta(0.5, (n - 2) / 2))
    sd_pair = math.sqrt(1 / (n - 1) - expected**2)
    pairs = units * (units - 1) / 2
    assert abs(value - expected) <= 4 * sd_pair / math.sqrt(pairs)


def test_constant_units_are_left_out_and_too_few_units_raise():
    x = torch.randn(50, 1, generator=torch.Generator().manual_seed(1))
    h = torch.cat([x, torch.zeros(50, 1), 2 * x, torch.full((50, 1), 3.0)], dim=1)
    assert mean_abs_correlation(h) == (pytest.approx(1.0), 2)
    with pytest.raises(ValueError, match="non-constant units"):
        mean_abs_correlation(torch.cat([x, torch.zeros(50, 2)], dim=1))
    with pytest.raises(ValueError, match="at least 3 examples"):
        mean_abs_correlation(torch.ones(2, 4))


# ------------------------------------------------------------------------------ explicit regulariser


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_regularizer_is_the_expected_output_change_under_inverted_dropout(p):
    g = torch.Generator().manual_seed(0)
    h = torch.rand(8, 6, generator=g, dtype=torch.float64)
    u = torch.randn(3, 6, generator=g, dtype=torch.float64)
    dropout = make_dropout("inverted", p=p).train()
    torch.manual_seed(0)
    samples = 20_000
    dropped = dropout(h.expand(samples, *h.shape))  # a fresh mask for every sample
    change = ((dropped - h) @ u.T).pow(2).sum(-1).mean(-1)
    # Monte Carlo mean vs the closed form, within 4 standard errors of the estimate
    assert abs(change.mean().item() - dropout_regularizer(h, u, p)) <= 4 * change.std().item() / math.sqrt(samples)


def test_dropout_regularizer_on_constructed_readouts():
    h = np.array([[1.0, 2.0], [3.0, 0.0]])
    u = np.array([[1.0, 0.0], [0.0, 2.0]])  # orthogonal contributions
    # λ = 1 at p = 0.5: ‖u1‖²·mean(h1²) + ‖u2‖²·mean(h2²) = 1·5 + 4·2
    assert dropout_regularizer(h, u, 0.5) == pytest.approx(13.0)
    assert dropout_regularizer(h, u, 0.2) == pytest.approx(13.0 / 4)
    assert dropout_regularizer(h, u, 0.5, relative=True) == pytest.approx(1.0)
    copies = np.ones((4, 5))  # five identical units, identical readout weights: λ/units
    assert dropout_regularizer(copies, np.ones((1, 5)), 0.5, relative=True) == pytest.approx(1 / 5)
    nearly_cancelling = np.array([[1.0, 1.0]]), np.array([[1.0, -0.99]])
    assert dropout_regularizer(*nearly_cancelling, 0.5, relative=True) > 1000


@pytest.mark.parametrize("args, match", [
    ((np.ones((2, 3)), np.ones((1, 2)), 0.5), "readout_weight"),
    ((np.ones((2, 3)), np.ones((1, 3)), 0.0), "drop probability"),
    ((np.ones((2, 3)), np.ones((1, 3)), 1.0), "drop probability"),
])
def test_dropout_regularizer_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        dropout_regularizer(*args)


# ------------------------------------------------------------------------------ ablation


def _trained_mlp(seed: int = 0) -> tuple[nn.Module, Dataset]:
    torch.manual_seed(seed)
    model = MLP(12, [16], 3, p_hidden=0.5)
    data = blobs(200, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(data.x), data.y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, data


def test_ablation_of_no_unit_equals_the_plain_evaluation_and_of_all_units_the_bias():
    model, data = _trained_mlp()
    curve = ablation_curve(model, data, fractions=(0.0, 0.5, 1.0), draws=3, seed=7)
    plain = evaluate(model, data, "classification", device="cpu")
    at_zero = curve[curve["fraction"] == 0.0]
    assert (at_zero["units_ablated"] == 0).all()
    np.testing.assert_allclose(at_zero["error"], plain["error"])
    np.testing.assert_allclose(at_zero["loss"], plain["loss"], rtol=1e-5)
    bias_only = model[-1].bias.detach().argmax()
    at_one = curve[curve["fraction"] == 1.0]
    assert (at_one["units_ablated"] == 16).all()
    np.testing.assert_allclose(at_one["error"], (data.y != bias_only).double().mean().item())
    assert sorted(curve[curve["fraction"] == 0.5]["units_ablated"].unique()) == [8]
    assert model.training, "the model's mode is restored"
    assert curve.equals(ablation_curve(model, data, fractions=(0.0, 0.5, 1.0), draws=3, seed=7))


def test_ablation_zeroes_the_units_of_the_seeded_random_order():
    # Only unit 0 reaches the readout: the error jumps exactly in the draws whose first k units include it.
    model, data = _trained_mlp()
    with torch.no_grad():
        model[-1].weight[:, 1:] = 0.0
    fractions = [0.0, 0.25, 0.5]
    curve = ablation_curve(model, data, fractions=fractions, draws=4, seed=3)
    generator = torch.Generator().manual_seed(3)
    orders = [torch.randperm(16, generator=generator) for _ in range(4)]
    full = curve[curve["fraction"] == 0.0]["error"].iloc[0]
    bias_error = (data.y != model[-1].bias.detach().argmax()).double().mean().item()
    for row in curve.itertuples():
        hit = 0 in orders[row.draw][:row.units_ablated].tolist()
        assert row.error == pytest.approx(bias_error if hit else full)


def test_ablation_on_an_autoencoder_matches_the_reconstruction_loss():
    torch.manual_seed(0)
    model = Autoencoder(16, 8, p=0.5)
    data = Dataset(torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(40))
    curve = ablation_curve(model, data, fractions=(0.0, 1.0), draws=2, task="reconstruction")
    plain = evaluate(model, data, "reconstruction", device="cpu")["loss"]
    np.testing.assert_allclose(curve[curve["fraction"] == 0]["loss"], plain, rtol=1e-5)
    assert curve["error"].isna().all()


class _DoubledOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return 2 * self.fc(x)


def test_ablation_refuses_a_readout_that_does_not_give_the_output():
    data = blobs(20, 0)
    model = _DoubledOutput()
    with pytest.raises(ValueError, match="pass head="):
        ablation_curve(model, data)
    curve = ablation_curve(model, data, head=lambda h: 2 * model.fc(h), fractions=(0.0,), draws=1)
    assert curve["error"].iloc[0] == pytest.approx((model(data.x).argmax(1) != data.y).double().mean().item())


@pytest.mark.parametrize("kwargs, match", [
    (dict(fractions=(0.0, 1.5)), "fractions"),
    (dict(fractions=()), "fractions"),
    (dict(draws=0), "draws"),
    (dict(task="regression"), "task"),
])
def test_ablation_rejects_bad_arguments(kwargs, match):
    model, data = _trained_mlp()
    with pytest.raises(ValueError, match=match):
        ablation_curve(model, data, **kwargs)


def test_degradation_area_of_constant_and_linear_curves():
    import pandas as pd

    f = np.linspace(0, 0.8, 5)
    flat = pd.DataFrame({"fraction": np.tile(f, 2), "draw": np.repeat([0, 1], 5), "error": 0.1})
    assert degradation_area(flat) == pytest.approx(0.0)
    # error = 0.1 + 0.5·f, averaged over two draws (±0.05): mean excess over [0, 0.8] is 0.5·0.4
    linear = flat.assign(error=0.1 + 0.5 * flat["fraction"] + np.where(flat["draw"] == 0, 0.05, -0.05))
    assert degradation_area(linear) == pytest.approx(0.2)
    grouped = pd.concat([linear.assign(setting="a"), flat.assign(setting="b")])
    assert degradation_area(grouped, by=("setting",)).to_dict() == {"a": pytest.approx(0.2), "b": pytest.approx(0.0)}
    with pytest.raises(ValueError, match="fraction 0"):
        degradation_area(flat[flat["fraction"] > 0])
    with pytest.raises(ValueError, match="no column"):
        degradation_area(flat, metric="loss")


def test_readout_and_the_rate_feeding_it():
    ae = Autoencoder(16, 8, p=0.5)
    assert find_readout(ae) is ae.decoder[1]
    assert _rate_feeding(ae, ae.decoder[1]) == (0.5, 2.0)
    standard = Autoencoder(16, 8, p=0.25, dropout="standard")
    assert _rate_feeding(standard, find_readout(standard)) == (0.25, 1.0)
    plain = Autoencoder(16, 8, p=0.0)
    assert _rate_feeding(plain, find_readout(plain)) == (0.0, 1.0)
    hidden, output = readout_inputs(ae, torch.rand(5, 1, 4, 4))
    assert hidden.shape == (5, 8) and output.shape == (5, 16) and ae.training
    with pytest.raises(ValueError, match="no nn.Linear"):
        find_readout(nn.ReLU())


# ------------------------------------------------------------------------------ drivers


def test_classifier_study_measures_every_run():
    data = {"train": blobs(128, 0), "test": blobs(64, 1)}
    config = TrainConfig(epochs=2, batch_size=32, eval_splits=(), device="cpu")
    settings = {"no dropout": dict(p_hidden=0.0), "dropout": dict(p_hidden=0.5)}
    study = classifier_study(lambda **kw: MLP(12, [16], 3, **kw), settings, data, config, [0, 1],
                             fractions=(0.0, 0.5), draws=2)
    assert list(study.metrics["setting"]) == ["no dropout", "no dropout", "dropout", "dropout"]
    assert study.metrics[["test_error", "mean_abs_correlation", "dropout_regularizer", "error_area"]].notna().all().all()
    assert len(study.ablation) == 4 * 2 * 2 and {"setting", "seed", "fraction"} <= set(study.ablation.columns)
    with pytest.raises(ValueError, match="classification"):
        classifier_study(lambda **kw: MLP(12, [16], 3, **kw), settings, data,
                         TrainConfig(task="reconstruction"), [0])


def test_autoencoder_study_measures_every_run():
    g = torch.Generator().manual_seed(0)
    data = {"train": Dataset(torch.rand(64, 1, 4, 4, generator=g), torch.zeros(64)),
            "test": Dataset(torch.rand(32, 1, 4, 4, generator=g), torch.zeros(32))}
    config = TrainConfig(epochs=2, batch_size=16, task="reconstruction", eval_splits=(), device="cpu")
    settings = {"no dropout": dict(p=0.0), "dropout": dict(p=0.5)}
    study = autoencoder_study(lambda **kw: Autoencoder(16, 8, **kw), settings, data, config, [0, 1],
                              n_filters=4, sample_size=10)
    metrics = study.metrics.set_index(["setting", "seed"])
    assert len(metrics) == 4 and metrics["test_mse"].gt(0).all()
    ratio = metrics["mean_activation_train_scale"] / metrics["mean_activation"]
    assert ratio.loc["dropout"].tolist() == pytest.approx([2.0, 2.0])
    assert ratio.loc["no dropout"].tolist() == pytest.approx([1.0, 1.0])
    assert set(study.filters) == set(settings) and study.filters["dropout"].shape == (9, 9)
    assert len(study.activation_sample) == 2 * 10 * 8 and len(study.unit_means) == 4 * 8
