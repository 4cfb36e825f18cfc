"""Concrete dropout experiments (dropoutlab.analysis.concrete_experiments), notebook 07."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import blobs
from torch import nn

from dropoutlab.analysis.concrete_experiments import (
    GridConfig,
    HeteroscedasticConcreteMLP,
    RatePlateau,
    RateSweep,
    RateSweepConfig,
    ToyConfig,
    adam_drift_range,
    concrete_layers,
    concrete_mlp,
    concrete_rate_sweep,
    fit_heteroscedastic,
    fixed_rate_grid,
    grid_vs_concrete,
    heteroscedastic_loss,
    input_dropout_floor,
    layer_trend_scores,
    rate_plateau,
    regularizer_gradients,
    regularizer_optimum,
    regularizer_study,
    relaxation_study,
    relaxed_keep_mean,
    sum_of_squares,
    toy_data,
    toy_study,
    toy_uncertainty,
    trend_scores,
)
from dropoutlab.train import TrainConfig
from dropoutlab.variants.concrete import ConcreteDropout

# --------------------------------------------------------------------------- CD-RX


def test_exact_keep_mean_limits_and_symmetry():
    """p = 1/2 is symmetric (u ↔ 1 − u), so E[1 − z̃] = 1/2 at every t; as t → 0 it tends to 1 − p."""
    for t in (0.01, 0.1, 1.0):
        assert relaxed_keep_mean(0.5, t) == pytest.approx(0.5, abs=1e-9)
    for p in (0.1, 0.3, 0.8):
        assert relaxed_keep_mean(p, 1e-3) == pytest.approx(1.0 - p, abs=1e-4)
    biases = [abs(relaxed_keep_mean(0.1, t) - 0.9) for t in (0.01, 0.1, 0.3, 1.0)]
    assert biases == sorted(biases)
    # the module docstring's numbers: bias ≈ 1.2e-3 at t = 0.1 and ≈ 0.045 at t = 2/3 (p = 0.1)
    assert relaxed_keep_mean(0.1, 0.1) - 0.9 == pytest.approx(-1.18e-3, abs=5e-5)
    assert relaxed_keep_mean(0.1, 2 / 3) - 0.9 == pytest.approx(-0.045, abs=1e-3)


def test_relaxation_study_matches_quadrature_within_sampling_error():
    """n = 200,000 float64 draws per seed: |mean − exact| < 4.5 standard errors for every seed."""
    study = relaxation_study(p=0.1, temperature=0.1, n_samples=200_000, seeds=(0, 1), bias_ps=(0.2,),
                             bias_temperatures=(0.1, 1.0), keep_sample=100)
    assert list(study.samples["seed"]) == [0, 1]
    assert (study.samples["deviation_exact"].abs() < 4.5 * study.samples["se"]).all()
    torch.testing.assert_close(torch.tensor(study.samples["deviation_nominal"].to_numpy()),
                               torch.tensor((study.samples["mean_keep"] - 0.9).to_numpy()))
    assert study.mask_sample.shape == (100,) and ((study.mask_sample >= 0) & (study.mask_sample <= 1)).all()
    assert list(study.bias["temperature"]) == [0.1, 1.0]
    again = relaxation_study(p=0.1, temperature=0.1, n_samples=200_000, seeds=(0, 1), bias_ps=(0.2,),
                             bias_temperatures=(0.1, 1.0), keep_sample=100)
    pd.testing.assert_frame_equal(study.samples, again.samples)


@pytest.mark.parametrize("kwargs, match", [
    ({"p": 0.0}, r"relaxation_study: p must be a drop probability in \(0, 1\)"),
    ({"temperature": 0.0}, "relaxation_study: temperature must be a finite number > 0"),
    ({"n_samples": 1}, "relaxation_study: n_samples must be an integer ≥ 2"),
    ({"seeds": []}, "seeds must be a non-empty list"),
])
def test_relaxation_study_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        relaxation_study(**kwargs)


# --------------------------------------------------------------------------- CD-REG


def test_regularizer_gradients_match_closed_form_and_signs():
    grads = regularizer_gradients(input_dim=7, sum_sq=3.5, weight_regularizer=0.02, dropout_regularizer=0.1,
                                  ps=[0.05, 0.3, 0.5, 0.7, 0.95])
    np.testing.assert_allclose(grads["autograd"], grads["formula"], rtol=1e-9, atol=1e-12)
    weight = grads[grads["term"] == "weight"]
    dropout = grads[grads["term"] == "dropout"].set_index("p")["formula"]
    assert (weight["formula"] > 0).all()  # descent lowers p
    assert dropout[0.05] < 0 and dropout[0.3] < 0 and abs(dropout[0.5]) < 1e-12 and dropout[0.7] > 0
    # hand values: wr·S/(1 − p)² at p = 0.3, dr·K·log(p/(1 − p)) at p = 0.7
    assert weight.set_index("p").loc[0.3, "formula"] == pytest.approx(0.02 * 3.5 / 0.49)
    assert dropout[0.7] == pytest.approx(0.1 * 7 * math.log(0.7 / 0.3))


def test_regularizer_optimum():
    assert regularizer_optimum(10, 2.0, 0.0, 0.1) == pytest.approx(0.5, abs=1e-12)
    p = regularizer_optimum(10, 2.0, 0.05, 0.1)
    assert 0 < p < 0.5
    assert 0.05 * 2.0 / (1 - p) ** 2 + 0.1 * 10 * math.log(p / (1 - p)) == pytest.approx(0.0, abs=1e-9)
    assert regularizer_optimum(10, 2.0, 0.5, 0.1) < p  # a stronger weight term pulls p lower
    with pytest.raises(ValueError, match="regularizer_optimum: dropout_regularizer must be > 0"):
        regularizer_optimum(10, 2.0, 0.05, 0.0)
    with pytest.raises(ValueError, match="regularizer_optimum: input_dim must be an integer ≥ 1"):
        regularizer_optimum(0, 2.0, 0.05, 0.1)


def test_sum_of_squares_is_the_regularizers_s():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 1.0]]))
        layer.bias.copy_(torch.tensor([3.0, 0.0]))
    assert sum_of_squares(ConcreteDropout(layer)) == 16.0
    assert sum_of_squares(ConcreteDropout(layer, include_bias=False)) == 7.0
    with pytest.raises(ValueError, match="sum_of_squares: expected a ConcreteDropout module, got Linear"):
        sum_of_squares(layer)


def test_regularizer_study_descent_goes_where_the_terms_pull():
    study = regularizer_study(input_dim=10, sum_sq=2.0, weight_regularizer=0.05, dropout_regularizer=0.1,
                              ps=[0.2, 0.8], starts=(0.1, 0.9), steps=300, lr=0.05)
    final = study.descent[study.descent["step"] == 300].set_index(["term", "start"])["p"]
    assert abs(final["dropout", 0.1] - 0.5) < 1e-3 and abs(final["dropout", 0.9] - 0.5) < 1e-3
    assert final["weight", 0.1] < 0.1 and final["weight", 0.9] < 0.9
    for start in (0.1, 0.9):
        assert final["both", start] == pytest.approx(study.optimum, abs=1e-3)
    with pytest.raises(ValueError, match=r"regularizer_study: starts must be a non-empty list of drop probabilities"):
        regularizer_study(10, 2.0, 0.05, 0.1, ps=[0.2], starts=(1.0,), steps=1)
    with pytest.raises(ValueError, match="regularizer_gradients: sum_sq must be a finite number ≥ 0"):
        regularizer_gradients(10, -1.0, 0.05, 0.1, [0.2])


# --------------------------------------------------------------------------- CD-MN / CD-GRID


def test_concrete_mlp_layers_and_regulariser_factors():
    model = concrete_mlp(12, [8, 8], 3, n_train=500, length_scale=0.1, tau=2.0, p_init=0.2)
    modules = [m for m in model.modules() if isinstance(m, ConcreteDropout)]
    assert len(modules) == 3 and all(m.rate == pytest.approx(0.2, abs=1e-6) for m in modules)
    assert modules[0].weight_regularizer == pytest.approx(0.01 / 1000)
    assert modules[0].dropout_regularizer == pytest.approx(2 / 1000)
    assert [m.input_dim for m in modules] == [12, 8, 8]
    assert list(concrete_layers(model).values()) == ["input", "hidden 1", "hidden 2"]


def _splits():
    return blobs(240, 0), blobs(90, 1), blobs(120, 2)


def test_concrete_rate_sweep_shapes_budget_and_reproducibility():
    train, _, test = _splits()
    config = TrainConfig(batch_size=32, lr=1e-2, device="cpu")
    config = RateSweepConfig(config, sizes=[60, 240], seeds=[0, 1], widths=[8, 8], updates=12, max_points=5)
    sweep = concrete_rate_sweep(train, test, config)
    assert isinstance(sweep, RateSweep) and sweep.updates == 12
    assert len(sweep.rates) == 2 * 2 * 3 and set(sweep.rates["layer"]) == {"input", "hidden 1", "hidden 2"}
    assert sweep.trajectories.groupby(["N", "seed"])["step"].max().eq(12).all()
    first = sweep.trajectories[sweep.trajectories["step"] == 0]
    assert len(first) == 2 * 2 * 3 and np.allclose(first["rate"], 0.1)
    assert sweep.trajectories.groupby(["N", "seed", "layer"]).size().max() <= 5
    # the last trajectory point is the final rate
    last = sweep.trajectories.sort_values("step").groupby(["N", "seed", "layer"])["rate"].last()
    np.testing.assert_allclose(last.sort_index().to_numpy(),
                               sweep.rates.set_index(["N", "seed", "layer"])["rate"].sort_index().to_numpy())
    assert sweep.errors["test_error"].between(0, 1).all() and len(sweep.errors) == 4
    again = concrete_rate_sweep(train, test, config)
    pd.testing.assert_frame_equal(sweep.rates, again.rates)
    pd.testing.assert_frame_equal(sweep.errors, again.errors)


def test_rate_sweep_and_grid_bad_arguments():
    train, val, test = _splits()
    config = TrainConfig(batch_size=32, device="cpu")
    with pytest.raises(ValueError, match="concrete_rate_sweep: size 500 exceeds the training split"):
        concrete_rate_sweep(train, test, RateSweepConfig(config, sizes=[60, 500], seeds=[0], widths=[4], updates=1))
    with pytest.raises(ValueError, match="fixed_rate_grid: size 500 exceeds the training split"):
        fixed_rate_grid(train, val, test, GridConfig(config, n=500, rates=[0.1], seeds=[0], widths=[4], updates=1))
    with pytest.raises(ValueError, match=r"RateSweepConfig\.sizes must be a non-empty list of integers ≥ 1"):
        RateSweepConfig(config, sizes=[0], seeds=[0], widths=[4], updates=1)
    with pytest.raises(ValueError, match=r"RateSweepConfig\.updates must be an integer ≥ 1"):
        RateSweepConfig(config, sizes=[60], seeds=[0], widths=[4], updates=0)
    with pytest.raises(ValueError, match=r"RateSweepConfig\.training must be a TrainConfig"):
        RateSweepConfig({"lr": 0.1}, sizes=[60], seeds=[0], widths=[4], updates=1)
    with pytest.raises(ValueError, match=r"GridConfig\.rates must be a non-empty list of drop probabilities"):
        GridConfig(config, n=60, rates=[1.0], seeds=[0], widths=[4], updates=1)
    with pytest.raises(ValueError, match=r"GridConfig\.seeds must be a non-empty list"):
        GridConfig(config, n=60, rates=[0.1], seeds=[], widths=[4], updates=1)


def test_fixed_rate_grid_runs_every_rate_and_seed():
    train, val, test = _splits()
    config = TrainConfig(batch_size=32, lr=1e-2, device="cpu")
    grid = fixed_rate_grid(train, val, test, GridConfig(config, n=120, rates=[0.0, 0.3], seeds=[0, 1], widths=[8],
                                                        updates=8))
    assert list(grid.columns) == ["p", "seed", "val_error", "test_error", "updates"]
    assert sorted(zip(grid["p"], grid["seed"])) == [(0.0, 0), (0.0, 1), (0.3, 0), (0.3, 1)]
    assert grid["val_error"].between(0, 1).all()


def test_grid_vs_concrete_selects_on_validation_and_counts_cost():
    grid = pd.DataFrame({"p": [0.0, 0.2, 0.5, 0.0, 0.2, 0.5], "seed": [0, 0, 0, 1, 1, 1],
                         "val_error": [0.10, 0.05, 0.07, 0.04, 0.06, 0.04],
                         "test_error": [0.11, 0.06, 0.02, 0.05, 0.07, 0.03], "updates": 100})
    concrete = pd.DataFrame({"N": [500, 500, 900], "seed": [0, 1, 0], "test_error": [0.055, 0.06, 0.5]})
    per_seed, cost = grid_vs_concrete(grid, concrete, 500, concrete_updates=100)
    # seed 0 picks p = 0.2 (lowest val error) even though p = 0.5 has the lowest test error;
    # seed 1 has a tie (0.0 and 0.5): the smaller p wins
    assert list(per_seed["chosen_p"]) == [0.2, 0.0]
    np.testing.assert_allclose(per_seed["difference"], [0.055 - 0.06, 0.06 - 0.05])
    assert list(cost["runs"]) == [1, 3] and list(cost["updates"]) == [100, 300]
    with pytest.raises(ValueError, match=r"no 'test_error' rows for \{'N': 700\}"):
        grid_vs_concrete(grid, concrete, 700, 100)
    with pytest.raises(ValueError, match="seed 1 has grid runs but no concrete run at N=900"):
        grid_vs_concrete(grid, concrete, 900, 100)


# --------------------------------------------------------------------------- trends and plateaus


def test_trend_scores_per_seed():
    sizes = [10, 100, 1000]
    falling = pd.DataFrame({"seed": np.repeat([0, 1, 2], 3), "N": sizes * 3,
                            "y": [3, 2, 1, 5, 4, 0.5, 2, 1.5, 1.0]})
    scores = trend_scores(falling, "N", "y")
    assert list(scores.index) == [0, 1, 2] and scores.tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert trend_scores(falling, "N", "y", direction="increasing").tolist() == pytest.approx([-1.0, -1.0, -1.0])
    # seed 0 goes down then up: ρ = 0.5 → score −0.5; the others fall: 1
    bumpy = pd.DataFrame({"seed": np.repeat([0, 1, 2], 3), "N": sizes * 3, "y": [3, 1, 4, 3, 2, 1, 3, 2, 1]})
    assert trend_scores(bumpy, "N", "y").tolist() == pytest.approx([-0.5, 1.0, 1.0])
    flat = pd.DataFrame({"seed": [0, 0, 1, 1], "N": [1, 2, 1, 2], "y": [1.0, 1.0, 2.0, 2.0]})
    assert trend_scores(flat, "N", "y").tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="trend_scores: direction must be"):
        trend_scores(flat, "N", "y", direction="up")
    with pytest.raises(ValueError, match="need at least two distinct values of 'N'"):
        trend_scores(flat[flat["N"] == 1], "N", "y")
    with pytest.raises(ValueError, match=r"trend_scores: frame has no column\(s\) \['p'\]"):
        trend_scores(flat, "N", "p")


def test_trend_scores_within_groups_averages_per_seed():
    # seed 0: rising with depth at N = 1 (ρ = 1) and falling at N = 2 (ρ = −1) → 0; seed 1: ρ = 1 twice → 1
    frame = pd.DataFrame({"seed": [0] * 6 + [1] * 6, "N": ([1] * 3 + [2] * 3) * 2, "depth": [0, 1, 2] * 4,
                          "rate": [1, 2, 3, 3, 2, 1, 1, 2, 3, 1, 2, 4]})
    scores = trend_scores(frame, "depth", "rate", direction="increasing", within="N")
    assert scores.tolist() == pytest.approx([0.0, 1.0])


def test_layer_trend_scores_one_column_per_layer():
    # hidden 1 falls with N for both seeds; input falls for seed 0 and rises for seed 1
    rates = pd.DataFrame({"N": [10, 100] * 4, "seed": [0, 0, 1, 1] * 2,
                          "layer": ["input"] * 4 + ["hidden 1"] * 4,
                          "rate": [0.3, 0.2, 0.1, 0.2, 0.5, 0.4, 0.5, 0.3]})
    scores = layer_trend_scores(rates)
    assert list(scores.columns) == ["input", "hidden 1"] and list(scores.index) == [0, 1]
    np.testing.assert_allclose(scores["input"], [1.0, -1.0])
    np.testing.assert_allclose(scores["hidden 1"], [1.0, 1.0])
    np.testing.assert_allclose(scores.min(axis=1), [1.0, -1.0])  # the weakest layer per seed
    with pytest.raises(ValueError, match="layer_trend_scores: rates has no 'layer' column"):
        layer_trend_scores(rates.drop(columns="layer"))


def test_adam_drift_range():
    """The notebook's numbers: from p = 0.1, 1,000 updates at lr = 1e-3 reach σ(logit 0.1 ± 1) ≈ 0.039 … 0.232."""
    low, high = adam_drift_range(0.1, 1e-3, 1000)
    assert high == pytest.approx(1 / (1 + 9 * math.exp(-1)), rel=1e-12) and high == pytest.approx(0.232, abs=5e-4)
    assert low == pytest.approx(1 / (1 + 9 * math.exp(1)), rel=1e-12)
    assert adam_drift_range(0.3, 1e-3, 0) == pytest.approx((0.3, 0.3))
    with pytest.raises(ValueError, match=r"adam_drift_range: p_init must be a drop probability in \(0, 1\)"):
        adam_drift_range(0.0, 1e-3, 10)
    with pytest.raises(ValueError, match="adam_drift_range: updates must be an integer ≥ 0"):
        adam_drift_range(0.1, 1e-3, -1)


