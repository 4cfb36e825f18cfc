"""Test-time use of dropout: weight scaling, MC dropout, exact sub-network averaging.

* :func:`predict_weight_scaling`: the deterministic "mean network" (eval mode).
* :func:`mc_dropout` / :func:`predict_mc`: Monte-Carlo dropout (Gal & Ghahramani, ICML 2016):
  only the dropout modules stay stochastic, BatchNorm and everything else run in eval mode;
  T samples are drawn in one (chunked) forward pass by tiling the batch.
* :func:`predictive_mean`, :func:`predictive_entropy`, :func:`expected_entropy`,
  :func:`mutual_information` (BALD), :func:`predictive_variance`: uncertainty from MC samples.
* :func:`enumerate_subnetworks`: the exact average over all 2^n thinned networks of a small
  MLP, arithmetic and normalised geometric. For one hidden layer and a softmax output the
  geometric mean equals the weight-scaled prediction (Hinton et al. 2012, arXiv:1207.0580, p. 2).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .train import training_modes
from .variants.base import Select, is_dropout_module, select_modules
from .variants.bernoulli import InvertedDropout, StandardDropout

__all__ = [
    "SubnetworkAverage",
    "enumerate_subnetworks",
    "expected_entropy",
    "mc_dropout",
    "mutual_information",
    "predict_mc",
    "predict_weight_scaling",
    "predictive_entropy",
    "predictive_mean",
    "predictive_variance",
]

#: Rows per forward pass that :func:`predict_mc` aims for when ``chunk=None``.
MC_ROW_BUDGET = 1024
#: Largest number of droppable units :func:`enumerate_subnetworks` accepts (2^20 masks).
MAX_ENUMERATED_UNITS = 20


# ----------------------------------------------------------------------------- modes


@contextlib.contextmanager
def mc_dropout(model: nn.Module, select: Select = None) -> Iterator[dict[str, nn.Module]]:
    """Context manager for MC dropout: only dropout modules are stochastic.

    Inside the block every selected dropout module (default: every :class:`DropoutBase` and
    every ``torch.nn`` dropout, i.e. ``_DropoutNd`` incl. Dropout1d/2d/3d, AlphaDropout and
    FeatureAlphaDropout) is in train mode; every other module (BatchNorm, DropPath-like
    modules you did not select, ...) is in eval mode. On exit, also after an exception, every
    module gets back its exact previous ``training`` flag. ``select`` takes the same forms as
    in :class:`~dropoutlab.schedules.DropoutScheduler` (types, names, callable).

    Yields ``{name: module}`` of the stochastic modules. Raises ``ValueError`` if the model has
    no dropout module (functional ``F.dropout`` calls inside ``forward`` cannot be switched).
    """
    chosen = select_modules(model, select, default=is_dropout_module, owner="mc_dropout")
    with training_modes(model):
        model.eval()
        for m in chosen.values():
            m.training = True  # this module only, not its children
        yield chosen


def _batch_shared(modules: dict[str, nn.Module]) -> list[str]:
    return [n for n, m in modules.items() if getattr(m, "batch_shared_mask", False)]


def predict_weight_scaling(model: nn.Module, x: Tensor) -> Tensor:
    """Deterministic prediction of the weight-scaled "mean network": eval mode, no grad.

    The model's ``training`` flags are restored afterwards.
    """
    with training_modes(model), torch.no_grad():
        model.eval()
        return model(x)


def _auto_chunk(batch: int, T: int, budget: int = MC_ROW_BUDGET) -> int:
    return max(1, min(T, budget // max(batch, 1)))


def predict_mc(model: nn.Module, x: Tensor, T: int, chunk: int | None = None, *, select: Select = None) -> Tensor:
    """``T`` stochastic forward passes under :func:`mc_dropout`; returns ``(T, *output_shape)``.

    The passes are vectorised: ``k`` copies of the batch are stacked along the batch
    dimension (``x.expand(k, B, ...)`` reshaped to ``(k·B, ...)``, any input rank), one
    forward pass is run, and the output is split back into ``(k, B, ...)``. Each copy gets
    its own dropout masks because every per-sample mask is drawn independently. ``chunk``
    is ``k``; ``None`` picks ``k`` so that ``k·B <= MC_ROW_BUDGET`` (1024) rows. Tiling pays
    off for small batches (one large matrix product instead of T small ones: about 10× at
    batch 1, T = 50 on one CPU thread); from about a thousand rows a pass is already
    efficient and bigger tiles only add memory traffic (full tiling was measured at 0.8× of
    the loop at batch 1000), so at batch >= 1024 ``k = 1`` and it runs as a plain loop. The model must treat samples independently in eval mode (true for
    BatchNorm in eval; not for models that mix samples across the batch).

    Fallback: if a selected stochastic module has ``batch_shared_mask = True`` (one mask for
    the whole batch: weight masks, ADL's per-call coin), tiled copies would share that mask
    and the T samples would be correlated, so a plain loop of ``T`` forward passes is used.

    Runs without grad. The model's ``training`` flags are restored afterwards.
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"predict_mc: T must be an integer >= 1, got {T!r}")
    if x.dim() < 1:
        raise ValueError("predict_mc: x must have a leading batch dimension, got a 0-dim tensor")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"predict_mc: chunk must be None or an integer >= 1, got {chunk!r}")
    B = x.shape[0]
    with mc_dropout(model, select) as stochastic, torch.no_grad():
        if _batch_shared(stochastic) or B == 0:
            return torch.stack([model(x) for _ in range(T)])
        k_max = _auto_chunk(B, T) if chunk is None else min(chunk, T)
        outs: list[Tensor] = []
        done = 0
        while done < T:
            k = min(k_max, T - done)
            if k == 1:
                out = model(x).unsqueeze(0)
            else:
                xt = x.unsqueeze(0).expand(k, *x.shape).reshape(k * B, *x.shape[1:])
                out = model(xt)
                if not isinstance(out, Tensor) or out.dim() < 1 or out.shape[0] != k * B:
                    shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                    raise ValueError(f"predict_mc: the model must return a tensor with the batch first; "
                                     f"input batch {k * B} gave output {shape}")
                out = out.reshape(k, B, *out.shape[1:])
            outs.append(out)
            done += k
        return outs[0] if len(outs) == 1 else torch.cat(outs)


