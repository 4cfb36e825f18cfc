"""Structured variants: DropBlock, DropPath (stochastic depth), DropConnect.

Statistical tolerances (derived, not guessed). A Monte-Carlo mean of N i.i.d. draws with
per-draw variance σ² has standard error σ/√N; we allow z·σ/√N, z the two-sided normal quantile
for a family-wise false-alarm rate α = 1e-4 Bonferroni-split over the k comparisons of a test
(or of a parametrised grid: k = grid size). σ² comes from the mask distribution in closed form
(0/1 drop indicator: p(1−p); inverted output x·m/(1−p): x²·p/(1−p)).

DropBlock's dropped count D in one map is not binomial (blocks overlap), so its variance is
bounded instead: D is a function of S = (H−kh+1)(W−kw+1) independent Bernoulli(γ) seeds, and
resampling one seed changes D by at most kh·kw units only when the seed changes (probability
2γ(1−γ)). The Efron–Stein inequality then gives Var(D) ≤ S·γ(1−γ)·(kh·kw)², so the drop
fraction averaged over M independent maps has variance ≤ S·γ(1−γ)·(kh·kw)² / (M·(H·W)²).
Seeds are fixed, so every test is deterministic.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dropoutlab.variants import get_variant, make_dropout
from dropoutlab.variants.structured import (
    DropBlock2d,
    DropBlock3d,
    DropConnectLinear,
    DropPath,
    depth_linear_rates,
    drop_block2d,
    drop_block3d,
    drop_path,
    dropblock_expected_drop_fraction,
    dropblock_gamma,
    dropconnect_gaussian_moments,
    dropconnect_inference,
    dropconnect_linear,
)


def z_crit(k: int = 1, alpha: float = 1e-4) -> float:
    """Two-sided normal quantile with a Bonferroni split of ``alpha`` over ``k`` comparisons."""
    return NormalDist().inv_cdf(1.0 - alpha / (2 * k))


# =========================================================================== DropBlock

BLOCKS = [1, 2, 3, 4, 7, 20]  # 20 > H: clipped to the map
MAPS = [(14, 14), (14, 10)]  # feature 14 (DropBlock's res4 size) and H ≠ W
RATES = [0.1, 0.2]
GRID = len(BLOCKS) * len(MAPS) * len(RATES) * 2  # × couple_channels


def test_dropblock_gamma_formula_db_g():
    """DB-G (Ghiasi et al. 2018, Eq. 1): γ = (1 − keep)/bs² · feat²/(feat − bs + 1)² (square map and block)."""
    keep, bs, feat = 0.9, 7, 14
    assert dropblock_gamma(1 - keep, bs, feat, feat) == pytest.approx((1 - keep) / bs**2 * feat**2 / (feat - bs + 1) ** 2)
    # H ≠ W, per-dimension form
    assert dropblock_gamma(0.1, 3, 14, 10) == pytest.approx(0.1 * 140 / (9 * 12 * 8))
    # block larger than the map: clipped per dimension to 14×10, a single seed position: γ = p
    assert dropblock_gamma(0.3, 20, 14, 10) == pytest.approx(0.3)
    assert dropblock_gamma(0.3, 1, 14, 10) == pytest.approx(0.3)
    # no overlap correction: expected seeded units · block area = p·H·W
    g = dropblock_gamma(0.2, 4, 14, 10)
    assert g * (14 - 3) * (10 - 3) * 16 == pytest.approx(0.2 * 140)


def test_dropblock_expected_drop_fraction_is_p_without_overlaps_and_below_p_with():
    for h, w in MAPS:
        assert dropblock_expected_drop_fraction(0.2, 1, h, w) == pytest.approx(0.2)
        assert dropblock_expected_drop_fraction(0.2, 20, h, w) == pytest.approx(0.2)
        for bs in (2, 3, 4, 7):
            assert dropblock_expected_drop_fraction(0.2, bs, h, w) < 0.2


@pytest.mark.parametrize("couple", [False, True])
@pytest.mark.parametrize("p", RATES)
@pytest.mark.parametrize("hw", MAPS)
@pytest.mark.parametrize("bs", BLOCKS)
def test_dropblock_empirical_drop_rate(bs, hw, p, couple):
    """Drop fraction vs its exact expectation (Efron–Stein tolerance), which is within 15% of p
    (torchvision's relative criterion, DB-G: γ's missing overlap correction costs < 15%)."""
    h, w = hw
    torch.manual_seed(100 + bs)
    n, c = 64, 8
    trials = 4 if not couple else 32  # >= 2048 independent masks either way
    x = torch.ones(n, c, h, w)
    dropped = sum((drop_block2d(x, p, bs, training=True, couple_channels=couple) == 0).double().sum().item()
                  for _ in range(trials))
    rate = dropped / (trials * x.numel())
    maps = trials * n * (1 if couple else c)  # independent masks
    kh, kw = min(bs, h), min(bs, w)
    s = (h - kh + 1) * (w - kw + 1)
    g = dropblock_gamma(p, bs, h, w)
    sd = math.sqrt(s * g * (1 - g) * (kh * kw) ** 2 / (maps * (h * w) ** 2))
    expected = dropblock_expected_drop_fraction(p, bs, h, w)
    assert abs(rate - expected) <= z_crit(GRID) * sd
    assert abs(expected - p) <= 0.15 * p


@pytest.mark.parametrize("bs", [2, 3, 4, 7])
@pytest.mark.parametrize("hw", MAPS)
def test_dropblock_blocks_are_contiguous_and_inside_the_map(bs, hw):
    """The dropped set equals the union of the kh×kw windows it fully contains (an opening)."""
    h, w = hw
    torch.manual_seed(200 + bs)
    out = drop_block2d(torch.ones(16, 4, h, w), 0.2, bs, training=True)
    dropped = (out == 0).float()
    assert dropped.sum() > 0
    kh, kw = min(bs, h), min(bs, w)
    full = (F.avg_pool2d(dropped, (kh, kw), stride=1) > 1 - 1e-6).float()
    opened = F.max_pool2d(F.pad(full, (kw - 1, kw - 1, kh - 1, kh - 1)), (kh, kw), stride=1)
    assert torch.equal(opened, dropped)


def test_dropblock_even_block_gives_exact_square_from_one_seed():
    torch.manual_seed(201)
    # γ tiny: find a map with exactly one block of 4×4
    out = drop_block2d(torch.ones(512, 1, 14, 10), 0.02, 4, training=True)
    counts = (out == 0).flatten(1).sum(1)
    assert (counts == 16).any()
    one = (out[counts == 16][0, 0] == 0).nonzero()
    assert one[:, 0].max() - one[:, 0].min() == 3 and one[:, 1].max() - one[:, 1].min() == 3


@pytest.mark.parametrize("hw", MAPS)
def test_dropblock_block_larger_than_map_drops_whole_channels(hw):
    torch.manual_seed(202)
    out = drop_block2d(torch.ones(32, 8, *hw), 0.5, 20, training=True)
    per_channel = (out == 0).flatten(2)
    assert torch.all(per_channel.all(-1) | ~per_channel.any(-1))


def test_dropblock_per_channel_vs_coupled():
    torch.manual_seed(203)
    x = torch.ones(8, 6, 14, 14)
    zero_c = drop_block2d(x, 0.2, 3, training=True, couple_channels=True) == 0
    assert torch.equal(zero_c, zero_c[:, :1].expand_as(zero_c))
    zero_p = drop_block2d(x, 0.2, 3, training=True) == 0
    assert not torch.equal(zero_p, zero_p[:, :1].expand_as(zero_p))
    assert not torch.equal(zero_p, zero_p[:1].expand_as(zero_p))  # nor shared across samples


@pytest.mark.parametrize("couple", [False, True])
def test_dropblock_whole_batch_renormalisation(couple):
    torch.manual_seed(204)
    x = torch.ones(4, 3, 14, 10)
    out = drop_block2d(x, 0.3, 5, training=True, couple_channels=couple, eps=1e-6)
    kept = (out != 0).sum().item()
    assert out.mean().item() == pytest.approx(kept / (kept + 1e-6), rel=1e-6)  # = mean(x) up to eps
    assert torch.allclose(out[out != 0], torch.full((kept,), x.numel() / (kept + 1e-6)))


def test_dropblock_eval_p0_fresh_grad_inplace_and_set_p():
    torch.manual_seed(205)
    m = DropBlock2d(0.2, 3)
    x = torch.randn(2, 3, 14, 10, requires_grad=True)
    m.eval()
    assert m(x) is x
    m.train()
    m.set_p(0.0)
    assert m(x) is x
    m.set_p(0.3)
    assert m.rate == pytest.approx(0.3)
    torch.manual_seed(206)
    y = m(x)
    assert not torch.equal(y, m(x))
    y.sum().backward()
    ratio = y.detach() / x.detach()
    assert torch.allclose(x.grad, ratio)  # gradient = keep·scale
    torch.manual_seed(206)
    xi = x.detach().clone()
    yi = DropBlock2d(0.3, 3, inplace=True)(xi)
    assert yi.data_ptr() == xi.data_ptr() and torch.allclose(yi, y.detach())
    with pytest.raises(ValueError, match=r"dropblock.*\[0, 1\]"):
        m.set_p(1.5)


@pytest.mark.parametrize("shape", [(2, 3, 14), (2, 3, 4, 5, 6), (14, 14)])
def test_dropblock_rejects_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"dropblock: input \(N, C, H, W\) must have rank 4"):
        DropBlock2d(0.1, 3)(torch.randn(shape))


@pytest.mark.parametrize("bs", [0, -2, 2.5, True])
def test_dropblock_rejects_bad_block_size(bs):
    with pytest.raises(ValueError, match="dropblock: block_size must be an integer >= 1"):
        DropBlock2d(0.1, bs)
    with pytest.raises(ValueError, match="block_size"):
        drop_block2d(torch.ones(1, 1, 4, 4), 0.1, bs, training=True)


@pytest.mark.parametrize("p", [-0.01, 1.01, float("nan")])
def test_dropblock_rejects_bad_p(p):
    with pytest.raises(ValueError, match=r"dropblock.*\[0, 1\]"):
        DropBlock2d(p, 3)


def test_dropblock_state_dict_repr_registry():
    m = DropBlock2d(0.15, 5, couple_channels=True)
    other = DropBlock2d(0.5, 5)
    other.load_state_dict(m.state_dict())
    assert other.rate == pytest.approx(0.15) and set(m.state_dict()) == {"p"}
    assert "block_size=5" in repr(m) and "couple_channels=True" in repr(m)
    assert isinstance(make_dropout("dropblock", p=0.1, block_size=3), DropBlock2d)
    assert get_variant("dropblock").kind == "activation" and not DropBlock2d.batch_shared_mask


def test_dropblock_gamma_rectangular_map_per_dimension_clip_vs_torchvision_square_clip():
    """A side smaller than the block: dropblock (and timm >= 1.0.23) clip per dimension, torchvision
    (0.28, drop_block2d) clips to one square block of edge min(bs, H, W). 5×20 map, block 7, p = 0.3:
    ours 5×7 blocks, γ = 0.3·100/(35·1·14) = 0.0612; torchvision 5×5 blocks, γ = 0.3·100/(25·1·16) = 0.0750."""
    p, bs, h, w = 0.3, 7, 5, 20

    def timm_gamma(p, bs, h, w):  # timm.layers.drop.drop_block_2d (>= 1.0.23), restated
        kh, kw = min(bs, h), min(bs, w)
        return p * h * w / (kh * kw) / ((h - kh + 1) * (w - kw + 1))

    def torchvision_gamma(p, bs, h, w):  # torchvision.ops.drop_block2d (0.28), restated
        k = min(bs, w, h)
        return p * h * w / (k**2 * ((h - k + 1) * (w - k + 1)))

    ours = dropblock_gamma(p, bs, h, w)
    assert ours == pytest.approx(timm_gamma(p, bs, h, w))
    assert round(ours, 4) == 0.0612 and round(torchvision_gamma(p, bs, h, w), 4) == 0.0750
    # no side below the block: the two rules agree
    assert dropblock_gamma(p, bs, 14, 20) == pytest.approx(torchvision_gamma(p, bs, 14, 20))


def test_dropblock_gamma_3d():
    """3-d γ: p/bs³ · D·H·W/((D−bs+1)(H−bs+1)(W−bs+1)) (torchvision's drop_block3d), clipped per dimension."""
    assert dropblock_gamma(0.1, 3, 8, 9, 10) == pytest.approx(0.1 / 27 * 720 / (6 * 7 * 8))
    # depth 4 < block 5: kd = 4, kh = kw = 5
    assert dropblock_gamma(0.2, 5, 4, 9, 12) == pytest.approx(0.2 * 432 / (4 * 25 * 1 * 5 * 8))
    assert dropblock_gamma(0.2, 12, 4, 9, 12) == pytest.approx(0.2)  # one box covering the map
    g = dropblock_gamma(0.2, 3, 8, 9, 10)
    assert g * 6 * 7 * 8 * 27 == pytest.approx(0.2 * 720)  # seeded volume = p·D·H·W
    assert dropblock_expected_drop_fraction(0.2, 1, 4, 9, 12) == pytest.approx(0.2)
    assert dropblock_expected_drop_fraction(0.2, 12, 4, 9, 12) == pytest.approx(0.2)
    assert dropblock_expected_drop_fraction(0.2, 3, 4, 9, 12) < 0.2
    with pytest.raises(ValueError, match="dropblock: feature map must be non-empty, got 4×0×5"):
        dropblock_gamma(0.2, 3, 4, 0, 5)


# --------------------------------------------------------------------------- DropBlock 3-d

BLOCKS_3D = [1, 2, 3, 5, 12]  # 5 > D = 4: clipped in depth only; 12: the whole map
MAPS_3D = [(8, 8, 8), (4, 9, 12)]
GRID_3D = len(BLOCKS_3D) * len(MAPS_3D) * len(RATES) * 2  # × couple_channels


@pytest.mark.parametrize("shape", [(2, 3, 8, 8, 8), (1, 1, 4, 9, 12), (3, 2, 1, 5, 6), (2, 4, 7, 3, 3)])
@pytest.mark.parametrize("bs", [1, 2, 3, 5, 12])
def test_dropblock3d_shape_grid(shape, bs):
    torch.manual_seed(250 + bs)
    x = torch.randn(shape, dtype=torch.float64)
    y = drop_block3d(x, 0.3, bs, training=True)
    assert y.shape == x.shape and y.dtype == x.dtype
    kept = y != 0
    scale = x.numel() / (kept.sum().item() + 1e-6)  # whole-batch renormalisation
    assert torch.allclose(y[kept], x[kept] * scale)
    assert DropBlock3d(0.3, bs).eval()(x) is x


@pytest.mark.parametrize("couple", [False, True])
@pytest.mark.parametrize("p", RATES)
@pytest.mark.parametrize("sizes", MAPS_3D)
@pytest.mark.parametrize("bs", BLOCKS_3D)
def test_dropblock3d_empirical_drop_rate(bs, sizes, p, couple):
    """As the 2-d test: Efron–Stein bound Var(D) ≤ S·γ(1−γ)·(kd·kh·kw)² per map, S seed positions;
    the exact expectation is within 15% of p for these maps and rates."""
    torch.manual_seed(260 + bs)
    n, c = 32, 4
    trials = 8 if not couple else 32  # >= 1024 independent masks either way
    x = torch.ones(n, c, *sizes)
    dropped = sum((drop_block3d(x, p, bs, training=True, couple_channels=couple) == 0).double().sum().item()
                  for _ in range(trials))
    rate = dropped / (trials * x.numel())
    maps = trials * n * (1 if couple else c)
    ks = [min(bs, s) for s in sizes]
    seeds = math.prod(s - k + 1 for s, k in zip(sizes, ks))
    g = dropblock_gamma(p, bs, *sizes)
    sd = math.sqrt(seeds * g * (1 - g) * math.prod(ks) ** 2 / (maps * math.prod(sizes) ** 2))
    expected = dropblock_expected_drop_fraction(p, bs, *sizes)
    assert abs(rate - expected) <= z_crit(GRID_3D) * sd
    assert abs(expected - p) <= 0.15 * p


@pytest.mark.parametrize("bs", [2, 3, 5])
@pytest.mark.parametrize("sizes", MAPS_3D)
def test_dropblock3d_blocks_are_boxes_inside_the_map(bs, sizes):
    """The dropped set equals the union of the kd×kh×kw boxes it fully contains (an opening)."""
    torch.manual_seed(270 + bs)
    out = drop_block3d(torch.ones(8, 2, *sizes), 0.2, bs, training=True)
    dropped = (out == 0).float()
    assert dropped.sum() > 0
    ks = tuple(min(bs, s) for s in sizes)
    full = (F.avg_pool3d(dropped, ks, stride=1) > 1 - 1e-6).float()
    pad = [q for k in reversed(ks) for q in (k - 1, k - 1)]
    opened = F.max_pool3d(F.pad(full, pad), ks, stride=1)
    assert torch.equal(opened, dropped)


def test_dropblock3d_one_seed_drops_an_exact_cube():
    torch.manual_seed(271)
    out = drop_block3d(torch.ones(512, 1, 8, 9, 10), 0.01, 2, training=True)
    counts = (out == 0).flatten(1).sum(1)
    assert (counts == 8).any()
    one = (out[counts == 8][0, 0] == 0).nonzero()
    assert torch.equal(one.max(0).values - one.min(0).values, torch.tensor([1, 1, 1]))


def test_dropblock3d_coupled_channels_whole_map_and_renormalisation():
    torch.manual_seed(272)
    x = torch.ones(6, 5, 4, 6, 6)
    zero = drop_block3d(x, 0.2, 3, training=True, couple_channels=True) == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))
    whole = drop_block3d(torch.ones(32, 8, 4, 6, 6), 0.5, 12, training=True) == 0
    assert torch.all(whole.flatten(2).all(-1) | ~whole.flatten(2).any(-1))
    out = drop_block3d(x, 0.3, 2, training=True, eps=1e-6)
    kept = (out != 0).sum().item()
    assert out.mean().item() == pytest.approx(kept / (kept + 1e-6), rel=1e-6)


