"""Two training processes on one thread each against one process on two threads (goal: ratio > 1.2).

The full profile trains many small nets one after another. On a 2-core machine each update runs
either on two threads (``cpu_threads: 2``, how every stage runs today) or, if two parts of a
stage ran side by side, on one thread each. This script measures which gives more updates per
second for the models that dominate the full profile's time, so the pipeline's choice rests on a
measurement of this machine, not on a guess:

* ``two_threads`` — one process, ``torch.set_num_threads(2)``, ``--updates`` updates;
* ``one_thread`` — one process, one thread, the same updates (the 2-thread speed-up is
  one_thread / two_threads);
* ``side_by_side`` — two processes started together, one thread each, ``--updates`` updates
  each; time until the slower finishes;
* ``passive`` — as ``two_threads`` with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep at a
  barrier instead of spinning; results do not change). On a busy machine spinning threads wait for
  a descheduled partner, which made one training stage here 9–20× slower; the ratio
  passive / two_threads is what the policy costs on idle cores.

The ratio printed is throughput(side_by_side) / throughput(two_threads)
= 2 · t(two_threads) / t(side_by_side): above 1, two one-thread processes side by side finish the
same work sooner than the two-thread process. The three measurements alternate over
``--repeats`` rounds after one warm-up round; the best time of each is reported (the least
disturbed run of a shared machine, as timeit does). Run it on otherwise idle cores.

Cases (``--cases``; default all), built by the package's constructors with the full profile's
sizes, on random inputs and class targets, Adam unless stated:

* ``mlp1024`` — notebook 01/03: MLP 784-1024-1024-10, p 0.2 / 0.5, SGD momentum, batch 100;
* ``mlp512x3`` — notebooks 04/07: MLP 784-512-512-512-10, batch 100;
* ``mlp256`` — notebooks 12/14: MLP 784-256-256-10, batch 128;
* ``cnn16`` — notebooks 10/14: ConvNet 16-32, hidden 64, batch 128;
* ``varshift`` — notebook 05: ConvNet 8-16-16-32, hidden 64, batch 64;
* ``resnet`` — notebook 10: ResNet-20 with 8-16-32 channels and stochastic depth, batch 128;
* ``lenet5`` — notebook 09: LeNet-5-Caffe with sparse variational dropout, batch 100.

    python benchmarks/bench_threads.py [--cases mlp256 cnn16] [--updates 200] [--repeats 3]

Timings only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from dropoutlab.models import MLP, ConvNet, LeNet5Caffe, ResNetSD

CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int, str]] = {
    "mlp1024": (lambda: MLP(784, [1024, 1024], 10, p_input=0.2, p_hidden=0.5), (784,), 100, "sgd"),
    "mlp512x3": (lambda: MLP(784, [512, 512, 512], 10, p_hidden=0.5), (784,), 100, "adam"),
    "mlp256": (lambda: MLP(784, [256, 256], 10, p_input=0.2, p_hidden=0.5), (784,), 128, "adam"),
    "cnn16": (lambda: ConvNet((1, 28, 28), channels=(16, 32), hidden=64), (1, 28, 28), 128, "adam"),
    "varshift": (lambda: ConvNet((1, 28, 28), channels=(8, 16, 16, 32), hidden=64, padding=1,
                                 order="drop-conv-bn-act", p=0.5),
                 (1, 28, 28), 64, "adam"),
    "resnet": (lambda: ResNetSD((1, 28, 28), widths=(8, 16, 32), blocks_per_stage=3), (1, 28, 28), 128, "adam"),
    "lenet5": (lambda: LeNet5Caffe((1, 28, 28), 10), (1, 28, 28), 100, "adam"),
}


def train(case: str, updates: int, threads: int) -> float:
    """Seconds for ``updates`` training updates of ``case`` on ``threads`` threads (after 5 warm-up updates)."""
    torch.set_num_threads(threads)
    make, shape, batch, optimizer = CASES[case]
    torch.manual_seed(0)
    model = make().train()
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.95) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=1e-3))
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    for step in range(updates + 5):
        if step == 5:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return time.perf_counter() - start


def _worker(case: str, updates: int, threads: int, barrier, out) -> None:
    barrier.wait()
    out.put(train(case, updates, threads))


def in_processes(case: str, updates: int, threads: int, processes: int, env: dict[str, str] | None = None) -> float:
    """Seconds until the slowest of ``processes`` fresh processes, started together, has done ``updates`` updates.

    Each process is spawned with ``env`` added to the environment (read by OpenMP when it loads).
    """
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(processes + 1), ctx.Queue()
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    try:
        procs = [ctx.Process(target=_worker, args=(case, updates, threads, barrier, out)) for _ in range(processes)]
        for proc in procs:
            proc.start()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    barrier.wait()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    return max(results)  # they start their timed updates together, after the same warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--updates", type=int, default=200, help="timed updates per measurement (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds after a warm-up (default 3)")
    args = parser.parse_args()
    if args.updates < 1 or args.repeats < 1:
        parser.error(f"--updates and --repeats must be ≥ 1, got {args.updates} and {args.repeats}")
    print(f"{'case':10s} {'2 threads':>10s} {'1 thread':>10s} {'2×1 side by side':>17s} "
          f"{'speed-up of 2 threads':>22s} {'ratio (goal > 1.2)':>19s} {'passive / 2 threads':>20s}")
    for case in args.cases:
        best = dict.fromkeys(("two", "one", "pair", "passive"), float("inf"))
        for round_ in range(args.repeats + 1):
            times = {"two": in_processes(case, args.updates, 2, 1), "one": in_processes(case, args.updates, 1, 1),
                     "pair": in_processes(case, args.updates, 1, 2),
                     "passive": in_processes(case, args.updates, 2, 1, {"OMP_WAIT_POLICY": "PASSIVE"})}
            if round_:  # round 0 warms up
                best = {k: min(best[k], v) for k, v in times.items()}
        ratio = 2 * best["two"] / best["pair"]
        print(f"{case:10s} {best['two']:9.2f}s {best['one']:9.2f}s {best['pair']:16.2f}s "
              f"{best['one'] / best['two']:21.2f}× {ratio:18.2f}× {best['passive'] / best['two']:19.2f}×")


if __name__ == "__main__":
    main()
