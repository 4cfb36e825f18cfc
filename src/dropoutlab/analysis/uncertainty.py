"""Uncertainty from MC dropout: regression, extrapolation, OOD detection, calibration, BN pitfall.

Gal & Ghahramani (ICML 2016), "Dropout as a Bayesian approximation": keeping dropout on at
test time and averaging T stochastic passes approximates the predictive distribution of a
Bayesian network. Their regression code (yaringal/DropoutUncertaintyExps, ``net/net.py``)
reports both the deterministic ("standard", weight-scaled) RMSE and the MC RMSE, and the test
log-likelihood of a mixture of T Gaussians with model precision τ:

    LL(y) = logsumexp_t(−τ/2·(y − ŷ_t)²) − log T − ½ log 2π + ½ log τ.

Experiment drivers (one call each from notebook 08):

* :func:`regression_study`: splits × datasets; τ chosen on a validation part of each training
  split; MC against weight scaling, RMSE and LL as functions of T.
* :func:`extrapolation_study`: a 1-D CO2-like series; predictive sd inside and beyond the data
  for ReLU and tanh networks (Gal & Ghahramani 2016, Fig. 2).
* :func:`classification_study`: predictive entropy and mutual information on in- and
  out-of-distribution inputs (AUROC), expected calibration error and reliability bins, and the
  uncertainty of rotated digits as a function of the angle.
* :func:`bn_pitfall_study`: MC sampling of a BatchNorm network with ``model.train()`` against
  :func:`~dropoutlab.inference.mc_dropout`: accuracy against the test batch size and the
  running statistics that ``model.train()`` silently overwrites.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from scipy.special import logsumexp
from sklearn.datasets import load_diabetes, make_friedman1
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from ..checks import (
    choice,
    choices,
    finite,
    integer,
    integers,
    is_real,
    optional_integer,
    positive,
    positives,
    probability,
    seed_list,
    settle,
)
from ..data import Dataset, load_dataset
from ..inference import mutual_information, predict_mc, predict_weight_scaling, predictive_entropy
from ..models import ACTIVATIONS, MLP, ConvNet
from ..train import TrainConfig, evaluate, fit, resolve_device, seed_everything, training_modes

__all__ = ["ACTIVATIONS_COMPARED", "OOD_SETS", "REGRESSION_DATASETS", "BNPitfallConfig", "BNPitfallStudy",
           "ClassificationConfig", "ClassificationStudy", "ExtrapolationConfig", "ExtrapolationStudy",
           "RegressionConfig", "bn_max_abs_change", "bn_pitfall_study", "bn_running_stats", "classification_study",
           "converged_at", "expected_calibration_error", "extrapolation_ratios", "extrapolation_study",
           "gaussian_mixture_log_likelihood", "load_regression", "naive_train_mode_mc", "ood_auroc",
           "regression_mc_metrics", "regression_study", "reliability_bins", "rotate_images", "synthetic_series",
           "train_test_split_indices"]

REGRESSION_DATASETS = ("diabetes", "friedman")
OOD_SETS = ("fashion-mnist", "rotated", "noise")
ACTIVATIONS_COMPARED = ("relu", "tanh")
#: Gal's prior length-scale for the weight decay l²(1 − p)/(2Nτ) (net.py).
DEFAULT_LENGTHSCALE = 1e-2


def converged_at(T_values: Sequence[int], values: Sequence[float], tolerance: float, *,
                 relative: bool = False) -> int:
    """Smallest T from which every later value stays within ``tolerance`` of the value at max T.

    ``relative=True`` measures the distance relative to ``|value(T_max)|``. Values must be
    given in the order of ``T_values`` (increasing).
    """
    T = np.asarray(T_values)
    v = np.asarray(values, dtype=float)
    if T.ndim != 1 or T.shape != v.shape or T.size == 0:
        raise ValueError(f"converged_at: T_values and values must be 1-D of equal length, got {T.shape} and {v.shape}")
    if np.any(np.diff(T) <= 0):
        raise ValueError(f"converged_at: T_values must be strictly increasing, got {T.tolist()}")
    tolerance = positive(tolerance, "converged_at: tolerance")
    limit = tolerance * abs(v[-1]) if relative else tolerance
    inside = np.abs(v - v[-1]) <= limit
    # the last index where the curve is still outside the band, +1
    outside = np.flatnonzero(~inside)
    return int(T[outside[-1] + 1]) if outside.size else int(T[0])


# --------------------------------------------------------------------------------------------
# Regression (Gal & Ghahramani 2016, Sec. 5.3; net.py)
# --------------------------------------------------------------------------------------------


def load_regression(name: str, seed: int = 0, n_samples: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """A regression data set that needs no network: ``(X, y)`` as float64 arrays.

    * ``"diabetes"``: scikit-learn's bundled diabetes data (Efron et al. 2004), 442 × 10.
    * ``"friedman"``: Friedman #1 (``make_friedman1``), ``n_samples`` × 10, noise sd 1,
      y = 10 sin(π x₁x₂) + 20(x₃ − ½)² + 10x₄ + 5x₅ + ε; drawn with ``seed``.
    """
    if choice(name, REGRESSION_DATASETS, "load_regression: name") == "diabetes":
        X, y = load_diabetes(return_X_y=True)
    else:
        X, y = make_friedman1(n_samples=integer(n_samples, "n_samples"), n_features=10, noise=1.0, random_state=seed)
    return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)


def train_test_split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random split of ``range(n)`` (sorted index arrays), as Hernández-Lobato's 90/10 splits."""
    n = integer(n, "n")
    test_fraction = probability(test_fraction, "test_fraction", zero=False, what="a fraction")
    n_test = max(1, int(round(n * test_fraction)))
    if n_test >= n:
        raise ValueError(f"test_fraction={test_fraction} leaves no training data out of n={n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def gaussian_mixture_log_likelihood(y: np.ndarray | Tensor, samples: np.ndarray | Tensor, tau: float) -> np.ndarray:
    """Per-point test log-likelihood of MC samples (Gal & Ghahramani 2016, net.py).

    LL_i = logsumexp_t(−τ/2·(y_i − ŷ_ti)²) − log T − ½ log 2π + ½ log τ, i.e. the log density of
    y_i under an equal mixture of T Gaussians N(ŷ_ti, 1/τ). ``samples``: (T, N); ``y``: (N,).
    Returns float64 (N,).
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim == 1:
        s = s[None]
    s = s.reshape(s.shape[0], -1)
    if s.shape[1] != y.shape[0]:
        raise ValueError(f"gaussian_mixture_log_likelihood: samples (T, N) must match y (N,), "
                         f"got {s.shape} and {y.shape}")
    tau = positive(tau, "gaussian_mixture_log_likelihood: tau")
    T = s.shape[0]
    return (logsumexp(-0.5 * tau * (y[None] - s) ** 2, axis=0) - math.log(T)
            - 0.5 * math.log(2 * math.pi) + 0.5 * math.log(tau))


def regression_mc_metrics(samples: np.ndarray | Tensor, y: np.ndarray | Tensor, tau: float,
                          T_values: Sequence[int]) -> list[dict[str, float]]:
    """RMSE of the MC mean and test LL using the first T samples, for each T in ``T_values``."""
    s = np.asarray(samples, dtype=np.float64)
    s = s.reshape(s.shape[0], -1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    Ts = sorted(set(integers(T_values, "T_values")))
    if Ts[-1] > s.shape[0]:
        raise ValueError(f"regression_mc_metrics: T_values go up to {Ts[-1]} but only {s.shape[0]} samples were given")
    return [{"T": T, "rmse_mc": float(np.sqrt(np.mean((y - s[:T].mean(0)) ** 2))),
             "ll_mc": float(gaussian_mixture_log_likelihood(y, s[:T], tau).mean())} for T in Ts]


@dataclass
class _Standardiser:
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray) -> _Standardiser:
        std = X.std(0)
        std[std == 0] = 1.0
        return cls(X.mean(0), std, float(y.mean()), float(y.std()))

    def inputs(self, X: np.ndarray) -> Tensor:
        return torch.from_numpy(((X - self.x_mean) / self.x_std).astype(np.float32))

    def data(self, X: np.ndarray, y: np.ndarray) -> Dataset:
        return Dataset(self.inputs(X), torch.from_numpy(((y - self.y_mean) / self.y_std).astype(np.float32)))


def _train_regressor(X: np.ndarray, y: np.ndarray, tau: float, config: RegressionConfig,
                     seed: int) -> tuple[nn.Module, _Standardiser]:
    """Gal's net: dropout ``p`` on the input and before every later layer, ReLU, MSE, Adam.

    Weight decay: Keras' ``l2(reg)`` adds reg·‖W‖² with reg = l²(1 − p)/(2Nτ); torch's coupled
    L2 adds wd·W to the gradient, so wd = 2·reg. Here τ is the precision of the standardised
    target, the scale the network is trained on (net.py passes the original-scale τ; with
    l = 1e-2 the term is below 1e-5 either way). torch also decays the biases.
    """
    norm = _Standardiser.fit(X, y)
    p = config.p
    weight_decay = 2 * config.lengthscale**2 * (1 - p) / (2 * len(X) * tau * norm.y_std**2)
    seed_everything(seed)
    model = MLP(X.shape[1], config.widths, 1, activation="relu", p_input=p, p_hidden=p)
    fit(model, {"train": norm.data(X, y)}, replace(config.train_config(), seed=seed, weight_decay=weight_decay))
    return model, norm


def _mc_and_standard(model: nn.Module, x: Tensor, T: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(T MC samples (T, N), weight-scaled prediction (N,)) of a one-output net as float64, the MC draws seeded."""
    torch.manual_seed(seed)
    samples = predict_mc(model, x, T).squeeze(-1).double().cpu().numpy()
    return samples, predict_weight_scaling(model, x).squeeze(-1).double().cpu().numpy()


def _regression_samples(model: nn.Module, norm: _Standardiser, X: np.ndarray, T: int, seed: int,
                        device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(MC samples (T, N), weight-scaled prediction (N,)) on the original scale of y."""
    samples, standard = _mc_and_standard(model, norm.inputs(X).to(device), T, seed)
    return samples * norm.y_std + norm.y_mean, standard * norm.y_std + norm.y_mean


@dataclass(frozen=True)
class RegressionConfig:
    """Settings of :func:`regression_study`, checked once when the config is built.

    ``datasets`` from :data:`REGRESSION_DATASETS`; ``n_splits`` random train/test splits
    (``test_fraction``), each split's training part split again (``val_fraction``) to choose τ
    from ``tau_grid``; an MLP with hidden ``widths`` and dropout ``p``, trained ``epochs``
    epochs; ``T_values`` MC sample counts (sorted, distinct), ``T_select`` for the choice of τ;
    ``lengthscale`` sets the weight decay of the Gal & Ghahramani model; ``friedman_samples`` is
    the size of the Friedman #1 data set.
    """

    datasets: tuple[str, ...] = REGRESSION_DATASETS
    n_splits: int = 20
    widths: tuple[int, ...] = (50,)
    p: float = 0.05
    tau_grid: tuple[float, ...] = (0.5, 1, 2, 4, 8)
    T_values: tuple[int, ...] = (1, 10, 100, 1000)
    T_select: int = 100
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    lengthscale: float = DEFAULT_LENGTHSCALE
    test_fraction: float = 0.1
    val_fraction: float = 0.2
    friedman_samples: int = 500
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        name = "RegressionConfig"
        settle(self, datasets=choices(self.datasets, REGRESSION_DATASETS, f"{name}.datasets"),
               n_splits=integer(self.n_splits, f"{name}.n_splits"),
               widths=tuple(integers(self.widths, f"{name}.widths")), p=probability(self.p, f"{name}.p"),
               tau_grid=tuple(positives(self.tau_grid, f"{name}.tau_grid")),
               T_values=tuple(sorted(set(integers(self.T_values, f"{name}.T_values")))),
               T_select=integer(self.T_select, f"{name}.T_select"),
               test_fraction=probability(self.test_fraction, f"{name}.test_fraction", zero=False, what="a fraction"),
               val_fraction=probability(self.val_fraction, f"{name}.val_fraction", zero=False, what="a fraction"),
               friedman_samples=integer(self.friedman_samples, f"{name}.friedman_samples", 2),
               seed=integer(self.seed, f"{name}.seed", 0))
        self.train_config()  # checks epochs and batch_size

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, device=self.device,
                           task="regression", eval_splits=())


def regression_study(config: RegressionConfig) -> pd.DataFrame:
    """MC dropout against weight scaling on random train/test splits (Gal & Ghahramani 2016, Table 1 protocol).

    For every data set and split ``s`` (seed ``seed + s``): the training part is split again
    (``val_fraction``) to choose τ from ``tau_grid`` (precisions of the *standardised* target,
    converted to the original scale by dividing by var(y_train)) by the validation LL with
    ``T_select`` MC samples — the 2018 protocol of the authors' repository, which keeps test
    points out of the choice; then a network is trained on the whole training part and tested.
    MC metrics use the first T of one draw of max(T_values) samples, so the curves over T are
    nested.

    Returns a tidy DataFrame, one row per (dataset, split, T): ``tau`` (original scale),
    ``tau_std`` (standardised), ``rmse_mc``, ``ll_mc``, ``rmse_standard``, ``ll_standard``
    (the weight-scaled prediction as a single Gaussian with precision τ), ``n_train``, ``n_test``.
    """
    dev = resolve_device(config.device)
    rows = []
    for name in config.datasets:
        X, y = load_regression(name, seed=config.seed, n_samples=config.friedman_samples)
        for split in range(config.n_splits):
            split_seed = config.seed + split
            train_idx, test_idx = train_test_split_indices(len(X), config.test_fraction, split_seed)
            X_train, y_train = X[train_idx], y[train_idx]
            inner_idx, val_idx = train_test_split_indices(len(X_train), config.val_fraction, split_seed + 10_000)
            var_inner = float(y_train[inner_idx].var())
            val_ll = []
            for tau_std in config.tau_grid:
                model, norm = _train_regressor(X_train[inner_idx], y_train[inner_idx], tau_std, config, split_seed)
                samples, _ = _regression_samples(model, norm, X_train[val_idx], config.T_select, split_seed, dev)
                val_ll.append(gaussian_mixture_log_likelihood(y_train[val_idx], samples, tau_std / var_inner).mean())
            tau_std = config.tau_grid[int(np.argmax(val_ll))]
            tau = tau_std / float(y_train.var())
            model, norm = _train_regressor(X_train, y_train, tau_std, config, split_seed)
            samples, standard = _regression_samples(model, norm, X[test_idx], config.T_values[-1], split_seed, dev)
            y_test = y[test_idx]
            rmse_standard = float(np.sqrt(np.mean((y_test - standard) ** 2)))
            ll_standard = float(gaussian_mixture_log_likelihood(y_test, standard[None], tau).mean())
            for metrics in regression_mc_metrics(samples, y_test, tau, config.T_values):
                rows.append({"dataset": name, "split": split, "tau": tau, "tau_std": tau_std, **metrics,
                             "rmse_standard": rmse_standard, "ll_standard": ll_standard,
                             "n_train": len(train_idx), "n_test": len(test_idx)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Extrapolation on a 1-D series (Gal & Ghahramani 2016, Fig. 2, Mauna Loa CO2)
# --------------------------------------------------------------------------------------------


def synthetic_series(x: np.ndarray) -> np.ndarray:
    """A CO2-like curve on x ∈ [0, 1] (one unit = the observed period): trend + seasonal cycle.

    f(x) = 2x + x² + 0.3·sin(2π·6x): a rising, slightly accelerating trend with six cycles
    over the data, like the Mauna Loa record's trend and annual oscillation.
    """
    x = np.asarray(x, dtype=np.float64)
    return 2 * x + x**2 + 0.3 * np.sin(2 * np.pi * 6 * x)


@dataclass
class ExtrapolationStudy:
    """``curves``: per (activation, seed, x): truth, mc_mean, mc_sd, standard, region.
    ``train``: the training points (x, y) of the first seed, standardised like the curves."""

    curves: Any
    train: Any


@dataclass(frozen=True)
class ExtrapolationConfig:
    """Settings of :func:`extrapolation_study`, checked once when the config is built.

    One MLP 1 → ``widths`` → 1 per (activation, seed) with dropout ``p``, trained ``epochs`` epochs
    on ``n_train`` noisy (sd ``noise``) points of the series on [0, 1], predicted with ``T`` MC
    passes on ``n_grid`` points of [0, 1 + ``extent``].
    """

    activations: tuple[str, ...] = ACTIVATIONS_COMPARED
    seeds: tuple[int, ...] = (0, 1, 2)
    widths: tuple[int, ...] = (256, 256, 256, 256)
    p: float = 0.1
    T: int = 100
    n_train: int = 200
    noise: float = 0.05
    extent: float = 0.5
    n_grid: int = 151
    epochs: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-6
    device: str = "auto"

    def __post_init__(self) -> None:
        name = "ExtrapolationConfig"
        settle(self, activations=choices(self.activations, sorted(ACTIVATIONS), f"{name}.activations"),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               widths=tuple(integers(self.widths, f"{name}.widths")), p=probability(self.p, f"{name}.p"),
               T=integer(self.T, f"{name}.T"), n_train=integer(self.n_train, f"{name}.n_train"),
               noise=positive(self.noise, f"{name}.noise", zero=True), extent=positive(self.extent, f"{name}.extent"),
               n_grid=integer(self.n_grid, f"{name}.n_grid"))
        self.train_config()  # checks epochs and batch_size

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                           device=self.device, task="regression", eval_splits=())


def extrapolation_study(config: ExtrapolationConfig) -> ExtrapolationStudy:
    """Fit the series on x ∈ [0, 1] and predict on [0, 1 + extent] with T MC passes.

    One MLP per (activation, seed): 1 → widths → 1, dropout ``p`` before every hidden-to-hidden
    and the output layer (none on the scalar input). Targets are standardised on the training
    set; ``curves`` are on that scale. ``region`` is "interpolation" for x ≤ 1 and
    "extrapolation" beyond. ``mc_sd``: standard deviation of the T outputs (model uncertainty;
    the 1/τ noise term would add the same constant in both regions).
    """
    training = config.train_config()
    dev = resolve_device(config.device)
    x_grid = np.linspace(0.0, 1.0 + config.extent, config.n_grid)
    grid = torch.from_numpy(x_grid[:, None].astype(np.float32)).to(dev)
    curves, train_frame = [], None
    for seed in config.seeds:
        rng = np.random.default_rng(seed)
        x_train = np.sort(rng.uniform(0.0, 1.0, config.n_train))
        y_train = synthetic_series(x_train) + config.noise * rng.standard_normal(config.n_train)
        y_mean, y_std = float(y_train.mean()), float(y_train.std())
        data = Dataset(torch.from_numpy(x_train[:, None].astype(np.float32)),
                       torch.from_numpy(((y_train - y_mean) / y_std).astype(np.float32)))
        if train_frame is None:
            train_frame = pd.DataFrame({"x": x_train, "y": data.y.double().numpy()})
        for activation in config.activations:
            seed_everything(seed)
            model = MLP(1, config.widths, 1, activation=activation, p_input=0.0, p_hidden=config.p)
            fit(model, {"train": data}, replace(training, seed=seed))
            samples, standard = _mc_and_standard(model, grid, config.T, seed)
            curves.append(pd.DataFrame({
                "activation": activation, "seed": seed, "x": x_grid,
                "truth": (synthetic_series(x_grid) - y_mean) / y_std,
                "mc_mean": samples.mean(0), "mc_sd": samples.std(0), "standard": standard,
                "region": np.where(x_grid <= 1.0, "interpolation", "extrapolation"),
            }))
    return ExtrapolationStudy(curves=pd.concat(curves, ignore_index=True), train=train_frame)


def extrapolation_ratios(curves) -> Any:
    """Per (activation, seed): mean predictive sd in each region and their ratio (extrapolation / interpolation)."""
    missing = {"activation", "seed", "region", "mc_sd"} - set(curves.columns)
    if missing:
        raise ValueError(f"extrapolation_ratios: curves lack column(s) {sorted(missing)}")
    table = curves.groupby(["activation", "seed", "region"])["mc_sd"].mean().unstack("region")
    table["ratio"] = table["extrapolation"] / table["interpolation"]
    return table.reset_index()


# --------------------------------------------------------------------------------------------
# Classification: OOD scores, calibration, rotation
# --------------------------------------------------------------------------------------------


def ood_auroc(scores_in: np.ndarray | Tensor, scores_out: np.ndarray | Tensor) -> float:
    """AUROC of a score that should be higher on out-of-distribution inputs (OOD = positive class).

    0.5 is chance, 1 perfect separation. Uses ``sklearn.metrics.roc_auc_score`` (ties count ½).
    """
    a = np.asarray(scores_in, dtype=np.float64).ravel()
    b = np.asarray(scores_out, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError(f"ood_auroc: need scores on both sets, got {a.size} in-distribution and {b.size} OOD")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("ood_auroc: scores must be finite")
    labels = np.concatenate([np.zeros(a.size), np.ones(b.size)])
    return float(roc_auc_score(labels, np.concatenate([a, b])))


def reliability_bins(probs: np.ndarray | Tensor, labels: np.ndarray | Tensor, n_bins: int = 15):
    """Equal-width confidence bins on [0, 1]: count, mean confidence and accuracy per bin.

    Confidence = the largest predicted probability; a row is correct when its argmax is the label.
    Returns a DataFrame with ``bin``, ``low``, ``high``, ``count``, ``confidence``, ``accuracy``
    (NaN for empty bins).
    """
    n_bins = integer(n_bins, "n_bins")
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0] or probs.shape[0] == 0:
        raise ValueError(f"reliability_bins: probs must be (N, C) with one label per row, got {probs.shape} and "
                         f"{labels.shape}")
    confidence, correct = probs.max(1), (probs.argmax(1) == labels).astype(np.float64)
    # bins [0, 1/n), [1/n, 2/n), ..., [(n-1)/n, 1]: confidence 1 falls in the last bin
    index = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
    edges = np.arange(n_bins + 1) / n_bins
    return pd.DataFrame({"bin": np.arange(n_bins), "low": edges[:-1], "high": edges[1:], "count": count,
                         "confidence": np.where(count > 0, mean_conf, np.nan),
                         "accuracy": np.where(count > 0, accuracy, np.nan)})


def expected_calibration_error(probs: np.ndarray | Tensor, labels: np.ndarray | Tensor, n_bins: int = 15) -> float:
    """ECE = Σ_b (n_b/N)·|accuracy_b − confidence_b| over ``n_bins`` equal-width bins (Naeini et al. 2015;
    Guo et al. 2017 use 15 bins)."""
    bins = reliability_bins(probs, labels, n_bins)
    filled = bins[bins["count"] > 0]
    weights = filled["count"].to_numpy() / bins["count"].sum()
    return float(np.sum(weights * np.abs(filled["accuracy"].to_numpy() - filled["confidence"].to_numpy())))


def rotate_images(x: Tensor, degrees: float) -> Tensor:
    """Rotate images (N, C, H, W) by ``degrees`` counter-clockwise about their centre.

    Bilinear interpolation, zero fill outside, the same size; values clipped to [0, 1].
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"rotate_images: x must be a tensor of shape (N, C, H, W), got {shape}")
    degrees = finite(degrees, "rotate_images: degrees")
    rotated = ndimage.rotate(x.detach().cpu().numpy(), degrees, axes=(3, 2), reshape=False, order=1,
                             mode="constant", cval=0.0)
    return torch.from_numpy(np.clip(rotated, 0.0, 1.0).astype(np.float32))


def _ood_inputs(name: str, dataset: str, in_test: Dataset, seed: int, rotation_degrees: float) -> Tensor:
    if name == "fashion-mnist":
        x = load_dataset("fashion-mnist", "test", n=len(in_test), seed=seed).x
        if x.shape[1:] != in_test.x.shape[1:]:
            raise ValueError(f"classification_study: OOD set 'fashion-mnist' has images {tuple(x.shape[1:])}, "
                             f"{dataset} has {tuple(in_test.x.shape[1:])}; use 'rotated' or 'noise' for {dataset}")
        return x
    if name == "rotated":
        return rotate_images(in_test.x, rotation_degrees)
    return torch.rand(in_test.x.shape, generator=torch.Generator().manual_seed(seed))  # "noise"


@dataclass
class ClassificationStudy:
    """Results of :func:`classification_study` (tidy DataFrames).

    ``scores``: per (seed, source, example) the uncertainty scores; ``auroc``: per (seed,
    ood_set, score); ``calibration``: per (seed, method) accuracy, mean confidence, NLL and ECE;
    ``reliability``: per (seed, method, bin); ``rotation``: per (seed, angle) mean scores and
    accuracy of the rotated test subset.
    """

    scores: Any
    auroc: Any
    calibration: Any
    reliability: Any
    rotation: Any


SCORES = {"entropy (MC)": "entropy_mc", "mutual information (MC)": "mutual_information",
          "entropy (deterministic)": "entropy_det"}


def _uncertainty(model: nn.Module, x: Tensor, T: int, device: torch.device) -> dict[str, Tensor]:
    x = x.to(device)
    probs_mc = torch.softmax(predict_mc(model, x, T), dim=-1).double().cpu()
    probs_det = torch.softmax(predict_weight_scaling(model, x), dim=-1).double().cpu()
    # entropy_det: the softmax entropy of the deterministic net, the predictive entropy of that one sample
    return {"probs_mc": probs_mc.mean(0), "probs_det": probs_det, "entropy_mc": predictive_entropy(probs_mc),
            "mutual_information": mutual_information(probs_mc), "entropy_det": predictive_entropy(probs_det[None])}


@dataclass(frozen=True)
class ClassificationConfig:
    """Settings of :func:`classification_study`, checked once when the config is built.

    Per seed an MLP (hidden ``widths``, dropout ``p_input`` on the inputs and ``p_hidden`` on the
    hidden units) is trained ``epochs`` epochs on ``n_train`` images of ``dataset`` (all when None)
    and scored with ``T`` MC passes on ``n_eval`` test images and the ``ood_sets`` (from
    :data:`OOD_SETS`); ``n_rotation`` test images are rotated through ``rotation_angles``;
    calibration uses ``n_bins`` bins.
    """

    dataset: str = "digits"
    ood_sets: tuple[str, ...] = ("rotated", "noise")
    seeds: tuple[int, ...] = (0, 1, 2)
    n_train: int | None = None
    n_eval: int | None = None
    widths: tuple[int, ...] = (256, 256)
    p_input: float = 0.2
    p_hidden: float = 0.5
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    T: int = 50
    rotation_degrees: float = 90.0
    rotation_angles: tuple[float, ...] = (0, 30, 60, 90, 120, 150, 180)
    n_rotation: int = 200
    n_bins: int = 15
    device: str = "auto"

    def __post_init__(self) -> None:
        name = "ClassificationConfig"
        angles = [self.rotation_angles] if is_real(self.rotation_angles) else list(self.rotation_angles)
        settle(self, ood_sets=choices(self.ood_sets, OOD_SETS, f"{name}.ood_sets"),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               n_train=optional_integer(self.n_train, f"{name}.n_train"),
               n_eval=optional_integer(self.n_eval, f"{name}.n_eval"),
               widths=tuple(integers(self.widths, f"{name}.widths")),
               p_input=probability(self.p_input, f"{name}.p_input"),
               p_hidden=probability(self.p_hidden, f"{name}.p_hidden"), T=integer(self.T, f"{name}.T"),
               rotation_degrees=finite(self.rotation_degrees, f"{name}.rotation_degrees"),
               rotation_angles=tuple(finite(a, f"{name}.rotation_angles (each)") for a in angles),
               n_rotation=integer(self.n_rotation, f"{name}.n_rotation"), n_bins=integer(self.n_bins, f"{name}.n_bins"))
        self.train_config()  # checks epochs and batch_size

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, device=self.device,
                           eval_splits=())