def test_dropblock3d_eval_p0_grad_inplace_generator():
    x = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    m = DropBlock3d(0.2, 3)
    assert m.eval()(x) is x
    m.train().set_p(0.0)
    assert m(x) is x
    m.set_p(0.3)
    y = drop_block3d(x, 0.3, 3, training=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(y, drop_block3d(x, 0.3, 3, training=True, generator=torch.Generator().manual_seed(7)))
    y.sum().backward()
    assert torch.allclose(x.grad, y.detach() / x.detach())
    xi = x.detach().clone()
    yi = drop_block3d(xi, 0.3, 3, training=True, inplace=True, generator=torch.Generator().manual_seed(7))
    assert yi.data_ptr() == xi.data_ptr() and torch.allclose(yi, y.detach())


@pytest.mark.parametrize("shape", [(2, 3, 14, 14), (2, 3, 4, 5, 6, 7), (5, 6, 7)])
def test_dropblock3d_rejects_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"dropblock3d: input \(N, C, D, H, W\) must have rank 5"):
        DropBlock3d(0.1, 3)(torch.randn(shape))
    with pytest.raises(ValueError, match="rank 5"):
        drop_block3d(torch.randn(shape), 0.1, 3, training=False)  # checked even at eval


@pytest.mark.parametrize("bs", [0, -2, 2.5, True])
def test_dropblock3d_rejects_bad_block_size_and_p(bs):
    with pytest.raises(ValueError, match="dropblock3d: block_size must be an integer >= 1"):
        DropBlock3d(0.1, bs)
    with pytest.raises(ValueError, match="dropblock3d: block_size"):
        drop_block3d(torch.ones(1, 1, 4, 4, 4), 0.1, bs, training=True)
    with pytest.raises(ValueError, match=r"dropblock3d.*\[0, 1\]"):
        drop_block3d(torch.ones(1, 1, 4, 4, 4), 1.5, 3, training=True)