def test_adam_drift_range_matches_adam_on_a_constant_gradient():
    """Adam on a loss with a constant gradient in p_logit moves it by exactly lr per update."""
    logit = torch.tensor(float(np.log(0.1 / 0.9)), requires_grad=True)
    optimizer = torch.optim.Adam([logit], lr=1e-2)
    for _ in range(50):
        optimizer.zero_grad()
        (-3.0 * logit).backward()  # constant gradient −3: p rises
        optimizer.step()
    assert float(torch.sigmoid(logit.detach())) == pytest.approx(adam_drift_range(0.1, 1e-2, 50)[1], rel=1e-4)


def _trajectory(rates_by_step, n=100, seed=0, layer="input"):
    steps, rates = zip(*rates_by_step)
    return pd.DataFrame({"N": n, "seed": seed, "layer": layer, "step": steps, "rate": rates})


def test_rate_plateau_relative_change_over_the_last_window():
    # run A climbs linearly 0.1 → 0.2 over 100 steps: at step 80 p = 0.18, change 0.02/0.18;
    # run B is flat after step 50 (recorded at 0, 50, 100 only: p at step 80 is interpolated).
    # lr = 0.05: a window of 20 updates has reach 1 (logit units), just enough to show a drift.
    climbing = _trajectory([(s, 0.1 + 0.001 * s) for s in range(0, 101, 10)])
    flat = _trajectory([(0, 0.1), (50, 0.3), (100, 0.3)], n=200)
    result = rate_plateau(pd.concat([climbing, flat], ignore_index=True), tolerance=0.05, lr=0.05)
    assert isinstance(result, RatePlateau) and result.window == 0.2 and result.min_reach == 1.0
    changes = result.changes.set_index("N")
    assert changes.loc[100, "p_start"] == pytest.approx(0.18) and changes.loc[100, "p_end"] == pytest.approx(0.2)
    assert changes.loc[100, "relative_change"] == pytest.approx(0.02 / 0.18)
    assert changes.loc[100, "reach"] == pytest.approx(1.0)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    assert changes.loc[100, "drift_fraction"] == pytest.approx(logit(0.2) - logit(0.18))
    assert changes.loc[200, "relative_change"] == pytest.approx(0.0) and changes.loc[200, "drift_fraction"] == 0.0
    assert result.largest["N"] == 100 and not result.plateaued
    assert rate_plateau(flat, tolerance=0.05, lr=0.05).plateaued
    assert rate_plateau(climbing, tolerance=0.2, lr=0.05).plateaued  # 11 % < 20 %
    # a falling p counts as much as a rising one; steps need not start at 0 (the window is of the run's span)
    falling = _trajectory([(10, 0.4), (110, 0.2)])
    assert rate_plateau(falling, tolerance=0.05, window=0.5, lr=0.05).changes["relative_change"].iloc[0] == (
        pytest.approx(0.1 / 0.3))


