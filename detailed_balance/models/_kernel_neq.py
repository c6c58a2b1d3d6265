"""The non-equilibrium twin of the kernel likelihood: the jump multinomial of every prompt
state with an antisymmetric part A per modelled pair.

Per pair p (f = states[i_p], g = states[j_p]) the directed jump weights are

    X_fg = exp(u_p + A_p / 2),   X_gf = exp(u_p − A_p / 2),

S_f = Σ_g X_fg (f's out-weights) and the moves of f are Multinomial(M_f; X_f· / S_f), while
its remainder is Binomial(N_f, ρ_f) exactly as in the equilibrium kernel model (`_kernel`,
`_kernel_model`): ρ ~ Beta(a, a) is conjugate and independent of (u, A), so it is drawn
exactly per draw. With V_f = −log S_f + log(1 − ρ_f),

    log T_fg − log T_gf = V_f − V_g + A_p     exactly,

so A is the antisymmetric residual of the kernel and the loop affinity of an observed
3-cycle is A[cp0] + A[cp1] − A[cp2] (the pair model's `cycle_pairs` signs). Priors:
u ~ N(0, kernel_scale²), A_p ~ N(0, τ_A²) on the pairs of the ``A_pairs`` mask (0 elsewhere),
τ_A ~ HalfNormal / HalfCauchy(tau_A_scale). The likelihood does not change under a row
scaling X_f· → λ_f X_f· (δu_p = (ψ_i + ψ_j)/2, δA_p = ψ_i − ψ_j): the priors hold those K
directions (V sees them as −ψ), as they hold V against the cut space of A in the pair model.

In directed coordinates w = (w⁺, w⁻) = (u + A/2, u − A/2) every coordinate belongs to one row
and the likelihood's curvature is D − W diag(M) Wᵀ (D = diag(M_f q_e), W_ef = q_e,
q_e = X_e / S_f), the prior's a 2 × 2 block per pair; so, as for the equilibrium kernel
(`KernelDensity._woodbury_draws`), log det H and Laplace draws need only one factorisation of
the states × states C = diag(1/M) − Wᵀ D̃⁻¹ W (D̃ = D + prior blocks).

τ_A (the ``map`` method): the mode of its Laplace-marginal posterior
log p(s | data) ≈ log p(θ*_s, s) − ½ log det H(θ*_s, s), s = log τ_A, evaluated exactly (the
conditional mode θ*_s by trust-region Newton, log det by the factorisation above) and
maximised by Brent's method; a grid over s weighted by that marginal (INLA's rule, walked out
until the density has dropped by e⁻⁴) carries τ_A's uncertainty into the draws.

NUTS samples one vector z (``theta_white``) of size 2P + 1:

    s = ŝ + σ_s z_s,   (u, a) = (u*, a*) + c (s − ŝ) + B z_θ,   A = τ_A · mask · a,

non-centred a = A / τ_A; (u*, a*) the conditional mode at ŝ, σ_s the Laplace-marginal sd of s,
c = d(u*, a*)/ds the slope of the conditional mode along s (from the grid's neighbouring
nodes: it removes the linear coupling of a and s) and B the incomplete-factor whitening
(`_whiten.ilu_whitening`) of the Hessian in (u, a) at ŝ.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pymc as pm
import pytensor.tensor as pt
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import xarray as xr
from scipy.optimize import minimize, minimize_scalar
from threadpoolctl import threadpool_limits

from ._density import MapResult, antisymmetric_mask
from ._kernel import KernelDensity
from ._pairs import PairData
from ._scales import Node
from ._whiten import Whitening, ilu_whitening

# Prior precision of A on the pairs outside the ``A_pairs`` mask (A ≡ 0 there, to rounding).
_PINNED = 1e8


class NeqKernelDensity:
    """log posterior of θ = [u (P), A (P)] of the non-equilibrium jump chain at a fixed τ_A,
    constants dropped: Σ n_fg w⁺ + n_gf w⁻ − Σ M_f log S_f − |u|²/2s² − Σ A²/2τ² (masked)."""

    def __init__(self, pairs: PairData, scale: float, tau: float, mask: np.ndarray) -> None:
        base = KernelDensity(pairs, scale=scale, gauge=0.0, jump=True)  # checks the visits
        self.pairs = pairs
        self.base = base
        self.scale = float(scale)
        self.tau = float(tau)
        self.mask = np.asarray(mask, dtype=float)
        self.moves_out = base.moves_out
        self.stays = base.stays
        self.prec_u = 1.0 / self.scale**2
        self.prec_a = np.where(self.mask > 0, 1.0 / self.tau**2, _PINNED)
        self.row = np.concatenate([pairs.i, pairs.j])  # the state of each directed coordinate
        self.counts = np.concatenate([pairs.n_fg, pairs.n_gf])

    def with_tau(self, tau: float) -> NeqKernelDensity:
        return NeqKernelDensity(self.pairs, self.scale, tau, self.mask)

    @property
    def size(self) -> int:
        return 2 * self.pairs.n_pairs

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.pairs.n_pairs
        return theta[..., :p], theta[..., p:]

    def directed(self, theta: np.ndarray) -> np.ndarray:
        """w = (u + A/2, u − A/2) (2P,)."""
        u, a = self.split(theta)
        return np.concatenate([u + 0.5 * a, u - 0.5 * a], axis=-1)

    def out_weights(self, theta: np.ndarray) -> np.ndarray:
        """S_f = Σ_g X_fg per state (K,)."""
        return np.bincount(self.row, np.exp(self.directed(theta)), self.pairs.n_states)

    def loglik(self, theta: np.ndarray) -> float:
        """The jump log-likelihood Σ n w − Σ M log S (no prior, constants dropped)."""
        w = self.directed(theta)
        s = np.bincount(self.row, np.exp(w), self.pairs.n_states)
        moved = self.moves_out > 0
        return float(self.counts @ w - self.moves_out[moved] @ np.log(s[moved]))

    def _q(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(q_e = X_e / S_row, M_row) per directed coordinate."""
        x = np.exp(w)
        s = np.bincount(self.row, x, self.pairs.n_states)
        return x / s[self.row], self.moves_out[self.row]

    def logp_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        u, a = self.split(theta)
        w = self.directed(theta)
        q, m_row = self._q(w)
        logp = self.loglik(theta)
        logp -= 0.5 * self.prec_u * float(u @ u) + 0.5 * float(self.prec_a @ a**2)
        g = self.counts - m_row * q
        p = self.pairs.n_pairs
        grad = np.concatenate(
            [g[:p] + g[p:] - self.prec_u * u, 0.5 * (g[:p] - g[p:]) - self.prec_a * a]
        )
        return logp, grad

    def hessp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(−∇² log p) v, exact, O(pairs + states)."""
        q, m_row = self._q(self.directed(theta))
        dw = self.directed(v)
        k = self.pairs.n_states
        row_mean = np.bincount(self.row, q * dw, k)[self.row]
        h = m_row * q * (dw - row_mean)
        p = self.pairs.n_pairs
        vu, va = self.split(v)
        return np.concatenate(
            [h[:p] + h[p:] + self.prec_u * vu, 0.5 * (h[:p] - h[p:]) + self.prec_a * va]
        )

    def initial(self) -> np.ndarray:
        """u = log((m + ½)/2), A = log((n_fg + ½)/(n_gf + ½)) on the masked pairs, shrunk."""
        pairs = self.pairs
        u = np.log((pairs.trials + 0.5) / 2)
        a = self.mask * np.log((pairs.n_fg + 0.5) / (pairs.n_gf + 0.5))
        a *= self.tau**2 / (1.0 + self.tau**2)
        return np.concatenate([u, a])

    def mode(self, start: np.ndarray | None = None, maxiter: int = 500) -> MapResult:
        """The MAP at this τ_A: trust-region Newton with exact Hessian-vector products (as
        `KernelDensity.mode`)."""
        theta0 = self.initial() if start is None else np.asarray(start, dtype=float)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            logp, grad = self.logp_grad(theta)
            return -logp, -grad

        gtol = 1e-8 * max(1.0, float(np.sqrt(self.moves_out.sum())))
        with threadpool_limits(1, user_api="blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = minimize(
                objective,
                theta0,
                jac=True,
                hessp=self.hessp,
                method="trust-krylov",
                options={"maxiter": maxiter, "gtol": gtol},
            )
        converged = bool(result.success) or float(np.abs(result.jac).max()) < 10 * gtol
        return MapResult(result.x, float(-result.fun), converged, int(result.nit))

    # -- curvature -------------------------------------------------------------------------
    def explicit_hessian(self, theta: np.ndarray) -> sp.csc_matrix:
        """−∇² log p in θ = (u, A) as a sparse matrix: Tᵀ (D − Σ_f M_f q_f q_fᵀ) T + prior,
        T the map θ → w (one dense block per state over its directed coordinates)."""
        q, m_row = self._q(self.directed(theta))
        n = self.size
        order = np.argsort(self.row, kind="stable")
        rows = self.row[order]
        degree = np.bincount(rows, minlength=self.pairs.n_states)
        start = np.cumsum(degree) - degree
        reps = degree[rows]
        first = np.repeat(np.arange(n), reps)
        offset = np.arange(len(first)) - np.repeat(np.cumsum(reps) - reps, reps)
        second = start[rows[first]] + offset
        ea, eb = order[first], order[second]
        values = -m_row[ea] * q[ea] * q[eb]
        hw = sp.coo_matrix((values, (ea, eb)), shape=(n, n)) + sp.diags(m_row * q)
        p = self.pairs.n_pairs
        t = sp.bmat([[sp.eye(p), 0.5 * sp.eye(p)], [sp.eye(p), -0.5 * sp.eye(p)]]).tocsr()
        prior = sp.diags(np.concatenate([np.full(p, self.prec_u), self.prec_a]))
        return (t.T @ hw @ t + prior).tocsc()

    def _woodbury(self, theta: np.ndarray):
        """The pieces of H = D̃ − W diag(M) Wᵀ in directed coordinates: per pair the 2 × 2
        block of D̃ (entries d11, d12, d22), q, the used rows and C's factor order."""
        p = self.pairs.n_pairs
        q, m_row = self._q(self.directed(theta))
        d = m_row * q
        # prior in w: u = (w⁺ + w⁻)/2, A = w⁺ − w⁻ → Q = (1/4s²) 11ᵀ + prec_a (1, −1)(1, −1)ᵀ
        qu = 0.25 * self.prec_u
        d11 = d[:p] + qu + self.prec_a
        d22 = d[p:] + qu + self.prec_a
        d12 = qu - self.prec_a
        used = self.moves_out > 0
        index = np.cumsum(used) - 1
        return q, d11, d12, d22, used, index

    def _schur(self, q, d11, d12, d22, used, index) -> sp.csc_matrix:
        """C = diag(1/M) − Wᵀ D̃⁻¹ W over the used states."""
        pairs, p = self.pairs, self.pairs.n_pairs
        det = d11 * d22 - d12**2
        i11, i12, i22 = d22 / det, -d12 / det, d11 / det
        qa, qb = q[:p], q[p:]
        ui, uj = used[pairs.i], used[pairs.j]
        ri, rj = index[pairs.i], index[pairs.j]
        # Wᵀ D̃⁻¹ W: row i's coordinate is w⁺ (q_a), row j's is w⁻ (q_b)
        rows = np.concatenate([ri[ui], rj[uj], ri[ui & uj], rj[ui & uj]])
        cols = np.concatenate([ri[ui], rj[uj], rj[ui & uj], ri[ui & uj]])
        both = ui & uj
        vals = np.concatenate(
            [
                (qa**2 * i11)[ui],
                (qb**2 * i22)[uj],
                (qa * qb * i12)[both],
                (qa * qb * i12)[both],
            ]
        )
        n_used = int(used.sum())
        wdw = sp.coo_matrix((vals, (rows, cols)), shape=(n_used, n_used))
        return (sp.diags(1.0 / self.moves_out[used]) - wdw).tocsc()

    def log_det(self, theta: np.ndarray) -> float:
        """log det of −∇² log p at θ (in θ = (u, A); |det T| = 1), by the matrix determinant
        lemma: log det D̃ + Σ log M_f + log det C."""
        parts = self._woodbury(theta)
        q, d11, d12, d22, used, _ = parts
        c = self._schur(*parts)
        value = float(np.sum(np.log(d11 * d22 - d12**2)) + np.sum(np.log(self.moves_out[used])))
        if c.shape[0]:
            lu = spla.splu(c, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0)
            value += float(np.sum(np.log(np.abs(lu.U.diagonal()))))
        return value

    def laplace_draws(self, theta: np.ndarray, draws: int, rng: np.random.Generator):
        """`draws` draws (draws × 2P) of θ ~ N(θ*, H⁻¹) by the Woodbury form in directed
        coordinates: δw = L ξ₁ + D̃⁻¹ W y (L Lᵀ = D̃⁻¹ per pair block, y ~ N(0, C⁻¹))."""
        parts = self._woodbury(theta)
        q, d11, d12, d22, used, index = parts
        pairs, p = self.pairs, self.pairs.n_pairs
        det = d11 * d22 - d12**2
        i11, i12, i22 = d22 / det, -d12 / det, d11 / det
        c = self._schur(*parts)
        y = np.zeros((draws, pairs.n_states))
        if c.shape[0]:
            factor = ilu_whitening(c, np.zeros(c.shape[0]), drop_tol=0.0)
            y[:, used] = factor.apply(rng.standard_normal((draws, c.shape[0])))
        ya = q[:p] * y[:, pairs.i] * used[pairs.i]
        yb = q[p:] * y[:, pairs.j] * used[pairs.j]
        dwa = i11 * ya + i12 * yb
        dwb = i12 * ya + i22 * yb
        # Cholesky of the 2 × 2 inverse blocks
        l11 = np.sqrt(i11)
        l21 = i12 / l11
        l22 = np.sqrt(np.maximum(i22 - l21**2, 0.0))
        xi1, xi2 = rng.standard_normal((2, draws, p))
        dwa += l11 * xi1
        dwb += l21 * xi1 + l22 * xi2
        du = 0.5 * (dwa + dwb)
        da = dwa - dwb
        return theta + np.concatenate([du, da], axis=1)


