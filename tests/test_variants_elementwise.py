"""Elementwise and channel dropout: standard, inverted, spatial, gaussian, uout, alpha.

Grids check the contracts every variant keeps (eval determinism, p = 0, validation, shapes, gradients,
state_dict, repr, inplace); Monte-Carlo tests check the moments against the formulas.

Statistical tolerances. Every MC check compares an estimator T with its exact expectation and
allows ``K_SIGMA`` standard deviations of T, where the standard deviation follows from the
distribution of one sample and the sample size n (formulas next to each test). All generators
are seeded, so the tests are deterministic; the tolerance makes them pass for all but a
negligible fraction of seeds: for an asymptotically normal estimator, P(|Z| > 5) ≈ 5.7e-7 per
comparison, and the whole file makes fewer than 1,000 comparisons (union bound < 6e-4). With
n ≥ 20,000 the CLT is accurate for the bounded or Gaussian noises used here. Samples are float64,
so rounding (≈ 1e-16 relative) is negligible against these tolerances.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dropoutlab.variants import get_variant, make_dropout
from dropoutlab.variants.bernoulli import (
    InvertedDropout,
    SpatialDropout,
    StandardDropout,
    bernoulli_mask,
    inverted_dropout,
    spatial_dropout,
    standard_dropout,
)
from dropoutlab.variants.noise import (
    SELU_ALPHA,
    SELU_ALPHA_PRIME,
    SELU_SCALE,
    AlphaDropout,
    GaussianDropout,
    Uout,
    alpha_dropout,
    alpha_dropout_affine,
    beta_to_rate,
    gaussian_dropout,
    gaussian_std,
    rate_to_beta,
    uout,
)

K_SIGMA = 5.0  # allowed deviation in standard deviations of the estimator (see module docstring)

VARIANTS = ["standard", "inverted", "spatial", "gaussian", "uout", "alpha"]
INVERTED_FAMILY = ["inverted", "spatial", "gaussian", "uout", "alpha"]  # identity at eval
CLASSES = {
    "standard": StandardDropout,
    "inverted": InvertedDropout,
    "spatial": SpatialDropout,
    "gaussian": GaussianDropout,
    "uout": Uout,
    "alpha": AlphaDropout,
}
SHAPES = [(7,), (8, 16), (2, 3, 7), (4, 3, 5, 6), (2, 3, 2, 3, 4)]
RATES = [0.1, 0.5, 0.9]


def beta_of(p: float) -> float:
    """Uout's β with the same noise variance as Bernoulli dropout at drop rate p: β²/3 = p/(1−p)."""
    return math.sqrt(3.0 * p / (1.0 - p))


def module(name: str, p: float, **kw) -> torch.nn.Module:
    """Module of ``name`` at drop rate ``p`` (Uout at its Bernoulli-equivalent rate)."""
    return make_dropout(name, p=p, **kw)


def functional(name: str, x: torch.Tensor, p: float, **kw) -> torch.Tensor:
    """Functional form of ``name`` at drop rate ``p`` (Uout at β with the same noise variance)."""
    fns = {
        "standard": standard_dropout,
        "inverted": inverted_dropout,
        "spatial": spatial_dropout,
        "gaussian": gaussian_dropout,
        "alpha": alpha_dropout,
    }
    if name == "uout":
        return uout(x, beta_of(p), **kw)
    return fns[name](x, p, **kw)


def shapes_for(name: str) -> list[tuple[int, ...]]:
    return [s for s in SHAPES if name != "spatial" or 3 <= len(s) <= 5]


