"""Is weight scaling an ensemble average? Measurements for the notebook ``03_ensemble_averaging``.

Hinton et al. (arXiv:1207.0580, 2012, p. 2): for one hidden layer and a softmax output, the
weight-scaled "mean network" (eval mode of inverted dropout) predicts exactly the normalised
geometric mean (GM) of the 2^n thinned networks' predictions p_m:

    log GM(c) = E_m[log p_m(c)] − log Σ_c' exp E_m[log p_m(c')],

because the logits are linear in the mask and E_m[m/(1−p)] = 1. The log-normaliser is ≤ 0
(Hölder's inequality), so the mean network gives the correct class y a log-probability at least
E_m[log p_m(y)], the mean over the thinned networks. With two hidden layers the identity is only
approximate; the arithmetic mean (AM) Σ_m P(m)·p_m is the ensemble MC dropout estimates.

* :func:`ensemble_distances`, :func:`exact_average_study`: exact averages over every mask of a
  small MLP (:func:`dropoutlab.inference.enumerate_subnetworks`), KL divergence and accuracy of
  weight scaling against the GM and the AM.
* :func:`mc_error_curve`, :func:`mc_averaging_study`, :func:`mc_per_net`,
  :func:`summarize_mc_curve`, :func:`first_k_reaching`: Monte-Carlo model averaging with k
  samples against weight scaling (Srivastava et al., JMLR 15, 2014, §7.5, Fig. 11). The
  replicate is the trained net: Monte-Carlo repeats are averaged within each net first.
* :func:`noise_moments`: sample mean and variance of a variant's multiplicative noise
  (Gaussian dropout, Srivastava et al. 2014, §10).
* :func:`dropout_ridge_objective`, :func:`dropout_ridge_monte_carlo`,
  :func:`dropout_ridge_solution`, :func:`masked_sgd`, :func:`dropout_ridge_study`: input
  dropout on linear regression is ridge regression (Srivastava et al. 2014, §9.1).
* :func:`max_deviation`: the largest deviation of several Monte-Carlo estimates from their exact
  values, with a tolerance from their standard errors (the measurement of an implementation check).

Nothing here decides whether a claim is reproduced: :mod:`dropoutlab.verdicts` does, from the
rules in ``claims.yaml``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn

from ..checks import integer, integers, positive, probabilities, probability, seed_list
from ..inference import MAX_ENUMERATED_UNITS, enumerate_subnetworks, predict_mc, predict_weight_scaling
from ..models import MLP
from ..train import TrainConfig, fit, model_device, seed_everything
from ..variants import drop_to_keep, make_dropout
from ..variants.base import is_dropout_module

__all__ = ["RidgeStudy", "dropout_ridge_monte_carlo", "dropout_ridge_objective", "dropout_ridge_solution",
           "dropout_ridge_study", "ensemble_distances", "exact_average_study", "first_k_reaching", "hidden_widths",
           "masked_sgd", "max_deviation", "mc_averaging_study", "mc_error_curve", "mc_per_net", "noise_moments",
           "split_at_first_dropout", "summarize_mc_curve"]

#: Rows (masks × examples) per forward pass of the exact average.
CHUNK_ROWS = 2**17


def _child_seed(*keys: int) -> int:
    """A seed for one (experiment, repeat, ...) cell, independent of the others."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators inside the block; restore their state afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# ----------------------------------------------------------------------------- exact averages


