"""The simulator's numerical core: random graphs, the one Metropolis–Hastings kernel, the
stationary distribution and the samplers of counts.

One kernel for every simulator of the package (`simulate`, the LLM panels of `panel`, the
embedded simulated LLM of `detailed_balance.agents.simulated`): on the undirected edges f–g,

    T(f→g) = p · min(1/d_f, exp(u_fg)/d_g),      u_fg = V_f − V_g + A_fg,  A_fg = −A_gf,

so log T(f→g) − log T(g→f) = u_fg (detailed balance w.r.t. exp(−V) when A = 0). d is the
proposal degree of each state: the graph degree (`simulate`), a common maximum degree (the
panels: q·min(1, e^u), q = 1/d), or K − 1 on a complete graph (the simulated LLM).
"""

from __future__ import annotations

import bisect
import warnings

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from threadpoolctl import threadpool_limits

from detailed_balance.data import strong_components


# -- graphs and the kernel ------------------------------------------------------------------------
def _graph(
    n: int, mean_degree: float, exponent: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges (a < b) of a connected heavy-tailed random graph, sorted and unique.

    A random recursive tree (node k of a random order attaches to a uniform earlier node)
    makes it connected; Chung–Lu edges with Pareto(exponent − 1) weights (endpoints drawn
    proportional to weight) add the heavy-tailed degrees until the mean degree is reached.
    """
    order = rng.permutation(n)
    parent = order[(rng.random(n - 1) * np.arange(1, n)).astype(np.int64)]
    codes = _edge_codes(order[1:], parent, n)
    target = max(n - 1, min(int(round(n * mean_degree / 2)), n * (n - 1) // 2))
    weight = (1.0 - rng.random(n)) ** (-1.0 / (exponent - 1.0))
    # Chung–Lu's structural cutoff w ≤ sqrt(Σw): hubs stay hubs (degree ~ sqrt(n · mean degree))
    # without one state holding a finite share of all edges, which would make the kernel's
    # leaves nearly absorbing (T(leaf→hub) ≤ 1/d_hub) and mixing glacial.
    weight = np.minimum(weight, np.sqrt(weight.sum()))
    cdf = np.cumsum(weight)
    cdf /= cdf[-1]
    for _ in range(50):
        missing = target - len(codes)
        if missing <= 0:
            break
        draw = int(missing * 1.1) + 16
        u = np.minimum(np.searchsorted(cdf, rng.random(draw), side="right"), n - 1)
        w = np.minimum(np.searchsorted(cdf, rng.random(draw), side="right"), n - 1)
        keep = u != w
        extra = _edge_codes(u[keep], w[keep], n)
        pos = np.minimum(np.searchsorted(codes, extra), len(codes) - 1)
        extra = extra[codes[pos] != extra]  # new edges only (codes is sorted)
        extra = rng.permutation(extra)[:missing]
        codes = _sorted_unique(np.concatenate([codes, extra]))
    return codes // n, codes % n


def _edge_codes(u: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    lo, hi = np.minimum(u, w).astype(np.int64), np.maximum(u, w).astype(np.int64)
    return _sorted_unique(lo * n + hi)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique for int64 codes via one sort (several times faster than its hash path here)."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])]


def metropolis_rates(
    v: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    *,
    drive: np.ndarray | None = None,
    degree: np.ndarray | None = None,
    move_probability: float = 1.0,
    beta: float = 1.0,
    log_space: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Off-diagonal Metropolis–Hastings rates on the undirected edges a–b, both directions.

    Returns ``(source, target, rate)`` for the directed edges a→b then b→a with
    rate = p·min(1/d_f, exp(u_fg)/d_g), u_fg = β(v_f − v_g) + A_fg (`drive` per edge a→b, the
    reverse gets −A; β = `beta`, the inverse temperature; p = `move_probability`). `degree`
    is the proposal degree d per state (default: the graph degree).

    ``log_space=True`` evaluates the minimum in log space, so that large |u| neither overflows
    nor underflows to 0 (`simulate`); ``False`` evaluates p·min(1/d_f, e^u·(1/d_g)) directly,
    the arithmetic the LLM panels were seeded with (their multinomial draws depend on the last
    bit of each probability, so the seeded panels stay identical).
    """
    n = len(v)
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    if degree is None:
        degree = np.bincount(src, minlength=n)
    degree = np.asarray(degree, dtype=float)
    u = v[src] - v[dst] if beta == 1.0 else beta * (v[src] - v[dst])
    if drive is not None:
        u = u + np.concatenate([drive, -drive])
    if log_space:
        log_degree = np.log(degree)
        log_rate = np.log(move_probability) + np.minimum(-log_degree[src], u - log_degree[dst])
        return src, dst, np.exp(log_rate)
    inverse = 1.0 / degree
    rate = move_probability * np.minimum(inverse[src], np.exp(u) * inverse[dst])
    return src, dst, rate


def _mh_kernel(v: np.ndarray, a: np.ndarray, b: np.ndarray, z: np.ndarray, p: float):
    """T(f→g) = p·min(1/d_f, exp(u_fg)/d_g), u_fg = V_f − V_g + A_fg; diagonal = 1 − Σ row."""
    n = len(v)
    src, dst, rate = metropolis_rates(v, a, b, drive=z, move_probability=p)
    stay = 1.0 - np.bincount(src, weights=rate, minlength=n)
    rows = np.concatenate([src, np.arange(n)])
    cols = np.concatenate([dst, np.arange(n)])
    data = np.concatenate([rate, np.clip(stay, 0.0, None)])
    kernel = sp.csr_matrix((data, (rows, cols)), shape=(n, n))
    kernel.eliminate_zeros()  # a row with no self step has no diagonal entry to land on
    kernel.sort_indices()
    return kernel


def _boltzmann(v: np.ndarray) -> np.ndarray:
    w = np.exp(-(v - v.min()))
    return w / w.sum()


def _as_stochastic(matrix, origin: str | None = None) -> sp.csr_matrix:
    where = f"{origin}: " if origin else ""
    kernel = sp.csr_matrix(matrix, dtype=float)
    n = kernel.shape[0]
    if kernel.shape != (n, n):
        raise ValueError(f"{where}a transition matrix must be square, got shape {kernel.shape}.")
    if not np.all(np.isfinite(kernel.data)) or np.any(kernel.data < 0):
        bad = np.flatnonzero(~np.isfinite(kernel.data) | (kernel.data < 0))[0]
        row = np.searchsorted(kernel.indptr, bad, side="right") - 1
        raise ValueError(f"{where}row {row}: entries must be finite probabilities >= 0.")
    sums = np.asarray(kernel.sum(axis=1)).ravel()
    off = np.abs(sums - 1.0) > 1e-8
    if off.any():
        row = np.flatnonzero(off)[0]
        raise ValueError(
            f"{where}row {row} sums to {sums[row]:.10g}, not 1; a transition matrix is "
            f"row-stochastic (put the probability of staying on the diagonal)."
        )
    kernel.eliminate_zeros()
    kernel.sort_indices()
    return kernel


def stationary_distribution(kernel, guess: np.ndarray | None = None) -> np.ndarray:
    """π with π P = π, Σπ = 1, for an irreducible row-stochastic P (dense or sparse).

    Small n: dense LU of (Pᵀ − I) with one equation replaced by Σπ = 1. Large n: sparse LU
    fills in catastrophically on random graphs, and plain iterations crawl because states
    that rarely move are nearly absorbing; so we solve for the stationary law μ of the *jump*
    chain (P without its diagonal, rows renormalised; π ∝ μ / (1 − P_ff)) with BiCGSTAB
    (GMRES as fallback), pinning one state, started from `guess` (e.g. exp(−V)) when given.
    """
    p = sp.csr_matrix(kernel, dtype=float)
    n = p.shape[0]
    rows = np.repeat(np.arange(n), np.diff(p.indptr))
    n_pieces = int(strong_components(rows, p.indices, n).max(initial=-1)) + 1
    if n_pieces > 1:
        raise ValueError(
            f"the transition matrix has {n_pieces} strongly connected pieces; a unique "
            f"stationary distribution (and V = −log π) needs one (an irreducible chain)."
        )
    if n == 1:
        return np.ones(1)
    if n <= 2000:
        system = p.T.toarray() - np.eye(n)
        system[-1, :] = 1.0  # Pᵀ − I has rank n − 1: swap one equation for Σπ = 1
        rhs = np.zeros(n)
        rhs[-1] = 1.0
        pi = np.linalg.solve(system, rhs)
    else:
        pi = _stationary_iterative(p, guess)
    pi = np.clip(pi, 0.0, None)
    pi /= pi.sum()
    residual = np.abs(p.T @ pi - pi).max() / pi.max()
    if not residual < 1e-8:
        warnings.warn(
            f"stationary distribution solved only to a relative residual of {residual:.2g}",
            RuntimeWarning,
            stacklevel=2,
        )
    return pi


def _stationary_iterative(p: sp.csr_matrix, guess: np.ndarray | None) -> np.ndarray:
    n = p.shape[0]
    stay = p.diagonal()
    escape = 1.0 - stay
    jump = (sp.diags(1.0 / escape) @ (p - sp.diags(stay))).tocsr()
    system = (sp.identity(n, format="csr") - jump.T).tocsr()
    start = np.full(n, 1.0 / n) if guess is None else np.asarray(guess, dtype=float)
    mu0 = start * escape
    pin = int(np.argmax(mu0))
    keep = np.flatnonzero(np.arange(n) != pin)
    reduced = system[keep][:, keep]
    rhs = -system[keep][:, [pin]].toarray().ravel()
    x0 = mu0[keep] / mu0[pin]
    # Vector-sized BLAS calls: threads only contend (5x slower on a busy 2-core machine).
    with threadpool_limits(1, user_api="blas"):
        x, info = spla.bicgstab(reduced, rhs, x0=x0, rtol=1e-12, maxiter=20 * n)
        if info != 0 or not np.all(np.isfinite(x)):
            x, info = spla.gmres(reduced, rhs, x0=x0, rtol=1e-12, restart=100, maxiter=100)
    mu = np.insert(x, pin, 1.0)
    return mu / escape


# -- sampling -------------------------------------------------------------------------------------
def _sample(
    kernel: sp.csr_matrix,
    transitions: int,
    allocation: str,
    rng: np.random.Generator,
    pi: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Visits per state and counts per stored kernel entry (CSR order)."""
    n = kernel.shape[0]
    if allocation == "uniform":
        visits = np.full(n, transitions // n, dtype=np.int64)
        extra = rng.choice(n, transitions - visits.sum(), replace=False)
        visits[extra] += 1
        return visits, _sample_uniform(kernel, visits, rng)
    if allocation == "chain":
        return _sample_chain(kernel, transitions, rng, pi)
    raise ValueError(f"unknown allocation {allocation!r}; use 'uniform' or 'chain'.")


def _row_cumulative(kernel: sp.csr_matrix) -> np.ndarray:
    """Within-row cumulative probabilities of the CSR entries, each row's last entry exactly 1."""
    data = kernel.data
    total = np.cumsum(data)
    starts = kernel.indptr[:-1]
    before = np.concatenate([[0.0], total])[starts]
    cum = total - np.repeat(before, np.diff(kernel.indptr))
    cum[kernel.indptr[1:] - 1] = 1.0
    return cum


def _sample_uniform(kernel: sp.csr_matrix, visits: np.ndarray, rng: np.random.Generator):
    """Multinomial row outcomes for fixed visits: one uniform per call + one searchsorted.

    Keys row + cumulative(row) are increasing across the whole CSR array, so a call from row f
    with uniform u lands on the entry whose key interval contains f + u.
    """
    n = kernel.shape[0]
    keys = np.repeat(np.arange(n, dtype=float), np.diff(kernel.indptr)) + _row_cumulative(kernel)
    source = np.repeat(np.arange(n, dtype=np.int64), visits)
    entry = np.searchsorted(keys, source + rng.random(len(source)), side="right")
    # f + u can round up to f + 1 for u within 1e-16 of 1 and large f: keep the call in row f.
    entry = np.minimum(entry, kernel.indptr[source + 1] - 1)
    return np.bincount(entry, minlength=kernel.nnz)


def _sample_chain(kernel: sp.csr_matrix, steps: int, rng: np.random.Generator, pi: np.ndarray):
    """One Markov chain of `steps` calls started from π (sequential by nature; bisect on lists)."""
    cum = _row_cumulative(kernel).tolist()
    indptr = kernel.indptr.tolist()
    indices = kernel.indices.tolist()
    uniforms = rng.random(steps).tolist()
    state = int(rng.choice(len(pi), p=pi))
    entries = [0] * steps
    right = bisect.bisect_right
    for t, u in enumerate(uniforms):
        k = right(cum, u, indptr[state], indptr[state + 1] - 1)
        entries[t] = k
        state = indices[k]
    entry = np.asarray(entries, dtype=np.int64)
    counts = np.bincount(entry, minlength=kernel.nnz)
    rows = np.repeat(np.arange(kernel.shape[0]), np.diff(kernel.indptr))
    visits = np.bincount(rows[entry], minlength=kernel.shape[0]).astype(np.int64)
    return visits, counts
