"""Potential estimators: the paper's least-action fit (and, later, the PyMC models)."""

from .equilibrium import EquilibriumModel, NonEquilibriumModel, PairModel
from .features import FeatureLeastAction, FeaturePotentialModel, feature_least_action
from .least_action import LeastActionResult, kernel_values, least_action, summed_action

__all__ = [
    "EquilibriumModel",
    "FeatureLeastAction",
    "FeaturePotentialModel",
    "feature_least_action",
    "NonEquilibriumModel",
    "PairModel",
    "LeastActionResult",
    "kernel_values",
    "least_action",
    "summed_action",
]