def grid(names=VARIANTS, rates=RATES):
    return [(n, p, s) for n in names for p in rates for s in shapes_for(n)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Registry, eval, p = 0
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_registered_as_activation_variant(name):
    info = get_variant(name)
    assert info.kind == "activation"
    assert info.cls is CLASSES[name]
    assert info.paper and info.equation and info.cls.__doc__
    assert isinstance(make_dropout(name), CLASSES[name])


@pytest.mark.parametrize(("name", "p", "shape"), grid())
def test_eval_is_deterministic(name, p, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    m = module(name, p).eval()
    y1, y2 = m(x), m(x)
    # m.rate, not p: the p buffer is float32, so p = 0.9 is stored as 0.89999998.
    expected = x * (1.0 - m.rate) if name == "standard" else x
    torch.testing.assert_close(y1, expected, rtol=0, atol=0)
    torch.testing.assert_close(y2, y1, rtol=0, atol=0)


@pytest.mark.parametrize(("name", "shape"), [(n, s) for n in VARIANTS for s in shapes_for(n)])
def test_p_zero_is_identity_in_training(name, shape):
    x = torch.randn(shape)
    m = module(name, 0.0).train()
    assert torch.equal(m(x), x)
    assert torch.equal(functional(name, x, 0.0, training=True), x)


def test_standard_dropout_scales_at_test_time_only():
    x = torch.randn(4, 5)
    assert torch.equal(standard_dropout(x, 0.25, training=False), x * 0.75)
    assert torch.equal(standard_dropout(x, 0.0, training=False), x)
    y = standard_dropout(x, 0.25, training=True, generator=gen())
    kept = bernoulli_mask(x.shape, 0.25, x, gen())
    assert torch.equal(y, x * kept)  # no 1/(1−p) in training


@pytest.mark.parametrize("name", VARIANTS)
def test_functional_requires_training_keyword(name):
    # F.alpha_dropout defaults to training=False and silently does nothing; ours cannot.
    x = torch.randn(2, 3, 4)
    fns = {"standard": standard_dropout, "inverted": inverted_dropout, "spatial": spatial_dropout,
           "gaussian": gaussian_dropout, "uout": uout, "alpha": alpha_dropout}
    with pytest.raises(TypeError):
        fns[name](x, 0.5)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "uout"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_p_raises_naming_the_variant(name, bad):
    with pytest.raises(ValueError, match=name):
        CLASSES[name](p=bad)
    with pytest.raises(ValueError, match=name):
        functional(name, torch.randn(2, 3, 4), bad, training=True)
    m = CLASSES[name](p=0.5)
    with pytest.raises(ValueError, match=name):
        m.set_p(bad)
    assert m.rate == 0.5  # a rejected set_p leaves the module unchanged


def test_gaussian_rejects_p_one():
    with pytest.raises(ValueError, match=r"gaussian.*\[0, 1\)"):
        GaussianDropout(p=1.0)
    with pytest.raises(ValueError, match="gaussian"):
        gaussian_dropout(torch.randn(3), 1.0, training=True)
    with pytest.raises(ValueError, match="gaussian"):
        GaussianDropout(p=0.5).set_p(1.0)


@pytest.mark.parametrize("name", ["standard", "inverted", "spatial", "alpha"])
def test_p_one_drops_everything_and_keeps_the_graph(name):
    x = torch.randn(2, 3, 4, requires_grad=True)
    y = functional(name, x, 1.0, training=True)
    assert torch.equal(y, torch.zeros_like(x))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_alpha_p_one_matches_torch():
    x = torch.randn(3, 4)
    assert torch.equal(alpha_dropout(x, 1.0, training=True), F.alpha_dropout(x, 1.0, training=True))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_uout_bad_beta_raises_naming_beta(bad):
    with pytest.raises(ValueError, match="uout.*beta"):
        Uout(beta=bad)
    with pytest.raises(ValueError, match="uout.*beta"):
        uout(torch.randn(3), bad, training=True)
    with pytest.raises(ValueError, match="uout.*beta"):
        Uout().set_beta(bad)


def test_uout_construction_options():
    assert float(Uout().beta) == pytest.approx(0.1)  # documented default
    with pytest.raises(ValueError, match="uout.*not both"):
        Uout(beta=0.2, p=0.1)
    with pytest.raises(ValueError, match="uout"):
        Uout(p=1.0)  # infinite β
    with pytest.raises(ValueError, match="uout.*noise_shape"):
        Uout(noise_shape="sample")
    with pytest.raises(ValueError, match="uout.*noise_shape"):
        uout(torch.randn(3, 4), 0.1, training=True, noise_shape="pixel")
    with pytest.raises(ValueError, match="uout.*channel"):
        uout(torch.randn(5), 0.1, training=True, noise_shape="channel")


@pytest.mark.parametrize("shape", [(8,), (8, 16)])
@pytest.mark.parametrize("training", [True, False])
def test_spatial_rejects_wrong_rank(shape, training):
    x = torch.randn(shape)
    with pytest.raises(ValueError, match="spatial"):
        spatial_dropout(x, 0.5, training=training)
    m = SpatialDropout(0.5).train(training)
    with pytest.raises(ValueError, match="spatial"):
        m(x)


# --------------------------------------------------------------------------------------------
# Training-mode behaviour: shapes, masks, dtypes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "p", "shape"), grid())
def test_training_output_shape_dtype_and_freshness(name, p, shape):
    torch.manual_seed(1)
    x = torch.randn(shape) + 3.0  # away from 0 so that y = 0 means "dropped"
    m = module(name, p).train()
    y1, y2 = m(x), m(x)
    assert y1.shape == x.shape and y1.dtype == x.dtype
    # Fresh noise each call: two draws agree everywhere with probability ≤ max(p, 1−p)^(#masks)
    # for Bernoulli masks (≤ 0.9^6 ≈ 0.53 for the smallest spatial grid), 0 for continuous noise.
    # The seed is fixed; we only require the draws to differ for the continuous noises and for
    # masks with at least 24 independent entries (0.9^24 ≈ 0.08, and the seed makes it exact).
    n_masks = shape[0] * shape[1] if name == "spatial" else math.prod(shape)
    if name in ("gaussian", "uout") or n_masks >= 24:
        assert not torch.equal(y1, y2)


def test_spatial_mask_constant_over_space_and_varies_over_channels_and_samples():
    torch.manual_seed(2)
    for shape in [(8, 16, 7), (8, 16, 5, 6), (8, 16, 2, 3, 4)]:
        x = torch.ones(shape)
        y = spatial_dropout(x, 0.5, training=True)
        flat = y.reshape(shape[0], shape[1], -1)
        assert torch.equal(flat, flat[..., :1].expand_as(flat))  # one value per (n, c)
        assert set(flat[..., 0].unique().tolist()) <= {0.0, 2.0}
        per_nc = flat[..., 0]
        # 128 independent fair coins: every row (or every column) constant has probability
        # ≤ (2·0.5^16)^8 (or (2·0.5^8)^16), i.e. never.
        assert (per_nc != per_nc[:, :1]).any(), "mask identical across channels"
        assert (per_nc != per_nc[:1, :]).any(), "mask identical across samples"


def test_uout_channel_noise_is_shared_over_space():
    torch.manual_seed(3)
    x = torch.ones(6, 5, 4, 3)
    y = uout(x, 0.3, training=True, noise_shape="channel")
    flat = y.reshape(6, 5, -1)
    assert torch.equal(flat, flat[..., :1].expand_as(flat))
    assert ((flat - 1).abs() <= 0.3 + 1e-7).all()
    assert flat[..., 0].unique().numel() == 30  # continuous noise: all (n, c) differ
    y = uout(x, 0.3, training=True)
    assert y.unique().numel() == x.numel()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", VARIANTS)
def test_dtypes_are_preserved(name, dtype):
    x = torch.randn(4, 3, 5, dtype=dtype)
    y = functional(name, x, 0.3, training=True)
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["standard", "inverted", "gaussian", "uout", "alpha"])
def test_channels_last_layout_is_kept(name):
    x = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    y = functional(name, x, 0.3, training=True)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_alpha_matches_torch_alpha_dropout_values():
    # torch draws its mask differently, so compare the *set* of values: each output is either
    # a·x + b (kept) or a·α' + b (dropped), with torch's a and b.
    torch.manual_seed(4)
    x = torch.randn(50, 40, dtype=torch.float64)
    p = 0.3
    a, b = alpha_dropout_affine(p)
    assert SELU_ALPHA_PRIME == pytest.approx(-SELU_SCALE * SELU_ALPHA)
    for y in (alpha_dropout(x, p, training=True), F.alpha_dropout(x, p, training=True)):
        kept = torch.isclose(y, a * x + b, rtol=1e-12, atol=1e-12)
        dropped = torch.isclose(y, torch.full_like(y, a * SELU_ALPHA_PRIME + b), rtol=1e-12, atol=1e-12)
        assert (kept | dropped).all()
        assert kept.any() and dropped.any()
    # Exact mask: same generator seed, same Bernoulli mask.
    y = alpha_dropout(x, p, training=True, generator=gen(5))
    keep = bernoulli_mask(x.shape, p, x, gen(5))
    torch.testing.assert_close(y, torch.where(keep, a * x + b, a * SELU_ALPHA_PRIME + b))


# --------------------------------------------------------------------------------------------
# Monte-Carlo moments
# --------------------------------------------------------------------------------------------

# Elementwise moments of y given x, as functions of (x, p): mean, variance and the fourth central
# moment μ4 (needed for the standard deviation of the sample variance). Bernoulli-type variants
# are y = E[y] + k·(m − q) with q = 1 − p, m ~ Bernoulli(q), so Var = k²pq and μ4 = k⁴(q p⁴ + p q⁴).
# Gaussian: Var = x²σ², μ4 = 3x⁴σ⁴ with σ² = p/q. Uout at β² = 3p/q: Var = x²β²/3, μ4 = x⁴β⁴/5.
X_ROW = torch.tensor([-2.0, -1.0, -0.5, 0.25, 0.5, 1.0, 1.5, 3.0], dtype=torch.float64)
N_MC = 20_000


def _bern_moments(mean, k, p):
    q = 1.0 - p
    return mean, k**2 * p * q, k**4 * (q * p**4 + p * q**4)


def exact_moments(name: str, x: torch.Tensor, p: float):
    q = 1.0 - p
    if name == "standard":
        return _bern_moments(q * x, x, p)
    if name in ("inverted", "spatial"):
        return _bern_moments(x, x / q, p)
    if name == "alpha":
        a, _ = alpha_dropout_affine(p)
        return _bern_moments(a * q * x, a * (x - SELU_ALPHA_PRIME), p)
    if name == "gaussian":
        s2 = p / q
        return x, x**2 * s2, 3 * x**4 * s2**2
    if name == "uout":
        b2 = beta_of(p) ** 2
        return x, x**2 * b2 / 3, x**4 * b2**2 / 5
    raise AssertionError(name)


def mc_samples(name: str, p: float, seed: int) -> torch.Tensor:
    """N_MC independent draws of y for each entry of X_ROW, shape (N_MC, 8)."""
    x = X_ROW.expand(N_MC, -1)
    if name == "spatial":  # one channel per entry, so masks are independent over samples
        return spatial_dropout(x.unsqueeze(-1), p, training=True, generator=gen(seed)).squeeze(-1)
    return functional(name, x.contiguous(), p, training=True, generator=gen(seed))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("name", VARIANTS)
def test_mc_mean_matches_formula(name, p):
    # Sample mean of n i.i.d. draws: sd = sqrt(Var[y]/n); tolerance K_SIGMA·sd per entry. For the
    # inverted family the formula is E[y] = x (= eval output); standard: (1−p)·x (= eval output);
    # alpha: a(1−p)·x (alpha preserves moments of N(0,1) inputs, not of fixed x; see below).
    y = mc_samples(name, p, seed=10)
    mean, var, _ = exact_moments(name, X_ROW, p)
    tol = K_SIGMA * torch.sqrt(var / N_MC)
    err = (y.mean(0) - mean).abs()
    assert (err <= tol).all(), f"{name} p={p}: |mean − E| = {err.tolist()} > {tol.tolist()}"
    if name != "alpha":  # expectation preserved: E[y_train] equals the eval output
        m = module(name, p).eval()
        torch.testing.assert_close(m(X_ROW.unsqueeze(0).unsqueeze(-1)).flatten(), mean)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("name", VARIANTS)
def test_mc_variance_matches_formula(name, p):
    # Variance estimator with the known mean: V̂ = mean((y − E y)²) is unbiased with
    # Var(V̂) = (μ4 − Var²)/n exactly, so tolerance = K_SIGMA·sqrt((μ4 − Var²)/n) per entry.
    # (Inverted Bernoulli, Gaussian and Uout at β² = 3p/(1−p) all have Var = x²·p/(1−p).)
    y = mc_samples(name, p, seed=20)
    mean, var, mu4 = exact_moments(name, X_ROW, p)
    if name in ("inverted", "spatial", "gaussian", "uout"):
        torch.testing.assert_close(var, X_ROW**2 * p / (1 - p))
    v_hat = ((y - mean) ** 2).mean(0)
    tol = K_SIGMA * torch.sqrt((mu4 - var**2).clamp_min(0.0) / N_MC)  # clamp: μ4 = Var² at p = 0.5
    # For p = 0.5 the inverted noise is ±x exactly and μ4 = Var²: V̂ is exact up to rounding,
    # bounded by n·eps·V (float64 summation of n non-negative terms).
    tol = tol + N_MC * torch.finfo(torch.float64).eps * var
    err = (v_hat - var).abs()
    assert (err <= tol).all(), f"{name} p={p}: |V̂ − Var| = {err.tolist()} > {tol.tolist()}"


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("name", ["standard", "inverted", "spatial", "alpha"])
def test_empirical_drop_rate(name, p):
    # Fraction of dropped masks is a mean of n Bernoulli(p): sd = sqrt(p(1−p)/n).
    torch.manual_seed(30)
    if name == "spatial":
        y = spatial_dropout(torch.ones(200, 100, 3, 3, dtype=torch.float64), p, training=True)
        dropped = y[:, :, 0, 0] == 0
    elif name == "alpha":
        a, b = alpha_dropout_affine(p)
        y = alpha_dropout(torch.ones(200, 100, dtype=torch.float64), p, training=True)
        dropped = torch.isclose(y, torch.full_like(y, a * SELU_ALPHA_PRIME + b), rtol=1e-12, atol=0)
    else:
        dropped = functional(name, torch.ones(200, 100, dtype=torch.float64), p, training=True) == 0
    n = dropped.numel()
    assert abs(dropped.double().mean().item() - p) <= K_SIGMA * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_alpha_keeps_zero_mean_unit_variance_of_standard_normal(p):
    # x ~ N(0, 1), y = a·Z + b with Z = x (prob q) or α' (prob p). E[y] = 0, Var[y] = 1 exactly
    # (Klambauer et al.). Sample mean: sd = 1/√n. Second moment about the known mean 0:
    # V̂ = mean(y²), sd = sqrt((E[y⁴] − 1)/n), E[y⁴] = q·E[(a x + b)⁴] + p·(a α' + b)⁴ with
    # E[(a x + b)⁴] = b⁴ + 6a²b² + 3a⁴.
    n = 200_000
    torch.manual_seed(40)
    x = torch.randn(n, dtype=torch.float64)
    y = alpha_dropout(x, p, training=True)
    a, b = alpha_dropout_affine(p)
    q = 1.0 - p
    m4 = q * (b**4 + 6 * a**2 * b**2 + 3 * a**4) + p * (a * SELU_ALPHA_PRIME + b) ** 4
    # x is itself random: its own sample mean/variance errors are part of y's (already counted,
    # since the formulas are for y's distribution with x ~ N(0, 1)).
    assert abs(y.mean().item()) <= K_SIGMA / math.sqrt(n)
    assert abs((y**2).mean().item() - 1.0) <= K_SIGMA * math.sqrt((m4 - 1.0) / n)


def _fourth_central_bernoulli(c: float, v: float, q: float) -> tuple[float, float]:
    """Var and E[(X − c)⁴] of X = x·m/q, x ~ N(c, v), m ~ Bernoulli(q)."""
    p = 1.0 - q
    var = (c**2 + v) / q - c**2
    mu, s2 = c * p / q, v / q**2  # given m = 1: X − c ~ N(c·p/q, v/q²); given m = 0: X − c = −c
    m4 = p * c**4 + q * (mu**4 + 6 * mu**2 * s2 + 3 * s2**2)
    return var, m4


def _fourth_central_uout(c: float, v: float, beta: float) -> tuple[float, float]:
    """Var and E[(X − c)⁴] of X = x·(1 + r), x ~ N(c, v), r ~ U(−β, β)."""
    er2, er4 = beta**2 / 3, beta**4 / 5
    var = (1 + er2) * (c**2 + v) - c**2
    # Given r: X − c ~ N(c·r, v(1 + r)²), so E[(X − c)⁴ | r] = (cr)⁴ + 6(cr)²v(1+r)² + 3v²(1+r)⁴.
    m4 = c**4 * er4 + 6 * c**2 * v * (er2 + er4) + 3 * v**2 * (1 + 6 * er2 + er4)
    return var, m4


def _check_shift(x_train: torch.Tensor, c: float, v: float, var: float, m4: float, delta: float, n: int):
    # V̂ = mean((X − c)²) (E[X] = c is preserved), unbiased with sd s = sqrt((μ4 − Var²)/n).
    # |V̂ − Var| ≤ K·s gives |v/V̂ − v/Var| = v|Var − V̂|/(Var·V̂) ≤ v·K·s/(Var·(Var − K·s)):
    # an exact bound on the shift ratio's error, no delta-method approximation needed.
    v_hat = ((x_train - c) ** 2).mean().item()
    tol_v = K_SIGMA * math.sqrt((m4 - var**2) / n)
    assert abs(v_hat - var) <= tol_v
    tol_delta = v * tol_v / (var * (var - tol_v))
    assert abs(v / v_hat - delta) <= tol_delta


@pytest.mark.parametrize("q", [0.5, 0.8])
@pytest.mark.parametrize("c", [0.0, 1.0])
@pytest.mark.parametrize("v", [0.5, 2.0])
def test_li_variance_shift_of_inverted_dropout(q, c, v):
    # Li et al. 2019: unit with mean c, variance v; X = x·m/q. Test variance v (dropout off),
    # train variance (c² + v)/q − c², shift Δ = Var_test/Var_train = q·v/(v + (1 − q)c²).
    n = 100_000
    torch.manual_seed(50)
    x = c + math.sqrt(v) * torch.randn(n, dtype=torch.float64)
    x_train = inverted_dropout(x, 1.0 - q, training=True)
    var, m4 = _fourth_central_bernoulli(c, v, q)
    delta = q * v / (v + (1 - q) * c**2)
    assert delta == pytest.approx(v / var, rel=1e-12)  # the two forms of Δ agree
    _check_shift(x_train, c, v, var, m4, delta, n)


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("c", [0.0, 1.0])
@pytest.mark.parametrize("v", [0.5, 2.0])
def test_li_variance_shift_of_uout(beta, c, v):
    # Uout: Var_train = (1 + β²/3)(c² + v) − c², so Δ = 3/(3 + β²) at c = 0; it equals the shift of
    # inverted dropout at the Bernoulli-equivalent rate p = β²/(3 + β²) for every c, v.
    n = 100_000
    torch.manual_seed(60)
    x = c + math.sqrt(v) * torch.randn(n, dtype=torch.float64)
    x_train = uout(x, beta, training=True)
    var, m4 = _fourth_central_uout(c, v, beta)
    delta = v / var
    if c == 0.0:
        assert delta == pytest.approx(3 / (3 + beta**2), rel=1e-12)
    q_eq = 1.0 - beta_to_rate(beta)
    assert delta == pytest.approx(q_eq * v / (v + (1 - q_eq) * c**2), rel=1e-12)
    _check_shift(x_train, c, v, var, m4, delta, n)


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.2, 0.7])
@pytest.mark.parametrize("name", VARIANTS)
def test_gradient_equals_mask_times_scale(name, p):
    shape = (4, 3, 5)
    x = (torch.rand(shape, dtype=torch.float64, generator=gen(7)) + 0.5).requires_grad_()
    y = functional(name, x, p, training=True, generator=gen(8))
    upstream = torch.randn(shape, dtype=torch.float64, generator=gen(9))
    y.backward(upstream)
    q = 1.0 - p
    if name in ("standard", "inverted", "alpha"):
        keep = bernoulli_mask(shape, p, x, gen(8)).double()
        scale = {"standard": 1.0, "inverted": 1.0 / q, "alpha": alpha_dropout_affine(p)[0]}[name]
        expected = keep * scale
    elif name == "spatial":
        keep = bernoulli_mask(shape[:2] + (1,), p, x, gen(8)).double()
        expected = (keep / q).expand(shape)
    else:  # gaussian, uout: y = x·noise, dy/dx = noise = y/x
        expected = (y / x).detach()
    torch.testing.assert_close(x.grad, upstream * expected)


