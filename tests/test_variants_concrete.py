"""Concrete dropout (dropoutlab.variants.concrete): relaxation (CD-RX), regulariser (CD-REG)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy import integrate, special
from torch import nn

from dropoutlab.variants import get_variant, make_dropout
from dropoutlab.variants.concrete import (
    ConcreteDropout,
    SpatialConcreteDropout,
    concrete_drop_mask,
    concrete_dropout,
    concrete_regularizer,
    concrete_regularizer_weights,
    spatial_concrete_dropout,
)

EPS = 1e-7


def relaxed_drop_mean(p: float, t: float, eps: float = EPS) -> float:
    """E[z̃] = ∫₀¹ σ((log(p+ε) − log(1−p+ε) + log(u+ε) − log(1−u+ε))/t) du, by adaptive quadrature.

    The integrand switches from ≈0 to ≈1 near u = 1 − p, which is passed as a break point.
    """
    a = math.log(p + eps) - math.log(1.0 - p + eps)
    value, _ = integrate.quad(lambda u: special.expit((a + math.log(u + eps) - math.log(1.0 - u + eps)) / t),
                              0.0, 1.0, points=[1.0 - p], limit=200)
    return value


def _linear(weight, bias=None) -> nn.Linear:
    weight = torch.tensor(weight)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))
    return layer


def test_registry_metadata():
    for name, cls in (("concrete", ConcreteDropout), ("spatial_concrete", SpatialConcreteDropout)):
        info = get_variant(name)
        assert info.cls is cls and info.kind == "wrapper" and info.learned and cls.learned
    assert isinstance(make_dropout("concrete", nn.Linear(3, 2), p=0.2), ConcreteDropout)


# --------------------------------------------------------------------------- CD-RX


def test_relaxed_mask_mean_at_t01():
    """CD-RX: at t = 0.1 with n = 1e6, |mean(1 − z̃) − (1 − p)| < 0.01 (the CD-RX criterion).

    The relaxation is biased at t > 0: the exact E[z̃] (quadrature) is 0.10118 for p = 0.1, so
    the bias is 1.2e-3. The MC mean must also match the exact value within 4.5 se, with
    se = sd(z̃)/√n ≤ 0.5/1000 = 5e-4 (sample sd used below, about 3e-4).
    """
    p, t, n = 0.1, 0.1, 1_000_000
    gen = torch.Generator().manual_seed(0)
    z = concrete_drop_mask((n,), p, temperature=t, like=torch.empty(0, dtype=torch.float64), generator=gen)
    exact = relaxed_drop_mean(p, t)
    assert abs(exact - p) < 0.002
    se = float(z.std()) / math.sqrt(n)
    assert abs(float(z.mean()) - exact) < 4.5 * se
    assert abs(float((1.0 - z).mean()) - (1.0 - p)) < 0.01


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_relaxed_mask_concentrates_at_0_and_1_as_t_goes_to_0(p):
    """Fraction of z̃ in (0.01, 0.99) vs its exact value, for t ∈ {1, 0.1, 0.01, 0.001}.

    z̃ ∈ (δ, 1−δ) ⇔ |a + L| < t·logit(1−δ), L = log u − log(1−u) standard logistic and
    a = logit(p) (ε ignored: it moves a by < 1e-6), so the fraction is
    q(t) = σ(t·c − a) − σ(−t·c − a), c = logit(0.99). n = 1e6 draws; tolerance 4.5 binomial
    sd √(q(1−q)/n) + 1e-5 (float32 resolution of u and the ε terms).
    """
    n = 1_000_000
    a, c = math.log(p / (1.0 - p)), math.log(0.99 / 0.01)
    gen = torch.Generator().manual_seed(1)
    fractions = []
    for t in (1.0, 0.1, 0.01, 0.001):
        z = concrete_drop_mask((n,), p, temperature=t, like=torch.empty(0), generator=gen)
        frac = float(((z > 0.01) & (z < 0.99)).double().mean())
        exact = special.expit(t * c - a) - special.expit(-t * c - a)
        assert abs(frac - exact) < 4.5 * math.sqrt(exact * (1.0 - exact) / n) + 1e-5
        fractions.append(frac)
    assert fractions == sorted(fractions, reverse=True)
    assert fractions[-1] < 0.003


def test_concrete_dropout_scales_by_inverse_keep_and_eval_is_identity():
    x = torch.randn(4, 5)
    assert concrete_dropout(x, 0.3, training=False) is x
    torch.manual_seed(2)
    y = concrete_dropout(x, 0.3, training=True)
    torch.manual_seed(2)
    z = concrete_drop_mask(x.shape, 0.3, temperature=0.1, like=x)
    torch.testing.assert_close(y, x * (1.0 - z) / 0.7)


# --------------------------------------------------------------------------- regulariser


def test_regularizer_golden_values():
    """Hand computation: ΣW² = 0.91, Σb² = 1.13, p = 0.1, wr = 1e-2, dr = 1e-1, K = 3.

    R = 0.01·2.04/0.9 + 0.1·3·(0.1 ln 0.1 + 0.9 ln 0.9) = −0.0748582…; without biases
    R = 0.01·0.91/0.9 + (same) = −0.0874137…
    """
    layer = _linear([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]], [0.7, -0.8])
    entropy_term = 0.1 * 3 * (0.1 * math.log(0.1) + 0.9 * math.log(0.9))
    for include_bias, sum_sq, literal in ((True, 2.04, -0.0748582253507678), (False, 0.91, -0.08741378090632336)):
        m = ConcreteDropout(layer, p=0.1, weight_regularizer=1e-2, dropout_regularizer=1e-1,
                            include_bias=include_bias)
        hand = 0.01 * sum_sq / 0.9 + entropy_term
        assert m.regularizer().item() == pytest.approx(hand, rel=1e-5)
        assert m.regularizer().item() == pytest.approx(literal, rel=1e-5)


def test_regularizer_function_golden_float64():
    w = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    logit = torch.tensor(math.log(0.25 / 0.75), dtype=torch.float64)
    got = concrete_regularizer([w], logit, weight_regularizer=0.5, dropout_regularizer=2.0, input_dim=4)
    hand = 0.5 * 5.0 / 0.75 + 2.0 * 4 * (0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert got.item() == pytest.approx(hand, rel=1e-12)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.7, 0.95])
def test_dropout_term_pushes_p_toward_half(p):
    """CD-REG: the gradient of dr·K·(p log p + (1−p) log(1−p)) w.r.t. p_logit is
    dr·K·p(1−p)·log(p/(1−p)): negative below 0.5, positive above (descent moves p toward 0.5)."""
    m = ConcreteDropout(nn.Linear(3, 2), p=p, weight_regularizer=0.0, dropout_regularizer=0.1)
    m.regularizer().backward()
    grad = m.p_logit.grad.item()
    assert grad == pytest.approx(0.1 * 3 * p * (1 - p) * math.log(p / (1 - p)), rel=1e-4)
    assert (grad < 0) == (p < 0.5)
    opt = torch.optim.SGD([m.p_logit], lr=5.0)
    for _ in range(50):
        opt.zero_grad()
        m.regularizer().backward()
        opt.step()
    assert abs(m.rate - 0.5) < abs(p - 0.5)


def test_weight_term_pushes_p_toward_zero():
    """CD-REG: d(wr·S/(1−p))/d p_logit = wr·S·p/(1−p) > 0, so descent lowers p."""
    layer = _linear([[0.5, -1.0, 2.0]], [0.5])
    m = ConcreteDropout(layer, p=0.4, weight_regularizer=0.1, dropout_regularizer=0.0)
    m.regularizer().backward()
    assert m.p_logit.grad.item() == pytest.approx(0.1 * 5.5 * 0.4 / 0.6, rel=1e-5)
    opt = torch.optim.SGD([m.p_logit], lr=1.0)
    for _ in range(20):
        opt.zero_grad()
        m.regularizer().backward()
        opt.step()
    assert m.rate < 0.2


def test_regularizer_weights_helper():
    wr, dr = concrete_regularizer_weights(1e-2, 2.0, 500)
    assert wr == pytest.approx(1e-4 / 1000) and dr == pytest.approx(2.0 / 1000)
    wr_c, dr_c = concrete_regularizer_weights(1e-2, 2.0, 500, classification=True)
    assert wr_c == wr and dr_c == pytest.approx(1.0 / 1000)
    for bad in ({"tau": 0.0}, {"n_train": 0}, {"length_scale": -1.0}, {"n_train": 2.5}):
        args = {"length_scale": 1e-2, "tau": 1.0, "n_train": 10} | bad
        with pytest.raises(ValueError, match="concrete_regularizer_weights"):
            concrete_regularizer_weights(**args)


# --------------------------------------------------------------------------- modules


def test_eval_is_deterministic_layer_output_and_train_is_stochastic():
    torch.manual_seed(3)
    m = ConcreteDropout(nn.Linear(6, 3), p=0.3)
    x = torch.randn(5, 6)
    m.eval()
    torch.testing.assert_close(m(x), m.layer(x))
    assert torch.equal(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))


def test_p_rate_set_p_and_repr():
    m = ConcreteDropout(nn.Linear(3, 2), p=0.1)
    assert m.rate == pytest.approx(0.1, abs=1e-6)
    assert m.p.requires_grad and m.p.dim() == 0
    m.set_p(0.35)
    assert m.rate == pytest.approx(0.35, abs=1e-6)
    assert m.p_logit.item() == pytest.approx(math.log(0.35 / 0.65), abs=1e-6)
    assert "p=0.35" in repr(m) and "input_dim=3" in repr(m)


def test_gradients_reach_p_logit_and_layer_through_forward():
    torch.manual_seed(4)
    m = ConcreteDropout(nn.Linear(4, 2), p=0.2)
    m(torch.randn(8, 4)).pow(2).sum().backward()
    assert m.p_logit.grad is not None and m.p_logit.grad.item() != 0.0
    assert m.layer.weight.grad.abs().sum() > 0


def test_spatial_mask_is_shared_over_space_per_channel():
    torch.manual_seed(5)
    for shape in ((3, 4, 7), (3, 4, 5, 6), (2, 4, 3, 4, 5)):
        m = SpatialConcreteDropout(nn.Identity(), p=0.4, input_dim=4)
        assert m.temperature == pytest.approx(2 / 3)
        x = torch.ones(shape)
        y = m(x)
        flat = y.reshape(shape[0], shape[1], -1)
        torch.testing.assert_close(flat, flat[..., :1].expand_as(flat))
        assert flat[..., 0].unique().numel() > 1


def test_spatial_infers_channels_and_regularizes_all_conv_params():
    conv = nn.Conv2d(3, 5, 3, groups=1)
    m = SpatialConcreteDropout(conv, p=0.2, weight_regularizer=1e-2, dropout_regularizer=1e-3)
    assert m.input_dim == 3
    sum_sq = (conv.weight**2).sum().item() + (conv.bias**2).sum().item()
    hand = 1e-2 * sum_sq / 0.8 + 1e-3 * 3 * (0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    assert m.regularizer().item() == pytest.approx(hand, rel=1e-5)
    torch.manual_seed(6)
    x = torch.randn(2, 3, 6, 6)
    assert m(x).shape == (2, 5, 4, 4)
    m.eval()
    torch.testing.assert_close(m(x), conv(x))
    grouped = SpatialConcreteDropout(nn.Conv2d(4, 4, 1, groups=2), p=0.2)
    assert grouped.input_dim == 4


def test_spatial_functional_matches_manual_mask():
    x = torch.randn(2, 3, 4, 4)
    torch.manual_seed(7)
    y = spatial_concrete_dropout(x, 0.25, training=True)
    torch.manual_seed(7)
    z = concrete_drop_mask((2, 3, 1, 1), 0.25, temperature=2 / 3, like=x)
    torch.testing.assert_close(y, x * (1.0 - z) / 0.75)
    assert spatial_concrete_dropout(x, 0.25, training=False) is x


def test_state_dict_round_trip_and_deepcopy():
    torch.manual_seed(8)
    a = ConcreteDropout(nn.Linear(4, 3), p=0.27)
    loss = a(torch.randn(2, 4)).sum() + a.regularizer()
    loss.backward()
    clone = copy.deepcopy(a)  # no cached p / regulariser tensors
    b = ConcreteDropout(nn.Linear(4, 3), p=0.5)
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {"p_logit", "layer.weight", "layer.bias"}
    assert b.rate == pytest.approx(0.27, abs=1e-6) and clone.rate == pytest.approx(0.27, abs=1e-6)
    x = torch.randn(3, 4)
    torch.testing.assert_close(b.eval()(x), a.eval()(x))
    torch.testing.assert_close(b.regularizer(), a.regularizer())


@pytest.mark.parametrize("kwargs, match", [
    ({"p": 0.0}, r"concrete: drop probability p must be in \(0, 1\)"),
    ({"p": 1.0}, r"\(0, 1\)"),
    ({"p": float("nan")}, r"\(0, 1\)"),
    ({"temperature": 0.0}, "temperature must be a finite number > 0"),
    ({"weight_regularizer": -1.0}, "weight_regularizer"),
    ({"dropout_regularizer": float("inf")}, "dropout_regularizer"),
    ({"input_dim": 0}, "input_dim must be a positive int"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConcreteDropout(nn.Linear(3, 2), **kwargs)


def test_bad_layers_and_inputs():
    with pytest.raises(ValueError, match="concrete: layer must be an nn.Module"):
        ConcreteDropout(lambda x: x)
    with pytest.raises(ValueError, match="concrete: cannot infer the input dimension"):
        ConcreteDropout(nn.Identity())
    with pytest.raises(ValueError, match="spatial_concrete: cannot infer the number of input channels"):
        SpatialConcreteDropout(nn.ReLU())
    with pytest.raises(ValueError, match=r"concrete: input must have shape \(\*, 3\)"):
        ConcreteDropout(nn.Linear(3, 2))(torch.randn(2, 4))
    with pytest.raises(ValueError, match="spatial_concrete: input .* must have rank 3, 4, 5"):
        SpatialConcreteDropout(nn.Conv2d(3, 2, 1))(torch.randn(2, 3))
    with pytest.raises(ValueError, match="spatial_concrete: input must have 3 channels"):
        SpatialConcreteDropout(nn.Conv2d(3, 2, 1))(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"concrete_dropout: drop probability p must be in \(0, 1\)"):
        concrete_dropout(torch.ones(2), 1.0, training=True)
    with pytest.raises(ValueError, match="concrete"):
        ConcreteDropout(nn.Linear(3, 2)).set_p(1.5)
