"""Variance shift between dropout and BatchNorm (Li, Chen, Hu, Yang, CVPR 2019).

Theory. A unit ``x`` with mean ``c`` and variance ``v`` passes multiplicative noise ``s`` with
E[s] = 1 and Var[s] = σ² in training and the identity at test. Then

    Var_train = (1 + σ²)(c² + v) − c²,        Var_test = v,        Δ = Var_test / Var_train.

Inverted dropout with drop probability ``p`` (keep rate q = 1 − p) has σ² = p/(1 − p), so
Δ = q·v / (v + (1 − q)c²) — Li et al.'s Δ(p) = v / (1/p·(c² + v) − c²) with their p = keep
rate — and Δ = q at c = 0. Uout, ``s = 1 + r``, r ~ U(−β, β), has σ² = β²/3 and Δ = 3/(3 + β²)
at c = 0. A BatchNorm layer right after the noise accumulates Var_train in its running
variance but sees Var_test in eval mode: the "variance shift".

Measurements. :func:`measure_bn_input_variance` hooks every BatchNorm layer of a trained
network and compares the variance of its input in train mode (dropout on) with eval mode;
:func:`recalibrate_bn` re-estimates the running statistics with dropout off (the "FIX2" of the
notebook); :func:`bn_dropout_study` trains settings × seeds and applies both. The Monte Carlo
check :func:`variance_shift_grid` tests the formulas with the package's own dropout modules.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn

from ..checks import choice, finite, integer, is_integer, optional_integer, positive, probability, seed_list, settle
from ..experiments import run_settings
from ..train import TrainConfig, evaluate, model_device, training_modes
from ..variants import DropoutBase, make_dropout
from ..variants.bernoulli import InvertedDropout
from ..variants.noise import GaussianDropout, Uout
from .studies import require_splits, study_config, train_config

__all__ = [
    "VarianceShiftConfig",
    "VarianceShiftStudy",
    "block_orders",
    "bn_dropout_study",
    "gap_recovered",
    "dropout_noise_variance",
    "mc_agreement",
    "measure_bn_input_variance",
    "monte_carlo_variance_shift",
    "noise_variance",
    "paired_ratio_ci",
    "recalibrate_bn",
    "recovery_contrast",
    "uout_noise_variance",
    "uout_variance_shift",
    "variance_shift",
    "variance_shift_grid",
    "variance_train",
]

MC_VARIANTS = ("dropout", "uout")
MEASURE_COLUMNS = ["layer", "channels", "var_train", "var_eval", "ratio", "shift_ratio_max", "running_var",
                   "shift_running_max", "ratio_theory"]
_BN = nn.modules.batchnorm._BatchNorm


# --------------------------------------------------------------------------------------------
# Theory
# --------------------------------------------------------------------------------------------


def _checked(values: Any, name: str, what: str, ok: Callable[[np.ndarray], Any] = lambda a: True) -> np.ndarray:
    """``values`` (a number or an array of them) as a float array; every entry finite and ``ok``."""
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr) & ok(arr)):
        raise ValueError(f"{name} must be {what}, got {values!r}")
    return arr


def _scalar_or_array(arr: np.ndarray) -> float | np.ndarray:
    return float(arr) if arr.ndim == 0 else arr


def dropout_noise_variance(p: float | np.ndarray) -> float | np.ndarray:
    """Var[s] = p/(1 − p) of inverted dropout's noise s = m/(1 − p), m ~ Bernoulli(1 − p)."""
    p = _checked(p, "p (drop probability)", "in [0, 1)", lambda a: (a >= 0) & (a < 1))
    return _scalar_or_array(p / (1.0 - p))


def uout_noise_variance(beta: float | np.ndarray) -> float | np.ndarray:
    """Var[s] = β²/3 of Uout's noise s = 1 + r, r ~ U(−β, β)."""
    beta = _checked(beta, "beta", "a finite number ≥ 0", lambda a: a >= 0)
    return _scalar_or_array(beta**2 / 3.0)


