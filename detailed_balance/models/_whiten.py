"""Whitening by an incomplete Cholesky factor of the Laplace precision.

At the MAP the curvature of −log p in V is H = L_w + diag(h): a weighted graph Laplacian plus
the prior's curvature. NUTS in z, with V = V* + B z and B Bᵀ ≈ H⁻¹, sees a posterior close to
N(0, I) and needs few leapfrog steps. The exact sparse factor of H fills in badly on random
graphs (~240,000 nonzeros on the paper-scale core), Jacobi scaling leaves the whitened
condition number in the hundreds (√κ ≈ 17), but an incomplete factor with a drop tolerance
keeps about as many nonzeros as H (~24,000) and brings √κ to ≈ 1.7, ≈ 1.4 after the lift
below (measured at paper scale, README "Benchmarks"):

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
        z = z + (z @ self.basis) * self.coef @ self.basis.T
        flat = z.reshape(-1, z.shape[-1])
        out = _block_forward(*self.arrays, np.ascontiguousarray(flat.T)).T
        return self.centre + out.reshape(z.shape)

    def matrix(self) -> np.ndarray:
        """B as a dense array (tests, small models)."""
        return self.apply(np.eye(len(self.centre))).T - self.centre[:, None]

    def precondition(self, rhs: np.ndarray) -> np.ndarray:
        """B Bᵀ rhs (≈ H⁻¹ rhs) for a block rhs (K, m): the preconditioner of `block_pcg`."""
        rhs = np.ascontiguousarray(rhs, dtype=float)
        t = _block_backward(*self.arrays, rhs)
        if len(self.coef):
            lift = 1.0 + self.coef
            t = t + self.basis @ ((lift**2 - 1.0)[:, None] * (self.basis.T @ t))
        return _block_forward(*self.arrays, t)

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
        factor = _factor(matrix, 0.0, float(k))
        if drop_tol > 0 and factor.L.nnz > budget:
            factor = None  # the exact factor fills in: use the incomplete one
    if factor is None:
        factor = _factor(matrix, float(drop_tol), float(fill_factor))
    if not np.array_equal(factor.perm_r, factor.perm_c):
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
    floor = 1e-3 * np.abs(matrix.diagonal())[factor.perm_c]
    pivots = np.maximum(pivots, floor)
    arrays = (
        pivots**-0.5,
        factor.perm_c.astype(np.int64),
        lower.indptr.astype(np.int64),
        lower.indices.astype(np.int64),
        lower.data.astype(float),
    )
    basis, coef = _soft_modes(matrix, arrays, soft_modes)
    return Whitening(np.asarray(centre, float).copy(), *arrays, basis, coef)


def _factor(matrix: sp.csc_matrix, drop_tol: float, fill_factor: float):
    return spla.spilu(
        matrix,
        drop_tol=drop_tol,
        fill_factor=fill_factor,
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )


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


@numba.njit(cache=True)
def _block_forward(scale, perm, indptr, indices, data, z):
    """B₀ Z for Z (K, m), columns at once (rows contiguous, explicit loops: no temporaries)."""
    n, m = z.shape
    y = np.empty_like(z)
    for r in range(n):
        for c in range(m):
            y[r, c] = z[r, c] * scale[r]
    for r in range(n - 1, -1, -1):
        for q in range(indptr[r], indptr[r + 1]):
            d = data[q]
            src = indices[q]
            for c in range(m):
                y[r, c] -= d * y[src, c]
    out = np.empty_like(y)
    for k in range(n):
        out[k] = y[perm[k]]
    return out


@numba.njit(cache=True)
def _block_backward(scale, perm, indptr, indices, data, g):
    """B₀ᵀ G for G (K, m)."""
    n, m = g.shape
    x = np.empty_like(g)
    for k in range(n):
        x[perm[k]] = g[k]
    for col in range(n):
        for q in range(indptr[col], indptr[col + 1]):
            d = data[q]
            dst = indices[q]
            for c in range(m):
                x[dst, c] -= d * x[col, c]
    for r in range(n):
        for c in range(m):
            x[r, c] *= scale[r]
    return x


_forward_jit = numba.njit(_whiten_forward, cache=True)
_backward_jit = numba.njit(_whiten_backward, cache=True)


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
