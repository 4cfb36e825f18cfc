"""Dropout's explicit regulariser and its averaging approximations, checked exactly (notebook 13).

Mianjy & Arora. "On dropout and nuclear norm regularization." ICML 2019; Mianjy, Arora, Vidal. "On
the implicit bias of dropout." ICML 2018 (the one-hidden-layer regulariser and its induced form);
Wager, Wang, Liang. "Dropout training as adaptive regularization." NeurIPS 2013 (GLMs); Baldi &
Sadowski. "Understanding dropout." NeurIPS 2013 (the normalised weighted geometric mean).

Notation: ``p`` is the drop probability, θ = 1 − p the retain probability, λ = p/(1 − p) = (1 − θ)/θ.
Linear nets are ``f(x) = W2·diag(b/θ)·W1·x`` with one Bernoulli(θ) gate ``b_i`` per hidden unit
(inverted dropout, as :func:`dropoutlab.inverted_dropout`). Everything here runs in float64.

* :func:`linear_regulariser` — MA-2's closed form λ·Σ_i ‖w2_i‖²(w1_iᵀx)²;
  :func:`deep_linear_regulariser` — its two-hidden-layer analogue, split into the ℓ2-path term
  (λ²) and the rescaling-invariant terms (λ) (MA-1, derived here);
  :func:`exact_expected_loss` — the same expectations by enumerating every mask;
  :func:`monte_carlo_regulariser` — by sampling masks with the package's ``inverted_dropout``.
* :func:`induced_regulariser_minimum` — min Σ‖u_i‖²‖v_i‖² over UVᵀ = M (MA-3), by an augmented
  Lagrangian with scipy's L-BFGS; :func:`equalisation_study` — dropout SGD (``train.fit``) and the
  spread of the products ‖w2_i‖·‖w1_i‖.
* :func:`glm_penalty` — logistic regression's dropout penalty, Monte Carlo, against Wager et al.'s
  quadratic (Fisher-weighted L2) approximation (WA-GLM).
* :func:`nwgm_study` — E[σ(S)] against the NWGM over every mask of a sigmoid unit, through the
  package's :func:`dropoutlab.inference.enumerate_subnetworks` (BS-NWGM).

The notebook makes one call per claim: :func:`regulariser_study` (MA-1, MA-2), :func:`induced_study`
(MA-3), :func:`glm_study` (WA-GLM) and :func:`nwgm_check` (BS-NWGM).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import optimize
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from ..checks import choice, integer, probability
from ..data import Dataset
from ..inference import enumerate_subnetworks
from ..train import TrainConfig, fit, seed_everything
from ..variants.bernoulli import InvertedDropout, StandardDropout, inverted_dropout

__all__ = ["deep_linear_regulariser", "equalisation_study", "exact_expected_loss", "glm_penalty", "glm_study",
           "induced_regulariser_minimum", "induced_study", "isotropic_inputs", "linear_regulariser",
           "monte_carlo_regulariser", "nwgm_check", "nwgm_study", "product_spread", "regulariser_study"]

DTYPE = torch.float64


def _lam(p: float, owner: str) -> float:
    """λ = p/(1 − p), the variance of the inverted-dropout gate b/(1 − p); ``p`` a drop probability in [0, 1)."""
    p = probability(p, f"{owner}: p")
    return p / (1.0 - p)


def isotropic_inputs(n: int, d: int, generator: torch.Generator) -> Tensor:
    """``(n, d)`` inputs whose second moment is exactly the identity: (1/n)·XᵀX = I (n ≥ d).

    The check of MA-2's isotropic form then needs no sampling of x: √n times an orthonormal basis.
    """
    integer(n, "isotropic_inputs: n", integer(d, "isotropic_inputs: d"))
    q, _ = torch.linalg.qr(torch.randn(n, d, generator=generator, dtype=DTYPE))
    return q * math.sqrt(n)


def linear_regulariser(w1: Tensor, w2: Tensor, x: Tensor, p: float) -> Tensor:
    """MA-2: E_b‖y − W2·diag(b/θ)·W1x‖² − ‖y − W2W1x‖² = λ·Σ_i ‖w2_i‖²·(w1_iᵀx)², averaged over x.

    ``w1``: ``(r, d)``, ``w2``: ``(k, r)`` (``w2_i`` its i-th column), ``x``: ``(n, d)``.
    """
    lam = _lam(p, "linear_regulariser")
    return lam * ((w2 ** 2).sum(0) * (x @ w1.T) ** 2).sum(1).mean()


def deep_linear_regulariser(w1: Tensor, w2: Tensor, w3: Tensor, x: Tensor, p: float) -> dict[str, Tensor]:
    """The explicit regulariser of ``W3·D2·W2·D1·W1·x`` (independent gates on both hidden layers).

    Derived by applying MA-2's identity twice (u = W1x, D = diag(b/θ), E[D] = I):
    E‖W3D2W2D1u‖² − ‖W3W2u‖² = λ·Σ_i ‖(W3W2)_{:,i}‖²u_i² + λ·Σ_j ‖w3_j‖²(w2_jᵀu)²
    + λ²·Σ_{j,i} ‖w3_j‖²w2_{ji}²u_i², the last being the ℓ2-path regulariser (a sum over input–output
    paths of the product of squared weights, times u_i²). Every term is invariant when a hidden unit's
    incoming weights are multiplied by c and its outgoing weights by 1/c. Returns the three terms
    (``first``, ``second``, ``path``) and their sum ``total``, each averaged over the rows of ``x``.
    """
    lam = _lam(p, "deep_linear_regulariser")
    u = x @ w1.T  # (n, r1)
    first = lam * (((w3 @ w2) ** 2).sum(0) * u ** 2).sum(1).mean()
    second = lam * ((w3 ** 2).sum(0) * (u @ w2.T) ** 2).sum(1).mean()
    path = lam ** 2 * ((u ** 2) @ ((w2 ** 2).T @ (w3 ** 2).sum(0))).mean()
    return {"first": first, "second": second, "path": path, "total": first + second + path}


def _masks(r: int, p: float) -> tuple[Tensor, Tensor]:
    """Every keep-mask of ``r`` units, ``(2^r, r)`` in {0, 1}, and its probability."""
    masks = torch.tensor(list(itertools.product((0.0, 1.0), repeat=r)), dtype=DTYPE)
    kept = masks.sum(1)
    return masks, (1.0 - p) ** kept * p ** (r - kept)


def exact_expected_loss(weights: list[Tensor], x: Tensor, y: Tensor, p: float) -> Tensor:
    """E_b of the mean squared-error sum ‖y − f_b(x)‖² of a linear net, by enumerating every mask.

    ``weights`` = [W1, …, WL] (``W_l``: ``(out, in)``); a gate on every hidden unit (layers 1…L−1),
    all gates independent, the kept units scaled by 1/(1 − p). At most 16 hidden units in all.
    """
    probability(p, "exact_expected_loss: p")
    widths = [w.shape[0] for w in weights[:-1]]
    if sum(widths) > 16:
        raise ValueError(f"exact_expected_loss: at most 16 hidden units can be enumerated, got {sum(widths)}")
    masks, probs = _masks(sum(widths), p)
    h = x.unsqueeze(0).expand(len(masks), -1, -1)  # (M, n, d)
    start = 0
    for w, width in zip(weights[:-1], widths, strict=True):
        h = (h @ w.T) * (masks[:, start:start + width] / (1.0 - p)).unsqueeze(1)
        start += width
    out = h @ weights[-1].T
    losses = ((y - out) ** 2).sum(-1).mean(-1)  # (M,)
    return (probs * losses).sum()


def _mask_draws(h: Tensor, p: float, n_masks: int, generator: torch.Generator, chunk: int,
                value: Callable[[Tensor], Tensor]) -> tuple[float, float]:
    """Mean and standard error of ``value`` over ``n_masks`` draws of the package's ``inverted_dropout`` on
    ``h`` (``chunk`` draws at a time; ``value`` maps a chunk of dropped copies of ``h`` to one number each)."""
    values = torch.cat([value(inverted_dropout(h.expand(min(chunk, n_masks - begin), -1, -1), p, training=True,
                                               generator=generator)) for begin in range(0, n_masks, chunk)])
    return float(values.mean()), float(values.std() / math.sqrt(n_masks))


def monte_carlo_regulariser(w1: Tensor, w2: Tensor, x: Tensor, y: Tensor, p: float, n_masks: int,
                            generator: torch.Generator, chunk: int = 500) -> tuple[float, float]:
    """MA-2 by sampling: the mean over ``n_masks`` draws of (loss with dropout − loss without).

    Each draw gates every (example, hidden unit) with the package's ``inverted_dropout``; a draw's
    value is the squared-error sum averaged over the examples. Returns (estimate, standard error).
    """
    probability(p, "monte_carlo_regulariser: p")
    integer(n_masks, "monte_carlo_regulariser: n_masks", 2)
    h = x @ w1.T
    clean = ((y - h @ w2.T) ** 2).sum(-1).mean()
    return _mask_draws(h, p, n_masks, generator, chunk,
                       lambda dropped: ((y - dropped @ w2.T) ** 2).sum(-1).mean(-1) - clean)


# ----------------------------------------------------------------------------- MA-3


def product_spread(w1: Tensor, w2: Tensor) -> float:
    """Coefficient of variation (sd/mean, ddof 0) of the products ‖w2_i‖·‖w1_i‖ over the hidden units."""
    products = w2.norm(dim=0) * w1.norm(dim=1)
    return float(products.std(unbiased=False) / products.mean())


def induced_regulariser_minimum(m: Tensor, r: int, seed: int, outer: int = 40) -> dict[str, float]:
    """min Σ_i ‖u_i‖²‖v_i‖² subject to U·Vᵀ = M with ``r`` columns, from one random start.

    An augmented Lagrangian (multiplier Λ, penalty μ = 10): each outer step minimises
    R(U, V) + ⟨Λ, UVᵀ − M⟩ + μ/2·‖UVᵀ − M‖² with scipy's L-BFGS-B (gradients by autograd), then
    Λ += μ·(UVᵀ − M). Returns the regulariser at the end (``value``), ‖M‖_*²/r (``bound``), the
    constraint residual ‖UVᵀ − M‖_F/‖M‖_F and the spread of the products ‖u_i‖·‖v_i‖.
    """
    r = integer(r, "induced_regulariser_minimum: r")
    m = m.to(DTYPE)
    rows, cols = m.shape
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows * r + cols * r, generator=g, dtype=DTYPE).numpy() * 0.5
    lagrange = torch.zeros_like(m)
    mu = 10.0

    def factors(t: Tensor) -> tuple[Tensor, Tensor]:  # U (rows, r) and V (cols, r) of the flat parameters
        return t[: rows * r].view(rows, r), t[rows * r:].view(cols, r)

    def regulariser(u: Tensor, v: Tensor) -> Tensor:
        return (u.norm(dim=0) ** 2 * v.norm(dim=0) ** 2).sum()

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.from_numpy(flat).requires_grad_(True)
        u, v = factors(t)
        c = u @ v.T - m
        value = regulariser(u, v) + (lagrange * c).sum() + mu / 2 * (c ** 2).sum()
        value.backward()
        return float(value.detach()), t.grad.numpy().copy()

    for _ in range(outer):
        z = optimize.minimize(objective, z, jac=True, method="L-BFGS-B",
                              options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12}).x
        u, v = factors(torch.from_numpy(z))
        lagrange = lagrange + mu * (u @ v.T - m)
    u, v = factors(torch.from_numpy(z))
    return {"seed": seed, "value": float(regulariser(u, v)),
            "bound": float(torch.linalg.matrix_norm(m, ord="nuc")) ** 2 / r,
            "residual": float(torch.linalg.matrix_norm(u @ v.T - m) / torch.linalg.matrix_norm(m)),
            "spread": product_spread(u.T, v)}


@dataclass(frozen=True)
class EqualisationStudy:
    """Per (seed, arm): the spread of ‖w2_i‖·‖w1_i‖ before and after SGD, and the final training MSE."""

    spreads: pd.DataFrame
    products: pd.DataFrame


def equalisation_study(m: Tensor, r: int, p: float, seeds: list[int], config: TrainConfig,
                       n: int = 4096) -> EqualisationStudy:
    """Train ``x ↦ W2·dropout(W1·x)`` on y = M·x (x isotropic) with and without dropout, paired by seed.

    ``train.fit`` with ``task="regression"`` (mean squared error); both arms start from the same
    weights (the seed's default ``nn.Linear`` initialisation) and see the same batches. Mianjy, Arora,
    Vidal (2018): dropout's regulariser is minimised, for the learned map, by equalised factors, so
    dropout SGD should drive the products ‖w2_i‖·‖w1_i‖ towards equality; plain SGD has no such pull.
    """
    probability(p, "equalisation_study: p")
    k, d = m.shape
    rows, products = [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(10_000 + seed)
        x = isotropic_inputs(n, d, g).float()
        data = {"train": Dataset(x, x @ m.float().T)}
        for arm, rate in (("dropout", p), ("no dropout", 0.0)):
            seed_everything(seed)
            model = nn.Sequential(nn.Linear(d, r, bias=False), InvertedDropout(rate), nn.Linear(r, k, bias=False))
            before = product_spread(model[0].weight.detach().double(), model[2].weight.detach().double())
            history = fit(model, data, replace(config, task="regression", seed=seed, eval_splits=("train",)))
            w1, w2 = model[0].weight.detach().double(), model[2].weight.detach().double()
            rows.append({"seed": seed, "arm": arm, "spread_before": before, "spread_after": product_spread(w1, w2),
                         "train_mse": history.last("train", "loss")})
            products += [{"seed": seed, "arm": arm, "unit": i, "product": value}
                         for i, value in enumerate((w2.norm(dim=0) * w1.norm(dim=1)).tolist())]
    return EqualisationStudy(pd.DataFrame(rows), pd.DataFrame(products))


# ----------------------------------------------------------------------------- WA-GLM


def glm_penalty(x: Tensor, beta: Tensor, intercept: float, p: float, n_masks: int,
                generator: torch.Generator, chunk: int = 100) -> dict[str, float]:
    """Logistic regression's dropout penalty against its quadratic approximation (Wager et al. 2013).

    With A(η) = log(1 + e^η) and features x̃ = x ⊙ b/(1 − p) (the package's ``inverted_dropout``; the
    intercept is not dropped), the expected dropout loss exceeds the plain one by
    R = (1/n)·Σ_i E[A(x̃_iᵀβ + c)] − A(x_iᵀβ + c) (the label term is linear in x̃, E[x̃] = x). Its
    second-order approximation is R_q = (1/n)·Σ_i ½·A''(η_i)·Var(x̃_iᵀβ) = ½·λ·βᵀ·diag(XᵀVX/n)·β, an
    L2 penalty weighted by the diagonal of the Fisher information (V = diag A''(η_i)). R is estimated
    from ``n_masks`` masks per example with the control variate A'(η_i)·(x̃_i − x_i)ᵀβ (mean zero).
    Returns R (``exact``) with its standard error, R_q (``quadratic``) and the relative error.
    """
    lam = _lam(p, "glm_penalty")
    integer(n_masks, "glm_penalty: n_masks", 2)
    x, beta = x.to(DTYPE), beta.to(DTYPE)
    eta = x @ beta + intercept
    a1 = torch.sigmoid(eta)
    quadratic = float(0.5 * lam * (a1 * (1.0 - a1) * ((x ** 2) @ (beta ** 2))).mean())
    if p == 0.0:
        return {"p": p, "exact": 0.0, "se": 0.0, "quadratic": quadratic, "relative_error": 0.0}

    def excess(dropped: Tensor) -> Tensor:  # A(η̃) − A(η) − A'(η)·(η̃ − η), averaged over the examples
        noisy = dropped @ beta + intercept
        return (F.softplus(noisy) - F.softplus(eta) - a1 * (noisy - eta)).mean(-1)

    exact, se = _mask_draws(x, p, n_masks, generator, chunk, excess)
    return {"p": p, "exact": exact, "se": se, "quadratic": quadratic, "relative_error": (quadratic - exact) / exact}


# ----------------------------------------------------------------------------- BS-NWGM


def nwgm_study(n_units: int, n_inputs: int, p: float, seed: int, all_low: bool) -> pd.DataFrame:
    """E[σ(S)] and the NWGM of a sigmoid unit over every mask of its inputs, one row per random unit.

    A unit S = Σ_j w_j·b_j·o_j + c with inputs o_j ∈ (0, 1) gated by b_j ~ Bernoulli(1 − p) as in
    Baldi & Sadowski (no rescaling: ``StandardDropout``). The package's ``enumerate_subnetworks`` runs
    the unit as a 2-logit softmax (0, S), whose class-1 probability is σ(S), over all 2^n masks and
    returns the arithmetic mean E and the normalised weighted geometric mean NWGM. Baldi & Sadowski:
    NWGM = σ(E[S]) exactly (reported as ``identity_error``), and if every σ(S_b) ≤ ½ then NWGM ≤ E
    (Ky Fan's inequality). ``all_low`` draws units whose every masked output is ≤ ½ (w ≤ 0, c ≤ 0).
    Also reported: V = Var σ(S_b) and the second-order estimate E − NWGM ≈ V(1 − 2E)/(2E(1 − E))
    (derived here by expanding log G and log G' about E; not the paper's formula).
    """
    integer(n_units, "nwgm_study: n_units")
    if integer(n_inputs, "nwgm_study: n_inputs") > 16:
        raise ValueError(f"nwgm_study: n_inputs must be ≤ 16 (2^n masks are enumerated), got {n_inputs}")
    probability(p, "nwgm_study: p")
    g = torch.Generator().manual_seed(seed)
    rows = []
    rate = float(StandardDropout(p).p)  # the rate the module holds (float32: 0.3 is 0.30000001…)
    masks, probs = _masks(n_inputs, rate)
    for unit in range(n_units):
        o = torch.rand(n_inputs, generator=g, dtype=DTYPE) * 0.98 + 0.01
        w = torch.randn(n_inputs, generator=g, dtype=DTYPE) * 1.5
        c = float(torch.randn((), generator=g, dtype=DTYPE))
        if all_low:
            w, c = -w.abs(), -abs(c)
        head = nn.Sequential(StandardDropout(p), nn.Linear(n_inputs, 2)).to(DTYPE)
        with torch.no_grad():
            head[1].weight.copy_(torch.stack([torch.zeros_like(w), w]))
            head[1].bias.copy_(torch.tensor([0.0, c], dtype=DTYPE))
        average = enumerate_subnetworks(head, o.unsqueeze(0))
        e, nwgm = float(average.arithmetic_mean[0, 1]), float(average.geometric_mean[0, 1])
        s = masks @ (w * o) + c
        outputs = torch.sigmoid(s)
        variance = float((probs * (outputs - e) ** 2).sum())
        sigma_of_mean = 1.0 / (1.0 + math.exp(-float((1.0 - rate) * (w * o).sum() + c)))
        rows.append({"unit": unit, "E": e, "NWGM": nwgm, "sigma_of_mean": sigma_of_mean,
                     "identity_error": abs(nwgm - sigma_of_mean), "all_low": bool((outputs <= 0.5).all()),
                     "V": variance, "gap": e - nwgm, "estimate": variance * (1 - 2 * e) / (2 * e * (1 - e))})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- studies (one call each)


@dataclass(frozen=True)
class RegulariserStudy:
    """MA-2 and MA-1: the closed forms against Monte Carlo and exact enumeration.

    ``monte_carlo``: one row per p (closed form, MC estimate, its s.e., relative error);
    ``mc_relative_error`` is the row at the study's ``p``; ``enumeration_error``: one hidden layer of
    10 units, every mask; ``deep``: one row per random two-hidden-layer net (the three terms, the exact
    enumeration, the relative deviation, and the largest change of a term under rescaling).
    """

    p: float
    monte_carlo: pd.DataFrame
    mc_relative_error: float
    enumeration_error: float
    deep: pd.DataFrame
    deep_error: float


def regulariser_study(p: float, n_masks: int, p_values: list[float], seed: int = 0, d: int = 10, r: int = 16,
                      k: int = 5, n: int = 256, n_deep: int = 5) -> RegulariserStudy:
    """MA-2 (one hidden layer, by Monte Carlo at every p in ``p_values`` and by enumeration) and MA-1.

    Inputs are isotropic exactly ((1/n)·XᵀX = I), targets y = M·x for a random M; weights are
    N(0, 1/9). The deep nets are d-6-6-k with weights N(0, 1/4); each hidden unit is then rescaled by a
    factor c log-uniform in [1/4, 4] (incoming × c, outgoing × 1/c) and the terms recomputed.
    """
    probability(p, "regulariser_study: p")
    choice(p, p_values, "regulariser_study: p")
    g = torch.Generator().manual_seed(seed)

    def normal(*shape: int) -> Tensor:
        return torch.randn(shape, generator=g, dtype=DTYPE)

    def log_uniform(low: float, high: float, size: int) -> Tensor:
        return torch.exp(torch.empty(size, dtype=DTYPE).uniform_(math.log(low), math.log(high), generator=g))

    x = isotropic_inputs(n, d, g)
    y = x @ normal(k, d).T
    w1, w2 = normal(r, d) / 3, normal(k, r) / 3
    rows = []
    for index, rate in enumerate(p_values):
        closed = float(_lam(rate, "regulariser_study") * ((w2**2).sum(0) * (w1**2).sum(1)).sum())
        estimate, se = monte_carlo_regulariser(w1, w2, x, y, rate, n_masks,
                                               torch.Generator().manual_seed(seed * 1000 + index))
        rows.append({"p": rate, "closed_form": closed, "monte_carlo": estimate, "se": se,
                     "relative_error": (estimate - closed) / closed})
    monte_carlo = pd.DataFrame(rows)
    small1, small2 = w1[:10], w2[:, :10]
    clean = ((y - x @ small1.T @ small2.T) ** 2).sum(-1).mean()
    exact = exact_expected_loss([small1, small2], x, y, p) - clean
    closed = linear_regulariser(small1, small2, x, p)
    deep_rows = []
    for net in range(n_deep):
        a, b, c = normal(6, d) / 2, normal(6, 6) / 2, normal(k, 6) / 2
        terms = deep_linear_regulariser(a, b, c, x, p)
        enumerated = exact_expected_loss([a, b, c], x, y, p) - ((y - x @ a.T @ b.T @ c.T) ** 2).sum(-1).mean()
        s1, s2 = log_uniform(0.25, 4.0, 6), log_uniform(0.25, 4.0, 6)
        rescaled = deep_linear_regulariser(a * s1[:, None], b / s1[None, :] * s2[:, None], c / s2[None, :], x, p)
        deep_rows.append({"net": net, **{key: float(value) for key, value in terms.items()},
                          "enumerated": float(enumerated),
                          "relative_error": abs(float(terms["total"] - enumerated)) / float(enumerated),
                          "rescaling_change": max(abs(float(rescaled[key] - terms[key])) / float(terms[key])
                                                  for key in ("first", "second", "path"))})
    deep = pd.DataFrame(deep_rows)
    return RegulariserStudy(p, monte_carlo, float(monte_carlo.loc[monte_carlo["p"] == p, "relative_error"].iloc[0]),
                            abs(float(exact - closed)) / float(closed), deep,
                            float(deep[["relative_error", "rescaling_change"]].to_numpy().max()))


@dataclass(frozen=True)
class InducedStudy:
    """MA-3: the minimum from each start (``starts``) and dropout SGD's equalisation (``sgd``)."""

    starts: pd.DataFrame
    minimum_error: float
    spread_at_minimum: float
    sgd: EqualisationStudy


def induced_study(starts: list[int], sgd_seeds: list[int], config: TrainConfig, p: float = 0.5, r: int = 8,
                  shape: tuple[int, int] = (10, 12), rank: int = 3, seed: int = 0) -> InducedStudy:
    """MA-3 on one random M (``shape``, ``rank``; the same M for the minimum and for SGD, y = M·x)."""
    g = torch.Generator().manual_seed(seed)
    m = (torch.randn(shape[0], rank, generator=g, dtype=DTYPE) @ torch.randn(rank, shape[1], generator=g,
                                                                             dtype=DTYPE)) / 2
    frame = pd.DataFrame([induced_regulariser_minimum(m, r, start) for start in starts])
    frame["relative_error"] = (frame["value"] - frame["bound"]).abs() / frame["bound"]
    return InducedStudy(frame, float(frame["relative_error"].max()), float(frame["spread"].max()),
                        equalisation_study(m, r, p, sgd_seeds, config))


@dataclass(frozen=True)
class GLMStudy:
    """WA-GLM: one row per p (R by Monte Carlo with its s.e., R_q, relative error) and per-feature terms."""

    penalties: pd.DataFrame
    relative_error: float
    features: pd.DataFrame
    accuracy: float
    n: int
    d: int


def glm_study(p: float, p_values: list[float], n_masks: int, c: float = 1.0, seed: int = 0) -> GLMStudy:
    """WA-GLM on scikit-learn's digits (1,797 images): logistic regression of "digit ≥ 5".

    Constant pixels are dropped and the rest standardised; the model is scikit-learn's
    ``LogisticRegression(C=c)``. ``features`` gives, per pixel, the Fisher weight diag(XᵀVX/n)_j, the
    plain coefficient β_j² and the quadratic penalty's share ½λ·diag_j·β_j² at ``p``.
    """
    lam = _lam(p, "glm_study")
    choice(p, p_values, "glm_study: p")
    images, labels = load_digits(return_X_y=True)
    images = StandardScaler().fit_transform(images[:, images.std(0) > 0])
    target = (labels >= 5).astype(int)
    model = LogisticRegression(C=c, max_iter=5000).fit(images, target)
    x, beta = torch.from_numpy(images), torch.from_numpy(model.coef_[0])
    intercept = float(model.intercept_[0])
    rows = [glm_penalty(x, beta, intercept, rate, n_masks, torch.Generator().manual_seed(seed * 1000 + index))
            for index, rate in enumerate(p_values)]
    penalties = pd.DataFrame(rows)
    a1 = torch.sigmoid(x @ beta + intercept)
    fisher = ((a1 * (1 - a1))[:, None] * x**2).mean(0)
    features = pd.DataFrame({"feature": range(len(beta)), "fisher_weight": fisher.numpy(),
                             "beta_squared": (beta**2).numpy(), "penalty": (0.5 * lam * fisher * beta**2).numpy()})
    return GLMStudy(penalties, abs(float(penalties.loc[penalties["p"] == p, "relative_error"].iloc[0])), features,
                    float(model.score(images, target)), int(x.shape[0]), int(x.shape[1]))


@dataclass(frozen=True)
class NWGMStudy:
    """BS-NWGM: one row per unit (``units``: regime ``random`` or ``all ≤ ½``) and the two checked numbers."""

    units: pd.DataFrame
    identity_error: float
    ky_fan_violations: int


def nwgm_check(n_units: int, n_inputs: int, p: float, seed: int = 0) -> NWGMStudy:
    """BS-NWGM: ``n_units`` random units, and ``n_units`` whose every masked output is ≤ ½."""
    free = nwgm_study(n_units, n_inputs, p, seed, all_low=False).assign(regime="random")
    low = nwgm_study(n_units, n_inputs, p, seed + 1, all_low=True).assign(regime="all ≤ ½")
    units = pd.concat([free, low], ignore_index=True)
    violations = int((low["NWGM"] > low["E"] + 1e-12).sum())
    return NWGMStudy(units, float(units["identity_error"].max()), violations)