# -- τ_A ---------------------------------------------------------------------------------
def log_tau_prior(tau: np.ndarray | float, config: dict[str, Any]):
    """log p(τ_A) + log τ_A (the density of s = log τ_A), constants dropped."""
    scale = float(config["tau_A_scale"])
    if config["tau_A_prior"] == "halfcauchy":
        return -np.log1p((tau / scale) ** 2) + np.log(tau)
    return -0.5 * (tau / scale) ** 2 + np.log(tau)


class _Marginal:
    """log p(s | data) by the Laplace approximation, with the conditional modes cached."""

    def __init__(self, density: NeqKernelDensity, config: dict[str, Any], start: np.ndarray):
        self.density, self.config = density, config
        self.warm = start
        self.cache: dict[float, tuple[float, MapResult]] = {}
        self.n_masked = float(density.mask.sum())

    def __call__(self, s: float) -> float:
        s = float(s)
        if s not in self.cache:
            tau = math.exp(s)
            dens = self.density.with_tau(tau)
            result = dens.mode(self.warm)
            self.warm = result.theta
            value = result.logp - self.n_masked * s + float(log_tau_prior(tau, self.config))
            value -= 0.5 * dens.log_det(result.theta)
            self.cache[s] = (value, result)
        return self.cache[s][0]

    def result(self, s: float) -> MapResult:
        self(s)
        return self.cache[float(s)][1]


