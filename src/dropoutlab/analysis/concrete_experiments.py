"""Concrete dropout experiments (Gal, Hron, Kendall, NeurIPS 2017), used by notebook 07.

* CD-RX — :func:`relaxation_study`: Monte Carlo mean of the relaxed keep mask ``1 − z̃`` against
  the nominal ``1 − p`` and against its exact expectation (quadrature), and the exact bias as a
  function of the temperature.
* CD-REG — :func:`regularizer_study`: the pull of the two regulariser terms on ``p`` (autograd
  through :class:`~dropoutlab.variants.concrete.ConcreteDropout` against the closed form), the
  stationary ``p`` of the regulariser alone, and gradient descent on each term alone.
* CD-MN — :func:`concrete_rate_sweep`: a concrete-dropout MLP trained on class-stratified
  subsets of size N with the same number of updates for every N; learned ``p`` per layer over
  training and at the end, and the test error.
* CD-GRID — :func:`fixed_rate_grid` and :func:`grid_vs_concrete`: a grid search over one fixed
  ``p`` on the same subsets and update budget, selected on validation error, against the one
  concrete run; the search's cost in training runs and updates.
* CD-TOY — :class:`HeteroscedasticConcreteMLP`, :func:`fit_heteroscedastic`,
  :func:`toy_uncertainty`, :func:`toy_study`: the official toy ``y = 2x + 8 + N(0, 1)`` with a
  mean and log-variance head, epistemic and aleatoric uncertainty against N;
  :func:`input_dropout_floor`: the uncertainty that dropout on the 1-D input alone implies.
* Measurements for the claims registry (the verdicts are decided by :mod:`dropoutlab.verdicts`):
  :func:`trend_scores` / :func:`layer_trend_scores` (per-seed Spearman ρ of a trend over N or
  depth), :func:`rate_plateau` (have the learned p stopped moving? the precondition of the
  converged-rate claims) and :func:`adam_drift_range` (how far Adam's steady drift moves p in a given
  number of updates).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import integrate, optimize, special, stats
from torch import Tensor, nn

from ..checks import choice, integer, integers, positive, probabilities, probability, seed_list, settle
from ..data import Dataset
from ..inference import predict_mc
from ..models import MLP
from ..paths import dry_run
from ..train import (
    ForecastClock,
    TrainConfig,
    dropout_rates,
    evaluate,
    fit,
    model_device,
    regularization,
    regularized_modules,
    resolve_device,
    seed_everything,
)
from ..variants.concrete import ConcreteDropout, concrete_drop_mask, concrete_regularizer_weights
from .studies import epochs_for, per_seed, train_config, updates_per_epoch

__all__ = ["GridConfig", "HeteroscedasticConcreteMLP", "RatePlateau", "RateSweep", "RateSweepConfig",
           "RegularizerStudy", "RelaxationStudy", "ToyConfig", "adam_drift_range", "concrete_layers", "concrete_mlp",
           "concrete_rate_sweep", "fit_heteroscedastic", "fixed_rate_grid", "grid_vs_concrete", "heteroscedastic_loss",
           "input_dropout_floor", "layer_trend_scores", "rate_plateau", "regularizer_gradients", "regularizer_optimum",
           "regularizer_study", "relaxation_study", "relaxed_keep_mean", "sum_of_squares", "toy_data", "toy_study",
           "toy_uncertainty", "trend_scores"]

EPS = 1e-7  # ε of the relaxation, as in the official notebooks


# ----------------------------------------------------------------------------- CD-RX


def relaxed_keep_mean(p: float, temperature: float, eps: float = EPS) -> float:
    """Exact ``E[1 − z̃]`` of the relaxed mask by adaptive quadrature over ``u ∈ (0, 1)``.

    ``z̃(u) = σ((log(p+ε) − log(1−p+ε) + log(u+ε) − log(1−u+ε))/t)`` switches from ≈ 0 to ≈ 1
    near ``u = 1 − p``, which is passed to the integrator as a break point.
    """
    name = "relaxed_keep_mean"
    p, temperature = probability(p, f"{name}: p", zero=False), positive(temperature, f"{name}: temperature")
    shift = math.log(p + eps) - math.log(1.0 - p + eps)

    def drop(u: float) -> float:
        return special.expit((shift + math.log(u + eps) - math.log(1.0 - u + eps)) / temperature)

    value, _ = integrate.quad(drop, 0.0, 1.0, points=[1.0 - p], limit=200, epsabs=1e-12, epsrel=1e-10)
    return 1.0 - value


@dataclass
class RelaxationStudy:
    """Result of :func:`relaxation_study`.

    ``samples``: one row per seed with ``mean_keep`` = mean(1 − z̃), its standard error ``se``,
    ``deviation_nominal`` = mean_keep − (1 − p) and ``deviation_exact`` = mean_keep − E[1 − z̃].
    ``exact_keep``: E[1 − z̃] by quadrature. ``bias``: exact E[1 − z̃] − (1 − p) per (p, t).
    ``mask_sample``: the first draws of z̃ of the first seed (for a histogram).
    """

    p: float
    temperature: float
    n_samples: int
    exact_keep: float
    samples: Any
    bias: Any
    mask_sample: np.ndarray


def relaxation_study(p: float = 0.1, temperature: float = 0.1, n_samples: int = 1_000_000,
                     seeds: Iterable[int] = (0, 1, 2), bias_ps: Sequence[float] = (0.1, 0.3, 0.5),
                     bias_temperatures: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 2 / 3, 1.0),
                     keep_sample: int = 20_000) -> RelaxationStudy:
    """CD-RX: draw ``n_samples`` relaxed masks per seed (float64) and compare their mean with theory."""
    name = "relaxation_study"
    p, temperature = probability(p, f"{name}: p", zero=False), positive(temperature, f"{name}: temperature")
    n_samples, seeds = integer(n_samples, f"{name}: n_samples", 2), seed_list(seeds, f"{name}: seeds")  # 2: for an s.e.
    exact = relaxed_keep_mean(p, temperature)
    like = torch.empty(0, dtype=torch.float64)
    rows, sample = [], None
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        keep = 1.0 - concrete_drop_mask((n_samples,), p, temperature=temperature, like=like, generator=generator)
        mean, se = float(keep.mean()), float(keep.std()) / math.sqrt(n_samples)
        rows.append({"seed": seed, "mean_keep": mean, "se": se, "deviation_nominal": mean - (1.0 - p),
                     "deviation_exact": mean - exact})
        if sample is None:
            sample = (1.0 - keep[:keep_sample]).numpy().copy()
    bias = pd.DataFrame([{"p": q, "temperature": t, "exact_keep": (exact_qt := relaxed_keep_mean(q, t)),
                          "bias": exact_qt - (1.0 - q)} for q in bias_ps for t in bias_temperatures])
    return RelaxationStudy(p, temperature, n_samples, exact, pd.DataFrame(rows), bias, sample)


# ----------------------------------------------------------------------------- CD-REG


def _probe_module(input_dim: int, sum_sq: float, weight_regularizer: float,
                  dropout_regularizer: float) -> ConcreteDropout:
    """A ConcreteDropout around a bias-free ``Linear(input_dim, 1)`` whose ΣW² equals ``sum_sq``."""
    layer = nn.Linear(input_dim, 1, bias=False).double()
    with torch.no_grad():
        layer.weight.fill_(math.sqrt(sum_sq / input_dim))
    return ConcreteDropout(layer, p=0.5, weight_regularizer=weight_regularizer,
                           dropout_regularizer=dropout_regularizer).double()


def _check_reg_args(name: str, input_dim: int, sum_sq: float, weight_regularizer: float,
                    dropout_regularizer: float) -> None:
    integer(input_dim, f"{name}: input_dim")
    for what, value in (("sum_sq", sum_sq), ("weight_regularizer", weight_regularizer),
                        ("dropout_regularizer", dropout_regularizer)):
        positive(value, f"{name}: {what}", zero=True)


def regularizer_gradients(input_dim: int, sum_sq: float, weight_regularizer: float, dropout_regularizer: float,
                          ps: Sequence[float]):
    """dR/dp of each regulariser term, by autograd through ``ConcreteDropout.regularizer`` and in closed form.

    Weight term ``wr·S/(1−p)``: dR/dp = wr·S/(1−p)² (> 0: descent lowers p).
    Dropout term ``dr·K·(p log p + (1−p) log(1−p))``: dR/dp = dr·K·log(p/(1−p)) (< 0 below 1/2,
    > 0 above: descent moves p to 1/2). Returns a frame with ``p``, ``term``, ``autograd``, ``formula``.
    """
    name = "regularizer_gradients"
    _check_reg_args(name, input_dim, sum_sq, weight_regularizer, dropout_regularizer)
    ps = probabilities(ps, f"{name}: ps", zero=False)
    rows = []
    for term, wr, dr in (("weight", weight_regularizer, 0.0), ("dropout", 0.0, dropout_regularizer)):
        module = _probe_module(input_dim, sum_sq, wr, dr)
        for p in ps:
            module.set_p(p)
            module.p_logit.grad = None
            module.regularizer().backward()
            p_now = float(module.p.detach())
            # dR/dp = (dR/dlogit) / (dp/dlogit), dp/dlogit = p(1 − p)
            autograd = float(module.p_logit.grad) / (p_now * (1.0 - p_now))
            formula = (wr * sum_sq / (1.0 - p_now) ** 2 if term == "weight"
                       else dr * input_dim * math.log(p_now / (1.0 - p_now)))
            rows.append({"p": p, "term": term, "autograd": autograd, "formula": formula})
    return pd.DataFrame(rows)


def sum_of_squares(module: ConcreteDropout) -> float:
    """``S = Σ‖W‖²`` that ``module.regularizer()`` uses (biases included when ``include_bias``)."""
    if not isinstance(module, ConcreteDropout):
        raise ValueError(f"sum_of_squares: expected a ConcreteDropout module, got {type(module).__name__}")
    with torch.no_grad():
        return float(sum(float(w.double().pow(2).sum()) for n, w in module.layer.named_parameters()
                         if module.include_bias or not n.split(".")[-1].startswith("bias")))


def regularizer_optimum(input_dim: int, sum_sq: float, weight_regularizer: float, dropout_regularizer: float) -> float:
    """The p minimising the regulariser alone: root of wr·S/(1−p)² + dr·K·log(p/(1−p)) = 0.

    Equals 1/2 without the weight term; lies in (0, 1/2) when both terms are present.
    """
    name = "regularizer_optimum"
    _check_reg_args(name, input_dim, sum_sq, weight_regularizer, dropout_regularizer)
    if dropout_regularizer == 0:
        raise ValueError(f"{name}: dropout_regularizer must be > 0 (otherwise p → 0, no interior optimum)")
    a, b = weight_regularizer * sum_sq, dropout_regularizer * input_dim

    def slope(logit: float) -> float:
        p = special.expit(logit)
        return a / (1.0 - p) ** 2 + b * logit

    return float(special.expit(optimize.brentq(slope, -60.0, 0.0, xtol=1e-14)))


@dataclass
class RegularizerStudy:
    """Result of :func:`regularizer_study`: ``gradients`` (per p and term), ``descent`` (p per step
    for gradient descent on one term alone, from each start), ``optimum`` of the full regulariser."""

    gradients: Any
    descent: Any
    optimum: float
    input_dim: int
    sum_sq: float
    weight_regularizer: float
    dropout_regularizer: float


def regularizer_study(input_dim: int, sum_sq: float, weight_regularizer: float, dropout_regularizer: float,
                      ps: Sequence[float] = tuple(np.round(np.linspace(0.02, 0.98, 49), 4)),
                      starts: Sequence[float] = (0.1, 0.9), steps: int = 200, lr: float = 0.1) -> RegularizerStudy:
    """CD-REG: the pull of each regulariser term on p and where plain gradient descent takes p.

    ``descent`` runs ``steps`` Adam updates on ``p_logit`` (weights frozen) for each term alone
    (the other factor set to 0) and for both, from each start in ``starts``.
    """
    name = "regularizer_study"
    starts, steps = probabilities(starts, f"{name}: starts", zero=False), integer(steps, f"{name}: steps")
    lr = positive(lr, f"{name}: lr")
    gradients = regularizer_gradients(input_dim, sum_sq, weight_regularizer, dropout_regularizer, ps)
    rows = []
    for term, wr, dr in (("weight", weight_regularizer, 0.0), ("dropout", 0.0, dropout_regularizer),
                         ("both", weight_regularizer, dropout_regularizer)):
        for start in starts:
            module = _probe_module(input_dim, sum_sq, wr, dr)
            module.set_p(start)
            optimizer = torch.optim.Adam([module.p_logit], lr=lr)
            rows.append({"term": term, "start": start, "step": 0, "p": module.rate})
            for step in range(1, steps + 1):
                optimizer.zero_grad()
                module.regularizer().backward()
                optimizer.step()
                rows.append({"term": term, "start": start, "step": step, "p": module.rate})
    optimum = regularizer_optimum(input_dim, sum_sq, weight_regularizer, dropout_regularizer)
    return RegularizerStudy(gradients, pd.DataFrame(rows), optimum, input_dim, sum_sq, weight_regularizer,
                            dropout_regularizer)


# ----------------------------------------------------------------------------- CD-MN, CD-GRID


def concrete_mlp(in_features: int, widths: Sequence[int], out_features: int, n_train: int, *,
                 length_scale: float = 1e-4, tau: float = 1.0, p_init: float = 0.1,
                 temperature: float = 0.1) -> MLP:
    """An MLP with Concrete dropout in front of every Linear layer (input included).

    Regulariser factors ``wr = l²/(τN)``, ``dr = 2/(τN)`` (:func:`concrete_regularizer_weights`).
    """
    wr, dr = concrete_regularizer_weights(length_scale, tau, n_train)
    return MLP(in_features, widths, out_features, dropout="concrete", p_input=p_init, p_hidden=p_init,
               dropout_kwargs=dict(temperature=temperature, weight_regularizer=wr, dropout_regularizer=dr))


def concrete_layers(model: nn.Module) -> dict[str, str]:
    """``{"rate/<module name>": label}`` for the ConcreteDropout modules of ``model``, in order.

    The module in front of the first Linear layer drops input features ("input"); the k-th
    after it drops the units of hidden layer k ("hidden k").
    """
    names = [n for n, m in model.named_modules() if isinstance(m, ConcreteDropout)]
    return {f"rate/{n}": ("input" if i == 0 else f"hidden {i}") for i, n in enumerate(names)}


@dataclass
class RateSweep:
    """Result of :func:`concrete_rate_sweep`.

    ``trajectories``: long format ``N, seed, epoch, step, layer, depth, rate`` from step 0 (the
    initial p) to the last update, thinned to at most ``max_points`` points per run. ``rates``: the final
    ``rate`` per ``N, seed, layer, depth``. ``errors``: ``N, seed, test_error, test_loss`` in eval mode.
    ``updates``: updates per run.
    """

    trajectories: Any
    rates: Any
    errors: Any
    updates: int
    batch_size: int


def _train_on_subset(make_model: Callable[[], nn.Module], train: Dataset, n: int, seed: int, config: TrainConfig,
                     updates: int):
    """Train ``make_model()`` (built after seeding) on the (n, seed) subset for ``updates`` updates; history with
    a step-0 row."""
    subset = train if n == len(train) else train.subset(n, seed)
    run_config = replace(config, seed=seed, epochs=epochs_for(updates, n, config.batch_size), max_steps=updates,
                         eval_splits=())
    seed_everything(seed)
    model = make_model()
    start = {"epoch": 0, "step": 0, "split": "train_running", **dropout_rates(model)}
    frame = fit(model, {"train": subset}, run_config).to_frame()
    return model, pd.concat([pd.DataFrame([start]), frame], ignore_index=True)


@dataclass(frozen=True)
class RateSweepConfig:
    """Settings of :func:`concrete_rate_sweep`, checked once when built: ``training`` (batch size,
    optimiser; epochs follow from ``updates``), training-set ``sizes``, ``seeds``, hidden ``widths``,
    ``updates`` per run; the concrete layers' ``length_scale``, ``tau``, ``p_init`` and
    ``temperature``; at most ``max_points`` points per rate trajectory."""

    training: TrainConfig
    sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    widths: tuple[int, ...]
    updates: int
    length_scale: float = 1e-4
    tau: float = 1.0
    p_init: float = 0.1
    temperature: float = 0.1
    max_points: int = 100

    def __post_init__(self) -> None:
        name = "RateSweepConfig"
        settle(self, training=train_config(self.training, f"{name}.training"),
               sizes=tuple(integers(self.sizes, f"{name}.sizes")), seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               widths=tuple(integers(self.widths, f"{name}.widths")), updates=integer(self.updates, f"{name}.updates"),
               length_scale=positive(self.length_scale, f"{name}.length_scale"), tau=positive(self.tau, f"{name}.tau"),
               p_init=probability(self.p_init, f"{name}.p_init", zero=False),
               temperature=positive(self.temperature, f"{name}.temperature"),
               max_points=integer(self.max_points, f"{name}.max_points", 2))


def concrete_rate_sweep(train: Dataset, test: Dataset, config: RateSweepConfig) -> RateSweep:
    """CD-MN: train a concrete-dropout MLP on class-stratified subsets of ``train`` of every size.

    Every run gets the same number of ``updates`` (so small N is not also trained for less
    time); the subset for (N, seed) is ``stratified_indices(train.y, N, seed)``, nested in N.
    The regulariser factors scale with 1/N. Test error and loss are measured in eval mode.
    """
    training = config.training
    if max(config.sizes) > len(train):
        raise ValueError(f"concrete_rate_sweep: size {max(config.sizes)} exceeds the training split "
                         f"({len(train)} examples)")
    in_features, out_features = int(train.x[0].numel()), int(train.y.max()) + 1
    concrete = dict(length_scale=config.length_scale, tau=config.tau, p_init=config.p_init,
                    temperature=config.temperature)
    trajectories, finals, errors = [], [], []
    for n in config.sizes:
        for seed in config.seeds:
            make = partial(concrete_mlp, in_features, config.widths, out_features, n, **concrete)
            model, frame = _train_on_subset(make, train, n, seed, training, config.updates)
            running, rates = frame[frame["split"] == "train_running"], dropout_rates(model)
            if len(running) > config.max_points:  # thinned evenly, first and last step kept
                keep = np.linspace(0, len(running) - 1, config.max_points).round().astype(int)
                running = running.iloc[np.unique(keep)]
            for depth, (column, label) in enumerate(concrete_layers(model).items()):
                trajectories.append(pd.DataFrame({"N": n, "seed": seed, "epoch": running["epoch"].to_numpy(),
                                                  "step": running["step"].to_numpy(), "layer": label,
                                                  "depth": depth, "rate": running[column].to_numpy()}))
                finals.append({"N": n, "seed": seed, "layer": label, "depth": depth, "rate": rates[column]})
            metrics = evaluate(model, test, device=training.device)
            errors.append({"N": n, "seed": seed, "test_error": metrics["error"], "test_loss": metrics["loss"]})
    return RateSweep(pd.concat(trajectories, ignore_index=True), pd.DataFrame(finals), pd.DataFrame(errors),
                     config.updates, training.batch_size)


@dataclass(frozen=True)
class GridConfig:
    """Settings of :func:`fixed_rate_grid`, checked once when built: ``training``, the subset size
    ``n``, the fixed drop ``rates``, ``seeds``, hidden ``widths`` and ``updates`` per run."""

    training: TrainConfig
    n: int
    rates: tuple[float, ...]
    seeds: tuple[int, ...]
    widths: tuple[int, ...]
    updates: int

    def __post_init__(self) -> None:
        name = "GridConfig"
        settle(self, training=train_config(self.training, f"{name}.training"), n=integer(self.n, f"{name}.n"),
               rates=tuple(probabilities(self.rates, f"{name}.rates")),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               widths=tuple(integers(self.widths, f"{name}.widths")), updates=integer(self.updates, f"{name}.updates"))


def fixed_rate_grid(train: Dataset, val: Dataset, test: Dataset, config: GridConfig):
    """CD-GRID: the same MLP with one fixed inverted-dropout rate ``p`` on every layer, per grid value.

    Same subsets (``stratified_indices(train.y, n, seed)``), seeds and update budget as
    :func:`concrete_rate_sweep`. Returns ``p, seed, val_error, test_error, updates``.
    """
    training = config.training
    if config.n > len(train):
        raise ValueError(f"fixed_rate_grid: size {config.n} exceeds the training split ({len(train)} examples)")
    in_features, out_features = int(train.x[0].numel()), int(train.y.max()) + 1
    rows = []
    for p in config.rates:
        make = partial(MLP, in_features, config.widths, out_features, dropout="inverted", p_input=p, p_hidden=p)
        for seed in config.seeds:
            model, _ = _train_on_subset(make, train, config.n, seed, training, config.updates)
            rows.append({"p": p, "seed": seed,
                         "val_error": evaluate(model, val, device=training.device)["error"],
                         "test_error": evaluate(model, test, device=training.device)["error"],
                         "updates": config.updates})
    return pd.DataFrame(rows)


def grid_vs_concrete(grid, concrete_errors, n: int, concrete_updates: int):
    """Per seed: the grid value chosen on validation error, its test error, and concrete's at ``n``.

    ``grid``: output of :func:`fixed_rate_grid`; ``concrete_errors``: ``RateSweep.errors``.
    Returns ``(per_seed, cost)``: per_seed has ``seed, chosen_p, grid_test_error,
    concrete_test_error, difference`` (concrete − grid, in the error's units); cost has one row
    per method with the number of training ``runs`` and ``updates`` behind one final model.
    """
    concrete = per_seed(concrete_errors, "test_error", N=n)
    rows = []
    for seed, runs in grid.groupby("seed", sort=True):
        if seed not in concrete.index:
            raise ValueError(f"grid_vs_concrete: seed {seed} has grid runs but no concrete run at N={n}")
        best = runs.sort_values(["val_error", "p"], kind="stable").iloc[0]
        rows.append({"seed": int(seed), "chosen_p": float(best["p"]), "grid_test_error": float(best["test_error"]),
                     "concrete_test_error": float(concrete[seed]),
                     "difference": float(concrete[seed] - best["test_error"])})
    n_grid = grid["p"].nunique()
    per_run = int(grid["updates"].iloc[0])
    cost = pd.DataFrame([{"method": "concrete dropout (p learned)", "runs": 1, "updates": concrete_updates},
                         {"method": f"grid search over {n_grid} fixed p", "runs": n_grid, "updates": n_grid * per_run}])
    return pd.DataFrame(rows), cost


# ----------------------------------------------------------------------------- trends and plateaus


def trend_scores(frame, x: str, y: str, seed: str = "seed", direction: str = "decreasing",
                 within: str | None = None):
    """Per-seed evidence that ``y`` falls (or rises) with ``x``: a Series of ``−ρ`` or ``ρ`` indexed by seed.

    ρ is Spearman's rank correlation of ``x`` and ``y`` over one seed's rows; the score is ``−ρ``
    for ``direction="decreasing"`` and ``ρ`` for ``"increasing"``, so a positive score follows
    the claimed direction. A group whose ``y`` is constant scores 0. With ``within`` (e.g. the
    training-set size), ρ is computed per (seed, within) and averaged over ``within`` for each seed.
    The seeds are the independent runs: one score each.
    """
    choice(direction, ("decreasing", "increasing"), "trend_scores: direction")
    missing = [c for c in (x, y, seed, within) if c is not None and c not in frame.columns]
    if missing:
        raise ValueError(f"trend_scores: frame has no column(s) {missing}")
    if frame.empty:
        raise ValueError("trend_scores: frame is empty")
    sign = -1.0 if direction == "decreasing" else 1.0
    keys = [seed] if within is None else [seed, within]
    scores: dict[Any, list[float]] = {}
    for key, group in frame.groupby(keys, sort=True):
        if group[x].nunique() < 2:
            raise ValueError(f"trend_scores: need at least two distinct values of {x!r} per seed")
        rho = stats.spearmanr(group[x], group[y]).statistic if group[y].nunique() > 1 else 0.0
        scores.setdefault(key[0], []).append(sign * float(rho))
    return pd.Series({k: float(np.mean(v)) for k, v in sorted(scores.items())}, name=f"{y} trend in {x}",
                     dtype=float).rename_axis(seed)


def layer_trend_scores(rates, x: str = "N", y: str = "rate", direction: str = "decreasing"):
    """:func:`trend_scores` for every layer of ``RateSweep.rates``: a frame indexed by seed, one column per layer.

    ``.min(axis=1)`` is the per-seed score of the weakest layer ("every layer's p falls with N").
    """
    if "layer" not in rates.columns:
        raise ValueError("layer_trend_scores: rates has no 'layer' column")
    return pd.DataFrame({layer: trend_scores(rows, x, y, direction=direction)
                         for layer, rows in rates.groupby("layer", sort=False)})


def adam_drift_range(p_init: float, lr: float, updates: int) -> tuple[float, float]:
    """The range of p that steady drift at Adam's usual maximal rate reaches from ``p_init`` in ``updates`` updates.

    Adam's step is ``lr·m̂/(√v̂ + ε)``; while the gradient on ``p_logit`` keeps its sign and size,
    ``m̂/√v̂ ≈ ±1`` and ``p_logit`` moves by ``lr`` per update, whatever the gradient's magnitude.
    After ``updates`` such updates ``p = σ(p_logit)`` is ``σ(logit(p_init) ∓ lr·updates)``. (A
    sudden jump of the gradient can give a single larger step, up to ≈ 3·lr with the default βs,
    so this is the range of steady drift, not a hard bound.) A learned p near either end was
    still moving at the optimiser's rate, so it tells the direction of the pull, not its optimum.
    Returns ``(low, high)``.
    """
    name = "adam_drift_range"
    p = probability(p_init, f"{name}: p_init", zero=False)
    lr, updates = positive(lr, f"{name}: lr"), integer(updates, f"{name}: updates", 0)
    logit, reach = float(special.logit(p)), lr * updates
    return float(special.expit(logit - reach)), float(special.expit(logit + reach))


@dataclass
class RatePlateau:
    """Result of :func:`rate_plateau`.

    ``changes``: one row per run and layer (``N, seed, layer``) with ``p_start`` (p at the start
    of the window, interpolated between recorded steps), ``p_end`` (the final p),
    ``relative_change`` = |p_end − p_start| / p_start, ``reach`` = lr × (updates in the window),
    how far steady drift at Adam's rate could move ``p_logit`` in the window, and
    ``drift_fraction`` = |logit p_end − logit p_start| / reach (≈ 1: still moving at Adam's full
    rate; ≈ 0: settled). ``largest``: the row with the largest relative change. ``plateaued``:
    every relative change is below ``tolerance`` and every window had ``reach ≥ min_reach``.
    """

    changes: Any
    largest: Any
    window: float
    tolerance: float
    min_reach: float
    plateaued: bool


def rate_plateau(trajectories, tolerance: float, window: float = 0.2, *, lr: float, min_reach: float = 1.0,
                 keys: Sequence[str] = ("N", "seed", "layer")) -> RatePlateau:
    """Have the learned rates stopped moving? The relative change of every p over the last ``window`` of updates.

    ``trajectories``: ``RateSweep.trajectories`` (columns ``step``, ``rate`` and ``keys``). For
    each run and layer spanning steps T0 … T, p at step T0 + (1 − window)·(T − T0) is interpolated
    linearly between the recorded steps. The rates have plateaued when every relative change is
    below ``tolerance`` (a fixed fraction such as 0.05: p moved by less than 5 % of its value over
    the last fifth of training) **and** every window was long enough to show movement: Adam
    (learning rate ``lr`` on ``p_logit``) moves ``p_logit`` by about ``lr`` per update while it is
    driven, so a window of w updates can reveal a drift only if ``lr·w ≥ min_reach`` (default 1
    logit unit, i.e. p changing by a factor of about e). Without that guard a short run looks
    "flat" simply because p has had no time to move (60 updates change p by ~1 % per fifth).
    """
    name = "rate_plateau"
    window = probability(window, f"{name}: window", zero=False, what="a fraction")
    tolerance, lr = positive(tolerance, f"{name}: tolerance"), positive(lr, f"{name}: lr")
    min_reach = positive(min_reach, f"{name}: min_reach")
    keys = list(keys)
    missing = [c for c in (*keys, "step", "rate") if c not in trajectories.columns]
    if missing:
        raise ValueError(f"{name}: trajectories has no column(s) {missing}")
    if trajectories.empty:
        raise ValueError(f"{name}: trajectories is empty")
    rows = []
    for key, run in trajectories.groupby(keys, sort=False):
        run = run.sort_values("step")
        steps, rates = run["step"].to_numpy(dtype=float), run["rate"].to_numpy(dtype=float)
        if len(steps) < 2 or steps[-1] <= steps[0]:
            raise ValueError(f"{name}: run {dict(zip(keys, key))} has fewer than two recorded steps")
        span = window * (steps[-1] - steps[0])
        start = float(np.interp(steps[-1] - span, steps, rates))
        end = float(rates[-1])
        reach = lr * span
        rows.append({**dict(zip(keys, key)), "p_start": start, "p_end": end,
                     "relative_change": abs(end - start) / start, "reach": reach,
                     "drift_fraction": abs(float(special.logit(end) - special.logit(start))) / reach})
    changes = pd.DataFrame(rows)
    largest = changes.loc[changes["relative_change"].idxmax()]
    plateaued = bool((changes["relative_change"] < tolerance).all() and (changes["reach"] >= min_reach).all())
    return RatePlateau(changes, largest, window, tolerance, min_reach, plateaued)


# ----------------------------------------------------------------------------- CD-TOY


class HeteroscedasticConcreteMLP(nn.Module):
    """``in → width × depth (ReLU) → (mean, log σ²)`` with Concrete dropout in front of every Linear.

    The official toy model (ConcreteDropout notebooks): three hidden layers of 1024 units, one
    ConcreteDropout per Linear layer including the 1-D input, and two separate linear heads
    (mean and log-variance), each behind its own ConcreteDropout. Output ``(B, 2·out)``:
    ``[:, :out]`` the mean, ``[:, out:]`` the log-variance (one tensor, so
    :func:`~dropoutlab.inference.predict_mc` can tile it).
    """

    def __init__(self, in_features: int = 1, width: int = 1024, depth: int = 3, out_features: int = 1, *,
                 weight_regularizer: float = 1e-6, dropout_regularizer: float = 1e-5, p_init: float = 0.1,
                 temperature: float = 0.1) -> None:
        super().__init__()
        name = "HeteroscedasticConcreteMLP"
        for what, value in (("in_features", in_features), ("width", width), ("depth", depth),
                            ("out_features", out_features)):
            integer(value, f"{name}: {what}")
        kwargs = dict(p=p_init, temperature=temperature, weight_regularizer=weight_regularizer,
                      dropout_regularizer=dropout_regularizer)
        layers: list[nn.Module] = []
        fan_in = in_features
        for _ in range(depth):
            layers += [ConcreteDropout(nn.Linear(fan_in, width), **kwargs), nn.ReLU()]
            fan_in = width
        self.body = nn.Sequential(*layers)
        self.mean_head = ConcreteDropout(nn.Linear(width, out_features), **kwargs)
        self.log_var_head = ConcreteDropout(nn.Linear(width, out_features), **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)
        return torch.cat([self.mean_head(h), self.log_var_head(h)], dim=-1)

    def rates(self) -> dict[str, float]:
        """Learned p per ConcreteDropout: ``input``, ``hidden 1``…, ``mean head``, ``log-var head``."""
        body = [m for m in self.body if isinstance(m, ConcreteDropout)]
        labels = ["input"] + [f"hidden {i}" for i in range(1, len(body))]
        return {**{label: m.rate for label, m in zip(labels, body)},
                "mean head": self.mean_head.rate, "log-var head": self.log_var_head.rate}


def heteroscedastic_loss(y: Tensor, output: Tensor) -> Tensor:
    """Mean over the batch of ``Σ_d exp(−log σ²)(y − μ)² + log σ²`` (twice the Gaussian NLL minus
    a constant), the loss of the official notebooks; ``output = [μ, log σ²]`` along the last dim."""
    d = output.shape[-1] // 2
    if output.shape[-1] != 2 * d or y.shape[-1] != d:
        raise ValueError(f"heteroscedastic_loss: output must be (B, 2·D) for targets (B, D); "
                         f"got output {tuple(output.shape)} and targets {tuple(y.shape)}")
    mean, log_var = output[..., :d], output[..., d:]
    return (torch.exp(-log_var) * (y - mean) ** 2 + log_var).sum(-1).mean()


def toy_data(n: int, seed: int, slope: float = 2.0, intercept: float = 8.0,
             noise_sd: float = 1.0) -> tuple[Tensor, Tensor]:
    """``x ~ N(0, 1)``, ``y = slope·x + intercept + noise_sd·N(0, 1)`` as float32 ``(n, 1)`` tensors."""
    n, noise_sd = integer(n, "toy_data: n"), positive(noise_sd, "toy_data: noise_sd")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=generator, dtype=torch.float64)
    y = slope * x + intercept + noise_sd * torch.randn(n, 1, generator=generator, dtype=torch.float64)
    return x.float(), y.float()


def fit_heteroscedastic(model: nn.Module, x: Tensor, y: Tensor, epochs: int, batch_size: int = 20,
                        lr: float = 1e-3, seed: int = 0, device: str = "auto") -> list[dict[str, float]]:
    """Adam on :func:`heteroscedastic_loss` plus every module's ``regularizer()``, shuffled minibatches.

    (``fit`` only knows MSE for regression.) Returns one record per epoch: ``epoch``, ``loss``
    (running mean of the data term), ``rate/<label>`` when the model has :meth:`rates`. In a dry run
    (:func:`dropoutlab.paths.dry_run`) it stops after the dry run's ``steps`` updates.
    """
    name = "fit_heteroscedastic"
    epochs = integer(epochs, f"{name}: epochs")
    batch_size = integer(batch_size, f"{name}: batch_size")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: x and y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    device = resolve_device(device)
    seed_everything(seed)
    model.to(device).train()
    x, y = x.to(device), y.to(device)
    regularized = regularized_modules(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order_generator = torch.Generator().manual_seed(seed)
    caps = dry_run()
    step, max_steps = 0, None if caps is None else caps.steps
    clock = ForecastClock(name, type(model).__name__, seed)
    planned = epochs * updates_per_epoch(x.shape[0], batch_size)
    if clock.active:  # a forecast times the first updates only
        max_steps = clock.cap(planned)
    records = []
    for epoch in range(1, epochs + 1):
        order = torch.randperm(x.shape[0], generator=order_generator).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, x.shape[0], batch_size):
            if step == max_steps:
                break
            step += 1
            idx = order[start:start + batch_size]
            data_term = heteroscedastic_loss(y[idx], model(x[idx]))
            reg = regularization(model, regularized)
            loss = data_term if reg is None else data_term + reg
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name}: non-finite loss at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clock.tick()
            total += data_term.detach() * len(idx)
        record = {"epoch": epoch, "loss": float(total) / x.shape[0]}
        if callable(getattr(model, "rates", None)):
            record.update({f"rate/{k}": v for k, v in model.rates().items()})
        records.append(record)
        if step == max_steps:
            break
    clock.finish(planned)
    return records


def toy_uncertainty(model: nn.Module, x: Tensor, y: Tensor, samples: int = 20) -> dict[str, float]:
    """MC-dropout uncertainty of a heteroscedastic model on ``(x, y)`` (as in the official notebook).

    With ``T = samples`` stochastic passes giving means μ_t and log-variances s_t:
    epistemic variance = mean over points of Var_t μ_t; aleatoric variance = mean over points of
    exp(mean_t s_t). Returns their square roots, the RMSE of mean_t μ_t and the average
    predictive log-likelihood log (1/T) Σ_t N(y | μ_t, e^{s_t}).
    """
    samples = integer(samples, "toy_uncertainty: samples", 2)
    out = predict_mc(model, x.to(model_device(model)), samples).double().cpu()
    d = out.shape[-1] // 2
    mean, log_var = out[..., :d], out[..., d:]
    target = y.double()
    epistemic = mean.var(0, correction=0).mean()
    aleatoric = torch.exp(log_var.mean(0)).mean()
    rmse = torch.sqrt(((mean.mean(0) - target) ** 2).mean())
    log_lik = -0.5 * (math.log(2 * math.pi) + log_var + torch.exp(-log_var) * (target - mean) ** 2)
    test_ll = (torch.logsumexp(log_lik.sum(-1), dim=0) - math.log(samples)).mean()
    return {"epistemic_sd": float(epistemic.sqrt()), "aleatoric_sd": float(aleatoric.sqrt()),
            "rmse": float(rmse), "test_ll": float(test_ll)}


def input_dropout_floor(p_input: float, slope: float = 2.0, noise_sd: float = 1.0,
                        x_second_moment: float = 1.0) -> tuple[float, float]:
    """Uncertainty that dropout on the 1-D input alone puts into the toy model, given its rate.

    If the net computes ``slope·x̃ + intercept`` from the dropped input ``x̃ = x·m/(1−p)``,
    ``m ~ Bernoulli(1−p)``, then Var_m[μ | x] = slope²·x²·p/(1−p). Averaged over ``x`` with
    E[x²] = ``x_second_moment``: epistemic sd = slope·√(E[x²]·p/(1−p)). A heteroscedastic head
    fitted under that training noise learns σ²(x) = noise_sd² + slope²·x²·p/(1−p), so the
    aleatoric sd of :func:`toy_uncertainty` is ≈ √(noise_sd² + slope²·E[x²]·p/(1−p)) (a floor:
    dropout in the hidden layers adds to both). Returns ``(epistemic_sd, aleatoric_sd)``.
    """
    p = probability(p_input, "input_dropout_floor: p_input")
    extra = slope**2 * x_second_moment * p / (1.0 - p)
    return math.sqrt(extra), math.sqrt(noise_sd**2 + extra)


@dataclass(frozen=True)
class ToyConfig:
    """Settings of :func:`toy_study`, checked once when built: training-set ``sizes`` with one
    ``epochs`` value each, ``seeds``; the model's ``width`` and ``depth``; ``n_val`` held-out points,
    ``samples`` MC passes; ``batch_size``, ``lr``; ``length_scale`` and ``tau`` of the regulariser
    weights; the data's ``noise_sd``."""

    sizes: tuple[int, ...]
    epochs: tuple[int, ...]
    seeds: tuple[int, ...]
    width: int = 1024
    depth: int = 3
    n_val: int = 1000
    samples: int = 20
    batch_size: int = 20
    lr: float = 1e-3
    length_scale: float = 1e-4
    tau: float = 1.0
    noise_sd: float = 1.0
    device: str = "auto"

    def __post_init__(self) -> None:
        name = "ToyConfig"
        sizes, epochs = integers(self.sizes, f"{name}.sizes"), integers(self.epochs, f"{name}.epochs")
        if len(epochs) != len(sizes):
            raise ValueError(f"{name}.epochs must give one value per size ({len(sizes)}), got {len(epochs)}")
        settle(self, sizes=tuple(sizes), epochs=tuple(epochs), seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               width=integer(self.width, f"{name}.width"), depth=integer(self.depth, f"{name}.depth"),
               n_val=integer(self.n_val, f"{name}.n_val"), samples=integer(self.samples, f"{name}.samples"),
               batch_size=integer(self.batch_size, f"{name}.batch_size"), lr=positive(self.lr, f"{name}.lr"),
               length_scale=positive(self.length_scale, f"{name}.length_scale"), tau=positive(self.tau, f"{name}.tau"),
               noise_sd=positive(self.noise_sd, f"{name}.noise_sd"))


def toy_study(config: ToyConfig):
    """CD-TOY: fit the heteroscedastic concrete model for every (N, epochs) pair and seed.

    Data: :func:`toy_data` with ``N + n_val`` points per (N, seed), the first N for training;
    ``wr = l²/(τN)``, ``dr = 2/(τN)`` as in the official notebook. Returns one row per (N, seed)
    with the :func:`toy_uncertainty` values, ``epochs``, ``updates`` and ``p/<layer>``.
    """
    rows = []
    for n, n_epochs in zip(config.sizes, config.epochs):
        for seed in config.seeds:
            x, y = toy_data(n + config.n_val, seed * 1_000_003 + n, noise_sd=config.noise_sd)
            wr, dr = concrete_regularizer_weights(config.length_scale, config.tau, n)
            seed_everything(seed)
            model = HeteroscedasticConcreteMLP(x.shape[1], config.width, config.depth, y.shape[1],
                                               weight_regularizer=wr, dropout_regularizer=dr)
            fit_heteroscedastic(model, x[:n], y[:n], n_epochs, config.batch_size, config.lr, seed, config.device)
            seed_everything(seed)
            result = toy_uncertainty(model, x[n:], y[n:], config.samples)
            rows.append({"N": n, "seed": seed, "epochs": n_epochs,
                         "updates": n_epochs * updates_per_epoch(n, config.batch_size), **result,
                         **{f"p/{k}": v for k, v in model.rates().items()}})
    return pd.DataFrame(rows)