def variance_train(c: float | np.ndarray, v: float | np.ndarray,
                   noise_var: float | np.ndarray) -> float | np.ndarray:
    """Training-time variance (1 + σ²)(c² + v) − c² of ``x·s`` (E[x] = c, Var x = v, E s = 1, Var s = σ²)."""
    c = _checked(c, "c (unit mean)", "finite")
    v = _checked(v, "v (unit variance)", "a finite number > 0", lambda a: a > 0)
    noise_var = _checked(noise_var, "noise_var", "a finite number ≥ 0", lambda a: a >= 0)
    return _scalar_or_array((1.0 + noise_var) * (c**2 + v) - c**2)


def variance_shift(p: float | np.ndarray, c: float | np.ndarray = 0.0,
                   v: float | np.ndarray = 1.0) -> float | np.ndarray:
    """Li et al. (2019) shift ratio Δ = Var_test/Var_train for inverted dropout before BN.

    ``p`` is the *drop* probability (keep rate q = 1 − p): Δ = q·v / (v + (1 − q)c²), = q at c = 0.
    """
    return _shift_ratio(c, v, dropout_noise_variance(p))


def uout_variance_shift(beta: float | np.ndarray, c: float | np.ndarray = 0.0,
                        v: float | np.ndarray = 1.0) -> float | np.ndarray:
    """Shift ratio of Uout(β) before BN: v / ((1 + β²/3)(c² + v) − c²), = 3/(3 + β²) at c = 0."""
    return _shift_ratio(c, v, uout_noise_variance(beta))


def _shift_ratio(c: Any, v: Any, noise_var: float | np.ndarray) -> float | np.ndarray:
    train = variance_train(c, v, noise_var)  # checks c and v
    return _scalar_or_array(np.asarray(v, dtype=float) / np.asarray(train))


def noise_variance(module: nn.Module) -> float | None:
    """Var[s] of a multiplicative-noise module's noise in training, or None if it is not one.

    Known: inverted dropout (ours and ``torch.nn.Dropout``), Gaussian dropout (p/(1 − p)) and
    Uout (β²/3). Other variants (standard dropout rescales at test time, structured masks
    share noise across units) return None.
    """
    if isinstance(module, (InvertedDropout, GaussianDropout)) or type(module) is nn.Dropout:
        return float(dropout_noise_variance(float(module.p)))
    if isinstance(module, Uout):
        return float(uout_noise_variance(float(module.beta)))
    return None


# --------------------------------------------------------------------------------------------
# Monte Carlo check of the formulas
# --------------------------------------------------------------------------------------------


def monte_carlo_variance_shift(variant: str, rate: float, c: float, v: float = 1.0,
                               n_samples: int = 1_000_000, seed: int = 0) -> dict[str, float | str]:
    """Estimate Var_train and Δ by pushing ``x ~ N(c, v)`` through the package's noise module.

    ``variant``: "dropout" (inverted dropout, ``rate`` = drop probability p) or "uout"
    (``rate`` = β). Standard errors come from the influence functions of the estimators:
    for the sample variance of y, (y − ȳ)²; for the ratio R = S²_x/S²_y of the sample
    variances of the same draws, ((x − x̄)² − R (y − ȳ)²)/S²_y. ``z`` = (R − Δ)/SE(R).
    """
    choice(variant, MC_VARIANTS, "variant")
    n = integer(n_samples, "n_samples", 2)
    c, v = finite(c, "c (unit mean)"), positive(v, "v (unit variance)")
    if variant == "dropout":
        rate = probability(rate, "rate (drop probability)")
        module, noise_var = make_dropout("inverted", p=rate), float(dropout_noise_variance(rate))
    else:
        rate = positive(rate, "rate (beta)", zero=True)
        module, noise_var = Uout(beta=rate), float(uout_noise_variance(rate))
    module.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x = c + math.sqrt(v) * torch.randn(n, dtype=torch.float64)
        y = module(x)
    a, b = (x - x.mean()) ** 2, (y - y.mean()) ** 2
    var_x, var_y = float(a.sum()) / (n - 1), float(b.sum()) / (n - 1)
    ratio = var_x / var_y
    ratio_se = float(((a - ratio * b) / var_y).std()) / math.sqrt(n)
    train_theory = float(variance_train(c, v, noise_var))
    ratio_theory = v / train_theory
    return {"variant": variant, "rate": rate, "c": c, "v": v, "n_samples": n,
            "var_train_theory": train_theory, "var_train_mc": var_y, "var_train_se": float(b.std()) / math.sqrt(n),
            "var_test_mc": var_x, "ratio_theory": ratio_theory, "ratio_mc": ratio, "ratio_se": ratio_se,
            "z": (ratio - ratio_theory) / ratio_se}


