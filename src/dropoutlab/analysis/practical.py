"""A practical dropout guide's statements, measured on one task family (notebook 14_practical_guide).

Source: the Japanese guide "ドロップアウト (Dropout)" (Application & Use-Cases, 2025-12-19), whose
practical statements rest on Srivastava et al. (JMLR 2014), Tompson et al. (CVPR 2015), Ghiasi et
al. (NeurIPS 2018), Huang et al. (ECCV 2016), Klambauer et al. (NeurIPS 2017), Gal et al. (NeurIPS
2017) and Li et al. (CVPR 2019). Every training study uses the same small nets — an MLP
(:func:`guide_mlp`) and a small CNN (:class:`dropoutlab.models.ConvNet`) — and the arms of a study
share each seed's initial weights and data order (:func:`dropoutlab.analysis.structured.train_arms`),
so they are compared seed by seed. ``p`` is always the drop probability.

First batch (one function per claim, each returning a frozen dataclass of tidy DataFrames):

* :func:`inference_study` (SG-INFER) — the accuracy lost by a wrong test-time rule, per rate, on
  the same trained nets: standard dropout without its (1 − p) scaling, inverted dropout scaled
  twice, dropout left on at test.
* :func:`framework_checks` (SG-FRAMEWORK) — where frameworks implement the "same" dropout
  differently, against reference functions written from each convention's formula
  (:func:`keras_spatial_dropout1d`, :func:`torchvision_dropblock_gamma`,
  :func:`per_dimension_dropblock_gamma`, :func:`timm_drop_path`, :func:`selu_fixed_point`,
  :func:`alpha_dropout_reference`, :func:`concrete_regulariser_reference`).
* :func:`noise_study` (SG-NOISE) — accuracy under Gaussian input noise and random pixel deletion,
  with and without dropout.
* :func:`placement_study` (SG-PLACE) — dropout before vs after BatchNorm.
* :func:`rates_study` (SG-RATES) — a factorial of input / hidden / output rates.
* :func:`schedule_study` (SG-SCHED) — a falling rate against a fixed rate with the same mean.

Second batch:

* :func:`convergence_study` (SG-SLOW) — updates until the validation loss reaches a fixed target, with and
  without dropout (:func:`updates_to_target`).
* :func:`batch_study` (SG-BATCH) — dropout's gain (test error without − with) across batch sizes at a
  fixed number of updates.
* :func:`depth_study` (SG-DEEP) — first-layer gradient norms at initialisation over depth and rate, and
  the error cost of heavy dropout after training, in a plain and a residual :class:`DeepMLP`.
* :func:`stability_study` (SG-STABLE) — the share of the outgoing weight carried by the top hidden units
  (:func:`top_share`) and the update-to-update spread of the per-layer gradient norms
  (:class:`GradientRecorder`, :func:`gradient_spread`), with and without dropout.

Third batch:

* :func:`search_study` (SG-SEARCH) — a grid over (input rate, hidden rate) against Optuna's TPE
  (:func:`tpe_search`) with the same and with fewer trials, per search run; best-so-far validation error
  and the test error of the chosen configuration.
* :func:`cv_study` (SG-CV) — with or without dropout decided by k-fold cross-validation (per-fold paired
  differences, :func:`corrected_t_interval`) and by the held-out validation split
  (:func:`paired_error_interval`), each interval turned into a :func:`decision`.

Later batches (cost) add their own functions here; the helpers above (:func:`guide_mlp`,
:func:`_train_seed`) are shared.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, is_dataclass, replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import optimize, stats
from torch import Tensor, nn
from tqdm import TqdmWarning

from ..checks import choice, integer, integers, positive, positives, probabilities, probability, seed_list, settle
from ..models import MLP, ConvNet
from ..schedules import DropoutScheduler, LinearSchedule
from ..train import TrainConfig, evaluate, model_device, seed_everything, training_modes
from ..variants import make_dropout
from ..variants.bernoulli import InvertedDropout, spatial_dropout
from ..variants.concrete import ConcreteDropout
from ..variants.noise import SELU_ALPHA, SELU_ALPHA_PRIME, SELU_SCALE, alpha_dropout, alpha_dropout_affine
from ..variants.structured import drop_block2d, drop_path, dropblock_expected_drop_fraction, dropblock_gamma
from .structured import train_arms
from .studies import TrainedArms, epochs_for, per_seed, require_splits, study_config, train_config, updates_per_epoch

with warnings.catch_warnings():  # optuna imports tqdm.auto, whose warning in a kernel without ipywidgets
    warnings.simplefilter("ignore", TqdmWarning)  # would print the environment's absolute path into the notebook
    import optuna

__all__ = [
    "ARCHITECTURES",
    "BatchStudy",
    "CVStudy",
    "ConvergenceStudy",
    "DeepMLP",
    "DepthConfig",
    "DepthStudy",
    "FrameworkChecks",
    "GradientRecorder",
    "INFERENCE_RULES",
    "InferenceStudy",
    "NoiseStudy",
    "PROCEDURES",
    "RatesConfig",
    "RatesStudy",
    "SEARCHERS",
    "SearchConfig",
    "SearchStudy",
    "StabilityStudy",
    "alpha_dropout_reference",
    "batch_study",
    "concrete_regulariser_reference",
    "convergence_study",
    "corrected_t_interval",
    "cv_study",
    "decision",
    "deep_mlp",
    "depth_study",
    "first_layer_gradient_norm",
    "framework_checks",
    "gradient_spread",
    "guide_mlp",
    "inference_study",
    "keras_spatial_dropout1d",
    "noise_study",
    "paired_error_interval",
    "per_dimension_dropblock_gamma",
    "perturb",
    "placement_study",
    "rates_study",
    "schedule_study",
    "search_study",
    "selu_fixed_point",
    "stability_study",
    "test_time_rule",
    "timm_drop_path",
    "top_share",
    "torchvision_dropblock_gamma",
    "tpe_search",
    "updates_to_target",
]

#: SG-INFER's test-time rules, the correct one first.
INFERENCE_RULES = ("correct", "standard, unscaled", "inverted, scaled twice", "dropout left on")
PERTURBATIONS = ("gaussian", "delete")
PLACEMENTS = {"act→drop→BN (guide)": "conv-act-drop-bn-pool", "act→BN→drop": "conv-act-bn-drop-pool"}


# ----------------------------------------------------------------------------- validation


def _config(config: Any, name: str = "config") -> TrainConfig:
    return train_config(config, name, task="classification")


# ----------------------------------------------------------------------------- the shared nets


def guide_mlp(input_shape: Sequence[int], widths: Sequence[int], num_classes: int, *, p_input: float = 0.0,
              p_hidden: float = 0.0, p_output: float = 0.0, activation: str = "relu") -> nn.Module:
    """The MLP of every MLP study: ``MLP(p_input, p_hidden)`` then, if ``p_output > 0``, dropout on its outputs.

    Srivastava et al. (JMLR 2014) put dropout on the input and hidden units; the guide adds "no
    dropout at the output layer", so ``p_output`` drops the output units (the logits) in training
    (inverted, identity at test). The Linear layers are created in the same order whatever the rates
    (dropout modules draw nothing at construction), so every rate assignment starts from the same
    weights for a given seed. Input ``(N, *input_shape)``, flattened; output ``(N, num_classes)`` logits.
    """
    p_input, p_hidden = probability(p_input, "p_input"), probability(p_hidden, "p_hidden")
    p_output = probability(p_output, "p_output")
    widths = [integer(w, "widths entries") for w in widths]
    if not widths:
        raise ValueError("widths must list at least one hidden layer width")
    mlp = MLP(int(np.prod(input_shape)), widths, integer(num_classes, "num_classes"), activation=activation,
              dropout="inverted", p_input=p_input, p_hidden=p_hidden)
    if p_output == 0.0:
        return mlp
    return nn.Sequential(mlp, make_dropout("inverted", p=p_output))


def _train_seed(make_model: Callable[..., nn.Module], arms: Mapping[str, Mapping[str, Any]], data: Mapping[str, Any],
                config: TrainConfig, seed: int, schedulers: Mapping[str, Callable] | None = None):
    """One seed of every arm through ``train_arms`` (paired: same initial weights and data order), models kept."""
    return train_arms(make_model, arms, data, config, [seed], schedulers=schedulers, keep_models=True)


def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Accuracy (%) of ``model`` on ``(x, y)`` in its *current* mode (the caller sets train/eval)."""
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            correct += int((model(x[start:start + batch_size]).argmax(1) == y[start:start + batch_size]).sum())
    return 100.0 * correct / len(x)


# ----------------------------------------------------------------------------- SG-INFER: test-time rules


@contextlib.contextmanager
def test_time_rule(model: nn.Module, rule: str, p: float) -> Iterator[nn.Module]:
    """Put an inverted-dropout ``model`` in eval mode under one of :data:`INFERENCE_RULES`.

    * ``"correct"``: inverted dropout is the identity at test.
    * ``"standard, unscaled"``: every dropout output × 1/(1 − p). This *is* a standard-dropout net
      evaluated without its (1 − p) scaling: standard dropout trains ``W_s·(x·m)``, inverted dropout
      ``W_i·(x·m)/(1 − p)``, the same function in training when ``W_s = W_i/(1 − p)``; at test the
      correct standard rule ``W_s·(1 − p)x`` equals ``W_i·x`` and the unscaled ``W_s·x`` equals
      ``W_i·x/(1 − p)`` (a test compares it with a standard-dropout copy of the net).
    * ``"inverted, scaled twice"``: every dropout output × (1 − p), the standard net's test scaling
      applied to an inverted net that already scaled in training.
    * ``"dropout left on"``: the dropout modules stay in training mode (a fresh mask every call),
      everything else in eval mode.

    ``p`` must be the rate of every :class:`InvertedDropout` in the model. Restores the modes and
    removes the hooks on exit.
    """
    if rule not in INFERENCE_RULES:
        raise ValueError(f"rule must be one of {INFERENCE_RULES}, got {rule!r}")
    p = probability(p, "p", zero=False)
    drops = [m for m in model.modules() if isinstance(m, InvertedDropout)]
    if not drops:
        raise ValueError(f"{type(model).__name__} has no InvertedDropout module")
    rates = sorted({round(float(m.p), 6) for m in drops})
    if rates != [round(p, 6)]:
        raise ValueError(f"p={p} must be the rate of every dropout module; the model's rates are {rates}")
    factor = {"standard, unscaled": 1.0 / (1.0 - p), "inverted, scaled twice": 1.0 - p}.get(rule)
    handles = [m.register_forward_hook(lambda _m, _i, out, f=factor: out * f) for m in drops] if factor else []
    try:
        with training_modes(model):
            model.eval()
            if rule == "dropout left on":
                for m in drops:
                    m.train()
            yield model
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class InferenceStudy:
    """SG-INFER: ``accuracy`` — p, seed, rule, accuracy (%) (dropout left on: the mean over ``passes``
    stochastic passes); ``drops`` — p, seed, rule, drop (pp) = correct − this rule, same net;
    ``history`` — the fit records with arm and seed."""

    accuracy: pd.DataFrame
    drops: pd.DataFrame
    history: pd.DataFrame

    def drop(self, rule: str, p: float) -> pd.Series:
        """Per-seed accuracy drop (pp) of ``rule`` at rate ``p``, indexed by seed."""
        return per_seed(self.drops, "drop", rule=rule, p=float(p))

    def accuracy_of(self, rule: str, p: float) -> pd.Series:
        return per_seed(self.accuracy, "accuracy", rule=rule, p=float(p))


