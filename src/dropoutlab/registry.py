"""The claims registry: ``claims.yaml`` at the repository root, loaded and validated once.

Every claim the compendium judges is an entry of ``claims.yaml`` (``{version: 1, alpha: 0.025,
claims: [...]}``): what the paper says, what we measure, and the rule that turns per-run
measurements into a verdict (kind, margin, side, design, family), fixed before any result is seen.
:func:`load_registry` checks every entry once, at load, so a notebook and the statistics in
:mod:`dropoutlab.verdicts` can rely on a well-formed :class:`Rule`; every error names the claim id
and what is allowed.
"""

from __future__ import annotations

import difflib
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .paths import PROFILES, repo_root

T_KINDS = ("directional", "threshold", "trend", "non-inferiority")  # t-test of the mean effect vs the margin
STATISTICAL = (*T_KINDS, "equivalence", "share", "ranking", "omnibus")
KINDS = ("check", *STATISTICAL, "all")
SIDES = ("greater", "less")
DESIGNS = {**{k: ("paired", "independent", "one-sample") for k in (*T_KINDS, "equivalence")},
           "share": ("one-sample",), "ranking": ("independent",), "omnibus": ("independent",), "check": ("exact",)}
TEXT = ("notebook", "statement", "source", "paper_value", "measure", "why")
ENTRY_KEYS = {"id", *TEXT, "kind", "unit", "margin", "side", "design", "replication", "family", "profiles",
              "planning", "figure", "section", "exploratory", "history", "precondition", "tolerance", "reference",
              "parts", "departures"}
PART_KEYS = {"kind", "measure", "unit", "margin", "side", "design", "tolerance", "reference", "planning"}
MIN_RANKING_ITEMS = 5  # with 4 items the smallest exact one-sided p of Spearman's rho is 1/24 > 0.025


@dataclass(frozen=True)
class Planning:
    """Planned independent runs ``n`` and the expected effect (effect − margin) in run-to-run SDs.

    ``groups`` is the number of groups of an omnibus claim (the simulation needs it).
    """

    n: int
    effect: float
    groups: int | None = None


@dataclass(frozen=True)
class History:
    """A rule change made after a result was seen: when, the old rule, and why."""

    date: str
    old: str
    reason: str


@dataclass(frozen=True)
class Rule:
    """One claim (or one part of a composite claim, id ``"<ID>/<part>"``) with its decision rule."""

    id: str
    notebook: str
    statement: str
    source: str
    paper_value: str
    kind: str
    measure: str
    why: str
    unit: str = ""
    margin: float | None = None
    side: str | None = None
    design: str | None = None
    replication: str = ""
    family: str | None = None
    profiles: tuple[str, ...] = ()
    planning: Planning | None = None
    figure: str | None = None
    section: str | None = None
    exploratory: bool = False
    history: tuple[History, ...] = ()
    precondition: str | None = None
    tolerance: float | str | None = None  # check kind: a number or "from-data"
    reference: dict[str, float] | None = None  # ranking kind: the paper's per-item values
    parts: dict[str, Rule] | None = None  # composite ("all") kind
    departures: tuple[tuple[str, str], ...] = ()  # (profile, where its setting departs from the check), before the run
    alpha: float = 0.025  # one-sided level of every decision (the registry's)


def _fail(cid: str, message: str) -> None:
    raise ValueError(f"{cid}: {message}")


