"""Input-dependent dropout: standout, attention-based dropout (ADL) and meta dropout.

Ba, Frey. "Adaptive dropout for training deep neural networks." NeurIPS 2013 (standout).
Choe, Shim. "Attention-based dropout layer for weakly supervised object localization." CVPR 2019.
Lee, Nam, Yang, Hwang. "Meta Dropout: learning to perturb latent features for generalization."
ICLR 2020.

None of the three has a single Bernoulli drop probability per layer; each module documents
what its ``p`` / :attr:`rate` means.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DropoutBase, check_rank, register_dropout, validate_p

__all__ = [
    "ADL",
    "MetaDropout",
    "Standout",
    "adl",
    "adl_maps",
    "meta_dropout",
    "standout",
    "standout_keep_prob",
]


def _check_finite(value: float, what: str, name: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: {what} must be a finite number, got {value!r}")
    return value


# --------------------------------------------------------------------------- standout


def standout_keep_prob(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, alpha: float = 1.0,
                       beta: float = 0.0, gate_bias: bool = False) -> Tensor:
    """Standout keep probabilities ``π = σ(α·(x·Wᵀ) + β)`` (tied form π = αW + β of Ba & Frey 2013).

    The bias of the layer enters the gate only with ``gate_bias=True`` (then ``π = σ(α·z + β)``
    with ``z = x·Wᵀ + b``). Shapes: ``x (*, in)``, ``weight (out, in)``, output ``(*, out)``.
    """
    pre = F.linear(x, weight, bias if gate_bias else None)
    return torch.sigmoid(alpha * pre + beta)


def _standout(x: Tensor, weight: Tensor, bias: Tensor | None, *, training: bool, alpha: float, beta: float,
              activation: Callable[[Tensor], Tensor], gate_bias: bool,
              generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    z = F.linear(x, weight, bias)
    keep = standout_keep_prob(x, weight, bias, alpha=alpha, beta=beta, gate_bias=gate_bias)
    h = activation(z)
    if not training:
        return h * keep, keep
    u = torch.rand(keep.shape, generator=generator, device=keep.device, dtype=keep.dtype)
    mask = u < keep.detach()  # Bernoulli(π); no gradient through the mask
    return h * mask, keep


def standout(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, training: bool, alpha: float = 1.0,
             beta: float = 0.0, activation: Callable[[Tensor], Tensor] = torch.relu, gate_bias: bool = False,
             generator: torch.Generator | None = None) -> Tensor:
    """Standout layer: ``f(x·Wᵀ + b)·m``, ``m ~ Bernoulli(π)``, ``π = σ(α·(x·Wᵀ) + β)``.

    Not inverted (as in the paper): training multiplies by the 0/1 mask, eval by its expectation
    ``π``, so ``E[train output] = eval output``. No gradient flows through the sampled mask.
    Shapes: ``x (*, in)``, ``weight (out, in)``, output ``(*, out)``.
    """
    out, _ = _standout(x, weight, bias, training=training, alpha=alpha, beta=beta, activation=activation,
                       gate_bias=gate_bias, generator=generator)
    return out


@register_dropout(
    "standout",
    family="adaptive",
    paper="Ba & Frey 2013, NeurIPS (adaptive dropout / standout, tied form π = αW + β)",
    equation="y = f(xWᵀ + b)·m, m ~ Bernoulli(π), π = σ(α·xWᵀ + β); test: y = f(xWᵀ + b)·π",
    kind="wrapper",
    mask="per element (input-dependent keep probability), fresh each call",
    test_time="f(z)·π (expectation)",
    learned=True,
)
class Standout(DropoutBase):
    """Standout (Ba & Frey, NeurIPS 2013) around a linear ``layer``, tied form.

    ``z = layer(x)``, keep probability ``π = σ(α·(x·Wᵀ) + β)`` with ``W`` the layer's weight,
    output ``activation(z)·m`` with ``m ~ Bernoulli(π)`` in training and ``activation(z)·π`` at
    eval (not inverted; the eval output is the expectation of the training output).

    Choices: the layer bias is **excluded** from the gate by default, as in the PyTorch
    replication (mabirck/adaptative-dropout-pytorch); ``gate_bias=True`` includes it, giving
    ``σ(α·z + β)``. The keep probabilities are learned only through ``W`` (tied), and no
    gradient flows through the sampled mask.

    :attr:`rate` is the mean drop probability ``mean(1 − π)`` of the most recent forward call,
    kept as a detached 0-dim tensor (no graph, no host sync until read); NaN before the first
    call. There is no settable ``p``: :meth:`set_p` raises ``NotImplementedError``.

    Args:
        layer: ``nn.Linear``; its parameters are the only parameters.
        activation: module or callable applied to ``z`` (default ``nn.ReLU()``).
        alpha, beta: gate scale and shift (Ba & Frey; the claims registry's BF-1 check uses α = 1, β = 0).
        gate_bias: include the layer bias in the gate.

    Shape: ``(*, in_features) → (*, out_features)``.
    """

    learned = True

    def __init__(self, layer: nn.Linear, activation: Callable[[Tensor], Tensor] | None = None,
                 alpha: float = 1.0, beta: float = 0.0, gate_bias: bool = False) -> None:
        super().__init__(p=None)
        name = self.variant_name
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"{name}: layer must be an nn.Linear (the gate is tied to its weight), "
                             f"got {type(layer).__name__}")
        if activation is not None and not callable(activation):
            raise ValueError(f"{name}: activation must be a module or callable, got {activation!r}")
        self.layer = layer
        self.activation = nn.ReLU() if activation is None else activation
        self.alpha = _check_finite(alpha, "alpha", name)
        self.beta = _check_finite(beta, "beta", name)
        self.gate_bias = bool(gate_bias)
        self._last_drop: Tensor | None = None

    def keep_prob(self, x: Tensor) -> Tensor:
        """Keep probabilities ``π`` for input ``x`` (shape ``(*, out_features)``)."""
        return standout_keep_prob(x, self.layer.weight, self.layer.bias, alpha=self.alpha, beta=self.beta,
                                  gate_bias=self.gate_bias)

    @property
    def rate(self) -> float:
        return math.nan if self._last_drop is None else float(self._last_drop)

    def set_p(self, p: float) -> None:
        raise NotImplementedError(f"{self.variant_name}: the drop probability is computed from the input "
                                  f"(1 − σ(α·xWᵀ + β)); change alpha/beta instead of p")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 1 or x.shape[-1] != self.layer.in_features:
            raise ValueError(f"{self.variant_name}: input must have shape (*, {self.layer.in_features}), "
                             f"got {tuple(x.shape)}")
        out, keep = _standout(x, self.layer.weight, self.layer.bias, training=self.training, alpha=self.alpha,
                              beta=self.beta, activation=self.activation, gate_bias=self.gate_bias,
                              generator=None)
        self._last_drop = (1.0 - keep.detach()).mean()
        return out

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, beta={self.beta:g}, gate_bias={self.gate_bias}"


# --------------------------------------------------------------------------- ADL


def _check_gamma(gamma: float, name: str) -> float:
    value = float(gamma)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name}: gamma (drop threshold as a fraction of the max attention) must be in "
                         f"[0, 1], got {gamma!r}")
    return value


def adl_maps(x: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """ADL's two maps for ``x (N, C, *spatial)``: ``(drop_mask, importance)``, each ``(N, 1, *spatial)``.

    ``A = mean_c x``; ``drop_mask = 1[A < γ·max_spatial A]`` (per sample, as ``x.dtype``);
    ``importance = σ(A)``.
    """
    check_rank(x, (3, 4, 5), "adl", "input (N, C, *spatial)")
    gamma = _check_gamma(gamma, "adl")
    attention = x.mean(dim=1, keepdim=True)
    peak = attention.amax(dim=tuple(range(2, x.dim())), keepdim=True)
    drop_mask = (attention < gamma * peak).to(x.dtype)
    return drop_mask, torch.sigmoid(attention)


def adl(x: Tensor, drop_rate: float, gamma: float = 0.9, *, training: bool,
        generator: torch.Generator | None = None) -> Tensor:
    """Attention-based dropout layer (Choe & Shim, CVPR 2019).

    Training: one scalar coin per call; with probability ``drop_rate`` multiply ``x`` by the drop
    mask ``1[A < γ·max A]`` (hides the most discriminative region), otherwise by the importance
    map ``σ(A)``, for the whole batch; no rescaling. Eval: identity. The choice is made with
    ``torch.where`` (no host sync). Shape: ``(N, C, *spatial)``, spatial rank 1–3.
    """
    drop_rate = validate_p(drop_rate, "adl")
    drop_mask, importance = adl_maps(x, gamma)
    if not training:
        return x
    coin = torch.rand((), generator=generator, device=x.device) < drop_rate
    return x * torch.where(coin, drop_mask, importance)


@register_dropout(
    "adl",
    family="adaptive",
    paper="Choe & Shim 2019, CVPR (Attention-based Dropout Layer)",
    equation="A = mean_c x; y = x·1[A < γ·max A] with prob. drop_rate, else y = x·σ(A)",
    kind="activation",
    mask="spatial map per sample; the drop/importance choice is one coin per call for the batch",
    test_time="identity",
)
class ADL(DropoutBase):
    """Attention-based dropout layer (Choe & Shim, CVPR 2019) for conv activations.

    Here ``p`` (the buffer, schedulable) is ``drop_rate``: the probability that a training call
    uses the drop mask rather than the importance map, *not* a per-unit drop probability.
    ``gamma`` is the threshold as a fraction of the per-sample maximum attention (0.9 in the
    authors' ResNet50-SE CUB script; the clovaai re-implementation uses 0.8). One coin per
    call for the whole batch (``batch_shared_mask = True``); no parameters; no rescaling;
    identity at eval.

    Shape: ``(N, C, L)``, ``(N, C, H, W)`` or ``(N, C, D, H, W)`` (the paper uses rank 4).
    """

    batch_shared_mask = True

    def __init__(self, drop_rate: float = 0.75, gamma: float = 0.9) -> None:
        super().__init__(p=drop_rate)
        self.gamma = _check_gamma(gamma, self.variant_name)

    @property
    def drop_rate(self) -> float:
        return float(self.p)

    def forward(self, x: Tensor) -> Tensor:
        return adl(x, self.p, self.gamma, training=self.training)

    def extra_repr(self) -> str:
        return f"drop_rate={self.rate:.4g}, gamma={self.gamma:g}"


# --------------------------------------------------------------------------- meta dropout

#: softplus(_SOFTPLUS_ONE) = 1: the initial bias of μφ, so the eval gate starts at 1.
_SOFTPLUS_ONE = math.log(math.e - 1.0)


def meta_dropout(h: Tensor, mu: Tensor, *, training: bool, generator: torch.Generator | None = None) -> Tensor:
    """Meta-dropout noise: ``h·softplus(z)``, ``z ~ N(mu, 1)`` in training; ``h·softplus(mu)`` at eval.

    ``mu`` is the output of the noise network, broadcastable to ``h``. The eval gate is the
    authors' deterministic query pass, not the expectation: ``E[softplus(mu + ε)] > softplus(mu)``
    (softplus is convex).
    """
    if training:
        mu = mu + torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return h * F.softplus(mu)


@register_dropout(
    "meta",
    family="adaptive",
    paper="Lee, Nam, Yang, Hwang 2020, ICLR (Meta Dropout)",
    equation="y = h·softplus(z), z ~ N(μφ(h), I); test: y = h·softplus(μφ(h))",
    kind="activation",
    mask="per element (input-dependent multiplicative noise), fresh each call",
    test_time="h·softplus(μφ(h)) (deterministic gate)",
    learned=True,
)
class MetaDropout(DropoutBase):
    """Meta dropout (Lee, Nam, Yang, Hwang, ICLR 2020): learned input-dependent multiplicative noise.

    ``y = h·softplus(z)``, ``z ~ N(μφ(h), I)`` in training; at eval ``h·softplus(μφ(h))``, the
    authors' deterministic query pass (so eval is *not* the training expectation; see
    :func:`meta_dropout`). μφ is a ``Linear(features, features)`` acting on the last dim, or with
    ``spatial=True`` a 1×1 ``Conv2d(features, features)`` on ``(N, C, H, W)``. It is initialised
    with zero weights and bias ``log(e − 1)``, so the eval gate starts at exactly 1 (identity).
    In the paper φ is meta-learned in the outer loop only (θ in the inner loop); that split is the
    training loop's business; here φ is an ordinary submodule (``self.mu``).

    Rate: there is no Bernoulli drop probability. :attr:`rate` is NaN and :meth:`set_p` raises
    ``NotImplementedError``; :meth:`gate` returns the deterministic gate for inspection.
    :meth:`regularizer` is zero (the paper adds no KL on φ).

    Shape: ``(*, features)`` or, with ``spatial=True``, ``(N, features, H, W)``; output the same.
    """

    learned = True

    def __init__(self, features: int, spatial: bool = False) -> None:
        super().__init__(p=None)
        name = self.variant_name
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"{name}: features must be a positive int, got {features!r}")
        self.features = features
        self.spatial = bool(spatial)
        self.mu = nn.Conv2d(features, features, 1) if self.spatial else nn.Linear(features, features)
        with torch.no_grad():
            self.mu.weight.zero_()
            self.mu.bias.fill_(_SOFTPLUS_ONE)

    def _check(self, h: Tensor) -> None:
        if self.spatial:
            if h.dim() != 4 or h.shape[1] != self.features:
                raise ValueError(f"{self.variant_name}: spatial input must have shape (N, {self.features}, H, W), "
                                 f"got {tuple(h.shape)}")
        elif h.dim() < 1 or h.shape[-1] != self.features:
            raise ValueError(f"{self.variant_name}: input must have shape (*, {self.features}), "
                             f"got {tuple(h.shape)}")

    def gate(self, h: Tensor) -> Tensor:
        """Deterministic gate ``softplus(μφ(h))`` (the eval multiplier)."""
        self._check(h)
        return F.softplus(self.mu(h))

    @property
    def rate(self) -> float:
        return math.nan

    def set_p(self, p: float) -> None:
        raise NotImplementedError(f"{self.variant_name}: meta dropout has no drop probability "
                                  f"(multiplicative softplus noise from a learned network)")

    def forward(self, h: Tensor) -> Tensor:
        self._check(h)
        return meta_dropout(h, self.mu(h), training=self.training)

    def extra_repr(self) -> str:
        return f"features={self.features}, spatial={self.spatial}"
