"""Notebook 14's studies (analysis/practical.py): test-time rules, framework conventions, paired training arms."""

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from dropoutlab.analysis import practical
from dropoutlab.models import MLP
from dropoutlab.train import TrainConfig
from dropoutlab.variants.bernoulli import InvertedDropout, StandardDropout
from dropoutlab.variants.noise import SELU_ALPHA, SELU_SCALE
from dropoutlab.variants.structured import dropblock_gamma

SHAPE = (1, 4, 4)
Z = float(stats.norm.isf(0.0005))  # two-sided 1e-3


def _split(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.rand(n, *SHAPE, generator=g) * 0.3
    x[:, 0, y.clamp(max=3), :] += 0.7  # the class shows as a bright row: learnable in a few updates
    return SimpleNamespace(x=x, y=y, num_classes=3)


@pytest.fixture(scope="module")
def data():
    return {"train": _split(96, 0), "val": _split(48, 1), "test": _split(60, 2)}


CONFIG = TrainConfig(epochs=2, batch_size=32, lr=0.01, eval_splits=(), device="cpu", progress=False)


def _mlp(**kw):
    return practical.guide_mlp(SHAPE, [12, 12], 3, **kw)


# ----------------------------------------------------------------------------- the shared MLP


@pytest.mark.parametrize("rates", [dict(p_input=0.2), dict(p_hidden=0.5), dict(p_output=0.3),
                                   dict(p_input=0.5, p_hidden=0.7, p_output=0.2)])
def test_every_rate_assignment_starts_from_the_same_weights(rates):
    torch.manual_seed(3)
    plain = [w.clone() for w in _mlp().parameters()]
    torch.manual_seed(3)
    other = list(_mlp(**rates).parameters())
    assert len(plain) == len(other) and all(torch.equal(a, b) for a, b in zip(plain, other, strict=True))


def test_output_dropout_drops_the_logits():
    model = _mlp(p_output=0.5).train()
    torch.manual_seed(0)
    out = model(torch.rand(2000, *SHAPE))
    share = float((out == 0).float().mean())
    assert abs(share - 0.5) < Z * math.sqrt(0.25 / out.numel())


# ----------------------------------------------------------------------------- SG-INFER: test-time rules


def _standard_copy(model: MLP, p: float) -> MLP:
    """A standard-dropout MLP computing the same training function: W_s = W_i/(1 − p) after every dropout."""
    std = MLP(16, [12, 12], 3, dropout="standard", p_input=0.0, p_hidden=p)
    std.load_state_dict(model.state_dict())
    with torch.no_grad():
        layers = list(std)
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Linear) and i > 0 and isinstance(layers[i - 1], StandardDropout):
                layer.weight.div_(1 - p)
    return std


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.7])
def test_unscaled_rule_is_a_standard_net_without_its_test_scaling(p):
    torch.manual_seed(1)
    model = _mlp(p_hidden=p)
    std = _standard_copy(model, p)
    x = torch.rand(50, *SHAPE)
    with practical.test_time_rule(model, "correct", p):
        correct = model(x)
    assert torch.allclose(std.eval()(x), correct, atol=1e-5)  # the standard net's own (1 − p) rule
    with practical.test_time_rule(model, "standard, unscaled", p):
        unscaled = model(x)
    for m in std.modules():
        if isinstance(m, StandardDropout):
            m.set_p(0.0)  # no test scaling
    assert torch.allclose(std(x), unscaled, atol=1e-5)
    assert not torch.allclose(unscaled, correct, atol=1e-3)
    # and in training both nets compute the same function with the same mask
    torch.manual_seed(9)
    a = model.train()(x)
    torch.manual_seed(9)
    for m in std.modules():
        if isinstance(m, StandardDropout):
            m.set_p(p)
    assert torch.allclose(std.train()(x), a, atol=1e-5)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_scaled_twice_rescales_a_bias_free_relu_net_by_the_keep_rate_per_layer(p):
    model = nn.Sequential(nn.Linear(16, 10, bias=False), nn.ReLU(), InvertedDropout(p), nn.Linear(10, 3, bias=False))
    x = torch.rand(20, 16)
    with practical.test_time_rule(model, "correct", p):
        correct = model(x)
    with practical.test_time_rule(model, "inverted, scaled twice", p):
        twice = model(x)
    assert torch.allclose(twice, (1 - p) * correct, atol=1e-6)
    assert model.training, "the rule restores the mode"


def test_dropout_left_on_keeps_batchnorm_in_eval_mode_and_restores_the_modes():
    model = nn.Sequential(nn.Linear(16, 40), nn.BatchNorm1d(40), nn.ReLU(), InvertedDropout(0.3)).eval()
    stats_before = model[1].running_mean.clone()
    with practical.test_time_rule(model, "dropout left on", 0.3):
        assert not model[1].training and model[3].training
        model(torch.rand(50, 16))
    assert torch.equal(model[1].running_mean, stats_before) and not model.training and not model[3].training


def test_dropout_left_on_share_of_dropped_units_is_p():
    model = nn.Sequential(InvertedDropout(0.4))
    x = torch.ones(200, 100)
    with practical.test_time_rule(model, "dropout left on", 0.4):
        torch.manual_seed(0)
        out = model(x)
    share = float((out == 0).float().mean())
    assert abs(share - 0.4) < Z * math.sqrt(0.24 / x.numel())


