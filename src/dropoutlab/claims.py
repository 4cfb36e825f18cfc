"""The claims ledger: a notebook records per-run measurements; the registry's rule decides.

Each notebook ends with::

    ledger = Ledger("01_dropout_vs_none", profile)
    ledger.record("SR-T2", a=error_without, b=error_with, note="test error 2.21 % → 1.96 %")
    ledger.save()

The rule of every claim (kind, margin, design, family) is fixed in ``claims.yaml`` before the run
(:mod:`dropoutlab.registry`); :func:`dropoutlab.verdicts.decide` turns the measurements into a
verdict. A notebook never decides one. ``save`` writes ``reports/<profile>/metrics/<notebook>.json``
(a DVC metrics file) with the decisions and the raw per-run measurements; :mod:`dropoutlab.report`
gathers every profile's files into ``reports/claims.md`` and ``reports/index.html``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from ._io import atomic_write_text
from .paths import PART_ENV, check_profile, metrics_dir
from .registry import Registry, load_registry
from .verdicts import Decision, apply_holm, decide

VERDICTS = ("reproduced", "not reproduced", "inconclusive")


def default_registry() -> Registry:
    """``$DROPOUTLAB_REGISTRY`` (set by the runner for its kernels) or the repository's claims.yaml."""
    path = os.environ.get("DROPOUTLAB_REGISTRY")
    return load_registry(Path(path) if path else None)


def _clean(x: Any) -> Any:
    """JSON-ready copy: floats to 6 significant figures (stable files), NaN/inf to null, tuples to lists."""
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return float(f"{x:.6g}") if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "tolist"):  # numpy arrays and scalars, torch tensors
        return _clean(x.tolist())
    return x


def decision_record(decision: Decision) -> dict[str, Any]:
    """A decision as the plain dict stored in the metrics file."""
    record = asdict(decision)
    if decision.parts:
        record["parts"] = {name: {k: v for k, v in asdict(part).items() if k != "measurements"}
                           for name, part in decision.parts.items()}
    return _clean(record)


class Ledger:
    """Collects the claim measurements of one notebook run under one profile."""

    def __init__(self, notebook: str, profile: str, root: Path | str | None = None,
                 registry: Registry | None = None) -> None:
        if not notebook or "/" in notebook:
            raise ValueError(f"Ledger: notebook must be a bare name like '01_dropout_vs_none', got {notebook!r}")
        self.notebook = notebook
        self.profile = check_profile(profile)
        self.root = Path(root) if root is not None else None
        self.registry = registry or default_registry()
        self.part = os.environ.get(PART_ENV)  # a training stage's share of the runs: recorded, never judged
        self.decisions: dict[str, Decision] = {}

    def record(self, id: str, **measurements: Any) -> Decision:
        """Record the per-run measurements of claim ``id``; the registry's rule decides the verdict.

        Keyword arguments by kind: ``a=``/``b=`` (two arms) or ``values=`` (one sample), ``successes=``
        (share), ``groups=`` (ranking, omnibus), ``value=`` and perhaps ``tolerance=`` (implementation
        check), ``parts=`` (composite); ``precondition=`` where the rule declares one; ``note=`` one
        short sentence of context.
        """
        rule = self.registry.get(id)
        if rule.notebook != self.notebook:
            raise ValueError(f"{id}: claims.yaml assigns this claim to {rule.notebook}, not {self.notebook}")
        if id in self.decisions:
            raise ValueError(f"{id}: recorded twice in {self.notebook}")
        if self.part:  # kept for the record; the notebook's own stage decides on all the runs
            note = measurements.pop("note", "")
            decision = Decision(id=rule.id, kind=rule.kind, verdict="inconclusive", estimate=None, ci_low=None,
                                ci_high=None, n=None, test="none", p=None, p_for=None, p_against=None,
                                margin=rule.margin, side=rule.side, half_width=None, n_needed=None, parts=None,
                                reason=f"not judged: training part {self.part} (a share of the runs; the notebook's "
                                       "own stage judges all of them)",
                                unit=rule.unit, note=note if isinstance(note, str) else "",
                                measurements=_clean(measurements))
        else:
            decision = decide(rule, **measurements)
        self.decisions[id] = decision
        return decision

    def finalize(self) -> dict[str, Decision]:
        """The decisions with Holm's correction applied within each declared family."""
        if self.part:  # a training part judges nothing, so there is nothing to adjust
            return dict(self.decisions)
        adjusted = apply_holm(list(self.decisions.values()), self.registry)
        return {d.id: d for d in adjusted}

    def to_dict(self) -> dict[str, Any]:
        decisions = self.finalize()
        return {"notebook": self.notebook, "profile": self.profile,
                "claims": {cid: decision_record(d) for cid, d in decisions.items()}}

    def save(self) -> Path:
        """Write ``reports/<profile>/metrics/<notebook>.json`` atomically and return its path.

        Every claim the registry assigns to this notebook for this profile must have been recorded.
        """
        judged_in = "quick" if self.profile == "smoke" else self.profile  # smoke rehearses quick
        missing = [r.id for r in self.registry.for_notebook(self.notebook)
                   if judged_in in r.profiles and r.id not in self.decisions]
        if missing:
            raise ValueError(f"{self.notebook}: claims.yaml expects {', '.join(missing)} in the {self.profile} "
                             "profile, but the notebook did not record them")
        path = metrics_dir(self.profile, self.root) / f"{self.notebook}.json"
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return path

    def table(self) -> pd.DataFrame:
        """This notebook's verdicts as a DataFrame (for display at the end of a notebook)."""
        rows = []
        for d in self.finalize().values():
            rule = self.registry.get(d.id)
            ci = "" if d.ci_low is None else f"[{d.ci_low:.3g}, {d.ci_high:.3g}]"
            rows.append({"id": d.id, "claim": rule.statement, "kind": d.kind,
                         "estimate": None if d.estimate is None else f"{d.estimate:.4g}{(' ' + d.unit) if d.unit else ''}",
                         "95% interval": ci, "n": d.n, "verdict": d.verdict,
                         "p": None if d.p is None else f"{d.p:.3g}"})
        return pd.DataFrame(rows)
