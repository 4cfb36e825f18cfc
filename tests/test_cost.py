"""SG-COST and SG-TABLE (analysis/cost.py): the shared nets, the memory count, the interleaved timing's
structure and store, the table's checks. No test asserts a time: timings are the benchmark's business."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dropoutlab.analysis import cost
from dropoutlab.paths import RUNS_ENV
from dropoutlab.variants.bernoulli import InvertedDropout, StandardDropout

SHAPE = (1, 4, 4)


def _split(n: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(x=torch.rand(n, *SHAPE, generator=g), y=torch.arange(n) % 3, num_classes=3)


def _nets(**kw):
    return cost.CostNets(SHAPE, 3, widths=(6, 5), channels=(2, 3), hidden=4, rnn_hidden=5, **kw)


ARMS = {"inverted (MLP)": ("mlp", "inverted", {}), "spatial (CNN)": ("cnn", "spatial", {}),
        "locked (LSTM)": ("rnn", "locked", {})}
FAST = dict(batch_size=8, steps=3, warmup=1, rounds=2)


# ------------------------------------------------------------------------------------------ the nets


@pytest.mark.parametrize("arch,variant", [("mlp", "inverted"), ("mlp", "gaussian"), ("cnn", "inverted"),
                                          ("cnn", "spatial"), ("rnn", "locked"), ("rnn", "inverted")])
def test_a_variant_without_parameters_starts_from_the_nets_weights(arch, variant):
    torch.manual_seed(5)
    plain = [w.clone() for w in _nets().build(arch).parameters()]
    torch.manual_seed(5)
    other = list(_nets().build(arch, variant).parameters())
    assert len(plain) == len(other) and all(torch.equal(a, b) for a, b in zip(plain, other, strict=True))


@pytest.mark.parametrize("arch", list(cost.ARCHITECTURES))
def test_the_net_without_dropout_is_deterministic_in_training(arch):
    net = _nets().build(arch).train()
    x = _split().x[:6]
    assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("kwargs,words", [
    (dict(input_shape=(16,)), "input_shape"), (dict(widths=()), "widths"), (dict(channels=[0]), "channels"),
    (dict(p_input=1.0), "p_input"), (dict(p_hidden=-0.1), "p_hidden"), (dict(p_conv="0.3"), "p_conv"),
    (dict(hidden=0), "hidden"), (dict(num_classes=True), "num_classes"),
])
def test_bad_nets_are_refused_by_name(kwargs, words):
    base = dict(input_shape=SHAPE, num_classes=3)
    with pytest.raises(ValueError, match=words):
        cost.CostNets(**{**base, **kwargs})


@pytest.mark.parametrize("arch,variant,words", [("gru", "inverted", "arch"), ("mlp", "nonsense", "nonsense")])
def test_bad_builds_are_refused(arch, variant, words):
    with pytest.raises(ValueError, match=words):
        _nets().build(arch, variant)


# ---------------------------------------------------------------------------------------- the memory


class _Saves(torch.autograd.Function):
    """Saves what it is told to: a fresh tensor of known size, the same one twice, its input, a weight."""

    @staticmethod
    def forward(ctx, x, weight, extra):
        ctx.save_for_backward(x, weight, extra, extra)
        return x * weight.sum()

    @staticmethod
    def backward(ctx, grad):
        x, weight, *_ = ctx.saved_tensors
        return grad * weight.sum(), (grad * x).sum() * torch.ones_like(weight), None


class _Toy(nn.Module):
    def __init__(self, extra: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))
        self.extra = extra

    def forward(self, x):
        out = _Saves.apply(x, self.weight, torch.zeros(self.extra))
        return out.flatten(1)[:, :3]


@pytest.mark.parametrize("extra", [1, 10, 1000])
def test_step_memory_counts_each_saved_storage_once_and_leaves_out_weights_and_input(extra):
    x, y = torch.rand(4, 5), torch.zeros(4, dtype=torch.long)
    counts = []
    for size in (extra, 2 * extra):
        model = _Toy(size)
        counts.append(cost.step_memory(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y))
    # the only difference between the two: one saved float tensor (twice) of `extra` more elements
    assert counts[1]["saved"] - counts[0]["saved"] == 4 * extra
    assert counts[0]["state"] == counts[1]["state"] == 2 * 3 * 4  # weights and gradients, SGD keeps no buffers


@pytest.mark.parametrize("arch", ["mlp", "cnn"])  # the LSTM also saves a weight buffer of fixed size
def test_saved_bytes_scale_with_the_batch_and_the_state_does_not(arch):
    split = _split(32)
    results = []
    for batch in (8, 16):
        torch.manual_seed(0)
        model = _nets().build(arch, {"mlp": "inverted", "cnn": "spatial", "rnn": "locked"}[arch])
        optimizer = torch.optim.Adam(model.parameters())
        x, y = split.x[:batch].clone(), split.y[:batch].clone()  # a view would keep the whole storage alive
        results.append(cost.step_memory(model, optimizer, x, y))
    assert results[0]["state"] == results[1]["state"]
    assert abs(results[1]["saved"] - 2 * results[0]["saved"]) <= 64  # a few scalars do not scale


def test_adam_state_is_counted_after_an_update():
    split = _split()
    model = _nets().build("mlp")
    optimizer = torch.optim.Adam(model.parameters())
    before = cost.step_memory(model, optimizer, split.x[:8], split.y[:8])["state"]
    nn.functional.cross_entropy(model(split.x[:8]), split.y[:8]).backward()
    optimizer.step()
    after = cost.step_memory(model, optimizer, split.x[:8], split.y[:8])["state"]
    params = sum(p.numel() * 4 for p in model.parameters())
    assert before == 2 * params and 4 * params <= after <= 4 * params + 8 * len(list(model.parameters()))


@pytest.mark.parametrize("arch,variant", [("mlp", "inverted"), ("mlp", "standard"), ("mlp", "gaussian"),
                                          ("cnn", "inverted"), ("cnn", "spatial")])
def test_dropout_adds_saved_bytes_but_no_state(arch, variant):
    split = _split()
    counts = {}
    for v in ("none", variant):
        torch.manual_seed(0)
        model = _nets().build(arch, v)
        counts[v] = cost.step_memory(model, torch.optim.Adam(model.parameters()), split.x[:8], split.y[:8])
    assert counts[variant]["state"] == counts["none"]["state"]
    assert counts[variant]["saved"] > counts["none"]["saved"]


# ------------------------------------------------------------------------------------------ the timing


def test_measure_cost_gives_one_row_per_seed_round_and_arm_with_baselines_added():
    study = cost.measure_cost(_nets(), ARMS, _split(), [0, 1], **FAST)
    labels = ["none (MLP)", "none (CNN)", "none (LSTM)", *ARMS]
    assert list(study.arms) == labels
    assert len(study.rounds) == 2 * 2 * len(labels)
    assert (study.rounds["updates_per_epoch"] == 5).all()  # ⌈40 / 8⌉
    np.testing.assert_allclose(study.rounds["epoch_seconds"], 5 * study.rounds["seconds_per_update"])
    for label in labels:
        assert study.ratio(label).shape == (4,)
        assert np.all(study.ratio(label) > 0)
        assert np.ptp(study.ratio(label, "memory")) == 0  # a count: the same in every round
    assert np.all(study.ratio("none (CNN)") == 1.0)
    summary = study.summary()
    assert list(summary["arm"]) == labels and (summary["memory_ratio"] >= 1).all()


class _LoggingNets(cost.CostNets):
    """Every forward in training appends the arm's variant and arch to a log."""

    def build(self, arch, variant="none", **kwargs):
        net = super().build(arch, variant, **kwargs)
        log, tag = LOG, f"{variant} {arch}"

        def hook(module, args):
            if module.training and torch.is_grad_enabled():
                log.append(tag)

        net.register_forward_pre_hook(hook)
        return net


