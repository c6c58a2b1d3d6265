"""The fitted-scale driver (`models/_scales.py`) against dense linear algebra and NUTS.

The score g(s) = d/ds [U(θ*_s, s) + ½ log det H(θ*_s, s)] is computed without a determinant
(envelope theorem, Monte Carlo trace, one solve for the move of the mode). Here the same
function is built by brute force on small data — conditional modes on a grid of s, the dense
Gauss–Newton H and its log-determinant, a finite difference — and the score, the mode and the
quadrature weights must match it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from detailed_balance import simulate
from detailed_balance.models import EquilibriumModel, NonEquilibriumModel
from detailed_balance.models._density import PairDensity
from detailed_balance.models._pairs import pair_data
from detailed_balance.models._scales import (
    fit_sigma,
    marginal_grid,
    marginal_mode,
    pair_scale_score,
    tau_grid,
)
from detailed_balance.sampling import fit


def _dense_objective(density: PairDensity, index: int, start: np.ndarray):
    """s ↦ U(θ*_s, s) + ½ log det H_GN(θ*_s, s), by a tight conditional MAP and dense H."""
    lay, pairs = density.layout, density.pairs
    k, p = pairs.n_states, pairs.n_pairs
    e = np.zeros((p, k))
    e[np.arange(p), pairs.i] = 1.0
    e[np.arange(p), pairs.j] = -1.0

    def objective(s: float) -> float:
        theta = start.copy()
        theta[index] = s
        theta = density.find_map(theta, fix_tau=True, fix_sigma=True).theta
        w = density.pair_weights(theta)
        h = density.prior_curvature(pairs.centre(theta[lay.v]), density.sigma(theta))
        if lay.nonequilibrium:
            jac = np.hstack([e, np.diag(density.tau(theta) * density.a_mask)])
            diag = np.concatenate([h, np.ones(p)])
        else:
            jac, diag = e, h
        hessian = jac.T @ (w[:, None] * jac) + np.diag(diag)
        return -density.logp_grad(theta)[0] + 0.5 * np.linalg.slogdet(hessian)[1]

    return objective


@pytest.fixture(scope="module")
def driven_density():
    sim = simulate(30, 4000, seed=21, mean_degree=5, drive=1.0)
    prepared = NonEquilibriumModel().prepare(sim.transitions, whiten=False)
    return prepared.density, prepared.map_result


@pytest.mark.parametrize("tau", [0.05, 0.3, 1.0, 2.5])
def test_tau_score_is_the_derivative_of_the_laplace_marginal(driven_density, tau):
    density, result = driven_density
    index = density.layout.s_tau
    objective = _dense_objective(density, index, result.theta)
    s, step = math.log(tau), 1e-3
    brute = (objective(s + step) - objective(s - step)) / (2 * step)
    score = pair_scale_score(density, "tau")(s, result.theta)[0]
    # the trace is a 100-draw Monte Carlo estimate: a few % of the curvature terms
    assert score == pytest.approx(brute, rel=0.05, abs=0.3), (score, brute)


def test_sigma_score_is_the_derivative_of_the_laplace_marginal():
    sim = simulate(40, 3000, seed=22, spread=1.2)
    pairs = pair_data(sim.transitions)
    config = {**EquilibriumModel.default_model_config, "V_prior": "normal"}
    density = PairDensity(pairs, config, False)
    start = density.initial()
    index = density.layout.s_v
    objective = _dense_objective(density, index, start)
    for sigma in (0.5, 1.2, 3.0):
        s, step = math.log(sigma), 1e-3
        brute = (objective(s + step) - objective(s - step)) / (2 * step)
        score = pair_scale_score(density, "sigma")(s, start)[0]
        assert score == pytest.approx(brute, rel=0.05, abs=0.3), (sigma, score, brute)
    # and the fitted σ_V is the minimiser of the brute-force marginal
    best = fit_sigma(density, start)
    s_hat = float(best.theta[index])
    grid = np.linspace(s_hat - 0.3, s_hat + 0.3, 13)
    values = [objective(s) for s in grid]
    assert abs(grid[int(np.argmin(values))] - s_hat) <= 0.05 + 1e-12


def test_tau_mode_minimises_the_brute_force_marginal(driven_density):
    density, result = driven_density
    index = density.layout.s_tau
    s_hat = float(result.theta[index])
    objective = _dense_objective(density, index, result.theta)
    grid = np.linspace(s_hat - 0.4, s_hat + 0.4, 17)
    values = np.array([objective(s) for s in grid])
    assert abs(grid[int(np.argmin(values))] - s_hat) <= 0.05 + 1e-12
    # the quadrature's weights follow exp(−objective) at its nodes (normalised)
    nodes = tau_grid(density, result)
    at_nodes = np.array([objective(n.s) for n in nodes])
    brute = np.exp(-(at_nodes - at_nodes.min()))
    brute /= brute.sum()
    np.testing.assert_allclose([n.weight for n in nodes], brute, atol=0.04)


def test_marginal_driver_on_a_known_function():
    """Score of N(1.3, 0.4²) in s: the driver finds 1.3, and the grid's weights are the
    normal density at ±1, ±2 sd (trapezoid on a linear score is exact)."""
    centre, sd = 1.3, 0.4

    def score(s, warm):
        return (s - centre) / sd**2, (warm or 0) + 1

    best, calls = marginal_mode(score, 0.0, -5.0, 5.0, warm=0)
    assert best == pytest.approx(centre, abs=2e-3)
    nodes = marginal_grid(score, centre, calls, sd)
    expected = np.exp(-0.5 * np.array([-2, -1, 0, 1, 2]) ** 2)
    np.testing.assert_allclose([n.weight for n in nodes], expected / expected.sum(), rtol=1e-9)
    # a score that never changes sign stops at the limit it points to
    assert marginal_mode(lambda s, w: (1.0, w), 0.0, -3.0, 3.0)[0] == -3.0


def test_tau_does_not_stall_at_its_start():
    """The old EM stopped after one step at its start 0.1 × tau_A_scale on these data; the
    marginal mode moves away and the map method's τ_A interval has a real width."""
    sim = simulate(100, 3000, seed=1, drive=1.0)
    prepared = NonEquilibriumModel().prepare(sim.transitions, whiten=False)
    tau = prepared.density.tau(prepared.map_result.theta)
    assert abs(math.log(tau / 0.1)) > 1.0
    result = fit(NonEquilibriumModel(), sim.transitions, method="map", draws=400, chains=1)
    draws = result.posterior["posterior"]["tau_A"].to_numpy().ravel()
    assert np.quantile(draws, 0.95) / np.quantile(draws, 0.05) > 1.2


@pytest.mark.slow
def test_map_tau_agrees_with_nuts():
    """On driven data the map method's τ_A (marginal mode + grid) sits inside NUTS's 90%
    interval and the two intervals overlap by most of their width."""
    sim = simulate(60, 6000, seed=23, mean_degree=6, drive=0.8)
    out = {}
    for method, options in (("map", {"draws": 1000, "chains": 1}), ("nuts", {"draws": 400})):
        result = fit(
            NonEquilibriumModel(),
            sim.transitions,
            method=method,
            seed=2,
            progressbar=False,
            **options,
        )
        tau = result.posterior["posterior"]["tau_A"].to_numpy().ravel()
        out[method] = (tau.mean(), *np.quantile(tau, [0.05, 0.95]))
    mean, lo, hi = out["nuts"]
    assert lo <= out["map"][0] <= hi, out
    overlap = min(hi, out["map"][2]) - max(lo, out["map"][1])
    assert overlap >= 0.5 * (hi - lo), out
