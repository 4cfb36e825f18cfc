"""Continuous and SELU-preserving dropout: Gaussian, Uout (uniform), alpha dropout.

Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov. "Dropout: a simple way to prevent neural
networks from overfitting." JMLR 15, 2014, §10 (multiplicative Gaussian noise).
Li, Chen, Hu, Yang. "Understanding the disharmony between dropout and batch normalization by
variance shift." CVPR 2019 (Uout).
Klambauer, Unterthiner, Mayr, Hochreiter. "Self-normalizing neural networks." NeurIPS 2017 (alpha
dropout).

All three are identity at eval and keep E[y] = x in training (alpha dropout keeps the mean and
variance of a zero-mean, unit-variance input instead). ``p`` is always the *drop* probability;
Uout has no drop probability and is parameterised by its noise half-width ``beta``.

Variance bookkeeping (multiplicative noise s with E[s] = 1, unit x with mean c and variance v):
Var_train[x·s] = (1 + Var s)(c² + v) − c², Var_test = v.

=================  ====================  =====================
variant            noise s               Var s
=================  ====================  =====================
inverted (p)       m/(1−p), m~Bern(1−p)  p/(1−p)
gaussian (p)       N(1, p/(1−p))         p/(1−p)
uout (β)           1 + U(−β, β)          β²/3
=================  ====================  =====================
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import DropoutBase, register_dropout, validate_p
from .masks import as_bytes, bernoulli_mask, scaled_mask, zeroed

__all__ = [
    "SELU_ALPHA",
    "SELU_ALPHA_PRIME",
    "SELU_SCALE",
    "AlphaDropout",
    "GaussianDropout",
    "Uout",
    "alpha_dropout",
    "alpha_dropout_affine",
    "beta_to_rate",
    "gaussian_dropout",
    "gaussian_std",
    "rate_to_beta",
    "uout",
    "validate_beta",
]

#: SELU constants (Klambauer et al. 2017, Eq. 2): λ and α.
SELU_SCALE = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
#: α' = −λα, the SELU saturation value that dropped units are set to.
SELU_ALPHA_PRIME = -SELU_SCALE * SELU_ALPHA

_NOISE_SHAPES = ("element", "channel")


# --------------------------------------------------------------------------------------------
# Gaussian dropout
# --------------------------------------------------------------------------------------------


def gaussian_std(p: float) -> float:
    """Standard deviation σ = sqrt(p/(1−p)) of Gaussian dropout's multiplicative noise.

    With drop probability ``p`` this matches the variance of inverted Bernoulli dropout's noise
    m/(1−p) (Srivastava et al. 2014 §10, who write σ² = (1−q)/q with q the *retain* rate).
    """
    p = validate_p(p, "gaussian", allow_one=False)
    return math.sqrt(p / (1.0 - p))


def gaussian_dropout(x: Tensor, p: float, *, training: bool, inplace: bool = False,
                     generator: torch.Generator | None = None) -> Tensor:
    """Multiplicative Gaussian noise: ``y = x · r``, ``r ~ N(1, σ²)``, σ² = p/(1−p); identity at eval.

    Srivastava et al., JMLR 15, 2014, §10. Same mean and variance as inverted Bernoulli dropout with
    drop probability ``p``: E[y] = x, Var[y] = x²·p/(1−p). ``p`` must be in [0, 1): ``p = 1``
    would need infinite variance. Shape: any; one noise value per element, fresh each call.
    """
    p = validate_p(p, "gaussian", allow_one=False)
    if not training or p == 0.0:
        return x
    noise = torch.empty_like(x).normal_(1.0, math.sqrt(p / (1.0 - p)), generator=generator)
    return x.mul_(noise) if inplace else x * noise


@register_dropout(
    "gaussian",
    family="Gaussian",
    paper="Srivastava et al. 2014, JMLR 15, §10 (multiplicative Gaussian noise)",
    equation="y = x·r, r ~ N(1, p/(1−p))",
    kind="activation",
    mask="per element, fresh each call",
    test_time="identity",
)
class GaussianDropout(DropoutBase):
    """Gaussian dropout: multiply by ``r ~ N(1, p/(1−p))`` in training, identity at test.

    Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov, "Dropout: a simple way to prevent
    neural networks from overfitting", JMLR 15, 2014, §10: ``y = x·r``, ``r ~ N(1, σ²)`` with
    σ² = p/(1−p), so the noise has the mean and variance of inverted Bernoulli dropout. ``p`` is
    the equivalent drop probability, in [0, 1).

    Shape: any input, output of the same shape.
    """

    allow_p_one = False

    def forward(self, x: Tensor) -> Tensor:
        return gaussian_dropout(x, self.p, training=self.training, inplace=self.inplace)


# --------------------------------------------------------------------------------------------
# Uout
# --------------------------------------------------------------------------------------------


def validate_beta(beta: float | Tensor, name: str = "uout") -> float:
    """Return ``beta`` as a float, or raise ``ValueError`` naming the variant and ``beta``."""
    value = float(beta)
    if not (value >= 0.0 and math.isfinite(value)):  # also rejects NaN
        raise ValueError(f"{name}: noise half-width beta must be a finite number >= 0, got {beta!r}")
    return value


def beta_to_rate(beta: float) -> float:
    """Bernoulli-equivalent drop rate of Uout(β): ``p = β²/(3 + β²)``.

    Inverted dropout with this ``p`` has the same noise variance, p/(1−p) = β²/3, hence the same
    training-time variance (1 + β²/3)(c² + v) − c² and the same variance shift Δ as Uout(β) for
    every unit mean c and variance v (Li et al. 2019).
    """
    b2 = validate_beta(beta) ** 2
    return b2 / (3.0 + b2)


def rate_to_beta(p: float) -> float:
    """Inverse of :func:`beta_to_rate`: ``β = sqrt(3p/(1−p))`` for ``p`` in [0, 1)."""
    p = validate_p(p, "uout", allow_one=False)
    return math.sqrt(3.0 * p / (1.0 - p))


def _check_noise_shape(noise_shape: str | None, name: str = "uout") -> str:
    shape = "element" if noise_shape is None else noise_shape
    if shape not in _NOISE_SHAPES:
        raise ValueError(f"{name}: noise_shape must be None, 'element' or 'channel', got {noise_shape!r}")
    return shape


def _noise_size(x: Tensor, noise_shape: str, name: str) -> tuple[int, ...]:
    if noise_shape == "element":
        return tuple(x.shape)
    if x.dim() < 2:
        raise ValueError(f"{name}: noise_shape='channel' needs an input (N, C, *), got shape {tuple(x.shape)}")
    return (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)


def uout(x: Tensor, beta: float, *, training: bool, noise_shape: str | None = None, inplace: bool = False,
         generator: torch.Generator | None = None) -> Tensor:
    """Uout: ``y = x · (1 + r)``, ``r ~ U(−β, β)``; identity at eval.

    Li, Chen, Hu, Yang, CVPR 2019. E[y] = x and Var[1 + r] = β²/3, so before BatchNorm the
    train/test variance ratio is Δ = 3/(3 + β²) for a zero-mean unit (vs Δ = 1 − p for dropout).

    Shape: any. ``noise_shape=None``/``"element"`` (the paper's per-unit r) draws one r per
    element; ``"channel"`` draws one per (sample, channel) of an ``(N, C, *)`` input and shares
    it over the remaining dimensions. Fresh noise each call.
    """
    beta = validate_beta(beta)
    size = _noise_size(x, _check_noise_shape(noise_shape), "uout")
    if not training or beta == 0.0:
        return x
    noise = torch.empty_like(x) if size == tuple(x.shape) else x.new_empty(size)
    noise.uniform_(1.0 - beta, 1.0 + beta, generator=generator)
    return x.mul_(noise) if inplace else x * noise


@register_dropout(
    "uout",
    family="uniform noise",
    paper="Li, Chen, Hu, Yang 2019, CVPR (variance shift; Uout)",
    equation="y = x·(1+r), r ~ U(−β, β); rate = β²/(3+β²)",
    kind="activation",
    mask="per element, fresh each call (noise_shape='channel': per sample and channel)",
    test_time="identity",
)
class Uout(DropoutBase):
    """Uout: uniform multiplicative noise ``y = x·(1 + r)``, ``r ~ U(−β, β)``; identity at test.

    Li, Chen, Hu, Yang, "Understanding the disharmony between dropout and batch normalization by
    variance shift", CVPR 2019. Var[1 + r] = β²/3, so the variance shift before BatchNorm is
    Δ = 3/(3 + β²) for a zero-mean unit, much closer to 1 than dropout's 1 − p.

    Uout has no drop probability. ``beta`` lives in a 0-dim buffer (checkpointed); there is no
    ``p`` buffer (``p`` is a read-only tensor derived from β). For logging and schedules,
    :attr:`rate` reports the *Bernoulli-equivalent drop rate* ``p = β²/(3 + β²)``: inverted
    dropout with that ``p`` has the same noise variance (p/(1−p) = β²/3), the same training-time
    variance and the same Δ. :meth:`set_p` inverts it (β = sqrt(3p/(1−p)), ``p < 1``), so a rate
    schedule drives β. ``Uout(p=...)`` builds the module from that equivalent rate (for
    ``make_dropout(name, p=...)``); give ``beta`` or ``p``, not both.

    Args:
        beta: noise half-width β ≥ 0 (default 0.1, the value usually quoted for the paper;
            a value from memory, not verified against the paper). β > 1 is allowed but lets 1 + r change sign
            (equivalent rate above 0.25).
        noise_shape: ``None``/``"element"`` (per element, the paper) or ``"channel"`` (one r per
            sample and channel of an ``(N, C, *)`` input).
        inplace: multiply the input in place.
        p: alternative to ``beta``: the Bernoulli-equivalent drop rate in [0, 1).

    Shape: any input (``(N, C, *)`` for ``noise_shape="channel"``), output of the same shape.
    """

    allow_p_one = False
    default_beta = 0.1

    def __init__(self, beta: float | None = None, noise_shape: str | None = None, inplace: bool = False,
                 *, p: float | None = None) -> None:
        super().__init__(p=None, inplace=inplace)
        if beta is not None and p is not None:
            raise ValueError("uout: give beta or p (the equivalent drop rate), not both")
        if p is not None:
            value = rate_to_beta(p)
        else:
            value = validate_beta(self.default_beta if beta is None else beta)
        self.noise_shape = _check_noise_shape(noise_shape)
        self.register_buffer("beta", torch.tensor(value, dtype=torch.float32))

    @property
    def rate(self) -> float:
        """Bernoulli-equivalent drop rate β²/(3 + β²) (see the class docstring)."""
        return beta_to_rate(float(self.beta))

    @property
    def p(self) -> Tensor:
        """Read-only Bernoulli-equivalent drop rate β²/(3 + β²) as a 0-dim tensor.

        Derived from the ``beta`` buffer, not stored (the state_dict holds only ``beta``); it lets
        code that looks for a ``p`` (e.g. the schedules' ``is_schedulable``) find Uout. Change it
        with :meth:`set_p`; assigning ``module.p`` raises ``AttributeError``.
        """
        b2 = self.beta.square()
        return b2 / (3.0 + b2)

    def set_p(self, p: float) -> None:
        """Set β from a Bernoulli-equivalent drop rate ``p`` in [0, 1) (used by schedules)."""
        self.beta.fill_(rate_to_beta(self.check_p(p)))

    def set_beta(self, beta: float) -> None:
        """Set the noise half-width β in place."""
        self.beta.fill_(validate_beta(beta))

    def forward(self, x: Tensor) -> Tensor:
        return uout(x, self.beta, training=self.training, noise_shape=self.noise_shape, inplace=self.inplace)

    def extra_repr(self) -> str:
        text = f"beta={float(self.beta):.4g}"
        if self.noise_shape != "element":
            text += f", noise_shape={self.noise_shape!r}"
        if self.inplace:
            text += ", inplace=True"
        return text


# --------------------------------------------------------------------------------------------
# Alpha dropout
# --------------------------------------------------------------------------------------------


def alpha_dropout_affine(p: float) -> tuple[float, float]:
    """Affine correction ``(a, b)`` of alpha dropout for drop probability ``p`` in [0, 1).

    a = ((1−p)(1 + p·α'²))^(−1/2), b = −a·α'·p (Klambauer et al. 2017, §"Alpha-dropout").
    """
    p = validate_p(p, "alpha", allow_one=False)
    a = ((1.0 - p) * (1.0 + p * SELU_ALPHA_PRIME**2)) ** -0.5
    return a, -a * SELU_ALPHA_PRIME * p


class _AlphaMasked(torch.autograd.Function):
    """y = a·x + b where mask, a·α' + b elsewhere; saves only the boolean mask for backward."""

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor, a: float, b: float) -> Tensor:
        ctx.save_for_backward(mask)
        ctx.a = a
        out = torch.addcmul(x.new_full((), b), x, as_bytes(mask), value=a)  # kept: a·x + b, dropped: b
        return out.add_(as_bytes(~mask), alpha=a * SELU_ALPHA_PRIME)  # dropped: a·α' + b

    @staticmethod
    def backward(ctx, grad: Tensor):
        (mask,) = ctx.saved_tensors
        return scaled_mask(grad, mask, ctx.a), None, None, None


def alpha_dropout(x: Tensor, p: float, *, training: bool, inplace: bool = False,
                  generator: torch.Generator | None = None) -> Tensor:
    """Alpha dropout for SELU networks; identity at eval.

    Klambauer, Unterthiner, Mayr, Hochreiter, NeurIPS 2017: dropped units are set to the SELU
    saturation value α' = −λα, then ``y = a·(x·m + α'·(1 − m)) + b`` with ``m ~ Bernoulli(1−p)``,
    a = ((1−p)(1 + p·α'²))^(−1/2), b = −a·α'·p, so an input with mean 0 and variance 1 keeps mean
    0 and variance 1. Same distribution as ``torch.nn.functional.alpha_dropout(x, p,
    training=True)`` (whose ``training`` defaults to False; here it is required). ``p = 1`` gives
    ``x · 0``, the limit of the formula and torch's choice. Shape: any; per element, fresh each call.
    """
    p = validate_p(p, "alpha")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return zeroed(x, inplace)
    a, b = alpha_dropout_affine(p)
    mask = bernoulli_mask(x.shape, p, x, generator)
    if inplace:
        x = x.mul_(as_bytes(mask)).mul_(a).add_(b)
        return x.add_(as_bytes(~mask), alpha=a * SELU_ALPHA_PRIME)
    return _AlphaMasked.apply(x, mask, a, b)


@register_dropout(
    "alpha",
    family="SELU",
    paper="Klambauer, Unterthiner, Mayr, Hochreiter 2017, NeurIPS (Self-normalizing neural networks)",
    equation="y = a·(x·m + α'(1−m)) + b, m ~ Bernoulli(1−p), α' = −λα, "
             "a = ((1−p)(1+pα'²))^(−1/2), b = −a·α'·p",
    kind="activation",
    mask="per element, fresh each call",
    test_time="identity",
)
class AlphaDropout(DropoutBase):
    """Alpha dropout: keeps zero mean and unit variance of SELU activations; identity at test.

    Klambauer, Unterthiner, Mayr, Hochreiter, "Self-normalizing neural networks", NeurIPS 2017:
    ``y = a·(x·m + α'·(1−m)) + b``, ``m ~ Bernoulli(1−p)``, α' = −λα ≈ −1.7581,
    a = ((1−p)(1 + p·α'²))^(−1/2), b = −a·α'·p. Use it with SELU activations and LeCun-normal
    initialisation; after ReLU it does not preserve anything useful.

    Shape: any input, output of the same shape.
    """

    def forward(self, x: Tensor) -> Tensor:
        return alpha_dropout(x, self.p, training=self.training, inplace=self.inplace)
