"""`fit`: one entry point from a pair model and `Transitions` to a posterior `BayesFit`.

Methods:

- ``"nuts"``: nutpie (`nutpie.compile_pymc_model` + `nutpie.sample`; the sampler name is
  recorded; ``sampler="pymc"`` for PyMC's own NUTS) in the model's whitened coordinates;
  nutpie stores only the sampled coordinates, and `model.expand` computes the rest;
- ``"advi"``: `pm.fit(method="advi")` (mean-field in the whitened coordinates, where the
  posterior is close to independent, so mean-field is a good fit) then draws;
- ``"map"``: the numpy L-BFGS MAP plus draws from its Laplace approximation N(θ*, H⁻¹) with H
  the sparse Gauss–Newton precision (graph Laplacian + prior curvature), drawn by
  perturb-then-solve (one sparse factorisation, or conjugate gradients preconditioned by
  the incomplete factor when the exact one would fill in too much). The non-equilibrium MAP keeps τ_A at its mode (see
  `NonEquilibriumModel`); its draws are conditional on that τ_A.

Every result is an `xarray.DataTree` with the groups of the ARCHITECTURE contract
(posterior, constant_data, observed_data, log_likelihood, data, sample_stats when sampled) and
provenance in the root attrs.

`fit` sees a model only through `FittableModel` (`prepare`, `build_model`, `expand`, `laplace`,
`log_likelihood`, `constant_data`): the model object holds configuration only, what it derives
from the data is the prepared object `prepare` returns (kept as `BayesFit.prepared`).
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

import numpy as np
import pymc as pm
import xarray as xr

from detailed_balance.data import Transitions
from detailed_balance.models import PairData
from detailed_balance.models.hierarchy import HierarchicalModel

from .hierarchy import fit_hierarchy
from .result import BayesFit, data_group, provenance

METHODS = ("nuts", "advi", "map")
SAMPLERS = ("nutpie", "pymc")

DEFAULT_SAMPLER_CONFIG: dict[str, Any] = {
    "draws": 1000,
    "tune": 1000,
    "chains": 4,
    "cores": None,  # default: min(chains, CPUs)
    "seed": 1,
    "sampler": "nutpie",
    "target_accept": 0.8,
    "maxdepth": 10,
    # Tuning draws between nutpie's restarts of its mass-matrix window; None: the model's
    # `window_switch_freq` (see `PairModel`), recorded as used.
    "window_switch_freq": None,
    "advi_iterations": 3_000,
    "advi_learning_rate": 0.005,
    "advi_method": "advi",  # or fullrank_advi (small models only)
    "progressbar": True,
}


class Prepared(Protocol):
    """What a model derives from one data set (e.g. `models.PreparedPairs`)."""

    @property
    def pairs(self) -> PairData: ...


class FittableModel(Protocol):
    """The model side of `fit`: configuration only; everything data-dependent goes through
    the prepared object `prepare` returns."""

    name: str
    model_config: dict[str, Any]

    @property
    def config_json(self) -> str: ...

    @property
    def stored_variables(self) -> list[str]: ...

    @property
    def sampler_variables(self) -> list[str]: ...

    @property
    def window_switch_freq(self) -> int: ...

    def prepare(self, data: Transitions, llm: str | None = None, whiten: bool = True) -> Any: ...

    def build_model(self, prepared: Any) -> pm.Model: ...

    def expand(self, prepared: Any, posterior: xr.Dataset) -> xr.Dataset: ...

    def laplace(self, prepared: Any, draws: int, seed: int) -> xr.DataTree: ...

    def log_likelihood(self, prepared: Any, posterior: xr.Dataset) -> xr.Dataset: ...

    def constant_data(self, prepared: Any) -> xr.Dataset: ...


def sampler_config(**overrides: Any) -> dict[str, Any]:
    """User values merged over `DEFAULT_SAMPLER_CONFIG` (unknown keys are an error)."""
    unknown = set(overrides) - set(DEFAULT_SAMPLER_CONFIG)
    if unknown:
        raise ValueError(
            f"unknown sampler option(s) {sorted(unknown)}; known: {sorted(DEFAULT_SAMPLER_CONFIG)}."
        )
    config = dict(DEFAULT_SAMPLER_CONFIG)
    config.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("draws", "chains", "advi_iterations", "window_switch_freq"):
        if config[key] is not None and int(config[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {config[key]}.")
    if int(config["tune"]) < 0:
        raise ValueError(f"tune must be >= 0, got {config['tune']}.")
    if config["cores"] is None:
        config["cores"] = max(1, min(int(config["chains"]), os.cpu_count() or 1))
    if config["sampler"] not in SAMPLERS:
        raise ValueError(
            f"sampler must be one of {', '.join(SAMPLERS)}, got {config['sampler']!r}."
        )
    return config


def fit(
    model: FittableModel | HierarchicalModel,
    data: Transitions,
    method: str = "nuts",
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    seed: int | None = None,
    llm: str | None = None,
    progressbar: bool = True,
    sampler: str = "nutpie",
    **kwargs: Any,
) -> BayesFit:
    """Fit `model` to `data` (one LLM) by NUTS, ADVI or MAP + Laplace; see the module doc.

    `kwargs` are further sampler options (`DEFAULT_SAMPLER_CONFIG`: target_accept, maxdepth,
    cores, window_switch_freq (nutpie), advi_iterations, advi_method). The same seed gives
    the same draws.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    if isinstance(model, HierarchicalModel):  # all LLMs at once, sampled by PyMC's drivers
        defaults = DEFAULT_SAMPLER_CONFIG
        return fit_hierarchy(
            model,
            data,
            method=method,
            draws=defaults["draws"] if draws is None else draws,
            tune=defaults["tune"] if tune is None else tune,
            chains=defaults["chains"] if chains is None else chains,
            seed=defaults["seed"] if seed is None else seed,
            progressbar=progressbar,
            sampler=sampler,
            **kwargs,
        )
    config = sampler_config(
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        sampler=sampler,
        progressbar=progressbar,
        **kwargs,
    )
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if method == "map":  # the numpy MAP + Laplace need no PyMC graph and no whitening
        prepared = model.prepare(data, llm, whiten=False)
        pm_model = None
    else:
        prepared = model.prepare(data, llm)
        pm_model = model.build_model(prepared)
    timings["build"] = time.perf_counter() - start
    start = time.perf_counter()
    if method == "nuts":
        tree = _nuts(model, prepared, pm_model, config)
        used_sampler = config["sampler"]
    elif method == "advi":
        tree = _advi(model, prepared, pm_model, config)
        used_sampler = f"pymc.{config['advi_method']}"
    else:
        draws = int(config["draws"]) * int(config["chains"])
        tree = model.laplace(prepared, draws, int(config["seed"]))
        used_sampler = "lbfgs+laplace"
    timings["inference"] = time.perf_counter() - start
    start = time.perf_counter()
    tree = _complete(tree, model, prepared, data, method, used_sampler, config)
    timings["postprocess"] = time.perf_counter() - start
    return BayesFit(tree, data, model, prepared.pairs.llm, timings, prepared)


