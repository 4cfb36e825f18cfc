"""Variational dropout experiments, used by notebook 09.

Kingma, Salimans, Welling. "Variational dropout and the local reparameterization trick." NeurIPS
2015. Molchanov, Ashukha, Vetrov. "Variational dropout sparsifies deep neural networks." ICML 2017.

* KW-KL, SV-KL — :func:`neg_kl_reference` (−KL(q‖p) of ``w = θ(1 + √α·ε)`` against the log-uniform
  prior, by quadrature, up to a constant), :func:`neg_kl_monte_carlo` (its Monte Carlo cross-check
  with standard errors) and :func:`kl_study` (both approximations against the reference).
* KW-VAR — :func:`gaussian_vi_linear` (one Gaussian-VI linear layer ``w ~ N(θ, α·θ²)`` sampled by
  one of three estimators: the local reparameterisation trick, separate weight samples per example,
  one weight sample per minibatch), :func:`elbo_gradients`, :func:`gradient_variance` and
  :func:`variance_study` (train, then the variance of the minibatch ELBO gradient per estimator).
* KW-MN — :func:`kingma_arm` and :func:`dropout_comparison`: variational dropout (variant A, learned
  α) against Gaussian dropout with fixed α and Bernoulli dropout, paired by seed.
* SV-L300, SV-L5 — :class:`KLWeightScheduler` (the KL warm-up β/N written into the layers),
  :func:`sparse_vd_study` (LeNet-300-100 or LeNet-5-Caffe with sparse VD: test error, per-layer
  sparsity, compression, the log α histogram, the sparsity–error trade-off as the pruning threshold
  moves, the surviving input weights per pixel).

ELBO scaling: :func:`dropoutlab.train.fit` minimises the *mean* cross-entropy over a minibatch plus
the modules' ``regularizer()`` = ``kl_weight · KL``. The per-data-point negative ELBO is
``mean NLL + KL/N`` (N training points), so every experiment here sets ``kl_weight = β/N``
(β = 1, or the warm-up weight of sparse VD); this equals the papers' ``N·mean NLL + β·KL`` divided by N.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import integrate
from torch import Tensor, nn

from ..checks import choice, finite, integer, integers, positive, seed_list, settle
from ..models import MLP, KingmaMLP, LeNet5Caffe, LeNet300100
from ..schedules import KLWarmup
from ..train import TrainConfig, evaluate, fit, model_device, regularization, seed_everything, training_modes
from ..variants.bayesian import (
    SparseVariationalConv2d,
    VariationalDropoutLinear,
    kingma_kl,
    molchanov_kl,
    sparsity_report,
    variational_dropout_linear,
)
from .studies import distinct_choices, study_config, train_config

__all__ = [
    "ARMS",
    "ESTIMATORS",
    "E_LOG_ABS_NORMAL",
    "GradientVarianceStudy",
    "KLStudy",
    "KLWeightScheduler",
    "MNComparison",
    "SPARSE_NETS",
    "SparseConfig",
    "SparseStudy",
    "dropout_comparison",
    "elbo_gradients",
    "expected_log_abs",
    "gaussian_vi_forward",
    "gaussian_vi_linear",
    "gradient_variance",
    "kingma_arm",
    "kl_study",
    "neg_kl_monte_carlo",
    "neg_kl_reference",
    "sparse_net",
    "sparse_vd_study",
    "variance_study",
    "vi_mlp",
]

#: E log|ε| for ε ~ N(0, 1): −(γ + log 2)/2. With this constant −KL → 0 as α → ∞ (Molchanov's choice).
E_LOG_ABS_NORMAL = -(float(np.euler_gamma) + math.log(2.0)) / 2.0
#: |ε| beyond this contributes < 1e-30 to the expectation (φ(12) ≈ 2e-32).
_EPS_LIMIT = 12.0
CONSTANTS = ("zero-at-infinity", "none")
ESTIMATORS = ("lrt", "separate", "single")
ARMS = ("variational", "gaussian", "bernoulli")
SPARSE_NETS = ("lenet300", "lenet5")


# ----------------------------------------------------------------------------- validation


def _check_log_alpha(log_alpha: Any, name: str) -> np.ndarray:
    values = np.atleast_1d(np.asarray(log_alpha, dtype=float))
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)) or np.any(np.abs(values) > 30):
        raise ValueError(f"{name}: log_alpha must be finite numbers in [−30, 30] (one value or a 1-d list), "
                         f"got {log_alpha!r}")
    return values


def _check_range(bounds: Any, name: str, *, positive: bool = False) -> tuple[float, float]:
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {bounds!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high) or (positive and low <= 0):
        raise ValueError(f"{name} must be finite with low < high{' and low > 0' if positive else ''}, got {bounds!r}")
    return low, high


def _shift(constant: str, name: str) -> float:
    """The constant C of −KL: E log|ε| for ``"zero-at-infinity"``, 0 for ``"none"``."""
    return E_LOG_ABS_NORMAL if choice(constant, CONSTANTS, f"{name}: constant") == "zero-at-infinity" else 0.0


# ----------------------------------------------------------------------------- KW-KL, SV-KL


def expected_log_abs(alpha: float) -> float:
    """``E log|1 + √α·ε|``, ε ~ N(0, 1), by adaptive quadrature (``scipy.integrate.quad``).

    The integrand has a logarithmic singularity at ε = −1/√α; the integral is split there (a
    break point), and QUADPACK's extrapolation handles the integrable end-point singularity.
    Outside |ε| ≤ 12 the normal density is below 1e-31, so the range is cut there.
    """
    root = math.sqrt(positive(alpha, "expected_log_abs: alpha"))
    norm = 1.0 / math.sqrt(2.0 * math.pi)

    def integrand(e: float) -> float:
        value = abs(1.0 + root * e)
        return norm * math.exp(-0.5 * e * e) * math.log(value) if value > 0 else 0.0

    singular = -1.0 / root
    pieces = ([(-_EPS_LIMIT, singular), (singular, _EPS_LIMIT)] if -_EPS_LIMIT < singular
              else [(-_EPS_LIMIT, _EPS_LIMIT)])
    return float(sum(integrate.quad(integrand, a, b, limit=200, epsabs=1e-12, epsrel=1e-12)[0] for a, b in pieces))


def neg_kl_reference(log_alpha: Any, constant: str = "zero-at-infinity") -> np.ndarray:
    """−KL(q‖p) per weight for ``w = θ(1 + √α·ε)`` and the log-uniform prior, by quadrature.

    Up to a constant, ``−KL(α) = 0.5·log α − E log|1 + √α·ε| + C`` (Kingma et al. 2015, appendix;
    the KL does not depend on θ). ``constant="zero-at-infinity"``: ``C = E log|ε|`` =
    −(γ + log 2)/2, so −KL → 0 as α → ∞ (Molchanov et al.'s convention); ``"none"``: C = 0.
    Returns one value per entry of ``log_alpha`` (float64).
    """
    values = _check_log_alpha(log_alpha, "neg_kl_reference")
    shift = _shift(constant, "neg_kl_reference")
    return np.array([0.5 * la - expected_log_abs(math.exp(la)) + shift for la in values])


def neg_kl_monte_carlo(log_alpha: Any, n_samples: int = 1_000_000, seed: int = 0,
                       constant: str = "zero-at-infinity") -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo estimate of :func:`neg_kl_reference` and its standard error, per ``log_alpha``.

    ``n_samples`` draws of ε ~ N(0, 1) (NumPy ``default_rng(seed)``, the same draws for every α):
    mean and s.e. of ``0.5·log α − log|1 + √α·ε| + C``.
    """
    name = "neg_kl_monte_carlo"
    values = _check_log_alpha(log_alpha, name)
    n = integer(n_samples, f"{name}: n_samples", 2)
    shift = _shift(constant, name)
    eps = np.random.default_rng(integer(seed, f"{name}: seed", 0)).standard_normal(n)
    means, ses = [], []
    for la in values:
        terms = np.log(np.abs(1.0 + math.exp(0.5 * la) * eps))
        means.append(0.5 * la - terms.mean() + shift)
        ses.append(terms.std(ddof=1) / math.sqrt(n))
    return np.array(means), np.array(ses)


def _approximation(fn, log_alpha: np.ndarray) -> np.ndarray:
    return -fn(torch.as_tensor(log_alpha, dtype=torch.float64)).numpy()


@dataclass(frozen=True)
class KLStudy:
    """Result of :func:`kl_study`.

    ``kingma``: ``alpha, log_alpha, reference, approximation, residual`` on the KW-KL grid (α evenly
    spaced in ``kingma_range``; reference with C = 0; residual after the best constant shift, i.e.
    minus its mean). ``kingma_sd``: the sd (ddof 0) of that residual (KW-KL's measure);
    ``kingma_shift``: the shift. ``kingma_wide``: the same over log α evenly spaced in ``wide_range``
    with its own best shift; ``kingma_wide_max``: its largest |residual| (reported, not judged).
    ``molchanov``: ``log_alpha, reference, approximation, error`` over ``molchanov_range`` (C = E log|ε|,
    no shift); ``molchanov_max``: largest |error| (SV-KL's measure). ``monte_carlo``: ``log_alpha,
    reference, mc, se, z`` at ``mc_points`` values (z = (mc − reference)/se); ``mc_max_z``: largest |z|.
    """

    kingma: Any
    kingma_sd: float
    kingma_shift: float
    kingma_wide: Any
    kingma_wide_max: float
    molchanov: Any
    molchanov_max: float
    monte_carlo: Any
    mc_max_z: float
    mc_samples: int


def kl_study(n_points: int = 200, *, kingma_range: Sequence[float] = (0.05, 1.0),
             wide_range: Sequence[float] = (-8.0, 0.0), molchanov_range: Sequence[float] = (-8.0, 8.0),
             mc_points: int = 9, mc_samples: int = 1_000_000, seed: int = 0) -> KLStudy:
    """KW-KL and SV-KL: Kingma's polynomial and Molchanov's sigmoid fit against the quadrature −KL.

    Kingma et al. 2015 (p. 6): ``−KL ≈ const + 0.5 log α + c1 α + c2 α² + c3 α³`` for α ≤ 1;
    Molchanov et al. 2017: ``−KL ≈ k1 σ(k2 + k3 log α) − 0.5 log(1 + 1/α) − k1`` for every α.
    The approximations are the package's :func:`~dropoutlab.variants.bayesian.kingma_kl` and
    :func:`~dropoutlab.variants.bayesian.molchanov_kl` in float64. The Monte Carlo cross-check uses
    ``mc_samples`` draws at ``mc_points`` values of log α evenly spaced in ``molchanov_range``.
    """
    name = "kl_study"
    n = integer(n_points, f"{name}: n_points", 3)
    k_low, k_high = _check_range(kingma_range, f"{name}: kingma_range (α)", positive=True)
    w_low, w_high = _check_range(wide_range, f"{name}: wide_range (log α)")
    m_low, m_high = _check_range(molchanov_range, f"{name}: molchanov_range (log α)")
    points = integer(mc_points, f"{name}: mc_points")
    samples = integer(mc_samples, f"{name}: mc_samples", 2)

    def kingma_table(log_alpha: np.ndarray):
        reference = neg_kl_reference(log_alpha, constant="none")
        approximation = _approximation(kingma_kl, log_alpha)
        diff = approximation - reference
        return pd.DataFrame({"alpha": np.exp(log_alpha), "log_alpha": log_alpha, "reference": reference,
                             "approximation": approximation, "residual": diff - diff.mean()}), float(diff.mean())

    kingma, shift = kingma_table(np.log(np.linspace(k_low, k_high, n)))
    wide, _ = kingma_table(np.linspace(w_low, w_high, n))
    grid = np.linspace(m_low, m_high, n)
    reference = neg_kl_reference(grid)
    approximation = _approximation(molchanov_kl, grid)
    molchanov = pd.DataFrame({"log_alpha": grid, "alpha": np.exp(grid), "reference": reference,
                              "approximation": approximation, "error": approximation - reference})
    mc_grid = np.linspace(m_low, m_high, points)
    mc, se = neg_kl_monte_carlo(mc_grid, samples, seed)
    exact = neg_kl_reference(mc_grid)
    monte_carlo = pd.DataFrame({"log_alpha": mc_grid, "reference": exact, "mc": mc, "se": se, "z": (mc - exact) / se})
    return KLStudy(kingma=kingma, kingma_sd=float(kingma["residual"].std(ddof=0)), kingma_shift=shift,
                   kingma_wide=wide, kingma_wide_max=float(wide["residual"].abs().max()), molchanov=molchanov,
                   molchanov_max=float(molchanov["error"].abs().max()), monte_carlo=monte_carlo,
                   mc_max_z=float(monte_carlo["z"].abs().max()), mc_samples=samples)


# ----------------------------------------------------------------------------- KW-VAR


def gaussian_vi_linear(x: Tensor, weight: Tensor, bias: Tensor | None, log_alpha: Tensor, estimator: str, *,
                       generator: torch.Generator | None = None) -> Tensor:
    """One linear layer with Gaussian-VI weights ``w = θ(1 + √α·ε)``, i.e. ``w ~ N(θ, α·θ²)``, sampled by ``estimator``.

    Kingma et al. 2015, §2.2–2.3 and Table 1:

    * ``"lrt"`` — local reparameterisation: the pre-activations are sampled,
      ``y = xθᵀ + b + sqrt((x²)(α θ²)ᵀ)·ε``, one ε per example and output unit;
    * ``"separate"`` — one weight sample per example (a ``(batch, out, in)`` noise tensor);
    * ``"single"`` — one weight sample shared by the whole minibatch.

    All three give the same distribution of each example's pre-activations, so the same expected
    loss and gradient; they differ in the variance of the minibatch gradient. ``x`` is ``(batch, in)``;
    ``log_alpha`` broadcasts against ``weight (out, in)``.
    """
    choice(estimator, ESTIMATORS, "gaussian_vi_linear: estimator")
    if x.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"gaussian_vi_linear: x must have shape (batch, {weight.shape[1]}), got {tuple(x.shape)}")
    if estimator == "lrt":
        return variational_dropout_linear(x, weight, bias, log_alpha, training=True, generator=generator)
    std = log_alpha.mul(0.5).exp().expand_as(weight)
    if estimator == "single":
        noise = torch.randn(weight.shape, generator=generator, dtype=x.dtype, device=x.device)
        return F.linear(x, weight * (1.0 + std * noise), bias)
    noise = torch.randn((x.shape[0], *weight.shape), generator=generator, dtype=x.dtype, device=x.device)
    out = torch.einsum("bi,boi->bo", x, weight * (1.0 + std * noise))
    return out if bias is None else out + bias


