"""Experiment drivers shared by the notebooks: the same training run over settings × seeds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pandas as pd
from torch import nn

from .train import TrainConfig, fit, seed_everything


def run_settings(make_model: Callable[..., nn.Module], settings: dict[str, dict[str, Any]], data: dict[str, Any],
                 config: TrainConfig, seeds: Iterable[int], keep_models: bool = False):
    """Train ``make_model(**settings[label])`` for every label and seed; return tidy histories.

    Returns a DataFrame with the history columns plus ``setting`` and ``seed`` (and, if
    ``keep_models``, a dict ``{(label, seed): model}`` as a second value). The seed sets both
    the initialisation and the data order, so settings are compared on equal terms.
    """
    frames, models = [], {}
    for label, kwargs in settings.items():
        for seed in seeds:
            seed_everything(seed)
            model = make_model(**kwargs)
            history = fit(model, data, replace(config, seed=seed))
            frame = history.to_frame()
            frame.insert(0, "seed", seed)
            frame.insert(0, "setting", label)
            frames.append(frame)
            if keep_models:
                models[(label, seed)] = model
    result = pd.concat(frames, ignore_index=True)
    return (result, models) if keep_models else result


def final_epoch(frame, split: str, metric: str = "error"):
    """One row per (setting, seed): the metric at the last epoch on ``split``."""
    rows = frame[frame["split"] == split]
    last = rows.groupby(["setting", "seed"])["epoch"].transform("max")
    return rows[rows["epoch"] == last].set_index(["setting", "seed"])[metric]
