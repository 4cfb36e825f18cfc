"""The ordering table of the Stack Overflow answer (Q39691902), the sweep over orderings × seeds, measurements."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from dropoutlab.analysis.ordering import (
    ORDERINGS,
    RECOMMENDED,
    SEED_BEST,
    SEED_WORST,
    association,
    batch_size_gap,
    batch_size_sweep,
    group_statistics,
    make_ordering_net,
    ordering_label,
    ordering_statistics,
    ordering_sweep,
    ordering_table,
    per_seed_association,
)
from dropoutlab.analysis.stats import holm
from dropoutlab.data import Dataset
from dropoutlab.train import TrainConfig

ALPHA = 0.05
SMALL_NET = dict(input_shape=(1, 8, 8), channels=(4, 8), hidden=16, padding=1)
CONFIG = TrainConfig(epochs=1, batch_size=32, device="cpu", eval_splits=())
MODULE_TOKENS = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.ELU: "act", nn.MaxPool2d: "pool"}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_images(n: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    x[torch.arange(n), 0, y % 8, :] += 0.5  # a class-dependent bright row: learnable
    return Dataset(x, y)


# ---- the table ------------------------------------------------------------------------------


def test_table_has_the_ten_orderings_of_the_answer():
    table = ordering_table()
    assert list(table["ordering"]) == [f"SO-1{c}" for c in "abcdefghij"]
    assert table["order"].is_unique
    assert all(sorted(o.split("-")) == sorted(["conv", "bn", "act", "drop", "pool"]) for o in table["order"])
    assert all(o.startswith("conv-") for o in table["order"])
    assert table.set_index("ordering")["seed_rank"][SEED_BEST] == 1
    assert table.set_index("ordering")["seed_rank"][SEED_WORST] == 10
    assert ORDERINGS[RECOMMENDED].label == "Conv → BN → Act → Dropout → Pool"
    assert ordering_label("conv-drop-bn-act-pool") == "Conv → Dropout → BN → Act → Pool"


@pytest.mark.parametrize("ordering", list(ORDERINGS))
def test_every_ordering_builds_the_tables_net(ordering):
    net = make_ordering_net(ordering)
    for block, rate in zip(net.features, (0.2, 0.3), strict=True):
        tokens = [MODULE_TOKENS.get(type(m), "drop") for m in block]
        assert "-".join(tokens) == ORDERINGS[ordering].order
        drops = [m for m in block if type(m) not in MODULE_TOKENS]
        assert [float(m.p) for m in drops] == [pytest.approx(rate)]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64] and all(c.padding == (0, 0) for c in convs)
    assert net.head[1].out_features == 512
    assert net.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    small = make_ordering_net(ordering, **SMALL_NET)
    assert small.eval()(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_make_ordering_net_refuses_bad_input():
    with pytest.raises(ValueError, match="ordering must be .*SO-1a"):
        make_ordering_net("SO-1z")
    with pytest.raises(ValueError, match="'order' is fixed"):
        make_ordering_net("SO-1a", order="conv-act")


# ---- sweeps ---------------------------------------------------------------------------------


def test_ordering_sweep_is_tidy_and_reproducible():
    data = {"train": tiny_images(96, 0), "test": tiny_images(64, 1)}
    kwargs = dict(orderings=["SO-1j", "SO-1d"], net=SMALL_NET, n_measure=64)
    runs = ordering_sweep(data, CONFIG, [0, 1], **kwargs)
    assert list(runs[["ordering", "seed"]].itertuples(index=False, name=None)) == [
        ("SO-1j", 0), ("SO-1j", 1), ("SO-1d", 0), ("SO-1d", 1)]
    for column in ("test_loss", "test_error", "train_loss", "ratio_bn1", "ratio_bn2", "running_ratio_bn2",
                   "variance_shift", "running_shift"):
        assert np.all(np.isfinite(runs[column])), column
    assert (runs["variance_shift"] >= 1).all() and (runs["batch_size"] == 32).all()
    assert (runs["updates"] == 3).all()  # 96 images in batches of 32, one epoch
    # SO-1j puts dropout right before BN: the train-mode variance at its first BN exceeds eval's
    assert (runs.loc[runs["ordering"] == "SO-1j", "ratio_bn1"] < 1).all()
    again = ordering_sweep(data, CONFIG, [1], **kwargs)
    pd.testing.assert_frame_equal(again.reset_index(drop=True),
                                  runs[runs["seed"] == 1].reset_index(drop=True))


def test_batch_size_sweep_reuses_runs_it_already_has():
    data = {"train": tiny_images(64, 0), "test": tiny_images(32, 1)}
    kwargs = dict(net=SMALL_NET, n_measure=32, measure_variance=False)
    reuse = ordering_sweep(data, CONFIG, [0], ["SO-1e"], **kwargs)
    reuse.loc[:, "test_loss"] = -1.0  # a marker: a reused row keeps it, a retrained one cannot
    runs = batch_size_sweep(data, CONFIG, [16, 32], [0], ["SO-1e"], reuse=reuse, **kwargs)
    assert list(runs["batch_size"]) == [16, 32]
    assert runs.set_index("batch_size")["test_loss"][32] == -1.0
    assert runs.set_index("batch_size")["test_loss"][16] > 0


def test_batch_size_sweep_at_a_fixed_number_of_updates():
    data = {"train": tiny_images(64, 0), "test": tiny_images(32, 1)}
    kwargs = dict(net=SMALL_NET, n_measure=32, measure_variance=False)
    runs = batch_size_sweep(data, CONFIG, [8, 24, 64], [0], ["SO-1e"], updates=6, **kwargs)
    assert list(runs["batch_size"]) == [8, 24, 64] and (runs["updates"] == 6).all()  # 6 epochs at batch 64
    # a reused run must have made the same number of updates
    reuse = ordering_sweep(data, CONFIG, [0], ["SO-1e"], **kwargs).assign(test_loss=-1.0)  # 2 updates at 32
    again = batch_size_sweep(data, CONFIG, [32], [0], ["SO-1e"], updates=2, reuse=reuse, **kwargs)
    assert again["test_loss"].tolist() == [-1.0]
    retrained = batch_size_sweep(data, CONFIG, [32], [0], ["SO-1e"], updates=3, reuse=reuse, **kwargs)
    assert retrained["test_loss"].iloc[0] > 0 and retrained["updates"].iloc[0] == 3
    with pytest.raises(ValueError, match="updates must be"):
        batch_size_sweep(data, CONFIG, [32], [0], ["SO-1e"], updates=0)


def test_sweeps_refuse_bad_input():
    data = {"train": tiny_images(32, 0), "test": tiny_images(32, 1)}
    with pytest.raises(ValueError, match="orderings must be .*SO-1x"):
        ordering_sweep(data, CONFIG, [0], ["SO-1x"])
    with pytest.raises(ValueError, match="seeds must be"):
        ordering_sweep(data, CONFIG, [], ["SO-1a"])
    with pytest.raises(ValueError, match="no split.*'test'"):
        ordering_sweep({"train": data["train"]}, CONFIG, [0], ["SO-1a"])
    with pytest.raises(ValueError, match="n_measure"):
        ordering_sweep(data, CONFIG, [0], ["SO-1a"], n_measure=1)
    with pytest.raises(ValueError, match="batch_sizes"):
        batch_size_sweep(data, CONFIG, [0], [0], ["SO-1a"])


# ---- statistics -----------------------------------------------------------------------------

N_SEEDS, N_GROUPS = 8, 10


def normal_groups(shift: dict[str, float], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"g{i}": rng.standard_normal(N_SEEDS) + shift.get(f"g{i}", 0.0) for i in range(N_GROUPS)}


def detectable_shift() -> float:
    """Twice the mean difference a Welch test at Holm's strictest level just detects (σ = 1, n = N_SEEDS)."""
    level = ALPHA / (N_GROUPS - 1)
    return 2 * stats.t.ppf(1 - level / 2, N_SEEDS - 1) * np.sqrt(2 / N_SEEDS)


