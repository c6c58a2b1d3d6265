"""The evidence table of a detailed-balance verdict: one list of rows, shown two ways; and the
paper's checks as text.

`evidence_rows(evidence)` are the (quantity, value) rows of the ``bayes`` object (the
`evidence` of a `diagnostics.Verdict`); `evidence_table` is them as a DataFrame (the report's
"Evidence" table) and `format_bayes` as text (what ``check --posterior`` and the demo print).
`format_summary` is the text of the ``check --json`` object (the paper's checks).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from detailed_balance.diagnostics import CI, FDR_Q


def _interval_text(value: dict | None) -> str:
    if not value or value.get("mean") is None:
        return "–"
    return f"{value['mean']:.3g} [{value['lower']:.3g}, {value['upper']:.3g}]"


def _num(value: Any, fmt: str = ".3g") -> str:
    return "–" if value is None else format(value, fmt)


def evidence_rows(evidence: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows of the evidence table: verdict, τ_A, ELPD, PPCs, flags, downhill, spread."""
    ci = int(round(100 * evidence.get("ci", CI)))
    fdr = evidence.get("fdr", FDR_Q)
    return [
        ("verdict", str(evidence.get("verdict", "–")).upper()),
        (f"τ_A (mean [{ci}% interval])", _interval_text(evidence.get("tau_A"))),
        (
            "ELPD non-eq − eq (± SE)",
            f"{_num(evidence.get('elpd_diff'), '.2f')} ± {_num(evidence.get('elpd_se'), '.2f')}",
        ),
        ("pair-count PPC p (deviance, eq)", _num(evidence.get("ppc_p"), ".3f")),
        ("per-state outcome PPC p (kernel)", _kernel_ppc_text(evidence.get("kernel_ppc"))),
        (
            "loop χ²/ndf, PPC p (eq)",
            "– (no 3-cycle observed)"
            if evidence.get("n_cycles") == 0
            else f"{_num(evidence.get('loop_chi2_ndf'))}, "
            f"p = {_num(evidence.get('loop_ppc_p'), '.3f')}",
        ),
        (
            f"flagged 3-cycles (FDR {fdr})",
            f"{evidence.get('flagged_cycles')} of {evidence.get('n_cycles', '?')}",
        ),
        (
            f"flagged pairs (FDR {fdr})",
            f"{evidence.get('flagged_pairs')} of {evidence.get('n_pairs', '?')}",
        ),
        ("downhill fraction (T > 0.05)", _interval_text(evidence.get("downhill_fraction"))),
        ("spread σ of V (bounded, ≥2 visits)", _interval_text(evidence.get("potential_spread"))),
    ]


def _kernel_ppc_text(check: dict[str, Any] | None) -> str:
    """The kernel PPC's global p and flagged states ("–" for pair fits, which have none)."""
    if not check:
        return "– (pair likelihood)"
    return (
        f"{_num(check.get('p_value'), '.3f')}; {check.get('flagged', 0)} of "
        f"{check.get('n_states', '?')} states flagged"
    )


def evidence_table(evidence: dict[str, Any]) -> pd.DataFrame:
    """`evidence_rows` as a ``quantity, value`` table (the report's "Evidence" section)."""
    return pd.DataFrame(evidence_rows(evidence), columns=["quantity", "value"])


def format_bayes(evidence: dict[str, Any]) -> str:
    """`evidence_rows` as text, then the reasons (what ``check --posterior`` prints)."""
    rows = evidence_rows(evidence)
    width = max(len(k) for k, _ in rows)
    lines = ["Bayesian detailed-balance tests"]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    lines += [f"  - {r}" for r in evidence.get("reasons", [])]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_summary(summary: dict[str, Any]) -> str:
    """A readable table of the check summaries."""
    titles = {
        "detailed_balance": "detailed-balance scatter (pairs seen ≥2× each way)",
        "loops": "3-cycle loop balance",
        "downhill": "downhill fraction (T > 0.05)",
        "potential_fit": "Gaussian fit of V (states sampled ≥2×)",
        "action": "action size (value vs 1/(√π σ))",
    }
    lines = []
    for key, title in titles.items():
        values = summary.get(key)
        cells = (
            "no data" if values is None else ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        )
        lines.append(f"{title:<48} {cells}")
    return "\n".join(lines)
