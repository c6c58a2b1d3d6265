"""Bayesian pair models in PyMC: `EquilibriumModel` and `NonEquilibriumModel`.

Equilibrium (detailed balance): for every modelled pair (f, g), conditional on the number of
moves between them m = n_fg + n_gf,

    n_fg ~ Binomial(m, logit⁻¹(log(N_f/N_g) + V_f − V_g)).

The symmetric part of the kernel cancels, so the model costs O(pairs), not O(states²). The
non-equilibrium model adds an antisymmetric A_fg = τ_A a_fg (non-centred, a ~ N(0, 1)) whose
scale τ_A can shrink to ~0 on reversible data; only its cycle space is identified, and the
loop affinities Σ A around the observed 3-cycles are reported (gauge-free).

Lifecycle: ``__init__`` stores `model_config` (priors) merged over the defaults and nothing
else; `prepare(data)` returns a frozen `PreparedPairs` (pair arrays, density, MAP, whitening);
`build_model(prepared)` builds the `pm.Model`; `detailed_balance.sampling.fit` samples. A model
object holds no fitted state, so one object fits any number of data sets independently. V is sampled in whitened coordinates
V = V* + B z (see `_whiten.Whitening`); the reported `V` is gauge-fixed (see `_pairs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from detailed_balance.data import Transitions
from detailed_balance.data.names import as_names

from ._density import (
    A_PAIRS,
    MapResult,
    PairDensity,
    pointwise_loglik,
)
from ._kernel_model import (
    LIKELIHOODS,
    PreparedKernel,
    build_kernel_model,
    kernel_laplace,
    kernel_posterior,
    prepare_kernel,
    resolve_likelihood,
    theta_draws,
)
from ._loglik import CONSTANTS, PairPotential
from ._pair_outputs import constant_data, laplace_posterior, pairs_coord
from ._pairs import PairData, pair_data
from ._scales import fit_sigma, fit_tau
from ._whiten import Whitening, ilu_whitening

V_PRIORS = ("wide", "normal", "student_t")
TAU_PRIORS = ("halfnormal", "halfcauchy")
PARAMETERIZATIONS = ("whitened", "direct")


@dataclass(frozen=True, eq=False)
class PreparedPairs:
    """What `PairModel.prepare` derives from one data set (the model object keeps none of it).

    ``pairs``: the pair arrays; ``density``: the numpy density at the fitted gauge scale;
    ``map_result``: its MAP (non-equilibrium: with τ_A's empirical-Bayes EM); ``whitening``:
    V = V* + B z (None when prepared without whitening, the ``map`` method); ``gauge_scale``:
    σ_V at the equilibrium MAP; ``eq_theta``: that MAP; ``a_map``, ``a_scale``, ``a_shift``:
    a = a* + a_scale z_a − a_shift ⊙ E(V − V*) (identity unless whitened non-equilibrium)."""

    pairs: PairData
    density: PairDensity
    map_result: MapResult
    whitening: Whitening | None
    gauge_scale: float
    eq_theta: np.ndarray
    a_map: np.ndarray
    a_scale: np.ndarray
    a_shift: np.ndarray
    reason: str = "asked for (likelihood='pairs')"
    likelihood: str = "pairs"

    @property
    def llm(self) -> str:
        return self.pairs.llm


class PairModel:
    """Shared lifecycle of the pair models; use `EquilibriumModel` / `NonEquilibriumModel`."""

    name = "pair"
    nonequilibrium = False
    default_model_config: dict[str, Any] = {
        "V_prior": "wide",  # wide: Normal(0, V_scale); normal / student_t: fitted σ_V
        "V_scale": 10.0,  # wide: prior sd of centred V; else the HalfNormal scale of σ_V
        "V_nu": 3.0,  # Student-t degrees of freedom
        "reference": None,  # report V relative to this state (in its component)
        "parameterization": "whitened",  # whitened (Laplace-preconditioned) or direct
        "ilu_drop_tol": 0.03,  # incomplete-factor drop tolerance of the whitening (0: exact)
        "ilu_fill": 5.0,  # its fill factor (nonzeros of the factor / of the curvature)
        # kernel (one multinomial per prompt state), pairs (conditional binomial per pair) or
        # auto: kernel when the visits are true counts (see `_kernel_model`)
        "likelihood": "auto",
        "kernel_scale": 10.0,  # kernel likelihood: prior sd of the log-conductances
        "remainder_prior": 1.0,  # kernel likelihood: Beta(a, a) prior of remainder probabilities
    }

    def __init__(self, model_config: dict[str, Any] | None = None) -> None:
        config = dict(self.default_model_config)
        unknown = set(model_config or {}) - set(config)
        if unknown:
            raise ValueError(
                f"unknown model_config key(s) {sorted(unknown)}; known: {sorted(config)}."
            )
        config.update(model_config or {})
        _check_choice("V_prior", config["V_prior"], V_PRIORS)
        _check_choice("parameterization", config["parameterization"], PARAMETERIZATIONS)
        if "likelihood" in config:
            _check_choice("likelihood", config["likelihood"], LIKELIHOODS)
        if "tau_A_prior" in config:
            _check_choice("tau_A_prior", config["tau_A_prior"], TAU_PRIORS)
            _check_choice("A_pairs", config["A_pairs"], A_PAIRS)
        if not float(config["ilu_drop_tol"]) >= 0 or not float(config["ilu_fill"]) >= 1:
            raise ValueError("model_config needs ilu_drop_tol >= 0 and ilu_fill >= 1.")
        for key in ("V_scale", "V_nu", "tau_A_scale", "kernel_scale", "remainder_prior"):
            if key in config and not float(config[key]) > 0:
                raise ValueError(f"model_config[{key!r}] must be > 0, got {config[key]!r}.")
        self.model_config = config

    # -- configuration ---------------------------------------------------------------------
    @property
    def config_json(self) -> str:
        return json.dumps(self.model_config, sort_keys=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_config})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.model_config == self.model_config

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.config_json))

    # -- building ----------------------------------------------------------------------------
    def prepare(
        self, data: Transitions, llm: str | None = None, whiten: bool = True
    ) -> PreparedPairs | PreparedKernel:
        """Pair arrays, the MAP (numpy) and (if `whiten`) the whitening map; no PyMC. The
        likelihood (``model_config["likelihood"]``) is resolved here, from the data's visits:
        a `PreparedKernel` for the kernel likelihood (`_kernel_model`)."""
        pairs = pair_data(data, llm)
        likelihood, reason = resolve_likelihood(self.model_config, data, self.nonequilibrium)
        if likelihood == "kernel":
            return prepare_kernel(pairs, self.model_config, whiten, reason)
        # The whitening always comes from the equilibrium curvature at its MAP: it is the
        # shape of V's posterior whenever τ_A is small, and a fine scaling otherwise.
        eq_density = PairDensity(pairs, self.model_config, nonequilibrium=False)
        if eq_density.layout.fitted_sigma:
            # Start σ_V's empirical-Bayes EM from the wide-prior MAP (the joint mode of a
            # fitted scale collapses to σ_V → 0).
            wide = PairDensity(pairs, {**self.model_config, "V_prior": "wide"}, False)
            start = eq_density.initial()
            start[: pairs.n_states] = wide.find_map().theta
            eq_map = fit_sigma(eq_density, start)
        else:
            eq_map = eq_density.find_map()
        sigma = eq_density.sigma(eq_map.theta)
        density = PairDensity(pairs, self.model_config, self.nonequilibrium, sigma)
        eq_density = PairDensity(pairs, self.model_config, False, sigma)
        if self.nonequilibrium:
            start = density.initial()
            start[: eq_map.theta.size] = eq_map.theta
            map_result = fit_tau(density, start)
        else:
            map_result = eq_density.find_map(eq_map.theta, fix_sigma=True)
        # a = a* + a_scale z_a − a_shift ⊙ E(V − V*): identity unless whitened (below).
        a_map = np.zeros(pairs.n_pairs)
        a_scale = np.ones(pairs.n_pairs)
        a_shift = np.zeros(pairs.n_pairs)
        if not whiten:
            white = None
        elif self.model_config["parameterization"] == "direct":
            white = Whitening.identity(pairs.n_states)
        else:
            hessian = eq_density.v_hessian(eq_map.theta)
            centre = eq_map.theta[: pairs.n_states]
            if self.nonequilibrium:
                # Joint Gauss–Newton curvature of (V, a) at the non-eq MAP, whitened by
                # eliminating a: V sees the Laplacian with weights w / (1 + τ²w) (A absorbs
                # the rest along the cut space), and a | V is diagonal with a linear shift.
                theta = map_result.theta
                tau = density.tau(theta) * density.a_mask
                w = density.pair_weights(theta)
                shrink = 1.0 / (1.0 + tau**2 * w)
                hessian = density.v_hessian(theta, w * shrink)
                centre = theta[: pairs.n_states]
                a_map = theta[density.layout.a]
                a_scale = np.sqrt(shrink)
                a_shift = tau * w * shrink
            white = ilu_whitening(
                hessian,
                centre,
                float(self.model_config["ilu_drop_tol"]),
                float(self.model_config["ilu_fill"]),
            )
        return PreparedPairs(
            pairs, density, map_result, white, sigma, eq_map.theta, a_map, a_scale, a_shift, reason
        )

    def coords(self, prepared: PreparedPairs) -> dict[str, Any]:
        pairs = prepared.pairs
        return {
            "state": as_names(pairs.states),
            "pair": np.arange(pairs.n_pairs),
            "cycle": np.arange(pairs.n_cycles),
            "latent": np.arange(pairs.n_states),
        }

    def build_model(self, prepared: PreparedPairs) -> pm.Model:
        """The `pm.Model` of prepared data (sampled in its whitening; see `prepare`)."""
        if isinstance(prepared, PreparedKernel):
            return build_kernel_model(prepared, self.coords(prepared))
        pairs = prepared.pairs
        report = pairs.with_reference(self.model_config["reference"])
        white = prepared.whitening
        if white is None:
            raise ValueError("build_model needs data prepared with whiten=True.")
        density = prepared.density
        with pm.Model(coords=self.coords(prepared)) as model:
            z = pm.Flat("V_white", dims="latent")
            sigma = self._sigma_prior()
            # V for the stored draws only; the density below recomputes it inside its kernel.
            v_raw = white.centre + white.deviation(z)
            if report is pairs:
                pm.Deterministic("V", _centre(v_raw, pairs), dims="state")
            else:
                pm.Deterministic("V", _centre(v_raw, report), dims="state")
            z_a, tau = self._antisymmetric(prepared, v_raw)
            config = self.model_config
            op = PairPotential(
                student=config["V_prior"] == "student_t",
                nu=float(config["V_nu"]),
                fitted=config["V_prior"] != "wide",
                dof=float(density.dof),
                nonequilibrium=self.nonequilibrium,
            )
            # The kernel sees the states sorted by component (stable: pairs stay sorted by
            # their first state, for the likelihood's gathers), so its prior loops run over
            # contiguous memory; what the Op returns is in z, unaffected.
            sort = np.argsort(pairs.component, kind="stable")
            rank = np.empty_like(sort)
            rank[sort] = np.arange(len(sort))
            constants = {
                "centre": white.centre[sort], "basis_t": white.basis.T.copy(),
                "coef": white.coef, "scale": white.scale, "perm": white.perm[sort],
                "indptr": white.indptr, "indices": white.indices, "data": white.data,
                "weights": pairs.weights[sort],
                "comp_ptr": np.r_[0, np.cumsum(pairs.component_sizes)],
                "gauge": density.gauge, "offset": pairs.offset, "n_fg": pairs.n_fg,
                "trials": pairs.trials, "i": rank[pairs.i], "j": rank[pairs.j],
                "a_map": prepared.a_map, "a_scale": prepared.a_scale,
                "a_shift": prepared.a_shift,
                "a_mask": density.a_mask,
            }  # fmt: skip
            scalars = pt.stack([pt.as_tensor_variable(sigma), pt.as_tensor_variable(tau)])
            logp = op(z, z_a, scalars, *(constants[name] for name in CONSTANTS))[0]
            pm.Potential("log_density", logp)
        return model

    def _sigma_prior(self):
        if self.model_config["V_prior"] == "wide":
            return float(self.model_config["V_scale"])
        return pm.HalfNormal("sigma_V", sigma=float(self.model_config["V_scale"]))

    def _antisymmetric(self, prepared: PreparedPairs, v_raw):
        """(z_a, τ_A) of the antisymmetric part, with its stored deterministics; none here."""
        return np.zeros(0), 0.0

    def theta_from_point(self, prepared: PreparedPairs, point: dict[str, np.ndarray]) -> np.ndarray:
        """The numpy density's θ for a point of the PyMC model's value variables (for tests)."""
        white, pairs = prepared.whitening, prepared.pairs
        v = white.apply(np.asarray(point["V_white"], float))
        parts = [v]
        if "sigma_V_log__" in point:
            parts.append(np.atleast_1d(point["sigma_V_log__"]))
        if self.nonequilibrium:
            dv = v - white.centre
            a = (
                prepared.a_map
                + prepared.a_scale * np.asarray(point["A_white"], float)
                - prepared.a_shift * (dv[pairs.i] - dv[pairs.j])
            )
            parts += [a, np.atleast_1d(point["tau_A_log__"])]
        return np.concatenate(parts)

    # -- after sampling ------------------------------------------------------------------------
    @property
    def stored_variables(self) -> list[str]:
        names = ["V"]
        if self.model_config["V_prior"] != "wide":
            names.append("sigma_V")
        return names

    @property
    def window_switch_freq(self) -> int:
        """Tuning draws between nutpie's restarts of its mass-matrix window. A restart forgets
        a transient. The equilibrium model with the wide prior has none: its chains start at
        the MAP in whitened coordinates, and one growing window adapts with less noise (150,000
        instead of 175,000 tuning steps at paper scale, docs/benchmarks.md). A sampled scale
        (σ_V, τ_A) starts at a point estimate and moves (τ_A's EM estimate can stall at its
        start): nutpie's default, 80, where a growing window left R-hat 1.014 in `make demo`."""
        plain = self.model_config["V_prior"] == "wide" and not self.nonequilibrium
        return 10_000 if plain and self.model_config["parameterization"] == "whitened" else 80

    @property
    def sampler_variables(self) -> list[str]:
        """The stored variables that `expand` does not compute (the sampler stores them)."""
        return [name for name in self.stored_variables if name in ("sigma_V", "tau_A")]

    def expand(self, prepared: PreparedPairs, posterior: xr.Dataset) -> xr.Dataset:
        """The stored variables from draws of the sampled coordinates (`V_white`, `A_white`
        and the scalars), in numpy: the same values as the model's deterministics, without
        the sampler storing them beside the coordinates (half of its memory)."""
        if isinstance(prepared, PreparedKernel):
            coords = {name: posterior[name] for name in ("chain", "draw")}
            coords.update({k: v for k, v in self.coords(prepared).items() if k != "latent"})
            theta = theta_draws(prepared, posterior)
            return kernel_posterior(prepared, theta, self.model_config["reference"], coords)
        pairs, white = prepared.pairs, prepared.whitening
        dims = ("chain", "draw")
        z = posterior["V_white"].transpose(*dims, "latent").to_numpy()
        v = white.apply(z)
        dv = v - white.centre if self.nonequilibrium else None
        v, weights = pairs.report_gauge(v, self.model_config["reference"])
        out = {"V": ((*dims, "state"), v)}
        for name in self.sampler_variables:
            out[name] = posterior[name].transpose(*dims)
        if self.nonequilibrium:
            tau = posterior["tau_A"].transpose(*dims).to_numpy()
            # A = τ mask (a* + a_scale z_a − a_shift (ΔV_f − ΔV_g)), in place: few temporaries
            a = dv[..., pairs.i]
            a -= dv[..., pairs.j]
            del dv
            a *= -prepared.a_shift
            a += prepared.a_scale * posterior["A_white"].transpose(*dims, "pair").to_numpy()
            a += prepared.a_map
            a *= prepared.density.a_mask
            a *= tau[..., None]
            cp = pairs.cycle_pairs
            loops = a[..., cp[:, 0]] + a[..., cp[:, 1]] - a[..., cp[:, 2]]
            out["A"] = ((*dims, "pair"), a)
            out["loop_affinity"] = ((*dims, "cycle"), loops)
        coords = {name: posterior[name] for name in dims}
        coords.update({k: v for k, v in self.coords(prepared).items() if k != "latent"})
        stored = xr.Dataset(out, coords=coords)[self.stored_variables]
        return stored.assign(centring_weight=("state", weights))

    def laplace(self, prepared: PreparedPairs, draws: int, seed: int) -> xr.DataTree:
        """The ``map`` method's posterior (`_pair_laplace.laplace_posterior`)."""
        coords = {k: v for k, v in self.coords(prepared).items() if k != "latent"}
        if isinstance(prepared, PreparedKernel):
            reference = self.model_config["reference"]
            return kernel_laplace(prepared, draws, seed, reference, coords)
        return laplace_posterior(prepared, draws, seed, self.model_config["reference"], coords)

    def constant_data(self, prepared: PreparedPairs) -> xr.Dataset:
        """The pair arrays of the fit (`constant_data`), stored in the fit's file."""
        return constant_data(prepared.pairs)

    def log_likelihood(self, prepared: PreparedPairs, posterior: xr.Dataset) -> xr.Dataset:
        """Pointwise exact binomial log-likelihood per pair (what LOO needs), from the
        gauge-free logits x = log(N_f/N_g) + V_f − V_g (+ A_fg) per (chain, draw, pair)."""
        pairs = prepared.pairs
        v = posterior["V"].transpose("chain", "draw", "state").to_numpy()
        a = (
            posterior["A"].transpose("chain", "draw", "pair").to_numpy()
            if "A" in posterior
            else None
        )
        flat = pointwise_loglik(
            pairs.n_fg,
            pairs.trials,
            pairs.offset,
            pairs.i,
            pairs.j,
            v.reshape(-1, v.shape[-1]),
            None if a is None else a.reshape(-1, pairs.n_pairs),
        )
        values = flat.reshape(v.shape[:2] + (pairs.n_pairs,))
        coords = {
            "chain": posterior["chain"],
            "draw": posterior["draw"],
            "pair": pairs_coord(pairs),
        }
        return xr.Dataset({"n_fg": (("chain", "draw", "pair"), values)}, coords=coords)


class EquilibriumModel(PairModel):
    """Detailed balance: n_fg ~ Binomial(m, logit⁻¹(log(N_f/N_g) + V_f − V_g))."""

    name = "equilibrium"


class NonEquilibriumModel(PairModel):
    """Equilibrium plus an antisymmetric A_fg = τ_A a_fg per pair (a ~ N(0, 1))."""

    name = "nonequilibrium"
    nonequilibrium = True
    default_model_config = {
        **PairModel.default_model_config,
        "tau_A_prior": "halfnormal",  # or halfcauchy
        "tau_A_scale": 1.0,
        "A_pairs": "all",  # pairs with an A: "all", or only those seen both ways ("two_way")
    }

    def _antisymmetric(self, prepared: PreparedPairs, v_raw):
        pairs = prepared.pairs
        scale = float(self.model_config["tau_A_scale"])
        if self.model_config["tau_A_prior"] == "halfcauchy":
            tau = pm.HalfCauchy("tau_A", beta=scale)
        else:
            tau = pm.HalfNormal("tau_A", sigma=scale)
        # Non-centred a ~ N(0, 1), sampled in whitened coordinates (see `prepare`); its prior
        # and likelihood are in the fused density, A and the loop affinities are stored.
        z_a = pm.Flat("A_white", dims="pair")
        dv = v_raw - prepared.whitening.centre
        a = prepared.a_map + prepared.a_scale * z_a - prepared.a_shift * (dv[pairs.i] - dv[pairs.j])
        antisym = pm.Deterministic("A", tau * a * prepared.density.a_mask, dims="pair")
        cp = pairs.cycle_pairs
        pm.Deterministic(
            "loop_affinity", antisym[cp[:, 0]] + antisym[cp[:, 1]] - antisym[cp[:, 2]], dims="cycle"
        )
        return z_a, tau

    @property
    def stored_variables(self) -> list[str]:
        return [*super().stored_variables, "A", "tau_A", "loop_affinity"]


MODELS = {"equilibrium": EquilibriumModel, "nonequilibrium": NonEquilibriumModel}


def model_from_name(name: str, model_config: dict[str, Any] | None = None) -> PairModel:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; use one of {', '.join(MODELS)}.")
    return MODELS[name](model_config)


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"model_config[{key!r}] = {value!r}; use one of {', '.join(allowed)}.")


def _segment_sum(values, labels: np.ndarray, n: int):
    return pt.zeros(n)[labels].inc(values)


def _centre(values, pairs: PairData):
    means = _segment_sum(pairs.weights * values, pairs.component, pairs.n_components)
    return values - means[pairs.component]


__all__ = [
    "EquilibriumModel",
    "NonEquilibriumModel",
    "PairModel",
    "PreparedPairs",
    "model_from_name",
]
