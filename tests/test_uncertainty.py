"""Uncertainty measurements of notebook 08 (analysis/uncertainty.py): LL, ECE, AUROC, BN pitfall, drivers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from dropoutlab.analysis.uncertainty import (
    BNPitfallConfig,
    ClassificationConfig,
    ExtrapolationConfig,
    RegressionConfig,
    bn_max_abs_change,
    bn_pitfall_study,
    bn_running_stats,
    converged_at,
    expected_calibration_error,
    extrapolation_ratios,
    extrapolation_study,
    gaussian_mixture_log_likelihood,
    load_regression,
    naive_train_mode_mc,
    ood_auroc,
    regression_mc_metrics,
    regression_study,
    reliability_bins,
    rotate_images,
    train_test_split_indices,
)
from dropoutlab.inference import predict_mc
from dropoutlab.variants import make_dropout

# ----------------------------------------------------------------------------- log-likelihood


def test_log_likelihood_hand_example_equal_distances():
    # samples 0 and 2 around y = 1, tau = 1: both terms are −½, so the mixture is N(1; 0, 1)
    ll = gaussian_mixture_log_likelihood(np.array([1.0]), np.array([[0.0], [2.0]]), tau=1.0)
    assert ll[0] == pytest.approx(-0.5 - 0.5 * math.log(2 * math.pi), abs=1e-12)


def test_log_likelihood_is_a_mixture_of_gaussians():
    # y = 0, samples (0, 1), tau = 4: log(½·N(0; 0, ¼) + ½·N(0; 1, ¼))
    tau, samples = 4.0, np.array([[0.0], [1.0]])
    expected = math.log(0.5 * stats.norm.pdf(0, 0, 0.5) + 0.5 * stats.norm.pdf(0, 1, 0.5))
    assert gaussian_mixture_log_likelihood(np.zeros(1), samples, tau)[0] == pytest.approx(expected, abs=1e-12)


def test_log_likelihood_one_sample_is_gaussian_log_density():
    y, pred, tau = np.array([0.3, -1.0, 2.0]), np.array([0.0, 0.5, 2.5]), 2.5
    expected = stats.norm.logpdf(y, pred, 1 / math.sqrt(tau))
    np.testing.assert_allclose(gaussian_mixture_log_likelihood(y, pred[None], tau), expected, atol=1e-12)


@pytest.mark.parametrize("tau", [0.0, -1.0, math.inf])
def test_log_likelihood_rejects_bad_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        gaussian_mixture_log_likelihood(np.zeros(2), np.zeros((3, 2)), tau)


def test_log_likelihood_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"samples \(T, N\) must match y"):
        gaussian_mixture_log_likelihood(np.zeros(3), np.zeros((4, 2)), 1.0)


def test_regression_mc_metrics_uses_the_first_T_samples():
    samples = np.array([[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]])
    rows = regression_mc_metrics(samples, np.array([2.0, 2.0]), tau=1.0, T_values=[2, 1])
    assert [r["T"] for r in rows] == [1, 2]
    assert rows[0]["rmse_mc"] == pytest.approx(1.0) and rows[1]["rmse_mc"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="only 3 samples"):
        regression_mc_metrics(samples, np.zeros(2), 1.0, [5])
    with pytest.raises(ValueError, match="T_values"):
        regression_mc_metrics(samples, np.zeros(2), 1.0, [0])


# ----------------------------------------------------------------------------- calibration


def calibrated_predictor(n: int, seed: int, shift: float = 0.0):
    """Two classes, confidence c ~ U(½, 1); the top class is right with probability c − shift."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < c - shift
    probs = np.stack([c, 1 - c], axis=1)
    return probs, np.where(correct, 0, 1), c


def ece_tolerance(confidence: np.ndarray, n_bins: int, z: float = 4.0) -> float:
    """z·Σ_b (n_b/N)·σ_b with σ_b = sqrt(Σ_i c_i(1 − c_i))/n_b, the sd of accuracy_b − confidence_b
    under perfect calibration. z = 4 per bin: P(|N(0,1)| > 4) ≈ 6e-5, ≤ 1e-3 over 15 bins."""
    index = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(index):
        c = confidence[index == b]
        total += (c.size / confidence.size) * math.sqrt(np.sum(c * (1 - c))) / c.size
    return z * total


def test_ece_of_a_calibrated_predictor_is_near_zero():
    probs, labels, c = calibrated_predictor(20_000, seed=0)
    tolerance = ece_tolerance(c, 15)
    assert expected_calibration_error(probs, labels, 15) < tolerance
    # the test has power: a predictor 5 points overconfident is flagged
    probs, labels, _ = calibrated_predictor(20_000, seed=0, shift=0.05)
    assert expected_calibration_error(probs, labels, 15) > tolerance
    assert expected_calibration_error(probs, labels, 15) == pytest.approx(0.05, abs=tolerance)