def classification_study(config: ClassificationConfig) -> ClassificationStudy:
    """Train a dropout MLP per seed; score in- and out-of-distribution test inputs with MC dropout.

    In-distribution: a class-stratified test subset of ``n_eval`` images (drawn with the seed).
    OOD sets: ``"fashion-mnist"`` (its test set; 28×28 only), ``"rotated"`` (the same test images
    rotated by ``rotation_degrees``), ``"noise"`` (uniform noise images). Scores: MC predictive
    entropy, mutual information (BALD) from T passes, and the softmax entropy of the
    deterministic weight-scaled net. Calibration: ECE with ``n_bins`` equal-width bins for the
    MC mean and the deterministic prediction on the in-distribution set.
    """
    training = config.train_config()
    dev = resolve_device(config.device)

    scores, auroc, calibration, reliability, rotation = [], [], [], [], []
    for seed in config.seeds:
        train = load_dataset(config.dataset, "train", n=config.n_train, seed=seed)
        test = load_dataset(config.dataset, "test", n=config.n_eval, seed=seed)
        seed_everything(seed)
        model = MLP(train.x[0].numel(), config.widths, train.num_classes, p_input=config.p_input,
                    p_hidden=config.p_hidden)
        fit(model, {"train": train}, replace(training, seed=seed))
        torch.manual_seed(seed)
        sets = {"in-distribution": test.x}
        sets.update({name: _ood_inputs(name, config.dataset, test, seed, config.rotation_degrees)
                     for name in config.ood_sets})
        results = {source: _uncertainty(model, x, config.T, dev) for source, x in sets.items()}
        for source, result in results.items():
            scores.append(pd.DataFrame({"seed": seed, "source": source, "example": np.arange(len(sets[source])),
                                        **{column: result[column].numpy() for column in SCORES.values()}}))
        inside = results["in-distribution"]
        for name in config.ood_sets:
            for label, column in SCORES.items():
                auroc.append({"seed": seed, "ood_set": name, "score": label,
                              "auroc": ood_auroc(inside[column].numpy(), results[name][column].numpy())})
        labels = test.y.numpy()
        for method, key in (("MC dropout", "probs_mc"), ("deterministic", "probs_det")):
            probs = inside[key].numpy()
            nll = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-300, None)).mean())
            calibration.append({"seed": seed, "method": method, "accuracy": float((probs.argmax(1) == labels).mean()),
                                "confidence": float(probs.max(1).mean()), "nll": nll,
                                "ece": expected_calibration_error(probs, labels, config.n_bins)})
            bins = reliability_bins(probs, labels, config.n_bins)
            bins.insert(0, "method", method)
            bins.insert(0, "seed", seed)
            reliability.append(bins)
        subset = test.x[:config.n_rotation]
        for angle in config.rotation_angles:
            result = _uncertainty(model, rotate_images(subset, float(angle)), config.T, dev)
            correct = result["probs_mc"].argmax(1) == test.y[:config.n_rotation]
            rotation.append({"seed": seed, "angle": float(angle), "accuracy": float(correct.double().mean()),
                             **{column: float(result[column].mean()) for column in SCORES.values()}})
    return ClassificationStudy(scores=pd.concat(scores, ignore_index=True), auroc=pd.DataFrame(auroc),
                               calibration=pd.DataFrame(calibration),
                               reliability=pd.concat(reliability, ignore_index=True), rotation=pd.DataFrame(rotation))