def test_rate_plateau_needs_a_window_in_which_adam_could_move_p():
    """A short run is not a plateau: with lr = 1e-3 a 20-update window could move p_logit by 0.02 only."""
    flat = _trajectory([(0, 0.1), (50, 0.3), (100, 0.3)])
    short = rate_plateau(flat, tolerance=0.05, lr=1e-3)
    assert short.changes["reach"].iloc[0] == pytest.approx(0.02) and not short.plateaued
    assert rate_plateau(flat, tolerance=0.05, lr=1e-3, min_reach=0.01).plateaued


def test_rate_plateau_bad_arguments():
    frame = _trajectory([(0, 0.1), (10, 0.2)])
    with pytest.raises(ValueError, match=r"rate_plateau: window must be a fraction in \(0, 1\)"):
        rate_plateau(frame, tolerance=0.05, window=1.0, lr=1e-3)
    with pytest.raises(ValueError, match="rate_plateau: tolerance must be a finite number > 0"):
        rate_plateau(frame, tolerance=0.0, lr=1e-3)
    with pytest.raises(ValueError, match="rate_plateau: lr must be a finite number > 0"):
        rate_plateau(frame, tolerance=0.05, lr=-1.0)
    with pytest.raises(ValueError, match=r"rate_plateau: trajectories has no column\(s\) \['step'\]"):
        rate_plateau(frame.drop(columns="step"), tolerance=0.05, lr=1e-3)
    with pytest.raises(ValueError, match="has fewer than two recorded steps"):
        rate_plateau(frame.iloc[:1], tolerance=0.05, lr=1e-3)