def test_dropblock3d_state_dict_repr_registry():
    m = DropBlock3d(0.15, 5, couple_channels=True)
    other = DropBlock3d(0.5, 5)
    other.load_state_dict(m.state_dict())
    assert other.rate == pytest.approx(0.15) and set(m.state_dict()) == {"p"}
    assert "block_size=5" in repr(m) and "couple_channels=True" in repr(m)
    assert isinstance(make_dropout("dropblock3d", p=0.1, block_size=3), DropBlock3d)
    assert get_variant("dropblock3d").kind == "activation" and not DropBlock3d.batch_shared_mask
    assert not isinstance(m, DropBlock2d)


# =========================================================================== DropPath


def test_depth_linear_rates_huang_rule_and_expected_depth_sdp():
    assert depth_linear_rates(0.5, 4) == pytest.approx([0.125, 0.25, 0.375, 0.5])
    L, p_last = 54, 0.5
    rates = depth_linear_rates(p_last, L)
    survival = [1 - (i / L) * (1 - 0.5) for i in range(1, L + 1)]  # p_L = 0.5 survival (Huang Eq. 4)
    assert [1 - r for r in rates] == pytest.approx(survival)
    assert sum(1 - r for r in rates) == pytest.approx((3 * L - 1) / 4)  # = 40.25 of 54 (Huang et al. 2016, SDp)
    # timm's linspace(0, rate, L) differs: block 1 never dropped, Σ p_l = rate·L/2
    timm = torch.linspace(0, p_last, L).tolist()
    assert timm[0] == 0 and rates[0] == pytest.approx(p_last / L)
    assert sum(timm) == pytest.approx(p_last * L / 2) and sum(rates) == pytest.approx(p_last * (L + 1) / 2)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="n_blocks must be an integer ≥ 1"):
            depth_linear_rates(0.5, bad)
    with pytest.raises(ValueError, match=r"depth_linear_rates.*\[0, 1\]"):
        depth_linear_rates(1.5, 10)