def split_at_first_dropout(model: nn.Module) -> tuple[nn.Sequential, nn.Sequential]:
    """``(trunk, head)`` of a sequential model, the head starting at its first dropout layer.

    The trunk is deterministic, so an exact average over masks needs it only once per input.
    The two parts share the model's modules (no copy).
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"split_at_first_dropout: model must be an nn.Sequential (such as MLP), "
                         f"got {type(model).__name__}")
    layers = list(model)
    for index, layer in enumerate(layers):
        if is_dropout_module(layer):
            return nn.Sequential(*layers[:index]), nn.Sequential(*layers[index:])
    raise ValueError("split_at_first_dropout: the model has no dropout layer")


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(P‖Q) = Σ_c P(c)(log P(c) − log Q(c)) per row, in nats."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def ensemble_distances(model: nn.Module, x: Tensor, y: Tensor, *, chunk_rows: int = CHUNK_ROWS) -> dict[str, float]:
    """How far weight scaling (WS) is from the exact GM and AM of all thinned networks.

    ``model``: a sequential MLP with inverted dropout on its hidden layers only (the input is
    not dropped, so the number of units stays small); it is copied to float64, and the part
    before its first dropout layer runs once. The averages over every mask come from
    :func:`dropoutlab.inference.enumerate_subnetworks` (at most ``MAX_ENUMERATED_UNITS`` units),
    ``chunk_rows`` rows (masks × examples) per forward pass. ``x``, ``y``: evaluation examples
    and labels. Returns, averaged over the examples (nats, error rates):

    * ``max_abs_ws_gm``: max |WS − GM| over examples and classes (0 up to rounding for one
      hidden layer);
    * ``kl_gm_ws`` = KL(GM‖WS), ``kl_am_ws`` = KL(AM‖WS);
    * ``error_ws``, ``error_gm``, ``error_am`` and ``nll_ws``, ``nll_gm``, ``nll_am``;
    * ``ll_gap_mean``, ``ll_gap_min``, ``ll_gap_positive``: the gap
      log WS(y) − E_m[log p_m(y)] (Hinton's second statement: ≥ 0 for one hidden layer),
      its mean, minimum and the fraction of examples where it is > 0.
    """
    if not isinstance(y, Tensor) or y.dim() != 1 or len(y) != len(x):
        raise ValueError("ensemble_distances: y must be a 1-d label tensor with one label per example of x")
    integer(chunk_rows, "ensemble_distances: chunk_rows")
    model64 = copy.deepcopy(model).double()
    trunk, head = split_at_first_dropout(model64)
    device = model_device(model64)
    x64, y = x.to(device=device, dtype=torch.float64), y.to(device)
    log_ws = torch.log_softmax(predict_weight_scaling(model64, x64), dim=-1)
    features = predict_weight_scaling(trunk, x64).flatten(1)
    average = enumerate_subnetworks(head, features, chunk=max(1, chunk_rows // len(features)))
    log_gm = torch.log_softmax(average.expected_log_prob, dim=-1)
    log_am = average.arithmetic_mean.clamp_min(torch.finfo(torch.float64).tiny).log()
    rows = torch.arange(len(y), device=device)
    gap = log_ws[rows, y] - average.expected_log_prob[rows, y]
    result = {"n_units": average.n_units, "max_abs_ws_gm": float((log_ws.exp() - log_gm.exp()).abs().max()),
              "kl_gm_ws": float(_kl(log_gm, log_ws).mean()), "kl_am_ws": float(_kl(log_am, log_ws).mean())}
    for name, log_prob in (("ws", log_ws), ("gm", log_gm), ("am", log_am)):
        result[f"error_{name}"] = float((log_prob.argmax(-1) != y).double().mean())
        result[f"nll_{name}"] = float(-log_prob[rows, y].mean())
    result.update(ll_gap_mean=float(gap.mean()), ll_gap_min=float(gap.min()),
                  ll_gap_positive=float((gap > 0).double().mean()))
    return result


def hidden_widths(n_units: int, depth: int) -> list[int]:
    """Split ``n_units`` hidden units over ``depth`` layers as evenly as possible (wider first)."""
    depth = integer(depth, "hidden_widths: depth")
    base, extra = divmod(integer(n_units, "hidden_widths: n_units (at least one per layer)", depth), depth)
    return [base + (i < extra) for i in range(depth)]


def exact_average_study(data: Mapping[str, Any], evaluation: Any, n_units: Sequence[int], depths: Sequence[int],
                        seeds: Sequence[int], config: TrainConfig, *, p_hidden: float = 0.5,
                        activation: str = "relu", chunk_rows: int = CHUNK_ROWS):
    """Train small dropout MLPs and compare weight scaling with the exact averages of their sub-networks.

    For every depth (hidden layers), total number of hidden units (split by
    :func:`hidden_widths`) and seed: train ``MLP(in, widths, classes, p_hidden=p_hidden)``
    (no input dropout) on ``data`` with ``config`` (its seed replaced), then measure
    :func:`ensemble_distances` on ``evaluation`` (a dataset with ``x``, ``y``).
    Returns a tidy DataFrame: ``depth, n_units, widths, seed`` and the distances.
    """
    n_units = integers(n_units, "exact_average_study: n_units")
    depths = integers(depths, "exact_average_study: depths")
    seeds = seed_list(seeds, "exact_average_study: seeds")
    too_large = [n for n in n_units if n > MAX_ENUMERATED_UNITS]
    if too_large:
        raise ValueError(f"exact_average_study: n_units must be <= {MAX_ENUMERATED_UNITS}, got {too_large}")
    p_hidden = probability(p_hidden, "exact_average_study: p_hidden", zero=False)  # p = 0: nothing to average
    train = data["train"]
    in_features, num_classes = train.x[0].numel(), train.num_classes or int(train.y.max()) + 1
    rows = []
    for depth in depths:
        for units in n_units:
            widths = hidden_widths(units, depth)
            for seed in seeds:
                seed_everything(seed)
                model = MLP(in_features, widths, num_classes, activation=activation, p_input=0.0, p_hidden=p_hidden)
                fit(model, dict(data), replace(config, seed=seed))
                distances = ensemble_distances(model, evaluation.x, evaluation.y, chunk_rows=chunk_rows)
                rows.append({"depth": depth, "n_units": units, "widths": "-".join(map(str, widths)),
                             "seed": seed, **distances})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- Monte-Carlo averaging


def mc_error_curve(model: nn.Module, x: Tensor, y: Tensor, ks: Sequence[int], repeats: int, seed: int = 0):
    """Test error of MC model averaging with k samples, against weight scaling.

    For each repeat, ``max(ks)`` stochastic passes are drawn with
    :func:`~dropoutlab.inference.predict_mc` (seeded by ``seed`` and the repeat); the
    prediction with k samples is the argmax of the mean softmax of the first k passes
    (nested prefixes, as one would stop sampling early). Returns a DataFrame with columns
    ``repeat, k, error_mc, error_ws``, errors as fractions.
    """
    ks = sorted(set(integers(ks, "mc_error_curve: ks")))
    integer(repeats, "mc_error_curve: repeats")
    if not isinstance(y, Tensor) or y.dim() != 1 or len(y) != len(x):
        raise ValueError("mc_error_curve: y must be a 1-d label tensor with one label per example of x")
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    error_ws = float((predict_weight_scaling(model, x).argmax(-1) != y).double().mean())
    rows = []
    for repeat in range(repeats):
        with _seeded(_child_seed(seed, repeat), device):
            probs = torch.softmax(predict_mc(model, x, max(ks)), dim=-1)  # (T, B, C)
        running = probs.double().cumsum(0)
        for k in ks:
            error = float((running[k - 1].argmax(-1) != y).double().mean())
            rows.append({"repeat": repeat, "k": k, "error_mc": error, "error_ws": error_ws})
    return pd.DataFrame(rows)


def mc_averaging_study(models: Mapping[Any, nn.Module], dataset: Any, ks: Sequence[int], repeats: int,
                       seed: int = 0):
    """:func:`mc_error_curve` for several trained models; adds a ``model`` column (the mapping's keys).

    Model i's repeats are seeded from (``seed``, i), so each model gets its own masks.
    """
    if not models:
        raise ValueError("mc_averaging_study: models must be a non-empty mapping {key: model}")
    frames = []
    for position, (key, model) in enumerate(models.items()):
        frame = mc_error_curve(model, dataset.x, dataset.y, ks, repeats, seed=_child_seed(seed, position))
        frame.insert(0, "model", key)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def mc_per_net(curve):
    """Per trained net and k: ``error_mc`` averaged over the Monte-Carlo repeats, ``error_ws`` and their difference.

    ``curve``: the output of :func:`mc_averaging_study` (columns ``model, repeat, k, error_mc,
    error_ws``). The independent unit is the net (one training run); its repeats only reduce the
    Monte-Carlo noise of its own estimate. Returns a DataFrame ``model, k, error_mc, error_ws,
    difference`` (``error_mc − error_ws``), one row per (net, k), nets in their order in ``curve``.
    """
    missing = {"model", "k", "error_mc", "error_ws"} - set(curve.columns)
    if missing:
        raise ValueError(f"mc_per_net: curve lacks the column(s) {sorted(missing)} (use mc_averaging_study)")
    frame = curve.groupby(["model", "k"], sort=False)[["error_mc", "error_ws"]].mean().reset_index()
    order = {key: i for i, key in enumerate(dict.fromkeys(curve["model"]))}
    frame = frame.sort_values(["model", "k"], key=lambda c: c.map(order) if c.name == "model" else c)
    frame["difference"] = frame["error_mc"] - frame["error_ws"]
    return frame.reset_index(drop=True)


def summarize_mc_curve(curve):
    """Per k: mean and standard error over the nets of ``error_mc`` and of ``error_mc − error_ws``.

    The repeats of each net are averaged first (:func:`mc_per_net`), so ``n`` is the number of
    nets and the standard errors describe the spread between independently trained nets (NaN for
    one net). The difference is paired: the same net and the same examples.
    """
    per_net = mc_per_net(curve)
    grouped = per_net.groupby("k")
    table = grouped.agg(error_mc=("error_mc", "mean"), error_ws=("error_ws", "mean"),
                        difference=("difference", "mean"), n=("difference", "size"))
    table["error_mc_se"] = grouped["error_mc"].std(ddof=1) / np.sqrt(table["n"])
    table["difference_se"] = grouped["difference"].std(ddof=1) / np.sqrt(table["n"])
    return table.reset_index()[["k", "n", "error_mc", "error_mc_se", "error_ws", "difference", "difference_se"]]


def first_k_reaching(table, n_se: float = 2.0) -> int | None:
    """Smallest k whose MC error is no longer above weight scaling by more than ``n_se`` standard errors.

    A description of the curve of :func:`summarize_mc_curve` (``None`` if no k gets there), not a test.
    """
    positive(n_se, "first_k_reaching: n_se", zero=True)
    reached = table[table["difference"] <= n_se * table["difference_se"].fillna(0.0)]
    return int(reached["k"].min()) if len(reached) else None


# ----------------------------------------------------------------------------- noise moments


def noise_moments(variant: str, p: float, n_samples: int = 1_000_000, seed: int = 0):
    """Sample mean and variance of a dropout variant's multiplicative noise r (applied to ones).

    Expected: E[r] = 1 and Var[r] = p/(1−p) for inverted Bernoulli and Gaussian dropout with
    drop probability ``p`` (Srivastava et al. 2014 §10 write σ² = (1−q)/q with q the keep
    rate). Standard errors: SE(mean) = s/√n and SE(variance) = √((m4 − s⁴)/n + 2s⁴/(n(n−1))),
    the exact variance of the sample variance with the sample fourth central moment m4 plugged
    in. Returns a dict ``variant, p, n, mean, var, expected_var, se_mean, se_var``
    (:func:`max_deviation` turns several of them into one deviation and a tolerance).
    """
    p = probability(p, "noise_moments: p")
    integer(n_samples, "noise_moments: n_samples", 2)
    module = make_dropout(variant, p=p).train()
    with _seeded(seed, torch.device("cpu")), torch.no_grad():
        noise = module(torch.ones(int(n_samples), dtype=torch.float64)).double()
    mean = float(noise.mean())
    centred = noise - mean
    var = float(centred.pow(2).sum() / (n_samples - 1))
    fourth = float(centred.pow(4).mean())
    se_mean = math.sqrt(var / n_samples)
    se_var = math.sqrt(max(fourth - var**2, 0.0) / n_samples + 2.0 * var**2 / (n_samples * (n_samples - 1)))
    expected_var = p / (1.0 - p)
    return {"variant": variant, "p": p, "n": int(n_samples), "mean": mean, "var": var, "expected_var": expected_var,
            "se_mean": se_mean, "se_var": se_var}


def max_deviation(estimates: Sequence[float], targets: Sequence[float], standard_errors: Sequence[float],
                  alpha: float = 1e-3) -> tuple[float, float]:
    """``(max_i |estimate_i − target_i|, z·max_i SE_i)``: the worst deviation of Monte-Carlo estimates, and a tolerance.

    The measurement of an implementation check that several Monte-Carlo estimates equal their
    exact values: the tolerance is ``z`` times the largest standard error, z the two-sided normal
    quantile at ``alpha``, so it shrinks as 1/√(sample size). Without a bug each deviation
    exceeds its own ``z·SE_i``, hence the tolerance, with probability at most ``alpha``.
    """
    estimates, targets, errors = (np.asarray(v, dtype=np.float64).ravel()
                                  for v in (estimates, targets, standard_errors))
    if estimates.size == 0 or not estimates.shape == targets.shape == errors.shape:
        raise ValueError(f"max_deviation: estimates, targets and standard_errors must be non-empty and of equal "
                         f"length, got {estimates.size}, {targets.size}, {errors.size}")
    if not np.all(np.isfinite(errors)) or np.any(errors < 0):
        raise ValueError(f"max_deviation: standard errors must be finite and >= 0, got {errors.tolist()}")
    probability(alpha, "max_deviation: alpha", zero=False, what="a significance level")
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    return float(np.abs(estimates - targets).max()), z * float(errors.max())


# ----------------------------------------------------------------------------- dropout and ridge


def _ridge_inputs(owner: str, X: np.ndarray, y: np.ndarray, p: float, w: np.ndarray | None = None) -> tuple:
    """``X``, ``y`` (and ``w``) as float64 arrays of matching shapes, and the keep rate q = 1 − ``p``."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"{owner}: X must be (N, D) and y (N,), got X {X.shape} and y {y.shape}")
    if w is not None:
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (X.shape[1],):
            raise ValueError(f"{owner}: w must have one weight per column of X ({X.shape[1]}), got shape {w.shape}")
    q = drop_to_keep(probability(p, f"{owner}: p"))
    return (X, y, q) if w is None else (X, y, w, q)


def dropout_ridge_objective(X: np.ndarray, y: np.ndarray, w: np.ndarray, p: float) -> float:
    """Closed form of E_R‖y − (R∗X)w‖², R_ij ~ Bernoulli(q) i.i.d., q = 1 − p the keep rate.

    Srivastava et al. 2014, §9.1 (their p is our keep rate q; no 1/q rescaling):
    E_R‖y − (R∗X)w‖² = ‖y − qXw‖² + q(1−q)‖Γw‖², Γ = diag(XᵀX)^½.
    """
    X, y, w, q = _ridge_inputs("dropout_ridge_objective", X, y, p, w)
    gamma_sq = (X**2).sum(0)  # diag(XᵀX)
    return float(((y - q * X @ w) ** 2).sum() + q * (1.0 - q) * (gamma_sq * w**2).sum())


def dropout_ridge_monte_carlo(X: np.ndarray, y: np.ndarray, w: np.ndarray, p: float, n_masks: int = 20_000,
                              seed: int = 0, chunk: int = 1_000) -> tuple[float, float]:
    """Monte-Carlo estimate of E_R‖y − (R∗X)w‖² over ``n_masks`` masks: ``(mean, standard error)``."""
    X, y, w, q = _ridge_inputs("dropout_ridge_monte_carlo", X, y, p, w)
    integer(n_masks, "dropout_ridge_monte_carlo: n_masks", 2)
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_masks, chunk):
        size = min(chunk, n_masks - start)
        keep = rng.random((size, *X.shape)) < q
        residual = y - (keep * X) @ w  # (size, N)
        values.append((residual**2).sum(1))
    values = np.concatenate(values)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(n_masks))


