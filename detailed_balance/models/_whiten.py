"""Whitening by an incomplete Cholesky factor of the Laplace precision.

At the MAP the curvature of −log p in V is H = L_w + diag(h): a weighted graph Laplacian plus
the prior's curvature. NUTS in z, with V = V* + B z and B Bᵀ ≈ H⁻¹, sees a posterior close to
N(0, I) and needs few leapfrog steps. The exact sparse factor of H fills in badly on random
graphs (~240,000 nonzeros on the paper-scale core), Jacobi scaling leaves the whitened
condition number in the hundreds (√κ ≈ 17), but an incomplete factor with a drop tolerance
keeps about as many nonzeros as H (~24,000) and brings √κ to ≈ 1.7, ≈ 1.4 after the lift
below (measured at paper scale, docs/benchmarks.md):

    Pᵀ H P ≈ L D Lᵀ  (SuperLU's ILUTP in symmetric mode: L unit lower triangular)
    B₀ = P L⁻ᵀ D^-½,   i.e. V = V* + P y with Lᵀ y = D^-½ z.

What the dropped fill costs lands on the softest modes (a component's near-constant vector,
held only by the prior): at paper scale one eigenvalue of B₀ᵀ H B₀ sits at 0.2 while the rest
lie in [0.68, 1.32]. Those few modes u (eigenvalues λ < 0.6, found by Lanczos on the whitened
operator) are lifted to 1: B = B₀ (I + U diag(λ^-½ − 1) Uᵀ).

Any invertible B samples the same posterior (the Jacobian is constant); how close B Bᵀ is to
H⁻¹ only decides the speed. With ``drop_tol = 0``, or when the exact factor of a graph of at
most `EXACT_LIMIT` states fills in no more than the incomplete one may, the factor is exact
(B Bᵀ = H⁻¹).

`whiten` is the map as one PyTensor Op: one back substitution over the factor's nonzeros,
and its pullback one forward substitution (numba for nutpie/ADVI, numpy otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pytensor.tensor as pt
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from pytensor.gradient import disconnected_type
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch.basic import register_funcify_default_op_cache_key
from scipy.sparse.csgraph import reverse_cuthill_mckee

# Up to this many states the exact factor is tried first and kept when its fill stays within
# `fill_factor` × the curvature's nonzeros (small or tree-like graphs): B Bᵀ = H⁻¹ exactly.
EXACT_LIMIT = 3000


@dataclass(frozen=True)
class Whitening:
    """V = centre + B z with B = P L⁻ᵀ D^-½ (L strictly lower part stored by column)."""

    centre: np.ndarray  # (K,) the MAP
    scale: np.ndarray  # (K,) D^-½
    perm: np.ndarray  # (K,) V[k] = y[perm[k]]
    indptr: np.ndarray  # CSC of the strictly lower part of L
    indices: np.ndarray
    data: np.ndarray
    basis: np.ndarray  # (K, r) orthonormal soft modes U of B₀ᵀ H B₀
    coef: np.ndarray  # (r,) λ^-½ − 1

    @property
    def nnz(self) -> int:
        return len(self.data)

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.scale, self.perm, self.indptr, self.indices, self.data)

    def deviation(self, z):
        """B z as a PyTensor expression (what the PyMC models sample through)."""
        if len(self.coef):
            z = z + pt.dot(self.basis, self.coef * pt.dot(self.basis.T, z))
        return whiten(z, *self.arrays)

    def apply(self, z: np.ndarray) -> np.ndarray:
        """centre + B z in numpy (z may be (K,) or (..., K))."""
        z = np.asarray(z, float)
        if len(self.coef):
            z = z + (z @ self.basis) * self.coef @ self.basis.T
        flat = np.ascontiguousarray(z.reshape(-1, z.shape[-1]))
        big = flat.shape[0] * (self.nnz + flat.shape[1]) > 200_000_000
        out = (_rows_forward_parallel if big else _rows_forward)(flat, *self.arrays)
        out += self.centre
        return out.reshape(z.shape)

    def matrix(self) -> np.ndarray:
        """B as a dense array (tests, small models)."""
        return self.apply(np.eye(len(self.centre))).T - self.centre[:, None]

    def factor_order(self, matrix: sp.spmatrix) -> sp.csc_matrix:
        """A symmetric (K × K) matrix with rows and columns in the factor's order, for `pcg`."""
        inverse = np.argsort(self.perm)
        return sp.csc_matrix(matrix, dtype=float)[inverse][:, inverse].tocsc()

    def pcg(
        self, ordered: sp.csc_matrix, rhs: np.ndarray, tol: float = 1e-8, maxiter: int = 5000
    ) -> tuple[np.ndarray, np.ndarray]:
        """Solve H X = rhs (K × m, H symmetric, given as `ordered` = `factor_order(H)`) by
        conjugate gradients preconditioned with B Bᵀ (≈ H⁻¹ when this whitens H), one column
        per thread. Returns X and the iterations per column (maxiter where it did not
        converge). In the factor's order (RCM for incomplete factors) H is banded, so the
        matrix-vector products and triangular solves read memory nearly sequentially."""
        inverse = np.argsort(self.perm)
        basis_t = np.ascontiguousarray(self.basis.T)  # z is in factor order already
        rhs = np.asarray(rhs, dtype=float)
        out, iterations = _pcg_columns(
            ordered.indptr.astype(np.int64),
            ordered.indices.astype(np.int64),
            ordered.data,
            self.scale,
            np.arange(len(self.perm), dtype=np.int64),
            self.indptr,
            self.indices,
            self.data,
            basis_t,
            (1.0 + self.coef) ** 2 - 1.0,
            np.ascontiguousarray(rhs[inverse]),
            float(tol),
            int(maxiter),
        )
        return out[self.perm], iterations

    @classmethod
    def identity(cls, k: int) -> Whitening:
        return cls(
            np.zeros(k),
            np.ones(k),
            np.arange(k, dtype=np.int64),
            np.zeros(k + 1, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            np.zeros(0),
            np.zeros((k, 0)),
            np.zeros(0),
        )


def ilu_whitening(
    hessian: sp.spmatrix,
    centre: np.ndarray,
    drop_tol: float = 0.03,
    fill_factor: float = 5.0,
    soft_modes: int = 6,
) -> Whitening:
    """The whitening of `hessian` (SPD, K × K) by its incomplete factor (see the module doc)."""
    k = hessian.shape[0]
    if k == 0:
        return Whitening.identity(0)
    matrix = sp.csc_matrix(hessian, dtype=float)
    matrix.sort_indices()
    budget = float(fill_factor) * (matrix.nnz + k) / 2  # nonzeros of the factor we accept
    factor = None
    if drop_tol == 0 or k <= EXACT_LIMIT:
        factor, perm = _factor(matrix, 0.0, float(k))
        if drop_tol > 0 and factor.L.nnz > budget:
            factor = None  # the exact factor fills in: use the incomplete one
    if factor is None:
        factor, perm = _factor(matrix, float(drop_tol), float(fill_factor))
    if perm is None:
        # Pivoting broke the symmetry (not seen on SPD curvatures): Jacobi scaling, still valid.
        empty = np.zeros(0, dtype=np.int64)
        arrays = (
            np.abs(matrix.diagonal()) ** -0.5,
            np.arange(k, dtype=np.int64),
            np.zeros(k + 1, dtype=np.int64),
            empty,
            np.zeros(0),
        )
        basis, coef = _soft_modes(matrix, arrays, soft_modes)
        return Whitening(np.asarray(centre, float).copy(), *arrays, basis, coef)
    lower = sp.tril(factor.L, k=-1).tocsc()
    lower.sort_indices()
    pivots = np.abs(factor.U.diagonal())
    # A dropped-fill pivot can come out tiny; any positive D keeps B invertible (exactness of
    # the sampler does not depend on it), so floor it at a fraction of the diagonal.
    floor = np.empty(k)
    floor[perm] = 1e-3 * np.abs(matrix.diagonal())
    pivots = np.maximum(pivots, floor)
    arrays = (
        pivots**-0.5,
        perm,
        lower.indptr.astype(np.int64),
        lower.indices.astype(np.int64),
        lower.data.astype(float),
    )
    basis, coef = _soft_modes(matrix, arrays, soft_modes)
    return Whitening(np.asarray(centre, float).copy(), *arrays, basis, coef)


def _factor(matrix: sp.csc_matrix, drop_tol: float, fill_factor: float):
    """(factor, perm) with V[k] ↔ factor row perm[k]; perm is None if pivoting was asymmetric.

    The exact factor uses SuperLU's minimum-degree order (least fill). The incomplete one
    uses reverse Cuthill–McKee, a good order for incomplete factors that SuperLU's own
    orderings take 5–25× longer to compute at 10× paper scale (27 s for minimum degree
    against 1 s, with the same fill).
    """
    if drop_tol == 0:
        order = np.arange(matrix.shape[0])
        spec = "MMD_AT_PLUS_A"
    else:
        order = reverse_cuthill_mckee(matrix, symmetric_mode=True)
        matrix = matrix[order][:, order].tocsc()
        spec = "NATURAL"
    factor = spla.spilu(
        matrix,
        drop_tol=drop_tol,
        fill_factor=fill_factor,
        permc_spec=spec,
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )
    if not np.array_equal(factor.perm_r, factor.perm_c):
        return factor, None
    perm = np.empty(len(order), dtype=np.int64)
    perm[order] = factor.perm_c  # permuted row a (= V[order[a]]) sits at factor row perm_c[a]
    return factor, perm


def _soft_modes(matrix, arrays, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The eigenpairs of B₀ᵀ H B₀ below 0.6 among its `r` smallest, and their lift."""
    k = matrix.shape[0]
    r = min(r, k - 2)
    if r <= 0:
        return np.zeros((k, 0)), np.zeros(0)

    def whitened(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=float).ravel()
        return _backward_jit(x, *arrays, matrix @ _forward_jit(x, *arrays))

    operator = spla.LinearOperator((k, k), matvec=whitened, dtype=float)
    start = np.random.default_rng(0).normal(size=k)
    try:
        lam, vec = spla.eigsh(operator, k=r, which="SA", tol=1e-3, v0=start, maxiter=50 * k)
    except spla.ArpackNoConvergence as error:  # keep what converged (a lift is optional)
        lam, vec = error.eigenvalues, error.eigenvectors
    keep = lam < 0.6
    return vec[:, keep], lam[keep] ** -0.5 - 1.0


def _whiten_forward(z, scale, perm, indptr, indices, data):
    """P L⁻ᵀ (scale ⊙ z): back substitution, column r of L is row r of Lᵀ."""
    n = z.shape[0]
    y = scale * z
    for r in range(n - 1, -1, -1):
        acc = y[r]
        for q in range(indptr[r], indptr[r + 1]):
            acc -= data[q] * y[indices[q]]
        y[r] = acc
    out = np.empty(n)
    for k in range(n):
        out[k] = y[perm[k]]
    return out


def _whiten_backward(z, scale, perm, indptr, indices, data, g_out):
    """Bᵀ g = scale ⊙ L⁻¹ Pᵀ g: forward substitution by columns."""
    n = z.shape[0]
    x = np.empty(n)
    for k in range(n):
        x[perm[k]] = g_out[k]
    for c in range(n):
        xc = x[c]
        for q in range(indptr[c], indptr[c + 1]):
            x[indices[q]] -= data[q] * xc
    return scale * x


_forward_jit = numba.njit(_whiten_forward, cache=True)
_backward_jit = numba.njit(_whiten_backward, cache=True)


@numba.njit(cache=True)
def _rows_forward(z, scale, perm, indptr, indices, data):
    """B₀ zᵀ for each row of z (m, K), one row at a time: each row's solve stays in cache
    (4,000 NUTS draws at paper scale: ~0.2 s, where one pass over all columns took ~2 s; a
    parallel loop costs more to load from numba's cache than it saves)."""
    out = np.empty_like(z)
    for d in range(z.shape[0]):
        out[d] = _forward_jit(z[d], scale, perm, indptr, indices, data)
    return out


@numba.njit(parallel=True, cache=True)
def _rows_forward_parallel(z, scale, perm, indptr, indices, data):
    """`_rows_forward` with the rows spread over threads: for exact factors (a million
    nonzeros: the kernel model's Laplace draws), where the solves, not numba's loading, cost."""
    out = np.empty_like(z)
    for d in numba.prange(z.shape[0]):
        out[d] = _forward_jit(z[d], scale, perm, indptr, indices, data)
    return out


@numba.njit(parallel=True, cache=True)
def _pcg_columns(
    h_indptr, h_indices, h_data, scale, perm, indptr, indices, data, basis_t, lift2, rhs, tol,
    maxiter,
):  # fmt: skip
    """CG on each column of rhs (K, m) with the preconditioner B Bᵀ = B₀ (I + U diag(lift2)
    Uᵀ) B₀ᵀ; H symmetric, given by its CSC (= CSR) arrays. A column's vectors stay in cache
    (a block of columns at once streamed gigabytes per iteration at 10× paper scale)."""
    k, m = rhs.shape
    out = np.empty((k, m))
    iterations = np.zeros(m, dtype=np.int64)
    for col in numba.prange(m):
        b = rhs[:, col].copy()
        x = np.zeros(k)
        r = b.copy()
        z = _precondition(r, scale, perm, indptr, indices, data, basis_t, lift2)
        p = z.copy()
        rz = np.dot(r, z)
        norm_b = max(np.sqrt(np.dot(b, b)), 1e-300)
        ap = np.empty(k)
        done = maxiter
        for it in range(maxiter):
            for row in range(k):
                acc = 0.0
                for q in range(h_indptr[row], h_indptr[row + 1]):
                    acc += h_data[q] * p[h_indices[q]]
                ap[row] = acc
            alpha = rz / np.dot(p, ap)
            x += alpha * p
            r -= alpha * ap
            if np.sqrt(np.dot(r, r)) < tol * norm_b:
                done = it + 1
                break
            z = _precondition(r, scale, perm, indptr, indices, data, basis_t, lift2)
            rz_new = np.dot(r, z)
            p = z + (rz_new / rz) * p
            rz = rz_new
        out[:, col] = x
        iterations[col] = done
    return out, iterations


@numba.njit(cache=True, fastmath={"contract", "reassoc"}, error_model="numpy")
def _lift(z, basis_t, coef):
    """(I + U diag(coef) Uᵀ) z with basis_t = Uᵀ (r, K), rows contiguous: symmetric, so
    also its own transpose. (Strided U, as (K, r) in C order, made a gradient with six soft
    modes 1.8× as costly; reassociation lets the dot products vectorise, 61 → 22 µs per lift
    at paper scale.) Shared by the pair and kernel models' fused Ops."""
    out = z.copy()
    k = z.shape[0]
    for s in range(coef.shape[0]):
        acc = 0.0
        for q in range(k):
            acc += basis_t[s, q] * z[q]
        acc *= coef[s]
        for q in range(k):
            out[q] += basis_t[s, q] * acc
    return out


@numba.njit(cache=True)
def _precondition(r, scale, perm, indptr, indices, data, basis_t, lift2):
    """B Bᵀ r = B₀ (I + U diag(lift2) Uᵀ) B₀ᵀ r."""
    t = _backward_jit(r, scale, perm, indptr, indices, data, r)
    return _forward_jit(_lift(t, basis_t, lift2), scale, perm, indptr, indices, data)


class Whiten(Op):
    """z ↦ B z (the factor arrays are constant inputs)."""

    __props__ = ()

    def make_node(self, z, scale, perm, indptr, indices, data) -> Apply:
        inputs = [
            pt.as_tensor_variable(z).astype("float64"),
            pt.as_tensor_variable(scale).astype("float64"),
            *(pt.as_tensor_variable(a).astype("int64") for a in (perm, indptr, indices)),
            pt.as_tensor_variable(data).astype("float64"),
        ]
        return Apply(self, inputs, [pt.dvector()])

    def perform(self, node, inputs, outputs) -> None:
        outputs[0][0] = _forward_jit(*inputs)

    def pullback(self, inputs, outputs, cotangents):
        return [whiten_transpose(*inputs, cotangents[0])] + [
            disconnected_type() for _ in inputs[1:]
        ]

    def connection_pattern(self, node):
        return [[True]] + [[False]] * 5


class WhitenTranspose(Op):
    """g ↦ Bᵀ g, the pullback of `Whiten` (itself linear: its pullback is `Whiten`)."""

    __props__ = ()

    def make_node(self, z, scale, perm, indptr, indices, data, g_out) -> Apply:
        inputs = [pt.as_tensor_variable(a) for a in (z, scale, perm, indptr, indices, data, g_out)]
        return Apply(self, inputs, [pt.dvector()])

    def perform(self, node, inputs, outputs) -> None:
        outputs[0][0] = _backward_jit(*inputs)

    def pullback(self, inputs, outputs, cotangents):
        z, scale, perm, indptr, indices, data, _ = inputs
        return [disconnected_type() for _ in inputs[:-1]] + [
            whiten(cotangents[0], scale, perm, indptr, indices, data)
        ]

    def connection_pattern(self, node):
        return [[False]] * 6 + [[True]]


whiten = Whiten()
whiten_transpose = WhitenTranspose()


@register_funcify_default_op_cache_key(Whiten)
def _numba_whiten(op, node, **kwargs):
    return _forward_jit


@register_funcify_default_op_cache_key(WhitenTranspose)
def _numba_whiten_transpose(op, node, **kwargs):
    return _backward_jit
