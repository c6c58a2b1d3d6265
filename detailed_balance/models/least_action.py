"""The paper's least-action estimate of the potential V (Song et al.; PAPER.md).

    S[V] = (1/#states) Σ_{f→g, f≠g} w_fg K(V_f − V_g),   w_fg = min(1, n_fg / N₀(f)),

with K(x) = softplus(−x) = log(1 + e^{−x}) (the paper's code, default) or exp(−x/2) (its main
text). Both kernels satisfy K′(x) = K′(−x) e^{−x}, so when the rates obey detailed balance,
w_gf = w_fg e^{−(V_f − V_g)}, every pair's contribution to ∂S/∂V vanishes at the true V: the
true potential is the exact minimiser for either kernel (tested on exact expected counts).

Where the optimum is finite, and why (the reason potentials are fitted per piece):
- Inside a strongly connected component ("piece", ≥ 2 states) the minimum is attained. For
  both kernels K(x) ≥ c·max(0, −x) with c > 0 (softplus: c = 1; e^{−x/2} ≥ 1 − x/2 ≥ −x/2),
  so S_sum ≥ c·w_min·Σ_e max(0, −x_e). Any two states a, b of a piece are joined by a directed
  path a→…→b, and V_a − V_b = Σ_path x_e ≥ −Σ_e max(0, −x_e) ≥ −S_sum/(c·w_min); the path
  b→…→a bounds the other side. So sublevel sets are bounded once one state per piece is
  pinned, the convex S attains its minimum there, and strict convexity of K makes it unique up
  to one additive constant per piece.
- Across the condensation DAG it is not attained. Every V has S(V) ≥ Σ_pieces min S_piece (the
  terms of moves between components are > 0), and V*_pieces + t·level (level = topological
  level, which drops along every move between components) approaches that bound as t → ∞.
  So along any minimising sequence each move f→g between components has V_f − V_g → +∞: a
  state that reaches the main piece is infinitely uphill of it ("+inf"), a state the main
  piece reaches is infinitely downhill ("-inf"), and the gap of a state that neither reaches
  nor is reached is not determined at all (any value costs nothing).
Because S separates over pieces (moves between pieces only contribute their infimum, 0), all
pieces are fitted in ONE vectorised optimisation on their internal moves, and the per-piece
gauge is fixed afterwards with a bincount mean. The paper optimised everything jointly and
read the runaway states off as large finite numbers ("∞"); we report them instead.

Optimisation: the 1/#states factor shrinks the gradient so far that L-BFGS-B's default
gradient tolerance stops it after a few steps (issue 2, §7). We minimise the SUMMED action
and judge convergence on max|∂S_sum/∂V| ≤ gtol (default 1e-9), reporting S normalised. Two
optimisers: "newton" (default) takes Newton steps with the exact Hessian, which is a weighted
graph Laplacian H = Bᵀ diag(w K″) B, solved matrix-free by Jacobi-preconditioned conjugate
gradients with one state per piece held fixed (the gauge), plus Armijo backtracking; it
reaches 1e-9 in ~10 steps at paper scale and 10×. "lbfgsb" is the paper's optimiser (scipy
L-BFGS-B, ftol=0, same gtol); on large sparse data it stalls at the float resolution of the
summed action (~1e-7 gradient), which `converged=False` then says honestly.

One module on purpose (~700 lines): the action, its gradient and Hessian, the piece
structure and the Newton–CG / L-BFGS-B optimisers are one numerical unit whose parts share
the same arrays and the proof above; split, each part would need the others' internals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.sparse.csgraph import breadth_first_order, connected_components
from threadpoolctl import threadpool_limits

from detailed_balance.data import DataError, Transitions

Kernel = Literal["softplus", "exp"]
Init = Literal["topological", "zeros"]
Optimizer = Literal["newton", "lbfgsb"]
KERNELS: tuple[str, ...] = ("softplus", "exp")
INITS: tuple[str, ...] = ("topological", "zeros")
OPTIMIZERS: tuple[str, ...] = ("newton", "lbfgsb")

# Direction labels of `LeastActionResult.direction`.
MAIN, UP, DOWN, OTHER_PIECE, UNDETERMINED = "", "+inf", "-inf", "piece", "undetermined"


@dataclass
class LeastActionResult:
    """Least-action potentials with their unbounded directions made explicit.

    potentials: V per state (index = state names), finite only for states in a strongly
        connected piece of ≥ 2 states, zero mean per piece (or 0 at `settings["reference"]`).
    bounded: True where the potential is finite.
    piece: piece label per state (0 = the largest piece, 1, 2, … by size), −1 for states that
        are a strongly connected component on their own (potential unbounded).
    main_piece: label of the largest piece (−1 when no piece exists).
    direction: "" in the main piece; "+inf" / "-inf" when the gap to the main piece is unbounded
        upward (the state reaches the main piece) / downward (the main piece reaches it);
        "piece" for states bounded in another piece that is not comparable with the main one;
        "undetermined" for the rest (gap to the main piece not fixed by the data at all).
    level: topological level in the condensation DAG (0 for components with no way out; every
        move between components goes from a higher to a lower level).
    action: the minimum of the paper's normalised action S (the infimum over all V: moves
        between components contribute 0); `action_sum` is #states × action.
    converged: max|∂S_sum/∂V| ≤ gtol at the returned point; `gradient_max` is that maximum.
    step_max: max|Newton step| at the returned point, H⁻¹∇S_sum: the predicted distance (kT) of
        the potentials from the exact minimiser. Tiny (≤ 1e-8) when the action pins V down; it
        stays large where the action is flat to float precision (a group of states joined to
        the rest of its piece only by moves with gaps of ~30 kT, where K″ ≈ e^{−30}): such
        offsets are not determined by the action in float64 even though the gradient is ~0.
    one_sided_bounds: pairs seen in one direction only (upper→lower n times, never back):
        since T(lower→upper) < 1/N_lower, V_upper − V_lower > log(T(upper→lower)·N_lower).
        Columns: upper, lower, n, N_upper, N_lower, bound, gap (fitted V_upper − V_lower;
        +inf across pieces), satisfied (gap ≥ bound). Pairs whose lower state was never used as
        a prompt (N unknown) have no bound and are left out.
    settings: kernel, reference, gtol, maxiter, init, visits convention, llm, sizes, data hash.
    """

    potentials: pd.Series
    bounded: pd.Series
    piece: pd.Series
    main_piece: int
    direction: pd.Series
    level: pd.Series
    action: float
    action_sum: float
    converged: bool
    n_iter: int
    gradient_max: float
    message: str
    settings: dict = field(default_factory=dict)
    one_sided_bounds: pd.DataFrame = field(default_factory=pd.DataFrame)
    step_max: float = 0.0

    @property
    def n_pieces(self) -> int:
        """Number of strongly connected pieces with ≥ 2 states (finite potentials)."""
        return int(self.piece.max()) + 1 if len(self.piece) else 0

    def table(self) -> pd.DataFrame:
        """``state, potential, bounded`` (the `fit --method least-action` output; NaN = unbounded)."""
        return pd.DataFrame(
            {
                "state": self.potentials.index.to_numpy(dtype=object),
                "potential": self.potentials.to_numpy(dtype=float),
                "bounded": self.bounded.to_numpy(dtype=bool),
            }
        )

    def extended(self) -> pd.Series:
        """Potentials with +inf / −inf for states whose gap to the main piece is unbounded.

        For counting downhill moves against the main piece; "undetermined" states stay NaN and
        "piece" states keep their finite value in their own piece's gauge.
        """
        out = self.potentials.copy()
        out[self.direction.eq(UP).to_numpy()] = np.inf
        out[self.direction.eq(DOWN).to_numpy()] = -np.inf
        return out

    def __repr__(self) -> str:
        return (
            f"LeastActionResult({len(self.potentials)} states, {int(self.bounded.sum())} bounded "
            f"in {self.n_pieces} piece(s), action={self.action:.6g}, "
            f"kernel={self.settings.get('kernel')}, converged={self.converged})"
        )


# -- kernels ----------------------------------------------------------------------------------
def kernel_values(
    x: np.ndarray, kernel: Kernel = "softplus"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K(x), K′(x) and K″(x), vectorised: K = softplus(−x) = log(1 + e^{−x}) or exp(−x/2)."""
    if kernel == "softplus":
        # One exponential for all three: e = e^{−|x|}, σ(−x) = e/(1+e) or 1/(1+e).
        e = np.exp(-np.abs(x))
        inv = 1.0 / (1.0 + e)
        down = np.where(x >= 0, e * inv, inv)
        return np.maximum(-x, 0.0) + np.log1p(e), -down, e * inv * inv
    if kernel == "exp":
        # Clip the exponent so a wild line-search trial gives a huge finite value, not inf.
        value = np.exp(np.minimum(-0.5 * x, 700.0))
        return value, -0.5 * value, 0.25 * value
    raise ValueError(f"unknown kernel {kernel!r}; use one of {', '.join(KERNELS)}.")


