"""Contracts every registered variant keeps (the package's variant contract), checked over the whole registry."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import dropoutlab
from dropoutlab.inference import mc_dropout
from dropoutlab.variants import DropoutBase, get_variant, list_dropouts, make_dropout

REQUIRED = ["standard", "inverted", "spatial", "gaussian", "uout", "alpha", "locked", "weight_drop", "embedding",
            "variational", "sparse_variational", "concrete", "spatial_concrete", "standout", "dropconnect",
            "dropblock", "droppath", "adl", "meta"]


def build(name: str, seed: int = 0):
    """A small instance of ``name`` and an input it accepts."""
    torch.manual_seed(seed)
    image = torch.randn(4, 3, 8, 8)
    factories = {
        "spatial": lambda: (make_dropout(name, p=0.3), image),
        "dropblock": lambda: (make_dropout(name, p=0.3, block_size=3), image),
        "dropblock3d": lambda: (make_dropout(name, p=0.3, block_size=3), torch.randn(4, 3, 5, 6, 6)),
        "adl": lambda: (make_dropout(name, drop_rate=0.5, gamma=0.9), image.abs()),
        "locked": lambda: (make_dropout(name, p=0.3, batch_first=True), torch.randn(4, 5, 6)),
        "uout": lambda: (make_dropout(name, beta=0.5), torch.randn(16, 32)),
        "meta": lambda: (make_dropout(name, features=32), torch.randn(16, 32)),
        "embedding": lambda: (make_dropout(name, nn.Embedding(50, 8), p=0.3), torch.randint(0, 50, (16, 7))),
        "weight_drop": lambda: (make_dropout(name, nn.LSTM(6, 8, batch_first=True), p=0.3), torch.randn(4, 5, 6)),
        "concrete": lambda: (make_dropout(name, nn.Linear(32, 8), p=0.3), torch.randn(16, 32)),
        "spatial_concrete": lambda: (make_dropout(name, nn.Conv2d(3, 4, 3), p=0.3), image),
        "standout": lambda: (make_dropout(name, nn.Linear(32, 8)), torch.randn(16, 32)),
        "dropconnect": lambda: (make_dropout(name, 32, 8, p=0.3), torch.randn(16, 32)),
        "variational": lambda: (make_dropout(name, 32, 8, p=0.3), torch.randn(16, 32)),
        "sparse_variational": lambda: (make_dropout(name, 32, 8, log_sigma2_init=-2.0), torch.randn(16, 32)),
        "sparse_variational_conv2d": lambda: (make_dropout(name, 3, 4, 3, log_sigma2_init=-2.0), image),
    }
    module, x = factories.get(name, lambda: (make_dropout(name, p=0.3), torch.randn(16, 32)))()
    torch.manual_seed(seed + 1)
    return module, x


def first(output):
    return output[0] if isinstance(output, tuple) else output


NAMES = [v.name for v in list_dropouts()]


def test_every_variant_of_the_brief_is_registered():
    assert set(REQUIRED) <= set(NAMES), sorted(set(REQUIRED) - set(NAMES))


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dropout variant 'nope'; known: .*inverted"):
        make_dropout("nope")


@pytest.mark.parametrize("name", NAMES)
def test_metadata_and_docstring(name):
    info = get_variant(name)
    assert info.kind in ("activation", "layer", "wrapper")
    assert all([info.family, info.paper, info.equation, info.mask, info.test_time])
    assert re.search(r"\b(19|20)\d\d\b", info.paper), "paper needs its year"
    assert info.cls.__doc__ and len(info.cls.__doc__) > 40
    assert issubclass(info.cls, DropoutBase)


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_deterministic_and_train_is_stochastic(name):
    module, x = build(name)
    module.train()
    assert not torch.equal(first(module(x)), first(module(x))), "train mode should draw a fresh mask per call"
    module.eval()
    assert torch.equal(first(module(x)), first(module(x)))


@pytest.mark.parametrize("name", NAMES)
def test_mc_dropout_makes_eval_stochastic(name):
    module, x = build(name)
    model = nn.Sequential(module).eval()
    with mc_dropout(model):
        assert not torch.equal(first(model(x)), first(model(x)))
    assert not module.training


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    source, x = build(name, seed=0)
    target, _ = build(name, seed=5)
    target.load_state_dict(source.state_dict())
    source.eval(), target.eval()
    assert torch.equal(first(source(x)), first(target(x)))


@pytest.mark.parametrize("name", NAMES)
def test_regularizer_and_repr(name):
    module, x = build(name)
    reg = module.regularizer()
    assert reg.dim() == 0 and torch.isfinite(reg)
    assert module.extra_repr(), "a printed model should say what the layer is"


@pytest.mark.parametrize("name", [v.name for v in list_dropouts() if not v.learned and v.name not in ("uout", "adl")])
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_p_names_the_variant(name, bad):
    with pytest.raises(ValueError, match=name):
        module, _ = build(name)
        module.set_p(bad)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["inverted", "gaussian", "alpha", "spatial", "droppath", "dropblock", "locked"]),
       p=st.floats(0.0, 0.95), batch=st.integers(1, 4), channels=st.integers(1, 5), size=st.integers(1, 9))
def test_property_eval_identity_and_shape(name, p, batch, channels, size):
    kwargs = {"block_size": 3} if name == "dropblock" else {}
    shape = (batch, channels, size) if name == "locked" else (batch, channels, size, size)
    module = make_dropout(name, p=p, **kwargs)
    x = torch.randn(shape)
    assert module.train()(x).shape == x.shape
    assert torch.equal(module.eval()(x), x), "inverted families are the identity at eval"


def test_package_exports():
    assert dropoutlab.make_dropout is make_dropout and callable(dropoutlab.list_dropouts)


def test_docs_table_is_up_to_date():
    from pathlib import Path

    from dropoutlab.docs import variants_markdown

    committed = (Path(__file__).resolve().parents[1] / "docs" / "variants.md").read_text()
    assert committed == variants_markdown(), "docs/variants.md is stale: run `make docs`"
