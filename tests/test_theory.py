"""Notebook 13's checks (analysis/theory.py): each closed form against an independent computation."""

import itertools
import math

import numpy as np
import pytest
import torch

from dropoutlab.analysis import theory
from dropoutlab.train import TrainConfig

D = torch.float64


def _net(seed: int, *shape: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(out, inp, generator=g, dtype=D) / 2 for inp, out in itertools.pairwise(shape)]


def _brute_expectation(weights, x, y, p):
    """E over every mask by explicit loops (one mask at a time): the cross-check of exact_expected_loss."""
    widths = [w.shape[0] for w in weights[:-1]]
    total = 0.0
    for bits in itertools.product((0, 1), repeat=sum(widths)):
        prob = math.prod((1 - p) if b else p for b in bits)
        h, start = x, 0
        for w, width in zip(weights[:-1], widths, strict=True):
            gate = torch.tensor(bits[start:start + width], dtype=D) / (1 - p)
            h = (h @ w.T) * gate
            start += width
        total += prob * float(((y - h @ weights[-1].T) ** 2).sum(-1).mean())
    return total


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.8])
@pytest.mark.parametrize("seed", [0, 1])
def test_one_layer_regulariser_is_the_exact_expectation(p, seed):
    w1, w2 = _net(seed, 4, 6, 3)
    g = torch.Generator().manual_seed(seed + 10)
    x, y = torch.randn(7, 4, generator=g, dtype=D), torch.randn(7, 3, generator=g, dtype=D)
    clean = ((y - x @ w1.T @ w2.T) ** 2).sum(-1).mean()
    exact = theory.exact_expected_loss([w1, w2], x, y, p)
    assert float(exact) == pytest.approx(_brute_expectation([w1, w2], x, y, p), rel=1e-12)
    assert float(exact - clean) == pytest.approx(float(theory.linear_regulariser(w1, w2, x, p)), rel=1e-10, abs=1e-12)


def test_isotropic_inputs_make_the_regulariser_a_product_of_norms():
    g = torch.Generator().manual_seed(0)
    x = theory.isotropic_inputs(50, 6, g)
    assert torch.allclose(x.T @ x / 50, torch.eye(6, dtype=D), atol=1e-12)
    w1, w2 = _net(3, 6, 5, 2)
    closed = 0.25 / 0.75 * ((w2**2).sum(0) * (w1**2).sum(1)).sum()
    assert float(theory.linear_regulariser(w1, w2, x, 0.25)) == pytest.approx(float(closed), rel=1e-12)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_deep_regulariser_terms_sum_to_the_enumeration_and_path_term_is_the_path_sum(p):
    w1, w2, w3 = _net(5, 3, 4, 3, 2)
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(5, 3, generator=g, dtype=D), torch.randn(5, 2, generator=g, dtype=D)
    terms = theory.deep_linear_regulariser(w1, w2, w3, x, p)
    clean = ((y - x @ w1.T @ w2.T @ w3.T) ** 2).sum(-1).mean()
    assert float(terms["total"]) == pytest.approx(_brute_expectation([w1, w2, w3], x, y, p) - float(clean), rel=1e-10)
    lam = p / (1 - p)
    u = x @ w1.T
    paths = sum(float(w3[o, j] ** 2 * w2[j, i] ** 2 * (u[:, i] ** 2).mean())
                for o in range(2) for j in range(3) for i in range(4))
    assert float(terms["path"]) == pytest.approx(lam**2 * paths, rel=1e-12)


def test_deep_regulariser_terms_are_invariant_to_rescaling_a_unit_and_a_wrong_rescaling_is_seen():
    w1, w2, w3 = _net(7, 3, 4, 3, 2)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(8), dtype=D)
    c1, c2 = torch.tensor([0.3, 2.0, 1.0, 3.5], dtype=D), torch.tensor([0.5, 4.0, 0.25], dtype=D)
    before = theory.deep_linear_regulariser(w1, w2, w3, x, 0.3)
    after = theory.deep_linear_regulariser(w1 * c1[:, None], w2 / c1[None, :] * c2[:, None], w3 / c2[None, :], x, 0.3)
    for key in ("first", "second", "path"):
        assert float(after[key]) == pytest.approx(float(before[key]), rel=1e-12)
    broken = theory.deep_linear_regulariser(w1 * c1[:, None], w2, w3, x, 0.3)  # the function changes: so must R
    assert abs(float(broken["total"] - before["total"])) > 1e-3 * float(before["total"])


def test_monte_carlo_regulariser_agrees_within_its_standard_error():
    g = torch.Generator().manual_seed(0)
    x = theory.isotropic_inputs(64, 5, g)
    w1, w2 = _net(1, 5, 8, 3)
    y = torch.randn(64, 3, generator=g, dtype=D)
    estimate, se = theory.monte_carlo_regulariser(w1, w2, x, y, 0.4, 4000, torch.Generator().manual_seed(2))
    closed = float(theory.linear_regulariser(w1, w2, x, 0.4))
    assert abs(estimate - closed) < 4 * se  # fixed seed; 4 s.e. is a 6e-5 two-sided event
    assert se < 0.05 * closed  # the comparison has power: a 1/θ scaling error (×1/0.6) is far outside


