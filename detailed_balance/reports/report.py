"""The posterior report of one fit: verdict, evidence, figures, tables, provenance, a reading.

`build_report(fit, data, evidence=verdict)` returns the `Document` and the summary object
(`report.json`); `write_report` writes `report.html` (self-contained), `report.md` (+ figures)
and `report.json`. Only layout: the evidence is a `diagnostics.Verdict` it is given (the
workflow's `detailed_balance.workflow.build_report` fits the other model first when there is
none).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from detailed_balance.data import Transitions
from detailed_balance.diagnostics import (
    FitError,
    Verdict,
    convergence,
    db_scatter,
    has_features,
    loop_balance,
    same_data,
)

from .document import Document
from .evidence import evidence_table
from .features import feature_section
from .figures import (
    as_tree,
    db_scatter_figure,
    landscape_graph_figure,
    loop_balance_figure,
    potential_distribution_figure,
    potential_draws,
    potential_forest_figure,
    ppc_figure,
    sampler_health_figure,
    violations_figure,
)
from .text import label


def reading(evidence: dict[str, Any], ci: float) -> str:
    """The plain-language reading of the evidence (a few sentences, no jargon beyond V)."""
    parts = []
    down = evidence.get("downhill_fraction") or {}
    if down.get("mean") is not None:
        share = down["mean"]
        trend = "descends" if share > 0.5 else "does not clearly descend"
        parts.append(
            f"The agent {trend} its potential landscape: {share:.0%} "
            f"({down['lower']:.0%}–{down['upper']:.0%}, {ci:.0%} interval) of its frequent moves "
            f"(T > 0.05) go to a lower potential."
        )
    spread = evidence.get("potential_spread") or {}
    if spread.get("mean") is not None:
        parts.append(
            f"Potentials spread with σ ≈ {spread['mean']:.2f} kT "
            f"[{spread['lower']:.2f}, {spread['upper']:.2f}]."
        )
    verdict = evidence.get("verdict")
    tau = evidence.get("tau_A")
    tau_text = f"τ_A ≤ {tau['upper']:.2g}" if tau and tau.get("upper") is not None else ""
    cycles = f"{evidence.get('flagged_cycles', 0)} of {evidence.get('n_cycles', 0)} 3-cycles"
    no_cycle = not evidence.get("n_cycles")  # no 3-cycle observed: the pair-level evidence
    if verdict == "holds":
        loops = (
            "no 3-cycle was observed (the verdict rests on the pair-level evidence)"
            if no_cycle
            else f"{cycles} have a loop affinity of credible sign"
        )
        parts.append(
            f"Detailed balance holds within the measurement: the antisymmetric (non-equilibrium) "
            f"term is small ({tau_text}), {loops}, and "
            f"the equilibrium model reproduces the counts."
        )
    elif verdict == "violated":
        loops = (
            "no 3-cycle was observed, but pairs carry a credible antisymmetric term, the "
            "non-equilibrium model predicts held-out pairs better and the equilibrium one "
            "cannot reproduce the counts"
            if no_cycle
            else f"{cycles} carry a credible loop affinity (a net circulation)"
        )
        parts.append(
            f"Detailed balance is violated: {loops}, "
            + (f"{tau_text.replace('≤', 'up to')}; " if tau_text else "")
            + "the potential describes the drift but not all of the dynamics."
        )
    elif verdict:
        parts.append(
            "The evidence on detailed balance is inconclusive: "
            + "; ".join(evidence.get("reasons", [])[:2])
            + "."
        )
    return " ".join(parts)


def state_table(result: Any, data: Transitions, ci: float = 0.9) -> pd.DataFrame:
    """Per state: visits, V mean, sd and `ci` interval, sorted by V (lowest first)."""
    draws = potential_draws(result, max_draws=2000)
    tail = (1 - ci) / 2
    visits = pd.Series(data.state_table()["visits"].to_numpy(), index=data.states.astype(str))
    table = pd.DataFrame(
        {
            "state": draws.columns,
            "visits": visits.reindex(draws.columns).fillna(0).to_numpy(),
            "mean": draws.mean().to_numpy(),
            "sd": draws.std().to_numpy(),
            "lower": draws.quantile(tail).to_numpy(),
            "upper": draws.quantile(1 - tail).to_numpy(),
        }
    )
    return table.sort_values("mean", kind="stable").reset_index(drop=True)


def report_data(result: Any, data: Transitions | None, source: str = "") -> Transitions:
    """The data a report of `result` is about: `data` when given (refused when the fit was made
    on other data), else the fit's own."""
    if data is not None and not same_data(data, result):
        raise FitError(
            f"{source or 'the fit'} was made on other data than those given (their counts or "
            f"visits differ, e.g. another --visits convention or other states); give the "
            f"transitions and visits the fit was made from, or leave out --data to use the "
            f"fit's own data."
        )
    data = data if data is not None else getattr(result, "data", None)
    if data is None:
        raise ValueError("the fit carries no data; pass the transitions (`--data DATA`).")
    return data


