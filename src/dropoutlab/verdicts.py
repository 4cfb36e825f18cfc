"""The one statistics module that decides every claim verdict.

A notebook records per-run measurements; :func:`decide` applies the claim's rule from ``claims.yaml``
(:mod:`dropoutlab.registry`) and returns a :class:`Decision`. The rule is the same for every
statistical kind: with the registry's one-sided level α (0.025),

* ``p_for``: one-sided test of the claim against its margin; ``p_against``: one-sided test of the opposite;
* reproduced iff ``p_for < α``; not reproduced iff ``p_against < α``; inconclusive otherwise.

For the t-based kinds, equivalence and share this is exactly dual to the reported two-sided (1 − 2α),
i.e. 95 %, interval lying wholly on the claim's side of the margin (reproduced) or wholly on the other
side (not reproduced). Ranking and omnibus decide by their tests and report an approximate or
descriptive interval (see :func:`_ranking` and :func:`_omnibus`). Only independent training runs are
replicates: every array holds one value per run. :func:`apply_holm` adjusts the p-values within each
declared family and re-decides; :func:`simulate` checks the rules on synthetic data with known truth.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from itertools import combinations
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from .analysis.stats import holm
from .registry import KINDS, T_KINDS, Registry, Rule

VERDICTS = ("reproduced", "not reproduced", "inconclusive")
POWER = 0.8  # target power of n_needed
N_CAP = 10_000  # n_needed never exceeds this
EXACT_RANKING_MAX = 10  # up to this many items the Spearman p is exact (all m! orderings); t approximation above
TWO_ARMS = {"paired": ("a", "b"), "independent": ("a", "b"), "one-sample": ("values",)}
T_TESTS = {"paired": "paired t (ttest_rel)", "independent": "Welch t (ttest_ind)",
           "one-sample": "one-sample t (ttest_1samp)"}


@dataclass(frozen=True)
class Decision:
    """The verdict of one claim with everything the report shows.

    ``n`` is the number of independent runs (pairs for paired designs, the smaller arm for Welch),
    units for a share, items for a ranking, the smallest group for an omnibus; ``None`` for a check.
    ``p`` is the deciding one-sided p (``p_against`` when not reproduced, else ``p_for``).
    ``n_needed`` is the number of runs (per arm for Welch) with 80 % power at the observed effect and
    SD, for undecided t-based claims only. ``measurements`` holds the raw inputs (keyword → list).
    """

    id: str
    kind: str
    verdict: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int | None
    test: str
    p: float | None
    p_for: float | None
    p_against: float | None
    margin: float | None
    side: str | None
    half_width: float | None
    n_needed: int | None
    parts: dict[str, Decision] | None
    reason: str
    unit: str = ""
    note: str = ""
    measurements: dict[str, Any] = field(default_factory=dict)


class _Outcome(NamedTuple):
    estimate: float
    low: float | None
    high: float | None
    n: int
    test: str
    p_for: float
    p_against: float
    distance: float | None  # standardised distance to the decision boundary, for n_needed (t-based only)
    detail: str  # kind-specific words for the reason


def _fail(rule: Rule, message: str) -> None:
    raise ValueError(f"{rule.id}: {message}")


def _array(rule: Rule, name: str, x: Any, minimum: int) -> np.ndarray:
    """A 1-D finite float array of per-run values with at least ``minimum`` entries."""
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        _fail(rule, f"{name}= must be numbers, one per independent run, got {x!r}")
    if arr.ndim != 1:
        _fail(rule, f"{name}= must be 1-D, one value per independent run (average within a run first), "
              f"got shape {arr.shape}")
    if arr.size < minimum:
        _fail(rule, f"{name}= needs at least {minimum} runs, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        _fail(rule, f"{name}= must be finite, got {arr.tolist()}")
    return arr


def _inputs(rule: Rule, given: dict[str, Any]) -> dict[str, Any]:
    """Check the measurements against the rule's kind and design once; return clean arrays."""
    kind = rule.kind
    if kind in (*T_KINDS, "equivalence"):
        expected = TWO_ARMS[rule.design]
    else:
        expected = {"share": ("successes",), "ranking": ("groups",), "omnibus": ("groups",),
                    "check": ("value", "tolerance") if rule.tolerance == "from-data" else ("value",),
                    "all": ("parts",)}[kind]
    if set(given) != set(expected):
        what = f"{kind}, design {rule.design}" if rule.design else kind
        _fail(rule, f"a {what} claim takes {', '.join(k + '=' for k in expected)}; "
              f"got {', '.join(k + '=' for k in given) or 'nothing'}")
    if kind in (*T_KINDS, "equivalence"):
        out = {k: _array(rule, k, given[k], 2) for k in expected}
        if rule.design == "paired" and out["a"].size != out["b"].size:
            _fail(rule, f"paired arrays must have equal length (same seeds, same order), got "
                  f"{out['a'].size} and {out['b'].size}")
        return out
    if kind == "share":
        flags = np.asarray(given["successes"])
        if flags.ndim != 1 or flags.size == 0 or not np.isin(flags, (0, 1)).all():
            _fail(rule, f"successes= must be a 1-D list of booleans, one per independent unit, got {flags.tolist()}")
        return {"successes": flags.astype(bool)}
    if kind in ("ranking", "omnibus"):
        groups = given["groups"]
        if not isinstance(groups, Mapping):
            _fail(rule, f"groups= must be a mapping item → per-run values, got {type(groups).__name__}")
        if kind == "ranking" and set(groups) != set(rule.reference):
            missing, extra = sorted(set(rule.reference) - set(groups)), sorted(set(groups) - set(rule.reference))
            _fail(rule, f"groups= must have exactly the reference items; missing {missing}, unexpected {extra}")
        if kind == "omnibus" and len(groups) < 2:
            _fail(rule, f"an omnibus claim compares at least 2 groups, got {len(groups)}")
        order = list(rule.reference) if kind == "ranking" else list(groups)
        return {"groups": {k: _array(rule, f"groups[{k!r}]", groups[k], 1 if kind == "ranking" else 2)
                           for k in order}}
    if kind == "check":
        out = {}
        for k in expected:
            v = given[k]
            if np.ndim(v) != 0 or isinstance(v, (bool, str)) or not math.isfinite(float(v)):
                _fail(rule, f"{k}= must be one finite number, got {v!r}")
            out[k] = float(v)
        if out.get("tolerance", 0.0) < 0:
            _fail(rule, f"tolerance= must be ≥ 0, got {out['tolerance']}")
        return out
    parts = given["parts"]
    if not isinstance(parts, Mapping) or set(parts) != set(rule.parts):
        _fail(rule, f"parts= must map exactly the parts {', '.join(rule.parts)} to keyword dicts, got "
              f"{list(parts) if isinstance(parts, Mapping) else parts!r}")
    for name in rule.parts:
        if not isinstance(parts[name], Mapping):
            _fail(rule, f"parts[{name!r}] must be a dict of measurements such as dict(a=..., b=...)")
    return {"parts": {name: dict(parts[name]) for name in rule.parts}}


