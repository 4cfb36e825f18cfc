"""What the run store costs a training run: ``fit`` with a run store against ``fit`` without (goal ≤ 1.1).

In the ``full`` profile every ``fit`` runs with a run store (``DROPOUTLAB_RUNS``): the run's content
key is hashed, a run in progress is checkpointed so that an interrupted stage resumes, and the
finished run is written for later stages to load. For a large net that is nothing next to the
training; for a small net trained for many short epochs (notebook 08's regression nets: 400 epochs
of 3 updates, 320 nets per part) the checkpoints can cost more than the training. This script
trains the same net, same data and seed, both ways, alternating after a warm-up round, best of
``--repeats`` (each store run in a fresh, empty store, so nothing is loaded), and prints the
ratio of times: store / no store (1.0 = the store costs nothing).

Cases (``--cases``; default all): ``benchmarks/bench_train.py``'s nets of the same names, on its
random data, with the number of rows and epochs of the notebook's runs:

* ``regression`` — notebook 08 (GG-MC): MLP 10-50-1, 318 rows (a 90/10 split of 442 less its 20 %
  validation part), batch 128: 400 epochs of 3 updates;
* ``factor`` — notebook 13 (MA-3): the linear 12-8-10 net, 1,000 rows, batch 32: 100 epochs;
* ``mlp`` — notebook 01 (SR-T2): MLP 784-1024-1024-10, 6,400 images, batch 100: 2 epochs (a large net:
  the store's cost should vanish).

    python benchmarks/bench_store.py [--cases regression] [--repeats 3]

Timings only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace

import torch
from bench_train import CASES as NETS  # the same nets as the training benchmark (benchmarks/ is on the path)
from bench_train import Case, make_data

from dropoutlab.paths import DRY_RUN_ENV, FORECAST_ENV, RUNS_ENV
from dropoutlab.train import fit, seed_everything

SEED = 0
CASES: dict[str, tuple[int, int]] = {"regression": (318, 400), "factor": (1000, 100), "mlp": (6400, 2)}  # rows, epochs


@contextmanager
def run_store(store: str | None) -> Iterator[None]:
    """``DROPOUTLAB_RUNS`` set to ``store`` (unset for None) inside the block, as it was after it."""
    saved = os.environ.get(RUNS_ENV)
    if store is None:
        os.environ.pop(RUNS_ENV, None)
    else:
        os.environ[RUNS_ENV] = store
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(RUNS_ENV, None)
        else:
            os.environ[RUNS_ENV] = saved


def time_fit(case: Case, epochs: int, data, store: str | None) -> float:
    """Seconds for one ``fit`` of the case's net (same initial weights every call), with or without a store."""
    seed_everything(SEED)
    model = case.make()
    config = replace(case.config, epochs=epochs, eval_splits=(), seed=SEED, device="cpu", progress=False)
    with run_store(store):
        start = time.perf_counter()
        fit(model, data, config)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name in (DRY_RUN_ENV, FORECAST_ENV):  # the timed runs are real runs
        os.environ.pop(name, None)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, best of {args.repeats} "
          "interleaved after a warm-up round; each store run in a fresh, empty store")
    print(f"{'case':11s} {'model':54s} {'no store s':>10s} {'store s':>8s} {'store/no store':>15s}  goal ≤ 1.10")
    with tempfile.TemporaryDirectory(prefix="bench_store-") as root:
        for name in args.cases:
            (rows, epochs), case, plain, stored = CASES[name], NETS[name], [], []
            x, y = make_data(case, rows, torch.Generator().manual_seed(SEED))
            data = {"train": SimpleNamespace(x=x, y=y)}
            for round_ in range(args.repeats + 1):  # first round is warm-up
                plain.append(time_fit(case, epochs, data, None))
                stored.append(time_fit(case, epochs, data, tempfile.mkdtemp(prefix=f"{name}-{round_}-", dir=root)))
            base, with_store = min(plain[1:]), min(stored[1:])
            label = f"{case.label}, {rows} rows, {epochs} epochs"
            print(f"{name:11s} {label:54s} {base:10.2f} {with_store:8.2f} {with_store / base:15.2f}")


if __name__ == "__main__":
    main()