def inference_study(make_model: Callable[[float], nn.Module], data: Mapping[str, Any], config: TrainConfig,
                    seeds: Sequence[int], p_values: Sequence[float], *, passes: int = 10,
                    test_split: str = "test") -> InferenceStudy:
    """Train ``make_model(p)`` (inverted dropout at rate p) per rate and seed; evaluate every test-time rule.

    Srivastava et al. (JMLR 2014, §10) scale the weights by the retain probability at test; the guide
    warns that a wrong scaling "can seriously degrade performance". Every rule is applied to the *same*
    trained net (:func:`test_time_rule`), so the drop is a within-net difference; the rates share each
    seed's initial weights and data order. ``passes`` stochastic passes (seeded by the seed) give the
    accuracy with dropout left on. ``data[test_split].x``: ``(N, ...)`` images, ``y``: ``(N,)`` labels.
    """
    config, seeds = _config(config), seed_list(seeds)
    p_values = probabilities(p_values, "p_values", zero=False, distinct=True)
    passes = integer(passes, "passes")
    require_splits(data, ["train", test_split, *config.eval_splits])
    test = data[test_split]
    arms = {f"p={p:g}": dict(p=p) for p in p_values}
    rows, histories = [], []
    for seed in seeds:
        study = _train_seed(make_model, arms, data, config, seed)
        histories.append(study.history)
        for p in p_values:
            model = study.models[(f"p={p:g}", seed)]
            for rule in INFERENCE_RULES:
                with test_time_rule(model, rule, p):
                    if rule == "dropout left on":
                        torch.manual_seed(seed)
                        acc = float(np.mean([_accuracy(model, test.x, test.y) for _ in range(passes)]))
                    else:
                        acc = _accuracy(model, test.x, test.y)
                rows.append(dict(p=p, seed=seed, rule=rule, accuracy=acc))
    accuracy = pd.DataFrame(rows)
    correct = accuracy[accuracy["rule"] == "correct"].set_index(["p", "seed"])["accuracy"]
    drops = accuracy[accuracy["rule"] != "correct"].copy()
    drops["drop"] = [correct[(p, s)] - a for p, s, a in zip(drops["p"], drops["seed"], drops["accuracy"], strict=True)]
    return InferenceStudy(accuracy=accuracy, drops=drops[["p", "seed", "rule", "drop"]].reset_index(drop=True),
                          history=pd.concat(histories, ignore_index=True))


# ----------------------------------------------------------------------------- SG-FRAMEWORK: reference conventions


def keras_spatial_dropout1d(x: Tensor, p: float, *, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``SpatialDropout1D`` convention on a channels-last ``(N, T, C)`` tensor (training mode).

    From the layer's documented noise shape ``(N, 1, C)``: one coin per (sample, channel), shared over
    the time steps T; kept entries scaled by 1/(1 − p). Compare PyTorch's ``Dropout1d`` (and the
    package's ``spatial_dropout``), which expects ``(N, C, L)`` and shares the coin over L.
    """
    p = probability(p, "p")
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a (N, T, C) tensor, got {getattr(x, 'shape', type(x))}")
    keep = torch.rand((x.shape[0], 1, x.shape[2]), generator=generator) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


def torchvision_dropblock_gamma(p: float, block_size: int, height: int, width: int) -> float:
    """DropBlock's seed rate with torchvision's clipping: one *square* block of edge k = min(block, H, W).

    γ = p·H·W / (k²·(H − k + 1)·(W − k + 1)) (Ghiasi et al. 2018, Eq. 1, as ``torchvision.ops.drop_block2d``
    documents and computes it).
    """
    p = probability(p, "p")
    k = min(integer(block_size, "block_size"), integer(height, "height"), integer(width, "width"))
    return p * height * width / (k * k * (height - k + 1) * (width - k + 1))


def per_dimension_dropblock_gamma(p: float, block_size: int, height: int, width: int) -> float:
    """DropBlock's seed rate with the block clipped per dimension: kh = min(block, H), kw = min(block, W).

    γ = p·H·W / (kh·kw·(H − kh + 1)·(W − kw + 1)): timm's convention (and the package's). It agrees with
    :func:`torchvision_dropblock_gamma` whenever no side is smaller than the block.
    """
    p = probability(p, "p")
    bs = integer(block_size, "block_size")
    height, width = integer(height, "height"), integer(width, "width")
    kh, kw = min(bs, height), min(bs, width)
    return p * height * width / (kh * kw * (height - kh + 1) * (width - kw + 1))


def timm_drop_path(x: Tensor, p: float, *, training: bool, scale_by_keep: bool = True,
                   generator: torch.Generator | None = None) -> Tensor:
    """timm's ``drop_path`` convention: one coin per sample, divided by 1 − p only if ``scale_by_keep``;
    the identity at test **either way** (as the package's ``drop_path`` docstring records). With
    ``scale_by_keep=False`` the training expectation is (1 − p)·x but the test output is x.
    Shape: ``(B, *)``.
    """
    p = probability(p, "p")
    if not training or p == 0.0:
        return x
    keep = (torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator) >= p).to(x.dtype)
    return x * keep / (1.0 - p) if scale_by_keep else x * keep


def selu_fixed_point() -> tuple[float, float]:
    """SELU's (λ, α) from their definition (Klambauer et al. 2017, §"SELU"): for z ~ N(0, 1) the output
    selu(z) = λ·(z if z > 0 else α(eᶻ − 1)) has mean 0 and variance 1.

    Closed forms of the truncated moments: E[z; z > 0] = 1/√(2π), E[eᶻ − 1; z ≤ 0] = √e·Φ(−1) − ½,
    E[z²; z > 0] = ½, E[(eᶻ − 1)²; z ≤ 0] = e²Φ(−2) − 2√e·Φ(−1) + ½. The mean equation gives α; the
    variance equation λ. Solved with a root finder (not copied constants) so the check is independent.
    """
    phi1, phi2 = float(stats.norm.cdf(-1.0)), float(stats.norm.cdf(-2.0))
    m_pos, m_neg = 1.0 / math.sqrt(2 * math.pi), math.sqrt(math.e) * phi1 - 0.5
    s_pos, s_neg = 0.5, math.e**2 * phi2 - 2 * math.sqrt(math.e) * phi1 + 0.5

    def equations(v: np.ndarray) -> list[float]:
        lam, alpha = v
        return [lam * (m_pos + alpha * m_neg), lam**2 * (s_pos + alpha**2 * s_neg) - 1.0]

    lam, alpha = optimize.fsolve(equations, [1.0, 1.5], xtol=1e-14)
    return float(lam), float(alpha)


def alpha_dropout_reference(p: float, lam: float, alpha: float) -> tuple[float, float]:
    """Alpha dropout's affine (a, b) from its derivation (Klambauer et al. 2017): dropped units are set
    to α' = −λα; for x with mean 0 and variance 1, x·m + α'(1 − m) has mean α'p and variance
    (1 − p)(1 + pα'²), so a = ((1 − p)(1 + pα'²))^(−½) and b = −a·α'·p restore mean 0 and variance 1."""
    p = probability(p, "p")
    prime = -lam * alpha
    a = ((1.0 - p) * (1.0 + p * prime**2)) ** -0.5
    return a, -a * prime * p


def concrete_regulariser_reference(weight: Tensor, bias: Tensor | None, p: float, *, weight_regularizer: float,
                                   dropout_regularizer: float, input_dim: int, include_bias: bool) -> float:
    """Gal, Hron, Kendall (NeurIPS 2017) Concrete dropout regulariser, in float64:
    wr·(‖W‖² [+ ‖b‖²])/(1 − p) + dr·K·(p log p + (1 − p) log(1 − p)).
    The official PyTorch notebook sums over all the layer's parameters (biases included); the
    Keras notebook regularises the kernel only — ``include_bias`` picks the convention."""
    p = probability(p, "p", zero=False)
    sq = float(weight.detach().double().square().sum())
    if include_bias and bias is not None:
        sq += float(bias.detach().double().square().sum())
    return weight_regularizer * sq / (1 - p) + dropout_regularizer * input_dim * (p * math.log(p)
                                                                                 + (1 - p) * math.log(1 - p))


@dataclass(frozen=True)
class FrameworkChecks:
    """SG-FRAMEWORK: ``checks`` — one row per check (name, value, what): the package against the
    reference formula, judged |value| ≤ the registry's tolerance; ``table`` — the differences between
    conventions that matter (topic, setting, convention, quantity, value), shown, not judged."""

    checks: pd.DataFrame
    table: pd.DataFrame

    def value(self, name: str) -> float:
        rows = self.checks[self.checks["check"] == name]
        if rows.empty:
            raise ValueError(f"no check {name!r}; checks: {list(self.checks['check'])}")
        return float(rows["value"].iloc[0])