def _row_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1)[0])


def variance_shift_grid(p_values: Iterable[float], c_values: Iterable[float], beta_values: Iterable[float] = (),
                        v: float = 1.0, n_samples: int = 1_000_000, seed: int = 0):
    """Monte Carlo vs theory over a grid: dropout rows for p × c, Uout rows for β × c.

    Each grid point draws its own samples, seeded from ``seed`` and the row index through
    ``numpy.random.SeedSequence`` (well-separated streams, not neighbouring small seeds), so the
    rows are independent. Returns a DataFrame with the columns of :func:`monte_carlo_variance_shift`.
    """
    c_values = list(c_values)
    points = [("dropout", p, c) for p in p_values for c in c_values]
    points += [("uout", beta, c) for beta in beta_values for c in c_values]
    if not points:
        raise ValueError("variance_shift_grid: p_values/beta_values and c_values give an empty grid")
    rows = [monte_carlo_variance_shift(variant, rate, c, v, n_samples, _row_seed(seed, i))
            for i, (variant, rate, c) in enumerate(points)]
    return pd.DataFrame(rows)


def mc_agreement(grid, family_level: float = 0.99) -> dict[str, float | int]:
    """How far the Monte Carlo ratios are from the theory, in standard errors, and the bound they should stay under.

    Each row's ``z`` is approximately standard normal under the theory; with ``k`` rows the
    Bonferroni critical value ``z* = Φ⁻¹(1 − (1 − family_level)/(2k))`` bounds ``max |z|`` except
    with probability ``1 − family_level`` — the tolerance of an implementation check. Returns
    ``rows``, ``max_abs_z``, ``z_critical`` and the largest relative error |R − Δ|/Δ
    (``max_rel_error``).
    """
    probability(family_level, "family_level", zero=False, what="a level")
    k = len(grid)
    if k == 0:
        raise ValueError("mc_agreement: empty grid")
    z_critical = float(stats.norm.ppf(1 - (1 - family_level) / (2 * k)))
    max_abs_z = float(np.abs(grid["z"]).max())
    rel = np.abs(grid["ratio_mc"] - grid["ratio_theory"]) / grid["ratio_theory"]
    return {"rows": k, "max_abs_z": max_abs_z, "z_critical": z_critical, "max_rel_error": float(rel.max())}


# --------------------------------------------------------------------------------------------
# Measuring the shift in a network
# --------------------------------------------------------------------------------------------


def _batchnorms(model: nn.Module) -> list[tuple[str, _BN]]:
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, _BN)]
    if not found:
        raise ValueError(f"model has no BatchNorm layer ({type(model).__name__}); nothing to measure")
    return found


def _as_input(x: Any, name: str = "x") -> Tensor:
    x = getattr(x, "x", x)
    if not isinstance(x, Tensor) or x.dim() < 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty tensor (N, ...) or a dataset with such an .x, "
                         f"got {type(x).__name__}")
    return x


class _ChannelMoments:
    """Per-channel count, mean and sum of squared deviations, merged chunk by chunk (Chan et al.)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, x: Tensor) -> None:
        flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1).float()
        n = flat.shape[1]
        mean = flat.mean(1)
        m2 = ((flat - mean[:, None]) ** 2).sum(1)
        mean, m2 = mean.cpu().double().numpy(), m2.cpu().double().numpy()
        if self.mean is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.n * n / total
        self.n = total

    @property
    def var(self) -> np.ndarray:
        return self.m2 / max(self.n - 1, 1)


@contextmanager
def _restored(model: nn.Module, batchnorms: Sequence[nn.Module]):
    """Restore every module's train/eval flag and the BN buffers when the block ends."""
    buffers = [(bn, {k: b.clone() for k, b in bn.named_buffers(recurse=False)}) for bn in batchnorms]
    try:
        with training_modes(model):
            yield
    finally:
        for bn, saved in buffers:
            for key, value in saved.items():
                getattr(bn, key).copy_(value)


def _is_noise(module: nn.Module) -> bool:
    return isinstance(module, (DropoutBase, nn.modules.dropout._DropoutNd))


