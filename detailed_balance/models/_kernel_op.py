"""The kernel model's log density as one fused PyTensor Op (numba for nutpie and ADVI).

A NUTS step of the kernel model (`_kernel_model`) costs one gradient of

    log p(z) = Σ_p m_p u_p − Σ_f M_f log S_f − ½ Σ_p u_p² / s²,
    u = u* + B z,  S_f = Σ_{p ∋ f} exp(u_p),

in the whitened coordinates z (B = B₀ (I + U diag(coef) Uᵀ), `_whiten`). As an ordinary graph
that is the whitening Op, the soft-mode lift, an exp, two scatters into S, a log and the
reductions, each a node with its own pass and temporaries (and their pullbacks: gathers,
another substitution). `JumpPotential` does it in one kernel, like `_loglik.PairPotential`:
one back substitution for u, one pass over the pairs with one exp each scattering into S,
one pass over the states (log S_f, M_f / S_f), one pass over the pairs for

    g_u = m − x ⊙ ((M/S)[i] + (M/S)[j]) − u / s²,

and one forward substitution (plus the lift, its own transpose) for g_z = Bᵀ g_u. It returns
(log p, g_z); the pullback reuses g_z. The pairs are handed to the kernel in the factor's
order, so neither substitution permutes. `perform` (PyTensor's Python linker) calls the same
numba kernel. `KernelDensity(jump=True).logp_grad` (`_kernel`) is the same density in u and
`Whitening.matrix` the same B; tests check they agree.

Measured at paper scale (simulate(7500, 60000): 15,209 pairs, 82,450 factor entries, 6 soft
modes; one thread): 1,000 evaluations of log p and its gradient take 0.44 s against 0.64 s
for the plain graph (0.45 s against 0.49 s for the gradient alone). The two triangular solves
are ~2/3 of the kernel's time; they bound what fusing can gain.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytensor.tensor as pt
from numba import njit as numba_njit
from pytensor.gradient import DisconnectedType, disconnected_type
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch import basic as numba_basic
from pytensor.link.numba.dispatch.basic import register_funcify_default_op_cache_key

from ._loglik import _FLAGS, _INV_LN2, _LN2_HI, _LN2_LO, _ROUND, _ROUND_BITS
from ._whiten import Whitening, _lift


def _exp_py(u):
    """exp(u) elementwise for |u| ≤ 700 (clamped beyond), by the range reduction of
    `_loglik._exp_neg_abs_py` without its −|x|: u = m ln2 + r, |r| ≤ ln2/2, 2^m from the
    exponent bits, exp(r) by its Taylor polynomial to degree 13 (degree 11 truncates at
    r¹²/12! ≈ 6e-15 relative; 13 leaves ≈ 2e-16). Loops the compiler vectorises (libm's
    scalar exp does not)."""
    n = u.shape[0]
    e = np.empty(n)
    t_bits = np.empty(n)
    for k in range(n):
        a = min(max(u[k], -700.0), 700.0)
        t = a * _INV_LN2 + _ROUND
        m = t - _ROUND
        r = (a - m * _LN2_HI) - m * _LN2_LO
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        e[k] = p * r + 1.0
        t_bits[k] = t
    bits = t_bits.view(np.int64)
    for k in range(n):
        bits[k] = (bits[k] - _ROUND_BITS + 1023) << 52
    scale = bits.view(np.float64)
    for k in range(n):
        e[k] *= scale[k]
    return e


_exp_jit = numba_njit(_exp_py, cache=True, **_FLAGS)


@numba_njit(cache=True, error_model="numpy")
def _solve_transpose(y, indptr, indices, data):
    """Lᵀ w = y in place (L unit lower triangular, strictly lower part by column: row r of Lᵀ
    is column r of L), rows from the last, as `_whiten._whiten_forward` without P. No
    reassociation: the short per-row sums only slow down when the compiler unrolls them."""
    for r in range(y.shape[0] - 1, -1, -1):
        acc = y[r]
        for q in range(indptr[r], indptr[r + 1]):
            acc -= data[q] * y[indices[q]]
        y[r] = acc


@numba_njit(cache=True, error_model="numpy")
def _solve(x, indptr, indices, data):
    """L w = x in place by columns, as `_whiten._whiten_backward` without P."""
    for c in range(x.shape[0]):
        xc = x[c]
        for q in range(indptr[c], indptr[c + 1]):
            x[indices[q]] -= data[q] * xc


@numba_njit(cache=True, **_FLAGS)
def jump_potential_jit(z, centre, basis_t, coef, scale, indptr, indices, data,
                       m, calls, i, j, inv_var):  # fmt: skip
    """(log p, d log p / dz) of the jump density (see `JumpPotential`); inv_var = 1 / s².

    The per-pair arrays are in the factor's order (`jump_constants`): u is the back
    substitution's output itself and g_u the forward substitution's input, no permutation."""
    n = z.shape[0]
    k = calls.shape[0]
    # u = u* + L⁻ᵀ (scale ⊙ (I + U diag(coef) Uᵀ) z)
    u = _lift(z, basis_t, coef)
    for q in range(n):
        u[q] *= scale[q]
    _solve_transpose(u, indptr, indices, data)
    for q in range(n):
        u[q] += centre[q]
    x = _exp_jit(u)
    s = np.zeros(k)
    logp = 0.0
    for p in range(n):
        s[i[p]] += x[p]
        s[j[p]] += x[p]
        logp += (m[p] - 0.5 * inv_var * u[p]) * u[p]
    load = np.zeros(k)
    for f in range(k):
        if calls[f] != 0.0:  # a state that never moved adds nothing (and may have S_f = 0)
            logp -= calls[f] * np.log(s[f])
            load[f] = calls[f] / s[f]
    g = np.empty(n)
    for p in range(n):
        g[p] = m[p] - x[p] * (load[i[p]] + load[j[p]]) - inv_var * u[p]
    # d/dz = (I + U diag(coef) Uᵀ) (scale ⊙ L⁻¹ g_u)
    _solve(g, indptr, indices, data)
    for q in range(n):
        g[q] *= scale[q]
    return np.asarray(logp), _lift(g, basis_t, coef)


class JumpPotential(Op):
    """Outputs (log p, d log p / dz); only log p is differentiated (its pullback is
    cotangent · d log p / dz, computed with the value).

    Inputs: z (P,), then the constant arrays of `CONSTANTS`, from `jump_constants`. Property:
    inv_var = 1 / s², the prior precision of each u_p.
    """

    __props__ = ("inv_var",)

    def __init__(self, inv_var: float):
        self.inv_var = float(inv_var)

    def make_node(self, z, *constants) -> Apply:
        if len(constants) != len(CONSTANTS):
            raise TypeError(f"JumpPotential takes {len(CONSTANTS)} constant arrays")
        inputs = [pt.as_tensor_variable(z).astype("float64")]
        for name, value in zip(CONSTANTS, constants, strict=True):
            dtype = "int64" if name in _INT_CONSTANTS else "float64"
            inputs.append(pt.as_tensor_variable(value).astype(dtype))
        return Apply(self, inputs, [pt.dscalar(), pt.dvector()])

    def perform(self, node, inputs, outputs) -> None:
        results = jump_potential_jit(*inputs, self.inv_var)
        for out, value in zip(outputs, results, strict=True):
            out[0] = value

    def pullback(self, inputs, outputs, cotangents):
        if not isinstance(cotangents[1].type, DisconnectedType):
            raise NotImplementedError("only the log density output is differentiable")
        return [cotangents[0] * outputs[1]] + [disconnected_type() for _ in inputs[1:]]

    def connection_pattern(self, node):
        return [[True, True]] + [[False, False]] * len(CONSTANTS)


CONSTANTS = (
    "centre", "basis_t", "coef", "scale", "indptr", "indices", "data", "m", "calls", "i", "j",
)  # fmt: skip
_INT_CONSTANTS = {"indptr", "indices", "i", "j"}


def jump_constants(white: Whitening, density) -> list[np.ndarray]:
    """The constant inputs of `JumpPotential` (in `CONSTANTS` order) for a whitening u = u* +
    B z (`Whitening.deviation`) and a `KernelDensity(jump=True)` in u: the factor as the
    whitening stores it, and the per-pair arrays (u*, m, i, j) in the factor's order (pair p
    at factor row perm[p])."""
    if density.scale is None:
        raise ValueError("the kernel model needs a prior scale (KernelDensity(scale=...)).")
    order = np.argsort(white.perm)  # order[a] = the pair at factor row a
    pairs = density.pairs
    return [
        white.centre[order],
        np.ascontiguousarray(white.basis.T),
        white.coef,
        white.scale,
        white.indptr,
        white.indices,
        white.data,
        np.asarray(density.m, float)[order],
        np.asarray(density.calls, float),
        pairs.i[order],
        pairs.j[order],
    ]


def jump_logp(z, white: Whitening, density):
    """log p of the kernel model at z (up to a constant) as a PyTensor scalar, for
    `build_kernel_model`'s potential."""
    op = JumpPotential(inv_var=1.0 / float(density.scale) ** 2)
    return op(z, *jump_constants(white, density))[0]


# PyTensor caches the numba function on disk by the Op's type and props only: the hash of this
# file (and of the constants it imports) joins the key, so an edited kernel is recompiled
# instead of loaded stale (seen: NUMBA-mode tests passing on a broken kernel).
# the kernel's source and that of what it calls from `_whiten` (`_lift`)
_SOURCE = (
    Path(__file__).read_bytes()
    + Path(__file__).with_name("_whiten.py").read_bytes()
    + repr((_FLAGS, _INV_LN2, _LN2_HI, _LN2_LO)).encode()
)
_SOURCE_KEY = int(hashlib.sha256(_SOURCE).hexdigest()[:15], 16)


@register_funcify_default_op_cache_key(JumpPotential)
def _numba_jump_potential(op, node, **kwargs):
    inv_var = op.inv_var

    @numba_basic.numba_njit
    def potential(z, centre, basis_t, coef, scale, indptr, indices, data, m, calls, i, j):
        return jump_potential_jit(
            z, centre, basis_t, coef, scale, indptr, indices, data, m, calls, i, j, inv_var
        )

    return potential, _SOURCE_KEY


__all__ = ["CONSTANTS", "JumpPotential", "jump_constants", "jump_logp", "jump_potential_jit"]