def framework_checks(*, seed: int = 0, n_draws: int = 200, p: float = 0.3) -> FrameworkChecks:
    """Implementation checks of the package's variants against other frameworks' documented conventions.

    ``n_draws`` masks (of a batch of 32 samples × 8 channels) per Monte-Carlo row of the table; the
    checks themselves are exact (counts of violated invariants, or float differences). ``p`` is the
    drop probability of every comparison. Checks (``value`` → 0 when the package is right):

    * ``spatial_layout`` — the package's spatial dropout on ``(N, C, L)`` shares each coin over L (the
      PyTorch ``Dropout1d`` layout); given a channels-last ``(N, T, C)`` tensor transposed to
      ``(N, C, T)`` it gives Keras's ``SpatialDropout1D`` mask (shared over T). Value: the number of
      (sample, channel) rows whose mask varies along the shared axis.
    * ``dropblock_gamma`` — largest relative difference between the package's γ and the per-dimension
      formula over maps 3–28 (square and not), blocks 1–9 and three rates; also against torchvision's
      where no side is smaller than the block (the two conventions must agree there).
    * ``dropblock_channels`` — per-channel masks (the paper's Algorithm 1, torchvision) differ between
      channels and ``couple_channels=True`` masks do not: the number of samples breaking either.
    * ``droppath_scaling`` — ``scale_by_keep`` True (inverted) and False (the paper's test-time
      scaling): training expectation (1 − p)·(kept value) equals the test output; largest |difference|.
    * ``alpha_constants`` — the package's SELU λ, α against :func:`selu_fixed_point`, and
      ``alpha_dropout_affine`` against :func:`alpha_dropout_reference`; largest relative difference.
    * ``concrete_regulariser`` — ``ConcreteDropout.regularizer()`` with and without biases against
      :func:`concrete_regulariser_reference`; largest relative difference.
    """
    p = probability(p, "p", zero=False)
    n_draws = integer(n_draws, "n_draws")
    gen = torch.Generator().manual_seed(int(seed))
    checks, table = [], []

    # spatial dropout: which axis the coin is shared over
    n, c, t = 32, 8, 20
    ones = torch.ones(n, c, t)
    torch.manual_seed(int(seed))
    pt = spatial_dropout(ones, p, training=True) != 0  # (N, C, L)
    channels_last = torch.ones(n, t, c)
    as_keras = spatial_dropout(channels_last.transpose(1, 2), p, training=True).transpose(1, 2) != 0  # (N, T, C)
    keras = keras_spatial_dropout1d(channels_last, p, generator=gen) != 0
    violations = int((pt.any(2) != pt.all(2)).sum()) + int((as_keras.any(1) != as_keras.all(1)).sum())
    checks.append(dict(check="spatial_layout", value=float(violations),
                       what="(sample, channel) rows whose mask varies along the shared axis"))
    wrong = spatial_dropout(channels_last, p, training=True) != 0  # (N, T, C) fed to an (N, C, L) layer
    mixed = lambda m: float((m.any(1) != m.all(1)).float().mean())  # noqa: E731 - share of varying (n, c) columns
    table += [dict(topic="spatial dropout 1-d", setting=f"(N, T, C) = ({n}, {t}, {c}), p = {p:g}",
                   convention="Keras SpatialDropout1D on (N, T, C)", quantity="share of (sample, channel) masks "
                   "that vary over time", value=mixed(keras)),
              dict(topic="spatial dropout 1-d", setting=f"(N, T, C) = ({n}, {t}, {c}), p = {p:g}",
                   convention="PyTorch/dropoutlab layer, (N, T, C) transposed to (N, C, T)",
                   quantity="share of (sample, channel) masks that vary over time", value=mixed(as_keras)),
              dict(topic="spatial dropout 1-d", setting=f"(N, T, C) = ({n}, {t}, {c}), p = {p:g}",
                   convention="PyTorch/dropoutlab layer fed (N, T, C) untransposed (time read as channels)",
                   quantity="share of (sample, channel) masks that vary over time", value=mixed(wrong))]

    # DropBlock's seed rate
    worst = 0.0
    for h in (3, 5, 7, 14, 28):
        for w in (3, 5, 7, 14, 20, 28):
            for bs in range(1, 10):
                for rate in (0.1, 0.3, 0.5):
                    ours = dropblock_gamma(rate, bs, h, w)
                    worst = max(worst, abs(ours / per_dimension_dropblock_gamma(rate, bs, h, w) - 1))
                    if bs <= min(h, w):
                        worst = max(worst, abs(ours / torchvision_dropblock_gamma(rate, bs, h, w) - 1))
    checks.append(dict(check="dropblock_gamma", value=worst, what="largest relative difference of γ"))
    h, w, bs = 5, 20, 7
    maps = torch.ones(32, 8, h, w)
    realised = float(np.mean([float((drop_block2d(maps, p, bs, training=True, generator=gen) == 0).float().mean())
                              for _ in range(n_draws)]))
    setting = f"{h} × {w} map, block {bs}, p = {p:g}"
    table += [dict(topic="DropBlock, block larger than the map", setting=setting,
                   convention="torchvision (one square block, edge min(block, H, W))", quantity="seed rate γ",
                   value=torchvision_dropblock_gamma(p, bs, h, w)),
              dict(topic="DropBlock, block larger than the map", setting=setting,
                   convention="timm / dropoutlab (clipped per dimension)", quantity="seed rate γ",
                   value=dropblock_gamma(p, bs, h, w)),
              dict(topic="DropBlock, block larger than the map", setting=setting,
                   convention="dropoutlab, exact expectation with overlaps", quantity="drop fraction",
                   value=dropblock_expected_drop_fraction(p, bs, h, w)),
              dict(topic="DropBlock, block larger than the map", setting=setting,
                   convention=f"dropoutlab, measured ({n_draws} batches)", quantity="drop fraction", value=realised)]

    # DropBlock: per-channel vs shared masks
    maps = torch.ones(32, 8, 14, 14)
    per_channel = drop_block2d(maps, 0.1, 3, training=True, generator=gen) != 0
    coupled = drop_block2d(maps, 0.1, 3, training=True, couple_channels=True, generator=gen) != 0
    same_pc = (per_channel == per_channel[:, :1]).flatten(2).all(2)  # (N, C): channel equals channel 0
    same_cp = (coupled == coupled[:, :1]).flatten(2).all(2)
    broken = int(same_pc[:, 1:].all(1).sum()) + int((~same_cp).any(1).sum())
    checks.append(dict(check="dropblock_channels", value=float(broken),
                       what="samples whose per-channel masks all coincide or whose coupled masks differ"))
    for name, mask in (("per channel (paper Algorithm 1, torchvision; dropoutlab default)", per_channel),
                       ("shared by the channels (dropoutlab couple_channels=True)", coupled)):
        table.append(dict(topic="DropBlock channel masks", setting="14 × 14 maps, 8 channels, block 3, p = 0.1",
                          convention=name, quantity="share of channel masks equal to channel 0's",
                          value=float(same_pc[:, 1:].float().mean() if mask is per_channel
                                      else same_cp[:, 1:].float().mean())))

    # DropPath's test-time scaling
    x = torch.randn(256, 4, generator=gen) + 3.0
    worst = 0.0
    for scale_by_keep in (True, False):
        torch.manual_seed(int(seed))
        y = drop_path(x, p, training=True, scale_by_keep=scale_by_keep)
        test = drop_path(x, p, training=False, scale_by_keep=scale_by_keep)
        kept = y.abs().amax(1) > 0
        worst = max(worst, float(((1 - p) * y[kept] - test[kept]).abs().max()))
    checks.append(dict(check="droppath_scaling", value=worst,
                       what="largest |(1 − p)·training output − test output| over the kept rows"))
    for name, fn in (("dropoutlab scale_by_keep=True", lambda z, tr: drop_path(z, p, training=tr)),
                     ("dropoutlab scale_by_keep=False (paper)",
                      lambda z, tr: drop_path(z, p, training=tr, scale_by_keep=False)),
                     ("timm scale_by_keep=True", lambda z, tr: timm_drop_path(z, p, training=tr, generator=gen)),
                     ("timm scale_by_keep=False",
                      lambda z, tr: timm_drop_path(z, p, training=tr, scale_by_keep=False, generator=gen))):
        ones = torch.ones(64, 1)
        torch.manual_seed(int(seed))
        kept_value = float(fn(ones, True).max())  # the value of a surviving row: its mean is (1 − p)·that
        table.append(dict(topic="DropPath test-time scaling", setting=f"p = {p:g}, input 1", convention=name,
                          quantity="test output / expected training output",
                          value=float(fn(ones, False)[0, 0]) / ((1 - p) * kept_value)))

    # alpha dropout's constants
    lam, alpha = selu_fixed_point()
    worst = max(abs(SELU_SCALE / lam - 1), abs(SELU_ALPHA / alpha - 1), abs(SELU_ALPHA_PRIME / (-lam * alpha) - 1))
    for rate in (0.05, 0.1, 0.2, 0.5):
        a, b = alpha_dropout_affine(rate)
        a_ref, b_ref = alpha_dropout_reference(rate, lam, alpha)
        worst = max(worst, abs(a / a_ref - 1), abs(b / b_ref - 1))
    checks.append(dict(check="alpha_constants", value=worst, what="largest relative difference of λ, α, a, b"))
    z = torch.randn(200_000, generator=gen, dtype=torch.float64)
    torch.manual_seed(int(seed))
    out = alpha_dropout(z, 0.1, training=True)
    a, b = alpha_dropout_affine(0.1)
    table += [dict(topic="alpha dropout", setting="SELU", convention="dropoutlab λ (solved fixed point)",
                   quantity="λ", value=SELU_SCALE),
              dict(topic="alpha dropout", setting="SELU", convention="dropoutlab α", quantity="α", value=SELU_ALPHA),
              dict(topic="alpha dropout", setting="p = 0.1", convention="dropoutlab", quantity="a", value=a),
              dict(topic="alpha dropout", setting="p = 0.1", convention="dropoutlab", quantity="b", value=b),
              dict(topic="alpha dropout", setting="p = 0.1, input N(0, 1), 200,000 draws", convention="dropoutlab",
                   quantity="output mean", value=float(out.mean())),
              dict(topic="alpha dropout", setting="p = 0.1, input N(0, 1), 200,000 draws", convention="dropoutlab",
                   quantity="output variance", value=float(out.var()))]

    # Concrete dropout's regulariser, with or without the bias
    torch.manual_seed(int(seed))
    worst = 0.0
    for include_bias in (True, False):
        layer = nn.Linear(16, 8)
        with torch.no_grad():
            layer.bias.normal_(0.0, 1.0)
        module = ConcreteDropout(layer, p=0.2, weight_regularizer=1e-2, dropout_regularizer=1e-3,
                                 include_bias=include_bias)
        ours = float(module.regularizer().detach())
        ref = concrete_regulariser_reference(layer.weight, layer.bias, float(module.p.detach()), weight_regularizer=1e-2,
                                             dropout_regularizer=1e-3, input_dim=16, include_bias=include_bias)
        worst = max(worst, abs(ours / ref - 1))
        table.append(dict(topic="Concrete dropout regulariser", setting="Linear(16, 8), p = 0.2, wr 1e-2, dr 1e-3",
                          convention=("biases included (official PyTorch notebook; dropoutlab default)" if include_bias
                                      else "kernel only (Keras notebook; dropoutlab include_bias=False)"),
                          quantity="regulariser", value=ours))
    checks.append(dict(check="concrete_regulariser", value=worst, what="largest relative difference of R"))
    return FrameworkChecks(checks=pd.DataFrame(checks), table=pd.DataFrame(table))