@pytest.mark.parametrize(("kwargs", "words"), [
    (dict(rule="half"), "rule must be one of"),
    (dict(p=0.3), "must be the rate of every dropout module"),
    (dict(p=1.0), "p must be a drop probability"),
    (dict(p=0.0), "p must be a drop probability"),
])
def test_test_time_rule_refuses_bad_arguments(kwargs, words):
    model = _mlp(p_hidden=0.5)
    with pytest.raises(ValueError, match=words), practical.test_time_rule(model, **{"rule": "correct", "p": 0.5,
                                                                                     **kwargs}):
        pass


def test_test_time_rule_needs_a_dropout_module():
    with pytest.raises(ValueError, match="no InvertedDropout"), practical.test_time_rule(_mlp(), "correct", 0.5):
        pass


def test_inference_study_is_paired_deterministic_and_the_correct_rule_is_plain_evaluation(data):
    a = practical.inference_study(lambda p: _mlp(p_hidden=p), data, CONFIG, [0, 1], [0.2, 0.6], passes=3)
    b = practical.inference_study(lambda p: _mlp(p_hidden=p), data, CONFIG, [0, 1], [0.2, 0.6], passes=3)
    assert a.accuracy.equals(b.accuracy) and a.drops.equals(b.drops)
    assert set(a.drops["rule"]) == set(practical.INFERENCE_RULES[1:])
    assert len(a.accuracy) == 2 * 2 * len(practical.INFERENCE_RULES)
    drop = a.drop("dropout left on", 0.6)
    assert list(drop.index) == [0, 1]
    expected = a.accuracy_of("correct", 0.6) - a.accuracy_of("dropout left on", 0.6)
    assert np.allclose(drop.to_numpy(), expected.to_numpy())
    with pytest.raises(ValueError, match="no .drop. rows"):
        a.drop("correct", 0.6)


@pytest.mark.parametrize(("kwargs", "words"), [
    (dict(p_values=[0.0, 0.5]), "p_values must be a non-empty list of distinct drop probabilities in \\(0, 1\\)"),
    (dict(p_values=[0.5, 0.5]), "p_values must be a non-empty list of distinct"),
    (dict(seeds=[0, 0]), "seeds must be"),
    (dict(passes=0), "passes must be an integer"),
    (dict(test_split="holdout"), "no split"),
])
def test_inference_study_validates_its_arguments(data, kwargs, words):
    args = {**dict(seeds=[0], p_values=[0.5], passes=2), **kwargs}
    with pytest.raises(ValueError, match=words):
        practical.inference_study(lambda p: _mlp(p_hidden=p), data, CONFIG, **args)


# ----------------------------------------------------------------------------- SG-FRAMEWORK


@pytest.fixture(scope="module")
def frameworks():
    return practical.framework_checks(seed=0, n_draws=20)


@pytest.mark.parametrize(("check", "tolerance"), [("spatial_layout", 0), ("dropblock_gamma", 1e-9),
                                                  ("dropblock_channels", 0), ("droppath_scaling", 1e-5),
                                                  ("alpha_constants", 1e-9), ("concrete_regulariser", 1e-5)])
def test_every_framework_check_holds_for_the_package(frameworks, check, tolerance):
    assert abs(frameworks.value(check)) <= tolerance


def test_framework_table_shows_the_clipping_difference_and_the_wrong_layout(frameworks):
    table = frameworks.table
    gammas = table.loc[table["quantity"] == "seed rate γ", "value"].to_numpy()
    assert gammas == pytest.approx([0.075, 0.3 * 100 / (35 * 14)], rel=1e-12)
    shares = table.loc[table["topic"] == "spatial dropout 1-d", "value"].to_numpy()
    assert shares[0] == 0 and shares[1] == 0 and shares[2] > 0.9  # time read as channels: masks vary over time
    timm = table.loc[table["convention"] == "timm scale_by_keep=False", "value"].item()
    assert timm == pytest.approx(1 / 0.7)  # test output x, training mean 0.7·x
    others = table.loc[(table["topic"] == "DropPath test-time scaling") & (table["convention"] != "timm scale_by_keep=False"),
                       "value"]
    assert np.allclose(others, 1.0)


@pytest.mark.parametrize(("h", "w", "bs"), [(14, 14, 3), (7, 20, 7), (28, 5, 5), (9, 9, 1), (5, 20, 7), (3, 28, 9)])
def test_dropblock_conventions_agree_unless_a_side_is_below_the_block(h, w, bs):
    tv, pd_ = practical.torchvision_dropblock_gamma(0.3, bs, h, w), practical.per_dimension_dropblock_gamma(0.3, bs, h, w)
    assert pd_ == pytest.approx(dropblock_gamma(0.3, bs, h, w), rel=1e-12)
    assert (tv == pytest.approx(pd_, rel=1e-12)) == (bs <= min(h, w))


def test_keras_spatial_dropout_shares_the_coin_over_time_and_drops_at_rate_p():
    x = torch.ones(400, 30, 10)
    out = practical.keras_spatial_dropout1d(x, 0.25, generator=torch.Generator().manual_seed(0))
    mask = out != 0
    assert bool((mask.all(1) == mask.any(1)).all())
    share = 1 - float(mask[:, 0, :].float().mean())
    assert abs(share - 0.25) < Z * math.sqrt(0.25 * 0.75 / (400 * 10))
    assert torch.allclose(out[mask], torch.full_like(out[mask], 1 / 0.75))


