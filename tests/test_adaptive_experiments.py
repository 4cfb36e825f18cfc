"""Notebook 12's experiments (analysis/adaptive_experiments.py) and the MAML loop (metalearning.py)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dropoutlab import metalearning as ml
from dropoutlab.analysis import adaptive_experiments as ae
from dropoutlab.data import load_dataset
from dropoutlab.train import TrainConfig, seed_everything

Z = 3.29  # two-sided 1e-3


@pytest.fixture(scope="module")
def digits():
    return {"train": load_dataset("digits", "train", n=200), "test": load_dataset("digits", "test", n=100)}


@pytest.fixture(scope="module")
def pools():
    g = torch.Generator().manual_seed(0)
    return {f"c{i}": torch.rand(20, 1, 8, 8, generator=g) for i in range(8)}


CONFIG = TrainConfig(epochs=2, batch_size=50, lr=1e-3, progress=False, device="cpu")


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("call", "name"), [
    (lambda d: ae.MLPConfig(CONFIG, [], widths=[8]), r"MLPConfig\.seeds"),
    (lambda d: ae.MLPConfig(CONFIG, [0, 0], widths=[8]), r"MLPConfig\.seeds"),
    (lambda d: ae.MLPConfig(CONFIG, [0], widths=[0]), r"MLPConfig\.widths"),
    (lambda d: ae.MLPConfig(CONFIG, [0], widths=[8], p=1.0), r"MLPConfig\.p must be"),
    (lambda d: ae.MLPConfig(CONFIG, [0], widths=[8], arms=["dropout", "bogus"]), r"MLPConfig\.arms"),
    (lambda d: ae.MLPConfig(CONFIG, [0], widths=[8], arms=["dropout", "dropout"]), r"MLPConfig\.arms .*distinct"),
    (lambda d: ae.MLPConfig(CONFIG, [0], widths=[8], alpha=math.nan), r"MLPConfig\.alpha"),
    (lambda d: ae.mlp_study({"train": d["train"]}, ae.MLPConfig(CONFIG, [0], widths=[8])), "data"),
    (lambda d: ae.MLPConfig({"epochs": 1}, [0], widths=[8]), r"MLPConfig\.training must be a TrainConfig"),
    (lambda d: ae.mlp_study(d, CONFIG), "config must be a MLPConfig"),
    (lambda d: ae.CurriculumConfig(CONFIG, [0], channels=[4, 4], hidden=[8, 8], keep_fc=0.0), r"\.keep_fc"),
    (lambda d: ae.curriculum_study(d, ae.CurriculumConfig(CONFIG, [0], channels=[4], hidden=[8, 8])), "channels"),
    (lambda d: ae.curriculum_study(d, ae.CurriculumConfig(CONFIG, [0], channels=[4, 4], hidden=[8])), "hidden"),
    (lambda d: ae.CurriculumConfig(CONFIG, [0], channels=[4, 4], hidden=[8, 8], gamma=-1.0), r"\.gamma"),
    (lambda d: ae.ADLConfig(CONFIG, [0], channels=[4], hidden=8, drop_rate=1.5), r"ADLConfig\.drop_rate"),
    (lambda d: ae.ADLConfig(CONFIG, [0], channels=[4], hidden=8, gamma=2.0), r"ADLConfig\.gamma"),
    (lambda d: ae.MetaDropoutConfig([0], second_order=1), r"MetaDropoutConfig\.second_order"),
    (lambda d: ae.MetaDropoutConfig([0], test_episodes=0), r"MetaDropoutConfig\.test_episodes"),
    (lambda d: ae.MetaDropoutConfig([0], inner_lr=0.0), r"MetaDropoutConfig\.inner_lr"),
    (lambda d: ae.adl_selection_frequency(0.75, 0.9, n_draws=1), "n_draws"),
    (lambda d: ae.class_pools(d["train"], [0, 0], "x"), "classes"),
    (lambda d: ae.class_pools(d["train"], [10], "x"), "classes"),
])
def test_bad_arguments_are_refused_naming_them(call, name, digits):
    with pytest.raises(ValueError, match=name):
        call(digits)


@pytest.mark.parametrize(("kwargs", "name"), [
    (dict(way=1), "way"), (dict(way=9), "pools"), (dict(shot=0), "shot"), (dict(query=0), "query"),
    (dict(shot=10, query=11), "pools"),
])
def test_episode_sampler_refuses_bad_settings(pools, kwargs, name):
    settings = dict(way=5, shot=1, query=5) | kwargs
    with pytest.raises(ValueError, match=name):
        ml.EpisodeSampler(pools, **settings)


def test_meta_study_refuses_overlapping_classes_and_bad_settings(pools):
    with pytest.raises(ValueError, match="test_pools"):
        ae.meta_dropout_study(pools, {"c0": pools["c0"], **{f"t{i}": pools["c1"] for i in range(4)}},
                              ae.MetaDropoutConfig([0]))
    model = ml.build_model((1, 8, 8), 5, 4, 0)
    sampler = ml.EpisodeSampler(pools, 5, 1, 5)
    with pytest.raises(ValueError, match="arm"):
        ml.meta_train(model, sampler, arm="dropout", iterations=1, meta_batch=1, inner_steps=1, inner_lr=0.1,
                      meta_lr=1e-3, second_order=False, seed=0)
    with pytest.raises(ValueError, match="inner_lr"):
        ml.meta_train(model, sampler, arm="MAML", iterations=1, meta_batch=1, inner_steps=1, inner_lr=0.0,
                      meta_lr=1e-3, second_order=False, seed=0)


# ----------------------------------------------------------------------------- models and schedules


@pytest.mark.parametrize("mode", ["standout", "none"])
def test_every_mlp_mode_starts_from_the_dropout_arms_weights(mode):
    seed_everything(3)
    ref = [p.detach().clone() for p in ae.AdaptiveMLP(64, [16, 8], 10, mode="dropout").parameters()]
    seed_everything(3)
    other = list(ae.AdaptiveMLP(64, [16, 8], 10, mode=mode).parameters())
    assert len(ref) == len(other) and all(torch.equal(a, b) for a, b in zip(ref, other, strict=True))


def test_standout_mlp_uses_the_expectation_at_test_time():
    seed_everything(0)
    net = ae.AdaptiveMLP(6, [5], 3, mode="standout").train()
    x = torch.rand(2, 6, dtype=torch.float32)
    mean = torch.stack([net(x) for _ in range(4000)]).mean(0)
    net.eval()
    assert torch.allclose(mean, net(x), atol=0.05)


@pytest.mark.parametrize("keeps", [(0.9, 0.75, 0.5), (0.8, 0.5, 0.3)])
@pytest.mark.parametrize("anti", [False, True])
def test_curriculum_schedules_run_between_no_dropout_and_the_target(keeps, anti):
    schedules = ae.curriculum_schedules(*keeps, gamma=1e-3, anti=anti)
    target = {"input": 1 - keeps[0], "conv": 1 - keeps[1], "fc": 1 - keeps[2]}
    for name, schedule in schedules.items():
        p_target = target[next(k for k in target if k in name)]
        start, late = schedule(0), schedule(20_000)
        assert (start, late) == pytest.approx((p_target, 0.0) if anti else (0.0, p_target), abs=1e-8)
        assert schedule.keep(1000) == pytest.approx(1 - schedule(1000))
    net = ae.CurriculumCNN((1, 8, 8), (4, 4), (8, 8), 10)
    names = {n for n, _ in net.named_modules()}
    assert set(schedules) <= names


def test_annealed_arm_falls_linearly_to_zero_and_studies_are_paired_and_reproducible(digits):
    config = TrainConfig(epochs=3, batch_size=50, lr=1e-3, progress=False, device="cpu")
    first = ae.mlp_study(digits, ae.MLPConfig(config, [0, 1], widths=[16], p=0.5))
    running = first.history[(first.history["split"] == "train_running") & (first.history["arm"] == "annealed")]
    rate = next(c for c in running.columns if c.startswith("rate/"))
    # fit logs each epoch's rate before the epoch scheduler steps: p(e) = 0.5·(1 − e/2), e = 0, 1, 2
    assert sorted(set(np.round(running[rate], 6))) == pytest.approx([0.0, 0.25, 0.5])
    again = ae.mlp_study(digits, ae.MLPConfig(config, [1, 0], widths=[16], p=0.5))
    for arm in ae.MLP_ARMS:
        assert first.test_error(arm).equals(again.test_error(arm)), "same seed → bit-identical"
    assert set(first.errors["arm"]) == set(ae.MLP_ARMS) and len(first.errors) == 6


def test_curriculum_and_adl_studies_record_every_arm_and_the_rates(digits):
    config = TrainConfig(epochs=1, batch_size=50, lr=1e-3, progress=False, device="cpu")
    cu = ae.curriculum_study(digits, ae.CurriculumConfig(config, [0], channels=[4, 4], hidden=[8, 8], gamma=0.05))
    rows = cu.history[cu.history["split"] == "test"].set_index("arm")
    steps = int(rows["step"].iloc[0])
    assert rows.loc["fixed", "rate/net.drop_fc1"] == pytest.approx(0.5)
    assert rows.loc["curriculum", "rate/net.drop_fc1"] == pytest.approx(0.5 * (1 - math.exp(-0.05 * steps)))
    assert rows.loc["anti-curriculum", "rate/net.drop_input"] == pytest.approx(0.1 * math.exp(-0.05 * steps))
    adl = ae.adl_study(digits, ae.ADLConfig(config, [0, 1], channels=[4], hidden=8))
    assert adl.accuracy("ADL").index.tolist() == [0, 1]
    assert ((adl.errors["error"] >= 0) & (adl.errors["error"] <= 100)).all()


# ----------------------------------------------------------------------------- ADL coin (statistical)


@pytest.mark.parametrize("rate", [0.25, 0.75])
def test_adl_selects_its_drop_mask_at_drop_rate_and_a_swapped_rate_is_seen(rate):
    result = ae.adl_selection_frequency(rate, 0.9, n_draws=4000, seed=1)
    assert result.tolerance == pytest.approx(Z * math.sqrt(rate * (1 - rate) / 4000), rel=1e-3)
    assert result.deviation <= result.tolerance
    assert abs(result.frequency - (1 - rate)) > result.tolerance, "the check can tell drop_rate from 1 − drop_rate"
    assert result.running["draw"].iloc[-1] == 4000


# ----------------------------------------------------------------------------- meta-learning


def test_episodes_are_balanced_and_pick_classes_uniformly(pools):
    sampler = ml.EpisodeSampler(pools, way=4, shot=2, query=3)
    g = torch.Generator().manual_seed(0)
    counts = np.zeros(len(pools))
    n = 2000
    for _ in range(n):
        xs, ys, xq, yq = sampler.sample(g)
        assert xs.shape == (8, 1, 8, 8) and xq.shape == (12, 1, 8, 8)
        assert torch.equal(torch.bincount(ys), torch.full((4,), 2)) and torch.equal(torch.bincount(yq), torch.full((4,), 3))
        for label in range(4):  # support and query of one label come from one class, with no image shared
            s, q = xs[ys == label], xq[yq == label]
            owner = [k for k, pool in enumerate(sampler.pools) if any(torch.equal(s[0], im) for im in pool)]
            assert len(owner) == 1 and all(any(torch.equal(im, p) for p in sampler.pools[owner[0]]) for im in q)
            assert not any(torch.equal(a, b) for a in s for b in q)
            counts[owner[0]] += 1
    share, expected = counts / n, 4 / len(pools)
    assert np.abs(share - expected).max() <= Z * math.sqrt(expected * (1 - expected) / n)


def test_meta_dropout_noise_comes_from_the_block_input_and_is_off_for_maml():
    net = ml.build_model((1, 8, 8), 5, 4, 0)
    x = torch.rand(6, 1, 8, 8)
    assert net.noise_convs[0].in_channels == 1 and net.noise_convs[0].kernel_size == (3, 3)
    assert torch.equal(net(x, noise=False, sample=True), net(x, noise=False, sample=False))
    assert torch.equal(net(x, sample=False), net(x, sample=False)), "the query pass is deterministic"
    assert not torch.equal(net(x, sample=True), net(x, sample=True)), "the inner loop samples"
    seen = []
    handle = net.noise_convs[1].register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    net(x)
    handle.remove()
    h = F.max_pool2d(F.relu(net.norms[0](net.convs[0](x) * F.softplus(net.noise_convs[0](x)))), 2)
    assert torch.allclose(seen[0], h), "μ of block 2 is computed from block 2's input"


def test_second_order_maml_differs_from_first_order_and_first_order_is_the_query_gradient(pools):
    sampler = ml.EpisodeSampler(pools, 5, 1, 3)
    xs, ys, xq, yq = sampler.sample(torch.Generator().manual_seed(0))
    grads = {}
    for second in (False, True):
        net = ml.build_model((1, 8, 8), 5, 4, 0)
        fast = ml.adapt(net, xs, ys, noise=False, inner_steps=2, inner_lr=0.5, second_order=second)
        loss = F.cross_entropy(torch.func.functional_call(net, fast, (xq,), {"noise": False}), yq)
        grads[second] = torch.autograd.grad(loss, net.convs[0].weight)[0]
        if not second:
            leaf = {k: v.detach().requires_grad_() for k, v in fast.items()}
            q = F.cross_entropy(torch.func.functional_call(net, leaf, (xq,), {"noise": False}), yq)
            assert torch.allclose(grads[False], torch.autograd.grad(q, leaf["convs.0.weight"])[0], atol=1e-6)
    assert not torch.allclose(grads[False], grads[True], atol=1e-6)


def test_meta_training_is_reproducible_capped_in_a_dry_run_and_kept_in_the_run_store(pools, monkeypatch, tmp_path):
    sampler = ml.EpisodeSampler(pools, 5, 1, 3)
    settings = dict(arm="meta dropout", iterations=4, meta_batch=2, inner_steps=1, inner_lr=0.1, meta_lr=1e-3,
                    second_order=True, seed=2, log_every=2)
    runs = []
    for _ in range(2):
        net = ml.build_model((1, 8, 8), 5, 4, 2)
        runs.append((ml.meta_train(net, sampler, **settings), net))
    assert runs[0][0].history.equals(runs[1][0].history)
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1].parameters(), runs[1][1].parameters(), strict=True))
    assert runs[0][0].history["iteration"].tolist() == [2, 4]
    monkeypatch.setenv("DROPOUTLAB_RUNS", str(tmp_path))
    stored = ml.build_model((1, 8, 8), 5, 4, 2)
    ml.meta_train(stored, sampler, **settings)
    assert len(list(tmp_path.glob("meta-*.pt"))) == 1
    loaded = ml.build_model((1, 8, 8), 5, 4, 2)
    run = ml.meta_train(loaded, sampler, **settings)
    assert run.history.equals(runs[0][0].history)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), runs[0][1].parameters(), strict=True))
    monkeypatch.delenv("DROPOUTLAB_RUNS")
    monkeypatch.setenv("DROPOUTLAB_DRY_RUN", "1:512")
    capped = ml.meta_train(ml.build_model((1, 8, 8), 5, 4, 2), sampler, **settings)
    assert capped.history["iteration"].tolist() == [1]


def test_meta_study_pairs_the_arms_and_reports_per_run_accuracy(pools):
    train = {k: pools[k] for k in list(pools)[:5]}
    test = {f"t{i}": pools[k] for i, k in enumerate(list(pools)[3:])}
    config = ae.MetaDropoutConfig([0, 1], way=5, shot=1, query=3, channels=4, iterations=2, meta_batch=1,
                                  inner_steps=1, test_episodes=5, log_every=1)
    study = ae.meta_dropout_study(train, test, config)
    assert sorted(study.accuracy["arm"].unique()) == sorted(ml.ARMS) and len(study.accuracy) == 4
    assert study.per_seed("MAML").index.tolist() == [0, 1]
    per_run = study.episodes.groupby(["arm", "seed"])["accuracy"].mean()
    assert np.allclose(per_run.loc["MAML"].to_numpy(), study.per_seed("MAML").to_numpy())
    model = ml.build_model((1, 8, 8), 5, 4, 0)
    sampler = ml.EpisodeSampler(test, 5, 1, 3)
    a = ml.meta_test(model, sampler, arm="MAML", episodes=5, inner_steps=1, inner_lr=0.1, seed=7)
    b = ml.meta_test(model, sampler, arm="MAML", episodes=5, inner_steps=1, inner_lr=0.1, seed=7)
    assert np.array_equal(a, b), "the same test episodes for every arm of a seed"
