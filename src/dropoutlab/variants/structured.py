"""Structured dropout: DropBlock (2-d and 3-d maps), DropPath (stochastic depth), DropConnect.

Ghiasi, Lin, Le. "DropBlock: a regularization method for convolutional networks."
NeurIPS 2018 (arXiv:1810.12890). Huang, Sun, Liu, Sedra, Weinberger. "Deep networks with
stochastic depth." ECCV 2016 (arXiv:1603.09382). Wan, Zeiler, Zhang, LeCun, Fergus.
"Regularization of neural networks using DropConnect." ICML 2013.

Conventions: ``p`` is the drop probability everywhere; DropBlock and DropPath are inverted
(identity at eval); DropConnect is inverted on the weights (its eval rules are in
:class:`DropConnectLinear`).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..checks import integer
from .base import DropoutBase, check_rank, register_dropout, validate_p
from .masks import apply_mask, bernoulli_mask

__all__ = [
    "DropBlock2d",
    "DropBlock3d",
    "DropConnectLinear",
    "DropPath",
    "depth_linear_rates",
    "drop_block2d",
    "drop_block3d",
    "drop_path",
    "dropblock_expected_drop_fraction",
    "dropblock_gamma",
    "dropconnect_gaussian_moments",
    "dropconnect_inference",
    "dropconnect_linear",
]


# =========================================================================== DropBlock


def _check_block_size(block_size: int, name: str = "dropblock") -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"{name}: block_size must be an integer >= 1, got {block_size!r}")
    return block_size


def _clipped_block(block_size: int, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The block edge clipped per dimension to the map: ``k_i = min(bs, size_i)``."""
    return tuple(min(block_size, s) for s in sizes)


def dropblock_gamma(p: float, block_size: int, *sizes: int) -> float:
    """Seed (block-corner) rate γ of DropBlock for a map of spatial ``sizes`` (``H, W`` or ``D, H, W``).

    Ghiasi et al. 2018, Eq. 1, with the block clipped **per dimension** to the map
    (``kh = min(bs, H)``, ``kw = min(bs, W)``; in 3-d also ``kd = min(bs, D)``)::

        γ = p · H · W / (kh · kw · (H − kh + 1) · (W − kw + 1))
        γ = p · D · H · W / (kd · kh · kw · (D − kd + 1) · (H − kh + 1) · (W − kw + 1))   (3-d)

    For a square (cubic) map and block this is the paper's ``(1 − keep_prob)/bs² · feat²/(feat −
    bs + 1)²`` (torchvision's ``drop_block3d`` uses ``bs³`` likewise). It makes the expected
    number of seeded units times the block volume equal ``p · H · W`` (overlaps ignored), so the
    realised drop fraction is at most ``p`` (see :func:`dropblock_expected_drop_fraction`).

    Clipping, when a side is smaller than the block: per dimension here, as timm >= 1.0.23
    (``kh, kw = min(bs, H), min(bs, W)``; older timm clipped to a square). torchvision
    (``drop_block2d``/``drop_block3d``, 0.28) clips to **one square/cubic block** of edge
    ``min(bs, H, W)`` (``min(bs, D, H, W)``) instead, and rejects an even clipped edge in 2-d.
    The two agree whenever no side is smaller than the block; on a 5 × 20 map with block 7 and
    ``p = 0.3``, γ is 0.0612 here (5 × 7 blocks) and 0.0750 in torchvision (5 × 5 blocks).
    """
    p = validate_p(p, "dropblock")
    bs = _check_block_size(block_size)
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"dropblock: feature map must be non-empty, got {'×'.join(map(str, sizes))}")
    ks = _clipped_block(bs, sizes)
    return p * math.prod(sizes) / (math.prod(ks) * math.prod(s - k + 1 for s, k in zip(sizes, ks)))


