"""The pair models' log density as one fused PyTensor Op (numba for nutpie and ADVI).

A NUTS step costs one gradient of log p in the whitened coordinates z (and a, for the
non-equilibrium model): V = V* + B z (`_whiten`), the prior of V centred per component, the
gauge term and Σ_p n_fg x_p − m_p softplus(x_p) with x_p = log(N_f/N_g) + V_f − V_g + A_p.
As an ordinary graph that is ~40 small PyTensor nodes, each with its own pass and
temporaries; `PairPotential` does it in one kernel (one back substitution, one pass over the
pairs with one exp and one log1p each, one forward substitution for Bᵀ) and returns the value
with its gradients, which the pullback reuses. The numpy `PairDensity` (`_density`) is the
same density in θ = (V, log σ_V, a, log τ_A) for the MAP; tests check they agree.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from numba import njit as numba_njit
from numba import prange
from pytensor.gradient import DisconnectedType, disconnected_type
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch import basic as numba_basic
from pytensor.link.numba.dispatch.basic import register_funcify_default_op_cache_key

from ._whiten import _backward_jit, _forward_jit, _lift

# exp and log1p by range reduction and polynomials the compiler can vectorise (libm's scalar
# calls cost ~10 ns each on AVX2 machines, where numpy/numba have no SIMD float64 exp/log);
# relative error ≤ 1e-15 against numpy's, checked in tests/test_bayes_models.py.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_ROUND = 6755399441055744.0  # 1.5 · 2^52
_ROUND_BITS = int(np.array([_ROUND]).view(np.int64)[0])


def _pair_loglik_fast(v, extra, offset, n_fg, trials, i, j):
    n = offset.shape[0]
    x = np.empty(n)
    for k in range(n):
        x[k] = offset[k] + v[i[k]] - v[j[k]] + extra[k]
    e = _exp_neg_abs(x)
    terms = np.empty(n)
    resid = np.empty(n)
    for k in range(n):
        ek = e[k]
        xk = x[k]
        softplus = (xk if xk > 0.0 else 0.0) + _log1p_small(ek)
        terms[k] = n_fg[k] * xk - trials[k] * softplus
        inv = 1.0 / (1.0 + ek)
        resid[k] = n_fg[k] - trials[k] * (inv if xk >= 0.0 else ek * inv)
    total = 0.0
    for k in range(n):
        total += terms[k]
    grad = np.zeros_like(v)
    for k in range(n):
        grad[i[k]] += resid[k]
        grad[j[k]] -= resid[k]
    return total, grad, resid


def _exp_neg_abs_py(x):
    """exp(−|x|) elementwise: x = m ln2 + r, |r| ≤ ln2/2, exp(r) by its degree-11 Taylor polynomial,
    2^m from the exponent bits. Rounding to m by adding 1.5·2^52 leaves m in the low bits of
    t (no float-to-int conversion, which AVX2 cannot vectorise)."""
    n = x.shape[0]
    e = np.empty(n)
    t_bits = np.empty(n)
    for k in range(n):
        a = max(-abs(x[k]), -700.0)
        t = a * _INV_LN2 + _ROUND
        m = t - _ROUND
        r = (a - m * _LN2_HI) - m * _LN2_LO
        p = 1.0 / 39916800.0
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


def _log1p_small_py(ek):
    """log1p(ek) for 0 ≤ ek ≤ 1: 2 atanh(u), u = ek / (2 + ek) ≤ 1/3, odd series to u^31."""
    u = ek / (2.0 + ek)
    u2 = u * u
    q = 1.0 / 31.0
    q = q * u2 + 1.0 / 29.0
    q = q * u2 + 1.0 / 27.0
    q = q * u2 + 1.0 / 25.0
    q = q * u2 + 1.0 / 23.0
    q = q * u2 + 1.0 / 21.0
    q = q * u2 + 1.0 / 19.0
    q = q * u2 + 1.0 / 17.0
    q = q * u2 + 1.0 / 15.0
    q = q * u2 + 1.0 / 13.0
    q = q * u2 + 1.0 / 11.0
    q = q * u2 + 1.0 / 9.0
    q = q * u2 + 1.0 / 7.0
    q = q * u2 + 1.0 / 5.0
    q = q * u2 + 1.0 / 3.0
    q = q * u2 + 1.0
    return 2.0 * u * q


_FLAGS = {"fastmath": {"contract", "reassoc"}, "error_model": "numpy"}
# Callable from Python (tests); the Op's numba implementation is compiled without wrappers.
_exp_neg_abs = numba_njit(_exp_neg_abs_py, cache=True, **_FLAGS)
_log1p_small = numba_njit(_log1p_small_py, cache=True, inline="always", **_FLAGS)
pair_loglik_jit = numba_njit(_pair_loglik_fast, cache=True, **_FLAGS)


@numba_njit(parallel=True, cache=True, **_FLAGS)
def pointwise_loglik_jit(n_fg, trials, const, offset, i, j, v, a):
    """log Binomial(n_fg | m, logit⁻¹ x) per (draw, pair) for V draws v (D, K) and A draws
    a (D, P), or a of shape (0, P) for none; draws in parallel, no temporaries beyond a row."""
    draws = v.shape[0]
    n = offset.shape[0]
    out = np.empty((draws, n))
    has_a = a.shape[0] > 0
    for d in prange(draws):
        x = np.empty(n)
        for k in range(n):
            x[k] = offset[k] + v[d, i[k]] - v[d, j[k]]
        if has_a:
            for k in range(n):
                x[k] += a[d, k]
        e = _exp_neg_abs(x)
        for k in range(n):
            xk = x[k]
            softplus = (xk if xk > 0.0 else 0.0) + _log1p_small(e[k])
            out[d, k] = const[k] + n_fg[k] * xk - trials[k] * softplus
    return out


@numba_njit(cache=True, **_FLAGS)
def pair_potential_jit(z, z_a, scalars, centre, basis_t, coef, scale, perm, indptr, indices, data,
                       weights, comp_ptr, gauge, offset, n_fg, trials, i, j,
                       a_map, a_scale, a_shift, a_mask, student, nu, fitted, dof,
                       nonequilibrium):  # fmt: skip
    """The fused density and its gradients (see `PairPotential`); the last five arguments
    are the Op's properties (prior and model choice)."""
    k = z.shape[0]
    sigma = scalars[0]
    tau = scalars[1]
    # V = V* + B₀ (I + U diag(coef) Uᵀ) z
    y = _lift(z, basis_t, coef)
    dv = _forward_jit(y, scale, perm, indptr, indices, data)
    v = centre + dv
    # Prior of V centred per component (weights w), gauge term on the means. The kernel's
    # states are sorted by component (`comp_ptr` bounds each), so these loops are contiguous.
    n_comp = gauge.shape[0]
    logp = 0.0
    d_sigma = 0.0
    inv_s2 = 1.0 / (sigma * sigma)
    gv = np.empty(k)
    for c in range(n_comp):
        lo, hi = comp_ptr[c], comp_ptr[c + 1]
        mean = 0.0
        for t in range(lo, hi):
            mean += weights[t] * v[t]
        lp = 0.0
        ds = 0.0
        g_sum = 0.0
        for t in range(lo, hi):
            cq = v[t] - mean
            if student:
                ratio = cq * cq * inv_s2 / nu
                lp -= 0.5 * (nu + 1.0) * np.log1p(ratio)
                g = -(nu + 1.0) * cq * inv_s2 / (nu * (1.0 + ratio))
                ds += (nu + 1.0) * ratio / (sigma * (1.0 + ratio))
            else:
                lp -= 0.5 * cq * cq * inv_s2
                g = -cq * inv_s2
                ds += cq * cq * inv_s2 / sigma
            gv[t] = g
            g_sum += g
        logp += lp - 0.5 * gauge[c] * mean * mean
        d_sigma += ds
        g_sum += gauge[c] * mean
        for t in range(lo, hi):
            gv[t] -= weights[t] * g_sum
    if fitted:
        logp -= dof * np.log(sigma)
        d_sigma -= dof / sigma
    # a = a* + a_scale z_a − a_shift (ΔV_f − ΔV_g), A = τ mask a, a ~ N(0, 1)
    n = offset.shape[0]
    extra = np.zeros(n)
    a = np.zeros(z_a.shape[0])
    if nonequilibrium:
        for p in range(n):
            a[p] = a_map[p] + a_scale[p] * z_a[p] - a_shift[p] * (dv[i[p]] - dv[j[p]])
            extra[p] = tau * a_mask[p] * a[p]
            logp -= 0.5 * a[p] * a[p]
    total, g_lik, resid = pair_loglik_jit(v, extra, offset, n_fg, trials, i, j)
    logp += total
    for q in range(k):
        gv[q] += g_lik[q]
    g_za = np.zeros(z_a.shape[0])
    d_tau = 0.0
    if nonequilibrium:
        for p in range(n):
            ga = resid[p] * tau * a_mask[p] - a[p]
            g_za[p] = a_scale[p] * ga
            d_tau += resid[p] * a_mask[p] * a[p]
            gv[i[p]] -= a_shift[p] * ga
            gv[j[p]] += a_shift[p] * ga
    g_y = _backward_jit(z, scale, perm, indptr, indices, data, gv)
    g_scalars = np.empty(2)
    g_scalars[0] = d_sigma
    g_scalars[1] = d_tau
    return np.asarray(logp), _lift(g_y, basis_t, coef), g_za, g_scalars


