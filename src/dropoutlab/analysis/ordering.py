"""The BN/Dropout ordering table of the Stack Overflow answer (Q39691902).

The answer trains one Keras net per ordering of Conv, Activation, Dropout, BatchNorm and
MaxPool inside each of two convolution modules (32 and 64 3×3 'valid' filters, ELU, 2×2
pooling, Dropout 0.2 then 0.3) followed by Dense(512, ELU) and a softmax, on MNIST for
20 epochs with Adam, and reports one test loss per ordering (no seeds, no error bars).

* :data:`ORDERINGS` — the table as data: id → ConvNet order string and the answer's single-run test loss;
  :func:`ordering_table`, :func:`make_ordering_net`.
* :func:`ordering_sweep` — trains orderings × seeds and returns one row per run: test loss,
  test error and the variance shift measured at every BN input (Li et al., CVPR 2019);
  :func:`batch_size_sweep` repeats it over batch sizes, optionally at a fixed number of updates.
* :func:`group_statistics` / :func:`ordering_statistics` — descriptive statistics over seeds:
  Kruskal–Wallis, one-way ANOVA, each ordering against the best (Welch t-test, Holm correction,
  Cohen's d, rank-biserial r), Spearman correlation with the table's ranking;
  :func:`association` — the correlation of two per-ordering means (variance shift vs loss);
  :func:`per_seed_association` — the same correlation within each seed (one value per seed);
  :func:`batch_size_gap` — the paired difference of two orderings per batch size.

The claims' verdicts are decided by the registry's rules (:mod:`dropoutlab.verdicts`) from the
per-run measurements, not here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from torch import nn

from ..checks import choice, choices, integer, integers, optional_integer, probability, seed_list
from ..models import ConvNet, parse_order
from ..train import evaluate, fit, seed_everything
from .stats import diff_ci, holm, mean_ci
from .studies import epochs_for, require_splits
from .variance_shift import measure_bn_input_variance

__all__ = ["ORDERINGS", "Ordering", "OrderingStatistics", "RECOMMENDED", "SEED_BEST", "SEED_WORST", "TABLE_NET",
           "association", "batch_size_gap", "batch_size_sweep", "group_statistics", "make_ordering_net",
           "ordering_label", "ordering_statistics", "ordering_sweep", "ordering_table", "per_seed_association"]


@dataclass(frozen=True)
class Ordering:
    """One row of the answer's table: the layer order inside each module and its single-run test loss."""

    id: str
    order: str
    seed_test_loss: float

    @property
    def label(self) -> str:
        return ordering_label(self.order)


# Test losses as printed in the Stack Overflow answer (Q39691902), 20 epochs on MNIST, one run each.
# (``seed_test_loss``/``SEED_*`` refer to this table, the project's starting point, not to random seeds.)
ORDERINGS: dict[str, Ordering] = {o.id: o for o in (
    Ordering("SO-1a", "conv-act-drop-bn-pool", 0.04261355847120285),
    Ordering("SO-1b", "conv-act-drop-pool-bn", 0.050065308809280396),
    Ordering("SO-1c", "conv-act-bn-pool-drop", 0.04911309853196144),
    Ordering("SO-1d", "conv-act-bn-drop-pool", 0.06809622049331665),
    Ordering("SO-1e", "conv-bn-act-drop-pool", 0.038886815309524536),
    Ordering("SO-1f", "conv-bn-act-pool-drop", 0.04126095026731491),
    Ordering("SO-1g", "conv-bn-drop-act-pool", 0.05142546817660332),
    Ordering("SO-1h", "conv-drop-act-bn-pool", 0.04827788099646568),
    Ordering("SO-1i", "conv-drop-act-pool-bn", 0.04722036048769951),
    Ordering("SO-1j", "conv-drop-bn-act-pool", 0.03238215297460556),
)}
SEED_BEST, SEED_WORST = "SO-1j", "SO-1d"
RECOMMENDED = "SO-1e"  # the accepted answer: CONV/FC → BatchNorm → ReLU (or other) → Dropout
# The table's net; Keras Dropout(rate) takes the drop probability, so p = (0.2, 0.3) as printed.
TABLE_NET: dict[str, Any] = dict(input_shape=(1, 28, 28), channels=(32, 64), activation="elu", p=(0.2, 0.3),
                                 hidden=512, dropout="inverted", padding=0)

