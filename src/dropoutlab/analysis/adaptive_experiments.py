"""Adaptive, scheduled and meta-learned dropout: the experiments of notebook 12.

Ba, Frey. "Adaptive dropout for training deep neural networks." NeurIPS 2013 (standout, BF-1).
Morerio, Cavazza, Volpi, Vidal, Murino. "Curriculum dropout." ICCV 2017 (CU-S). Rennie, Goel,
Thomas. "Annealed dropout training of deep networks." IEEE SLT 2014 (RN-A). Choe, Shim.
"Attention-based dropout layer for weakly supervised object localization." CVPR 2019 (ADL-1).
Lee, Nam, Yang, Hwang. "Meta Dropout: learning to perturb latent features for generalization."
ICLR 2020 (MD-1; the meta-learning loop is :mod:`dropoutlab.metalearning`).

Every study trains its arms on the same seeds through :func:`~dropoutlab.analysis.structured.train_arms`
(``train.fit``): the seed fixes the initial weights (every arm's model creates the same layers in
the same order) and the data order, so the arms are paired by seed. Each returns a frozen dataclass
of tidy DataFrames. ``p`` is always a drop probability; the papers' keep (retain) probabilities
are converted by name (:func:`~dropoutlab.variants.base.keep_to_drop`,
:func:`~dropoutlab.schedules.curriculum_from_keep`).

* :class:`AdaptiveMLP`, :func:`mlp_study` — standout vs dropout vs annealed dropout (BF-1, RN-A).
* :class:`CurriculumCNN`, :func:`curriculum_study` — fixed vs curriculum vs anti-curriculum (CU-S).
* :func:`adl_selection_frequency` — how often ADL picks its drop mask (ADL-1's check);
  :class:`ADLNet`, :func:`adl_study` — a CNN with and without ADL (ADL-1's non-inferiority part).
* :func:`meta_dropout_study` — MAML with and without meta dropout on few-shot episodes (MD-1).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..checks import finite, integer, integers, keep_probability, positive, probability, seed_list, settle
from ..data import Dataset
from ..metalearning import ARMS as META_ARMS
from ..metalearning import EpisodeSampler, build_model, meta_test, meta_train
from ..schedules import AnnealedSchedule, DropoutScheduler, curriculum_from_keep
from ..train import TrainConfig
from ..variants import make_dropout
from ..variants.adaptive import ADL, Standout
from ..variants.base import keep_to_drop
from .structured import Z_CHECK, train_arms
from .studies import TrainedArms, distinct_choices, per_seed, require_splits, study_config, train_config

__all__ = ["ADLConfig", "ADLFrequency", "ADLNet", "AdaptiveMLP", "CURRICULUM_ARMS", "CurriculumCNN", "CurriculumConfig",
           "MLPConfig", "MLP_ARMS", "MetaDropoutConfig", "MetaStudy", "adl_selection_frequency", "adl_study",
           "class_pools", "curriculum_schedules", "curriculum_study", "meta_dropout_study", "mlp_study"]

MLP_ARMS = ("dropout", "standout", "annealed")
CURRICULUM_ARMS = ("fixed", "curriculum", "anti-curriculum")
ADL_ARMS = ("no ADL", "ADL")


def _training(config: Any, name: str) -> TrainConfig:
    """The study's TrainConfig, evaluated on ``data["test"]`` after every epoch."""
    return replace(train_config(config, name), eval_splits=("test",))


# ----------------------------------------------------------------------------- BF-1, RN-A: MLPs