# ----------------------------------------------------------------------------- SG-NOISE: perturbed inputs


def perturb(x: Tensor, kind: str, level: float, generator: torch.Generator) -> Tensor:
    """A perturbed copy of images ``x`` ``(N, ...)`` in [0, 1].

    ``"gaussian"``: x + level·ε, ε ~ N(0, 1) per pixel (not clipped); ``"delete"``: each pixel set to 0
    (the background) with probability ``level`` — missing features. ``level = 0`` returns ``x``.
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"kind must be one of {PERTURBATIONS}, got {kind!r}")
    level = probability(level, "level", what="a deletion rate") if kind == "delete" else positive(level, "level",
                                                                                                   zero=True)
    if level == 0.0:
        return x
    if kind == "gaussian":
        return x + level * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x * (torch.rand(x.shape, generator=generator) >= level).to(x.dtype)


@dataclass(frozen=True)
class NoiseStudy:
    """SG-NOISE: ``accuracy`` — arm, seed, perturbation, level, accuracy (%), retained (% of the same
    net's clean accuracy); ``errors`` — clean test errors per arm and seed; ``history``."""

    accuracy: pd.DataFrame
    errors: pd.DataFrame
    history: pd.DataFrame

    def retained(self, arm: str, perturbation: str, level: float) -> pd.Series:
        """Per-seed accuracy under the perturbation as a share (%) of the clean accuracy, indexed by seed."""
        return per_seed(self.accuracy, "retained", arm=arm, perturbation=perturbation, level=float(level))

    def clean(self, arm: str) -> pd.Series:
        return per_seed(self.accuracy, "accuracy", arm=arm, perturbation="gaussian", level=0.0)


def noise_study(make_model: Callable[..., nn.Module], arms: Mapping[str, Mapping[str, Any]], data: Mapping[str, Any],
                config: TrainConfig, seeds: Sequence[int], *, noise_levels: Sequence[float],
                delete_levels: Sequence[float], test_split: str = "test") -> NoiseStudy:
    """Train every arm per seed; measure its accuracy on the test images under Gaussian noise and pixel deletion.

    The guide: dropout "acts as noise injection and makes the model more tolerant of input
    perturbations and missing features". Each (seed, perturbation, level) draws one perturbed test set
    from a generator seeded by (seed, level), which *every* arm sees, so the arms are paired by seed for
    the training and for the perturbation. Because dropout may also change the clean accuracy,
    ``retained`` (accuracy / clean accuracy of the same net) separates robustness from the clean gap.
    """
    config, seeds = _config(config), seed_list(seeds)
    if not isinstance(arms, Mapping) or len(arms) < 2:
        raise ValueError("arms must name at least two arms: {label: model keyword arguments}")
    levels = {"gaussian": [0.0, *positives(noise_levels, "noise_levels")],
              "delete": [0.0, *probabilities(delete_levels, "delete_levels", what="deletion rates")]}
    require_splits(data, ["train", test_split, *config.eval_splits])
    test = data[test_split]
    rows, histories, errors = [], [], []
    for seed in seeds:
        study = _train_seed(make_model, arms, data, config, seed)
        histories.append(study.history)
        errors.append(study.errors)
        for kind, grid in levels.items():
            for i, level in enumerate(dict.fromkeys(grid)):
                gen = torch.Generator().manual_seed(seed * 1000 + 100 * PERTURBATIONS.index(kind) + i)
                x = perturb(test.x, kind, level, gen)
                for arm in arms:
                    model = study.models[(arm, seed)].eval()
                    rows.append(dict(arm=arm, seed=seed, perturbation=kind, level=level,
                                     accuracy=_accuracy(model, x, test.y)))
    accuracy = pd.DataFrame(rows)
    clean = accuracy[accuracy["level"] == 0.0].drop_duplicates(["arm", "seed"]).set_index(["arm", "seed"])["accuracy"]
    accuracy["retained"] = [100 * a / clean[(arm, s)] if clean[(arm, s)] > 0 else math.nan
                            for arm, s, a in zip(accuracy["arm"], accuracy["seed"], accuracy["accuracy"], strict=True)]
    return NoiseStudy(accuracy=accuracy, errors=pd.concat(errors, ignore_index=True),
                      history=pd.concat(histories, ignore_index=True))


# ----------------------------------------------------------------------------- SG-PLACE, SG-SCHED: two paired arms


def _paired(make_model, arms, data, config, seeds, schedulers=None, test_split="test") -> TrainedArms:
    require_splits(data, ["train", test_split, *config.eval_splits])
    return TrainedArms.of(train_arms(make_model, arms, data, config, seeds, schedulers=schedulers,
                                     test_split=test_split))


def placement_study(input_shape: Sequence[int], num_classes: int, data: Mapping[str, Any], config: TrainConfig,
                    seeds: Sequence[int], *, p: float, channels: Sequence[int], hidden: int,
                    test_split: str = "test") -> TrainedArms:
    """SG-PLACE: the same CNN with dropout (rate ``p``) after the activation and *before* BatchNorm
    (``conv-act-drop-bn-pool``, the guide's advice) or *after* BatchNorm (``conv-act-bn-drop-pool``).

    Li, Chen, Hu, Yang (CVPR 2019): dropout before BN shifts the variance BN sees between training and
    test, so the first placement should be the worse one. The arms differ only in the position of BN
    relative to dropout; they share each seed's initial weights (the layers are built in the same
    order) and data order. Input ``(N, *input_shape)``; arms named by :data:`PLACEMENTS`.
    """
    config, seeds = _config(config), seed_list(seeds)
    p = probability(p, "p", zero=False)
    channels = [integer(c, "channels entries") for c in channels]
    hidden = integer(hidden, "hidden")

    def make(order: str) -> nn.Module:
        return ConvNet(tuple(input_shape), channels, order=order, padding=1, p=p, hidden=hidden,
                       num_classes=num_classes)

    return _paired(make, {arm: dict(order=order) for arm, order in PLACEMENTS.items()}, data, config, seeds,
                   test_split=test_split)


def schedule_study(make_model: Callable[..., nn.Module], data: Mapping[str, Any], config: TrainConfig,
                   seeds: Sequence[int], *, p_start: float, p_end: float, test_split: str = "test") -> TrainedArms:
    """SG-SCHED: every dropout rate of ``make_model(p_hidden=...)`` falls linearly from ``p_start`` to
    ``p_end`` over training (arm ``"scheduled"``) against a fixed rate equal to its mean (``"fixed"``).

    The guide: "starting with a higher rate and lowering it gradually improves training". The ramp is
    written after every update (:class:`~dropoutlab.schedules.LinearSchedule` over T − 1 steps for T
    updates, so the updates see p_start … p_end and their mean rate is exactly (p_start + p_end)/2).
    """
    config, seeds = _config(config), seed_list(seeds)
    p_start, p_end = probability(p_start, "p_start"), probability(p_end, "p_end")
    if not p_start > p_end:
        raise ValueError(f"p_start must be > p_end (a falling schedule), got {p_start} and {p_end}")
    require_splits(data, ["train", test_split])
    total = config.epochs * updates_per_epoch(len(data["train"].x), config.batch_size)
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    steps = max(total - 1, 1)
    mean = (p_start + p_end) / 2
    schedulers = {"scheduled": lambda model: DropoutScheduler(model, LinearSchedule(p_start, p_end, steps),
                                                              unit="step")}
    return _paired(make_model, {"scheduled": dict(p_hidden=p_start), "fixed": dict(p_hidden=mean)}, data, config,
                   seeds, schedulers=schedulers, test_split=test_split)


# ----------------------------------------------------------------------------- SG-RATES: a factorial of rates


@dataclass(frozen=True)
class RatesStudy:
    """SG-RATES: ``errors`` — p_input, p_hidden, p_output, cell (label), seed, val_error and test_error (%);
    ``cells`` — one row per cell with the means over seeds and ``guide`` (the guide's cell) and ``best_other``
    (the other cell with the lowest mean *validation* error) flags."""

    errors: pd.DataFrame
    cells: pd.DataFrame
    guide_cell: str
    best_other: str

    def test_error(self, cell: str) -> pd.Series:
        return per_seed(self.errors, "test_error", cell=cell)


def _cell(p_input: float, p_hidden: float, p_output: float) -> str:
    return f"in {p_input:g} / hid {p_hidden:g} / out {p_output:g}"


@dataclass(frozen=True)
class RatesConfig:
    """Settings of :func:`rates_study`, checked once when built: ``training``, ``seeds``, the factorial's
    ``input_rates`` × ``hidden_rates`` × ``output_rates`` (distinct drop probabilities, at least two cells),
    the ``guide``'s cell (p_input, p_hidden, p_output), and the validation and test split names."""

    training: TrainConfig
    seeds: tuple[int, ...]
    input_rates: tuple[float, ...]
    hidden_rates: tuple[float, ...]
    output_rates: tuple[float, ...]
    guide: tuple[float, float, float]
    val_split: str = "val"
    test_split: str = "test"

    def __post_init__(self) -> None:
        name = "RatesConfig"
        grid = tuple(tuple(probabilities(getattr(self, axis), f"{name}.{axis}", distinct=True))
                     for axis in ("input_rates", "hidden_rates", "output_rates"))
        guide = tuple(self.guide) if isinstance(self.guide, (list, tuple)) else (self.guide,)
        if len(guide) != 3:
            raise ValueError(f"{name}.guide must be (p_input, p_hidden, p_output), got {self.guide!r}")
        guide = tuple(probability(g, f"{name}.guide entries") for g in guide)
        if any(not any(math.isclose(g, v) for v in axis) for g, axis in zip(guide, grid, strict=True)):
            raise ValueError(f"{name}.guide {guide} must be a cell of the grid {grid}")
        if math.prod(len(a) for a in grid) < 2:
            raise ValueError(f"{name}: the grid must have at least two cells")
        training = _config(self.training, f"{name}.training")
        settle(self, training=replace(training, eval_splits=tuple(dict.fromkeys([*training.eval_splits,
                                                                                  self.val_split]))),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")), input_rates=grid[0], hidden_rates=grid[1],
               output_rates=grid[2], guide=guide)


def rates_study(make_model: Callable[..., nn.Module], data: Mapping[str, Any], config: RatesConfig) -> RatesStudy:
    """Train ``make_model(p_input=, p_hidden=, p_output=)`` for every cell of the factorial and seed.

    The guide: input 0.1–0.2, hidden 0.3–0.5 and no dropout at the output. ``guide`` = (input, hidden,
    output) names the guide's cell, which must be in the grid. The best *other* cell is chosen on the
    validation split (``val_split``, the lowest mean error over seeds), never on the test split it is
    then compared on, so the comparison is not biased by selecting on the same numbers. Every cell
    shares each seed's initial weights and data order.
    """
    config = study_config(config, RatesConfig)
    val_split = config.val_split
    require_splits(data, ["train", val_split, config.test_split])
    arms = {_cell(i, h, o): dict(p_input=i, p_hidden=h, p_output=o)
            for i in config.input_rates for h in config.hidden_rates for o in config.output_rates}
    study = train_arms(make_model, arms, data, config.training, config.seeds, test_split=config.test_split)
    last = study.history[study.history["split"] == val_split].sort_values("epoch").groupby(["arm", "seed"]).last()
    rows = []
    for _, r in study.errors.iterrows():
        kw = arms[r["arm"]]
        rows.append(dict(p_input=kw["p_input"], p_hidden=kw["p_hidden"], p_output=kw["p_output"], cell=r["arm"],
                         seed=int(r["seed"]), val_error=100 * float(last.loc[(r["arm"], r["seed"]), "error"]),
                         test_error=float(r["error"])))
    errors = pd.DataFrame(rows)
    cells = errors.groupby(["cell", "p_input", "p_hidden", "p_output"], as_index=False, sort=False)[
        ["val_error", "test_error"]].mean()
    guide_cell = _cell(*config.guide)
    others = cells[cells["cell"] != guide_cell]
    best_other = str(others.loc[others["val_error"].idxmin(), "cell"])
    cells["guide"] = cells["cell"] == guide_cell
    cells["best_other"] = cells["cell"] == best_other
    return RatesStudy(errors=errors, cells=cells, guide_cell=guide_cell, best_other=best_other)


# ----------------------------------------------------------------------------- second batch: shared helpers


def _versus_none(dropout: Any) -> dict[str, dict[str, float]]:
    """The two arms of a with/without study: ``"dropout"`` (``dropout`` maps p_input and/or p_hidden to
    drop probabilities, at least one > 0) and ``"none"`` (no keyword arguments: the net without dropout)."""
    if not isinstance(dropout, Mapping) or not dropout or set(dropout) - {"p_input", "p_hidden"}:
        raise ValueError(f"dropout must map p_input and/or p_hidden to drop probabilities, got {dropout!r}")
    rates = {k: probability(v, f"dropout[{k!r}]") for k, v in dropout.items()}
    if not any(rates.values()):
        raise ValueError(f"dropout must drop something: at least one rate > 0, got {dropout!r}")
    return {"dropout": rates, "none": {}}


def _batch_sizes(values: Any) -> list[int]:
    values = list(values) if isinstance(values, (list, tuple, range, np.ndarray)) else [values]
    sizes = [integer(v, "batch_sizes entries") for v in values]
    if len(sizes) < 2 or len(set(sizes)) != len(sizes):
        raise ValueError(f"batch_sizes must list at least two distinct batch sizes, got {values!r}")
    return sorted(sizes)


def _initial_loss(make_model: Callable[..., nn.Module], kwargs: Mapping[str, Any], split: Any, seed: int) -> float:
    """Loss on ``split`` of the net ``train_arms`` would train for this seed, before its first update."""
    seed_everything(seed)
    return evaluate(make_model(**kwargs), split, "classification", device="cpu")["loss"]


# ----------------------------------------------------------------------------- SG-SLOW: convergence speed


def updates_to_target(steps: Sequence[float], losses: Sequence[float], target: float) -> tuple[float, bool]:
    """Updates until a loss curve first reaches ``target``, linearly interpolated between evaluations.

    ``steps`` (increasing, the first normally 0) and ``losses`` are the evaluation points. Returns
    ``(updates, True)`` at the first crossing (``steps[0]`` if the curve starts at or below the target),
    or ``(steps[-1], False)`` when the curve never reaches it: censored at the budget, a lower bound.
    """
    steps, losses = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    if steps.ndim != 1 or steps.shape != losses.shape or steps.size < 1:
        raise ValueError(f"steps and losses must be 1-D of equal length ≥ 1, got {steps.shape} and {losses.shape}")
    if np.any(np.diff(steps) <= 0):
        raise ValueError(f"steps must increase, got {steps.tolist()}")
    target = positive(target, "target", zero=True)
    below = np.flatnonzero(losses <= target)
    if below.size == 0:
        return float(steps[-1]), False
    k = int(below[0])
    if k == 0:
        return float(steps[0]), True
    frac = (losses[k - 1] - target) / (losses[k - 1] - losses[k])
    return float(steps[k - 1] + frac * (steps[k] - steps[k - 1])), True


@dataclass(frozen=True)
class ConvergenceStudy:
    """SG-SLOW: ``curves`` — arm, seed, epoch, step, loss on the validation split (epoch 0: before training);
    ``times`` — arm, seed, updates to the target (interpolated), reached (False: censored at the budget);
    ``target`` — the validation loss; ``history`` — the fit records."""

    curves: pd.DataFrame
    times: pd.DataFrame
    target: float
    history: pd.DataFrame

    def updates(self, arm: str) -> pd.Series:
        return per_seed(self.times, "updates", arm=arm)

    def ratio(self) -> pd.Series:
        """Per seed: updates to the target with dropout / without (> 1: dropout is slower), indexed by seed."""
        return self.updates("dropout") / self.updates("none")


def convergence_study(make_model: Callable[..., nn.Module], data: Mapping[str, Any], config: TrainConfig,
                      seeds: Sequence[int], *, dropout: Mapping[str, float], target: float, val_split: str = "val",
                      test_split: str = "test") -> ConvergenceStudy:
    """SG-SLOW: updates until the validation loss first reaches ``target``, with dropout and without.

    Arms ``"dropout"`` (``make_model(**dropout)``, e.g. the guide's input 0.2 / hidden 0.5) and ``"none"``
    (``make_model()``) share each seed's initial weights and data order (:func:`train_arms`). The validation
    loss is evaluated before training (step 0, the net ``train_arms`` starts from) and after every epoch; the
    crossing is interpolated linearly between evaluations (:func:`updates_to_target`). A curve that never
    reaches the target is censored at the budget — it counts as reaching it at the last update, which can
    only shrink the ratio dropout / none when the dropout arm is the censored one.
    """
    config, seeds = _config(config), seed_list(seeds)
    arms = _versus_none(dropout)
    target = positive(target, "target")
    require_splits(data, ["train", val_split, test_split])
    config = replace(config, eval_splits=tuple(dict.fromkeys([*config.eval_splits, val_split])))
    starts = {seed: _initial_loss(make_model, {}, data[val_split], seed) for seed in seeds}
    if any(loss <= target for loss in starts.values()):
        raise ValueError(f"target must be below the initial validation loss of every seed's net "
                         f"({min(starts.values()):.4g} at the lowest), got {target}")
    study = train_arms(make_model, arms, data, config, seeds, test_split=test_split)
    val = study.history[study.history["split"] == val_split]
    curves, times = [], []
    for arm, kwargs in arms.items():
        for seed in seeds:
            rows = val[(val["arm"] == arm) & (val["seed"] == seed)].sort_values("epoch")
            start = dict(arm=arm, seed=seed, epoch=0, step=0,
                         loss=_initial_loss(make_model, kwargs, data[val_split], seed))
            if not math.isclose(start["loss"], starts[seed], rel_tol=1e-6):
                raise ValueError(f"make_model(**dropout) and make_model() must start from the same weights for a seed; "
                                 f"seed {seed}: initial validation loss {start['loss']:.6g} vs {starts[seed]:.6g}")
            curve = pd.DataFrame([start, *(dict(arm=arm, seed=seed, epoch=int(r.epoch), step=int(r.step),
                                                loss=float(r.loss)) for r in rows.itertuples())])
            updates, reached = updates_to_target(curve["step"], curve["loss"], target)
            curves.append(curve)
            times.append(dict(arm=arm, seed=seed, updates=updates, reached=reached))
    return ConvergenceStudy(curves=pd.concat(curves, ignore_index=True), times=pd.DataFrame(times), target=target,
                            history=study.history)


# ----------------------------------------------------------------------------- SG-BATCH: batch size


@dataclass(frozen=True)
class BatchStudy:
    """SG-BATCH: ``errors`` — batch_size, arm ("dropout"/"none"), seed, error (% on the test split);
    ``gains`` — batch_size, seed, gain (pp) = error without dropout − with, same seed; ``updates``;
    ``history`` — the fit records (running averages only) with batch_size, arm and seed."""

    errors: pd.DataFrame
    gains: pd.DataFrame
    updates: int
    history: pd.DataFrame

    def gain(self, batch_size: int) -> pd.Series:
        return per_seed(self.gains, "gain", batch_size=batch_size)

    def slopes(self) -> pd.Series:
        """Per seed: least-squares slope of the gain (pp) on log2(batch size) — pp per doubling."""
        out = {}
        for seed, rows in self.gains.groupby("seed"):
            out[int(seed)] = float(np.polyfit(np.log2(rows["batch_size"].to_numpy(float)), rows["gain"], 1)[0])
        return pd.Series(out, name="slope").sort_index()


def batch_study(make_model: Callable[..., nn.Module], data: Mapping[str, Any], config: TrainConfig,
                seeds: Sequence[int], *, dropout: Mapping[str, float], batch_sizes: Sequence[int], updates: int,
                test_split: str = "test") -> BatchStudy:
    """SG-BATCH: the gain of dropout (test error without − with) at each batch size, every net trained for
    the same number of ``updates`` (``config.max_steps``; ``config.batch_size`` and ``config.epochs`` are
    replaced, no evaluation during training).

    The guide: small batches already inject gradient noise, so dropout's regularisation adds less. At a
    fixed number of updates a larger batch also sees more examples (``updates × batch`` draws), so it
    is further into the overfitting regime where dropout pays; the study measures what the guide states,
    not a mechanism. Both arms share each seed's initial weights and data order at every batch size.
    """
    config, seeds = _config(config), seed_list(seeds)
    arms = _versus_none(dropout)
    sizes, updates = _batch_sizes(batch_sizes), integer(updates, "updates")
    require_splits(data, ["train", test_split])
    n_train = len(data["train"].x)
    if sizes[-1] > n_train:
        raise ValueError(f"batch_sizes must not exceed the {n_train} training examples, got {sizes}")
    rows, histories = [], []
    for size in sizes:
        sized = replace(config, batch_size=size, max_steps=updates, eval_splits=(),
                        epochs=epochs_for(updates, n_train, size))
        study = train_arms(make_model, arms, data, sized, seeds, test_split=test_split)
        rows.append(study.errors[["arm", "seed", "error"]].assign(batch_size=size))
        histories.append(study.history.assign(batch_size=size))
    errors = pd.concat(rows, ignore_index=True)[["batch_size", "arm", "seed", "error"]]
    wide = errors.pivot_table(index=["batch_size", "seed"], columns="arm", values="error")
    gains = (wide["none"] - wide["dropout"]).rename("gain").reset_index()
    return BatchStudy(errors=errors, gains=gains, updates=updates, history=pd.concat(histories, ignore_index=True))


# ----------------------------------------------------------------------------- SG-DEEP: depth


ARCHITECTURES = ("plain", "residual")


class DeepMLP(nn.Module):
    """A deep MLP of equal-width blocks, plain or residual, for SG-DEEP.

    Stem ``Linear(in, width)``, ReLU; ``depth`` blocks ``b(h) = dropout_p(ReLU(W h + c))``, applied as
    ``h ← b(h)`` (plain) or ``h ← h + b(h)`` (residual); head ``Linear(width, num_classes)``. Every Linear
    is He-initialised (normal, fan-in, zero bias) so the plain net keeps its signal scale with depth; a
    residual block's ``W`` is further scaled by 1/√depth so the sum of ``depth`` branches keeps it too.
    Every block holds its dropout module even at ``p = 0``, and dropout modules draw nothing at
    construction, so for one seed the nets of every rate start from the same weights. Input
    ``(N, *input_shape)``, flattened; output ``(N, num_classes)`` logits.
    """

    def __init__(self, in_features: int, width: int, depth: int, num_classes: int, *, p: float = 0.0,
                 residual: bool = False) -> None:
        super().__init__()
        self.residual = bool(residual)
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.ReLU(), InvertedDropout(p))
                                    for _ in range(depth))
        self.head = nn.Linear(width, num_classes)
        for layer in (self.stem, *(b[0] for b in self.blocks), self.head):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        if self.residual:
            with torch.no_grad():
                for block in self.blocks:
                    block[0].weight.div_(math.sqrt(depth))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.stem(x.flatten(1)))
        for block in self.blocks:
            h = h + block(h) if self.residual else block(h)
        return self.head(h)