def test_rate_plateau_on_a_rate_sweep():
    """On a real sweep the plateau table has one row per (N, seed, layer) and uses the final rates."""
    train, _, test = _splits()
    config = RateSweepConfig(TrainConfig(batch_size=32, lr=1e-2, device="cpu"), sizes=[60, 240], seeds=[0], widths=[8],
                             updates=10, max_points=4)
    sweep = concrete_rate_sweep(train, test, config)
    result = rate_plateau(sweep.trajectories, tolerance=0.05, lr=1e-2)
    assert len(result.changes) == 2 * 2 and not result.plateaued  # 2 updates in the window: reach 0.02
    merged = result.changes.merge(sweep.rates, on=["N", "seed", "layer"])
    np.testing.assert_allclose(merged["p_end"], merged["rate"])


# --------------------------------------------------------------------------- CD-TOY


def test_heteroscedastic_loss_golden_and_shape_errors():
    y = torch.tensor([[1.0], [3.0]])
    out = torch.tensor([[0.0, 0.0], [2.0, math.log(4.0)]])
    # (1·1 + 0 + 0.25·1 + log 4) / 2
    assert heteroscedastic_loss(y, out).item() == pytest.approx((1.0 + 0.25 + math.log(4.0)) / 2)
    with pytest.raises(ValueError, match=r"heteroscedastic_loss: output must be \(B, 2·D\)"):
        heteroscedastic_loss(y, torch.zeros(2, 3))


