"""Seeded reference fits: the posterior arrays that a restructuring must leave unchanged.

`python tests/reference_fits.py` writes `tests/data/reference_fits.npz` (run it only when a
change of numbers is intended and explained); `tests/test_reference_fits.py` refits and compares.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PATH = Path(__file__).parent / "data" / "reference_fits.npz"
PAIRS = {"likelihood": "pairs"}  # eq_*: the pair likelihood (kern_*: the default, kernel)


def reference_fits() -> dict[str, np.ndarray]:
    """Small seeded fits of every model and method, flattened to named arrays."""
    import pandas as pd

    from detailed_balance import simulate
    from detailed_balance.models import EquilibriumModel, FeaturePotentialModel, NonEquilibriumModel
    from detailed_balance.models.hierarchy import HierarchicalModel
    from detailed_balance.sampling import fit, sample
    from detailed_balance.simulation import simulate_panel

    sim = simulate(60, 3000, seed=11)
    driven = simulate(60, 3000, drive=0.8, seed=12)
    rng = np.random.default_rng(13)
    x = np.column_stack([rng.normal(3, 2, 60), rng.uniform(0, 10, 60)])
    featured = simulate(60, 3000, potential=x @ np.array([0.4, -0.2]), seed=13)
    feats = pd.DataFrame(x, columns=["a", "b"], index=featured.states)
    out: dict[str, np.ndarray] = {}
    cases = {
        "eq_map": (EquilibriumModel(PAIRS), sim, "map", {"draws": 200, "chains": 1}),
        "kern_map": (EquilibriumModel(), sim, "map", {"draws": 200, "chains": 1}),
        "kern_nuts": (EquilibriumModel(), sim, "nuts", {"draws": 50, "tune": 100, "chains": 2}),
        "neq_map": (NonEquilibriumModel(), driven, "map", {"draws": 200, "chains": 1}),
        "eq_nuts": (EquilibriumModel(PAIRS), sim, "nuts", {"draws": 50, "tune": 100, "chains": 2}),
        "neq_nuts": (
            NonEquilibriumModel(),
            driven,
            "nuts",
            {"draws": 50, "tune": 100, "chains": 2},
        ),
        "feat_map": (FeaturePotentialModel(feats), featured, "map", {"draws": 200, "chains": 1}),
        "feat_nuts": (
            FeaturePotentialModel(feats),
            featured,
            "nuts",
            {"draws": 50, "tune": 100, "chains": 2},
        ),
    }
    for name, (model, s, method, options) in cases.items():
        result = fit(model, s.transitions, method=method, seed=3, progressbar=False, **options)
        post = result.posterior["posterior"]
        for var in sorted(post.data_vars):
            out[f"{name}/{var}"] = np.asarray(post[var].values, dtype=float)
        out[f"{name}/log_likelihood"] = np.asarray(
            result.posterior["log_likelihood"]["n_fg"].values, dtype=float
        )
    panel = simulate_panel({"a": 1.0, "b": 0.6}, n_states=40, visits=40, seed=5)
    for method, options in {"map": {}, "nuts": {"draws": 50, "tune": 100, "chains": 2}}.items():
        tree = sample(HierarchicalModel(), panel.data, method=method, seed=2, **options)
        post = tree["posterior"]
        for var in sorted(post.data_vars):
            out[f"hier_{method}/{var}"] = np.asarray(post[var].values, dtype=float)
    return out


if __name__ == "__main__":
    arrays = reference_fits()
    np.savez_compressed(PATH, **arrays)
    print(f"wrote {PATH} ({len(arrays)} arrays)")