class AdaptiveMLP(nn.Sequential):
    """``in → widths… → out`` ReLU MLP with standout or dropout (p) on every hidden layer, or neither.

    ``mode="dropout"``: ``Linear → ReLU → InvertedDropout(p)`` per hidden layer; ``mode="standout"``:
    :class:`~dropoutlab.variants.adaptive.Standout` around each hidden Linear (keep probability
    σ(α·xWᵀ + β), tied to the layer's weights, expectation at test; Ba & Frey 2013); ``"none"``:
    ``Linear → ReLU``. The Linear layers are created in the same order in every mode, so one seed
    gives every mode the same initial weights. Input ``(N, ...)`` flattened, output ``(N, out)``.
    """

    MODES = ("dropout", "standout", "none")

    def __init__(self, in_features: int, widths: Sequence[int], out_features: int, *, mode: str = "dropout",
                 p: float = 0.5, alpha: float = 1.0, beta: float = 0.0) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        widths = integers(widths, "widths")
        p = probability(p, "p")
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = integer(in_features, "in_features")
        for width in widths:
            linear = nn.Linear(fan_in, width)
            if mode == "standout":
                layers.append(Standout(linear, alpha=finite(alpha, "alpha"), beta=finite(beta, "beta")))
            else:
                layers += [linear, nn.ReLU()]
                if mode == "dropout":
                    layers.append(make_dropout("inverted", p=p))
            fan_in = width
        layers.append(nn.Linear(fan_in, integer(out_features, "out_features")))
        super().__init__(*layers)


@dataclass(frozen=True)
class MLPConfig:
    """Settings of :func:`mlp_study`, checked once when built: ``training`` (its ``eval_splits`` set
    to ``("test",)``), ``seeds``, hidden ``widths``, dropout ``p``, standout's ``alpha`` and ``beta``,
    ``arms`` from :data:`MLP_ARMS`."""

    training: TrainConfig
    seeds: tuple[int, ...]
    widths: tuple[int, ...]
    p: float = 0.5
    alpha: float = 1.0
    beta: float = 0.0
    arms: tuple[str, ...] = MLP_ARMS

    def __post_init__(self) -> None:
        name = "MLPConfig"
        settle(self, training=_training(self.training, f"{name}.training"),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               widths=tuple(integers(self.widths, f"{name}.widths")),
               p=probability(self.p, f"{name}.p"),
               alpha=finite(self.alpha, f"{name}.alpha"), beta=finite(self.beta, f"{name}.beta"),
               arms=distinct_choices(self.arms, MLP_ARMS, f"{name}.arms"))


def mlp_study(data: Mapping[str, Dataset], config: MLPConfig) -> TrainedArms:
    """BF-1 and RN-A: the same MLP with dropout ``p``, with standout, and with annealed dropout.

    ``"dropout"``: p fixed on every hidden layer (the baseline of both claims); ``"standout"``: Ba &
    Frey's standout (α, β) instead; ``"annealed"``: Rennie et al.'s schedule, p(e) = p·(1 − e/(E − 1))
    for epoch e = 0…E − 1 (a :class:`~dropoutlab.schedules.AnnealedSchedule` over E − 1 epochs), so
    the rate falls linearly from p and the last epoch trains without dropout. Evaluated on
    ``data["test"]`` after every epoch.
    """
    require_splits(data, ("train", "test"))
    config = study_config(config, MLPConfig)
    in_features, classes = int(np.prod(data["train"].x.shape[1:])), data["train"].num_classes

    def model(mode: str) -> nn.Module:
        return AdaptiveMLP(in_features, config.widths, classes, mode=mode, p=config.p, alpha=config.alpha,
                           beta=config.beta)

    modes = {"dropout": dict(mode="dropout"), "standout": dict(mode="standout"), "annealed": dict(mode="dropout")}
    anneal_epochs = max(config.training.epochs - 1, 1)
    schedulers = {"annealed": lambda m: DropoutScheduler(m, AnnealedSchedule(config.p, anneal_epochs), unit="epoch")}
    study = train_arms(model, {a: modes[a] for a in config.arms}, data, config.training, config.seeds,
                       schedulers={a: s for a, s in schedulers.items() if a in config.arms})
    return TrainedArms.of(study)


# ----------------------------------------------------------------------------- CU-S: curriculum dropout