_TOKEN_NAMES = {"conv": "Conv", "bn": "BN", "act": "Act", "drop": "Dropout", "pool": "Pool"}


def ordering_label(order: str) -> str:
    """``"conv-bn-act-drop-pool"`` → ``"Conv → BN → Act → Dropout → Pool"``."""
    return " → ".join(_TOKEN_NAMES[t] for t in parse_order(order))


def _check_ids(orderings: Sequence[str] | str | None, name: str = "orderings") -> tuple[str, ...]:
    """Ordering ids of :data:`ORDERINGS` (None: all of them)."""
    return tuple(ORDERINGS) if orderings is None else choices(orderings, tuple(ORDERINGS), name)


def ordering_table():
    """The answer's table as a DataFrame: ``ordering``, ``order``, ``layers``, ``seed_test_loss``, ``seed_rank``."""
    frame = pd.DataFrame([{"ordering": o.id, "order": o.order, "layers": o.label, "seed_test_loss": o.seed_test_loss}
                          for o in ORDERINGS.values()])
    frame["seed_rank"] = frame["seed_test_loss"].rank(method="min").astype(int)
    return frame


def make_ordering_net(ordering: str, **overrides: Any) -> nn.Module:
    """The table's ConvNet with the layer order of ``ordering`` (an id such as ``"SO-1e"``).

    ``overrides`` replace entries of :data:`TABLE_NET` (e.g. ``input_shape``, ``channels``,
    ``padding`` for small images); ``order`` itself cannot be overridden.
    """
    ordering = choice(ordering, tuple(ORDERINGS), "ordering")
    if "order" in overrides:
        raise ValueError("make_ordering_net: 'order' is fixed by the ordering id; pass another id instead")
    return ConvNet(order=ORDERINGS[ordering].order, **{**TABLE_NET, **overrides})


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------


def _shift_columns(variance) -> dict[str, float]:
    """Per-run summary of :func:`measure_bn_input_variance`: per-BN ratios and the largest two-sided shift."""
    ratio = variance["ratio"].to_numpy(float)  # var_eval / var_train, Li et al.'s Δ
    running = (variance["var_eval"] / variance["running_var"]).to_numpy(float)
    columns = {f"ratio_bn{i + 1}": float(r) for i, r in enumerate(ratio)}
    columns |= {f"running_ratio_bn{i + 1}": float(r) for i, r in enumerate(running)}
    columns["variance_shift"] = float(np.max(np.maximum(ratio, 1 / ratio)))
    columns["running_shift"] = float(np.max(np.maximum(running, 1 / running)))
    return columns


