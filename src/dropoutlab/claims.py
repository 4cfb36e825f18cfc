"""The claims ledger: one verdict per published claim, gathered into ``reports/claims.md``.

Each notebook ends with::

    ledger = Ledger("01_dropout_vs_none")
    ledger.check("SR-T2", claim="...", source="Srivastava et al. 2014, Table 2", paper="1.60 → 1.25 %",
                 measured=summary, n_seeds=3, passed=True, note="...")
    ledger.save()

``save`` writes ``reports/metrics/<notebook>.json`` (a DVC metrics file: numbers are leaves,
strings are ignored by ``dvc metrics show``). ``write_report`` gathers every such file into
one markdown table and an HTML index of executed notebooks and figures.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._io import atomic_write_text
from .analysis.stats import Summary
from .paths import metrics_dir, repo_root

VERDICTS = {True: "reproduced", False: "not reproduced", None: "inconclusive"}


def _round(x: float | None, digits: int = 6) -> float | None:
    """Round to ``digits`` significant figures so metrics files stay readable and stable."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    source: str
    paper: str
    measured: float | None
    ci_low: float | None
    ci_high: float | None
    measured_text: str
    n_seeds: int | None
    passed: bool | None
    verdict: str
    note: str
    p_value: float | None = None
    unit: str = ""


class Ledger:
    """Collects the claim checks of one notebook."""

    def __init__(self, notebook: str, root: Path | str | None = None) -> None:
        if not notebook or "/" in notebook:
            raise ValueError(f"Ledger: notebook must be a bare name like '01_dropout_vs_none', got {notebook!r}")
        self.notebook = notebook
        self.root = Path(root) if root is not None else None
        self.claims: dict[str, Claim] = {}

    def check(
        self,
        id: str,
        claim: str,
        source: str,
        paper: str,
        measured: Summary | float | str | None,
        ci: tuple[float, float] | float | None = None,
        n_seeds: int | None = None,
        passed: bool | None = None,
        note: str = "",
        p_value: float | None = None,
        unit: str = "",
    ) -> Claim:
        """Record one claim. ``passed``: True reproduced, False not reproduced, None inconclusive.

        ``measured`` may be a :class:`Summary` (mean ± CI over seeds; ``ci`` and ``n_seeds`` are
        then taken from it), a number with ``ci`` as a half-width or a (low, high) pair, or a text.
        """
        if passed not in VERDICTS:
            raise ValueError(f"Ledger.check({id!r}): passed must be True, False or None, got {passed!r}")
        value: float | None
        low = high = None
        if isinstance(measured, Summary):
            value, n_seeds = measured.mean, n_seeds or measured.n
            if math.isfinite(measured.half_width):
                low, high = measured.low, measured.high
        elif isinstance(measured, (int, float)) and not isinstance(measured, bool):
            value = float(measured)
        else:
            value = None
        if value is not None and ci is not None:
            if isinstance(ci, tuple):
                low, high = float(ci[0]), float(ci[1])
            elif math.isfinite(float(ci)):
                low, high = value - float(ci), value + float(ci)
        if value is None:
            text = str(measured) if measured is not None else "—"
        elif low is not None and high is not None:
            text = f"{value:.4g} ± {(high - low) / 2:.2g}{unit}"
        else:
            text = f"{value:.4g}{unit}"
        entry = Claim(
            id=id, claim=claim, source=source, paper=paper,
            measured=_round(value), ci_low=_round(low), ci_high=_round(high), measured_text=text,
            n_seeds=n_seeds, passed=passed, verdict=VERDICTS[passed], note=note,
            p_value=_round(p_value, 4) if p_value is not None else None, unit=unit,
        )
        self.claims[id] = entry
        return entry

    def to_dict(self) -> dict[str, Any]:
        claims = {}
        for cid, c in self.claims.items():
            record = asdict(c)
            # numeric 0/1 so `dvc metrics show` lists the verdict; None stays null (inconclusive)
            record["passed"] = None if c.passed is None else int(c.passed)
            claims[cid] = record
        return {"notebook": self.notebook, "claims": claims}

    def save(self) -> Path:
        """Write ``reports/metrics/<notebook>.json`` atomically and return its path."""
        path = metrics_dir(self.root) / f"{self.notebook}.json"
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return path

    def table(self):
        """The ledger as a pandas DataFrame (for display at the end of a notebook)."""
        import pandas as pd

        cols = ["id", "claim", "paper", "measured_text", "n_seeds", "verdict"]
        return pd.DataFrame([{k: getattr(c, k) for k in cols} for c in self.claims.values()], columns=cols)


