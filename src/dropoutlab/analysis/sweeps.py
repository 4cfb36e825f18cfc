"""Sweeps over the dropout rate and the training-set size, and the verdicts of their claims.

Srivastava et al. (JMLR 2014), §7.3–7.4:

* Fig. 9a — the number of hidden units ``n`` fixed, the retain probability varied: test error
  is flat for retain ∈ [0.4, 0.8] and rises at both ends (small retain underfits).
* Fig. 9b — ``retain · n`` fixed (widths ``n = base / retain``): small retain hurts much less.
* Fig. 10 — the gain of dropout (error without − error with) against the training-set size
  ``N`` at a fixed update budget: none at N ≈ 100, a peak at moderate N, smaller at large N.

The paper speaks in retain probabilities; the models take the drop probability
``p_drop = 1 − retain``. Every sweep returns a tidy DataFrame with one row per
(setting, seed, scored split) holding the final ``loss`` and ``error`` (a fraction) in eval mode.

The verdict helpers return three-valued verdicts like
:func:`dropoutlab.analysis.stats.directional_verdict`: True (reproduced), False (not
reproduced), None (inconclusive: the confidence interval does not decide).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..train import TrainConfig, evaluate, fit, seed_everything
from .stats import Summary, diff_ci, mean_ci

KEEP_FIXED = ("n", "pn")
SCORE_SPLITS = ("train", "test")


@dataclass(frozen=True)
class Split:
    """Tensors ``x`` and ``y`` of one training subset (what :func:`fit` and :func:`evaluate` need)."""

    x: Any
    y: Any

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Condition:
    """One sub-condition of a claim's pass rule: its verdict and the number it rests on."""

    name: str
    verdict: bool | None
    measured: Summary | None
    detail: str


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _retain(value: float, name: str = "retain_rates") -> float:
    retain = float(value)
    if not 0.0 < retain <= 1.0:
        raise ValueError(f"{name}: a retain probability must be in (0, 1], got {value!r}")
    return round(retain, 6)


def widths_for_retain(base_widths: Sequence[int], retain: float, keep_fixed: str = "n") -> list[int]:
    """Hidden widths at retain probability ``retain``.

    ``keep_fixed="n"``: the widths stay ``base_widths`` (Fig. 9a). ``keep_fixed="pn"``: the
    expected number of retained units ``retain · n`` stays ``base_widths``, so ``n = base / retain``
    rounded to the nearest unit (Fig. 9b: pn = 256, 256, 512).
    """
    if keep_fixed not in KEEP_FIXED:
        raise ValueError(f"keep_fixed must be one of {KEEP_FIXED}, got {keep_fixed!r}")
    widths = [int(w) for w in base_widths]
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"base_widths must be positive integers, got {list(base_widths)!r}")
    retain = _retain(retain, "retain")
    if keep_fixed == "n":
        return widths
    return [max(1, round(w / retain)) for w in widths]


def budget_config(config: TrainConfig, n_train: int) -> TrainConfig:
    """``config`` for a training set of ``n_train`` examples: evaluation off during training, and
    with ``max_steps`` set, just enough epochs to spend exactly that update budget."""
    if n_train < 1:
        raise ValueError(f"n_train must be ≥ 1, got {n_train}")
    config = replace(config, eval_splits=())
    if config.max_steps is None:
        return config
    if config.max_steps < 1:
        raise ValueError(f"config.max_steps must be ≥ 1 or None, got {config.max_steps}")
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    return replace(config, epochs=math.ceil(config.max_steps / steps_per_epoch))


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


def _subset(dataset, n: int, seed: int) -> Split:
    from ..data import stratified_indices

    idx = np.asarray(stratified_indices(np.asarray(dataset.y), int(n), seed))
    return Split(dataset.x[idx], dataset.y[idx])


