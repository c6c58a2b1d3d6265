"""Comparing LLMs, laid out: the per-LLM table, the `Comparison` object and its document.

`llm_table(data, tree, ci)` gathers, per LLM, calls, distinct valid states and their discovery
curve, visit entropy, β_m and the downhill fraction on the LLM's own posterior landscape from a
fitted hierarchy (`tree`). `Comparison.to_json()` is the `compare --json` object;
`comparison_document` renders the HTML/Markdown report. Fitting the hierarchy and each LLM's
verdict is `detailed_balance.workflow.compare_llms`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import gammaln

from detailed_balance.data import Transitions
from detailed_balance.data.names import as_names
from detailed_balance.diagnostics import downhill_tally
from detailed_balance.models.hierarchy import (
    interval,
    landscape_correlations,
    odd_one_out,
    temperature_table,
)

from .compare_figures import beta_forest_figure, discovery_figure, landscape_scatter_figure
from .document import Document
from .text import label

# Names an agent may give its pooled "not a valid state" outcome; never counted as discovered.
INVALID_NAMES = frozenset({"invalid", "<invalid>", "__invalid__", "none", "null"})


@dataclass
class Comparison:
    """Everything `compare` reports; `table` has one row per LLM."""

    table: pd.DataFrame
    discovery: dict[str, pd.DataFrame]
    tree: xr.DataTree
    data: Transitions
    ci: float
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # LLM → why it was left out

    def to_json(self) -> dict[str, Any]:
        """The `compare --json` object (shape fixed by issue 5; extra keys are additive)."""
        llms = {}
        for name, row in self.table.iterrows():
            verdict = self.verdicts.get(name, {})
            llms[name] = {
                "calls": float(row["calls"]),
                "distinct_valid": int(row["distinct_valid"]),
                "visit_entropy": _num(row["visit_entropy"]),
                "beta": _triple(row, "beta_"),
                "tau_delta": _triple(row, "tau_delta_"),
                "downhill_fraction": _triple(row, "downhill_"),
                "verdict": verdict.get("verdict", "not tested"),
                "tau_A": verdict.get("tau_A"),
                "reference": bool(row["reference"]),
            }
        tau = self.tree["posterior"]["tau_delta"].mean("llm")
        stats = interval(tau, self.ci)
        return {
            "llms": llms,
            "shared_landscape": {
                "tau_delta": {k: _num(stats[k]) for k in ("mean", "lower", "upper")},
                "odd_one_out": odd_one_out(self.tree, self.ci),
                "reference": self.tree.attrs.get("reference_llm"),
            },
            "landscape_correlation": landscape_correlations(self.tree, self.ci),
            "ci": self.ci,
            "method": self.tree.attrs.get("method"),
            "data_hash": self.data.data_hash(),
            "left_out": dict(self.dropped),
        }


def _num(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None


def _triple(row: pd.Series, prefix: str) -> dict[str, float | None]:
    return {k: _num(row[f"{prefix}{k}"]) for k in ("mean", "lower", "upper")}


# -- exploration numbers from counts ------------------------------------------------------------
def _valid_arrivals(data: Transitions, llm: str) -> pd.Series:
    """Counts of calls landing on each valid state (self steps included), per target."""
    c = data.counts[(data.counts["llm"] == llm) & (data.counts["count"] > 0)]
    c = c[~c["target"].astype(str).str.lower().isin(INVALID_NAMES)]
    return c.groupby("target")["count"].sum()


def discovery_curve(data: Transitions, llm: str, points: int = 60) -> pd.DataFrame:
    """Expected distinct valid states after k calls (rarefaction of the counts): ``calls, distinct``.

    E[S_k] = Σ_s [1 − C(N − n_s, k) / C(N, k)], N = all calls of the LLM (invalid and rejected
    answers included), n_s = calls that landed on state s. Order-free: it is the curve of calls
    taken in random order; the run store's own curve follows the real order.
    """
    arrivals = _valid_arrivals(data, llm).to_numpy(float)
    total = max(float(data.visits.loc[data.visits["llm"] == llm, "visits"].sum()), arrivals.sum())
    total = float(np.round(total))
    ks = np.unique(np.round(np.geomspace(1, max(total, 1), points)))
    if arrivals.size == 0:
        return pd.DataFrame({"calls": ks, "distinct": np.zeros(len(ks))})
    rest = total - arrivals[None, :]
    k = ks[:, None]
    with np.errstate(invalid="ignore"):
        log_miss = (
            gammaln(rest + 1) - gammaln(rest - k + 1) - gammaln(total + 1) + gammaln(total - k + 1)
        )
    miss = np.where(rest >= k, np.exp(log_miss), 0.0)
    return pd.DataFrame({"calls": ks, "distinct": (1.0 - miss).sum(axis=1)})


def visit_entropy(data: Transitions, llm: str) -> float:
    """Shannon entropy (nats) of where the LLM's valid answers land; e^H = effective #states."""
    arrivals = _valid_arrivals(data, llm).to_numpy(float)
    if arrivals.sum() == 0:
        return float("nan")
    p = arrivals / arrivals.sum()
    return float(-(p * np.log(p)).sum())