def _nuts(
    model: FittableModel, prepared: Any, pm_model: pm.Model, config: dict[str, Any]
) -> xr.DataTree:
    if config["sampler"] == "nutpie":
        # nutpie directly: `pm.sample(nuts_sampler="nutpie")` adds ~7 s of wrapping at paper
        # scale (initial-point functions, trace conversion) to the same compiled sampler.
        import nutpie

        if config["window_switch_freq"] is None:
            config["window_switch_freq"] = int(model.window_switch_freq)
        # nutpie stores the sampled coordinates in any case; V, A and the loop affinities
        # are computed from them afterwards (`expand`), not stored a second time per draw.
        compiled = nutpie.compile_pymc_model(
            pm_model, backend="numba", var_names=model.sampler_variables
        )
        tree = nutpie.sample(
            compiled,
            draws=int(config["draws"]),
            tune=max(int(config["tune"]), 1),  # nutpie needs at least one tuning step
            chains=int(config["chains"]),
            cores=int(config["cores"]),
            seed=int(config["seed"]),
            progress_bar=bool(config["progressbar"]),
            save_warmup=False,
            target_accept=float(config["target_accept"]),
            maxdepth=int(config["maxdepth"]),
            window_switch_freq=int(config["window_switch_freq"]),
            early_window_switch_freq=int(config["window_switch_freq"]),
        )
    else:
        names = ["theta_white"] if _kernel(prepared) else model.stored_variables
        with pm_model:
            tree = pm.sample(
                draws=int(config["draws"]),
                tune=int(config["tune"]),
                chains=int(config["chains"]),
                cores=int(config["cores"]),
                random_seed=int(config["seed"]),
                nuts_sampler=config["sampler"],
                var_names=names,
                progressbar=bool(config["progressbar"]),
                compute_convergence_checks=False,
                nuts={
                    "target_accept": float(config["target_accept"]),
                    "max_treedepth": int(config["maxdepth"]),
                },
            )
    if config["sampler"] == "nutpie" or _kernel(prepared):
        posterior = model.expand(prepared, tree["posterior"].to_dataset())
    else:
        posterior = tree["posterior"].to_dataset()[model.stored_variables]
    groups = {"/posterior": posterior}
    if "sample_stats" in tree.children:
        groups["/sample_stats"] = tree["sample_stats"].to_dataset()
    return xr.DataTree.from_dict(groups)