def _number(cid: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(cid, f"{name} must be a finite number, got {value!r}")
    return float(value)


def _text(cid: str, name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
        _fail(cid, f"{name} is required: a non-empty text, got {value!r}")
    return str(value)


def _planning(cid: str, kind: str, raw: Any) -> Planning | None:
    """``planning: {n: int ≥ 2, effect: > 0}`` (+ ``groups: int ≥ 2`` for omnibus); optional for check."""
    if raw is None and kind == "check":
        return None
    allowed = "planning: {n: integer ≥ 2, effect: number > 0" + (", groups: integer ≥ 2}" if kind == "omnibus" else "}")
    if not isinstance(raw, Mapping) or set(raw) - {"n", "effect", "groups"}:
        _fail(cid, f"{allowed} is required for a {kind} claim, got {raw!r}")
    n, effect, groups = raw.get("n"), raw.get("effect"), raw.get("groups")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        _fail(cid, f"planning.n must be an integer ≥ 2, got {n!r}")
    if _number(cid, "planning.effect", effect) <= 0:
        _fail(cid, f"planning.effect must be > 0 (the expected effect − margin in run-to-run SDs), got {effect!r}")
    if kind == "omnibus" and (isinstance(groups, bool) or not isinstance(groups, int) or groups < 2):
        _fail(cid, f"planning.groups (the number of groups compared) must be an integer ≥ 2, got {groups!r}")
    if kind != "omnibus" and groups is not None:
        _fail(cid, "planning.groups is only used by omnibus claims")
    return Planning(n, float(effect), groups)


def _kind_fields(cid: str, raw: Mapping[str, Any], inherited_planning: Any = None) -> dict[str, Any]:
    """Validate the decision rule of one claim or part: kind, margin, side, design and kind-specific keys."""
    kind = raw.get("kind")
    if kind not in KINDS:
        _fail(cid, f"unknown kind {kind!r}; allowed: {', '.join(KINDS)}")
    out: dict[str, Any] = {"kind": kind, "margin": None, "side": None, "design": None, "tolerance": None,
                           "reference": None}
    margin, side, design = raw.get("margin"), raw.get("side"), raw.get("design")
    if kind == "all":
        if any(raw.get(k) is not None for k in ("margin", "side", "design", "tolerance", "reference")):
            _fail(cid, "a composite (all) claim keeps margin, side, design, tolerance and reference in its parts")
        return out
    if kind in (*T_KINDS, "share", "ranking"):
        if side not in SIDES:
            _fail(cid, f"side must be one of {', '.join(SIDES)} for a {kind} claim, got {side!r}")
        out["side"] = side
    elif side is not None:
        _fail(cid, f"side is not used by a {kind} claim (got {side!r}); remove it")
    if design is None and len(DESIGNS[kind]) == 1:
        design = DESIGNS[kind][0]
    if design not in DESIGNS[kind]:
        _fail(cid, f"design must be one of {', '.join(DESIGNS[kind])} for a {kind} claim, got {design!r}")
    out["design"] = design
    if kind == "check":
        tol = raw.get("tolerance")
        if tol != "from-data" and (tol is None or _number(cid, "tolerance", tol) < 0):
            _fail(cid, f"a check needs tolerance: a number ≥ 0 or 'from-data', got {tol!r}")
        if margin is not None:
            _fail(cid, "a check has no margin: its rule is |value| ≤ tolerance")
        out["tolerance"] = tol if tol == "from-data" else float(tol)
        return out
    if raw.get("tolerance") is not None:
        _fail(cid, f"tolerance is only used by check claims, not {kind}")
    if kind == "ranking":
        ref = raw.get("reference")
        if not isinstance(ref, Mapping) or len(ref) < MIN_RANKING_ITEMS:
            _fail(cid, f"a ranking needs reference: a mapping of ≥ {MIN_RANKING_ITEMS} items to the paper's values "
                  "(with fewer items Spearman's ρ cannot reach one-sided p < 0.025; use a composite of directional "
                  f"parts instead), got {ref!r}")
        out["reference"] = {str(k): _number(cid, f"reference[{k}]", v) for k, v in ref.items()}
        if len(set(out["reference"].values())) == 1:
            _fail(cid, "reference values are all equal: there is no ranking to compare with")
        if margin not in (None, 0):
            _fail(cid, f"a ranking tests Spearman's ρ against 0: margin must be 0, got {margin!r}")
        out["margin"] = 0.0
        return out
    if raw.get("reference") is not None:
        _fail(cid, f"reference is only used by ranking claims, not {kind}")
    if margin is None:
        _fail(cid, f"margin is required for a {kind} claim")
    margin = _number(cid, "margin", margin)
    if kind in ("equivalence", "omnibus") and margin <= 0:
        _fail(cid, f"an {kind} claim needs margin δ > 0 (the difference that matters), got {margin!r}")
    if kind == "share" and not 0 < margin < 1:
        _fail(cid, f"a share claim needs margin strictly between 0 and 1, got {margin!r}")
    out["margin"] = margin
    return out


def _parts(cid: str, entry: Mapping[str, Any], common: dict[str, Any]) -> dict[str, Rule]:
    """The parts of a composite claim, each a Rule with id ``<ID>/<part>`` and the parent's text fields."""
    raw = entry.get("parts")
    if not isinstance(raw, Mapping) or not raw:
        _fail(cid, "a composite (all) claim needs parts: {name: {kind, margin, side, design, unit, measure}, ...}")
    parts = {}
    for name, spec in raw.items():
        pid = f"{cid}/{name}"
        if not isinstance(name, str) or not name or "/" in name:
            _fail(cid, f"part names must be non-empty texts without '/', got {name!r}")
        if not isinstance(spec, Mapping):
            _fail(pid, f"a part must be a mapping with keys from {', '.join(sorted(PART_KEYS))}, got {spec!r}")
        if unknown := set(spec) - PART_KEYS:
            _fail(pid, f"unknown keys {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(PART_KEYS))}")
        if spec.get("kind") == "all":
            _fail(pid, "parts cannot be composites themselves")
        fields = _kind_fields(pid, spec)
        planning = _planning(pid, fields["kind"], spec.get("planning", entry.get("planning")))
        parts[name] = Rule(id=pid, **{**common, "measure": _text(pid, "measure", spec.get("measure")),
                                      "unit": str(spec.get("unit") or ""), "family": None, "precondition": None,
                                      "history": (), "planning": planning}, **fields)
    return parts


def _rule(entry: Any, alpha: float) -> Rule:
    """Validate one registry entry and build its Rule."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"every claim must be a mapping with an id, got {entry!r}")
    cid = entry.get("id")
    if not isinstance(cid, str) or not cid.strip() or "/" in cid:
        raise ValueError(f"every claim needs an id (a text without '/'), got {cid!r} in {dict(entry)!r}")
    if unknown := set(entry) - ENTRY_KEYS:
        _fail(cid, f"unknown keys {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(ENTRY_KEYS))}")
    texts = {name: _text(cid, name, entry.get(name)) for name in TEXT}
    profiles = entry.get("profiles")
    if not isinstance(profiles, list) or not profiles or not set(profiles) <= set(PROFILES):
        _fail(cid, f"profiles must be a non-empty list from {', '.join(PROFILES)}, got {profiles!r}")
    history = entry.get("history") or []
    if not isinstance(history, list):
        _fail(cid, f"history must be a list of {{date, old, reason}}, got {history!r}")
    for item in history:
        if not isinstance(item, Mapping) or any(not str(item.get(k) or "").strip() for k in ("date", "old", "reason")):
            _fail(cid, f"every history entry needs date, old and reason, got {item!r}")
        if not isinstance(item["date"], str):
            _fail(cid, f"history date {item['date']!r} must be a quoted string ('2026-11-30'): DVC reads "
                       "claims.yaml as a params file and cannot hash a YAML date")
    for name in ("family", "figure", "section", "precondition"):
        if entry.get(name) is not None and not (isinstance(entry[name], str) and entry[name].strip()):
            _fail(cid, f"{name} must be a non-empty text or null, got {entry[name]!r}")
    if not isinstance(entry.get("exploratory", False), bool):
        _fail(cid, f"exploratory must be true or false, got {entry['exploratory']!r}")
    departures = entry.get("departures") or {}
    if not isinstance(departures, Mapping) or not all(
            k in profiles and isinstance(v, str) and v.strip() for k, v in departures.items()):
        _fail(cid, f"departures must map profiles the claim is judged in ({', '.join(profiles)}) to a text, "
                   f"got {departures!r}")
    fields = _kind_fields(cid, entry)
    if fields["kind"] == "check" and entry.get("family") is not None:
        _fail(cid, "a check has no p-value, so it cannot be in a Holm family")
    common = dict(**texts, replication=str(entry.get("replication") or ""), profiles=tuple(profiles),
                  figure=entry.get("figure"), section=entry.get("section"),
                  exploratory=bool(entry.get("exploratory", False)), alpha=alpha)
    parts = _parts(cid, entry, common) if fields["kind"] == "all" else None
    if parts is None and entry.get("parts") is not None:
        _fail(cid, f"parts are only used by composite (all) claims, not {fields['kind']}")
    planning = None if parts else _planning(cid, fields["kind"], entry.get("planning"))
    return Rule(id=cid, **common,
                unit=str(entry.get("unit") or ""), family=entry.get("family"), planning=planning,
                history=tuple(History(str(h["date"]), str(h["old"]), str(h["reason"])) for h in history),
                precondition=entry.get("precondition"), parts=parts,
                departures=tuple((str(k), str(v).strip()) for k, v in departures.items()), **fields)


class Registry:
    """The validated claims, in file order: ``claims`` maps id → :class:`Rule`."""

    def __init__(self, rules: list[Rule], alpha: float, path: Path | None = None) -> None:
        self.claims: OrderedDict[str, Rule] = OrderedDict()
        self.alpha = alpha
        self.path = path
        for rule in rules:
            if rule.id in self.claims:
                raise ValueError(f"{rule.id}: duplicate claim id in {path or 'the registry'}")
            self.claims[rule.id] = rule
        notebooks: dict[str, set[str]] = {}
        for rule in rules:
            if rule.family:
                notebooks.setdefault(rule.family, set()).add(rule.notebook)
        for family, nbs in notebooks.items():
            if len(nbs) > 1:
                ids = [r.id for r in rules if r.family == family]
                raise ValueError(f"{', '.join(ids)}: Holm family {family!r} spans notebooks {', '.join(sorted(nbs))}; "
                                 "a family must lie within one notebook (its ledger adjusts it)")

    @classmethod
    def from_entries(cls, entries: list[Any] | Mapping[str, Any], alpha: float = 0.025,
                     path: Path | None = None) -> Registry:
        """A registry from the ``claims:`` of claims.yaml: a mapping id → entry (or a list of entries with ids).

        claims.yaml keys its claims by id, so that each DVC stage can depend on exactly its own
        notebook's entries (``params: claims.yaml: [claims.SR-T2, …]``).
        """
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 0.5:
            raise ValueError(f"{path or 'registry'}: alpha must be a number in (0, 0.5), got {alpha!r}")
        if isinstance(entries, Mapping):
            for cid, entry in entries.items():
                if not isinstance(entry, Mapping) or entry.get("id", cid) != cid:
                    raise ValueError(f"{cid}: a claims.yaml entry must be a mapping, without an id other than its key")
            entries = [{"id": cid, **entry} for cid, entry in entries.items()]
        if not isinstance(entries, list):
            raise ValueError(f"{path or 'registry'}: claims must map ids to entries, got {type(entries).__name__}")
        return cls([_rule(entry, float(alpha)) for entry in entries], float(alpha), path)

    def get(self, id: str) -> Rule:
        """The rule of claim ``id`` (``"<ID>/<part>"`` for a part of a composite)."""
        top, _, part = id.partition("/")
        rule = self.claims.get(top)
        if rule is not None and not part:
            return rule
        if rule is not None and rule.parts and part in rule.parts:
            return rule.parts[part]
        close = difflib.get_close_matches(id, list(self.claims), n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ValueError(f"{id}: no such claim in {self.path or 'the registry'}{hint}; add an entry with "
                         "notebook: <notebook name> to claims.yaml, or list a notebook's claims with "
                         "Registry.for_notebook(name)")

    def for_notebook(self, name: str) -> list[Rule]:
        """The claims assigned to notebook ``name``, in file order."""
        return [rule for rule in self.claims.values() if rule.notebook == name]

    def __iter__(self):
        return iter(self.claims.values())

    def __len__(self) -> int:
        return len(self.claims)


def load_registry(path: Path | str | None = None) -> Registry:
    """Load and validate ``claims.yaml`` (default: at the repository root)."""
    path = Path(path) if path is not None else repo_root() / "claims.yaml"
    if not path.is_file():
        raise ValueError(f"no claims registry at {path}: claims.yaml lives at the repository root")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, Mapping) or set(data) != {"version", "alpha", "claims"}:
        raise ValueError(f"{path}: the top level must be a mapping with exactly version, alpha and claims")
    if data["version"] != 1:
        raise ValueError(f"{path}: unsupported version {data['version']!r} (this code reads version 1)")
    return Registry.from_entries(data["claims"], alpha=data["alpha"], path=path)