def dropblock_expected_drop_fraction(p: float, block_size: int, *sizes: int) -> float:
    """Exact expected fraction of units DropBlock zeroes in a map of spatial ``sizes``.

    With seeds ~ Bernoulli(γ) i.i.d. over the valid region, unit ``(y, x)`` is covered by
    ``r(y)·s(x)`` seed positions (``r(y)`` valid block rows containing ``y``, ``s(x)`` likewise;
    in 3-d a third factor for depth) and survives with probability ``(1 − γ)^(r(y)·s(x))``.
    Averaged over the map this is ``< p`` whenever blocks can overlap (``1 < bs <`` the longest side),
    ``= p`` for ``bs = 1`` or a block covering the whole map.
    """
    gamma = min(dropblock_gamma(p, block_size, *sizes), 1.0)
    # per dimension: how many positions have coverage c, so the sum runs over distinct products
    counts = [Counter(min(i, s - k) - max(0, i - k + 1) + 1 for i in range(s))
              for s, k in zip(sizes, _clipped_block(block_size, sizes))]
    total = 0.0
    for combo in itertools.product(*(c.items() for c in counts)):
        cover = math.prod(c for c, _ in combo)
        total += math.prod(n for _, n in combo) * (1.0 - (1.0 - gamma) ** cover)
    return total / math.prod(sizes)


def _drop_block(x: Tensor, p: float, bs: int, couple_channels: bool, eps: float, inplace: bool,
                generator: torch.Generator | None) -> Tensor:
    """DropBlock on ``(N, C, *spatial)`` with 2 or 3 spatial dims; arguments already validated."""
    n, c, *sizes = x.shape
    ks = _clipped_block(bs, tuple(sizes))
    gamma = min(dropblock_gamma(p, bs, *sizes), 1.0)
    valid = tuple(s - k + 1 for s, k in zip(sizes, ks))
    seeds = bernoulli_mask((n, 1 if couple_channels else c, *valid), 1.0 - gamma, x, generator)
    seeds = seeds.to(x.dtype if x.is_floating_point() else torch.float32)
    if any(k > 1 for k in ks):
        pad = [q for k in reversed(ks) for q in (k - 1, k - 1)]  # F.pad lists the last dim first
        pool = F.max_pool2d if len(ks) == 2 else F.max_pool3d
        seeds = pool(F.pad(seeds, pad), ks, stride=1)
    keep = 1.0 - seeds
    scale = keep.numel() / (eps + keep.sum())
    if inplace:
        return x.mul_(keep).mul_(scale)
    return x * (keep * scale)