def test_selu_fixed_point_has_mean_zero_and_variance_one_by_quadrature():
    lam, alpha = practical.selu_fixed_point()
    assert lam == pytest.approx(SELU_SCALE, rel=1e-10) and alpha == pytest.approx(SELU_ALPHA, rel=1e-10)

    def selu(z):
        return lam * (z if z > 0 else alpha * math.expm1(z))

    pdf = stats.norm.pdf
    mean = sum(integrate.quad(lambda z: selu(z) * pdf(z), a, b)[0] for a, b in ((-np.inf, 0), (0, np.inf)))
    second = sum(integrate.quad(lambda z: selu(z) ** 2 * pdf(z), a, b)[0] for a, b in ((-np.inf, 0), (0, np.inf)))
    assert abs(mean) < 1e-9 and second == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("p", [0.05, 0.2])
def test_alpha_dropout_reference_keeps_mean_zero_and_variance_one(p):
    lam, alpha = practical.selu_fixed_point()
    a, b = practical.alpha_dropout_reference(p, lam, alpha)
    g = torch.Generator().manual_seed(0)
    n = 400_000
    x = torch.randn(n, generator=g, dtype=torch.float64)
    keep = (torch.rand(n, generator=g) >= p).double()
    y = a * (x * keep - lam * alpha * (1 - keep)) + b
    assert abs(float(y.mean())) < Z * float(y.std()) / math.sqrt(n)
    # variance of the sample variance ≈ (μ4 − σ⁴)/n
    assert abs(float(y.var()) - 1) < Z * math.sqrt(float(((y - y.mean()) ** 4).mean() - 1) / n)


def test_concrete_reference_with_and_without_bias_differ_by_the_bias_term():
    w, b = torch.randn(8, 16), torch.randn(8)
    kw = dict(weight_regularizer=0.1, dropout_regularizer=0.0, input_dim=16)
    with_bias = practical.concrete_regulariser_reference(w, b, 0.2, include_bias=True, **kw)
    without = practical.concrete_regulariser_reference(w, b, 0.2, include_bias=False, **kw)
    assert with_bias - without == pytest.approx(0.1 * float((b.double() ** 2).sum()) / 0.8, rel=1e-9)


# ----------------------------------------------------------------------------- SG-NOISE


@pytest.mark.parametrize("level", [0.1, 0.3, 0.6])
def test_deletion_removes_a_share_level_of_the_pixels(level):
    x = torch.ones(300, *SHAPE)
    out = practical.perturb(x, "delete", level, torch.Generator().manual_seed(1))
    share = float((out == 0).float().mean())
    assert abs(share - level) < Z * math.sqrt(level * (1 - level) / x.numel())


@pytest.mark.parametrize("level", [0.1, 0.5])
def test_gaussian_noise_has_standard_deviation_level(level):
    x = torch.zeros(2000, *SHAPE)
    noise = practical.perturb(x, "gaussian", level, torch.Generator().manual_seed(2))
    n = noise.numel()
    assert abs(float(noise.std()) - level) < Z * level / math.sqrt(2 * n)
    assert practical.perturb(x, "gaussian", 0.0, torch.Generator()) is x


@pytest.mark.parametrize(("kind", "level", "words"), [("blur", 0.1, "kind must be"), ("delete", 1.0, "level"),
                                                      ("gaussian", -0.1, "level")])
def test_perturb_refuses_bad_arguments(kind, level, words):
    with pytest.raises(ValueError, match=words):
        practical.perturb(torch.zeros(2, 3), kind, level, torch.Generator())


def test_noise_study_shows_every_arm_the_same_perturbed_images(data):
    # two identical arms: same weights, same data order, same perturbed test sets → identical accuracies
    study = practical.noise_study(_mlp, {"a": dict(p_hidden=0.3), "b": dict(p_hidden=0.3)}, data, CONFIG, [0, 1],
                                  noise_levels=[0.2, 0.5], delete_levels=[0.3])
    for kind, level in (("gaussian", 0.5), ("delete", 0.3)):
        assert study.retained("a", kind, level).equals(study.retained("b", kind, level))
    assert np.allclose(study.accuracy.loc[study.accuracy["level"] == 0, "retained"], 100.0)
    assert study.clean("a").equals(study.clean("b"))


@pytest.mark.parametrize(("kwargs", "words"), [(dict(noise_levels=[]), "noise_levels"),
                                               (dict(delete_levels=[1.2]), "delete_levels"),
                                               (dict(arms={"only": {}}), "at least two arms")])
def test_noise_study_validates_its_arguments(data, kwargs, words):
    args = {**dict(arms={"a": {}, "b": dict(p_hidden=0.5)}, noise_levels=[0.1], delete_levels=[0.1]), **kwargs}
    with pytest.raises(ValueError, match=words):
        practical.noise_study(_mlp, data=data, config=CONFIG, seeds=[0], **args)


# ----------------------------------------------------------------------------- SG-PLACE, SG-SCHED, SG-RATES


def test_placement_arms_differ_only_in_the_position_of_batchnorm(data):
    study = practical.placement_study(SHAPE, 3, data, CONFIG, [0], p=0.3, channels=[4], hidden=8)
    assert set(study.errors["arm"]) == set(practical.PLACEMENTS)
    again = practical.placement_study(SHAPE, 3, data, CONFIG, [0], p=0.3, channels=[4], hidden=8)
    assert study.errors.equals(again.errors)
    with pytest.raises(ValueError, match="p must be a drop probability"):
        practical.placement_study(SHAPE, 3, data, CONFIG, [0], p=0.0, channels=[4], hidden=8)


