"""The pair models' log posterior in numpy, its MAP, Laplace draws and the whitening map.

The same density is written twice: here in numpy (fast MAP, Laplace approximation, the
preconditioner) and in PyTensor by `equilibrium.py` (NUTS, ADVI). Both work in the same
unconstrained space θ = [V_raw (K), log σ_V (if fitted), a (P) and log τ_A (non-equilibrium)],
and a test checks that they agree up to a constant.

Terms (x_p = log(N_f/N_g) + V_f − V_g + τ_A a_p for pair p = (f, g), m = n_fg + n_gf):

- likelihood Σ n_fg x − m softplus(x)  (conditional binomial, constant dropped);
- prior on the centred V (`PairData.centre`): Normal(0, V_scale) ("wide"), Normal(0, σ_V) or
  StudentT(ν, 0, σ_V) with σ_V ~ HalfNormal(V_scale) ("normal", "student_t");
- a gauge term −½ Σ_c G_c (w·V)_c² on the raw component means, which the likelihood and the
  prior do not see: it makes the density proper without touching the posterior of centred V;
- non-equilibrium: a ~ Normal(0, 1), τ_A ~ HalfNormal / HalfCauchy(tau_A_scale).

Curvature. At the MAP the Hessian of −log p in V is the weighted graph Laplacian
L_w (w_p = m σ(x)(1 − σ(x))) plus the prior's curvature h on the diagonal. A whitening turns
it into a fixed linear map V = V* + B z under which the posterior in z is close to N(0, I):
the pair models and the feature model both use `_whiten` (an incomplete sparse factor of the
Laplace precision, exact on small graphs).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.optimize import minimize
from scipy.special import expit, gammaln
from threadpoolctl import threadpool_limits

from ._loglik import pointwise_loglik_jit
from ._pairs import PairData
from ._whiten import ilu_whitening

A_PAIRS = ("two_way", "all")


def antisymmetric_mask(pairs: PairData, config: dict[str, Any]) -> np.ndarray:
    """1.0 on the pairs that carry an antisymmetric term A, else 0.0.

    "all" (default): every modelled pair. "two_way": only pairs seen in both directions; a
    pair seen one way fits any large enough |x|, so its A is not identified by that pair.
    Loop affinities only involve two-way pairs (all six edges seen), so they are the same.
    """
    if config.get("A_pairs", "all") == "all":
        return np.ones(pairs.n_pairs)
    return ((pairs.n_fg > 0) & (pairs.n_gf > 0)).astype(float)


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def pointwise_loglik(
    n_fg: np.ndarray,
    trials: np.ndarray,
    offset: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    v: np.ndarray,
    a: np.ndarray | None = None,
) -> np.ndarray:
    """log Binomial(n_fg | m, logit⁻¹ x) per (draw, pair), x = offset + V_f − V_g (+ A_fg),
    for V draws `v` (D, K) and A draws `a` (D, P): what LOO needs. One numba pass, draws in
    parallel, no temporaries beyond one row per thread (numpy's whole-array temporaries set
    the peak memory at 10× paper scale)."""
    v = np.ascontiguousarray(v, dtype=float)
    a = np.zeros((0, len(offset))) if a is None else np.ascontiguousarray(a, dtype=float)
    const = binomial_const(n_fg, trials)
    args = (n_fg, trials, const, offset)
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    return pointwise_loglik_jit(*(np.asarray(x, dtype=float) for x in args), i, j, v, a)


def binomial_const(n_fg: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """log C(m, n_fg): the part of the binomial log-likelihood that no parameter touches."""
    return gammaln(trials + 1) - gammaln(n_fg + 1) - gammaln(trials - n_fg + 1)


@dataclass
class Layout:
    """Where each block lives in θ."""

    n_states: int
    n_pairs: int
    fitted_sigma: bool
    nonequilibrium: bool

    @property
    def size(self) -> int:
        return (
            self.n_states
            + int(self.fitted_sigma)
            + (self.n_pairs + 1 if self.nonequilibrium else 0)
        )

    @property
    def v(self) -> slice:
        return slice(0, self.n_states)

    @property
    def s_v(self) -> int:
        return self.n_states

    @property
    def a(self) -> slice:
        start = self.n_states + int(self.fitted_sigma)
        return slice(start, start + self.n_pairs)

    @property
    def s_tau(self) -> int:
        return self.n_states + int(self.fitted_sigma) + self.n_pairs


class PairDensity:
    """−log posterior and gradient of a pair model in θ (numpy, vectorised over pairs)."""

    def __init__(
        self,
        pairs: PairData,
        config: dict[str, Any],
        nonequilibrium: bool,
        gauge_scale: float | None = None,
    ) -> None:
        self.pairs = pairs
        self.config = config
        self.prior = config["V_prior"]
        self.layout = Layout(pairs.n_states, pairs.n_pairs, self.prior != "wide", nonequilibrium)
        self.trials = pairs.trials
        self.offset = pairs.offset
        scale = float(gauge_scale or config["V_scale"])
        self.gauge = pairs.component_sizes / scale**2
        self.dof = pairs.n_states - pairs.n_components
        self.a_mask = antisymmetric_mask(pairs, config) if nonequilibrium else np.zeros(0)

    # -- pieces --------------------------------------------------------------------------
    def sigma(self, theta: np.ndarray) -> float:
        if self.layout.fitted_sigma:
            return float(np.exp(theta[self.layout.s_v]))
        return float(self.config["V_scale"])

    def tau(self, theta: np.ndarray) -> float:
        return float(np.exp(theta[self.layout.s_tau])) if self.layout.nonequilibrium else 0.0

    def logit(self, theta: np.ndarray) -> np.ndarray:
        v = theta[self.layout.v]
        x = self.offset + v[self.pairs.i] - v[self.pairs.j]
        if self.layout.nonequilibrium:
            x = x + self.tau(theta) * self.a_mask * theta[self.layout.a]
        return x

    def prior_v(self, centred: np.ndarray, sigma: float) -> tuple[float, np.ndarray, float]:
        """log prior of centred V, its gradient in V_c and its derivative in σ."""
        if self.prior == "student_t":
            nu = float(self.config["V_nu"])
            denom = nu * sigma**2 + centred**2
            logp = -(nu + 1) / 2 * np.sum(np.log1p(centred**2 / (nu * sigma**2)))
            grad = -(nu + 1) * centred / denom
            d_sigma = (nu + 1) * np.sum(centred**2 / (sigma * denom))
        else:
            logp = -0.5 * np.sum(centred**2) / sigma**2
            grad = -centred / sigma**2
            d_sigma = np.sum(centred**2) / sigma**3
        if self.layout.fitted_sigma:
            logp -= self.dof * np.log(sigma)
            d_sigma -= self.dof / sigma
        return float(logp), grad, float(d_sigma)

    def prior_curvature(self, centred: np.ndarray, sigma: float) -> np.ndarray:
        """−∂² log prior / ∂V_c² per state (clipped positive: Student-t is not log-concave)."""
        if self.prior == "student_t":
            nu = float(self.config["V_nu"])
            denom = nu * sigma**2 + centred**2
            h = (nu + 1) * (nu * sigma**2 - centred**2) / denom**2
            return np.maximum(h, 1e-3 / sigma**2)
        return np.full(len(centred), 1.0 / sigma**2)

    # -- the density ------------------------------------------------------------------------
    def logp_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        lay, pairs = self.layout, self.pairs
        v = theta[lay.v]
        x = self.logit(theta)
        resid = pairs.n_fg - self.trials * expit(x)
        logp = float(np.sum(pairs.n_fg * x - self.trials * softplus(x)))
        grad = np.zeros(lay.size)
        k = pairs.n_states
        grad[lay.v] = np.bincount(pairs.i, resid, k) - np.bincount(pairs.j, resid, k)
        sigma = self.sigma(theta)
        centred = pairs.centre(v)
        lp, g_c, d_sigma = self.prior_v(centred, sigma)
        logp += lp
        # V_c = V − (w·V)[comp]: chain rule through the centring.
        comp_sum = np.bincount(pairs.component, g_c, pairs.n_components)
        grad[lay.v] += g_c - pairs.weights * comp_sum[pairs.component]
        means = np.bincount(pairs.component, pairs.weights * v, pairs.n_components)
        logp -= 0.5 * float(np.sum(self.gauge * means**2))
        grad[lay.v] -= pairs.weights * (self.gauge * means)[pairs.component]
        if lay.fitted_sigma:
            scale = float(self.config["V_scale"])
            logp += -0.5 * sigma**2 / scale**2 + np.log(sigma)
            grad[lay.s_v] = sigma * d_sigma - sigma**2 / scale**2 + 1.0
        if lay.nonequilibrium:
            a, tau = theta[lay.a], self.tau(theta)
            logp += -0.5 * float(np.sum(a**2))
            grad[lay.a] = resid * tau * self.a_mask - a
            lt, dlt = self._tau_prior(tau)
            logp += lt + np.log(tau)
            grad[lay.s_tau] = float(np.sum(resid * a * self.a_mask)) * tau + tau * dlt + 1.0
        return logp, grad

    def _tau_prior(self, tau: float) -> tuple[float, float]:
        scale = float(self.config["tau_A_scale"])
        if self.config["tau_A_prior"] == "halfcauchy":
            return -np.log1p(tau**2 / scale**2), -2 * tau / (scale**2 + tau**2)
        return -0.5 * tau**2 / scale**2, -tau / scale**2

    # -- MAP --------------------------------------------------------------------------------
    def initial(self) -> np.ndarray:
        theta = np.zeros(self.layout.size)
        if self.layout.fitted_sigma:
            theta[self.layout.s_v] = 0.0
        if self.layout.nonequilibrium:
            theta[self.layout.s_tau] = np.log(0.1 * float(self.config["tau_A_scale"]))
        return theta

    def find_map(
        self,
        start: np.ndarray | None = None,
        maxiter: int = 20_000,
        fix_tau: bool = False,
        fix_sigma: bool = False,
    ) -> MapResult:
        """L-BFGS-B on −log p in diagonally rescaled coordinates (rough curvature per entry).

        `fix_tau` / `fix_sigma` keep log τ_A / log σ_V at their values in `start` (the inner
        step of the empirical-Bayes estimates: the joint mode of a hierarchical scale is
        degenerate, σ → 0).
        """
        theta0 = self.initial() if start is None else np.asarray(start, float)
        lay, pairs = self.layout, self.pairs
        diag = np.ones(lay.size)
        degree = np.bincount(pairs.i, self.trials, pairs.n_states) + np.bincount(
            pairs.j, self.trials, pairs.n_states
        )
        diag[lay.v] = 0.25 * degree + 1.0 / float(self.config["V_scale"]) ** 2
        if lay.fitted_sigma:
            diag[lay.s_v] = 2.0 * max(self.dof, 1)
        if lay.nonequilibrium:
            # a's curvature 1 + τ² w with w ≈ m / 4 at τ of the start
            diag[lay.a] = 1.0 + 0.25 * self.trials * self.tau(theta0) ** 2 * self.a_mask
        scale = 1.0 / np.sqrt(diag)
        free = np.ones(lay.size, dtype=bool)
        if fix_tau and lay.nonequilibrium:
            free[lay.s_tau] = False
        if fix_sigma and lay.fitted_sigma:
            free[lay.s_v] = False
        scale = scale[free]

        # Only the free coordinates are optimised (bounds on the fixed ones would make every
        # L-BFGS-B step pay for its projected search).
        def objective(u: np.ndarray) -> tuple[float, np.ndarray]:
            theta = theta0.copy()
            theta[free] += scale * u
            logp, grad = self.logp_grad(theta)
            return -logp, -grad[free] * scale

        with threadpool_limits(1, user_api="blas"):  # L-BFGS-B's tiny BLAS calls: threads
            result = minimize(  # only contend (9× slower at paper scale on 2 cores)
                objective,
                np.zeros(int(free.sum())),
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": maxiter, "maxcor": 20, "ftol": 1e-13, "gtol": 1e-7},
            )
        theta = theta0.copy()
        theta[free] += scale * result.x
        return MapResult(theta, float(-result.fun), bool(result.success), int(result.nit))

    # -- curvature ----------------------------------------------------------------------------
    def pair_weights(self, theta: np.ndarray) -> np.ndarray:
        """w_p = m σ(x)(1 − σ(x)): the likelihood curvature in x per pair."""
        p = expit(self.logit(theta))
        return self.trials * p * (1 - p)

    def v_hessian(self, theta: np.ndarray, weights: np.ndarray | None = None) -> sp.csc_matrix:
        """L_w + diag(h): the (Gauss–Newton) curvature of −log p in V at θ."""
        pairs = self.pairs
        w = self.pair_weights(theta) if weights is None else weights
        h = self.prior_curvature(pairs.centre(theta[self.layout.v]), self.sigma(theta))
        return laplacian(pairs.i, pairs.j, w, pairs.n_states, h)


@dataclass
class MapResult:
    theta: np.ndarray
    logp: float
    converged: bool
    iterations: int


def laplacian(i, j, w, n, diagonal) -> sp.csc_matrix:
    """Weighted graph Laplacian of the pairs plus a diagonal."""
    off = sp.coo_matrix((-w, (i, j)), shape=(n, n))
    degree = np.bincount(i, w, n) + np.bincount(j, w, n)
    return (off + off.T + sp.diags(degree + diagonal)).tocsc()


def incidence(i, j, n) -> sp.csr_matrix:
    """E (P × K): +1 at f, −1 at g per pair, so x − offset = E V."""
    rows = np.arange(len(i))
    return sp.csr_matrix(
        (np.concatenate([np.ones(len(i)), -np.ones(len(j))]), (np.r_[rows, rows], np.r_[i, j])),
        shape=(len(i), n),
    )


class SpdSolver:
    """Solves H X = B for a sparse SPD H: sparse LU with a symmetric fill-reducing order when
    the fill stays small, else conjugate gradients preconditioned by the incomplete factor
    (`_whiten.ilu_whitening`: B Bᵀ ≈ H⁻¹, √κ ≈ 1.4 where Jacobi leaves ≈ 17), one column of B
    per thread (`Whitening.pcg`)."""

    def __init__(self, matrix: sp.csc_matrix, max_fill: float = 4e6) -> None:
        self.matrix = matrix.tocsc()
        self.lu = None
        self.preconditioner = None
        if matrix.shape[0] <= 20_000:
            lu = spla.splu(
                self.matrix,
                permc_spec="MMD_AT_PLUS_A",
                diag_pivot_thresh=0.0,
                options={"SymmetricMode": True},
            )
            if lu.L.nnz <= max_fill:
                self.lu = lu
        self.method = "splu" if self.lu is not None else "pcg"
        if self.lu is None:
            self.preconditioner = ilu_whitening(self.matrix, np.zeros(matrix.shape[0]))
            self.ordered = self.preconditioner.factor_order(self.matrix)  # once, for every solve

    def solve(self, rhs: np.ndarray, tol: float = 1e-8, maxiter: int = 5000) -> np.ndarray:
        if self.lu is not None:
            return self.lu.solve(rhs)
        if rhs.ndim == 1:
            return self.solve(rhs[:, None], tol, maxiter)[:, 0]
        out, iterations = self.preconditioner.pcg(self.ordered, rhs, tol, maxiter)
        if np.any(iterations >= maxiter):
            warnings.warn(
                f"conjugate gradients did not reach tol={tol} in {maxiter} iterations for "
                f"{int(np.sum(iterations >= maxiter))} of {rhs.shape[1]} columns",
                RuntimeWarning,
                stacklevel=2,
            )
        return out


def block_pcg(matrix, rhs, inv_diag, tol: float = 1e-8, maxiter: int = 5000) -> np.ndarray:
    """Jacobi-preconditioned (`inv_diag`) conjugate gradients on all columns of `rhs` at once."""
    two_d = rhs.ndim == 2
    b = rhs if two_d else rhs[:, None]
    x = np.zeros_like(b)
    r = b.copy()
    z = inv_diag[:, None] * r
    p = z.copy()
    rz = np.sum(r * z, axis=0)
    norm_b = np.maximum(np.linalg.norm(b, axis=0), 1e-300)
    for _ in range(maxiter):
        ap = matrix @ p
        alpha = rz / np.sum(p * ap, axis=0)
        x += alpha * p
        r -= alpha * ap
        if np.max(np.linalg.norm(r, axis=0) / norm_b) < tol:
            break
        z = inv_diag[:, None] * r
        rz_new = np.sum(r * z, axis=0)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x if two_d else x[:, 0]


# Relative residual of the iterative solves behind the draws: the error it leaves in a draw is
# ≲ 1e-4 of its own size in the H-norm (√(mean curvature / prior curvature) ≈ 30 × tol),
# far below the Monte Carlo error of any summary of 1,000 draws. Direct solves are exact.
DRAW_TOL = 1e-6


def draws_solver(
    pairs: PairData, weights: np.ndarray, prior_h: np.ndarray, tau: float | np.ndarray = 0.0
) -> SpdSolver:
    """The solver of V's precision with a eliminated: weights w / (1 + τ_p² w) plus diag(h)."""
    t = np.broadcast_to(np.asarray(tau, dtype=float), (pairs.n_pairs,))
    shrunk = weights * (1.0 / (1.0 + t**2 * weights))
    return SpdSolver(laplacian(pairs.i, pairs.j, shrunk, pairs.n_states, prior_h))