def deep_mlp(input_shape: Sequence[int], width: int, depth: int, num_classes: int, *, p: float = 0.0,
             architecture: str = "plain") -> DeepMLP:
    """:class:`DeepMLP` with its arguments checked: ``architecture`` one of :data:`ARCHITECTURES`."""
    return DeepMLP(int(np.prod(input_shape)), integer(width, "width"), integer(depth, "depth"),
                   integer(num_classes, "num_classes"), p=probability(p, "p"),
                   residual=choice(architecture, ARCHITECTURES, "architecture") == "residual")


def first_layer_gradient_norm(model: DeepMLP, x: Tensor, y: Tensor, *, passes: int = 1, seed: int = 0) -> float:
    """Root mean square over ``passes`` dropout masks of ‖∂L/∂W_stem‖ (cross-entropy on the batch ``(x, y)``).

    The model is put in training mode (a fresh mask per pass, drawn from ``torch.manual_seed(seed)``),
    its gradients are cleared afterwards and its mode restored. Without dropout every pass is the same.
    """
    passes = integer(passes, "passes")
    torch.manual_seed(int(seed))
    squares = []
    try:
        with training_modes(model):
            model.train()
            for _ in range(passes):
                model.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), y).backward()
                squares.append(float(model.stem.weight.grad.square().sum()))
    finally:
        model.zero_grad(set_to_none=True)
    return math.sqrt(float(np.mean(squares)))


