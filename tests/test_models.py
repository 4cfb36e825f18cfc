from __future__ import annotations

import pytest
import torch
from torch import nn

from dropoutlab.models import MLP, Autoencoder, ConvNet, RowLSTM, parse_order
from dropoutlab.variants import DropoutBase


def test_mlp_layout():
    model = MLP(784, [32, 16], 10, p_input=0.2, p_hidden=[0.5, 0.4])
    drops = [m for m in model if isinstance(m, DropoutBase)]
    assert [d.rate for d in drops] == pytest.approx([0.2, 0.5, 0.4])
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)


def test_mlp_without_dropout_has_none():
    model = MLP(8, [4], 2, p_input=0.0, p_hidden=0.0)
    assert not any(isinstance(m, DropoutBase) for m in model.modules())


def test_mlp_rate_count_checked():
    with pytest.raises(ValueError, match="one rate per layer"):
        MLP(8, [4, 4], 2, p_hidden=[0.5])


@pytest.mark.parametrize("order", ["conv-bn-act-drop-pool", "conv-drop-bn-act-pool", "conv-act-pool", "conv→act→bn"])
def test_convnet_orders(order):
    model = ConvNet((1, 28, 28), (8, 16), order=order, activation="elu", p=(0.2, 0.3), hidden=32)
    tokens = parse_order(order)
    block = model.features[0]
    kinds = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.ELU: "act", nn.MaxPool2d: "pool"}
    names = [next((v for k, v in kinds.items() if isinstance(m, k)), "drop") for m in block]
    assert names == tokens
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("order, message", [("conv-bn-bn-act", "repeated"), ("conv-bn-relu", "unknown"),
                                            ("bn-act", "missing")])
def test_convnet_bad_order(order, message):
    with pytest.raises(ValueError, match=message):
        ConvNet(order=order)


def test_convnet_per_block_orders():
    model = ConvNet((1, 12, 12), (4, 4), order=["conv-act", "conv-bn-act"], padding=1, hidden=8)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.features[0])
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.features[1])


def test_autoencoder_shapes():
    model = Autoencoder(64, 16, p=0.5)
    x = torch.rand(3, 1, 8, 8)
    assert model(x).shape == (3, 64) and model.encode(x).shape == (3, 16)


def test_row_lstm():
    model = RowLSTM(8, 16, 10, p=0.0)
    assert model(torch.rand(4, 1, 8, 8)).shape == (4, 10)


def test_unknown_variant_and_activation():
    with pytest.raises(ValueError, match="unknown dropout variant 'nope'"):
        MLP(4, [4], 2, dropout="nope")
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(4, [4], 2, activation="swishy")