@pytest.mark.parametrize("shape", [(64, 5), (64, 3, 4, 4), (64, 7, 2)])
def test_droppath_drops_whole_samples(shape):
    torch.manual_seed(300)
    x = torch.randn(shape)
    p = 0.5
    y = DropPath(p)(x)
    flat_y, flat_x = y.flatten(1), x.flatten(1)
    dropped = (flat_y == 0).all(1)
    kept = torch.allclose(flat_y[~dropped], flat_x[~dropped] / (1 - p))
    assert kept and 0 < dropped.sum() < shape[0]


@pytest.mark.parametrize("scale_by_keep", [True, False])
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_droppath_expectation_and_drop_rate(p, scale_by_keep):
    # N = 20000 copies of a (4,) vector: per element, mean of x·m·s (s = 1/(1−p) or 1) has sd
    # |x|·s·sqrt(p(1−p)/N); k = 4 per case, 4 cases. The train mean must equal the eval output.
    torch.manual_seed(301)
    n = 20000
    base = torch.randn(4)
    m = DropPath(p, scale_by_keep=scale_by_keep)
    y = m(base.expand(n, 4).contiguous())
    m.eval()
    target = m(base.unsqueeze(0))[0]
    s = 1 / (1 - p) if scale_by_keep else 1.0
    tol = z_crit(16) * base.abs() * s * math.sqrt(p * (1 - p) / n)
    assert torch.all((y.mean(0) - target).abs() <= tol)
    assert torch.allclose(target, base if scale_by_keep else base * (1 - p))
    drop = (y == 0).all(1).double().mean().item()
    assert abs(drop - p) <= z_crit(4) * math.sqrt(p * (1 - p) / n)