def test_schedule_falls_from_start_to_end_with_the_fixed_arms_mean(data):
    seen: dict[str, list[float]] = {}

    def make(**kw):
        model = _mlp(**kw)
        arm = "scheduled" if kw["p_hidden"] == 0.7 else "fixed"
        for m in model.modules():
            if isinstance(m, InvertedDropout):
                m.register_forward_pre_hook(lambda mod, _x: seen.setdefault(arm, []).append(float(mod.p))
                                            if mod.training else None)
        return model

    study = practical.schedule_study(make, data, CONFIG, [0], p_start=0.7, p_end=0.3)
    rates = np.array(seen["scheduled"][::2])  # two dropout modules per update: one reading each
    assert rates[0] == pytest.approx(0.7) and rates[-1] == pytest.approx(0.3)
    assert np.all(np.diff(rates) < 0)
    assert rates.mean() == pytest.approx(0.5, abs=1e-6)
    assert np.allclose(seen["fixed"], 0.5)
    assert set(study.errors["arm"]) == {"scheduled", "fixed"}
    with pytest.raises(ValueError, match="p_start must be > p_end"):
        practical.schedule_study(make, data, CONFIG, [0], p_start=0.3, p_end=0.7)


def test_rates_study_picks_the_competitor_on_validation_not_on_test(data):
    config = practical.RatesConfig(CONFIG, [0, 1], input_rates=[0.0, 0.2], hidden_rates=[0.0, 0.5], output_rates=[0.0],
                                   guide=[0.2, 0.5, 0.0])
    study = practical.rates_study(_mlp, data, config)
    cells = study.cells.set_index("cell")
    others = cells.drop(index=study.guide_cell)
    assert study.best_other == others["val_error"].idxmin() and study.best_other != study.guide_cell
    assert len(study.errors) == 4 * 2 and cells["guide"].sum() == 1
    assert study.test_error(study.guide_cell).index.tolist() == [0, 1]


@pytest.mark.parametrize(("kwargs", "words"), [
    (dict(guide=[0.1, 0.5, 0.0]), r"RatesConfig\.guide .* must be a cell of the grid"),
    (dict(guide=[0.2, 0.5]), r"RatesConfig\.guide must be"),
    (dict(input_rates=[0.2], hidden_rates=[0.5]), "at least two cells"),
    (dict(output_rates=[1.0]), r"RatesConfig\.output_rates must be a non-empty list of distinct drop probabilities"),
    (dict(seeds=[]), r"RatesConfig\.seeds"),
    (dict(training="sgd"), r"RatesConfig\.training must be a TrainConfig"),
    (dict(val_split="dev"), "no split"),
])
def test_rates_study_validates_its_arguments(data, kwargs, words):
    args = {**dict(training=CONFIG, seeds=[0], input_rates=[0.0, 0.2], hidden_rates=[0.5], output_rates=[0.0],
                   guide=[0.2, 0.5, 0.0]), **kwargs}
    with pytest.raises(ValueError, match=words):
        practical.rates_study(_mlp, data, practical.RatesConfig(**args))


# ----------------------------------------------------------------------------- second batch: SG-SLOW


GUIDE = dict(p_input=0.2, p_hidden=0.5)


@pytest.mark.parametrize(
    ("steps", "losses", "target", "expected"),
    [
        ([0, 10, 20, 30], [2.0, 1.0, 0.5, 0.2], 0.75, (15.0, True)),  # halfway between 10 and 20
        ([0, 10, 20], [2.0, 1.0, 0.5], 1.0, (10.0, True)),  # exactly at an evaluation
        ([0, 10, 20], [2.0, 0.4, 0.9], 0.5, (9.375, True)),  # the first crossing, not the last point below
        ([0, 10, 20], [2.0, 1.5, 1.2], 1.0, (20.0, False)),  # never: censored at the budget
        ([0, 10], [0.3, 0.2], 0.5, (0.0, True)),
    ],
)
def test_updates_to_target_interpolates_the_first_crossing(steps, losses, target, expected):
    assert practical.updates_to_target(steps, losses, target) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("steps", "losses", "target", "words"),
    [
        ([0, 10, 10], [1, 1, 1], 0.5, "steps must increase"),
        ([0, 10], [1.0], 0.5, "equal length"),
        ([0, 10], [1, 1], -1.0, "target"),
    ],
)
def test_updates_to_target_refuses_bad_input(steps, losses, target, words):
    with pytest.raises(ValueError, match=words):
        practical.updates_to_target(steps, losses, target)


