"""Potential estimators: the paper's least-action fit, the PyMC pair models (equilibrium,
non-equilibrium, feature potential) and the multi-LLM hierarchy.

`PairData`, `pair_data`, `gaussian_draws`, `pointwise_loglik` and `model_from_name` are the pieces the sampling
and diagnostics packages build on (public here so nothing imports this package's private modules)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Lazy re-exports (PEP 562): the least-action estimators are numpy/SciPy only, so
# `from detailed_balance.models import least_action` must not import PyMC, pytensor and numba
# (≈2 s) through the Bayesian models. Each public name is loaded from its submodule on first use.
# The least-action estimators are imported eagerly: they are light, and their submodules share
# their names (importing the submodule `least_action` would otherwise shadow the function).
from .feature_least_action import FeatureLeastAction, feature_least_action
from .least_action import LeastActionResult, kernel_values, least_action, summed_action

_EXPORTS = {
    "gaussian_draws": "._density",
    "pointwise_loglik": "._density",
    "PairData": "._pairs",
    "pair_data": "._pairs",
    "EquilibriumModel": ".equilibrium",
    "NonEquilibriumModel": ".equilibrium",
    "PairModel": ".equilibrium",
    "PreparedPairs": ".equilibrium",
    "constant_data": "._pair_outputs",
    "model_from_name": "._registry",
    "FeaturePotentialModel": ".features",
    "PreparedFeatures": ".features",
}

if TYPE_CHECKING:
    from ._density import gaussian_draws, pointwise_loglik
    from ._pair_outputs import constant_data
    from ._pairs import PairData, pair_data
    from ._registry import model_from_name
    from .equilibrium import EquilibriumModel, NonEquilibriumModel, PairModel, PreparedPairs
    from .features import FeaturePotentialModel, PreparedFeatures


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