def test_toy_data_noise_level():
    """Residual sd of y − (2x + 8) vs the true σ = 1.5: the sample sd has sd ≈ σ/√(2n); 4.5 of them."""
    n = 20_000
    x, y = toy_data(n, seed=3, noise_sd=1.5)
    assert x.shape == y.shape == (n, 1) and x.dtype == torch.float32
    residual_sd = float((y - 2 * x - 8).double().std())
    assert abs(residual_sd - 1.5) < 4.5 * 1.5 / math.sqrt(2 * n)
    torch.testing.assert_close(toy_data(5, seed=3)[0], toy_data(5, seed=3)[0])
    with pytest.raises(ValueError, match="toy_data: noise_sd must be a finite number > 0"):
        toy_data(5, 0, noise_sd=0.0)


class _ConstantHead(nn.Module):
    """Concrete dropout in front of a zero-weight Linear: stochastic in form, constant in value."""

    def __init__(self, mean: float, log_var: float) -> None:
        super().__init__()
        layer = nn.Linear(1, 2)
        with torch.no_grad():
            layer.weight.zero_()
            layer.bias.copy_(torch.tensor([mean, log_var]))
        self.drop = ConcreteDropout(layer, p=0.3)

    def forward(self, x):
        return self.drop(x)


def test_toy_uncertainty_exact_on_a_constant_model():
    model = _ConstantHead(mean=2.0, log_var=math.log(0.25))
    x, y = torch.randn(50, 1), torch.linspace(0, 4, 50).unsqueeze(1)
    result = toy_uncertainty(model, x, y, samples=5)
    assert result["epistemic_sd"] == pytest.approx(0.0, abs=1e-12)
    assert result["aleatoric_sd"] == pytest.approx(0.5, rel=1e-6)
    assert result["rmse"] == pytest.approx(float(((y.double() - 2.0) ** 2).mean().sqrt()), rel=1e-6)
    density = -0.5 * math.log(2 * math.pi * 0.25) - 0.5 * ((y.double() - 2.0) ** 2) / 0.25
    assert result["test_ll"] == pytest.approx(float(density.mean()), rel=1e-6)
    with pytest.raises(ValueError, match="toy_uncertainty: samples must be an integer ≥ 2"):
        toy_uncertainty(model, x, y, samples=1)