# --------------------------------------------------------------------------------------------
# The BatchNorm pitfall: model.train() versus mc_dropout
# --------------------------------------------------------------------------------------------


def bn_running_stats(model: nn.Module) -> dict[str, Tensor]:
    """Copies of every BatchNorm buffer (running_mean, running_var, num_batches_tracked), by name."""
    return {f"{name}.{key}": buf.detach().clone() for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            for key, buf in module.named_buffers(recurse=False)}


def _relative_change(before: dict[str, Tensor], after: dict[str, Tensor], key: str) -> float:
    changes = [float((after[n] - before[n]).norm() / before[n].norm().clamp_min(1e-12))
               for n in before if n.endswith(key)]
    return float(np.mean(changes)) if changes else 0.0


def bn_max_abs_change(before: dict[str, Tensor], after: dict[str, Tensor]) -> float:
    """Largest absolute change of any BatchNorm buffer entry between two :func:`bn_running_stats` snapshots.

    0.0 exactly when every buffer (running_mean, running_var, num_batches_tracked) is bit-identical;
    nan-safe (a NaN that appears counts as an infinite change). ``before`` and ``after`` must name the same buffers.
    """
    if set(before) != set(after):
        raise ValueError(f"bn_max_abs_change: snapshots name different buffers: {sorted(set(before) ^ set(after))}")
    largest = 0.0
    for key, old in before.items():
        new = after[key]
        if old.shape != new.shape:
            raise ValueError(f"bn_max_abs_change: buffer {key} changed shape {tuple(old.shape)} → {tuple(new.shape)}")
        if old.numel() and not torch.equal(old, new):
            change = (new.double() - old.double()).abs().nan_to_num(nan=math.inf)
            largest = max(largest, float(change.max()))
    return largest


