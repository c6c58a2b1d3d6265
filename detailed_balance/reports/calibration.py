"""The calibration section: what `workflow.calibrate` measured on replicates of the user's design,
laid out as text, a table and the power-vs-drive figure (numbers only; nothing is computed
here beyond formatting).

`calibration_reading(summary)` is the one-sentence reading ("with data like yours, a violation
of loop affinity ≈ 1.4 (drive 1) is detected 100% of the time; false alarms 0/40"),
`calibration_text(summary)` the terminal summary, `power_figure(summary)` the figure,
`calibration_section(doc, summary, table)` appends the section to a `Document`, and
`calibration_document(summary, table)` is the standalone ``calibration.html``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .document import Document
from .figures import FLAG, MAIN, _figure


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _interval(entry: dict[str, Any]) -> str:
    if entry.get("rate") is None:
        return "no replicates"
    return (
        f"{round(entry['rate'] * entry['n'])}/{entry['n']} = {_pct(entry['rate'])} "
        f"[{_pct(entry['lower'])}, {_pct(entry['upper'])}]"
    )


def _drive_words(entry: dict[str, Any]) -> str:
    loop = entry.get("mean_abs_loop_affinity")
    size = f"drive {entry['drive']:g}"
    return f"loop affinity ≈ {loop:.2g} ({size})" if loop is not None else size


def calibration_reading(summary: dict[str, Any]) -> str:
    """One sentence: the smallest drive detected ≥ 80% of the time (or the best power seen)
    and the false alarms."""
    false = summary["false_alarm"]
    alarms = (
        f"false alarms {round(false['rate'] * false['n'])}/{false['n']}"
        if false.get("rate") is not None
        else "no reversible replicate finished"
    )
    power = [p for p in summary.get("power", []) if p.get("rate") is not None]
    if not power:
        return f"With data like yours: {alarms} (no driven replicates)."
    target = summary.get("min_detectable_drive")
    if target is not None:
        entry = next(p for p in power if p["drive"] == target)
        return (
            f"With data like yours, a violation of {_drive_words(entry)} is detected "
            f"{_pct(entry['rate'])} of the time; {alarms}."
        )
    best = max(power, key=lambda p: p["rate"])
    return (
        f"With data like yours, no drive tried is detected 80% of the time (the largest power "
        f"is {_pct(best['rate'])}, at {_drive_words(best)}); {alarms}."
    )


def calibration_text(summary: dict[str, Any]) -> str:
    """The terminal summary of a calibration (several lines)."""
    cov = summary["coverage"]
    ci = summary.get("ci", 0.9)
    lines = [
        calibration_reading(summary),
        f"  replicates finished: {summary['replicates']} ({summary.get('method', '?')} refits"
        f"{', ' + str(summary['resumed']) + ' from an earlier run' if summary.get('resumed') else ''})",
        f"  false alarm (violated on reversible replicates): {_interval(summary['false_alarm'])}",
    ]
    for entry in summary.get("power", []):
        lines.append(f"  power at {_drive_words(entry)}: {_interval(entry)}")
    lines.append(
        f"  coverage of {ci:.0%} intervals: V {_pct(cov['V'])}, loop affinities "
        f"{_pct(cov['loop_affinity'])}"
    )
    for failed in summary.get("failed", []):
        lines.append(
            f"  FAILED replicate {failed['replicate']} (drive {failed['drive']:g}): "
            f"{failed['error']}"
        )
    for note in summary.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def power_figure(summary: dict[str, Any]) -> Figure:
    """Power (share of ``violated``) against drive size, with the binomial intervals; the
    reversible replicates' false-alarm rate at drive 0."""
    fig, ax = _figure(6.0, 4.0)
    entries = [{"drive": 0.0, **summary["false_alarm"]}, *summary.get("power", [])]
    entries = [e for e in entries if e.get("rate") is not None]
    if entries:
        x = np.array([e["drive"] for e in entries])
        y = np.array([e["rate"] for e in entries])
        lo = y - np.array([e["lower"] for e in entries])
        hi = np.array([e["upper"] for e in entries]) - y
        ax.errorbar(x, y, yerr=[lo, hi], color=MAIN, marker="o", capsize=3, lw=1.5)
    ax.axhline(0.8, color=FLAG, ls="--", lw=1, label="80% power")
    ax.axhline(0.0, color="0.7", lw=0.8)
    ax.set_xlabel("drive size (RMS antisymmetric affinity per pair on cycles)")
    ax.set_ylabel("share of replicates judged 'violated'")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(loc="lower right", frameon=False)
    return fig


def calibration_section(doc: Document, summary: dict[str, Any], table: pd.DataFrame) -> None:
    """Append the calibration section (reading, table, figure) to `doc`."""
    doc.heading("Calibration on your design")
    doc.reading(calibration_reading(summary))
    cov = summary["coverage"]
    doc.text(
        f"{summary['replicates']} replicates of this data set's design (its states, calls per "
        f"state and possible moves), drawn from the fitted equilibrium posterior and refitted "
        f"exactly as the fit was ({summary.get('method', '?')}); driven replicates add a known "
        f"antisymmetric drive on the cycles. Coverage of the {summary.get('ci', 0.9):.0%} "
        f"intervals: V {_pct(cov['V'])} (bounded states, reversible replicates), loop "
        f"affinities {_pct(cov['loop_affinity'])}."
    )
    if len(table):
        doc.table(
            table.rename(
                columns={
                    "rate": "violated rate",
                    "lower": "95% lower",
                    "upper": "95% upper",
                    "mean_abs_loop": "mean |loop affinity|",
                }
            ),
            caption="Per drive size (0 = reversible: the rate is the false-alarm rate)",
        )
    doc.figure(power_figure(summary), "Power of the verdict against drive size")
    if summary.get("failed"):
        doc.text(
            f"{len(summary['failed'])} replicate(s) failed twice and are not counted: "
            + "; ".join(f"{f['replicate']} (drive {f['drive']:g})" for f in summary["failed"])
        )


def calibration_document(summary: dict[str, Any], table: pd.DataFrame) -> Document:
    """The standalone calibration report (``calibration.html``)."""
    doc = Document(
        "Calibration on your design",
        f"{summary.get('states', '?')} states, {summary.get('pairs', '?')} pairs, "
        f"{summary.get('calls', '?')} calls; {summary.get('model', '')} model, "
        f"{summary.get('likelihood', '')} likelihood; replicate kernels from the "
        f"{summary.get('kernel_from', '')}",
    )
    calibration_section(doc, summary, table)
    return doc
