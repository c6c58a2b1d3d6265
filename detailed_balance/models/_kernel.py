"""The exact kernel likelihood of a reversible agent, in numpy: one multinomial per prompt state.

Each call of a prompt state f is one draw from its row of the transition kernel: a move to a
modelled target g (a pair (f, g) of `PairData`), or the *remainder* — a self step, an invalid
or escaped answer, a move to a target that is not modelled. With N_f the calls of f (its
visits, which must be true counts), n_fg the moves to each modelled target and
R_f = N_f − Σ_g n_fg the remainder,

    (n_f·, R_f) ~ Multinomial(N_f; T_f·, 1 − Σ_g T_fg).

Reversible parameterisation (the one deeptime's reversible maximum-likelihood estimator
maximises): a symmetric conductance X_fg = X_gf = exp(u_p) per modelled pair p and a
remainder weight X_ff = exp(r_f) per state, π_f = Σ_g X_fg + X_ff, T_fg = X_fg / π_f,
remainder probability X_ff / π_f. Every row is stochastic by construction, detailed balance
π_f T_fg = π_g T_gf holds exactly, and V = −log π (up to a constant per connected component).
The log-likelihood is

    Σ_p m_p u_p + Σ_f R_f r_f − Σ_f N_f log π_f        (m_p = n_fg + n_gf),

O(pairs + states) per gradient. Scaling every X of a component by one constant changes no T:
that gauge direction is fixed by a quadratic term on the component's mean of (u, r), which the
likelihood does not see. Priors: Normal(0, `scale`) on u and r when `scale` is given (none:
the maximum of the likelihood, for the comparison with deeptime's estimator).

The likelihood factorises. With S_f = Σ_g X_fg, the remainder probability ρ_f = X_ff / π_f
and M_f = N_f − R_f the moves of f, log π_f = log S_f − log(1 − ρ_f) and

    log L = Σ_f [R_f log ρ_f + M_f log(1 − ρ_f)] + [Σ_p m_p u_p − Σ_f M_f log S_f]:

a binomial of each state's remainder times the reversible multinomial of its moves given that
it moved (the jump chain X_fg / S_f, reversible with respect to S). Under a prior that is
independent between ρ and u the two parts are independent a posteriori. ``jump=True`` is the
second part alone — coordinates u only, N_f replaced by M_f — which the Bayesian kernel model
(`_kernel_model`) samples, with ρ_f drawn from its Beta posterior.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from detailed_balance.data import DataError

from ._density import MapResult, block_pcg
from ._pairs import PairData

# Past this many entries in the per-state blocks of the Hessian (Σ_f (degree_f + 1)²), the
# Laplace draws use matrix-free conjugate gradients instead of a sparse factorisation.
MAX_BLOCK_ENTRIES = 20_000_000


class KernelDensity:
    """−log posterior of the reversible kernel model in θ = [u (P), r (K)] and its gradient."""

    def __init__(
        self,
        pairs: PairData,
        scale: float | None = None,
        gauge: float = 1.0,
        jump: bool = False,
    ) -> None:
        self.pairs = pairs
        k = pairs.n_states
        out = np.bincount(pairs.i, pairs.n_fg, k) + np.bincount(pairs.j, pairs.n_gf, k)
        remainder = pairs.visits - out
        if np.any(remainder < -1e-9):
            worst = int(np.argmin(remainder))
            raise DataError(
                f"the kernel likelihood needs true visit counts: state {pairs.states[worst]!r} "
                f"has {out[worst]:g} counted moves but {pairs.visits[worst]:g} calls; use "
                "likelihood='pairs' for approximate visits (e.g. the paper's uniform N₀)."
            )
        self.m = pairs.trials
        self.jump = bool(jump)
        self.moves_out = out  # M_f: calls of f that moved to a modelled target
        self.stays = np.maximum(remainder, 0.0)  # R_f: the remainder count
        # jump: the moves given a move (N_f → M_f), no remainder coordinates
        self.calls = out if self.jump else pairs.visits
        self.remainder = np.zeros(0) if self.jump else self.stays
        self.scale = scale
        # component of each coordinate (pairs take their f's component) and sizes, for the gauge
        self.component = pairs.component[pairs.i]
        if not self.jump:
            self.component = np.concatenate([self.component, pairs.component])
        self.sizes = np.bincount(self.component, minlength=pairs.n_components)
        self.gauge = float(gauge)

    @property
    def size(self) -> int:
        return self.pairs.n_pairs + len(self.remainder)

    def _weights(self, r: np.ndarray) -> np.ndarray | float:
        """X_ff = exp(r) per state (0 for the jump density, which has no remainder)."""
        return np.exp(r) if len(r) else 0.0

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.pairs.n_pairs
        return theta[:p], theta[p:]

    def stationary_weights(self, theta: np.ndarray) -> np.ndarray:
        """π_f = Σ_g X_fg + X_ff (unnormalised), per state."""
        u, r = self.split(theta)
        x = np.exp(u)
        k = self.pairs.n_states
        return np.bincount(self.pairs.i, x, k) + np.bincount(self.pairs.j, x, k) + self._weights(r)

    def potential(self, theta: np.ndarray) -> np.ndarray:
        """V = −log π in the pair models' gauge (`PairData.centre`)."""
        return self.pairs.centre(-np.log(self.stationary_weights(theta)))

    def logp_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        pairs = self.pairs
        u, r = self.split(theta)
        x, rem = np.exp(u), self._weights(r)
        k = pairs.n_states
        pi = np.bincount(pairs.i, x, k) + np.bincount(pairs.j, x, k) + rem
        load = self.calls / pi  # N_f / π_f
        logp = float(self.m @ u + self.remainder @ r - self.calls @ np.log(pi))
        grad_r = self.remainder - rem * load if len(r) else r
        grad = np.concatenate([self.m - x * (load[pairs.i] + load[pairs.j]), grad_r])
        if self.scale is not None:
            logp -= 0.5 * float(theta @ theta) / self.scale**2
            grad -= theta / self.scale**2
        means = np.bincount(self.component, theta, len(self.sizes)) / np.maximum(self.sizes, 1)
        logp -= 0.5 * self.gauge * float(self.sizes @ means**2)
        grad -= self.gauge * means[self.component]
        return logp, grad

    def initial(self) -> np.ndarray:
        """Counts-based start: u = log((m + ½)/2), r = log(R + ½)."""
        return np.concatenate([np.log((self.m + 0.5) / 2), np.log(self.remainder + 0.5)])

    def _spread(self, w: np.ndarray) -> np.ndarray:
        """A w: per state, the sum of its pairs' and its remainder's entries (K,)."""
        pairs, k = self.pairs, self.pairs.n_states
        u, r = self.split(w)
        return np.bincount(pairs.i, u, k) + np.bincount(pairs.j, u, k) + (r if len(r) else 0.0)

    def _gather(self, y: np.ndarray) -> np.ndarray:
        """Aᵀ y: per coordinate, the sum over the states it enters (P + K,)."""
        parts = [y[self.pairs.i] + y[self.pairs.j]]
        return np.concatenate(parts if self.jump else [*parts, y])

    def hessp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(−∇² log p) v, exact, O(pairs + states): with π = A e^θ,
        ∇² Σ N log π = diag(e^θ ⊙ Aᵀ(N/π)) − (e^θ ⊙ Aᵀ) diag(N/π²) (A ⊙ e^θ)."""
        x = np.exp(theta)
        pi = self._spread(x)
        out = x * self._gather(self.calls / pi) * v
        out -= x * self._gather(self.calls / pi**2 * self._spread(x * v))
        if self.scale is not None:
            out += v / self.scale**2
        means = np.bincount(self.component, v, len(self.sizes)) / np.maximum(self.sizes, 1)
        return out + self.gauge * means[self.component]

    def find_map(self, start: np.ndarray | None = None, maxiter: int = 500) -> np.ndarray:
        """The MAP θ* (`mode`)."""
        return self.mode(start, maxiter).theta

    def mode(self, start: np.ndarray | None = None, maxiter: int = 500) -> MapResult:
        """The MAP with its log density, iterations and convergence flag: Newton with conjugate-gradient steps in a trust region (`trust-krylov`, exact
        Hessian-vector products): converges to the gradient's precision, where L-BFGS stalls
        at the float resolution of the objective (a sum of ~N terms)."""
        theta0 = self.initial() if start is None else np.asarray(start, dtype=float)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            logp, grad = self.logp_grad(theta)
            return -logp, -grad

        # The gradient is a sum of ~N count terms: its float noise grows like √N, so the
        # tolerance does too (1e-8 per unit count scale; a fixed 1e-8 stalls on large data).
        gtol = 1e-8 * max(1.0, float(np.sqrt(self.calls.sum())))
        with threadpool_limits(1, user_api="blas"), warnings.catch_warnings():
            # trlib's subproblem solver warns (invalid multiply) near the optimum of tiny cases
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

    # -- Laplace draws ----------------------------------------------------------------------
    def _incidence(self) -> sp.csr_matrix:
        """A (K × (P + K)): state f × the coordinates entering π_f (its pairs, its remainder)."""
        pairs, p, k = self.pairs, self.pairs.n_pairs, self.pairs.n_states
        kr = len(self.remainder)
        rows = np.concatenate([pairs.i, pairs.j, np.arange(kr)])
        cols = np.concatenate([np.arange(p), np.arange(p), p + np.arange(kr)])
        return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(k, p + kr))

    def explicit_hessian(self, theta: np.ndarray) -> sp.csc_matrix | None:
        """−∇² log p at θ without the gauge term, as a sparse matrix: one dense block
        N_f (diag(q_f) − q_f q_fᵀ) per state over its coordinates, plus the prior (None when
        the blocks would hold more than `MAX_BLOCK_ENTRIES` entries: hubs)."""
        a = self._incidence().tocsr()
        degree = np.diff(a.indptr)
        if float(np.sum(degree.astype(float) ** 2)) > MAX_BLOCK_ENTRIES:
            return None
        x = np.exp(theta)
        pi = a @ x
        state = np.repeat(np.arange(len(degree)), degree)  # entries in CSR order
        coord = a.indices
        q = x[coord] / pi[state]
        # all (e, e′) pairs of entries of one state: e repeated deg times, e′ running
        reps = degree[state]
        first = np.repeat(np.arange(len(coord)), reps)
        offset = np.arange(len(first)) - np.repeat(np.cumsum(reps) - reps, reps)
        second = a.indptr[state[first]] + offset
        values = -self.calls[state[first]] * q[first] * q[second]
        diag = np.bincount(coord, self.calls[state] * q, self.size)
        if self.scale is not None:
            diag = diag + 1.0 / self.scale**2
        n = self.size
        hessian = sp.coo_matrix((values, (coord[first], coord[second])), shape=(n, n))
        return (hessian + sp.diags(diag)).tocsc()

    def laplace_draws(
        self,
        theta: np.ndarray,
        draws: int,
        rng: np.random.Generator,
        tol: float = 1e-8,
        direct: bool = True,
    ) -> np.ndarray:
        """`draws` draws (draws × (P + K)) of θ ~ N(θ*, H⁻¹), H = −∇² log p at `theta`, by
        perturb-then-solve: H is a sum of one multinomial information per state,
        N_f (diag(q_f) − q_f q_fᵀ) with q_f = X_f· / π_f over its coordinates, plus the prior
        and gauge terms, so b = Σ_f √N_f (√q_f ⊙ ξ_f − q_f (√q_f · ξ_f)) + prior and gauge
        noise has covariance H, and δ = H⁻¹ b (matrix-free block conjugate gradients, Jacobi
        preconditioned, all draws at once) has covariance H⁻¹. Needs a proper posterior
        (`scale` given), else the gauge direction alone is not enough to pin δ.

        By default (`direct`) the draws come from the Woodbury form of H⁻¹ without the gauge
        term instead (`_woodbury_draws`: one sparse factorisation of a states × states matrix):
        the likelihood does not change along a component's constant direction and the
        isotropic prior does not couple it to the rest, so the gauge term changes nothing but
        that direction, which V = −log π (centred) does not see; those draws have covariance
        (H − gauge)⁻¹."""
        if self.scale is None:
            raise ValueError("laplace_draws needs a prior scale (KernelDensity(scale=...)).")
        if direct:
            try:
                return theta + self._woodbury_draws(theta, draws, rng)
            except MemoryError:
                # The exact factor of C fills in like the state graph's separators: at 10× the
                # paper's scale (75,000 states) SuperLU runs out of memory. Conjugate
                # gradients need no factor, only time (≈ 1.5 s per draw there).
                warnings.warn(
                    f"the exact Laplace factor of {int((self.calls > 0).sum())} states does not "
                    "fit in memory; drawing by conjugate gradients instead (slower: fewer "
                    "draws, or method='nuts', are faster at this size).",
                    RuntimeWarning,
                    stacklevel=2,
                )
        a = self._incidence()
        coo = a.tocoo()
        state, coord = coo.row, coo.col
        x = np.exp(theta)
        pi = a @ x
        q = x[coord] / pi[state]
        noise = rng.standard_normal((len(coord), draws))
        sq = np.sqrt(q)[:, None] * noise
        per_state = sp.csr_matrix((np.ones(len(coord)), (state, np.arange(len(coord)))))
        sums = per_state @ sq  # (K, D): √q_f · ξ_f per state
        entries = np.sqrt(self.calls[state])[:, None] * (sq - q[:, None] * sums[state])
        scatter = sp.csr_matrix((np.ones(len(coord)), (coord, np.arange(len(coord)))))
        b = scatter @ entries
        b += rng.standard_normal(b.shape) / self.scale
        sizes = np.maximum(self.sizes, 1)
        eta = rng.standard_normal((len(self.sizes), draws))
        b += (np.sqrt(self.gauge / sizes)[:, None] * eta)[self.component]
        operator = _Hessian(self, theta, a)
        with threadpool_limits(1, user_api="blas"):
            delta = block_pcg(operator, b, 1.0 / operator.diagonal(), tol, 100_000)
        return (theta[:, None] + delta).T

    def _woodbury_draws(self, theta: np.ndarray, draws: int, rng: np.random.Generator):
        """`draws` draws (draws × size) of δ ~ N(0, (H − gauge)⁻¹) by the Woodbury identity.

        H = D − W diag(N) Wᵀ + prior: D the diagonal Σ_f N_f q_fc, W (coordinates × states)
        holds q_fc, so with D̃ = D + prior

            H⁻¹ = D̃⁻¹ + D̃⁻¹ W C⁻¹ Wᵀ D̃⁻¹,   C = diag(1/N) − Wᵀ D̃⁻¹ W,

        a sum of two covariances: δ = D̃^-½ ξ₁ + D̃⁻¹ W B ξ₂ with B Bᵀ = C⁻¹ (the exact factor
        of `_whiten.ilu_whitening`). C (states × states, SPD: the Schur complement of a positive
        definite block matrix) has the sparsity of the state graph and factors like the pair
        models' Laplacian, where H itself has the line graph's pattern and fills in (an
        18.7M-entry factor at paper scale, 60 s for 4,000 draws, against ~2 s here)."""
        from ._whiten import ilu_whitening

        incidence = self._incidence()
        a = incidence.tocoo()
        x = np.exp(theta)
        pi = np.asarray(incidence @ x)
        q = x[a.col] / pi[a.row]
        calls = self.calls[a.row]
        d = np.bincount(a.col, calls * q, self.size) + 1.0 / self.scale**2
        used = self.calls > 0
        keep = calls > 0
        index = np.cumsum(used) - 1  # position of each used state in C
        w = sp.csr_matrix(
            (q[keep], (a.col[keep], index[a.row[keep]])), shape=(self.size, int(used.sum()))
        )
        c = (sp.diags(1.0 / self.calls[used]) - w.T @ sp.diags(1.0 / d) @ w).tocsc()
        factor = ilu_whitening(c, np.zeros(c.shape[0]), drop_tol=0.0)
        y = factor.apply(parallel_normals(rng, (draws, c.shape[0])))  # covariance C⁻¹
        # W y per draw as two gathers (a coordinate enters at most two states' π: a pair's
        # ends, or a remainder's own state), faster than the sparse product with 4,000 columns
        w = w.tocsr()
        count = np.diff(w.indptr)
        first = np.where(count > 0, w.indices[np.minimum(w.indptr[:-1], w.nnz - 1)], 0)
        second = np.where(count > 1, w.indices[np.minimum(w.indptr[:-1] + 1, w.nnz - 1)], 0)
        q1 = np.where(count > 0, w.data[np.minimum(w.indptr[:-1], w.nnz - 1)], 0.0) / d
        q2 = np.where(count > 1, w.data[np.minimum(w.indptr[:-1] + 1, w.nnz - 1)], 0.0) / d
        noise = parallel_normals(rng, (draws, self.size))
        return _woodbury_combine(y, first, second, q1, q2, noise, np.sqrt(d))

    def potential_draws(self, thetas: np.ndarray) -> np.ndarray:
        """V = −log π per draw (draws × K), in the pair models' gauge."""
        a = self._incidence()
        return self.pairs.centre(-np.log(np.exp(thetas) @ a.T))

    def kernel_rows(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """T_fg, T_gf per pair and the remainder probability per state."""
        u, r = self.split(theta)
        pi = self.stationary_weights(theta)
        x = np.exp(u)
        return x / pi[self.pairs.i], x / pi[self.pairs.j], self._weights(r) / pi


class _Hessian:
    """−∇² log p at θ as a matrix-free operator (`H @ V` for V of shape (P + K, D))."""

    def __init__(self, density: KernelDensity, theta: np.ndarray, a: sp.csr_matrix) -> None:
        self.density, self.a, self.at = density, a, a.T.tocsr()
        self.x = np.exp(theta)
        pi = a @ self.x
        self.load = density.calls / pi
        self.load2 = density.calls / pi**2
        self.first = self.x * (self.at @ self.load)

    def diagonal(self) -> np.ndarray:
        d = self.first - self.x**2 * (self.at @ self.load2)
        dens = self.density
        d = d + (1.0 / dens.scale**2 if dens.scale is not None else 0.0)
        return d + dens.gauge / np.maximum(dens.sizes, 1)[dens.component]

    def __matmul__(self, v: np.ndarray) -> np.ndarray:
        dens = self.density
        out = self.first[:, None] * v
        out -= self.x[:, None] * (
            self.at @ (self.load2[:, None] * (self.a @ (self.x[:, None] * v)))
        )
        if dens.scale is not None:
            out += v / dens.scale**2
        sizes = np.maximum(dens.sizes, 1)
        means = np.zeros((len(sizes), v.shape[1]))
        np.add.at(means, dens.component, v)
        return out + dens.gauge * (means / sizes[:, None])[dens.component]


def multinomial_loglik(pairs: PairData, t_fg: np.ndarray, t_gf: np.ndarray) -> float:
    """Σ_f log Multinomial(n_f·, R_f; N_f, T_f·, 1 − Σ T_f·), with its constant, for any
    sub-stochastic rows (a reference for tests and the kernel PPC)."""
    from scipy.special import gammaln, xlogy

    k = pairs.n_states
    out = np.bincount(pairs.i, pairs.n_fg, k) + np.bincount(pairs.j, pairs.n_gf, k)
    rest = pairs.visits - out
    leave = np.bincount(pairs.i, t_fg, k) + np.bincount(pairs.j, t_gf, k)
    value = float(np.sum(gammaln(pairs.visits + 1) - gammaln(rest + 1)))
    value -= float(np.sum(gammaln(pairs.n_fg + 1)) + np.sum(gammaln(pairs.n_gf + 1)))
    value += float(np.sum(xlogy(pairs.n_fg, t_fg)) + np.sum(xlogy(pairs.n_gf, t_gf)))
    return value + float(np.sum(xlogy(rest, 1.0 - leave)))


__all__ = ["KernelDensity", "multinomial_loglik"]


_BLOCKS = 8  # fixed, so the draws do not depend on the number of threads


def parallel_fill(rng: np.random.Generator, rows: int, cols: int, fill) -> np.ndarray:
    """A (rows × cols) array of random numbers made in `_BLOCKS` row blocks, each from its own
    child of `rng` (`Generator.spawn`: reproducible, independent of how many threads run
    them), the blocks on threads: NumPy's generators release the GIL, and at paper scale the
    draws were a third of a `map` fit (2.9 s for 10⁸ normals on one core). `fill(child,
    out)` writes a block in place."""
    out = np.empty((rows, cols))
    edges = np.linspace(0, rows, _BLOCKS + 1).astype(int)
    children = rng.spawn(_BLOCKS)
    jobs = [(c, out[a:b]) for c, a, b in zip(children, edges[:-1], edges[1:], strict=True) if b > a]
    if rows * cols < 1_000_000 or numba.get_num_threads() == 1:
        for child, block in jobs:
            fill(child, block)
        return out
    with ThreadPoolExecutor(max_workers=numba.get_num_threads()) as pool:
        list(pool.map(lambda job: fill(*job), jobs))
    return out


def parallel_normals(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Standard normals of `shape` (rows, cols) by `parallel_fill`."""
    return parallel_fill(rng, shape[0], shape[1], lambda child, out: child.standard_normal(out=out))


@numba.njit(parallel=True, cache=True)
def _woodbury_combine(y, first, second, q1, q2, noise, sqrt_d):  # pragma: no cover (numba)
    """δ = D̃⁻¹ W y + D̃^-½ ξ per draw (row), in place in `noise`: a coordinate enters at most
    two states' π (a pair's ends, or a remainder's own state), so W y is two gathers. Fused
    and parallel over draws: the numpy gathers over 4,000 × 27,000 entries took 2.6 s."""
    draws, size = noise.shape
    for r in numba.prange(draws):
        for c in range(size):
            noise[r, c] = y[r, first[c]] * q1[c] + y[r, second[c]] * q2[c] + noise[r, c] / sqrt_d[c]
    return noise
