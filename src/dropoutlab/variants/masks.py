"""Keep-masks and their application, shared by the dropout variants (one implementation each).

* :func:`bernoulli_mask` draws a boolean keep-mask by thresholding float32 uniforms;
* :func:`apply_mask` returns ``x · mask · scale`` keeping only the boolean mask for backward;
* :func:`scaled_mask` is its out-of-place forward, :func:`as_bytes` the uint8 view it multiplies by;
* :func:`zeroed` is ``x · 0`` (a drop probability of 1), still in the autograd graph.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["apply_mask", "as_bytes", "bernoulli_mask", "scaled_mask", "zeroed"]


def bernoulli_mask(shape: torch.Size | tuple[int, ...], p: float, like: Tensor,
                   generator: torch.Generator | None = None) -> Tensor:
    """Boolean keep-mask of ``shape``: each entry is True with probability 1 − p.

    The uniforms are always drawn in float32 (24 random bits, as ``torch.rand``), whatever the
    dtype of ``like``, so a half/bfloat16 input does not round ``p`` to its own precision. When
    ``shape`` is ``like``'s shape the mask takes ``like``'s memory format (channels-last stays
    channels-last, so the elementwise products below stay on the fast contiguous path).
    """
    if tuple(shape) == tuple(like.shape):
        u = torch.empty_like(like, dtype=torch.float32)
    else:
        u = torch.empty(shape, device=like.device, dtype=torch.float32)
    return u.uniform_(generator=generator) >= p


def as_bytes(mask: Tensor) -> Tensor:
    """A boolean mask as uint8 (a free reinterpretation; other dtypes unchanged)."""
    # On CPU, float x uint8 runs about 3x faster than float x bool (bool takes the dynamic-cast
    # path in TensorIterator); a bool tensor reinterpreted as uint8 is free and holds 0/1.
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


def scaled_mask(x: Tensor, mask: Tensor, scale: float) -> Tensor:
    """``x · mask · scale`` in one pass (out of place), for a mask of ``x``'s shape or broadcastable."""
    if mask.numel() < x.numel():
        # Broadcast mask (spatial: (N, C, 1, 1)): scale the small mask once, then one
        # same-dtype multiply over x, as F.dropout2d does.
        return x * mask.to(x.dtype).mul_(scale)
    if scale == 1.0:
        return x * as_bytes(mask)
    return torch.addcmul(x.new_zeros(()), x, as_bytes(mask), value=scale)


class _MaskedScale(torch.autograd.Function):
    """y = x · mask · scale, saving only the (broadcastable) boolean mask for backward.

    Forward and backward are each a single elementwise pass over ``x``. Written in the classic
    ``forward(ctx, ...)`` style: the ``setup_context`` style (needed for ``torch.func.vmap``)
    costs about 20 µs more per call on CPU, which is 3% of a 128×1024 forward+backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return scaled_mask(x, mask, scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (mask,) = ctx.saved_tensors
        return scaled_mask(grad, mask, ctx.scale), None, None


def apply_mask(x: Tensor, mask: Tensor, scale: float, inplace: bool) -> Tensor:
    """``x · mask · scale`` for a keep-mask of ``x``'s shape or a smaller broadcastable one."""
    if mask.numel() < x.numel():
        # Small broadcast mask (spatial: (N, C, 1, 1)): as F.dropout2d, multiply by the scaled
        # mask with built-in autograd, which saves only that small tensor (no Python Function).
        small = mask.to(x.dtype).mul_(scale)
        return x.mul_(small) if inplace else x * small
    if inplace:
        x = x.mul_(as_bytes(mask))
        return x.mul_(scale) if scale != 1.0 else x
    return _MaskedScale.apply(x, mask, scale)


def zeroed(x: Tensor, inplace: bool) -> Tensor:
    """``x · 0``: what a drop probability of 1 gives."""
    # p = 1: multiply by zero (as torch does) so the result stays in the autograd graph with a
    # zero gradient rather than a disconnected zeros_like.
    return x.mul_(0.0) if inplace else x * 0.0
