"""Shared fixtures: small in-memory datasets that need no files."""

from __future__ import annotations

import os

import pytest
import torch

from dropoutlab.data import Dataset

os.environ.setdefault("MPLBACKEND", "Agg")

# pytest-xdist runs one worker per core (pyproject's addopts): each worker computes on its share of the cores,
# or the workers' torch threads would oversubscribe them. Tests that need a thread count set it themselves.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    torch.set_num_threads(max(1, torch.get_num_threads() // WORKERS))


def blobs(n: int, seed: int, features: int = 12, classes: int = 3) -> Dataset:
    """Gaussian class blobs: learnable in a few epochs, different for every seed."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    centers = torch.randn(classes, features, generator=torch.Generator().manual_seed(1234)) * 2
    return Dataset(centers[y] + torch.randn(n, features, generator=g), y)


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (tiny nets: thread start-up costs more than it saves)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy_data() -> dict[str, Dataset]:
    return {"train": blobs(256, 0), "val": blobs(128, 1)}
