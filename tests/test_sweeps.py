"""Rate and data-size sweeps (Srivastava 2014, Fig. 9–10) and their per-seed claim measurements, on tiny blobs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import blobs

from dropoutlab.analysis.sweeps import (
    RetainSweepConfig,
    budget_config,
    data_size_sweep,
    errors_by,
    min_outside_minus_inside,
    paired_gains,
    pn_vs_n_measurements,
    rate_sweep,
    seeds_per_size,
    sweet_spot_measurements,
    u_shape_measurements,
    widths_for_retain,
)
from dropoutlab.data import stratified_indices
from dropoutlab.train import TrainConfig

CONFIG = TrainConfig(batch_size=32, lr=1e-2, max_steps=12, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- building blocks -------------------------------------------------------------------------


def test_widths_for_retain():
    assert widths_for_retain([256, 512], 0.2, "n") == [256, 512]
    assert widths_for_retain([256, 256, 512], 0.2, "pn") == [1280, 1280, 2560]  # Fig. 9b at retain 0.2: up to 2,560 units
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
    config = RetainSweepConfig([0.5, 1.0], [16], CONFIG, [0, 1], keep_fixed="pn", train_score_size=30)
    frame = rate_sweep(train, test, config)
    assert len(frame) == 2 * 2 * 2
    assert set(frame["widths"]) == {"32", "16"}
    assert set(frame["p_drop"]) == {0.5, 0.0}
    assert (frame["steps"] == CONFIG.max_steps).all()
    assert frame["error"].between(0, 1).all()
    again = rate_sweep(train, test, config)
    pd.testing.assert_frame_equal(frame, again)  # same seeds → bit-identical


def test_rate_sweep_bad_input():
    with pytest.raises(ValueError, match=r"RetainSweepConfig\.retain_rates must be .*retain.* in \(0, 1\]"):
        RetainSweepConfig([1.5], [8], CONFIG, [0])
    with pytest.raises(ValueError, match=r"RetainSweepConfig\.seeds"):
        RetainSweepConfig([0.5], [8], CONFIG, [])
    with pytest.raises(ValueError, match=r"RetainSweepConfig\.keep_fixed must be one of"):
        RetainSweepConfig([0.5], [8], CONFIG, [0], keep_fixed="p")
    with pytest.raises(ValueError, match="config must be a RetainSweepConfig"):
        rate_sweep(blobs(32, 0), blobs(16, 1), CONFIG)


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


# ---- per-seed measurements -----------------------------------------------------------------


def _rate_frame(test: dict, train: dict, keep_fixed: str = "n") -> pd.DataFrame:
    rows = []
    for split, errors in (("test", test), ("train", train)):
        for retain, values in errors.items():
            rows += [{"keep_fixed": keep_fixed, "retain": retain, "seed": s, "split": split, "error": e / 100}
                     for s, e in enumerate(values)]
    return pd.DataFrame(rows)


def test_errors_by_is_a_seed_by_key_table_in_percent():
    frame = _rate_frame({0.5: [1.0, 2.0], 0.1: [3.0, 4.0]}, {0.5: [0.0, 0.5], 0.1: [1.0, 1.5]})
    wide = errors_by(frame, "retain")
    assert list(wide.columns) == [0.1, 0.5] and list(wide.index) == [0, 1]
    np.testing.assert_allclose(wide[0.1], [3.0, 4.0])
    np.testing.assert_allclose(errors_by(frame, "retain", "train")[0.5], [0.0, 0.5])
    with pytest.raises(ValueError, match="key"):
        errors_by(frame, "nope")
    with pytest.raises(ValueError, match="split"):
        errors_by(frame, "retain", split="val")
    with pytest.raises(ValueError, match="baseline"):
        paired_gains(frame.assign(setting="x", n_train=1), "a", "x")


def test_min_outside_minus_inside_is_per_seed():
    wide = errors_by(_rate_frame({0.1: [3.0, 1.0], 0.5: [2.0, 2.0], 0.8: [1.5, 2.5], 1.0: [2.5, 3.0]},
                                 {0.1: [0, 0], 0.5: [0, 0], 0.8: [0, 0], 1.0: [0, 0]}), "retain")
    # seed 0: outside min 2.5, inside min 1.5 → +1.0; seed 1: outside min 1.0 (retain 0.1), inside 2.0 → −1.0
    np.testing.assert_allclose(min_outside_minus_inside(wide, (0.4, 0.8)), [1.0, -1.0])
    with pytest.raises(ValueError, match="interval"):
        min_outside_minus_inside(wide, (0.9, 0.3))
    with pytest.raises(ValueError, match="inside and outside"):
        min_outside_minus_inside(wide, (0.1, 1.0))


def test_u_shape_measurements():
    test = {0.1: [3.0, 3.2, 3.1], 0.5: [1.5, 1.6, 1.4], 0.8: [1.7, 1.8, 1.3], 1.0: [2.2, 2.3, 2.1]}
    train = {0.1: [2.0, 2.1, 2.2], 0.5: [0.1, 0.2, 0.1], 0.8: [0.0, 0.0, 0.1], 1.0: [0.0, 0.0, 0.0]}
    parts = u_shape_measurements(_rate_frame(test, train))
    assert set(parts) == {"min_inside", "rise", "underfit"}
    np.testing.assert_allclose(parts["min_inside"]["values"], [0.7, 0.7, 0.8])  # min outside (1.0) − min inside
    np.testing.assert_allclose(parts["rise"]["a"], test[0.1])
    np.testing.assert_allclose(parts["rise"]["b"], test[0.5])
    np.testing.assert_allclose(parts["underfit"]["a"] - parts["underfit"]["b"], [1.9, 1.9, 2.1])
    with pytest.raises(ValueError, match="reference_retain"):
        u_shape_measurements(_rate_frame(test, train), reference_retain=0.6)


def test_measurements_pair_by_seed_not_by_position():
    # seed 2 is missing at retain 0.1: the pairs keep seeds 0 and 1 only, in seed order
    frame = _rate_frame({0.1: [3.0, 4.0], 0.5: [1.0, 2.0, 9.0]}, {0.1: [1.0, 1.0], 0.5: [0.0, 0.0, 0.0]})
    parts = u_shape_measurements(frame, interval=(0.4, 0.6))
    np.testing.assert_allclose(parts["rise"]["a"] - parts["rise"]["b"], [2.0, 2.0])
    assert len(parts["min_inside"]["values"]) == 2


def test_pn_vs_n_measurements():
    n_fixed = _rate_frame({0.2: [2.5, 2.6, 2.4], 0.5: [1.5, 1.6, 1.4]}, {0.2: [1, 1, 1], 0.5: [0, 0, 0]})
    pn_fixed = _rate_frame({0.2: [1.9, 2.0, 1.8], 0.5: [1.5, 1.5, 1.5]}, {0.2: [0, 0, 0], 0.5: [0, 0, 0]}, "pn")
    retain, pair = pn_vs_n_measurements(n_fixed, pn_fixed, max_retain=0.3)
    assert retain == pytest.approx(0.2)
    np.testing.assert_allclose(pair["a"] - pair["b"], [0.6, 0.6, 0.6])
    with pytest.raises(ValueError, match="max_retain"):
        pn_vs_n_measurements(n_fixed, pn_fixed, max_retain=0.1)


def _size_frame(errors: dict) -> pd.DataFrame:
    """errors: {(setting, n_train): [test error in % per seed]}."""
    return pd.DataFrame([{"setting": setting, "n_train": n, "seed": s, "split": "test", "error": e / 100}
                         for (setting, n), values in errors.items() for s, e in enumerate(values)])


def test_sweet_spot_measurements():
    base = {100: [20.0, 21.0, 22.0, 23.0, 24.0], 500: [10.0, 11.0, 12.0, 13.0, 14.0],
            1000: [8.0, 8.0, 8.0], 5000: [5.0, 5.0, 5.0], 50000: [3.0, 3.0, 3.0]}
    drop = {100: [20.5, 20.5, 22.0, 23.0, 24.5], 500: [10.0, 10.0, 12.0, 13.0, 14.0],
            1000: [7.0, 6.0, 7.0], 5000: [4.0, 4.0, 4.0], 50000: [3.0, 2.5, 3.0]}
    frame = _size_frame({**{("none", n): v for n, v in base.items()}, **{("drop", n): v for n, v in drop.items()}})
    parts = sweet_spot_measurements(frame, "none", "drop", small_sizes=(100, 500), peak_sizes=(1000, 5000))
    assert set(parts) == {"nil_at_100", "nil_at_500", "mid_over_smallest", "mid_over_largest"}
    np.testing.assert_allclose(parts["nil_at_100"]["a"] - parts["nil_at_100"]["b"], [-0.5, 0.5, 0, 0, -0.5])
    assert len(parts["nil_at_500"]["a"]) == 5
    # mid gain per seed: mean of gain(1000) = [1, 2, 1] and gain(5000) = [1, 1, 1]; paired with seeds 0–2 only
    np.testing.assert_allclose(parts["mid_over_smallest"]["a"], [1.0, 1.5, 1.0])
    np.testing.assert_allclose(parts["mid_over_smallest"]["b"], [-0.5, 0.5, 0.0])
    np.testing.assert_allclose(parts["mid_over_largest"]["b"], [0.0, 0.5, 0.0])  # largest N of the sweep: 50000
    with pytest.raises(ValueError, match="not in the sweep"):
        sweet_spot_measurements(frame, "none", "drop", small_sizes=(100, 300), peak_sizes=(1000,))
    with pytest.raises(ValueError, match="treatment"):
        sweet_spot_measurements(frame, "none", "dropout", peak_sizes=(1000,))
