"""Training-loop throughput as a fraction of the compute floor (goal ≥ 0.9).

The floor is forward + backward + optimiser step on pre-made batches, nothing else; the
loop under test is ``dropoutlab.train.fit`` on the same model, data and batch size (one
epoch, no evaluation). Both run side by side, alternating, several repeats; medians are
printed with their ratio floor/fit (1.0 = no overhead). The best of the repeats is
reported for both (as timeit does): on a shared machine the minimum is the least disturbed run.

    python benchmarks/bench_train.py [--samples 12800] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
from torch.nn import functional as F

from dropoutlab.models import MLP, ConvNet
from dropoutlab.train import TrainConfig, fit, resolve_device


def floor_epoch(model, x, y, batch_size, device):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    sync(device)
    start = time.perf_counter()
    for xb, yb in batches:
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return time.perf_counter() - start


def fit_epoch(model, x, y, batch_size, device):
    data = {"train": SimpleNamespace(x=x, y=y)}
    config = TrainConfig(epochs=1, batch_size=batch_size, eval_splits=(), device=str(device), progress=False)
    sync(device)
    start = time.perf_counter()
    fit(model, data, config)
    sync(device)
    return time.perf_counter() - start


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=12800)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cases = {
        "MLP 784-1024-1024-10": (lambda: MLP(784, [1024, 1024], 10, p_input=0.2, p_hidden=0.5), (1, 28, 28)),
        "ConvNet 32-64, bn+drop": (lambda: ConvNet((1, 28, 28), (32, 64), order="conv-bn-act-drop-pool",
                                                   activation="elu", p=(0.2, 0.3), hidden=512), (1, 28, 28)),
    }
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.samples} samples, batch {args.batch_size}, best of {args.repeats} interleaved")
    print(f"{'model':26s} {'floor s':>9s} {'fit s':>9s} {'floor/fit':>10s}  goal ≥ 0.90")
    for label, (make, shape) in cases.items():
        g = torch.Generator().manual_seed(0)
        x = torch.rand(args.samples, *shape, generator=g).to(device)
        y = torch.randint(0, 10, (args.samples,), generator=g).to(device)
        floors, fits = [], []
        for _ in range(args.repeats + 1):  # first round is warm-up
            floors.append(floor_epoch(make().to(device), x, y, args.batch_size, device))
            fits.append(fit_epoch(make(), x, y, args.batch_size, device))
        floor, loop = min(floors[1:]), min(fits[1:])
        print(f"{label:26s} {floor:9.3f} {loop:9.3f} {floor / loop:10.2f}")


if __name__ == "__main__":
    main()
