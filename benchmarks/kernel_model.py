"""The kernel likelihood against the pair likelihood, fitted through the public interface on
designs with a known V: coverage, accuracy, sampling quality and wall time.

Designs (``--design``, several allowed):

- ``paper``: our simulator at the paper's density, 7,500 states and ≈ 8 calls per state,
  uniform allocation (``paper-chain``: one Markov chain of the same length);
- ``sparse``: 2,000 states, 7 calls per state; ``dense``: 300 states, 100 calls per state;
- ``peer30``, ``peer300``, ``peer3000``: counts from the reversible peer matrix (deeptime's
  P_rev, 251 states, truth −log π) at 30 / 300 / 3,000 calls per state;
- ``pareto``: the independent generator (`generators.pareto_lognormal`: 7,484 states, 16,000
  pairs, 100,000 calls, Pareto visits, lognormal conductances).

Per fit: the 90% coverage of V on the bounded states, the RMSE of the posterior mean (both
against the truth centred in the fit's own gauge, per component), seconds, and for NUTS the
largest R-hat and smallest bulk ESS of V over the bounded states, divergences and leapfrog
steps per draw.

    python benchmarks/kernel_model.py --design sparse dense --method map nuts \
        --likelihood kernel pairs [--seeds 1] [--draws 1000 --tune 1000 --chains 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def design(name: str, seed: int) -> tuple[object, pd.Series]:
    """(Transitions, true V by state name) of a named design."""
    from detailed_balance.simulation import simulate, simulate_from_matrix

    if name in ("paper", "paper-chain"):
        allocation = "chain" if name == "paper-chain" else "uniform"
        sim = simulate(7500, 60_000, seed=seed, allocation=allocation)
        return sim.transitions, sim.potential
    if name == "sparse":
        sim = simulate(2000, 14_000, seed=seed)
        return sim.transitions, sim.potential
    if name == "dense":
        sim = simulate(300, 30_000, seed=seed)
        return sim.transitions, sim.potential
    if name.startswith("peer"):
        from kernel import _peer

        peer = _peer()
        calls = int(name.removeprefix("peer"))
        sim = simulate_from_matrix(peer, calls * len(peer), seed=seed)
        return sim.transitions, sim.potential
    if name == "pareto":
        from generators import pareto_lognormal

        gen = pareto_lognormal(seed=seed)
        return gen.data, gen.true_V
    raise SystemExit(f"unknown design {name!r}")


def evaluate(result, truth: pd.Series) -> dict[str, float]:
    """Coverage and RMSE on the bounded states, the truth in the fit's gauge (per component)."""
    pairs = result.pairs
    table = result.summary(0.9).set_index("state")
    true_v = result.in_gauge(truth).to_numpy()
    rows = table.reindex(pairs.states)
    bounded = pairs.bounded
    lo, hi = rows["lower"].to_numpy(), rows["upper"].to_numpy()
    inside = (lo <= true_v) & (true_v <= hi)
    err = rows["mean"].to_numpy() - true_v
    out = {
        "bounded": int(bounded.sum()),
        "coverage": float(inside[bounded].mean()),
        "rmse": float(np.sqrt(np.mean(err[bounded] ** 2))),
    }
    tree = result.posterior
    if "sample_stats" in tree.children:
        import arviz as az

        v = tree["posterior"]["V"].isel(state=np.flatnonzero(bounded))
        out["rhat_max"] = float(np.nanmax(az.rhat(v.to_dataset())["V"].values))
        out["ess_min"] = float(np.nanmin(az.ess(v.to_dataset())["V"].values))
        stats = tree["sample_stats"]
        out["divergent"] = int(stats["diverging"].sum())
        out["steps"] = float(stats["n_steps"].mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--design", nargs="+", default=["sparse", "dense"])
    parser.add_argument("--method", nargs="+", default=["map", "nuts"])
    parser.add_argument("--likelihood", nargs="+", default=["kernel", "pairs"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--kernel-scale", type=float, default=10.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from detailed_balance.models import EquilibriumModel
    from detailed_balance.sampling import fit

    header = (
        f"{'design':>11s} {'seed':>4s} {'likelihood':>10s} {'method':>6s} {'bounded':>7s} "
        f"{'coverage':>8s} {'rmse':>6s} {'seconds':>7s} {'rhat_max':>8s} {'ess_min':>7s} "
        f"{'div':>4s} {'steps':>5s}"
    )
    print(header, flush=True)
    for name in args.design:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            data, truth = design(name, seed)
            for likelihood in args.likelihood:
                config = {"likelihood": likelihood, "kernel_scale": args.kernel_scale}
                for method in args.method:
                    start = time.perf_counter()
                    result = fit(
                        EquilibriumModel(config),
                        data,
                        method=method,
                        draws=args.draws,
                        tune=args.tune,
                        chains=args.chains,
                        seed=seed + 1,
                        progressbar=False,
                    )
                    seconds = time.perf_counter() - start
                    m = evaluate(result, truth)
                    print(
                        f"{name:>11s} {seed:>4d} {likelihood:>10s} {method:>6s} "
                        f"{m['bounded']:>7d} {m['coverage']:>8.3f} {m['rmse']:>6.3f} "
                        f"{seconds:>7.1f} {m.get('rhat_max', float('nan')):>8.3f} "
                        f"{m.get('ess_min', float('nan')):>7.0f} {m.get('divergent', 0):>4d} "
                        f"{m.get('steps', float('nan')):>5.1f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
