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
import pandas as pd
import pytest

from detailed_balance import simulate
from detailed_balance.data import Transitions
from detailed_balance.models import EquilibriumModel, NonEquilibriumModel
from detailed_balance.models import _scales as scales
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
    """s ↦ U(θ*_s, s) + ½ log det H(θ*_s, s), by a tight conditional MAP and the dense
    Hessian of U over the free coordinates by central differences of the gradient (the true
    curvature: centring and gauge included, no Gauss–Newton shortcut)."""
    lay = density.layout
    free = np.ones(lay.size, dtype=bool)
    for fixed in (lay.s_v if lay.fitted_sigma else None, lay.s_tau if lay.nonequilibrium else None):
        if fixed is not None:
            free[fixed] = False
    columns = np.flatnonzero(free)

    def objective(s: float) -> float:
        theta = start.copy()
        theta[index] = s
        theta = density.find_map(theta, fix_tau=True, fix_sigma=True).theta
        step = 1e-5
        hessian = np.empty((len(columns), len(columns)))
        for n, c in enumerate(columns):
            up, down = theta.copy(), theta.copy()
            up[c] += step
            down[c] -= step
            diff = density.logp_grad(down)[1] - density.logp_grad(up)[1]
            hessian[:, n] = diff[columns] / (2 * step)
        hessian = 0.5 * (hessian + hessian.T)
        return -density.logp_grad(theta)[0] + 0.5 * np.linalg.slogdet(hessian)[1]

    return objective


@pytest.fixture
def many_draws(monkeypatch):
    """The score's Monte Carlo trace with 20,000 draws: what it converges to."""
    monkeypatch.setattr(scales, "SCORE_DRAWS", 20_000)
    monkeypatch.setattr(scales, "SCORE_BUDGET", 0)


@pytest.fixture(scope="module")
def driven_density():
    sim = simulate(30, 4000, seed=21, mean_degree=5, drive=1.0)
    prepared = NonEquilibriumModel().prepare(sim.transitions, whiten=False)
    return prepared.density, prepared.map_result


@pytest.mark.parametrize("tau", [0.05, 0.3, 1.0, 2.5])
def test_tau_score_is_the_derivative_of_the_laplace_marginal(driven_density, tau, many_draws):
    density, result = driven_density
    index = density.layout.s_tau
    objective = _dense_objective(density, index, result.theta)
    s, step = math.log(tau), 1e-3
    brute = (objective(s + step) - objective(s - step)) / (2 * step)
    score = pair_scale_score(density, "tau")(s, result.theta)[0]
    assert score == pytest.approx(brute, rel=0.06, abs=0.25), (score, brute)


def _components(n: int, size: int, seed: int) -> Transitions:
    """`n` disconnected simulated landscapes of `size` states each (distinct names)."""
    parts = [
        simulate(size, 100 * size, seed=seed + c, state_prefix=f"c{c}_").transitions
        for c in range(n)
    ]
    counts = pd.concat([t.counts for t in parts], ignore_index=True)
    visits = pd.concat([t.visits for t in parts], ignore_index=True)
    return Transitions.from_counts(counts, visits=visits)


@pytest.mark.parametrize(
    "data",
    [lambda: simulate(40, 3000, seed=22, spread=1.2).transitions, lambda: _components(12, 4, 30)],
    ids=["one component", "12 components"],
)
def test_sigma_score_is_the_derivative_of_the_laplace_marginal(data, many_draws):
    pairs = pair_data(data())
    config = {**EquilibriumModel.default_model_config, "V_prior": "normal"}
    density = PairDensity(pairs, config, False)
    start = density.initial()
    index = density.layout.s_v
    objective = _dense_objective(density, index, start)
    for sigma in (0.5, 1.2, 3.0):
        s, step = math.log(sigma), 1e-3
        brute = (objective(s + step) - objective(s - step)) / (2 * step)
        score = pair_scale_score(density, "sigma")(s, start)[0]
        assert score == pytest.approx(brute, rel=0.03, abs=0.2), (sigma, score, brute)
    # and the fitted σ_V is the minimiser of the brute-force marginal
    best = fit_sigma(density, start)
    s_hat = float(best.theta[index])
    grid = np.arange(s_hat - 0.15, s_hat + 0.151, 0.01)
    values = [objective(s) for s in grid]
    assert abs(grid[int(np.argmin(values))] - s_hat) <= 0.02


def test_tau_mode_minimises_the_brute_force_marginal(driven_density, many_draws):
    density, result = driven_density
    index = density.layout.s_tau
    s_hat = float(result.theta[index])
    objective = _dense_objective(density, index, result.theta)
    grid = np.arange(s_hat - 0.2, s_hat + 0.201, 0.01)
    values = np.array([objective(s) for s in grid])
    assert abs(grid[int(np.argmin(values))] - s_hat) <= 0.03
    # the quadrature's weights follow exp(−objective) at its nodes (normalised)
    nodes = tau_grid(density, result)
    at_nodes = np.array([objective(n.s) for n in nodes])
    brute = np.exp(-(at_nodes - at_nodes.min()))
    brute /= brute.sum()
    np.testing.assert_allclose([n.weight for n in nodes], brute, rtol=0.1, atol=1e-3)


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
@pytest.mark.parametrize(
    ("design", "drive"),
    [
        ({"n_states": 60, "transitions": 6000, "seed": 23}, 0.8),
        ({"n_states": 300, "transitions": 30_000, "seed": 2}, 0.0),
    ],
    ids=["driven", "reversible"],
)
def test_map_tau_agrees_with_nuts(design, drive):
    """The map method's τ_A (marginal mode + adaptive grid) against NUTS on the same data: its
    mean inside NUTS's 90% interval, the intervals overlapping by most of NUTS's width, and
    the 5% quantile within a factor 2 (on reversible data the marginal has a long lower tail
    that a fixed ±2 sd grid cut off: 0.10 against NUTS's 0.04)."""
    sim = simulate(**design, mean_degree=6, drive=drive)
    out = {}
    for method, options in (("map", {"draws": 2000, "chains": 1}), ("nuts", {"draws": 1000})):
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
    assert 0.5 <= out["map"][1] / lo <= 2.0, out


def test_tau_without_any_pair_carrying_a_is_drawn_from_its_prior():
    """A_pairs='two_way' on data seen one way only: no pair carries A, so the map method's
    τ_A is its HalfNormal(1) prior (mean √(2/π) ≈ 0.798), not a constant."""
    counts = pd.DataFrame(
        {"source": ["a", "b", "c"], "target": ["b", "c", "a"], "count": [4, 3, 5]}
    )
    visits = pd.DataFrame({"source": ["a", "b", "c"], "visits": [10, 10, 10]})
    data = Transitions.from_counts(counts, visits=visits)
    model = NonEquilibriumModel({"A_pairs": "two_way"})
    result = fit(model, data, method="map", draws=4000, chains=1, seed=1)
    tau = result.posterior["posterior"]["tau_A"].to_numpy().ravel()
    assert tau.mean() == pytest.approx(np.sqrt(2 / np.pi), abs=0.03)
    assert np.quantile(tau, 0.95) == pytest.approx(1.960, abs=0.1)  # |Z| < 1.96 w.p. 0.95