def tau_limits(config: dict[str, Any]) -> tuple[float, float]:
    scale = math.log(float(config["tau_A_scale"]))
    return scale + math.log(1e-4), scale + math.log(10.0)


def fit_tau_kernel(
    density: NeqKernelDensity, config: dict[str, Any], min_log_drop: float = -4.0
) -> tuple[float, float, list[Node], _Marginal]:
    """(ŝ, sd of s, grid, marginal): the Laplace-marginal mode of s = log τ_A, the sd from
    its curvature, and the quadrature grid (nodes ŝ ± k sd until the log density has dropped
    below `min_log_drop`, at most 8 a side), each node's payload its conditional mode."""
    lo, hi = tau_limits(config)
    start = density.with_tau(0.1 * float(config["tau_A_scale"])).mode().theta
    marginal = _Marginal(density, config, start)
    found = minimize_scalar(
        lambda s: -marginal(s), bounds=(lo, hi), method="bounded", options={"xatol": 1e-3}
    )
    best = float(found.x)
    h = 0.05
    curvature = -(marginal(best + h) - 2 * marginal(best) + marginal(best - h)) / h**2
    sd = 1.0 / math.sqrt(max(curvature, 1.0))
    top = marginal(best)
    points = {0: best}
    for direction in (1, -1):
        for t in range(1, 9):
            s = best + direction * t * sd
            if not lo <= s <= hi:
                break
            points[direction * t] = s
            if marginal(s) - top < min_log_drop:
                break
    keys = sorted(points)
    logw = np.array([marginal(points[k]) - top for k in keys])
    weights = np.exp(logw) / np.exp(logw).sum()
    grid = [
        Node(points[k], float(w), marginal.result(points[k]), sd)
        for k, w in zip(keys, weights, strict=True)
    ]
    return best, sd, grid, marginal


