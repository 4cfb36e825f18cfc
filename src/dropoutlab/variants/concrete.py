"""Concrete dropout: a learned drop probability through a continuous relaxation of the mask.

Gal, Hron, Kendall. "Concrete Dropout." NeurIPS 2017. Reference code: yaringal/ConcreteDropout
(PyTorch and Keras notebooks; the spatial version is the Keras notebook for conv layers).

Relaxed *drop* mask, ``u ~ U(0, 1)``, temperature ``t``, ``ε = 1e-7``:

    z̃ = σ((log(p + ε) − log(1 − p + ε) + log(u + ε) − log(1 − u + ε)) / t)

and the wrapped layer sees ``x·(1 − z̃)/(1 − p)``. ``p = σ(p_logit)`` is learned through the
regulariser (per wrapped layer, to be **added** to the loss)

    R = weight_regularizer · Σ‖W‖² / (1 − p) + dropout_regularizer · K · (p log p + (1 − p) log(1 − p))

with ``K`` the input dimension (dense: input features; spatial: input channels). The second
term is ``−K·H(p)``; it pushes p toward 0.5, the first pushes p toward 0. Choose the two
factors with :func:`concrete_regularizer_weights` (``l²/(τN)`` and ``2/(τN)``).

Choices made here (the reference notebooks differ):

* **Eval mode.** The PyTorch notebook never checks ``self.training`` (dropout always on: MC by
  design). Here ``eval()`` is deterministic and returns ``layer(x)`` (the relaxed mask has
  expectation ≈ 1 − p, so this is the usual weight-scaling approximation); MC prediction uses
  ``dropoutlab.inference.mc_dropout``, which switches dropout modules (these wrappers) to
  train mode. Note that this also puts the *wrapped* layer in train mode.
* **Biases are regularised** (``include_bias=True``), as in the official PyTorch notebook, which
  sums over ``layer.parameters()`` (ConcreteDropout issue #15); pass ``include_bias=False`` to
  regularise only parameters whose name does not end in ``bias``.
* **No cached tensors.** ``p`` and the regulariser are recomputed from ``p_logit`` on demand
  (the danielkelshaw port caches them, which keeps old graphs alive and breaks deepcopy).
* **K on sequence inputs.** For a dense layer applied to a ``(B, T, K)`` (any ``(*, K)``) input, K is
  the layer's input features, whatever T. The official PyTorch notebook computes K as
  ``x[0].numel()``, the elements of one sample: K for its ``(B, K)`` inputs, but T·K for
  ``(B, T, K)``, so its entropy term grows with the sequence length (5× at T = 5). K counts the
  Bernoulli variables of the approximating distribution of one weight matrix (one per input unit),
  a property of the layer, so it is kept independent of the input's length here (notebook 11
  computes both values).
* The expectation of ``1 − z̃`` is exactly ``1 − p`` only as ``t → 0``; at t = 0.1 the bias is
  about 1e-3 (p = 0.1), at the spatial default t = 2/3 about 0.045 (p = 0.1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DropoutBase, check_rank, register_dropout

__all__ = [
    "ConcreteDropout",
    "SpatialConcreteDropout",
    "concrete_drop_mask",
    "concrete_dropout",
    "concrete_regularizer",
    "concrete_regularizer_weights",
    "spatial_concrete_dropout",
]


def _check_open_p(p: float | Tensor, name: str) -> float:
    value = float(p)
    if not 0.0 < value < 1.0:  # also rejects NaN
        raise ValueError(f"{name}: drop probability p must be in (0, 1) (p = σ(p_logit)), got {p!r}")
    return value


def _check_positive(value: float, what: str, name: str, *, allow_zero: bool = False) -> float:
    value = float(value)
    ok = value >= 0.0 if allow_zero else value > 0.0
    if not (ok and math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: {what} must be a finite number {bound}, got {value!r}")
    return value


def concrete_drop_mask(shape: torch.Size | tuple[int, ...], p: float | Tensor, *, temperature: float,
                       like: Tensor, eps: float = 1e-7, generator: torch.Generator | None = None) -> Tensor:
    """Relaxed Bernoulli *drop* mask ``z̃ ∈ (0, 1)`` of ``shape`` (≈ 1 where a unit is dropped).

    ``z̃ = σ((log(p+ε) − log(1−p+ε) + log(u+ε) − log(1−u+ε)) / t)``, ``u ~ U(0, 1)``. As
    ``t → 0``, ``z̃ → Bernoulli(p)``. ``p`` may be a tensor (gradients flow to it).
    """
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    p = torch.as_tensor(p, dtype=like.dtype, device=like.device)
    logits = (torch.log(p + eps) - torch.log(1.0 - p + eps) + torch.log(u + eps) - torch.log(1.0 - u + eps))
    return torch.sigmoid(logits / temperature)


def concrete_dropout(x: Tensor, p: float | Tensor, *, training: bool, temperature: float = 0.1,
                     eps: float = 1e-7, noise_shape: tuple[int, ...] | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
    """Concrete dropout of ``x``: ``x·(1 − z̃)/(1 − p)`` in training, identity at eval.

    Shape: any; ``noise_shape`` (broadcastable to ``x``) shares the mask, default one per element.
    A float ``p`` must lie in (0, 1); a tensor ``p`` is used as is (not checked, no host sync).
    """
    if not isinstance(p, Tensor):
        _check_open_p(p, "concrete_dropout")
    if not training:
        return x
    shape = tuple(x.shape) if noise_shape is None else tuple(noise_shape)
    z = concrete_drop_mask(shape, p, temperature=temperature, like=x, eps=eps, generator=generator)
    return x * (1.0 - z) / (1.0 - p)


def spatial_concrete_dropout(x: Tensor, p: float | Tensor, *, training: bool, temperature: float = 2.0 / 3.0,
                             eps: float = 1e-7, generator: torch.Generator | None = None) -> Tensor:
    """Spatial concrete dropout: one relaxed mask per (sample, channel), shared over space.

    Shape: ``(N, C, L)``, ``(N, C, H, W)`` or ``(N, C, D, H, W)``; noise shape ``(N, C, 1, ...)``.
    """
    check_rank(x, (3, 4, 5), "spatial_concrete_dropout", "input (N, C, *spatial)")
    noise_shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
    return concrete_dropout(x, p, training=training, temperature=temperature, eps=eps,
                            noise_shape=noise_shape, generator=generator)


def concrete_regularizer(weights, p_logit: Tensor, *, weight_regularizer: float, dropout_regularizer: float,
                         input_dim: int) -> Tensor:
    """``wr·Σ‖W‖²/(1−p) + dr·K·(p log p + (1−p) log(1−p))`` with ``p = σ(p_logit)``, ``K = input_dim``.

    ``log p`` and ``log(1 − p)`` are computed as log-sigmoids of ``±p_logit`` (stable near 0, 1).
    """
    log_p = F.logsigmoid(p_logit)
    log_q = F.logsigmoid(-p_logit)  # log(1 − p)
    p = log_p.exp()
    sum_sq = sum((w * w).sum() for w in weights)
    weight_term = weight_regularizer * sum_sq * torch.exp(-log_q)
    dropout_term = dropout_regularizer * input_dim * (p * log_p + (1.0 - p) * log_q)
    return weight_term + dropout_term


def concrete_regularizer_weights(length_scale: float, tau: float, n_train: int,
                                 classification: bool = False) -> tuple[float, float]:
    """``(weight_regularizer, dropout_regularizer) = (l²/(τN), 2/(τN))`` (Gal et al. 2017).

    ``l`` is the prior length-scale, ``τ`` the model precision (inverse observation noise), ``N``
    the number of training points. The official docstring says to drop the factor 2 for a
    cross-entropy loss: ``classification=True`` returns ``(l²/(τN), 1/(τN))``.
    """
    name = "concrete_regularizer_weights"
    length_scale = _check_positive(length_scale, "length_scale", name, allow_zero=True)
    tau = _check_positive(tau, "tau", name)
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
        raise ValueError(f"{name}: n_train must be a positive int, got {n_train!r}")
    scale = tau * n_train
    return length_scale**2 / scale, (1.0 if classification else 2.0) / scale


class _ConcreteBase(DropoutBase):
    learned = True
    default_temperature: float = 0.1

    def __init__(self, layer: nn.Module, p: float, temperature: float, weight_regularizer: float,
                 dropout_regularizer: float, eps: float, input_dim: int | None, include_bias: bool) -> None:
        super().__init__(p=None)
        name = self.variant_name
        if not isinstance(layer, nn.Module):
            raise ValueError(f"{name}: layer must be an nn.Module (the layer that follows the dropout), "
                             f"got {type(layer).__name__}")
        self.layer = layer
        self.p_logit = nn.Parameter(torch.tensor(self._logit(p)))
        self.temperature = _check_positive(temperature, "temperature", name)
        self.weight_regularizer = _check_positive(weight_regularizer, "weight_regularizer", name, allow_zero=True)
        self.dropout_regularizer = _check_positive(dropout_regularizer, "dropout_regularizer", name,
                                                   allow_zero=True)
        self.eps = _check_positive(eps, "eps", name, allow_zero=True)
        self.include_bias = bool(include_bias)
        self.input_dim = self._infer_input_dim(layer) if input_dim is None else input_dim
        if isinstance(self.input_dim, bool) or not isinstance(self.input_dim, int) or self.input_dim < 1:
            raise ValueError(f"{name}: input_dim must be a positive int, got {self.input_dim!r}")

    def _logit(self, p: float) -> float:
        value = _check_open_p(p, self.variant_name)
        return math.log(value) - math.log1p(-value)

    def _infer_input_dim(self, layer: nn.Module) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def p(self) -> Tensor:
        """The learned drop probability ``σ(p_logit)`` (0-dim, graph-connected)."""
        return torch.sigmoid(self.p_logit)

    @property
    def rate(self) -> float:
        return float(self.p.detach())

    def set_p(self, p: float) -> None:
        """Set the drop probability (writes ``p_logit = log(p/(1−p))``); p in (0, 1)."""
        with torch.no_grad():
            self.p_logit.fill_(self._logit(p))

    def regularizer(self) -> Tensor:
        """Concrete dropout regulariser of this layer (module docstring), to be added to the loss."""
        weights = [w for n, w in self.layer.named_parameters()
                   if self.include_bias or not n.split(".")[-1].startswith("bias")]
        return concrete_regularizer(weights, self.p_logit, weight_regularizer=self.weight_regularizer,
                                    dropout_regularizer=self.dropout_regularizer, input_dim=self.input_dim)

    def extra_repr(self) -> str:
        return (f"p={self.rate:.4g}, temperature={self.temperature:g}, "
                f"weight_regularizer={self.weight_regularizer:g}, "
                f"dropout_regularizer={self.dropout_regularizer:g}, input_dim={self.input_dim}")


@register_dropout(
    "concrete",
    family="Concrete (learned rate)",
    paper="Gal, Hron, Kendall 2017, NeurIPS (Concrete Dropout)",
    equation="y = layer(x·(1−z̃)/(1−p)), z̃ = σ((logit p + log u − log(1−u))/t), p = σ(p_logit); "
             "R = wr·ΣW²/(1−p) + dr·K·(p log p + (1−p) log(1−p))",
    kind="wrapper",
    mask="per element (relaxed), fresh each call",
    test_time="layer(x)",
    learned=True,
)
class ConcreteDropout(_ConcreteBase):
    """Concrete dropout in front of a dense ``layer`` (Gal, Hron, Kendall, NeurIPS 2017).

    ``forward(x) = layer(x·(1 − z̃)/(1 − p))`` in training (relaxed mask per element, t = 0.1),
    ``layer(x)`` at eval. ``p = σ(p_logit)`` is learned via :meth:`regularizer`.

    Args:
        layer: the wrapped layer (usually ``nn.Linear``).
        p: initial drop probability in (0, 1) (the notebooks use 0.1).
        temperature: relaxation temperature ``t`` (0.1 as in the paper and notebooks).
        weight_regularizer, dropout_regularizer: ``l²/(τN)`` and ``2/(τN)``, see
            :func:`concrete_regularizer_weights` (defaults as in the notebook class).
        eps: ``ε`` inside the logs of the relaxation.
        input_dim: ``K`` of the dropout term; inferred from ``layer.in_features`` or
            ``layer.weight.shape[1]`` when omitted.
        include_bias: regularise the layer's biases too (the official PyTorch notebook does).

    Shape: input ``(*, K)``; output whatever ``layer`` returns.
    """

    def __init__(self, layer: nn.Module, p: float = 0.1, temperature: float = 0.1,
                 weight_regularizer: float = 1e-6, dropout_regularizer: float = 1e-5, eps: float = 1e-7,
                 input_dim: int | None = None, include_bias: bool = True) -> None:
        super().__init__(layer, p, temperature, weight_regularizer, dropout_regularizer, eps, input_dim,
                         include_bias)

    def _infer_input_dim(self, layer: nn.Module) -> int:
        if isinstance(getattr(layer, "in_features", None), int):
            return layer.in_features
        weight = getattr(layer, "weight", None)
        if isinstance(weight, Tensor) and weight.dim() == 2:
            return int(weight.shape[1])
        raise ValueError(f"{self.variant_name}: cannot infer the input dimension K of "
                         f"{type(layer).__name__}; pass input_dim=")

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            if x.dim() < 1 or x.shape[-1] != self.input_dim:
                raise ValueError(f"{self.variant_name}: input must have shape (*, {self.input_dim}), "
                                 f"got {tuple(x.shape)}")
            x = concrete_dropout(x, self.p, training=True, temperature=self.temperature, eps=self.eps)
        return self.layer(x)


@register_dropout(
    "spatial_concrete",
    family="Concrete (learned rate)",
    paper="Gal, Hron, Kendall 2017, NeurIPS (Concrete Dropout; spatial version of the official Keras code)",
    equation="y = layer(x·(1−z̃[n,c])/(1−p)), z̃ per (sample, channel), t = 2/3; K = input channels",
    kind="wrapper",
    mask="channels (one per sample and channel, shared over space)",
    test_time="layer(x)",
    learned=True,
)
class SpatialConcreteDropout(_ConcreteBase):
    """Concrete dropout of whole input channels in front of a conv ``layer``.

    Relaxed mask of shape ``(N, C, 1, ...)`` for a rank-3/4/5 input ``(N, C, *spatial)``;
    default temperature 2/3 (the official spatial notebook); ``K`` = input channels (inferred
    from ``layer.in_channels`` or ``layer.weight.shape[1]·groups``). Other arguments as in
    :class:`ConcreteDropout`. The official README warns against the dense version on convs.
    """

    def __init__(self, layer: nn.Module, p: float = 0.1, temperature: float = 2.0 / 3.0,
                 weight_regularizer: float = 1e-6, dropout_regularizer: float = 1e-5, eps: float = 1e-7,
                 input_dim: int | None = None, include_bias: bool = True) -> None:
        super().__init__(layer, p, temperature, weight_regularizer, dropout_regularizer, eps, input_dim,
                         include_bias)

    def _infer_input_dim(self, layer: nn.Module) -> int:
        if isinstance(getattr(layer, "in_channels", None), int):
            return layer.in_channels
        weight = getattr(layer, "weight", None)
        if isinstance(weight, Tensor) and weight.dim() >= 3:
            return int(weight.shape[1]) * int(getattr(layer, "groups", 1))
        raise ValueError(f"{self.variant_name}: cannot infer the number of input channels K of "
                         f"{type(layer).__name__}; pass input_dim=")

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            check_rank(x, (3, 4, 5), self.variant_name, "input (N, C, *spatial)")
            if x.shape[1] != self.input_dim:
                raise ValueError(f"{self.variant_name}: input must have {self.input_dim} channels "
                                 f"(dim 1), got shape {tuple(x.shape)}")
            x = spatial_concrete_dropout(x, self.p, training=True, temperature=self.temperature, eps=self.eps)
        return self.layer(x)