def ordering_sweep(data: Mapping[str, Any], config, seeds: Sequence[int], orderings: Sequence[str] | None = None, *,
                   net: Mapping[str, Any] | None = None, test_split: str = "test", n_measure: int = 512,
                   measure_variance: bool = True):
    """Train every ordering × seed with ``config`` and return one row per run.

    ``data`` maps split names to datasets (``"train"`` and ``test_split`` needed); ``net``
    overrides entries of :data:`TABLE_NET`. The seed sets initialisation, data order and
    dropout masks, so orderings are compared on equal terms. Each trained net is evaluated
    on ``test_split`` and, if ``measure_variance``, the input variance of every BN layer is
    measured on the first ``n_measure`` training images in chunks of the training batch size
    (:func:`dropoutlab.analysis.variance_shift.measure_bn_input_variance`).

    Columns: ``ordering``, ``order``, ``seed``, ``batch_size``, ``updates`` (optimiser steps made),
    ``train_loss`` (running average of the last epoch, dropout on), ``test_loss``, ``test_error`` (%), and
    with the measurement ``ratio_bn<k>`` = var_eval/var_train at the k-th BN input (Li et al.'s Δ),
    ``running_ratio_bn<k>`` = var_eval/running_var, ``variance_shift`` = max over BN layers of
    max(Δ, 1/Δ) and ``running_shift`` the same for the running-variance ratio.
    """
    ids, seeds = _check_ids(orderings), seed_list(seeds)
    require_splits(data, ["train", test_split])
    integer(n_measure, "n_measure", 2)
    x_measure = data["train"].x[:n_measure]
    rows = []
    for ordering in ids:
        for seed in seeds:
            seed_everything(seed)
            model = make_ordering_net(ordering, **(net or {}))
            history = fit(model, data, replace(config, seed=seed))
            metrics = evaluate(model, data[test_split], config.task, device=config.device)
            row = {"ordering": ordering, "order": ORDERINGS[ordering].order, "seed": seed,
                   "batch_size": config.batch_size, "updates": int(history.last("train_running", "step")),
                   "train_loss": history.last("train_running", "loss"),
                   "test_loss": metrics["loss"], "test_error": 100 * metrics["error"]}
            if measure_variance:
                variance = measure_bn_input_variance(model, x_measure, batch_size=config.batch_size, seed=seed)
                row |= _shift_columns(variance)
            rows.append(row)
    return pd.DataFrame(rows)


