"""benchmarks/bench_train.py: every case builds, runs a forward pass of the right shape and two training
batches through the floor and the loop under test; its docstring lists every case and every notebook."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dropoutlab.notebooks import list_notebooks, load_params, profile_parameters
from dropoutlab.paths import DRY_RUN_ENV, FORECAST_ENV, RUNS_ENV
from dropoutlab.pipeline import notebook_parts

ROOT = Path(__file__).resolve().parents[1]


def load_bench(name: str = "bench_train"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script executes
    spec.loader.exec_module(module)
    return module


bench = load_bench()
store_bench = load_bench("bench_store")  # imports bench_train by name: loaded above
threads_bench = load_bench("bench_threads")
# the cases whose modules add regularizer() terms to the loss (the floor must add them too)
REGULARIZED = {"concrete", "toy", "kw_var", "kw_mn", "lenet300", "lenet5", "t_variational", "t_concrete"}


@pytest.mark.parametrize("name", list(bench.CASES))
def test_case_builds_and_runs_forward(name):
    case = bench.CASES[name]
    model = bench.make_model(case)
    x, y = bench.make_data(case, 2, torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (2, *case.out)
    loss = bench.floor_loss(case, case.config)(out, bench.floor_target(case, x, y))
    assert loss.shape == () and torch.isfinite(loss)
    assert bool(bench.regularized_modules(model)) == (name in REGULARIZED)


@pytest.mark.parametrize("name", list(bench.CASES))
def test_floor_and_loop_train_two_batches(name, monkeypatch, one_thread):
    for env in (RUNS_ENV, DRY_RUN_ENV, FORECAST_ENV):
        monkeypatch.delenv(env, raising=False)
    case, device = bench.CASES[name], torch.device("cpu")
    x, y = bench.make_data(case, 2 * case.config.batch_size, torch.Generator().manual_seed(0))
    initial = [p.detach().clone() for p in bench.make_model(case).parameters()]
    runs = {"floor": (bench.floor_epoch, bench.floor_target(case, x, y)), "loop": (bench.fit_epoch, y)}
    for what, (epoch, target) in runs.items():
        model, scheduler = bench.build(case)
        seconds = epoch(case, model, scheduler, x, target, case.config, device)
        assert math.isfinite(seconds) and seconds > 0, what
        assert any(not torch.equal(a, b.detach()) for a, b in zip(initial, model.parameters())), f"{what}: no update"
        if scheduler is not None:  # two updates: stepped twice per update, once per epoch
            assert scheduler.t == (2 if scheduler.unit == "step" else 1), what


@pytest.mark.parametrize("name", list(store_bench.CASES))
def test_store_benchmark_trains_each_case_with_and_without_a_store(name, tmp_path, monkeypatch, one_thread):
    for env in (DRY_RUN_ENV, FORECAST_ENV):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv(RUNS_ENV, "before")  # time_fit must leave it as it found it
    case = bench.CASES[name]  # the training benchmark's net of the same name
    x, y = bench.make_data(case, 2 * case.config.batch_size, torch.Generator().manual_seed(0))
    data = {"train": store_bench.SimpleNamespace(x=x, y=y)}
    assert store_bench.time_fit(case, 2, data, None) > 0
    assert store_bench.time_fit(case, 2, data, str(tmp_path)) > 0
    (run,) = tmp_path.glob("*.pt")  # the store run trained and kept its finished state
    assert torch.load(run, weights_only=True)["complete"]
    assert os.environ[RUNS_ENV] == "before"


@pytest.mark.parametrize("before", [False, True])
def test_deterministic_algorithms_context_sets_the_mode_and_restores_it(before):
    saved = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(before)
    try:
        with bench.deterministic_algorithms(not before):
            assert torch.are_deterministic_algorithms_enabled() is (not before)
        assert torch.are_deterministic_algorithms_enabled() is before
    finally:
        torch.use_deterministic_algorithms(saved)


def test_run_store_restores_the_variable_even_when_the_block_fails(monkeypatch):
    monkeypatch.delenv(RUNS_ENV, raising=False)
    with pytest.raises(RuntimeError), store_bench.run_store("somewhere"):
        assert os.environ[RUNS_ENV] == "somewhere"
        raise RuntimeError
    assert RUNS_ENV not in os.environ
    monkeypatch.setenv(RUNS_ENV, "kept")
    with store_bench.run_store(None):
        assert RUNS_ENV not in os.environ
    assert os.environ[RUNS_ENV] == "kept"


@pytest.mark.parametrize("name", threads_bench.DEFAULT)
def test_thread_benchmark_trains_the_training_benchmarks_nets(name, monkeypatch):
    """bench_threads.train: the named bench_train net takes the given number of updates (and only those)."""
    updates = []
    monkeypatch.setattr(threads_bench, "floor_epoch", lambda case, model, sched, x, target, config, device:
                        updates.append(len(x) // config.batch_size) or 1.0)
    assert threads_bench.train(name, 3, torch.get_num_threads()) == 1.0
    assert updates == [threads_bench.WARMUP, 3]


def test_thread_benchmark_times_real_updates(one_thread):
    assert threads_bench.train("guide", 2, torch.get_num_threads()) > 0


def test_thread_benchmark_cases_are_training_benchmark_cases():
    assert set(threads_bench.DEFAULT) <= set(bench.CASES)


def _bullets(doc: str) -> dict[str, list[str]]:
    """``{case name: notebook numbers}`` from the docstring's list: ``* ``name``[, ``name``] — NN (…), NN: …``."""
    listed = {}
    for bullet in re.findall(r"^\* .*?(?=^\* |^$)", doc, flags=re.M | re.S):
        names, _, rest = bullet.partition(" — ")
        served = re.findall(r"(?<![\w-])(\d\d)(?!\w)", rest.split(":")[0])
        listed |= dict.fromkeys(re.findall(r"``(\w+)``", names), served)
    return listed


