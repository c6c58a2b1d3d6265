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
pair models' `whitening`). Under that approximation (u, z) are independent standard normals,
so NUTS sees an almost isotropic target whatever the count scale. `laplace_draws` samples the
same Gaussian directly (the ``map`` method).

`feature_least_action` is the paper's route: θ minimising the action S[V = x·θ] directly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import scipy.linalg as sla
import scipy.sparse.linalg as spla
import xarray as xr
from scipy.optimize import brentq, minimize
from scipy.special import expit

from detailed_balance.data import DataError, Transitions
from detailed_balance.data.names import as_names
from detailed_balance.features import (
    FeatureSource,
    Standardiser,
    describe_source,
    resolve_features,
)

from ._density import block_pcg, incidence, laplacian, softplus, whitening
from ._pairs import PairData, pair_data
from .equilibrium import MODELS, PairModel, _check_choice
from .least_action import kernel_values

EPS_PRIORS = ("normal", "student_t")


# -- the density in numpy -------------------------------------------------------------------
class FeatureDensity:
    """−log posterior of the feature model in φ = [V (K), θ* (F), log σ_ε] and its MAP/Laplace."""

    def __init__(self, pairs: PairData, z: np.ndarray, config: dict[str, Any]) -> None:
        self.pairs = pairs
        self.z = np.asarray(z, dtype=float)
        self.k, self.f = self.z.shape
        self.trials = pairs.trials
        self.offset = pairs.offset
        self.theta_scale = float(config["theta_scale"])
        self.sigma_scale = float(config["sigma_eps_scale"])
        self.student = config["eps_prior"] == "student_t"
        self.nu = float(config["eps_nu"])

    @property
    def size(self) -> int:
        return self.k + self.f + 1

    def split(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        return phi[: self.k], phi[self.k : self.k + self.f], float(np.exp(phi[-1]))

    def _eps_terms(self, eps: np.ndarray, sigma: float) -> tuple[float, np.ndarray, float]:
        """−log prior of ε (incl. K log σ), its gradient in ε and its derivative in log σ."""
        if self.student:
            nu = self.nu
            denom = nu * sigma**2 + eps**2
            value = 0.5 * (nu + 1) * np.sum(np.log1p(eps**2 / (nu * sigma**2)))
            grad = (nu + 1) * eps / denom
            d_log_sigma = -np.sum((nu + 1) * eps**2 / denom)
        else:
            value = 0.5 * np.sum(eps**2) / sigma**2
            grad = eps / sigma**2
            d_log_sigma = -np.sum(eps**2) / sigma**2
        return float(value + self.k * math.log(sigma)), grad, float(d_log_sigma + self.k)

    def eps_curvature(self, eps: np.ndarray, sigma: float) -> np.ndarray:
        """∂²(−log prior)/∂ε² per state (Student-t clipped positive: it is not log-concave)."""
        if self.student:
            nu = self.nu
            denom = nu * sigma**2 + eps**2
            h = (nu + 1) * (nu * sigma**2 - eps**2) / denom**2
            return np.maximum(h, 1e-3 / sigma**2)
        return np.full(len(eps), 1.0 / sigma**2)

    def neg_logp_grad(self, phi: np.ndarray) -> tuple[float, np.ndarray]:
        pairs = self.pairs
        v, theta, sigma = self.split(phi)
        x = self.offset + v[pairs.i] - v[pairs.j]
        resid = pairs.n_fg - self.trials * expit(x)
        value = -float(np.sum(pairs.n_fg * x - self.trials * softplus(x)))
        grad = np.zeros(self.size)
        grad[: self.k] = -(
            np.bincount(pairs.i, resid, self.k) - np.bincount(pairs.j, resid, self.k)
        )
        eps = v - self.z @ theta
        prior, g_eps, d_ls = self._eps_terms(eps, sigma)
        value += prior
        grad[: self.k] += g_eps
        grad[self.k : self.k + self.f] = -(self.z.T @ g_eps) + theta / self.theta_scale**2
        value += 0.5 * float(theta @ theta) / self.theta_scale**2
        # σ ~ HalfNormal(scale), sampled as log σ (Jacobian + log σ).
        value += 0.5 * sigma**2 / self.sigma_scale**2 - math.log(sigma)
        grad[-1] = d_ls + sigma**2 / self.sigma_scale**2 - 1.0
        return value, grad

    def conditional_mode(
        self, log_sigma: float, start: np.ndarray | None = None, max_steps: int = 100
    ) -> np.ndarray:
        """argmin over (V, θ*) of −log p at fixed σ_ε (convex for normal ε): damped Newton,
        each step one sparse factorisation of A_VV and an F × F Schur solve (see `newton_step`).
        """
        phi = np.zeros(self.size) if start is None else np.array(start, float)
        phi[-1] = log_sigma
        value, grad = self.neg_logp_grad(phi)
        for _ in range(max_steps):
            lap = self.laplace(phi)
            step = self.newton_step(lap, grad)
            decrement = -float(step @ grad[:-1])
            if decrement < 1e-10:
                break
            t = 1.0
            while t > 1e-8:
                trial = phi.copy()
                trial[:-1] += t * step
                new_value, new_grad = self.neg_logp_grad(trial)
                if new_value <= value - 1e-4 * t * decrement:
                    break
                t *= 0.5
            else:
                break
            phi, value, grad = trial, new_value, new_grad
        return phi

    def newton_step(self, lap: Laplace, grad: np.ndarray) -> np.ndarray:
        """δ = −A⁻¹ g for (V, θ*) by block elimination: S δθ = −g_θ − (DZ)ᵀ A_VV⁻¹ g_V,
        δV = −A_VV⁻¹ g_V + C δθ."""
        g_v, g_t = grad[: self.k], grad[self.k : self.k + self.f]
        y = np.asarray(lap.solver.solve(g_v)).ravel()
        dz = lap.eps_h[:, None] * self.z
        d_theta = sla.cho_solve((lap.schur_chol, True), -g_t - dz.T @ y)
        return np.concatenate([-y + lap.regression @ d_theta, d_theta])

    def laplace(self, phi: np.ndarray) -> Laplace:
        """The Gaussian approximation at φ (a conditional mode): A_VV = L_w + D, C = A_VV⁻¹ D Z
        and the Cholesky factor of the Schur complement S (θ*'s marginal precision)."""
        pairs = self.pairs
        v, theta, sigma = self.split(phi)
        x = self.offset + v[pairs.i] - v[pairs.j]
        p = expit(x)
        w = self.trials * p * (1 - p)
        h = self.eps_curvature(v - self.z @ theta, sigma)
        a_vv = laplacian(pairs.i, pairs.j, w, self.k, h)
        solver = Solver(a_vv)
        dz = h[:, None] * self.z
        c = np.asarray(solver.solve(dz)).reshape(self.k, self.f)
        schur = self.z.T @ dz - dz.T @ c + np.eye(self.f) / self.theta_scale**2
        chol = np.linalg.cholesky(0.5 * (schur + schur.T))
        return Laplace(phi, w, h, a_vv, solver, c, chol)

    def gaussian_draws(
        self, lap: Laplace, noise: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Centred draws (δV (K × R), δθ* (F × R)) of N(0, A⁻¹) from standard normals
        ``(u (F × R), ξ (P × R), η (K × R))``: δθ* = L_S⁻ᵀ u, δV = A_VV⁻¹ b + C δθ* with
        b = Eᵀ √w ξ + √D η ~ N(0, A_VV) (perturb-then-solve)."""
        u, xi, eta = noise
        pairs = self.pairs
        d_theta = sla.solve_triangular(lap.schur_chol.T, u, lower=False)
        e = incidence(pairs.i, pairs.j, self.k)
        rhs = e.T @ (np.sqrt(lap.weights)[:, None] * xi) + np.sqrt(lap.eps_h)[:, None] * eta
        d_v = np.asarray(lap.solver.solve(np.asarray(rhs))).reshape(self.k, -1)
        return d_v + lap.regression @ d_theta, d_theta

    def noise(self, draws: int, rng: np.random.Generator) -> tuple:
        return (
            rng.standard_normal((self.f, draws)),
            rng.standard_normal((self.pairs.n_pairs, draws)),
            rng.standard_normal((self.k, draws)),
        )

    def fixed_noise(self, draws: int = 128) -> tuple:
        """Standard normals drawn once (seed 0): common random numbers for the σ_ε score and
        the mean correction, so the `map` method is deterministic given its seed."""
        if getattr(self, "_noise", None) is None:
            self._noise = self.noise(draws, np.random.default_rng(0))
        return self._noise

    def sigma_score(self, log_sigma: float, start: np.ndarray | None, noise: tuple):
        """d/d log σ of −log p(log σ_ε | data) (Laplace over (V, θ*)), with the conditional mode
        and factors there. By the envelope theorem it is ∂U/∂log σ at the conditional mode plus
        ½ tr(A⁻¹ ∂A/∂log σ) = ½ Σ_f ∂D_f/∂log σ · Var(ε_f), the variances estimated from
        Gaussian draws with fixed `noise` (common random numbers keep the score smooth in σ;
        no determinant, so no sparse factorisation is needed at any size)."""
        phi = self.conditional_mode(log_sigma, start)
        lap = self.laplace(phi)
        d_v, d_theta = self.gaussian_draws(lap, noise)
        var_eps = np.mean((d_v - self.z @ d_theta) ** 2, axis=1)
        pairs = self.pairs
        var_x = np.mean((d_v[pairs.i] - d_v[pairs.j]) ** 2, axis=1)
        v, theta, sigma = self.split(phi)
        eps = v - self.z @ theta
        step = 1e-4
        dh = (
            self.eps_curvature(eps, sigma * math.exp(step))
            - self.eps_curvature(eps, sigma * math.exp(-step))
        ) / (2 * step)
        # The mode moves with σ (dφ̂/dlog σ = −A⁻¹ ∂²U/∂φ∂log σ), and the pair curvatures
        # w_p = m p (1 − p) move with it: ½ Σ_p w′_p Var(x_p) dx̂_p/dlog σ.
        cross = dh * eps
        dphi = self.newton_step(lap, np.concatenate([cross, -(self.z.T @ cross), [0.0]]))
        p = expit(self.offset + v[pairs.i] - v[pairs.j])
        dw = lap.weights * (1 - 2 * p)
        dx = dphi[pairs.i] - dphi[pairs.j]
        score = (
            self.neg_logp_grad(phi)[1][-1]
            + 0.5 * float(dh @ var_eps)
            + 0.5 * float(np.sum(dw * var_x * dx))
        )
        return score, phi, lap

    def find_map(self) -> tuple[np.ndarray, Laplace]:
        """The mode of log σ_ε's Laplace-marginal posterior (a root of `sigma_score`) and the
        conditional mode of (V, θ*) there, with the marginal's curvature in log σ_ε. (The joint
        mode is useless here: the density grows without bound as σ_ε → 0 with V = z·θ*
        exactly, the funnel of every hierarchical model.)"""
        noise = self.fixed_noise()
        warm: list[np.ndarray | None] = [None]
        cache: dict[float, tuple] = {}

        def score(log_sigma: float) -> float:
            if float(log_sigma) in cache:
                return cache[float(log_sigma)][0]
            value, phi, lap = self.sigma_score(float(log_sigma), warm[0], noise)
            warm[0] = phi
            cache[float(log_sigma)] = (value, phi, lap)
            return value

        # Bracket the root by unit steps in log σ from σ = 1 kT: the score is increasing, and
        # extreme σ (where its Monte Carlo trace term is noisier than the score) is avoided.
        lo_limit, hi_limit = math.log(1e-3), math.log(10.0 * self.sigma_scale)
        lo = hi = 0.0
        if score(0.0) > 0:
            while lo > lo_limit and score(lo - 1.0) > 0:
                lo -= 1.0
            lo, hi = max(lo - 1.0, lo_limit), lo
        else:
            while hi < hi_limit and score(hi + 1.0) < 0:
                hi += 1.0
            lo, hi = hi, min(hi + 1.0, hi_limit)
        if (score(lo) > 0) == (score(hi) > 0):  # no sign change inside the limits
            best = lo if score(lo) > 0 else hi
        else:
            best = float(brentq(score, lo, hi, xtol=2e-3))
        _, phi, lap = cache.get(best) or self.sigma_score(best, warm[0], noise)
        step = 0.05
        g_hi = self.sigma_score(best + step, phi, noise)[0]
        g_lo = self.sigma_score(best - step, phi, noise)[0]
        lap.log_sigma_curvature = max((g_hi - g_lo) / (2 * step), 1.0)
        return phi, lap

    def sigma_grid(
        self, phi: np.ndarray, lap: Laplace, nodes: tuple[int, ...] = (-2, -1, 0, 1, 2)
    ) -> list[GridPoint]:
        """Quadrature over log σ_ε (INLA's grid strategy): nodes at the mode ± whole marginal
        sds, weighted by the Laplace-marginal density (its log-differences integrated from the
        score by the trapezoid rule), each with its own conditional mode and factors. θ's
        spread then includes the uncertainty of the pooling scale."""
        best = float(phi[-1])
        sd = 1.0 / math.sqrt(lap.log_sigma_curvature)
        noise = self.fixed_noise()
        points = {0: GridPoint(best, 0.0, phi, lap, sd)}
        scores = {0: 0.0}
        for direction in (1, -1):
            for t in range(1, max(abs(n) for n in nodes) + 1):
                prev = points[direction * (t - 1)]
                g, phi_t, lap_t = self.sigma_score(best + direction * t * sd, prev.phi, noise)
                scores[direction * t] = g
                # log p(s) − log p(ŝ) = −∫ score ds from ŝ (trapezoid), signed by direction
                log_drop = prev.weight - direction * 0.5 * sd * (scores[direction * (t - 1)] + g)
                points[direction * t] = GridPoint(
                    best + direction * t * sd, log_drop, phi_t, lap_t, sd
                )
        chosen = [points[t] for t in nodes]
        weights = np.exp(np.array([p.weight for p in chosen]))
        weights /= weights.sum()
        for point, weight in zip(chosen, weights, strict=True):
            point.weight = float(weight)
        return chosen


class Solver:
    """Solves A_VV X = B for the SPD A_VV = L_w + D: a sparse LU up to `lu_limit` states
    (exact and instant there), block conjugate gradients with a Jacobi preconditioner above
    (the diagonal D keeps A_VV well conditioned, and a random graph's factor fills in badly:
    at 7,400 states one LU costs seconds, a CG solve milliseconds)."""

    def __init__(self, matrix, lu_limit: int = 3000, tol: float = 1e-10) -> None:
        self.matrix = matrix.tocsc()
        self.tol = tol
        self.inv_diag = 1.0 / self.matrix.diagonal()
        self.lu = None
        if matrix.shape[0] <= lu_limit:
            self.lu = spla.splu(
                self.matrix,
                permc_spec="MMD_AT_PLUS_A",
                diag_pivot_thresh=0.0,
                options={"SymmetricMode": True},
            )
        else:
            self.csr = self.matrix.tocsr()

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        if self.lu is not None:
            return self.lu.solve(np.asarray(rhs, dtype=float))
        return block_pcg(self.csr, np.asarray(rhs, dtype=float), self.inv_diag, self.tol, 100_000)


@dataclass
class GridPoint:
    """One log σ_ε node of `FeatureDensity.sigma_grid`: its weight, mode and factors."""

    log_sigma: float
    weight: float
    phi: np.ndarray
    laplace: Laplace
    spacing: float = 0.0


@dataclass
class Laplace:
    """Factors of the Gaussian approximation (see `FeatureDensity.laplace`)."""

    phi: np.ndarray
    weights: np.ndarray  # w_p per pair
    eps_h: np.ndarray  # D: prior curvature of ε per state
    a_vv: Any  # sparse L_w + D
    solver: Solver
    regression: np.ndarray  # C = A_VV⁻¹ D Z  (K × F)
    schur_chol: np.ndarray  # L with S = L Lᵀ
    log_sigma_curvature: float = 1.0  # of −log p(log σ_ε | data) at its mode


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
    whitening: Any
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
        "dense_limit": 50,  # components up to this size are whitened exactly (dense)
        "low_rank": 16,  # softest modes corrected in larger components
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
        unknown = set(model_config or {}) - set(config)
        if unknown:
            raise ValueError(
                f"unknown model_config key(s) {sorted(unknown)}; known: {sorted(config)}."
            )
        config.update(model_config or {})
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
            white = whitening(
                lap.a_vv.tocsc(),
                pairs.component,
                phi[: pairs.n_states],
                int(self.model_config["dense_limit"]),
                int(self.model_config["low_rank"]),
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
                dev = pt.zeros(k)[white.rows].inc(white.values * z[white.cols])
                if len(white.coef):
                    dev = dev + pt.dot(white.basis, white.coef * pt.dot(white.basis_in.T, z))
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


# -- the paper's route: θ by least action ---------------------------------------------------------
@dataclass
class FeatureLeastAction:
    """θ minimising the paper's action with V = x·θ (see `feature_least_action`)."""

    theta: pd.Series  # per unit of the original feature
    theta_std: pd.Series  # per standard deviation of the feature
    potentials: pd.Series  # x·θ per state (centred over the featured states)
    action: float  # (1/#states) Σ w K(V_f − V_g) at the optimum
    converged: bool
    iterations: int
    gradient_max: float
    runaway: bool  # some direction of θ keeps lowering the action: θ is not finite there
    dropped: tuple[str, ...] = ()
    settings: dict = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """``feature, theta, theta_std``."""
        return pd.DataFrame(
            {
                "feature": self.theta.index,
                "theta": self.theta.to_numpy(),
                "theta_std": self.theta_std.to_numpy(),
            }
        )


def feature_least_action(
    data: Transitions,
    features: FeatureSource,
    *,
    llm: str | None = None,
    kernel: str = "softplus",
    ridge: float = 0.0,
    maxiter: int = 20_000,
    gtol: float = 1e-9,
) -> FeatureLeastAction:
    """θ = argmin S[x·θ], S = (1/#states) Σ_{f→g} min(1, n_fg/N₀(f)) K(V_f − V_g) (PAPER.md).

    The action is convex in θ (K is convex and V is linear in θ), so L-BFGS-B with the analytic
    gradient ∂S/∂θ = Zᵀ ∂S/∂V finds the global minimum; cost O(moves × features) per step.
    Features are standardised over the states that move or are moved to; θ is returned in
    original units. Moves whose source has no known visits are left out (no rate). With no
    regulariser (the paper's choice, ``ridge=0``) θ runs off to infinity along any feature
    direction that points downhill along every move it changes (the feature analogue of an
    unbounded potential): the optimiser stops where the kernel has flattened, and ``runaway``
    says so (see `_runaway`); a small ``ridge`` (penalty ½ ridge |θ*|²) keeps θ finite.
    """
    moves = data.moves(_llm(data, llm))
    rate = moves["rate"].to_numpy(float)
    keep = np.isfinite(rate) & (rate > 0)
    moves = moves[keep]
    if moves.empty:
        raise DataError("no move with a known visit count; the action is empty.")
    used, inverse = np.unique(
        np.concatenate([moves["i"].to_numpy(), moves["j"].to_numpy()]), return_inverse=True
    )
    src, dst = inverse[: len(moves)], inverse[len(moves) :]
    names = as_names(data.states.to_numpy()[used])
    table = resolve_features(features, names)
    std = Standardiser.fit(table)
    z = std.transform(table)
    weight = moves["rate"].to_numpy(float)
    n_states = data.n_states

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        v = z @ theta
        value, slope, _ = kernel_values(v[src] - v[dst], kernel)
        flux = weight * slope
        grad_v = np.bincount(src, flux, len(used)) - np.bincount(dst, flux, len(used))
        total = float(weight @ value) + 0.5 * ridge * float(theta @ theta)
        return total, z.T @ grad_v + ridge * theta

    result = minimize(
        objective,
        np.zeros(z.shape[1]),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": maxiter, "ftol": 1e-15, "gtol": gtol},
    )
    theta_std = result.x
    grad = objective(theta_std)[1]
    v = z @ theta_std
    runaway = _runaway(z[src] - z[dst], weight, v[src] - v[dst], kernel, ridge)
    feats = list(std.names)
    return FeatureLeastAction(
        theta=pd.Series(std.to_original(theta_std), index=feats, name="theta"),
        theta_std=pd.Series(theta_std, index=feats, name="theta_std"),
        potentials=pd.Series(v - v.mean(), index=names, name="potential"),
        action=float(result.fun - 0.5 * ridge * float(theta_std @ theta_std)) / n_states,
        converged=bool(np.max(np.abs(grad)) <= max(gtol, 1e-6) * max(1.0, weight.sum())),
        iterations=int(result.nit),
        gradient_max=float(np.max(np.abs(grad))),
        runaway=runaway,
        dropped=std.dropped,
        settings={"kernel": kernel, "ridge": ridge, "features": describe_source(features)},
    )


def _runaway(edge_z: np.ndarray, weight: np.ndarray, x: np.ndarray, kernel: str, ridge: float):
    """True when the action is flat in some direction of θ* at the optimum: its curvature
    there, relative to the curvature the same direction has with every move at x = 0 (where
    K″ = 1/4 for both kernels), is below 1e-6 — the kernel has flattened because θ ran off
    (or the direction changes no move at all)."""
    reference = edge_z.T @ ((0.25 * weight)[:, None] * edge_z)
    eig0 = np.linalg.eigvalsh(reference)
    if eig0[0] <= 1e-12 * max(eig0[-1], 1e-300):
        return True
    curvature = kernel_values(x, kernel)[2] * weight
    hessian = edge_z.T @ (curvature[:, None] * edge_z) + ridge * np.eye(edge_z.shape[1])
    chol = np.linalg.cholesky(reference)
    scaled = sla.solve_triangular(
        chol, sla.solve_triangular(chol, hessian, lower=True).T, lower=True
    )
    return bool(np.linalg.eigvalsh(0.5 * (scaled + scaled.T))[0] < 1e-6)


def _llm(data: Transitions, llm: str | None) -> str:
    if llm is None:
        if len(data.llms) != 1:
            raise DataError(f"the data has several LLMs ({', '.join(data.llms)}); pass llm=NAME.")
        return data.llms[0]
    return llm


MODELS["features"] = FeaturePotentialModel  # so load_fit / model_from_name know it

__all__ = [
    "FeatureDensity",
    "FeatureLeastAction",
    "FeaturePotentialModel",
    "feature_least_action",
]
