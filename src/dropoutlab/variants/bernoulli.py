"""Bernoulli dropout: standard (scale at test), inverted (scale in training), spatial.

Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov. "Dropout: a simple way to prevent
neural networks from overfitting." JMLR 15, 2014. Tompson, Goroshin, Jain, LeCun, Bregler.
"Efficient object localization using convolutional networks." CVPR 2015 (spatial dropout).

All three draw the mask by thresholding float32 uniforms (``u >= p`` keeps a unit with
probability 1 − p; thresholding ``uniform_`` is about 4x cheaper on CPU than the ``bernoulli_``
that ``F.dropout`` uses), apply it in one elementwise pass, and keep only the boolean mask for
backward (one byte per element; the backward is one pass too).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import DropoutBase, check_rank, register_dropout, validate_p
from .masks import apply_mask, bernoulli_mask, zeroed  # bernoulli_mask: re-exported

__all__ = [
    "InvertedDropout",
    "SpatialDropout",
    "StandardDropout",
    "bernoulli_mask",
    "inverted_dropout",
    "spatial_dropout",
    "standard_dropout",
]


def inverted_dropout(x: Tensor, p: float, *, training: bool, inplace: bool = False,
                     generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout: ``x · m / (1 − p)``, ``m ~ Bernoulli(1 − p)`` per element; identity at eval.

    Srivastava et al. (JMLR 2014) with the scaling moved into training, as ``torch.nn.Dropout``:
    E[y] = x and Var[y] = x²·p/(1 − p). Shape: any; output has the input's shape. Same
    distribution as ``torch.nn.functional.dropout``; about 2-3x faster on CPU (see module doc).
    ``p = 1`` gives ``x · 0`` (zeros, gradient zero).
    """
    p = validate_p(p, "inverted_dropout")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return zeroed(x, inplace)
    return apply_mask(x, bernoulli_mask(x.shape, p, x, generator), 1.0 / (1.0 - p), inplace)


def standard_dropout(x: Tensor, p: float, *, training: bool, inplace: bool = False,
                     generator: torch.Generator | None = None) -> Tensor:
    """Original dropout: ``x · m`` in training, ``x · (1 − p)`` at test (Srivastava et al. 2014, Fig. 2).

    ``m ~ Bernoulli(1 − p)`` per element, no scaling in training, so E[y_train] = (1 − p)·x =
    y_test. Shape: any; output has the input's shape.
    """
    p = validate_p(p, "standard_dropout")
    if not training:
        if p == 0.0:
            return x
        return x.mul_(1.0 - p) if inplace else x * (1.0 - p)
    if p == 0.0:
        return x
    return apply_mask(x, bernoulli_mask(x.shape, p, x, generator), 1.0, inplace)


def spatial_dropout(x: Tensor, p: float, *, training: bool, inplace: bool = False,
                    generator: torch.Generator | None = None) -> Tensor:
    """Spatial dropout: one mask per (sample, channel), shared over all spatial positions.

    Shape: ``(N, C, L)``, ``(N, C, H, W)`` or ``(N, C, D, H, W)`` (1d/2d/3d by rank); inverted
    scaling ``1 / (1 − p)``. Other ranks raise ``ValueError`` (no silent re-reading as in
    ``nn.Dropout2d``).
    """
    p = validate_p(p, "spatial_dropout")
    check_rank(x, (3, 4, 5), "spatial_dropout", "input (N, C, *spatial)")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return zeroed(x, inplace)
    mask = bernoulli_mask((x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2), p, x, generator)
    return apply_mask(x, mask, 1.0 / (1.0 - p), inplace)


@register_dropout(
    "inverted",
    family="Bernoulli",
    paper="Srivastava et al. 2014, JMLR 15 (inverted form as in torch.nn.Dropout)",
    equation="y = x·m/(1−p), m ~ Bernoulli(1−p)",
    kind="activation",
    mask="per element, fresh each call",
    test_time="identity",
)
class InvertedDropout(DropoutBase):
    """Inverted dropout: kept units scaled by ``1/(1−p)`` in training, identity at test.

    Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov, "Dropout: a simple way to prevent
    neural networks from overfitting", JMLR 15, 2014 (inverted form as in ``torch.nn.Dropout``):
    ``y = x·m/(1−p)``, ``m ~ Bernoulli(1−p)`` per element, fresh each call.

    Shape: any input, output of the same shape.
    """

    def forward(self, x: Tensor) -> Tensor:
        return inverted_dropout(x, self.p, training=self.training, inplace=self.inplace)


@register_dropout(
    "standard",
    family="Bernoulli",
    paper="Srivastava et al. 2014, JMLR 15; Hinton et al. 2012, arXiv:1207.0580",
    equation="train: y = x·m, m ~ Bernoulli(1−p); test: y = (1−p)·x",
    kind="activation",
    mask="per element, fresh each call",
    test_time="x·(1−p)",
)
class StandardDropout(DropoutBase):
    """Dropout as in the paper: no scaling in training, outputs scaled by ``1−p`` at test.

    Srivastava et al., JMLR 15, 2014 (Fig. 2); Hinton et al., arXiv:1207.0580, 2012:
    train ``y = x·m``, ``m ~ Bernoulli(1−p)``; test ``y = (1−p)·x``.

    Shape: any input, output of the same shape.
    """

    def forward(self, x: Tensor) -> Tensor:
        return standard_dropout(x, self.p, training=self.training, inplace=self.inplace)


@register_dropout(
    "spatial",
    family="Bernoulli",
    paper="Tompson et al. 2015, CVPR (SpatialDropout)",
    equation="y[n,c,...] = x[n,c,...]·m[n,c]/(1−p), m ~ Bernoulli(1−p)",
    kind="activation",
    mask="channels (one per sample and channel, shared over space)",
    test_time="identity",
)
class SpatialDropout(DropoutBase):
    """Drop whole feature maps of a 1d/2d/3d conv activation ``(N, C, *spatial)``.

    Tompson, Goroshin, Jain, LeCun, Bregler, "Efficient object localization using convolutional
    networks", CVPR 2015: ``y[n,c,...] = x[n,c,...]·m[n,c]/(1−p)``, ``m ~ Bernoulli(1−p)``.

    Shape: ``(N, C, L)``, ``(N, C, H, W)`` or ``(N, C, D, H, W)``; other ranks raise ``ValueError``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return spatial_dropout(x, self.p, training=self.training, inplace=self.inplace)