def test_identical_groups_give_no_evidence():
    same = {f"g{i}": [1.0, 2.0, 3.0] for i in range(4)}
    result = group_statistics(same)
    assert result.kruskal_p == pytest.approx(1.0) and result.anova_p == pytest.approx(1.0)
    assert not result.table["significant"].any()
    constant = group_statistics({"a": [1.0, 1.0], "b": [1.0, 1.0]})
    assert constant.kruskal_p == 1.0 and constant.eta_squared == 0.0


def test_groups_from_one_distribution_are_rejected_at_most_at_the_nominal_rate():
    draws = 200
    # one-sided binomial bound on an estimated rejection rate of draws Bernoulli(ALPHA) outcomes
    bound = ALPHA + stats.norm.ppf(0.999) * np.sqrt(ALPHA * (1 - ALPHA) / draws)
    omnibus = pairwise = 0
    for seed in range(draws):
        result = group_statistics(normal_groups({}, seed), against="g0")  # comparator fixed in advance
        omnibus += result.kruskal_p < ALPHA
        pairwise += result.table["significant"].any()
    assert omnibus / draws <= bound and pairwise / draws <= bound
    assert result.comparator == "g0" and result.row("g0")["diff"] == 0


def test_a_shifted_group_is_detected():
    result = group_statistics(normal_groups({"g3": detectable_shift()}))
    assert result.kruskal_p < ALPHA and result.anova_p < ALPHA
    assert result.worst == "g3" and result.row("g3")["significant"] and result.comparator == result.best
    assert result.row("g3")["cohens_d"] > 0 and result.row("g3")["rank_biserial"] > 0
    assert result.table.iloc[0]["group"] == result.best and result.row(result.best)["diff"] == 0