def test_convergence_study_is_paired_deterministic_and_reads_its_own_curves(data):
    config = replace(CONFIG, epochs=3)
    a = practical.convergence_study(_mlp, data, config, [0, 1], dropout=GUIDE, target=1.0)
    b = practical.convergence_study(_mlp, data, config, [0, 1], dropout=GUIDE, target=1.0)
    assert a.curves.equals(b.curves) and a.times.equals(b.times)
    start = a.curves[a.curves["epoch"] == 0].pivot(index="seed", columns="arm", values="loss")
    assert np.allclose(start["dropout"], start["none"]), "both arms start from the same net"
    for (arm, seed), curve in a.curves.groupby(["arm", "seed"]):
        assert len(curve) == 4 and curve["step"].tolist() == [0, 3, 6, 9]
        assert a.updates(arm).loc[seed] == pytest.approx(
            practical.updates_to_target(curve["step"], curve["loss"], 1.0)[0]
        )
    assert np.allclose(a.ratio(), a.updates("dropout") / a.updates("none"))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(dropout={}), "dropout must map"),
        (dict(dropout=dict(p_output=0.2)), "dropout must map"),
        (dict(dropout=dict(p_hidden=0.0)), "must drop something"),
        (dict(dropout=dict(p_hidden=1.0)), "dropout\\['p_hidden'\\]"),
        (dict(target=0.0), "target must be"),
        (dict(target=-1.0), "target must be"),
        (dict(target=50.0), "target must be below the initial"),
        (dict(val_split="dev"), "no split"),
        (dict(seeds=[]), "seeds must be"),
    ],
)
def test_convergence_study_validates_its_arguments(data, kwargs, words):
    args = {**dict(seeds=[0], dropout=GUIDE, target=1.0), **kwargs}
    with pytest.raises(ValueError, match=words):
        practical.convergence_study(_mlp, data, CONFIG, **args)


# ----------------------------------------------------------------------------- SG-BATCH


def test_batch_study_trains_every_net_for_the_same_updates_and_forms_the_gains_by_seed(data):
    study = practical.batch_study(_mlp, data, CONFIG, [0, 1], dropout=GUIDE, batch_sizes=[8, 32], updates=7)
    last = study.history.sort_values("epoch").groupby(["batch_size", "arm", "seed"])["step"].last()
    assert set(last) == {7} and len(last) == 2 * 2 * 2
    wide = study.errors.pivot_table(index=["batch_size", "seed"], columns="arm", values="error")
    assert np.allclose(study.gains.set_index(["batch_size", "seed"])["gain"], wide["none"] - wide["dropout"])
    assert study.gain(32).index.tolist() == [0, 1]


def test_batch_study_slope_is_the_gain_per_doubling():
    gains = pd.DataFrame(
        [dict(batch_size=b, seed=s, gain=1.5 * math.log2(b) + s) for b in (16, 64, 256) for s in (0, 1)]
    )
    study = practical.BatchStudy(errors=pd.DataFrame(), gains=gains, updates=1, history=pd.DataFrame())
    assert np.allclose(study.slopes(), [1.5, 1.5]) and study.slopes().index.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(batch_sizes=[16]), "at least two distinct"),
        (dict(batch_sizes=[16, 16]), "at least two distinct"),
        (dict(batch_sizes=[0, 16]), "batch_sizes entries must be an integer"),
        (dict(batch_sizes=[16, 500]), "must not exceed the 96"),
        (dict(updates=0), "updates must be an integer"),
        (dict(updates=2.5), "updates must be an integer"),
        (dict(dropout=dict(p_hidden=0.0)), "must drop something"),
    ],
)
def test_batch_study_validates_its_arguments(data, kwargs, words):
    args = {**dict(dropout=GUIDE, batch_sizes=[8, 16], updates=3), **kwargs}
    with pytest.raises(ValueError, match=words):
        practical.batch_study(_mlp, data, CONFIG, [0], **args)


# ----------------------------------------------------------------------------- SG-DEEP


def test_deep_mlp_rates_share_weights_and_the_residual_net_adds_its_blocks():
    torch.manual_seed(4)
    plain = practical.deep_mlp(SHAPE, 8, 3, 3, p=0.0)
    torch.manual_seed(4)
    heavy = practical.deep_mlp(SHAPE, 8, 3, 3, p=0.5)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), heavy.parameters(), strict=True))
    torch.manual_seed(4)
    res = practical.deep_mlp(SHAPE, 8, 3, 3, p=0.0, architecture="residual").eval()
    x = torch.rand(5, *SHAPE)
    h = torch.relu(res.stem(x.flatten(1)))
    for block in res.blocks:
        h = h + torch.relu(block[0](h))
    assert torch.allclose(res(x), res.head(h), atol=1e-6)
    assert torch.allclose(res.blocks[0][0].weight, plain.blocks[0][0].weight / math.sqrt(3))


def test_dropout_leaves_the_gradient_of_a_residual_net_with_silent_branches_unchanged():
    # zero branch weights and biases: every block adds dropout(ReLU(0)) = 0, so masks cannot touch the gradient
    x, y = torch.rand(32, *SHAPE), torch.arange(32) % 3
    norms = {}
    for p in (0.0, 0.7):
        torch.manual_seed(0)
        model = practical.deep_mlp(SHAPE, 8, 6, 3, p=p, architecture="residual")
        with torch.no_grad():
            for block in model.blocks:
                block[0].weight.zero_()
        norms[p] = practical.first_layer_gradient_norm(model, x, y, passes=4, seed=1)
    assert norms[0.7] == pytest.approx(norms[0.0], rel=1e-6) and norms[0.0] > 0


