"""Inference for the Bayesian pair models: `fit` (NUTS via nutpie, ADVI, MAP + Laplace),
`BayesFit` results and `load_fit` for saved netCDF fits."""

from detailed_balance.models import constant_data

from .inference import DEFAULT_SAMPLER_CONFIG, METHODS, FittableModel, fit, sampler_config
from .result import BayesFit, FitFileError, load_fit

__all__ = [
    "DEFAULT_SAMPLER_CONFIG",
    "METHODS",
    "BayesFit",
    "FitFileError",
    "FittableModel",
    "constant_data",
    "fit",
    "load_fit",
    "sampler_config",
]