def test_reliability_bins_hand_example():
    probs = np.array([[0.95, 0.05], [1.0, 0.0], [0.55, 0.45], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    bins = reliability_bins(probs, labels, n_bins=2)
    assert bins["count"].tolist() == [0, 4]  # confidence 1.0 lands in the last bin
    assert bins["confidence"].iloc[1] == pytest.approx(np.mean([0.95, 1.0, 0.55, 0.6]))
    assert bins["accuracy"].iloc[1] == pytest.approx(0.75)
    assert math.isnan(bins["accuracy"].iloc[0])
    bins = reliability_bins(probs, labels, n_bins=10)
    assert bins["count"].sum() == 4 and bins["count"].iloc[-1] == 2
    ece = expected_calibration_error(probs, labels, n_bins=10)
    assert ece == pytest.approx((2 * abs(0.5 - 0.975) + abs(1 - 0.55) + abs(1 - 0.6)) / 4)


def test_calibration_rejects_bad_input():
    with pytest.raises(ValueError, match="probs must be"):
        expected_calibration_error(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins(np.ones((2, 2)) / 2, np.zeros(2), n_bins=0)


# ----------------------------------------------------------------------------- AUROC


def test_auroc_of_separable_scores_is_one():
    assert ood_auroc([0.1, 0.2, 0.3], [0.5, 0.9]) == 1.0
    assert ood_auroc([0.5, 0.9], [0.1, 0.2, 0.3]) == 0.0
    assert ood_auroc([1.0, 1.0], [1.0, 1.0]) == 0.5
    with pytest.raises(ValueError, match="both sets"):
        ood_auroc([], [1.0])


# ----------------------------------------------------------------------------- helpers


def test_converged_at():
    assert converged_at([1, 10, 100, 1000], [5.0, 1.2, 1.01, 1.0], 0.02, relative=True) == 100
    assert converged_at([1, 10, 100], [1.0, 3.0, 1.0], 0.1) == 100  # must *stay* inside the band
    assert converged_at([1, 10], [2.0, 2.0], 0.1) == 1
    with pytest.raises(ValueError, match="strictly increasing"):
        converged_at([10, 1], [1.0, 1.0], 0.1)
    with pytest.raises(ValueError, match="converged_at: tolerance must be a finite number > 0"):
        converged_at([1, 10], [1.0, 1.0], 0.0)


def test_split_indices_partition_and_seed():
    train, test = train_test_split_indices(100, 0.1, seed=3)
    assert len(test) == 10 and sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    assert np.array_equal(test, train_test_split_indices(100, 0.1, seed=3)[1])
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split_indices(100, 1.5, seed=0)


def test_rotate_images_matches_rot90():
    x = torch.rand(2, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rotate_images(x, 90.0), torch.rot90(x, 1, (2, 3)), atol=1e-6, rtol=0)
    torch.testing.assert_close(rotate_images(x, 0.0), x)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        rotate_images(x[0], 90.0)
    with pytest.raises(ValueError, match="rotate_images: degrees must be a finite number"):
        rotate_images(x, math.nan)


def test_load_regression():
    X, y = load_regression("diabetes")
    assert X.shape == (442, 10) and y.shape == (442,)
    X, y = load_regression("friedman", seed=1, n_samples=50)
    assert X.shape == (50, 10)
    with pytest.raises(ValueError, match=r"load_regression: name must be one of \('diabetes', 'friedman'\)"):
        load_regression("boston")


# ----------------------------------------------------------------------------- BN pitfall


def bn_dropout_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), make_dropout("inverted", p=0.5),
                         nn.Linear(8, 3)).eval()


def test_train_mode_sampling_overwrites_running_stats_and_mc_dropout_does_not():
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1)) * 3 + 2
    model = bn_dropout_net()
    before = bn_running_stats(model)
    predict_mc(model, x, T=5)
    assert all(torch.equal(before[k], v) for k, v in bn_running_stats(model).items())
    probs = naive_train_mode_mc(model, x, T=3, batch_size=8)
    assert probs.shape == (3, 32, 3) and not model.training
    after = bn_running_stats(model)
    assert int(after["1.num_batches_tracked"]) == 3 * 4
    assert not torch.equal(before["1.running_mean"], after["1.running_mean"])
    assert bn_max_abs_change(before, after) >= 12  # num_batches_tracked alone moves by 12


def test_bn_max_abs_change_is_zero_only_for_identical_buffers():
    model = bn_dropout_net()
    before = bn_running_stats(model)
    predict_mc(model, torch.randn(16, 4, generator=torch.Generator().manual_seed(3)), T=4)
    assert bn_max_abs_change(before, bn_running_stats(model)) == 0.0
    nudged = {k: v.clone() for k, v in before.items()}
    nudged["1.running_var"][2] += 0.25
    assert bn_max_abs_change(before, nudged) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="different buffers"):
        bn_max_abs_change(before, {k: v for k, v in before.items() if k != "1.running_var"})


