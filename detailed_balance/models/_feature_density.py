"""The feature model's density in numpy: −log posterior in φ = [V, θ*, log σ_ε], its MAP
and Laplace factors (`FeatureDensity`), the A_VV solver and the σ_ε grid. The PyMC model that
uses them is `features.FeaturePotentialModel` (see that module's docstring for the model)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.sparse.linalg as spla
from scipy.special import expit

from ._density import block_pcg, incidence, laplacian, softplus
from ._pairs import PairData
from ._scales import marginal_curvature, marginal_grid, marginal_mode


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

    def _score(self, noise: tuple):
        """`sigma_score` as the fitted-scale driver's score: payload (φ*, Laplace factors)."""

        def score(log_sigma: float, warm: tuple | None) -> tuple[float, tuple]:
            value, phi, lap = self.sigma_score(log_sigma, None if warm is None else warm[0], noise)
            return value, (phi, lap)

        return score

    def find_map(self) -> tuple[np.ndarray, Laplace]:
        """The mode of log σ_ε's Laplace-marginal posterior (a root of `sigma_score`, found by
        `_scales.marginal_mode` from σ = 1 kT) and the conditional mode of (V, θ*) there,
        with the marginal's curvature in log σ_ε. (The joint mode is useless here: the
        density grows without bound as σ_ε → 0 with V = z·θ* exactly, the funnel of every
        hierarchical model.)"""
        score = self._score(self.fixed_noise())
        # Unit steps in log σ from σ = 1 kT bracket the root; extreme σ (where the score's
        # Monte Carlo trace term is noisier than the score) is avoided by the limits.
        lo_limit, hi_limit = math.log(1e-3), math.log(10.0 * self.sigma_scale)
        best, (phi, lap) = marginal_mode(score, 0.0, lo_limit, hi_limit)
        lap.log_sigma_curvature = marginal_curvature(score, best, (phi, lap))
        return phi, lap

    def sigma_grid(
        self, phi: np.ndarray, lap: Laplace, nodes: tuple[int, ...] = (-2, -1, 0, 1, 2)
    ) -> list[GridPoint]:
        """Quadrature over log σ_ε (`_scales.marginal_grid`, INLA's grid strategy): nodes at
        the mode ± whole marginal sds, weighted by the Laplace-marginal density, each with its
        own conditional mode and factors. θ's spread then includes the uncertainty of the
        pooling scale."""
        sd = 1.0 / math.sqrt(lap.log_sigma_curvature)
        grid = marginal_grid(self._score(self.fixed_noise()), float(phi[-1]), (phi, lap), sd, nodes)
        return [GridPoint(n.s, n.weight, n.payload[0], n.payload[1], n.spacing) for n in grid]


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


__all__ = ["FeatureDensity", "GridPoint", "Laplace", "Solver"]
