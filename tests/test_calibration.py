"""Calibration of the Bayesian potentials and detailed-balance tests on data with known truth.

Replicate data sets come from `detailed_balance.simulation` (known V and loop affinities) and
from the exactly reversible 251-state peer matrix (truth −log π). Replicates are fitted with
the Laplace approximation at the MAP (``method="map"``: seconds each, and what `bayes_check`
uses by default); the non-equilibrium model of five driven replicates by NUTS (nutpie). What is
asserted is the issue's contract, never weakened:

- reversible, 20 replicates of 300 states: 90% intervals of centred V cover 85–95%; the
  verdict says ``violated`` in ≤ 10% of replicates (and ``holds`` in ≥ 80%);
- driven (|loop affinity| ≥ 1 on ≥ 30% of observed 3-cycles): ``violated`` in ≥ 90% (MAP, 10
  replicates, and NUTS, 5); 90% NUTS intervals of loop affinities cover 85–95%;
- posterior-mean V beats least-action V in Spearman correlation with the truth
  (well-visited states, chain allocation);
- skewed truths (heavy upper tail) and the peer matrix: 90% intervals of bounded states
  cover 85–95% (and the top decile of skewed truths ≥ 80%).

Coverage is pooled over replicates and states (states within a replicate are correlated, so
the pooled fraction is noisier than its count suggests). The whole file takes ~5 min on the
shared 2-core machine (load ≈ 5; ~3 min of CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from peer_data import PEER
from scipy.stats import spearmanr

from detailed_balance.diagnostics import bayes_verdict, convergence
from detailed_balance.models import EquilibriumModel, NonEquilibriumModel, least_action
from detailed_balance.sampling import fit
from detailed_balance.simulation import load_peer_matrix, simulate, simulate_from_matrix

pytestmark = pytest.mark.slow

CI = 0.9
N_STATES = 300
TRANSITIONS = 30_000  # 100 calls per state
N_REVERSIBLE = 20  # even replicates: uniform allocation; odd: one Markov chain (visits ∝ π)
N_SKEWED = 6
N_PEER = 3
MAP_DRAWS = 1000
# Driven replicates: small dense graphs (many observed 3-cycles per replicate) so that the
# non-equilibrium model can be fitted by NUTS in seconds; A_fg = DRIVE · z_fg, so a loop
# affinity is ~ N(0, 3 DRIVE²) and |affinity| ≥ 1 on ≈ 56% of loops.
N_DRIVEN = 10
N_DRIVEN_NUTS = 5  # of which the non-equilibrium model is also fitted by NUTS
DRIVEN = {"n_states": 60, "transitions": 60 * 300, "mean_degree": 12.0, "drive": 1.0}
NUTS = {"draws": 500, "tune": 500, "chains": 2}


@dataclass
class Tally:
    """Pooled interval hits over replicates, and verdicts."""

    hits: int = 0
    total: int = 0
    verdicts: list[str] = field(default_factory=list)
    per_replicate: list[float] = field(default_factory=list)

    def add(self, inside: np.ndarray) -> None:
        self.hits += int(inside.sum())
        self.total += int(inside.size)
        self.per_replicate.append(float(inside.mean()))

    @property
    def coverage(self) -> float:
        return self.hits / self.total

    def share(self, verdict: str) -> float:
        return self.verdicts.count(verdict) / len(self.verdicts)


def centred_coverage(result, truth: pd.Series, ci: float = CI) -> np.ndarray:
    """Per bounded state: does the `ci` interval of V cover the true V?

    Both the draws and the truth are centred over the states the fit reports as bounded, per
    connected component (the fit's own gauge), so the comparison is gauge-free.
    """
    tree = result.posterior
    const = tree["constant_data"]
    post_v = tree["posterior"]["V"]
    states = post_v["state"].to_numpy().astype(str)
    bounded = const["bounded"].to_numpy().astype(bool)
    component = const["component"].to_numpy()
    v = post_v.transpose("chain", "draw", "state").to_numpy().reshape(-1, len(states))
    v, t = v[:, bounded], truth.reindex(states).to_numpy()[bounded]
    comp = component[bounded]
    for c in np.unique(comp):  # a handful of components, not states
        inside = comp == c
        v[:, inside] -= v[:, inside].mean(axis=1, keepdims=True)
        t[inside] -= t[inside].mean()
    lo, hi = np.quantile(v, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
    return (lo <= t) & (t <= hi)


def _fit(model, data, method: str, seed: int):
    """NUTS (nutpie) with `NUTS` settings, or MAP + `MAP_DRAWS` Laplace draws."""
    kwargs = dict(NUTS, sampler="nutpie") if method == "nuts" else {"draws": MAP_DRAWS, "chains": 1}
    return fit(model, data, method=method, seed=seed, progressbar=False, **kwargs)


def _spearman_gain(result, data, truth: pd.Series, min_visits: float = 20) -> float:
    """ρ(posterior mean, truth) − ρ(least action, truth) over well-visited states (≥
    `min_visits` calls) that both estimators report as bounded."""
    table = result.summary(CI).set_index("state")
    la = least_action(data)
    visits = data.state_table()["visits"].reindex(table.index).fillna(0)
    keep = table["bounded"] & (visits >= min_visits)
    keep &= np.isfinite(la.potentials.reindex(table.index).to_numpy(dtype=float))
    names = table.index[keep.to_numpy()]
    rho_bayes = spearmanr(table.loc[names, "mean"], truth[names]).statistic
    rho_la = spearmanr(la.potentials[names], truth[names]).statistic
    return float(rho_bayes - rho_la)


# -- the replicate runs (module-scoped: each data set is fitted once) ------------------------
@pytest.fixture(scope="module")
def reversible_runs():
    """MAP fits of both models on reversible replicates: coverage, verdicts, ρ gains."""
    v_tally, gains = Tally(), []
    for rep in range(N_REVERSIBLE):
        allocation = "uniform" if rep % 2 == 0 else "chain"
        sim = simulate(N_STATES, TRANSITIONS, allocation=allocation, seed=1000 + rep)
        eq = _fit(EquilibriumModel(), sim.transitions, "map", seed=rep)
        neq = _fit(NonEquilibriumModel(), sim.transitions, "map", seed=rep)
        v_tally.add(centred_coverage(eq, sim.potential))
        v_tally.verdicts.append(bayes_verdict(eq, neq, seed=rep).verdict)
        if allocation == "chain":
            gains.append(_spearman_gain(eq, sim.transitions, sim.potential))
    return v_tally, np.array(gains)


@pytest.fixture(scope="module")
def driven_runs():
    """Driven replicates: the verdict from MAP fits of both models (what `bayes_check`'s
    default does) on all of them; NUTS for the non-equilibrium model on the first
    `N_DRIVEN_NUTS`, whose loop-affinity intervals are checked against the truth."""
    map_verdicts, loops, shares, rhats = [], Tally(), [], []
    for rep in range(N_DRIVEN):
        sim = simulate(**DRIVEN, seed=2000 + rep)
        truth_all = sim.loop_affinity(sim.transitions.cycles())
        shares.append(np.mean(np.abs(truth_all) >= 1))
        eq = _fit(EquilibriumModel(), sim.transitions, "map", seed=rep)
        neq = _fit(NonEquilibriumModel(), sim.transitions, "map", seed=rep)
        map_verdicts.append(bayes_verdict(eq, neq, seed=rep).verdict)
        if rep >= N_DRIVEN_NUTS:
            continue
        neq = _fit(NonEquilibriumModel(), sim.transitions, "nuts", seed=rep)
        rhats.append(convergence(neq, warn=False, include=("loop_affinity", "scalars")).rhat_max)
        verdict = bayes_verdict(eq, neq, seed=rep)
        loops.verdicts.append(verdict.verdict)
        cycles = verdict.cycles
        truth = sim.loop_affinity(cycles)
        loops.add(((cycles["lower"] <= truth) & (truth <= cycles["upper"])).to_numpy())
    return map_verdicts, loops, np.array(shares), np.array(rhats)


# -- reversible ---------------------------------------------------------------------------
def test_reversible_potential_intervals_cover(reversible_runs):
    tally, _ = reversible_runs
    print(f"reversible V coverage {tally.coverage:.3f} over {tally.total} state intervals")
    assert tally.total > N_REVERSIBLE * 200
    assert 0.85 <= tally.coverage <= 0.95, tally.per_replicate


def test_reversible_verdict_rarely_says_violated(reversible_runs):
    tally, _ = reversible_runs
    print("reversible verdicts", {v: tally.verdicts.count(v) for v in set(tally.verdicts)})
    assert len(tally.verdicts) >= 20
    assert tally.share("violated") <= 0.10, tally.verdicts
    # and it is mostly a positive statement, not a shrug
    assert tally.share("holds") >= 0.8, tally.verdicts


def test_posterior_mean_beats_least_action(reversible_runs):
    """On chain-allocated data (visits ∝ π, as when an agent follows its own trajectory) the
    binomial posterior mean ranks well-visited states closer to the truth than least action.
    (With uniform allocation the two agree to ±0.0005 in ρ: nothing to win there.)"""
    _, gains = reversible_runs
    print(f"Spearman gain over least action: mean {gains.mean():.4f}, min {gains.min():.4f}")
    assert len(gains) >= 10
    assert gains.mean() > 0, gains
    assert np.mean(gains > 0) >= 0.8, gains


# -- driven -----------------------------------------------------------------------------------
def test_driven_verdict_says_violated(driven_runs):
    map_verdicts, nuts, shares, rhats = driven_runs
    print(
        f"driven: |affinity| ≥ 1 on {shares.min():.2f}–{shares.max():.2f} of loops; MAP "
        f"verdicts {map_verdicts}; NUTS {nuts.verdicts}; loop R-hat max {rhats.max():.3f}"
    )
    assert shares.min() >= 0.30, shares  # the regime: |affinity| ≥ 1 on ≥ 30% of loops
    assert len(map_verdicts) >= 10
    assert map_verdicts.count("violated") / len(map_verdicts) >= 0.90, map_verdicts
    assert nuts.share("violated") >= 0.90, nuts.verdicts
    assert rhats.max() < 1.05, rhats  # loop affinities and τ_A: what the verdict relies on


def test_driven_loop_affinity_intervals_cover(driven_runs):
    _, nuts, _, _ = driven_runs
    print(f"driven loop-affinity coverage (NUTS) {nuts.coverage:.3f} over {nuts.total} loops")
    assert nuts.total > N_DRIVEN_NUTS * 150
    assert 0.85 <= nuts.coverage <= 0.95, nuts.per_replicate


# -- skewed truths ------------------------------------------------------------------------------
def test_skewed_landscape_intervals_cover():
    """Heavy upper tail: the wide prior must not shrink the few states far uphill."""
    tally, uphill = Tally(), Tally()
    for rep in range(N_SKEWED):
        sim = simulate(N_STATES, TRANSITIONS, potential="skewed", spread=2.0, seed=3000 + rep)
        skew = pd.Series(sim.potential).skew()
        assert skew > 1.0  # heavy upper tail: a few states far uphill
        eq = _fit(EquilibriumModel(), sim.transitions, "map", seed=rep)
        inside = centred_coverage(eq, sim.potential)
        tally.add(inside)
        bounded = eq.posterior["constant_data"]["bounded"].to_numpy().astype(bool)
        states = eq.posterior["posterior"]["state"].to_numpy().astype(str)[bounded]
        truth = sim.potential.reindex(states).to_numpy()
        uphill.add(inside[truth >= np.quantile(truth, 0.9)])  # the top decile
    print(
        f"skewed V coverage {tally.coverage:.3f} ({tally.total}); top decile "
        f"{uphill.coverage:.3f} ({uphill.total})"
    )
    assert 0.85 <= tally.coverage <= 0.95, tally.per_replicate
    assert uphill.coverage >= 0.80, uphill.per_replicate


def test_peer_matrix_intervals_cover():
    matrix = load_peer_matrix(PEER)
    tally = Tally()
    for rep in range(N_PEER):
        sim = simulate_from_matrix(matrix, 300 * matrix.shape[0], seed=4000 + rep)
        eq = _fit(EquilibriumModel(), sim.transitions, "map", seed=rep)
        tally.add(centred_coverage(eq, sim.potential))
    print(f"peer-matrix V coverage {tally.coverage:.3f} over {tally.total} state intervals")
    assert tally.total > N_PEER * 150
    assert 0.85 <= tally.coverage <= 0.95, tally.per_replicate