def test_train_mode_prediction_depends_on_batch_mates():
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(2))
    model = bn_dropout_net()
    model[3] = nn.Identity()  # no dropout noise: any difference comes from BatchNorm's batch statistics
    alone = naive_train_mode_mc(model, x[:2], T=1, batch_size=2)[0]
    together = naive_train_mode_mc(model, x, T=1, batch_size=16)[0, :2]
    assert not torch.allclose(alone, together)


# ----------------------------------------------------------------------------- drivers (tiny)


def test_regression_study_is_tidy_and_reproducible():
    config = RegressionConfig(datasets=["friedman"], n_splits=1, tau_grid=(1.0, 4.0), T_values=(5, 1), T_select=3,
                              epochs=2, friedman_samples=60, device="cpu")
    assert config.datasets == ("friedman",) and config.T_values == (1, 5)  # canonical: tuples, T sorted
    first = regression_study(config)
    assert list(first["T"]) == [1, 5] and set(first["dataset"]) == {"friedman"}
    assert {"rmse_mc", "ll_mc", "rmse_standard", "ll_standard", "tau"} <= set(first.columns)
    pd.testing.assert_frame_equal(first, regression_study(config))


def test_extrapolation_study_and_ratios():
    config = ExtrapolationConfig(activations="relu", seeds=[0], widths=(8,), T=4, n_train=20, n_grid=11, epochs=2,
                                 device="cpu")
    study = extrapolation_study(config)
    assert set(study.curves["region"]) == {"interpolation", "extrapolation"}
    ratios = extrapolation_ratios(study.curves)
    row = ratios.iloc[0]
    assert row["ratio"] == pytest.approx(row["extrapolation"] / row["interpolation"])


@pytest.mark.parametrize(("make", "message"), [
    (lambda: RegressionConfig(datasets=["boston"]), r"RegressionConfig\.datasets must be a non-empty list of names"),
    (lambda: RegressionConfig(datasets=[]), r"RegressionConfig\.datasets"),
    (lambda: RegressionConfig(tau_grid=(1.0, 0.0)), r"RegressionConfig\.tau_grid must be a non-empty list of finite"),
    (lambda: RegressionConfig(T_values=(0, 10)), r"RegressionConfig\.T_values"),
    (lambda: RegressionConfig(val_fraction=0.0), r"RegressionConfig\.val_fraction must be a fraction in \(0, 1\)"),
    (lambda: RegressionConfig(epochs=0), r"TrainConfig\.epochs"),
    (lambda: ExtrapolationConfig(activations=["swish"]), r"ExtrapolationConfig\.activations"),
    (lambda: ExtrapolationConfig(extent=0.0), r"ExtrapolationConfig\.extent must be a finite number > 0"),
    (lambda: ExtrapolationConfig(seeds=[1, 1]), r"ExtrapolationConfig\.seeds must be a non-empty list of distinct"),
    (lambda: ClassificationConfig(ood_sets=["svhn"]), r"ClassificationConfig\.ood_sets"),
    (lambda: ClassificationConfig(n_train=0), r"ClassificationConfig\.n_train must be an integer ≥ 1"),
    (lambda: ClassificationConfig(p_hidden=1.0), r"ClassificationConfig\.p_hidden must be a drop probability"),
    (lambda: ClassificationConfig(rotation_angles=(0, float("nan"))), r"ClassificationConfig\.rotation_angles"),
    (lambda: BNPitfallConfig(batch_sizes=()), r"BNPitfallConfig\.batch_sizes"),
    (lambda: BNPitfallConfig(T=True), r"BNPitfallConfig\.T must be an integer"),
])
def test_study_configs_refuse_bad_settings_when_built(make, message):
    """Checked once, when the config is built: before any data is loaded or any net trained."""
    with pytest.raises(ValueError, match=message):
        make()


def test_study_configs_are_frozen():
    config = BNPitfallConfig(batch_sizes=[64, 1, 8, 1])
    assert config.batch_sizes == (1, 8, 64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.T = 3


def test_bn_pitfall_study_measures_the_buffers_of_both_methods():
    study = bn_pitfall_study(BNPitfallConfig(dataset="digits", seeds=[0], n_train=100, n_eval=20, epochs=1, T=2,
                                             batch_sizes=(1, 20), device="cpu"))
    stats = study.stats.set_index("method")
    assert (stats.loc["mc_dropout", "max_abs_change"] == 0.0).all()
    assert not stats.loc["mc_dropout", "buffers_changed"].any()
    assert (stats.loc["model.train()", "max_abs_change"] > 0).all()
    assert set(study.accuracy["batch_size"]) == {1, 20}
