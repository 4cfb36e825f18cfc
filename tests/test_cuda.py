"""The CUDA paths: every variant on the GPU, no host synchronisation in a fixed-rate forward pass,
and bit-identical deterministic training. Skipped without a CUDA device; `make gpu-check` runs them
on one (the weight-drop/cuDNN test is in test_variants_recurrent.py, marked the same way).
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import blobs
from test_variants_contract import NAMES, build, first

from dropoutlab.models import MLP
from dropoutlab.train import TrainConfig, fit

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# Variants whose rate is a Python float: a training-mode forward pass needs nothing from the host.
FIXED_RATE = ["standard", "inverted", "spatial", "gaussian", "alpha", "locked", "dropblock", "droppath",
              "dropconnect", "uout"]


@pytest.mark.parametrize("name", NAMES)
def test_variant_runs_on_cuda_with_gradients(name):
    module, x = build(name)
    module, x = module.cuda().train(), x.cuda()
    if x.is_floating_point():
        x.requires_grad_(True)
    out = first(module(x))
    assert out.is_cuda and torch.isfinite(out).all()
    out.float().sum().backward()
    grads = [p.grad for p in module.parameters() if p.requires_grad] + ([x.grad] if x.requires_grad else [])
    assert all(g is not None and g.is_cuda for g in grads)
    module.eval()
    cpu_module, cpu_x = build(name)
    cpu_module.load_state_dict({k: v.cpu() for k, v in module.state_dict().items()})
    torch.testing.assert_close(first(module(x.detach())).cpu(), first(cpu_module.eval()(cpu_x)), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("name", FIXED_RATE)
def test_fixed_rate_forward_makes_no_host_sync(name):
    module, x = build(name)
    module, x = module.cuda().train(), x.cuda()
    module(x)  # first call: lazy initialisation may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        first(module(x)).sum()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_deterministic_training_on_cuda_is_bit_identical():
    data = {"train": blobs(512, 0)}
    config = TrainConfig(epochs=2, batch_size=64, eval_splits=(), device="cuda", deterministic=True, seed=3)
    weights = []
    for _ in range(2):
        torch.manual_seed(3)
        model = MLP(12, [128, 128], 3, p_input=0.2, p_hidden=0.5)
        fit(model, data, config)
        weights.append([p.detach().cpu() for p in model.parameters()])
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG"), "cuBLAS needs a fixed workspace to be deterministic"
    assert all(torch.equal(a, b) for a, b in zip(*weights))
