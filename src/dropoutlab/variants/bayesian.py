"""Variational dropout with learned rates: Kingma et al. (2015) and sparse VD (Molchanov et al. 2017).

Kingma, Salimans, Welling. "Variational dropout and the local reparameterization trick."
NeurIPS 2015. Molchanov, Ashukha, Vetrov. "Variational dropout sparsifies deep neural
networks." ICML 2017.

Both families put a fully factorised Gaussian on the weights, ``w_ij ~ N(θ_ij, α_ij·θ_ij²)``,
which is Gaussian dropout with rate ``α = p/(1−p)`` (``p`` the equivalent Bernoulli drop
probability, so ``p = α/(1+α)``). Training uses the local reparameterisation trick (LRT):
instead of sampling weights, the pre-activations are sampled,

    μ = x·θᵀ + b,    σ² = (x ⊙ x)·(α ⊙ θ ⊙ θ)ᵀ,    y = μ + sqrt(σ² + 1e-8)·ε,   ε ~ N(0, 1),

one ε per output element (per sample, per output unit), fresh each call. The ``1e-8`` keeps
the gradient of the square root finite at σ² = 0 (as in the authors' Theano code). At eval the
layers return the mean ``μ`` (sparse VD: with the pruned weights set to zero).

Sign and scale conventions (both layers):

* :meth:`kl` returns the approximate ``KL(q‖prior)`` summed over all weights, i.e. the
  *positive-direction* term of the negative ELBO; :meth:`regularizer` returns
  ``kl_weight · kl()`` and is meant to be **added** to the loss.
* Per-data-point scaling is the training loop's choice: with a loss that is the *mean* over a
  mini-batch the ELBO gives ``loss + KL/N`` (N = training-set size), so pass
  ``kl_weight=1/N`` (or set the ``kl_weight`` buffer from a warm-up schedule, as sparse VD does
  with β going 0 → 1). With a summed loss scaled by ``N`` (the sparse-VD code) keep 1.
* The log-uniform prior is improper, so the KL is only defined up to a constant. Kingma's form
  drops it (its value at α = 1 is −0.2457 per weight, so ``kl()`` can be negative; only its
  gradient matters). Molchanov's form uses ``C = −k1``, which makes KL → 0 as α → ∞ and KL ≥ 0.
* No tensor from a forward pass is cached on the module: ``kl()`` is recomputed from the
  parameters each call, so ``copy.deepcopy`` works and the call order does not matter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DropoutBase, register_dropout

__all__ = [
    "KINGMA_C1",
    "KINGMA_C2",
    "KINGMA_C3",
    "LOG_ALPHA_CLIP",
    "MOLCHANOV_K1",
    "MOLCHANOV_K2",
    "MOLCHANOV_K3",
    "SparseVariationalConv2d",
    "SparseVariationalLinear",
    "VariationalDropoutLinear",
    "kingma_kl",
    "local_reparam_conv2d",
    "local_reparam_linear",
    "molchanov_kl",
    "sparse_variational_linear",
    "sparsity_report",
    "variational_dropout_linear",
]

#: Kingma et al. (2015) polynomial fit of −KL for α ∈ (0, 1] (the paper’s KL approximation).
KINGMA_C1 = 1.16145124
KINGMA_C2 = -1.50204118
KINGMA_C3 = 0.58629921
#: Molchanov et al. (2017): sigmoid fit of −KL valid for every α.
MOLCHANOV_K1 = 0.63576
MOLCHANOV_K2 = 1.87320
MOLCHANOV_K3 = 1.48695
#: log α is clipped to [−8, 8] in sparse VD (authors' ``nets/layers.py``).
LOG_ALPHA_CLIP = 8.0
#: Added to the LRT variance before the square root (finite gradient at σ² = 0).
VAR_EPS = 1e-8
#: Added to θ² inside log θ² (sparse VD, as in the authors' code).
_THETA_EPS = 1e-8
#: α = σ(logit) reaches 1 only asymptotically: an initial p = 0.5 (α = 1) starts at this α.
ALPHA_INIT_MAX = 0.999


# --------------------------------------------------------------------------- functional


def kingma_kl(log_alpha: Tensor) -> Tensor:
    """Elementwise approximate ``KL(q‖prior)`` of Kingma et al. 2015, constant dropped.

    ``−KL ≈ const + 0.5·log α + c1·α + c2·α² + c3·α³`` with ``c1 = 1.16145124``,
    ``c2 = −1.50204118``, ``c3 = 0.58629921``; returned is ``−(0.5·log α + c1·α + c2·α² + c3·α³)``.
    The fit is only valid for α ≤ 1 (p ≤ 0.5). Shape: same as ``log_alpha``.
    """
    alpha = log_alpha.exp()
    return -(0.5 * log_alpha + KINGMA_C1 * alpha + KINGMA_C2 * alpha**2 + KINGMA_C3 * alpha**3)


def molchanov_kl(log_alpha: Tensor) -> Tensor:
    """Elementwise approximate ``KL(q‖prior)`` of Molchanov et al. 2017, KL ≥ 0.

    ``−KL ≈ k1·σ(k2 + k3·log α) − 0.5·log(1 + 1/α) − k1`` with ``k1 = 0.63576``,
    ``k2 = 1.87320``, ``k3 = 1.48695``; ``log(1 + 1/α)`` is computed as ``softplus(−log α)``.
    """
    neg_kl = (MOLCHANOV_K1 * torch.sigmoid(MOLCHANOV_K2 + MOLCHANOV_K3 * log_alpha)
              - 0.5 * F.softplus(-log_alpha) - MOLCHANOV_K1)
    return -neg_kl


def _lrt_noise(mu: Tensor, var: Tensor, generator: torch.Generator | None) -> Tensor:
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.sqrt(var + VAR_EPS) * eps


def local_reparam_linear(x: Tensor, weight: Tensor, bias: Tensor | None, weight_var: Tensor, *,
                         training: bool, generator: torch.Generator | None = None) -> Tensor:
    """Local reparameterisation for a linear layer with independent Gaussian weights.

    ``y = x·θᵀ + b + sqrt((x ⊙ x)·vᵀ + 1e-8)·ε``, ``ε ~ N(0, 1)`` per output element; eval:
    ``x·θᵀ + b``. Shapes: ``x (*, in)``, ``weight, weight_var (out, in)``, output ``(*, out)``.
    """
    mu = F.linear(x, weight, bias)
    if not training:
        return mu
    return _lrt_noise(mu, F.linear(x * x, weight_var), generator)


def local_reparam_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, weight_var: Tensor, *,
                         training: bool, stride=1, padding=0, dilation=1, groups: int = 1,
                         generator: torch.Generator | None = None) -> Tensor:
    """Local reparameterisation for ``conv2d``: mean ``conv(x, θ) + b``, variance ``conv(x², v)``.

    Shapes: ``x (N, C_in, H, W)``, ``weight, weight_var (C_out, C_in/groups, kH, kW)``.
    """
    mu = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    if not training:
        return mu
    return _lrt_noise(mu, F.conv2d(x * x, weight_var, None, stride, padding, dilation, groups), generator)


def variational_dropout_linear(x: Tensor, weight: Tensor, bias: Tensor | None, log_alpha: Tensor, *,
                               training: bool, generator: torch.Generator | None = None) -> Tensor:
    """Kingma et al. variational dropout (LRT): ``w ~ N(θ, α·θ²)``.

    ``log_alpha`` broadcasts against ``weight (out, in)``: shape ``()`` (one α per layer),
    ``(in,)`` (one per input unit) or ``(out, in)`` (one per weight). Eval returns ``x·θᵀ + b``.
    """
    return local_reparam_linear(x, weight, bias, log_alpha.exp() * weight * weight,
                                training=training, generator=generator)


def _sparse_log_alpha(weight: Tensor, log_sigma2: Tensor) -> Tensor:
    log_alpha = log_sigma2 - torch.log(weight * weight + _THETA_EPS)
    return log_alpha.clamp(-LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)


def sparse_variational_linear(x: Tensor, weight: Tensor, bias: Tensor | None, log_sigma2: Tensor, *,
                              training: bool, threshold: float = 3.0,
                              generator: torch.Generator | None = None) -> Tensor:
    """Sparse VD linear layer (Molchanov et al. 2017), additive reparameterisation.

    ``log α = clip(log σ² − log(θ² + 1e-8), −8, 8)``; training: LRT with variance ``α·θ²`` (the
    clipped α); eval: ``x·(θ ⊙ 1[log α < threshold])ᵀ + b``.
    """
    log_alpha = _sparse_log_alpha(weight, log_sigma2)
    if not training:
        return F.linear(x, weight * (log_alpha < threshold), bias)
    return local_reparam_linear(x, weight, bias, log_alpha.exp() * weight * weight,
                                training=True, generator=generator)


# --------------------------------------------------------------------------- helpers


def _check_features(value: int, what: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {what} must be a positive int, got {value!r}")
    return value


def _check_last_dim(x: Tensor, in_features: int, name: str) -> None:
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise ValueError(f"{name}: input must have shape (*, {in_features}), got {tuple(x.shape)}")


def _check_weight(value: float, name: str) -> float:
    value = float(value)
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{name}: kl_weight must be a finite number >= 0, got {value!r}")
    return value


def _check_threshold(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: threshold (on log α) must be a finite number, got {value!r}")
    return value


def _init_linear(weight: Tensor, bias: Tensor | None) -> None:
    """The initialisation of ``torch.nn.Linear`` / ``Conv2d`` (Kaiming-uniform, a = √5)."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(bias, -bound, bound)


