"""Notebook 14's studies (analysis/practical.py): test-time rules, framework conventions, paired training arms."""

import math
from types import SimpleNamespace

import numpy as np
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
    with pytest.raises(ValueError, match="no drops"):
        a.drop("correct", 0.6)


@pytest.mark.parametrize(("kwargs", "words"), [
    (dict(p_values=[0.0, 0.5]), "p_values entries must be a drop probability in \\(0, 1\\)"),
    (dict(p_values=[0.5, 0.5]), "p_values must not repeat"),
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
    study = practical.rates_study(_mlp, data, CONFIG, [0, 1], input_rates=[0.0, 0.2], hidden_rates=[0.0, 0.5],
                                  output_rates=[0.0], guide=[0.2, 0.5, 0.0])
    cells = study.cells.set_index("cell")
    others = cells.drop(index=study.guide_cell)
    assert study.best_other == others["val_error"].idxmin() and study.best_other != study.guide_cell
    assert len(study.errors) == 4 * 2 and cells["guide"].sum() == 1
    assert study.test_error(study.guide_cell).index.tolist() == [0, 1]


@pytest.mark.parametrize(("kwargs", "words"), [(dict(guide=[0.1, 0.5, 0.0]), "must be a cell of the grid"),
                                               (dict(guide=[0.2, 0.5]), "guide must be"),
                                               (dict(input_rates=[0.2], hidden_rates=[0.5]), "at least two cells"),
                                               (dict(output_rates=[1.0]), "output_rates entries"),
                                               (dict(val_split="dev"), "no split")])
def test_rates_study_validates_its_arguments(data, kwargs, words):
    args = {**dict(input_rates=[0.0, 0.2], hidden_rates=[0.5], output_rates=[0.0], guide=[0.2, 0.5, 0.0]), **kwargs}
    with pytest.raises(ValueError, match=words):
        practical.rates_study(_mlp, data, CONFIG, [0], **args)