def test_droppath_batch_mode_one_coin_per_call():
    # N = 3000 calls; drop frequency sd sqrt(p(1−p)/N).
    torch.manual_seed(302)
    p, n = 0.3, 3000
    m = DropPath(p, mode="batch")
    assert m.batch_shared_mask is True and DropPath(p).batch_shared_mask is False
    assert DropPath.batch_shared_mask is False
    x = torch.randn(8, 3)
    drops = 0
    for _ in range(n):
        y = m(x)
        zero = (y == 0).all()
        assert zero or torch.allclose(y, x / (1 - p))
        drops += int(zero)
    assert abs(drops / n - p) <= z_crit() * math.sqrt(p * (1 - p) / n)


def test_droppath_eval_p0_p1_fresh_grad_inplace():
    torch.manual_seed(303)
    x = torch.randn(32, 4, requires_grad=True)
    m = DropPath(0.5)
    m.eval()
    assert m(x) is x
    m.train()
    assert torch.equal(DropPath(0.0)(x), x)
    out1 = DropPath(1.0)(x)
    assert torch.equal(out1, torch.zeros_like(x)) and not out1.isnan().any()
    assert torch.equal(DropPath(1.0, scale_by_keep=False)(x), torch.zeros_like(x))
    torch.manual_seed(304)
    y = m(x)
    assert not torch.equal(y, m(x))
    y.sum().backward()
    assert torch.allclose(x.grad, y.detach() / x.detach())
    torch.manual_seed(304)
    xi = x.detach().clone()
    yi = DropPath(0.5, inplace=True)(xi)
    assert yi.data_ptr() == xi.data_ptr() and torch.allclose(yi, y.detach())