def _preceding_noise(model: nn.Module) -> dict[str, float | None]:
    """σ² of the noise acting directly on each BN's input, by BN name, in registration order.

    The σ² of a noise module registered right before the BN (None if its σ² is unknown, see
    :func:`noise_variance`); 0.0 when no dropout module comes before the BN anywhere; None when
    dropout sits further upstream (the shift then depends on the layers in between).
    """
    result: dict[str, float | None] = {}
    previous: nn.Module | None = None
    seen_noise = False
    for name, module in model.named_modules():
        seen_noise = seen_noise or _is_noise(module)
        if any(True for _ in module.children()):
            continue
        if isinstance(module, _BN):
            if previous is not None and _is_noise(previous):
                result[name] = noise_variance(previous)
            else:
                result[name] = None if seen_noise else 0.0
        previous = module
    return result


def _collect(model: nn.Module, x: Tensor, batchnorms, batch_size: int | None) -> dict[str, _ChannelMoments]:
    moments = {name: _ChannelMoments() for name, _ in batchnorms}
    handles = [bn.register_forward_pre_hook(lambda _m, inputs, key=name: moments[key].add(inputs[0]))
               for name, bn in batchnorms]
    device = model_device(model)
    step = len(x) if batch_size is None else batch_size
    try:
        with torch.no_grad():
            for start in range(0, len(x), step):
                model(x[start:start + step].to(device))
    finally:
        for handle in handles:
            handle.remove()
    return moments


def measure_bn_input_variance(model: nn.Module, x: Tensor, batch_size: int | None = 256, seed: int = 0,
                              per_channel: bool = False):
    """Variance of every BatchNorm layer's input in train mode (dropout on) vs eval mode.

    Two passes over ``x`` (a tensor ``(N, ...)`` or a dataset with ``.x``) in chunks of
    ``batch_size`` (None: one chunk), with forward pre-hooks on every ``BatchNorm1d/2d/3d``:
    the whole model in eval mode, then in train mode — dropout active and each BN normalising a
    chunk with that chunk's statistics, as in training, so use the training batch size. The
    variance of a channel is taken over every sample and position of ``x``. Afterwards every
    module's train/eval flag, the BN running statistics and the global RNG are as before; the
    hooks are removed. Dropout noise is seeded with ``seed``.

    Returns a pandas DataFrame, one row per BN layer in module order:

    * ``layer`` (qualified module name), ``channels``;
    * ``var_train``, ``var_eval``: the input variance per channel, averaged over channels;
    * ``ratio`` = var_eval / var_train (Li et al.'s Δ; < 1 when dropout inflates the training variance);
    * ``shift_ratio_max``: max over channels of max(r, 1/r), r = var_eval/var_train per channel;
    * ``running_var``: BN's running variance averaged over channels, and ``shift_running_max``:
      max over channels of max(r, 1/r) with r = var_eval/running_var (Li et al. Fig. 1, "real vs moving");
    * ``ratio_theory``: Δ predicted from the eval-mode mean c and variance v of each channel when a
      noise module (inverted/Gaussian dropout, Uout) sits right before the BN, 1.0 when no noise
      precedes it anywhere, NaN when noise sits further upstream (its effect is then not closed-form).

    ``per_channel=True`` returns one row per (layer, channel) with the per-channel values instead
    (``channel``, ``mean_eval`` added; ``shift_*`` then hold max(r, 1/r) of that channel).
    """
    optional_integer(batch_size, "batch_size")  # None: one pass
    x = _as_input(x)
    batchnorms = _batchnorms(model)
    noise_before = _preceding_noise(model)
    device = model_device(model)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with _restored(model, [bn for _, bn in batchnorms]), torch.random.fork_rng(devices=fork_devices):
        # eval pass first: the train-mode pass moves the running statistics (restored afterwards)
        model.eval()
        evaluation = _collect(model, x, batchnorms, batch_size)
        torch.manual_seed(seed)
        model.train()
        train = _collect(model, x, batchnorms, batch_size)
    rows = []
    for name, bn in batchnorms:
        var_train, var_eval, mean_eval = train[name].var, evaluation[name].var, evaluation[name].mean
        running = (bn.running_var.detach().double().cpu().numpy() if bn.running_var is not None
                   else np.full_like(var_eval, np.nan))
        noise = noise_before[name]
        theory_train = (1.0 + noise) * (mean_eval**2 + var_eval) - mean_eval**2 if noise is not None else None
        ratio, running_ratio = var_eval / var_train, var_eval / running
        shift, running_shift = np.maximum(ratio, 1.0 / ratio), np.maximum(running_ratio, 1.0 / running_ratio)
        if per_channel:
            theory = var_eval / theory_train if theory_train is not None else np.full_like(var_eval, math.nan)
            rows += [{"layer": name, "channel": ch, "mean_eval": mean_eval[ch], "var_train": var_train[ch],
                      "var_eval": var_eval[ch], "ratio": ratio[ch], "shift_ratio_max": shift[ch],
                      "running_var": running[ch], "shift_running_max": running_shift[ch], "ratio_theory": theory[ch]}
                     for ch in range(len(var_eval))]
            continue
        rows.append({"layer": name, "channels": len(var_eval), "var_train": float(var_train.mean()),
                     "var_eval": float(var_eval.mean()), "ratio": float(var_eval.mean() / var_train.mean()),
                     "shift_ratio_max": float(shift.max()), "running_var": float(running.mean()),
                     "shift_running_max": float(running_shift.max()),
                     "ratio_theory": float(var_eval.mean() / theory_train.mean()) if theory_train is not None
                     else math.nan})
    frame = pd.DataFrame(rows)
    return frame if per_channel else frame[MEASURE_COLUMNS]


