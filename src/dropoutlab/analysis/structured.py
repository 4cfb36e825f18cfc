"""Structured dropout experiments: SpatialDropout, DropBlock, DropConnect, stochastic depth.

Tompson, Goroshin, Jain, LeCun, Bregler. "Efficient object localization using convolutional
networks." CVPR 2015 (SpatialDropout). Ghiasi, Lin, Le. "DropBlock: a regularization method for
convolutional networks." NeurIPS 2018. Wan, Zeiler, Zhang, LeCun, Fergus. "Regularization of neural
networks using DropConnect." ICML 2013. Huang, Sun, Liu, Sedra, Weinberger. "Deep networks with
stochastic depth." ECCV 2016.

Measurements (the variants themselves live in :mod:`dropoutlab.variants.structured`):

* :func:`dropblock_drop_fractions` — realised vs nominal drop fraction of DropBlock over feature
  sizes, block sizes and keep probabilities, beside the exact expectation with overlapping blocks;
  :func:`dropblock_check` — the largest relative deviation on a chosen slice (claim DB-G).
* :func:`example_masks` — one mask of element-wise, spatial and DropBlock dropout (figure).
* :func:`feature_maps`, :func:`spatial_correlation` — correlation of neighbouring activations in
  trained conv feature maps, the motivation of SpatialDropout.
* :func:`train_arms` — the same seeds through several arms (paired by seed), with optional
  dropout schedulers (DropBlock's keep-probability ramp) and DropConnect's two eval rules.
* :func:`keep_ramp_scheduler` — DropBlock's linear ramp of keep_prob as a :class:`DropoutScheduler`.
* :func:`active_block_count` — the mean number of surviving residual branches of a stochastic-depth
  network over many forward passes against ``Σ p_l`` (claim SDp-RULE).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn

from ..checks import choices, integer, integers, probabilities, probability, seed_list
from ..schedules import DropoutScheduler, keep_ramp_from_keep
from ..train import TrainConfig, evaluate, fit, seed_everything, training_modes
from ..variants import make_dropout
from ..variants.structured import (
    DropBlock2d,
    DropConnectLinear,
    DropPath,
    drop_block2d,
    dropblock_expected_drop_fraction,
)
from .studies import per_seed, require_splits

__all__ = ["ActiveBlocks", "ArmStudy", "DROPCONNECT_INFERENCES", "active_block_count", "dropblock_check",
           "dropblock_drop_fractions", "example_masks", "feature_maps", "keep_ramp_scheduler", "spatial_correlation",
           "train_arms"]

DROPCONNECT_INFERENCES = ("gaussian", "scale", "sample")
Z_CHECK = float(stats.norm.isf(0.0005))  # two-sided 1e-3: 3.29 standard errors


# ----------------------------------------------------------------------------- DropBlock: drop fraction


def dropblock_drop_fractions(feature_sizes: Sequence[int], block_sizes: Sequence[int], keep_probs: Sequence[float], *,
                             n_trials: int = 100, batch: int = 32, channels: int = 8, seed: int = 0):
    """Realised drop fraction of :func:`~dropoutlab.variants.structured.drop_block2d` on a grid.

    Ghiasi et al. (NeurIPS 2018, Eq. 1) set the seed rate γ so that the expected number of dropped
    units would be ``(1 − keep_prob)·feat²`` if blocks never overlapped; they do, so the realised
    fraction is a little below nominal (:func:`dropblock_expected_drop_fraction` gives it exactly).
    For every (feature size, block size ≤ feature size, keep_prob) the mask of ``n_trials`` batches
    of ``batch × channels`` maps is drawn from one seeded generator and its zero fraction measured.

    Returns a DataFrame with columns ``feature_size, block_size, keep_prob, nominal`` (1 − keep_prob),
    ``expected`` (exact, with overlaps), ``realised`` (mean over trials), ``se`` (its standard error
    from the trial-to-trial spread), ``rel_error`` (realised/nominal − 1), ``expected_rel_error``
    and ``z`` ((realised − expected)/se).
    """
    feats, blocks = integers(feature_sizes, "feature_sizes"), integers(block_sizes, "block_sizes")
    keeps = probabilities(keep_probs, "keep_probs", zero=False, what="keep probabilities")
    n_trials = integer(n_trials, "n_trials", 2)  # the standard error needs two trials
    batch, channels = integer(batch, "batch"), integer(channels, "channels")
    gen = torch.Generator().manual_seed(int(seed))
    rows = []
    for feat in feats:
        ones = torch.ones(batch, channels, feat, feat)
        for block in (b for b in blocks if b <= feat):
            for kp in keeps:
                p = 1.0 - kp
                fractions = np.array([float((drop_block2d(ones, p, block, training=True, generator=gen) == 0)
                                            .float().mean()) for _ in range(n_trials)])
                expected = dropblock_expected_drop_fraction(p, block, feat, feat)
                realised, se = float(fractions.mean()), float(fractions.std(ddof=1) / math.sqrt(n_trials))
                rows.append(dict(feature_size=feat, block_size=block, keep_prob=kp, nominal=p, expected=expected,
                                 realised=realised, se=se, rel_error=realised / p - 1.0,
                                 expected_rel_error=expected / p - 1.0,
                                 z=(realised - expected) / se if se > 0 else 0.0))
    if not rows:
        raise ValueError(f"no block size ≤ a feature size: feature_sizes={feats}, block_sizes={blocks}")
    return pd.DataFrame(rows)


def dropblock_check(frame, feature_size: int, block_sizes: Sequence[int], keep_prob: float) -> dict[str, float]:
    """Largest |realised/nominal − 1| over ``block_sizes`` at ``feature_size`` and ``keep_prob`` (claim DB-G).

    ``frame`` comes from :func:`dropblock_drop_fractions` and must contain every requested cell.
    Returns ``value`` (that largest relative deviation), ``worst_block``, ``expected`` (the same
    maximum for the exact expectation with overlaps) and ``max_abs_z`` (largest |realised −
    expected| in standard errors: the Monte-Carlo agreement with the exact formula).
    """
    feature_size = integer(feature_size, "feature_size")
    blocks = integers(block_sizes, "block_sizes")
    keep_prob = probability(keep_prob, "keep_prob", zero=False, what="a keep probability")
    cells = frame[(frame["feature_size"] == feature_size) & np.isclose(frame["keep_prob"], keep_prob)
                  & frame["block_size"].isin(blocks)]
    missing = sorted(set(blocks) - set(cells["block_size"]))
    if missing:
        raise ValueError(f"frame has no cells for block sizes {missing} at feature_size={feature_size}, "
                         f"keep_prob={keep_prob}")
    worst = cells.loc[cells["rel_error"].abs().idxmax()]
    return dict(value=float(cells["rel_error"].abs().max()), worst_block=int(worst["block_size"]),
                expected=float(cells["expected_rel_error"].abs().max()), max_abs_z=float(cells["z"].abs().max()))


def example_masks(p: float, block_size: int, size: int = 14, channels: int = 4, seed: int = 0) -> dict[str, Tensor]:
    """One keep mask ``(channels, size, size)`` (1 = kept) of each structure, for a figure.

    ``"element-wise"``: inverted dropout; ``"spatial"``: SpatialDropout (whole channels, Tompson et
    al.); ``"DropBlock"``: ``block_size`` blocks (Ghiasi et al.); all at drop probability ``p`` and
    drawn by the package's own modules from a seeded global RNG.
    """
    block_size = integer(block_size, "block_size")
    size, channels = integer(size, "size"), integer(channels, "channels")
    if block_size > size:
        raise ValueError(f"block_size must be ≤ size ({size}), got {block_size}")
    modules = {"element-wise": make_dropout("inverted", p=p), "spatial": make_dropout("spatial", p=p),
               "DropBlock": make_dropout("dropblock", p=p, block_size=block_size)}
    ones = torch.ones(1, channels, size, size)
    torch.manual_seed(int(seed))
    return {name: (module.train()(ones)[0] != 0).float() for name, module in modules.items()}


# ----------------------------------------------------------------------------- feature-map correlation


def feature_maps(model: nn.Module, x: Tensor, layer: str, batch_size: int = 500) -> Tensor:
    """Output of submodule ``layer`` (a name from ``named_modules``) for inputs ``x``, in eval mode."""
    named = dict(model.named_modules())
    if layer not in named:
        raise ValueError(f"layer must name a submodule, got {layer!r}; known: {[n for n in named if n]}")
    batch_size = integer(batch_size, "batch_size")
    outputs: list[Tensor] = []
    handle = named[layer].register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
    try:
        with training_modes(model), torch.no_grad():
            model.eval()
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size])
    finally:
        handle.remove()
    return torch.cat(outputs)


def spatial_correlation(maps: Tensor, max_lag: int = 4) -> np.ndarray:
    """Mean Pearson correlation of activations ``d`` pixels apart, ``d = 1..max_lag``.

    For each channel of ``maps`` ``(N, C, H, W)``, the pairs ``(x[n, c, i, j], x[n, c, i, j + d])``
    and ``(x[n, c, i, j], x[n, c, i + d, j])`` over all samples and positions give one correlation;
    the result averages it over the channels whose activations vary (dead channels are skipped).
    Tompson et al.'s argument: when neighbours are this correlated, dropping single activations
    leaves their information in the neighbours, so i.i.d. dropout hardly regularises.
    """
    if not isinstance(maps, Tensor) or maps.dim() != 4:
        raise ValueError(f"maps must be a (N, C, H, W) tensor, got {getattr(maps, 'shape', type(maps))}")
    max_lag = integer(max_lag, "max_lag")
    if max_lag >= min(maps.shape[-2:]):
        raise ValueError(f"max_lag must be < the map's smallest side ({min(maps.shape[-2:])}), got {max_lag}")
    x = maps.double()
    out = []
    for d in range(1, max_lag + 1):
        a = torch.cat([x[..., :, :-d].transpose(0, 1).reshape(x.shape[1], -1),
                       x[..., :-d, :].transpose(0, 1).reshape(x.shape[1], -1)], dim=1)
        b = torch.cat([x[..., :, d:].transpose(0, 1).reshape(x.shape[1], -1),
                       x[..., d:, :].transpose(0, 1).reshape(x.shape[1], -1)], dim=1)
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        denom = (a.square().sum(1) * b.square().sum(1)).sqrt()
        live = denom > 0
        if not bool(live.any()):
            raise ValueError("every channel is constant: no correlation is defined")
        out.append(float(((a * b).sum(1)[live] / denom[live]).mean()))
    return np.array(out)


# ----------------------------------------------------------------------------- training arms


def keep_ramp_scheduler(model: nn.Module, keep_prob: float, steps: int) -> DropoutScheduler:
    """DropBlock's schedule (Ghiasi et al. 2018): keep_prob falls linearly from 1 to ``keep_prob`` over ``steps``.

    ``kp(t) = 1 − (min(t, T)/T)(1 − keep_prob)`` written after every optimizer step into every
    :class:`DropBlock2d` of ``model`` (:func:`~dropoutlab.schedules.keep_ramp_from_keep`).
    """
    keep_prob = probability(keep_prob, "keep_prob", zero=False, what="a keep probability")
    return DropoutScheduler(model, keep_ramp_from_keep(keep_prob, integer(steps, "steps")), unit="step",
                            select=DropBlock2d)


@dataclass(frozen=True)
class ArmStudy:
    """Arms × seeds trained on the same seeds (paired): histories, final test errors, optionally the models.

    ``errors`` has one row per (arm, seed, evaluation) with ``error`` in percent; ``evaluation`` is
    ``"default"``; when the study was run with ``inferences``, one of those rules instead (networks
    without DropConnect repeat their single number under every rule's name).
    """

    history: Any  # DataFrame: the fit() records plus arm and seed
    errors: Any  # DataFrame: arm, seed, evaluation, error (%), loss
    models: dict[tuple[str, int], nn.Module]

    def test_error(self, arm: str, evaluation: str = "default"):
        """Per-seed test error (%) of one arm (a Series indexed by seed)."""
        return per_seed(self.errors, "error", arm=arm, evaluation=evaluation)


def train_arms(make_model: Callable[..., nn.Module], arms: Mapping[str, Mapping[str, Any]], data: Mapping[str, Any],
               config: TrainConfig, seeds: Sequence[int], *,
               schedulers: Mapping[str, Callable[[nn.Module], Any]] | None = None,
               inferences: Sequence[str] = (), keep_models: bool = False, test_split: str = "test",
               eval_batch_size: int = 1000) -> ArmStudy:
    """Train ``make_model(**arms[arm])`` for every arm and seed through :func:`~dropoutlab.train.fit`.

    The seed sets initialisation and data order, so the arms are paired by seed.
    ``schedulers[arm]`` (optional) builds a dropout scheduler for that arm's fresh model (e.g.
    :func:`keep_ramp_scheduler`); ``fit`` steps it and includes it in the run's key. After training
    each network is evaluated on ``data[test_split]``; a network with DropConnect layers is
    evaluated once per rule in ``inferences`` (once with its own rule when ``inferences`` is empty).
    """
    if not arms:
        raise ValueError("arms must name at least one arm: {label: model keyword arguments}")
    seeds = seed_list(seeds)
    require_splits(data, [test_split])
    unknown = sorted(set(schedulers or {}) - set(arms))
    if unknown:
        raise ValueError(f"schedulers name unknown arms {unknown}; arms: {list(arms)}")
    inferences = choices(inferences, DROPCONNECT_INFERENCES, "inferences") if len(inferences) else ()
    frames, errors, models = [], [], {}
    for arm, kwargs in arms.items():
        for seed in seeds:
            seed_everything(seed)
            model = make_model(**kwargs)
            scheduler = schedulers[arm](model) if schedulers and arm in schedulers else None
            history = fit(model, dict(data), replace(config, seed=seed), scheduler=scheduler)
            frame = history.to_frame()
            frame.insert(0, "seed", seed)
            frame.insert(0, "arm", arm)
            frames.append(frame)
            dropconnect = [m for m in model.modules() if isinstance(m, DropConnectLinear)]
            for evaluation in inferences if inferences and dropconnect else ("default",):
                if evaluation != "default":
                    for module in dropconnect:
                        module.inference = evaluation
                metrics = evaluate(model, data[test_split], config.task, batch_size=eval_batch_size)
                errors.append(dict(arm=arm, seed=seed, evaluation=evaluation, error=100 * metrics["error"],
                                   loss=metrics["loss"]))
            if keep_models:
                models[(arm, seed)] = model
    errors_frame = pd.DataFrame(errors)
    if inferences:  # networks without DropConnect: the same number under every rule's name
        plain = errors_frame[errors_frame["evaluation"] == "default"]
        errors_frame = pd.concat([errors_frame[errors_frame["evaluation"] != "default"],
                                  *(plain.assign(evaluation=i) for i in inferences)], ignore_index=True)
    return ArmStudy(history=pd.concat(frames, ignore_index=True), errors=errors_frame, models=models)


# ----------------------------------------------------------------------------- stochastic depth


@dataclass(frozen=True)
class ActiveBlocks:
    """Surviving residual branches of a stochastic-depth network over ``n_draws`` independent draws.

    ``mean``: measured mean number of active blocks; ``expected``: ``Σ_l (1 − p_l)`` of the model's
    DropPath rates; ``se``: the exact standard error ``sqrt(Σ p_l(1 − p_l)/n_draws)``;
    ``tolerance``: ``Z_CHECK · se`` (two-sided 1e-3); ``frequency``: per block, the measured share
    of draws in which it survived; ``survival``: per block, ``1 − p_l``.
    """

    mean: float
    expected: float
    se: float
    tolerance: float
    n_draws: int
    frequency: np.ndarray
    survival: np.ndarray

    @property
    def deviation(self) -> float:
        return abs(self.mean - self.expected)


def active_block_count(model: nn.Module, x: Tensor, n_passes: int = 1000, seed: int = 0) -> ActiveBlocks:
    """Count the residual branches that survive, over ``n_passes`` training-mode forward passes of ``x``.

    Every :class:`DropPath` of ``model`` (in module order) is hooked: its branch was dropped for a
    sample when that sample's output is exactly zero (the mask multiplies the branch by 0). A
    ``mode="batch"`` DropPath draws one coin per pass (one draw per pass), ``mode="row"`` one per
    sample (``len(x)`` draws per pass). The model's BatchNorm statistics are restored afterwards.
    Huang et al. (ECCV 2016): with ``p_l = (l/L)·p_last`` the expected number of active blocks is
    ``Σ (1 − p_l) = L − p_last(L + 1)/2``, ``(3L − 1)/4`` at ``p_last = 0.5``.
    """
    n_passes = integer(n_passes, "n_passes")
    paths = [m for m in model.modules() if isinstance(m, DropPath)]
    if not paths:
        raise ValueError(f"{type(model).__name__} has no DropPath module")
    modes = {m.mode for m in paths}
    if len(modes) != 1:
        raise ValueError(f"all DropPath modules must share one mode, got {sorted(modes)}")
    if not isinstance(x, Tensor) or x.dim() < 2 or len(x) < 1:
        raise ValueError(f"x must be a batch (N, ...) with N ≥ 1, got {getattr(x, 'shape', type(x))}")
    per_pass = len(x) if modes == {"row"} else 1
    counts = torch.zeros(len(paths), dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def hook(index: int):
        def record(_module, _inputs, out: Tensor) -> None:
            alive = out.detach().flatten(1).abs().amax(1) > 0  # per sample
            counts[index] += float(alive.double().sum()) if per_pass > 1 else float(alive.any())
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(paths)]
    torch.manual_seed(int(seed))
    try:
        with training_modes(model), torch.no_grad():
            model.train()
            for _ in range(n_passes):
                model(x)
    finally:
        for h in handles:
            h.remove()
        model.load_state_dict(state)
    n_draws = n_passes * per_pass
    frequency = (counts / n_draws).numpy()
    rates = np.array([float(m.p) for m in paths])
    survival = 1.0 - rates
    se = math.sqrt(float((rates * survival).sum()) / n_draws)
    return ActiveBlocks(mean=float(frequency.sum()), expected=float(survival.sum()), se=se, tolerance=Z_CHECK * se,
                        n_draws=n_draws, frequency=frequency, survival=survival)