class CurriculumCNN(nn.Module):
    """Morerio et al.'s MNIST CNN with dropout on the input, after each conv block and each fc layer.

    ``drop_input → conv5×5(c1) → ReLU → pool → drop_conv1 → conv5×5(c2) → ReLU → pool → drop_conv2
    → fc(h1) → ReLU → drop_fc1 → fc(h2) → ReLU → drop_fc2 → fc(classes)`` ('same' padding). The
    paper's net is c = (32, 48), h = (2048, 1024). The drop probabilities start at ``p_input``,
    ``p_conv``, ``p_fc``; a :class:`DropoutScheduler` keyed by the module names above rewrites them.
    Input ``(N, C, H, W)``, output ``(N, classes)``.
    """

    DROPOUTS = ("drop_input", "drop_conv1", "drop_conv2", "drop_fc1", "drop_fc2")

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int] = (32, 48),
                 hidden: Sequence[int] = (2048, 1024), num_classes: int = 10, *, p_input: float = 0.1,
                 p_conv: float = 0.25, p_fc: float = 0.5) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        if not isinstance(channels, (list, tuple)) or len(channels) != 2:
            raise ValueError(f"channels must be two integers, got {channels!r}")
        c1, c2 = integers(channels, "channels")
        hidden = integers(hidden, "hidden")
        if len(hidden) != 2:
            raise ValueError(f"hidden must be two integers, got {hidden!r}")
        side = int(input_shape[1]) // 2 // 2
        layers = OrderedDict([
            ("drop_input", make_dropout("inverted", p=probability(p_input, "p_input"))),
            ("conv1", nn.Conv2d(input_shape[0], c1, 5, padding=2)), ("act1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
            ("drop_conv1", make_dropout("inverted", p=probability(p_conv, "p_conv"))),
            ("conv2", nn.Conv2d(c1, c2, 5, padding=2)), ("act2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
            ("drop_conv2", make_dropout("inverted", p=p_conv)),
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(c2 * side * side, hidden[0])), ("act3", nn.ReLU()),
            ("drop_fc1", make_dropout("inverted", p=probability(p_fc, "p_fc"))),
            ("fc2", nn.Linear(hidden[0], hidden[1])), ("act4", nn.ReLU()),
            ("drop_fc2", make_dropout("inverted", p=p_fc)),
            ("out", nn.Linear(hidden[1], integer(num_classes, "num_classes", 2))),
        ])
        self.net = nn.Sequential(layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def curriculum_schedules(keep_input: float, keep_conv: float, keep_fc: float, gamma: float,
                         anti: bool = False) -> dict[str, Any]:
    """Per-layer curriculum schedules ``{module name in CurriculumCNN: schedule}`` from the paper's θ̄.

    θ(t) = (1 − θ̄)·exp(−γt) + θ̄ (curriculum) or 1 − (1 − θ̄)·exp(−γt) (``anti``), t the update;
    each written as its drop probability 1 − θ(t) by :func:`~dropoutlab.schedules.curriculum_from_keep`.
    """
    keeps = {"input": keep_probability(keep_input, "keep_input"), "conv": keep_probability(keep_conv, "keep_conv"),
             "fc": keep_probability(keep_fc, "keep_fc")}
    gamma = finite(gamma, "gamma")
    if gamma < 0:
        raise ValueError(f"gamma must be ≥ 0 (per update), got {gamma!r}")
    group = {"drop_input": "input", "drop_conv1": "conv", "drop_conv2": "conv", "drop_fc1": "fc", "drop_fc2": "fc"}
    return {f"net.{name}": curriculum_from_keep(keeps[g], gamma, anti=anti) for name, g in group.items()}


@dataclass(frozen=True)
class CurriculumConfig:
    """Settings of :func:`curriculum_study`, checked once when built: ``training`` (evaluated on the
    test split every epoch), ``seeds``, the CNN's ``channels`` and ``hidden`` widths, the paper's
    keep probabilities θ̄ (``keep_input``, ``keep_conv``, ``keep_fc``), the schedule's ``gamma`` and
    ``arms`` from :data:`CURRICULUM_ARMS`."""

    training: TrainConfig
    seeds: tuple[int, ...]
    channels: tuple[int, ...]
    hidden: tuple[int, ...]
    keep_input: float = 0.9
    keep_conv: float = 0.75
    keep_fc: float = 0.5
    gamma: float = 1e-3
    arms: tuple[str, ...] = CURRICULUM_ARMS

    def __post_init__(self) -> None:
        name = "CurriculumConfig"
        settle(self, training=_training(self.training, f"{name}.training"),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               channels=tuple(integers(self.channels, f"{name}.channels")),
               hidden=tuple(integers(self.hidden, f"{name}.hidden")),
               keep_input=keep_probability(self.keep_input, f"{name}.keep_input"),
               keep_conv=keep_probability(self.keep_conv, f"{name}.keep_conv"),
               keep_fc=keep_probability(self.keep_fc, f"{name}.keep_fc"),
               gamma=positive(self.gamma, f"{name}.gamma"),
               arms=distinct_choices(self.arms, CURRICULUM_ARMS, f"{name}.arms"))


def curriculum_study(data: Mapping[str, Dataset], config: CurriculumConfig) -> TrainedArms:
    """CU-S: :class:`CurriculumCNN` with fixed dropout (p = 1 − θ̄ from the first update), curriculum
    dropout (θ(t) from 1 down to θ̄) and anti-curriculum dropout (θ(t) from θ̄ up to 1), per update.

    The fixed arm has no scheduler (its rates are those of the constructor); the others get a
    :class:`DropoutScheduler` with :func:`curriculum_schedules`, stepped after every update by ``fit``.
    """
    require_splits(data, ("train", "test"))
    config = study_config(config, CurriculumConfig)
    rates = dict(p_input=keep_to_drop(config.keep_input), p_conv=keep_to_drop(config.keep_conv),
                 p_fc=keep_to_drop(config.keep_fc))
    shape, classes = tuple(data["train"].x.shape[1:]), data["train"].num_classes

    def model() -> nn.Module:
        return CurriculumCNN(shape, config.channels, config.hidden, classes, **rates)

    def scheduler(anti: bool):
        schedules = curriculum_schedules(config.keep_input, config.keep_conv, config.keep_fc, config.gamma, anti=anti)
        return lambda m: DropoutScheduler(m, schedules, unit="step")

    schedulers = {"curriculum": scheduler(False), "anti-curriculum": scheduler(True)}
    study = train_arms(model, {a: {} for a in config.arms}, data, config.training, config.seeds,
                       schedulers={a: s for a, s in schedulers.items() if a in config.arms})
    return TrainedArms.of(study)


# ----------------------------------------------------------------------------- ADL-1


@dataclass(frozen=True)
class ADLFrequency:
    """How often the package's :class:`ADL` chose its drop mask over ``n_draws`` training calls.

    ``frequency``: the measured share; ``se``: the binomial standard error at the nominal rate,
    sqrt(r(1 − r)/n); ``tolerance``: ``Z_CHECK·se`` (two-sided 1e-3); ``deviation``: |frequency − r|;
    ``running``: the running share after each of a log-spaced set of draws (for a figure).
    """

    drop_rate: float
    n_draws: int
    frequency: float
    se: float
    tolerance: float
    running: Any  # DataFrame: draw, frequency

    @property
    def deviation(self) -> float:
        return abs(self.frequency - self.drop_rate)


def adl_selection_frequency(drop_rate: float = 0.75, gamma: float = 0.9, n_draws: int = 10_000,
                            seed: int = 0) -> ADLFrequency:
    """Draw ``n_draws`` training calls of ``ADL(drop_rate, gamma)`` on one fixed positive batch.

    The batch ``(4, 8, 6, 6)`` has positive activations, so the importance map σ(A) never zeroes a
    unit while the drop mask always zeroes the most attended location (A ≥ γ·max A there): a call
    chose the drop mask iff its output has an exact zero where the input had none.
    """
    drop_rate = probability(drop_rate, "drop_rate")
    gamma = probability(gamma, "gamma", one=True, what="a probability")
    n_draws = integer(n_draws, "n_draws", 2)
    torch.manual_seed(int(seed))
    x = torch.rand(4, 8, 6, 6) + 0.1
    layer = ADL(drop_rate=drop_rate, gamma=gamma).train()
    chosen = np.empty(n_draws, dtype=bool)
    with torch.no_grad():
        for i in range(n_draws):
            chosen[i] = bool((layer(x) == 0).any())
    share = np.cumsum(chosen) / np.arange(1, n_draws + 1)
    marks = np.unique(np.geomspace(1, n_draws, num=min(n_draws, 200)).astype(int))
    se = math.sqrt(drop_rate * (1.0 - drop_rate) / n_draws)
    return ADLFrequency(drop_rate=drop_rate, n_draws=n_draws, frequency=float(chosen.mean()), se=se,
                        tolerance=Z_CHECK * se, running=pd.DataFrame({"draw": marks, "frequency": share[marks - 1]}))


class ADLNet(nn.Module):
    """Two [conv 3×3 → ReLU → (ADL) → max-pool 2] blocks, ``Linear(hidden) → ReLU → Linear(classes)``.

    With ``adl=True`` an :class:`ADL` (``drop_rate``, ``gamma``) follows each conv activation, as
    Choe & Shim insert it after conv layers; ADL has no parameters, so one seed gives both arms the
    same weights. Input ``(N, C, H, W)``, output ``(N, classes)``.
    """

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int] = (16, 32), hidden: int = 64,
                 num_classes: int = 10, *, adl: bool = False, drop_rate: float = 0.75, gamma: float = 0.9) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        layers: list[nn.Module] = []
        in_ch, side = int(input_shape[0]), int(input_shape[1])
        for out_ch in integers(channels, "channels"):
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU()]
            if adl:
                layers.append(ADL(drop_rate=probability(drop_rate, "drop_rate"), gamma=gamma))
            layers.append(nn.MaxPool2d(2))
            in_ch, side = out_ch, side // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(in_ch * side * side, integer(hidden, "hidden")), nn.ReLU(),
                                  nn.Linear(hidden, integer(num_classes, "num_classes", 2)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class ADLConfig:
    """Settings of :func:`adl_study`, checked once when built: ``training`` (evaluated on the test
    split every epoch), ``seeds``, :class:`ADLNet`'s ``channels`` and ``hidden`` width, ADL's
    ``drop_rate`` and ``gamma``."""

    training: TrainConfig
    seeds: tuple[int, ...]
    channels: tuple[int, ...]
    hidden: int
    drop_rate: float = 0.75
    gamma: float = 0.9

    def __post_init__(self) -> None:
        name = "ADLConfig"
        settle(self, training=_training(self.training, f"{name}.training"),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               channels=tuple(integers(self.channels, f"{name}.channels")),
               hidden=integer(self.hidden, f"{name}.hidden"),
               drop_rate=probability(self.drop_rate, f"{name}.drop_rate"),
               gamma=probability(self.gamma, f"{name}.gamma", one=True, what="a probability"))


def adl_study(data: Mapping[str, Dataset], config: ADLConfig) -> TrainedArms:
    """ADL-1's training part: :class:`ADLNet` without (``"no ADL"``) and with ADL (``"ADL"``), paired by seed."""
    require_splits(data, ("train", "test"))
    config = study_config(config, ADLConfig)
    shape, classes = tuple(data["train"].x.shape[1:]), data["train"].num_classes

    def model(adl: bool) -> nn.Module:
        return ADLNet(shape, config.channels, config.hidden, classes, adl=adl, drop_rate=config.drop_rate,
                      gamma=config.gamma)

    study = train_arms(model, {arm: dict(adl=arm == "ADL") for arm in ADL_ARMS}, data, config.training, config.seeds)
    return TrainedArms.of(study)


# ----------------------------------------------------------------------------- MD-1


def class_pools(dataset: Dataset, classes: Sequence[int], prefix: str) -> dict[str, Tensor]:
    """``{f"{prefix}{c}": images of class c}`` for each class ``c`` of ``dataset`` (few-shot pools)."""
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a dropoutlab Dataset, got {type(dataset).__name__}")
    classes = integers(classes, "classes", 0, distinct=True)
    if max(classes) >= dataset.num_classes:
        raise ValueError(f"classes must be labels of {dataset.name} (0…{dataset.num_classes - 1}), got {classes}")
    return {f"{prefix}{c}": dataset.x[dataset.y == c] for c in classes}


@dataclass(frozen=True)
class MetaStudy:
    """MD-1: ``accuracy`` (arm, seed, accuracy % averaged over the test episodes, its s.e. over episodes),
    ``episodes`` (arm, seed, episode, accuracy %: the same episodes for both arms) and ``history``
    (the meta-training curves: arm, seed, iteration, query loss, query accuracy %)."""

    accuracy: Any
    episodes: Any
    history: Any

    def per_seed(self, arm: str):
        """Mean meta-test accuracy (%) per meta-training run (a Series indexed by seed)."""
        return per_seed(self.accuracy, "accuracy", arm=arm)


@dataclass(frozen=True)
class MetaDropoutConfig:
    """Settings of :func:`meta_dropout_study`, checked once when built: ``seeds``; ``way``-way,
    ``shot``-shot episodes with ``query`` query images per class; the 4-conv net's ``channels``;
    ``iterations`` meta-updates of ``meta_batch`` episodes with ``inner_steps`` inner SGD steps
    (``inner_lr``), Adam at ``meta_lr``, ``second_order`` MAML; ``test_episodes`` meta-test
    episodes; a learning-curve record every ``log_every`` iterations."""

    seeds: tuple[int, ...]
    way: int = 5
    shot: int = 1
    query: int = 15
    channels: int = 32
    iterations: int = 1000
    meta_batch: int = 4
    inner_steps: int = 5
    inner_lr: float = 0.1
    meta_lr: float = 1e-3
    second_order: bool = True
    test_episodes: int = 200
    log_every: int = 50

    def __post_init__(self) -> None:
        name = "MetaDropoutConfig"
        if not isinstance(self.second_order, bool):
            raise ValueError(f"{name}.second_order must be True or False, got {self.second_order!r}")
        settle(self, seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               way=integer(self.way, f"{name}.way", 2), shot=integer(self.shot, f"{name}.shot"),
               query=integer(self.query, f"{name}.query"), channels=integer(self.channels, f"{name}.channels"),
               iterations=integer(self.iterations, f"{name}.iterations"),
               meta_batch=integer(self.meta_batch, f"{name}.meta_batch"),
               inner_steps=integer(self.inner_steps, f"{name}.inner_steps"),
               inner_lr=positive(self.inner_lr, f"{name}.inner_lr"), meta_lr=positive(self.meta_lr, f"{name}.meta_lr"),
               test_episodes=integer(self.test_episodes, f"{name}.test_episodes"),
               log_every=integer(self.log_every, f"{name}.log_every"))


def meta_dropout_study(train_pools: Mapping[str, Tensor], test_pools: Mapping[str, Tensor],
                       config: MetaDropoutConfig) -> MetaStudy:
    """MD-1: meta-train the 4-conv MAML net with and without meta dropout, then meta-test both.

    Meta-training episodes come from ``train_pools``, meta-test episodes from ``test_pools`` (classes
    held out of meta-training: the caller builds the pools, e.g. with :func:`class_pools`). For each
    seed both arms start from the same weights (:func:`~dropoutlab.metalearning.build_model`), see the
    same meta-training episodes in the same order, and are tested on the same ``test_episodes``
    episodes (drawn with seed 10,000 + seed). A meta-training run is the unit of replication.
    """
    config = study_config(config, MetaDropoutConfig)
    overlap = sorted(set(train_pools) & set(test_pools))
    if overlap:
        raise ValueError(f"test_pools must hold classes held out of train_pools; both have {overlap}")
    train = EpisodeSampler(train_pools, config.way, config.shot, config.query)
    test = EpisodeSampler(test_pools, config.way, config.shot, config.query)
    if train.input_shape != test.input_shape:
        raise ValueError(f"train_pools and test_pools must have one image shape, got {train.input_shape} and "
                         f"{test.input_shape}")
    rows, episode_rows, curves = [], [], []
    for seed in config.seeds:
        for arm in META_ARMS:
            model = build_model(train.input_shape, config.way, config.channels, seed)
            run = meta_train(model, train, arm=arm, iterations=config.iterations, meta_batch=config.meta_batch,
                             inner_steps=config.inner_steps, inner_lr=config.inner_lr, meta_lr=config.meta_lr,
                             second_order=config.second_order, seed=seed, log_every=config.log_every)
            accs = meta_test(model, test, arm=arm, episodes=config.test_episodes, inner_steps=config.inner_steps,
                             inner_lr=config.inner_lr, seed=10_000 + seed)
            curves.append(run.history)
            rows.append(dict(arm=arm, seed=seed, accuracy=float(accs.mean()),
                             se=float(accs.std(ddof=1) / math.sqrt(len(accs))) if len(accs) > 1 else math.nan))
            episode_rows += [dict(arm=arm, seed=seed, episode=i, accuracy=float(a)) for i, a in enumerate(accs)]
    return MetaStudy(accuracy=pd.DataFrame(rows), episodes=pd.DataFrame(episode_rows),
                     history=pd.concat(curves, ignore_index=True))