def recalibrate_bn(model: nn.Module, data: Any, batch_size: int | None = 256) -> nn.Module:
    """Re-estimate every BN layer's running mean and variance in eval mode, dropout off (in place).

    The "statistical adjustment" fix for the variance shift (Li et al. 2019; cf. the BN-statistics
    re-estimation of Hendrycks & Gimpel 2017): the running statistics become the exact mean and
    (unbiased) variance of each BN's input over ``data`` (a tensor or a dataset with ``.x``, e.g.
    the training set) with the whole model in eval mode. BN layers are recalibrated one after the
    other in module order, each from a pass in which the layers before it already use their new
    statistics, so every BN ends up with the statistics of exactly the input it sees at test time.
    ``batch_size`` only sets the chunk size of the passes. The train/eval flags are restored.
    Returns ``model``.
    """
    optional_integer(batch_size, "batch_size")  # None: one pass
    x = _as_input(data, "data")
    batchnorms = _batchnorms(model)
    with training_modes(model):
        model.eval()
        for name, bn in batchnorms:
            moments = _collect(model, x, [(name, bn)], batch_size)[name]
            if bn.running_mean is not None:
                bn.running_mean.copy_(torch.as_tensor(moments.mean, dtype=bn.running_mean.dtype))
                bn.running_var.copy_(torch.as_tensor(moments.var, dtype=bn.running_var.dtype))
    return model


# --------------------------------------------------------------------------------------------
# Measurements for the claims (the registry's rules decide the verdicts)
# --------------------------------------------------------------------------------------------


def paired_ratio_ci(numerator: Sequence[float], denominator: Sequence[float],
                    level: float = 0.95) -> tuple[float, float, float]:
    """Ratio of means mean(a)/mean(b) of paired values with Fieller's confidence interval.

    The interval holds every f for which the paired t test of mean(a − f·b) = 0 does not
    reject at ``level``: the roots of (ā − f b̄)² = t²·s²(a − f b)/n. When b̄ itself is not
    significantly different from 0 the set is unbounded and (ratio, −inf, inf) is returned; a
    single pair gives (ratio, nan, nan).
    Used for "the fraction of the gap that a fix recovers".
    """
    a, b = _paired("numerator and denominator", numerator, denominator)
    probability(level, "level", zero=False, what="a confidence level")
    n = a.size
    mean_a, mean_b = a.mean(), b.mean()
    ratio = float(mean_a / mean_b) if mean_b != 0 else math.nan
    if n == 1:
        return ratio, math.nan, math.nan
    cov = np.cov(np.vstack([a, b]), ddof=1) / n
    t2 = stats.t.ppf(0.5 + level / 2, n - 1) ** 2
    qa = mean_b**2 - t2 * cov[1, 1]
    qb = mean_a * mean_b - t2 * cov[0, 1]
    qc = mean_a**2 - t2 * cov[0, 0]
    disc = qb**2 - qa * qc
    if qa <= 0 or disc < 0:
        return ratio, -math.inf, math.inf
    root = math.sqrt(disc)
    return ratio, float((qb - root) / qa), float((qb + root) / qa)