class PairPotential(Op):
    """Outputs (log p, d/dz, d/dz_a, d/d(σ_V, τ_A)); only log p is differentiated.

    Inputs: z (K,), z_a (P,) or (0,), scalars = (σ_V, τ_A), then the constant arrays of
    `CONSTANTS` (whitening, centring, pairs, the a-map of the non-equilibrium model).
    """

    __props__ = ("student", "nu", "fitted", "dof", "nonequilibrium")

    def __init__(self, student: bool, nu: float, fitted: bool, dof: float, nonequilibrium: bool):
        self.student = bool(student)
        self.nu = float(nu)
        self.fitted = bool(fitted)
        self.dof = float(dof)
        self.nonequilibrium = bool(nonequilibrium)

    def make_node(self, z, z_a, scalars, *constants) -> Apply:
        if len(constants) != len(CONSTANTS):
            raise TypeError(f"PairPotential takes {len(CONSTANTS)} constant arrays")
        inputs = [pt.as_tensor_variable(a).astype("float64") for a in (z, z_a, scalars)]
        for name, value in zip(CONSTANTS, constants, strict=True):
            dtype = "int64" if name in _INT_CONSTANTS else "float64"
            inputs.append(pt.as_tensor_variable(value).astype(dtype))
        outputs = [pt.dscalar(), pt.dvector(), pt.dvector(), pt.dvector()]
        return Apply(self, inputs, outputs)

    def perform(self, node, inputs, outputs) -> None:
        results = pair_potential_jit(*inputs, *self._props())
        for out, value in zip(outputs, results, strict=True):
            out[0] = value

    def pullback(self, inputs, outputs, cotangents):
        for other in cotangents[1:]:
            if not isinstance(other.type, DisconnectedType):
                raise NotImplementedError("only the log density output is differentiable")
        grad = cotangents[0]
        return [grad * outputs[1], grad * outputs[2], grad * outputs[3]] + [
            disconnected_type() for _ in inputs[3:]
        ]

    def connection_pattern(self, node):
        return [[True] * 4] * 3 + [[False] * 4] * len(CONSTANTS)


CONSTANTS = (
    "centre", "basis_t", "coef", "scale", "perm", "indptr", "indices", "data",
    "weights", "comp_ptr", "gauge", "offset", "n_fg", "trials", "i", "j",
    "a_map", "a_scale", "a_shift", "a_mask",
)  # fmt: skip
_INT_CONSTANTS = {"perm", "indptr", "indices", "comp_ptr", "i", "j"}


@register_funcify_default_op_cache_key(PairPotential)
def _numba_pair_potential(op, node, **kwargs):
    student, nu, fitted, dof, nonequilibrium = op._props()

    @numba_basic.numba_njit
    def potential(z, z_a, scalars, centre, basis_t, coef, scale, perm, indptr, indices, data,
                  weights, comp_ptr, gauge, offset, n_fg, trials, i, j,
                  a_map, a_scale, a_shift, a_mask):  # fmt: skip
        return pair_potential_jit(
            z, z_a, scalars, centre, basis_t, coef, scale, perm, indptr, indices, data,
            weights, comp_ptr, gauge, offset, n_fg, trials, i, j,
            a_map, a_scale, a_shift, a_mask, student, nu, fitted, dof, nonequilibrium,
        )  # fmt: skip

    return potential