def summed_action(
    potentials: np.ndarray,
    source: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    kernel: Kernel = "softplus",
) -> tuple[float, np.ndarray]:
    """Σ_e w_e K(V[source_e] − V[target_e]) and its gradient in V (np.bincount, no loops).

    The gradient is ∂S/∂V_f = Σ_{e: f→·} w_e K′(x_e) − Σ_{e: ·→f} w_e K′(x_e).
    """
    x = potentials[source] - potentials[target]
    value, slope, _ = kernel_values(x, kernel)
    flux = weight * slope
    n = len(potentials)
    grad = np.bincount(source, flux, minlength=n) - np.bincount(target, flux, minlength=n)
    return float(weight @ value), grad


# -- graph structure --------------------------------------------------------------------------
def _csr_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Concatenated column indices of the given CSR rows (vectorised gather)."""
    starts, stops = indptr[rows], indptr[rows + 1]
    lengths = stops - starts
    if lengths.sum() == 0:
        return np.empty(0, dtype=indices.dtype)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return indices[np.repeat(starts, lengths) + offsets]


def condensation_levels(labels: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Topological level of each component of the condensation DAG (0 = no edge out).

    Layered Kahn peeling: each round removes all current sinks at once (numpy per round; the
    number of rounds is the DAG's depth). Level = length of the longest path to a sink.
    """
    n_comp = int(labels.max()) + 1 if len(labels) else 0
    a, b = labels[source], labels[target]
    cross = a != b
    codes = np.unique(a[cross].astype(np.int64) * n_comp + b[cross])
    up, down = codes // n_comp, codes % n_comp
    out_degree = np.bincount(up, minlength=n_comp)
    reverse = sp.csr_matrix(
        (np.ones(len(codes), dtype=np.int8), (down, up)), shape=(n_comp, n_comp)
    )
    level = np.full(n_comp, -1, dtype=np.int64)
    frontier = np.flatnonzero(out_degree == 0)
    depth = 0
    while frontier.size:
        level[frontier] = depth
        preds = _csr_rows(reverse.indptr, reverse.indices, frontier)
        out_degree -= np.bincount(preds, minlength=n_comp)
        frontier = np.unique(preds[out_degree[preds] == 0])
        depth += 1
    return level


