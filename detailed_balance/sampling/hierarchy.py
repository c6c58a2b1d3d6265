"""Inference for the multi-LLM `HierarchicalModel` (reached through `fit`, like every model).

The hierarchy is sampled with PyMC's own drivers (`pm.sample`, `pm.fit`, `pm.find_MAP`), its
pointwise log-likelihood computed by PyMC, and its draws laid out by the model's `postprocess`
(gauge-fixed V, per-LLM potentials and landscape correlations); `sample` returns just that tree.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from detailed_balance.data import Transitions
from detailed_balance.models.hierarchy import HierarchicalModel

from .result import BayesFit


def fit_hierarchy(
    model: HierarchicalModel,
    data: Transitions,
    *,
    method: str = "nuts",
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 1,
    progressbar: bool = False,
    sampler: str = "nutpie",
    **kwargs: Any,
) -> BayesFit:
    """Build, sample and post-process the hierarchical model; provenance in root attrs.

    method: "nuts" (NUTS via `sampler`, default nutpie), "advi" (mean-field ADVI, `draws` draws
    from the approximation) or "map" (point estimate; one chain with a single draw — the
    hierarchical scales collapse at a MAP, so use it for plumbing, not for intervals).
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    arrays = model.prepare(data)
    pymc_model = model.build_model(arrays)
    timings["build"] = time.perf_counter() - start
    start = time.perf_counter()
    with pymc_model:
        if method == "nuts":
            idata = pm.sample(
                draws=draws,
                tune=tune,
                chains=chains,
                random_seed=seed,
                nuts_sampler=sampler,
                progressbar=progressbar,
                **kwargs,
            )
            pm.compute_log_likelihood(idata, progressbar=False)
        elif method == "advi":
            approx = pm.fit(
                n=int(kwargs.pop("n", 20000)),
                method="advi",
                random_seed=seed,
                progressbar=progressbar,
                **kwargs,
            )
            idata = approx.sample(draws, random_seed=seed)
            pm.compute_log_likelihood(idata, progressbar=False)
            sampler = "advi"
        elif method == "map":
            found = pm.find_MAP(
                progressbar=progressbar,
                random_seed=seed,
                jitter=False,
                return_inferencedata=True,
                **kwargs,
            )
            idata = _map_tree(pymc_model, found)
            sampler = "find_MAP"
        else:
            raise ValueError(f"method must be 'nuts', 'advi' or 'map', not {method!r}")
    timings["inference"] = time.perf_counter() - start
    start = time.perf_counter()
    tree = model.postprocess(arrays, idata)
    tree.attrs.update(
        {
            "model": model.name,
            "model_config": model.config_json(),
            "sampler_config": json.dumps(
                {"draws": draws, "tune": tune, "chains": chains, "method": method},
                sort_keys=True,
            ),
            "sampler": sampler,
            "method": method,
            "seed": int(seed),
            "data_hash": data.data_hash(),
            "created": pd.Timestamp.now(tz="UTC").isoformat(),
        }
    )
    timings["postprocess"] = time.perf_counter() - start
    return BayesFit(tree, data, model, None, timings, arrays)


def sample(model: HierarchicalModel, data: Transitions, **options: Any) -> xr.DataTree:
    """The posterior tree of `fit(model, data, **options)` (see `fit_hierarchy`)."""
    return fit_hierarchy(model, data, **options).posterior


def _map_tree(pymc_model: pm.Model, found: xr.DataTree) -> xr.DataTree:
    """The MAP point of `pm.find_MAP(return_inferencedata=True)` as a one-chain, one-draw
    posterior group of the free variables and deterministics (same layout as NUTS, no
    optimiser groups or attrs)."""
    point = found["posterior"]
    values = {name: np.asarray(point[name].values)[0, 0] for name in point.data_vars}
    dims = pymc_model.named_vars_to_dims
    coords = {k: np.asarray(v) for k, v in pymc_model.coords.items()}
    variables = {}
    for var in pymc_model.free_RVs + pymc_model.deterministics:
        value = np.asarray(values[var.name])[None, None]
        names = ("chain", "draw") + tuple(dims.get(var.name, ()))
        if len(names) < value.ndim:
            names += tuple(f"{var.name}_dim_{k}" for k in range(value.ndim - len(names)))
        variables[var.name] = (names, value)
    used = {d for names, _ in variables.values() for d in names}
    posterior = xr.Dataset(
        variables,
        coords={k: v for k, v in coords.items() if k in used} | {"chain": [0], "draw": [0]},
    )
    return xr.DataTree.from_dict({"/posterior": posterior})