def test_droppath_errors_state_dict_repr_registry():
    with pytest.raises(ValueError, match="droppath: mode must be one of"):
        DropPath(0.1, mode="sample")
    with pytest.raises(ValueError, match="droppath: mode"):
        drop_path(torch.ones(2, 3), 0.1, training=True, mode="col")
    with pytest.raises(ValueError, match=r"droppath: input \(B, \*\) must have rank >= 1"):
        DropPath(0.1)(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"droppath.*\[0, 1\]"):
        DropPath(-0.2)
    m = DropPath(0.2, scale_by_keep=False, mode="batch")
    other = DropPath(0.9)
    other.load_state_dict(m.state_dict())
    assert other.rate == pytest.approx(0.2)
    assert "scale_by_keep=False" in repr(m) and "mode='batch'" in repr(m)
    assert isinstance(make_dropout("droppath", p=0.1), DropPath)
    assert get_variant("droppath").kind == "activation"


# =========================================================================== DropConnect


def test_dropconnect_weight_mask_drop_rate_and_sharing():
    # 5 calls × 64·64 weights: drop fraction sd sqrt(p(1−p)/(5·4096)).
    torch.manual_seed(400)
    p, d = 0.4, 64
    layer = DropConnectLinear(d, d, p=p, bias=False)
    eye = torch.eye(d)
    drops = 0.0
    for _ in range(5):
        y = layer(eye)  # row i = W[:, i]·M[:, i]/(1−p)
        drops += (y == 0).double().mean().item() / 5
    assert abs(drops - p) <= z_crit() * math.sqrt(p * (1 - p) / (5 * d * d))
    # one mask per call shared by the batch: identical rows give identical outputs ...
    x = torch.randn(1, d).expand(8, d)
    y = layer(x)
    assert torch.equal(y, y[:1].expand_as(y))
    # ... per_sample draws one per row
    ps = DropConnectLinear(d, d, p=p, per_sample=True)
    y = ps(x)
    assert not torch.equal(y, y[:1].expand_as(y))
    assert layer.batch_shared_mask is True and ps.batch_shared_mask is False


@pytest.mark.parametrize("mask_bias", [True, False])
def test_dropconnect_train_moments_match_gaussian_moments(mask_bias):
    """Per-sample masks on N = 20000 copies of x: the sample mean and variance of u match
    gaussian_moments. Mean: sd = sqrt(Var[u]/N). Variance: sd of the sample variance is
    sqrt((μ4 − σ⁴)/N), with the fourth central moment μ4 estimated from the same draws.
    k = 2 statistics × 5 outputs × 2 cases = 20."""
    torch.manual_seed(401)
    n, p = 20000, 0.5
    layer = DropConnectLinear(6, 5, p=p, per_sample=True, mask_bias=mask_bias)
    x = torch.randn(6)
    with torch.no_grad():
        u = layer(x.expand(n, 6).contiguous()).double()
        mean, var = layer.gaussian_moments(x.unsqueeze(0))
    mean, var = mean[0].double(), var[0].double()
    z = z_crit(20)
    assert torch.all((u.mean(0) - mean).abs() <= z * (var / n).sqrt())
    c = u - u.mean(0)
    mu4 = (c**4).mean(0)
    assert torch.all((u.var(0) - var).abs() <= z * ((mu4 - var**2) / n).sqrt())
    # explicit formula (inverted form of Wan et al.'s moments)
    w, b = layer.weight.detach().double(), layer.bias.detach().double()
    xd = x.double()
    ref_var = p / (1 - p) * ((w**2) @ (xd**2) + (b**2 if mask_bias else 0.0))
    assert torch.allclose(var, ref_var) and torch.allclose(mean, w @ xd + b)


