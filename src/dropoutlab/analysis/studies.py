"""What the training studies of :mod:`dropoutlab.analysis` share: the checks of their settings and data,
and one reader of their per-seed tables.

A study takes one frozen config dataclass whose ``__post_init__`` checks every field once
(:func:`dropoutlab.checks.settle` stores the canonical values); the checks here are the ones those
configs and the remaining keyword-argument studies have in common. A study's results are tidy
DataFrames with one row per (arm, seed, …); :func:`per_seed` reads one column of the rows that match,
indexed by seed, which is the form the claims registry's paired rules take.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..checks import choices, integer
from ..train import TrainConfig

__all__ = ["TrainedArms", "distinct_choices", "epochs_for", "per_seed", "require_splits", "study_config", "train_config",
           "updates_per_epoch"]


def train_config(config: Any, name: str, *, task: str | None = None) -> TrainConfig:
    """``config`` if it is a :class:`~dropoutlab.train.TrainConfig` (and, if ``task`` is given, of that task)."""
    if not isinstance(config, TrainConfig):
        raise ValueError(f"{name} must be a TrainConfig, got {type(config).__name__}")
    if task is not None and config.task != task:
        raise ValueError(f"{name}.task must be {task!r}, got {config.task!r}")
    return config


def updates_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of :func:`dropoutlab.train.fit` on ``n_train`` examples (the last,
    partial batch is kept)."""
    return math.ceil(integer(n_train, "n_train") / integer(batch_size, "batch_size"))


def epochs_for(updates: int, n_train: int, batch_size: int) -> int:
    """Epochs that hold ``updates`` optimizer steps (the last epoch cut short by ``max_steps``)."""
    return math.ceil(integer(updates, "updates") / updates_per_epoch(n_train, batch_size))


def study_config(config: Any, kind: type) -> Any:
    """``config`` if it is an instance of the study's config class ``kind`` (already checked when built)."""
    if not isinstance(config, kind):
        raise ValueError(f"config must be a {kind.__name__}, got {type(config).__name__}")
    return config


def distinct_choices(values: Any, allowed: Sequence[Any], name: str) -> tuple[Any, ...]:
    """``values`` as a non-empty tuple of distinct items of ``allowed`` (arm names, say)."""
    items = choices(values, allowed, name)
    if len(set(items)) != len(items):
        raise ValueError(f"{name} must be distinct names from {tuple(allowed)}, got {values!r}")
    return items


def require_splits(data: Any, names: Sequence[str]) -> None:
    """Raise unless ``data`` maps every split name in ``names`` to a dataset."""
    if not isinstance(data, Mapping):
        raise ValueError(f"data must map split names to datasets, got {type(data).__name__}")
    missing = [s for s in dict.fromkeys(names) if s not in data]
    if missing:
        raise ValueError(f"data has no split(s) {missing}; it has {sorted(data)}")


@dataclass(frozen=True)
class TrainedArms:
    """Arms × seeds trained on the same seeds (paired): ``errors`` — arm, seed, error (% on the test split),
    loss; ``history`` — ``fit``'s records with arm and seed."""

    errors: pd.DataFrame
    history: pd.DataFrame

    @classmethod
    def of(cls, study: Any) -> TrainedArms:
        """From :func:`~dropoutlab.analysis.structured.train_arms`'s study (its default evaluation)."""
        return cls(errors=study.errors[["arm", "seed", "error", "loss"]].reset_index(drop=True), history=study.history)

    def test_error(self, arm: str) -> pd.Series:
        """Per-seed test error (%) of one arm (a Series indexed by seed)."""
        return per_seed(self.errors, "error", arm=arm)

    def accuracy(self, arm: str) -> pd.Series:
        """Per-seed test accuracy (%) of one arm."""
        return 100.0 - self.test_error(arm)


def per_seed(frame: pd.DataFrame, column: str, **where: Any) -> pd.Series:
    """``frame[column]`` of the rows where every ``where`` column equals its value (floats: within
    ``np.isclose``), indexed by seed and sorted. Raises, naming what the frame has, when no row matches."""
    unknown = [key for key in (column, *where) if key not in frame]
    if unknown:
        raise ValueError(f"the table has no column(s) {unknown}; it has {list(frame.columns)}")
    keep = np.ones(len(frame), dtype=bool)
    for key, value in where.items():
        keep &= np.isclose(frame[key].to_numpy(float), value) if isinstance(value, float) else \
            (frame[key] == value).to_numpy()
    rows = frame[keep]
    if rows.empty:
        raise ValueError(f"no {column!r} rows for {where}; the table has "
                         f"{ {key: sorted(set(frame[key])) for key in where} }")
    return rows.set_index("seed")[column].sort_index()
