"""Weight scaling vs ensemble averages: exact sub-network averages, MC curves, noise moments, dropout ridge."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from dropoutlab.analysis.ensembles import (
    dropout_ridge_monte_carlo,
    dropout_ridge_objective,
    dropout_ridge_solution,
    dropout_ridge_study,
    ensemble_distances,
    exact_average_study,
    first_k_reaching,
    hidden_widths,
    masked_sgd,
    max_deviation,
    mc_averaging_study,
    mc_error_curve,
    mc_per_net,
    noise_moments,
    split_at_first_dropout,
    summarize_mc_curve,
)
from dropoutlab.inference import MAX_ENUMERATED_UNITS, enumerate_subnetworks, predict_mc
from dropoutlab.models import MLP
from dropoutlab.train import TrainConfig
from dropoutlab.variants import make_dropout

#: Two-sided normal quantile used for every Monte-Carlo tolerance below (false alarm 1e-3 per check).
Z = float(stats.norm.ppf(1 - 1e-3 / 2))


def small_mlp(widths, seed=0, in_features=6, classes=4, p=0.5):
    torch.manual_seed(seed)
    return MLP(in_features, widths, classes, p_hidden=p)


def brute_force(head, features):
    """Loop over every mask of a head [drop, Linear, ReLU, drop, Linear] by hand."""
    drop1, lin1, act, drop2, lin2 = head
    p1, p2 = float(drop1.p), float(drop2.p)
    n1, n2 = lin1.in_features, lin2.in_features
    expected_log = torch.zeros(features.shape[0], lin2.out_features, dtype=torch.float64)
    arithmetic = torch.zeros_like(expected_log)
    for bits in itertools.product([0, 1], repeat=n1 + n2):
        m = torch.tensor(bits, dtype=torch.float64)
        weight = math.prod((1 - p1) if b else p1 for b in bits[:n1]) * math.prod((1 - p2) if b else p2
                                                                                 for b in bits[n1:])
        h = act(lin1(features * m[:n1] / (1 - p1)))
        log_prob = torch.log_softmax(lin2(h * m[n1:] / (1 - p2)), -1)
        expected_log += weight * log_prob
        arithmetic += weight * log_prob.exp()
    return expected_log, arithmetic


# ----------------------------------------------------------------------------- exact averages


@pytest.mark.parametrize("chunk", [1, None])
def test_exact_averages_of_a_head_match_brute_force(chunk):
    """The averages ensemble_distances reads (expected log-probability, AM) against a hand loop."""
    torch.manual_seed(0)
    head = nn.Sequential(make_dropout("inverted", p=0.3), nn.Linear(3, 2), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(2, 3)).double()
    features = torch.randn(4, 3, dtype=torch.float64)
    average = enumerate_subnetworks(head, features, chunk=chunk)
    with torch.no_grad():
        expected_log, arithmetic = brute_force(head, features)
    assert average.n_units == 5
    torch.testing.assert_close(average.expected_log_prob, expected_log, rtol=0, atol=1e-12)
    torch.testing.assert_close(average.arithmetic_mean, arithmetic, rtol=0, atol=1e-12)
    torch.testing.assert_close(average.geometric_mean, torch.softmax(expected_log, -1), rtol=0, atol=1e-12)
    assert all(m.training for m in head.modules())  # modes restored


def test_one_hidden_layer_weight_scaling_is_the_geometric_mean():
    model = small_mlp([10])
    x, y = torch.randn(20, 6), torch.randint(0, 4, (20,))
    distances = ensemble_distances(model, x, y)
    assert distances["n_units"] == 10
    assert distances["max_abs_ws_gm"] < 1e-12
    assert abs(distances["kl_gm_ws"]) < 1e-12 and distances["kl_am_ws"] > 0
    assert distances["error_ws"] == distances["error_gm"]
    # Hinton's second statement is Hölder's inequality: never negative
    assert distances["ll_gap_min"] >= -1e-12 and distances["ll_gap_mean"] > 0
    assert model.training and next(model.parameters()).dtype == torch.float32  # the model is untouched


def test_two_hidden_layers_are_only_approximately_geometric():
    distances = ensemble_distances(small_mlp([4, 4]), torch.randn(20, 6), torch.randint(0, 4, (20,)))
    assert distances["n_units"] == 8 and distances["max_abs_ws_gm"] > 1e-6


def test_split_at_first_dropout():
    model = small_mlp([3, 3])
    trunk, head = split_at_first_dropout(model)
    assert len(trunk) + len(head) == len(model)
    assert head[0] is model[len(trunk)]
    with pytest.raises(ValueError, match="nn.Sequential"):
        split_at_first_dropout(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no dropout"):
        split_at_first_dropout(small_mlp([3], p=0.0))


def test_ensemble_distances_rejects_bad_input():
    with pytest.raises(ValueError, match="only InvertedDropout, StandardDropout and nn.Dropout"):
        ensemble_distances(nn.Sequential(nn.Linear(6, 3), make_dropout("gaussian", p=0.5), nn.Linear(3, 2)),
                           torch.randn(2, 6), torch.zeros(2, dtype=torch.long))
    wide = small_mlp([MAX_ENUMERATED_UNITS + 1])
    with pytest.raises(ValueError, match=f"at most {MAX_ENUMERATED_UNITS} units"):
        ensemble_distances(wide, torch.randn(2, 6), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_rows"):
        ensemble_distances(small_mlp([3]), torch.randn(2, 6), torch.zeros(2, dtype=torch.long), chunk_rows=0)
    with pytest.raises(ValueError, match="y must be a 1-d label tensor"):
        ensemble_distances(small_mlp([3]), torch.randn(4, 6), torch.zeros(3, dtype=torch.long))


def test_hidden_widths():
    assert hidden_widths(10, 1) == [10]
    assert hidden_widths(11, 2) == [6, 5]
    assert sum(hidden_widths(17, 3)) == 17
    with pytest.raises(ValueError, match=r"n_units \(at least one per layer\) must be an integer ≥"):
        hidden_widths(1, 2)
    with pytest.raises(ValueError, match="depth must be an integer ≥ 1"):
        hidden_widths(4, 0)


def test_exact_average_study_is_tidy_and_reproducible(toy_data):
    config = TrainConfig(epochs=1, batch_size=64, lr=1e-2, eval_splits=(), device="cpu")
    run = lambda: exact_average_study(toy_data, toy_data["val"], [2, 4], [1, 2], [0], config)  # noqa: E731
    frame = run()
    assert list(frame[["depth", "n_units"]].itertuples(index=False, name=None)) == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert frame["widths"].tolist() == ["2", "4", "1-1", "2-2"]
    assert (frame.loc[frame["depth"] == 1, "max_abs_ws_gm"] < 1e-12).all()
    pd.testing.assert_frame_equal(frame, run())
    with pytest.raises(ValueError, match=f"n_units must be <= {MAX_ENUMERATED_UNITS}"):
        exact_average_study(toy_data, toy_data["val"], [MAX_ENUMERATED_UNITS + 1], [1], [0], config)
    with pytest.raises(ValueError, match=r"p_hidden must be a drop probability in \(0, 1\)"):
        exact_average_study(toy_data, toy_data["val"], [2], [1], [0], config, p_hidden=0.0)
    with pytest.raises(ValueError, match="depths must be a non-empty list of integers"):
        exact_average_study(toy_data, toy_data["val"], [2], [0], [0], config)


# ----------------------------------------------------------------------------- Monte-Carlo averaging


def test_mc_average_converges_to_the_arithmetic_mean():
    """The k-sample mean of softmax outputs is an unbiased estimate of the exact AM."""
    model = small_mlp([6]).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    trunk, head = split_at_first_dropout(model)
    with torch.no_grad():
        exact = enumerate_subnetworks(head, trunk(x)).arithmetic_mean
    torch.manual_seed(3)
    samples = torch.softmax(predict_mc(model, x, 4000), -1)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert ((samples.mean(0) - exact).abs() <= Z * se + 1e-12).all()


def test_mc_error_curve_is_seeded_and_nested():
    model = small_mlp([8])
    x, y = torch.randn(50, 6), torch.randint(0, 4, (50,))
    state = torch.get_rng_state()
    curve = mc_error_curve(model, x, y, [5, 1, 20], repeats=2, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    assert curve["k"].tolist() == [1, 5, 20, 1, 5, 20] and curve["repeat"].tolist() == [0, 0, 0, 1, 1, 1]
    assert curve["error_ws"].nunique() == 1
    pd.testing.assert_frame_equal(curve, mc_error_curve(model, x, y, [1, 5, 20], repeats=2, seed=1))
    assert not curve["error_mc"].equals(mc_error_curve(model, x, y, [1, 5, 20], repeats=2, seed=2)["error_mc"])
    with pytest.raises(ValueError, match="ks must be a non-empty list of integers"):
        mc_error_curve(model, x, y, [0, 5], repeats=1)
    with pytest.raises(ValueError, match="repeats must be an integer"):
        mc_error_curve(model, x, y, [1], repeats=0)


def test_mc_averaging_study():
    data = type("Data", (), {"x": torch.randn(30, 6), "y": torch.randint(0, 4, (30,))})()
    curve = mc_averaging_study({7: small_mlp([5], seed=7), 8: small_mlp([5], seed=8)}, data, [1, 3], repeats=2)
    assert curve["model"].tolist() == [7] * 4 + [8] * 4
    with pytest.raises(ValueError, match="non-empty mapping"):
        mc_averaging_study({}, data, [1], 1)


def test_mc_summary_averages_the_repeats_within_each_net():
    """The replicate is the net: two nets × two repeats give n = 2, and the SE is the spread of the net means."""
    frame = pd.DataFrame({"model": [7, 7, 7, 7, 8, 8, 8, 8], "repeat": [0, 0, 1, 1] * 2, "k": [1, 50] * 4,
                          "error_mc": [0.30, 0.19, 0.40, 0.21, 0.50, 0.23, 0.60, 0.25],
                          "error_ws": [0.20] * 4 + [0.22] * 4})
    per_net = mc_per_net(frame)
    assert per_net[["model", "k"]].values.tolist() == [[7, 1], [7, 50], [8, 1], [8, 50]]
    np.testing.assert_allclose(per_net["error_mc"], [0.35, 0.20, 0.55, 0.24])
    np.testing.assert_allclose(per_net["difference"], [0.15, 0.0, 0.33, 0.02])
    table = summarize_mc_curve(frame).set_index("k")
    assert table.loc[1, "n"] == 2 and table.loc[50, "n"] == 2
    assert table.loc[1, "difference"] == pytest.approx(0.24)
    assert table.loc[1, "difference_se"] == pytest.approx(np.std([0.15, 0.33], ddof=1) / math.sqrt(2))
    assert table.loc[50, "difference_se"] == pytest.approx(np.std([0.0, 0.02], ddof=1) / math.sqrt(2))
    assert first_k_reaching(table.reset_index()) == 50  # 0.01 <= 2 * 0.01
    assert first_k_reaching(table.reset_index().iloc[:1]) is None
    with pytest.raises(ValueError, match="lacks the column"):
        mc_per_net(frame.drop(columns="model"))


# ----------------------------------------------------------------------------- noise moments


def moment_deviation(result):
    """max_deviation of one noise_moments result: (worst deviation, tolerance)."""
    return max_deviation([result["mean"], result["var"]], [1.0, result["expected_var"]],
                         [result["se_mean"], result["se_var"]])


@pytest.mark.parametrize("variant", ["inverted", "gaussian"])
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_noise_moments_match_bernoulli_dropout(variant, p):
    result = noise_moments(variant, p, n_samples=200_000, seed=0)
    assert result["expected_var"] == pytest.approx(p / (1 - p))
    deviation, tolerance = moment_deviation(result)
    assert deviation <= tolerance
    assert tolerance < 0.02  # 200,000 samples: the band is tight


def test_noise_moments_detect_a_wrong_mean():
    # standard (non-inverted) dropout keeps E[r] = 1 − p, not 1: the tolerance must exclude it
    deviation, tolerance = moment_deviation(noise_moments("standard", 0.5, n_samples=10_000, seed=0))
    assert deviation > 10 * tolerance
    with pytest.raises(ValueError, match="p must be a drop probability"):
        noise_moments("gaussian", 1.0)
    with pytest.raises(ValueError, match="n_samples must be an integer ≥ 2"):
        noise_moments("gaussian", 0.5, n_samples=1)


def test_max_deviation():
    deviation, tolerance = max_deviation([1.0, 2.5, -0.1], [1.0, 2.0, 0.0], [0.1, 0.2, 0.05], alpha=0.05)
    assert deviation == pytest.approx(0.5)
    assert tolerance == pytest.approx(stats.norm.ppf(0.975) * 0.2)
    with pytest.raises(ValueError, match="equal length"):
        max_deviation([1.0], [1.0, 2.0], [0.1])
    with pytest.raises(ValueError, match="standard errors must be finite"):
        max_deviation([1.0], [1.0], [-0.1])
    with pytest.raises(ValueError, match=r"alpha must be a significance level in \(0, 1\)"):
        max_deviation([1.0], [1.0], [0.1], alpha=0.0)


# ----------------------------------------------------------------------------- dropout and ridge


def exact_expectation(X, y, w, keep):
    """E_R‖y − (R∗X)w‖² by summing over every one of the 2^(N·D) masks."""
    total = 0.0
    for bits in itertools.product([0, 1], repeat=X.size):
        R = np.array(bits, dtype=float).reshape(X.shape)
        weight = keep ** R.sum() * (1 - keep) ** (R.size - R.sum())
        total += weight * ((y - (R * X) @ w) ** 2).sum()
    return total


@pytest.mark.parametrize("p", [0.2, 0.5, 0.7])
def test_dropout_ridge_identity_is_exact(p):
    rng = np.random.default_rng(0)
    X, y, w = rng.standard_normal((3, 3)), rng.standard_normal(3), rng.standard_normal(3)
    assert dropout_ridge_objective(X, y, w, p) == pytest.approx(exact_expectation(X, y, w, 1 - p), rel=1e-12)


def test_dropout_ridge_monte_carlo_within_its_standard_error():
    rng = np.random.default_rng(1)
    X, y, w = rng.standard_normal((40, 4)), rng.standard_normal(40), rng.standard_normal(4)
    mean, se = dropout_ridge_monte_carlo(X, y, w, 0.3, n_masks=5000, seed=0, chunk=700)
    assert abs(mean - dropout_ridge_objective(X, y, w, 0.3)) <= Z * se


def test_dropout_ridge_solution_minimises_the_objective_and_is_ridge():
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((30, 3)) * [0.5, 1.0, 2.0], rng.standard_normal(30)
    p, q = 0.4, 0.6
    best = dropout_ridge_solution(X, y, p)
    value = dropout_ridge_objective(X, y, best, p)
    for direction in np.eye(3):
        assert dropout_ridge_objective(X, y, best + 1e-4 * direction, p) > value
        assert dropout_ridge_objective(X, y, best - 1e-4 * direction, p) > value
    gram = X.T @ X
    ridge = np.linalg.solve(gram + (1 - q) / q * np.diag(np.diag(gram)), X.T @ y)
    np.testing.assert_allclose(q * best, ridge, rtol=1e-12)


def test_masked_sgd_is_unbiased_for_the_minimiser():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((50, 3)), rng.standard_normal(50)
    best = dropout_ridge_solution(X, y, 0.5)
    runs = np.array([masked_sgd(X, y, 0.5, steps=2000, lr=0.05, seed=s) for s in range(32)])
    se = runs.std(0, ddof=1) / math.sqrt(len(runs))
    t = stats.t.ppf(1 - 1e-3 / 2, len(runs) - 1)
    assert (np.abs(runs.mean(0) - best) <= t * se).all()
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        masked_sgd(X, y, 0.5, lr=0.0)


def test_dropout_ridge_study_tables():
    study = dropout_ridge_study([0.5, 0.2], n_rows=50, n_features=3, n_masks=2000, sgd_steps=2000, seed=0)
    assert study.objective["keep"].tolist() == [0.5, 0.8]
    assert (study.objective["ridge_relative_error"] < 1e-10).all()
    assert (study.objective["relative_tolerance"] > 0).all()
    assert len(study.solution) == 2 * 3
    again = dropout_ridge_study([0.5, 0.2], n_rows=50, n_features=3, n_masks=2000, sgd_steps=2000, seed=0)
    pd.testing.assert_frame_equal(study.objective, again.objective)
    with pytest.raises(ValueError, match="w must have one weight per column"):
        dropout_ridge_objective(np.ones((4, 2)), np.ones(4), np.ones(3), 0.5)
    with pytest.raises(ValueError, match="p_values must be a non-empty list"):
        dropout_ridge_study([])