@pytest.mark.parametrize("name", ["standard", "inverted", "spatial", "alpha"])
def test_gradcheck_custom_autograd(name):
    x = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)

    def f(t):
        return functional(name, t, 0.3, training=True, generator=gen(11))

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_only_a_bool_mask_is_saved_for_backward():
    x = torch.randn(64, 32, requires_grad=True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        inverted_dropout(x, 0.5, training=True)
        alpha_dropout(x, 0.5, training=True)
    assert [t.dtype for t in saved] == [torch.bool, torch.bool]
    saved.clear()
    x4 = torch.randn(8, 6, 5, 5, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        spatial_dropout(x4, 0.5, training=True)
    assert [tuple(t.shape) for t in saved] == [(8, 6, 1, 1)]  # only the small per-channel mask


# --------------------------------------------------------------------------------------------
# State, repr, inplace
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_state_dict_round_trip(name):
    src, dst = module(name, 0.3), module(name, 0.6)
    dst.load_state_dict(src.state_dict())
    assert dst.rate == pytest.approx(0.3, rel=1e-6)
    dst.set_p(0.2)  # schedules set p in place, and it is checkpointed
    again = module(name, 0.9)
    again.load_state_dict(dst.state_dict())
    assert again.rate == pytest.approx(0.2, rel=1e-6)
    key = "beta" if name == "uout" else "p"
    assert list(src.state_dict()) == [key]


def test_uout_rate_is_the_bernoulli_equivalent():
    m = Uout(beta=0.3)
    assert m.rate == pytest.approx(0.09 / 3.09, rel=1e-6)
    m.set_p(0.25)
    assert float(m.beta) == pytest.approx(1.0, rel=1e-6)  # 3·0.25/0.75 = 1
    for p in (0.0, 0.1, 0.5, 0.9):
        assert beta_to_rate(rate_to_beta(p)) == pytest.approx(p, abs=1e-12)
    assert gaussian_std(0.5) == pytest.approx(1.0)  # SR-G: σ² = p/(1−p), 1 at p = 0.5
    assert gaussian_std(0.2) ** 2 == pytest.approx(0.25)


def test_uout_is_found_by_schedules_and_mc():
    from dropoutlab.inference import mc_dropout
    from dropoutlab.schedules import DropoutScheduler, is_schedulable

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), Uout(beta=0.1), torch.nn.Linear(4, 2))
    assert is_schedulable(model[1])
    assert float(model[1].p) == pytest.approx(model[1].rate, rel=1e-6)
    with pytest.raises(AttributeError):
        model[1].p = 0.3  # derived, read-only: no silent write past beta
    DropoutScheduler(model, 0.25)  # writes the rate at t = 0 through set_p
    assert float(model[1].beta) == pytest.approx(1.0, rel=1e-6)
    model.eval()
    with mc_dropout(model) as found:
        assert model[1] in found.values() and model[1].training