def drop_block2d(x: Tensor, p: float, block_size: int, *, training: bool, couple_channels: bool = False,
                 eps: float = 1e-6, inplace: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """DropBlock (Ghiasi et al., NeurIPS 2018, Algorithm 1) on ``(N, C, H, W)`` activations.

    1. ``kh = min(bs, H)``, ``kw = min(bs, W)`` (per-dimension clipping, as timm; torchvision
       clips to a square, see :func:`dropblock_gamma`); γ from :func:`dropblock_gamma`.
    2. Seeds ``~ Bernoulli(γ)`` on the valid region ``(H − kh + 1) × (W − kw + 1)`` only (as
       torchvision; timm seeds the whole map and lets blocks run off its edge), one seed map per
       (sample, channel), or per sample when ``couple_channels``.
    3. Each seed zeroes the ``kh × kw`` block whose top-left corner it marks (max-pool of the
       seeds padded by ``kh − 1``/``kw − 1``), so every block lies fully inside the map; with
       valid-region seeding the anchor convention is immaterial, and even block sizes give exact
       ``kh × kw`` blocks (no odd-size restriction as in torchvision, no off-by-one as in old timm).
    4. ``y = x · mask · numel(mask) / (eps + Σ mask)``: the renormalisation runs over the **whole
       batch** (as torchvision and timm), so ``mean(y) = mean(x)`` for a constant ``x``; it does not
       make each unit's expectation equal ``x`` (edge units are dropped less than interior ones).

    Args:
        x: ``(N, C, H, W)``; other ranks raise ``ValueError`` (3-d maps: :func:`drop_block3d`).
        p: target drop fraction in [0, 1] (``1 − keep_prob`` of the paper).
        block_size: block edge ``>= 1``; larger than the map is clipped per dimension.
        couple_channels: one mask per sample shared by all channels (timm's default) instead of
            one per channel (the paper's Algorithm 1 and torchvision's choice, the default here).
        eps: added to the kept count in the renormaliser.
    """
    p = validate_p(p, "dropblock")
    bs = _check_block_size(block_size)
    check_rank(x, (4,), "dropblock", "input (N, C, H, W)")
    if not training or p == 0.0:
        return x
    return _drop_block(x, p, bs, couple_channels, eps, inplace, generator)


def drop_block3d(x: Tensor, p: float, block_size: int, *, training: bool, couple_channels: bool = False,
                 eps: float = 1e-6, inplace: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """DropBlock on volumetric ``(N, C, D, H, W)`` activations (torchvision's ``drop_block3d``).

    :func:`drop_block2d` with a third spatial dimension: ``kd, kh, kw = min(bs, D), min(bs, H),
    min(bs, W)`` (clipped per dimension; torchvision clips to one cube of edge ``min(bs, D, H,
    W)``), γ from :func:`dropblock_gamma` with three sizes, seeds on the valid region ``(D − kd
    + 1) × (H − kh + 1) × (W − kw + 1)``, each seed zeroing the ``kd × kh × kw`` box at its
    corner, and the same whole-batch renormalisation ``numel(mask) / (eps + Σ mask)``.

    Args:
        x: ``(N, C, D, H, W)``; other ranks raise ``ValueError``.
        p, block_size, couple_channels, eps, inplace, generator: as :func:`drop_block2d`.
    """
    p = validate_p(p, "dropblock3d")
    bs = _check_block_size(block_size, "dropblock3d")
    check_rank(x, (5,), "dropblock3d", "input (N, C, D, H, W)")
    if not training or p == 0.0:
        return x
    return _drop_block(x, p, bs, couple_channels, eps, inplace, generator)


class _DropBlockNd(DropoutBase):
    """Shared constructor of :class:`DropBlock2d` and :class:`DropBlock3d`."""

    def __init__(self, p: float = 0.1, block_size: int = 7, inplace: bool = False, *,
                 couple_channels: bool = False, eps: float = 1e-6) -> None:
        super().__init__(p, inplace)
        self.block_size = _check_block_size(block_size, self.variant_name)
        self.couple_channels = bool(couple_channels)
        self.eps = float(eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, block_size={self.block_size}, couple_channels={self.couple_channels}"


@register_dropout(
    "dropblock",
    family="Structured",
    paper="Ghiasi, Lin, Le 2018, NeurIPS (DropBlock); block clipped per dimension as timm (torchvision: one "
          "square block), valid-region seeding as torchvision.ops.drop_block2d",
    equation="γ = p·H·W/(kh·kw·(H−kh+1)(W−kw+1)), k = min(bs, side); "
             "y = x·M·numel(M)/Σ M, M = 1 − maxpool_k(Bernoulli(γ) seeds)",
    kind="activation",
    mask="contiguous kh×kw blocks per (sample, channel), or per sample if couple_channels",
    test_time="identity",
)
class DropBlock2d(_DropBlockNd):
    """DropBlock: drop contiguous square regions of conv feature maps (Ghiasi et al., NeurIPS 2018).

    See :func:`drop_block2d` for the algorithm. ``p`` (a buffer) can be changed by a schedule
    through :meth:`set_p` — the paper ramps ``keep_prob`` linearly from 1 to its target.

    Args:
        p: target drop fraction (``1 − keep_prob``), in [0, 1].
        block_size: block edge ``>= 1`` (paper: 7 on ResNet-50 groups 3 and 4); clipped per
            dimension to a smaller map.
        inplace: multiply the input in place.
        couple_channels: share one mask across the channels of a sample (default False:
            per-channel masks as in the paper's Algorithm 1 and torchvision).
        eps: added to the kept count in the whole-batch renormalisation.

    Shape: ``(N, C, H, W)`` → same.
    """

    def forward(self, x: Tensor) -> Tensor:
        return drop_block2d(x, self.p, self.block_size, training=self.training,
                            couple_channels=self.couple_channels, eps=self.eps, inplace=self.inplace)


@register_dropout(
    "dropblock3d",
    family="Structured",
    paper="Ghiasi, Lin, Le 2018, NeurIPS (DropBlock); 3-d form as torchvision.ops.drop_block3d, block clipped "
          "per dimension (torchvision: one cube)",
    equation="γ = p·D·H·W/(kd·kh·kw·(D−kd+1)(H−kh+1)(W−kw+1)), k = min(bs, side); "
             "y = x·M·numel(M)/Σ M, M = 1 − maxpool_k(Bernoulli(γ) seeds)",
    kind="activation",
    mask="contiguous kd×kh×kw boxes per (sample, channel), or per sample if couple_channels",
    test_time="identity",
)
class DropBlock3d(_DropBlockNd):
    """DropBlock for volumetric feature maps: drop contiguous cubes of ``(N, C, D, H, W)`` activations.

    Ghiasi et al., NeurIPS 2018, extended to 3-d as torchvision's ``DropBlock3d``; see
    :func:`drop_block3d`. Same arguments, buffer ``p`` and schedule hook as :class:`DropBlock2d`.

    Shape: ``(N, C, D, H, W)`` → same.
    """

    def forward(self, x: Tensor) -> Tensor:
        return drop_block3d(x, self.p, self.block_size, training=self.training,
                            couple_channels=self.couple_channels, eps=self.eps, inplace=self.inplace)


# =========================================================================== DropPath


_DROP_PATH_MODES = ("row", "batch")


def depth_linear_rates(p_last: float, n_blocks: int, *, rule: str = "huang") -> list[float]:
    """Per-block drop rates that grow linearly with depth (DropPath / stochastic depth), for ``l = 1..L``.

    * ``rule="huang"``: Huang et al.'s linear decay rule, drop rate ``p_l = (l / L) · p_last``.
      Equivalently survival ``1 − (l/L)(1 − p_L)`` with ``p_L = 1 − p_last`` (Huang et al., ECCV
      2016, Eq. 4; ``deathRate = i/#blocks × deathRate`` in the authors' code). The first block
      already has ``p_1 = p_last / L > 0`` and the expected number of active blocks is
      ``Σ (1 − p_l) = L − p_last·(L + 1)/2`` (``(3L − 1)/4`` at ``p_last = 0.5``).
    * ``rule="timm"``: timm's ``calculate_drop_path_rates``, ``linspace(0, p_last, L)``, i.e.
      ``(l − 1)/(L − 1) · p_last``: block 1 is never dropped, every block's rate is a little lower,
      and ``Σ p_l = p_last·L/2`` rather than ``p_last·(L + 1)/2``.
    """
    if rule not in ("huang", "timm"):
        raise ValueError(f"depth_linear_rates: rule must be 'huang' or 'timm', got {rule!r}")
    p_last = validate_p(p_last, "depth_linear_rates")
    n_blocks = integer(n_blocks, "depth_linear_rates: n_blocks")
    if rule == "huang":
        return [p_last * layer / n_blocks for layer in range(1, n_blocks + 1)]
    if n_blocks == 1:
        return [0.0]
    return [p_last * i / (n_blocks - 1) for i in range(n_blocks)]


def drop_path(x: Tensor, p: float, *, training: bool, scale_by_keep: bool = True, mode: str = "row",
              inplace: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """Stochastic depth on a residual branch (Huang et al., ECCV 2016).

    ``y = x · m / (1 − p)`` with ``m ~ Bernoulli(1 − p)`` of shape ``(B, 1, …, 1)`` (``mode="row"``:
    one coin per sample, timm's ``DropPath``) or a single coin for the whole batch
    (``mode="batch"``: the paper's "for each mini-batch", torchvision ``StochasticDepth``).
    Use as ``x + drop_path(f(x), ...)``.

    ``scale_by_keep=True`` (default): inverted, divide by ``1 − p`` when it is > 0, identity at
    eval. ``scale_by_keep=False``: the paper's rule, no scaling in training and the branch
    multiplied by its survival probability ``1 − p`` at eval — the expectation is preserved
    either way. (timm's ``scale_by_keep=False`` also skips the eval scaling, a train/test
    mismatch this package does not reproduce.)

    Shape: any ``(B, *)`` with rank >= 1.
    """
    p = validate_p(p, "droppath")
    if mode not in _DROP_PATH_MODES:
        raise ValueError(f"droppath: mode must be one of {_DROP_PATH_MODES}, got {mode!r}")
    if x.dim() < 1:
        raise ValueError(f"droppath: input (B, *) must have rank >= 1, got shape {tuple(x.shape)}")
    if not training:
        if scale_by_keep or p == 0.0:
            return x
        return x.mul_(1.0 - p) if inplace else x * (1.0 - p)
    if p == 0.0:
        return x
    shape = (x.shape[0],) + (1,) * (x.dim() - 1) if mode == "row" else (1,) * x.dim()
    keep = bernoulli_mask(shape, p, x, generator)
    scale = 1.0 / (1.0 - p) if scale_by_keep and p < 1.0 else 1.0
    return apply_mask(x, keep, scale, inplace)


@register_dropout(
    "droppath",
    family="Structured",
    paper="Huang, Sun, Liu, Sedra, Weinberger 2016, ECCV (stochastic depth); timm DropPath / torchvision StochasticDepth",
    equation="y = x·m/(1−p), m ~ Bernoulli(1−p) per sample (row) or per batch; block l: p_l = (l/L)·p_L",
    kind="activation",
    mask="whole sample (mode='row') or whole batch (mode='batch')",
    test_time="identity (scale_by_keep=True) or x·(1−p) (scale_by_keep=False)",
)
class DropPath(DropoutBase):
    """Stochastic depth / DropPath: drop a residual branch for whole samples (Huang et al., ECCV 2016).

    See :func:`drop_path`; :func:`depth_linear_rates` gives the paper's per-block rates.

    Args:
        p: drop probability of the branch, in [0, 1].
        inplace: multiply the input in place.
        scale_by_keep: inverted scaling in training (default) vs the paper's test-time scaling.
        mode: ``"row"`` (one coin per sample) or ``"batch"`` (one coin per forward call).

    ``batch_shared_mask`` is an *instance* attribute here, fixed at construction: False for
    ``"row"`` (the class default) and True for ``"batch"``, whose single coin cannot be
    tiled into T Monte-Carlo samples along the batch. Read it on the instance.

    Shape: ``(B, *)`` → same.
    """

    def __init__(self, p: float = 0.1, inplace: bool = False, *, scale_by_keep: bool = True,
                 mode: str = "row") -> None:
        super().__init__(p, inplace)
        if mode not in _DROP_PATH_MODES:
            raise ValueError(f"droppath: mode must be one of {_DROP_PATH_MODES}, got {mode!r}")
        self.scale_by_keep = bool(scale_by_keep)
        self.mode = mode
        self.batch_shared_mask = mode == "batch"  # instance attribute shadows the ClassVar

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, training=self.training, scale_by_keep=self.scale_by_keep, mode=self.mode,
                         inplace=self.inplace)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale_by_keep={self.scale_by_keep}, mode={self.mode!r}"


# =========================================================================== DropConnect


_DC_INFERENCE = ("scale", "gaussian", "sample")


def _dc_check(p: float, name: str) -> float:
    return validate_p(p, name, allow_one=False)


def _dc_check_inference(inference: str, n_samples: int, activation: Callable[[Tensor], Tensor] | None) -> None:
    if inference not in _DC_INFERENCE:
        raise ValueError(f"dropconnect: inference must be one of {_DC_INFERENCE}, got {inference!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"dropconnect: n_samples must be an integer >= 1, got {n_samples!r}")
    if activation is not None and not callable(activation):
        raise ValueError(f"dropconnect: activation must be callable or None, got {activation!r}")


def dropconnect_linear(x: Tensor, weight: Tensor, bias: Tensor | None, p: float, *, training: bool,
                       per_sample: bool = False, mask_bias: bool = True,
                       generator: torch.Generator | None = None) -> Tensor:
    """DropConnect linear map, inverted: ``u = x (M ∗ W)ᵀ / (1 − p) + (m_b ∗ b) / (1 − p)``.

    ``M ~ Bernoulli(1 − p)`` per weight (``(out, in)``); the bias gets its own mask ``m_b`` when
    ``mask_bias`` (Wan et al. fold the bias into ``W`` and mask it too). One mask per call
    shared by the batch, or one per row of ``x`` when ``per_sample`` (costs
    ``B · out · in`` memory). At eval (``training=False``) returns the mean ``x Wᵀ + b``.

    Shape: ``x`` ``(*, in)``, ``weight`` ``(out, in)``, ``bias`` ``(out,)`` → ``(*, out)``.
    """
    p = _dc_check(p, "dropconnect")
    if not training or p == 0.0:
        return F.linear(x, weight, bias)
    scale = 1.0 / (1.0 - p)
    if not per_sample:
        w = apply_mask(weight, bernoulli_mask(weight.shape, p, weight, generator), scale, False)
        b = bias
        if bias is not None and mask_bias:
            b = apply_mask(bias, bernoulli_mask(bias.shape, p, bias, generator), scale, False)
        return F.linear(x, w, b)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    rows = x2.shape[0]
    masks = bernoulli_mask((rows,) + tuple(weight.shape), p, weight, generator)
    u = torch.einsum("bi,boi->bo", x2, weight * masks) * scale
    if bias is not None:
        if mask_bias:
            u = u + bias * bernoulli_mask((rows, bias.shape[0]), p, bias, generator) * scale
        else:
            u = u + bias
    return u.reshape(*lead, weight.shape[0])


def dropconnect_gaussian_moments(x: Tensor, weight: Tensor, bias: Tensor | None, p: float, *,
                                 mask_bias: bool = True) -> tuple[Tensor, Tensor]:
    """Mean and variance of the DropConnect pre-activation ``u`` per output unit.

    Wan et al. 2013, Sec. 3 (inference): ``u`` is a sum of independent terms, approximated by
    ``N(E[u], Var[u])``. In the paper's (non-inverted, keep ``q = 1 − p``) form
    ``E[u] = q·W x``, ``Var[u] = q(1 − q)·(W ∗ W)(x ∗ x)``. Inverted (this package,
    ``M/(1 − p)`` has mean 1 and variance ``p/(1 − p)``)::

        E[u]   = x Wᵀ + b
        Var[u] = p/(1 − p) · ((x ∗ x)(W ∗ W)ᵀ + b ∗ b·[mask_bias])

    Shape: ``(*, in)`` → two ``(*, out)`` tensors.
    """
    p = _dc_check(p, "dropconnect")
    mean = F.linear(x, weight, bias)
    var = F.linear(x * x, weight * weight, bias * bias if (bias is not None and mask_bias) else None)
    return mean, var * (p / (1.0 - p))


def dropconnect_inference(x: Tensor, weight: Tensor, bias: Tensor | None, p: float, *, inference: str,
                          n_samples: int = 100, activation: Callable[[Tensor], Tensor] | None = None,
                          per_sample: bool = False, mask_bias: bool = True,
                          generator: torch.Generator | None = None) -> Tensor:
    """Test-time output ``r`` of a DropConnect layer ``r = a(u)`` under one of three rules (Wan et al. 2013).

    The paper's inference averages the *activation* over the mask distribution,
    ``r ≈ E_M[a(u)]``, so the activation ``a`` is an argument (``None`` = identity) and is
    applied here in every rule — do not apply it again afterwards:

    * ``"scale"``: ``a(E[u]) = a(x Wᵀ + b)`` — the mean network (weight scaling; inverted, so no
      factor appears). Deterministic; **not** the paper's rule.
    * ``"gaussian"``: the paper's moment matching (Sec. 3, Algorithm 2): ``u`` is approximated by
      ``N(E[u], Var[u])`` per output unit (moments from :func:`dropconnect_gaussian_moments`)
      and ``r = (1/Z) Σ_z a(u_z)`` over ``Z = n_samples`` independent Gaussian draws.
    * ``"sample"``: ``r = (1/Z) Σ_z a(u_z)`` with ``u_z`` from ``Z`` real Bernoulli weight masks
      (:func:`dropconnect_linear` in training form: one mask per draw shared by the batch, or
      per row when ``per_sample``). Unbiased for ``E_M[a(u)]``; ``"gaussian"`` approximates it
      (exact in the mean for ``a`` = identity).

    Draws come from ``generator`` (None: the global torch RNG), so a seeded generator makes the
    Monte-Carlo rules deterministic. ``p = 0`` gives ``"scale"``'s output in every rule.
    ``inference``, ``n_samples`` and ``activation`` are checked before any computation.

    Shape: ``x`` ``(*, in)``, ``weight`` ``(out, in)``, ``bias`` ``(out,)`` → ``(*, out)``.
    """
    p = _dc_check(p, "dropconnect")
    _dc_check_inference(inference, n_samples, activation)

    def act(u: Tensor) -> Tensor:
        return u if activation is None else activation(u)

    if inference == "scale" or p == 0.0:
        return act(F.linear(x, weight, bias))
    if inference == "gaussian":
        mean, var = dropconnect_gaussian_moments(x, weight, bias, p, mask_bias=mask_bias)
        std = var.sqrt()

        def draw() -> Tensor:
            return mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    else:  # "sample"

        def draw() -> Tensor:
            return dropconnect_linear(x, weight, bias, p, training=True, per_sample=per_sample, mask_bias=mask_bias,
                                      generator=generator)
    total = act(draw())
    for _ in range(n_samples - 1):  # one draw alive at a time: memory of a single forward
        total = total + act(draw())
    return total / n_samples


@register_dropout(
    "dropconnect",
    family="Structured",
    paper="Wan, Zeiler, Zhang, LeCun, Fergus 2013, ICML (DropConnect)",
    equation="train: u = x(M∗W)ᵀ/(1−p) + m_b∗b/(1−p), M ~ Bernoulli(1−p); "
             "test: a(E[u]) or mean_z a(u_z), u_z ~ N(E[u], Var[u])",
    kind="layer",
    mask="per weight; one mask per forward (per_sample=False) or per sample",
    test_time="inference='scale': a(xWᵀ+b); 'gaussian': moment-matched MC average; 'sample': MC over masks",
)
class DropConnectLinear(DropoutBase):
    """Linear layer with DropConnect on its weights (Wan et al., ICML 2013).

    Training: ``y = a(u)``, ``u = x (M ∗ W)ᵀ/(1 − p) + (m_b ∗ b)/(1 − p)``, ``M, m_b ~
    Bernoulli(1 − p)``. Inverted scaling, so the parameters are the paper's times ``1 − p``
    and the mean network is the plain ``x Wᵀ + b``. The bias is masked too (the paper folds it
    into ``W``); ``mask_bias=False`` keeps it deterministic.

    Because the paper's inference averages the *activation* over Gaussian samples of ``u``,
    the layer owns its activation ``a`` (``activation``, default identity) and applies it in
    every mode — do not apply it again after the layer. Eval rules (``inference``; computed by
    :func:`dropconnect_inference`, training is unaffected by the choice):

    * ``"scale"``: ``a(E[u])`` — weight scaling / mean network (what most code does; **not**
      the paper's rule).
    * ``"gaussian"``: the paper's moment matching: ``(1/Z) Σ_z a(u_z)``, ``u_z ~ N(E[u],
      Var[u])`` per output unit, ``Z = n_samples`` (moments from :meth:`gaussian_moments`).
    * ``"sample"``: ``(1/Z) Σ_z a(u_z)`` with ``u_z`` from ``Z`` fresh Bernoulli weight masks
      (one per sample z, shared by the batch; per row if ``per_sample``).

    Masks: by default one weight mask per forward call, shared by the batch
    (``batch_shared_mask = True``); ``per_sample=True`` draws one per example as in the paper
    (``B · out · in`` memory) and sets the instance's ``batch_shared_mask`` to False.

    Args:
        in_features, out_features, bias: as ``nn.Linear`` (same parameter names and init, so
            :meth:`from_linear` and ``state_dict`` interoperate).
        p: drop probability of each connection, in [0, 1) (``p = 1`` has no inverted form).
        inference: ``"scale"``, ``"gaussian"`` or ``"sample"``.
        n_samples: ``Z`` for the two Monte-Carlo rules (paper: Z = 1000 on MNIST; 100 is cheap).
        activation: callable applied to pre-activations, e.g. ``torch.relu``; None = identity.
        per_sample: one mask per example instead of per forward call.
        mask_bias: drop bias entries too (paper), default True.
        eval_seed: seed of a private generator re-created at every eval forward, so the
            Monte-Carlo rules are deterministic in eval mode (the same ``Z`` draws for every
            input: common random numbers). ``None`` draws from the global RNG instead
            (a fresh, stochastic estimate per call).

    Shape: ``(*, in_features)`` → ``(*, out_features)``.
    """

    batch_shared_mask = True
    allow_p_one = False

    def __init__(self, in_features: int, out_features: int, p: float = 0.5, bias: bool = True, *,
                 inference: str = "scale", n_samples: int = 100, activation: Callable[[Tensor], Tensor] | None = None,
                 per_sample: bool = False, mask_bias: bool = True, eval_seed: int | None = 0,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(p)
        _dc_check_inference(inference, n_samples, activation)
        lin = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.in_features, self.out_features = in_features, out_features
        self.weight = lin.weight
        if lin.bias is None:
            self.register_parameter("bias", None)  # as nn.Linear(bias=False)
        else:
            self.bias = lin.bias
        self.inference = inference
        self.n_samples = n_samples
        self.activation = activation
        self.per_sample = bool(per_sample)
        self.mask_bias = bool(mask_bias)
        self.eval_seed = eval_seed
        self.batch_shared_mask = not self.per_sample  # instance attribute shadows the ClassVar

    @classmethod
    def from_linear(cls, linear: nn.Linear, p: float = 0.5, **kwargs) -> DropConnectLinear:
        """Build a DropConnect layer that copies a trained ``nn.Linear``'s weights (and bias)."""
        layer = cls(linear.in_features, linear.out_features, p, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype, **kwargs)
        layer.load_state_dict({**linear.state_dict(), "p": layer.p}, strict=True)
        return layer

    def _act(self, u: Tensor) -> Tensor:
        return u if self.activation is None else self.activation(u)

    def gaussian_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(E[u], Var[u])`` of the pre-activation for input ``x`` (see :func:`dropconnect_gaussian_moments`)."""
        return dropconnect_gaussian_moments(x, self.weight, self.bias, self.p, mask_bias=self.mask_bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self._act(dropconnect_linear(x, self.weight, self.bias, self.p, training=True,
                                                per_sample=self.per_sample, mask_bias=self.mask_bias))
        gen = None
        if self.eval_seed is not None and self.inference != "scale":  # common random numbers
            gen = torch.Generator(device=x.device).manual_seed(int(self.eval_seed))
        return dropconnect_inference(x, self.weight, self.bias, self.p, inference=self.inference,
                                     n_samples=self.n_samples, activation=self.activation, per_sample=self.per_sample,
                                     mask_bias=self.mask_bias, generator=gen)

    def extra_repr(self) -> str:
        act = "None" if self.activation is None else getattr(self.activation, "__name__", repr(self.activation))
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{super().extra_repr()}, inference={self.inference!r}, n_samples={self.n_samples}, "
                f"per_sample={self.per_sample}, mask_bias={self.mask_bias}, activation={act}, eval_seed={self.eval_seed}")