# ----------------------------------------------------------------------------- metrics


def _check_probs(probs: Tensor, name: str) -> None:
    if not isinstance(probs, Tensor) or probs.dim() < 2:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"{name}: expected probabilities of shape (T, ..., C), got {shape}")


def predictive_mean(probs: Tensor) -> Tensor:
    """Mean over the MC samples: ``(T, B, C) -> (B, C)``."""
    _check_probs(probs, "predictive_mean")
    return probs.mean(0)


def _entropy(p: Tensor) -> Tensor:
    # xlogy(0, 0) = 0; clamp tiny negative rounding noise.
    return -torch.special.xlogy(p, p.clamp_min(0)).sum(-1)


def predictive_entropy(probs: Tensor) -> Tensor:
    """Entropy of the predictive mean, H[ȳ] = −Σ_c p̄_c log p̄_c (nats): ``(T, B, C) -> (B,)``."""
    _check_probs(probs, "predictive_entropy")
    return _entropy(probs.mean(0))


def expected_entropy(probs: Tensor) -> Tensor:
    """Mean entropy of the individual samples, E_t H[p_t] (nats): ``(T, B, C) -> (B,)``."""
    _check_probs(probs, "expected_entropy")
    return _entropy(probs).mean(0)


def mutual_information(probs: Tensor) -> Tensor:
    """BALD mutual information (Houlsby et al. 2011): H[mean] − mean H, clamped at 0: ``(B,)``."""
    _check_probs(probs, "mutual_information")
    return (predictive_entropy(probs) - expected_entropy(probs)).clamp_min(0.0)