def dropout_ridge_solution(X: np.ndarray, y: np.ndarray, p: float) -> np.ndarray:
    """Minimiser of the dropout objective: (q·XᵀX + (1−q)·Γ²) w = Xᵀy, q = 1 − p.

    Equivalently q·w minimises the ridge objective ‖y − Xw̃‖² + ((1−q)/q)·‖Γw̃‖²
    (Srivastava et al. 2014, §9.1).
    """
    X, y, q = _ridge_inputs("dropout_ridge_solution", X, y, p)
    gram = X.T @ X
    return np.linalg.solve(q * gram + (1.0 - q) * np.diag(np.diag(gram)), X.T @ y)


def masked_sgd(X: np.ndarray, y: np.ndarray, p: float, steps: int = 20_000, lr: float = 0.02, seed: int = 0,
               average_from: float = 0.5) -> np.ndarray:
    """SGD on (1/N)‖y − (R∗X)w‖² with a fresh Bernoulli(q) input mask R every step.

    Returns the Polyak–Ruppert average of the iterates after ``average_from·steps`` steps.
    The gradient is linear in w and the mask is independent of the iterate, so with a constant
    step the average converges to the minimiser of the expected objective without bias
    (Bach & Moulines, NeurIPS 2013).
    """
    X, y, q = _ridge_inputs("masked_sgd", X, y, p)
    integer(steps, "masked_sgd: steps", 2)
    positive(lr, "masked_sgd: lr")
    probability(average_from, "masked_sgd: average_from", what="a fraction")
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    w = np.zeros(X.shape[1])
    total, count = np.zeros_like(w), 0
    first_averaged = int(average_from * steps)
    for step in range(steps):
        masked = (rng.random(X.shape) < q) * X
        w = w + lr * (2.0 / n) * masked.T @ (y - masked @ w)
        if step >= first_averaged:
            total += w
            count += 1
    return total / count


