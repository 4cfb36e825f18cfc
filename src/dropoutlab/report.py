"""The claims report: every profile's verdicts gathered into one markdown table, one HTML page and one summary.

Inputs (paths relative to the repository ``root``):

- ``reports/<profile>/metrics/<notebook>.json`` for the profiles ``quick``, ``full`` and ``paper``
  (written by :meth:`dropoutlab.claims.Ledger.save`; ``smoke`` is never reported);
- ``claims.yaml``, the claims registry (statement, source, paper value, margin, figure, section,
  exploratory flag, rule history).

Outputs:

- :func:`render_markdown` → ``reports/claims.md``: implementation checks (kind ``check``) apart from
  empirical claims, each claim's verdict per profile side by side, the verdict of record (the highest
  profile that ran and in which the claim is judged: paper > full > quick), and a deviations log;
- :func:`render_index` → ``reports/index.html``: one self-contained page (inline CSS and script, no
  network) with a filterable table and the figures of every notebook; it links only to files that exist;
- :func:`render_summary`: the one-line-per-claim verdict list that ``make reproduce`` prints;
- :func:`records_json`: the verdicts as a JSON list (``dropoutlab claims --json``);
- :func:`diff_records` / :func:`render_diff` with :func:`load_records_at`: a fresh run compared with
  the record committed at a git revision (``dropoutlab claims --diff REV``).

Every renderer is a pure function of the records (from :func:`load_records`) and the registry: a
:class:`dropoutlab.registry.Registry`, a mapping ``id → rule`` (rule objects or plain dicts), or a list
of rules. :func:`write_report` writes both report files atomically.
"""

from __future__ import annotations

import html
import json
import math
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from ._io import atomic_write_text
from .paths import repo_root
from .registry import load_registry

__all__ = [
    "REPORTED_PROFILES",
    "VERDICTS",
    "diff_records",
    "load_records",
    "load_records_at",
    "load_registry_for",
    "records_json",
    "render_diff",
    "render_index",
    "render_markdown",
    "render_summary",
    "section_anchor",
    "verdict_of_record",
    "write_report",
]

REPORTED_PROFILES = ("quick", "full", "paper")  # lowest to highest; smoke is never reported
VERDICTS = ("reproduced", "not reproduced", "inconclusive")
NOT_RUN = "not run"
CHECK_LABELS = {"reproduced": "passed", "not reproduced": "failed", "inconclusive": "inconclusive"}
GENERATOR = "dropoutlab report"
_RANK = {p: i for i, p in enumerate(REPORTED_PROFILES)}
_METRICS_GLOB = "reports/{profile}/metrics"


# ----------------------------------------------------------------------------------------------- registry view


@dataclass(frozen=True)
class _Rule:
    """What the report needs from one registry entry (read from a Rule object or a plain dict)."""

    id: str
    notebook: str = ""
    statement: str = ""
    source: str = ""
    paper_value: str = ""
    kind: str = ""
    measure: str = ""
    unit: str = ""
    margin: Any = None
    side: str | None = None
    tolerance: Any = None
    family: str | None = None
    profiles: tuple[str, ...] = REPORTED_PROFILES
    figure: str | None = None
    section: str | None = None
    why: str = ""
    exploratory: bool = False
    history: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    parts: Mapping[str, Any] | None = None
    departures: tuple[tuple[str, str], ...] = ()

    @property
    def is_check(self) -> bool:
        return _is_check(self.kind, self.parts)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        value = obj.get(key, default)
    else:
        value = getattr(obj, key, default)
    return default if value is None and default is not None else value


def _as_rule(obj: Any) -> _Rule:
    profiles = _get(obj, "profiles") or REPORTED_PROFILES
    history = tuple(_get(obj, "history") or ())
    return _Rule(
        id=str(_get(obj, "id", "")), notebook=str(_get(obj, "notebook", "")),
        statement=str(_get(obj, "statement", "")), source=str(_get(obj, "source", "")),
        paper_value=str(_get(obj, "paper_value", "") or ""), kind=str(_get(obj, "kind", "")),
        measure=str(_get(obj, "measure", "") or ""), unit=str(_get(obj, "unit", "") or ""),
        margin=_get(obj, "margin"), side=_get(obj, "side"), tolerance=_get(obj, "tolerance"),
        family=_get(obj, "family"), profiles=tuple(str(p) for p in profiles), figure=_get(obj, "figure"),
        section=_get(obj, "section"), why=str(_get(obj, "why", "") or ""),
        exploratory=bool(_get(obj, "exploratory", False)),
        history=tuple(h if isinstance(h, Mapping) else vars(h) for h in history), parts=_get(obj, "parts"),
        departures=tuple((str(k), str(v)) for k, v in dict(_get(obj, "departures") or {}).items()),
    )


def _rules(registry: Any) -> dict[str, _Rule]:
    """Registry (``.claims`` mapping), mapping ``id → rule`` or list of rules → ordered ``id → _Rule``."""
    if registry is None:
        return {}
    claims = getattr(registry, "claims", registry)
    items = claims.values() if isinstance(claims, Mapping) else claims
    out: dict[str, _Rule] = {}
    for entry in items:
        rule = _as_rule(entry)
        out[rule.id] = rule
    return out


def load_registry_for(root: Path | str) -> Any:
    """The validated claims registry of ``root`` (``root/claims.yaml``, see :mod:`dropoutlab.registry`)."""
    return load_registry(Path(root) / "claims.yaml")


# ----------------------------------------------------------------------------------------------- records


