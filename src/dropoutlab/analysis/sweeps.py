"""Sweeps over the dropout rate and the training-set size, and the per-seed measurements of their claims.

Srivastava et al. (JMLR 2014), §7.3–7.4:

* Fig. 9a — the number of hidden units ``n`` fixed, the retain rate varied: test error
  is flat for retain ∈ [0.4, 0.8] and rises at both ends (small retain underfits).
* Fig. 9b — ``retain · n`` fixed (widths ``n = base / retain``): small retain hurts much less.
* Fig. 10 — the gain of dropout (error without − error with) against the training-set size
  ``N`` at a fixed update budget: none at 100–500 examples, a peak at moderate N, smaller at large N.

The paper speaks in retain rates; the models take the drop probability
``p_drop = 1 − retain``. Every sweep returns a tidy DataFrame with one row per
(setting, seed, scored split) holding the final ``loss`` and ``error`` (a fraction) in eval mode.

The measurement functions (:func:`u_shape_measurements`, :func:`pn_vs_n_measurements`,
:func:`sweet_spot_measurements`) return per-seed arrays (in percent), aligned by seed, in the form
``Ledger.record`` takes; they decide nothing: the claims registry's rule does
(:mod:`dropoutlab.verdicts`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ..checks import choice, integer, integers, optional_integer, probabilities, probability, seed_list, settle
from ..models import MLP
from ..train import TrainConfig, evaluate, fit, seed_everything
from .studies import epochs_for, study_config, train_config

KEEP_FIXED = ("n", "pn")


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def widths_for_retain(base_widths: Sequence[int], retain: float, keep_fixed: str = "n") -> list[int]:
    """Hidden widths at retain probability ``retain``.

    ``keep_fixed="n"``: the widths stay ``base_widths`` (Fig. 9a). ``keep_fixed="pn"``: the
    expected number of retained units ``retain · n`` stays ``base_widths``, so ``n = base / retain``
    rounded to the nearest unit (Fig. 9b: pn = 256, 256, 512).
    """
    keep_fixed, widths = choice(keep_fixed, KEEP_FIXED, "keep_fixed"), integers(base_widths, "base_widths")
    retain = round(probability(retain, "retain", zero=False, one=True, what="a keep (retain) probability"), 6)
    return widths if keep_fixed == "n" else [max(1, round(w / retain)) for w in widths]


def budget_config(config: TrainConfig, n_train: int) -> TrainConfig:
    """``config`` for a training set of ``n_train`` examples: evaluation off during training, and
    with ``max_steps`` set, just enough epochs to spend exactly that update budget."""
    n_train, steps = integer(n_train, "n_train"), optional_integer(config.max_steps, "config.max_steps")
    config = replace(config, eval_splits=())
    return config if steps is None else replace(config, epochs=epochs_for(steps, n_train, config.batch_size))


def train_and_score(make_model, train, score: Mapping[str, Any], config: TrainConfig, seed: int,
                    labels: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Seed, build, train on ``train`` and score on each of ``score`` (eval mode): tidy rows."""
    seed_everything(seed)
    model = make_model()
    run_config = replace(budget_config(config, len(train)), seed=seed)
    history = fit(model, {"train": train}, run_config)
    steps = history.records[-1]["step"] if history.records else 0
    rows = []
    for split, dataset in score.items():
        metrics = evaluate(model, dataset, run_config.task, device=run_config.device)
        rows.append({**labels, "seed": seed, "steps": steps, "split": split, **metrics})
    return rows


