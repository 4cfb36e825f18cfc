"""Kingma variational dropout and sparse VD (dropoutlab.variants.bayesian).

Reference for the KL checks: for q(w) = N(θ, αθ²) and the log-uniform prior,
−KL = const + 0.5·log α − E_{ε~N(0,1)} log|1 + √α·ε|  (Kingma et al. 2015).
The α-dependent part g(α) = 0.5·log α − E log|1 + √α ε| = −E log|X| with X ~ N(1/√α, 1),
because log|1 + √α ε| = 0.5·log α + log|1/√α + ε|. X² is non-central χ²₁ with λ = 1/α, a
Poisson(λ/2) mixture of χ²_{1+2k}, and E log χ²_ν = log 2 + ψ(ν/2), hence the exact series
    g(α) = −½·[log 2 + Σ_k Pois(k; 1/(2α))·ψ(½ + k)].
As α → ∞, g → ½(γ + log 2) = 0.635181…, so the normalised true −KL (→ 0 at α = ∞, Molchanov's
convention) is g(α) − ½(γ + log 2). The series is checked against Monte Carlo below.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import special, stats

from dropoutlab.variants import get_variant, make_dropout
from dropoutlab.variants.bayesian import (
    KINGMA_C1,
    KINGMA_C2,
    KINGMA_C3,
    MOLCHANOV_K1,
    MOLCHANOV_K2,
    MOLCHANOV_K3,
    SparseVariationalConv2d,
    SparseVariationalLinear,
    VariationalDropoutLinear,
    kingma_kl,
    molchanov_kl,
    sparsity_report,
    variational_dropout_linear,
)

C1, C2, C3 = 1.16145124, -1.50204118, 0.58629921
K1, K2, K3 = 0.63576, 1.87320, 1.48695
HALF_GAMMA_LOG2 = 0.5 * (np.euler_gamma + math.log(2.0))


def true_neg_kl_part(alpha: float) -> float:
    """g(α) = 0.5 log α − E log|1 + √α ε|, by the exact Poisson–digamma series (module docstring)."""
    lam2 = 1.0 / (2.0 * alpha)
    k = np.arange(int(lam2 + 40.0 * math.sqrt(lam2) + 60))  # Poisson tail beyond 40 sd is < 1e-300
    return -0.5 * (math.log(2.0) + float(np.sum(stats.poisson.pmf(k, lam2) * special.digamma(0.5 + k))))


def kingma_neg_kl_hand(alpha: float) -> float:
    return 0.5 * math.log(alpha) + C1 * alpha + C2 * alpha**2 + C3 * alpha**3


def molchanov_neg_kl_hand(log_alpha: float) -> float:
    return K1 / (1.0 + math.exp(-(K2 + K3 * log_alpha))) - 0.5 * math.log1p(math.exp(-log_alpha)) - K1


# --------------------------------------------------------------------------- registry, constants


def test_registry_metadata():
    for name, cls in (("variational", VariationalDropoutLinear), ("sparse_variational", SparseVariationalLinear),
                      ("sparse_variational_conv2d", SparseVariationalConv2d)):
        info = get_variant(name)
        assert info.cls is cls and info.kind == "layer" and info.learned
        assert cls.learned and not cls.batch_shared_mask
    assert isinstance(make_dropout("variational", 3, 2, p=0.2), VariationalDropoutLinear)
    assert isinstance(make_dropout("sparse_variational", 3, 2), SparseVariationalLinear)


def test_constants_are_the_papers():
    assert (KINGMA_C1, KINGMA_C2, KINGMA_C3) == (C1, C2, C3)
    assert (MOLCHANOV_K1, MOLCHANOV_K2, MOLCHANOV_K3) == (K1, K2, K3)


# --------------------------------------------------------------------------- KL golden values


@pytest.mark.parametrize("alpha, literal", [(0.1, 1.0495815350870226), (0.5, 0.06807086402997259),
                                            (0.999, -0.2452930095933593)])
def test_kingma_kl_golden(alpha, literal):
    got = float(kingma_kl(torch.tensor(math.log(alpha), dtype=torch.float64)))
    assert got == pytest.approx(-kingma_neg_kl_hand(alpha), abs=1e-12)
    assert got == pytest.approx(literal, abs=1e-12)


@pytest.mark.parametrize("log_alpha, literal", [(-8.0, 4.635899480334027), (-2.0, 1.540532741238367),
                                                (0.0, 0.4312389509903089), (3.0, 0.025420043312364804),
                                                (8.0, 0.0001683693469554104)])
def test_molchanov_kl_golden(log_alpha, literal):
    got = float(molchanov_kl(torch.tensor(log_alpha, dtype=torch.float64)))
    assert got == pytest.approx(-molchanov_neg_kl_hand(log_alpha), abs=1e-12)
    assert got == pytest.approx(literal, abs=1e-12)
    assert got >= 0.0


def test_kingma_fit_matches_true_kl_up_to_a_constant():
    """KW-KL on a 96-point grid of α ∈ [0.05, 1] against the exact series (no sampling error).

    Measured: best constant −0.0354, residual sd 0.0023, max |residual| 0.0084.
    """
    alphas = np.linspace(0.05, 1.0, 96)
    residual = np.array([true_neg_kl_part(a) - kingma_neg_kl_hand(a) for a in alphas])
    assert residual.std() < 0.01
    assert np.abs(residual - residual.mean()).max() < 0.01


def test_kingma_fit_monte_carlo():
    """KW-KL by Monte Carlo: residual sd after the best shift < 0.01.

    Common random numbers (one ε sample for every α), n = 4e5. The per-point standard error of
    the MC mean is sd(log|1+√αε|)/√n ≤ 1.06/632 ≈ 0.0017 (largest at α = 1), so the noise adds
    at most ~0.0017 in quadrature to the 0.0023 approximation residual: expected sd ≲ 0.003.
    """
    rng = np.random.default_rng(0)
    eps = rng.standard_normal(400_000)
    alphas = np.linspace(0.05, 1.0, 20)
    mc = np.array([0.5 * math.log(a) - np.log(np.abs(1.0 + math.sqrt(a) * eps)).mean() for a in alphas])
    residual = mc - np.array([kingma_neg_kl_hand(a) for a in alphas])
    assert residual.std() < 0.01


def test_molchanov_fit_matches_true_kl():
    """SV-KL: max |approx − true −KL| < 0.01 over log α ∈ [−8, 8] (true −KL → 0 at α = ∞).

    Uses the exact series on a 321-point grid. Measured max error 0.0094 at log α ≈ −3.5; the
    constant is the analytic one (no fitted shift).
    """
    log_alphas = np.linspace(-8.0, 8.0, 321)
    true = np.array([true_neg_kl_part(math.exp(la)) for la in log_alphas]) - HALF_GAMMA_LOG2
    approx = np.array([molchanov_neg_kl_hand(la) for la in log_alphas])
    assert np.abs(true - approx).max() < 0.01
    assert abs(HALF_GAMMA_LOG2 - K1) < 1e-3  # k1 is the α → ∞ limit ½(γ + log 2) = 0.63518


@pytest.mark.parametrize("alpha", [0.05, 0.3, 1.0, math.exp(-6.0), math.exp(4.0)])
def test_series_matches_monte_carlo(alpha):
    """The exact series equals the MC mean of 0.5 log α − log|1 + √α ε| within 4.5 standard errors.

    n = 2e5, se = sample sd / √n; |z| > 4.5 has probability 7e-6 per case.
    """
    rng = np.random.default_rng(1)
    eps = rng.standard_normal(200_000)
    samples = 0.5 * math.log(alpha) - np.log(np.abs(1.0 + math.sqrt(alpha) * eps))
    se = samples.std(ddof=1) / math.sqrt(samples.size)
    assert abs(samples.mean() - true_neg_kl_part(alpha)) < 4.5 * se


# --------------------------------------------------------------------------- Kingma VD layer


def test_variational_init_rate_and_set_p():
    m = VariationalDropoutLinear(5, 3, p=0.2)
    assert m.rate == pytest.approx(0.2, abs=1e-6)
    assert float(m.alpha.detach()) == pytest.approx(0.25, abs=1e-6)
    default = VariationalDropoutLinear(5, 3)  # p = 0.5 starts at α = 0.999 (σ is open at 1)
    assert float(default.alpha.detach()) == pytest.approx(0.999, abs=1e-6)
    assert default.rate == pytest.approx(0.999 / 1.999, abs=1e-6)
    m.set_p(0.1)
    assert m.rate == pytest.approx(0.1, abs=1e-6)
    assert "p=0.1" in repr(m) and "granularity=layer" in repr(m)


@pytest.mark.parametrize("granularity, shape", [("layer", ()), ("unit", (5,)), ("weight", (3, 5))])
def test_variational_granularity_shapes_and_kl_sum(granularity, shape):
    m = VariationalDropoutLinear(5, 3, p=0.3, granularity=granularity)
    assert m.alpha_logit.shape == shape
    with torch.no_grad():  # distinct α per element, all < 1
        m.alpha_logit.copy_(torch.linspace(-3.0, 2.0, m.alpha_logit.numel()).reshape(shape))
    alpha = torch.sigmoid(m.alpha_logit.detach()).double()
    per_weight = alpha.expand(3, 5) if granularity != "weight" else alpha
    expected = sum(-kingma_neg_kl_hand(float(a)) for a in per_weight.reshape(-1))
    assert m.kl().item() == pytest.approx(expected, rel=1e-5)
    assert m.p.shape == shape and (m.p < 0.5).all()


def test_variational_regularizer_is_weighted_kl_and_kl_weight_is_checkpointed():
    m = VariationalDropoutLinear(4, 2, p=0.25, kl_weight=1e-3)
    assert m.regularizer().item() == pytest.approx(1e-3 * m.kl().item(), rel=1e-6)
    assert "kl_weight" in m.state_dict()


def test_variational_eval_is_deterministic_mean():
    torch.manual_seed(0)
    m = VariationalDropoutLinear(6, 4, p=0.4).eval()
    x = torch.randn(8, 6)
    y1, y2 = m(x), m(x)
    assert torch.equal(y1, y2)
    torch.testing.assert_close(y1, F.linear(x, m.weight, m.bias))
    m.train()
    assert not torch.equal(m(x), m(x))


def test_variational_unit_granularity_matches_lrt_formula():
    """Exact check of the LRT sample: same RNG state ⇒ y = μ + sqrt((x²·α_in)θ²ᵀ + 1e-8)·ε."""
    torch.manual_seed(0)
    m = VariationalDropoutLinear(4, 3, p=0.3, granularity="unit")
    with torch.no_grad():
        m.alpha_logit.copy_(torch.tensor([-2.0, -1.0, 0.0, 1.0]))
    x = torch.randn(5, 4)
    torch.manual_seed(123)
    y = m(x)
    torch.manual_seed(123)
    eps = torch.randn(5, 3)
    alpha = torch.sigmoid(m.alpha_logit).detach()
    var = (x * x * alpha) @ (m.weight.detach() ** 2).T
    expected = F.linear(x, m.weight, m.bias) + torch.sqrt(var + 1e-8) * eps
    torch.testing.assert_close(y, expected)


def test_variational_train_mean_and_variance_match_lrt():
    """Mean μ and variance x²(αθ²) + 1e-8 of training outputs over n = 20 000 draws.

    Mean: |mean − μ| ≤ 4.5·sd/√n per output. Variance: for Gaussian samples the sample variance
    has relative sd √(2/(n−1)) = 0.0100, so |s²/σ² − 1| ≤ 4.5 × 0.0100 = 0.045. Three outputs,
    so the family-wise false-alarm rate is < 1e-4.
    """
    torch.manual_seed(1)
    n = 20_000
    m = VariationalDropoutLinear(5, 3, p=0.3, granularity="weight")
    x = torch.randn(1, 5, dtype=torch.float64)
    m = m.double()
    with torch.no_grad():
        y = m(x.expand(n, 5))
        mu = F.linear(x, m.weight, m.bias)[0]
        var = ((x * x) @ (m.alpha * m.weight**2).T)[0] + 1e-8
    assert ((y.mean(0) - mu).abs() <= 4.5 * var.sqrt() / math.sqrt(n)).all()
    assert ((y.var(0) / var - 1.0).abs() <= 4.5 * math.sqrt(2.0 / (n - 1))).all()


def test_variational_gradients_reach_all_parameters():
    m = VariationalDropoutLinear(4, 3, p=0.3, granularity="weight", kl_weight=0.1)
    loss = m(torch.randn(6, 4)).pow(2).sum() + m.regularizer()
    loss.backward()
    for param in (m.weight, m.bias, m.alpha_logit):
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0


def test_variational_kl_pushes_alpha_up():
    """d KL / d α < 0 on (0, 1): the regulariser alone increases the noise (d(−KL)/dα > 0)."""
    m = VariationalDropoutLinear(3, 2, p=0.3, granularity="weight")
    m.kl().backward()
    assert (m.alpha_logit.grad < 0).all()


def test_variational_functional_accepts_scalar_log_alpha():
    x, w = torch.randn(2, 3), torch.randn(4, 3)
    out = variational_dropout_linear(x, w, None, torch.tensor(-1.0), training=False)
    torch.testing.assert_close(out, x @ w.T)


def test_variational_state_dict_round_trip_and_deepcopy():
    torch.manual_seed(2)
    a = VariationalDropoutLinear(4, 3, p=0.2, granularity="unit", kl_weight=0.5)
    a(torch.randn(2, 4)).sum().backward()
    clone = copy.deepcopy(a)  # nothing from the forward pass is cached on the module
    b = VariationalDropoutLinear(4, 3, p=0.4, granularity="unit")
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 4)
    torch.testing.assert_close(b.eval()(x), a.eval()(x))
    torch.testing.assert_close(b.kl(), a.kl())
    assert float(b.kl_weight) == 0.5 and clone.rate == pytest.approx(a.rate)


@pytest.mark.parametrize("kwargs, match", [
    ({"p": 0.0}, r"variational: drop probability p must be in \(0, 0.5\]"),
    ({"p": 0.6}, r"\(0, 0.5\]"),
    ({"p": float("nan")}, r"\(0, 0.5\]"),
    ({"granularity": "neuron"}, "granularity must be one of"),
    ({"kl_weight": -1.0}, "kl_weight"),
    ({"in_features": 0}, "in_features must be a positive int"),
])
def test_variational_bad_arguments(kwargs, match):
    args = {"in_features": 3, "out_features": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        VariationalDropoutLinear(**args)


def test_variational_bad_input_shape():
    with pytest.raises(ValueError, match=r"variational: input must have shape \(\*, 3\)"):
        VariationalDropoutLinear(3, 2)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="variational"):
        VariationalDropoutLinear(3, 2).set_p(0.7)


# --------------------------------------------------------------------------- sparse VD


def _log_alpha_of(m) -> torch.Tensor:
    return torch.clamp(m.log_sigma2 - torch.log(m.weight**2 + 1e-8), -8.0, 8.0).detach()


def test_sparse_log_alpha_is_clipped_and_training_uses_clipped_alpha():
    torch.manual_seed(3)
    m = SparseVariationalLinear(4, 3)
    with torch.no_grad():
        m.log_sigma2.fill_(30.0)  # log α ≫ 8
        m.log_sigma2[0, 0] = -60.0  # log α ≪ −8
    la = m.log_alpha.detach()
    assert float(la.max()) == 8.0 and float(la.min()) == -8.0
    x = torch.randn(5, 4)
    torch.manual_seed(7)
    y = m(x)
    torch.manual_seed(7)
    eps = torch.randn(5, 3)
    var = (x * x) @ (la.exp() * m.weight.detach() ** 2).T
    torch.testing.assert_close(y, F.linear(x, m.weight, m.bias) + torch.sqrt(var + 1e-8) * eps)


def test_sparse_eval_prunes_weights_at_threshold_and_reports_sparsity():
    torch.manual_seed(4)
    m = SparseVariationalLinear(5, 4, threshold=3.0)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(-1.0, 1.0, 20).reshape(4, 5) + 0.05)
        target = torch.full((4, 5), -4.0)
        target[0, :3] = 5.0  # pruned
        target[2, 1] = 3.5  # pruned
        target[3, 4] = 2.5  # kept
        m.log_sigma2.copy_(target + torch.log(m.weight**2 + 1e-8))
    keep = _log_alpha_of(m) < 3.0
    assert int((~keep).sum()) == 4
    m.eval()
    x = torch.randn(6, 5)
    y = m(x)
    torch.testing.assert_close(y, F.linear(x, m.weight * keep, m.bias))
    assert torch.equal(y, m(x))
    assert m.sparsity() == {"pruned": 4, "total": 20, "fraction": 0.2}
    report = sparsity_report(torch.nn.Sequential(m, torch.nn.ReLU(), SparseVariationalLinear(4, 2)))
    assert report["0"]["pruned"] == 4
    assert report["total"]["total"] == 28 and report["total"]["compression"] == pytest.approx(28 / 24)


def test_sparse_kl_sums_molchanov_over_clipped_log_alpha():
    m = SparseVariationalLinear(3, 2)
    with torch.no_grad():
        m.log_sigma2.copy_(torch.tensor([[-12.0, -2.0, 0.0], [3.0, 8.0, 20.0]]) + torch.log(m.weight**2 + 1e-8))
    la = _log_alpha_of(m).reshape(-1).tolist()
    expected = sum(-molchanov_neg_kl_hand(v) for v in la)
    assert m.kl().item() == pytest.approx(expected, rel=1e-5)
    assert m.kl().item() >= 0.0
    m.kl_weight.fill_(0.25)
    assert m.regularizer().item() == pytest.approx(0.25 * expected, rel=1e-5)


def test_sparse_gradients_reach_theta_and_log_sigma2():
    torch.manual_seed(5)
    m = SparseVariationalLinear(4, 3, log_sigma2_init=-3.0)
    (m(torch.randn(7, 4)).pow(2).sum() + m.regularizer()).backward()
    for param in (m.weight, m.bias, m.log_sigma2):
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0


def test_sparse_set_p_and_rate():
    m = SparseVariationalLinear(4, 3)
    m.set_p(0.3)  # log α = logit(0.3) = −0.847, inside the clip range
    assert m.rate == pytest.approx(0.3, abs=1e-4)
    torch.testing.assert_close(m.log_alpha, torch.full((3, 4), math.log(0.3 / 0.7)), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"sparse_variational: drop probability p must be in \(0, 1\)"):
        m.set_p(1.0)


def test_sparse_train_mean_matches_eval_without_pruning():
    """With nothing pruned, training outputs have mean = eval output (4.5 se per output, n = 20 000)."""
    torch.manual_seed(6)
    n = 20_000
    m = SparseVariationalLinear(5, 3).double()
    m.set_p(0.25)  # log α = log(1/3) for every weight: noisy, nothing pruned
    x = torch.randn(1, 5, dtype=torch.float64)
    with torch.no_grad():
        assert m.sparsity()["pruned"] == 0
        y = m(x.expand(n, 5))
        ref = m.eval()(x)[0]
    se = y.std(0) / math.sqrt(n)
    assert ((y.mean(0) - ref).abs() <= 4.5 * se).all()


def test_sparse_conv2d_eval_prunes_and_train_matches_lrt():
    torch.manual_seed(8)
    m = SparseVariationalConv2d(2, 3, 3, padding=1, log_sigma2_init=-4.0)
    with torch.no_grad():
        m.log_sigma2[0] = 20.0  # output channel 0 fully pruned at eval
    keep = _log_alpha_of(m) < m.threshold
    x = torch.randn(2, 2, 5, 5)
    torch.manual_seed(9)
    y = m(x)
    torch.manual_seed(9)
    eps = torch.randn(2, 3, 5, 5)
    var = F.conv2d(x * x, _log_alpha_of(m).exp() * m.weight.detach() ** 2, padding=1)
    torch.testing.assert_close(y, F.conv2d(x, m.weight, m.bias, padding=1) + torch.sqrt(var + 1e-8) * eps)
    m.eval()
    torch.testing.assert_close(m(x), F.conv2d(x, m.weight * keep, m.bias, padding=1))
    assert torch.equal(m(x)[:, 0], m.bias[0].detach().expand(2, 5, 5))
    assert m.sparsity()["pruned"] >= 18


def test_sparse_state_dict_round_trip_and_deepcopy():
    torch.manual_seed(10)
    a = SparseVariationalLinear(4, 3, threshold=2.0, log_sigma2_init=-1.0)
    a(torch.randn(2, 4)).sum().backward()
    copy.deepcopy(a)
    b = SparseVariationalLinear(4, 3, threshold=2.0)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 4)
    torch.testing.assert_close(b.eval()(x), a.eval()(x))
    torch.testing.assert_close(b.kl(), a.kl())
    assert set(a.state_dict()) == {"weight", "bias", "log_sigma2", "kl_weight"}


@pytest.mark.parametrize("factory, match", [
    (lambda: SparseVariationalLinear(3, 2, threshold=float("nan")), "threshold"),
    (lambda: SparseVariationalLinear(3, 0), "out_features must be a positive int"),
    (lambda: SparseVariationalLinear(3, 2, log_sigma2_init=float("inf")), "log_sigma2_init"),
    (lambda: SparseVariationalConv2d(3, 2, 3, groups=2), "divisible by groups"),
    (lambda: SparseVariationalConv2d(3, 2, 0), "kernel_size must be positive"),
])
def test_sparse_bad_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_sparse_bad_inputs():
    with pytest.raises(ValueError, match=r"sparse_variational: input must have shape \(\*, 3\)"):
        SparseVariationalLinear(3, 2)(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"sparse_variational_conv2d: input must have shape \(N, 2, H, W\)"):
        SparseVariationalConv2d(2, 3, 3)(torch.randn(2, 2, 5))
