"""Diagnostics: the paper's detailed-balance checks and the Bayesian tests."""

from ._fitdata import FitError
from .bayes import (
    Verdict,
    bayes_check,
    bayes_downhill,
    bayes_fdr,
    bayes_potential_spread,
    bayes_verdict,
    cycle_violations,
    format_bayes,
    loo_compare,
    loop_chi2_ppc,
    pair_violations,
    ppc_pairs,
    same_data,
)
from .convergence import ConvergenceReport, ConvergenceWarning, convergence
from .paper import (
    Check,
    action_size,
    checks_json,
    db_scatter,
    downhill_fraction,
    loop_balance,
    loop_log_rates,
    paper_checks,
    potential_fit,
)

__all__ = [
    "Check",
    "ConvergenceReport",
    "ConvergenceWarning",
    "FitError",
    "Verdict",
    "bayes_check",
    "bayes_downhill",
    "bayes_fdr",
    "bayes_potential_spread",
    "bayes_verdict",
    "convergence",
    "cycle_violations",
    "format_bayes",
    "loo_compare",
    "loop_chi2_ppc",
    "pair_violations",
    "ppc_pairs",
    "same_data",
    "action_size",
    "checks_json",
    "db_scatter",
    "downhill_fraction",
    "loop_balance",
    "loop_log_rates",
    "paper_checks",
    "potential_fit",
]
