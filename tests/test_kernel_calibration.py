"""Calibration of the kernel likelihood where real agent data live (issue 13's targets).

The equilibrium model fits the kernel likelihood by default on true visit counts. Here its
90% intervals of V are checked against a known truth on the designs the issue names, with the
default priors and, for NUTS, the default sampler settings (4 chains × 1,000 draws after 1,000
tuning):

- the paper's density: 7,500 states, 60,000 calls (8 per state), uniform allocation, few
  3-cycles (MAP + Laplace);
- a sparse landscape: 2,000 states × 7 calls per state (MAP and NUTS);
- the exactly reversible 251-state peer matrix (deeptime's P_rev, truth −log π) at 300 and
  3,000 calls per state (MAP and NUTS).

Coverage is read on the states reported bounded, with the truth moved into the fit's gauge
(`BayesFit.in_gauge`). Each case is one seeded data set (the numbers are those of
`benchmarks/kernel_model.py`, docs/calibration.md); states of one data set are correlated, so
the band is the issue's 0.85–0.95, not a binomial interval. The designs where the target is
not met yet (the peer matrix at 30 calls per state, chain allocation) are listed in
docs/calibration.md, not here.
"""

from __future__ import annotations

import numpy as np
import pytest
from peer_data import PEER

from detailed_balance.models import EquilibriumModel
from detailed_balance.sampling import fit
from detailed_balance.simulation import load_peer_matrix, simulate, simulate_from_matrix

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]


def _design(name: str):
    if name == "paper":
        sim = simulate(7500, 60_000, seed=0)
    elif name == "sparse":
        sim = simulate(2000, 14_000, seed=0)
    else:
        peer = load_peer_matrix(PEER)
        calls = int(name.removeprefix("peer"))
        sim = simulate_from_matrix(peer, calls * len(peer), seed=0)
    return sim.transitions, sim.potential


def _check(result, truth, nuts: bool) -> float:
    assert result.posterior.attrs["likelihood"] == "kernel"
    table = result.summary(0.9).set_index("state")
    rows = table[table["bounded"]]
    true_v = result.in_gauge(truth).reindex(rows.index)
    inside = (rows["lower"] <= true_v) & (true_v <= rows["upper"])
    if nuts:
        import arviz as az

        tree = result.posterior
        bounded = tree["constant_data"]["bounded"].to_numpy().astype(bool)
        v = tree["posterior"]["V"].isel(state=np.flatnonzero(bounded)).to_dataset()
        assert float(np.nanmax(az.rhat(v)["V"].values)) <= 1.01
        assert float(np.nanmin(az.ess(v)["V"].values)) >= 400
        assert int(tree["sample_stats"]["diverging"].sum()) == 0
    return float(inside.mean())


@pytest.mark.parametrize(
    "name, method, bounded",
    [
        ("paper", "map", 6000),  # measured 0.895 on 6,102 bounded states
        ("sparse", "map", 1400),  # 0.922 on 1,466
        ("sparse", "nuts", 1400),  # 0.862
        ("peer300", "map", 230),  # 0.872 on 235
        ("peer300", "nuts", 230),  # 0.872
        ("peer3000", "map", 245),  # 0.904 on 249
        ("peer3000", "nuts", 245),  # 0.912
    ],
)
def test_kernel_intervals_of_V_cover_the_truth(name, method, bounded):
    data, truth = _design(name)
    result = fit(EquilibriumModel(), data, method=method, seed=1, progressbar=False)
    assert int(result.posterior["constant_data"]["bounded"].sum()) >= bounded
    coverage = _check(result, truth, nuts=method == "nuts")
    assert 0.85 <= coverage <= 0.95, (name, method, coverage)