def predictive_variance(samples: Tensor, tau: float | None = None) -> Tensor:
    """Variance of regression outputs over the MC samples (population variance over dim 0).

    With the model precision ``tau`` (Gal & Ghahramani 2016) adds ``1/tau``:
    Var[y] ≈ 1/τ + mean_t ŷ_t² − (mean_t ŷ_t)². ``(T, ...) -> (...)``.
    """
    if not isinstance(samples, Tensor) or samples.dim() < 1:
        raise ValueError("predictive_variance: expected samples of shape (T, ...)")
    var = samples.var(0, correction=0)
    if tau is not None:
        if not tau > 0:
            raise ValueError(f"predictive_variance: tau must be > 0, got {tau!r}")
        var = var + 1.0 / tau
    return var


# ----------------------------------------------------------------------------- enumeration


@dataclass
class SubnetworkAverage:
    """Exact averages over all 2^n thinned networks (see :func:`enumerate_subnetworks`).

    ``arithmetic_mean``: Σ_m P(m)·softmax(f_m(x)), shape ``(B, C)``.
    ``expected_log_prob``: Σ_m P(m)·log softmax(f_m(x)), shape ``(B, C)`` (the thinned nets'
    average log-probability of each class).
    ``geometric_mean``: normalised weighted geometric mean ∝ Π_m softmax(f_m(x))^P(m), the
    softmax of ``expected_log_prob``.
    ``units``: droppable units per dropout layer, in execution order. All float64.
    """

    arithmetic_mean: Tensor
    expected_log_prob: Tensor
    geometric_mean: Tensor
    n_units: int
    n_subnetworks: int
    units: dict[str, int]


def _train_scale(module: nn.Module, p: float) -> float:
    if isinstance(module, StandardDropout):
        return 1.0
    return 0.0 if p >= 1.0 else 1.0 / (1.0 - p)


def _enumerable(module: nn.Module) -> bool:
    return type(module) in (InvertedDropout, StandardDropout, nn.Dropout)


