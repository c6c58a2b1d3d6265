"""Feature potential: V_f = x_f·θ + ε_f, fitted jointly with the equilibrium pair likelihood.

For every modelled pair (f, g) (see `_pairs`), conditional on m = n_fg + n_gf,

    n_fg ~ Binomial(m, logit⁻¹(log(N_f/N_g) + V_f − V_g)),
    V_f  = z_f·θ* + ε_f,   ε_f ~ Normal(0, σ_ε) (or StudentT(ν, 0, σ_ε)),
    θ*   ~ Normal(0, theta_scale),   σ_ε ~ HalfNormal(sigma_eps_scale),

with z_f the features standardised over the modelled states (`features.Standardiser`). θ is
reported per unit of the original feature, θ_k = θ*_k / s_k. One joint model, not a regression
on fitted potentials: every state's V is pulled towards its feature prediction by exactly as
much as its counts allow, and the uncertainty of θ includes that of V.

Gauge. The likelihood sees V only through differences within connected components of the pair
graph; the ε prior pins the rest. V is reported as sampled ("feature gauge": zero is the mean
feature potential of the modelled states, so states of different components are comparable
through their features), or relative to `reference` when one is named. `V_features` = z·θ*
(dim state) is the part the features explain; `feature_share` = var(z·θ*) / (var(z·θ*) + σ_ε²)
is the share of the spread of V they explain (a Bayesian R²), per draw.

Inference. `detailed_balance.sampling.fit` samples this model like the pair models (NUTS via
nutpie, ADVI). The PyMC graph is written in whitened coordinates from the Laplace
approximation at the MAP (numpy, `FeatureDensity`): θ* = θ̂ + L_S⁻ᵀ u with S the Schur
complement (the marginal precision of θ*), and V = V̂ + C (θ* − θ̂) + B z with C = A_VV⁻¹ D Z
the regression of V on θ* and B the whitening of the conditional precision A_VV = L_w + D (the
pair models' incomplete factor, `_whiten.ilu_whitening`). Under that approximation (u, z)
are independent standard normals, so NUTS sees an almost isotropic target whatever the count
scale. `laplace_draws` samples the same Gaussian directly (the ``map`` method).

The numpy density and its Laplace factors are in `_feature_density`; `feature_least_action`
(the paper's route: θ minimising the action S[V = x·θ] directly) is in `feature_least_action`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import scipy.linalg as sla
import xarray as xr
from scipy.special import expit

from detailed_balance.data import DataError, Transitions
from detailed_balance.data.names import as_names
from detailed_balance.features import FeatureSource, Standardiser, describe_source, resolve_features

from ._feature_density import FeatureDensity, GridPoint, Laplace
from ._pairs import PairData, pair_data
from ._whiten import Whitening, ilu_whitening
from .equilibrium import MODELS, PairModel, _check_choice

EPS_PRIORS = ("normal", "student_t")
# Keys of the block whitening `_whiten` replaced. Fit files saved before carry them; they set
# only the speed of NUTS, never the posterior, so they are accepted and dropped.
RETIRED_KEYS = ("dense_limit", "low_rank")


# -- the model ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PreparedFeatures:
    """What `FeaturePotentialModel.prepare` derives from one data set: the pair arrays, the
    resolved ``feature_table`` and its ``standardiser``, the numpy ``density``, the MAP
    ``map_result`` (φ) with its Laplace factors ``laplace_fit``, the ``whitening`` (None for
    the direct parameterisation or when prepared without whitening) and ``gauge_scale`` (σ̂_ε)."""

    pairs: PairData
    feature_table: pd.DataFrame
    standardiser: Standardiser
    density: FeatureDensity
    map_result: np.ndarray
    laplace_fit: Laplace
    whitening: Whitening | None
    gauge_scale: float

    @property
    def llm(self) -> str:
        return self.pairs.llm


class FeaturePotentialModel(PairModel):
    """V = x·θ + ε with the equilibrium pair likelihood; see the module docstring.

    ``features`` is a feature source (``"builtin:words"``, ``"builtin:expressions"``, a CSV
    path, a DataFrame indexed by state, or a callable state → dict). A string source is part of
    the model's configuration (saved and compared); a table or callable is resolved at build
    time and the resolved values travel with the fit (``constant_data.features``).
    """

    name = "features"
    nonequilibrium = False
    default_model_config: dict[str, Any] = {
        "features": None,  # the feature source when it is a string (builtin:NAME or a path)
        "theta_scale": 5.0,  # prior sd of θ per standard deviation of a feature (kT)
        "sigma_eps_scale": 2.0,  # HalfNormal scale of σ_ε (kT)
        "eps_prior": "normal",  # or student_t (heavy-tailed residuals)
        "eps_nu": 4.0,  # Student-t degrees of freedom
        "reference": None,  # report V relative to this state
        "parameterization": "whitened",  # whitened (Laplace) or direct
        "ilu_drop_tol": 0.03,  # incomplete-factor drop tolerance of the whitening (0: exact)
        "ilu_fill": 5.0,  # its fill factor (nonzeros of the factor / of the curvature)
        "mean_correction": True,  # map: shift the Laplace draws by the skewness correction
    }

    def __init__(
        self,
        features: FeatureSource | None = None,
        model_config: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(features, dict) and model_config is None:
            # model_from_name(name, config) passes the config positionally.
            features, model_config = None, features
        config = dict(self.default_model_config)
        model_config = {
            key: value for key, value in (model_config or {}).items() if key not in RETIRED_KEYS
        }
        unknown = set(model_config) - set(config)
        if unknown:
            raise ValueError(
                f"unknown model_config key(s) {sorted(unknown)}; known: {sorted(config)}."
            )
        config.update(model_config)
        if features is None:
            features = config["features"]
        if features is None:
            raise ValueError(
                "FeaturePotentialModel needs features: 'builtin:words', 'builtin:expressions', "
                "a CSV path, a DataFrame indexed by state, or a callable state -> dict."
            )
        if isinstance(features, str | type(None)) or hasattr(features, "__fspath__"):
            config["features"] = str(features)
        else:
            config["features"] = describe_source(features)
        _check_choice("eps_prior", config["eps_prior"], EPS_PRIORS)
        _check_choice("parameterization", config["parameterization"], ("whitened", "direct"))
        for key in ("theta_scale", "sigma_eps_scale", "eps_nu"):
            if not float(config[key]) > 0:
                raise ValueError(f"model_config[{key!r}] = {config[key]!r} must be > 0.")
        if not float(config["ilu_drop_tol"]) >= 0 or not float(config["ilu_fill"]) >= 1:
            raise ValueError("model_config needs ilu_drop_tol >= 0 and ilu_fill >= 1.")
        self.features_source = features
        self.model_config = config

    def __repr__(self) -> str:
        return f"FeaturePotentialModel(features={self.model_config['features']!r})"

    # -- building ------------------------------------------------------------------------------
    def prepare(
        self, data: Transitions, llm: str | None = None, whiten: bool = True
    ) -> PreparedFeatures:
        """Pairs, features (standardised), the MAP and its Laplace factors and (if `whiten`
        and the parameterisation is whitened) the whitening `build_model` samples in."""
        pairs = pair_data(data, llm)
        table = resolve_features(self.features_source, as_names(pairs.states))
        standardiser = Standardiser.fit(table)
        z = standardiser.transform(table)
        density = FeatureDensity(pairs, z, self.model_config)
        phi, lap = density.find_map()
        white = None
        if whiten and self.model_config["parameterization"] == "whitened":
            white = ilu_whitening(
                lap.a_vv,
                phi[: pairs.n_states],
                float(self.model_config["ilu_drop_tol"]),
                float(self.model_config["ilu_fill"]),
            )
        return PreparedFeatures(
            pairs, table, standardiser, density, phi, lap, white, density.split(phi)[2]
        )

    def coords(self, prepared: PreparedFeatures) -> dict[str, Any]:
        return {**super().coords(prepared), "feature": list(prepared.standardiser.names)}

    def build_model(self, prepared: PreparedFeatures) -> pm.Model:
        """The `pm.Model` (whitened by the Laplace approximation unless ``direct``)."""
        pairs = prepared.pairs
        lap, dens = prepared.laplace_fit, prepared.density
        if self.model_config["parameterization"] == "whitened" and prepared.whitening is None:
            raise ValueError("build_model needs data prepared with whiten=True.")
        k, f = dens.k, dens.f
        v_hat, theta_hat, sigma_hat = dens.split(prepared.map_result)
        with pm.Model(coords=self.coords(prepared)) as model:
            sigma = pm.HalfNormal(
                "sigma_eps", sigma=float(self.model_config["sigma_eps_scale"]), initval=sigma_hat
            )
            if prepared.whitening is None:  # direct: the plain formulation
                theta = pm.Flat("theta_raw", dims="feature")
                v_raw = pm.Flat("V_raw", dims="latent")
            else:
                u = pm.Flat("theta_white", dims="feature")
                theta = theta_hat + pt.dot(sla.solve_triangular(lap.schur_chol.T, np.eye(f)), u)
                z = pm.Flat("V_white", dims="latent")
                white = prepared.whitening
                dev = white.deviation(z)
                # Partial non-centring: a state whose V the counts barely pin (prior share
                # α_f = D_f / (L_w,ff + D_f) near 1) has a deviation that scales with σ_ε, so
                # its whitened coordinate is scaled by (σ_ε/σ̂)^α_f; the Jacobian goes below.
                # Without it σ_ε and those V form a funnel (E-BFMI 0.08 at 7 calls per state).
                alpha = lap.eps_h / lap.a_vv.diagonal()
                scale = pt.exp(alpha * (pt.log(sigma) - np.log(sigma_hat)))
                v_raw = white.centre + scale * dev + pt.dot(lap.regression, theta - theta_hat)
                pm.Potential("jacobian", float(alpha.sum()) * pt.log(sigma))
            pm.Potential("theta_prior", -0.5 * pt.sum(theta**2) / dens.theta_scale**2)
            fitted = pt.dot(dens.z, theta)
            eps = v_raw - fitted
            if dens.student:
                nu = dens.nu
                eps_logp = -0.5 * (nu + 1) * pt.sum(pt.log1p(eps**2 / (nu * sigma**2)))
            else:
                eps_logp = -0.5 * pt.sum(eps**2) / sigma**2
            pm.Potential("eps_prior", eps_logp - k * pt.log(sigma))
            logit = pairs.offset + v_raw[pairs.i] - v_raw[pairs.j]
            pm.Potential(
                "likelihood", pt.sum(pairs.n_fg * logit - pairs.trials * pt.softplus(logit))
            )
            ref = self._reference_position(pairs)
            pm.Deterministic("V", v_raw if ref is None else v_raw - v_raw[ref], dims="state")
            if ref is not None:
                pm.Deterministic("V_reference", v_raw[ref])
            pm.Deterministic("theta_std", theta, dims="feature")
            pm.Deterministic("theta", theta / prepared.standardiser.scales, dims="feature")
            pm.Deterministic("V_features", fitted, dims="state")
            spread = pt.mean((fitted - pt.mean(fitted)) ** 2)
            pm.Deterministic("feature_share", spread / (spread + sigma**2))
        return model

    def _reference_position(self, pairs: PairData) -> int | None:
        reference = self.model_config["reference"]
        if reference is None:
            return None
        pos = np.flatnonzero(as_names(pairs.states) == str(reference))
        if len(pos) == 0:
            raise DataError(
                f"reference state {reference!r} is not in any modelled pair; choose a state that "
                f"has transitions with known visits."
            )
        return int(pos[0])

    # -- after sampling ------------------------------------------------------------------------
    @property
    def stored_variables(self) -> list[str]:
        names = ["V", "theta", "theta_std", "sigma_eps", "V_features", "feature_share"]
        return names + (["V_reference"] if self.model_config["reference"] is not None else [])

    @property
    def sampler_variables(self) -> list[str]:
        return self.stored_variables  # the sampler stores all of them (no `expand` here)

    window_switch_freq = 80  # nutpie's default: σ_ε is sampled from a point estimate

    def expand(self, prepared: PreparedFeatures, posterior: xr.Dataset) -> xr.Dataset:
        return posterior[self.stored_variables]

    def laplace_draws(
        self,
        prepared: PreparedFeatures,
        draws: int,
        seed: int | np.random.Generator | None = None,
    ) -> dict:
        """Draws of the stored variables from the Laplace approximation (the ``map`` method).

        log σ_ε: a 5-point quadrature over its Laplace-marginal posterior (`sigma_grid`; draws
        jittered uniformly within a node's cell). At each node, (V, θ*) come from the joint
        Gaussian at the conditional mode — θ* from its Schur-complement marginal, V | θ* by
        perturb-then-solve with the sparse factor — shifted by the third-order mean correction
        (`mean_shift`). Returns arrays with a leading draw axis, in random order.
        """
        rng = np.random.default_rng(seed)
        grid = prepared.density.sigma_grid(prepared.map_result, prepared.laplace_fit)
        counts = rng.multinomial(draws, [p.weight for p in grid])
        parts = [
            self._node_draws(prepared, p, n, rng) for p, n in zip(grid, counts, strict=True) if n
        ]
        v, theta, log_sigma = (np.concatenate(x) for x in zip(*parts, strict=True))
        order = rng.permutation(draws)
        return self.derived(prepared, v[order], theta[order], np.exp(log_sigma[order]))

    def _node_draws(
        self, prepared: PreparedFeatures, point: GridPoint, draws: int, rng: np.random.Generator
    ):
        dens, lap = prepared.density, point.laplace
        v_hat, theta_hat, _ = dens.split(point.phi)
        d_v, d_theta = dens.gaussian_draws(lap, dens.noise(draws, rng))
        shift = np.zeros(dens.k + dens.f)
        if self.model_config["mean_correction"]:
            # Var x from the fixed 128-draw noise, not from this node's (maybe few) draws.
            fixed = dens.gaussian_draws(lap, dens.fixed_noise())[0]
            shift = self.mean_shift(prepared, fixed, point.phi, lap)
        theta = (theta_hat + shift[dens.k :])[:, None] + d_theta
        v = (v_hat + shift[: dens.k])[:, None] + d_v
        jitter = (rng.random(draws) - 0.5) * point.spacing
        return v.T, theta.T, point.log_sigma + jitter

    def mean_shift(
        self, prepared: PreparedFeatures, d_v: np.ndarray, phi: np.ndarray, lap: Laplace
    ) -> np.ndarray:
        """Posterior mean − mode of (V, θ*) to third order: ½ A⁻¹ Eᵀ (ℓ‴ ⊙ Var x).

        The binomial log-likelihood of a pair is skewed in its logit x (ℓ‴ = −w (1 − 2p)):
        a pair seen mostly one way pins x from one side only, so the mode sits closer to the
        gauge than the mean, and θ read off the mode is attenuated towards 0 (measured: half a
        posterior sd on simulated landscapes). Var x per pair comes from the Laplace draws
        `d_v` (K × draws, centred); one more solve with the same factors gives the shift.
        """
        pairs, dens = prepared.pairs, prepared.density
        var_x = np.var(d_v[pairs.i] - d_v[pairs.j], axis=1)
        p = expit(pairs.offset + phi[pairs.i] - phi[pairs.j])
        third = -lap.weights * (1 - 2 * p)
        b = np.bincount(pairs.i, third * var_x, dens.k) - np.bincount(
            pairs.j, third * var_x, dens.k
        )
        grad = np.concatenate([-0.5 * b, np.zeros(dens.f + 1)])
        return dens.newton_step(lap, grad)

    def derived(
        self, prepared: PreparedFeatures, v: np.ndarray, theta_std: np.ndarray, sigma: np.ndarray
    ) -> dict:
        """The stored variables from draws of V (draws, K), θ* (draws, F) and σ_ε (draws,)."""
        ref = self._reference_position(prepared.pairs)
        fitted = theta_std @ prepared.density.z.T
        spread = fitted.var(axis=1)
        out = {
            "V": v if ref is None else v - v[:, [ref]],
            "theta": theta_std / prepared.standardiser.scales,
            "theta_std": theta_std,
            "sigma_eps": sigma,
            "V_features": fitted,
            "feature_share": spread / (spread + sigma**2),
        }
        if ref is not None:
            out["V_reference"] = v[:, ref]
        return out

    def laplace(self, prepared: PreparedFeatures, draws: int, seed: int) -> xr.DataTree:
        """The ``map`` method's posterior: `laplace_draws` in the contract layout (one chain)."""
        values = self.laplace_draws(prepared, draws, seed)
        dims = {
            "V": ("state",),
            "theta": ("feature",),
            "theta_std": ("feature",),
            "V_features": ("state",),
        }
        variables = {
            name: (("chain", "draw", *dims.get(name, ())), value[None])
            for name, value in values.items()
        }
        coords = {
            "chain": [0],
            "draw": np.arange(draws),
            "state": as_names(prepared.pairs.states),
            "feature": list(prepared.standardiser.names),
        }
        v, theta, sigma = prepared.density.split(prepared.map_result)
        stats = xr.Dataset(
            {
                "map_sigma_eps": sigma,
                "map_log_sigma_curvature": prepared.laplace_fit.log_sigma_curvature,
            }
        )
        return xr.DataTree.from_dict(
            {"/posterior": xr.Dataset(variables, coords=coords), "/map": stats}
        )

    def constant_data(self, prepared: PreparedFeatures) -> xr.Dataset:
        """The pair arrays plus the raw features of the modelled states and their
        standardisation: ``features`` (state, feature), ``feature_mean``, ``feature_scale``
        (feature); attrs ``features_source`` and ``dropped_features`` (JSON list)."""
        std = prepared.standardiser
        names = list(std.names)
        table = prepared.feature_table
        return (
            super()
            .constant_data(prepared)
            .assign_coords(feature=names)
            .assign(
                features=(("state", "feature"), table[names].to_numpy(float)),
                feature_mean=(("feature",), std.means),
                feature_scale=(("feature",), std.scales),
            )
            .assign_attrs(
                features_source=self.model_config["features"],
                dropped_features=json.dumps(list(std.dropped)),
            )
        )


MODELS["features"] = FeaturePotentialModel  # so load_fit / model_from_name know it

__all__ = ["FeaturePotentialModel", "PreparedFeatures"]