def _shape(dataset) -> tuple[int, int]:
    """MLP input features and classes of ``dataset`` (classes from the labels when not recorded)."""
    return int(np.prod(dataset.input_shape)), dataset.num_classes or int(dataset.y.max()) + 1


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetainSweepConfig:
    """Settings of :func:`rate_sweep`, checked once when built: the hidden units' ``retain_rates``,
    ``base_widths``, ``training``, ``seeds``; ``keep_fixed`` ("n" or "pn", see :func:`widths_for_retain`),
    the input's drop probability ``p_input``, the ``activation`` and ``dropout`` variant, and the size of
    the fixed training subset the train error is scored on (``train_score_size``; None: all)."""

    retain_rates: tuple[float, ...]
    base_widths: tuple[int, ...]
    training: TrainConfig
    seeds: tuple[int, ...]
    keep_fixed: str = "n"
    p_input: float = 0.0
    activation: str = "relu"
    dropout: str = "inverted"
    train_score_size: int | None = None

    def __post_init__(self) -> None:
        name = "RetainSweepConfig"
        train_config(self.training, f"{name}.training")
        rates = probabilities(self.retain_rates, f"{name}.retain_rates", zero=False, one=True,
                              what="keep (retain) probabilities")
        settle(self, retain_rates=tuple(round(r, 6) for r in rates),
               base_widths=tuple(integers(self.base_widths, f"{name}.base_widths")),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               keep_fixed=choice(self.keep_fixed, KEEP_FIXED, f"{name}.keep_fixed"),
               p_input=probability(self.p_input, f"{name}.p_input"),
               train_score_size=optional_integer(self.train_score_size, f"{name}.train_score_size"))


def rate_sweep(train, test, config: RetainSweepConfig):
    """Train an MLP at each retain probability of the hidden units (Srivastava 2014, Fig. 9).

    Hidden widths follow :func:`widths_for_retain` (``keep_fixed`` "n" or "pn"); every hidden
    layer drops with ``p_drop = 1 − retain``, the input with ``p_input`` (Fig. 9: none). The
    seed sets initialisation and data order. Train error is scored on a fixed class-stratified
    subset of ``train`` of ``train_score_size`` examples (None: all of it); test error on ``test``.

    Returns columns: keep_fixed, retain, p_drop, widths, seed, steps, split, loss, error.
    """
    config = study_config(config, RetainSweepConfig)
    features, classes = _shape(train)
    size = config.train_score_size
    score = {"train": train if size is None or size >= len(train) else train.subset(size, 0), "test": test}
    rows: list[dict[str, Any]] = []
    for retain in config.retain_rates:
        widths = widths_for_retain(config.base_widths, retain, config.keep_fixed)
        p_drop = round(1.0 - retain, 6)
        make_model = partial(MLP, features, widths, classes, activation=config.activation, dropout=config.dropout,
                             p_input=config.p_input, p_hidden=p_drop)
        labels = {"keep_fixed": config.keep_fixed, "retain": retain, "p_drop": p_drop,
                  "widths": "-".join(map(str, widths))}
        for seed in config.seeds:
            rows += train_and_score(make_model, train, score, config.training, seed, labels)
    return pd.DataFrame(rows)


def seeds_per_size(sizes: Iterable[int], seeds: Sequence[int], small_n: int = 500,
                   small_n_seeds: int = 5) -> dict[int, list[int]]:
    """Seeds for each training-set size: ``seeds``, extended to ``small_n_seeds`` seeds for N ≤ ``small_n``
    (the error of a net trained on a few hundred examples varies a lot with the subset)."""
    seeds = seed_list(seeds)
    extra = [s for s in range(max(seeds) + 1, max(seeds) + 1 + small_n_seeds) if s not in seeds]
    small = (seeds + extra)[:max(small_n_seeds, len(seeds))]
    return {n: (small if n <= small_n else seeds) for n in integers(sizes, "sizes")}


def data_size_sweep(train, test, sizes: Iterable[int], settings: Mapping[str, Mapping[str, Any]],
                    widths: Sequence[int], config: TrainConfig,
                    seeds: Sequence[int] | Mapping[int, Sequence[int]], *, activation: str = "relu",
                    dropout: str = "inverted"):
    """Train each setting on class-stratified subsets of ``train`` of each size N (Srivastava 2014, Fig. 10).

    The subset for (N, seed) is ``stratified_indices(train.y, N, seed)`` — what
    ``load_dataset(name, split, n=N, seed=seed)`` draws — and is shared by every setting, so the
    settings can be compared seed by seed. ``settings`` maps a label to MLP keyword arguments
    (``p_input``, ``p_hidden``). ``config.max_steps`` must be set: every N gets the same number of
    updates. ``seeds`` is one list for all N or a dict N → seeds (see :func:`seeds_per_size`).

    Returns columns: setting, n_train, seed, steps, split ("train": the subset, "test"), loss, error.
    """
    if train_config(config, "config").max_steps is None:
        raise ValueError("config.max_steps must be set: the data-size sweep compares sizes at a fixed update budget")
    sizes = integers(sizes, "sizes")
    too_big = [n for n in sizes if n > len(train)]
    if too_big:
        raise ValueError(f"sizes: {too_big} not in [1, {len(train)}] (the size of the training split)")
    if not settings:
        raise ValueError("settings: give at least one {label: MLP keyword arguments}")
    seeds_for = seeds if isinstance(seeds, Mapping) else dict.fromkeys(sizes, seed_list(seeds))
    missing = [n for n in sizes if n not in seeds_for]
    if missing:
        raise ValueError(f"seeds: no seeds for size(s) {missing}")
    features, classes = _shape(train)
    rows: list[dict[str, Any]] = []
    for n in sizes:
        for seed in seeds_for[n]:
            subset = train.subset(n, int(seed))
            for label, kwargs in settings.items():
                make_model = partial(MLP, features, widths, classes, activation=activation, dropout=dropout, **kwargs)
                rows += train_and_score(make_model, subset, {"train": subset, "test": test}, config, int(seed),
                                        {"setting": label, "n_train": n})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Per-seed measurements (percent; arrays aligned by seed)