LOG: list[str] = []


def test_arms_are_interleaved_update_by_update_with_a_rotating_order():
    LOG.clear()
    nets = _LoggingNets(SHAPE, 3, widths=(6,), channels=(2,), hidden=4, rnn_hidden=5)
    arms = {"inverted (MLP)": ("mlp", "inverted", {}), "gaussian (MLP)": ("mlp", "gaussian", {})}
    cost.measure_cost(nets, arms, _split(), [0], batch_size=8, steps=3, warmup=1, rounds=2)
    tags = ["none mlp", "inverted mlp", "gaussian mlp"]
    warmup, memory, timed = LOG[:3], LOG[3:6], LOG[6:]
    assert warmup == tags and memory == tags
    assert len(timed) == 2 * 3 * 3
    for update in range(6):  # each update: every arm once, starting one further along than the last
        block = timed[3 * update:3 * update + 3]
        assert sorted(block) == sorted(tags)
        assert block[0] == tags[update % 3]


def test_a_run_store_keeps_each_seed_once_and_a_rerun_loads_it(tmp_path, monkeypatch):
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    first = cost.measure_cost(_nets(), ARMS, _split(), [0, 1], **FAST)
    files = sorted(tmp_path.glob("cost-*.json"))
    assert first.loaded == 0 and len(files) == 2
    again = cost.measure_cost(_nets(), ARMS, _split(), [1, 0], **FAST)
    assert again.loaded == 2
    pd.testing.assert_frame_equal(again.rounds.sort_values(["seed", "round", "arm"]).reset_index(drop=True),
                                  first.rounds.sort_values(["seed", "round", "arm"]).reset_index(drop=True))
    other = cost.measure_cost(_nets(), ARMS, _split(), [0], **{**FAST, "steps": 4})
    assert other.loaded == 0 and len(list(tmp_path.glob("cost-*.json"))) == 3
    assert json.loads(files[0].read_text())["settings"]["steps"] == 3


