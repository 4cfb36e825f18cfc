"""Rate and data-size sweeps (Srivastava 2014, Fig. 9–10) and their verdict helpers, on tiny blobs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import blobs
from scipy import stats

from dropoutlab.analysis.stats import mean_ci
from dropoutlab.analysis.sweeps import (
    above,
    below,
    budget_config,
    combine_verdicts,
    data_size_sweep,
    describe,
    errors_by,
    extremum_location,
    paired_gains,
    pn_vs_n_conditions,
    rate_sweep,
    seeds_per_size,
    sweet_spot_conditions,
    u_shape_conditions,
    widths_for_retain,
)
from dropoutlab.data import stratified_indices
from dropoutlab.train import TrainConfig

CONFIG = TrainConfig(batch_size=32, lr=1e-2, max_steps=12, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- building blocks -------------------------------------------------------------------------


def test_widths_for_retain():
    assert widths_for_retain([256, 512], 0.2, "n") == [256, 512]
    assert widths_for_retain([256, 256, 512], 0.2, "pn") == [1280, 1280, 2560]  # CLAIMS: width 2560 at 0.2
    assert widths_for_retain([256], 0.3, "pn") == [853]
    with pytest.raises(ValueError, match="keep_fixed"):
        widths_for_retain([8], 0.5, "p")
    with pytest.raises(ValueError, match="retain"):
        widths_for_retain([8], 0.0, "n")
    with pytest.raises(ValueError, match="base_widths"):
        widths_for_retain([0], 0.5, "n")


def test_budget_config_spends_exactly_max_steps():
    config = budget_config(TrainConfig(epochs=1, batch_size=32, max_steps=10, eval_splits=("val",)), 100)
    assert config.epochs == 3 and config.eval_splits == ()  # 4 steps per epoch → 3 epochs cover 10 steps
    assert budget_config(TrainConfig(epochs=7), 100).epochs == 7
    with pytest.raises(ValueError, match="max_steps"):
        budget_config(TrainConfig(max_steps=0), 100)


def test_seeds_per_size():
    seeds = seeds_per_size([100, 500, 1000], [0, 1, 2], small_n=500, small_n_seeds=5)
    assert seeds == {100: [0, 1, 2, 3, 4], 500: [0, 1, 2, 3, 4], 1000: [0, 1, 2]}
    with pytest.raises(ValueError, match="seeds"):
        seeds_per_size([100], [])


# ---- sweeps --------------------------------------------------------------------------------


def test_rate_sweep_is_tidy_and_reproducible():
    train, test = blobs(96, 0), blobs(64, 1)
    frame = rate_sweep(train, test, [0.5, 1.0], [16], CONFIG, [0, 1], keep_fixed="pn", train_score_size=30)
    assert len(frame) == 2 * 2 * 2
    assert set(frame["widths"]) == {"32", "16"}
    assert set(frame["p_drop"]) == {0.5, 0.0}
    assert (frame["steps"] == CONFIG.max_steps).all()
    assert frame["error"].between(0, 1).all()
    again = rate_sweep(train, test, [0.5, 1.0], [16], CONFIG, [0, 1], keep_fixed="pn", train_score_size=30)
    pd.testing.assert_frame_equal(frame, again)  # same seeds → bit-identical


def test_rate_sweep_bad_input():
    train, test = blobs(32, 0), blobs(16, 1)
    with pytest.raises(ValueError, match="retain_rates"):
        rate_sweep(train, test, [1.5], [8], CONFIG, [0])
    with pytest.raises(ValueError, match="seeds"):
        rate_sweep(train, test, [0.5], [8], CONFIG, [])


def test_data_size_sweep_shares_subsets_and_budget():
    train, test = blobs(200, 0), blobs(64, 1)
    settings = {"no dropout": dict(p_hidden=0.0), "dropout": dict(p_hidden=0.5)}
    frame = data_size_sweep(train, test, [20, 100], settings, [16], CONFIG, {20: [0, 1, 2], 100: [0, 1]})
    assert len(frame) == (3 + 2) * 2 * 2
    assert (frame["steps"] == CONFIG.max_steps).all()  # fixed update budget whatever N
    # both settings saw the same subset: their train-split rows are scored on the same examples
    assert frame.groupby(["n_train", "seed"])["setting"].nunique().eq(2).all()
    gains = paired_gains(frame, "no dropout", "dropout")
    assert list(gains.columns) == ["n_train", "seed", "gain"] and len(gains) == 5
    again = data_size_sweep(train, test, [20, 100], settings, [16], CONFIG, {20: [0, 1, 2], 100: [0, 1]})
    pd.testing.assert_frame_equal(frame, again)


def test_subset_is_what_load_dataset_draws():
    # the sweep's subset for (N, seed) equals load_dataset(..., n=N, seed=seed), which uses stratified_indices
    train = blobs(200, 0)
    idx = stratified_indices(train.y.numpy(), 30, 4)
    assert np.bincount(train.y[idx].numpy()).tolist() == [10, 10, 10]


def test_data_size_sweep_bad_input():
    train, test = blobs(50, 0), blobs(16, 1)
    settings = {"a": dict(p_hidden=0.0)}
    with pytest.raises(ValueError, match="max_steps"):
        data_size_sweep(train, test, [20], settings, [8], TrainConfig(), [0])
    with pytest.raises(ValueError, match="sizes"):
        data_size_sweep(train, test, [500], settings, [8], CONFIG, [0])
    with pytest.raises(ValueError, match="settings"):
        data_size_sweep(train, test, [20], {}, [8], CONFIG, [0])
    with pytest.raises(ValueError, match="seeds"):
        data_size_sweep(train, test, [20], settings, [8], CONFIG, {30: [0]})


# ---- verdict helpers -----------------------------------------------------------------------


def test_above_below_and_combine():
    assert above(mean_ci([1.0, 1.1, 0.9]), 0.5) is True
    assert above(mean_ci([1.0, -0.5, 0.8]), 0.0) is None
    assert above(mean_ci([0.4, 0.45]), 0.5) is False
    assert below(mean_ci([0.1, 0.2, 0.15]), 0.5) is True
    assert below(mean_ci([0.1, 0.9, 0.3]), 0.5) is None
    assert below(mean_ci([0.6, 0.7]), 0.5) is False
    assert combine_verdicts([True, True]) is True
    assert combine_verdicts([True, None]) is None
    assert combine_verdicts([None, False, True]) is False
    with pytest.raises(ValueError, match="at least one"):
        combine_verdicts([])


def _noisy(means: dict, n: int, seed: int, sd: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: m + sd * rng.standard_normal(n) for k, m in means.items()}


def test_extremum_location_decides_only_when_the_ci_does():
    n, sd = 8, 1.0
    # Separations in units of the standard error of a Welch difference of two means of n draws: 5 SE is far
    # beyond the 95 % critical value (t ≈ 2.14 at 14 dof), 0.2 SE far inside it.
    standard_error = sd * np.sqrt(2 / n)
    assert stats.t.ppf(0.975, 2 * n - 2) < 5
    clear = _noisy({0.2: 5 * standard_error, 0.5: 0.0, 1.0: 10 * standard_error}, n, 0, sd)
    best, verdict, diff = extremum_location(clear, [0.4, 0.5, 0.6], mode="min")
    assert best == 0.5 and verdict is True and diff.low > 0
    close = _noisy({0.2: 0.2 * standard_error, 0.5: 0.0}, n, 1, sd)
    assert extremum_location(close, [0.5], mode="min")[1] is None
    # an extremum outside the allowed set, by a decided margin, is False; ties are undecided
    best, verdict, _ = extremum_location({1: np.full(4, 5.0) + [0, 0.1, 0.2, 0.3], 2: np.full(4, 1.0) + [0, 0.1, 0, 0.1]},
                                         [2], mode="max")
    assert best == 1 and verdict is False
    same = {1: np.array([1.0, 2.0, 3.0]), 2: np.array([1.1, 2.0, 2.9])}
    assert extremum_location(same, [1], mode="max")[1] is None
    assert extremum_location({1: [3.0, 3.1], 2: [1.0, 1.1]}, [1, 2], mode="min")[:2] == (2, True)
    with pytest.raises(ValueError, match="mode"):
        extremum_location(same, [1], mode="median")
    with pytest.raises(ValueError, match="allowed"):
        extremum_location(same, [7])


def _rate_frame(test: dict, train: dict, keep_fixed: str = "n") -> pd.DataFrame:
    rows = []
    for split, errors in (("test", test), ("train", train)):
        for retain, values in errors.items():
            rows += [{"keep_fixed": keep_fixed, "retain": retain, "seed": s, "split": split, "error": e / 100}
                     for s, e in enumerate(values)]
    return pd.DataFrame(rows)


def test_u_shape_conditions():
    test = {0.1: [3.0, 3.2, 3.1], 0.5: [1.5, 1.6, 1.4], 0.8: [1.7, 1.8, 1.6], 1.0: [2.2, 2.3, 2.1]}
    train = {0.1: [2.0, 2.1, 2.2], 0.5: [0.1, 0.2, 0.1], 0.8: [0.0, 0.0, 0.1], 1.0: [0.0, 0.0, 0.0]}
    conditions = u_shape_conditions(_rate_frame(test, train))
    assert [c.verdict for c in conditions] == [True, True, True]
    assert conditions[1].measured.mean == pytest.approx(1.6)
    assert "argmin retain = 0.5" in describe(conditions)
    flat = {**test, 0.1: [1.8, 1.9, 2.0]}  # a rise of 0.4 pp is not the 0.5 pp the rule asks for
    assert u_shape_conditions(_rate_frame(flat, train))[1].verdict is False
    with pytest.raises(ValueError, match="reference_retain"):
        u_shape_conditions(_rate_frame(test, train), reference_retain=0.6)
    with pytest.raises(ValueError, match="interval"):
        u_shape_conditions(_rate_frame(test, train), interval=(0.9, 0.3))


def test_pn_vs_n_conditions():
    n_fixed = _rate_frame({0.2: [2.5, 2.6, 2.4], 0.5: [1.5, 1.6, 1.4]}, {0.2: [1, 1, 1], 0.5: [0, 0, 0]})
    pn_fixed = _rate_frame({0.2: [1.9, 2.0, 1.8], 0.5: [1.5, 1.5, 1.5]}, {0.2: [0, 0, 0], 0.5: [0, 0, 0]}, "pn")
    (condition,) = pn_vs_n_conditions(n_fixed, pn_fixed, max_retain=0.3)
    assert condition.verdict is True and condition.measured.mean == pytest.approx(0.6)
    with pytest.raises(ValueError, match="max_retain"):
        pn_vs_n_conditions(n_fixed, pn_fixed, max_retain=0.1)


def test_sweet_spot_conditions():
    gains = pd.DataFrame([{"n_train": n, "seed": s, "gain": g + 0.05 * s}
                          for n, g in {100: 0.0, 1000: 1.0, 5000: 0.6, 50000: 0.2}.items() for s in range(3)])
    conditions = sweet_spot_conditions(gains, peak_sizes=[1000, 5000])
    assert [c.verdict for c in conditions] == [True, True, True]
    late = gains.assign(gain=np.where(gains["n_train"] == 50000, 2.0, gains["gain"]))
    assert [c.verdict for c in sweet_spot_conditions(late, peak_sizes=[1000, 5000])][1:] == [False, False]
    with pytest.raises(ValueError, match="smallest"):
        sweet_spot_conditions(gains, peak_sizes=[1000], smallest=10)


def test_errors_by_bad_input():
    frame = _rate_frame({0.5: [1.0]}, {0.5: [0.0]})
    with pytest.raises(ValueError, match="key"):
        errors_by(frame, "nope")
    with pytest.raises(ValueError, match="split"):
        errors_by(frame, "retain", split="val")
    with pytest.raises(ValueError, match="baseline"):
        paired_gains(frame.assign(setting="x", n_train=1), "a", "x")