def build_report(
    result: Any,
    data: Transitions | None = None,
    *,
    evidence: Verdict,
    seed: int = 0,
    ci: float = 0.9,
    source: str = "",
) -> tuple[Document, dict[str, Any]]:
    """The report document and its JSON summary for one fit (equilibrium or non-equilibrium)
    and its `evidence` (a `Verdict` with this fit on its side)."""
    tree = as_tree(result)
    data = report_data(result, data, source)
    ev = evidence.evidence
    attrs = {k: _plain(v) for k, v in tree.attrs.items()}
    doc = Document(
        "Detailed-balance report",
        f"{source + ': ' if source else ''}{data.n_states} states, "
        f"{int(data.moves()['count'].sum())} moves; model {attrs.get('model', '?')} "
        f"({attrs.get('method', '?')}, sampler {attrs.get('sampler', '?')}, "
        f"{attrs.get('likelihood', 'pairs')} likelihood); {ci:.0%} intervals",
    )
    doc.verdict(ev["verdict"])
    text = reading(ev, ci)
    doc.reading(text)
    doc.heading("Evidence")
    doc.table(evidence_table(ev))
    for reason in ev.get("reasons", []):
        doc.text(f"• {reason}")
    doc.heading("Detailed balance")
    doc.figure(db_scatter_figure(data, result, ci=ci), "Detailed-balance scatter")
    doc.figure(loop_balance_figure(data, cycles=evidence.cycles), "3-cycle loop balance")
    doc.figure(
        violations_figure(evidence.pairs, evidence.cycles),
        "Pairs and 3-cycles by the credible violation tests",
    )
    doc.heading("Landscape")
    doc.figure(potential_distribution_figure(data, result, ci=ci), "Potential distribution")
    doc.figure(landscape_graph_figure(data, result), "Landscape graph")
    doc.figure(potential_forest_figure(result, ci=ci), "Lowest and highest potentials")
    states = state_table(result, data, ci)
    shown = pd.concat([states.head(10), states.tail(10)]).drop_duplicates("state")
    doc.table(
        shown.assign(state=shown["state"].map(label)),
        f"States: 10 lowest and 10 highest V (mean, sd, {ci:.0%} interval)",
    )
    flagged = _flagged(evidence)
    if not flagged.empty:
        doc.table(_flagged(evidence, name=label), "Flagged pairs and 3-cycles")
    features = feature_section(result, doc, ci=ci) if has_features(result) else None
    doc.heading("Model checking")
    conv = convergence(result)
    doc.table(_convergence_table(conv.to_dict()), "Convergence (identified quantities)")
    doc.figure(sampler_health_figure(result), "Sampler health")
    doc.figure(ppc_figure(result, seed=seed, ci=ci), "Posterior predictive check")
    doc.heading("Data and settings")
    provenance = {**attrs, "data_states": data.n_states, "data_llms": ", ".join(data.llms)}
    doc.table(_provenance_table(provenance, data))
    summary = {
        "verdict": ev["verdict"],
        "reading": text,
        "evidence": ev,
        "paper": {
            "detailed_balance": db_scatter(data, potential_draws(result).mean()).summary,
            "loops": loop_balance(data).summary,
        },
        "convergence": conv.to_dict(),
        "states": states.to_dict(orient="records"),
        "flagged": flagged.to_dict(orient="records"),
        "provenance": provenance,
        "ci": ci,
    }
    if features is not None:
        summary["features"] = features
    return doc, _clean(summary)


