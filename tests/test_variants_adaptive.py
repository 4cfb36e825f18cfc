"""Standout, ADL and meta dropout (dropoutlab.variants.adaptive)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, stats
from torch import nn

from dropoutlab.variants import get_variant, make_dropout
from dropoutlab.variants.adaptive import (
    ADL,
    MetaDropout,
    Standout,
    adl,
    adl_maps,
    meta_dropout,
    standout,
    standout_keep_prob,
)


def test_registry_metadata():
    expected = {"standout": (Standout, "wrapper", True), "adl": (ADL, "activation", False),
                "meta": (MetaDropout, "activation", True)}
    for name, (cls, kind, learned) in expected.items():
        info = get_variant(name)
        assert info.cls is cls and info.kind == kind and info.learned is learned and cls.learned is learned
    assert ADL.batch_shared_mask and not Standout.batch_shared_mask and not MetaDropout.batch_shared_mask
    assert isinstance(make_dropout("adl", drop_rate=0.5), ADL)


# --------------------------------------------------------------------------- standout


def _standout_layer() -> nn.Linear:
    layer = nn.Linear(3, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -1.0, 0.2], [1.0, 0.3, -0.4], [-0.6, 0.8, 0.9], [0.1, 0.1, 0.1]]))
        layer.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.5]))
    return layer


def test_standout_eval_is_the_expectation_by_hand():
    """Eval = relu(xWᵀ + b)·σ(α·xWᵀ + β), bias excluded from the gate (default)."""
    layer = _standout_layer()
    m = Standout(layer, alpha=0.5, beta=1.0).eval()
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, -0.5, 2.0]])
    pre = x @ layer.weight.detach().T
    expected = torch.relu(pre + layer.bias.detach()) * torch.sigmoid(0.5 * pre + 1.0)
    torch.testing.assert_close(m(x), expected)
    assert torch.equal(m(x), m(x))
    torch.testing.assert_close(m.keep_prob(x), torch.sigmoid(0.5 * pre + 1.0))
    gated = Standout(layer, alpha=0.5, beta=1.0, gate_bias=True)
    torch.testing.assert_close(gated.keep_prob(x), torch.sigmoid(0.5 * (pre + layer.bias) + 1.0))


def test_standout_training_mask_is_binary_and_not_inverted():
    torch.manual_seed(0)
    m = Standout(_standout_layer(), activation=torch.tanh)
    x = torch.randn(200, 3)
    y = m(x)
    h = torch.tanh(m.layer(x))
    kept = torch.isclose(y, h)
    assert (kept | (y == 0)).all()  # each output is 0 or the un-scaled activation
    assert 0 < kept.float().mean() < 1


def test_standout_train_monte_carlo_mean_equals_eval():
    """n = 40 000 copies of one input: |mean − eval| ≤ 4.5·h·√(π(1−π)/n) + 1e-6 per unit
    (the Bernoulli sd of h·m), 4 units; P(any exceeds) < 3e-5."""
    torch.manual_seed(1)
    n = 40_000
    m = Standout(_standout_layer(), alpha=1.0, beta=0.0)
    x = torch.tensor([[1.0, 0.5, 0.25]])
    with torch.no_grad():
        y = m(x.expand(n, 3))
        ref = m.eval()(x)[0]
        h = torch.relu(m.layer(x))[0]
        pi = m.keep_prob(x)[0]
    tol = 4.5 * h * torch.sqrt(pi * (1 - pi) / n) + 1e-6
    assert ((y.mean(0) - ref).abs() <= tol).all()


def test_standout_rate_is_mean_drop_of_last_call():
    m = Standout(_standout_layer())
    assert math.isnan(m.rate)
    x = torch.randn(6, 3)
    m(x)
    assert m.rate == pytest.approx(float((1 - m.keep_prob(x)).mean().detach()), abs=1e-6)
    with pytest.raises(NotImplementedError, match="standout"):
        m.set_p(0.5)


def test_standout_gradients_reach_weight_not_through_mask():
    torch.manual_seed(2)
    m = Standout(_standout_layer())
    x = torch.randn(5, 3)
    torch.manual_seed(3)
    m(x).sum().backward()
    torch.manual_seed(3)
    # same draw, through the functional: the mask is a constant for autograd
    layer = copy.deepcopy(m.layer)
    layer.zero_grad()
    w = layer.weight
    keep = standout_keep_prob(x, w.detach())
    mask = torch.rand(keep.shape) < keep
    (torch.relu(layer(x)) * mask).sum().backward()
    torch.testing.assert_close(m.layer.weight.grad, w.grad)
    torch.testing.assert_close(m.layer.bias.grad, layer.bias.grad)


def test_standout_functional_and_state_dict_round_trip():
    layer = _standout_layer()
    x = torch.randn(4, 3)
    out = standout(x, layer.weight, layer.bias, training=False, alpha=2.0, beta=-1.0)
    a = Standout(layer, alpha=2.0, beta=-1.0).eval()
    torch.testing.assert_close(out, a(x))
    b = Standout(nn.Linear(3, 4), alpha=2.0, beta=-1.0).eval()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), a(x))
    copy.deepcopy(a)


def test_standout_bad_arguments():
    with pytest.raises(ValueError, match="standout: layer must be an nn.Linear"):
        Standout(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="standout: alpha must be a finite number"):
        Standout(nn.Linear(3, 2), alpha=float("nan"))
    with pytest.raises(ValueError, match="standout: activation must be a module or callable"):
        Standout(nn.Linear(3, 2), activation="relu")
    with pytest.raises(ValueError, match=r"standout: input must have shape \(\*, 3\)"):
        Standout(nn.Linear(3, 2))(torch.randn(2, 2))


# --------------------------------------------------------------------------- ADL


def _hand_map() -> torch.Tensor:
    """Two samples, 2 channels, 2×3; channel means A below, chosen by hand (no zero entries,
    no attention value within 0.01 of its threshold)."""
    a0 = torch.tensor([[1.0, 2.0, 10.0], [8.9, 9.05, 0.5]])  # max 10 → thr 9 at γ = 0.9
    a1 = torch.tensor([[-1.0, 0.5, 0.4], [0.46, 0.44, 0.3]])  # max 0.5 → thr 0.45
    a = torch.stack([a0, a1])  # (2, 2, 3)
    offset = torch.tensor([0.3, -0.7, 1.1, 0.2, -0.4, 0.0]).reshape(2, 3)
    return torch.stack([a + offset, a - offset], dim=1)  # (N=2, C=2, H=2, W=3), channel mean = a


def test_adl_mask_logic_on_hand_made_map():
    x = _hand_map()
    drop, importance = adl_maps(x, 0.9)
    expected = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]],   # A ≥ 9 dropped
                             [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]])  # A ≥ 0.45 dropped
    assert torch.equal(drop[:, 0], expected)
    torch.testing.assert_close(importance, torch.sigmoid(x.mean(1, keepdim=True)))
    torch.testing.assert_close(adl(x, 1.0, 0.9, training=True), x * expected[:, None])
    torch.testing.assert_close(adl(x, 0.0, 0.9, training=True), x * importance)
    assert torch.equal(adl_maps(x, 0.0)[0], torch.zeros_like(drop) + (x.mean(1, keepdim=True) < 0))


def test_adl_drop_mask_selection_frequency():
    """ADL-1: over 10 000 training calls the drop mask is chosen 0.75 ± 0.02 of the time.

    Binomial sd = √(0.75·0.25/10 000) = 0.00433, so ±0.02 is ±4.6 sd. Each call is classified by
    whether the output equals x·drop_mask (the importance map σ(A) is never 0/1, so the two
    outcomes cannot coincide); both samples always take the same branch (one coin per call).
    """
    torch.manual_seed(4)
    m = ADL(drop_rate=0.75, gamma=0.9)
    x = _hand_map()
    drop, _ = adl_maps(x, 0.9)
    dropped = x * drop
    assert (x != 0).all()
    chosen = 0
    n = 10_000
    for _ in range(n):
        is_drop = torch.isclose(m(x), dropped).flatten(1).all(1)
        assert is_drop[0] == is_drop[1]
        chosen += int(is_drop[0])
    assert abs(chosen / n - 0.75) <= 0.02


def test_adl_identity_at_eval_and_p_is_drop_rate():
    m = ADL(drop_rate=0.6, gamma=0.8).eval()
    x = torch.randn(2, 3, 4, 5)
    assert m(x) is x
    assert m.drop_rate == pytest.approx(0.6) and m.rate == pytest.approx(0.6)
    m.set_p(0.25)
    assert "drop_rate=0.25" in repr(m) and "gamma=0.8" in repr(m)
    b = ADL()
    b.load_state_dict(m.state_dict())
    assert b.drop_rate == pytest.approx(0.25)
    assert list(m.parameters()) == []


@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 4, 5), (2, 3, 2, 3, 4)])
def test_adl_ranks(shape):
    torch.manual_seed(5)
    y = ADL(drop_rate=1.0)(torch.rand(shape))
    assert y.shape == shape


def test_adl_bad_arguments():
    with pytest.raises(ValueError, match=r"adl: drop probability p must be in \[0, 1\]"):
        ADL(drop_rate=1.5)
    with pytest.raises(ValueError, match=r"adl: gamma .* must be in \[0, 1\]"):
        ADL(gamma=1.2)
    with pytest.raises(ValueError, match="adl: input .* must have rank 3, 4, 5"):
        ADL()(torch.randn(4, 5))


# --------------------------------------------------------------------------- meta dropout


def test_meta_eval_is_deterministic_gate_and_identity_at_init():
    torch.manual_seed(6)
    m = MetaDropout(5).eval()
    h = torch.randn(4, 5)
    torch.testing.assert_close(m(h), h)  # softplus(log(e − 1)) = 1
    with torch.no_grad():
        m.mu.weight.normal_()
    expected = h * F.softplus(m.mu(h))
    torch.testing.assert_close(m(h), expected)
    assert torch.equal(m(h), m(h))
    torch.testing.assert_close(m.gate(h), F.softplus(m.mu(h)))


@pytest.mark.parametrize("mu", [-1.0, 0.0, 2.0])
def test_meta_training_mean_is_gaussian_softplus_expectation(mu):
    """E[h·softplus(mu + ε)] = h·∫φ(e)softplus(mu + e)de (quadrature); MC with n = 2e5 within
    4.5 se. The expectation exceeds the eval gate softplus(mu) (Jensen), which the eval keeps."""
    n = 200_000
    gen = torch.Generator().manual_seed(7)
    h = torch.full((n,), 2.0, dtype=torch.float64)
    y = meta_dropout(h, torch.full((n,), mu, dtype=torch.float64), training=True, generator=gen)
    exact = 2.0 * integrate.quad(lambda e: stats.norm.pdf(e) * math.log1p(math.exp(mu + e)), -12, 12)[0]
    se = float(y.std()) / math.sqrt(n)
    assert abs(float(y.mean()) - exact) < 4.5 * se
    assert exact > 2.0 * math.log1p(math.exp(mu)) + 0.05
    assert torch.equal(meta_dropout(h[:3], torch.full((3,), mu, dtype=torch.float64), training=False),
                       h[:3] * F.softplus(torch.tensor(mu, dtype=torch.float64)))


def test_meta_gradients_reach_phi():
    torch.manual_seed(8)
    for m, h in ((MetaDropout(4), torch.randn(6, 4)), (MetaDropout(3, spatial=True), torch.randn(2, 3, 4, 4))):
        m(h).pow(2).sum().backward()
        assert m.mu.weight.grad.abs().sum() > 0 and m.mu.bias.grad.abs().sum() > 0
        assert m.regularizer().item() == 0.0


def test_meta_spatial_train_stochastic_and_shapes():
    torch.manual_seed(9)
    m = MetaDropout(3, spatial=True)
    h = torch.randn(2, 3, 4, 5)
    assert m(h).shape == h.shape and not torch.equal(m(h), m(h))
    assert isinstance(m.mu, nn.Conv2d) and m.mu.kernel_size == (1, 1)


def test_meta_rate_state_dict_and_errors():
    m = MetaDropout(4)
    assert math.isnan(m.rate)
    with pytest.raises(NotImplementedError, match="meta"):
        m.set_p(0.1)
    with torch.no_grad():
        m.mu.weight.normal_()
    b = MetaDropout(4)
    b.load_state_dict(m.state_dict())
    h = torch.randn(3, 4)
    torch.testing.assert_close(b.eval()(h), m.eval()(h))
    copy.deepcopy(m)
    with pytest.raises(ValueError, match="meta: features must be a positive int"):
        MetaDropout(0)
    with pytest.raises(ValueError, match=r"meta: input must have shape \(\*, 4\)"):
        m(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"meta: spatial input must have shape \(N, 4, H, W\)"):
        MetaDropout(4, spatial=True)(torch.randn(3, 4))
