"""Hand-made fits in the contract layout (no sampling): posterior draws around a known truth.

Used by the report tests so figures and documents are checked against known numbers quickly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from detailed_balance.data import Transitions
from detailed_balance.simulation import simulate_panel


def fake_fit(
    *,
    n_states: int = 50,
    visits: int = 400,
    noise: float = 0.1,
    draws: int = 100,
    chains: int = 2,
    with_a: bool = False,
    seed: int = 0,
) -> tuple[Transitions, pd.Series, xr.DataTree]:
    """Simulated single-LLM data, its true V and a DataTree whose V draws are truth + noise."""
    panel = simulate_panel({"agent": 1.0}, n_states=n_states, visits=visits, seed=seed)
    data = panel.data
    states = data.states.to_numpy().astype(str)
    truth = panel.potentials["agent"].reindex(states)
    truth = truth - truth.mean()
    rng = np.random.default_rng(seed + 100)
    v = truth.to_numpy() + noise * rng.standard_normal((chains, draws, len(states)))
    v -= v.mean(axis=-1, keepdims=True)
    pairs = data.pairs()
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    post = {
        "V": (("chain", "draw", "state"), v),
        "sigma_V": (("chain", "draw"), 1 + 0.05 * rng.standard_normal((chains, draws))),
    }
    if with_a:
        post["A"] = (
            ("chain", "draw", "pair"),
            0.05 * rng.standard_normal((chains, draws, len(pairs))),
        )
        post["tau_A"] = (("chain", "draw"), np.abs(0.05 * rng.standard_normal((chains, draws))))
    posterior = xr.Dataset(post, coords={**coords, "state": states, "pair": np.arange(len(pairs))})
    const = xr.Dataset(
        {
            "pair_f": ("pair", pairs["f"].to_numpy().astype(str)),
            "pair_g": ("pair", pairs["g"].to_numpy().astype(str)),
            "pair_i": ("pair", pairs["i"].to_numpy()),
            "pair_j": ("pair", pairs["j"].to_numpy()),
            "n_fg": ("pair", pairs["n_fg"].to_numpy()),
            "n_gf": ("pair", pairs["n_gf"].to_numpy()),
            "N_f": ("pair", pairs["N_f"].to_numpy()),
            "N_g": ("pair", pairs["N_g"].to_numpy()),
            "visits": ("state", data.visits_array()),
            "component": ("state", data.weak_components()),
        },
        coords={"pair": np.arange(len(pairs)), "state": states},
    )
    energy = np.cumsum(0.3 * rng.standard_normal((chains, draws)), axis=1)
    stats = xr.Dataset({"energy": (("chain", "draw"), energy)}, coords=coords)
    tree = xr.DataTree.from_dict(
        {"/posterior": posterior, "/constant_data": const, "/sample_stats": stats}
    )
    tree.attrs.update(
        model="nonequilibrium" if with_a else "equilibrium",
        method="nuts",
        sampler="nutpie",
        seed=seed,
        data_hash=data.data_hash(),
    )
    return data, truth, tree