# --------------------------------------------------------------------------- Kingma VD

_GRANULARITIES = ("layer", "unit", "weight")


@register_dropout(
    "variational",
    family="variational (Bayesian)",
    paper="Kingma, Salimans, Welling 2015, NeurIPS (variational dropout, local reparameterization trick)",
    equation="y = xθᵀ + b + sqrt((x²)(α θ²)ᵀ)·ε, ε ~ N(0,1); α = p/(1−p) = σ(logit) ≤ 1; "
             "KL ≈ −(0.5 log α + c1 α + c2 α² + c3 α³)",
    kind="layer",
    mask="Gaussian, per sample and output unit via LRT, fresh each call",
    test_time="mean xθᵀ + b",
    learned=True,
)
class VariationalDropoutLinear(DropoutBase):
    """Linear layer with Kingma et al. (2015) variational dropout and a learned rate.

    Weights ``w_ij ~ N(θ_ij, α·θ_ij²)``, sampled through the local reparameterisation trick
    (module docstring). ``α = p/(1−p)`` is parameterised as ``α = σ(alpha_logit)`` so that
    ``α < 1`` (``p < 0.5``) always holds: Kingma's KL fit is only valid there. ``σ`` reaches 1
    only asymptotically, so an initial ``p = 0.5`` starts at ``α = 0.999`` (p ≈ 0.49975).

    Args:
        in_features, out_features, bias: as :class:`torch.nn.Linear` (same initialisation of θ, b).
        p: initial equivalent drop probability, in ``(0, 0.5]``.
        granularity: ``"layer"`` one α, ``"unit"`` one α per *input* unit (Gaussian dropout on the
            layer's inputs, Kingma's variant with per-unit rates), ``"weight"`` one α per weight.
        kl_weight: factor applied by :meth:`regularizer` (a 0-dim buffer, so a warm-up schedule
            can change it and it is checkpointed).

    Shape: input ``(*, in_features)``, output ``(*, out_features)``.
    :attr:`p` is the tensor of equivalent drop probabilities (graph-connected), :attr:`rate`
    their mean as a float. Eval returns the mean ``x·θᵀ + b`` (deterministic).
    """

    learned = True

    def __init__(self, in_features: int, out_features: int, p: float = 0.5, bias: bool = True,
                 granularity: str = "layer", kl_weight: float = 1.0) -> None:
        super().__init__(p=None)
        name = self.variant_name
        self.in_features = _check_features(in_features, "in_features", name)
        self.out_features = _check_features(out_features, "out_features", name)
        if granularity not in _GRANULARITIES:
            raise ValueError(f"{name}: granularity must be one of {_GRANULARITIES}, got {granularity!r}")
        self.granularity = granularity
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        shape = {"layer": (), "unit": (in_features,), "weight": (out_features, in_features)}[granularity]
        self.alpha_logit = nn.Parameter(torch.empty(shape))
        self.register_buffer("kl_weight", torch.tensor(_check_weight(kl_weight, name)))
        _init_linear(self.weight, self.bias)
        self.set_p(p)

    def _alpha_logit_for(self, p: float | Tensor) -> float:
        value = float(p)
        if not (0.0 < value <= 0.5):
            raise ValueError(f"{self.variant_name}: drop probability p must be in (0, 0.5] "
                             f"(α = p/(1−p) ≤ 1, where Kingma's KL fit holds), got {p!r}")
        alpha = min(value / (1.0 - value), ALPHA_INIT_MAX)
        return math.log(alpha) - math.log1p(-alpha)

    def set_p(self, p: float) -> None:
        """Set every α to ``p/(1−p)`` (capped at 0.999 for p = 0.5)."""
        with torch.no_grad():
            self.alpha_logit.fill_(self._alpha_logit_for(p))

    @property
    def log_alpha(self) -> Tensor:
        """``log α = log σ(alpha_logit)`` (≤ 0), shape ``()``, ``(in,)`` or ``(out, in)``."""
        return F.logsigmoid(self.alpha_logit)

    @property
    def alpha(self) -> Tensor:
        return torch.sigmoid(self.alpha_logit)

    @property
    def p(self) -> Tensor:
        """Equivalent drop probabilities ``α/(1+α)`` (graph-connected tensor)."""
        alpha = self.alpha
        return alpha / (1.0 + alpha)

    @property
    def rate(self) -> float:
        return float(self.p.detach().mean())

    def kl(self) -> Tensor:
        """Approximate KL summed over every weight (Kingma constants, constant dropped)."""
        per_alpha = kingma_kl(self.log_alpha)
        multiplicity = self.weight.numel() // max(per_alpha.numel(), 1)
        return per_alpha.sum() * multiplicity

    def regularizer(self) -> Tensor:
        """``kl_weight · kl()``, to be added to the loss."""
        return self.kl_weight * self.kl()

    def forward(self, x: Tensor) -> Tensor:
        _check_last_dim(x, self.in_features, self.variant_name)
        return variational_dropout_linear(x, self.weight, self.bias, self.log_alpha, training=self.training)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, granularity={self.granularity}, p={self.rate:.4g}")


