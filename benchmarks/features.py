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
    python benchmarks/features.py --whitening [--seeds 2]  # NUTS efficiency on four generators

``--whitening`` measures our NUTS alone (2 chains × `--draws` after `--tune`) on four data
generators: `simulate` with a two-feature potential at a dense design (300 states, 30,000
calls) and a sparse one (2,000 states, 15,000 calls), and the simulated word and
symbolic-regression LLMs (`SimulatedLLM` kernels, counts drawn by `simulate_from_matrix`)
with the builtin featurisers. It reports bulk ESS per second of θ and of V (min and median
over states), max R-hat, divergences and wall time (prepare + compile + sampling).
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


# -- the whitening benchmark --------------------------------------------------------------------
def _two_feature(n_states: int, calls: int, seed: int):
    """simulate() on V = 0.4·a − 0.2·b + 0.5 ε (a ~ N(3, 2²), b ~ U(0, 10), as the reference fits)."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(3, 2, n_states), rng.uniform(0, 10, n_states)])
    v = x @ np.array([0.4, -0.2]) + 0.5 * rng.standard_normal(n_states)
    sim = simulate(n_states, calls, potential=v, seed=seed)
    return sim.transitions, pd.DataFrame(x, columns=["a", "b"], index=sim.states)


def _from_llm(llm, calls: int, seed: int):
    """Counts from a SimulatedLLM's exact answer kernel (garbage answers count as no move)."""
    from detailed_balance.simulation import simulate_from_matrix

    kernel = llm.kernel()
    order = np.argsort(np.asarray(kernel.index, dtype=str))
    matrix = kernel.iloc[order, order].to_numpy().copy()
    matrix[np.diag_indices_from(matrix)] += kernel["INVALID"].to_numpy()[order]
    names = list(np.asarray(kernel.index, dtype=str)[order])
    return simulate_from_matrix(matrix, calls, state_names=names, seed=seed).transitions


def _words(n_states: int, calls: int, seed: int):
    """word100 LLM over `n_states` words with V = 1.0·length − 3·vowel_share + 0.3 ε."""
    from detailed_balance.agents.simulated import SimulatedLLM
    from detailed_balance.agents.word100 import words_summing_to_100
    from detailed_balance.features import word_features

    rng = np.random.default_rng(seed)
    words = rng.permutation(words_summing_to_100())[:n_states]
    table = word_features(words)
    v = table["length"].to_numpy() - 3.0 * table["vowel_share"].to_numpy()
    v = v + 0.3 * rng.standard_normal(len(words))
    llm = SimulatedLLM.word100(potential=dict(zip(words, v, strict=True)), seed=seed)
    return _from_llm(llm, calls, seed), "builtin:words"


def _expressions(calls: int, seed: int):
    """symreg LLM (30 expressions, V = log10 MSE on the builtin data)."""
    from detailed_balance.agents.simulated import SimulatedLLM

    return _from_llm(SimulatedLLM.symreg(potential="score", seed=seed), calls, seed), (
        "builtin:expressions"
    )


def _efficiency(data, features, draws: int, tune: int, seed: int) -> dict:
    start = time.perf_counter()
    result = fit(
        FeaturePotentialModel(features), data, method="nuts", draws=draws, tune=tune,
        chains=2, seed=seed, progressbar=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    tree = result.posterior
    post = tree["posterior"].to_dataset()
    ess = az.ess(post[["theta", "V"]], method="bulk")
    rhat = az.rhat(post[["theta", "V", "sigma_eps"]])
    stats = tree["sample_stats"].to_dataset()
    gradients = float(stats["n_steps"].sum()) if "n_steps" in stats else float("nan")
    return {
        "states": post.sizes["state"],
        "seconds": seconds,
        "theta_min": float(ess["theta"].min()) / seconds,
        "theta_med": float(ess["theta"].median()) / seconds,
        "v_min": float(ess["V"].min()) / seconds,
        "v_med": float(ess["V"].median()) / seconds,
        "rhat": max(float(rhat[k].max()) for k in rhat.data_vars),
        "divergences": int(stats["diverging"].sum()),
        "steps": float(stats["n_steps"].mean()) if "n_steps" in stats else float("nan"),
        "build": result.timings["build"],
        "inference": result.timings["inference"],
        # Load-independent: min bulk ESS of V per 1,000 gradients of the kept draws.
        "v_per_grad": 1000 * float(ess["V"].min()) / gradients,
    }


GENERATORS = {
    "dense": ("simulate dense 300/30k", lambda s: _two_feature(300, 30_000, s)),
    "sparse": ("simulate sparse 2000/15k", lambda s: _two_feature(2000, 15_000, s)),
    "words": ("word100 LLM 300/6k", lambda s: _words(300, 6000, s)),
    "symreg": ("symreg LLM 30/3k", lambda s: _expressions(3000, s)),
}


def whitening_benchmark(
    draws: int, tune: int, seeds: list[int], names: list[str], header: bool = True
) -> None:
    if header:
        print(
            f"NUTS of the feature model, 2 chains × {draws} after {tune}; bulk ESS per second "
            "of theta and V (min / median over features, states), wall = prepare+compile+sample"
        )
        print(
            "| generator | seed | states | wall s (build, compile+sample) | θ ESS/s min | "
            "θ ESS/s med | V ESS/s min | V ESS/s med | max R-hat | div | leapfrog/draw | "
            "min V ESS / 1000 grad |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in names:
        name, make = GENERATORS[key]
        for seed in seeds:
            data, features = make(seed)
            r = _efficiency(data, features, draws, tune, seed)
            print(
                f"| {name} | {seed} | {r['states']} | {r['seconds']:.1f} ({r['build']:.1f}, "
                f"{r['inference']:.1f}) | {r['theta_min']:.1f} | {r['theta_med']:.1f} "
                f"| {r['v_min']:.1f} | {r['v_med']:.1f} | {r['rhat']:.3f} | {r['divergences']} "
                f"| {r['steps']:.1f} | {r['v_per_grad']:.0f} |",
                flush=True,
            )


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
    parser.add_argument("--whitening", action="store_true", help="NUTS efficiency only")
    parser.add_argument("--seeds", type=int, default=1, help="data seeds per generator")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument(
        "--generators", default=",".join(GENERATORS), help="comma-separated: dense,sparse,..."
    )
    parser.add_argument("--no-header", action="store_true")
    args = parser.parse_args()
    if args.whitening:
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        names = args.generators.split(",")
        whitening_benchmark(args.draws, args.tune, seeds, names, not args.no_header)
        return
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