def gap_recovered(broken: Sequence[float], fixed: Sequence[float], reference: Sequence[float],
                  level: float = 0.95) -> dict[str, float]:
    """Fraction of the gap ``broken − reference`` that a fix closes, paired by seed (a measurement).

    Per seed s: recovered = broken_s − fixed_s, gap = broken_s − reference_s. Returns the
    ``fraction`` mean(recovered)/mean(gap) with its Fieller interval (``low``, ``high``, see
    :func:`paired_ratio_ci`; unbounded when the gap is not clearly non-zero). To test
    "the fix recovers at least a share of the gap" use :func:`recovery_contrast` instead.
    """
    a, b, r = _paired("broken, fixed and reference", broken, fixed, reference)
    fraction, low, high = paired_ratio_ci(a - b, a - r, level)
    return {"fraction": fraction, "low": low, "high": high}


def recovery_contrast(broken: Sequence[float], fixed: Sequence[float], reference: Sequence[float],
                      share: float = 0.5) -> np.ndarray:
    """Per seed, (broken − fixed) − ``share``·(broken − reference): > 0 where the fix closes more than ``share``.

    The mean of the contrast is > 0 exactly when mean(recovered)/mean(gap) > ``share`` (for a
    positive mean gap), so a one-sample test of the per-seed contrasts tests "recovers at least
    ``share`` of the gap" with an ordinary t interval instead of Fieller's ratio interval.
    """
    probability(share, "share", one=True, what="a share")
    a, b, r = _paired("broken, fixed and reference", broken, fixed, reference)
    return (a - b) - share * (a - r)


def _paired(names: str, *arms: Sequence[float]) -> list[np.ndarray]:
    arrays = [np.asarray(v, dtype=float) for v in arms]
    shapes = [a.shape for a in arrays]
    if len(set(shapes)) != 1 or arrays[0].ndim != 1 or arrays[0].size < 1:
        raise ValueError(f"{names} must be paired non-empty 1-d sequences (one value per seed), "
                         f"got shapes {', '.join(map(str, shapes))}")
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError(f"{names} must be finite")
    return arrays


# --------------------------------------------------------------------------------------------
# The trained-network experiment
# --------------------------------------------------------------------------------------------


def block_orders(order: str, n_blocks: int, pool_blocks: Iterable[int]) -> list[str]:
    """One order string per block: ``order`` with its ``pool`` token kept only in ``pool_blocks``.

    Blocks are numbered from 0. A pooling block whose ``order`` has no ``pool`` token gets it
    appended, e.g. ``block_orders("conv-drop-bn-act", 4, [1, 3])`` pools after blocks 1 and 3.
    """
    integer(n_blocks, "n_blocks")
    pool_blocks = set(pool_blocks)
    bad = sorted(b for b in pool_blocks if not (is_integer(b) and 0 <= b < n_blocks))
    if bad:
        raise ValueError(f"pool_blocks must be block indices in [0, {n_blocks}), got {bad}")
    tokens = [t for t in order.split("-") if t]
    without_pool = "-".join(t for t in tokens if t != "pool")
    with_pool = order if "pool" in tokens else f"{without_pool}-pool"
    return [with_pool if i in pool_blocks else without_pool for i in range(n_blocks)]


@dataclass
class VarianceShiftStudy:
    """Results of :func:`bn_dropout_study`, all tidy DataFrames.

    * ``history``: per-epoch records of every run (as :func:`dropoutlab.experiments.run_settings`);
    * ``errors``: one row per (setting, seed, stage) with test ``error`` (%) and ``loss``; stage
      "trained" is the network as trained, "recalibrated" the same weights after :func:`recalibrate_bn`
      (BN networks only);
    * ``variance``: :func:`measure_bn_input_variance` per (setting, seed, stage) and BN layer.
    """

    history: Any
    errors: Any
    variance: Any

    def test_error(self, stage: str = "trained"):
        """Test error (%) indexed by (setting, seed) for one stage."""
        rows = self.errors[self.errors["stage"] == stage]
        return rows.set_index(["setting", "seed"])["error"]

    def max_shift(self, column: str = "shift_running_max", stage: str = "trained"):
        """Per run, the largest value of a :func:`measure_bn_input_variance` column over the BN layers.

        Indexed by (setting, seed); only settings with BatchNorm appear. The default column is the
        largest two-sided mismatch max(r, 1/r), r = eval-mode input variance / running variance.
        """
        if column not in self.variance:
            raise ValueError(f"max_shift: no column {column!r}; the variance frame has {list(self.variance.columns)}")
        rows = self.variance[self.variance["stage"] == stage]
        if rows.empty:
            raise ValueError(f"max_shift: no variance measurements at stage {stage!r}")
        return rows.groupby(["setting", "seed"], sort=False)[column].max()