@dataclass(frozen=True)
class DepthStudy:
    """SG-DEEP: ``gradients`` — architecture, depth, p, seed, grad_norm (first layer, at initialisation),
    ratio (grad_norm / the same net's at p = 0), log2_ratio; ``errors`` — architecture, p, seed, error (%
    on the test split) of the trained nets at ``depth``; ``history``; ``depth``, ``p`` (the trained ones)."""

    gradients: pd.DataFrame
    errors: pd.DataFrame
    history: pd.DataFrame
    depth: int
    p: float

    def penalty(self, architecture: str) -> pd.Series:
        """Per seed: test error (%) at rate ``p`` − at rate 0 (pp), for the trained nets of ``architecture``."""
        at = lambda rate: per_seed(self.errors, "error", architecture=architecture, p=rate)  # noqa: E731
        return at(self.p) - at(0.0)

    def disruption(self, architecture: str, depth: int | None = None, p: float | None = None) -> pd.Series:
        """Per seed: |log2(first-layer gradient norm at p / at 0)| at initialisation (default: the trained depth, p)."""
        depth, p = self.depth if depth is None else depth, self.p if p is None else p
        return per_seed(self.gradients, "log2_ratio", architecture=architecture, depth=depth, p=float(p)).abs()


@dataclass(frozen=True)
class DepthConfig:
    """Settings of :func:`depth_study`, checked once when built: ``training``, ``seeds``, the nets'
    ``width``; gradient norms over ``depths`` × ``p_values`` (p = ``p`` added; ``passes`` mask draws on the
    first ``grad_batch`` training images); training at ``depth`` with rates 0 and ``p``; the test split."""

    training: TrainConfig
    seeds: tuple[int, ...]
    width: int
    depths: tuple[int, ...]
    p_values: tuple[float, ...]
    depth: int
    p: float
    passes: int = 10
    grad_batch: int = 256
    test_split: str = "test"

    def __post_init__(self) -> None:
        name = "DepthConfig"
        p = probability(self.p, f"{name}.p", zero=False)
        settle(self, training=_config(self.training, f"{name}.training"),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")), width=integer(self.width, f"{name}.width"),
               depth=integer(self.depth, f"{name}.depth"),
               depths=tuple(sorted(set(integers(self.depths, f"{name}.depths")))), p=p,
               p_values=tuple(sorted(set(probabilities(self.p_values, f"{name}.p_values", zero=False,
                                                       distinct=True)) | {p})),
               passes=integer(self.passes, f"{name}.passes"), grad_batch=integer(self.grad_batch, f"{name}.grad_batch"))


def depth_study(input_shape: Sequence[int], num_classes: int, data: Mapping[str, Any],
                config: DepthConfig) -> DepthStudy:
    """SG-DEEP: first-layer gradient norms at initialisation over ``depths`` × ``p_values`` (and p = 0) for the
    plain and the residual :class:`DeepMLP`, then the two architectures trained at ``depth`` with rate 0 and
    rate ``p`` (paired by seed).

    Gradients: per seed, one batch of the first ``grad_batch`` training images; the nets of one seed,
    architecture and depth share their weights across rates, so the ratio to p = 0 isolates dropout.
    Backpropagating through an inverted-dropout layer multiplies the gradient by m/(1 − p), whose second
    moment is 1/(1 − p): along a plain stack of ``depth`` layers the first-layer gradient's scale is
    multiplied by about (1 − p)^(−depth/2) and carries as many independent mask factors, while a residual
    net's identity path carries a part of the gradient no mask touches.
    """
    config = study_config(config, DepthConfig)
    require_splits(data, ["train", config.test_split])
    x, y = data["train"].x[:config.grad_batch], data["train"].y[:config.grad_batch]
    grads = []
    for seed in config.seeds:
        for architecture in ARCHITECTURES:
            for d in sorted({*config.depths, config.depth}):
                norms = {}
                for rate in (0.0, *config.p_values):
                    seed_everything(seed)
                    model = deep_mlp(input_shape, config.width, d, num_classes, p=rate, architecture=architecture)
                    norms[rate] = first_layer_gradient_norm(model, x, y, passes=config.passes if rate else 1, seed=seed)
                for rate, norm in norms.items():
                    ratio = norm / norms[0.0]
                    grads.append(dict(architecture=architecture, depth=d, p=rate, seed=seed, grad_norm=norm,
                                      ratio=ratio, log2_ratio=math.log2(ratio)))

    def make(architecture: str, rate: float) -> nn.Module:
        return deep_mlp(input_shape, config.width, config.depth, num_classes, p=rate, architecture=architecture)

    arms = {f"{a}, p={r:g}": dict(architecture=a, rate=r) for a in ARCHITECTURES for r in (0.0, config.p)}
    study = train_arms(make, arms, data, config.training, config.seeds, test_split=config.test_split)
    errors = study.errors.assign(architecture=[arms[a]["architecture"] for a in study.errors["arm"]],
                                 p=[arms[a]["rate"] for a in study.errors["arm"]])
    return DepthStudy(gradients=pd.DataFrame(grads), errors=errors[["architecture", "p", "seed", "error"]],
                      history=study.history, depth=config.depth, p=config.p)


# ----------------------------------------------------------------------------- SG-STABLE: dominance and stability


