"""The verdict: ``holds`` / ``violated`` / ``inconclusive`` from an equilibrium and a
non-equilibrium fit of the same data (the rule is in `bayes_verdict`'s docstring), and
`same_data` (does a data set match the one a fit carries)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._fitdata import (
    as_tree,
    fit_arrays,
)
from .bayes import (
    CI,
    FDR_Q,
    LOO_MIN_DIFF,
    LOO_SE_FACTOR,
    LOOP_PPC_ALPHA,
    PPC_ALPHA,
    SEVERE_DIVERGENT_FRACTION,
    SEVERE_RHAT,
    bayes_downhill,
    bayes_potential_spread,
    cycle_violations,
    loo_compare,
    pair_violations,
    tau_a_summary,
)
from .convergence import MCMC_METHODS, convergence
from .kernel_ppc import kernel_ppc
from .ppc import (
    loop_chi2_ppc,
    ppc_pairs,
)

# -- verdict ------------------------------------------------------------------------------
NO_CYCLE_REASON = (
    "no 3-cycle observed (no three states with all six directed edges seen): the loop tests "
    "have nothing to test, so the verdict rests on the pair-level tests, the pair-count PPC "
    "and LOO"
)


@dataclass
class Verdict:
    """``holds`` / ``violated`` / ``inconclusive`` with the numbers behind it.

    `evidence` is the ``bayes`` JSON object of ``check --posterior --json``; `reasons` says in
    words which signals fired; `pairs` / `cycles` are the per-item tables.
    """

    verdict: str
    evidence: dict[str, Any]
    reasons: list[str] = field(default_factory=list)
    pairs: pd.DataFrame | None = None
    cycles: pd.DataFrame | None = None

    def to_json(self) -> str:
        return json.dumps(self.evidence)


def bayes_verdict(
    eq_result: Any,
    neq_result: Any,
    *,
    fdr: float = FDR_Q,
    ci: float = CI,
    seed: int | None = 0,
    loop_alpha: float = LOOP_PPC_ALPHA,
    ppc_alpha: float = PPC_ALPHA,
    check_convergence: bool = True,
) -> Verdict:
    """One verdict on detailed balance from an equilibrium and a non-equilibrium fit.

    Lines of evidence against detailed balance:

    1. cycles: ≥ 1 3-cycle whose loop affinity is flagged at Bayesian FDR `fdr` (neq fit);
    2. loops PPC: the paper's loop χ² has posterior predictive p < `loop_alpha` under the
       equilibrium fit;
    3. pair fit: the equilibrium fit's deviance PPC has p < `loop_alpha` (it cannot
       reproduce the pair counts);
    4. LOO: elpd_neq − elpd_eq > max(4, 2 SE), counted only when both fits are MCMC: PSIS
       needs draws from the posterior, and on MAP/Laplace draws the difference was biased
       towards the non-equilibrium model (+2.5 ± 1 on reversible data). It is always reported.

    ``violated`` when two agree and at least one is loop-specific (1 or 2; with no 3-cycle in
    the data: LOO and pair fit, and some pair flagged); ``holds`` when none fires, no pair is
    flagged, the equilibrium fit reproduces the pair counts (deviance PPC p ≥ `ppc_alpha`)
    and, for a kernel-likelihood equilibrium fit, its per-state outcome counts (`kernel_ppc`:
    global p ≥ `ppc_alpha`); ``inconclusive`` otherwise (a single signal, a misfitting
    equilibrium model without loop evidence, or MCMC badly unconverged: R-hat > 1.05 or > 1%
    divergent draws; milder problems only warn). The kernel PPC is a check of the equilibrium
    model, not a line of evidence against detailed balance: a failing one withholds ``holds``
    (with a reason), it never counts towards ``violated`` (over-dispersed calls fail it
    without any violation). It is ``evidence["kernel_ppc"]``, None for pair-likelihood fits,
    whose verdict is unchanged. Data whose pairs form a forest (``cycle_rank`` 0: chains,
    stars, single pairs) are always ``inconclusive``: there every kernel satisfies detailed
    balance, so neither answer has evidence behind it. Data with loops but no 3-cycle
    (``n_cycles`` 0: loop p-value None, nothing to flag) say so first in `reasons`
    (`NO_CYCLE_REASON`); their verdict rests on the pair-level tests, the PPC and LOO.
    """
    rng = np.random.default_rng(seed)
    pairs = pair_violations(neq_result, fdr, ci=ci)
    cycles = cycle_violations(neq_result, fdr, ci=ci)
    ppc = ppc_pairs(eq_result, rng)
    loops = loop_chi2_ppc(eq_result, rng)
    loo = loo_compare(eq_result, neq_result)
    # After the other checks, so a pair fit's random stream (and verdict) is what it was.
    kernel = kernel_ppc(eq_result, seed=rng)
    kernel_fails = kernel is not None and kernel["p_value"] is not None
    kernel_fails = kernel_fails and kernel["p_value"] < ppc_alpha
    n_cycles = len(cycles)
    flagged_cycles = int(cycles["flagged"].sum())
    flagged_pairs = int(pairs["flagged"].sum())
    diff, se = loo["elpd_diff"], loo["elpd_se"]
    eq_arrays = fit_arrays(eq_result)
    methods = {
        "equilibrium": eq_arrays.method,
        "nonequilibrium": fit_arrays(neq_result).method,
    }
    loo_counted = all(m in MCMC_METHODS for m in methods.values())
    loo_prefers_neq = diff is not None and diff > max(LOO_MIN_DIFF, LOO_SE_FACTOR * se)
    signals = {
        "cycles": flagged_cycles > 0,
        "loops_ppc": loops["p_value"] is not None and loops["p_value"] < loop_alpha,
        "pair_fit": ppc["p_value"] < loop_alpha,
        "loo": loo_counted and loo_prefers_neq,
    }
    reasons = []
    if signals["cycles"]:
        reasons.append(
            f"{flagged_cycles} of {n_cycles} 3-cycles have a loop affinity of credible sign "
            f"(Bayesian FDR ≤ {fdr})"
        )
    if signals["loops_ppc"]:
        reasons.append(
            f"loop χ²/ndf {loops['observed_chi2_ndf']:.2f} is beyond equilibrium replicates "
            f"(posterior predictive p = {loops['p_value']:.3g})"
        )
    if signals["pair_fit"]:
        reasons.append(
            f"the equilibrium fit cannot reproduce the pair counts (deviance PPC p = "
            f"{ppc['p_value']:.3g})"
        )
    if kernel_fails:
        reasons.append(
            f"the equilibrium kernel fit cannot reproduce the per-state outcome counts "
            f"(posterior predictive p = {kernel['p_value']:.3g}; {kernel['flagged']} of "
            f"{kernel['n_states']} prompt states flagged at FDR {kernel['alpha']:g})"
        )
    elif kernel is not None and kernel["flagged"]:
        reasons.append(
            f"{kernel['flagged']} of {kernel['n_states']} prompt states' outcome counts are "
            f"beyond the kernel fit's replicates (FDR {kernel['alpha']:g}; kernel PPC p = "
            f"{kernel['p_value']:.3g} overall)"
        )
    if signals["loo"]:
        reasons.append(f"LOO prefers non-equilibrium: ELPD difference {diff:.1f} ± {se:.1f}")
    elif loo_prefers_neq:
        reasons.append(
            f"LOO difference {diff:.1f} ± {se:.1f} not counted: PSIS-LOO on approximate "
            f"({methods['equilibrium']}/{methods['nonequilibrium']}) draws"
        )
    fired = sum(signals.values())
    loop_specific = signals["cycles"] or signals["loops_ppc"]
    if n_cycles:
        violated = fired >= 2 and loop_specific
    else:
        violated = signals["loo"] and signals["pair_fit"] and flagged_pairs > 0
    converged = True
    conv = {}
    if check_convergence:
        # Judge each fit on what the verdict uses: V (PPCs, downhill) from the equilibrium
        # fit; loop affinities and τ_A from the non-equilibrium one, whose V mixes slowly
        # along the V/A ridge (A's gradient part trades with V) without touching loops.
        uses = {"equilibrium": ("V", "scalars"), "nonequilibrium": ("loop_affinity", "scalars")}
        for name, res in (("equilibrium", eq_result), ("nonequilibrium", neq_result)):
            report = convergence(res, include=uses[name])
            conv[name] = report.to_dict()
            if report.applicable and _badly_unconverged(report):
                converged = False
                reasons.append(f"{name} fit did not converge: {report.warnings[0]}")
    cycle_rank = eq_arrays.cycle_rank()
    if cycle_rank == 0:
        # On a forest every drive A is a gradient (it can be moved into V): the data hold no
        # loop, so neither "holds" nor "violated" is supported, whatever the other signals say.
        verdict = "inconclusive"
        reasons.insert(
            0,
            "the observed pairs form a tree (no cycle of states): every kernel on a tree "
            "satisfies detailed balance, so these data cannot show a violation nor support "
            "it; collect until states close loops",
        )
    else:
        if n_cycles == 0:
            # Loops exist, but none is a 3-cycle with all six edges seen: the loop tests have
            # nothing to test (loop p null, 0 of 0 flagged), which is no evidence either way.
            reasons.insert(0, NO_CYCLE_REASON)
        if violated and converged:
            verdict = "violated"
        elif (
            fired == 0
            and flagged_pairs == 0
            and ppc["p_value"] >= ppc_alpha
            and not kernel_fails
            and converged
        ):
            verdict = "holds"
            reasons.append(
                f"no {'3-cycle or ' if n_cycles else ''}pair of credible sign, LOO does not "
                "prefer non-equilibrium, equilibrium reproduces pair counts "
                f"(PPC p = {ppc['p_value']:.2f})"
                + (
                    f" and per-state outcome counts (kernel PPC p = {kernel['p_value']:.2f})"
                    if kernel is not None and kernel["p_value"] is not None
                    else ""
                )
            )
        else:
            verdict = "inconclusive"
    if verdict == "inconclusive" and cycle_rank > 0:
        if fired == 1:
            reasons.append("only one line of evidence against detailed balance")
        elif fired >= 2 and not loop_specific:
            reasons.append(
                "the equilibrium model fails, but no loop-level evidence (over-dispersed "
                "counts can do that without any violation of detailed balance)"
            )
        if loop_alpha <= ppc["p_value"] < ppc_alpha:
            reasons.append(
                f"the equilibrium model misfits the pair counts (PPC p = {ppc['p_value']:.3g})"
            )
        if flagged_pairs and not fired:
            reasons.append(f"{flagged_pairs} pairs flagged but no loop-level evidence")
    downhill = bayes_downhill(eq_result, ci=ci)
    evidence = {
        "verdict": verdict,
        "tau_A": tau_a_summary(neq_result, ci),
        "elpd_diff": diff,
        "elpd_se": se,
        "ppc_p": ppc["p_value"],
        "kernel_ppc": kernel,
        "loop_ppc_p": loops["p_value"],
        "loop_chi2_ndf": loops["observed_chi2_ndf"],
        "flagged_pairs": flagged_pairs,
        "flagged_cycles": flagged_cycles,
        "n_pairs": int(len(pairs)),
        "n_cycles": n_cycles,
        "cycle_rank": cycle_rank,
        "fdr": fdr,
        "ci": ci,
        "downhill_fraction": {k: downhill[k] for k in ("mean", "lower", "upper")},
        "downhill_moves": downhill["n"],
        "potential_spread": bayes_potential_spread(eq_result, ci=ci),
        "high_pareto_k": loo["high_pareto_k"],
        "methods": methods,
        "loo_counted": loo_counted,
        "convergence": conv or None,
        "reasons": reasons,
    }
    return Verdict(verdict, evidence, reasons, pairs, cycles)


def _badly_unconverged(report: Any) -> bool:
    """Bad enough to withhold a verdict: R-hat > 1.05 or > 1% divergent draws.

    Milder problems (R-hat 1.01–1.05, low ESS) are warned about by `convergence` but leave the
    verdict standing: they blur intervals slightly, they do not flip signs of loop affinities.
    """
    rhat = report.rhat_max
    draws = max(report.n_chains * report.n_draws, 1)
    divergent = (report.n_divergent or 0) / draws
    return (rhat is not None and rhat > SEVERE_RHAT) or divergent > SEVERE_DIVERGENT_FRACTION


def same_data(data: Any, fitted: Any) -> bool:
    """True when DATA holds the same counts and visits as the fit, for the LLM it fitted."""
    stored = getattr(fitted, "data", None)
    if stored is None:
        return True  # a bare DataTree: nothing to compare against
    if data.data_hash() == stored.data_hash():
        return True
    llm = as_tree(fitted).attrs.get("llm")
    try:
        return bool(llm) and data.select(llm).data_hash() == stored.select(llm).data_hash()
    except ValueError:  # DataError: that LLM is not in DATA
        return False