# --------------------------------------------------------------------------- sparse VD


class _SparseVariationalBase(DropoutBase):
    """Shared parameters and reports of the sparse VD layers (θ, log σ², threshold, kl_weight)."""

    learned = True

    def _init_sparse(self, weight_shape: tuple[int, ...], out: int, bias: bool, threshold: float,
                     kl_weight: float, log_sigma2_init: float) -> None:
        name = self.variant_name
        self.threshold = _check_threshold(threshold, name)
        init = float(log_sigma2_init)
        if not math.isfinite(init):
            raise ValueError(f"{name}: log_sigma2_init must be finite, got {log_sigma2_init!r}")
        self.weight = nn.Parameter(torch.empty(weight_shape))
        self.bias = nn.Parameter(torch.empty(out)) if bias else None
        self.log_sigma2 = nn.Parameter(torch.full(weight_shape, init))
        self.register_buffer("kl_weight", torch.tensor(_check_weight(kl_weight, name)))
        _init_linear(self.weight, self.bias)

    @property
    def log_alpha(self) -> Tensor:
        """``clip(log σ² − log(θ² + 1e-8), −8, 8)``, the shape of the weight (graph-connected)."""
        return _sparse_log_alpha(self.weight, self.log_sigma2)

    @property
    def p(self) -> Tensor:
        """Equivalent Gaussian-dropout drop probabilities ``α/(1+α) = σ(log α)`` per weight."""
        return torch.sigmoid(self.log_alpha)

    @property
    def rate(self) -> float:
        return float(self.p.detach().mean())

    def set_p(self, p: float) -> None:
        """Set every α to ``p/(1−p)`` by moving log σ² (θ unchanged); p in (0, 1)."""
        value = float(p)
        if not 0.0 < value < 1.0:
            raise ValueError(f"{self.variant_name}: drop probability p must be in (0, 1), got {p!r}")
        with torch.no_grad():
            self.log_sigma2.copy_(math.log(value) - math.log1p(-value)
                                  + torch.log(self.weight * self.weight + _THETA_EPS))

    def keep_mask(self) -> Tensor:
        """Boolean mask of the weights kept at eval: ``log α < threshold``."""
        with torch.no_grad():
            return self.log_alpha < self.threshold

    def sparsity(self) -> dict[str, float | int]:
        """``{"pruned", "total", "fraction"}``: weights with ``log α ≥ threshold`` (zero at eval)."""
        keep = self.keep_mask()
        total = keep.numel()
        pruned = total - int(keep.sum())
        return {"pruned": pruned, "total": total, "fraction": pruned / total if total else 0.0}

    def kl(self) -> Tensor:
        """Approximate KL (Molchanov constants, KL → 0 as α → ∞) summed over weights, clipped log α."""
        return molchanov_kl(self.log_alpha).sum()

    def regularizer(self) -> Tensor:
        """``kl_weight · kl()``, to be added to the loss."""
        return self.kl_weight * self.kl()

    def _sparse_repr(self) -> str:
        return f"bias={self.bias is not None}, threshold={self.threshold:g}, p={self.rate:.4g}"