# -- prepared model ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PreparedNeqKernel:
    """What `NonEquilibriumModel.prepare` derives for the kernel likelihood: the pair arrays,
    the density at τ̂_A, its conditional mode, the τ_A grid, the NUTS map (``whitening`` of
    (u, a), ``slope`` c and ``s_sd`` σ_s; None without whitening) and why this likelihood."""

    pairs: PairData
    density: NeqKernelDensity
    map_result: MapResult
    log_tau: float
    s_sd: float
    grid: list[Node]
    whitening: Whitening | None
    slope: np.ndarray | None
    config: dict[str, Any]
    reason: str
    remainder_prior: float = 1.0
    likelihood: str = "kernel"

    @property
    def llm(self) -> str:
        return self.pairs.llm

    @property
    def size(self) -> int:
        return self.density.size + 1


def prepare_kernel_neq(
    pairs: PairData, config: dict[str, Any], whiten: bool, reason: str
) -> PreparedNeqKernel:
    mask = antisymmetric_mask(pairs, config)
    scale = float(config["kernel_scale"])
    density = NeqKernelDensity(pairs, scale, 0.1 * float(config["tau_A_scale"]), mask)
    if mask.any():
        best, sd, grid, marginal = fit_tau_kernel(density, config)
        result = marginal.result(best)
    else:  # no pair carries A: τ_A is its prior
        best, sd = math.log(float(config["tau_A_scale"])), 1.0
        result = density.mode()
        grid = []
    density = density.with_tau(math.exp(best))
    white = slope = None
    if whiten:
        white, slope = _nuts_map(density, result, best, sd, grid, config)
    return PreparedNeqKernel(
        pairs,
        density,
        result,
        best,
        sd,
        grid,
        white,
        slope,
        dict(config),
        reason,
        float(config["remainder_prior"]),
    )