def load_claims(root: Path | None = None) -> list[dict[str, Any]]:
    """Every claim of every ``reports/metrics/*.json``, in notebook order."""
    rows = []
    for path in sorted(metrics_dir(root).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            claims = data["claims"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path.name}: not a claims metrics file ({err})") from None
        for record in claims.values():
            rows.append({"notebook": data.get("notebook", path.stem), **record})
    return rows


def _cell(text: Any) -> str:
    return str(text if text is not None else "—").replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: list[dict[str, Any]]) -> str:
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS.values()}
    lines = [
        "# Claims report",
        "",
        "Generated by `dropoutlab report` from `reports/metrics/*.json`; do not edit by hand.",
        "Reproduced values are means over seeds with 95% t-intervals unless the note says otherwise.",
        "",
        f"**{len(rows)} claims:** {counts['reproduced']} reproduced, {counts['not reproduced']} not reproduced, "
        f"{counts['inconclusive']} inconclusive.",
        "",
        "| id | claim | source | paper | reproduced | seeds | verdict | notebook | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = f"**{r['verdict']}**" if r["verdict"] == "not reproduced" else r["verdict"]
        if r.get("p_value") is not None:
            verdict += f" (p = {r['p_value']:.3g})"
        cells = [r["id"], r["claim"], r["source"], r["paper"], r["measured_text"], r.get("n_seeds"),
                 verdict, f"[{r['notebook']}](notebooks/{r['notebook']}.ipynb)", r.get("note", "")]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_summary(rows: list[dict[str, Any]]) -> str:
    """The verdicts as plain text, one line per claim: what ``make reproduce`` prints at the end.

    (``dvc metrics show`` puts every field of every claim in one column: unreadable at 50+ claims.)
    """
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS.values()}
    width = max((len(r["id"]) for r in rows), default=2)
    lines = [f"{len(rows)} claims: {counts['reproduced']} reproduced, {counts['not reproduced']} not reproduced, "
             f"{counts['inconclusive']} inconclusive"]
    notebook = None
    for r in rows:
        if r["notebook"] != notebook:
            notebook = r["notebook"]
            lines.append(f"{notebook}")
        p = f"  (p = {r['p_value']:.3g})" if r.get("p_value") is not None else ""
        lines.append(f"  {r['id']:<{width}}  {r['verdict']:<14}  {r['measured_text']}{p}")
    return "\n".join(lines) + "\n"


def render_index(rows: list[dict[str, Any]], root: Path) -> str:
    notebooks = sorted({r["notebook"] for r in rows} | {p.stem for p in (root / "reports/notebooks").glob("*.ipynb")})
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>dropoutlab report</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
             "img{max-width:30em;margin:.5em;border:1px solid #ddd}</style></head><body>",
             "<h1>dropoutlab: claims and notebooks</h1>",
             "<p><a href='claims.md'>claims.md</a> — the claims table.</p>"]
    for nb in notebooks:
        parts.append(f"<h2>{html.escape(nb)}</h2><p><a href='notebooks/{nb}.html'>executed notebook (HTML)</a> · "
                     f"<a href='notebooks/{nb}.ipynb'>ipynb</a></p><ul>")
        for r in (r for r in rows if r["notebook"] == nb):
            parts.append(f"<li><b>{html.escape(r['id'])}</b> {html.escape(r['verdict'])}: "
                         f"{html.escape(r['claim'])} — {html.escape(r['measured_text'])}</li>")
        parts.append("</ul>")
        for fig in sorted((root / "figures" / nb).glob("*.png")):
            rel = fig.relative_to(root).as_posix()
            parts.append(f"<a href='../{rel}'><img src='../{rel}' alt='{html.escape(fig.stem)}'></a>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(root: Path | None = None) -> Path:
    """Write ``reports/claims.md`` and ``reports/index.html``; return the markdown path."""
    root = root or repo_root()
    rows = load_claims(root)
    out = root / "reports" / "claims.md"
    atomic_write_text(out, render_markdown(rows))
    atomic_write_text(root / "reports" / "index.html", render_index(rows, root))
    return out
