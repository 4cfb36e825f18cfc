"""dropoutlab.analysis.studies: the checks the study configs share and the per-seed table reader."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from dropoutlab.analysis.studies import (
    TrainedArms,
    distinct_choices,
    epochs_for,
    per_seed,
    require_splits,
    study_config,
    train_config,
    updates_per_epoch,
)
from dropoutlab.train import TrainConfig

TABLE = pd.DataFrame(dict(arm=["a", "a", "b", "b", "a"], p=[0.1, 0.1, 0.1, 0.1, 0.3], seed=[2, 0, 0, 2, 0],
                          error=[5.0, 4.0, 3.0, 6.0, 9.0]))


def test_per_seed_filters_and_sorts_by_seed():
    got = per_seed(TABLE, "error", arm="a", p=0.1)
    assert got.index.tolist() == [0, 2] and got.tolist() == [4.0, 5.0]
    assert per_seed(TABLE, "error", arm="b").tolist() == [3.0, 6.0]


def test_per_seed_compares_floats_within_tolerance():
    assert per_seed(TABLE, "error", p=0.1 + 1e-12, arm="a").tolist() == [4.0, 5.0]
    assert per_seed(TABLE, "error", p=0.3).tolist() == [9.0]


@pytest.mark.parametrize(("column", "where", "words"), [
    ("error", dict(arm="c"), "no 'error' rows"),
    ("error", dict(arm="a", p=0.2), "'p': [0.1, 0.3]"),
    ("loss", dict(arm="a"), "no column(s) ['loss']"),
    ("error", dict(rule="x"), "no column(s) ['rule']"),
])
def test_per_seed_names_what_the_table_has(column, where, words):
    with pytest.raises(ValueError) as info:
        per_seed(TABLE, column, **where)
    assert words in str(info.value)


def test_trained_arms_reads_train_arms_default_evaluation():
    errors = TABLE.assign(evaluation="default", loss=0.5)[["arm", "seed", "evaluation", "error", "loss"]]
    arms = TrainedArms.of(SimpleNamespace(errors=errors, history=pd.DataFrame()))
    assert list(arms.errors.columns) == ["arm", "seed", "error", "loss"]
    assert arms.test_error("b").tolist() == [3.0, 6.0]
    assert arms.accuracy("b").tolist() == [97.0, 94.0]


def test_train_config_and_study_config_refuse_the_wrong_type():
    config = TrainConfig(task="classification")
    assert train_config(config, "training", task="classification") is config
    with pytest.raises(ValueError, match="training must be a TrainConfig, got dict"):
        train_config({}, "training")
    with pytest.raises(ValueError, match="training.task must be 'regression', got 'classification'"):
        train_config(config, "training", task="regression")
    with pytest.raises(ValueError, match="config must be a TrainConfig, got str"):
        study_config("x", TrainConfig)


def test_distinct_choices_and_require_splits():
    assert distinct_choices(["b", "a"], ("a", "b", "c"), "arms") == ("b", "a")
    assert distinct_choices("a", ("a", "b"), "arms") == ("a",)
    with pytest.raises(ValueError, match="arms must be distinct names"):
        distinct_choices(["a", "a"], ("a", "b"), "arms")
    with pytest.raises(ValueError, match="arms must be a non-empty list of names"):
        distinct_choices(["z"], ("a", "b"), "arms")
    require_splits({"train": 1, "test": 2}, ["train", "test", "train"])
    with pytest.raises(ValueError, match=r"data has no split\(s\) \['val'\]"):
        require_splits({"train": 1}, ["train", "val"])
    with pytest.raises(ValueError, match="data must map split names"):
        require_splits([1, 2], ["train"])


def test_updates_per_epoch_and_epochs_for_count_the_partial_batch():
    assert [updates_per_epoch(64, b) for b in (16, 24, 64, 100)] == [4, 3, 1, 1]
    assert updates_per_epoch(1024, 64) == 16
    assert [epochs_for(u, 1000, 128) for u in (8, 9, 100)] == [1, 2, 13]  # 8 updates per epoch
    for args, name in (((0, 32), "n_train"), ((10, 0), "batch_size")):
        with pytest.raises(ValueError, match=f"{name} must be an integer ≥ 1"):
            updates_per_epoch(*args)
    with pytest.raises(ValueError, match="updates must be an integer ≥ 1"):
        epochs_for(0, 10, 2)