def gaussian_vi_forward(model: nn.Module, x: Tensor, estimator: str, *,
                        generator: torch.Generator | None = None) -> Tensor:
    """Run a sequential net whose :class:`VariationalDropoutLinear` layers are sampled by ``estimator``.

    The other modules (Flatten, activations, plain Linear) run as they are.
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"gaussian_vi_forward: model must be an nn.Sequential (e.g. vi_mlp), "
                         f"got {type(model).__name__}")
    for module in model:
        if isinstance(module, VariationalDropoutLinear):
            x = gaussian_vi_linear(x, module.weight, module.bias, module.log_alpha, estimator, generator=generator)
        else:
            x = module(x)
    return x


def vi_mlp(in_features: int, widths: Sequence[int], out_features: int, n_train: int, *, p: float = 0.5) -> MLP:
    """MLP whose every Linear layer has Gaussian-VI weights ``N(θ, α·θ²)`` with one learned α per weight.

    :class:`~dropoutlab.variants.bayesian.VariationalDropoutLinear` (``granularity="weight"``,
    trained with the LRT), initial α = p/(1−p), KL (Kingma's fit) weighted 1/``n_train``.
    """
    integer(n_train, "vi_mlp: n_train")
    return MLP(in_features, widths, out_features, dropout="variational", p_input=p, p_hidden=p,
               dropout_kwargs=dict(granularity="weight", kl_weight=1.0 / n_train))


def elbo_gradients(model: nn.Module, x: Tensor, y: Tensor, estimator: str, *,
                   generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Gradient of the per-data-point negative ELBO (mean cross-entropy + Σ kl_weight·KL) on one minibatch.

    Returns ``{"bottom": ∂/∂θ of the first layer, "top": ∂/∂θ of the last layer}`` (flattened).
    """
    layers = [m for m in model.modules() if isinstance(m, VariationalDropoutLinear)]
    if not layers:
        raise ValueError("elbo_gradients: the model has no VariationalDropoutLinear layer")
    loss = F.cross_entropy(gaussian_vi_forward(model, x, estimator, generator=generator), y)
    bottom, top = torch.autograd.grad(loss + regularization(model), [layers[0].weight, layers[-1].weight])
    return {"bottom": bottom.flatten(), "top": top.flatten()}


def gradient_variance(model: nn.Module, data, *, n_batches: int = 50, batch_size: int = 100,
                      estimators: Sequence[str] = ESTIMATORS, seed: int = 0):
    """Variance of the minibatch ELBO gradient for each estimator, over the same ``n_batches`` minibatches.

    The minibatches are drawn once (without replacement, ``torch.Generator`` seeded with ``seed``)
    and used for every estimator; the noise generator is re-seeded with ``seed`` for each estimator.
    Per layer (bottom, top): the variance over the minibatches of each θ's gradient (ddof 1),
    averaged over the layer's weights. Returns a DataFrame ``estimator, layer, variance, log_variance``.
    """
    name = "gradient_variance"
    n_batches = integer(n_batches, f"{name}: n_batches", 2)
    batch_size = integer(batch_size, f"{name}: batch_size")
    estimators = distinct_choices(estimators, ESTIMATORS, f"{name}: estimators")
    if n_batches * batch_size > len(data.x):
        raise ValueError(f"{name}: n_batches × batch_size = {n_batches * batch_size} exceeds the "
                         f"{len(data.x)} examples of the data")
    seed = integer(seed, f"{name}: seed", 0)
    device = model_device(model)
    order = torch.randperm(len(data.x), generator=torch.Generator().manual_seed(seed))[:n_batches * batch_size]
    batches = order.view(n_batches, batch_size)
    rows = []
    with training_modes(model):
        model.train()
        for estimator in estimators:
            generator = torch.Generator(device=device).manual_seed(seed)
            grads: dict[str, list[Tensor]] = {"bottom": [], "top": []}
            for idx in batches:
                g = elbo_gradients(model, data.x[idx].to(device), data.y[idx].to(device), estimator,
                                   generator=generator)
                for layer in grads:
                    grads[layer].append(g[layer].double())
            for layer, values in grads.items():
                variance = float(torch.stack(values).var(dim=0, unbiased=True).mean())
                rows.append({"estimator": estimator, "layer": layer, "variance": variance,
                             "log_variance": math.log(variance)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class GradientVarianceStudy:
    """Result of :func:`variance_study`: ``variances`` (``seed, estimator, layer, variance, log_variance``)
    and ``errors`` (``seed, test_error`` of the trained net, eval mode) and the ``epochs`` trained."""

    variances: Any
    errors: Any
    epochs: int


def variance_study(train, test, seeds: Iterable[int], widths: Sequence[int], config: TrainConfig, *,
                   p: float = 0.5, n_batches: int = 50, batch_size: int = 100) -> GradientVarianceStudy:
    """KW-VAR: train :func:`vi_mlp` (LRT, ``config``) per seed, then :func:`gradient_variance` on ``train``.

    Kingma et al. 2015, Table 1. The same ``n_batches`` minibatches of ``batch_size`` and the same
    noise seed serve every estimator within a seed (``seed`` is the training seed).
    """
    name = "variance_study"
    seeds = seed_list(seeds, f"{name}: seeds")
    in_features, out_features = int(train.x[0].numel()), int(train.y.max()) + 1
    variances, errors = [], []
    for seed in seeds:
        seed_everything(seed)
        model = vi_mlp(in_features, widths, out_features, len(train.x), p=p)
        fit(model, {"train": train}, replace(config, seed=seed, eval_splits=()))
        errors.append({"seed": seed, "test_error": evaluate(model, test, device=config.device)["error"]})
        frame = gradient_variance(model, train, n_batches=n_batches, batch_size=batch_size, seed=seed)
        variances.append(frame.assign(seed=seed))
    table = pd.concat(variances, ignore_index=True)[["seed", "estimator", "layer", "variance", "log_variance"]]
    return GradientVarianceStudy(table, pd.DataFrame(errors), config.epochs)


# ----------------------------------------------------------------------------- KW-MN


def kingma_arm(arm: str, in_features: int, widths: Sequence[int], out_features: int, n_train: int, *,
               p: float = 0.5, granularity: str = "unit") -> nn.Module:
    """One arm of KW-MN, an MLP with noise on every hidden layer's units (none on the input).

    ``"variational"``: :class:`~dropoutlab.models.KingmaMLP` (variant A, α learned from
    p/(1−p), KL weighted 1/``n_train``); ``"gaussian"``: Gaussian dropout with fixed α = p/(1−p);
    ``"bernoulli"``: inverted dropout with drop probability ``p``. Built under the same seed, the
    three share the Linear layers' initial weights.
    """
    choice(arm, ARMS, "kingma_arm: arm")
    integer(n_train, "kingma_arm: n_train")
    if arm == "variational":
        return KingmaMLP(in_features, widths, out_features, p=p, granularity=granularity, kl_weight=1.0 / n_train)
    return MLP(in_features, widths, out_features, dropout="gaussian" if arm == "gaussian" else "inverted",
               p_input=0.0, p_hidden=p)


@dataclass(frozen=True)
class MNComparison:
    """Result of :func:`dropout_comparison`: ``errors`` (``seed, arm, test_error`` in %, eval mode),
    ``rates`` (``seed, layer, p``: the learned equivalent drop probabilities of the variational arm,
    mean over units) and ``curves`` (``seed, arm, epoch, split, error``)."""

    errors: Any
    rates: Any
    curves: Any


def dropout_comparison(train, test, seeds: Iterable[int], widths: Sequence[int], config: TrainConfig, *,
                       p: float = 0.5, granularity: str = "unit", arms: Sequence[str] = ARMS) -> MNComparison:
    """KW-MN: the arms of :func:`kingma_arm` trained with ``config`` per seed (same seed: same init and data order).

    Kingma et al. 2015, Fig. 1. The test split is evaluated after every epoch (``eval_splits``
    of the config plus ``"test"``) for the learning curves.
    """
    name = "dropout_comparison"
    seeds = seed_list(seeds, f"{name}: seeds")
    arms = distinct_choices(arms, ARMS, f"{name}: arms")
    in_features, out_features = int(train.x[0].numel()), int(train.y.max()) + 1
    errors, rates, curves = [], [], []
    for seed in seeds:
        for arm in arms:
            seed_everything(seed)
            model = kingma_arm(arm, in_features, widths, out_features, len(train.x), p=p, granularity=granularity)
            history = fit(model, {"train": train, "test": test}, replace(config, seed=seed, eval_splits=("test",)))
            curves.append(history.to_frame()[["epoch", "split", "error"]].assign(seed=seed, arm=arm))
            errors.append({"seed": seed, "arm": arm, "test_error": 100 * history.last("test")})
            if arm == "variational":
                noise = [m for m in model.modules() if hasattr(m, "alpha_logit")]
                rates += [{"seed": seed, "layer": f"hidden {i + 1}", "p": m.rate} for i, m in enumerate(noise)]
    return MNComparison(pd.DataFrame(errors), pd.DataFrame(rates),
                        pd.concat(curves, ignore_index=True)[["seed", "arm", "epoch", "split", "error"]])


# ----------------------------------------------------------------------------- SV-L300, SV-L5


class KLWeightScheduler:
    """Writes ``β(t)/n_train`` into the ``kl_weight`` buffer of every module that has one (sparse VD warm-up).

    ``β`` is a :class:`~dropoutlab.schedules.KLWarmup` (0 up to ``start``, linear to 1 at ``end``),
    ``t`` counts epochs (``unit="epoch"``: :func:`~dropoutlab.train.fit` calls :meth:`step` after each
    epoch). The state (``t``) is checkpointed through ``state_dict``, so a resumed run continues the ramp.
    """

    unit = "epoch"

    def __init__(self, model: nn.Module, warmup: KLWarmup, n_train: int) -> None:
        if not isinstance(warmup, KLWarmup):
            raise ValueError(f"KLWeightScheduler: warmup must be a KLWarmup, got {type(warmup).__name__}")
        self.n_train = integer(n_train, "KLWeightScheduler: n_train")
        self.warmup = warmup
        self.buffers = [m.kl_weight for m in model.modules() if isinstance(getattr(m, "kl_weight", None), Tensor)]
        if not self.buffers:
            raise ValueError("KLWeightScheduler: the model has no module with a kl_weight buffer")
        self.t = 0
        self._write()

    @property
    def beta(self) -> float:
        return self.warmup(self.t)

    def _write(self) -> None:
        for buffer in self.buffers:
            buffer.fill_(self.beta / self.n_train)

    def step(self) -> None:
        self.t += 1
        self._write()

    def state_dict(self) -> dict[str, int]:
        return {"t": self.t}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.t = int(state["t"])
        self._write()

    def __repr__(self) -> str:
        return f"KLWeightScheduler(warmup={self.warmup!r}, n_train={self.n_train}, unit='epoch')"


def sparse_net(net: str, input_shape: Sequence[int], num_classes: int, *, padding: int = 0) -> nn.Module:
    """``"lenet300"``: :class:`~dropoutlab.models.LeNet300100`; ``"lenet5"``: :class:`~dropoutlab.models.LeNet5Caffe`."""
    choice(net, SPARSE_NETS, "sparse_net: net")
    if net == "lenet300":
        return LeNet300100(int(np.prod(input_shape)), num_classes)
    return LeNet5Caffe(tuple(input_shape), num_classes, padding=padding)


def _layer_labels(model: nn.Module) -> dict[str, str]:
    names = [n for n in sparsity_report(model) if n != "total"]
    convs = [n for n in names if isinstance(model.get_submodule(n), SparseVariationalConv2d)]
    fcs = [n for n in names if n not in convs]
    return {**{n: f"conv{i + 1}" for i, n in enumerate(convs)}, **{n: f"fc{i + 1}" for i, n in enumerate(fcs)}}


def _pruned(model: nn.Module, modules: Iterable[nn.Module], threshold: float, test, device: str) -> tuple[dict, float]:
    """Prune ``modules`` at ``threshold`` (on log α): the model's sparsity report and test error (%, eval mode)."""
    for module in modules:
        module.threshold = threshold
    return sparsity_report(model), 100 * evaluate(model, test, device=device)["error"]


@dataclass(frozen=True)
class SparseStudy:
    """Result of :func:`sparse_vd_study`.

    ``summary``: per seed ``seed, test_error`` (%), ``compression`` (total/kept weights),
    ``sparsity`` (% of all weights pruned) and ``sparsity/<layer>`` (%) at the training threshold.
    ``layers``: ``seed, layer, total, pruned, sparsity``. ``log_alpha``: histogram counts ``seed,
    layer, bin_left, bin_right, count`` over log α ∈ [−8, 8]. ``tradeoff``: ``seed, threshold,
    test_error, compression, sparsity`` as the pruning threshold on log α moves. ``input_survivors``:
    the first seed's count of kept first-layer weights per input pixel (``lenet300``: an array
    shaped like the image; ``lenet5``: None). ``epoch_seconds``: mean wall-clock seconds per epoch.
    """

    summary: Any
    layers: Any
    log_alpha: Any
    tradeoff: Any
    input_survivors: np.ndarray | None
    epoch_seconds: float
    epochs: int


@dataclass(frozen=True)
class SparseConfig:
    """Settings of :func:`sparse_vd_study`, checked once when built: the ``net`` (from
    :data:`SPARSE_NETS`), ``seeds``, ``training``; the KL warm-up (start, end) in epochs, the pruning
    ``threshold`` on log α, the ``thresholds`` of the trade-off curve, the first conv layer's ``padding``
    and the number of log α histogram ``bins``."""

    net: str
    seeds: tuple[int, ...]
    training: TrainConfig
    warmup: tuple[int, int] = (5, 20)
    threshold: float = 3.0
    thresholds: tuple[float, ...] = tuple(np.arange(-2.0, 8.01, 0.5))
    padding: int = 0
    bins: int = 64

    def __post_init__(self) -> None:
        name = "SparseConfig"
        warmup = integers(self.warmup, f"{name}.warmup (epochs)", 0)
        if len(warmup) != 2:
            raise ValueError(f"{name}.warmup must be a pair of epochs (start, end), got {self.warmup!r}")
        thresholds = self.thresholds
        thresholds = list(thresholds) if isinstance(thresholds, (list, tuple, np.ndarray)) else [thresholds]
        if not thresholds:
            raise ValueError(f"{name}.thresholds must be a non-empty list of finite numbers, got {self.thresholds!r}")
        settle(self, net=choice(self.net, SPARSE_NETS, f"{name}.net"),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               training=train_config(self.training, f"{name}.training"), warmup=tuple(warmup),
               threshold=finite(self.threshold, f"{name}.threshold (on log α)"),
               thresholds=tuple(finite(t, f"{name}.thresholds (each)") for t in thresholds),
               padding=integer(self.padding, f"{name}.padding", 0), bins=integer(self.bins, f"{name}.bins"))


def sparse_vd_study(train, test, config: SparseConfig) -> SparseStudy:
    """SV-L300 / SV-L5: sparse variational dropout (Molchanov et al., ICML 2017, Table 1) from scratch.

    Per seed: ``sparse_net(net)`` trained by :func:`~dropoutlab.train.fit` with ``config`` and the KL
    weight ``β/N`` ramped by :class:`KLWeightScheduler` (``KLWarmup(*warmup)`` in epochs; the paper:
    0 before epoch 5, 1 from epoch 20). Weights with ``log α ≥ threshold`` are pruned (zero at eval).
    """
    config = study_config(config, SparseConfig)
    input_shape, num_classes = tuple(train.x.shape[1:]), int(train.y.max()) + 1
    edges = np.linspace(-8.0, 8.0, config.bins + 1)
    summary, layers, hist, tradeoff, seconds = [], [], [], [], []
    survivors = None
    for seed in config.seeds:
        seed_everything(seed)
        model = sparse_net(config.net, input_shape, num_classes, padding=config.padding)
        scheduler = KLWeightScheduler(model, KLWarmup(*config.warmup), len(train.x))
        history = fit(model, {"train": train}, replace(config.training, seed=seed, eval_splits=()), scheduler=scheduler)
        frame = history.to_frame(drop_timing=False)
        seconds += frame.loc[frame["split"] == "train_running", "seconds"].tolist()
        labels = _layer_labels(model)
        modules = {n: model.get_submodule(n) for n in labels}
        report, error = _pruned(model, modules.values(), config.threshold, test, config.training.device)
        summary.append({"seed": seed, "test_error": error, "compression": report["total"]["compression"],
                        "sparsity": 100 * report["total"]["fraction"],
                        **{f"sparsity/{label}": 100 * report[n]["fraction"] for n, label in labels.items()}})
        for n, label in labels.items():
            layers.append({"seed": seed, "layer": label, "total": report[n]["total"], "pruned": report[n]["pruned"],
                           "sparsity": 100 * report[n]["fraction"]})
            counts, _ = np.histogram(modules[n].log_alpha.detach().cpu().numpy().ravel(), bins=edges)
            hist += [{"seed": seed, "layer": label, "bin_left": edges[i], "bin_right": edges[i + 1], "count": int(c)}
                     for i, c in enumerate(counts)]
        if survivors is None and config.net == "lenet300":  # kept at the training threshold
            first = next(iter(modules.values()))
            survivors = first.keep_mask().sum(dim=0).cpu().numpy().reshape(input_shape[1:] if len(input_shape) == 3
                                                                           else input_shape)
        for t in config.thresholds:
            report, error = _pruned(model, modules.values(), t, test, config.training.device)
            tradeoff.append({"seed": seed, "threshold": t, "test_error": error,
                             "compression": report["total"]["compression"],
                             "sparsity": 100 * report["total"]["fraction"]})
    return SparseStudy(pd.DataFrame(summary), pd.DataFrame(layers), pd.DataFrame(hist), pd.DataFrame(tradeoff),
                       survivors, float(np.mean(seconds)) if seconds else math.nan, config.training.epochs)
