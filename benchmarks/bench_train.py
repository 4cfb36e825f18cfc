"""Training-loop throughput of the full profile's models against their compute floor (goal ≥ 0.9).

The floor is forward + backward + optimiser step on pre-made batches, nothing else beyond what
the model's training rule itself requires: the ``regularizer()`` terms of the modules that have one
(Concrete, variational and sparse variational dropout; found once, as fit does), gradient clipping,
max-norm after the step and the rate or KL-weight schedule stepped after it (per update, or once
after the epoch), where the case uses them. The loop under test is ``dropoutlab.train.fit`` on the
same model (same initial weights), data, batch size and optimiser (one epoch, no evaluation), or
the loop the notebook trains the model with where that is not ``fit`` (the heteroscedastic toy net:
``fit_heteroscedastic``, whose floor uses its loss). Both run side by side, alternating, after one
warm-up round; the best of the repeats is reported for both (as timeit does): on a shared machine
the minimum is the least disturbed run. The ratio fit/floor is fit's throughput over the floor's
(= floor time / fit time; 1.0 = no overhead).

Cases (``--cases``, short names; default all): every model the ``full`` profile trains, each built
by the package's own constructors as its notebook builds it there (params.yaml ``notebooks.<name>.full``
and ``.common``), on random inputs of the right shape (token ids for the language model) and random
targets of the task (classes; regression targets; the autoencoder's flattened input). One case stands
for the nets of a notebook that differ from it only in dropout rates, in the order of the same layers,
or by leaving dropout out (the control arms), and for the same net, optimiser and batch size in another
notebook; the notebooks it serves are named first (a claim id in brackets), then the model and settings.
A "sample" is one image, row of inputs or (language model) one 50-character window.

* ``mlp`` — 01 (SR-T2), 03 (SR-G/SR-F11's Bernoulli arm: 01's runs): MLP 784-1024-1024-10, inverted
  dropout p = 0.2 / 0.5, SGD lr 0.05 momentum 0.95, max-norm 3, batch 100;
* ``mlp_gauss`` — 03 (SR-G's Gaussian arm): the same with Gaussian dropout;
* ``exact`` — 03 (exact averages): MLP 784-8-8-10 (the largest of the 4–16-unit nets, 2 layers),
  p = 0.5 on the hidden units, SGD lr 0.01 momentum 0.95, max-norm 3, batch 100;
* ``autoencoder`` — 02 (SR-F7, SR-F8): 784-256-784 ReLU, dropout 0.5 on the hidden code,
  reconstruction (MSE), Adam, batch 100;
* ``coadapt`` — 02 (CO-*): MLP 784-256-256-10, p = 0.2 / 0.5, Adam, batch 100;
* ``rate`` — 04 (SR-F9a, n fixed): MLP 784-512×3-10, p = 0.5 on the hidden units (the sweep's other
  rates: same net), Adam, batch 100;
* ``rate_pn`` — 04 (SR-F9b, retain × n fixed): the widest net of the sweep, 784-1280-1280-2560-10 at
  retain 0.2 (p = 0.8), Adam, batch 100;
* ``size`` — 04 (SR-F10), 09 (KW-MN's Bernoulli arm, without the input dropout): MLP 784-512-512-10,
  p = 0.2 / 0.5, Adam, batch 100;
* ``varshift`` — 05 (LI-*): CNN 8-16-16-32 (hidden 64, pooling after blocks 1 and 3) with dropout 0.5
  before every BN (the Drop→BN arm; the BN, head-dropout, BN→drop and no-BN arms: same layers), Adam
  lr 0.002, batch 64;
* ``uout`` — 05 (LI-UOUT): the same CNN with Uout (β = 0.1) before every BN;
* ``ordering`` — 06 (SO-1-*): the table's ConvNet 32-64 (hidden 512, ELU, 'valid' padding,
  dropout 0.2 / 0.3) in the order conv-bn-act-drop-pool (SO-1e; the other orders: same layers), Adam,
  batch 128 (SO-1-BS's batch sizes 16–512: ``--batch-size``);
* ``concrete`` — 07 (CD-MN): 3×512 MLP with Concrete dropout on every layer, regulariser factors for
  N = 50,000, Adam, batch 128;
* ``grid`` — 07 (CD-GRID): MLP 784-512×3-10 with inverted dropout p = 0.5 on every layer (the grid's
  other rates: same net), Adam, batch 128;
* ``toy`` — 07 (CD-TOY): the heteroscedastic Concrete net 1-512×3-(mean, log σ²), regulariser factors
  for N = 10,000, Adam, batch 20, trained by ``fit_heteroscedastic``;
* ``regression`` — 08 (GG-*): MLP 10-50-1, p = 0.05 on input and hidden, weight decay, regression
  (MSE), Adam, batch 128;
* ``series`` — 08 (GG-CO2): MLP 1-256×4-1 (ReLU; the tanh arm: same layers), p = 0.1 on the hidden
  units, weight decay 1e-6, regression, Adam, batch 32;
* ``mc_mlp`` — 08 (MC-OOD-*, MC-CAL): MLP 784-1024-1024-10, p = 0.2 / 0.5, Adam, batch 128;
* ``bn_cnn`` — 08 (MC-BN): ConvNet 16-32 conv-bn-act-drop-pool (hidden 32), p = 0.2, Adam, batch 64;
* ``kw_var`` — 09 (KW-VAR): MLP 784-256-256-10 with Gaussian-VI weights (one learned α per weight,
  local reparameterisation, KL / 50,000), Adam, batch 100;
* ``kw_mn`` — 09 (KW-MN's variational arm): MLP 784-512-512-10 with Kingma's variational dropout
  (one α per unit) on the hidden units, KL / 50,000, Adam, batch 100;
* ``kw_gauss`` — 09 (KW-MN's Gaussian arm): MLP 784-512-512-10, Gaussian dropout p = 0.5 on the hidden
  units, Adam, batch 100;
* ``lenet300`` — 09 (SV-L300): LeNet-300-100 with sparse variational dropout, KL warm-up over epochs
  1–2, Adam, batch 100;
* ``lenet5`` — 09 (SV-L5): LeNet-5-Caffe with sparse variational dropout, KL warm-up over epochs 0–1,
  Adam, batch 100;
* ``cnn16`` — 10 (TO-SD's element-wise arm), 14 (SG-TABLE's inverted CNN, p = 0.3): ConvNet 16-32
  conv-act-drop-pool (hidden 64), inverted dropout p = 0.2, Adam, batch 128;
* ``spatial`` — 10 (TO-SD's spatial arm), 14 (SG-TABLE's spatial CNN): the same with spatial dropout;
* ``dropblock`` — 10 (DB-S's scheduled arm; the fixed arm and 14's DropBlock CNN without the
  schedule): the same with DropBlock (3 × 3, keep_prob ramped 1 → 0.9 over the 1,770 updates);
* ``dropconnect`` — 10 (DC-MN): 784-800-800-10 with DropConnect p = 0.5 (one mask per mini-batch),
  Adam, batch 100;
* ``mlp800`` — 10 (DC-MN's dropout arm): MLP 784-800-800-10, p = 0.5 on the hidden units, Adam, batch 100;
* ``resnet_sd`` — 10 (SDp): ResNet-20 with 8-16-32 channels and stochastic depth (p_L = 0.5; the
  baseline arm: same layers), Adam, batch 128;
* ``lm_naive``, ``lm_var``, ``lm_wd`` — 11 (GR-PTB, GR-WD, GR-MC): the character LSTM language model
  (vocabulary 63, embedding 32, LSTM 128) with naive, variational (locked masks, recurrent mask,
  embedding dropout) and weight-drop dropout (the "none" arm: naive's layers), 50-character windows,
  Adam lr 0.003, gradient clip 1, batch 32;
* ``seq`` — 11 (GR-SEQ): digits read as 8 rows of 8 pixels by an LSTM(64) with variational dropout
  (the naive and none arms: the fused LSTM), Adam lr 0.003, batch 32;
* ``standout`` — 12 (BF-1): MLP 784-1000-1000-10 with standout (α = 1, β = 0), Adam, batch 100;
* ``annealed`` — 12 (RN-A; BF-1's and RN-A's dropout arm without the schedule): the same MLP with
  inverted dropout p = 0.5 annealed to 0 over 5 epochs, Adam, batch 100;
* ``curriculum`` — 12 (CU-S; the fixed arm without the schedule): the curriculum CNN 16-24 (fc
  1024-512) with dropout on input, conv and fc layers, scheduled per update (γ = 0.0033), Adam, batch 128;
* ``adl`` — 12 (ADL-1): CNN 32-64 (hidden 128) with ADL after each conv (the no-ADL arm: same layers),
  Adam, batch 128;
* ``factor`` — 13 (MA-3): the factored linear map 12 → 8 → 10 (no bias) with dropout 0.5 between
  the factors, regression, SGD lr 0.01, batch 32;
* ``guide`` — 14 (SG-INFER, -NOISE, -RATES, -SLOW, -BATCH, -STABLE, -SEARCH, -CV; SG-TABLE's inverted
  MLP): the guide MLP 784-256-256-10, p = 0.2 / 0.5, Adam, batch 128 (``coadapt`` at batch 100);
* ``guide_sched`` — 14 (SG-SCHED): the guide MLP with p falling linearly 0.7 → 0.3 over training,
  per update, Adam, batch 128;
* ``place`` — 14 (SG-PLACE): ConvNet 16-32 conv-act-drop-bn-pool (hidden 64), p = 0.3 (the act→BN→drop
  arm: same layers), Adam, batch 128;
* ``deep`` — 14 (SG-DEEP): the deep MLP, 12 blocks of 128 units, p = 0.5 (the residual arm: the same
  layers plus the identity adds), Adam, batch 128;
* ``t_standard``, ``t_gaussian``, ``t_uout``, ``t_alpha``, ``t_dropconnect``, ``t_variational``,
  ``t_concrete``, ``t_lstm``, ``t_locked`` — 14 (SG-TABLE's family table): the guide MLP with each of
  these variants at p = 0.2 / 0.5, and the row LSTM(128) with inverted or locked dropout p = 0.5, Adam,
  batch 128.

Not a case: notebook 12's meta-training (MD-1, ``metalearning.meta_train``: MAML episodes with an inner
loop, not minibatches of a data set, so neither ``fit`` nor a minibatch floor describes it), notebook
03's dropout ridge regression (NumPy SGD, no torch model), notebook 14's SG-COST (itself a timing loop
of the ``guide`` and ``cnn16`` nets) and SG-STABLE's gradient recorder (a measurement hook on the
``guide`` net, no part of its training rule). Notebook 11 trains its LSTMs on one thread
(``torch_threads: 1``): run those cases with ``OMP_NUM_THREADS=1`` to match.

``fit`` trains with ``torch.use_deterministic_algorithms(True)`` (same seed, same bits); the floor
does not, so by default the ratio includes what that mode costs. On CPU the mode fills every newly
allocated, uninitialised tensor (``torch.utils.deterministic.fill_uninitialized_memory``), which
costs the LSTMs, with their many small per-time-step tensors, 7–12 % of an update.
``--deterministic`` runs the floor in the same mode, so the ratio shows fit's own overhead alone.

    python benchmarks/bench_train.py [--cases mlp concrete] [--samples 12800] [--repeats 3] [--device cpu]
        [--deterministic]

Timings only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dropoutlab import keep_to_drop
from dropoutlab.analysis.adaptive_experiments import AdaptiveMLP, ADLNet, CurriculumCNN, curriculum_schedules
from dropoutlab.analysis.concrete_experiments import (
    HeteroscedasticConcreteMLP,
    concrete_mlp,
    fit_heteroscedastic,
    heteroscedastic_loss,
)
from dropoutlab.analysis.cost import CostNets
from dropoutlab.analysis.ensembles import hidden_widths
from dropoutlab.analysis.ordering import RECOMMENDED, make_ordering_net
from dropoutlab.analysis.practical import deep_mlp, guide_mlp
from dropoutlab.analysis.recurrent_experiments import CharLM, SequenceClassifier
from dropoutlab.analysis.structured import keep_ramp_scheduler
from dropoutlab.analysis.studies import updates_per_epoch
from dropoutlab.analysis.sweeps import widths_for_retain
from dropoutlab.analysis.uncertainty import DEFAULT_LENGTHSCALE
from dropoutlab.analysis.variance_shift import block_orders
from dropoutlab.analysis.variational import KLWeightScheduler, kingma_arm, sparse_net, vi_mlp
from dropoutlab.models import MLP, Autoencoder, ConvNet, DropConnectMLP, ResNetSD
from dropoutlab.paths import DRY_RUN_ENV, FORECAST_ENV, RUNS_ENV
from dropoutlab.schedules import AnnealedSchedule, DropoutScheduler, KLWarmup, LinearSchedule
from dropoutlab.train import (
    TrainConfig,
    apply_max_norm,
    fit,
    regularization,
    regularized_modules,
    resolve_device,
    seed_everything,
)
from dropoutlab.variants.bernoulli import InvertedDropout
from dropoutlab.variants.concrete import concrete_regularizer_weights
from dropoutlab.variants.noise import beta_to_rate

SEED = 0
MNIST = (1, 28, 28)  # MNIST and Fashion-MNIST images
LOOPS = ("fit", "heteroscedastic")


@dataclass(frozen=True)
class Case:
    """One model of the full profile: how to build it, its input shape and its training settings.

    ``config`` holds what floor and fit share: optimiser, lr, momentum, weight decay, max-norm,
    gradient clip, batch size, task. ``out`` is the shape of one output: the class scores ``(C,)``
    (``(V, L)`` for a language model's scores at every position), or the regression outputs. ``vocab``:
    the inputs are token ids below it, not floats in [0, 1). ``scheduler`` builds, for a fresh model,
    the rate or KL-weight schedule its training rule steps (fit's ``scheduler``). ``loop`` is the
    training loop under test: ``"fit"`` or ``"heteroscedastic"`` (``fit_heteroscedastic``: its loss,
    Adam, the outputs a mean and a log-variance per target).
    """

    label: str
    make: Callable[[], nn.Module]
    shape: tuple[int, ...]
    config: TrainConfig
    out: tuple[int, ...] = (10,)
    vocab: int | None = None
    scheduler: Callable[[nn.Module], Any] | None = None
    loop: str = "fit"

    def __post_init__(self) -> None:
        if self.loop not in LOOPS:
            raise ValueError(f"Case.loop must be one of {LOOPS}, got {self.loop!r}")


def _varshift_net(order: str, **kwargs: Any) -> nn.Module:
    channels, pool_blocks = [8, 16, 16, 32], [0, 2]  # params.yaml, 05_variance_shift (quick/full size)
    return ConvNet(MNIST, channels, padding=1, hidden=64, num_classes=10,
                   order=block_orders(order, len(channels), pool_blocks), **kwargs)


def _cnn16(**kwargs: Any) -> nn.Module:
    """Notebook 10's conv_model (full: channels 16-32, hidden 64), the same net as 14's CostNets CNN."""
    return ConvNet(MNIST, [16, 32], order="conv-act-drop-pool", padding=1, hidden=64, num_classes=10, **kwargs)


def _regression_weight_decay(p: float = 0.05, n: int = 450, tau: float = 1.0) -> float:
    """The weight decay 08's regression nets get (uncertainty._train_regressor: 2·l²(1 − p)/(2Nτ·var y)),
    here for Friedman #1's 450 training points, τ = 1 and a unit-variance target (any value > 0 costs the same)."""
    return 2 * DEFAULT_LENGTHSCALE**2 * (1 - p) / (2 * n * tau)


KJV_VOCAB = 63  # the King James Bible's characters (11_recurrent_dropout, full: "vocabulary: 63 characters")
LM_RATES = dict(p_input=0.25, p_hidden=0.25, p_output=0.25, p_weight=0.25, p_embed=0.1)  # params.yaml, 11 common
LM = TrainConfig(batch_size=32, lr=0.003, grad_clip=1.0)
TABLE = CostNets(MNIST, 10, widths=(256, 256), channels=(16, 32), hidden=64, rnn_hidden=128, p_input=0.2,
                 p_hidden=0.5, p_conv=0.3, p_rnn=0.5)  # 14_practical_guide, full
ADAM100, ADAM128 = TrainConfig(batch_size=100, lr=1e-3), TrainConfig(batch_size=128, lr=1e-3)
SR_SGD = TrainConfig(batch_size=100, optimizer="sgd", lr=0.05, momentum=0.95, max_norm=3.0)  # 01/03 full

CASES: dict[str, Case] = {
    # 01, 03
    "mlp": Case("MLP 784-1024-1024-10 SGD max-norm",
                lambda: MLP(784, [1024, 1024], 10, p_input=keep_to_drop(0.8), p_hidden=keep_to_drop(0.5)),
                MNIST, SR_SGD),
    "mlp_gauss": Case("MLP 784-1024-1024-10 Gaussian SGD max-norm",
                      lambda: MLP(784, [1024, 1024], 10, dropout="gaussian", p_input=0.2, p_hidden=0.5),
                      MNIST, SR_SGD),
    "exact": Case("MLP 784-8-8-10 SGD max-norm",
                  lambda: MLP(784, hidden_widths(16, 2), 10, p_input=0.0, p_hidden=0.5),
                  MNIST, replace(SR_SGD, lr=0.01)),
    # 02
    "autoencoder": Case("Autoencoder 784-256-784 (MSE)", lambda: Autoencoder(784, 256, p=keep_to_drop(0.5)),
                        MNIST, TrainConfig(batch_size=100, lr=1e-3, task="reconstruction"), out=(784,)),
    "coadapt": Case("MLP 784-256-256-10", lambda: MLP(784, [256, 256], 10, p_input=0.2, p_hidden=0.5),
                    MNIST, ADAM100),
    # 04
    "rate": Case("MLP 784-512×3-10", lambda: MLP(784, [512, 512, 512], 10, p_input=0.0, p_hidden=0.5),
                 MNIST, ADAM100),
    "rate_pn": Case("MLP 784-1280-1280-2560-10",
                    lambda: MLP(784, widths_for_retain([256, 256, 512], 0.2, "pn"), 10, p_input=0.0, p_hidden=0.8),
                    MNIST, ADAM100),
    "size": Case("MLP 784-512-512-10", lambda: MLP(784, [512, 512], 10, p_input=0.2, p_hidden=0.5), MNIST, ADAM100),
    # 05, 06
    "varshift": Case("CNN 8-16-16-32 drop→BN", lambda: _varshift_net("conv-drop-bn-act", p=keep_to_drop(0.5)),
                     MNIST, TrainConfig(batch_size=64, lr=0.002)),
    "uout": Case("CNN 8-16-16-32 Uout→BN",
                 lambda: _varshift_net("conv-drop-bn-act", dropout="uout", p=beta_to_rate(0.1)),
                 MNIST, TrainConfig(batch_size=64, lr=0.002)),
    "ordering": Case("ConvNet 32-64 conv-bn-act-drop-pool",
                     lambda: make_ordering_net(RECOMMENDED, input_shape=MNIST, channels=(32, 64), hidden=512,
                                               padding=0),
                     MNIST, ADAM128),
    # 07
    "concrete": Case("Concrete MLP 784-512×3-10",
                     lambda: concrete_mlp(784, [512, 512, 512], 10, 50_000, length_scale=1e-4, tau=1.0,
                                          p_init=0.1, temperature=0.1),
                     MNIST, ADAM128),
    "grid": Case("MLP 784-512×3-10 p on every layer",
                 lambda: MLP(784, [512, 512, 512], 10, p_input=0.5, p_hidden=0.5), MNIST, ADAM128),
    "toy": Case("Heteroscedastic Concrete 1-512×3-2",
                lambda: HeteroscedasticConcreteMLP(1, 512, 3, 1, **dict(zip(
                    ("weight_regularizer", "dropout_regularizer"), concrete_regularizer_weights(1e-4, 1.0, 10_000)))),
                (1,), TrainConfig(batch_size=20, lr=1e-3, task="regression"), out=(2,), loop="heteroscedastic"),
    # 08
    "regression": Case("MLP 10-50-1 regression",
                       lambda: MLP(10, [50], 1, activation="relu", p_input=0.05, p_hidden=0.05),
                       (10,), TrainConfig(batch_size=128, lr=1e-3, weight_decay=_regression_weight_decay(),
                                          task="regression"), out=(1,)),
    "series": Case("MLP 1-256×4-1 regression",
                   lambda: MLP(1, [256] * 4, 1, activation="relu", p_input=0.0, p_hidden=0.1),
                   (1,), TrainConfig(batch_size=32, lr=1e-3, weight_decay=1e-6, task="regression"), out=(1,)),
    "mc_mlp": Case("MLP 784-1024-1024-10", lambda: MLP(784, [1024, 1024], 10, p_input=0.2, p_hidden=0.5),
                   MNIST, ADAM128),
    "bn_cnn": Case("ConvNet 16-32 conv-bn-act-drop-pool",
                   lambda: ConvNet(MNIST, (16, 32), order="conv-bn-act-drop-pool", p=0.2, hidden=32, padding=1,
                                   num_classes=10),
                   MNIST, TrainConfig(batch_size=64, lr=1e-3)),
    # 09
    "kw_var": Case("VI MLP 784-256-256-10 (LRT)", lambda: vi_mlp(784, [256, 256], 10, 50_000, p=0.5), MNIST, ADAM100),
    "kw_mn": Case("Kingma MLP 784-512-512-10",
                  lambda: kingma_arm("variational", 784, [512, 512], 10, 50_000, p=0.5, granularity="unit"),
                  MNIST, ADAM100),
    "kw_gauss": Case("MLP 784-512-512-10 Gaussian",
                     lambda: kingma_arm("gaussian", 784, [512, 512], 10, 50_000, p=0.5), MNIST, ADAM100),
    "lenet300": Case("LeNet-300-100 sparse VD", lambda: sparse_net("lenet300", MNIST, 10), MNIST, ADAM100,
                     scheduler=lambda m: KLWeightScheduler(m, KLWarmup(1, 2), 50_000)),
    "lenet5": Case("LeNet-5-Caffe sparse VD", lambda: sparse_net("lenet5", MNIST, 10, padding=0), MNIST, ADAM100,
                   scheduler=lambda m: KLWeightScheduler(m, KLWarmup(0, 1), 50_000)),
    # 10
    "cnn16": Case("ConvNet 16-32 conv-act-drop-pool", lambda: _cnn16(dropout="inverted", p=0.2), MNIST, ADAM128),
    "spatial": Case("ConvNet 16-32 spatial dropout", lambda: _cnn16(dropout="spatial", p=0.2), MNIST, ADAM128),
    "dropblock": Case("ConvNet 16-32 DropBlock, scheduled",
                      lambda: _cnn16(dropout="dropblock", p=keep_to_drop(0.9), dropout_kwargs={"block_size": 3}),
                      MNIST, ADAM128,
                      scheduler=lambda m: keep_ramp_scheduler(m, 0.9, 15 * updates_per_epoch(15_000, 128))),
    "dropconnect": Case("DropConnect 784-800-800-10",
                        lambda: DropConnectMLP(784, [800, 800], 10, p=0.5, inference="gaussian", n_samples=100,
                                               per_sample=False),
                        MNIST, ADAM100),
    "mlp800": Case("MLP 784-800-800-10", lambda: MLP(784, [800, 800], 10, p_input=0.0, p_hidden=0.5), MNIST, ADAM100),
    "resnet_sd": Case("ResNet-20 8-16-32 stochastic depth",
                      lambda: ResNetSD(MNIST, blocks_per_stage=3, widths=[8, 16, 32], p_last=0.5, num_classes=10),
                      MNIST, ADAM128),
    # 11
    **{f"lm_{short}": Case(f"char LSTM 128, {arm}", lambda arm=arm: CharLM(KJV_VOCAB, 32, 128, arm, **LM_RATES),
                           (50,), LM, out=(KJV_VOCAB, 50), vocab=KJV_VOCAB)
       for short, arm in (("naive", "naive"), ("var", "variational"), ("wd", "weight-drop"))},
    "seq": Case("digit rows LSTM 64, variational",
                lambda: SequenceClassifier(8, 8, 64, 10, "variational", p_input=0.25, p_hidden=0.25, p_output=0.25),
                (1, 8, 8), TrainConfig(batch_size=32, lr=0.003)),
    # 12
    "standout": Case("MLP 784-1000-1000-10 standout",
                     lambda: AdaptiveMLP(784, [1000, 1000], 10, mode="standout", p=0.5, alpha=1.0, beta=0.0),
                     MNIST, ADAM100),
    "annealed": Case("MLP 784-1000-1000-10 annealed",
                     lambda: AdaptiveMLP(784, [1000, 1000], 10, mode="dropout", p=0.5), MNIST, ADAM100,
                     scheduler=lambda m: DropoutScheduler(m, AnnealedSchedule(0.5, 6 - 1), unit="epoch")),
    "curriculum": Case("curriculum CNN 16-24, fc 1024-512",
                       lambda: CurriculumCNN(MNIST, (16, 24), (1024, 512), 10, p_input=keep_to_drop(0.9),
                                             p_conv=keep_to_drop(0.75), p_fc=keep_to_drop(0.5)),
                       MNIST, ADAM128,
                       scheduler=lambda m: DropoutScheduler(m, curriculum_schedules(0.9, 0.75, 0.5, 0.0033),
                                                            unit="step")),
    "adl": Case("CNN 32-64 with ADL", lambda: ADLNet(MNIST, (32, 64), 128, 10, adl=True, drop_rate=0.75, gamma=0.9),
                MNIST, ADAM128),
    # 13
    "factor": Case("factored linear 12-8-10 regression",
                   lambda: nn.Sequential(nn.Linear(12, 8, bias=False), InvertedDropout(0.5),
                                         nn.Linear(8, 10, bias=False)),
                   (12,), TrainConfig(batch_size=32, optimizer="sgd", lr=0.01, momentum=0.0, task="regression")),
    # 14
    "guide": Case("guide MLP 784-256-256-10", lambda: guide_mlp(MNIST, [256, 256], 10, p_input=0.2, p_hidden=0.5),
                  MNIST, ADAM128),
    "guide_sched": Case("guide MLP, p 0.7 → 0.3 per update", lambda: guide_mlp(MNIST, [256, 256], 10, p_hidden=0.7),
                        MNIST, ADAM128,
                        scheduler=lambda m: DropoutScheduler(
                            m, LinearSchedule(0.7, 0.3, 12 * updates_per_epoch(50_000, 128) - 1), unit="step")),
    "place": Case("ConvNet 16-32 conv-act-drop-bn-pool",
                  lambda: ConvNet(MNIST, [16, 32], order="conv-act-drop-bn-pool", padding=1, p=0.3, hidden=64,
                                  num_classes=10),
                  MNIST, ADAM128),
    "deep": Case("deep MLP 128×12", lambda: deep_mlp(MNIST, 128, 12, 10, p=0.5, architecture="plain"), MNIST, ADAM128),
    **{f"t_{variant}": Case(f"guide MLP, {variant}", lambda variant=variant: TABLE.build("mlp", variant), MNIST,
                            ADAM128)
       for variant in ("standard", "gaussian", "uout", "alpha", "dropconnect", "variational", "concrete")},
    "t_lstm": Case("row LSTM 128, inverted", lambda: TABLE.build("rnn", "inverted"), MNIST, ADAM128),
    "t_locked": Case("row LSTM 128, locked", lambda: TABLE.build("rnn", "locked"), MNIST, ADAM128),
}


def make_model(case: Case) -> nn.Module:
    """The case's model with the same initial weights every time it is built."""
    seed_everything(SEED)
    return case.make()


def make_data(case: Case, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` random examples ``(x, y)`` as fit gets them: inputs of ``case.shape`` (token ids below
    ``case.vocab``, else uniform in [0, 1)); class labels ``(n, *out[1:])`` for classification, standard
    normal targets shaped like the outputs for regression (one per mean and log-variance pair for the
    heteroscedastic loop), digit labels for reconstruction (whose target is the input)."""
    if case.vocab is None:
        x = torch.rand(n, *case.shape, generator=generator)
    else:
        x = torch.randint(0, case.vocab, (n, *case.shape), generator=generator)
    task = case.config.task
    if task == "regression":
        out = (case.out[0] // 2, *case.out[1:]) if case.loop == "heteroscedastic" else case.out
        return x, torch.randn(n, *out, generator=generator)
    if task == "reconstruction":  # fit's target is the input; the labels go unused
        return x, torch.randint(0, 10, (n,), generator=generator)
    return x, torch.randint(0, case.out[0], (n, *case.out[1:]), generator=generator)


def floor_target(case: Case, x: Tensor, y: Tensor) -> Tensor:
    """What the floor compares the outputs with: the flattened input for reconstruction, else ``y``."""
    return x.flatten(1) if case.config.task == "reconstruction" else y


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``fit`` makes for ``config`` (``fit_heteroscedastic``'s: Adam without weight decay)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def floor_loss(case: Case, config: TrainConfig) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss of the case's training loop: cross-entropy or MSE by task, the heteroscedastic loss for that loop."""
    if case.loop == "heteroscedastic":
        return lambda output, target: heteroscedastic_loss(target, output)
    return F.cross_entropy if config.task == "classification" else F.mse_loss


def floor_epoch(case: Case, model, scheduler, x, target, config: TrainConfig, device) -> float:
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    loss_fn = floor_loss(case, config)
    regularized, max_norm, clip, bs = regularized_modules(model), config.max_norm, config.grad_clip, config.batch_size
    per_step = scheduler is not None and scheduler.unit == "step"
    batches = [(x[i:i + bs], target[i:i + bs]) for i in range(0, len(x), bs)]
    seed_everything(SEED)
    sync(device)
    start = time.perf_counter()
    for xb, tb in batches:
        loss = loss_fn(model(xb), tb)
        if regularized:
            loss = loss + config.regularizer_weight * regularization(model, regularized)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if max_norm is not None:
            apply_max_norm(model, max_norm)
        if per_step:
            scheduler.step()
    if scheduler is not None and not per_step:  # a per-epoch schedule steps once after the (one) epoch
        scheduler.step()
    sync(device)
    return time.perf_counter() - start


def fit_epoch(case: Case, model, scheduler, x, y, config: TrainConfig, device) -> float:
    if case.loop == "heteroscedastic":
        def run():
            fit_heteroscedastic(model, x, y, 1, config.batch_size, config.lr, SEED, str(device))
    else:
        data = {"train": SimpleNamespace(x=x, y=y)}
        config = replace(config, epochs=1, eval_splits=(), seed=SEED, device=str(device), progress=False)

        def run():
            fit(model, data, config, scheduler=scheduler)
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - start


def build(case: Case) -> tuple[nn.Module, Any]:
    """A fresh model (:func:`make_model`) and its fresh schedule (None if the case has none)."""
    model = make_model(case)
    return model, case.scheduler(model) if case.scheduler is not None else None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(enabled)`` inside the block, the previous setting after it."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def select_cases(names: list[str] | None, parser: argparse.ArgumentParser) -> list[str]:
    """Short names from ``--cases`` (space- or comma-separated), in the order given; all by default."""
    if not names:
        return list(CASES)
    chosen = [n for part in names for n in part.split(",") if n]
    unknown = [n for n in chosen if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    return list(dict.fromkeys(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", metavar="NAME", help=f"subset of {', '.join(CASES)} (default: all)")
    parser.add_argument("--samples", type=int, default=12800)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="override every case's own batch size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--deterministic", action="store_true",
                        help="run the floor with deterministic algorithms on, as fit trains: the ratio then leaves out "
                             "what that mode itself costs (on CPU: filling every new uninitialised tensor)")
    args = parser.parse_args()
    names = select_cases(args.cases, parser)
    for env in (RUNS_ENV, DRY_RUN_ENV, FORECAST_ENV):  # a run store, dry run or forecast would change what fit runs
        os.environ.pop(env, None)
    device = resolve_device(args.device)
    name_w, label_w = max(4, *map(len, names)), max(5, *(len(CASES[n].label) for n in names))
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.samples} samples, one epoch, best of {args.repeats} interleaved after a warm-up round; "
          f"floor {'with' if args.deterministic else 'without'} deterministic algorithms")
    print(f"{'case':{name_w}s} {'model':{label_w}s} {'batch':>5s} {'floor samples/s':>16s} {'fit samples/s':>14s} "
          f"{'fit/floor':>10s}  goal ≥ 0.90")
    for name in names:
        case = CASES[name]
        config = case.config if args.batch_size is None else replace(case.config, batch_size=args.batch_size)
        x, y = make_data(case, args.samples, torch.Generator().manual_seed(SEED))
        x, y = x.to(device), y.to(device)
        target = floor_target(case, x, y)
        floors, fits = [], []
        for _ in range(args.repeats + 1):  # first round is warm-up
            with deterministic_algorithms(args.deterministic):
                floors.append(floor_epoch(case, *build(case), x, target, config, device))
            fits.append(fit_epoch(case, *build(case), x, y, config, device))
        floor, loop = min(floors[1:]), min(fits[1:])
        print(f"{name:{name_w}s} {case.label:{label_w}s} {config.batch_size:5d} {args.samples / floor:16.0f} "
              f"{args.samples / loop:14.0f} {floor / loop:10.2f}")


if __name__ == "__main__":
    main()