def test_dropconnect_eval_scale_is_the_mean_network():
    torch.manual_seed(402)
    lin = nn.Linear(7, 3)
    layer = DropConnectLinear.from_linear(lin, p=0.5, activation=torch.tanh).eval()
    x = torch.randn(4, 7)
    assert torch.allclose(layer(x), torch.tanh(lin(x)))
    assert torch.equal(layer(x), layer(x))


def test_dropconnect_gaussian_inference_averages_the_activation():
    """E[relu(u)], u ~ N(μ, σ²), is μΦ(μ/σ) + σφ(μ/σ). The Z-sample average has sd
    ≤ sqrt(E[relu(u)²]/Z) ≤ sqrt((μ² + σ²)/Z); k = 4·3 = 12 outputs."""
    torch.manual_seed(403)
    z_samples = 4000
    layer = DropConnectLinear(5, 3, p=0.5, inference="gaussian", n_samples=z_samples,
                              activation=torch.relu).eval()
    x = torch.randn(4, 5)
    with torch.no_grad():
        out = layer(x).double()
        mean, var = layer.gaussian_moments(x)
    mu, sd = mean.double(), var.double().sqrt()
    normal = torch.distributions.Normal(0.0, 1.0)
    exact = mu * normal.cdf(mu / sd) + sd * normal.log_prob(mu / sd).exp()
    tol = z_crit(12) * ((mu**2 + sd**2) / z_samples).sqrt()
    assert torch.all((out - exact).abs() <= tol)
    assert torch.equal(layer(x), layer(x))  # eval_seed: deterministic at eval
    layer.eval_seed = None
    assert not torch.equal(layer(x), layer(x))  # global RNG: a fresh estimate per call


def test_dropconnect_sample_inference_is_unbiased():
    # Average of Z = 2000 mask draws of u: sd sqrt(Var[u]/Z); k = 2·4 outputs.
    torch.manual_seed(404)
    z_samples = 2000
    layer = DropConnectLinear(6, 4, p=0.3, inference="sample", n_samples=z_samples).eval()
    x = torch.randn(2, 6)
    with torch.no_grad():
        out = layer(x)
        mean, var = layer.gaussian_moments(x)
    assert torch.all((out - mean).abs() <= z_crit(8) * (var / z_samples).sqrt())
    assert torch.equal(layer(x), layer(x))


@pytest.mark.parametrize("inference", ["scale", "gaussian", "sample"])
def test_dropconnect_inference_functional_is_what_the_module_computes(inference):
    torch.manual_seed(408)
    layer = DropConnectLinear(6, 4, p=0.4, inference=inference, n_samples=50, activation=torch.tanh,
                              eval_seed=3).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        ref = dropconnect_inference(x, layer.weight, layer.bias, 0.4, inference=inference, n_samples=50,
                                    activation=torch.tanh, generator=torch.Generator().manual_seed(3))
        assert torch.equal(layer(x), ref)
        # a seeded generator makes every rule deterministic
        again = dropconnect_inference(x, layer.weight, layer.bias, 0.4, inference=inference, n_samples=50,
                                      activation=torch.tanh, generator=torch.Generator().manual_seed(3))
        assert torch.equal(ref, again)
        # p = 0: every rule is the plain layer
        plain = dropconnect_inference(x, layer.weight, layer.bias, 0.0, inference=inference, n_samples=3)
        assert torch.equal(plain, F.linear(x, layer.weight, layer.bias))


def test_dropconnect_inference_choice_leaves_training_unchanged():
    """The rule only acts at eval: with the same seed, training outputs (and gradients) are identical."""
    lin = nn.Linear(6, 4)
    x = torch.randn(3, 6)
    outs = []
    for inference in ("scale", "gaussian", "sample"):
        layer = DropConnectLinear.from_linear(lin, p=0.3, inference=inference, activation=torch.relu)
        torch.manual_seed(409)
        outs.append(layer(x))
    torch.manual_seed(409)
    ref = torch.relu(dropconnect_linear(x, lin.weight, lin.bias, 0.3, training=True))
    assert all(torch.equal(o, ref) for o in outs)


def test_dropconnect_sampling_converges_to_the_moment_matching_mean():
    """Identity activation: the mean of Z real-mask draws of u has sd sqrt(Var[u]/Z) around E[u]
    (the moment-matching mean), so its error shrinks like 1/√Z. k = 3 values of Z × 6·8 outputs.
    The rms error over the 48 outputs falls by √(4096/16) = 16 in expectation; it must fall at each
    step and by more than 4× overall."""
    torch.manual_seed(410)
    w, b = torch.randn(8, 20), torch.randn(8)
    x = torch.randn(6, 20)
    p = 0.4
    mean, var = dropconnect_gaussian_moments(x, w, b, p)
    zs = (16, 256, 4096)
    rms = []
    for z_samples in zs:
        out = dropconnect_inference(x, w, b, p, inference="sample", n_samples=z_samples, per_sample=True,
                                    generator=torch.Generator().manual_seed(z_samples))
        err = out - mean
        assert torch.all(err.abs() <= z_crit(3 * 48) * (var / z_samples).sqrt())
        rms.append(err.pow(2).mean().sqrt().item())
    assert rms[0] > rms[1] > rms[2] and rms[0] / rms[2] > 4