def test_without_a_run_store_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(RUNS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    cost.measure_cost(_nets(), ARMS, _split(), [0], **FAST)
    assert not list(Path(tmp_path).rglob("*"))


@pytest.mark.parametrize("change,words", [
    (dict(seeds=[]), "seeds"), (dict(seeds=[1, 1]), "seeds"), (dict(seeds=[-1]), "seeds"),
    (dict(steps=0), "steps"), (dict(rounds=0), "rounds"), (dict(batch_size=0), "batch_size"),
    (dict(warmup=-1), "warmup"), (dict(lr=0), "lr"), (dict(threads=0), "threads"),
    (dict(arms={}), "arms"), (dict(arms={"x": ("mlp", "none", {})}), "without dropout"),
    (dict(arms={"x": ("gru", "inverted", {})}), "arch"), (dict(train_split=object()), "train_split"),
])
def test_bad_measurements_are_refused_by_name(change, words):
    args = dict(nets=_nets(), arms=ARMS, train_split=_split(), seeds=[0], **FAST)
    args.update(change)
    with pytest.raises(ValueError, match=words):
        cost.measure_cost(**args)


def test_ratio_refuses_unknown_arms_and_measures():
    study = cost.measure_cost(_nets(), {"inverted (MLP)": ("mlp", "inverted", {})}, _split(), [0], **FAST)
    with pytest.raises(ValueError, match="label"):
        study.ratio("spatial (CNN)")
    with pytest.raises(ValueError, match="what"):
        study.ratio("inverted (MLP)", "seconds")


# ------------------------------------------------------------------------------------ the table's checks


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_library_matches_the_guides_six_rows(p, seed):
    checks = cost.table_checks(seed=seed, p=p)
    assert list(checks.rows["technique"]) == list(cost.GUIDE_TABLE)
    assert checks.contradictions == 0, checks.rows.to_string()


@pytest.mark.parametrize("technique,swap,column", [
    ("inverted", StandardDropout, "scaling_holds"),  # scales at test: the inverted row's scaling fails
    ("standard", InvertedDropout, "scaling_holds"),
    ("spatial", InvertedDropout, "pattern_holds"),  # element-wise: not whole maps
    ("locked", InvertedDropout, "pattern_holds"),
])
def test_a_wrong_implementation_contradicts_its_row(monkeypatch, technique, swap, column):
    original = cost.make_dropout

    def fake(name, *args, **kwargs):
        if name == technique:
            kwargs.pop("batch_first", None)
            return swap(p=kwargs["p"])
        return original(name, *args, **kwargs)

    monkeypatch.setattr(cost, "make_dropout", fake)
    checks = cost.table_checks(seed=0, p=0.3)
    row = checks.rows.set_index("library").loc[technique]
    assert not row[column] and not row["holds"] and checks.contradictions == 1


@pytest.mark.parametrize("p,words", [(0.0, "p"), (1.0, "p"), ("0.3", "p")])
def test_table_checks_refuse_bad_rates(p, words):
    with pytest.raises(ValueError, match=words):
        cost.table_checks(p=p)


@pytest.mark.parametrize("shape,shared,expected", [((8, 6, 5), (), ()), ((8, 6, 5), (2,), (2,)),
                                                   ((8, 6, 5, 4), (2, 3), (2, 3)), ((8, 6, 5), (1,), (1,))])
def test_shared_axes_finds_the_axes_a_mask_is_constant_over(shape, shared, expected):
    g = torch.Generator().manual_seed(0)
    coin_shape = [1 if d in shared else s for d, s in enumerate(shape)]
    mask = (torch.rand(coin_shape, generator=g) > 0.5).float().expand(shape)
    assert cost.shared_axes(mask) == expected


# -------------------------------------------------------------------------------------- the family table


def _fake_study():
    arms = cost._arms({"inverted (MLP)": ("mlp", "inverted", {}), "spatial (CNN)": ("cnn", "spatial", {})})
    rows = []
    for seed in (0, 1):
        for arm, spu, mem in (("none (MLP)", 1.0, 100), ("none (CNN)", 2.0, 200), ("inverted (MLP)", 1.5, 110),
                              ("spatial (CNN)", 2.2, 300)):
            rows.append(dict(seed=seed, round=0, arm=arm, seconds_per_update=spu, wall_seconds_per_update=spu,
                             updates_per_epoch=10,
                             epoch_seconds=10 * spu, state=mem, saved=mem, memory=mem))
    return cost.CostStudy(rounds=pd.DataFrame(rows), arms=arms)


def test_family_table_relates_every_arm_to_its_own_net_without_dropout():
    errors = pd.DataFrame([dict(arm=a, seed=s, error=e) for a, e in (("none (MLP)", 20.0), ("none (CNN)", 10.0),
                                                                      ("inverted (MLP)", 18.0), ("spatial (CNN)", 12.0))
                           for s in (0, 1)])
    table = cost.family_table(_fake_study(), errors).set_index("variant")
    assert table.loc["inverted", "time per epoch ×"] == pytest.approx(1.5)
    assert table.loc["spatial", "time per epoch ×"] == pytest.approx(1.1)
    assert table.loc["spatial", "step memory ×"] == pytest.approx(1.5)
    assert table.loc["inverted", "Δ accuracy pp"] == pytest.approx(2.0)
    assert table.loc["spatial", "Δ accuracy pp"] == pytest.approx(-2.0)
    assert table.loc["inverted", "guide cost"].startswith("非常に低")
    assert table.loc["spatial", "guide row"] == "spatial"
    from dropoutlab.docs import render_comparison

    markdown = render_comparison(table.reset_index(), "a test", "fig.png")
    assert markdown.count("\n| ") == 1 + len(table) and "![" in markdown


def test_family_table_refuses_missing_runs():
    with pytest.raises(ValueError, match="arm"):
        cost.family_table(_fake_study(), pd.DataFrame(dict(arm=["none (MLP)"], seed=[0], error=[1.0])))
    with pytest.raises(ValueError, match="columns"):
        cost.family_table(_fake_study(), pd.DataFrame(dict(arm=["none (MLP)"])))


def test_docs_comparison_is_generated_from_the_committed_table():
    from dropoutlab.docs import comparison_markdown

    root = Path(__file__).resolve().parents[1]
    committed = (root / "docs" / "comparison.md").read_text()
    assert committed == comparison_markdown(root), "docs/comparison.md is stale: run `make docs`"


class _SleepyNets(cost.CostNets):
    """The gaussian arm waits 50 ms in every training forward: wall time, not work."""

    def build(self, arch, variant="none", **kwargs):
        net = super().build(arch, variant, **kwargs)
        if variant == "gaussian":
            net.register_forward_pre_hook(lambda module, args: __import__("time").sleep(0.05)
                                          if module.training and torch.is_grad_enabled() else None)
        return net


def test_on_one_thread_the_time_is_the_updates_cpu_time_not_the_wait():
    nets = _SleepyNets(SHAPE, 3, widths=(6,), channels=(2,), hidden=4, rnn_hidden=5)
    study = cost.measure_cost(nets, {"gaussian (MLP)": ("mlp", "gaussian", {})}, _split(), [0], batch_size=8, steps=2,
                              warmup=0, rounds=1, threads=1)
    rows = study.rounds.set_index("arm")
    assert study.settings["clock"] == "thread_time"
    assert rows.loc["gaussian (MLP)", "wall_seconds_per_update"] >= 0.05
    assert rows.loc["gaussian (MLP)", "seconds_per_update"] < 0.05  # sleeping costs no CPU


def test_a_time_forecast_runs_the_measurement_in_full_and_logs_it(monkeypatch, tmp_path):
    from dropoutlab.paths import FORECAST_ENV

    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(FORECAST_ENV, f"5:{log}")
    study = cost.measure_cost(_nets(), ARMS, _split(), [0, 1], **FAST)
    assert len(study.rounds) == 2 * 2 * 6  # not capped: the measurement is its own budget
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["loop"], r["seed"], r["planned_updates"]) for r in lines] == [("measure_cost", 0, 7),
                                                                            ("measure_cost", 1, 7)]