def naive_train_mode_mc(model: nn.Module, x: Tensor, T: int, batch_size: int) -> Tensor:
    """The pitfall: ``model.train()`` and T passes over ``x`` in batches of ``batch_size``.

    Every module is in train mode, so BatchNorm normalises with the statistics of the current
    test batch and updates its running statistics — ``model`` is modified. Returns the
    softmax probabilities (T, N, C). Restores the previous mode (not the buffers).
    """
    T = integer(T, "T")
    batch_size = integer(batch_size, "batch_size")
    with training_modes(model), torch.no_grad():
        model.train()
        samples = [torch.cat([torch.softmax(model(x[i:i + batch_size]), -1) for i in range(0, len(x), batch_size)])
                   for _ in range(T)]
    return torch.stack(samples)


def _proper_mc(model: nn.Module, x: Tensor, T: int, batch_size: int) -> Tensor:
    parts = [torch.softmax(predict_mc(model, x[i:i + batch_size], T), -1) for i in range(0, len(x), batch_size)]
    return torch.cat(parts, dim=1)


@dataclass
class BNPitfallStudy:
    """``accuracy``: per (seed, method, batch_size): accuracy of the T-sample mean and the share of
    predictions that differ from the same method at the largest batch size. ``stats``: per
    (seed, method, batch_size): relative change of the BN running mean and variance after
    sampling, whether any buffer changed, the largest absolute change of any buffer entry
    (:func:`bn_max_abs_change`; 0 when bit-identical), and the deterministic (eval) accuracy afterwards."""

    accuracy: Any
    stats: Any


