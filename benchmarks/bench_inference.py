"""Speed of vectorised MC dropout and exact sub-network enumeration (not a timed test).

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_inference.py [--threads N] [--repeats R]``

* ``predict_mc(T=50)`` against a Python loop of 50 forward passes under ``mc_dropout``, on
  an MLP 784-1024-1024-10 with inverted dropout (p = 0.2 input, 0.5 hidden), at batch 1 and
  batch 1000. ratio = loop time / predict_mc time (goal: >= 3 at batch 1, >= 1 at batch 1000).
* ``enumerate_subnetworks`` with n = 16 dropout units (784-16-10, batch 100; goal <= 10 s).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from dropoutlab.inference import enumerate_subnetworks, mc_dropout, predict_mc
from dropoutlab.variants import make_dropout


def mlp(widths: list[int], p_in: float, p_hidden: float) -> nn.Sequential:
    layers: list[nn.Module] = [make_dropout("inverted", p=p_in)] if p_in > 0 else []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers += [nn.ReLU(), make_dropout("inverted", p=p_hidden)]
    return nn.Sequential(*layers)


def best_of_interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Minimum wall time of each function; runs are interleaved so load drifts hit all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def loop_mc(model: nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
    with mc_dropout(model), torch.no_grad():
        return torch.stack([model(x) for _ in range(T)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--T", type=int, default=50)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, best of {args.repeats}")

    model = mlp([784, 1024, 1024, 10], p_in=0.2, p_hidden=0.5)
    T = args.T
    print(f"\npredict_mc vs loop, MLP 784-1024-1024-10, T={T}")
    print(f"{'batch':>6} {'loop [ms]':>10} {'predict_mc [ms]':>16} {'ratio':>6}")
    for batch in (1, 1000):
        x = torch.randn(batch, 784)
        t = best_of_interleaved({"loop": lambda x=x: loop_mc(model, x, T),
                                 "mc": lambda x=x: predict_mc(model, x, T)}, args.repeats)
        t_loop, t_mc = t["loop"], t["mc"]
        print(f"{batch:>6} {1e3 * t_loop:>10.1f} {1e3 * t_mc:>16.1f} {t_loop / t_mc:>6.2f}")

    n = 16
    small = mlp([784, n, 10], p_in=0.0, p_hidden=0.5).double()
    x = torch.randn(100, 784, dtype=torch.float64)
    t0 = time.perf_counter()
    res = enumerate_subnetworks(small, x)
    t_enum = time.perf_counter() - t0
    print(f"\nenumerate_subnetworks: n={res.n_units} units, {res.n_subnetworks} sub-networks, batch 100, "
          f"float64: {t_enum:.2f} s")


if __name__ == "__main__":
    main()
