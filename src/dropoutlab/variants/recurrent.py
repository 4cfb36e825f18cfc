"""Recurrent dropout: locked (variational) dropout, embedding dropout, weight-dropped RNNs.

Gal, Ghahramani. "A theoretically grounded application of dropout in recurrent neural
networks." NeurIPS 2016 (arXiv:1512.05287). Merity, Keskar, Socher. "Regularizing and
optimizing LSTM language models." ICLR 2018 (AWD-LSTM; arXiv:1708.02182).

* :class:`LockedDropout` (``"locked"``): one mask per sequence, i.e. per (sample, feature),
  reused at every time step. The time axis is given explicitly with ``batch_first`` — the
  AWD code is sequence-first and silently shares the mask over the *batch* when fed
  batch-first data (ANCHORS §6); here the layout is a constructor argument.
* :class:`EmbeddingDropout` (``"embedding"``): drops whole word *types* (rows of the
  embedding matrix) with one ``(V,)`` mask per forward call, shared by the whole batch.
* :class:`WeightDrop` (``"weight_drop"``): DropConnect on chosen parameters of a wrapped
  module (by default an RNN's hidden-to-hidden matrix). The raw weights stay the wrapped
  module's own ``nn.Parameter`` objects; each training forward runs the module through
  :func:`torch.func.functional_call` with dropped copies substituted. Nothing is deleted,
  renamed or monkeypatched, so ``module.state_dict()`` still loads into a plain ``nn.LSTM``.

All three are inverted (kept units scaled by ``1/(1 − p)``) and the identity at eval.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from .base import DropoutBase, check_rank, register_dropout, validate_p
from .masks import apply_mask, bernoulli_mask

__all__ = [
    "EmbeddingDropout",
    "LockedDropout",
    "WeightDrop",
    "embedding_dropout",
    "locked_dropout",
    "weight_dropout",
]

# cuDNN warns when an RNN's weights are not one contiguous buffer (awd-lstm-lm #120,
# pytorch #40193). Substituted (dropped) weights never are; torch >= 2.0 (pytorch PR #91111)
# notices the swap in ``RNNBase._update_flat_weights`` and re-flattens, so the warning should
# not fire, but it is silenced for the substituted call only, never globally.
_CUDNN_CHUNK_WARNING = r"RNN module weights are not part of single contiguous chunk of memory"


# --------------------------------------------------------------------------- functional


def locked_dropout(x: Tensor, p: float, *, training: bool, batch_first: bool, inplace: bool = False,
                   generator: torch.Generator | None = None) -> Tensor:
    """Variational (locked) dropout: one mask per (sample, feature), shared over time.

    Gal & Ghahramani, NeurIPS 2016, Sec. 3: ``y[b, t, f] = x[b, t, f] · m[b, f] / (1 − p)``,
    ``m ~ Bernoulli(1 − p)``, the same ``m`` at every step ``t``.

    Shape: ``(B, T, F)`` when ``batch_first`` else ``(T, B, F)``; the mask is ``(B, 1, F)`` or
    ``(1, B, F)``. Any other rank raises ``ValueError`` (``PackedSequence`` is not accepted:
    apply it to the padded tensor). Identity when ``training`` is False or ``p == 0``.
    """
    p = validate_p(p, "locked_dropout")
    layout = "(B, T, F)" if batch_first else "(T, B, F)"
    check_rank(x, (3,), "locked_dropout", f"input {layout}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x.mul_(0.0) if inplace else torch.zeros_like(x)
    if batch_first:
        shape = (x.shape[0], 1, x.shape[2])
    else:
        shape = (1, x.shape[1], x.shape[2])
    return apply_mask(x, bernoulli_mask(shape, p, x, generator), 1.0 / (1.0 - p), inplace)


def embedding_dropout(indices: Tensor, weight: Tensor, p: float, *, training: bool,
                      padding_idx: int | None = None, max_norm: float | None = None, norm_type: float = 2.0,
                      scale_grad_by_freq: bool = False, sparse: bool = False,
                      generator: torch.Generator | None = None) -> Tensor:
    """Word-level embedding dropout: drop whole rows (word types) of ``weight``.

    Gal & Ghahramani, NeurIPS 2016, Sec. 4; Merity et al., ICLR 2018 (``embedded_dropout``):
    ``E' = diag(m) · E / (1 − p)``, ``m ~ Bernoulli(1 − p)`` of shape ``(V,)``, one draw per
    call shared by every occurrence of a word in the batch; then ``y = E'[indices]``.

    Computed as ``F.embedding(indices, E) · m[indices] / (1 − p)``, which equals a lookup in the
    masked matrix (same output, same gradient to ``E``) without materialising a ``(V, D)``
    copy, and keeps ``sparse``, ``max_norm`` and ``padding_idx`` semantics of ``F.embedding``
    (``max_norm`` renormalises the looked-up rows of the raw ``weight`` in place, as
    ``nn.Embedding`` does).

    ``max_norm`` acts *before* the mask, on the raw weight. AWD-LSTM's ``embedded_dropout`` masks
    and scales a copy first and renormalises that copy (the raw weight is left alone in training
    and renormalised in place at evaluation, where it passes dropout 0): a kept row at the cap then
    has norm ``max_norm`` in training and at test alike, so its training expectation,
    ``(1 − p)·max_norm``, differs from its test output. Renormalising first keeps the inverted-dropout
    identity E[training output] = evaluation output (kept rows are ``1/(1 − p)`` longer than at
    evaluation) and ``nn.Embedding``'s meaning of ``max_norm`` (a constraint on the weight); notebook
    11 shows both orders.

    Shape: ``indices`` any integer shape ``(*)``, ``weight`` ``(V, D)``; output ``(*, D)``.
    """
    p = validate_p(p, "embedding_dropout")
    check_rank(weight, (2,), "embedding_dropout", "weight (V, D)")
    out = F.embedding(indices, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse)
    if not training or p == 0.0:
        return out
    if p == 1.0:
        return out * 0.0
    keep = bernoulli_mask((weight.shape[0],), p, weight, generator)
    return apply_mask(out, keep[indices].unsqueeze(-1), 1.0 / (1.0 - p), False)


def weight_dropout(weight: Tensor, p: float, *, training: bool,
                   generator: torch.Generator | None = None) -> Tensor:
    """DropConnect on a weight tensor: ``W · M / (1 − p)``, ``M ~ Bernoulli(1 − p)`` per entry.

    Never in place: the result is a new tensor whose gradient flows back to ``weight`` (the
    in-place variant of some ports corrupts the raw weight, ANCHORS §6). Returns ``weight``
    itself when ``training`` is False or ``p == 0``.
    """
    p = validate_p(p, "weight_dropout")
    if not training or p == 0.0:
        return weight
    if p == 1.0:
        return weight * 0.0
    return apply_mask(weight, bernoulli_mask(weight.shape, p, weight, generator), 1.0 / (1.0 - p), False)


# --------------------------------------------------------------------------- modules


@register_dropout(
    "locked",
    family="Recurrent",
    paper="Gal & Ghahramani 2016, NeurIPS (variational RNN dropout); awd-lstm-lm LockedDropout",
    equation="y[b,t,f] = x[b,t,f]·m[b,f]/(1−p), m ~ Bernoulli(1−p), same m for every t",
    kind="activation",
    mask="time steps (one per sample and feature, shared over the sequence)",
    test_time="identity",
)
class LockedDropout(DropoutBase):
    """Variational (locked) dropout for sequences (Gal & Ghahramani, NeurIPS 2016).

    ``y[b, t, f] = x[b, t, f] · m[b, f] / (1 − p)``, ``m ~ Bernoulli(1 − p)``: one mask per
    sequence and feature, reused at every time step, fresh on every call.

    Args:
        p: drop probability in [0, 1].
        batch_first: layout of the input, ``(B, T, F)`` if True (the default, as fastai's
            ``RNNDropout``), ``(T, B, F)`` if False (``nn.LSTM``'s own default and the AWD
            code's layout). Always state it to match the surrounding RNN; it is never guessed.
        inplace: multiply the input in place.

    Shape: rank-3 input as above; output of the same shape. Other ranks raise ``ValueError``.
    """

    def __init__(self, p: float = 0.5, batch_first: bool = True, inplace: bool = False) -> None:
        super().__init__(p, inplace)
        if not isinstance(batch_first, bool):
            raise ValueError(f"locked: batch_first must be a bool, got {batch_first!r}")
        self.batch_first = batch_first

    def forward(self, x: Tensor) -> Tensor:
        return locked_dropout(x, self.p, training=self.training, batch_first=self.batch_first,
                              inplace=self.inplace)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, batch_first={self.batch_first}"


@register_dropout(
    "embedding",
    family="Recurrent",
    paper="Gal & Ghahramani 2016, NeurIPS (Sec. 4); Merity, Keskar, Socher 2018, ICLR (embedded_dropout)",
    equation="y = (diag(m)·E/(1−p))[idx], m ~ Bernoulli(1−p) of shape (V,)",
    kind="wrapper",
    mask="word types (one per vocabulary row, shared by the whole batch)",
    test_time="identity",
)
class EmbeddingDropout(DropoutBase):
    """Embedding dropout: drop whole words (rows of the embedding matrix) per forward call.

    Wraps and owns an ``nn.Embedding`` (``self.embedding``; its ``weight`` is the raw,
    trained matrix and receives the gradient). In training every word type ``v`` is kept
    with probability ``1 − p`` and scaled by ``1/(1 − p)``: all occurrences of a dropped word
    in the batch become zero vectors (Merity et al. 2018, ``embedded_dropout``). At eval the
    module is exactly ``self.embedding``.

    Kind ``"wrapper"``: it replaces the ``nn.Embedding`` in a model, not an activation.
    Gal & Ghahramani's original ties the mask per *sequence*; Merity's (implemented here)
    shares one ``(V,)`` mask across the batch, hence ``batch_shared_mask = True``.

    Args:
        embedding: the ``nn.Embedding`` to wrap (``padding_idx``, ``max_norm``, ``sparse`` and
            ``scale_grad_by_freq`` are honoured).
        p: drop probability of a word type, in [0, 1] (AWD-LSTM uses 0.1).

    Shape: indices ``(*)`` → ``(*, embedding_dim)``.
    """

    batch_shared_mask = True

    def __init__(self, embedding: nn.Embedding, p: float = 0.1) -> None:
        super().__init__(p)
        if not isinstance(embedding, nn.Embedding):
            raise ValueError(f"embedding: expected an nn.Embedding to wrap, got {type(embedding).__name__}")
        self.embedding = embedding

    @property
    def weight(self) -> Tensor:
        """The raw embedding matrix ``(V, D)``."""
        return self.embedding.weight

    def forward(self, indices: Tensor) -> Tensor:
        e = self.embedding
        return embedding_dropout(indices, e.weight, self.p, training=self.training, padding_idx=e.padding_idx,
                                 max_norm=e.max_norm, norm_type=e.norm_type,
                                 scale_grad_by_freq=e.scale_grad_by_freq, sparse=e.sparse)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mask=(V, 1)"


@register_dropout(
    "weight_drop",
    family="Recurrent",
    paper="Merity, Keskar, Socher 2018, ICLR (AWD-LSTM weight drop); Wan et al. 2013, ICML (DropConnect)",
    equation="W_hh' = W_hh·M/(1−p), M ~ Bernoulli(1−p) per entry; RNN run with W_hh'",
    kind="wrapper",
    mask="per weight entry, one draw per forward (shared by all samples and time steps)",
    test_time="identity (raw weights)",
)
class WeightDrop(DropoutBase):
    """Weight-dropped RNN: DropConnect on hidden-to-hidden weights (Merity et al., ICLR 2018).

    In training, each forward draws one Bernoulli mask per named weight,
    ``W' = W · M / (1 − p)``, and runs the wrapped module through
    :func:`torch.func.functional_call` with ``W'`` substituted. The same ``W'`` is used at
    every time step and for every sample (``batch_shared_mask = True``). At eval the module
    runs with its raw weights.

    The raw weights remain the wrapped module's own parameters (``self.module.weight_hh_l0``):
    optimisers, ``state_dict`` keys (``module.weight_hh_l0``), ``.to(device)`` and
    ``flatten_parameters`` behave as for the bare module, and the gradient of ``W'`` flows
    back to the raw weight. No parameter is deleted or replaced, and ``flatten_parameters``
    is left alone (compare awd-lstm-lm's ``WeightDrop``, ANCHORS §6).

    Args:
        module: the module to wrap, usually ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``; any module
            works (e.g. ``nn.Linear`` with ``weights=("weight",)``).
        p: drop probability of each weight entry, in [0, 1] (AWD-LSTM uses 0.5).
        weights: names of the parameters to drop, as in ``module.named_parameters()``
            (``"weight_hh_l1"``, ``"weight_hh_l0_reverse"``, ...).

    Shape: whatever the wrapped module accepts and returns; ``forward(*args, **kwargs)`` is
    passed through unchanged.

    Notes (torch 2.13): ``nn.RNNBase.forward`` calls ``_update_flat_weights``, which sees the
    swapped tensors and rebuilds ``_flat_weights``, so the dropped weights are really used
    (verified on CPU against an RNN whose ``weight_hh`` is the dropped tensor, gradients
    included). On CUDA that rebuild also calls ``flatten_parameters``, i.e. copies every
    weight into a fresh cuDNN buffer on each swap (and back on the next raw-weight call): the
    same per-call copy AWD-LSTM pays, not verified on a GPU here — see the ``cuda``-marked test.
    """

    batch_shared_mask = True

    def __init__(self, module: nn.Module, p: float = 0.5, weights: Sequence[str] = ("weight_hh_l0",)) -> None:
        super().__init__(p)
        if not isinstance(module, nn.Module):
            raise ValueError(f"weight_drop: expected an nn.Module to wrap, got {type(module).__name__}")
        if isinstance(weights, str):
            weights = (weights,)
        names = tuple(weights)
        params = dict(module.named_parameters())
        unknown = [n for n in names if n not in params]
        if not names or unknown:
            raise ValueError(f"weight_drop: weights must be non-empty parameter names of the wrapped "
                             f"{type(module).__name__}; unknown {unknown or names!r}, available: {sorted(params)}")
        self.module = module
        self.weights = names

    def dropped_weights(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The substituted tensors for one forward call: ``{name: W · M / (1 − p)}`` (training)."""
        params = dict(self.module.named_parameters())
        return {n: weight_dropout(params[n], self.p, training=True, generator=generator) for n in self.weights}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.training or float(self.p) == 0.0:
            return self.module(*args, **kwargs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CUDNN_CHUNK_WARNING, category=UserWarning)
            return functional_call(self.module, self.dropped_weights(), args, kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weights={list(self.weights)}"