def batch_size_sweep(data: Mapping[str, Any], config, batch_sizes: Sequence[int], seeds: Sequence[int],
                     orderings: Sequence[str], *, updates: int | None = None, reuse=None, **sweep_kwargs: Any):
    """:func:`ordering_sweep` at every batch size, for a fixed number of ``updates`` (or fixed epochs).

    With ``updates`` every run makes exactly that many optimiser steps: the epochs are scaled with
    the batch size (``ceil(updates / steps per epoch)`` epochs, stopped by ``max_steps``), so the
    compute grows with the batch size while the number of updates stays the same. Without it
    every size trains ``config.epochs`` epochs (smaller batches then make more updates).
    Runs already in ``reuse`` (a frame from :func:`ordering_sweep` with the same settings) for a
    matching (ordering, seed, batch_size) — and, with ``updates``, the same number of updates —
    are taken from it instead of being trained again. Returns the rows of every
    (batch size, ordering, seed), sorted by batch size.
    """
    sizes, updates = integers(batch_sizes, "batch_sizes"), optional_integer(updates, "updates")  # None: fixed epochs
    ids, seeds = _check_ids(orderings), seed_list(seeds)
    n_train = len(data["train"])
    frames = []
    for size in sizes:
        size_config = replace(config, batch_size=size)
        if updates is not None:
            size_config = replace(size_config, epochs=epochs_for(updates, n_train, size), max_steps=updates)
        for ordering in ids:
            done = set()
            if reuse is not None:
                match = (reuse["ordering"] == ordering) & (reuse["batch_size"] == size) & reuse["seed"].isin(seeds)
                if updates is not None:
                    match &= reuse["updates"] == updates if "updates" in reuse else False
                if match.any():
                    frames.append(reuse[match])
                    done = set(reuse.loc[match, "seed"])
            todo = [s for s in seeds if s not in done]
            if todo:
                frames.append(ordering_sweep(data, size_config, todo, [ordering], **sweep_kwargs))
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["batch_size", "ordering", "seed"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderingStatistics:
    """Result of :func:`group_statistics`.

    ``table``: one row per group (sorted by mean, lowest first) with ``n``, ``mean``,
    ``half_width``, ``low``, ``high`` (95 % t-interval), ``rank`` (1 = lowest mean), the
    comparison with the ``comparator`` group: ``diff`` (group − comparator) and its Welch
    interval ``diff_low``/``diff_high``, ``p_value`` (Welch), ``p_holm`` (Holm over the
    comparisons), ``significant`` (p_holm < alpha), ``cohens_d`` (pooled SD) and
    ``rank_biserial`` (from Mann–Whitney U; +1 = every value above the comparator's), and, with
    a reference, ``reference`` and ``reference_rank``. Omnibus tests: Kruskal–Wallis
    ``kruskal_h``/``kruskal_p``, one-way ANOVA ``anova_f``/``anova_p`` and its ``eta_squared``;
    ``spearman_rho``/``spearman_p`` of the group means against the reference values (NaN without
    a reference). ``best``/``worst``: the groups with the lowest/highest mean.
    """

    table: Any
    best: str
    worst: str
    kruskal_h: float
    kruskal_p: float
    anova_f: float
    anova_p: float
    eta_squared: float
    spearman_rho: float
    spearman_p: float
    alpha: float
    comparator: str

    def row(self, group: str):
        """The table's row of one group (the first column names the groups)."""
        return self.table.set_index(self.table.columns[0]).loc[group]


def _groups(values: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    if not isinstance(values, Mapping) or len(values) < 2:
        raise ValueError(f"values must map at least 2 group names to their values, got {values!r}")
    groups = {}
    for name, vals in values.items():
        arr = np.asarray(vals, dtype=float).ravel()
        if arr.size < 2 or not np.all(np.isfinite(arr)):
            raise ValueError(f"values[{name!r}] must hold ≥ 2 finite numbers (one per seed), got {arr.tolist()}")
        groups[str(name)] = arr
    return groups


def _omnibus(groups: list[np.ndarray]) -> tuple[float, float, float, float, float]:
    """Kruskal–Wallis H, p; ANOVA F, p; η². Degenerate inputs give p = 1 (no spread) or NaN."""
    pooled = np.concatenate(groups)
    if np.ptp(pooled) == 0:  # every value identical: nothing differs
        return 0.0, 1.0, 0.0, 1.0, 0.0
    h, p_h = stats.kruskal(*groups)
    grand = pooled.mean()
    between = sum(g.size * (g.mean() - grand) ** 2 for g in groups)
    within = sum(((g - g.mean()) ** 2).sum() for g in groups)
    eta = float(between / (between + within))
    if within == 0:  # groups differ but have no spread inside: F is infinite
        return float(h), float(p_h), math.inf, 0.0, eta
    f, p_f = stats.f_oneway(*groups)
    return float(h), float(p_h), float(f), float(p_f), eta


def _cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    pooled = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    diff = a.mean() - b.mean()
    if pooled == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return float(diff / math.sqrt(pooled))


def _rank_biserial(a: np.ndarray, b: np.ndarray) -> float:
    """r = 2·U_a/(n_a·n_b) − 1: +1 when every a is above every b, −1 when below, 0 for ties."""
    if np.ptp(np.concatenate([a, b])) == 0:
        return 0.0
    u = stats.mannwhitneyu(a, b, alternative="two-sided").statistic
    return float(2 * u / (a.size * b.size) - 1)


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def group_statistics(values: Mapping[str, Sequence[float]], reference: Mapping[str, float] | None = None,
                     alpha: float = 0.05, against: str | None = None) -> OrderingStatistics:
    """Does the group matter beyond seed noise, and how does each group compare with one of them?

    ``values`` maps each group (e.g. an ordering) to one value per seed (lower = better, e.g.
    test loss); ``reference`` optionally maps each group to a reference value (the answer's table's
    test loss) for the Spearman correlation of the group means with it. Every group is compared
    with ``against`` (default: the best, i.e. lowest-mean, group). Comparisons with a best chosen
    after seeing the data are anti-conservative — the lowest mean is biased low — so they are
    descriptive; to ask "is group X worse than the best?" with a valid error rate, pass
    ``against=X`` and look for a group significantly below it ("multiple comparisons with the
    best", Hsu 1981). Pairwise p-values are Welch t-tests: with 5 seeds a Mann–Whitney test
    cannot go below p = 2/252 ≈ 0.008, which no longer rejects after Holm over 9 comparisons,
    so its U only gives the effect size. See :class:`OrderingStatistics` for the fields.
    """
    groups = _groups(values)
    alpha = probability(alpha, "alpha", zero=False, what="a significance level")
    if reference is not None:
        missing = sorted(set(groups) - set(map(str, reference)))
        if missing:
            raise ValueError(f"reference has no value for group(s) {missing}")
        reference = {str(k): float(v) for k, v in reference.items()}
    names = list(groups)
    means = np.array([groups[g].mean() for g in names])
    best, worst = names[int(np.argmin(means))], names[int(np.argmax(means))]
    against = best if against is None else choice(against, names, "against")
    rows = []
    for name in names:
        summary = mean_ci(groups[name])
        diff, p_value = diff_ci(groups[name], groups[against])
        rows.append({"group": name, "n": summary.n, "mean": summary.mean, "half_width": summary.half_width,
                     "low": summary.low, "high": summary.high, "diff": diff.mean, "diff_low": diff.low,
                     "diff_high": diff.high, "p_value": 1.0 if name == against else p_value,
                     "cohens_d": _cohens_d(groups[name], groups[against]),
                     "rank_biserial": _rank_biserial(groups[name], groups[against])})
    table = pd.DataFrame(rows)
    others = table["group"] != against
    table["p_holm"] = 1.0
    table.loc[others, "p_holm"] = holm(table.loc[others, "p_value"].fillna(1.0).to_numpy())
    table["significant"] = table["p_holm"] < alpha
    table["rank"] = table["mean"].rank(method="min").astype(int)
    rho = p_rho = math.nan
    if reference is not None:
        table["reference"] = [reference[g] for g in names]
        table["reference_rank"] = table["reference"].rank(method="min").astype(int)
        rho, p_rho = _spearman(table["mean"].to_numpy(), table["reference"].to_numpy())
    h, p_h, f, p_f, eta = _omnibus([groups[g] for g in names])
    table = table.sort_values(["mean", "group"], kind="stable").reset_index(drop=True)
    return OrderingStatistics(table=table, best=best, worst=worst, kruskal_h=h, kruskal_p=p_h, anova_f=f,
                              anova_p=p_f, eta_squared=eta, spearman_rho=rho, spearman_p=p_rho, alpha=alpha,
                              comparator=against)


def _require_columns(runs, *names: str) -> None:
    for name in names:
        if name not in runs:
            raise ValueError(f"runs has no column {name!r}; it has {list(runs.columns)}")


def _per_group(runs, column: str, group: str = "ordering") -> dict[str, np.ndarray]:
    _require_columns(runs, group, column)
    return {str(k): v.to_numpy(float) for k, v in runs.groupby(group, sort=False)[column]}


def ordering_statistics(runs, metric: str = "test_loss", alpha: float = 0.05,
                        against: str | None = None) -> OrderingStatistics:
    """:func:`group_statistics` of ``metric`` over the orderings of an :func:`ordering_sweep` frame.

    The reference is the answer's table's test loss; the table gains ``layers``, ``seed_test_loss``
    and ``seed_rank`` (the table's rank among the orderings present) and, if the frame has
    them, the mean ± half-width of ``test_error`` (``error_mean``, ``error_half_width``).
    """
    values = _per_group(runs, metric)
    _check_ids(list(values), "runs['ordering']")
    result = group_statistics(values, {o: ORDERINGS[o].seed_test_loss for o in values}, alpha, against)
    table = result.table.rename(columns={"group": "ordering", "reference": "seed_test_loss",
                                         "reference_rank": "seed_rank"})
    table.insert(1, "layers", [ORDERINGS[o].label for o in table["ordering"]])
    if "test_error" in runs and metric != "test_error":
        errors = {o: mean_ci(v) for o, v in _per_group(runs, "test_error").items()}
        table["error_mean"] = [errors[o].mean for o in table["ordering"]]
        table["error_half_width"] = [errors[o].half_width for o in table["ordering"]]
    return replace(result, table=table)


def batch_size_gap(runs, high: str, low: str, metric: str = "test_loss"):
    """Per batch size, ``metric`` of ordering ``high`` minus that of ``low``, paired by seed.

    Only seeds present for both orderings at a batch size are used. Columns: ``batch_size``,
    ``n`` (seeds), ``mean_high``, ``mean_low``, ``diff`` (mean of the per-seed differences) and
    its 95 % t-interval ``diff_low``/``diff_high`` (NaN with one seed).
    """
    ids = _check_ids([high, low], "high and low")
    _require_columns(runs, "batch_size", "ordering", "seed", metric)
    rows = []
    for size, frame in runs.groupby("batch_size", sort=True):
        wide = frame[frame["ordering"].isin(ids)].pivot_table(index="seed", columns="ordering", values=metric)
        absent = [o for o in ids if o not in wide]
        if absent:
            raise ValueError(f"runs at batch size {size} lack ordering(s) {absent}")
        wide = wide.dropna()
        if wide.empty:
            raise ValueError(f"runs at batch size {size} share no seed between {high} and {low}")
        summary = mean_ci(wide[high].to_numpy(float) - wide[low].to_numpy(float))
        rows.append({"batch_size": int(size), "n": summary.n, "mean_high": float(wide[high].mean()),
                     "mean_low": float(wide[low].mean()), "diff": summary.mean, "diff_low": summary.low,
                     "diff_high": summary.high})
    return pd.DataFrame(rows)


def association(runs, x: str, y: str, group: str = "ordering") -> dict[str, float]:
    """Correlation of the per-group means of columns ``x`` and ``y`` (e.g. variance shift vs test loss).

    One point per group (the seeds of a group are not independent observations of the
    association). Returns ``n``, ``spearman_rho``, ``spearman_p``, ``pearson_r``, ``pearson_p``
    (NaN when either mean is constant or there are fewer than 3 groups).
    """
    means_x = {k: v.mean() for k, v in _per_group(runs, x, group).items()}
    means_y = {k: v.mean() for k, v in _per_group(runs, y, group).items()}
    keys = [k for k in means_x if np.isfinite(means_x[k]) and np.isfinite(means_y[k])]
    a = np.array([means_x[k] for k in keys])
    b = np.array([means_y[k] for k in keys])
    rho, p_rho = _spearman(a, b)
    r = p_r = math.nan
    if a.size >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
        result = stats.pearsonr(a, b)
        r, p_r = float(result.statistic), float(result.pvalue)
    return {"n": int(a.size), "spearman_rho": rho, "spearman_p": p_rho, "pearson_r": r, "pearson_p": p_r}


def per_seed_association(runs, x: str, y: str, group: str = "ordering", seed: str = "seed"):
    """Spearman ρ between columns ``x`` and ``y`` across the groups, computed within each seed.

    With one run per (group, seed), each seed gives one correlation over the groups (e.g. the
    ten orderings' variance shift against their test loss); the seeds are then the independent
    replicates of the association. Returns a DataFrame with ``seed``, ``n`` (groups with finite
    values) and ``spearman_rho`` (NaN with fewer than 3 groups or a constant column).
    """
    _require_columns(runs, group, seed, x, y)
    rows = []
    for value, frame in runs.groupby(seed, sort=True):
        if frame[group].duplicated().any():
            raise ValueError(f"per_seed_association: {seed} {value} has more than one run of some {group}")
        finite = frame[np.isfinite(frame[x].to_numpy(float)) & np.isfinite(frame[y].to_numpy(float))]
        rho, _ = _spearman(finite[x].to_numpy(float), finite[y].to_numpy(float))
        rows.append({seed: value, "n": len(finite), "spearman_rho": rho})
    return pd.DataFrame(rows)
