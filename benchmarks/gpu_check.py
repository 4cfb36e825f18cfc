"""One command for a GPU machine (`make gpu-check`): ten minutes that say whether the paper profile
is ready to run there, and how fast it will go.

In order, each step timed, the whole within ``--minutes`` (default 10):

1. the device (name, memory, torch and CUDA versions);
2. the CUDA tests (``pytest -m cuda``: every variant on the GPU, no host sync in a fixed-rate
   forward pass, deterministic training bit-identical, weight drop through cuDNN);
3. the training benchmark on the GPU (``benchmarks/bench_train.py --device cuda``: samples/s of
   ``fit`` against the compute floor, for the cases of ``GPU_BENCH_CASES``);
4. a dry run of every notebook's ``paper`` configuration on the GPU (``run-notebook --dry-run``);
5. then ``paper``-profile training stages (``--stages``, default notebook 01's seed parts), each
   only if its estimate fits in the time left, as the pipeline would run them: the runs in
   ``runs/paper/<notebook>/<part>/``, where the notebook's own paper stage finds them later.

Writes ``reports/paper/gpu_check.json`` (atomically): the device, and per step its command, exit
status and seconds. Exit status 1 if a step failed. Timings only: nothing is asserted here.

    python benchmarks/gpu_check.py [--minutes 10] [--stages 01_dropout_vs_none:seed-0 ...] [--no-train]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from dropoutlab._io import atomic_write_text
from dropoutlab.notebooks import list_notebooks, load_params
from dropoutlab.paths import reports_dir
from dropoutlab.pipeline import notebook_parts

ROOT = Path(__file__).resolve().parents[1]
# Minutes each paper-profile stage is expected to take on one H100/H200-class GPU, estimated from its
# updates (params.yaml, paper) at ~2 ms per update for these small nets (kernel-launch bound) plus
# per-epoch evaluation; a measured time replaces an estimate once a GPU has run the stage.
# 01_dropout_vs_none, part seed-K: 784-1024-1024-10 with and without dropout, 50 epochs of 50,000
# images at batch 100 = 2 × 25,000 updates.
ESTIMATE_MIN = {"01_dropout_vs_none:seed-0": 3, "01_dropout_vs_none:seed-1": 3, "01_dropout_vs_none:seed-2": 3}
DEFAULT_STAGES = list(ESTIMATE_MIN)
# bench_train's cases run here: the five the README's time estimate is for (its full list is for a longer session)
GPU_BENCH_CASES = ["mlp", "ordering", "varshift", "autoencoder", "concrete"]


def step(name: str, cmd: list[str], timeout: float, steps: list[dict]) -> bool:
    started = time.perf_counter()
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    try:
        rc = subprocess.run(cmd, cwd=ROOT, timeout=max(timeout, 1)).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    seconds = round(time.perf_counter() - started, 1)
    steps.append({"step": name, "command": " ".join(cmd), "status": rc, "seconds": seconds})
    print(f"== {name}: status {rc}, {seconds} s", flush=True)
    return rc == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="time budget of the whole check (default 10)")
    parser.add_argument("--stages", nargs="*", default=DEFAULT_STAGES, metavar="NOTEBOOK:PART",
                        help="paper-profile training stages (pipeline.parts.paper) to run in this order while their "
                             f"estimates fit; default {' '.join(DEFAULT_STAGES)}")
    parser.add_argument("--no-train", action="store_true", help="stop after the dry runs")
    args = parser.parse_args()
    params = load_params(ROOT)
    parts = {}
    for stage in args.stages:
        name, _, part = stage.partition(":")
        known = notebook_parts(name, "paper", params) if name in list_notebooks(ROOT) else {}
        if part not in known:
            parser.error(f"--stages: {stage!r} is not a paper-profile stage; params.yaml pipeline.parts.paper gives "
                         f"{name}: {', '.join(known) or 'none'}")
        parts[stage] = (name, part, known[part])
    if not args.minutes > 0:
        parser.error(f"--minutes must be > 0, got {args.minutes}")
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing to check", file=sys.stderr)
        return 2
    deadline = time.monotonic() + 60 * args.minutes
    props = torch.cuda.get_device_properties(0)
    device = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1), "torch": torch.__version__,
              "cuda": torch.version.cuda, "host": platform.node()}
    print(f"device: {device}", flush=True)
    steps: list[dict] = []
    python = sys.executable
    ok = step("cuda tests", [python, "-m", "pytest", "-q", "-m", "cuda", "tests"], deadline - time.monotonic(), steps)
    ok &= step("training benchmark", [python, "benchmarks/bench_train.py", "--device", "cuda", "--samples", "51200",
                                      "--cases", *GPU_BENCH_CASES], deadline - time.monotonic(), steps)
    for name in list_notebooks(ROOT):
        ok &= step(f"dry run {name}", [python, "-m", "dropoutlab.cli", "run-notebook", name, "--profile", "paper",
                                       "--dry-run"], deadline - time.monotonic(), steps)
    if not args.no_train:
        for stage, (name, part, overrides) in parts.items():
            left = (deadline - time.monotonic()) / 60
            if ESTIMATE_MIN.get(stage, float("inf")) > left:
                steps.append({"step": f"paper {stage}", "status": "skipped",
                              "reason": f"estimate {ESTIMATE_MIN.get(stage, 'unknown')} min > {left:.1f} min left"})
                continue
            cmd = [python, "-m", "dropoutlab.cli", "run-notebook", name, "--profile", "paper", "--part", part]
            cmd += [arg for key, value in overrides.items() for arg in ("-p", f"{key}={json.dumps(value)}")]
            ok &= step(f"paper {stage}", cmd, deadline - time.monotonic(), steps)
    out = reports_dir("paper", ROOT) / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"device": device, "minutes": args.minutes, "steps": steps}, indent=1) + "\n")
    print(f"gpu-check: {'all steps passed' if ok else 'a step failed'}; {out.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