def test_induced_minimum_reaches_the_nuclear_norm_bound_and_random_factorisations_stay_above_it():
    g = torch.Generator().manual_seed(3)
    m = torch.randn(6, 2, generator=g, dtype=D) @ torch.randn(2, 5, generator=g, dtype=D)
    out = theory.induced_regulariser_minimum(m, 4, seed=0, outer=20)
    assert out["value"] == pytest.approx(out["bound"], rel=1e-6)
    assert out["residual"] < 1e-6 and out["spread"] < 1e-4
    for seed in range(20):  # the bound holds for every factorisation, not only at the optimum
        gen = torch.Generator().manual_seed(100 + seed)
        u = torch.randn(6, 4, generator=gen, dtype=D)
        v = torch.randn(5, 4, generator=gen, dtype=D)
        value = float((u.norm(dim=0) ** 2 * v.norm(dim=0) ** 2).sum())
        assert value >= float(torch.linalg.matrix_norm(u @ v.T, ord="nuc")) ** 2 / 4 * (1 - 1e-12)


def test_equalisation_study_pairs_the_arms_and_dropout_equalises():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(4, 2, generator=g, dtype=D) @ torch.randn(2, 5, generator=g, dtype=D) / 2
    config = TrainConfig(epochs=15, batch_size=32, lr=0.02, optimizer="sgd", momentum=0.0, device="cpu", progress=False)
    study = theory.equalisation_study(m, 6, 0.5, [0, 1], config, n=512)
    spreads = study.spreads.pivot(index="seed", columns="arm", values="spread_after")
    before = study.spreads.pivot(index="seed", columns="arm", values="spread_before")
    assert (before["dropout"] == before["no dropout"]).all()  # same initialisation in both arms
    assert (spreads["dropout"] < spreads["no dropout"]).all()


def test_glm_penalty_on_one_feature_matches_the_two_point_expectation():
    x = torch.tensor([[1.5], [-0.5], [2.0]], dtype=D)
    beta, c, p = torch.tensor([0.8], dtype=D), 0.3, 0.5
    eta = (x @ beta).squeeze(-1) + c
    softplus = torch.nn.functional.softplus
    exact = float(((1 - p) * softplus(eta - c + (eta - c) * p / (1 - p) + c) + p * softplus(torch.full_like(eta, c))
                   - softplus(eta)).mean())
    out = theory.glm_penalty(x, beta, c, p, 20000, torch.Generator().manual_seed(0))
    assert abs(out["exact"] - exact) < 4 * out["se"]
    a2 = torch.sigmoid(eta) * (1 - torch.sigmoid(eta))
    assert out["quadratic"] == pytest.approx(float(0.5 * (p / (1 - p)) * (a2 * (x[:, 0] * beta[0]) ** 2).mean()),
                                             rel=1e-12)


def test_nwgm_is_sigma_of_the_mean_and_below_the_expectation_for_low_outputs():
    free = theory.nwgm_study(10, 6, 0.5, seed=0, all_low=False)
    low = theory.nwgm_study(10, 6, 0.3, seed=1, all_low=True)
    assert free["identity_error"].max() < 1e-12 and low["identity_error"].max() < 1e-12
    assert low["all_low"].all() and (low["NWGM"] <= low["E"] + 1e-12).all()
    assert not np.allclose(free["E"], free["NWGM"], atol=1e-4)  # the approximation is not an identity


@pytest.mark.parametrize(("call", "match"), [
    (lambda: theory.linear_regulariser(torch.ones(2, 2), torch.ones(2, 2), torch.ones(1, 2), 1.0),
     "linear_regulariser: p must be a drop probability in"),
    (lambda: theory.nwgm_study(2, 17, 0.5, 0, False), "n_inputs must be ≤ 16"),
    (lambda: theory.isotropic_inputs(3, 5, torch.Generator()), "n must be an integer ≥ 5"),
    (lambda: theory.monte_carlo_regulariser(torch.ones(2, 2), torch.ones(2, 2), torch.ones(1, 2), torch.ones(1, 2),
                                            0.5, 1, torch.Generator()), "n_masks must be an integer ≥ 2"),
    (lambda: theory.regulariser_study(0.3, 10, [0.1, 0.5]), "regulariser_study: p must be one of"),
    (lambda: theory.exact_expected_loss([torch.ones(17, 2, dtype=D), torch.ones(1, 17, dtype=D)],
                                        torch.ones(1, 2, dtype=D), torch.ones(1, 1, dtype=D), 0.5), "at most 16"),
])
def test_bad_arguments_are_refused_by_name(call, match):
    with pytest.raises(ValueError, match=match):
        call()
