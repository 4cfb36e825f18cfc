"""Forward+backward speed of every activation dropout variant against torch's own dropout.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_variants.py [--repeats R] [--device cpu|cuda]``

For each registered variant of kind "activation" (every variant module that imports), on an MLP
activation 128×1024 and a conv map 32×64×28×28, the script times one training-mode forward plus
backward (median over ``--repeats`` runs after warm-up) and divides it by the same measurement of
``torch.nn.functional.dropout`` (p = 0.5) on the same tensor; runs of the variant and the
reference are interleaved, so load drift on a shared machine hits both alike. ``spatial`` is also
compared with ``F.dropout2d``. Goals: inverted ≤ 0.5× (MLP; ≤ 1.0× on the conv map), other
elementwise variants ≤ 1.0× of F.dropout, spatial ≤ 1.05× of F.dropout2d; structured and learned
variants are listed without a goal. Variants that cannot take an input (wrong rank, ...) are
skipped with the reason.
This is a script, not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dropoutlab.variants
from dropoutlab.variants import list_dropouts

VARIANT_MODULES = ("noise", "recurrent", "structured", "concrete", "bayesian", "adaptive")

SHAPES = {"MLP 128×1024": (128, 1024), "conv 32×64×28×28": (32, 64, 28, 28)}
P = 0.5

#: Constructor kwargs where ``p=P`` alone does not suffice; a callable gets the input tensor.
KWARGS: dict[str, dict[str, Any] | Callable[[Tensor], dict[str, Any]]] = {
    "uout": {"beta": 0.1},  # the usual β (its Bernoulli-equivalent rate is only 0.003)
    "dropblock": {"p": 0.1, "block_size": 7},  # DropBlock's ImageNet setting
    "adl": {"drop_rate": 0.75},
    "meta": lambda x: {"features": x.shape[1], "spatial": x.dim() > 2},
}

#: Goal ratios against F.dropout (spatial: against F.dropout2d). The project's 0.5× goal for
#: inverted dropout is set at the MLP size; elsewhere elementwise variants aim at ≤ 1.0×.
GOALS = {"inverted": 0.5, "standard": 1.0, "gaussian": 1.0, "uout": 1.0, "alpha": 1.0}
GOAL_SHAPE = {"inverted": "MLP 128×1024"}
SPATIAL_GOAL = 1.05


def import_variant_modules() -> list[str]:
    notes = []
    for name in VARIANT_MODULES:
        try:
            importlib.import_module(f"{dropoutlab.variants.__name__}.{name}")
        except ImportError as err:
            notes.append(f"variants.{name}: not imported ({err})")
    return notes


def build(name: str, cls: type, x: Tensor) -> nn.Module:
    """Module for ``name`` with the kwargs table, falling back from ``p=P`` to the defaults."""
    spec = KWARGS.get(name)
    if spec is not None:
        kwargs = spec(x) if callable(spec) else dict(spec)
        return cls(**kwargs)
    try:
        return cls(p=P)
    except TypeError:
        return cls()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_fn(fn: Callable[[Tensor], Tensor], base: Tensor) -> Callable[[], None]:
    grad = torch.ones_like(base)

    def step() -> None:
        x = base.detach().requires_grad_(True)
        y = fn(x)
        y.backward(grad if y.shape == grad.shape else torch.ones_like(y))

    return step


def interleaved_medians(fns: dict[str, Callable[[], None]], repeats: int, warmup: int,
                        device: torch.device) -> dict[str, float]:
    """Median seconds of each function; the functions run in turn within each repeat, in an order
    rotated every repeat so that none always follows the same one (allocator and cache state)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for i in range(repeats):
        for key in keys[i % len(keys):] + keys[:i % len(keys)]:
            fn = fns[key]
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=25, help="timed runs per measurement (median)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave)")
    ap.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    notes = import_variant_modules()
    torch.manual_seed(0)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; forward+backward, median of {args.repeats} "
          f"interleaved runs, p = {P}; ratio = variant / reference")
    for note in notes:
        print(f"  note: {note}")

    variants = [info for info in list_dropouts() if info.kind == "activation"]
    if args.only:
        variants = [info for info in variants if info.name in args.only]
    header = f"{'variant':<10} {'input':<17} {'reference':<12} {'variant ms':>10} {'ref ms':>8} {'ratio':>7} " \
             f"{'goal':>7}  ok"
    print(header)
    print("-" * len(header))
    missed = []
    for info in variants:
        for label, shape in SHAPES.items():
            base = torch.randn(shape, device=device)
            try:
                mod = build(info.name, info.cls, base).to(device).train()
                step_fn(mod, base)()  # probe: can it take this input at all?
            except (ValueError, RuntimeError, TypeError) as err:
                reason = str(err).splitlines()[0]
                print(f"{info.name:<10} {label:<17} skipped: {type(err).__name__}: {reason[:110]}")
                continue
            refs = {"F.dropout": lambda x: F.dropout(x, P, training=True)}
            if info.name == "spatial":
                refs["F.dropout2d"] = lambda x: F.dropout2d(x, P, training=True)
            for ref, ref_fn in refs.items():
                # One interleaved pair per reference: with a third function in the rotation, one of
                # the two would more often follow the big allocations of F.dropout (a few %).
                fns = {"variant": step_fn(mod, base), ref: step_fn(ref_fn, base)}
                med = interleaved_medians(fns, args.repeats, args.warmup, device)
                goal = SPATIAL_GOAL if ref == "F.dropout2d" else (
                    None if info.name == "spatial" else GOALS.get(info.name))
                if goal is not None and GOAL_SHAPE.get(info.name, label) != label:
                    goal = 1.0
                ratio = med["variant"] / med[ref]
                ok = "" if goal is None else ("yes" if ratio <= goal else "NO")
                if ok == "NO":
                    missed.append(f"{info.name} on {label} vs {ref}")
                goal_text = "—" if goal is None else f"≤{goal:.2f}×"
                print(f"{info.name:<10} {label:<17} {ref:<12} {med['variant'] * 1e3:>10.3f} "
                      f"{med[ref] * 1e3:>8.3f} {ratio:>6.2f}× {goal_text:>7}  {ok}")
    print("goals missed: " + (", ".join(missed) if missed else "none"))


if __name__ == "__main__":
    main()
