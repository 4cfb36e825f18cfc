"""Training-loop throughput of the full profile's models against their compute floor (goal ≥ 0.9).

The floor is forward + backward + optimiser step on pre-made batches, nothing else beyond what
the model's training rule itself requires: max-norm after the step where the case uses it, and
the ``regularizer()`` terms of the modules that have one (Concrete dropout; found once, as fit does).
The loop under test is ``dropoutlab.train.fit`` on the same model (same initial weights), data,
batch size and optimiser (one epoch, no evaluation). Both run side by side, alternating, after
one warm-up round; the best of the repeats is reported for both (as timeit does): on a shared
machine the minimum is the least disturbed run. The ratio fit/floor is fit's throughput over the
floor's (= floor time / fit time; 1.0 = no overhead).

Cases (``--cases``, short names; default all), each built by the package's own constructors as
its notebook builds it, on random inputs of the right shape and random class targets (the
autoencoder's target is its flattened input):

* ``mlp`` — notebook 01 (SR-T2): MLP 784-1024-1024-10, inverted dropout p = 0.2 / 0.5, SGD
  lr 0.05 momentum 0.95, max-norm 3, batch 100;
* ``ordering`` — notebook 06: the table's ConvNet 32-64 (hidden 512, ELU, 'valid' padding,
  dropout 0.2 / 0.3) in the order conv-bn-act-drop-pool (SO-1e), Adam, batch 128;
* ``varshift`` — notebook 05: CNN 8-16-16-32 (hidden 64, pooling after blocks 1 and 3) with
  dropout 0.5 before every BN (the Drop→BN arm of LI-F1), Adam lr 0.002, batch 64;
* ``autoencoder`` — notebook 02: 784-256-784 ReLU, dropout 0.5 on the hidden code,
  reconstruction (MSE), Adam, batch 100;
* ``concrete`` — notebook 07 (CD-MN): 3×512 MLP with Concrete dropout on every layer,
  regulariser factors for N = 50,000, Adam, batch 128.

    python benchmarks/bench_train.py [--cases mlp concrete] [--samples 12800] [--repeats 3] [--device cpu]

Timings only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

from dropoutlab import keep_to_drop
from dropoutlab.analysis.concrete_experiments import concrete_mlp
from dropoutlab.analysis.ordering import RECOMMENDED, make_ordering_net
from dropoutlab.analysis.variance_shift import block_orders
from dropoutlab.models import MLP, Autoencoder, ConvNet
from dropoutlab.paths import RUNS_ENV
from dropoutlab.train import (
    TrainConfig,
    apply_max_norm,
    fit,
    regularization,
    regularized_modules,
    resolve_device,
    seed_everything,
)

SEED = 0
MNIST = (1, 28, 28)


@dataclass(frozen=True)
class Case:
    """One model of the full profile: how to build it, its input shape and its training settings.

    ``config`` holds what floor and fit share: optimiser, lr, momentum, max-norm, batch size, task.
    """

    label: str
    make: Callable[[], nn.Module]
    shape: tuple[int, ...]
    config: TrainConfig


def _varshift_net() -> nn.Module:
    channels, pool_blocks = [8, 16, 16, 32], [0, 2]  # params.yaml, 05_variance_shift (quick/full size)
    return ConvNet(MNIST, channels, padding=1, hidden=64, num_classes=10,
                   order=block_orders("conv-drop-bn-act", len(channels), pool_blocks), p=keep_to_drop(0.5))


CASES: dict[str, Case] = {
    "mlp": Case("MLP 784-1024-1024-10 SGD max-norm",
                lambda: MLP(784, [1024, 1024], 10, p_input=keep_to_drop(0.8), p_hidden=keep_to_drop(0.5)),
                MNIST, TrainConfig(batch_size=100, optimizer="sgd", lr=0.05, momentum=0.95, max_norm=3.0)),
    "ordering": Case("ConvNet 32-64 conv-bn-act-drop-pool",
                     lambda: make_ordering_net(RECOMMENDED, input_shape=MNIST, channels=(32, 64), hidden=512,
                                               padding=0),
                     MNIST, TrainConfig(batch_size=128, lr=1e-3)),
    "varshift": Case("CNN 8-16-16-32 drop→BN", _varshift_net, MNIST, TrainConfig(batch_size=64, lr=0.002)),
    "autoencoder": Case("Autoencoder 784-256-784 (MSE)", lambda: Autoencoder(784, 256, p=keep_to_drop(0.5)),
                        MNIST, TrainConfig(batch_size=100, lr=1e-3, task="reconstruction")),
    "concrete": Case("Concrete MLP 784-512×3-10",
                     lambda: concrete_mlp(784, [512, 512, 512], 10, 50_000, length_scale=1e-4, tau=1.0,
                                          p_init=0.1, temperature=0.1),
                     MNIST, TrainConfig(batch_size=128, lr=1e-3)),
}


def make_model(case: Case) -> nn.Module:
    """The case's model with the same initial weights every time it is built."""
    seed_everything(SEED)
    return case.make()


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``fit`` makes for ``config``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def floor_epoch(model, x, target, config: TrainConfig, device) -> float:
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    loss_fn = F.cross_entropy if config.task == "classification" else F.mse_loss
    regularized, max_norm, bs = regularized_modules(model), config.max_norm, config.batch_size
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
        optimizer.step()
        if max_norm is not None:
            apply_max_norm(model, max_norm)
    sync(device)
    return time.perf_counter() - start


def fit_epoch(model, x, y, config: TrainConfig, device) -> float:
    data = {"train": SimpleNamespace(x=x, y=y)}
    config = replace(config, epochs=1, eval_splits=(), seed=SEED, device=str(device), progress=False)
    sync(device)
    start = time.perf_counter()
    fit(model, data, config)
    sync(device)
    return time.perf_counter() - start


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


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
    args = parser.parse_args()
    names = select_cases(args.cases, parser)
    os.environ.pop(RUNS_ENV, None)  # a run store would make fit look up, write and reuse checkpoints
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.samples} samples, one epoch, best of {args.repeats} interleaved after a warm-up round")
    print(f"{'case':12s} {'model':36s} {'batch':>5s} {'floor samples/s':>16s} {'fit samples/s':>14s} "
          f"{'fit/floor':>10s}  goal ≥ 0.90")
    for name in names:
        case = CASES[name]
        config = case.config if args.batch_size is None else replace(case.config, batch_size=args.batch_size)
        g = torch.Generator().manual_seed(SEED)
        x = torch.rand(args.samples, *case.shape, generator=g).to(device)
        y = torch.randint(0, 10, (args.samples,), generator=g).to(device)
        target = x.flatten(1) if config.task == "reconstruction" else y
        floors, fits = [], []
        for _ in range(args.repeats + 1):  # first round is warm-up
            floors.append(floor_epoch(make_model(case), x, target, config, device))
            fits.append(fit_epoch(make_model(case), x, y, config, device))
        floor, loop = min(floors[1:]), min(fits[1:])
        print(f"{name:12s} {case.label:36s} {config.batch_size:5d} {args.samples / floor:16.0f} "
              f"{args.samples / loop:14.0f} {floor / loop:10.2f}")


if __name__ == "__main__":
    main()