class GradientRecorder:
    """Per-update gradient norms of every Linear layer's weight, recorded inside :func:`~dropoutlab.train.fit`.

    ``fit`` calls its ``scheduler`` after every optimizer step (``unit = "step"``), when the update's
    gradients are still in ``.grad``; this recorder uses that slot and changes no rate. Its state (the
    norms) is saved in ``fit``'s checkpoints and restored from a run store, so a finished run loaded
    instead of trained still has its record. ``norms``: one list of per-layer norms per update.
    """

    unit = "step"

    def __init__(self, model: nn.Module) -> None:
        self.layers = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no Linear layer to record")
        self.norms: list[list[float]] = []

    def step(self) -> None:
        self.norms.append([float(m.weight.grad.norm()) if m.weight.grad is not None else 0.0 for _, m in self.layers])

    def state_dict(self) -> dict[str, Any]:
        return {"norms": [list(row) for row in self.norms]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.norms = [list(map(float, row)) for row in state["norms"]]

    def __repr__(self) -> str:  # part of fit's run key: what is recorded, not the record
        return f"GradientRecorder(layers={[name for name, _ in self.layers]})"


def top_share(weight: Tensor, fraction: float) -> float:
    """Share of Σ‖w_j‖² carried by the top ``fraction`` of input units ``j`` of a Linear ``weight`` ``(out, in)``.

    Unit j's outgoing weight is column j; the top ⌈fraction·in⌉ columns by squared norm are summed.
    Equal columns give ⌈fraction·in⌉/in; one column carrying everything gives 1.
    """
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D (out, in) tensor, got {getattr(weight, 'shape', type(weight))}")
    fraction = probability(fraction, "fraction", zero=False, what="a share")
    mass = weight.detach().double().square().sum(0)
    k = math.ceil(fraction * mass.numel())
    return float(mass.sort(descending=True).values[:k].sum() / mass.sum())


def gradient_spread(norms: np.ndarray, burn_in: float = 0.5) -> float:
    """Mean over layers of the coefficient of variation (SD/mean) of a layer's gradient norm over the updates
    after the first ``burn_in`` share of them (always at least the last two). ``norms``: ``(updates, layers)``.

    Training instability shows as gradient norms that jump from update to update; a steadily shrinking
    norm counts too (its SD over the window relative to its mean), which is why the early transient is
    left out. Layers whose gradient is 0 throughout the window are skipped.
    """
    norms = np.asarray(norms, dtype=float)
    if norms.ndim != 2 or norms.shape[0] < 2 or norms.shape[1] < 1:
        raise ValueError(f"norms must be (updates ≥ 2, layers ≥ 1), got shape {norms.shape}")
    burn_in = probability(burn_in, "burn_in", what="a share")
    tail = norms[min(int(burn_in * norms.shape[0]), norms.shape[0] - 2) :]
    mean = tail.mean(0)
    live = mean > 0
    if not live.any():
        raise ValueError("every layer's gradient norm is 0 over the window: no spread is defined")
    return float(np.mean(tail[:, live].std(0, ddof=1) / mean[live]))


@dataclass(frozen=True)
class StabilityStudy:
    """SG-STABLE: ``summary`` — arm, seed, top_share (last hidden layer's outgoing weight carried by its top
    units), spread (:func:`gradient_spread`), error (% on the test split); ``norms`` — arm, seed, update,
    layer, norm (every ``every``-th update kept, for figures); ``history``."""

    summary: pd.DataFrame
    norms: pd.DataFrame
    history: pd.DataFrame

    def measure(self, arm: str, column: str) -> pd.Series:
        return per_seed(self.summary, column, arm=arm)


def stability_study(make_model: Callable[..., nn.Module], data: Mapping[str, Any], config: TrainConfig,
                    seeds: Sequence[int], *, dropout: Mapping[str, float], top_fraction: float = 0.1,
                    burn_in: float = 0.5, every: int = 1, test_split: str = "test") -> StabilityStudy:
    """SG-STABLE: "dropout prevents dominant pathways and stabilises training", measured two ways.

    Arms ``"dropout"`` (``make_model(**dropout)``) and ``"none"`` share each seed's initial weights and data
    order. Dominance: :func:`top_share` of the last Linear layer's weight (the outgoing weights of the last
    hidden units) after training. Stability: :func:`gradient_spread` of the per-update gradient norms of every
    Linear layer, recorded during training by a :class:`GradientRecorder` — the norms the optimiser actually
    sees, so dropout's own mask noise is part of them.
    """
    config, seeds = _config(config), seed_list(seeds)
    arms = _versus_none(dropout)
    top_fraction = probability(top_fraction, "top_fraction", zero=False, what="a share")
    burn_in = probability(burn_in, "burn_in", what="a share")
    every = integer(every, "every")
    require_splits(data, ["train", test_split, *config.eval_splits])
    recorders: dict[tuple[str, int], GradientRecorder] = {}

    def recorder_for(arm: str):
        def build(model: nn.Module) -> GradientRecorder:
            recorder = GradientRecorder(model)
            recorders[(arm, seeds[sum(a == arm for a, _ in recorders)])] = recorder
            return recorder

        return build

    study = train_arms(make_model, arms, data, config, seeds, schedulers={arm: recorder_for(arm) for arm in arms},
                       keep_models=True, test_split=test_split)
    summary, norms = [], []
    for (arm, seed), recorder in recorders.items():
        model = study.models[(arm, seed)]
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        record = np.asarray(recorder.norms, dtype=float)
        summary.append(dict(arm=arm, seed=seed, top_share=top_share(last.weight, top_fraction),
                            spread=gradient_spread(record, burn_in), error=float(study.test_error(arm).loc[seed])))
        names = [name for name, _ in recorder.layers]
        for t in range(0, len(record), every):
            norms += [dict(arm=arm, seed=seed, update=t + 1, layer=name, norm=record[t, j])
                      for j, name in enumerate(names)]
    return StabilityStudy(summary=pd.DataFrame(summary), norms=pd.DataFrame(norms), history=study.history)


# ----------------------------------------------------------------------------- third batch: SG-SEARCH


SEARCHERS = ("grid", "tpe")


def tpe_search(objective: Callable[[float, float], float], bounds: Mapping[str, Sequence[float]], n_trials: int, *,
               seed: int, startup: int, step: float) -> list[tuple[float, float, float]]:
    """Minimise ``objective(p_input, p_hidden)`` with Optuna's TPE sampler; the trials in order.

    ``bounds`` maps ``"p_input"`` and ``"p_hidden"`` to ``(low, high)``; each rate is suggested on the
    lattice low, low + step, … (``suggest_float(..., step=step)``). ``TPESampler(seed=seed,
    n_startup_trials=startup)``: the first ``startup`` trials are random, the rest from TPE's density
    ratio. The sampler's proposal at trial t depends only on the seed and the t − 1 earlier results, so a
    run of n trials is the first n trials of a longer run with the same seed. Returns
    ``[(p_input, p_hidden, value), …]``, the rates rounded to 6 decimals.
    """
    n_trials, startup = integer(n_trials, "n_trials"), integer(startup, "startup")
    step = probability(step, "step", zero=False, what="a lattice step")
    if not isinstance(bounds, Mapping) or set(bounds) != {"p_input", "p_hidden"}:
        raise ValueError(f"bounds must map p_input and p_hidden to (low, high), got {bounds!r}")
    box = {}
    for name, pair in bounds.items():
        low, high = (probability(v, f"bounds[{name!r}] entries") for v in pair)
        if not high > low:
            raise ValueError(f"bounds[{name!r}] must be (low, high) with high > low, got {pair!r}")
        box[name] = (low, high)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="minimize",
                                    sampler=optuna.samplers.TPESampler(seed=int(seed), n_startup_trials=startup))

        def wrapped(trial) -> float:
            rates = [round(trial.suggest_float(name, *box[name], step=step), 6) for name in ("p_input", "p_hidden")]
            return float(objective(*rates))

        study.optimize(wrapped, n_trials=n_trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return [(round(t.params["p_input"], 6), round(t.params["p_hidden"], 6), float(t.value)) for t in study.trials]


@dataclass(frozen=True)
class SearchStudy:
    """SG-SEARCH: ``trials`` — searcher ("grid"/"tpe"), seed, trial (1, 2, …), p_input, p_hidden, val_error and
    test_error (%) of the net trained for that trial, best_val (the lowest validation error so far), reused (the
    configuration was already trained in this search run); ``budget`` — the grid's size G, also TPE's budget."""

    trials: pd.DataFrame
    budget: int

    def chosen(self, searcher: str, n_trials: int) -> pd.DataFrame:
        """Per seed, the configuration with the lowest validation error among the first ``n_trials`` trials
        (ties: the earliest), with its test error: seed, trial, p_input, p_hidden, val_error, test_error."""
        rows = self.trials[(self.trials["searcher"] == searcher) & (self.trials["trial"] <= n_trials)]
        if rows.empty or n_trials > self.budget:
            raise ValueError(f"no trials for searcher={searcher!r}, n_trials={n_trials}; searchers {SEARCHERS}, "
                             f"budget {self.budget}")
        best = rows.sort_values(["seed", "val_error", "trial"], kind="stable").groupby("seed").head(1)
        return best.set_index("seed").sort_index()[["trial", "p_input", "p_hidden", "val_error", "test_error"]]

    def test_error(self, searcher: str, n_trials: int) -> pd.Series:
        """Per seed: the test error (%) of the configuration chosen on validation within ``n_trials`` trials."""
        return self.chosen(searcher, n_trials)["test_error"]


@dataclass(frozen=True)
class SearchConfig:
    """Settings of :func:`search_study`, checked once when built: ``training``, ``seeds`` (one search run
    each), the grid ``input_rates`` × ``hidden_rates`` (at least two rates each; its size is the budget G),
    TPE's ``startup`` random trials (≤ G) and lattice ``step``, and the validation and test split names."""

    training: TrainConfig
    seeds: tuple[int, ...]
    input_rates: tuple[float, ...]
    hidden_rates: tuple[float, ...]
    startup: int
    step: float = 0.05
    val_split: str = "val"
    test_split: str = "test"

    def __post_init__(self) -> None:
        name = "SearchConfig"
        grid_in = probabilities(self.input_rates, f"{name}.input_rates", distinct=True)
        grid_hid = probabilities(self.hidden_rates, f"{name}.hidden_rates", distinct=True)
        if len(grid_in) < 2 or len(grid_hid) < 2:
            raise ValueError(f"{name}.input_rates and hidden_rates must list at least two rates each, got {grid_in} "
                             f"and {grid_hid}")
        startup = integer(self.startup, f"{name}.startup")
        if startup > len(grid_in) * len(grid_hid):
            raise ValueError(f"{name}.startup must not exceed the budget G = {len(grid_in) * len(grid_hid)}, "
                             f"got {startup}")
        settle(self, training=replace(_config(self.training, f"{name}.training"), eval_splits=()),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")), input_rates=tuple(grid_in),
               hidden_rates=tuple(grid_hid), startup=startup)


def search_study(make_model: Callable[..., nn.Module], data: Mapping[str, Any], config: SearchConfig) -> SearchStudy:
    """SG-SEARCH: a grid over (input rate, hidden rate) against Optuna's TPE with the same budget G.

    Per seed (a *search run*, the unit of replication) the grid ``input_rates × hidden_rates`` (G points, in an
    order shuffled by the seed, so its best-so-far curve is that of a grid evaluated in random order) and a
    TPE run of G trials (:func:`tpe_search`, sampler seeded by the seed, ``startup`` random trials) over the
    box the grid spans, each rate on the lattice of ``step``. A trial trains ``make_model(p_input=,
    p_hidden=)`` with ``config`` (the seed sets the initial weights and data order of every trial of the run,
    so configurations compete on the same draws) and scores it by its validation error; its test error is
    kept for the configuration the search would choose. A configuration already trained in the same run (by
    the grid or earlier by TPE) is reused, not retrained: the same seed would give the same net. TPE with
    fewer trials n < G is the first n trials of its G-trial run (the same proposals; see :func:`tpe_search`).
    """
    config = study_config(config, SearchConfig)
    grid_in, grid_hid = config.input_rates, config.hidden_rates
    val_split, test_split = config.val_split, config.test_split
    points = [(i, h) for i in grid_in for h in grid_hid]
    require_splits(data, ["train", val_split, test_split])
    training = config.training
    bounds = {"p_input": (min(grid_in), max(grid_in)), "p_hidden": (min(grid_hid), max(grid_hid))}
    rows = []
    for seed in config.seeds:
        cache: dict[tuple[float, float], tuple[float, float]] = {}

        def trial(p_input: float, p_hidden: float, seed: int = seed, cache: dict = cache) -> tuple[float, float, bool]:
            key = (round(float(p_input), 6), round(float(p_hidden), 6))
            if key in cache:
                return (*cache[key], True)
            study = train_arms(make_model, {"trial": dict(p_input=key[0], p_hidden=key[1])}, data, training, [seed],
                               keep_models=True, test_split=val_split)
            model = study.models[("trial", seed)]
            cache[key] = (float(study.errors["error"].iloc[0]),
                          100 * evaluate(model, data[test_split], training.task, device=model_device(model))["error"])
            return (*cache[key], False)

        order = np.random.default_rng(seed).permutation(len(points))
        for t, index in enumerate(order, start=1):
            val, test, reused = trial(*points[index])
            rows.append(dict(searcher="grid", seed=seed, trial=t, p_input=points[index][0],
                             p_hidden=points[index][1], val_error=val, test_error=test, reused=reused))
        seen = set(cache)
        for t, (p_in, p_hid, val) in enumerate(
                tpe_search(lambda i, h, trial=trial: trial(i, h)[0], bounds, len(points), seed=seed,
                           startup=config.startup, step=config.step), start=1):
            key = (p_in, p_hid)
            rows.append(dict(searcher="tpe", seed=seed, trial=t, p_input=p_in, p_hidden=p_hid, val_error=val,
                             test_error=cache[key][1], reused=key in seen))
            seen.add(key)
    trials = pd.DataFrame(rows)
    trials["best_val"] = trials.groupby(["searcher", "seed"])["val_error"].cummin()
    return SearchStudy(trials=trials, budget=len(points))


# ----------------------------------------------------------------------------- third batch: SG-CV


PROCEDURES = ("cv", "held-out")
DECISIONS = ("dropout", "none", "undecided")


def corrected_t_interval(differences: Sequence[float], test_train_ratio: float,
                         level: float = 0.95) -> tuple[float, float, float]:
    """Mean of J resampled differences and its Nadeau–Bengio corrected resampled-t interval.

    Nadeau & Bengio (2003, "Inference for the generalization error", Machine Learning 52: 239–281): the J
    estimates share training data, so the naive variance s²/J is too small; the corrected variance is
    (1/J + n_test/n_train)·s², with Student's t on J − 1 degrees of freedom. For k-fold cross-validation
    (Bouckaert & Frank 2004) J = k and n_test/n_train = 1/(k − 1). Returns (mean, low, high) of the
    two-sided ``level`` interval.
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or d.size < 2 or not np.all(np.isfinite(d)):
        raise ValueError(f"differences must be at least two finite numbers, got {np.asarray(differences).tolist()}")
    ratio = positive(test_train_ratio, "test_train_ratio", zero=True)
    level = probability(level, "level", zero=False, what="a confidence level")
    se = math.sqrt((1.0 / d.size + ratio) * float(d.var(ddof=1)))
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1)) * se
    return float(d.mean()), float(d.mean()) - half, float(d.mean()) + half


def paired_error_interval(wrong_a: Sequence[bool], wrong_b: Sequence[bool],
                          level: float = 0.95) -> tuple[float, float, float]:
    """Difference of two error rates (pp, a − b) on the same examples and its paired interval.

    Per example d_i = wrong_a,i − wrong_b,i ∈ {−1, 0, 1}; the interval is mean(d) ± t(level, n − 1)·sd(d)/√n
    (the normal interval of a paired difference of proportions; only the discordant examples contribute to
    sd). Returns (difference, low, high) in percentage points.
    """
    a, b = np.asarray(wrong_a, dtype=float), np.asarray(wrong_b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2 or not np.isin(np.r_[a, b], (0.0, 1.0)).all():
        raise ValueError(f"wrong_a and wrong_b must be 0/1 flags of equal length ≥ 2, got {a.shape} and {b.shape}")
    level = probability(level, "level", zero=False, what="a confidence level")
    d = 100.0 * (a - b)
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1)) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return float(d.mean()), float(d.mean()) - half, float(d.mean()) + half


def decision(low: float, high: float) -> str:
    """The decision an interval for (error without dropout − with) supports: "dropout" (wholly above 0),
    "none" (wholly below 0) or "undecided" (it contains 0)."""
    return "dropout" if low > 0 else "none" if high < 0 else "undecided"


@dataclass(frozen=True)
class CVStudy:
    """SG-CV: ``folds`` — seed, fold, error_none, error_dropout (% on the held-out fold), difference (pp, none −
    dropout); ``summary`` — seed, procedure ("cv"/"held-out"), estimate, low, high (pp, none − dropout),
    decision; ``k``, ``level``; ``history`` — the fit records with arm, seed and fold (−1: the held-out split)."""

    folds: pd.DataFrame
    summary: pd.DataFrame
    k: int
    level: float
    history: pd.DataFrame

    def estimate(self, procedure: str) -> pd.Series:
        return per_seed(self.summary, "estimate", procedure=procedure)

    def decisions(self) -> pd.DataFrame:
        """Per seed (index): the decision of each procedure (columns) and ``agree``."""
        wide = self.summary.pivot(index="seed", columns="procedure", values="decision")[list(PROCEDURES)]
        return wide.assign(agree=wide["cv"] == wide["held-out"])

    def disagreements(self) -> int:
        """Seeds on which cross-validation and the held-out split decide differently."""
        return int((~self.decisions()["agree"]).sum())


def _subset(split: Any, index: np.ndarray, name: str) -> Any:
    """The examples ``index`` of a split (a :class:`~dropoutlab.data.Dataset` or any object with ``x`` and ``y``)."""
    index = torch.as_tensor(index, dtype=torch.long)
    changes = {"x": split.x[index], "y": split.y[index]}
    if getattr(split, "indices", None) is not None:
        changes["indices"] = split.indices[index]
    if is_dataclass(split):
        return replace(split, **changes, **({"split": name} if hasattr(split, "split") else {}))
    return SimpleNamespace(**{**vars(split), **changes})


def _wrong(model: nn.Module, split: Any, batch_size: int = 1000) -> np.ndarray:
    """0/1 per example: the eval-mode prediction of ``model`` on ``split`` is wrong."""
    device, flags = model_device(model), []
    with training_modes(model), torch.no_grad():
        model.eval()
        for start in range(0, len(split.x), batch_size):
            out = model(split.x[start:start + batch_size].to(device)).argmax(1).cpu()
            flags.append((out != split.y[start:start + batch_size]).numpy())
    return np.concatenate(flags).astype(float)


def cv_study(make_model: Callable[..., nn.Module], data: Mapping[str, Any], config: TrainConfig, seeds: Sequence[int],
             *, dropout: Mapping[str, float], k: int = 5, level: float = 0.95, val_split: str = "val") -> CVStudy:
    """SG-CV: "with or without dropout?" decided by k-fold cross-validation and by a held-out split.

    Per seed, cross-validation: scikit-learn's ``StratifiedKFold(k, shuffle=True, random_state=seed)`` on
    ``data["train"]``; per fold both arms (``make_model(**dropout)`` and ``make_model()``, the same initial
    weights and data order) train on the other k − 1 folds and are scored on the held fold; the per-fold
    difference error(none) − error(dropout) gets the :func:`corrected_t_interval` (Nadeau–Bengio, J = k,
    n_test/n_train = 1/(k − 1)). Held-out: both arms train on all of ``data["train"]`` and are compared on
    ``data[val_split]`` with the :func:`paired_error_interval` over its examples. Each interval gives a
    :func:`decision`. The two intervals answer different questions — the corrected CV interval includes
    training-set variability, the held-out interval only the sampling of the held-out images — which is what
    the comparison is about.
    """
    from sklearn.model_selection import StratifiedKFold

    config, seeds = _config(config), seed_list(seeds)
    arms = _versus_none(dropout)
    k = integer(k, "k", minimum=2)
    level = probability(level, "level", zero=False, what="a confidence level")
    require_splits(data, ["train", val_split])
    train = data["train"]
    labels = train.y.numpy()
    if np.bincount(labels).min(initial=len(labels)) < k:
        raise ValueError(f"k = {k} folds need at least k training examples of every class")
    config = replace(config, eval_splits=())
    folds, summary, histories = [], [], []
    for seed in seeds:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for fold, (fit_index, held_index) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            split = {"train": _subset(train, fit_index, "train-fold"), "held": _subset(train, held_index, "held-fold")}
            study = train_arms(make_model, arms, split, config, [seed], test_split="held")
            errors = study.errors.set_index("arm")["error"]
            folds.append(dict(seed=seed, fold=fold, error_none=float(errors["none"]),
                              error_dropout=float(errors["dropout"]),
                              difference=float(errors["none"] - errors["dropout"])))
            histories.append(study.history.assign(fold=fold))
        diffs = [f["difference"] for f in folds if f["seed"] == seed]
        est, low, high = corrected_t_interval(diffs, 1.0 / (k - 1), level)
        summary.append(dict(seed=seed, procedure="cv", estimate=est, low=low, high=high, decision=decision(low, high)))
        study = train_arms(make_model, arms, {"train": train, val_split: data[val_split]}, config, [seed],
                           keep_models=True, test_split=val_split)
        histories.append(study.history.assign(fold=-1))
        wrong = {arm: _wrong(study.models[(arm, seed)], data[val_split]) for arm in arms}
        est, low, high = paired_error_interval(wrong["none"], wrong["dropout"], level)
        summary.append(dict(seed=seed, procedure="held-out", estimate=est, low=low, high=high,
                            decision=decision(low, high)))
    return CVStudy(folds=pd.DataFrame(folds), summary=pd.DataFrame(summary), k=k, level=level,
                   history=pd.concat(histories, ignore_index=True))