BN_METHODS: dict[str, Callable[[nn.Module, Tensor, int, int], Tensor]] = {
    "mc_dropout": _proper_mc, "model.train()": naive_train_mode_mc}


@dataclass(frozen=True)
class BNPitfallConfig:
    """Settings of :func:`bn_pitfall_study`, checked once when the config is built.

    Per seed a ConvNet (``channels``, dropout ``p``, a ``hidden`` layer) is trained ``epochs``
    epochs on ``n_train`` images of ``dataset`` (all when None) and MC-sampled with ``T`` passes
    on ``n_eval`` test images at each test batch size of ``batch_sizes`` (sorted, distinct).
    """

    dataset: str = "digits"
    seeds: tuple[int, ...] = (0, 1, 2)
    n_train: int | None = None
    n_eval: int | None = 200
    channels: tuple[int, ...] = (8, 16)
    p: float = 0.2
    hidden: int = 32
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    T: int = 10
    batch_sizes: tuple[int, ...] = (1, 8, 64, 200)
    device: str = "auto"

    def __post_init__(self) -> None:
        name = "BNPitfallConfig"
        settle(self, seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               n_train=optional_integer(self.n_train, f"{name}.n_train"),
               n_eval=optional_integer(self.n_eval, f"{name}.n_eval"),
               channels=tuple(integers(self.channels, f"{name}.channels")), p=probability(self.p, f"{name}.p"),
               hidden=integer(self.hidden, f"{name}.hidden"), T=integer(self.T, f"{name}.T"),
               batch_sizes=tuple(sorted(set(integers(self.batch_sizes, f"{name}.batch_sizes")))))
        self.train_config()  # checks epochs and batch_size

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, device=self.device,
                           eval_splits=())