def test_holm_correction_over_the_comparisons_with_the_best():
    result = group_statistics(normal_groups({"g3": 1.0, "g5": 2.0}))
    others = result.table[result.table["group"] != result.best]
    np.testing.assert_allclose(others["p_holm"], holm(others["p_value"]))
    assert result.row(result.best)["p_holm"] == 1.0
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_spearman_against_a_known_permutation():
    values = {f"g{i}": [float(i), i + 0.5] for i in range(6)}  # means 0.25, 1.25, ..., increasing
    assert group_statistics(values, {g: float(i) for i, g in enumerate(values)}).spearman_rho == pytest.approx(1)
    assert group_statistics(values, {g: -float(i) for i, g in enumerate(values)}).spearman_rho == pytest.approx(-1)
    permutation = [1, 0, 2, 3, 5, 4]
    d2 = sum((rank - i) ** 2 for i, rank in enumerate(permutation))
    result = group_statistics(values, {g: float(permutation[i]) for i, g in enumerate(values)})
    assert result.spearman_rho == pytest.approx(1 - 6 * d2 / (6 * (6**2 - 1)))
    assert list(result.table["reference_rank"]) == [p + 1 for p in permutation]


def test_effect_sizes_on_known_values():
    result = group_statistics({"low": [1.0, 2.0, 3.0], "high": [4.0, 5.0, 6.0]})
    assert result.best == "low" and result.worst == "high"
    assert result.row("high")["cohens_d"] == pytest.approx(3.0)  # (5 − 2) / pooled SD 1
    assert result.row("high")["rank_biserial"] == pytest.approx(1.0)


def test_ordering_statistics_adds_the_seed_table():
    rows = [{"ordering": o, "seed": s, "test_loss": 0.1 * i + 0.01 * s, "test_error": 1.0 + i + s}
            for i, o in enumerate(ORDERINGS) for s in range(3)]
    result = ordering_statistics(pd.DataFrame(rows))
    assert result.best == "SO-1a" and result.worst == "SO-1j"
    row = result.row("SO-1j")
    assert row["seed_test_loss"] == ORDERINGS["SO-1j"].seed_test_loss and row["seed_rank"] == 1
    assert row["error_mean"] == pytest.approx(11.0)
    assert row["layers"] == "Conv → Dropout → BN → Act → Pool"