@dataclass
class RidgeStudy:
    """Result of :func:`dropout_ridge_study`: the data and one table per check."""

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray  # the weights the objective is evaluated at
    objective: Any  # DataFrame: p, keep, closed_form, monte_carlo, se, relative_error, relative_tolerance
    solution: Any  # DataFrame: p, keep, coefficient, closed_form, sgd, ridge


def dropout_ridge_study(p_values: Sequence[float], n_rows: int = 200, n_features: int = 5, n_masks: int = 20_000,
                        sgd_steps: int = 20_000, sgd_lr: float = 0.02, seed: int = 0,
                        alpha: float = 1e-3) -> RidgeStudy:
    """Check the dropout–ridge identity on synthetic data for each drop probability in ``p_values``.

    X (``n_rows`` × ``n_features``) has columns of unequal scale (0.5 to 2) so that Γ is not a
    multiple of the identity; y = X·w + N(0, 0.5²). For each p: the closed form against the
    Monte-Carlo objective at w (tolerance z·SE/closed form, z the two-sided normal quantile at
    ``alpha``), and the closed-form minimiser against :func:`masked_sgd` and against ridge
    regression with λ = (1−q)/q (rescaled by 1/q).
    """
    p_values = probabilities(p_values, "dropout_ridge_study: p_values")
    integer(n_rows, "dropout_ridge_study: n_rows")
    integer(n_features, "dropout_ridge_study: n_features")
    rng = np.random.default_rng(_child_seed(seed, 0))
    X = rng.standard_normal((n_rows, n_features)) * np.linspace(0.5, 2.0, n_features)
    w = rng.standard_normal(n_features)
    y = X @ w + 0.5 * rng.standard_normal(n_rows)
    gram = X.T @ X
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    objective_rows, solution_rows = [], []
    for index, p in enumerate(p_values):
        q = round(drop_to_keep(p), 12)  # 1 − (1 − 0.2) is 0.19999999999999996 in floating point
        closed = dropout_ridge_objective(X, y, w, p)
        mc, se = dropout_ridge_monte_carlo(X, y, w, p, n_masks, seed=_child_seed(seed, 1, index))
        best = dropout_ridge_solution(X, y, p)
        sgd = masked_sgd(X, y, p, sgd_steps, sgd_lr, seed=_child_seed(seed, 2, index))
        lam = (1.0 - q) / q
        ridge = np.linalg.solve(gram + lam * np.diag(np.diag(gram)), X.T @ y) / q
        objective_rows.append({
            "p": p, "keep": q, "closed_form": closed, "monte_carlo": mc, "se": se,
            "relative_error": (mc - closed) / closed, "relative_tolerance": z * se / closed,
            "sgd_relative_error": float(np.linalg.norm(sgd - best) / np.linalg.norm(best)),
            "ridge_relative_error": float(np.linalg.norm(ridge - best) / np.linalg.norm(best))})
        solution_rows += [{"p": p, "keep": q, "coefficient": j, "closed_form": best[j], "sgd": sgd[j], "ridge": ridge[j]}
                          for j in range(n_features)]
    return RidgeStudy(X=X, y=y, w=w, objective=pd.DataFrame(objective_rows), solution=pd.DataFrame(solution_rows))