# --------------------------------------------------------------------------------------------


def errors_by(frame, key: str, split: str = "test", scale: float = 100.0):
    """Errors on ``split`` as a seeds × ``key`` table, in percent by default (rows and columns sorted).

    A seed missing at some value of ``key`` leaves NaN there; the measurement functions keep only
    the seeds present everywhere they look.
    """
    if key not in frame:
        raise ValueError(f"key {key!r} is not a column; columns: {list(frame.columns)}")
    rows = frame[frame["split"] == split]
    if rows.empty:
        raise ValueError(f"split {split!r} has no rows; splits: {sorted(frame['split'].unique())}")
    wide = rows.pivot_table(index="seed", columns=key, values="error", aggfunc="first")
    return wide.sort_index().sort_index(axis=1) * scale


def paired_gains(frame, baseline: str, treatment: str, split: str = "test", scale: float = 100.0):
    """Gain of ``treatment`` over ``baseline`` per (n_train, seed): error(baseline) − error(treatment).

    Both settings were trained on the same subset for each seed, so the difference is paired.
    Returns a DataFrame with columns n_train, seed, gain (percentage points by default).
    """
    rows = frame[frame["split"] == split]
    labels = set(rows["setting"])
    for name, label in (("baseline", baseline), ("treatment", treatment)):
        if label not in labels:
            raise ValueError(f"{name}: setting {label!r} not in the frame; settings: {sorted(labels)}")
    wide = rows.pivot_table(index=["n_train", "seed"], columns="setting", values="error", aggfunc="first")
    wide = wide.dropna(subset=[baseline, treatment])
    gains = ((wide[baseline] - wide[treatment]) * scale).rename("gain").reset_index()
    return gains.sort_values(["n_train", "seed"], ignore_index=True)


def _column(wide, value: float, what: str):
    for key in wide.columns:
        if math.isclose(float(key), float(value), abs_tol=1e-9):
            return wide[key]
    raise ValueError(f"{what}: {value:g} is not in the sweep; values: {[float(k) for k in wide.columns]}")


def _paired(a, b) -> dict[str, np.ndarray]:
    """``{"a": ..., "b": ...}`` on the seeds both series have (a paired measurement)."""
    both = a.dropna().index.intersection(b.dropna().index).sort_values()
    if len(both) == 0:
        raise ValueError("the two arms share no seed")
    return {"a": a.loc[both].to_numpy(float), "b": b.loc[both].to_numpy(float)}


def min_outside_minus_inside(wide, interval: tuple[float, float]) -> np.ndarray:
    """Per seed (row of ``wide``): the lowest error at a column outside ``interval`` minus the lowest
    inside it. Positive: the seed's minimum lies inside. Seeds missing any column are dropped."""
    low, high = interval
    if not 0 < low <= high <= 1:
        raise ValueError(f"interval must satisfy 0 < low ≤ high ≤ 1, got {interval!r}")
    keys = [float(k) for k in wide.columns]
    inside = [k for k, r in zip(wide.columns, keys) if low - 1e-9 <= r <= high + 1e-9]
    outside = [k for k in wide.columns if k not in inside]
    if not inside or not outside:
        raise ValueError(f"interval {interval}: need retain rates both inside and outside it; rates: {keys}")
    complete = wide.dropna()
    return (complete[outside].min(axis=1) - complete[inside].min(axis=1)).to_numpy(float)


