"""The exact kernel likelihood's maximum against deeptime's reversible MLE and our pair model.

Counts sampled from the reversible peer matrix (deeptime's P_rev, 251 states, truth −log π)
at 30, 300 and 3,000 calls per state. For each: the RMSE of V (centred on the states deeptime
keeps, its largest connected set) for deeptime's `MaximumLikelihoodMSM(reversible=True)`
(the baseline, fitted in the same run), our kernel likelihood's flat-prior maximum
(`models._kernel.KernelDensity`, which should equal it) and the pair model's `map` posterior
mean (the conditional binomial, which ignores self steps), with wall times and RMSE ratios
against deeptime. Needs deeptime (a test extra).

    python benchmarks/kernel.py [--seeds 3]
    python benchmarks/kernel.py --laplace [--seeds 3]

``--laplace``: the kernel posterior's Laplace approximation (Normal(0, 10) priors on the
log-conductances and remainder weights; 1,000 perturb-then-solve draws) on the same data: the
90% coverage of V on the bounded states and the RMSE of its posterior mean against deeptime's
MLE, with wall seconds.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np  # noqa: E402


def _peer() -> np.ndarray:
    import gzip
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tests" / "data" / "deeptime_P_rev_251x251.dat.gz"
    with gzip.open(path, "rt") as handle:
        return np.loadtxt(handle)


def _peer_data(peer: np.ndarray, calls: int, seed: int):
    """Counts of `calls` calls per state from the peer matrix: the simulation, its pairs, each
    modelled state's row in the peer matrix, and the full count matrix (self steps on the
    diagonal) that deeptime takes."""
    from detailed_balance.models._pairs import pair_data
    from detailed_balance.simulation import simulate_from_matrix

    sim = simulate_from_matrix(peer, calls * len(peer), seed=seed)
    pairs = pair_data(sim.transitions)
    index = np.array([int(str(s).removeprefix("s")) for s in pairs.states])
    k = pairs.n_states
    counts = np.zeros((k, k))
    counts[pairs.i, pairs.j] = pairs.n_fg
    counts[pairs.j, pairs.i] = pairs.n_gf
    counts[np.arange(k), np.arange(k)] = pairs.visits - counts.sum(axis=1)
    return sim, pairs, index, counts


def _rmse(v: np.ndarray, truth: np.ndarray) -> float:
    d = (v - v.mean()) - (truth - truth.mean())
    return float(np.sqrt(np.mean(d**2)))


def laplace(seeds: int) -> None:
    from deeptime.markov.msm import MaximumLikelihoodMSM

    from detailed_balance.models._kernel import KernelDensity
    from detailed_balance.simulation import stationary_distribution

    peer = _peer()
    truth_all = -np.log(stationary_distribution(peer))
    print(
        f"{'calls/state':>11s} {'seed':>4s} {'bounded':>7s} {'V coverage':>10s} "
        f"{'RMSE mean':>9s} {'deeptime':>8s} {'ratio':>6s} {'s':>6s}"
    )
    for calls in (30, 300, 3000):
        for seed in range(seeds):
            sim, pairs, index, counts = _peer_data(peer, calls, seed)
            k = pairs.n_states
            msm = MaximumLikelihoodMSM(reversible=True).fit_from_counts(counts).fetch_model()
            active = np.asarray(msm.count_model.state_symbols)
            start = time.perf_counter()
            density = KernelDensity(pairs, scale=10.0)
            theta = density.find_map()
            v = density.potential_draws(
                density.laplace_draws(theta, 1000, np.random.default_rng(seed))
            )
            seconds = time.perf_counter() - start
            truth = pairs.centre(truth_all[index])
            lo, hi = np.quantile(v, [0.05, 0.95], axis=0)
            b = pairs.bounded
            cover = np.mean((lo[b] <= truth[b]) & (truth[b] <= hi[b]))
            v_dt = np.full(k, np.nan)
            v_dt[active] = -np.log(msm.stationary_distribution)
            kept = truth_all[index][active]
            r_mean, r_dt = _rmse(v.mean(axis=0)[active], kept), _rmse(v_dt[active], kept)
            print(
                f"{calls:11d} {seed:4d} {int(b.sum()):7d} {cover:10.3f} {r_mean:9.4f} "
                f"{r_dt:8.4f} {r_mean / r_dt:6.3f} {seconds:6.1f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--laplace", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)  # deeptime logs each state set it skips
    if args.laplace:
        return laplace(args.seeds)
    from deeptime.markov.msm import MaximumLikelihoodMSM

    from detailed_balance.models import EquilibriumModel
    from detailed_balance.models._kernel import KernelDensity
    from detailed_balance.sampling import fit
    from detailed_balance.simulation import stationary_distribution

    peer = _peer()
    truth_all = -np.log(stationary_distribution(peer))
    print(
        f"{'calls/state':>11s} {'seed':>4s} {'kept':>4s} {'deeptime RMSE (s)':>18s} "
        f"{'kernel MLE RMSE (s)':>20s} {'ratio':>6s} {'pair map RMSE (s)':>18s} {'ratio':>6s}"
    )
    for calls in (30, 300, 3000):
        for seed in range(args.seeds):
            sim, pairs, index, counts = _peer_data(peer, calls, seed)
            start = time.perf_counter()
            msm = MaximumLikelihoodMSM(reversible=True).fit_from_counts(counts).fetch_model()
            t_dt = time.perf_counter() - start
            active = np.asarray(msm.count_model.state_symbols)
            v_dt = -np.log(msm.stationary_distribution)

            start = time.perf_counter()
            density = KernelDensity(pairs, scale=None)
            v_k = density.potential(density.find_map())[active]
            t_k = time.perf_counter() - start

            start = time.perf_counter()
            result = fit(EquilibriumModel(), sim.transitions, method="map", draws=1000, chains=1)
            v_p = result.posterior["posterior"]["V"].mean(("chain", "draw")).to_numpy()[active]
            t_p = time.perf_counter() - start

            truth = truth_all[index[active]]

            r_dt, r_k, r_p = (_rmse(v, truth) for v in (v_dt, v_k, v_p))
            print(
                f"{calls:11d} {seed:4d} {len(active):4d} {r_dt:11.4f} ({t_dt:4.2f}) "
                f"{r_k:13.4f} ({t_k:4.2f}) {r_k / r_dt:6.3f} {r_p:11.4f} ({t_p:4.2f}) "
                f"{r_p / r_dt:6.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
