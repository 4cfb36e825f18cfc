"""benchmarks/bench_train.py builds every case's model (one forward pass on 2 samples; nothing is timed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dropoutlab.notebooks import load_params
from dropoutlab.pipeline import notebook_parts

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script executes
    spec.loader.exec_module(module)
    return module


bench = load_bench()


@pytest.mark.parametrize("name", list(bench.CASES))
def test_case_builds_and_runs_forward(name):
    case = bench.CASES[name]
    model = bench.make_model(case)
    out = model(torch.rand(2, *case.shape))
    expected = (2, 784) if case.config.task == "reconstruction" else (2, 10)
    assert out.shape == expected
    assert bool(bench.regularized_modules(model)) == (name == "concrete")


def test_cases_cover_the_requested_models():
    assert list(bench.CASES) == ["mlp", "ordering", "varshift", "autoencoder", "concrete"]
    assert bench.CASES["mlp"].config.max_norm == 3.0
    assert bench.CASES["autoencoder"].config.task == "reconstruction"


GPU_CHECK = BENCH.with_name("gpu_check.py")


@pytest.mark.parametrize("args, message", [
    (["--stages", "01_dropout_vs_none:seed-9"], "--stages: '01_dropout_vs_none:seed-9' is not a paper-profile stage"),
    (["--stages", "nope:seed-0"], "--stages: 'nope:seed-0' is not a paper-profile stage"),
    (["--minutes", "0"], "--minutes must be > 0"),
])
def test_gpu_check_refuses_bad_arguments_before_anything_runs(args, message):
    out = subprocess.run([sys.executable, str(GPU_CHECK), *args], capture_output=True, text=True, cwd=BENCH.parents[1])
    assert out.returncode == 2 and message in out.stderr


def test_gpu_check_default_stages_are_paper_stages_with_estimates():
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parts = notebook_parts("01_dropout_vs_none", "paper", load_params(BENCH.parents[1]))
    assert module.DEFAULT_STAGES and all(stage.split(":")[1] in parts for stage in module.DEFAULT_STAGES)
    assert set(module.DEFAULT_STAGES) <= set(module.ESTIMATE_MIN)