def _noncentred(density: NeqKernelDensity, theta: np.ndarray, tau: float) -> np.ndarray:
    """(u, A) → (u, a = A / τ) (a = 0 off the mask)."""
    u, a = density.split(theta)
    return np.concatenate([u, np.where(density.mask > 0, a / tau, 0.0)])


def _nuts_map(density, result, best, sd, grid, config):
    """The whitening of (u, a) at ŝ and the slope c = d(u*, a*)/ds of the conditional mode."""
    tau = math.exp(best)
    centre = _noncentred(density, result.theta, tau)
    p = density.pairs.n_pairs
    if config["parameterization"] == "direct":
        from dataclasses import replace

        return replace(Whitening.identity(2 * p), centre=centre), np.zeros(2 * p)
    # Hessian in (u, a): J H J with J = diag(1, τ·mask) (+ unit prior on unmasked a)
    hessian = density.explicit_hessian(result.theta)
    j = sp.diags(np.concatenate([np.ones(p), tau * density.mask]))
    hessian = (j @ hessian @ j).tocsc()
    hessian = hessian + sp.diags(np.concatenate([np.zeros(p), 1.0 - density.mask]))
    white = ilu_whitening(hessian, centre, float(config["ilu_drop_tol"]), float(config["ilu_fill"]))
    slope = np.zeros(2 * p)
    near = [n for n in grid if abs(n.s - best) > 1e-12 and abs(abs(n.s - best) - sd) < 1e-9]
    if len(near) == 2:
        hi, lo = sorted(near, key=lambda n: -n.s)
        a_hi = _noncentred(density, hi.payload.theta, math.exp(hi.s))
        a_lo = _noncentred(density, lo.payload.theta, math.exp(lo.s))
        slope = (a_hi - a_lo) / (hi.s - lo.s)
    return white, slope


