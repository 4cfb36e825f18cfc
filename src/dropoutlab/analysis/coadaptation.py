"""Does dropout break co-adaptation? Measurements for notebook ``02_coadaptation``.

Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov, "Dropout: a simple way to prevent
neural networks from overfitting", JMLR 15, 2014, §7.1–7.2 (Figs. 7 and 8): an autoencoder
trained with dropout learns localised features (:func:`filter_grid`) and sparse hidden
activations (:func:`activation_statistics`). Beyond the paper, three direct measurements of
co-adaptation between the hidden units that feed a network's readout layer:

* :func:`mean_abs_correlation`: mean absolute Pearson correlation over pairs of units.
* :func:`ablation_curve` / :func:`degradation_area`: the error as a growing random fraction
  of the units is zeroed at test time (nested "cumulative ablation" as in Morcos, Barrett,
  Rabinowitz, Botvinick, "On the importance of single directions for generalization",
  ICLR 2018), summarised by the mean excess error over the ablation range.
* :func:`dropout_regularizer`: the explicit regulariser of dropout on the top hidden layer
  (Arora, Bartlett, Mianjy, Srebro, "Dropout: Explicit Forms and Capacity Control", ICML 2021,
  PMLR 139; arXiv:2003.03397). With the readout ``f(x) = U·a(x) + b`` and dropout of rate p on
  ``a`` (mask ``B_jj ~ Bernoulli(1−p)/(1−p)``), for every input

      E_B ‖y − U·B·a + b‖² = ‖y − f(x)‖² + λ Σ_j ‖u_j‖² a_j(x)²,   λ = p/(1−p),

  so ``R̂ = λ Σ_j ‖u_j‖² mean_i a_j(x_i)²`` is the expected squared change of the output when
  units are dropped: large when the output relies on units being present together.

:func:`autoencoder_study` and :func:`classifier_study` train settings × seeds and apply these
measurements; the notebook makes one call to each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..checks import choice, integer, positive, probabilities, probability, seed_list
from ..experiments import run_settings
from ..train import loss_and_error_rate, model_device, task_targets, training_modes
from ..variants.base import is_dropout_module
from ..variants.bernoulli import StandardDropout
from .studies import train_config

__all__ = ["AutoencoderStudy", "ClassifierStudy", "ablation_curve", "activation_statistics", "autoencoder_study",
           "classifier_study", "degradation_area", "dropout_regularizer", "filter_grid", "find_readout",
           "mean_abs_correlation", "readout_inputs"]

ABLATION_TASKS = ("classification", "reconstruction")


def _float64(values: Tensor | np.ndarray) -> np.ndarray:
    return torch.as_tensor(values).detach().to("cpu", torch.float64).numpy()


def _as_matrix(h: Tensor | np.ndarray, name: str) -> np.ndarray:
    a = _float64(h)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name}: expected a non-empty (examples, units) matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: activations must be finite")
    return a


@torch.no_grad()
def _in_eval(model: nn.Module, forward: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1000) -> Tensor:
    """``forward`` over ``x`` in batches on the model's device, the model in eval mode (restored afterwards);
    the outputs concatenated on the CPU."""
    device = model_device(model)
    with training_modes(model):
        model.eval()
        return torch.cat([forward(x[s:s + batch_size].to(device)).detach().cpu() for s in range(0, len(x), batch_size)])


# --------------------------------------------------------------------------------------------
# Features and activation statistics (Srivastava et al. 2014, Figs. 7–8)
# --------------------------------------------------------------------------------------------


def filter_grid(weights: Tensor | np.ndarray, image_shape: Sequence[int], n_filters: int | None = None,
                columns: int | None = None, padding: int = 1) -> np.ndarray:
    """Tile the rows of ``weights`` (one filter per hidden unit) into one image.

    ``weights``: ``(units, H·W)``, e.g. an encoder's ``Linear.weight``; ``image_shape``: ``(H, W)``
    or ``(1, H, W)``. The first ``n_filters`` rows are used (all by default), ``columns`` per row
    (default ⌈√n⌉). Each filter is divided by its largest absolute weight, so tiles lie in
    [−1, 1] and compare by shape, not by norm; the ``padding`` pixels between tiles are NaN
    (blank in ``imshow``). Returns a float64 array of ``rows·H + (rows−1)·padding`` by
    ``columns·W + (columns−1)·padding``.
    """
    w = _float64(weights)
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"filter_grid: image_shape must be (H, W) or (1, H, W), got {tuple(image_shape)}")
    if w.ndim != 2 or w.shape[1] != shape[0] * shape[1]:
        raise ValueError(f"filter_grid: weights must be (units, {shape[0] * shape[1]}) for image_shape "
                         f"{shape}, got {w.shape}")
    n = w.shape[0] if n_filters is None else int(n_filters)
    if not 1 <= n <= w.shape[0]:
        raise ValueError(f"filter_grid: n_filters must be in [1, {w.shape[0]}], got {n_filters!r}")
    cols = math.ceil(math.sqrt(n)) if columns is None else integer(columns, "filter_grid: columns")
    padding = integer(padding, "filter_grid: padding", 0)
    rows = math.ceil(n / cols)
    h, wd = shape
    grid = np.full((rows * h + (rows - 1) * padding, cols * wd + (cols - 1) * padding), np.nan)
    for i in range(n):
        scale = np.abs(w[i]).max()
        tile = w[i].reshape(h, wd) / (scale if scale > 0 else 1.0)
        r, c = divmod(i, cols)
        grid[r * (h + padding):r * (h + padding) + h, c * (wd + padding):c * (wd + padding) + wd] = tile
    return grid


def activation_statistics(h: Tensor | np.ndarray, threshold: float = 0.01) -> dict[str, float]:
    """Sparsity of hidden activations ``h`` ``(examples, units)`` (Srivastava et al. 2014, Fig. 8).

    ``mean_activation``: mean over all entries; ``near_zero_fraction``: fraction of entries
    below ``threshold`` (claim SR-F8 uses 0.01); ``zero_fraction``: fraction of entries
    exactly 0 (inactive ReLUs — unlike the first two, unchanged if the layer is rescaled);
    ``dead_fraction``: fraction of units that are 0 on every example.
    """
    a = _as_matrix(h, "activation_statistics(h)")
    positive(threshold, "activation_statistics: threshold")
    return {"mean_activation": float(a.mean()), "near_zero_fraction": float((a < threshold).mean()),
            "zero_fraction": float((a == 0).mean()), "dead_fraction": float((a == 0).all(axis=0).mean())}


# --------------------------------------------------------------------------------------------
# Co-adaptation measures
# --------------------------------------------------------------------------------------------


def mean_abs_correlation(h: Tensor | np.ndarray) -> tuple[float, int]:
    """Mean |Pearson correlation| over all pairs of non-constant units, and how many units that is.

    ``h``: activations ``(examples, units)``. Units that are constant on these examples (dead
    ReLUs) have no correlation and are left out. For independent units the value is of order
    ``1/√examples``; 1 means every unit is an affine copy of every other.
    """
    a = _as_matrix(h, "mean_abs_correlation(h)")
    if a.shape[0] < 3:
        raise ValueError(f"mean_abs_correlation: need at least 3 examples, got {a.shape[0]}")
    centred = a - a.mean(axis=0)
    norms = np.sqrt((centred**2).sum(axis=0))
    active = norms > 1e-12 * max(1.0, float(np.abs(a).max()))
    n_active = int(active.sum())
    if n_active < 2:
        raise ValueError(f"mean_abs_correlation: need at least 2 non-constant units, got {n_active}")
    z = centred[:, active] / norms[active]
    corr = np.clip(z.T @ z, -1.0, 1.0)
    upper = np.triu_indices(n_active, k=1)
    return float(np.abs(corr[upper]).mean()), n_active


def dropout_regularizer(h: Tensor | np.ndarray, readout_weight: Tensor | np.ndarray, p: float,
                        relative: bool = False) -> float:
    """Explicit dropout regulariser ``R̂ = λ Σ_j ‖u_j‖² mean_i h_ij²``, ``λ = p/(1−p)``.

    Arora, Bartlett, Mianjy, Srebro, "Dropout: Explicit Forms and Capacity Control", ICML 2021
    (arXiv:2003.03397): for dropout of rate ``p`` on the input ``h`` ``(examples, units)`` of a
    readout with weight ``U`` ``(outputs, units)``, R̂ is the expected squared change of the
    output, E_B‖U(B·h) − U·h‖², with inverted masks ``B_jj ~ Bernoulli(1−p)/(1−p)``.

    ``relative=True`` divides by ``mean_i ‖U·h_i‖²`` (our normalisation, not the paper's): λ when
    the units' contributions ``u_j·h_ij`` are orthogonal, λ/units when they are identical copies,
    and large when big contributions cancel each other.
    """
    a = _as_matrix(h, "dropout_regularizer(h)")
    u = _float64(readout_weight)
    if u.ndim != 2 or u.shape[1] != a.shape[1]:
        raise ValueError(f"dropout_regularizer: readout_weight must be (outputs, {a.shape[1]}), got {u.shape}")
    p = probability(p, "dropout_regularizer: p", zero=False)
    lam = p / (1.0 - p)
    value = lam * float(((u**2).sum(axis=0) * (a**2).mean(axis=0)).sum())
    if not relative:
        return value
    energy = float(((a @ u.T) ** 2).sum(axis=1).mean())
    return value / energy if energy > 0 else math.inf


def find_readout(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` in ``model.modules()`` order: the layer that reads the hidden units."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"find_readout: {type(model).__name__} has no nn.Linear layer; pass readout=")
    return linears[-1]


@torch.no_grad()
def readout_inputs(model: nn.Module, x: Tensor, readout: nn.Module | None = None,
                   batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """Inputs of the readout layer and the model outputs, in eval mode (restored afterwards).

    Returns CPU tensors ``(examples, units)`` and ``(examples, outputs)``. With an inverted
    dropout before the readout the input is the hidden activation itself; a "standard"
    (non-inverted) dropout has already scaled it by ``1−p``.
    """
    readout = readout if readout is not None else find_readout(model)
    captured: list[Tensor] = []
    handle = readout.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().cpu()))
    try:
        output = _in_eval(model, model, x, batch_size)
    finally:
        handle.remove()
    return torch.cat(captured).flatten(1), output


def _head_after(model: nn.Module, readout: nn.Module) -> nn.Module:
    """``readout`` followed by the modules after it in its parent ``nn.Sequential`` (if any)."""
    for parent in model.modules():
        children = list(parent.children())
        if any(child is readout for child in children):
            if isinstance(parent, nn.Sequential):
                index = next(i for i, child in enumerate(children) if child is readout)
                return nn.Sequential(*children[index:])
            return readout
    raise ValueError("ablation_curve: readout is not a submodule of the model")


@torch.no_grad()
def ablation_curve(model: nn.Module, dataset: Any, fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75),
                   draws: int = 5, seed: int = 0, task: str = "classification", readout: nn.Module | None = None,
                   head: Callable[[Tensor], Tensor] | None = None, batch_size: int = 1000):
    """Loss and error as a random fraction of the readout's input units is zeroed at test time.

    For each of ``draws`` random orders of the units (from ``seed``, so two models with the
    same number of units get the same orders), the first ``round(f·units)`` units are zeroed
    for every ``f`` in ``fractions``: ablations are nested, as in the cumulative ablation of
    Morcos et al. (ICLR 2018). Zeroing is applied to the readout's input in eval mode, and
    ``head`` (default: the readout and whatever follows it in its ``nn.Sequential``) maps the
    ablated input to the output; it must reproduce the model's output unablated, else a
    ``ValueError`` asks for an explicit ``head``.

    Returns a DataFrame with columns ``fraction, units_ablated, draw, loss, error`` (error NaN
    for reconstruction; loss is cross-entropy or MSE).
    """
    choice(task, ABLATION_TASKS, "ablation_curve: task")
    fractions = probabilities(fractions, "ablation_curve: fractions", one=True, what="fractions")
    draws = integer(draws, "ablation_curve: draws")
    readout = readout if readout is not None else find_readout(model)
    head = head if head is not None else _head_after(model, readout)
    hidden, output = readout_inputs(model, dataset.x, readout, batch_size)
    if not torch.allclose(_in_eval(model, head, hidden, batch_size), output, rtol=1e-4, atol=1e-5):
        raise ValueError("ablation_curve: the readout and the modules after it do not reproduce the model "
                         "output; pass head= (a function from the readout's input to the output)")
    target = task_targets(dataset, task)
    units = hidden.shape[1]
    generator = torch.Generator().manual_seed(int(seed))
    orders = [torch.randperm(units, generator=generator) for _ in range(draws)]
    rows = []
    for draw, order in enumerate(orders):
        for fraction in fractions:
            k = int(round(fraction * units))
            mask = torch.ones(units, dtype=hidden.dtype)
            mask[order[:k]] = 0.0
            loss, error = loss_and_error_rate(_in_eval(model, head, hidden * mask, batch_size), target, task)
            rows.append({"fraction": fraction, "units_ablated": k, "draw": draw, "loss": loss, "error": error})
    return pd.DataFrame(rows)


def degradation_area(curve, metric: str = "error", by: Sequence[str] = ()):
    """Mean excess ``metric`` over the ablation range: ∫ (m(f) − m(0)) df / (f_max − f_min).

    ``curve``: an :func:`ablation_curve` frame (optionally with grouping columns ``by``, e.g.
    ``("setting", "seed")``); m(f) is the mean over draws; the integral is the trapezoid rule.
    Returns a float, or a Series indexed by ``by``. Needs fraction 0 and at least two fractions.
    """
    missing = [c for c in ("fraction", metric, *by) if c not in curve.columns]
    if missing:
        raise ValueError(f"degradation_area: curve has no column(s) {missing}; it has {list(curve.columns)}")

    def area(group) -> float:
        mean = group.groupby("fraction")[metric].mean().sort_index()
        if 0.0 not in mean.index or len(mean) < 2:
            raise ValueError(f"degradation_area: need fraction 0 and at least two fractions, got {list(mean.index)}")
        f, excess = mean.index.to_numpy(float), mean.to_numpy(float) - mean.loc[0.0]
        return float(np.sum((excess[1:] + excess[:-1]) / 2 * np.diff(f)) / (f[-1] - f[0]))

    if not by:
        return area(curve)
    keys = list(by)
    groups = curve.groupby(keys[0] if len(keys) == 1 else keys, sort=False)
    series = pd.Series({key: area(group) for key, group in groups}, name=f"{metric}_area")
    if len(keys) > 1:
        series.index = pd.MultiIndex.from_tuples(series.index)
    return series.rename_axis(keys)


# --------------------------------------------------------------------------------------------
# Experiment drivers
# --------------------------------------------------------------------------------------------


def _rate_feeding(model: nn.Module, readout: nn.Module) -> tuple[float, float]:
    """Drop rate of the last dropout module before ``readout`` (0 if none), and its train-time scale."""
    rate, scale = 0.0, 1.0
    for module in model.modules():
        if module is readout:
            break
        if is_dropout_module(module):
            rate = float(getattr(module, "rate", getattr(module, "p", 0.0)))
            scale = 1.0 if isinstance(module, StandardDropout) or rate >= 1.0 else 1.0 / (1.0 - rate)
    return rate, scale


@dataclass
class AutoencoderStudy:
    """Results of :func:`autoencoder_study`.

    ``metrics``: one row per (setting, seed): ``test_mse``, the :func:`activation_statistics` of
    the hidden code on the test set, ``mean_activation_train_scale`` (the mean of what the
    decoder saw in training: ``h/(1−p)`` under inverted dropout), ``mean_abs_correlation``,
    ``active_units`` and ``dropout_regularizer`` (at ``reference_p``). ``unit_means``: mean
    activation of every unit; ``activation_sample``: the activations of one seeded random test
    mini-batch (first seed); ``filters``: :func:`filter_grid` of the first seed's encoder per
    setting; ``history``: the training records.
    """

    metrics: Any
    unit_means: Any
    activation_sample: Any
    filters: dict[str, np.ndarray] = field(default_factory=dict)
    history: Any = None


def autoencoder_study(make_model: Callable[..., nn.Module], settings: dict[str, dict[str, Any]], data: dict[str, Any],
                      config, seeds: Sequence[int], *, threshold: float = 0.01, reference_p: float = 0.5,
                      n_filters: int = 100, sample_size: int = 100) -> AutoencoderStudy:
    """Train ``make_model(**settings[label])`` autoencoders and measure their hidden code on ``data["test"]``.

    The model must expose ``encode(x)`` (the hidden activations before any dropout) and an
    encoder whose first ``nn.Linear`` holds the filters. ``config.task`` must be
    "reconstruction". See :class:`AutoencoderStudy` for what is returned.
    """
    config = train_config(config, "autoencoder_study: config", task="reconstruction")
    seeds = seed_list(seeds, "autoencoder_study: seeds")
    history, models = run_settings(make_model, settings, data, config, seeds, keep_models=True)
    test = data["test"]
    sample = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:sample_size]
    rows, unit_rows, samples, filters = [], [], [], {}
    for (label, seed), model in models.items():
        readout = find_readout(model)
        hidden, output = readout_inputs(model, test.x, readout)
        code = _in_eval(model, model.encode, test.x)
        _, train_scale = _rate_feeding(model, readout)
        mse, _ = loss_and_error_rate(output, task_targets(test, "reconstruction"), "reconstruction")
        corr, active = mean_abs_correlation(hidden)
        stats = activation_statistics(code, threshold)
        rows.append({"setting": label, "seed": seed, "test_mse": mse, **stats,
                     "mean_activation_train_scale": stats["mean_activation"] * train_scale,
                     "mean_abs_correlation": corr, "active_units": active,
                     "dropout_regularizer": dropout_regularizer(hidden, readout.weight, reference_p)})
        unit_rows.append(pd.DataFrame({"setting": label, "seed": seed, "unit": np.arange(code.shape[1]),
                                       "mean_activation": code.double().mean(0).numpy()}))
        if seed == seeds[0]:
            samples.append(pd.DataFrame({"setting": label, "activation": code[sample].flatten().double().numpy()}))
            encoder_linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
            filters[label] = filter_grid(encoder_linear.weight, test.x.shape[1:],
                                         n_filters=min(n_filters, encoder_linear.out_features))
    return AutoencoderStudy(metrics=pd.DataFrame(rows), unit_means=pd.concat(unit_rows, ignore_index=True),
                            activation_sample=pd.concat(samples, ignore_index=True), filters=filters, history=history)


@dataclass
class ClassifierStudy:
    """Results of :func:`classifier_study`.

    ``metrics``: one row per (setting, seed): ``test_error``, ``mean_abs_correlation`` and
    ``active_units`` of the readout's input units, ``dropout_regularizer`` and
    ``relative_regularizer`` (at ``reference_p``), ``error_area`` (:func:`degradation_area`).
    ``ablation``: the :func:`ablation_curve` rows with ``setting`` and ``seed``.
    """

    metrics: Any
    ablation: Any
    history: Any = None


def classifier_study(make_model: Callable[..., nn.Module], settings: dict[str, dict[str, Any]], data: dict[str, Any],
                     config, seeds: Sequence[int], *, fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75),
                     draws: int = 5, reference_p: float = 0.5) -> ClassifierStudy:
    """Train classifiers for settings × seeds and measure co-adaptation of their top hidden layer.

    Measured on ``data["test"]`` in eval mode; the ablation orders are drawn from the run's seed,
    so the settings are ablated in the same unit orders.
    """
    config = train_config(config, "classifier_study: config", task="classification")
    seeds = seed_list(seeds, "classifier_study: seeds")
    history, models = run_settings(make_model, settings, data, config, seeds, keep_models=True)
    test = data["test"]
    rows, curves = [], []
    for (label, seed), model in models.items():
        readout = find_readout(model)
        hidden, output = readout_inputs(model, test.x, readout)
        _, error = loss_and_error_rate(output, test.y, "classification")
        curve = ablation_curve(model, test, fractions, draws, seed=seed, readout=readout)
        corr, active = mean_abs_correlation(hidden)
        rows.append({"setting": label, "seed": seed, "test_error": error, "mean_abs_correlation": corr,
                     "active_units": active,
                     "dropout_regularizer": dropout_regularizer(hidden, readout.weight, reference_p),
                     "relative_regularizer": dropout_regularizer(hidden, readout.weight, reference_p, relative=True),
                     "error_area": degradation_area(curve)})
        curve.insert(0, "setting", label)
        curve.insert(1, "seed", seed)
        curves.append(curve)
    return ClassifierStudy(metrics=pd.DataFrame(rows), ablation=pd.concat(curves, ignore_index=True), history=history)