def _t(design: str, a: np.ndarray, b: np.ndarray | None, null: float, alpha: float):
    """Mean effect against ``null`` along the last axis (one row per simulated data set).

    paired: ``ttest_rel`` on a − b; independent: Welch ``ttest_ind``; one-sample: ``ttest_1samp`` on a.
    Returns (estimate, half-width of the two-sided 1 − 2α interval, one-sided p for effect > null,
    one-sided p for effect < null, run-to-run SD). Without any spread (identical runs) the effect is
    known exactly: p is 0 on the side where the estimate lies, 1 elsewhere, the half-width 0.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-identical runs: the zero-SD case is set below
        if design == "independent":
            est = a.mean(-1) - b.mean(-1)
            va, vb = a.var(-1, ddof=1), b.var(-1, ddof=1)
            se, sd = np.sqrt(va / a.shape[-1] + vb / b.shape[-1]), np.sqrt((va + vb) / 2)
            res = stats.ttest_ind(a - null, b, axis=-1, equal_var=False)
        else:
            d = a - b if design == "paired" else a
            est, sd = d.mean(-1), d.std(-1, ddof=1)
            se = sd / math.sqrt(d.shape[-1])
            res = stats.ttest_rel(a - null, b, axis=-1) if design == "paired" else stats.ttest_1samp(a, null, axis=-1)
        live = se > 0
        p_greater = np.where(live, stats.t.sf(res.statistic, res.df), (est <= null).astype(float))
        p_less = np.where(live, stats.t.cdf(res.statistic, res.df), (est >= null).astype(float))
        half = np.where(live, stats.t.isf(alpha, res.df) * se, 0.0)
    return est, half, p_greater, p_less, sd


def _t_kind(rule: Rule, x: dict[str, np.ndarray]) -> _Outcome:
    """directional, threshold, trend, non-inferiority: one-sided t-tests of the mean effect vs the margin."""
    a, b = x.get("a", x.get("values")), x.get("b")
    est, half, pg, pl, sd = (float(v) for v in _t(rule.design, a, b, rule.margin, rule.alpha))
    p_for, p_against = (pg, pl) if rule.side == "greater" else (pl, pg)
    n = a.size if b is None else min(a.size, b.size)
    dist = abs(est - rule.margin) / sd if sd > 0 else None
    return _Outcome(est, est - half, est + half, n, T_TESTS[rule.design], p_for, p_against, dist, "")


def _tost(design: str, a: np.ndarray, b: np.ndarray | None, delta: float, alpha: float):
    """Two one-sided tests against ±δ: (estimate, half-width, p_for = max, p_against = min over 'outside', sd)."""
    est, half, p_above_low, p_below_low, sd = _t(design, a, b, -delta, alpha)
    _, _, p_above_high, p_below_high, _ = _t(design, a, b, delta, alpha)
    return est, half, np.maximum(p_above_low, p_below_high), np.minimum(p_above_high, p_below_low), sd


def _equivalence(rule: Rule, x: dict[str, np.ndarray]) -> _Outcome:
    """TOST: the claim |effect| < δ; 'not reproduced' when the effect is shown beyond +δ or below −δ."""
    a, b = x.get("a", x.get("values")), x.get("b")
    est, half, p_for, p_against, sd = (float(v) for v in _tost(rule.design, a, b, rule.margin, rule.alpha))
    n = a.size if b is None else min(a.size, b.size)
    dist = abs(rule.margin - abs(est)) / sd if sd > 0 else None
    return _Outcome(est, est - half, est + half, n, "TOST " + T_TESTS[rule.design], p_for, p_against, dist, "")


def _share_p(k: int, n: int, margin: float, side: str) -> tuple[float, float]:
    """Exact binomial one-sided p for the claim (share beyond the margin on ``side``) and against it."""
    other = "less" if side == "greater" else "greater"
    return (stats.binomtest(k, n, margin, alternative=side).pvalue,
            stats.binomtest(k, n, margin, alternative=other).pvalue)


def _share(rule: Rule, x: dict[str, np.ndarray]) -> _Outcome:
    """Share of independent units with a success vs the margin: binomtest, Clopper–Pearson interval (dual)."""
    k, n = int(x["successes"].sum()), int(x["successes"].size)
    p_for, p_against = _share_p(k, n, rule.margin, rule.side)
    ci = stats.binomtest(k, n, rule.margin).proportion_ci(1 - 2 * rule.alpha, method="exact")
    return _Outcome(k / n, ci.low, ci.high, n, "exact binomial (binomtest)", p_for, p_against, None, f"{k}/{n}; ")


@cache
def _spearman_null(reference: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Exact null distribution of Spearman's ρ between distinct ranks and the reference (all m! orderings).

    Under "all items equal" the ranks of the measured means are a uniformly random ordering. Counted by
    dynamic programming over the set of ranks already used (2^m states), so 10 items take milliseconds;
    ties in the reference are kept as mid-ranks. Returns (ρ values ascending, probabilities).
    """
    r = np.rint(2 * stats.rankdata(reference)).astype(int)  # twice the mid-ranks: integers
    m = r.size
    size = int(r.sum()) * (m - 1) + 1
    counts = np.zeros((1 << m, size))
    counts[0, 0] = 1.0
    for mask in range(1 << m):
        i = mask.bit_count()
        if i == m:
            continue
        for q in range(m):
            if not mask >> q & 1:
                shift = int(r[i]) * q
                counts[mask | 1 << q, shift:] += counts[mask, :size - shift]
    sums = np.flatnonzero(counts[-1])
    ranks, q = r / 2, np.arange(m)
    rho = (sums / 2 - m * ranks.mean() * q.mean()) / math.sqrt(((ranks - ranks.mean()) ** 2).sum()
                                                               * ((q - q.mean()) ** 2).sum())
    return rho, counts[-1][sums] / counts[-1].sum()