# -- PyMC ----------------------------------------------------------------------------------
def neq_coords(prepared: PreparedNeqKernel, coords: dict[str, Any]) -> dict[str, Any]:
    return {**coords, "latent": np.arange(prepared.size)}


def _unpack(prepared: PreparedNeqKernel, z):
    """(θ_nc = (u, a), s) from z in PyTensor."""
    white, n = prepared.whitening, prepared.density.size
    s_dev = prepared.s_sd * z[n]
    theta = white.centre + white.deviation(z[:n]) + prepared.slope * s_dev
    return theta, prepared.log_tau + s_dev


def build_kernel_neq_model(prepared: PreparedNeqKernel, coords: dict[str, Any]) -> pm.Model:
    """log p(u, a, s) + log |Jacobian| (constant) in z: the jump multinomial, the priors of
    u, a ~ N(0, 1) and s = log τ_A."""
    if prepared.whitening is None:
        raise ValueError("build_model needs data prepared with whiten=True.")
    density, pairs = prepared.density, prepared.pairs
    p, k = pairs.n_pairs, pairs.n_states
    mask = density.mask
    moved = density.moves_out > 0
    with pm.Model(coords=neq_coords(prepared, coords)) as model:
        z = pm.Flat("theta_white", dims="latent")
        theta, s = _unpack(prepared, z)
        u, a = theta[:p], theta[p:]
        tau = pt.exp(s)
        half = 0.5 * tau * mask * a
        w_fg, w_gf = u + half, u - half
        out = pt.zeros(k)[pairs.i].inc(pt.exp(w_fg))[pairs.j].inc(pt.exp(w_gf))
        loglik = pt.dot(pairs.n_fg, w_fg) + pt.dot(pairs.n_gf, w_gf)
        loglik -= pt.dot(density.moves_out[moved], pt.log(out[np.flatnonzero(moved)]))
        prior = -0.5 * density.prec_u * pt.sum(u**2) - 0.5 * pt.sum(a**2)
        scale = float(prepared.config["tau_A_scale"])
        if prepared.config["tau_A_prior"] == "halfcauchy":
            prior += -pt.log1p((tau / scale) ** 2) + s
        else:
            prior += -0.5 * (tau / scale) ** 2 + s
        pm.Potential("log_density", loglik + prior)
    return model


def theta_tau_draws(prepared: PreparedNeqKernel, posterior: xr.Dataset):
    """(u, A) (chain, draw, 2P) and τ_A (chain, draw) from the sampled z."""
    z = posterior["theta_white"].transpose("chain", "draw", "latent").to_numpy()
    n = prepared.density.size
    s_dev = prepared.s_sd * z[..., n]
    theta = prepared.whitening.apply(np.ascontiguousarray(z[..., :n]))
    theta += prepared.slope * s_dev[..., None]
    tau = np.exp(prepared.log_tau + s_dev)
    p = prepared.pairs.n_pairs
    theta[..., p:] *= prepared.density.mask * tau[..., None]
    return theta, tau


