"""Potential estimators: the paper's least-action fit, the PyMC pair models (equilibrium,
non-equilibrium, feature potential) and the multi-LLM hierarchy.

`PairData`, `pair_data`, `gaussian_draws`, `pointwise_loglik` and `model_from_name` are the pieces the sampling
and diagnostics packages build on (public here so nothing imports this package's private modules)."""

from ._density import gaussian_draws, pointwise_loglik
from ._pairs import PairData, pair_data
from .equilibrium import (
    EquilibriumModel,
    NonEquilibriumModel,
    PairModel,
    PreparedPairs,
    constant_data,
    model_from_name,
)
from .feature_least_action import FeatureLeastAction, feature_least_action
from .features import FeaturePotentialModel, PreparedFeatures
from .least_action import LeastActionResult, kernel_values, least_action, summed_action

__all__ = [
    "EquilibriumModel",
    "FeatureLeastAction",
    "FeaturePotentialModel",
    "feature_least_action",
    "NonEquilibriumModel",
    "PairModel",
    "PairData",
    "PreparedFeatures",
    "PreparedPairs",
    "constant_data",
    "gaussian_draws",
    "model_from_name",
    "pointwise_loglik",
    "pair_data",
    "LeastActionResult",
    "kernel_values",
    "least_action",
    "summed_action",
]
