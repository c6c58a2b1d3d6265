"""Inference for the Bayesian pair models: `fit` (NUTS via nutpie, ADVI, MAP + Laplace),
the multi-LLM hierarchy (`fit(HierarchicalModel(), data)`; `sample` returns its posterior tree),
`BayesFit` results and `load_fit` for saved netCDF fits."""

from detailed_balance.models import constant_data

from .hierarchy import sample
from .inference import DEFAULT_SAMPLER_CONFIG, METHODS, FittableModel, fit, sampler_config
from .result import BayesFit, FitFileError, in_gauge, load_fit

__all__ = [
    "DEFAULT_SAMPLER_CONFIG",
    "METHODS",
    "BayesFit",
    "FitFileError",
    "FittableModel",
    "constant_data",
    "fit",
    "in_gauge",
    "load_fit",
    "sample",
    "sampler_config",
]
