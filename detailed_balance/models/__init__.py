"""Potential estimators: the paper's least-action fit (and, later, the PyMC models)."""

from .equilibrium import EquilibriumModel, NonEquilibriumModel, PairModel
from .least_action import LeastActionResult, kernel_values, least_action, summed_action

__all__ = [
    "EquilibriumModel",
    "NonEquilibriumModel",
    "PairModel",
    "LeastActionResult",
    "kernel_values",
    "least_action",
    "summed_action",
]