def _provenance_table(provenance: dict[str, Any], data: Transitions) -> pd.DataFrame:
    """The provenance as key/value rows; names (LLMs, unidentified states) shown as labels."""
    shown = {k: str(v) for k, v in provenance.items()}
    shown["data_llms"] = ", ".join(label(name) for name in data.llms)
    if "llm" in provenance:
        shown["llm"] = label(provenance["llm"])
    if "unidentified_states" in provenance:
        try:
            names = [str(s) for s in json.loads(provenance["unidentified_states"])]
        except (TypeError, ValueError):
            names = [str(provenance["unidentified_states"])]
        listed = ", ".join(label(name) for name in names[:5])
        more = (
            f" and {len(names) - 5} more (the report.json summary lists all)"
            if len(names) > 5
            else ""
        )
        shown["unidentified_states"] = f"{len(names)}: {listed}{more}" if names else "none"
    return pd.DataFrame({"key": list(shown), "value": list(shown.values())})


def _flagged(evidence: Verdict, name: Callable[[str], str] = str) -> pd.DataFrame:
    """Flagged pairs and 3-cycles with their states joined by "→"; `name` maps each state name
    (`label` for the document's table, the full name for the JSON summary)."""

    def states(frame: pd.DataFrame, columns: str) -> pd.Series:
        joined = [frame[c].map(name).astype(object) for c in columns]
        return joined[0].str.cat(joined[1:], sep="→")

    parts = []
    if evidence.pairs is not None and len(evidence.pairs):
        p = evidence.pairs[evidence.pairs["flagged"]]
        parts.append(
            pd.DataFrame(
                {
                    "kind": "pair",
                    "states": states(p, "fg"),
                    "mean": p["mean"],
                    "lower": p["lower"],
                    "upper": p["upper"],
                    "lfsr": p["lfsr"],
                }
            )
        )
    if evidence.cycles is not None and len(evidence.cycles):
        c = evidence.cycles[evidence.cycles["flagged"]]
        parts.append(
            pd.DataFrame(
                {
                    "kind": "3-cycle",
                    "states": states(c, "abc"),
                    "mean": c["mean"],
                    "lower": c["lower"],
                    "upper": c["upper"],
                    "lfsr": c["lfsr"],
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["kind", "states", "mean", "lower", "upper", "lfsr"])
    return pd.concat(parts, ignore_index=True)


def _convergence_table(conv: dict[str, Any]) -> pd.DataFrame:
    keys = [
        "method",
        "applicable",
        "ok",
        "chains",
        "draws",
        "rhat_max",
        "ess_bulk_min",
        "ess_tail_min",
        "divergences",
        "bfmi_min",
    ]
    rows = [{"quantity": k, "value": conv.get(k)} for k in keys]
    rows += [{"quantity": "warning", "value": w} for w in conv.get("warnings", [])]
    return pd.DataFrame(rows)


def _clean(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/inf to None, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pd.Timestamp | Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_report(
    result: Any,
    out: str | Path,
    data: Transitions | None = None,
    **options: Any,
) -> dict[str, Path]:
    """Write `out` (HTML), its Markdown twin and the summary `X.json`; returns the paths."""
    doc, summary = build_report(result, data, **options)
    return doc.write(out, summary)