@pytest.mark.parametrize("name", VARIANTS)
def test_extra_repr(name):
    m = module(name, 0.25)
    text = repr(m)
    if name == "uout":
        assert f"beta={rate_to_beta(0.25):.4g}" in text
        assert "noise_shape='channel'" in repr(Uout(0.1, noise_shape="channel"))
    else:
        assert "p=0.25" in text
    assert "inplace=True" in repr(module(name, 0.25, inplace=True))
    assert "inplace" not in text


@pytest.mark.parametrize("name", VARIANTS)
def test_inplace_matches_out_of_place(name):
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    expected = functional(name, x, 0.4, training=True, generator=gen(12))
    buf = x.clone()
    got = functional(name, buf, 0.4, training=True, inplace=True, generator=gen(12))
    assert got.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(buf, expected)


@pytest.mark.parametrize("name", VARIANTS)
def test_inplace_module_in_eval(name):
    x = torch.randn(4, 3, 5)
    buf = x.clone()
    y = module(name, 0.4, inplace=True).eval()(buf)
    assert y.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(y, x * 0.6 if name == "standard" else x)


@pytest.mark.parametrize("name", VARIANTS)
def test_inplace_gradient_on_non_leaf(name):
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    h = x * 1.0  # in-place on a non-leaf is allowed by autograd
    y = functional(name, h, 0.4, training=True, inplace=True, generator=gen(13))
    y.sum().backward()
    x2 = x.detach().clone().requires_grad_()
    functional(name, x2, 0.4, training=True, generator=gen(13)).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