def test_heteroscedastic_model_rates_and_training_reduce_loss():
    model = HeteroscedasticConcreteMLP(1, 16, 2, weight_regularizer=1e-6, dropout_regularizer=1e-3, p_init=0.2)
    assert list(model.rates()) == ["input", "hidden 1", "mean head", "log-var head"]
    assert model(torch.zeros(4, 1)).shape == (4, 2)
    x, y = toy_data(200, seed=0)
    records = fit_heteroscedastic(model, x, y, epochs=30, batch_size=20, lr=1e-2, seed=0, device="cpu")
    assert records[-1]["loss"] < records[0]["loss"]
    assert set(records[0]) >= {"epoch", "loss", "rate/input", "rate/log-var head"}
    result = toy_uncertainty(model, *toy_data(300, seed=1), samples=10)
    assert result["rmse"] < float(y.std())  # better than predicting the mean of y
    with pytest.raises(ValueError, match="fit_heteroscedastic: x and y must have the same number of rows"):
        fit_heteroscedastic(model, x, y[:10], epochs=1)
    with pytest.raises(ValueError, match="HeteroscedasticConcreteMLP: width must be an integer ≥ 1"):
        HeteroscedasticConcreteMLP(1, 0)


def test_input_dropout_floor_matches_monte_carlo():
    """slope·x·m/(1−p) with x ~ N(0, 1) and m ~ Bernoulli(1−p): the variance over m averaged over x.

    With n draws of (x, m), Var over m at fixed x averaged over x equals E[(μ − slope·x)²]; the
    tolerance is 4.5 standard errors of that sample mean (its own sample sd / √n).
    """
    p, slope, n = 0.2, 2.0, 400_000
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    keep = (torch.rand(n, generator=gen, dtype=torch.float64) >= p).double()
    squared = (slope * x * keep / (1 - p) - slope * x) ** 2
    epistemic, aleatoric = input_dropout_floor(p, slope)
    assert abs(float(squared.mean()) - epistemic**2) < 4.5 * float(squared.std()) / math.sqrt(n)
    assert epistemic == pytest.approx(2.0 * math.sqrt(0.25)) and aleatoric == pytest.approx(math.sqrt(2.0))
    assert input_dropout_floor(0.0) == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"input_dropout_floor: p_input must be a drop probability in \[0, 1\)"):
        input_dropout_floor(1.0)


def test_toy_study_rows_and_reproducibility():
    config = ToyConfig([10, 40], [3, 1], [0, 1], width=8, depth=1, n_val=30, samples=4, batch_size=10, device="cpu")
    frame = toy_study(config)
    assert list(zip(frame["N"], frame["seed"])) == [(10, 0), (10, 1), (40, 0), (40, 1)]
    assert list(frame["updates"]) == [3, 3, 4, 4]
    assert {"epistemic_sd", "aleatoric_sd", "rmse", "test_ll", "p/input", "p/mean head"} <= set(frame.columns)
    pd.testing.assert_frame_equal(frame, toy_study(config))
    with pytest.raises(ValueError, match=r"ToyConfig\.epochs must give one value per size"):
        ToyConfig([10, 40], [3], [0])