def downhill_draws(data: Transitions, tree: xr.DataTree, llm: str, threshold: float = 0.05):
    """Per posterior draw: share of moves with T > threshold that go to lower V_llm."""
    moves = data.moves(llm)
    moves = moves[moves["rate"] > threshold]
    v = tree["posterior"]["V_llm"].sel(llm=llm).stack(sample=("chain", "draw"))
    v = v.transpose("sample", "state")
    pos = pd.Index(as_names(v["state"]), dtype=object)
    src = pos.get_indexer(moves["source"].astype(str))
    dst = pos.get_indexer(moves["target"].astype(str))
    values = v.to_numpy()
    ok = (src >= 0) & (dst >= 0)
    if not ok.any():
        return np.full(values.shape[0], np.nan)
    vs, vd = values[:, src[ok]], values[:, dst[ok]]
    drop = np.where(np.isfinite(vs) & np.isfinite(vd), vd - vs, np.nan)
    tally = downhill_tally(drop)
    return tally["down"] / np.maximum(tally["known"], 1)


# -- the per-LLM table -------------------------------------------------------------------------
def llm_table(
    data: Transitions,
    tree: xr.DataTree,
    ci: float,
    discovery: dict[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The per-LLM table of a fitted hierarchy `tree` and each LLM's discovery curve.

    discovery: real discovery curves (``calls, distinct`` per LLM, e.g. from the run store);
    default: rarefaction curves from the counts.
    """
    table = temperature_table(tree, ci)
    rows, curves = [], {}
    for name in data.llms:  # a loop over LLMs (a handful)
        given = (discovery or {}).get(name)
        curves[name] = given if given is not None else discovery_curve(data, name)
        down = downhill_draws(data, tree, name)
        if np.isfinite(down).any():
            lo, hi = np.nanquantile(down, [(1 - ci) / 2, 1 - (1 - ci) / 2])
            mean = float(np.nanmean(down))
        else:  # no move of this LLM has both ends in the landscape
            lo = hi = mean = np.nan
        rows.append(
            {
                "llm": name,
                "calls": float(data.visits.loc[data.visits["llm"] == name, "visits"].sum()),
                "distinct_valid": int((_valid_arrivals(data, name) > 0).sum()),
                "visit_entropy": visit_entropy(data, name),
                "downhill_mean": mean,
                "downhill_lower": float(lo),
                "downhill_upper": float(hi),
            }
        )
    return pd.DataFrame(rows).set_index("llm").join(table), curves


# -- the document --------------------------------------------------------------------------------
def comparison_reading(summary: dict[str, Any]) -> str:
    """A few plain sentences: who is odd, who runs hotter, whether landscapes agree (LLM names
    shown as labels: whitespace collapsed, cut to `LABEL_CHARS`)."""
    llms = summary["llms"]
    ref = summary["shared_landscape"]["reference"]
    odd = summary["shared_landscape"]["odd_one_out"]
    ref_label = label(ref)
    sharing = {k: v for k, v in llms.items() if k != odd}
    parts = []
    if odd:
        tau = llms[odd]["tau_delta"]
        parts.append(
            f"{label(odd)} does not share the landscape of the others: its deviation scale τ_δ is "
            f"{tau['mean']:.2f} [{tau['lower']:.2f}, {tau['upper']:.2f}], so its temperature "
            f"relative to the shared landscape is not meaningful."
        )
    else:
        parts.append(
            "All LLMs are consistent with one shared landscape (no deviation scale stands out)."
        )
    ranked = sorted(
        (k for k in sharing if k != ref and sharing[k]["beta"]["mean"] is not None),
        key=lambda k: sharing[k]["beta"]["mean"],
    )
    for name in ranked:
        beta = sharing[name]["beta"]
        if beta["lower"] > 1:
            how = f"colder than {ref_label} (descends more steeply)"
        elif beta["upper"] < 1:
            how = f"hotter than {ref_label} (more random)"
        else:
            how = f"at a temperature indistinguishable from {ref_label}"
        parts.append(
            f"{label(name)} runs {how}: β = {beta['mean']:.2f} [{beta['lower']:.2f}, {beta['upper']:.2f}]."
        )
    verdicts = {k: v["verdict"] for k, v in llms.items() if v["verdict"] != "not tested"}
    if verdicts:
        parts.append(
            "Detailed balance per LLM: "
            + ", ".join(f"{label(k)} {v}" for k, v in verdicts.items())
            + "."
        )
    return " ".join(parts)


def comparison_document(comparison: Comparison) -> tuple[Any, dict[str, Any]]:
    """The HTML/Markdown document of a comparison and its JSON summary."""
    summary = comparison.to_json()
    ci = comparison.ci
    data = comparison.data
    doc = Document(
        "Comparing LLMs",
        f"{len(data.llms)} LLMs, {data.n_states} states, "
        f"{int(data.counts['count'].sum())} counted transitions; hierarchical model "
        f"({summary['method']}), reference {label(summary['shared_landscape']['reference'])}, "
        f"{ci:.0%} intervals",
    )
    doc.reading(comparison_reading(summary))
    for name, why in comparison.dropped.items():
        doc.text(f"Left out: LLM {label(name)} ({why})")
    doc.heading("Per LLM")
    rows = []
    for name, entry in summary["llms"].items():
        rows.append(
            {
                "LLM": label(name) + (" (ref)" if entry["reference"] else ""),
                "calls": int(entry["calls"]),
                "distinct valid": entry["distinct_valid"],
                "visit entropy": entry["visit_entropy"],
                "β": _text(entry["beta"]),
                "τ_δ": _text(entry["tau_delta"]),
                "downhill fraction": _text(entry["downhill_fraction"]),
                "verdict": entry["verdict"],
                "τ_A": _text(entry["tau_A"]),
            }
        )
    doc.table(pd.DataFrame(rows), f"mean [{ci:.0%} interval]")
    doc.heading("Do the LLMs share a landscape?")
    corr = [
        {"pair": _pair_label(k, summary["llms"]), "r": _text(v)}
        for k, v in summary["landscape_correlation"].items()
    ]
    doc.table(pd.DataFrame(corr), "Pearson r of the posterior landscapes μ + δ over shared states")
    doc.figure(landscape_scatter_figure(comparison.tree), "Landscapes of LLM pairs")
    doc.figure(
        beta_forest_figure(temperature_table(comparison.tree, ci), ci),
        "Inverse temperatures β relative to the reference",
    )
    doc.heading("Exploration")
    doc.figure(discovery_figure(comparison.discovery), "Discovery curves (rarefaction)")
    doc.text(
        "Discovery curves are the expected number of distinct valid states after k calls taken "
        "in random order (rarefaction of the counts); visit entropy is the entropy (nats) of "
        "where valid answers land."
    )
    doc.heading("Provenance")
    doc.table(
        pd.DataFrame(
            [
                {"key": k, "value": str(comparison.tree.attrs.get(k, ""))}
                for k in ("model", "model_config", "sampler", "method", "seed", "created")
            ]
            + [{"key": "data_hash", "value": data.data_hash()}]
        )
    )
    return doc, summary


def _pair_label(key: str, llms: dict[str, Any]) -> str:
    """A landscape-correlation key "a|b" with each LLM name as a label (names may hold "|")."""
    for name in llms:
        rest = key[len(name) + 1 :]
        if key.startswith(name + "|") and rest in llms:
            return f"{label(name)} | {label(rest)}"
    return label(key)


def _text(value: dict | None) -> str:
    if not value or value.get("mean") is None:
        return "–"
    return f"{value['mean']:.2f} [{value['lower']:.2f}, {value['upper']:.2f}]"
