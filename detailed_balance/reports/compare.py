"""Comparing LLMs: exploration numbers, the hierarchical fit and per-LLM verdicts, as one object.

`compare_llms(data)` fits `HierarchicalModel` to all LLMs at once and, per LLM, computes calls,
distinct valid states and their discovery curve, visit entropy, β_m, the downhill fraction on the
LLM's own posterior landscape and (optionally) the detailed-balance verdict with τ_A from that
LLM's own equilibrium / non-equilibrium fits. `Comparison.to_json()` is the `compare --json`
object; `comparison_document` renders the HTML/Markdown report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import gammaln

from detailed_balance.data import Transitions
from detailed_balance.data.names import as_names
from detailed_balance.models.hierarchy import (
    HierarchicalModel,
    interval,
    landscape_correlations,
    odd_one_out,
    sample,
    temperature_table,
)

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
    known = np.isfinite(vs) & np.isfinite(vd)
    down = (vd < vs) & known
    return down.sum(axis=1) / np.maximum(known.sum(axis=1), 1)


# -- the whole comparison --------------------------------------------------------------------
def compare_llms(
    data: Transitions,
    *,
    method: str = "nuts",
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 1,
    ci: float = 0.9,
    model_config: dict[str, Any] | None = None,
    verdict_method: str | None = "auto",
    progressbar: bool = False,
    discovery: dict[str, pd.DataFrame] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Comparison:
    """Fit the hierarchy over all LLMs and gather the per-LLM table.

    verdict_method: how each LLM's own equilibrium / non-equilibrium pair is fitted for its
    detailed-balance verdict (`diagnostics.bayes_check`; "auto" (MAP + Laplace, calibrated) by default,
    "nuts" for the final word; ADVI underestimates τ_A), or None to skip verdicts. discovery: real discovery curves (``calls, distinct`` per
    LLM, e.g. from the run store); default: rarefaction curves from the counts.
    """
    data, dropped = usable_llms(data)
    for name, why in dropped.items():
        log(f"leaving out LLM {label(name)}: {why}")
    model = HierarchicalModel(model_config)
    log(f"fitting the hierarchical model to {len(data.llms)} LLMs ({method}) ...")
    tree = sample(
        model,
        data,
        method=method,
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        progressbar=progressbar,
    )
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
    table = pd.DataFrame(rows).set_index("llm").join(table)
    verdicts = {}
    if verdict_method is not None:
        for name in data.llms:
            log(f"detailed-balance verdict for {name} ({verdict_method}) ...")
            verdicts[name] = llm_verdict(data.select(name), verdict_method, seed, ci)
    return Comparison(table, curves, tree, data, ci, verdicts, dropped)


def usable_llms(data: Transitions) -> tuple[Transitions, dict[str, str]]:
    """The data of the LLMs that have a modelled pair, and why each other LLM was left out.

    An LLM whose answers were all invalid (every move into the pooled INVALID state) or only
    self-steps has no potential difference to estimate; it is reported, not fitted. Raises
    `DataError` when fewer than two LLMs remain.
    """
    from detailed_balance.data import DataError
    from detailed_balance.models import pair_data

    dropped = {}
    for name in data.llms:
        try:
            pair_data(data, name)
        except DataError as exc:
            reason = str(exc)
            if data.origin and reason.startswith(f"{data.origin}: "):
                reason = reason[len(data.origin) + 2 :]
            dropped[name] = reason.removeprefix("not enough data for a potential: ")
    kept = [name for name in data.llms if name not in dropped]
    if len(kept) < 2:
        why = "; ".join(f"{label(k)}: {v}" for k, v in dropped.items())
        raise DataError(
            f"compare needs at least two LLMs with a pair of states seen (with known visits at "
            f"both ends); {len(kept)} of {len(data.llms)} have one ({why})."
        )
    if not dropped:
        return data, dropped
    counts = data.counts[data.counts["llm"].isin(kept)].reset_index(drop=True)
    visits = data.visits[data.visits["llm"].isin(kept)].reset_index(drop=True)
    return Transitions(counts, visits, data.scores, data.origin, data.convention), dropped


def llm_verdict(data: Transitions, method: str, seed: int, ci: float) -> dict[str, Any]:
    """One LLM's `bayes` evidence (verdict, τ_A, ...) from its own eq/non-eq fits."""
    from detailed_balance.diagnostics import bayes_check

    try:
        return bayes_check(data, method=method, seed=seed, ci=ci, draws=500, tune=500, chains=2)
    except ImportError as exc:  # the single-LLM models are not installed in this checkout
        return {"verdict": "not tested", "tau_A": None, "reasons": [f"no model: {exc}"]}


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
    from . import figures
    from .document import Document

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
    doc.figure(figures.landscape_scatter_figure(comparison.tree), "Landscapes of LLM pairs")
    doc.figure(
        figures.beta_forest_figure(temperature_table(comparison.tree, ci), ci),
        "Inverse temperatures β relative to the reference",
    )
    doc.heading("Exploration")
    doc.figure(figures.discovery_figure(comparison.discovery), "Discovery curves (rarefaction)")
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