def _frame(rows: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame(rows)


def _score_sets(train, test, train_score_size: int | None) -> dict[str, Any]:
    if train_score_size is None or train_score_size >= len(train):
        return {"train": train, "test": test}
    return {"train": _subset(train, train_score_size, 0), "test": test}


def _mlp_factory(in_features: int, widths: Sequence[int], out_features: int, **kwargs: Any):
    from ..models import MLP

    return lambda: MLP(in_features, widths, out_features, **kwargs)


def _shape(dataset) -> tuple[int, int]:
    features = int(np.prod(tuple(dataset.x.shape[1:])))
    classes = int(getattr(dataset, "num_classes", 0) or int(dataset.y.max()) + 1)
    return features, classes


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------


def rate_sweep(train, test, retain_rates: Iterable[float], base_widths: Sequence[int], config: TrainConfig,
               seeds: Iterable[int], *, keep_fixed: str = "n", p_input: float = 0.0, activation: str = "relu",
               dropout: str = "inverted", train_score_size: int | None = None):
    """Train an MLP at each retain probability of the hidden units (Srivastava 2014, Fig. 9).

    Hidden widths follow :func:`widths_for_retain` (``keep_fixed`` "n" or "pn"); every hidden
    layer drops with ``p_drop = 1 − retain``, the input with ``p_input`` (Fig. 9: none). The
    seed sets initialisation and data order. Train error is scored on a fixed class-stratified
    subset of ``train`` of ``train_score_size`` examples (None: all of it); test error on ``test``.

    Returns columns: keep_fixed, retain, p_drop, widths, seed, steps, split, loss, error.
    """
    rates = [_retain(r) for r in retain_rates]
    seeds = [int(s) for s in seeds]
    if not rates:
        raise ValueError("retain_rates: give at least one retain probability")
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    features, classes = _shape(train)
    score = _score_sets(train, test, train_score_size)
    rows: list[dict[str, Any]] = []
    for retain in rates:
        widths = widths_for_retain(base_widths, retain, keep_fixed)
        p_drop = round(1.0 - retain, 6)
        make_model = _mlp_factory(features, widths, classes, activation=activation, dropout=dropout,
                                  p_input=p_input, p_hidden=p_drop)
        labels = {"keep_fixed": keep_fixed, "retain": retain, "p_drop": p_drop,
                  "widths": "-".join(map(str, widths))}
        for seed in seeds:
            rows += train_and_score(make_model, train, score, config, seed, labels)
    return _frame(rows)


def seeds_per_size(sizes: Iterable[int], seeds: Sequence[int], small_n: int = 500,
                   small_n_seeds: int = 5) -> dict[int, list[int]]:
    """Seeds for each training-set size: ``seeds``, extended to ``small_n_seeds`` seeds for N ≤ ``small_n``
    (the error of a net trained on a few hundred examples varies a lot with the subset)."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    extra = [s for s in range(max(seeds) + 1, max(seeds) + 1 + small_n_seeds) if s not in seeds]
    small = (seeds + extra)[:max(small_n_seeds, len(seeds))]
    return {int(n): (small if int(n) <= small_n else seeds) for n in sizes}


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
    if config.max_steps is None:
        raise ValueError("config.max_steps must be set: the data-size sweep compares sizes at a fixed update budget")
    sizes = [int(n) for n in sizes]
    if not sizes:
        raise ValueError("sizes: give at least one training-set size")
    too_big = [n for n in sizes if n > len(train) or n < 1]
    if too_big:
        raise ValueError(f"sizes: {too_big} not in [1, {len(train)}] (the size of the training split)")
    if not settings:
        raise ValueError("settings: give at least one {label: MLP keyword arguments}")
    seeds_for = seeds_per_size(sizes, list(seeds), small_n=0) if not isinstance(seeds, Mapping) else seeds
    missing = [n for n in sizes if n not in seeds_for]
    if missing:
        raise ValueError(f"seeds: no seeds for size(s) {missing}")
    features, classes = _shape(train)
    rows: list[dict[str, Any]] = []
    for n in sizes:
        for seed in seeds_for[n]:
            subset = _subset(train, n, int(seed))
            for label, kwargs in settings.items():
                make_model = _mlp_factory(features, widths, classes, activation=activation, dropout=dropout,
                                          **kwargs)
                rows += train_and_score(make_model, subset, {"train": subset, "test": test}, config, int(seed),
                                        {"setting": label, "n_train": n})
    return _frame(rows)


# --------------------------------------------------------------------------------------------
# Verdict helpers
# --------------------------------------------------------------------------------------------


def errors_by(frame, key: str, split: str = "test", scale: float = 100.0) -> dict[Hashable, np.ndarray]:
    """``{value of key: errors over seeds}`` on ``split``, in percent by default (ordered by key)."""
    if key not in frame:
        raise ValueError(f"key {key!r} is not a column; columns: {list(frame.columns)}")
    rows = frame[frame["split"] == split]
    if rows.empty:
        raise ValueError(f"split {split!r} has no rows; splits: {sorted(frame['split'].unique())}")
    return {k: group.sort_values("seed")["error"].to_numpy(float) * scale
            for k, group in rows.groupby(key, sort=True)}


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


def above(summary: Summary, threshold: float = 0.0) -> bool | None:
    """Verdict for "the quantity exceeds ``threshold``": True if the whole CI is above it, False if
    the mean is not, None otherwise (the convention of ``directional_verdict``)."""
    if summary.mean <= threshold:
        return False
    if summary.n >= 2 and math.isfinite(summary.half_width) and summary.low > threshold:
        return True
    return None


def below(summary: Summary, threshold: float) -> bool | None:
    """Verdict for "the quantity is at most ``threshold``": True if the whole CI is at or below it,
    False if the mean is above it, None otherwise."""
    if summary.mean > threshold:
        return False
    if summary.n >= 2 and math.isfinite(summary.half_width) and summary.high <= threshold:
        return True
    return None


def combine_verdicts(verdicts: Iterable[bool | None]) -> bool | None:
    """All sub-conditions must hold: False if any fails, True if all hold, None otherwise."""
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("combine_verdicts: need at least one verdict")
    if any(v is False for v in verdicts):
        return False
    return True if all(v is True for v in verdicts) else None


def extremum_location(samples: Mapping[Hashable, Sequence[float]], allowed: Iterable[Hashable],
                      mode: str = "min") -> tuple[Hashable, bool | None, Summary]:
    """Where the mean is smallest (``mode="min"``) or largest (``"max"``), and whether it lies in ``allowed``.

    Compares the best key inside ``allowed`` with the best key outside (Welch CI of the
    difference, oriented so that positive favours inside). Verdict: True if the extremum is
    inside and the CI excludes 0, False if it is outside and the CI excludes 0, None otherwise.
    Returns ``(key of the extremum, verdict, difference)``; when every key is allowed, the verdict is
    True and the third value summarises the extremum's own samples.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if not samples:
        raise ValueError("samples: need at least one key")
    allowed = set(allowed)
    inside = [k for k in samples if k in allowed]
    outside = [k for k in samples if k not in allowed]
    if not inside:
        raise ValueError(f"allowed: none of {sorted(allowed)} is among the keys {list(samples)}")
    sign = 1.0 if mode == "max" else -1.0
    means = {k: sign * float(np.mean(samples[k])) for k in samples}
    best = max(samples, key=lambda k: means[k])
    best_in = max(inside, key=lambda k: means[k])
    if not outside:
        return best, True, mean_ci(samples[best_in])  # nothing to compare with: the extremum's own values
    best_out = max(outside, key=lambda k: means[k])
    favoured, other = (best_in, best_out) if mode == "max" else (best_out, best_in)
    difference, _ = diff_ci(samples[favoured], samples[other])
    decided = difference.n >= 2 and math.isfinite(difference.half_width)
    if best in allowed:
        verdict = True if decided and difference.low > 0 else None
    else:
        verdict = False if decided and difference.high < 0 else None
    return best, verdict, difference


def _at(samples: Mapping[float, np.ndarray], retain: float, what: str) -> np.ndarray:
    for key, values in samples.items():
        if math.isclose(float(key), retain, abs_tol=1e-9):
            return values
    raise ValueError(f"{what}: retain {retain} is not in the sweep; retain rates: {sorted(samples)}")


def u_shape_conditions(frame, interval: tuple[float, float] = (0.4, 0.8), low_retain: float = 0.1,
                       reference_retain: float = 0.5, margin_pp: float = 0.5) -> list[Condition]:
    """SR-F9a's pass rule on an n-fixed :func:`rate_sweep` (errors in percent):

    1. the test error is lowest at a retain rate inside ``interval``;
    2. test error(``low_retain``) > test error(``reference_retain``) + ``margin_pp``;
    3. train error(``low_retain``) > train error(``reference_retain``) (small retain underfits).
    """
    low, high = interval
    if not 0 < low <= high <= 1:
        raise ValueError(f"interval must satisfy 0 < low ≤ high ≤ 1, got {interval!r}")
    test, train = errors_by(frame, "retain", "test"), errors_by(frame, "retain", "train")
    allowed = [r for r in test if low - 1e-9 <= r <= high + 1e-9]
    if not allowed:
        raise ValueError(f"interval {interval}: the sweep has no retain rate inside it; rates: {sorted(test)}")
    best, where_verdict, where_margin = extremum_location(test, allowed, mode="min")
    rise, _ = diff_ci(_at(test, low_retain, "low_retain"), _at(test, reference_retain, "reference_retain"))
    underfit, _ = diff_ci(_at(train, low_retain, "low_retain"), _at(train, reference_retain, "reference_retain"))
    return [
        Condition(f"min test error at retain ∈ [{low:g}, {high:g}]", where_verdict, where_margin,
                  f"argmin retain = {best:g}, best outside − best inside = {where_margin:.3g} pp"),
        Condition(f"err({low_retain:g}) > err({reference_retain:g}) + {margin_pp:g} pp", above(rise, margin_pp), rise,
                  f"test err({low_retain:g}) − err({reference_retain:g}) = {rise:.3g} pp"),
        Condition(f"train err({low_retain:g}) > train err({reference_retain:g})", above(underfit), underfit,
                  f"train err({low_retain:g}) − train err({reference_retain:g}) = {underfit:.3g} pp"),
    ]


def pn_vs_n_conditions(n_fixed, pn_fixed, max_retain: float = 0.3) -> list[Condition]:
    """SR-F9b's pass rule: test error with pn fixed < with n fixed, at every common retain ≤ ``max_retain``."""
    errors_n, errors_pn = errors_by(n_fixed, "retain"), errors_by(pn_fixed, "retain")
    common = [r for r in errors_pn if r <= max_retain + 1e-9 and any(math.isclose(r, q) for q in errors_n)]
    if not common:
        raise ValueError(f"max_retain={max_retain}: no retain rate ≤ it is in both sweeps "
                         f"(n fixed: {sorted(errors_n)}, pn fixed: {sorted(errors_pn)})")
    conditions = []
    for retain in common:
        gap, _ = diff_ci(_at(errors_n, retain, "n_fixed"), errors_pn[retain])
        conditions.append(Condition(f"err_pn({retain:g}) < err_n({retain:g})", above(gap), gap,
                                    f"retain {retain:g}: err_n − err_pn = {gap:.3g} pp"))
    return conditions


def sweet_spot_conditions(gains, peak_sizes: Iterable[int], smallest: int | None = None,
                          largest: int | None = None, max_small_gain_pp: float = 0.5) -> list[Condition]:
    """SR-F10's pass rule on :func:`paired_gains` (gain in pp per n_train and seed):

    1. gain(``smallest``) ≤ ``max_small_gain_pp``;
    2. argmax_N of the mean gain is in ``peak_sizes``;
    3. gain(``largest``) < the largest mean gain.
    ``smallest``/``largest`` default to the smallest and largest N of the sweep.
    """
    by_size = {int(n): g.sort_values("seed")["gain"].to_numpy(float) for n, g in gains.groupby("n_train")}
    if not by_size:
        raise ValueError("gains: empty")
    smallest = min(by_size) if smallest is None else int(smallest)
    largest = max(by_size) if largest is None else int(largest)
    for name, n in (("smallest", smallest), ("largest", largest)):
        if n not in by_size:
            raise ValueError(f"{name}: N={n} is not in the sweep; sizes: {sorted(by_size)}")
    peak_sizes = [int(n) for n in peak_sizes]
    small = mean_ci(by_size[smallest])
    best, peak_verdict, peak_margin = extremum_location(by_size, peak_sizes, mode="max")
    shrink, _ = diff_ci(by_size[best], by_size[largest])
    return [
        Condition(f"gain({smallest}) ≤ {max_small_gain_pp:g} pp", below(small, max_small_gain_pp), small,
                  f"gain({smallest}) = {small:.3g} pp"),
        Condition(f"argmax_N gain ∈ {peak_sizes}", peak_verdict, peak_margin,
                  f"argmax N = {best}, gain(best allowed) − gain(best other) = {peak_margin:.3g} pp"),
        Condition(f"gain({largest}) < max gain", above(shrink), shrink,
                  f"gain({best}) − gain({largest}) = {shrink:.3g} pp"),
    ]


def describe(conditions: Sequence[Condition]) -> str:
    """One line per sub-condition with its verdict, for a ledger note."""
    names = {True: "holds", False: "fails", None: "undecided"}
    return "; ".join(f"{c.name}: {names[c.verdict]} ({c.detail})" for c in conditions)
