"""The report of one fit as a job: the evidence (fitting the other model), then the layout.

`compute_evidence` is `bayes_check` with the fit in its slot and the other model (equilibrium ↔
non-equilibrium) fitted to the same data with `other_method`; `build_report` / `write_report`
take the same arguments as `detailed_balance.reports.build_report` / `write_report` plus
`other_method`, and compute the evidence first when none is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detailed_balance.data import Transitions
from detailed_balance.diagnostics import Verdict
from detailed_balance.reports.document import Document
from detailed_balance.reports.report import build_report as layout_report
from detailed_balance.reports.report import report_data

from .verdict import bayes_check


def compute_evidence(
    result: Any, data: Transitions, *, other_method: str = "auto", seed: int = 0, ci: float = 0.9
) -> Verdict:
    """`bayes_check` with this fit in its slot and the other model fitted here."""
    return bayes_check(data, result, method=other_method, seed=seed, ci=ci, return_verdict=True)


def build_report(
    result: Any,
    data: Transitions | None = None,
    *,
    evidence: Verdict | None = None,
    other_method: str = "auto",
    seed: int = 0,
    ci: float = 0.9,
    source: str = "",
) -> tuple[Document, dict[str, Any]]:
    """The report document and its JSON summary for one fit; the evidence is computed
    (`compute_evidence`) when not given, after the data are checked against the fit."""
    data = report_data(result, data, source)
    if evidence is None:
        evidence = compute_evidence(result, data, other_method=other_method, seed=seed, ci=ci)
    return layout_report(result, data, evidence=evidence, seed=seed, ci=ci, source=source)


def write_report(
    result: Any,
    out: str | Path,
    data: Transitions | None = None,
    **options: Any,
) -> dict[str, Path]:
    """Write `out` (HTML), its Markdown twin and the summary `X.json`; returns the paths."""
    doc, summary = build_report(result, data, **options)
    return doc.write(out, summary)
