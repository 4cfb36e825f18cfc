"""Variance shift (Li et al. 2019): formulas, Monte Carlo check, BN hooks, recalibration, study driver."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from dropoutlab.analysis.variance_shift import (
    MEASURE_COLUMNS,
    VarianceShiftConfig,
    block_orders,
    bn_dropout_study,
    gap_recovered,
    mc_agreement,
    measure_bn_input_variance,
    monte_carlo_variance_shift,
    noise_variance,
    paired_ratio_ci,
    recalibrate_bn,
    recovery_contrast,
    uout_variance_shift,
    variance_shift,
    variance_shift_grid,
    variance_train,
)
from dropoutlab.data import Dataset
from dropoutlab.models import ConvNet
from dropoutlab.train import TrainConfig
from dropoutlab.variants import make_dropout

#: Family-wise error level of every statistical test below (fixed seeds: the outcome is deterministic).
FAMILY_LEVEL = 0.999


def z_critical(k: int = 1) -> float:
    """Two-sided Bonferroni critical value for k normal z statistics at FAMILY_LEVEL."""
    return float(stats.norm.ppf(1 - (1 - FAMILY_LEVEL) / (2 * k)))


# ------------------------------------------------------------------------------ theory


def test_shift_is_the_keep_rate_for_a_zero_mean_unit():
    p = np.array([0.0, 0.1, 0.5, 0.9])
    np.testing.assert_allclose(variance_shift(p, c=0.0, v=2.5), 1 - p)


def test_shift_matches_the_papers_form():
    # Li et al.: Δ(q) = v / (1/q·(c² + v) − c²), q the keep rate
    for p, c, v in [(0.5, 1.0, 1.0), (0.2, -2.0, 0.5), (0.7, 0.3, 4.0)]:
        q = 1 - p
        assert variance_shift(p, c, v) == pytest.approx(v / ((c**2 + v) / q - c**2), rel=1e-12)
        assert variance_train(c, v, p / (1 - p)) == pytest.approx((c**2 + v) / q - c**2, rel=1e-12)


def test_uout_shift_at_zero_mean():
    beta = np.array([0.0, 0.1, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(uout_variance_shift(beta), 3 / (3 + beta**2))
    assert uout_variance_shift(0.1, c=1.0) < uout_variance_shift(0.1, c=0.0)


@pytest.mark.parametrize("call, match", [
    (lambda: variance_shift(1.0), "drop probability"),
    (lambda: variance_shift(-0.1), "drop probability"),
    (lambda: variance_shift(0.5, v=0.0), "unit variance"),
    (lambda: variance_shift(0.5, c=math.nan), "unit mean"),
    (lambda: uout_variance_shift(-1.0), "beta"),
    (lambda: monte_carlo_variance_shift("gaussian", 0.5, 0.0), "variant must be one of"),
    (lambda: monte_carlo_variance_shift("dropout", 0.5, 0.0, n_samples=1), "n_samples"),
    (lambda: variance_shift_grid([], [0.0], []), "empty grid"),
    (lambda: mc_agreement([], family_level=1.5), "family_level"),
])
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_noise_variance_of_modules():
    assert noise_variance(make_dropout("inverted", p=0.5)) == pytest.approx(1.0)
    assert noise_variance(nn.Dropout(0.2)) == pytest.approx(0.25)
    assert noise_variance(make_dropout("uout", beta=0.3)) == pytest.approx(0.03)
    assert noise_variance(make_dropout("gaussian", p=0.5)) == pytest.approx(1.0)
    assert noise_variance(nn.ReLU()) is None
    assert noise_variance(make_dropout("standard", p=0.5)) is None


# ------------------------------------------------------------------------------ Monte Carlo


@pytest.fixture(scope="module")
def grid():
    return variance_shift_grid([0.1, 0.5, 0.8], [0.0, 1.0, -3.0], [0.1, 0.5, 1.5], n_samples=100_000, seed=0)


def test_monte_carlo_agrees_with_the_formulas(grid):
    assert len(grid) == 18 and set(grid["variant"]) == {"dropout", "uout"}
    agreement = mc_agreement(grid, FAMILY_LEVEL)
    assert agreement["z_critical"] == pytest.approx(z_critical(len(grid)))
    assert agreement["max_abs_z"] <= agreement["z_critical"], grid[["variant", "rate", "c", "ratio_mc", "ratio_theory", "z"]]
    assert agreement["max_abs_z"] == pytest.approx(np.abs(grid["z"]).max())
    assert "passed" not in agreement  # a measurement: the registry's check decides
    var_z = (grid["var_train_mc"] - grid["var_train_theory"]) / grid["var_train_se"]
    assert np.abs(var_z).max() <= z_critical(len(grid))


def test_monte_carlo_check_has_power_against_a_wrong_formula(grid):
    # Δ = q² (a plausible slip) must be rejected wherever it differs from the truth by many SEs
    dropout = grid[(grid["variant"] == "dropout") & (grid["c"] == 0.0)]
    wrong = (1 - dropout["rate"]) ** 2
    z_wrong = (dropout["ratio_mc"] - wrong) / dropout["ratio_se"]
    assert np.abs(z_wrong).min() > z_critical(len(dropout))


def test_ratio_standard_error_is_calibrated():
    # z over independent replications is ~N(0, 1): its sample s.d. has s.e. ≈ 1/sqrt(2(n−1))
    reps = 120
    z = np.array([monte_carlo_variance_shift("dropout", 0.5, 1.0, n_samples=4000, seed=s)["z"] for s in range(reps)])
    sd_se = 1 / math.sqrt(2 * (reps - 1))
    assert abs(z.std(ddof=1) - 1) < z_critical(2) * sd_se
    assert abs(z.mean()) < z_critical(2) / math.sqrt(reps)


def test_monte_carlo_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a = monte_carlo_variance_shift("uout", 0.5, 1.0, n_samples=1000, seed=3)
    b = monte_carlo_variance_shift("uout", 0.5, 1.0, n_samples=1000, seed=3)
    assert a == b
    assert torch.equal(state, torch.get_rng_state())


# ------------------------------------------------------------------------------ BN hooks


def dropout_bn(p: float = 0.5, channels: int = 4) -> nn.Sequential:
    return nn.Sequential(make_dropout("inverted", p=p), nn.BatchNorm1d(channels))


def gaussian_inputs(n: int, channels: int, c: float, v: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return c + math.sqrt(v) * torch.randn(n, channels, generator=g)


def small_convnet(order="conv-drop-bn-act", p=0.5, dropout="inverted") -> ConvNet:
    torch.manual_seed(0)
    return ConvNet((1, 6, 6), channels=(4, 4), order=block_orders(order, 2, [1]), p=p, hidden=8, padding=1,
                   num_classes=3, dropout=dropout)


def test_measurement_matches_the_theory_for_dropout_before_bn():
    n, channels, p, c, v = 20_000, 4, 0.5, 1.0, 2.0
    frame = measure_bn_input_variance(dropout_bn(p, channels), gaussian_inputs(n, channels, c, v), batch_size=None)
    assert list(frame.columns) == MEASURE_COLUMNS and len(frame) == 1
    row = frame.iloc[0]
    # the channel-averaged ratio has the MC standard error of one channel divided by sqrt(channels)
    se = monte_carlo_variance_shift("dropout", p, c, v, n_samples=n)["ratio_se"] / math.sqrt(channels)
    assert abs(row["ratio"] - variance_shift(p, c, v)) < z_critical(2) * se
    assert abs(row["ratio"] - row["ratio_theory"]) < z_critical(2) * se
    assert row["shift_ratio_max"] >= 1 / row["ratio"] > 1
    assert row["channels"] == channels


def test_no_noise_means_no_shift():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5))
    frame = measure_bn_input_variance(model, torch.randn(500, 3), batch_size=100)
    assert frame["ratio"].iloc[0] == pytest.approx(1.0, rel=1e-6)
    assert frame["shift_ratio_max"].iloc[0] == pytest.approx(1.0, rel=1e-5)
    assert frame["ratio_theory"].iloc[0] == 1.0


def test_measurement_restores_modes_stats_rng_and_removes_hooks():
    model = small_convnet()
    model.train()
    for _ in range(3):
        model(torch.rand(32, 1, 6, 6))
    model.eval()
    model.features[0][1].train()  # a mixed state (MC dropout style) must come back as it was
    modes = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(64, 1, 6, 6)
    rng = torch.get_rng_state()
    frame = measure_bn_input_variance(model, x, batch_size=16)
    assert len(frame) == 2 and list(frame["layer"]) == ["features.0.2", "features.1.2"]
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    assert frame["ratio_theory"].notna().all()  # each BN right after its dropout: closed form


def test_theory_is_undefined_when_noise_reaches_bn_through_a_conv():
    frame = measure_bn_input_variance(small_convnet("conv-bn-act-drop"), torch.rand(32, 1, 6, 6))
    assert frame["ratio_theory"].iloc[0] == 1.0 and np.isnan(frame["ratio_theory"].iloc[1])


def test_theory_is_undefined_for_noise_of_unknown_variance():
    frame = measure_bn_input_variance(small_convnet(dropout="spatial"), torch.rand(32, 1, 6, 6))
    assert frame["ratio_theory"].isna().all()


def test_measurement_is_deterministic_and_per_channel():
    model, x = small_convnet(), torch.rand(40, 1, 6, 6)
    a = measure_bn_input_variance(model, x, batch_size=20, seed=1)
    b = measure_bn_input_variance(model, x, batch_size=20, seed=1)
    assert a.equals(b)
    per_channel = measure_bn_input_variance(model, x, batch_size=20, seed=1, per_channel=True)
    assert len(per_channel) == 8 and {"channel", "mean_eval"} <= set(per_channel.columns)
    first = per_channel[per_channel["layer"] == "features.0.2"]
    assert first["var_eval"].mean() == pytest.approx(a["var_eval"].iloc[0], rel=1e-9)


@pytest.mark.parametrize("kwargs, match", [
    (dict(model=nn.Sequential(nn.Linear(2, 2)), x=torch.zeros(4, 2)), "no BatchNorm"),
    (dict(model=dropout_bn(channels=2), x=torch.zeros(4, 2), batch_size=0), "batch_size"),
    (dict(model=dropout_bn(channels=2), x=[1, 2]), "non-empty tensor"),
])
def test_measurement_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_bn_input_variance(**kwargs)


# ------------------------------------------------------------------------------ recalibration


def test_recalibration_moves_running_var_to_the_eval_variance():
    p, channels = 0.5, 3
    model = dropout_bn(p, channels).train()
    x = gaussian_inputs(4000, channels, c=0.0, v=1.0)
    torch.manual_seed(0)
    for start in range(0, len(x), 200):  # "training": running stats see the dropout-inflated variance
        model(x[start:start + 200])
    eval_var = x.var(0)
    before = model[1].running_var.clone()
    assert torch.all(before > 1.5 * eval_var)  # ≈ 1/(1 − p) = 2 times too large
    weights = model[1].weight.clone()
    recalibrate_bn(model, x, batch_size=512)
    torch.testing.assert_close(model[1].running_var, eval_var, rtol=1e-5, atol=0)
    torch.testing.assert_close(model[1].running_mean, x.mean(0), rtol=1e-5, atol=1e-6)
    assert torch.equal(model[1].weight, weights) and model.training and all(m.training for m in model)
    shift = measure_bn_input_variance(model, x, batch_size=None)["shift_running_max"].iloc[0]
    assert shift == pytest.approx(1.0, rel=1e-5)


def test_recalibration_of_a_deep_net_removes_every_layers_shift():
    model, x = small_convnet(), torch.rand(96, 1, 6, 6)
    model.train()
    for _ in range(5):
        model(x)
    assert measure_bn_input_variance(model, x)["shift_running_max"].min() > 1.05
    recalibrate_bn(model, Dataset(x, torch.zeros(96, dtype=torch.long)), batch_size=32)
    np.testing.assert_allclose(measure_bn_input_variance(model, x)["shift_running_max"], 1.0, rtol=1e-4)


def test_recalibration_rejects_models_without_bn():
    with pytest.raises(ValueError, match="no BatchNorm"):
        recalibrate_bn(nn.Linear(2, 2), torch.zeros(3, 2))


# ------------------------------------------------------------------------------ measurements for the claims


def test_fieller_interval_bounds_are_where_the_paired_t_test_is_critical():
    rng = np.random.default_rng(0)
    b = 1.0 + 0.1 * rng.standard_normal(6)
    a = 0.6 * b + 0.05 * rng.standard_normal(6)
    ratio, low, high = paired_ratio_ci(a, b)
    assert ratio == pytest.approx(a.mean() / b.mean()) and low < ratio < high
    t_crit = stats.t.ppf(0.975, 5)
    for f in (low, high):
        d = a - f * b
        assert abs(d.mean()) / (d.std(ddof=1) / math.sqrt(6)) == pytest.approx(t_crit, rel=1e-8)


def test_fieller_interval_is_unbounded_when_the_denominator_is_noise():
    _, low, high = paired_ratio_ci([1.0, 0.5, 0.7], [0.1, -0.2, 0.15])
    assert (low, high) == (-math.inf, math.inf)
    with pytest.raises(ValueError, match="paired"):
        paired_ratio_ci([1.0, 2.0], [1.0])
    ratio, low, high = paired_ratio_ci([1.0], [2.0])
    assert ratio == 0.5 and math.isnan(low) and math.isnan(high)


def test_gap_recovered_is_the_ratio_of_mean_recovery_to_mean_gap():
    reference = np.array([1.0, 1.2, 0.9, 1.1])
    broken = reference + np.array([2.0, 2.2, 1.9, 2.1])
    fixed = broken - 0.75 * (broken - reference) + np.array([0.01, -0.02, 0.0, 0.01])
    result = gap_recovered(broken, fixed, reference)
    assert set(result) == {"fraction", "low", "high"}
    assert result["fraction"] == pytest.approx((broken - fixed).mean() / (broken - reference).mean())
    assert result["low"] < 0.75 < result["high"] and result["low"] > 0.5
    with pytest.raises(ValueError, match="paired"):
        gap_recovered(broken, fixed[:2], reference)


def test_recovery_contrast_is_positive_exactly_when_the_ratio_of_means_exceeds_the_share():
    rng = np.random.default_rng(1)
    reference = 2.0 + 0.1 * rng.standard_normal(5)
    broken = reference + 1.0 + 0.2 * rng.standard_normal(5)
    for recovered_share in (0.2, 0.5, 0.8):
        fixed = broken - recovered_share * (broken - reference) + 0.05 * rng.standard_normal(5)
        contrast = recovery_contrast(broken, fixed, reference, share=0.5)
        np.testing.assert_allclose(contrast, (broken - fixed) - 0.5 * (broken - reference))
        ratio = gap_recovered(broken, fixed, reference)["fraction"]
        assert (contrast.mean() > 0) == (ratio > 0.5)
    np.testing.assert_allclose(recovery_contrast(broken, reference, reference, share=1.0), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="paired"):
        recovery_contrast(broken, broken[:3], reference)
    with pytest.raises(ValueError, match="share"):
        recovery_contrast(broken, broken, reference, share=1.5)
    with pytest.raises(ValueError, match="finite"):
        recovery_contrast([1.0, np.nan], [1.0, 1.0], [0.0, 0.0])


def test_block_orders():
    assert block_orders("conv-drop-bn-act", 3, [1]) == ["conv-drop-bn-act", "conv-drop-bn-act-pool", "conv-drop-bn-act"]
    assert block_orders("conv-bn-act-pool-drop", 2, [0]) == ["conv-bn-act-pool-drop", "conv-bn-act-drop"]
    with pytest.raises(ValueError, match="pool_blocks"):
        block_orders("conv-act", 2, [2])
    with pytest.raises(ValueError, match="n_blocks"):
        block_orders("conv-act", 0, [])


# ------------------------------------------------------------------------------ study driver


def test_study_records_errors_and_shift_before_and_after_recalibration():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (60,), generator=g)
    x = torch.rand(60, 1, 6, 6, generator=g) + y.view(-1, 1, 1, 1) * 0.3
    data = {"train": Dataset(x[:40], y[:40]), "test": Dataset(x[40:], y[40:])}
    settings = {"drop→BN": dict(order=block_orders("conv-drop-bn-act", 2, [1]), p=0.5),
                "dropout only": dict(order=block_orders("conv-act-drop", 2, [1]), p=0.5)}
    config = TrainConfig(epochs=1, batch_size=20, eval_splits=(), device="cpu")
    study = bn_dropout_study(lambda **kw: ConvNet((1, 6, 6), channels=(4, 4), hidden=8, padding=1, num_classes=3, **kw),
                             settings, data, VarianceShiftConfig(config, [0, 1], n_measure=40, n_recalibrate=40))
    assert len(study.errors) == 6  # 2 seeds × (BN: trained + recalibrated, no BN: trained)
    assert set(study.errors.loc[study.errors["setting"] == "dropout only", "stage"]) == {"trained"}
    assert set(study.variance["setting"]) == {"drop→BN"} and len(study.variance) == 8
    recal = study.variance[study.variance["stage"] == "recalibrated"]
    np.testing.assert_allclose(recal["shift_running_max"], 1.0, rtol=1e-4)  # measured on the whole train set
    assert study.test_error().index.names == ["setting", "seed"]
    worst = study.max_shift()
    assert list(worst.index.names) == ["setting", "seed"] and set(worst.index) == {("drop→BN", 0), ("drop→BN", 1)}
    trained = study.variance[study.variance["stage"] == "trained"]
    assert worst[("drop→BN", 1)] == trained.loc[trained["seed"] == 1, "shift_running_max"].max()
    np.testing.assert_allclose(study.max_shift(stage="recalibrated"), 1.0, rtol=1e-4)
    with pytest.raises(ValueError, match="no column"):
        study.max_shift("nope")
    with pytest.raises(ValueError, match="stage"):
        study.max_shift(stage="nope")
    with pytest.raises(ValueError, match=r"VarianceShiftConfig\.n_measure must be an integer ≥ 2"):
        VarianceShiftConfig(config, [0], n_measure=1)
    with pytest.raises(ValueError, match=r"VarianceShiftConfig\.n_recalibrate must be an integer ≥ 2"):
        VarianceShiftConfig(config, [0], n_recalibrate=0)
    with pytest.raises(ValueError, match=r"VarianceShiftConfig\.training must be a TrainConfig"):
        VarianceShiftConfig({"epochs": 1}, [0])
    with pytest.raises(ValueError, match="config must be a VarianceShiftConfig"):
        bn_dropout_study(lambda **kw: None, settings, data, config)