def enumerate_subnetworks(model: nn.Module, x: Tensor, chunk: int | None = None) -> SubnetworkAverage:
    """Evaluate every one of the 2^n dropout masks of a small MLP and average exactly.

    Supported dropout layers: ``InvertedDropout`` ("inverted"), ``StandardDropout``
    ("standard") and ``nn.Dropout``; each element of a layer's input (per sample) is a unit;
    at most ``MAX_ENUMERATED_UNITS`` (20) units in all. A mask m has probability
    Π p^(dropped)(1 − p)^(kept). For each chunk of masks, forward hooks (removed afterwards)
    replace each dropout layer's output by its input × its part of the mask × the
    training-time scale (1/(1 − p) for inverted and ``nn.Dropout``, 1 for standard). The
    batch is tiled per mask inside the first dropout layer reached, so the layers before it
    run once. The model runs in eval mode otherwise (flags restored afterwards) and must
    return logits ``(B, C)``; probabilities are ``softmax(logits)``.

    Returns :class:`SubnetworkAverage` with the arithmetic mean (mixture) and the normalised
    geometric mean (computed in log space in float64). The forward passes run in the
    model's dtype, so use a float64 model for 1e-10 identities.

    ``chunk``: masks per forward pass; ``None`` keeps about 8192 rows per pass.
    """
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError("enumerate_subnetworks: x must be a non-empty batch (B, ...)")
    candidates = {n: m for n, m in model.named_modules() if is_dropout_module(m)}
    if not candidates:
        raise ValueError("enumerate_subnetworks: the model has no dropout layer to enumerate")
    unsupported = {n: type(m).__name__ for n, m in candidates.items() if not _enumerable(m)}
    if unsupported:
        raise ValueError(f"enumerate_subnetworks: only InvertedDropout, StandardDropout and nn.Dropout can be "
                         f"enumerated, found {unsupported}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"enumerate_subnetworks: chunk must be None or an integer >= 1, got {chunk!r}")
    B = x.shape[0]

    with training_modes(model), torch.no_grad():
        model.eval()
        # 1) probe: execution order and per-sample input shape of each dropout layer
        order: list[str] = []
        shapes: dict[str, torch.Size] = {}
        handles = []

        def probe(name: str) -> Callable:
            def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
                if name in shapes:
                    raise ValueError(f"enumerate_subnetworks: dropout layer {name!r} is called more than once "
                                     "per forward pass; cannot assign it one mask")
                shapes[name] = args[0].shape[1:]
                order.append(name)
            return hook

        try:
            for n, m in candidates.items():
                handles.append(m.register_forward_hook(probe(n)))
            model(x)
        finally:
            for h in handles:
                h.remove()
        if not order:
            raise ValueError("enumerate_subnetworks: no dropout layer was called in the forward pass")
        units = {n: math.prod(shapes[n]) for n in order}
        n_units = sum(units.values())
        if n_units > MAX_ENUMERATED_UNITS:
            raise ValueError(f"enumerate_subnetworks: {n_units} droppable units {units} give 2^{n_units} "
                             f"sub-networks; at most {MAX_ENUMERATED_UNITS} units are supported")
        n_sub = 2**n_units

        probs_p = {n: float(candidates[n].p) for n in order}
        # log P(mask) per unit: log(1−p) if kept, log p if dropped (as float64; -inf where impossible)
        log_keep = torch.tensor([math.log1p(-probs_p[n]) if probs_p[n] < 1 else -math.inf
                                 for n in order for _ in range(units[n])], dtype=torch.float64, device=x.device)
        log_drop = torch.tensor([math.log(probs_p[n]) if probs_p[n] > 0 else -math.inf
                                 for n in order for _ in range(units[n])], dtype=torch.float64, device=x.device)
        offsets = dict(zip(order, torch.tensor([0, *units.values()]).cumsum(0).tolist()))

        if chunk is None:
            chunk = max(1, 8192 // B)
        chunk = min(chunk, n_sub)
        bit_idx = torch.arange(n_units, device=x.device)
        state: dict[str, Tensor] = {}
        inputs: dict[str, Tensor] = {}

        def apply(name: str) -> Callable:
            module = candidates[name]
            scale = _train_scale(module, probs_p[name])
            lo, hi = offsets[name], offsets[name] + units[name]
            first = name == order[0]

            def pre_hook(module: nn.Module, args: tuple) -> None:
                # an in-place StandardDropout scales its input in eval mode: keep a copy
                inputs[name] = args[0].clone() if getattr(module, "inplace", False) else args[0]

            def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
                h = inputs.pop(name)
                keep = state["keep"]  # (M, n_units) bool
                M = keep.shape[0]
                m = keep[:, lo:hi].to(h.dtype).mul_(scale).reshape(M, 1, *shapes[name])
                if first:  # tile the batch here: (B, ...) -> (M·B, ...)
                    out = h.unsqueeze(0) * m
                else:
                    out = h.reshape(M, B, *shapes[name]) * m
                return out.reshape(M * B, *shapes[name])
            return pre_hook, hook

        arith = None
        log_geo = None
        handles = []
        try:
            for n in order:
                pre_hook, hook = apply(n)
                handles.append(candidates[n].register_forward_pre_hook(pre_hook))
                handles.append(candidates[n].register_forward_hook(hook))
            for start in range(0, n_sub, chunk):
                idx = torch.arange(start, min(start + chunk, n_sub), device=x.device)
                keep = ((idx.unsqueeze(1) >> bit_idx) & 1).bool()
                M = keep.shape[0]
                logw = torch.where(keep, log_keep, log_drop).sum(1)  # (M,)
                possible = logw > -math.inf
                if not bool(possible.any()):
                    continue
                state["keep"] = keep
                out = model(x)
                if not isinstance(out, Tensor) or out.shape[0] != M * B:
                    raise ValueError("enumerate_subnetworks: the model must return logits (B, C) with the batch first")
                logp = torch.log_softmax(out.to(torch.float64).reshape(M, B, -1), dim=-1)
                w = logw.exp()[possible].view(-1, 1, 1)
                logp = logp[possible]
                a = (w * logp.exp()).sum(0)
                g = (w * logp).sum(0)
                arith = a if arith is None else arith + a
                log_geo = g if log_geo is None else log_geo + g
        finally:
            for h in handles:
                h.remove()
            state.clear()
            inputs.clear()

    geo = torch.softmax(log_geo, dim=-1)
    return SubnetworkAverage(arithmetic_mean=arith, expected_log_prob=log_geo, geometric_mean=geo, n_units=n_units,
                             n_subnetworks=n_sub, units=units)