def gaussian_draws(
    pairs: PairData,
    weights: np.ndarray,
    prior_h: np.ndarray,
    draws: int,
    rng: np.random.Generator,
    tau: float | np.ndarray = 0.0,
    chunk: int = 100,
    solver: SpdSolver | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Draws of (δV, δa) ~ N(0, H⁻¹) by perturb-then-solve, H the Gauss–Newton precision.

    Equilibrium: H = Eᵀ W E + diag(h); b = Eᵀ √W ξ + √h η ~ N(0, H), δV = H⁻¹ b.
    Non-equilibrium (τ fixed): x also has τ_p a_p with a ~ N(0, 1) (τ_p = τ on pairs that
    carry A, 0 elsewhere); eliminating a leaves the Laplacian with weights w / (1 + τ_p² w),
    then δa | δV is diagonal. `solver` (of that Laplacian, `draws_solver`) may be passed in
    when the caller needs it too.
    """
    k, p = pairs.n_states, pairs.n_pairs
    e = incidence(pairs.i, pairs.j, k)
    sw = np.sqrt(weights)[:, None]
    sh = np.sqrt(prior_h)[:, None]
    equilibrium = np.ndim(tau) == 0 and tau == 0.0
    t = np.broadcast_to(np.asarray(tau, dtype=float), (p,))
    shrink = 1.0 / (1.0 + t**2 * weights)
    if solver is None:
        solver = draws_solver(pairs, weights, prior_h, tau)
    dv = np.empty((draws, k))
    da = None if equilibrium else np.empty((draws, p))
    # Draws in chunks: the noise and right-hand sides of all draws at once would be the
    # memory peak at 10× paper scale (~3 GB).
    for start in range(0, draws, chunk):
        rows = slice(start, min(start + chunk, draws))
        m = rows.stop - rows.start
        xi = rng.standard_normal((p, m))
        b_v = e.T @ (sw * xi) + sh * rng.standard_normal((k, m))  # V block of b
        if equilibrium:
            dv[rows] = solver.solve(np.asarray(b_v), DRAW_TOL).T
            continue
        b_a = t[:, None] * sw * xi + rng.standard_normal((p, m))  # a block of b
        rhs_v = b_v - e.T @ ((t * weights * shrink)[:, None] * b_a)
        dv_chunk = solver.solve(np.asarray(rhs_v), DRAW_TOL)
        dv[rows] = dv_chunk.T
        da[rows] = (shrink[:, None] * (b_a - (t * weights)[:, None] * (e @ dv_chunk))).T
    return dv, da
