"""Comparing LLMs as a job: fit the hierarchy over all LLMs, then each LLM's own verdict.

`compare_llms(data)` fits `HierarchicalModel` to all LLMs at once, gathers the per-LLM table
(`reports.compare.llm_table`: calls, distinct valid states, discovery curve, visit entropy, β_m,
downhill fraction) and (optionally) the detailed-balance verdict with τ_A from that LLM's own
equilibrium / non-equilibrium fits (`bayes_check`). The result is a `reports.compare.Comparison`
(`to_json()` is the ``compare --json`` object; `comparison_document` lays it out).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from detailed_balance.data import DataError, Transitions
from detailed_balance.models import pair_data
from detailed_balance.models.hierarchy import HierarchicalModel
from detailed_balance.reports.compare import Comparison, llm_table
from detailed_balance.reports.text import label
from detailed_balance.sampling import sample

from .verdict import bayes_check


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
    detailed-balance verdict (`bayes_check`; "auto" (MAP + Laplace, calibrated) by default,
    "nuts" for the final word; ADVI underestimates τ_A), or None to skip verdicts. discovery:
    real discovery curves (``calls, distinct`` per LLM, e.g. from the run store); default:
    rarefaction curves from the counts.
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
    table, curves = llm_table(data, tree, ci, discovery)
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
    return bayes_check(data, method=method, seed=seed, ci=ci, draws=500, tune=500, chains=2)