def test_heavy_dropout_inflates_the_plain_nets_first_layer_gradient_far_more_than_the_residual_nets():
    x, y = torch.rand(128, *SHAPE), torch.arange(128) % 3
    bits = {}
    for arch in practical.ARCHITECTURES:
        norms = []
        for p in (0.0, 0.5):
            torch.manual_seed(0)
            model = practical.deep_mlp(SHAPE, 64, 10, 3, p=p, architecture=arch)
            norms.append(practical.first_layer_gradient_norm(model, x, y, passes=8, seed=0))
        bits[arch] = math.log2(norms[1] / norms[0])
    # (1 − p)^(−depth/2) = 2^5 for the plain stack: well above 2 bits; the residual net stays near 0
    assert bits["plain"] > 2.5 and abs(bits["residual"]) < 1.0


def test_depth_study_tables(data):
    config = practical.DepthConfig(CONFIG, [0, 1], width=8, depths=[2], p_values=[0.3], depth=3, p=0.5, passes=2,
                                   grad_batch=32)
    study = practical.depth_study(SHAPE, 3, data, config)
    g = study.gradients
    assert set(g["depth"]) == {2, 3} and set(g["p"]) == {0.0, 0.3, 0.5} and len(g) == 2 * 2 * 2 * 3
    assert np.allclose(g.loc[g["p"] == 0, "ratio"], 1.0)
    assert len(study.errors) == 2 * 2 * 2
    for arch in practical.ARCHITECTURES:
        wide = study.errors[study.errors["architecture"] == arch].pivot(index="seed", columns="p", values="error")
        assert np.allclose(study.penalty(arch), wide[0.5] - wide[0.0])
        assert study.disruption(arch).index.tolist() == [0, 1] and (study.disruption(arch) >= 0).all()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(width=0), r"DepthConfig\.width must be an integer"),
        (dict(depth=True), r"DepthConfig\.depth must be an integer"),
        (dict(depths=[2, 0]), r"DepthConfig\.depths must be a non-empty list of integers"),
        (dict(p=0.0), r"DepthConfig\.p must be a drop probability in \(0, 1\)"),
        (dict(p_values=[1.0]), r"DepthConfig\.p_values must be a non-empty list"),
        (dict(passes=0), r"DepthConfig\.passes must be an integer"),
        (dict(grad_batch=-1), r"DepthConfig\.grad_batch must be an integer"),
    ],
)
def test_depth_study_validates_its_arguments(data, kwargs, words):
    args = {**dict(width=8, depths=[2], p_values=[0.3], depth=2, p=0.5, passes=1, grad_batch=16), **kwargs}
    with pytest.raises(ValueError, match=words):
        practical.DepthConfig(CONFIG, [0], **args)
    with pytest.raises(ValueError, match="config must be a DepthConfig"):
        practical.depth_study(SHAPE, 3, data, CONFIG)


def test_deep_mlp_refuses_an_unknown_architecture():
    with pytest.raises(ValueError, match="architecture must be one of"):
        practical.deep_mlp(SHAPE, 8, 2, 3, architecture="dense")


# ----------------------------------------------------------------------------- SG-STABLE


@pytest.mark.parametrize(
    ("columns", "fraction", "expected"),
    [
        (torch.ones(3, 20), 0.1, 0.1),  # equal columns: the top 2 of 20 carry 2/20
        (torch.cat([torch.full((3, 1), 5.0), torch.zeros(3, 9)], 1), 0.1, 1.0),  # one column carries everything
        (torch.tensor([[3.0, 1.0, 1.0, 1.0]]), 0.25, 9 / 12),
        (torch.tensor([[3.0, 1.0, 1.0, 1.0]]), 0.3, 10 / 12),  # ⌈0.3·4⌉ = 2 columns
    ],
)
def test_top_share_of_the_outgoing_weight(columns, fraction, expected):
    assert practical.top_share(columns, fraction) == pytest.approx(expected)


