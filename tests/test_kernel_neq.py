"""The non-equilibrium kernel likelihood (`models/_kernel_neq.py`) against known truth.

A product of scipy multinomials on a tiny case, finite differences of the gradient and the
Hessian, A = 0 is the equilibrium kernel density, the Woodbury log-determinant and Laplace
draws against dense linear algebra; then fits on simulated landscapes with a known drive.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multinomial

from detailed_balance.data import Transitions
from detailed_balance.models._kernel import KernelDensity
from detailed_balance.models._kernel_neq import NeqKernelDensity
from detailed_balance.models._pairs import pair_data


def _transitions(counts: dict[tuple[str, str], float], visits: dict[str, float]) -> Transitions:
    frame = pd.DataFrame(
        [(f, g, n) for (f, g), n in counts.items()], columns=["source", "target", "count"]
    )
    table = pd.DataFrame({"source": list(visits), "visits": list(visits.values())})
    return Transitions.from_counts(frame, visits=table)


# d never moves (a target only): its row has no likelihood
TINY_COUNTS = {
    ("a", "b"): 3,
    ("b", "a"): 2,
    ("b", "c"): 4,
    ("c", "b"): 1,
    ("a", "c"): 1,
    ("c", "a"): 2,
    ("c", "d"): 2,
}
TINY_VISITS = {"a": 10, "b": 9, "c": 7, "d": 3}


@pytest.fixture(scope="module")
def tiny():
    pairs = pair_data(_transitions(TINY_COUNTS, TINY_VISITS))
    return pairs, NeqKernelDensity(pairs, scale=3.0, tau=0.7, mask=np.ones(pairs.n_pairs))


def _jump_rows(pairs, theta):
    """The jump kernel X_fg / S_f as a dense matrix, by hand from θ = (u, A)."""
    p, k = pairs.n_pairs, pairs.n_states
    x = np.zeros((k, k))
    for q in range(p):
        i, j = pairs.i[q], pairs.j[q]
        x[i, j] = np.exp(theta[q] + theta[p + q] / 2)
        x[j, i] = np.exp(theta[q] - theta[p + q] / 2)
    return x / x.sum(axis=1, keepdims=True)


def test_loglik_is_the_product_of_the_jump_multinomials(tiny):
    pairs, density = tiny
    names = list(pairs.states)
    rng = np.random.default_rng(1)

    def by_hand(theta):
        jump = _jump_rows(pairs, theta)
        total = 0.0
        for f, name in enumerate(names):
            row = [TINY_COUNTS.get((name, g), 0) for g in names]
            if sum(row):
                total += multinomial.logpmf(row, sum(row), jump[f])
        return total

    thetas = [rng.normal(0, 0.8, density.size) for _ in range(3)]
    values = [density.loglik(t) for t in thetas]
    hand = [by_hand(t) for t in thetas]
    # equal up to the multinomial coefficients (a constant)
    np.testing.assert_allclose(np.diff(values), np.diff(hand), rtol=1e-12, atol=1e-12)
    assert abs(values[0] - hand[0]) > 1e-3  # the constant is really dropped (not a no-op test)
    logp, _ = density.logp_grad(thetas[0])
    u, a = density.split(thetas[0])
    prior = -0.5 * (u @ u) / 3.0**2 - 0.5 * (a @ a) / 0.7**2
    assert logp == pytest.approx(values[0] + prior, abs=1e-12)


def test_row_scaling_changes_nothing(tiny):
    pairs, density = tiny
    rng = np.random.default_rng(2)
    theta = rng.normal(0, 0.8, density.size)
    psi = rng.normal(0, 1.0, pairs.n_states)
    shifted = theta.copy()
    p = pairs.n_pairs
    shifted[:p] += 0.5 * (psi[pairs.i] + psi[pairs.j])
    shifted[p:] += psi[pairs.i] - psi[pairs.j]
    assert density.loglik(shifted) == pytest.approx(density.loglik(theta), abs=1e-10)


def test_gradient_and_hessian_match_finite_differences(tiny):
    pairs, density = tiny
    rng = np.random.default_rng(3)
    theta = rng.normal(0, 0.8, density.size)
    _, grad = density.logp_grad(theta)
    h = 1e-6
    fd = np.array(
        [
            (density.logp_grad(theta + h * e)[0] - density.logp_grad(theta - h * e)[0]) / (2 * h)
            for e in np.eye(density.size)
        ]
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)
    dense = np.array(
        [
            -(density.logp_grad(theta + h * e)[1] - density.logp_grad(theta - h * e)[1]) / (2 * h)
            for e in np.eye(density.size)
        ]
    )
    explicit = density.explicit_hessian(theta).toarray()
    np.testing.assert_allclose(explicit, dense, rtol=1e-5, atol=1e-6)
    v = rng.normal(size=density.size)
    np.testing.assert_allclose(density.hessp(theta, v), dense @ v, rtol=1e-5, atol=1e-6)


def test_a_zero_is_the_equilibrium_kernel_density(tiny):
    pairs, density = tiny
    eq = KernelDensity(pairs, scale=3.0, gauge=0.0, jump=True)
    rng = np.random.default_rng(4)
    u = rng.normal(0, 0.8, pairs.n_pairs)
    theta = np.concatenate([u, np.zeros(pairs.n_pairs)])
    logp, grad = density.logp_grad(theta)
    eq_logp, eq_grad = eq.logp_grad(u)
    assert logp == pytest.approx(eq_logp, abs=1e-12)
    np.testing.assert_allclose(grad[: pairs.n_pairs], eq_grad, atol=1e-12)
    # and the conditional MAP at a tiny τ_A is the equilibrium MAP
    tight = density.with_tau(1e-4).mode()
    np.testing.assert_allclose(tight.theta[: pairs.n_pairs], eq.mode().theta, atol=1e-5)


def test_log_det_and_laplace_draws_match_dense_linear_algebra(tiny):
    pairs, density = tiny
    theta = density.mode().theta
    hessian = density.explicit_hessian(theta).toarray()
    sign, logdet = np.linalg.slogdet(hessian)
    assert sign > 0
    assert density.log_det(theta) == pytest.approx(logdet, abs=1e-9)
    draws = density.laplace_draws(theta, 200_000, np.random.default_rng(5))
    np.testing.assert_allclose(draws.mean(axis=0), theta, atol=0.03)
    cov = np.cov(draws.T)
    np.testing.assert_allclose(cov, np.linalg.inv(hessian), atol=0.03)