@pytest.mark.parametrize("bad", [{"inference": "mean"}, {"inference": "moment-matching"}, {"inference": None},
                                 {"inference": "gaussian", "n_samples": 0}, {"inference": "sample", "n_samples": 2.0},
                                 {"inference": "sample", "n_samples": True}, {"inference": "scale", "activation": "relu"}])
def test_dropconnect_inference_rejects_bad_arguments_before_computing(bad):
    """Bad rule / Z: ValueError naming the argument and what is allowed, raised before any draw or
    matmul (the shapes below do not even match, and the generator state is untouched)."""
    gen = torch.Generator().manual_seed(411)
    state = gen.get_state()
    arg = next(k for k in ("activation", "n_samples", "inference") if k in bad)
    allowed = {"inference": r"one of \('scale', 'gaussian', 'sample'\)", "n_samples": "an integer >= 1",
               "activation": "callable or None"}[arg]
    with pytest.raises(ValueError, match=rf"dropconnect: {arg} must be {allowed}"):
        dropconnect_inference(torch.randn(3, 5), torch.randn(2, 4), None, 0.5, generator=gen, **bad)
    assert torch.equal(gen.get_state(), state)
    if arg == "inference":  # an attribute changed after construction is caught at the next eval forward
        layer = DropConnectLinear(4, 2).eval()
        layer.inference = bad["inference"]
        with pytest.raises(ValueError, match="dropconnect: inference must be one of"):
            layer(torch.randn(3, 4))

def test_dropconnect_gradient_is_masked():
    torch.manual_seed(405)
    p = 0.5
    layer = DropConnectLinear(8, 8, p=p, bias=False)
    x = torch.randn(3, 8)
    torch.manual_seed(406)
    y = layer(x)
    y.sum().backward()
    torch.manual_seed(406)
    eye_out = dropconnect_linear(torch.eye(8), layer.weight, None, p, training=True).detach()
    mask = (eye_out.T != 0).float()  # (out, in)
    assert torch.allclose(layer.weight.grad, mask / (1 - p) * x.sum(0).unsqueeze(0))


def test_dropconnect_p0_shapes_functional_eval_and_registry():
    torch.manual_seed(407)
    layer = DropConnectLinear(5, 2, p=0.0)
    x = torch.randn(3, 4, 5)
    assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias))
    layer.set_p(0.5)
    assert layer(x).shape == (3, 4, 2)
    layer.per_sample = True
    assert layer(x).shape == (3, 4, 2)
    assert torch.equal(dropconnect_linear(x, layer.weight, layer.bias, 0.5, training=False),
                       F.linear(x, layer.weight, layer.bias))
    m, v = dropconnect_gaussian_moments(x, layer.weight, None, 0.5)
    assert m.shape == v.shape == (3, 4, 2) and torch.all(v >= 0)
    assert get_variant("dropconnect").kind == "layer"
    assert isinstance(make_dropout("dropconnect", in_features=3, out_features=2, p=0.2), DropConnectLinear)


def test_dropconnect_state_dict_from_linear_and_errors():
    lin = nn.Linear(4, 3, bias=False)
    layer = DropConnectLinear.from_linear(lin, p=0.25)
    assert set(layer.state_dict()) == {"weight", "p"} and layer.bias is None
    assert torch.equal(layer.weight, lin.weight)
    fresh = DropConnectLinear(4, 3, p=0.5, bias=False)
    fresh.load_state_dict(layer.state_dict())
    assert fresh.rate == pytest.approx(0.25) and torch.equal(fresh.weight, lin.weight)
    assert "inference='scale'" in repr(layer) and "in_features=4" in repr(layer)
    with pytest.raises(ValueError, match=r"dropconnect.*\[0, 1\)"):
        DropConnectLinear(4, 3, p=1.0)
    with pytest.raises(ValueError, match=r"dropconnect.*\[0, 1\)"):
        DropConnectLinear(4, 3, p=-0.1)
    with pytest.raises(ValueError, match="dropconnect: inference must be one of"):
        DropConnectLinear(4, 3, inference="mean")
    with pytest.raises(ValueError, match="dropconnect: n_samples must be an integer >= 1"):
        DropConnectLinear(4, 3, n_samples=0)
    with pytest.raises(ValueError, match="dropconnect: activation must be callable"):
        DropConnectLinear(4, 3, activation="relu")