def test_gradient_spread_is_the_mean_coefficient_of_variation_after_the_burn_in():
    norms = np.array([[100.0, 7.0]] * 4 + [[1.0, 2.0], [3.0, 2.0], [1.0, 2.0], [3.0, 2.0]])
    cv = np.std([1, 3, 1, 3], ddof=1) / 2
    assert practical.gradient_spread(norms, 0.5) == pytest.approx(cv / 2)  # layer 2 is constant: CV 0
    assert practical.gradient_spread(norms[:2], 0.9) == pytest.approx(0.0)  # at least the last two updates


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: practical.top_share(torch.ones(4), 0.1), "weight must be a 2-D"),
        (lambda: practical.top_share(torch.ones(2, 4), 0.0), "fraction must be a share in \\(0, 1\\)"),
        (lambda: practical.top_share(torch.ones(2, 4), 1.0), "fraction must be"),
        (lambda: practical.gradient_spread(np.ones((1, 3))), "norms must be"),
        (lambda: practical.gradient_spread(np.ones((4, 3)), 1.0), "burn_in"),
        (lambda: practical.gradient_spread(np.zeros((4, 3))), "every layer's gradient norm is 0"),
        (lambda: practical.GradientRecorder(nn.ReLU()), "no Linear layer"),
    ],
)
def test_stability_helpers_refuse_bad_input(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_recorder_sees_the_gradient_of_every_update_and_survives_the_run_store(data, tmp_path, monkeypatch):
    from dropoutlab.paths import RUNS_ENV
    from dropoutlab.train import fit, seed_everything

    config = replace(CONFIG, seed=3)
    seed_everything(3)
    model = _mlp()
    recorder = practical.GradientRecorder(model)
    # the first update by hand: same initial weights, fit's first batch of epoch 0
    seed_everything(3)
    twin = _mlp()
    first = torch.randperm(96, generator=torch.Generator().manual_seed(3 * 100_003))[:32]
    nn.functional.cross_entropy(twin(data["train"].x[first]), data["train"].y[first]).backward()
    expected = [float(m.weight.grad.norm()) for m in twin.modules() if isinstance(m, nn.Linear)]
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    fit(model, data, config, scheduler=recorder)
    assert len(recorder.norms) == 2 * 3 and len(recorder.norms[0]) == 3
    assert recorder.norms[0] == pytest.approx(expected, rel=1e-5)
    assert len(list(tmp_path.rglob("*.pt"))) == 1
    seed_everything(3)
    reloaded_model = _mlp()
    reloaded = practical.GradientRecorder(reloaded_model)
    monkeypatch.setattr(practical.GradientRecorder, "step", lambda self: pytest.fail("trained again"))
    fit(reloaded_model, data, config, scheduler=reloaded)  # found in the store: loaded, not trained
    assert reloaded.norms == recorder.norms


def test_stability_study_is_deterministic_and_paired(data):
    a = practical.stability_study(_mlp, data, CONFIG, [0, 1], dropout=GUIDE)
    b = practical.stability_study(_mlp, data, CONFIG, [0, 1], dropout=GUIDE)
    assert a.summary.equals(b.summary) and a.norms.equals(b.norms)
    assert set(a.summary["arm"]) == {"dropout", "none"} and len(a.summary) == 4
    assert a.norms.groupby(["arm", "seed"]).size().eq(2 * 3 * 3).all()  # 6 updates × 3 Linear layers
    assert a.measure("none", "top_share").index.tolist() == [0, 1]
    assert ((a.summary["top_share"] >= 0.1) & (a.summary["top_share"] <= 1)).all()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(dropout=dict(p_input=0.0)), "must drop something"),
        (dict(top_fraction=0.0), "top_fraction must be a share in"),
        (dict(top_fraction=1.0), "top_fraction"),
        (dict(burn_in=1.0), "burn_in"),
        (dict(every=0), "every must be an integer"),
    ],
)
def test_stability_study_validates_its_arguments(data, kwargs, words):
    with pytest.raises(ValueError, match=words):
        practical.stability_study(_mlp, data, CONFIG, [0], **{**dict(dropout=GUIDE), **kwargs})


# ----------------------------------------------------------------------------- SG-SEARCH: grid against TPE


def _bowl(p_input: float, p_hidden: float) -> float:
    return (p_input - 0.1) ** 2 + (p_hidden - 0.3) ** 2


BOX = {"p_input": (0.0, 0.4), "p_hidden": (0.0, 0.8)}


def test_tpe_search_with_a_fixed_seed_is_deterministic_and_a_short_run_is_a_prefix_of_a_long_one():
    long = practical.tpe_search(_bowl, BOX, 12, seed=3, startup=3, step=0.05)
    assert long == practical.tpe_search(_bowl, BOX, 12, seed=3, startup=3, step=0.05)
    assert practical.tpe_search(_bowl, BOX, 6, seed=3, startup=3, step=0.05) == long[:6]
    assert long != practical.tpe_search(_bowl, BOX, 12, seed=4, startup=3, step=0.05)
    on_lattice = [abs(v / 0.05 - round(v / 0.05)) < 1e-9 for i, h, _ in long for v in (i, h)]
    assert all(on_lattice) and all(0 <= i <= 0.4 and 0 <= h <= 0.8 for i, h, _ in long)


@pytest.mark.parametrize(("kwargs", "words"), [
    (dict(bounds={"p_input": (0.0, 0.4)}), "bounds must map"),
    (dict(bounds={"p_input": (0.4, 0.0), "p_hidden": (0.0, 0.8)}), "bounds['p_input'] must be (low, high)"),
    (dict(n_trials=0), "n_trials"), (dict(startup=0), "startup"), (dict(step=0.0), "step"),
])
def test_tpe_search_refuses_bad_input(kwargs, words):
    call = dict(bounds=BOX, n_trials=4, seed=0, startup=2, step=0.05) | kwargs
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        practical.tpe_search(_bowl, call.pop("bounds"), call.pop("n_trials"), **call)


def test_search_study_covers_the_grid_reuses_only_identical_nets_and_chooses_on_validation(data):
    config = practical.SearchConfig(CONFIG, [0], input_rates=[0.0, 0.2], hidden_rates=[0.0, 0.5], startup=2)
    study = practical.search_study(_mlp, data, config)
    trials = study.trials
    grid = trials[trials["searcher"] == "grid"]
    assert study.budget == 4 and len(trials) == 8 and not grid["reused"].any()
    assert sorted(zip(grid["p_input"], grid["p_hidden"], strict=True)) == [(0, 0), (0, 0.5), (0.2, 0), (0.2, 0.5)]
    # a configuration trained once stands for the same configuration elsewhere in the run: retraining gives the same net
    from dropoutlab.analysis.structured import train_arms

    again = train_arms(_mlp, {"t": dict(p_input=0.2, p_hidden=0.5)}, data, CONFIG, [0], test_split="val")
    row = grid[(grid["p_input"] == 0.2) & (grid["p_hidden"] == 0.5)]
    assert float(again.errors["error"].iloc[0]) == pytest.approx(float(row["val_error"].iloc[0]))
    for searcher in practical.SEARCHERS:
        rows = trials[trials["searcher"] == searcher].sort_values("trial")
        assert (np.diff(rows["best_val"]) <= 0).all() and rows["best_val"].iloc[-1] == rows["val_error"].min()
        for n in (1, 2, 4):
            first = rows[rows["trial"] <= n]
            best = first.loc[first["val_error"].idxmin()]
            assert study.test_error(searcher, n).loc[0] == pytest.approx(best["test_error"])
    with pytest.raises(ValueError, match="no trials"):
        study.chosen("tpe", 5)