# -- stored variables ----------------------------------------------------------------------
def neq_kernel_posterior(
    prepared: PreparedNeqKernel,
    theta: np.ndarray,
    tau: np.ndarray,
    reference: str | None,
    coords: dict[str, Any],
    rng: np.random.Generator | None = None,
) -> xr.Dataset:
    """The stored variables from draws of θ = (u, A) (chain, draw, 2P) and τ_A (chain, draw),
    each with an exact draw of ρ ~ Beta(R + a, M + a): V = −log S + log(1 − ρ) (reported in
    the pair models' gauge), A, τ_A, the loop affinities, u and r = log S + logit ρ."""
    pairs, density = prepared.pairs, prepared.density
    if rng is None:
        rng = np.random.default_rng(int(np.float64(theta.sum()).view(np.uint64)))
    chains, draws = theta.shape[:2]
    p = pairs.n_pairs
    a_prior = prepared.remainder_prior
    rho = rng.beta(
        density.stays + a_prior, density.moves_out + a_prior, size=(chains * draws, pairs.n_states)
    )
    flat = np.ascontiguousarray(theta.reshape(chains * draws, -1))
    v, r = _directed_potential(flat, pairs.i, pairs.j, rho)
    del rho
    v = pairs.with_reference(reference).centre(v, inplace=True)
    dims = ("chain", "draw")
    shape = (chains, draws, -1)
    u, a = theta[..., :p], theta[..., p:]
    cp = pairs.cycle_pairs
    loops = a[..., cp[:, 0]] + a[..., cp[:, 1]] - a[..., cp[:, 2]]
    out = {
        "V": ((*dims, "state"), v.reshape(shape)),
        "A": ((*dims, "pair"), a),
        "tau_A": (dims, tau),
        "loop_affinity": ((*dims, "cycle"), loops),
        "log_conductance": ((*dims, "pair"), u),
        "log_remainder": ((*dims, "state"), r.reshape(shape)),
    }
    return xr.Dataset(out, coords=coords)


@numba.njit(parallel=True, cache=True)
def _directed_potential(theta, i, j, rho):
    """Per draw (row of θ = (u, A)): S_f = Σ_g exp(u ± A/2) over f's out-weights,
    V = −log S + log(1 − ρ) and r = log S + log ρ − log(1 − ρ)."""
    draws, k = rho.shape
    p = i.shape[0]
    v = np.empty((draws, k))
    r = np.empty((draws, k))
    for d in numba.prange(draws):
        s = np.zeros(k)
        for q in range(p):
            u = theta[d, q]
            half = 0.5 * theta[d, p + q]
            s[i[q]] += np.exp(u + half)
            s[j[q]] += np.exp(u - half)
        for f in range(k):
            log_s = np.log(s[f])
            stay = np.log1p(-rho[d, f])
            v[d, f] = stay - log_s
            r[d, f] = log_s + np.log(rho[d, f]) - stay
    return v, r


def kernel_neq_laplace(
    prepared: PreparedNeqKernel,
    draws: int,
    seed: int,
    reference: str | None,
    coords: dict[str, Any],
) -> xr.DataTree:
    """The ``map`` method: τ_A from the grid over its Laplace marginal (jittered within each
    node's cell), θ from N(θ*_s, H_s⁻¹) at each node's conditional mode, ρ exact."""
    rng = np.random.default_rng(int(seed))
    density, config = prepared.density, prepared.config
    if prepared.grid:
        counts = rng.multinomial(draws, [node.weight for node in prepared.grid])
        thetas, logs = [], []
        for node, c in zip(prepared.grid, counts, strict=True):
            if not c:
                continue
            dens = density.with_tau(math.exp(node.s))
            thetas.append(dens.laplace_draws(node.payload.theta, int(c), rng))
            logs.append(node.s + (rng.random(int(c)) - 0.5) * node.spacing)
        theta, log_tau = np.concatenate(thetas), np.concatenate(logs)
        order = rng.permutation(draws)
        theta, tau = theta[order], np.exp(log_tau[order])
    else:
        theta = density.laplace_draws(prepared.map_result.theta, draws, rng)
        scale = float(config["tau_A_scale"])
        if config["tau_A_prior"] == "halfcauchy":
            tau = scale * np.abs(rng.standard_cauchy(draws))
        else:
            tau = scale * np.abs(rng.standard_normal(draws))
    posterior = neq_kernel_posterior(
        prepared,
        theta[None],
        tau[None],
        reference,
        {"chain": [0], "draw": np.arange(draws), **coords},
        rng,
    )
    result = prepared.map_result
    stats = xr.Dataset(
        {
            "map_logp": result.logp,
            "map_iterations": result.iterations,
            "map_converged": result.converged,
            "map_tau_A": math.exp(prepared.log_tau),
        }
    )
    return xr.DataTree.from_dict({"/posterior": posterior, "/map": stats})


__all__ = [
    "NeqKernelDensity",
    "PreparedNeqKernel",
    "build_kernel_neq_model",
    "fit_tau_kernel",
    "kernel_neq_laplace",
    "neq_kernel_posterior",
    "prepare_kernel_neq",
    "theta_tau_draws",
]