def _pieces(labels: np.ndarray) -> np.ndarray:
    """Piece label per state: components of ≥ 2 states relabelled 0, 1, … by size (then by
    first state), −1 for singleton components."""
    sizes = np.bincount(labels)
    first = np.full(len(sizes), len(labels))
    uniq, first_idx = np.unique(labels, return_index=True)
    first[uniq] = first_idx
    big = np.flatnonzero(sizes >= 2)
    order = big[np.lexsort((first[big], -sizes[big]))]
    relabel = np.full(len(sizes), -1, dtype=np.int64)
    relabel[order] = np.arange(len(order))
    return relabel[labels]


def _directions(piece: np.ndarray, graph: sp.csr_matrix, main: int) -> np.ndarray:
    """Direction label per state relative to the main piece (breadth-first reachability)."""
    n = len(piece)
    direction = np.full(n, UNDETERMINED, dtype=object)
    direction[piece >= 0] = OTHER_PIECE
    if main < 0:
        return direction
    anchor = int(np.flatnonzero(piece == main)[0])
    downstream = breadth_first_order(graph, anchor, directed=True, return_predecessors=False)
    upstream = breadth_first_order(
        graph.T.tocsr(), anchor, directed=True, return_predecessors=False
    )
    direction[downstream] = DOWN
    direction[upstream] = UP
    direction[piece == main] = MAIN
    return direction


