"""Time per epoch and training-step memory of every dropout family against no dropout (SG-COST, SG-TABLE).

Run: ``python benchmarks/bench_cost.py [--size quick|full] [--seeds 0 1 2] [--rounds R] [--steps S]
[--threads T] [--only LABEL ...] [--data fashion-mnist|synthetic]``

Calls :func:`dropoutlab.analysis.cost.measure_cost`, the function notebook 14 uses: for every arm of
:data:`~dropoutlab.analysis.cost.TABLE_ARMS` (inverted, standard, Gaussian, uout, alpha, DropConnect,
variational and Concrete dropout on the MLP; inverted, spatial and DropBlock on the CNN; inverted and
locked on the row-LSTM) and the same nets without dropout, training updates (forward, backward, Adam
step) run interleaved update by update, the order rotated every update, so load drift on a shared
machine hits every arm alike; each round's time per update is the median of its updates. Printed:
CPU milliseconds per update (the measuring thread's on one thread: waiting for a core does not
count), the time-per-epoch ratio against the net without dropout (median over the rounds, and the
range), the wall-clock ratio, and the training-step memory ratio — parameters, gradients, Adam's
state and the tensors autograd saves for backward, counted, not sampled. SG-COST's goal (≤ 1.10×, inverted
dropout on the MLP and the CNN) is marked. This is a script, not a test: timings depend on the
machine and its load. ``--data synthetic`` needs no download (random images of Fashion-MNIST's shape).
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch

from dropoutlab.analysis.cost import COST_ARMS, TABLE_ARMS, CostNets, measure_cost

SIZES = {  # the notebook's quick and full nets and batches
    "quick": dict(nets=dict(channels=(16, 32), hidden=64, rnn_hidden=64), batch_size=64, n=4000),
    "full": dict(nets=dict(channels=(32, 64), hidden=128, rnn_hidden=128), batch_size=128, n=50000),
}
GOAL = 1.10  # SG-COST's margin


def load(data: str, n: int):
    if data == "synthetic":
        g = torch.Generator().manual_seed(0)
        return SimpleNamespace(x=torch.rand(n, 1, 28, 28, generator=g), y=torch.randint(10, (n,), generator=g),
                               input_shape=(1, 28, 28), num_classes=10)
    from dropoutlab.data import load_dataset

    return load_dataset(data, "train", n=n if n < 50000 else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=tuple(SIZES), default="quick")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30, help="timed updates per arm and round")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads during the measurement")
    ap.add_argument("--only", nargs="*", default=None, help="arm labels to run (default: all), e.g. 'inverted (MLP)'")
    ap.add_argument("--data", default="fashion-mnist", help="fashion-mnist (data/raw) or synthetic")
    args = ap.parse_args()
    size = SIZES[args.size]
    arms = {k: v for k, v in TABLE_ARMS.items() if not args.only or k in args.only}
    if not arms:
        ap.error(f"--only: no such arm; arms: {', '.join(TABLE_ARMS)}")
    split = load(args.data, size["n"])
    nets = CostNets(tuple(split.input_shape), split.num_classes, **size["nets"])
    study = measure_cost(nets, arms, split, args.seeds, batch_size=size["batch_size"], steps=args.steps,
                         warmup=args.warmup, rounds=args.rounds, threads=args.threads)
    print(f"torch {torch.__version__}, cpu, {args.threads} thread(s); {args.size} nets, batch {size['batch_size']}, "
          f"{args.data}; {len(args.seeds)} seed(s) × {args.rounds} rounds of {args.steps} interleaved updates; "
          "ratio = arm / same net without dropout")
    header = (f"{'arm':<20} {'ms/update':>9} {'time ×':>7} {'range':>13} {'wall ×':>7} {'memory ×':>8} {'saved ×':>8}"
              "  goal")
    print(header)
    print("-" * len(header))
    missed = []
    for row in study.summary().itertuples():
        goal = ""
        if row.arm in COST_ARMS.values():
            ok = row.time_ratio <= GOAL and row.memory_ratio <= GOAL
            goal = f"≤{GOAL:.2f}× {'yes' if ok else 'NO'}"
            if not ok:
                missed.append(row.arm)
        print(f"{row.arm:<20} {row.ms_per_update:>9.2f} {row.time_ratio:>6.2f}× "
              f"{f'{row.time_low:.2f}–{row.time_high:.2f}':>13} {row.wall_ratio:>6.2f}× {row.memory_ratio:>7.3f}× "
              f"{row.saved_ratio:>7.2f}×  {goal}")
    print("SG-COST goal missed (median, not the registered interval rule): " + (", ".join(missed) or "none"))


if __name__ == "__main__":
    main()