def u_shape_measurements(frame, interval: tuple[float, float] = (0.4, 0.8), low_retain: float = 0.1,
                         reference_retain: float = 0.5) -> dict[str, dict[str, np.ndarray]]:
    """SR-F9a's per-seed measurements on an n-fixed :func:`rate_sweep` (errors in percent):

    * ``min_inside`` — ``values``: per seed, the lowest test error outside ``interval`` minus the
      lowest inside it (> 0: the minimum lies inside);
    * ``rise`` — ``a``/``b``: test error at ``low_retain`` and at ``reference_retain``;
    * ``underfit`` — ``a``/``b``: train error at ``low_retain`` and at ``reference_retain``.
    """
    test, train = errors_by(frame, "retain", "test"), errors_by(frame, "retain", "train")

    def low_vs_reference(wide):
        return _paired(_column(wide, low_retain, "low_retain"), _column(wide, reference_retain, "reference_retain"))

    return {"min_inside": {"values": min_outside_minus_inside(test, interval)}, "rise": low_vs_reference(test),
            "underfit": low_vs_reference(train)}


def pn_vs_n_measurements(n_fixed, pn_fixed, max_retain: float = 0.3) -> tuple[float, dict[str, np.ndarray]]:
    """SR-F9b: at the smallest retain rate ≤ ``max_retain`` in both sweeps, the test errors with n
    fixed (``a``) and with pn fixed (``b``) per seed. Returns ``(retain, {"a": ..., "b": ...})``."""
    errors_n, errors_pn = errors_by(n_fixed, "retain"), errors_by(pn_fixed, "retain")
    common = sorted(float(r) for r in errors_pn.columns if float(r) <= max_retain + 1e-9
                    and any(math.isclose(float(r), float(q)) for q in errors_n.columns))
    if not common:
        raise ValueError(f"max_retain={max_retain}: no retain rate ≤ it is in both sweeps "
                         f"(n fixed: {list(errors_n.columns)}, pn fixed: {list(errors_pn.columns)})")
    retain = common[0]
    return retain, _paired(_column(errors_n, retain, "n_fixed"), _column(errors_pn, retain, "pn_fixed"))


def sweet_spot_measurements(frame, baseline: str, treatment: str, small_sizes: Iterable[int] = (100, 500),
                            peak_sizes: Iterable[int] = (1000, 5000, 10000),
                            largest: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """SR-F10's per-seed measurements on a :func:`data_size_sweep` (test errors in percent):

    * ``nil_at_<N>`` for each N of ``small_sizes`` — ``a``/``b``: error of ``baseline`` and of
      ``treatment`` at N (their difference is the gain at N);
    * ``mid_over_smallest`` — ``a``: the gain averaged over the pre-named ``peak_sizes`` per seed,
      ``b``: the gain at the smallest of ``small_sizes``;
    * ``mid_over_largest`` — ``a``: the same mid-range gain, ``b``: the gain at ``largest``
      (default: the largest N of the sweep).

    Every pair keeps the seeds both of its arms have.
    """
    small_sizes, peak_sizes = integers(small_sizes, "small_sizes"), integers(peak_sizes, "peak_sizes")
    rows = frame[frame["split"] == "test"]
    sizes = sorted(int(n) for n in rows["n_train"].unique())
    largest = max(sizes) if largest is None else integer(largest, "largest")
    missing = [n for n in (*small_sizes, *peak_sizes, largest) if n not in sizes]
    if missing:
        raise ValueError(f"sizes {sorted(set(missing))} are not in the sweep; sizes: {sizes}")
    gains = paired_gains(frame, baseline, treatment).pivot_table(index="seed", columns="n_train", values="gain")
    errors = {label: errors_by(rows[rows["setting"] == label], "n_train") for label in (baseline, treatment)}
    parts = {f"nil_at_{n}": _paired(errors[baseline][n], errors[treatment][n]) for n in small_sizes}
    mid = gains[peak_sizes].dropna().mean(axis=1)
    parts["mid_over_smallest"] = _paired(mid, gains[min(small_sizes)])
    parts["mid_over_largest"] = _paired(mid, gains[largest])
    return parts
