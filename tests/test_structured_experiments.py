"""Experiments of notebook 10 (analysis/structured.py) and its models (DropConnectMLP, ResNetSD)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dropoutlab.analysis.structured import (
    Z_CHECK,
    active_block_count,
    dropblock_check,
    dropblock_drop_fractions,
    example_masks,
    feature_maps,
    keep_ramp_scheduler,
    spatial_correlation,
    train_arms,
)
from dropoutlab.analysis.studies import updates_per_epoch
from dropoutlab.data import Dataset
from dropoutlab.models import ConvNet, DropConnectMLP, ResNetSD
from dropoutlab.schedules import depth_linear_rates
from dropoutlab.train import TrainConfig
from dropoutlab.variants.structured import DropBlock2d, DropConnectLinear, DropPath

# ----------------------------------------------------------------------------- DropBlock drop fraction


def test_drop_fractions_match_the_exact_expectation_and_the_claim_band():
    frame = dropblock_drop_fractions([14], [1, 3, 5, 7], [0.9], n_trials=40, seed=0)
    assert list(frame["block_size"]) == [1, 3, 5, 7]
    assert np.allclose(frame["nominal"], 0.1)
    # Monte Carlo vs the exact formula: within 4 standard errors (seeded, so deterministic)
    assert frame["z"].abs().max() < 4
    # block 1 is i.i.d. dropout: no overlap, expectation exactly nominal
    assert frame.loc[frame["block_size"] == 1, "expected"].item() == pytest.approx(0.1, abs=1e-12)
    # overlaps: the expectation lies below nominal and falls with the block size
    assert (np.diff(frame["expected"]) < 0).all()
    check = dropblock_check(frame, 14, [3, 5, 7], 0.9)
    assert check["value"] == pytest.approx(frame.loc[frame["block_size"] > 1, "rel_error"].abs().max())
    assert check["value"] < 0.15
    assert check["expected"] == pytest.approx(0.0706, abs=5e-4)


def test_drop_fractions_are_reproducible_and_skip_blocks_larger_than_the_map():
    a = dropblock_drop_fractions([5, 7], [3, 6], [0.8], n_trials=3, seed=1)
    b = dropblock_drop_fractions([5, 7], [3, 6], [0.8], n_trials=3, seed=1)
    assert a.equals(b)
    assert sorted(zip(a["feature_size"], a["block_size"])) == [(5, 3), (7, 3), (7, 6)]


@pytest.mark.parametrize("kwargs, message", [
    (dict(feature_sizes=[], block_sizes=[3], keep_probs=[0.9]), "feature_sizes"),
    (dict(feature_sizes=[14], block_sizes=[0], keep_probs=[0.9]), "block_sizes"),
    (dict(feature_sizes=[14], block_sizes=[3], keep_probs=[1.0]), "keep_probs"),
    (dict(feature_sizes=[14], block_sizes=[3], keep_probs=[0.9], n_trials=1), "n_trials"),
    (dict(feature_sizes=[2], block_sizes=[3], keep_probs=[0.9]), "no block size"),
])
def test_drop_fractions_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dropblock_drop_fractions(**kwargs)


def test_dropblock_check_needs_every_cell():
    frame = dropblock_drop_fractions([14], [3], [0.9], n_trials=2)
    with pytest.raises(ValueError, match=r"block sizes \[4\]"):
        dropblock_check(frame, 14, [3, 4], 0.9)
    with pytest.raises(ValueError, match="keep_prob"):
        dropblock_check(frame, 14, [3], 0.0)


def test_a_wrong_gamma_fails_the_band():
    """Some ports drop the square on block_size (γ = p/bs · …): the realised fraction is then far off."""
    from dropoutlab.variants.structured import dropblock_expected_drop_fraction
    wrong = dropblock_expected_drop_fraction(min(1.0, 0.1 * 5), 5, 14, 14)  # p·bs instead of p: γ·bs² → γ·bs
    assert abs(wrong / 0.1 - 1) > 0.15


def test_example_masks_have_their_structure():
    masks = example_masks(0.3, 3, size=10, channels=6, seed=0)
    assert set(masks) == {"element-wise", "spatial", "DropBlock"}
    assert all(m.shape == (6, 10, 10) for m in masks.values())
    spatial = masks["spatial"]
    assert (spatial.amax((1, 2)) == spatial.amin((1, 2))).all()  # one value per channel
    assert (masks["element-wise"].amax((1, 2)) != masks["element-wise"].amin((1, 2))).any()
    dropped = 1 - masks["DropBlock"]
    # every dropped unit lies in a fully dropped 3 × 3 square
    full = (torch.nn.functional.avg_pool2d(dropped[:, None], 3, stride=1) > 0.999).float()  # fully dropped squares
    covered = torch.nn.functional.max_pool2d(torch.nn.functional.pad(full, (2, 2, 2, 2)), 3, stride=1)
    assert torch.equal(covered[:, 0] * dropped, dropped)
    with pytest.raises(ValueError, match="block_size must be ≤ size"):
        example_masks(0.3, 11, size=10)


# ----------------------------------------------------------------------------- correlation


def test_spatial_correlation_of_noise_and_of_upsampled_noise():
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(50, 4, 16, 16, generator=gen)
    corr = spatial_correlation(noise, 2)
    n_pairs = 2 * 50 * 16 * 15
    assert np.abs(corr).max() < 4 / math.sqrt(n_pairs)  # ≈ 0 within 4 standard errors of a correlation
    blocky = noise[..., :8, :8].repeat_interleave(2, -1).repeat_interleave(2, -2)  # 2 × 2 constant patches
    corr = spatial_correlation(blocky, 2)
    # lag 1: half of the pairs lie in the same patch (correlation 1), half in independent ones (0)
    assert corr[0] == pytest.approx(0.5, abs=0.05)
    assert abs(corr[1]) < 0.05


def test_spatial_correlation_validation():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        spatial_correlation(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="max_lag"):
        spatial_correlation(torch.randn(2, 1, 4, 4), 4)
    with pytest.raises(ValueError, match="constant"):
        spatial_correlation(torch.ones(2, 1, 4, 4), 1)


def test_feature_maps_hook_and_mode():
    torch.manual_seed(0)
    net = ConvNet((1, 8, 8), [4, 6], order="conv-act-drop-pool", padding=1, hidden=8, p=0.5)
    net.train()
    maps = feature_maps(net, torch.randn(7, 1, 8, 8), "features.0.1", batch_size=3)
    assert maps.shape == (7, 4, 8, 8)
    assert net.training  # restored
    again = feature_maps(net, torch.randn(7, 1, 8, 8).mul(0).add(1), "features.0.1")
    assert torch.equal(again, feature_maps(net, torch.ones(7, 1, 8, 8), "features.0.1"))  # eval: no dropout
    with pytest.raises(ValueError, match="layer must name"):
        feature_maps(net, torch.randn(2, 1, 8, 8), "nope")


# ----------------------------------------------------------------------------- schedules and arms


def test_keep_ramp_scheduler_ramps_dropblock_only():
    net = ConvNet((1, 8, 8), [4], order="conv-act-drop-pool", padding=1, hidden=8, p=0.1, dropout="dropblock",
                  dropout_kwargs={"block_size": 3})
    sched = keep_ramp_scheduler(net, 0.9, steps=4)
    blocks = [m for m in net.modules() if isinstance(m, DropBlock2d)]
    assert len(blocks) == 1 and list(sched.modules) == ["features.0.2"]
    seen = [blocks[0].rate]
    for _ in range(5):
        sched.step()
        seen.append(blocks[0].rate)
    assert seen == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1])
    with pytest.raises(ValueError, match="keep_prob"):
        keep_ramp_scheduler(net, 1.0, steps=4)
    with pytest.raises(ValueError, match="steps"):
        keep_ramp_scheduler(net, 0.9, steps=0)


def _tiny_data(n=96, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    return {"train": Dataset(x, y, num_classes=classes), "test": Dataset(x[:48], y[:48], num_classes=classes)}


def _conv(**kw):
    return ConvNet((1, 6, 6), [4], order="conv-act-drop-pool", padding=1, hidden=8, num_classes=3, **kw)


def test_train_arms_is_paired_and_reproducible():
    data = _tiny_data()
    config = TrainConfig(epochs=2, batch_size=32, eval_splits=("test",), progress=False)
    arms = {"a": dict(dropout="inverted", p=0.2), "b": dict(dropout="inverted", p=0.2),
            "spatial": dict(dropout="spatial", p=0.2)}
    study = train_arms(_conv, arms, data, config, [0, 1], keep_models=True)
    assert len(study.errors) == 6 and set(study.errors["evaluation"]) == {"default"}
    # identical settings under the same seeds: bit-identical (same initialisation and data order)
    assert study.test_error("a").tolist() == study.test_error("b").tolist()
    assert torch.equal(study.models[("a", 1)].head[-1].weight, study.models[("b", 1)].head[-1].weight)
    again = train_arms(_conv, {"spatial": arms["spatial"]}, data, config, [0, 1])
    assert again.test_error("spatial").tolist() == study.test_error("spatial").tolist()
    assert set(study.history["split"]) == {"train_running", "test"}
    with pytest.raises(ValueError, match="no 'error' rows for {'arm': 'c'"):
        study.test_error("c")


def test_train_arms_with_a_scheduler_and_dropconnect_inferences():
    data = _tiny_data()
    config = TrainConfig(epochs=2, batch_size=32, eval_splits=("test",), progress=False)
    arm = dict(dropout="dropblock", p=0.1, dropout_kwargs={"block_size": 3})
    steps = 2 * updates_per_epoch(96, 32)
    study = train_arms(_conv, {"fixed": arm, "scheduled": arm}, data, config, [0],
                       schedulers={"scheduled": lambda m: keep_ramp_scheduler(m, 0.9, steps)})
    rates = study.history[study.history["split"] == "test"].set_index(["arm", "epoch"])["rate/features.0.2"]
    assert rates[("fixed", 1)] == pytest.approx(0.1) and rates[("scheduled", 1)] == pytest.approx(0.05)
    assert rates[("scheduled", 2)] == pytest.approx(0.1)

    def mlp(p):
        return DropConnectMLP(36, [16, 16], 3, p=p, n_samples=20)

    dc = train_arms(mlp, {"none": dict(p=0.0), "dc": dict(p=0.5)}, data, config, [0, 1],
                    inferences=("gaussian", "scale"))
    assert sorted(set(dc.errors["evaluation"])) == ["gaussian", "scale"]
    assert len(dc.errors) == 8
    assert dc.test_error("none", "gaussian").tolist() == dc.test_error("none", "scale").tolist()


@pytest.mark.parametrize("kwargs, message", [
    (dict(arms={}), "at least one arm"),
    (dict(seeds=[0, 0]), "distinct"),
    (dict(seeds=[]), "non-empty"),
    (dict(schedulers={"x": lambda m: None}), "unknown arms"),
    (dict(inferences=("mean",)), "inferences must be"),
    (dict(test_split="val"), r"no split\(s\) \['val'\]"),
])
def test_train_arms_validation(kwargs, message):
    args = dict(arms={"a": {}}, seeds=[0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        train_arms(_conv, args["arms"], _tiny_data(), TrainConfig(epochs=1, progress=False), args["seeds"],
                   **{k: v for k, v in args.items() if k not in ("arms", "seeds")})


# ----------------------------------------------------------------------------- models


def test_dropconnect_mlp_structure_and_inference():
    torch.manual_seed(0)
    net = DropConnectMLP(20, [12, 12], 4, p=0.5, n_samples=30)
    dcs = [m for m in net.modules() if isinstance(m, DropConnectLinear)]
    assert [(m.in_features, m.out_features) for m in dcs] == [(12, 12), (12, 4)]
    assert dcs[0].activation is torch.relu and dcs[1].activation is None
    torch.manual_seed(0)
    plain = DropConnectMLP(20, [12, 12], 4, p=0.0)
    assert not any(isinstance(m, DropConnectLinear) for m in plain.modules())
    # same initialisation for the same seed: the arms are paired
    assert torch.equal(plain[3].weight, dcs[0].weight) and torch.equal(plain[5].weight, dcs[1].weight)
    x = torch.randn(5, 20)
    net.eval()
    assert torch.equal(net(x), net(x))  # eval_seed: the Monte-Carlo rule is deterministic
    gaussian = net(x)
    net.set_inference("scale")
    assert all(m.inference == "scale" for m in dcs)
    scaled = net(x)
    assert not torch.equal(gaussian, scaled)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        DropConnectMLP(20, [], 4)


def test_resnet_shapes_rates_and_depth():
    for shape, bps in (((1, 28, 28), 3), ((1, 8, 8), 1), ((3, 16, 16), 2)):
        net = ResNetSD(shape, blocks_per_stage=bps, widths=(4, 8, 16), num_classes=7)
        assert net(torch.randn(2, *shape)).shape == (2, 7)
        assert net.config["depth"] == 6 * bps + 2
        L = 3 * bps
        assert net.drop_rates == pytest.approx([0.5 * block / L for block in range(1, L + 1)])
        assert net.drop_rates == depth_linear_rates(0.5, L)
        assert sum(net.survival) == pytest.approx((3 * L - 1) / 4)
        paths = [m for m in net.modules() if isinstance(m, DropPath)]
        assert [float(m.p) for m in paths] == pytest.approx(net.drop_rates)
        assert all(m.mode == "batch" and not m.scale_by_keep for m in paths)


def test_resnet_eval_is_deterministic_and_scales_branches():
    torch.manual_seed(0)
    sd = ResNetSD((1, 8, 8), blocks_per_stage=1, widths=(4, 8, 8), p_last=0.5)
    torch.manual_seed(0)
    base = ResNetSD((1, 8, 8), blocks_per_stage=1, widths=(4, 8, 8), p_last=0.0)
    base.load_state_dict({k: v for k, v in sd.state_dict().items() if not k.endswith("drop_path.p")}, strict=False)
    x = torch.randn(4, 1, 8, 8)
    sd.eval()
    base.eval()
    out = sd(x)
    assert torch.equal(out, sd(x))
    assert not torch.allclose(out, base(x))  # eval scales each branch by its survival probability
    sd.train()
    assert not all(torch.equal(sd(x), sd(x)) for _ in range(5))  # training: coins change the output


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_shape=(28, 28)), "input_shape"),
    (dict(blocks_per_stage=0), "blocks_per_stage"),
    (dict(widths=(4, 8)), "widths"),
    (dict(p_last=1.5), "p_last"),
    (dict(mode="layer"), "mode"),
])
def test_resnet_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNetSD(**kwargs)


# ----------------------------------------------------------------------------- active blocks


def test_active_block_count_matches_the_sum_of_survival_probabilities():
    torch.manual_seed(0)
    net = ResNetSD((1, 8, 8), blocks_per_stage=2, widths=(4, 4, 4), p_last=0.5)
    buffers = {k: v.clone() for k, v in net.state_dict().items()}
    net.eval()
    n_passes = 1500
    active = active_block_count(net, torch.randn(1, 1, 8, 8), n_passes=n_passes, seed=0)
    L = 6
    assert active.expected == pytest.approx((3 * L - 1) / 4)
    assert active.n_draws == n_passes
    rates = np.array(net.drop_rates)
    assert active.se == pytest.approx(math.sqrt((rates * (1 - rates)).sum() / n_passes))
    assert active.tolerance == pytest.approx(Z_CHECK * active.se)
    assert active.deviation < active.tolerance
    # per block: within 4 binomial standard errors of its survival probability
    assert np.all(np.abs(active.frequency - active.survival) < 4 * np.sqrt(rates * (1 - rates) / n_passes) + 1e-12)
    assert not net.training  # mode restored
    assert all(torch.equal(buffers[k], v) for k, v in net.state_dict().items())  # BN statistics restored


def test_active_block_count_detects_a_wrong_rule_and_counts_rows():
    torch.manual_seed(0)
    net = ResNetSD((1, 8, 8), blocks_per_stage=2, widths=(4, 4, 4), p_last=0.5, mode="row")
    timm = depth_linear_rates(0.5, 6, rule="timm")  # linspace(0, 0.5, L): a different rule
    for module, p in zip((m for m in net.modules() if isinstance(m, DropPath)), timm, strict=True):
        module.set_p(p)
    active = active_block_count(net, torch.randn(4, 1, 8, 8), n_passes=500, seed=1)
    assert active.n_draws == 2000  # one coin per sample in mode "row"
    huang = (3 * 6 - 1) / 4
    assert abs(active.mean - huang) > active.tolerance  # the check against Huang's Σ p_l fails
    assert abs(active.mean - active.expected) < active.tolerance  # while the model's own rates agree


def test_active_block_count_validation():
    with pytest.raises(ValueError, match="no DropPath"):
        active_block_count(nn.Sequential(nn.Linear(2, 2)), torch.randn(1, 2))
    net = ResNetSD((1, 8, 8), blocks_per_stage=1, widths=(4, 4, 4))
    with pytest.raises(ValueError, match="n_passes"):
        active_block_count(net, torch.randn(1, 1, 8, 8), n_passes=0)
    with pytest.raises(ValueError, match="batch"):
        active_block_count(net, torch.randn(0, 1, 8, 8))