def bn_pitfall_study(config: BNPitfallConfig) -> BNPitfallStudy:
    """Train a ConvNet with ``conv-bn-act-drop-pool`` blocks; MC-sample it both ways at several test batch sizes.

    ``mc_dropout`` (:func:`~dropoutlab.inference.predict_mc`) keeps BatchNorm in eval mode;
    ``model.train()`` (:func:`naive_train_mode_mc`) is the common mistake. Each (method,
    batch size) starts from a fresh copy of the trained network, so the changed running
    statistics are measured per run; the deterministic accuracy of that copy afterwards shows
    what the mistake leaves behind.
    """
    training = config.train_config()
    dev = resolve_device(config.device)
    accuracy_rows, stats_rows = [], []
    for seed in config.seeds:
        train = load_dataset(config.dataset, "train", n=config.n_train, seed=seed)
        test = load_dataset(config.dataset, "test", n=config.n_eval, seed=seed)
        seed_everything(seed)
        model = ConvNet(train.input_shape, config.channels, order="conv-bn-act-drop-pool", p=config.p,
                        hidden=config.hidden, padding=1, num_classes=train.num_classes)
        fit(model, {"train": train}, replace(training, seed=seed))
        model.eval()
        base_accuracy = 1.0 - evaluate(model, test, device=dev)["error"]
        x, labels = test.x.to(dev), test.y.to(dev)
        for method, sample in BN_METHODS.items():
            reference = None
            for size in reversed(config.batch_sizes):  # largest first: the reference for "differs"
                run = copy.deepcopy(model)
                before = bn_running_stats(run)
                torch.manual_seed(seed)
                predicted = sample(run, x, config.T, size).mean(0).argmax(-1)
                after = bn_running_stats(run)
                reference = predicted if reference is None else reference
                key = {"seed": seed, "method": method, "batch_size": size}
                accuracy_rows.append({**key, "accuracy": float((predicted == labels).double().mean()),
                                      "differs_from_largest_batch": float((predicted != reference).double().mean()),
                                      "eval_accuracy": base_accuracy})
                stats_rows.append({**key, "running_mean_change": _relative_change(before, after, "running_mean"),
                                   "running_var_change": _relative_change(before, after, "running_var"),
                                   "buffers_changed": any(not torch.equal(before[k], after[k]) for k in before),
                                   "max_abs_change": bn_max_abs_change(before, after),
                                   "eval_accuracy_before": base_accuracy,
                                   "eval_accuracy_after": 1.0 - evaluate(run, test, device=dev)["error"]})
    accuracy = pd.DataFrame(accuracy_rows).sort_values(["seed", "method", "batch_size"], ignore_index=True)
    stats = pd.DataFrame(stats_rows).sort_values(["seed", "method", "batch_size"], ignore_index=True)
    return BNPitfallStudy(accuracy=accuracy, stats=stats)