def shifted_runs(shift: dict[str, float], seed: int = 0) -> pd.DataFrame:
    """N_SEEDS runs of every ordering, test loss ~ N(shift, 1)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame([{"ordering": o, "seed": s, "batch_size": 128,
                          "test_loss": rng.standard_normal() + shift.get(o, 0.0)}
                         for o in ORDERINGS for s in range(N_SEEDS)])


def test_batch_size_gap_is_paired_by_seed():
    big = detectable_shift()
    runs = pd.concat([shifted_runs({"SO-1d": big}, 0), shifted_runs({}, 1).assign(batch_size=32)])
    gap = batch_size_gap(runs, "SO-1d", "SO-1j")
    assert list(gap["batch_size"]) == [32, 128] and list(gap["n"]) == [N_SEEDS, N_SEEDS]
    assert gap.set_index("batch_size")["diff_low"][128] > 0
    # a common per-seed offset cancels in the paired difference
    offset = runs.assign(test_loss=runs["test_loss"] + 10.0 * runs["seed"])
    pd.testing.assert_frame_equal(batch_size_gap(offset, "SO-1d", "SO-1j")[["diff", "diff_low", "diff_high"]],
                                  gap[["diff", "diff_low", "diff_high"]])
    at_128 = runs[runs["batch_size"] == 128].pivot_table(index="seed", columns="ordering", values="test_loss")
    assert gap.set_index("batch_size")["diff"][128] == pytest.approx((at_128["SO-1d"] - at_128["SO-1j"]).mean())
    # only the seeds both orderings have count
    partial = runs[~((runs["ordering"] == "SO-1j") & (runs["seed"] == 0))]
    assert batch_size_gap(partial, "SO-1d", "SO-1j")["n"].tolist() == [N_SEEDS - 1, N_SEEDS - 1]
    with pytest.raises(ValueError, match="lack ordering"):
        batch_size_gap(runs[runs["ordering"] != "SO-1j"], "SO-1d", "SO-1j")
    with pytest.raises(ValueError, match="high and low"):
        batch_size_gap(runs, "SO-1d", "nope")


def test_association_of_group_means():
    runs = pd.DataFrame({"ordering": list("aabbcc"), "shift": [1, 1.2, 2, 2.2, 3, 3.2],
                         "loss": [0.1, 0.1, 0.3, 0.3, 0.2, 0.2]})
    result = association(runs, "shift", "loss")
    assert result["n"] == 3 and result["spearman_rho"] == pytest.approx(0.5)
    assert np.isnan(association(runs.assign(loss=1.0), "shift", "loss")["spearman_rho"])


def test_per_seed_association():
    rows = [{"ordering": o, "seed": s, "shift": float(i), "loss": float(i if s == 0 else -i)}
            for i, o in enumerate(["SO-1a", "SO-1b", "SO-1c", "SO-1d"]) for s in range(3)]
    runs = pd.DataFrame(rows)
    result = per_seed_association(runs, "shift", "loss")
    assert list(result["seed"]) == [0, 1, 2] and list(result["n"]) == [4, 4, 4]
    np.testing.assert_allclose(result["spearman_rho"], [1.0, -1.0, -1.0])
    runs.loc[(runs["seed"] == 2) & (runs["ordering"] == "SO-1b"), "loss"] = 5.0  # one swap of ranks
    expected = stats.spearmanr([0, 1, 2, 3], [0, 5, -2, -3]).statistic
    assert per_seed_association(runs, "shift", "loss")["spearman_rho"].iloc[2] == pytest.approx(expected)
    with_nan = runs.assign(shift=runs["shift"].where(runs["ordering"] != "SO-1a"))
    assert per_seed_association(with_nan, "shift", "loss")["n"].tolist() == [3, 3, 3]
    assert np.isnan(per_seed_association(runs.assign(loss=1.0), "shift", "loss")["spearman_rho"]).all()
    with pytest.raises(ValueError, match="more than one run"):
        per_seed_association(pd.concat([runs, runs]), "shift", "loss")
    with pytest.raises(ValueError, match="no column 'nope'"):
        per_seed_association(runs, "nope", "loss")


def test_statistics_refuse_bad_input():
    with pytest.raises(ValueError, match="at least 2 group"):
        group_statistics({"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"values\['b'\] must hold ≥ 2"):
        group_statistics({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ValueError, match="alpha"):
        group_statistics({"a": [1.0, 2.0], "b": [1.0, 3.0]}, alpha=1.5)
    with pytest.raises(ValueError, match="against must be one of"):
        group_statistics({"a": [1.0, 2.0], "b": [1.0, 3.0]}, against="c")
    with pytest.raises(ValueError, match="reference has no value.*'b'"):
        group_statistics({"a": [1.0, 2.0], "b": [1.0, 3.0]}, {"a": 1.0})
    with pytest.raises(ValueError, match="no column 'nope'"):
        ordering_statistics(pd.DataFrame({"ordering": ["SO-1a"], "test_loss": [0.1]}), metric="nope")