# -- optimisers -------------------------------------------------------------------------------
@dataclass
class _Problem:
    """The summed action over internal moves (a→b, weight w) of `n` piece variables."""

    source: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    n: int
    kernel: Kernel
    _pattern: tuple[np.ndarray, ...] | None = field(default=None, repr=False)

    def value_grad(self, v: np.ndarray) -> tuple[float, np.ndarray]:
        return summed_action(v, self.source, self.target, self.weight, self.kernel)

    def curvature(self, v: np.ndarray) -> np.ndarray:
        """w_e K″(x_e): the edge weights of the Hessian Laplacian at v."""
        return self.weight * kernel_values(v[self.source] - v[self.target], self.kernel)[2]

    def hessian(self, v: np.ndarray, ground: np.ndarray | None = None) -> sp.csr_matrix:
        """The Hessian H = Bᵀ diag(w K″) B at v, a weighted graph Laplacian (sparse CSR).

        With `ground`, those states' rows and columns are replaced by the identity (holding
        them fixed removes the per-piece constant null space, so H is positive definite).
        The sparsity pattern is built once; each call only refills the values by bincount.
        """
        if self._pattern is None:
            self._pattern = _laplacian_pattern(self.source, self.target, self.n)
        slot, sign, indices, indptr, rows = self._pattern
        edge = self.curvature(v)
        values = np.bincount(slot, np.tile(edge, 4) * sign, minlength=len(indices))
        if ground is not None and len(ground):
            fixed = np.zeros(self.n, dtype=bool)
            fixed[ground] = True
            touched = fixed[rows] | fixed[indices]
            values[touched] = 0.0
            values[touched & (rows == indices)] = 1.0
        return sp.csr_matrix((values, indices, indptr), shape=(self.n, self.n))


