"""benchmarks/bench_train.py builds every case's model (one forward pass on 2 samples; nothing is timed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

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
