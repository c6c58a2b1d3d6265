"""`model_from_name` with every model registered: the pair models live in `equilibrium`, the
feature model registers itself in `equilibrium.MODELS` when `features` is imported, so the
package exports `model_from_name` from here (a lazy package must not lose "features")."""

from __future__ import annotations

from .equilibrium import MODELS, model_from_name
from .features import FeaturePotentialModel

assert MODELS["features"] is FeaturePotentialModel  # registered by importing features

__all__ = ["model_from_name"]