def _parse_metrics(text: str, label: str, profile: str, notebook: str) -> list[dict[str, Any]]:
    """The claim records of one metrics file; ValueError naming ``label`` when it is malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{label}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), dict):
        raise ValueError(f"{label}: not a claims metrics file (no 'claims' object)")
    if data.get("profile", profile) != profile:
        raise ValueError(f"{label}: says profile {data.get('profile')!r} but lies under reports/{profile}/")
    if data.get("notebook", notebook) != notebook:
        raise ValueError(f"{label}: says notebook {data.get('notebook')!r} but is named {notebook}.json")
    records = []
    for key, claim in data["claims"].items():
        if not isinstance(claim, dict):
            raise ValueError(f"{label}: claim {key!r} is not an object")
        if claim.get("id", key) != key:
            raise ValueError(f"{label}: claim {key!r} carries id {claim.get('id')!r}")
        if claim.get("verdict") not in VERDICTS:
            raise ValueError(f"{label}: claim {key!r} has verdict {claim.get('verdict')!r}, "
                             f"expected one of {', '.join(VERDICTS)}")
        for name in ("estimate", "ci_low", "ci_high", "p"):
            value = claim.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{label}: claim {key!r} has a non-numeric {name} ({value!r})")
        records.append({**claim, "id": key, "notebook": notebook, "profile": profile})
    return records


def _sort_key(record: Mapping[str, Any]) -> tuple:
    return record["notebook"], record["id"], _RANK.get(record["profile"], 99)


def load_records(root: Path | str | None = None) -> list[dict[str, Any]]:
    """Every claim record of every reported profile (quick, full, paper), sorted by notebook, id, profile.

    Each record is the claim object of ``reports/<profile>/metrics/<notebook>.json`` with ``notebook``
    and ``profile`` added. A malformed file raises ValueError naming it.
    """
    root = Path(root) if root is not None else repo_root()
    records: list[dict[str, Any]] = []
    for profile in REPORTED_PROFILES:
        for path in sorted((root / _METRICS_GLOB.format(profile=profile)).glob("*.json")):
            label = path.relative_to(root).as_posix()
            records += _parse_metrics(path.read_text(encoding="utf-8"), label, profile, path.stem)
    return sorted(records, key=_sort_key)


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ValueError("git is not installed: cannot read a committed record") from None
    if done.returncode != 0:
        raise ValueError(f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout


def load_records_at(rev: str, root: Path | str | None = None) -> list[dict[str, Any]]:
    """The records committed at git revision ``rev`` (``git ls-tree`` + ``git show``), like :func:`load_records`.

    ValueError when ``root`` is not in a git repository, ``rev`` is unknown, or the revision holds no
    ``reports/<profile>/metrics/*.json``.
    """
    root = Path(root) if root is not None else repo_root()
    if not root.is_dir():
        raise ValueError(f"{root}: no such directory")
    try:
        _git(root, "rev-parse", "--git-dir")
    except ValueError:
        raise ValueError(f"{root} is not inside a git repository: cannot compare with a committed record") from None
    try:
        commit = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except ValueError:
        raise ValueError(f"unknown git revision {rev!r} in {root}") from None
    folders = [_METRICS_GLOB.format(profile=p) for p in REPORTED_PROFILES]
    names = _git(root, "ls-tree", "-r", "--name-only", commit, "--", *folders).splitlines()
    records: list[dict[str, Any]] = []
    found = 0
    for name in sorted(names):
        path = PurePosixPath(name)
        if path.suffix != ".json" or path.parent.as_posix() not in folders:
            continue
        found += 1
        text = _git(root, "show", f"{commit}:./{name}")
        records += _parse_metrics(text, f"{rev}:{name}", path.parent.parent.name, path.stem)
    if not found:
        raise ValueError(f"revision {rev!r} holds no reports/<profile>/metrics/*.json to compare with")
    return sorted(records, key=_sort_key)


# ----------------------------------------------------------------------------------------------- formatting


def _num(x: Any) -> str:
    """A number with 3 significant figures (plain digits for large values); '—' for missing."""
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    text = f"{x:.3g}"
    if "e" in text and 1e-3 <= abs(x) < 1e7:
        text = f"{x:.0f}"
    return text


def _p(p: Any) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def _p_eq(p: Any) -> str:
    """'p = 0.18' or 'p < 0.001'."""
    text = _p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _clip(line: str, width: int) -> str:
    """``line`` cut to ``width`` characters (an ellipsis marks the cut; spacing kept)."""
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def _unit(record: Mapping[str, Any] | None, rule: _Rule | None) -> str:
    unit = (record or {}).get("unit")
    return str(unit if unit is not None else (rule.unit if rule else ""))


def _estimate_text(record: Mapping[str, Any], rule: _Rule | None) -> str:
    """'0.25 [-0.66, 1.16] pp' (no interval or unit when absent); '' without an estimate."""
    if record.get("estimate") is None:
        return ""
    text = _num(record["estimate"])
    if record.get("ci_low") is not None or record.get("ci_high") is not None:
        text += f" [{_num(record.get('ci_low'))}, {_num(record.get('ci_high'))}]"
    unit = _unit(record, rule)
    return f"{text} {unit}" if unit else text


def _is_check(kind: str, parts: Mapping[str, Any] | None) -> bool:
    """An implementation check: kind ``check``, or ``all`` of parts that are all checks (counted with the checks)."""
    if kind == "check":
        return True
    return kind == "all" and bool(parts) and all(_is_check(str(_get(p, "kind", "")), _get(p, "parts"))
                                                 for p in parts.values())


def _kind(record: Mapping[str, Any] | None, rule: _Rule | None) -> str:
    return (rule.kind if rule and rule.kind else None) or str((record or {}).get("kind", ""))


def _label(verdict: str, is_check: bool) -> str:
    return CHECK_LABELS.get(verdict, verdict) if is_check else verdict


def _tolerance(record: Mapping[str, Any] | None, rule: _Rule | None) -> Any:
    record = record or {}
    for value in (record.get("tolerance"), record.get("margin"), rule.tolerance if rule else None):
        if value is not None:
            return value
    return None


def _margin_text(kind: str, margin: Any, side: str | None, parts: Mapping[str, Any] | None = None) -> str:
    """The claim's side of the margin: '> 0', '< 0.25', '±0.2', 'all of: a > 0, b < 1'."""
    if kind == "all" and parts:
        inner = ", ".join(f"{name} {_margin_text(_get(p, 'kind', ''), _part_margin(p), _get(p, 'side'))}"
                          for name, p in parts.items())
        return _shorten(f"all of: {inner}", 60)
    if margin is None:
        return "—"
    if kind == "check":
        return f"≤ {_num(margin) if not isinstance(margin, str) else margin.replace('-', ' ')}"
    if kind == "equivalence":
        return f"±{_num(abs(float(margin)))}"
    if kind == "omnibus":
        return f"differ (null: ±{_num(abs(float(margin)))})"
    op = {"greater": ">", "less": "<"}.get(str(side), "?")
    return f"{op} {_num(margin)}"


def _part_margin(part: Any) -> Any:
    """A part's margin; a check part's tolerance (registry parts name it ``tolerance``, records ``margin``)."""
    if _get(part, "kind") == "check" and _get(part, "tolerance") is not None:
        return _get(part, "tolerance")
    return _get(part, "margin")


def _record_margin(record: Mapping[str, Any] | None, rule: _Rule | None) -> str:
    record = record or {}
    kind = _kind(record, rule)
    if kind == "check":
        return _margin_text("check", _tolerance(record, rule), None)
    margin = record.get("margin", rule.margin if rule else None)
    side = record.get("side") or (rule.side if rule else None)
    parts = (rule.parts if rule and rule.parts else None) or record.get("parts")
    return _margin_text(kind, margin, side, parts)


def _shorten(text: Any, limit: int = 140) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _first_sentence(text: Any, limit: int = 140) -> str:
    text = " ".join(str(text or "").split())
    match = re.search(r"(?<=[.!?])\s+(?=[A-Z(])", text)
    return _shorten(text[: match.start()] if match else text, limit)


def _md(text: Any) -> str:
    """A markdown table cell: pipes escaped, newlines folded."""
    return " ".join(str(text if text is not None else "—").split()).replace("|", "\\|")


def _md_link(text: str, target: str | None) -> str:
    if not target:
        return _md(text)
    if any(c in target for c in " ()<>"):
        target = f"<{target}>"
    label = _md(text).replace("[", r"\[").replace("]", r"\]")
    return f"[{label}]({target})"


def section_anchor(section: str) -> str:
    """The ``id`` nbconvert 7 gives a markdown heading with this text (spaces → '-', case kept).

    Inline markdown is reduced to its text first (code backticks, emphasis stars, link targets), as
    nbconvert takes the rendered heading's text; the result is percent-encoded like nbconvert does.
    """
    text = re.sub(r"^#+\s*", "", str(section).strip())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.replace("`", "").replace("**", "").replace("__", "")
    return quote(text.strip().replace(" ", "-"), safe="?/:@!$&'()*+,;=")


# ----------------------------------------------------------------------------------------------- claims model


@dataclass
class _Claim:
    id: str
    notebook: str
    rule: _Rule | None
    runs: dict[str, dict[str, Any]]  # profile → record

    @property
    def kind(self) -> str:
        return _kind(next(iter(self.runs.values()), None), self.rule)

    @property
    def is_check(self) -> bool:
        record = next(iter(self.runs.values()), None)
        return _is_check(self.kind, (self.rule.parts if self.rule and self.rule.parts else None)
                         or (record or {}).get("parts"))

    @property
    def exploratory(self) -> bool:
        return bool(self.rule and self.rule.exploratory)

    def judged(self, profile: str) -> bool:
        return self.rule is None or profile in self.rule.profiles

    @property
    def record_profile(self) -> str | None:
        for profile in reversed(REPORTED_PROFILES):
            if profile in self.runs and self.judged(profile):
                return profile
        return None

    @property
    def record(self) -> dict[str, Any] | None:
        profile = self.record_profile
        return self.runs[profile] if profile else None

    @property
    def verdict(self) -> str:
        record = self.record
        return record["verdict"] if record else NOT_RUN

    @property
    def label(self) -> str:
        return _label(self.verdict, self.is_check)


def _claims(records: Iterable[Mapping[str, Any]], registry: Any) -> list[_Claim]:
    """Registry claims (registry order within each notebook) plus records whose id is not in the registry."""
    rules = _rules(registry)
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    notebook_of: dict[str, str] = {}
    for record in records:
        runs.setdefault(record["id"], {})[record["profile"]] = dict(record)
        notebook_of.setdefault(record["id"], record["notebook"])
    claims = [_Claim(cid, rule.notebook or notebook_of.get(cid, ""), rule, runs.get(cid, {}))
              for cid, rule in rules.items()]
    claims += [_Claim(cid, notebook_of[cid], None, runs[cid]) for cid in sorted(runs) if cid not in rules]
    order = {c.id: i for i, c in enumerate(claims)}
    return sorted(claims, key=lambda c: (c.notebook, order[c.id]))


def verdict_of_record(records: Iterable[Mapping[str, Any]], registry: Any = None) -> dict[str, tuple[str | None, str]]:
    """``id → (profile, verdict)``: the highest profile (paper > full > quick) that ran and judges the claim.

    ``(None, 'not run')`` when no such profile ran.
    """
    return {c.id: (c.record_profile, c.verdict) for c in _claims(records, registry)}


def _counts(claims: list[_Claim]) -> dict[str, Any]:
    empirical = [c for c in claims if c.rule and not c.is_check and not c.exploratory]
    exploratory = [c for c in claims if c.rule and not c.is_check and c.exploratory]
    checks = [c for c in claims if c.rule and c.is_check]

    def tally(group: list[_Claim], labels: tuple[str, ...]) -> dict[str, int]:
        return {v: sum(c.label == v for c in group) for v in labels}

    return {
        "empirical": tally(empirical, (*VERDICTS, NOT_RUN)), "n_empirical": len(empirical),
        "exploratory": tally(exploratory, (*VERDICTS, NOT_RUN)), "n_exploratory": len(exploratory),
        "checks": tally(checks, ("passed", "failed", "inconclusive", NOT_RUN)), "n_checks": len(checks),
        "unregistered": sum(c.rule is None for c in claims),
    }


def _tally_text(tally: Mapping[str, int]) -> str:
    """'12 reproduced, 0 not reproduced, 3 inconclusive'; a zero 'not run' (or checks' 'inconclusive') left out."""
    always = VERDICTS if "reproduced" in tally else ("passed", "failed")
    return ", ".join(f"{n} {label}" for label, n in tally.items() if n or label in always)


def _note(claim: _Claim, record: Mapping[str, Any] | None) -> str:
    bits = []
    if claim.rule is None:
        bits.append("not in claims.yaml (stale metrics?)")
    if record:
        if record.get("note"):
            bits.append(_first_sentence(record["note"]))
        reason = str(record.get("reason") or "")
        if reason.startswith("not judged"):
            bits.append(_first_sentence(reason, 100))
        if record.get("parts"):
            bits.append("parts: " + ", ".join(f"{name} {_get(part, 'verdict', '?')}"
                                              for name, part in record["parts"].items()))
    elif claim.rule is not None:
        bits.append("no run yet in " + "/".join(claim.rule.profiles))
    if claim.exploratory:
        bits.append("exploratory: not counted")
    if claim.rule and claim.rule.family:
        bits.append(f"Holm family {claim.rule.family}")
    if claim.rule and claim.rule.history:
        bits.append("rule changed: see the deviations log")
    return "; ".join(bits)


# ----------------------------------------------------------------------------------------------- link targets


def _exists(root: Path | None, rel_to_reports: str) -> bool:
    return root is None or (root / "reports" / rel_to_reports).resolve().is_file()


_ID_RE = re.compile(r"\sid=\"([^\"]*)\"")


def _html_ids(path: Path, cache: dict[Path, set[str]]) -> set[str]:
    if path not in cache:
        try:
            cache[path] = {html.unescape(m) for m in _ID_RE.findall(path.read_text(encoding="utf-8"))}
        except OSError:
            cache[path] = set()
    return cache[path]


class _Links:
    """Link targets relative to ``reports/``; with a root, only to files (and headings) that exist."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self._ids: dict[Path, set[str]] = {}

    def notebook(self, notebook: str, profile: str | None, section: str | None) -> str | None:
        if not profile or not notebook:
            return None
        base = f"{profile}/notebooks/{quote(notebook)}"
        if not _exists(self.root, f"{base}.html"):
            return f"{base}.ipynb" if self.root is not None and _exists(self.root, f"{base}.ipynb") else None
        if not section:
            return f"{base}.html"
        anchor = section_anchor(section)
        if self.root is not None and anchor not in _html_ids(self.root / "reports" / f"{base}.html", self._ids):
            return f"{base}.html"
        return f"{base}.html#{anchor}"

    def figure(self, notebook: str, profile: str | None, figure: str | None) -> str | None:
        if not figure or not notebook or (self.root is None and not profile):
            return None
        profiles = [profile] if profile else []
        profiles += [p for p in reversed(REPORTED_PROFILES) if p not in profiles]
        for p in profiles:
            target = f"../figures/{p}/{quote(notebook)}/{quote(str(figure))}.png"
            if _exists(self.root, target):
                return target
            if self.root is None:
                return target
        return None


def _figure_label(name: str, target: str, profile: str | None) -> str:
    """The figure's name, with the profile it comes from when that is not ``profile`` (a fallback)."""
    shown = target.split("/")[2] if target.startswith("../figures/") else profile
    return name if shown == profile else f"{name} ({shown})"


# ----------------------------------------------------------------------------------------------- markdown


_CONVENTIONS = (
    "Conventions: one-sided α = 0.025 for each decision; intervals are two-sided 95 %. A claim is *reproduced* "
    "when its interval lies wholly on the claim's side of the margin, *not reproduced* when it lies wholly on the "
    "other side, *inconclusive* otherwise; p is the deciding test's. The verdict of record is that of the highest "
    "profile that ran and in which the claim is judged (paper > full > quick); *not run*: no such profile ran yet."
)


def _profile_cell(claim: _Claim, profile: str) -> str:
    record = claim.runs.get(profile)
    if record is None:
        return "—"
    text = _label(record["verdict"], claim.is_check)
    estimate = _estimate_text(record, claim.rule)
    if estimate:
        text += f" — {estimate}"
    if record.get("n") is not None:
        text += f", n={record['n']}"
    if not claim.judged(profile):
        text += " (not judged here)"
    return text


def _check_cell(claim: _Claim, profile: str) -> str:
    record = claim.runs.get(profile)
    if record is None:
        return "—"
    text = _label(record["verdict"], True)
    parts = record.get("parts")
    if parts:  # a composite of checks: each part's deviation, in the registry's order
        names = [n for n in (claim.rule.parts if claim.rule and claim.rule.parts else {}) if n in parts]
        names += [n for n in parts if n not in names]
        return text + " — " + ", ".join(f"{n} {_num(_get(parts[n], 'estimate'))}" for n in names)
    if record.get("estimate") is not None:
        text += f" — {_num(record['estimate'])}"
        unit = _unit(record, claim.rule)
        text += f" {unit}" if unit else ""
    tolerance = record.get("tolerance", record.get("margin"))
    if tolerance is not None and claim.rule is not None and claim.rule.tolerance not in (None, tolerance):
        text += f" (≤ {_num(tolerance)})"
    return text


def render_markdown(records: list[Mapping[str, Any]], registry: Any, root: Path | str | None = None) -> str:
    """``reports/claims.md``: counts, the empirical claims table, the implementation checks, the deviations log.

    Links are relative to ``reports/``: claim id → the claim's section of the executed notebook of the
    verdict of record (``<profile>/notebooks/<nb>.html#<heading id>``), figure →
    ``../figures/<profile>/<nb>/<figure>.png``. With ``root``, a link is emitted only when its file
    exists (the ``.ipynb`` stands in for a missing ``.html``; a missing heading drops the anchor).
    """
    claims = _claims(records, registry)
    links = _Links(Path(root) if root is not None else None)
    counts = _counts(claims)
    runs = {p: sum(1 for c in claims for q in c.runs if q == p) for p in REPORTED_PROFILES}
    lines = [
        "# Claims report",
        "",
        "Generated by `dropoutlab report` from `claims.yaml` and `reports/<profile>/metrics/*.json` "
        "(profiles quick, full, paper; smoke runs are never reported). Do not edit by hand.",
        "",
        f"- **Empirical claims: {counts['n_empirical']}** (verdict of record) — {_tally_text(counts['empirical'])}.",
        f"- **Exploratory claims: {counts['n_exploratory']}** (shown, not counted above) — "
        f"{_tally_text(counts['exploratory'])}.",
        f"- **Implementation checks: {counts['n_checks']}** (identities that only a bug can break) — "
        f"{_tally_text(counts['checks'])}.",
        "- Records per profile: " + ", ".join(f"{p} {n}" for p, n in runs.items()) + ".",
    ]
    if counts["unregistered"]:
        lines.append(f"- {counts['unregistered']} recorded id(s) are not in claims.yaml (listed, not counted).")
    lines += ["", _CONVENTIONS, "", "## Empirical claims", ""]
    empirical = [c for c in claims if not c.is_check]
    header = ["id", "claim", "paper", "quick run", "full run", "paper run", "verdict of record", "test", "p",
              "margin", "n for 80 % power", "figure", "note"]
    if empirical:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in empirical:
        rule, record, profile = c.rule, c.record, c.record_profile
        statement = rule.statement if rule else "—"
        if c.exploratory:
            statement += " *(exploratory)*"
        n_needed = ""
        if record and record["verdict"] == "inconclusive" and not str(record.get("reason", "")).startswith(
                "not judged"):
            n_needed = _num(record.get("n_needed"))
        figure = links.figure(c.notebook, profile, rule.figure if rule else None)
        cells = [
            _md_link(c.id, links.notebook(c.notebook, profile, rule.section if rule else None)),
            _md(statement), _md(rule.paper_value if rule else "—"),
            *(_md(_profile_cell(c, p)) for p in REPORTED_PROFILES),
            _md(f"{c.verdict} ({profile})" if profile else NOT_RUN),
            _md((record or {}).get("test") or "—"), _md(_p((record or {}).get("p"))),
            _md(_record_margin(record, rule)), _md(n_needed),
            _md_link(_figure_label(rule.figure, figure, profile), figure) if rule and rule.figure and figure else "—",
            _md(_note(c, record)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not empirical:
        lines.append("No empirical claims.")
    lines += ["", "## Implementation checks", "",
              "Identities and formulas that can only fail through a bug: the value is the largest deviation, "
              "the check passes when |value| ≤ tolerance.", ""]
    checks = [c for c in claims if c.is_check]
    if checks:
        lines += ["| id | check | tolerance | quick run | full run | paper run |", "|---|---|---|---|---|---|"]
    for c in checks:
        rule = c.rule
        tolerance = _tolerance(c.record, rule) if rule is None or rule.tolerance is None else rule.tolerance
        cells = [_md_link(c.id, links.notebook(c.notebook, c.record_profile, rule.section if rule else None)),
                 _md(rule.statement if rule else "not in claims.yaml"),
                 _md(_record_margin(c.record, rule) if c.kind == "all" else _margin_text("check", tolerance, None)),
                 *(_md(_check_cell(c, p)) for p in REPORTED_PROFILES)]
        lines.append("| " + " | ".join(cells) + " |")
    if not checks:
        lines.append("No implementation checks.")
    lines += _deviations_markdown(claims)
    return "\n".join(lines) + "\n"


def _deviations_markdown(claims: list[_Claim]) -> list[str]:
    lines = ["", "## Deviations log", "",
             "Every change of a claim's rule (kind, margin, design, …) made after a result was seen, and the "
             "exploratory claims (labelled as such before any result, never counted in the totals).", ""]
    entries = [(str(_get(h, "date", "")), c.id, _get(h, "old", ""), _get(h, "reason", ""))
               for c in claims if c.rule for h in c.rule.history]
    if entries:
        lines += ["| date | claim | old rule | reason |", "|---|---|---|---|"]
        lines += [f"| {_md(d)} | {_md(cid)} | {_md(old)} | {_md(reason)} |" for d, cid, old, reason in sorted(entries)]
    else:
        lines.append("No rule has changed after a result was seen.")
    lines += _departures_markdown(claims)
    lines += ["", "### Exploratory claims", ""]
    exploratory = [c for c in claims if c.exploratory]
    for c in exploratory:
        why = f" Why: {_md(_first_sentence(c.rule.why, 200))}" if c.rule and c.rule.why else ""
        lines.append(f"- **{_md(c.id)}** ({_md(c.notebook)}): {_md(c.rule.statement)} — {c.verdict}.{why}")
    if not exploratory:
        lines.append("None.")
    return lines


def _departures_markdown(claims: list[_Claim]) -> list[str]:
    lines = ["", "### Departures from the checks", "",
             "Where a profile's setting departs from the claim's check (a budget the machine can keep), as the "
             "registry stated it before the run.", ""]
    entries = [(c.id, profile, text) for c in claims if c.rule for profile, text in c.rule.departures]
    if entries:
        lines += ["| claim | profile | departure |", "|---|---|---|"]
        lines += [f"| {_md(cid)} | {_md(profile)} | {_md(text)} |" for cid, profile, text in entries]
    else:
        lines.append("None stated.")
    return lines


# ----------------------------------------------------------------------------------------------- summary


def render_summary(records: list[Mapping[str, Any]], registry: Any, width: int = 120) -> str:
    """What ``make reproduce`` prints: counts, then per notebook one line per claim (lines ≤ ``width``).

    Two header lines: the empirical claims' verdicts of record, then the implementation checks apart.
    Each claim line shows its verdict of record (the highest profile that ran and judges it).

    ``  ID  verdict  estimate [ci] unit  (profile, p = …)`` — the verdict of record.
    """
    claims = _claims(records, registry)
    counts = _counts(claims)
    lines = [
        _shorten(f"{counts['n_empirical']} empirical claims: {_tally_text(counts['empirical'])}; "
                 f"{counts['n_exploratory']} exploratory (not counted)", width),
        _shorten(f"{counts['n_checks']} implementation checks: {_tally_text(counts['checks'])}", width),
    ]
    id_width = max((len(c.id) for c in claims), default=2)
    label_width = max((len(c.label) for c in claims), default=7)
    notebook = None
    for c in claims:
        if c.notebook != notebook:
            notebook = c.notebook
            lines.append(notebook or "(no notebook)")
        record = c.record
        line = f"  {c.id:<{id_width}}  {c.label:<{label_width}}"
        if record is not None:
            value = _estimate_text(record, c.rule) or "—"
            extra = [str(c.record_profile)]
            if c.is_check:
                extra.append(f"tolerance {_record_margin(record, c.rule)}")
            elif record.get("p") is not None:
                extra.append(_p_eq(record["p"]))
            if c.exploratory:
                extra.append("exploratory")
            if c.rule is None:
                extra.append("not in claims.yaml")
            tail = f"  ({', '.join(extra)})"
            room = width - len(line) - 2 - len(tail)
            line += f"  {_shorten(value, max(room, 8))}{tail}"
        lines.append(_clip(line, width).rstrip())
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- JSON


_JSON_KEYS = ("id", "notebook", "kind", "profile", "verdict", "estimate", "ci_low", "ci_high", "n", "test", "p",
              "margin")


def records_json(records: list[Mapping[str, Any]], registry: Any) -> str:
    """The records as a JSON list, one element per claim per profile that ran, sorted by notebook, id, profile.

    Profiles sort from lowest to highest (quick, full, paper). Keys: id, notebook, kind, profile, verdict,
    estimate, ci_low, ci_high, n, test, p, margin.
    """
    rules = _rules(registry)
    out = []
    for record in sorted(records, key=_sort_key):
        rule = rules.get(record["id"])
        row = {key: record.get(key) for key in _JSON_KEYS}
        row["kind"] = _kind(record, rule) or None
        if row["margin"] is None and row["kind"] == "check":
            row["margin"] = _tolerance(record, rule)
        out.append(row)
    return json.dumps(out, indent=2, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------------------------- diff


def diff_records(old: list[Mapping[str, Any]], new: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Compare a committed record (``old``) with a fresh run (``new``), per (profile, id).

    One row per (profile, id) in either: ``status`` is ``added``, ``removed``, ``changed`` (verdict changed
    or the new estimate lies outside the committed interval) or ``same``; ``verdict_changed`` and
    ``outside_interval`` say which.
    """
    before = {(r["profile"], r["id"]): r for r in old}
    after = {(r["profile"], r["id"]): r for r in new}
    rows = []
    for key in before.keys() | after.keys():
        a, b = before.get(key), after.get(key)
        either = b or a
        row: dict[str, Any] = {
            "profile": key[0], "id": key[1], "notebook": either["notebook"],
            "old_verdict": a and a["verdict"], "new_verdict": b and b["verdict"],
            "old_estimate": a and a.get("estimate"), "new_estimate": b and b.get("estimate"),
            "old_ci_low": a and a.get("ci_low"), "old_ci_high": a and a.get("ci_high"),
            "unit": either.get("unit") or "", "verdict_changed": False, "outside_interval": False,
        }
        if a is None or b is None:
            row["status"] = "added" if a is None else "removed"
        else:
            row["verdict_changed"] = a["verdict"] != b["verdict"]
            est, lo, hi = b.get("estimate"), a.get("ci_low"), a.get("ci_high")
            if est is not None and (lo is not None or hi is not None):
                row["outside_interval"] = (lo is not None and est < lo) or (hi is not None and est > hi)
            row["status"] = "changed" if row["verdict_changed"] or row["outside_interval"] else "same"
        rows.append(row)
    return sorted(rows, key=_sort_key)


def render_diff(rows: list[Mapping[str, Any]]) -> str:
    """The differences, one line each, then one closing line (``N claims compared: …``)."""
    lines = []
    for r in rows:
        head = f"  {r['profile']:<5}  {r['id']}"
        if r["status"] == "added":
            lines.append(f"{head}  added: {r['new_verdict']} (not in the committed record)")
        elif r["status"] == "removed":
            lines.append(f"{head}  removed: was {r['old_verdict']} in the committed record")
        elif r["status"] == "changed":
            bits = []
            if r["verdict_changed"]:
                bits.append(f"verdict {r['old_verdict']} → {r['new_verdict']}")
            if r["outside_interval"]:
                unit = f" {r['unit']}" if r.get("unit") else ""
                bits.append(f"estimate {_num(r['new_estimate'])}{unit} outside the committed "
                            f"[{_num(r['old_ci_low'])}, {_num(r['old_ci_high'])}] (was {_num(r['old_estimate'])})")
            lines.append(f"{head}  {'; '.join(bits)}")
    compared = [r for r in rows if r["status"] in ("same", "changed")]
    verdicts = sum(r["verdict_changed"] for r in compared)
    outside = sum(r["outside_interval"] for r in compared)
    added = sum(r["status"] == "added" for r in rows)
    removed = sum(r["status"] == "removed" for r in rows)
    if not (verdicts or outside or added or removed):
        lines.append(f"{len(compared)} claims compared: matches the committed record")
    else:
        last = (f"{len(compared)} claims compared: {verdicts} verdicts changed, "
                f"{outside} estimates outside the committed interval")
        if added or removed:
            last += f"; {added} added, {removed} removed"
        lines.append(last)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1500px;
padding:0 1em;color:#1d1d1f}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
h3{font-size:1.05em;margin:1.2em 0 .3em}
.counts{display:flex;gap:1em;flex-wrap:wrap;margin:1em 0}
.counts div{background:#f5f5f7;border-radius:6px;padding:.5em .9em}
.filters{position:sticky;top:0;background:#fff;padding:.5em 0;z-index:2;border-bottom:1px solid #eee}
.filters label{margin-right:1.2em}select{font:inherit;padding:2px 4px}
.wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e5e5e5;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#fafafa}
td.num{white-space:nowrap;font-variant-numeric:tabular-nums}
.id,.prof{white-space:nowrap}.claim{min-width:16em}.note{min-width:13em}.margin{min-width:7em}
.test{font-size:12px;color:#444;max-width:11em}.paper{font-size:12px;color:#666;margin-top:2px}
.v{display:inline-block;border-radius:4px;padding:0 6px;white-space:nowrap;font-weight:600}
.v-reproduced,.v-passed{background:#d9f2de;color:#11592a}
.v-not-reproduced,.v-failed{background:#fbdcdc;color:#8a1414}
.v-inconclusive{background:#fdf0cc;color:#6b4d00}.v-not-run{background:#eee;color:#555}
.tag{display:block;width:max-content;font-size:11px;color:#666;border:1px solid #ccc;border-radius:3px;
padding:0 3px;margin-top:2px}
.thumbs{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:250px}figure img{width:100%;border:1px solid #ddd;background:#fff}
figcaption{font-size:12px;color:#555}.muted{color:#777}
"""

_SCRIPT = """
function applyFilters(){
  var v=document.getElementById('f-verdict').value, n=document.getElementById('f-notebook').value,
      p=document.getElementById('f-profile').value, rows=document.querySelectorAll('#claims tbody tr'), shown=0;
  for(var i=0;i<rows.length;i++){
    var d=rows[i].dataset;
    var ok=(v==='all'||d.verdict===v)&&(n==='all'||d.notebook===n)&&
           (p==='all'||(p==='record'?d.record==='1':d.profile===p));
    rows[i].hidden=!ok; if(ok){shown++;}
  }
  document.getElementById('shown').textContent=String(shown);
}
document.addEventListener('DOMContentLoaded',function(){
  var ids=['f-verdict','f-notebook','f-profile'], keys=['verdict','notebook','profile'];
  var query=new URLSearchParams(window.location.search);
  for(var i=0;i<ids.length;i++){
    var select=document.getElementById(ids[i]), wanted=query.get(keys[i]);
    if(wanted!==null){
      for(var j=0;j<select.options.length;j++){if(select.options[j].value===wanted){select.value=wanted;}}
    }
    select.addEventListener('change',applyFilters);
  }
  applyFilters();
});
window.addEventListener('load',function(){
  var imgs=document.images, broken=0;
  for(var i=0;i<imgs.length;i++){if(!imgs[i].complete||imgs[i].naturalWidth===0){broken++;}}
  document.body.dataset.brokenImages=String(broken);
  document.body.dataset.ready='1';
});
"""

_ONERROR = ("window.onerror=function(){var b=document.body||document.documentElement;"
            "b.dataset.jsErrors=String((parseInt(b.dataset.jsErrors||'0',10)||0)+1);return false;};")


def _markdown_emphasis(text: str) -> str:
    """``*word*`` → ``<em>word</em>`` (the conventions paragraph is shared with the markdown report)."""
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def _e(text: Any) -> str:
    return html.escape(str(text if text is not None else "—"), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _a(text: str, target: str | None, cls: str = "") -> str:
    if not target:
        return _e(text)
    klass = f' class="{cls}"' if cls else ""
    return f'<a href="{_e(target)}"{klass}>{_e(text)}</a>'


def _badge(label: str) -> str:
    return f'<span class="v v-{_slug(label)}">{_e(label)}</span>'


def _options(name: str, label: str, values: list[tuple[str, str]], selected: str) -> str:
    opts = "".join(f'<option value="{_e(v)}"{" selected" if v == selected else ""}>{_e(t)}</option>'
                   for v, t in values)
    return f'<label>{_e(label)} <select id="{name}">{opts}</select></label>'


def _index_row(c: _Claim, profile: str | None, links: _Links) -> str:
    record = c.runs.get(profile) if profile else None
    rule = c.rule
    label = _label(record["verdict"], c.is_check) if record else NOT_RUN
    is_record = profile == c.record_profile
    tags = []
    if c.is_check:
        tags.append("check")
    if c.exploratory:
        tags.append("exploratory")
    if record and not c.judged(profile):
        tags.append("not judged here")
    if rule is None:
        tags.append("not in claims.yaml")
    tag_html = "".join(f'<span class="tag">{_e(t)}</span>' for t in tags)
    figure = links.figure(c.notebook, profile, rule.figure if rule else None) if rule and rule.figure else None
    section = links.notebook(c.notebook, profile, rule.section if rule else None)
    estimate = _estimate_text(record, rule) if record else ""
    n_needed = ""
    if record and record["verdict"] == "inconclusive" and record.get("n_needed") is not None:
        n_needed = f" · n for 80 % power {_num(record['n_needed'])}"
    attrs = {"verdict": label, "notebook": c.notebook, "profile": profile or "none",
             "record": "1" if is_record else "0"}
    data = " ".join(f'data-{k}="{_e(v)}"' for k, v in attrs.items())
    hidden = "" if is_record else " hidden"
    cells = [
        f'<td class="id">{_a(c.id, section)}{tag_html}</td>', f"<td>{_e(c.notebook)}</td>",
        f'<td class="prof">{_e(profile or "—")}{" ★" if is_record and profile else ""}</td>',
        f'<td class="claim">{_e(rule.statement if rule else "—")}'
        f'<div class="paper">paper: {_e(rule.paper_value if rule else "—")}</div></td>',
        f"<td>{_badge(label)}</td>", f'<td class="num">{_e(estimate or "—")}</td>',
        f'<td class="num">{_e((record or {}).get("n"))}</td>',
        f'<td class="test">{_e((record or {}).get("test"))}</td>',
        f'<td class="num">{_e(_p((record or {}).get("p")))}</td>',
        f'<td class="margin">{_e(_record_margin(record, rule) if record or rule else "—")}</td>',
        f"<td>{_a(_figure_label(rule.figure, figure, profile), figure) if figure and rule else '—'}</td>",
        f'<td class="note">{_e(_note(c, record))}{_e(n_needed)}</td>',
    ]
    return f"<tr {data}{hidden}>" + "".join(cells) + "</tr>"


def render_index(records: list[Mapping[str, Any]], registry: Any, root: Path | str) -> str:
    """``reports/index.html``: a self-contained page (inline CSS and script, no network).

    Counts, a table of claims (one row per claim per profile; by default the verdict-of-record rows) with
    filters by verdict, notebook and profile (also settable by the query, ``index.html?profile=all&notebook=…``),
    and per notebook its executed notebooks and figure thumbnails.
    Every ``href``/``src`` points at a file that exists under ``root`` (links are relative to ``reports/``).
    On load the page sets ``body[data-ready="1"]`` and ``body[data-broken-images]`` (images that did not
    decode); a script error increments ``body[data-js-errors]`` — for checks in a headless browser.
    """
    root = Path(root)
    links = _Links(root)
    claims = _claims(records, registry)
    counts = _counts(claims)
    notebooks = sorted({c.notebook for c in claims if c.notebook} | {
        p.stem for prof in REPORTED_PROFILES for folder in ("metrics", "notebooks")
        for p in (root / "reports" / prof / folder).glob("[!.]*.*")  # not a run in progress (.NAME.running)
        if p.suffix in (".json", ".html", ".ipynb") and not p.stem.endswith(".failed")})
    out = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="generator" content="{GENERATOR}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>dropoutlab — claims report</title>", f"<script>{_ONERROR}</script>",
        f"<style>{_CSS}</style></head><body>", "<h1>dropoutlab — claims report</h1>",
        "<p class=\"muted\">Generated by <code>dropoutlab report</code> from <code>claims.yaml</code> and "
        "<code>reports/&lt;profile&gt;/metrics/*.json</code> (profiles quick, full, paper). "
        f"{_markdown_emphasis(_e(_CONVENTIONS))}"
        + (f' The same table in markdown: {_a("claims.md", "claims.md")}.' if _exists(root, "claims.md") else "")
        + "</p>",
        '<div class="counts">',
        f"<div><b>{counts['n_empirical']} empirical claims</b><br>{_e(_tally_text(counts['empirical']))}</div>",
        f"<div><b>{counts['n_exploratory']} exploratory</b> (not counted)<br>"
        f"{_e(_tally_text(counts['exploratory']))}</div>",
        f"<div><b>{counts['n_checks']} implementation checks</b><br>{_e(_tally_text(counts['checks']))}</div>",
        "</div>",
    ]
    verdict_values = [("all", "all")] + [(v, v) for v in (*VERDICTS, "passed", "failed", NOT_RUN)]
    profile_values = [("record", "verdict of record"), ("all", "all profiles")] + [(p, p) for p in REPORTED_PROFILES]
    out.append('<div class="filters">'
               + _options("f-verdict", "Verdict", verdict_values, "all")
               + _options("f-notebook", "Notebook", [("all", "all")] + [(n, n) for n in notebooks], "all")
               + _options("f-profile", "Profile", profile_values, "record")
               + ' <span class="muted"><span id="shown">0</span> rows shown · ★ verdict of record</span></div>')
    header = ["id", "notebook", "profile", "claim (paper's value)", "verdict", "estimate [95 % CI]", "n", "test",
              "p", "margin", "figure", "note"]
    classes = ["id", "", "", "claim", "", "", "", "test", "", "margin", "", "note"]
    out.append('<div class="wrap"><table id="claims"><thead><tr>'
               + "".join(f'<th class="{c}">{_e(h)}</th>' if c else f"<th>{_e(h)}</th>" for h, c in zip(header, classes))
               + "</tr></thead><tbody>")
    for c in claims:
        profiles = [p for p in REPORTED_PROFILES if p in c.runs]
        if c.record_profile is None:
            out.append(_index_row(c, None, links))
        out += [_index_row(c, p, links) for p in profiles]
    out.append("</tbody></table></div>")
    out += _notebook_sections(notebooks, root)
    out.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(out) + "\n"


def _notebook_sections(notebooks: list[str], root: Path) -> list[str]:
    out = ["<h2>Notebooks and figures</h2>"]
    for nb in notebooks:
        out.append(f'<h3 id="nb-{_e(_slug(nb))}">{_e(nb)}</h3>')
        executed = []
        for profile in REPORTED_PROFILES:
            for ext in ("html", "ipynb"):
                target = f"{profile}/notebooks/{quote(nb)}.{ext}"
                if _exists(root, target):
                    executed.append(_a(f"{profile} ({ext})", target))
        out.append("<p>Executed notebook: " + (" · ".join(executed) or '<span class="muted">none yet</span>')
                   + "</p>")
        figures = [(profile, png) for profile in reversed(REPORTED_PROFILES)
                   for png in sorted((root / "figures" / profile / nb).glob("*.png"))]
        if not figures:
            out.append('<p class="muted">No figures yet.</p>')
            continue
        out.append('<div class="thumbs">')
        for profile, png in figures:
            target = f"../figures/{profile}/{quote(nb)}/{quote(png.name)}"
            out.append(f'<figure><a href="{_e(target)}"><img src="{_e(target)}" alt="{_e(png.stem)} ({profile})"></a>'
                       f"<figcaption>{_e(png.stem)} · {_e(profile)}</figcaption></figure>")
        out.append("</div>")
    return out


# ----------------------------------------------------------------------------------------------- writing


def write_report(root: Path | str | None = None) -> Path:
    """Write ``reports/claims.md`` and then ``reports/index.html`` atomically; return the markdown path."""
    root = Path(root) if root is not None else repo_root()
    records = load_records(root)
    registry = load_registry_for(root)
    out = root / "reports" / "claims.md"
    atomic_write_text(out, render_markdown(records, registry, root=root))
    atomic_write_text(root / "reports" / "index.html", render_index(records, registry, root))
    return out
