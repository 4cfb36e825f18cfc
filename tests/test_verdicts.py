"""The statistics that decide every claim verdict: synthetic data with known truth, fixed seeds."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from dropoutlab import verdicts
from dropoutlab.registry import T_KINDS, Registry
from dropoutlab.verdicts import apply_holm, decide, format_simulation, required_n, simulate

ALPHA = 0.025
BASE = dict(notebook="nb", statement="a claim", source="a paper", paper_value="1.25 %", measure="x − y", why="why",
            profiles=["quick"], planning={"n": 5, "effect": 1.0})


def registry(*entries: dict) -> Registry:
    return Registry.from_entries([{**BASE, **e} for e in entries], alpha=ALPHA)


def rule(**entry):
    return registry({"id": "C-1", **entry}).get("C-1")


def arms(rng, design: str, effect: float, n: int, noise: float = 0.3):
    """Per-run data whose mean effect (a − b, or the values themselves) is ``effect``."""
    if design == "one-sample":
        return dict(values=effect + noise * rng.standard_normal(n))
    b = rng.standard_normal(n)
    if design == "paired":
        return dict(a=b + effect + noise * rng.standard_normal(n), b=b)
    return dict(a=effect + noise * rng.standard_normal(n), b=noise * rng.standard_normal(n))


def exact_values(p: float, n: int = 4, margin: float = 0.0) -> np.ndarray:
    """Per-run values whose one-sided t-test against ``margin`` (effect greater) has p-value exactly ``p``."""
    z = np.linspace(-1, 1, n)
    z = z / z.std(ddof=1)
    return margin + stats.t.isf(p, n - 1) / math.sqrt(n) + z


DESIGNS = ("paired", "independent", "one-sample")
SIDES = ("greater", "less")


# --- every kind: clear effect for, clear effect against, too little data --------------------------------------------

@pytest.mark.parametrize("kind", T_KINDS)
@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("side", SIDES)
def test_t_kinds_three_ways(kind, design, side):
    r = rule(kind=kind, margin=0.5, side=side, design=design)
    sign = 1 if side == "greater" else -1
    rng = np.random.default_rng(1)
    assert decide(r, **arms(rng, design, 0.5 + sign * 3, 8)).verdict == "reproduced"
    assert decide(r, **arms(rng, design, 0.5 - sign * 3, 8)).verdict == "not reproduced"
    d = decide(r, **arms(rng, design, 0.5 + sign * 0.3, 3, noise=2.0))
    assert d.verdict == "inconclusive" and d.n_needed is not None and d.n_needed > 3
    assert d.ci_low < 0.5 < d.ci_high and d.reason.endswith("covers the margin 0.5")


@pytest.mark.parametrize("design", DESIGNS)
def test_equivalence_three_ways(design):
    r = rule(kind="equivalence", margin=1.0, design=design)
    rng = np.random.default_rng(2)
    d = decide(r, **arms(rng, design, 0.0, 10, noise=0.2))
    assert d.verdict == "reproduced" and -1 < d.ci_low < d.ci_high < 1 and "within ±1" in d.reason
    assert d.test.startswith("TOST ") and d.p == d.p_for < ALPHA
    for far in (-4.0, 4.0):
        d = decide(r, **arms(rng, design, far, 10, noise=0.2))
        assert d.verdict == "not reproduced" and d.p == d.p_against < ALPHA
    assert decide(r, **arms(rng, design, 0.5, 3, noise=2.0)).verdict == "inconclusive"


@pytest.mark.parametrize("side", SIDES)
def test_share_three_ways(side):
    r = rule(kind="share", margin=0.5, side=side, planning={"n": 20, "effect": 1})
    many, few = [True] * 19 + [False], [True] + [False] * 19
    assert decide(r, successes=many if side == "greater" else few).verdict == "reproduced"
    assert decide(r, successes=few if side == "greater" else many).verdict == "not reproduced"
    assert decide(r, successes=[True] * 11 + [False] * 9).verdict == "inconclusive"


def test_share_uses_the_exact_binomial_interval():
    d = decide(rule(kind="share", margin=0.7, side="greater"), successes=np.array([1] * 16 + [0] * 4, bool))
    assert d.verdict == "inconclusive" and d.estimate == 0.8 and d.n == 20
    assert d.ci_low == pytest.approx(0.5634, abs=1e-4) and d.ci_high == pytest.approx(0.9427, abs=1e-4)
    assert d.p_for == pytest.approx(stats.binom.sf(15, 20, 0.7)) and d.test == "exact binomial (binomtest)"
    assert d.reason.startswith("16/20")


REF = {f"item{k}": float(k) for k in range(8)}


@pytest.mark.parametrize("side", SIDES)
def test_ranking_three_ways(side):
    r = rule(kind="ranking", side=side, reference=REF)
    rng = np.random.default_rng(3)
    sign = 1 if side == "greater" else -1
    along = {k: sign * v + 0.05 * rng.standard_normal(3) for k, v in REF.items()}
    against = {k: -sign * v + 0.05 * rng.standard_normal(3) for k, v in REF.items()}
    noise = {k: 0.1 * v + rng.standard_normal(3) for k, v in REF.items()}
    assert decide(r, groups=along).verdict == "reproduced"
    assert decide(r, groups=against).verdict == "not reproduced"
    d = decide(r, groups=noise)
    assert d.verdict == "inconclusive" and d.n == 8 and d.n_needed is None


@pytest.mark.parametrize("reference", [(1, 2, 3, 4, 5), (3.0, 1.0, 4.0, 1.0, 5.0, 9.0), tuple(range(7))])
def test_ranking_exact_p_matches_enumeration(reference):
    """The dynamic-programming null distribution equals brute force over every ordering of the means."""
    ref_ranks = stats.rankdata(reference)
    perms = np.array(list(itertools.permutations(range(len(reference)))), float)
    pc, rc = perms - perms.mean(1, keepdims=True), ref_ranks - ref_ranks.mean()
    rho_all = pc @ rc / np.sqrt((pc**2).sum(1) * (rc**2).sum())
    for rho in np.unique(np.round(rho_all, 9))[::3]:
        pg, pl = verdicts._spearman_p(rho, tuple(map(float, reference)))
        assert pg == pytest.approx(np.mean(rho_all >= rho - 1e-9))
        assert pl == pytest.approx(np.mean(rho_all <= rho + 1e-9))


def test_ranking_above_the_exact_limit_uses_spearmanr_p():
    ref = {f"i{k}": float(k) for k in range(12)}
    rng = np.random.default_rng(4)
    groups = {k: 0.2 * v + rng.standard_normal(2) for k, v in ref.items()}
    d = decide(rule(kind="ranking", side="greater", reference=ref), groups=groups)
    means = [g.mean() for g in groups.values()]
    assert d.p_for == pytest.approx(stats.spearmanr(means, list(ref.values()), alternative="greater").pvalue)
    assert "t approximation" in d.test


def test_ranking_reports_the_documented_residual_difference():
    """10 items, ρ = 0.648 (two swaps): the exact test decides, the Fisher-z interval still covers 0."""
    ref = {f"i{k}": float(k) for k in range(10)}
    order = [5, 1, 2, 3, 4, 0, 6, 9, 8, 7]
    groups = {f"i{k}": [float(order[k])] for k in range(10)}
    d = decide(rule(kind="ranking", side="greater", reference=ref), groups=groups)
    assert d.estimate == pytest.approx(1 - 6 * 58 / 990) and d.verdict == "reproduced" and d.p < ALPHA
    assert d.ci_low < 0 < d.ci_high and "the test decides" in d.reason


def test_omnibus_three_ways():
    r = rule(kind="omnibus", margin=1.0, planning={"n": 5, "effect": 2, "groups": 4})
    rng = np.random.default_rng(5)
    differ = {f"g{k}": 3.0 * k + 0.1 * rng.standard_normal(6) for k in range(4)}
    same = {f"g{k}": 0.05 * rng.standard_normal(8) for k in range(4)}
    noisy = {f"g{k}": 0.5 * k + 2 * rng.standard_normal(3) for k in range(4)}
    d = decide(r, groups=differ)
    assert d.verdict == "reproduced" and d.estimate == pytest.approx(9, abs=0.3) and "descriptive" in d.reason
    d = decide(r, groups=same)
    assert d.verdict == "not reproduced" and d.p == d.p_against < ALPHA
    assert decide(r, groups=noisy).verdict == "inconclusive"


def test_check_kind():
    fixed = rule(kind="check", tolerance=1e-10)
    assert decide(fixed, value=3e-12).verdict == "reproduced"
    d = decide(fixed, value=-2e-9)
    assert d.verdict == "not reproduced" and d.p is None and d.test == "implementation check"
    from_data = rule(kind="check", tolerance="from-data")
    assert decide(from_data, value=0.02, tolerance=0.05).verdict == "reproduced"
    assert decide(from_data, value=0.06, tolerance=0.05).margin == 0.05


# --- duality of verdict and interval --------------------------------------------------------------------------------

@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("side", SIDES)
def test_t_verdict_is_dual_to_the_interval(design, side):
    r = rule(kind="directional", margin=0.2, side=side, design=design)
    rng = np.random.default_rng(6)
    seen = set()
    for _ in range(100):
        d = decide(r, **arms(rng, design, rng.uniform(-1.5, 1.9), int(rng.integers(2, 9)), noise=1.0))
        above, below = d.ci_low > 0.2, d.ci_high < 0.2
        assert (d.verdict == "reproduced") == (above if side == "greater" else below)
        assert (d.verdict == "not reproduced") == (below if side == "greater" else above)
        assert d.half_width == pytest.approx((d.ci_high - d.ci_low) / 2)
        seen.add(d.verdict)
    assert seen == {"reproduced", "not reproduced", "inconclusive"}


@pytest.mark.parametrize("design", DESIGNS)
def test_equivalence_verdict_is_dual_to_the_interval(design):
    r = rule(kind="equivalence", margin=0.8, design=design)
    rng = np.random.default_rng(7)
    seen = set()
    for _ in range(100):
        d = decide(r, **arms(rng, design, rng.uniform(-2.5, 2.5), int(rng.integers(3, 12)), noise=0.7))
        assert (d.verdict == "reproduced") == (-0.8 < d.ci_low and d.ci_high < 0.8)
        assert (d.verdict == "not reproduced") == (d.ci_low > 0.8 or d.ci_high < -0.8)
        seen.add(d.verdict)
    assert seen == {"reproduced", "not reproduced", "inconclusive"}


@pytest.mark.parametrize("margin", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("n", [10, 23])
def test_share_verdict_is_dual_to_the_interval(margin, side, n):
    r = rule(kind="share", margin=margin, side=side)
    for k in range(n + 1):
        d = decide(r, successes=[True] * k + [False] * (n - k))
        above, below = d.ci_low > margin, d.ci_high < margin
        assert (d.verdict == "reproduced") == (above if side == "greater" else below)
        assert (d.verdict == "not reproduced") == (below if side == "greater" else above)


def test_t_p_values_are_scipys():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal(6) + 1, rng.standard_normal(6)
    d = decide(rule(kind="directional", margin=0.4, side="greater", design="paired"), a=a, b=b)
    assert d.p_for == pytest.approx(stats.ttest_rel(a - 0.4, b, alternative="greater").pvalue)
    assert d.p_against == pytest.approx(stats.ttest_rel(a - 0.4, b, alternative="less").pvalue)
    d = decide(rule(kind="directional", margin=0.4, side="less", design="independent"), a=a, b=b[:5])
    assert d.p_for == pytest.approx(stats.ttest_ind(a - 0.4, b[:5], equal_var=False, alternative="less").pvalue)
    lo, hi = stats.ttest_ind(a, b[:5], equal_var=False).confidence_interval(0.95)
    assert (d.ci_low, d.ci_high) == pytest.approx((lo, hi))


def test_paired_interval_is_narrower_on_correlated_arms():
    rng = np.random.default_rng(9)
    seed_effect = 3 * rng.standard_normal(8)  # shared by both arms: each seed's initialisation and data order
    data = dict(a=seed_effect + 0.5 + 0.2 * rng.standard_normal(8), b=seed_effect + 0.2 * rng.standard_normal(8))
    paired = decide(rule(kind="directional", margin=0, side="greater", design="paired"), **data)
    welch = decide(rule(kind="directional", margin=0, side="greater", design="independent"), **data)
    assert paired.estimate == pytest.approx(welch.estimate)
    assert paired.half_width < welch.half_width / 4
    assert (paired.verdict, welch.verdict) == ("reproduced", "inconclusive")


def test_identical_runs_are_decided_without_warnings():
    r = rule(kind="directional", margin=0, side="greater", design="paired")
    d = decide(r, a=[2.0, 3.0, 4.0], b=[1.0, 2.0, 3.0])
    assert (d.verdict, d.ci_low, d.ci_high, d.p, d.n_needed) == ("reproduced", 1.0, 1.0, 0.0, None)
    assert decide(r, a=[1.0, 2.0], b=[1.0, 2.0]).verdict == "inconclusive"
    welch = decide(rule(kind="directional", margin=0, side="less", design="independent"),
                   a=[0.1, 0.1, 0.1], b=[0.2, 0.5, 0.3])
    assert welch.verdict == "inconclusive" and welch.ci_high > 0 > welch.estimate


# --- power ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("distance", [0.3, 0.8, 1.5, 3.0])
@pytest.mark.parametrize("design", ["paired", "independent"])
def test_required_n_is_the_smallest_n_with_80_percent_power(distance, design):
    k = 2 if design == "independent" else 1

    def power(n):
        df = k * (n - 1)
        return stats.nct.sf(stats.t.isf(ALPHA, df), df, distance * math.sqrt(n / k))

    n = required_n(distance, design=design)
    assert power(n) >= 0.8 and (n == 2 or power(n - 1) < 0.8)


def test_required_n_is_capped():
    assert required_n(1e-4) == required_n(0.0) == 10_000


# --- Holm, preconditions, composites --------------------------------------------------------------------------------

def test_holm_changes_a_borderline_verdict():
    entries = [{"id": f"H-{i}", "kind": "directional", "margin": 0, "side": "greater", "design": "one-sample",
                "family": "F"} for i in range(3)]
    reg = registry(*entries, {"id": "SOLO", "kind": "directional", "margin": 0, "side": "greater",
                              "design": "one-sample"})
    raw = [decide(reg.get(f"H-{i}"), values=exact_values(p)) for i, p in enumerate((0.02, 0.001, 0.6))]
    solo = decide(reg.get("SOLO"), values=exact_values(0.02))
    assert [d.verdict for d in raw] == ["reproduced", "reproduced", "inconclusive"]
    assert raw[0].p_for == pytest.approx(0.02)
    adjusted = apply_holm([*raw, solo], reg)
    assert [d.verdict for d in adjusted] == ["inconclusive", "reproduced", "inconclusive", "reproduced"]
    assert adjusted[0].p == pytest.approx(0.04) and adjusted[1].p == pytest.approx(0.003)
    assert adjusted[0].test.endswith("Holm over 3") and adjusted[0].reason.startswith("Holm over 3")
    assert adjusted[0].n_needed is not None and adjusted[1].n_needed is None
    assert adjusted[3] == solo


def test_holm_adjusts_p_against_too():
    reg = registry(*[{"id": f"H-{i}", "kind": "directional", "margin": 0, "side": "less", "design": "one-sample",
                      "family": "F"} for i in range(2)])
    raw = [decide(reg.get(f"H-{i}"), values=exact_values(p)) for i, p in enumerate((0.015, 0.5))]
    assert raw[0].verdict == "not reproduced" and raw[0].p == pytest.approx(0.015)
    assert [d.verdict for d in apply_holm(raw, reg)] == ["inconclusive", "inconclusive"]


def test_precondition_false_is_not_judged_but_measured():
    r = rule(kind="directional", margin=0, side="greater", design="one-sample", precondition="rates have plateaued")
    values = [1.0, 1.2, 0.9, 1.1]
    judged = decide(r, values=values, precondition=True)
    d = decide(r, values=values, precondition=False)
    assert judged.verdict == "reproduced" and d.verdict == "inconclusive"
    assert d.reason == "not judged: rates have plateaued" and d.n_needed is None
    assert (d.estimate, d.ci_low, d.ci_high, d.p_for) == (judged.estimate, judged.ci_low, judged.ci_high, judged.p_for)
    assert d.measurements == {"values": values, "precondition": False}


def composite():
    return rule(kind="all", planning={"n": 4, "effect": 1}, parts={
        "inside": {"kind": "threshold", "margin": 1.0, "side": "less", "design": "one-sample", "measure": "m1"},
        "underfit": {"kind": "directional", "margin": 0, "side": "greater", "design": "paired", "measure": "m2",
                     "unit": "pp"},
        "exact": {"kind": "check", "tolerance": 1e-6, "measure": "m3"}})


@pytest.mark.parametrize("inside, diff, residual, verdict", [
    ([0.1, 0.2, 0.15, 0.12], 1.0, 0.0, "reproduced"),
    ([0.1, 0.2, 0.15, 0.12], 1.0, 1.0, "not reproduced"),   # the check fails
    ([3.1, 3.2, 3.15, 3.12], 1.0, 0.0, "not reproduced"),   # the threshold is shown on the wrong side
    ([0.1, 0.2, 0.15, 0.12], 0.05, 0.0, "inconclusive"),    # the paired difference is too noisy to tell
])
def test_composite_combines_its_parts(inside, diff, residual, verdict):
    rng = np.random.default_rng(10)
    b = rng.standard_normal(4)
    d = decide(composite(), parts={"inside": dict(values=inside),
                                   "underfit": dict(a=b + diff + 0.3 * rng.standard_normal(4), b=b),
                                   "exact": dict(value=residual)})
    assert d.verdict == verdict
    assert list(d.parts) == ["inside", "underfit", "exact"] and d.parts["underfit"].id == "C-1/underfit"
    assert d.estimate == d.parts["inside"].estimate and d.test == "all of 3 parts"
    check_p = 0.0 if residual == 0 else 1.0  # a check counts as p 0 (passes) or 1 (fails) in the combination
    assert d.p_for == max(d.parts["inside"].p_for, d.parts["underfit"].p_for, check_p)
    assert d.measurements["parts"]["exact"] == {"value": residual}
    assert isinstance(d.measurements["parts"]["underfit"]["a"], list)


# --- bad inputs name the claim --------------------------------------------------------------------------------------

BAD = [
    (dict(kind="directional", margin=0, side="greater", design="paired"), dict(values=[1, 2, 3]), "takes a=, b="),
    (dict(kind="directional", margin=0, side="greater", design="paired"), dict(a=[1, 2, 3], b=[1, 2]), "equal length"),
    (dict(kind="directional", margin=0, side="greater", design="one-sample"), dict(values=[1.0]), "at least 2"),
    (dict(kind="directional", margin=0, side="greater", design="independent"), dict(a=[1, 2], b=[1, np.nan]),
     "finite"),
    (dict(kind="directional", margin=0, side="greater", design="one-sample"), dict(values=[[1, 2], [3, 4]]), "1-D"),
    (dict(kind="equivalence", margin=1, design="one-sample"), dict(values=[1, 2], precondition=True),
     "precondition"),
    (dict(kind="directional", margin=0, side="greater", design="one-sample", precondition="p"), dict(values=[1, 2]),
     "precondition"),
    (dict(kind="share", margin=0.5, side="greater"), dict(successes=[1, 0, 2]), "booleans"),
    (dict(kind="share", margin=0.5, side="greater"), dict(a=[1, 2], b=[1, 2]), "takes successes="),
    (dict(kind="ranking", side="greater", reference=REF), dict(groups={"item0": [1.0]}), "reference items"),
    (dict(kind="omnibus", margin=1, planning={"n": 3, "effect": 1, "groups": 2}), dict(groups={"g": [1.0, 2.0]}),
     "at least 2 groups"),
    (dict(kind="check", tolerance="from-data"), dict(value=0.1), "takes value=, tolerance="),
    (dict(kind="check", tolerance=1e-3), dict(value=[0.1, 0.2]), "one finite number"),
    (dict(kind="directional", margin=0, side="greater", design="one-sample"), dict(values=[1, 2], note=3), "note"),
]


@pytest.mark.parametrize("entry, kwargs, words", BAD)
def test_bad_inputs_name_the_claim(entry, kwargs, words):
    with pytest.raises(ValueError, match=r"^C-1: ") as err:
        decide(rule(**entry), **kwargs)
    assert words in str(err.value)


def test_bad_composite_parts_name_the_claim():
    with pytest.raises(ValueError, match=r"^C-1: parts= must map exactly"):
        decide(composite(), parts={"inside": dict(values=[1, 2])})
    with pytest.raises(ValueError, match=r"^C-1/underfit: "):
        decide(composite(), parts={"inside": dict(values=[1, 2]), "underfit": dict(a=[1, 2], b=[1]),
                                   "exact": dict(value=0.0)})


def test_measurements_are_plain_lists():
    d = decide(rule(kind="ranking", side="greater", reference=REF),
               groups={k: np.arange(2.0) + v for k, v in REF.items()}, note="ok")
    assert d.measurements["groups"]["item3"] == [3.0, 4.0] and d.note == "ok"
    assert replace(d, note="x").note == "x"


# --- simulation -----------------------------------------------------------------------------------------------------

SIM = [
    {"id": "T1", "kind": "directional", "margin": 0, "side": "greater", "design": "paired",
     "planning": {"n": 6, "effect": 2.0}},
    {"id": "T2", "kind": "non-inferiority", "margin": 0.25, "side": "less", "design": "independent",
     "planning": {"n": 6, "effect": 2.5}},
    {"id": "T3", "kind": "trend", "margin": 0, "side": "less", "design": "one-sample",
     "planning": {"n": 4, "effect": 2.0}},
    {"id": "E1", "kind": "equivalence", "margin": 0.5, "design": "paired", "planning": {"n": 8, "effect": 2.0}},
    {"id": "S1", "kind": "share", "margin": 0.5, "side": "greater", "planning": {"n": 30, "effect": 1.0}},
    {"id": "R1", "kind": "ranking", "side": "greater", "reference": REF, "planning": {"n": 3, "effect": 1.0}},
    {"id": "O1", "kind": "omnibus", "margin": 1.0, "planning": {"n": 5, "effect": 3.0, "groups": 4}},
    {"id": "K1", "kind": "check", "tolerance": 1e-9},
    {"id": "A1", "kind": "all", "planning": {"n": 5, "effect": 2.5}, "parts": {
        "p": {"kind": "threshold", "margin": 1, "side": "greater", "design": "one-sample", "measure": "m"},
        "q": {"kind": "check", "tolerance": 0.1, "measure": "m"}}},
]


def test_simulation_null_rate_and_power():
    draws = 400
    rows = simulate(registry(*SIM), draws=draws, seed=0)
    by_kind = {r["kind"]: r for r in rows}
    assert list(by_kind) == ["check", "directional", "threshold", "trend", "non-inferiority", "equivalence", "share",
                             "ranking", "omnibus"]
    assert by_kind["check"]["null"] is None and by_kind["check"]["claims"] == 2
    assert by_kind["threshold"]["claims"] == 1  # the composite's part, under its own kind
    tolerance = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / draws)
    assert tolerance < 0.05
    for r in rows[1:]:
        assert r["null"] <= tolerance, r
        assert r["power"] > r["null"] + 0.1, r
    text = format_simulation(rows)
    assert text.splitlines()[1].startswith("directional     null=") and "draws=400" in text
    assert simulate(registry(*SIM), draws=draws, seed=0) == rows  # seeded: reproducible


def test_simulation_matches_decide_on_one_data_set():
    """The vectorised path of the simulation and decide() agree on the same numbers."""
    r = registry(*SIM).get("T2")
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((1, 6)) - 1, rng.standard_normal((1, 6))
    _, _, pg, pl, _ = verdicts._t("independent", a, b, 0.25, ALPHA)
    assert decide(r, a=a[0], b=b[0]).p_for == pytest.approx(pl[0])