@dataclass(frozen=True)
class VarianceShiftConfig:
    """Settings of :func:`bn_dropout_study`, checked once when built: ``training``, ``seeds``; the variance is
    measured on the first ``n_measure`` training images (chunks of ``measure_batch_size``, default the
    training batch size), BN is recalibrated on the first ``n_recalibrate`` (None: all; chunks of
    ``recalibration_batch_size``); test error on ``test_split`` in batches of ``eval_batch_size``."""

    training: TrainConfig
    seeds: tuple[int, ...]
    n_measure: int = 2000
    n_recalibrate: int | None = None
    measure_batch_size: int | None = None
    recalibration_batch_size: int | None = None
    eval_batch_size: int = 256
    test_split: str = "test"

    def __post_init__(self) -> None:
        name = "VarianceShiftConfig"
        settle(self, training=train_config(self.training, f"{name}.training"),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               n_measure=integer(self.n_measure, f"{name}.n_measure", 2),
               n_recalibrate=optional_integer(self.n_recalibrate, f"{name}.n_recalibrate", 2),
               measure_batch_size=optional_integer(self.measure_batch_size, f"{name}.measure_batch_size"),
               recalibration_batch_size=optional_integer(self.recalibration_batch_size,
                                                         f"{name}.recalibration_batch_size"),
               eval_batch_size=integer(self.eval_batch_size, f"{name}.eval_batch_size"))


def bn_dropout_study(make_model: Callable[..., nn.Module], settings: dict[str, dict[str, Any]], data: dict[str, Any],
                     config: VarianceShiftConfig) -> VarianceShiftStudy:
    """Train every setting × seed, then measure the variance shift and the effect of BN recalibration.

    For each trained network: the test error; for networks with BatchNorm also the variance at
    every BN input (:func:`measure_bn_input_variance` on the first ``n_measure`` training images,
    in chunks of the training batch size unless ``measure_batch_size`` is given), and both again
    after :func:`recalibrate_bn` on the first ``n_recalibrate`` training images (None: all of them;
    on a copy, the trained network is kept).
    """
    config = study_config(config, VarianceShiftConfig)
    require_splits(data, ["train", config.test_split])
    training = config.training
    history, models = run_settings(make_model, settings, data, training, list(config.seeds), keep_models=True)
    measure_bs = config.measure_batch_size or training.batch_size
    recal_bs = config.recalibration_batch_size or training.batch_size
    x_measure = data["train"].x[:config.n_measure]
    x_recalibrate = data["train"].x[:config.n_recalibrate]
    errors, variances = [], []
    for (label, seed), model in models.items():
        stages = {"trained": model}
        has_bn = any(isinstance(m, _BN) for m in model.modules())
        if has_bn:
            stages["recalibrated"] = recalibrate_bn(copy.deepcopy(model), x_recalibrate, batch_size=recal_bs)
        for stage, net in stages.items():
            metrics = evaluate(net, data[config.test_split], training.task, batch_size=config.eval_batch_size,
                               device=model_device(net))
            errors.append({"setting": label, "seed": seed, "stage": stage, "error": 100 * metrics["error"],
                           "loss": metrics["loss"]})
            if has_bn:
                frame = measure_bn_input_variance(net, x_measure, batch_size=measure_bs, seed=seed)
                frame.insert(0, "stage", stage)
                frame.insert(0, "seed", seed)
                frame.insert(0, "setting", label)
                variances.append(frame)
    variance = pd.concat(variances, ignore_index=True) if variances else pd.DataFrame()
    return VarianceShiftStudy(history=history, errors=pd.DataFrame(errors), variance=variance)
