"""MC dropout, weight scaling, uncertainty metrics, sub-network enumeration (inference.py)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from dropoutlab.inference import (
    enumerate_subnetworks,
    expected_entropy,
    mc_dropout,
    mutual_information,
    predict_mc,
    predict_weight_scaling,
    predictive_entropy,
    predictive_mean,
    predictive_variance,
)
from dropoutlab.variants import DropoutBase, make_dropout


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), make_dropout("inverted", p=0.5),
        nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3),
    )


def conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), make_dropout("spatial", p=0.3),
        nn.Dropout2d(0.2), nn.Flatten(), nn.Linear(4 * 5 * 5, 3),
    )


# ----------------------------------------------------------------------------- mc_dropout


def test_mc_dropout_only_dropout_is_stochastic_and_modes_restored():
    model = bn_net()
    model.eval()
    model[1].train()  # a mixed state must come back exactly
    before = {n: m.training for n, m in model.named_modules()}
    with mc_dropout(model) as chosen:
        assert sorted(chosen) == ["3", "6"]
        for n, m in model.named_modules():
            assert m.training == (n in ("3", "6")), n
    assert {n: m.training for n, m in model.named_modules()} == before


def test_mc_dropout_restores_train_mode_and_on_exception():
    model = bn_net()
    model.train()
    with pytest.raises(RuntimeError, match="boom"), mc_dropout(model):
        assert not model[1].training
        raise RuntimeError("boom")
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("layer", [nn.Dropout(0.1), nn.Dropout1d(0.1), nn.Dropout2d(0.1), nn.Dropout3d(0.1),
                                   nn.AlphaDropout(0.1), nn.FeatureAlphaDropout(0.1), make_dropout("standard")])
def test_mc_dropout_finds_every_dropout_kind(layer):
    model = nn.Sequential(nn.Identity(), layer).eval()
    with mc_dropout(model) as chosen:
        assert list(chosen) == ["1"] and layer.training and not model.training
    assert not layer.training


def test_mc_dropout_select_and_no_dropout_error():
    model = bn_net().eval()
    with mc_dropout(model, select=nn.Dropout) as chosen:
        assert list(chosen) == ["6"] and not model[3].training and model[6].training
    with pytest.raises(ValueError, match="no dropout module"):
        with mc_dropout(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))):
            pass


def test_predict_mc_leaves_batchnorm_untouched():
    model = bn_net()
    model.train()
    for _ in range(3):  # non-trivial running stats
        model(torch.randn(32, 6))
    bn_before = {k: v.clone() for k, v in model[1].state_dict().items()}
    out = predict_mc(model, torch.randn(10, 6), T=20)
    assert out.shape == (20, 10, 3)
    for k, v in model[1].state_dict().items():
        assert torch.equal(v, bn_before[k]), k  # running_mean, running_var, num_batches_tracked
    assert all(m.training for m in model.modules())


# ----------------------------------------------------------------------------- predict_mc


def test_predict_mc_shapes_and_samples_differ_rank2():
    model = bn_net().eval()
    x = torch.randn(5, 6)
    out = predict_mc(model, x, T=12)
    assert out.shape == (12, 5, 3)
    assert not torch.allclose(out[0], out[1])
    assert not model.training  # restored


@pytest.mark.parametrize("chunk", [None, 1, 3, 8])
def test_predict_mc_shapes_rank4(chunk):
    model = conv_net().eval()
    x = torch.randn(3, 2, 5, 5)
    out = predict_mc(model, x, T=8, chunk=chunk)
    assert out.shape == (8, 3, 3)
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8  # all samples differ


def test_predict_mc_same_seed_identical():
    model = bn_net().eval()
    x = torch.randn(4, 6)
    torch.manual_seed(123)
    a = predict_mc(model, x, T=10, chunk=4)
    torch.manual_seed(123)
    b = predict_mc(model, x, T=10, chunk=4)
    assert torch.equal(a, b)


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_predict_mc_mean_approaches_weight_scaling(chunk):
    """Linear model after inverted dropout: E[y] = eval output exactly, Var[y] known.

    y_j = Σ_i W_ji x_i m_i/(1−p) + b_j, Var[y_j] = p/(1−p) Σ_i W_ji² x_i². With T samples the
    mean's standard error is sqrt(Var/T); |mean − eval| < 5 SE for all 12 outputs fails with
    probability < 12·6e-7 (and the seed is fixed).
    """
    torch.manual_seed(1)
    p, T = 0.3, 2000
    lin = nn.Linear(8, 4).double()
    model = nn.Sequential(make_dropout("inverted", p=p), lin)
    x = torch.randn(3, 8, dtype=torch.float64)
    samples = predict_mc(model, x, T=T, chunk=chunk)
    assert samples.shape == (T, 3, 4)
    ws = predict_weight_scaling(model, x)
    var = p / (1 - p) * (x.pow(2) @ lin.weight.detach().pow(2).T)
    se = (var / T).sqrt()
    assert ((samples.mean(0) - ws).abs() < 5 * se).all()
    # the sample variance matches too (relative SE of a variance ≈ sqrt(2/T) for near-Gaussian sums)
    assert ((samples.var(0) / var - 1).abs() < 6 * math.sqrt(2 / T) + 0.05).all()


class SharedMaskDropout(DropoutBase):
    """One mask for the whole batch (like a weight mask); counts forward calls."""

    batch_shared_mask = True

    def __init__(self, p=0.5):
        super().__init__(p)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if not self.training:
            return x
        mask = (torch.rand(x.shape[1:]) >= self.p).to(x.dtype)
        return x * mask / (1 - self.p)


def test_predict_mc_falls_back_to_loop_for_batch_shared_masks():
    drop = SharedMaskDropout(0.5)
    model = nn.Sequential(nn.Linear(4, 32), drop)
    x = torch.randn(1, 4).expand(3, 4).contiguous()  # identical rows
    torch.manual_seed(0)
    out = predict_mc(model, x, T=6, chunk=6)
    assert out.shape == (6, 3, 32)
    assert drop.calls == 6  # T forward passes of the plain batch, no tiling
    # one mask per pass: rows inside a sample agree, samples differ
    assert torch.equal(out[:, 0], out[:, 1])
    assert len({tuple(o[0].tolist()) for o in out}) == 6


def test_predict_weight_scaling_restores_modes_and_no_grad():
    model = bn_net().train()
    x = torch.randn(4, 6)
    y = predict_weight_scaling(model, x)
    assert not y.requires_grad
    assert all(m.training for m in model.modules())
    model.eval()
    assert torch.equal(y, model(x).detach())


def test_predict_mc_argument_errors():
    model = bn_net()
    with pytest.raises(ValueError, match="T must be"):
        predict_mc(model, torch.randn(2, 6), T=0)
    with pytest.raises(ValueError, match="chunk must be"):
        predict_mc(model, torch.randn(2, 6), T=3, chunk=0)


# ----------------------------------------------------------------------------- metrics


def test_metrics_on_hand_made_distributions():
    C = 5
    uniform = torch.full((4, 2, C), 1.0 / C)
    assert torch.allclose(predictive_entropy(uniform), torch.full((2,), math.log(C)))
    assert torch.allclose(mutual_information(uniform), torch.zeros(2))
    one_hot = torch.eye(C)[torch.tensor([1, 3])].expand(6, 2, C)  # all samples equal
    assert torch.equal(predictive_entropy(one_hot), torch.zeros(2))  # xlogy: no NaN at 0
    assert torch.equal(mutual_information(one_hot), torch.zeros(2))
    # two confident, disagreeing samples: mean is uniform over 2 classes, MI = log 2
    disagree = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert predictive_mean(disagree).tolist() == [[0.5, 0.5]]
    assert predictive_entropy(disagree).item() == pytest.approx(math.log(2))
    assert expected_entropy(disagree).item() == 0.0
    assert mutual_information(disagree).item() == pytest.approx(math.log(2))


def test_mutual_information_nonnegative_random():
    probs = torch.softmax(torch.randn(30, 8, 4, generator=seeded()), -1)
    mi = mutual_information(probs)
    assert (mi >= 0).all() and (mi <= predictive_entropy(probs) + 1e-6).all()


def test_predictive_variance():
    s = torch.tensor([[1.0, 2.0], [3.0, 2.0]])
    assert predictive_variance(s).tolist() == [1.0, 0.0]
    assert predictive_variance(s, tau=2.0).tolist() == [1.5, 0.5]
    with pytest.raises(ValueError, match="tau"):
        predictive_variance(s, tau=0.0)
    with pytest.raises(ValueError, match=r"\(T, \.\.\., C\)"):
        predictive_entropy(torch.ones(3))


# ----------------------------------------------------------------------------- enumeration


def one_hidden(n, drop, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(7, n), nn.Tanh(), drop, nn.Linear(n, 5)).double()


@pytest.mark.parametrize("drop", [make_dropout("inverted", p=0.5), make_dropout("standard", p=0.5),
                                  nn.Dropout(0.3), make_dropout("standard", p=0.2, inplace=True)],
                         ids=["inverted", "standard", "nn.Dropout", "standard-inplace"])
def test_hinton_geometric_mean_identity(drop):
    """HI-GM (Hinton et al. 2012): one hidden layer + softmax, the weight-scaled net equals the
    normalised geometric mean of all 2^N thinned nets (N = 10), to 1e-10 in float64."""
    model = one_hidden(10, drop)
    model.train()
    x = torch.randn(6, 7, dtype=torch.float64)
    res = enumerate_subnetworks(model, x)
    assert res.n_units == 10 and res.n_subnetworks == 1024 and res.units == {"2": 10}
    ws = torch.softmax(predict_weight_scaling(model, x), -1)
    assert res.geometric_mean.dtype == torch.float64
    assert (res.geometric_mean - ws).abs().max().item() < 1e-10
    assert torch.allclose(res.arithmetic_mean.sum(-1), torch.ones(6, dtype=torch.float64))
    assert all(m.training for m in model.modules())  # restored


def brute_force(model_layers, x, p1, p2, scale1, scale2):
    """Loop over every mask of the two-layer net by hand."""
    lin1, lin2, lin3 = model_layers
    n1, n2 = lin1.out_features, lin2.out_features
    arith = torch.zeros(x.shape[0], lin3.out_features, dtype=torch.float64)
    log_geo = torch.zeros_like(arith)
    for bits in itertools.product([0, 1], repeat=n1 + n2):
        m = torch.tensor(bits, dtype=torch.float64)
        m1, m2 = m[:n1], m[n1:]
        w = math.prod(1 - p1 if b else p1 for b in bits[:n1]) * math.prod(1 - p2 if b else p2 for b in bits[n1:])
        h = torch.relu(lin1(x)) * m1 * scale1
        h = torch.relu(lin2(h)) * m2 * scale2
        logp = torch.log_softmax(lin3(h), -1)
        arith += w * logp.exp()
        log_geo += w * logp
    return arith, torch.softmax(log_geo, -1)


@pytest.mark.parametrize("chunk", [None, 3])
def test_enumeration_matches_brute_force_two_layers(chunk):
    torch.manual_seed(0)
    lin1, lin2, lin3 = nn.Linear(4, 3), nn.Linear(3, 2), nn.Linear(2, 3)
    model = nn.Sequential(lin1, nn.ReLU(), make_dropout("inverted", p=0.3), lin2, nn.ReLU(),
                          make_dropout("standard", p=0.6), lin3).double()
    x = torch.randn(4, 4, dtype=torch.float64)
    res = enumerate_subnetworks(model, x, chunk=chunk)
    assert res.n_units == 5 and res.n_subnetworks == 32 and res.units == {"2": 3, "5": 2}
    with torch.no_grad():
        # the p buffers are float32 (0.3 -> 0.30000001192...); use the modules' own values
        p1, p2 = float(model[2].p), float(model[5].p)
        arith, geo = brute_force((lin1, lin2, lin3), x, p1, p2, 1 / (1 - p1), 1.0)
    assert torch.allclose(res.arithmetic_mean, arith, rtol=0, atol=1e-12)
    assert torch.allclose(res.geometric_mean, geo, rtol=0, atol=1e-12)


def test_enumeration_two_layer_runs_and_differs_from_weight_scaling():
    torch.manual_seed(0)
    model = nn.Sequential(make_dropout("inverted", p=0.2), nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(8, 4)).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    res = enumerate_subnetworks(model, x)
    assert res.n_units == 14 and res.n_subnetworks == 2**14
    assert res.arithmetic_mean.shape == res.geometric_mean.shape == (3, 4)
    assert torch.allclose(res.geometric_mean.sum(-1), torch.ones(3, dtype=torch.float64))


def test_enumeration_errors():
    x = torch.randn(2, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match="21 droppable units .* at most 20"):
        enumerate_subnetworks(one_hidden(21, nn.Dropout(0.5)), x)
    with pytest.raises(ValueError, match="no dropout layer"):
        enumerate_subnetworks(nn.Sequential(nn.Linear(7, 2)), x)
    with pytest.raises(ValueError, match="only InvertedDropout, StandardDropout and nn.Dropout"):
        enumerate_subnetworks(nn.Sequential(nn.Linear(7, 4), nn.Dropout1d(0.5)), x)