def _kernel(prepared: Any) -> bool:
    """Prepared for the kernel likelihood (whose graph holds only the sampled coordinates)."""
    return getattr(prepared, "likelihood", "pairs") == "kernel"


def _advi(
    model: FittableModel, prepared: Any, pm_model: pm.Model, config: dict[str, Any]
) -> xr.DataTree:
    with pm_model:
        # Numba compiles in seconds where the C backend takes ~a minute on big graphs; the
        # start (z = 0, i.e. the MAP) and unit scales are already close in whitened space,
        # so a few thousand Adam steps suffice.
        approx = pm.fit(
            n=int(config["advi_iterations"]),
            method=config["advi_method"],
            random_seed=int(config["seed"]),
            progressbar=bool(config["progressbar"]),
            backend="numba",
            obj_optimizer=pm.adam(learning_rate=float(config["advi_learning_rate"])),
        )
        draws = int(config["draws"]) * int(config["chains"])
        tree = approx.sample(draws, random_seed=int(config["seed"]) + 1)
    if _kernel(prepared):
        posterior = model.expand(prepared, tree["posterior"].to_dataset())
    else:
        posterior = tree["posterior"].to_dataset()[model.stored_variables]
    losses = np.asarray(approx.hist, dtype=float)
    stats = xr.Dataset({"loss": ("iteration", losses)})
    return xr.DataTree.from_dict({"/posterior": posterior, "/advi": stats})


def _complete(
    tree: xr.DataTree,
    model: FittableModel,
    prepared: Any,
    data: Transitions,
    method: str,
    sampler: str,
    config: dict[str, Any],
) -> xr.DataTree:
    """Add constant/observed data, pointwise log-likelihood, the data tables and provenance."""
    pairs = prepared.pairs
    groups = {f"/{name}": tree[name].to_dataset() for name in tree.children}
    posterior = groups["/posterior"]
    groups["/constant_data"] = model.constant_data(prepared)
    if "centring_weight" in posterior:
        # the gauge the draws are reported in (`PairData.report_gauge`) depends on the draws
        groups["/constant_data"]["centring_weight"] = posterior["centring_weight"]
        posterior = groups["/posterior"] = posterior.drop_vars("centring_weight")
    groups["/observed_data"] = xr.Dataset(
        {"n_fg": ("pair", pairs.n_fg.astype(np.int64))}, coords={"pair": np.arange(pairs.n_pairs)}
    )
    groups["/log_likelihood"] = model.log_likelihood(prepared, posterior)
    groups["/data"] = data_group(data)
    out = xr.DataTree.from_dict(groups)
    attrs = provenance(model, pairs, data, method, sampler, config, int(config["seed"]))
    attrs["likelihood"] = getattr(prepared, "likelihood", "pairs")
    attrs["likelihood_reason"] = getattr(prepared, "reason", "")
    out.attrs.update(attrs)
    out["posterior"].attrs.update(
        {"method": method, "unidentified_states": attrs["unidentified_states"]}
    )
    return out