@register_dropout(
    "sparse_variational",
    family="variational (Bayesian)",
    paper="Molchanov, Ashukha, Vetrov 2017, ICML (variational dropout sparsifies deep neural networks)",
    equation="w ~ N(θ, σ²), log α = clip(log σ² − log θ², −8, 8); LRT in training; "
             "KL ≈ −(k1 σ(k2 + k3 log α) − 0.5 log(1 + 1/α) − k1)",
    kind="layer",
    mask="Gaussian, per sample and output unit via LRT, fresh each call",
    test_time="x(θ·1[log α < threshold])ᵀ + b",
    learned=True,
)
class SparseVariationalLinear(_SparseVariationalBase):
    """Linear layer with sparse variational dropout (Molchanov, Ashukha, Vetrov, ICML 2017).

    Additive reparameterisation: the parameters are θ and ``log σ²`` (initialised to −10, the
    authors' ``ard_init``), ``log α = clip(log σ² − log(θ² + 1e-8), −8, 8)``. Training samples
    pre-activations by the LRT with variance ``α·θ²`` (the clipped α, as in the authors' code);
    eval zeroes the weights with ``log α ≥ threshold`` (the authors' ``T.ge``; default 3) and
    returns ``x·θ̃ᵀ + b``. :meth:`sparsity` reports the pruned fraction.

    Shape: input ``(*, in_features)``, output ``(*, out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, threshold: float = 3.0,
                 kl_weight: float = 1.0, log_sigma2_init: float = -10.0) -> None:
        super().__init__(p=None)
        self.in_features = _check_features(in_features, "in_features", self.variant_name)
        self.out_features = _check_features(out_features, "out_features", self.variant_name)
        self._init_sparse((out_features, in_features), out_features, bias, threshold, kl_weight,
                          log_sigma2_init)

    def forward(self, x: Tensor) -> Tensor:
        _check_last_dim(x, self.in_features, self.variant_name)
        return sparse_variational_linear(x, self.weight, self.bias, self.log_sigma2,
                                         training=self.training, threshold=self.threshold)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " + self._sparse_repr()


@register_dropout(
    "sparse_variational_conv2d",
    family="variational (Bayesian)",
    paper="Molchanov, Ashukha, Vetrov 2017, ICML (sparse VD, convolutional layers)",
    equation="y = conv(x, θ) + b + sqrt(conv(x², α θ²))·ε; log α = clip(log σ² − log θ², −8, 8)",
    kind="layer",
    mask="Gaussian, per sample and output element via LRT, fresh each call",
    test_time="conv(x, θ·1[log α < threshold]) + b",
    learned=True,
)
class SparseVariationalConv2d(_SparseVariationalBase):
    """2-d convolution with sparse variational dropout (Molchanov et al. 2017).

    Same parameterisation, KL and pruning rule as :class:`SparseVariationalLinear`; the LRT
    variance is ``conv2d(x², α·θ²)``. Shape: ``(N, C_in, H, W) → (N, C_out, H', W')``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 threshold: float = 3.0, kl_weight: float = 1.0, log_sigma2_init: float = -10.0) -> None:
        super().__init__(p=None)
        name = self.variant_name
        self.in_channels = _check_features(in_channels, "in_channels", name)
        self.out_channels = _check_features(out_channels, "out_channels", name)
        self.groups = _check_features(groups, "groups", name)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels and out_channels must be divisible by groups, "
                             f"got {in_channels}, {out_channels}, groups={groups}")
        self.kernel_size = nn.modules.utils._pair(kernel_size)
        self.stride = nn.modules.utils._pair(stride)
        self.padding = nn.modules.utils._pair(padding)
        self.dilation = nn.modules.utils._pair(dilation)
        for what, value in (("kernel_size", self.kernel_size), ("stride", self.stride),
                            ("dilation", self.dilation)):
            if any(int(v) < 1 for v in value):
                raise ValueError(f"{name}: {what} must be positive, got {value!r}")
        self._init_sparse((out_channels, in_channels // groups, *self.kernel_size), out_channels, bias,
                          threshold, kl_weight, log_sigma2_init)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.variant_name}: input must have shape (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        log_alpha = self.log_alpha
        conv = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        if not self.training:
            return F.conv2d(x, self.weight * (log_alpha < self.threshold), self.bias, **conv)
        return local_reparam_conv2d(x, self.weight, self.bias, log_alpha.exp() * self.weight * self.weight,
                                    training=True, **conv)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, " + self._sparse_repr())


def sparsity_report(model: nn.Module) -> dict[str, dict[str, float | int]]:
    """Per sparse-VD layer ``{"pruned", "total", "fraction"}`` plus a ``"total"`` entry.

    The total also carries ``"compression"`` = total / kept weights (Molchanov's ×-factor,
    sparse-VD layers only).
    """
    report: dict[str, dict[str, float | int]] = {}
    pruned = total = 0
    for name, module in model.named_modules():
        if isinstance(module, _SparseVariationalBase):
            entry = module.sparsity()
            report[name or "(root)"] = entry
            pruned += int(entry["pruned"])
            total += int(entry["total"])
    kept = total - pruned
    report["total"] = {"pruned": pruned, "total": total, "fraction": pruned / total if total else 0.0,
                       "compression": total / kept if kept else math.inf}
    return report