def _laplacian_pattern(source: np.ndarray, target: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """CSR pattern of Bᵀ D B: per edge a→b the entries (a,b), (b,a) get −d, (a,a), (b,b) +d.

    Returns the slot of each of the 4·E contributions, their signs, and the CSR arrays.
    """
    rows = np.concatenate([source, target, source, target]).astype(np.int64)
    cols = np.concatenate([target, source, source, target]).astype(np.int64)
    sign = np.repeat([-1.0, -1.0, 1.0, 1.0], len(source))
    codes, slot = np.unique(rows * n + cols, return_inverse=True)
    unique_rows = codes // n
    indptr = np.searchsorted(unique_rows, np.arange(n + 1))
    return slot, sign, codes % n, indptr, unique_rows


# Polishing stops when the Newton step (the predicted distance to the minimiser) is this small.
XTOL = 1e-8


def _newton(
    problem: _Problem, x: np.ndarray, ground: np.ndarray, gtol: float, maxiter: int
) -> tuple[np.ndarray, int, str, float | None]:
    """Trust-region Newton on the summed action; each step by Steihaug's truncated CG.

    Returns x, iterations, message and max|Newton step| at x when the last step computed at
    x was a full (interior) Newton step, else None.

    `ground` holds one state per piece fixed (the Laplacian is singular along per-piece
    constants), which makes the reduced Hessian positive definite. Why a trust region and not
    a line search: on sparse data the optimum can sit at gaps of tens of kT (a long cycle of
    likely moves closed by one rare move), where softplus is linear and K″ ≈ e^{−|x|} ≈ 0.
    Far from the optimum such flat edges make H nearly singular, the Newton step enormous
    (|step| ≈ 1e16 was seen at the paper's density) and backtracking along it hopeless. The
    trust region (in the Jacobi-scaled norm) bounds every step by where the quadratic model
    was last found reliable and lets CG stop on its boundary, so the steps stay sensible; near
    the optimum the radius no longer binds and the steps are plain inexact Newton steps, whose
    CG tolerance shrinks with the gradient (Eisenstat–Walker), so convergence is superlinear.
    """
    # Newton converges quadratically near the optimum, so polishing far below gtol costs a
    # step or two and makes V accurate even where the Hessian is small (rarely-seen pairs).
    target = gtol * 1e-3
    f, g = problem.value_grad(x)
    g[ground] = 0.0  # the gradient sums to 0 per piece; the ground states are not moved
    # The action is ≥ 0, so no step can lower it by more than f: a model step that promises
    # more is not to be trusted. ½‖p‖²_M ≈ the predicted decrease of a Newton step p.
    radius = math.sqrt(2.0 * f) + 1.0
    stop, n_iter, distance = "maxiter reached", maxiter, None
    for it in range(maxiter):
        g_max = float(np.max(np.abs(g)))
        if g_max == 0.0:
            stop, n_iter, distance = "", it, 0.0
            break
        hessian = problem.hessian(x, ground)
        scale = _jacobi_scale(hessian)
        rtol = min(0.5, math.sqrt(g_max))
        step, predicted, boundary = _steihaug(hessian, g, scale, radius, rtol)
        # A small gradient is not yet the minimiser where the action is nearly flat: a piece
        # joined to the rest only by moves deep in the kernel's tail (gaps of 25-40 kT) has a
        # gradient ~e^{-gap} along its offset while the Newton step there is still ~1 kT. So
        # stop on both: gradient below target AND Newton step below XTOL.
        step_max = float(np.max(np.abs(step)))
        if g_max <= target and step_max <= XTOL and not boundary:
            stop, n_iter, distance = "", it, step_max
            break
        f_new, g_new = problem.value_grad(x + step)
        g_new[ground] = 0.0
        actual = f_new - f
        # At the float resolution of f the ratio is noise: judge by the gradient instead.
        resolution = 1e-13 * max(1.0, abs(f))
        if abs(actual) <= resolution and -predicted <= resolution:
            ratio = 1.0 if np.max(np.abs(g_new)) < g_max else 0.0
        else:
            ratio = actual / predicted if predicted < 0 else -1.0
        size = math.sqrt(float(scale @ (step * step)))
        if ratio < 0.25:
            radius = 0.25 * size
        elif ratio > 0.75 and boundary:
            radius *= 2.0
        if ratio > 1e-4:
            x, f, g = x + step, f_new, g_new
        elif g_max <= target:  # polishing: no progress is possible at the float resolution
            stop, n_iter, distance = "", it, None if boundary else step_max
            break
        elif size <= 1e-15 * (1.0 + math.sqrt(float(scale @ (x * x)))):
            stop, n_iter = "trust region shrank to the float resolution of the potentials", it
            break
    g = problem.value_grad(x)[1]
    if float(np.max(np.abs(g))) <= gtol:
        message = "converged: max|gradient of summed action| <= gtol (trust-region Newton)"
        return x, n_iter, message, distance
    return x, n_iter, f"stopped: {stop} (trust-region Newton)", distance


def _jacobi_scale(hessian: sp.csr_matrix) -> np.ndarray:
    """The preconditioner and trust-region metric: diag(H), floored.

    The floor (1e-10 of the largest entry) keeps a state whose every edge lies in a flat
    stretch of the kernel (K″ ≈ 0) from being allowed an unbounded move.
    """
    diag = hessian.diagonal()
    return np.maximum(diag, 1e-10 * float(diag.max()))


def _steihaug(
    hessian: sp.csr_matrix, g: np.ndarray, scale: np.ndarray, radius: float, rtol: float
) -> tuple[np.ndarray, float, bool]:
    """Steihaug–Toint truncated preconditioned CG for min g·p + ½pᵀHp, ‖p‖_M ≤ radius.

    M = diag(scale) is both the preconditioner and the norm (then ‖p‖_M grows monotonically
    along the CG iterates, so the first iterate outside the region is where to stop). Stops
    when ‖Hp + g‖ ≤ rtol·‖g‖ (interior) or on the boundary. Returns p, the model decrease
    g·p + ½pᵀHp (< 0) and whether p is on the boundary. Ground rows have g = 0 and an identity
    row in H, so they stay 0.
    """
    # ‖p‖²_M, ⟨p, d⟩_M and ‖d‖²_M follow recurrences (no extra passes over the vectors).
    p = np.zeros_like(g)
    r = g.copy()
    inv_scale = 1.0 / scale
    z = r * inv_scale
    d = -z
    rz = float(r @ z)
    pp, pd, dd = 0.0, 0.0, rz
    tol2 = rtol * rtol * float(g @ g)
    boundary = False
    for _ in range(10 * len(g)):
        hd = hessian @ d
        curvature = float(d @ hd)
        alpha = rz / curvature if curvature > 0 else math.inf
        if not math.isfinite(alpha) or pp + alpha * (2.0 * pd + alpha * dd) >= radius * radius:
            # Step to the boundary along d: ‖p + τd‖_M = radius, τ ≥ 0.
            tau = (-pd + math.sqrt(max(pd * pd + dd * (radius * radius - pp), 0.0))) / dd
            p, boundary = p + tau * d, True
            break
        p += alpha * d
        pp += alpha * (2.0 * pd + alpha * dd)
        r += alpha * hd
        if float(r @ r) <= tol2:
            break
        z = r * inv_scale
        rz_new = float(r @ z)
        beta = rz_new / rz
        pd = beta * (pd + alpha * dd)
        dd = rz_new + beta * beta * dd
        d = beta * d - z
        rz = rz_new
    return p, float(g @ p + 0.5 * (p @ (hessian @ p))), boundary


def _newton_distance(
    problem: _Problem, x: np.ndarray, piece_of_var: np.ndarray, g: np.ndarray
) -> float:
    """max|H⁻¹g| at x (one accurate CG solve, no trust region): distance to the minimiser."""
    ground = _ground_states(problem, piece_of_var)
    g = g.copy()
    g[ground] = 0.0
    if not np.any(g):
        return 0.0
    hessian = problem.hessian(x, ground)
    step = _steihaug(hessian, g, _jacobi_scale(hessian), math.inf, 1e-6)[0]
    return float(np.max(np.abs(step)))


def _lbfgsb(
    problem: _Problem, x: np.ndarray, gtol: float, maxiter: int
) -> tuple[np.ndarray, int, str]:
    """scipy L-BFGS-B on the summed action (the paper's optimiser), restarted while it stalls."""
    n_iter, message = 0, ""
    for _ in range(5):
        result = minimize(
            problem.value_grad,
            x,
            jac=True,
            method="L-BFGS-B",
            # ftol=0: stop on the gradient (or a failed line search at machine precision), never
            # on a small relative decrease of a large summed action.
            options={
                "gtol": gtol,
                "ftol": 0.0,
                "maxiter": max(maxiter - n_iter, 1),
                "maxfun": 10 * maxiter,
                "maxcor": 10,
            },
        )
        x, n_iter, message = result.x, n_iter + int(result.nit), f"L-BFGS-B: {result.message}"
        grad_max = float(np.max(np.abs(problem.value_grad(x)[1])))
        if grad_max <= gtol or n_iter >= maxiter or result.nit <= 1:
            break
    return x, n_iter, message


def _ground_states(problem: _Problem, piece_of_var: np.ndarray) -> np.ndarray:
    """One variable per piece to hold fixed: the one with the largest total move weight."""
    degree = np.bincount(problem.source, problem.weight, minlength=problem.n) + np.bincount(
        problem.target, problem.weight, minlength=problem.n
    )
    order = np.lexsort((-degree, piece_of_var))
    first = np.r_[True, piece_of_var[order][1:] != piece_of_var[order][:-1]]
    return order[first]


def _one_sided_bounds(
    data: Transitions, llm: str | None, potentials: np.ndarray, piece: np.ndarray
) -> pd.DataFrame:
    """The paper's bound V_upper − V_lower > log(T(upper→lower)·N_lower) for one-way pairs."""
    columns = ["upper", "lower", "n", "N_upper", "N_lower", "bound", "gap", "satisfied"]
    if llm is None:
        return pd.DataFrame(columns=columns)
    pairs = data.pairs(llm)
    forward = (pairs["n_gf"] == 0).to_numpy()  # f→g seen, g→f never: f is the upper state
    one_way = forward | (pairs["n_fg"] == 0).to_numpy()
    p = pairs[one_way]
    fwd = forward[one_way]
    upper = np.where(fwd, p["i"], p["j"])
    lower = np.where(fwd, p["j"], p["i"])
    n = np.where(fwd, p["n_fg"], p["n_gf"]).astype(np.int64)
    n_upper = np.where(fwd, p["N_f"], p["N_g"])
    n_lower = np.where(fwd, p["N_g"], p["N_f"])
    keep = np.isfinite(n_lower) & np.isfinite(n_upper)
    upper, lower, n, n_upper, n_lower = (a[keep] for a in (upper, lower, n, n_upper, n_lower))
    bound = np.log(np.minimum(1.0, n / n_upper) * n_lower)
    same = (piece[upper] == piece[lower]) & (piece[upper] >= 0)
    # upper→lower was observed, so upper reaches lower: across pieces the gap is +inf.
    gap = np.where(same, potentials[upper] - potentials[lower], np.inf)
    names = data.states.to_numpy(dtype=object)
    return pd.DataFrame(
        {
            "upper": names[upper],
            "lower": names[lower],
            "n": n,
            "N_upper": n_upper,
            "N_lower": n_lower,
            "bound": bound,
            "gap": gap,
            "satisfied": gap >= bound,
        }
    )


def _package_version() -> str:
    try:
        return version("detailed-balance")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def least_action(
    data: Transitions,
    *,
    llm: str | None = None,
    kernel: Kernel = "softplus",
    reference: str | None = None,
    gtol: float = 1e-9,
    maxiter: int = 20_000,
    init: Init = "topological",
    optimizer: Optimizer = "newton",
) -> LeastActionResult:
    """Fit the paper's least-action potential, reporting unbounded directions explicitly.

    data: counted transitions with visits (the weights are `data.moves(llm)["rate"]`).
    llm: which LLM to fit when `data` holds several (required then).
    kernel: "softplus" (K = log(1 + e^{−x}), the paper's code) or "exp" (K = e^{−x/2}).
    reference: a state whose potential is set to 0 in its piece (other pieces keep zero mean);
        it must lie in a piece of ≥ 2 states, since elsewhere the potential is unbounded.
    gtol: converged when max|∂S_sum/∂V| ≤ gtol on the SUMMED action (not the normalised one).
    maxiter: iteration limit of the optimiser (the paper ran L-BFGS-B for up to 20,000).
    init: "topological" (the paper: level in the SCC condensation, shifted to zero mean) or
        "zeros". The level is constant on each piece, so both starts give the same potentials
        (the optimum is unique per piece); the option records which recipe was run.
    optimizer: "newton" (exact sparse Hessian, CG; default) or "lbfgsb" (the paper's).
    """
    for value, allowed, what in (
        (kernel, KERNELS, "kernel"),
        (init, INITS, "init"),
        (optimizer, OPTIMIZERS, "optimizer"),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(allowed)}.")
    if not (gtol > 0 and maxiter >= 1):
        raise ValueError(f"need gtol > 0 and maxiter >= 1 (got gtol={gtol}, maxiter={maxiter}).")
    names = data.llms
    if len(names) > 1 or (llm is not None and names != [llm]):
        data = data.select(llm)  # one LLM, with its own state index (errors name the LLMs)
        names = data.llms
    name = names[0] if names else None
    n = data.n_states
    source, target, weight = _weighted_moves(data, name)
    graph = sp.csr_matrix((np.ones(len(source)), (source, target)), shape=(n, n))
    labels = connected_components(graph, directed=True, connection="strong")[1]
    piece = _pieces(labels)
    level = condensation_levels(labels, source, target)[labels] if n else np.zeros(0, np.int64)
    ref = _reference_index(data, reference, piece)

    # Variables: the states in pieces; objective: the moves inside one piece.
    in_piece = piece >= 0
    local = np.cumsum(in_piece) - 1
    internal = (piece[source] == piece[target]) & in_piece[source]
    problem = _Problem(
        local[source[internal]],
        local[target[internal]],
        weight[internal],
        int(in_piece.sum()),
        kernel,
    )
    piece_of_var = piece[in_piece]
    start = level[in_piece].astype(float) if init == "topological" else np.zeros(problem.n)
    x0 = start - start.mean() if problem.n else start
    with threadpool_limits(1, user_api="blas"):  # tiny BLAS calls: threads only contend
        distance = 0.0
        if problem.n == 0:
            x, n_iter, message = x0, 0, "no strongly connected piece: every potential unbounded"
        elif optimizer == "newton":
            ground = _ground_states(problem, piece_of_var)
            x, n_iter, message, distance = _newton(problem, x0, ground, gtol, maxiter)
        else:
            x, n_iter, message = _lbfgsb(problem, x0, gtol, maxiter)
            distance = None
        s_sum, grad = problem.value_grad(x)
        grad_max = float(np.max(np.abs(grad))) if problem.n else 0.0
        if distance is None:  # not known from the last step: one accurate CG solve
            distance = _newton_distance(problem, x, piece_of_var, grad)

    # Gauge: zero mean per piece (bincount), or 0 at the reference state within its piece.
    if problem.n:
        x = x - (np.bincount(piece_of_var, x) / np.bincount(piece_of_var))[piece_of_var]
    potentials = np.full(n, np.nan)
    potentials[in_piece] = x
    if ref is not None:
        potentials[piece == piece[ref]] -= potentials[ref]

    main = 0 if problem.n else -1
    index = pd.Index(data.states, name="state")
    settings = {
        "method": "least_action",
        "kernel": kernel,
        "reference": reference,
        "gtol": gtol,
        "maxiter": maxiter,
        "init": init,
        "optimizer": optimizer,
        "objective": "summed action over moves inside strongly connected pieces",
        "visits": data.convention,
        "llm": name,
        "n_states": n,
        "n_moves": len(source),
        "n_internal_moves": len(problem.source),
        "n_pieces": int(piece.max()) + 1 if n else 0,
        "data_hash": data.data_hash(),
        "version": _package_version(),
    }
    return LeastActionResult(
        potentials=pd.Series(potentials, index=index, name="potential"),
        bounded=pd.Series(in_piece, index=index, name="bounded"),
        piece=pd.Series(piece, index=index, name="piece"),
        main_piece=main,
        direction=pd.Series(_directions(piece, graph, main), index=index, name="direction"),
        level=pd.Series(level, index=index, name="level"),
        action=s_sum / n if n else 0.0,
        action_sum=s_sum,
        converged=bool(grad_max <= gtol and math.isfinite(s_sum)),
        n_iter=n_iter,
        gradient_max=grad_max,
        message=message,
        settings=settings,
        one_sided_bounds=_one_sided_bounds(data, name, potentials, piece),
        step_max=distance,
    )


def _weighted_moves(data: Transitions, llm: str | None) -> tuple[np.ndarray, ...]:
    """Source, target positions and weights w = min(1, n/N₀) of the observed moves f ≠ g."""
    if llm is None:  # no data at all
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    moves = data.moves(llm)
    weight = moves["rate"].to_numpy(float)
    bad = ~(np.isfinite(weight) & (weight > 0))
    if bad.any():
        row = moves.iloc[np.flatnonzero(bad)[0]]
        raise DataError(
            f"move {row['source']!r} → {row['target']!r} has no usable rate because its source "
            f"has no visits; give {row['source']!r} a visits count (how many calls used it)."
        )
    return moves["i"].to_numpy(np.int64), moves["j"].to_numpy(np.int64), weight


def _reference_index(data: Transitions, reference: str | None, piece: np.ndarray) -> int | None:
    """Position of the reference state; it must have a finite potential."""
    if reference is None:
        return None
    if reference not in data.states:
        raise DataError(f"unknown reference state {reference!r}: it does not occur in the data.")
    ref = int(data.index_of([reference])[0])
    if piece[ref] < 0:
        raise DataError(
            f"reference state {reference!r} is not in any strongly connected piece, so its "
            f"potential is unbounded; choose a state with bounded=True as the reference."
        )
    return ref
