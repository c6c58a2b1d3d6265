"""Diagnostics: the paper's detailed-balance checks and the Bayesian tests."""

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
    "action_size",
    "checks_json",
    "db_scatter",
    "downhill_fraction",
    "loop_balance",
    "loop_log_rates",
    "paper_checks",
    "potential_fit",
]