def _spearman_p(rho: np.ndarray | float, reference: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """One-sided p of Spearman's ρ for ρ > 0 and for ρ < 0: exact up to EXACT_RANKING_MAX items, else the
    t approximation that ``spearmanr`` uses."""
    rho, m = np.asarray(rho, dtype=float), len(reference)
    if m <= EXACT_RANKING_MAX:
        values, prob = _spearman_null(reference)
        upper = np.concatenate([np.cumsum(prob[::-1])[::-1], [0.0]])  # P(ρ ≥ values[j])
        lower = np.concatenate([[0.0], np.cumsum(prob)])  # P(ρ ≤ values[j - 1])
        return (upper[np.searchsorted(values, rho - 1e-9, side="left")],
                lower[np.searchsorted(values, rho + 1e-9, side="right")])
    with np.errstate(divide="ignore"):
        t = rho * np.sqrt((m - 2) / (1 - rho**2))
    return stats.t.sf(t, m - 2), stats.t.cdf(t, m - 2)


def _ranking(rule: Rule, x: dict[str, Any]) -> _Outcome:
    """Spearman ρ between our per-item mean and the paper's per-item values; one-sided test of ρ vs 0.

    The decision uses the exact permutation p (up to EXACT_RANKING_MAX items). The interval is Fisher's
    z with the Bonett–Wright variance (1 + ρ²/2)/(m − 3), an approximation that is not exactly dual
    to the test: for 10 items the test decides from ρ ≥ 0.648, the interval excludes 0 from ρ ≥ 0.676
    (so at ρ = 0.648, 0.661, 0.673 the test decides while the interval still covers 0); for 8 items 0.738
    and 0.759; for 6 items 0.886 and 0.869 (no attainable ρ in between). The verdict follows the test;
    when the two disagree, the reason says so. No interval for m ≤ 3 items or |ρ| = 1.
    """
    ref = tuple(rule.reference.values())
    means = np.array([v.mean() for v in x["groups"].values()])
    if np.ptp(means) == 0:
        _fail(rule, "all item means are equal: Spearman's ρ is undefined")
    rho = float(stats.spearmanr(means, ref).statistic)
    pg, pl = (float(p) for p in _spearman_p(rho, ref))
    m = len(ref)
    low = high = None
    if m > 3 and abs(rho) < 1:
        z, se = math.atanh(rho), math.sqrt((1 + rho**2 / 2) / (m - 3))
        zq = stats.norm.isf(rule.alpha)
        low, high = math.tanh(z - zq * se), math.tanh(z + zq * se)
    how = "exact permutation p" if m <= EXACT_RANKING_MAX else "t approximation (spearmanr)"
    p_for, p_against = (pg, pl) if rule.side == "greater" else (pl, pg)
    return _Outcome(rho, low, high, m, f"Spearman ρ vs reference ({how})", p_for, p_against, None,
                    f"Spearman ρ = {rho:.3g} over {m} items; ")


def _omnibus(rule: Rule, x: dict[str, Any]) -> _Outcome:
    """Do the groups differ? Kruskal–Wallis for the claim; for "not reproduced" every pairwise difference
    must be shown within ±δ (Welch TOST for each pair).

    p_against is the intersection–union p, the largest pairwise TOST p: all pairs must be shown
    equivalent, so no multiplicity adjustment is needed (a Bonferroni factor would only make the test
    conservative). When both tests succeed (differences real but all within ±δ) the claim "the groups
    differ" is reproduced. Estimate: largest − smallest group mean, with a descriptive Welch interval
    (the pair is chosen after seeing the data).
    """
    groups = list(x["groups"].values())
    means = [g.mean() for g in groups]
    top, bottom = groups[int(np.argmax(means))], groups[int(np.argmin(means))]
    est, half, *_ = (float(v) for v in _t("independent", top, bottom, 0.0, rule.alpha))
    pooled = np.concatenate(groups)
    p_for = 1.0 if np.ptp(pooled) == 0 else float(stats.kruskal(*groups).pvalue)
    p_against = max(float(_tost("independent", g, h, rule.margin, rule.alpha)[2]) for g, h in combinations(groups, 2))
    return _Outcome(est, est - half, est + half, min(g.size for g in groups),
                    "Kruskal–Wallis + pairwise TOST (Welch)", p_for, p_against, None,
                    f"Kruskal–Wallis p = {p_for:.3g}, largest pairwise TOST p = {p_against:.3g}; ")


OUTCOMES = {**dict.fromkeys(T_KINDS, _t_kind), "equivalence": _equivalence, "share": _share,
            "ranking": _ranking, "omnibus": _omnibus}


def _verdict(p_for: float, p_against: float, alpha: float) -> str:
    """The symmetric three-way rule (for omnibus a significant difference wins over equivalence)."""
    return "reproduced" if p_for < alpha else "not reproduced" if p_against < alpha else "inconclusive"


def _reason(rule: Rule, out: _Outcome, verdict: str) -> str:
    """One short phrase: where the interval lies relative to the margin (or which test decided)."""
    level = f"{100 * (1 - 2 * rule.alpha):g} %"
    unit = f" {rule.unit}" if rule.unit else ""
    iv = (f"{level} interval [{out.low:.3g}, {out.high:.3g}]{unit}" if out.low is not None
          else f"no {level} interval")
    if rule.kind == "omnibus":
        what = {"reproduced": "the groups differ", "not reproduced": f"every pair within ±{rule.margin:g}{unit}",
                "inconclusive": "neither a difference nor equivalence shown"}[verdict]
        return f"{out.detail}{what}; range of means {iv} is descriptive"
    if rule.kind == "equivalence":
        where = {"reproduced": "lies within", "not reproduced": "lies outside", "inconclusive": "crosses"}[verdict]
        return f"{iv} {where} ±{rule.margin:g}{unit}"
    claim_side, other_side = ("above", "below") if rule.side == "greater" else ("below", "above")
    where = {"reproduced": f"lies {claim_side}", "not reproduced": f"lies {other_side}",
             "inconclusive": "covers"}[verdict]
    text = f"{out.detail}{iv} {where} the margin {rule.margin:g}"
    if rule.kind == "ranking":
        p = out.p_against if verdict == "not reproduced" else out.p_for
        text = f"{out.detail}one-sided p = {p:.3g}; {iv}"
        if out.low is not None and (out.low > 0 or out.high < 0) != (verdict != "inconclusive"):
            text += " (the approximate interval disagrees with the exact test; the test decides)"
    return text


def required_n(distance: float, *, design: str = "paired", alpha: float = 0.025, power: float = POWER,
               cap: int = N_CAP) -> int:
    """Smallest number of runs (per arm for ``independent``) giving ``power`` to the one-sided level-α t-test
    when the true effect lies ``distance`` run-to-run SDs from the margin.

    Power from the noncentral t: P(T'(df, δ·√(n/k)) > t_{1−α, df}) with k = 1, df = n − 1 (paired,
    one-sample) or k = 2, df = 2n − 2 (two equal arms). The search starts at the normal-theory n, which
    never exceeds the t answer. Returns ``cap`` when even ``cap`` runs are not enough (or distance ≤ 0).
    """
    if not distance > 0:
        return cap
    k = 2 if design == "independent" else 1
    n = max(2, int(k * ((stats.norm.isf(alpha) + stats.norm.ppf(power)) / distance) ** 2))
    while n < cap:
        df = k * (n - 1)
        if stats.nct.sf(stats.t.isf(alpha, df), df, distance * math.sqrt(n / k)) >= power:
            return n
        n += 1
    return cap


def _lists(x: dict[str, Any]) -> dict[str, Any]:
    """The raw inputs as plain lists and numbers, for the metrics file."""
    out: dict[str, Any] = {}
    for key, v in x.items():
        if isinstance(v, np.ndarray):
            out[key] = v.tolist()
        elif isinstance(v, dict):
            out[key] = {k: (w.tolist() if isinstance(w, np.ndarray) else w) for k, w in v.items()}
        else:
            out[key] = v
    return out


def decide(rule: Rule, *, a: Any = None, b: Any = None, values: Any = None, successes: Any = None,
           groups: Any = None, value: Any = None, tolerance: Any = None, parts: Any = None,
           precondition: Any = None, note: str = "") -> Decision:
    """The verdict of one claim from its per-run measurements (see the module docstring for the rule).

    Two-arm kinds take ``a=``, ``b=`` (paired: estimate mean(a − b); independent: mean(a) − mean(b)) or
    ``values=`` (one-sample design); share ``successes=``; ranking and omnibus ``groups=``; check
    ``value=`` (and ``tolerance=`` when the rule says from-data); composite ``parts={name: dict(...)}``.
    ``precondition=`` is required exactly when the rule declares one; False → inconclusive, "not judged".
    Any mismatch raises ValueError naming the claim id.
    """
    given = {k: v for k, v in dict(a=a, b=b, values=values, successes=successes, groups=groups, value=value,
                                   tolerance=tolerance, parts=parts).items() if v is not None}
    x = _inputs(rule, given)
    if (rule.precondition is None) != (precondition is None) or not isinstance(precondition,
                                                                                (bool, np.bool_, type(None))):
        _fail(rule, f"precondition= must be True/False exactly when the rule declares one "
              f"(here: {rule.precondition!r}), got {precondition!r}")
    if not isinstance(note, str):
        _fail(rule, f"note= must be one short sentence (a text), got {note!r}")
    measurements = _lists(x)
    judged = precondition is None or bool(precondition)
    if precondition is not None:
        measurements["precondition"] = bool(precondition)
    base = dict(id=rule.id, kind=rule.kind, unit=rule.unit, note=note, measurements=measurements)
    if rule.kind == "check":
        tol = x.get("tolerance", rule.tolerance)
        ok = abs(x["value"]) <= tol
        verdict = "reproduced" if ok else "not reproduced"
        reason = f"|value| = {abs(x['value']):.3g} {'≤' if ok else '>'} tolerance {tol:.3g}"
        return Decision(**base, verdict=verdict if judged else "inconclusive", estimate=x["value"], ci_low=None,
                        ci_high=None, n=None, test="implementation check", p=None, p_for=None, p_against=None,
                        margin=tol, side=None, half_width=None, n_needed=None, parts=None,
                        reason=reason if judged else f"not judged: {rule.precondition}")
    if rule.kind == "all":
        return _composite(rule, x["parts"], judged, base)
    out = OUTCOMES[rule.kind](rule, x)
    verdict = _verdict(out.p_for, out.p_against, rule.alpha) if judged else "inconclusive"
    t_based = rule.kind in (*T_KINDS, "equivalence")
    n_needed = (required_n(out.distance, design=rule.design, alpha=rule.alpha)
                if judged and t_based and verdict == "inconclusive" and out.distance is not None else None)
    return Decision(**base, verdict=verdict, estimate=out.estimate, ci_low=out.low, ci_high=out.high, n=out.n,
                    test=out.test, p=out.p_against if verdict == "not reproduced" else out.p_for, p_for=out.p_for,
                    p_against=out.p_against, margin=rule.margin, side=rule.side,
                    half_width=None if out.low is None else (out.high - out.low) / 2, n_needed=n_needed, parts=None,
                    reason=_reason(rule, out, verdict) if judged else f"not judged: {rule.precondition}")


def _pair(d: Decision) -> tuple[float, float]:
    """(p_for, p_against) of a part as used by the composite: a check counts as p 0 or 1; a reproduced part
    gives no evidence against the claim (p_against 1)."""
    if d.kind == "check":
        return (0.0, 1.0) if d.verdict == "reproduced" else (1.0, 0.0)
    return d.p_for, 1.0 if d.verdict == "reproduced" else d.p_against


def _composite(rule: Rule, parts: dict[str, dict[str, Any]], judged: bool, base: dict[str, Any]) -> Decision:
    """``all``: reproduced iff every part is, not reproduced iff any part is not, else inconclusive.

    Equivalently from p_for = max over parts (intersection–union) and p_against = min over parts, which
    is what :func:`apply_holm` adjusts. Estimate, interval and n are the first part's.
    """
    decided = {name: decide(rule.parts[name], **kwargs) for name, kwargs in parts.items()}
    pairs = [_pair(d) for d in decided.values()]
    p_for, p_against = max(p for p, _ in pairs), min(p for _, p in pairs)
    verdict = _verdict(p_for, p_against, rule.alpha) if judged else "inconclusive"
    failing = [name for name, d in decided.items() if d.verdict == "not reproduced"]
    open_ = [name for name, d in decided.items() if d.verdict == "inconclusive"]
    reason = (f"not judged: {rule.precondition}" if not judged
              else f"all {len(decided)} parts reproduced" if verdict == "reproduced"
              else f"not reproduced: {', '.join(failing)}" if verdict == "not reproduced"
              else f"inconclusive: {', '.join(open_)}")
    first = next(iter(decided.values()))
    measurements = {**base["measurements"], "parts": {name: d.measurements for name, d in decided.items()}}
    return Decision(**{**base, "unit": first.unit, "measurements": measurements}, verdict=verdict,
                    estimate=first.estimate, ci_low=first.ci_low, ci_high=first.ci_high, n=first.n,
                    test=f"all of {len(decided)} parts",
                    p=p_against if verdict == "not reproduced" else p_for, p_for=p_for, p_against=p_against,
                    margin=first.margin, side=first.side, half_width=first.half_width, n_needed=None,
                    parts=decided, reason=reason)


def apply_holm(decisions: list[Decision], registry: Registry) -> list[Decision]:
    """Holm within each family (claims with the same ``family``): adjust p_for across the family and
    p_against across the family separately, and re-decide from the adjusted values.

    The interval stays the unadjusted one (the reason says so). A family of one is left as it is.
    n_needed of a claim that becomes undecided is computed at the Bonferroni level α/k (conservative).
    """
    out = list(decisions)
    families: dict[str, list[int]] = {}
    for i, d in enumerate(out):
        family = registry.get(d.id).family
        if family:
            families.setdefault(family, []).append(i)
    for family, idx in families.items():
        k = len(idx)
        if k < 2:
            continue
        adj_for = holm([out[i].p_for for i in idx])
        adj_against = holm([out[i].p_against for i in idx])
        for i, pf, pa in zip(idx, adj_for, adj_against):
            d, rule = out[i], registry.get(out[i].id)
            judged = d.measurements.get("precondition", True)
            verdict = _verdict(pf, pa, rule.alpha) if judged else "inconclusive"
            p = float(pa if verdict == "not reproduced" else pf)
            n_needed = d.n_needed
            if judged and verdict == "inconclusive" and d.verdict != "inconclusive" and rule.kind in (
                    *T_KINDS, "equivalence"):
                raw = {key: v for key, v in d.measurements.items() if key != "precondition"}
                dist = OUTCOMES[rule.kind](rule, _inputs(rule, raw)).distance
                n_needed = None if dist is None else required_n(dist, design=rule.design, alpha=rule.alpha / k)
            elif verdict != "inconclusive":
                n_needed = None
            reason = (d.reason if not judged else
                      f"Holm over {k} ({family}): adjusted p = {p:.3g} {'<' if p < rule.alpha else '≥'} "
                      f"{rule.alpha:g}; unadjusted: {d.reason}")
            out[i] = replace(d, verdict=verdict, p=p, p_for=float(pf), p_against=float(pa), n_needed=n_needed,
                             test=f"{d.test}, Holm over {k}", reason=reason)
    return out


def _sim_rate(rule: Rule, rng: np.random.Generator, draws: int, shifted: bool) -> float:
    """Share of ``draws`` synthetic data sets (run-to-run SD 1, planning.n runs) on which the claim is
    reproduced: at the null (``shifted`` False) or with the planned effect on the claim side."""
    n, effect, alpha = rule.planning.n, rule.planning.effect, rule.alpha
    sign = 1.0 if rule.side == "greater" else -1.0
    kind, design = rule.kind, rule.design
    if kind in (*T_KINDS, "equivalence"):
        if kind == "equivalence":  # δ is planning.effect SDs; null: true effect +δ, effect: true effect 0
            delta = effect
            mu = 0.0 if shifted else delta
        else:
            mu = rule.margin + (sign * effect if shifted else 0.0)
        a = mu + rng.standard_normal((draws, n))
        b = None if design == "one-sample" else rng.standard_normal((draws, n)) * (design == "independent")
        if kind == "equivalence":
            p_for = _tost(design, a, b, delta, alpha)[2]
        else:
            _, _, pg, pl, _ = _t(design, a, b, rule.margin, alpha)
            p_for = pg if rule.side == "greater" else pl
    elif kind == "share":
        true = rule.margin + (0.5 * (1 - rule.margin) if rule.side == "greater" else -0.5 * rule.margin)
        table = np.array([_share_p(k, n, rule.margin, rule.side)[0] for k in range(n + 1)])
        p_for = table[rng.binomial(n, true if shifted else rule.margin, draws)]
    elif kind == "ranking":  # effect: adjacent items in the reference order differ by planning.effect SDs
        ref = tuple(rule.reference.values())
        truth = sign * effect * (stats.rankdata(ref) - 1) if shifted else np.zeros(len(ref))
        means = truth + rng.standard_normal((draws, len(ref))) / math.sqrt(n)
        ranks, ref_ranks = stats.rankdata(means, axis=-1), stats.rankdata(ref)
        rc, qc = ref_ranks - ref_ranks.mean(), ranks - ranks.mean(-1, keepdims=True)
        rho = (qc @ rc) / np.sqrt((qc**2).sum(-1) * (rc**2).sum())
        pg, pl = _spearman_p(rho, ref)
        p_for = pg if rule.side == "greater" else pl
    else:  # omnibus: one group shifted by planning.effect SDs
        x = rng.standard_normal((rule.planning.groups, draws, n))
        x[0] += effect if shifted else 0.0
        p_for = stats.kruskal(*x, axis=-1).pvalue
    return float(np.mean(p_for < alpha))


def simulate(registry: Registry, draws: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Check the decision rules on synthetic data with known truth, per kind present in the registry.

    Every statistical claim (and every part of a composite, under its own kind) is simulated at its
    planning.n with run-to-run SD 1: under the null (effect exactly at the margin; equivalence: at +δ;
    share: true share = margin; ranking and omnibus: all items equal) and under the planned effect
    (planning.effect SDs beyond the margin; equivalence: true effect 0 with δ = planning.effect SDs;
    share: margin + half the way to 1 (or to 0 for side less); ranking: adjacent items in the reference
    order differ by planning.effect SDs; omnibus: one group shifted by planning.effect SDs). A row per
    kind: ``null`` = the largest rate of "reproduced" under the null over the kind's claims (must stay
    ≤ α up to simulation error), ``power`` = the median rate under the effect, ``n`` = median
    planning.n. ``check`` is not simulated: a deterministic pass/fail against a tolerance has no
    sampling error to calibrate; its row has null and power None.
    """
    rng = np.random.default_rng(seed)
    by_kind: dict[str, list[Rule]] = {}
    for rule in registry.claims.values():
        for leaf in rule.parts.values() if rule.parts else [rule]:
            by_kind.setdefault(leaf.kind, []).append(leaf)
    rows = []
    for kind in KINDS:
        rules = by_kind.get(kind)
        if not rules:
            continue
        if kind == "check":
            rows.append(dict(kind=kind, claims=len(rules), null=None, power=None, n=None, draws=0))
            continue
        null = [_sim_rate(r, rng, draws, False) for r in rules]
        power = [_sim_rate(r, rng, draws, True) for r in rules]
        rows.append(dict(kind=kind, claims=len(rules), null=max(null), power=float(np.median(power)),
                         n=float(np.median([r.planning.n for r in rules])), draws=draws))
    return rows


def format_simulation(rows: list[dict[str, Any]]) -> str:
    """One line per kind, e.g. ``directional     null=0.024 power=0.81 (n=5, claims=12, draws=2000)``."""
    lines = []
    for r in rows:
        if r["null"] is None:
            lines.append(f"{r['kind']:<16}not simulated: deterministic pass/fail against a tolerance "
                         f"(claims={r['claims']})")
        else:
            lines.append(f"{r['kind']:<16}null={r['null']:.3f} power={r['power']:.2f} "
                         f"(n={r['n']:g}, claims={r['claims']}, draws={r['draws']})")
    return "\n".join(lines)
