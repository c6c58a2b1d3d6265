"""The kernel model's fused log density (`models/_kernel_op.py`) against the numpy density.

`JumpPotential` at z must be `KernelDensity(jump=True).logp_grad` at u = u* + B z (value) and
Bᵀ times its gradient (d/dz), with B the whitening's dense matrix (soft-mode lift included),
through the Python `perform` and the numba implementation alike; a PyMC model built on it must
give the same log density differences and gradients as the plain graph `build_kernel_model`
built before it (and as `build_kernel_model` itself).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode

from detailed_balance.models import EquilibriumModel
from detailed_balance.models._kernel_model import build_kernel_model, kernel_coords
from detailed_balance.models._kernel_op import JumpPotential, jump_constants, jump_logp
from detailed_balance.models._whiten import ilu_whitening
from detailed_balance.simulation import simulate

PYTHON = Mode(linker="py", optimizer="fast_run")  # the Op's `perform`


@pytest.fixture(scope="module")
def exact():
    """A small landscape whose whitening is the exact factor (no lift)."""
    model = EquilibriumModel({"likelihood": "kernel"})
    prepared = model.prepare(simulate(60, 3000, seed=1).transitions)
    assert len(prepared.whitening.coef) == 0
    return model, prepared, prepared.whitening


@pytest.fixture(scope="module")
def lifted():
    """A larger one (states that never moved included) with a crude incomplete factor, so
    the whitening has a permutation, dropped fill and several lifted soft modes."""
    model = EquilibriumModel({"likelihood": "kernel"})
    prepared = model.prepare(simulate(400, 4000, seed=1).transitions)
    theta = prepared.map_result.theta
    hessian = prepared.density.explicit_hessian(theta)
    white = ilu_whitening(hessian, theta, drop_tol=0.3, fill_factor=1.0)
    assert len(white.coef) > 1
    assert np.any(prepared.density.calls == 0)
    return model, prepared, white


CASES = ["exact", "lifted"]


def _reference(prepared, white, z):
    """(log p, d/dz) from the numpy density and the dense whitening matrix."""
    logp, grad_u = prepared.density.logp_grad(white.apply(z))
    return logp, white.matrix().T @ grad_u


def _points(prepared, count=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 0.7, prepared.density.size) for _ in range(count)]


def _functions(prepared, white, mode):
    z = pt.dvector("z")
    density = prepared.density
    op = JumpPotential(inv_var=1.0 / density.scale**2)
    logp, grad = op(z, *jump_constants(white, density))
    return pytensor.function([z], [logp, grad, pytensor.grad(logp, z)], mode=mode)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", [PYTHON, "NUMBA"], ids=["perform", "numba"])
def test_value_and_gradients_equal_the_numpy_density(request, case, mode):
    _, prepared, white = request.getfixturevalue(case)
    fn = _functions(prepared, white, mode)
    for z in _points(prepared):
        logp, grad_z = _reference(prepared, white, z)
        value, grad, pulled = fn(z)
        assert float(value) == pytest.approx(logp, abs=1e-10, rel=1e-13)
        scale = max(1.0, np.abs(grad_z).max())
        np.testing.assert_allclose(grad, grad_z, rtol=0, atol=1e-11 * scale)
        np.testing.assert_allclose(pulled, grad, rtol=0, atol=0)  # the pullback reuses it


def test_pullback_scales_by_the_cotangent(exact):
    _, prepared, white = exact
    z = pt.dvector("z")
    density = prepared.density
    logp = jump_logp(z, white, density)
    fn = pytensor.function([z], pytensor.grad(-3.0 * logp, z), mode="NUMBA")
    point = _points(prepared, 1, seed=5)[0]
    np.testing.assert_allclose(fn(point), -3.0 * _reference(prepared, white, point)[1], atol=1e-9)


def test_gradient_matches_finite_differences_of_the_value(lifted):
    _, prepared, white = lifted
    fn = _functions(prepared, white, "NUMBA")
    rng = np.random.default_rng(9)
    z = _points(prepared, 1, seed=9)[0]
    direction = rng.normal(size=z.size)
    eps = 1e-6
    numeric = (fn(z + eps * direction)[0] - fn(z - eps * direction)[0]) / (2 * eps)
    assert float(numeric) == pytest.approx(fn(z)[1] @ direction, rel=1e-6)


def _plain_graph(prepared, coords):
    """The kernel model as an ordinary PyTensor graph (what `build_kernel_model` built before
    `JumpPotential`): u = u* + B z through the `whiten` Op, S by two scatters."""
    white, density, pairs = prepared.whitening, prepared.density, prepared.pairs
    with pm.Model(coords=kernel_coords(prepared, coords)) as model:
        z = pm.Flat("theta_white", dims="latent")
        u = white.centre + white.deviation(z)
        x = pt.exp(u)
        s = pt.zeros(pairs.n_states)
        s = pt.inc_subtensor(s[pairs.i], x)
        s = pt.inc_subtensor(s[pairs.j], x)
        logp = (
            pt.dot(density.m, u)
            - pt.dot(density.calls, pt.log(s))
            - 0.5 * pt.sum(u**2) / density.scale**2
        )
        pm.Potential("log_density", logp)
    return model


@pytest.mark.parametrize("case", CASES)
def test_model_with_the_op_equals_the_plain_graph(request, case):
    """The plain graph, a model on `jump_logp` and `build_kernel_model` (whichever of the two
    it builds) give the same log density differences and gradients."""
    model, prepared, white = request.getfixturevalue(case)
    prepared = replace(prepared, whitening=white)
    coords = model.coords(prepared)
    plain = _plain_graph(prepared, coords)
    with pm.Model(coords=kernel_coords(prepared, coords)) as fused:
        z = pm.Flat("theta_white", dims="latent")
        pm.Potential("log_density", jump_logp(z, white, prepared.density))
    built = build_kernel_model(prepared, coords)
    points = [{"theta_white": z} for z in _points(prepared, 4, seed=2)]
    for mode in (None, "NUMBA"):
        logp_a, dlogp_a = plain.compile_logp(mode=mode), plain.compile_dlogp(mode=mode)
        a = np.array([logp_a(p) for p in points])
        for other in (fused, built):
            logp_b, dlogp_b = other.compile_logp(mode=mode), other.compile_dlogp(mode=mode)
            b = np.array([logp_b(p) for p in points])
            np.testing.assert_allclose(np.diff(b), np.diff(a), rtol=0, atol=1e-9)
            for p in points:
                expected = dlogp_a(p)
                np.testing.assert_allclose(
                    dlogp_b(p), expected, rtol=0, atol=1e-10 * max(1.0, np.abs(expected).max())
                )
