"""Fitted scales of the Laplace-approximated models (σ_V, τ_A, σ_ε): one driver.

A hierarchical scale s = log σ cannot be read off the joint mode, which is degenerate
(σ → 0 with every deviation at 0: the funnel of every hierarchical model). Its estimate is the
mode of its marginal posterior p(s | data) with the other parameters θ integrated out by the
Laplace approximation:

    −log p(s | data) ≈ U(θ*_s, s) + ½ log det H(θ*_s, s) + const,

θ*_s the conditional mode and H the Gauss–Newton curvature there. Each model supplies the
*score* g(s) = d/ds of that, increasing in s near the mode: by the envelope theorem it is
∂U/∂s at θ*_s plus ½ tr(H⁻¹ dH/ds), the trace estimated from Gaussian draws of θ with fixed
noise (common random numbers keep g smooth in s; no determinant, so no factorisation is
needed at any size). The driver here finds the root of g (`marginal_mode`), the curvature
there (`marginal_curvature`) and a quadrature grid over s weighted by the marginal density,
its log-differences integrated from g by the trapezoid rule (`marginal_grid`, INLA's grid
strategy), so that draws of the `map` method carry the uncertainty of the scale.

The pair models' scores are here (`pair_scale_score`: σ_V of the fitted V priors and τ_A of
the non-equilibrium model); the feature model's σ_ε score is `FeatureDensity.sigma_score`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq

from ._density import MapResult, PairDensity, SpdSolver, draws_solver, gaussian_draws

# A score: s, warm start → (g(s), payload); the payload (the conditional mode and whatever
# the caller needs there) is the next evaluation's warm start.
Score = Callable[[float, Any], tuple[float, Any]]


class _Memo:
    """g(s) with its payloads cached by s, each evaluation warm-started from the last one."""

    def __init__(self, score: Score, warm: Any = None) -> None:
        self.score = score
        self.warm = warm
        self.cache: dict[float, tuple[float, Any]] = {}

    def __call__(self, s: float) -> float:
        s = float(s)
        if s not in self.cache:
            value, payload = self.score(s, self.warm)
            if not np.isfinite(value):
                raise ValueError(f"the marginal score of a fitted scale is {value} at s = {s:.4g}")
            self.warm = payload
            self.cache[s] = (value, payload)
        return self.cache[s][0]

    def payload(self, s: float) -> Any:
        if float(s) not in self.cache:
            self(s)
        return self.cache[float(s)][1]


def marginal_mode(
    score: Score,
    start: float,
    lo_limit: float,
    hi_limit: float,
    warm: Any = None,
    xtol: float = 2e-3,
) -> tuple[float, Any]:
    """The root of an increasing score (the mode of p(s | data)) and its payload.

    The root is bracketed by unit steps in s from `start` (never past the limits) and then
    found by Brent's method. Where the score keeps its sign up to a limit, that limit is the
    answer. (For τ_A the score tends to −1 as τ_A → 0, the log-τ Jacobian, so its mode is
    always inside; the limits guard against scores that do not turn.) A non-finite score
    raises ValueError.
    """
    g = _Memo(score, warm)
    lo = hi = float(start)
    if g(start) > 0:
        while lo > lo_limit and g(max(lo - 1.0, lo_limit)) > 0:
            lo = max(lo - 1.0, lo_limit)
        lo, hi = max(lo - 1.0, lo_limit), lo
    else:
        while hi < hi_limit and g(min(hi + 1.0, hi_limit)) < 0:
            hi = min(hi + 1.0, hi_limit)
        lo, hi = hi, min(hi + 1.0, hi_limit)
    if (g(lo) > 0) == (g(hi) > 0):  # no sign change inside the limits
        best = lo if g(lo) > 0 else hi
    else:
        best = float(brentq(g, lo, hi, xtol=xtol))
    return best, g.payload(best)


def marginal_curvature(
    score: Score, best: float, payload: Any, step: float = 0.05, floor: float = 1.0
) -> float:
    """d²/ds² of −log p(s | data) at the mode by a central difference of the score (at least
    `floor`: a flat marginal is given a unit-sd grid, not an unbounded one)."""
    g_hi = score(best + step, payload)[0]
    g_lo = score(best - step, payload)[0]
    return max((g_hi - g_lo) / (2 * step), floor)


@dataclass
class Node:
    """One node of `marginal_grid`: s, its normalised weight, its payload and the spacing."""

    s: float
    weight: float
    payload: Any
    spacing: float


def marginal_grid(
    score: Score,
    best: float,
    payload: Any,
    sd: float,
    nodes: tuple[int, ...] | None = (-2, -1, 0, 1, 2),
    g_best: float = 0.0,
    limits: tuple[float, float] = (-np.inf, np.inf),
    min_log_drop: float = -4.0,
    max_steps: int = 8,
) -> list[Node]:
    """Quadrature over s: nodes at the mode ± whole marginal sds, weighted by the marginal
    density (log p(s) − log p(ŝ) = −∫ g ds from ŝ, trapezoid rule, `g_best` the score at ŝ:
    0 at an interior root), each with its own conditional mode (payload).

    `nodes=None` adapts the grid to the marginal's shape (INLA's rule): each side is walked
    out until the log density has dropped below `min_log_drop` (or `max_steps` nodes, or a
    limit), so a skewed marginal keeps its long tail; given `nodes`, exactly those."""
    points = {0: Node(best, 0.0, payload, sd)}
    scores = {0: float(g_best)}
    for direction in (1, -1):
        steps = max_steps if nodes is None else max(abs(n) for n in nodes)
        for t in range(1, steps + 1):
            prev = points[direction * (t - 1)]
            s = best + direction * t * sd
            if nodes is None and (prev.weight < min_log_drop or not limits[0] <= s <= limits[1]):
                break
            g, payload_t = score(s, prev.payload)
            scores[direction * t] = g
            log_drop = prev.weight - direction * 0.5 * sd * (scores[direction * (t - 1)] + g)
            points[direction * t] = Node(s, log_drop, payload_t, sd)
    chosen = [points[t] for t in (sorted(points) if nodes is None else nodes)]
    weights = np.exp(np.array([p.weight for p in chosen]))
    weights /= weights.sum()
    for point, weight in zip(chosen, weights, strict=True):
        point.weight = float(weight)
    return chosen


# -- the pair models' scales ---------------------------------------------------------------
# Gaussian draws behind the trace term (fixed noise, seed 0), drawn in chunks of `_CHUNK`:
# with 100 the Monte Carlo bias left in log τ̂ was a third of its posterior sd on 300 states
# × 30,000 calls (0.016 vs 0.05), with 400 an eighth. Small models average over fewer pairs,
# so they get more draws, at about the same cost: `SCORE_BUDGET` / (states + pairs) draws,
# between `SCORE_DRAWS` and 10 × `SCORE_DRAWS`.
SCORE_DRAWS = 400
SCORE_BUDGET = 2_000_000
_CHUNK = 100


def score_draws(size: int) -> int:
    """Draws behind the score's trace for a model of `size` coordinates (see above)."""
    draws = min(max(SCORE_BUDGET // max(size, 1), SCORE_DRAWS), 10 * SCORE_DRAWS)
    return int(-(-draws // _CHUNK) * _CHUNK)


_FD = 1e-5  # step in s of the central differences below


def pair_scale_score(density: PairDensity, which: str) -> Score:
    """g(s) for s = log τ_A (``which="tau"``) or log σ_V (``"sigma"``) of a pair density, with
    the other scale held where the warm start has it. The payload is the conditional mode
    (`MapResult`) at s.

    With θ = (V, a) free and H = Jᵀ W J + diag(h, 1) (x = offset + E V + τ m ⊙ a, W the pair
    curvatures w = m σ(x)(1 − σ(x)), h the V prior's curvature), g(s) = −∂ log p/∂s at θ*_s
    plus ½ d/ds E[δᵀ H(θ*_s, s) δ] over draws δ ~ N(0, H⁻¹) held fixed: the total derivative
    includes the move of the mode, dθ*/ds = −H⁻¹ ∂²U/∂θ∂s (one sparse solve).
    """
    lay, pairs = density.layout, density.pairs
    if which == "tau":
        index = lay.s_tau
    elif which == "sigma":
        index = lay.s_v
    else:
        raise ValueError(f"which must be 'tau' or 'sigma', got {which!r}")
    nonequilibrium = lay.nonequilibrium
    free = np.ones(lay.size, dtype=bool)
    for fixed in (lay.s_v if lay.fitted_sigma else None, lay.s_tau if nonequilibrium else None):
        if fixed is not None:
            free[fixed] = False

    def curvature(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = density.pair_weights(theta)
        h = density.prior_curvature(pairs.centre(theta[lay.v]), density.sigma(theta))
        t = density.tau(theta) * density.a_mask if nonequilibrium else np.zeros(0)
        return w, h, t

    def score(s: float, warm: MapResult | np.ndarray) -> tuple[float, MapResult]:
        start = np.array(warm.theta if isinstance(warm, MapResult) else warm, dtype=float)
        if nonequilibrium and isinstance(warm, MapResult):
            old = density.tau(start)
            start[lay.a] *= old / math.exp(s) if which == "tau" else 1.0  # keep A = τ a
        start[index] = s
        result = density.find_map(start, fix_tau=True, fix_sigma=True)
        theta = result.theta
        grad = density.logp_grad(theta)[1]
        w, h, t = curvature(theta)
        tau = t if nonequilibrium else 0.0
        solver = draws_solver(pairs, w, h, tau)
        # ∂²U/∂θ∂s by a central difference of the gradient in s, then dθ*/ds = −H⁻¹ b.
        up, down = theta.copy(), theta.copy()
        up[index] += _FD
        down[index] -= _FD
        b = -(density.logp_grad(up)[1] - density.logp_grad(down)[1]) / (2 * _FD)
        dtheta = np.zeros(lay.size)
        dtheta[free] = -_gauss_newton_solve(solver, pairs, w, t, b[free])
        dtheta[index] = 1.0
        ends = [curvature(theta + _FD * dtheta), curvature(theta - _FD * dtheta)]
        # ½ d/ds E[δᵀ H δ] over fixed-noise draws δ ~ N(0, H⁻¹), chunk by chunk (memory).
        rng = np.random.default_rng(0)
        total = 0.0
        n_draws = score_draws(lay.size)
        # ≤ ~2·10⁷ pair entries per chunk (a few hundred MB of temporaries at 10× paper scale)
        chunk = int(np.clip(20_000_000 // max(pairs.n_pairs, 1), 10, _CHUNK))
        for start_draw in range(0, n_draws, chunk):
            m = min(chunk, n_draws - start_draw)
            dv, da = gaussian_draws(pairs, w, h, m, rng, tau, solver=solver)
            values = []
            for w_, h_, t_ in ends:
                dx = dv[:, pairs.i] - dv[:, pairs.j]
                if nonequilibrium:
                    dx += t_ * da
                values.append(float(np.sum(dx**2 @ w_ + dv**2 @ h_)))
            total += values[0] - values[1]
        trace = 0.5 * total / n_draws / (2 * _FD)
        if which == "sigma":
            # H above puts the prior's curvature on each component's mean direction too, where
            # the density has only the gauge's fixed curvature: ½ log det H carries −log σ_V per
            # component too many (exact for the normal prior with uniform centring weights).
            trace += pairs.n_components
        return -float(grad[index]) + trace, result

    return score


def _gauss_newton_solve(
    solver: SpdSolver, pairs: Any, w: np.ndarray, t: np.ndarray, rhs: np.ndarray
) -> np.ndarray:
    """H⁻¹ rhs for the Gauss–Newton H of (V, a) (or of V alone when t is empty): a is
    eliminated, leaving the Laplacian with weights w / (1 + t² w) that `solver` factors (as
    in `gaussian_draws`), then a | V is diagonal."""
    k = pairs.n_states
    if not len(t):
        return solver.solve(rhs)
    shrink = 1.0 / (1.0 + t**2 * w)
    r_v, r_a = rhs[:k], rhs[k:]
    coupled = t * w * shrink * r_a  # Eᵀ-side of H_Va H_aa⁻¹ r_a
    d_v = solver.solve(r_v - (np.bincount(pairs.i, coupled, k) - np.bincount(pairs.j, coupled, k)))
    d_a = shrink * (r_a - t * w * (d_v[pairs.i] - d_v[pairs.j]))
    return np.concatenate([d_v, d_a])


def tau_limits(density: PairDensity) -> tuple[float, float, float]:
    """(start, lower, upper) of log τ_A's search: from 0.1 × tau_A_scale, within
    [1e-4, 10] × tau_A_scale."""
    scale = math.log(float(density.config["tau_A_scale"]))
    return scale + math.log(0.1), scale + math.log(1e-4), scale + math.log(10.0)


def fit_tau(density: PairDensity, start: np.ndarray) -> MapResult:
    """The non-equilibrium point estimate: log τ_A at the mode of its Laplace-marginal
    posterior, (V, a) at their conditional mode there."""
    if not (density.a_mask > 0).any():  # no pair carries A: τ_A has nothing to learn from
        return density.find_map(start, fix_tau=True, fix_sigma=True)
    s0, lo, hi = tau_limits(density)
    start = np.array(start, dtype=float)
    start[density.layout.s_tau] = s0
    _, result = marginal_mode(pair_scale_score(density, "tau"), s0, lo, hi, warm=start)
    return result


def fit_sigma(density: PairDensity, start: np.ndarray) -> MapResult:
    """σ_V of the fitted V priors at the mode of its Laplace-marginal posterior, searched from
    the spread of `start`'s centred V (the wide-prior MAP)."""
    lay, pairs = density.layout, density.pairs
    start = np.array(start, dtype=float)
    if not lay.fitted_sigma:
        return density.find_map(start)
    scale = float(density.config["V_scale"])
    spread = float(np.sqrt(np.mean(pairs.centre(start[lay.v]) ** 2)))
    s0 = math.log(max(spread, 1e-2))
    start[lay.s_v] = s0
    lo, hi = math.log(1e-2), math.log(10.0 * scale)
    _, result = marginal_mode(pair_scale_score(density, "sigma"), s0, lo, hi, warm=start)
    return result


def tau_grid(density: PairDensity, result: MapResult) -> list[Node]:
    """The quadrature over log τ_A around the mode in `result` (see `marginal_grid`): the
    grid adapts to the marginal (reversible data give a long lower tail)."""
    score = pair_scale_score(density, "tau")
    best = float(result.theta[density.layout.s_tau])
    g_best = score(best, result)[0]  # ≈ 0 at the root, not at a limit
    sd = 1.0 / math.sqrt(marginal_curvature(score, best, result))
    _, lo, hi = tau_limits(density)
    return marginal_grid(score, best, result, sd, nodes=None, g_best=g_best, limits=(lo, hi))
