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

Cases (``--cases``; default: the nets that dominate the full profile's time): any case of
``benchmarks/bench_train.py``, the same model, optimiser, batch size and training rule (max-norm,
regularisers, schedules), trained by that benchmark's floor loop on its random data:

* ``mlp`` — notebooks 01/03: MLP 784-1024-1024-10, SGD momentum, max-norm, batch 100;
* ``rate`` — notebooks 04/07: MLP 784-512×3-10, batch 100;
* ``guide`` — notebooks 12/14: MLP 784-256-256-10, batch 128;
* ``cnn16`` — notebooks 10/14: ConvNet 16-32, hidden 64, batch 128;
* ``varshift`` — notebook 05: ConvNet 8-16-16-32, hidden 64, batch 64;
* ``resnet_sd`` — notebook 10: ResNet-20 with 8-16-32 channels and stochastic depth, batch 128;
* ``lenet5`` — notebook 09: LeNet-5-Caffe with sparse variational dropout, batch 100.

    python benchmarks/bench_threads.py [--cases guide cnn16] [--updates 200] [--repeats 3]

Timings only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os

import torch
from bench_train import CASES as NETS  # the training benchmark's nets (benchmarks/ is on the path)
from bench_train import SEED, build, floor_epoch, floor_target, make_data

#: The default cases: the nets that dominate the full profile's time.
DEFAULT = ("mlp", "rate", "guide", "cnn16", "varshift", "resnet_sd", "lenet5")
WARMUP = 5  # untimed updates before the timed ones


def train(case: str, updates: int, threads: int) -> float:
    """Seconds for ``updates`` training updates of ``case`` on ``threads`` threads (after 5 warm-up updates)."""
    torch.set_num_threads(threads)
    net = NETS[case]
    bs, device = net.config.batch_size, torch.device("cpu")
    x, y = make_data(net, (WARMUP + updates) * bs, torch.Generator().manual_seed(SEED))
    target = floor_target(net, x, y)
    model, scheduler = build(net)
    floor_epoch(net, model, scheduler, x[:WARMUP * bs], target[:WARMUP * bs], net.config, device)
    return floor_epoch(net, model, scheduler, x[WARMUP * bs:], target[WARMUP * bs:], net.config, device)


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
    parser.add_argument("--cases", nargs="+", choices=sorted(NETS), default=list(DEFAULT), metavar="NAME",
                        help=f"cases of bench_train.py (default: {' '.join(DEFAULT)})")
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