@pytest.mark.parametrize(("kwargs", "words"), [
    (dict(input_rates=[0.2]), "at least two rates"), (dict(hidden_rates=[0.5, 1.0]), "hidden_rates must be a non-empty list"),
    (dict(startup=5), "startup must not exceed"), (dict(startup=0), "startup"), (dict(seeds=[]), "seeds"),
])
def test_search_study_validates_its_arguments(data, kwargs, words):
    call = dict(seeds=[0], input_rates=[0.0, 0.2], hidden_rates=[0.0, 0.5], startup=2) | kwargs
    with pytest.raises(ValueError, match=words):
        practical.search_study(_mlp, data, practical.SearchConfig(CONFIG, **call))


# ----------------------------------------------------------------------------- SG-CV: cross-validation


def test_corrected_t_interval_by_hand():
    # d = 1, 2, 3, 4, 6 from k = 5 folds: mean 3.2, s² = 14.8/4 = 3.7, corrected variance (1/5 + 1/4)·3.7 = 1.665,
    # t(0.975, 4) = 2.776445105: half-width 2.776445105·1.290349 = 3.582583
    mean, low, high = practical.corrected_t_interval([1, 2, 3, 4, 6], 1 / 4)
    assert (mean, low, high) == pytest.approx((3.2, 3.2 - 3.582583, 3.2 + 3.582583), abs=1e-5)
    naive = practical.corrected_t_interval([1, 2, 3, 4, 6], 0.0)  # ratio 0: the ordinary t interval
    assert naive[1:] == pytest.approx(tuple(stats.ttest_1samp([1, 2, 3, 4, 6], 0).confidence_interval(0.95)))


def test_paired_error_interval_is_the_t_interval_of_the_per_example_differences():
    a, b = [1, 1, 0, 0, 1, 0, 0, 0, 1, 1], [0, 1, 0, 1, 0, 0, 0, 0, 0, 1]
    diff, low, high = practical.paired_error_interval(a, b)
    ci = stats.ttest_1samp(100 * (np.array(a) - np.array(b)), 0).confidence_interval(0.95)
    assert (diff, low, high) == pytest.approx((20.0, ci.low, ci.high))
    assert [practical.decision(*x) for x in ((0.1, 2), (-2, -0.1), (-1, 1))] == ["dropout", "none", "undecided"]


@pytest.mark.parametrize(("call", "words"), [
    (lambda: practical.corrected_t_interval([1.0], 0.25), "at least two"),
    (lambda: practical.corrected_t_interval([1.0, 2.0], -1), "test_train_ratio"),
    (lambda: practical.corrected_t_interval([1.0, 2.0], 0.25, level=1.0), "level"),
    (lambda: practical.paired_error_interval([1, 0], [1, 0, 1]), "equal length"),
    (lambda: practical.paired_error_interval([1, 2], [1, 0]), "0/1 flags"),
])
def test_cv_intervals_refuse_bad_input(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_cv_study_folds_partition_the_training_set_and_the_held_out_flags_match_evaluate(data):
    study = practical.cv_study(_mlp, data, CONFIG, [0], dropout=dict(p_hidden=0.5), k=3)
    assert len(study.folds) == 3 and study.k == 3
    cv = study.summary.set_index("procedure").loc["cv"]
    expected = practical.corrected_t_interval(study.folds["difference"], 1 / 2)
    assert (cv["estimate"], cv["low"], cv["high"]) == pytest.approx(expected)
    assert cv["decision"] == practical.decision(cv["low"], cv["high"])
    # the held-out estimate is the two nets' validation errors, as train_arms evaluates them
    from dropoutlab.analysis.structured import train_arms

    arms = train_arms(_mlp, {"dropout": dict(p_hidden=0.5), "none": {}}, data, CONFIG, [0], test_split="val")
    errors = arms.errors.set_index("arm")["error"]
    assert study.estimate("held-out").loc[0] == pytest.approx(errors["none"] - errors["dropout"])
    # the folds' held-out parts are 32 images each (96 stratified into 3) and every fold's nets are scored
    assert set(study.history["fold"]) == {-1, 0, 1, 2}
    assert study.disagreements() == int(study.decisions()["cv"].ne(study.decisions()["held-out"]).sum())


@pytest.mark.parametrize(("kwargs", "words"), [
    (dict(k=1), "k must be an integer ≥ 2"), (dict(k=40), "k = 40 folds"), (dict(dropout={}), "dropout"),
    (dict(level=0.0), "level"), (dict(val_split="holdout"), "no split"),
])
def test_cv_study_validates_its_arguments(data, kwargs, words):
    call = dict(dropout=dict(p_hidden=0.5), k=3) | kwargs
    with pytest.raises(ValueError, match=words):
        practical.cv_study(_mlp, data, CONFIG, [0], **call)