def test_docstring_lists_every_case_with_its_notebooks_and_covers_every_notebook():
    listed = _bullets(bench.__doc__)
    assert list(listed) == list(bench.CASES)
    assert all(listed.values()), [name for name, served in listed.items() if not served]
    assert {n for served in listed.values() for n in served} == {name[:2] for name in list_notebooks(ROOT)}


@pytest.mark.parametrize("case, notebook, settings", [
    ("mlp", "01_dropout_vs_none", dict(batch_size="batch_size", lr="lr", momentum="momentum", max_norm="max_norm")),
    ("mlp_gauss", "03_ensemble_averaging", dict(batch_size="batch_size", lr="lr", max_norm="max_norm")),
    ("exact", "03_ensemble_averaging", dict(lr="exact_lr", max_norm="max_norm")),
    ("autoencoder", "02_coadaptation", dict(batch_size="batch_size", lr="ae_lr")),
    ("coadapt", "02_coadaptation", dict(batch_size="batch_size", lr="lr")),
    ("rate", "04_rate_and_data_size", dict(batch_size="batch_size", lr="lr")),
    ("varshift", "05_variance_shift", dict(batch_size="batch_size", lr="lr")),
    ("ordering", "06_bn_dropout_ordering", dict(batch_size="batch_size", lr="lr")),
    ("concrete", "07_concrete_dropout", dict(batch_size="batch_size", lr="lr")),
    ("toy", "07_concrete_dropout", dict(batch_size="toy_batch_size", lr="toy_lr")),
    ("kw_var", "09_variational_dropout", dict(batch_size="batch_size", lr="lr")),
    ("cnn16", "10_structured_dropout", dict(batch_size="batch_size", lr="lr")),
    ("dropconnect", "10_structured_dropout", dict(batch_size="dc_batch_size")),
    ("lm_var", "11_recurrent_dropout", dict(batch_size="lm_batch_size", lr="lm_lr", grad_clip="grad_clip")),
    ("seq", "11_recurrent_dropout", dict(batch_size="seq_batch_size", lr="seq_lr")),
    ("standout", "12_adaptive_and_scheduled", dict(batch_size="mlp_batch_size", lr="mlp_lr")),
    ("curriculum", "12_adaptive_and_scheduled", dict(batch_size="cu_batch_size", lr="cu_lr")),
    ("adl", "12_adaptive_and_scheduled", dict(batch_size="adl_batch_size", lr="adl_lr")),
    ("factor", "13_dropout_theory", dict(batch_size="sgd_batch_size", lr="sgd_lr")),
    ("guide", "14_practical_guide", dict(batch_size="batch_size", lr="lr")),
])
def test_case_settings_are_the_full_profiles(case, notebook, settings):
    params = profile_parameters(notebook, "full", ROOT)
    config = bench.CASES[case].config
    assert {field: getattr(config, field) for field in settings} == {f: params[k] for f, k in settings.items()}


GPU_CHECK = ROOT / "benchmarks" / "gpu_check.py"


@pytest.mark.parametrize("args, message", [
    (["--stages", "01_dropout_vs_none:seed-9"], "--stages: '01_dropout_vs_none:seed-9' is not a paper-profile stage"),
    (["--stages", "nope:seed-0"], "--stages: 'nope:seed-0' is not a paper-profile stage"),
    (["--minutes", "0"], "--minutes must be > 0"),
])
def test_gpu_check_refuses_bad_arguments_before_anything_runs(args, message):
    out = subprocess.run([sys.executable, str(GPU_CHECK), *args], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and message in out.stderr


def test_gpu_check_default_stages_are_paper_stages_with_estimates():
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parts = notebook_parts("01_dropout_vs_none", "paper", load_params(ROOT))
    assert module.DEFAULT_STAGES and all(stage.split(":")[1] in parts for stage in module.DEFAULT_STAGES)
    assert set(module.DEFAULT_STAGES) <= set(module.ESTIMATE_MIN)
    assert module.GPU_BENCH_CASES and set(module.GPU_BENCH_CASES) <= set(bench.CASES)
