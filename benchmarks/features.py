"""Benchmark of the feature potential V = x·θ + ε (`FeaturePotentialModel`).

Same run, same data, same machine: our NUTS graph (Laplace-whitened V and θ, partial
non-centring of weakly pinned states, vectorised pair likelihood) against the straightforward
PyMC formulation (V ~ Normal(z·θ, σ_ε) per state, θ ~ Normal(0, 5), σ_ε ~ HalfNormal(2),
``pm.Binomial`` on indexed V, nutpie), both 4 chains × `--draws` after `--tune`, judged on
R-hat and bulk ESS of θ and σ_ε. Also at paper scale: θ by least action, MAP + Laplace, and our
NUTS. The data: `simulate` on V = x·θ + ε with 12 standard-normal features, θ ~ N(0, 0.5²),
σ_ε = 0.7, at the paper's density (≈6.7 calls per state). Times are wall clock including
compilation.

    python benchmarks/features.py            # NUTS comparison at 2,000 states, paper scale rest
    python benchmarks/features.py --quick    # a small smoke run
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pymc as pm  # noqa: E402

from detailed_balance.diagnostics import theta_summary  # noqa: E402
from detailed_balance.features import Standardiser  # noqa: E402
from detailed_balance.models import FeaturePotentialModel, feature_least_action  # noqa: E402
from detailed_balance.models._pairs import pair_data  # noqa: E402
from detailed_balance.sampling import fit  # noqa: E402
from detailed_balance.simulation import simulate  # noqa: E402

N_FEATURES = 12


def landscape(n_states: int, seed: int = 0):
    """Counts at the paper's density from V = x·θ + ε; returns (simulation, features, θ)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_states, N_FEATURES))
    theta = rng.normal(0.0, 0.5, N_FEATURES)
    v = x @ theta + 0.7 * rng.standard_normal(n_states)
    sim = simulate(n_states, int(6.7 * n_states), potential=v, seed=seed)
    names = [f"x{k}" for k in range(N_FEATURES)]
    return sim, pd.DataFrame(x, columns=names, index=sim.states), theta


def _health(theta: np.ndarray, sigma: np.ndarray) -> tuple[float, float]:
    """(max R-hat, min bulk ESS) over θ (chain, draw, feature) and σ_ε (chain, draw)."""
    import xarray as xr

    ds = xr.Dataset(
        {"theta": (("chain", "draw", "feature"), theta), "sigma": (("chain", "draw"), sigma)}
    )
    rhat = max(float(az.rhat(ds)[k].max()) for k in ds.data_vars)
    ess = min(float(az.ess(ds)[k].min()) for k in ds.data_vars)
    return rhat, ess


def straightforward(sim, feats, draws: int, tune: int, seed: int) -> dict:
    pairs = pair_data(sim.transitions)
    table = feats.loc[pairs.states.astype(str)]
    z = Standardiser.fit(table).transform(table)
    start = time.perf_counter()
    with pm.Model(coords={"state": pairs.states.astype(str), "feature": list(feats.columns)}):
        theta = pm.Normal("theta_std", 0.0, 5.0, dims="feature")
        sigma = pm.HalfNormal("sigma_eps", 2.0)
        v = pm.Normal("V", pm.math.dot(z, theta), sigma, dims="state")
        logit = pairs.offset + v[pairs.i] - v[pairs.j]
        pm.Binomial("n_fg", n=pairs.trials, logit_p=logit, observed=pairs.n_fg)
        tree = pm.sample(
            draws, tune=tune, chains=4, random_seed=seed, nuts_sampler="nutpie",
            progressbar=False, compute_convergence_checks=False,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    post = tree["posterior"]
    rhat, ess = _health(post["theta_std"].to_numpy(), post["sigma_eps"].to_numpy())
    return {"seconds": seconds, "rhat": rhat, "ess": ess}


def ours(sim, feats, draws: int, tune: int, seed: int) -> dict:
    start = time.perf_counter()
    result = fit(
        FeaturePotentialModel(feats), sim.transitions, method="nuts", draws=draws, tune=tune,
        chains=4, seed=seed, progressbar=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    post = result.posterior["posterior"]
    rhat, ess = _health(post["theta_std"].to_numpy(), post["sigma_eps"].to_numpy())
    return {"seconds": seconds, "rhat": rhat, "ess": ess, "result": result}


def _line(name: str, row: dict) -> str:
    return (
        f"  {name:<16} {row['seconds']:7.1f} s   max R-hat {row['rhat']:.3f}   "
        f"min ESS {row['ess']:6.0f}   ESS/s {row['ess'] / row['seconds']:6.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--states", type=int, default=7500, help="paper-scale states")
    parser.add_argument("--nuts-states", type=int, default=2000, help="NUTS comparison size")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    args = parser.parse_args()
    if args.quick:
        args.states, args.nuts_states, args.draws, args.tune = 600, 300, 300, 300

    sim, feats, truth = landscape(args.nuts_states, seed=1)
    print(
        f"NUTS, 4 chains × {args.draws} after {args.tune}, {args.nuts_states} states, "
        f"{int(sim.visits.sum())} calls, {N_FEATURES} features (R-hat/ESS of θ and σ_ε):"
    )
    base = straightforward(sim, feats, args.draws, args.tune, seed=1)
    print(_line("straightforward", base))
    mine = ours(sim, feats, args.draws, args.tune, seed=1)
    print(_line("ours", mine))
    print(
        f"  ratio: {base['seconds'] / mine['seconds']:.1f}× faster, "
        f"{(mine['ess'] / mine['seconds']) / (base['ess'] / base['seconds']):.1f}× ESS per second"
    )

    sim, feats, truth = landscape(args.states, seed=0)
    print(f"\npaper scale: {args.states} states, {int(sim.visits.sum())} calls:")
    start = time.perf_counter()
    la = feature_least_action(sim.transitions, feats)
    print(f"  least-action θ   {time.perf_counter() - start:7.1f} s   converged={la.converged}")
    start = time.perf_counter()
    laplace = fit(
        FeaturePotentialModel(feats), sim.transitions, method="map", draws=1000, chains=1,
        progressbar=False,
    )  # fmt: skip
    map_seconds = time.perf_counter() - start
    table = theta_summary(laplace)
    covered = np.mean((table["lower"] < truth) & (truth < table["upper"]))
    print(f"  MAP + Laplace    {map_seconds:7.1f} s   θ inside 90% interval: {covered:.0%}")
    paper = ours(sim, feats, args.draws, args.tune, seed=0)
    table = theta_summary(paper["result"])
    covered = np.mean((table["lower"] < truth) & (truth < table["upper"]))
    print(_line("NUTS (ours)", paper) + f"   θ inside 90% interval: {covered:.0%}")


if __name__ == "__main__":
    main()
