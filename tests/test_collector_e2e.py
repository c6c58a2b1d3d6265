"""End to end: simulated/word100 with a known reversible landscape → 20,000 calls through
litellm → run store → export → least-action and equilibrium (MAP) fits recover the
simulator's V (Spearman ≥ 0.9 on states visited ≥ 20 times); plus the discovery curve."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from detailed_balance.agents import RunStore, SimulatedLLM, collect
from detailed_balance.data import read_transitions

CALLS = 20_000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("e2e")
    sim = SimulatedLLM.word100(states=40, seed=11, spread=1.5, invalid_rate=0.05)
    result = collect("word100", sim.model, CALLS, store=path / "runs.db", simulator=sim,
                     run_id="e2e", concurrency=64, seed=11)  # fmt: skip
    with RunStore(path / "runs.db") as store:
        store.transitions().to_csv(path / "transitions.csv", path / "visits.csv")
        curve = store.discovery()
    data = read_transitions(path / "transitions.csv", str(path / "visits.csv"))
    return sim, result, data, curve


def _well_visited(data, truth, fitted):
    table = data.state_table()
    states = table.index[table["visits"] >= 20].intersection(truth.index)
    states = [s for s in states if np.isfinite(fitted.get(s, np.nan))]
    return states


@pytest.mark.slow
def test_run_is_complete(run):
    sim, result, data, _ = run
    assert (result.completed, result.errors) == (CALLS, 0)
    assert data.total_calls == CALLS
    # About ε = 5% garbage answers pool into INVALID (binomial, 5 sd).
    into_invalid = data.counts.loc[data.counts["target"] == "INVALID", "count"].sum()
    assert into_invalid > 0.05 * CALLS - 5 * np.sqrt(CALLS * 0.05 * 0.95)


@pytest.mark.slow
def test_least_action_recovers_the_simulators_potential(run):
    from detailed_balance.models import least_action

    sim, _, data, _ = run
    truth = sim.true_potential()
    fit = least_action(data)
    states = _well_visited(data, truth, fit.potentials)
    assert len(states) >= 35
    rho = spearmanr(fit.potentials[states], truth[states]).statistic
    assert rho >= 0.9, rho


@pytest.mark.slow
def test_equilibrium_map_recovers_the_simulators_potential(run):
    from detailed_balance.models.equilibrium import EquilibriumModel
    from detailed_balance.sampling import fit

    sim, _, data, _ = run
    truth = sim.true_potential()
    fitted = fit(EquilibriumModel(), data, method="map", seed=0, progressbar=False)
    v = fitted.posterior["posterior"]["V"]
    potentials = v.mean([d for d in v.dims if d != "state"]).to_series()
    states = _well_visited(data, truth, potentials)
    assert len(states) >= 35
    assert spearmanr(potentials[states], truth[states]).statistic >= 0.9


@pytest.mark.slow
def test_discovery_curve(run):
    sim, _, _, curve = run
    assert curve["calls"].tolist() == list(range(1, CALLS + 1))
    distinct = curve["distinct_states"].to_numpy()
    assert np.all(np.diff(distinct) >= 0)
    # The vocabulary has 40 words; BUZZY (the seed) is only found if some answer returns to it.
    assert distinct[-1] in (39, 40)
    assert distinct[999] >= 35  # uniform search over a 40-word landscape spreads fast
