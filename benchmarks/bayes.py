"""Benchmark of the Bayesian pair models against the straightforward PyMC formulation.

Same run, same data, same machine: the straightforward model (V ~ Normal(0, 10) per state,
``pm.Binomial`` on indexed V, nutpie) against ours (`EquilibriumModel`: fused vectorised
likelihood in coordinates whitened by an incomplete factor of the Laplace precision,
V = V* + B z; nutpie called directly). Both are judged on what is identified: R-hat and ESS of V
centred over the bounded states. Also: MAP + Laplace and ADVI at the same scale, the
non-equilibrium model by NUTS, the peer matrix (251 states, exactly reversible), and MAP/ADVI
at 10× scale. Times are wall clock including compilation; memory is each fit's peak RSS,
measured in a forked process of its own.

    python benchmarks/bayes.py            # paper scale (≈7,500 states, ≈50,000 transitions)
    python benchmarks/bayes.py --quick    # a small smoke run
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import pymc as pm  # noqa: E402

from detailed_balance.models import EquilibriumModel, NonEquilibriumModel  # noqa: E402
from detailed_balance.models._pairs import pair_data  # noqa: E402
from detailed_balance.sampling import fit  # noqa: E402
from detailed_balance.simulation import load_peer_matrix, simulate, simulate_from_matrix  # noqa: E402

PEER = Path(__file__).resolve().parents[1].parent / "shared" / "peer-data"


def straightforward(data, draws: int, tune: int, chains: int, seed: int) -> tuple[float, float]:
    """The baseline: pm.Binomial on indexed V with nutpie; returns (seconds, max R-hat)."""
    pairs = pair_data(data)
    start = time.perf_counter()
    with pm.Model(coords={"state": pairs.states.astype(str)}):
        v = pm.Normal("V", 0.0, 10.0, dims="state")
        logit = pairs.offset + v[pairs.i] - v[pairs.j]
        pm.Binomial("n_fg", n=pairs.trials, logit_p=logit, observed=pairs.n_fg)
        tree = pm.sample(
            draws, tune=tune, chains=chains, random_seed=seed, nuts_sampler="nutpie",
            progressbar=False, compute_convergence_checks=False,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    raw = tree["posterior"]["V"].to_numpy()
    centred = pairs.centre(raw)[..., pairs.bounded]
    return seconds, _rhat(centred)


def _rhat(values: np.ndarray) -> float:
    """Max rank-normalised R-hat over the last axis of (chain, draw, k)."""
    import xarray as xr

    da = xr.DataArray(values, dims=("chain", "draw", "k"))
    return float(az.rhat(da).max())


def isolated(func, *args):
    """func(*args) in a forked child: (its result, the child's peak RSS in GB). Each fit's
    own memory peak, not the running maximum of one long benchmark process."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def run():
        result = func(*args)
        child.send((result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2))

    proc = ctx.Process(target=run)
    proc.start()
    child.close()  # the child's end: recv fails (EOFError) instead of hanging if it dies
    try:
        result, peak = parent.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"{func.__name__} died in its process (exit {proc.exitcode})") from None
    proc.join()
    return result, peak


def ours(data, method: str, model, draws: int, tune: int, chains: int, seed: int):
    """(seconds, max R-hat, steps per draw) of one fit, timed in the calling process."""
    start = time.perf_counter()
    result = fit(model, data, method, draws, tune, chains, seed, progressbar=False)
    seconds = time.perf_counter() - start
    v = result.posterior["posterior"]["V"]
    bounded = result.posterior["constant_data"]["bounded"].to_numpy()
    rhat = _rhat(v.to_numpy()[..., bounded]) if method == "nuts" and chains > 1 else float("nan")
    stats = (
        result.posterior["sample_stats"] if "sample_stats" in result.posterior.children else None
    )
    steps = (
        float(stats["n_steps"].mean()) if stats is not None and "n_steps" in stats else float("nan")
    )
    return seconds, rhat, steps


def describe(data) -> str:
    pairs = pair_data(data)
    return (
        f"{data.n_states} states, {pairs.n_pairs} modelled pairs, "
        f"{int(data.counts['count'].sum())} counted calls, {int(pairs.bounded.sum())} bounded"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--skip-baseline", action="store_true", help="skip the slow baseline")
    parser.add_argument("--skip-10x", action="store_true", help="skip the 10x MAP/ADVI runs")
    parser.add_argument(
        "--skip-nonequilibrium", action="store_true", help="skip the non-equilibrium NUTS run"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of paper scale")
    args = parser.parse_args()
    scale = (500, 3_500) if args.quick else (round(7_500 * args.scale), round(50_000 * args.scale))
    draws, tune, chains = (200, 200, 4) if args.quick else (1000, 1000, 4)
    data = simulate(scale[0], scale[1], seed=1, spread=1.5).transitions
    print(f"data: {describe(data)}")
    rows = []

    def run(name, fit_data, method, model, n_chains):
        (seconds, rhat, steps), peak = isolated(
            ours, fit_data, method, model, draws, tune, n_chains, 1
        )
        rows.append((name, seconds, rhat, steps, peak))

    if not args.skip_baseline:
        (base_s, base_rhat), peak = isolated(straightforward, data, draws, tune, chains, 1)
        rows.append(("straightforward pm.Binomial, nutpie", base_s, base_rhat, float("nan"), peak))
    run("EquilibriumModel NUTS (ILU-whitened, nutpie)", data, "nuts", EquilibriumModel(), chains)
    eq_s = rows[-1][1]
    for method in ("map", "advi"):
        run(f"EquilibriumModel {method.upper()}", data, method, EquilibriumModel(), 1)
    if not args.skip_nonequilibrium:
        run("NonEquilibriumModel NUTS", data, "nuts", NonEquilibriumModel(), chains)
    peer_file = PEER / "deeptime_P_rev_251x251.dat"
    if peer_file.is_file():
        peer = simulate_from_matrix(load_peer_matrix(peer_file), 251 * 300, seed=2).transitions
        print(f"peer: {describe(peer)}")
        run("peer matrix EquilibriumModel NUTS", peer, "nuts", EquilibriumModel(), chains)
    if not args.skip_10x:
        big = simulate(10 * scale[0], 10 * scale[1], seed=3, spread=1.5).transitions
        print(f"10x: {describe(big)}")
        for method in ("map", "advi"):
            run(f"10x EquilibriumModel {method.upper()}", big, method, EquilibriumModel(), 1)
    width = max(len(r[0]) for r in rows)
    print(
        f"\n{'run':<{width}}  {'seconds':>8}  {'max R-hat':>9}  {'steps/draw':>10}  {'peak GB':>7}"
    )
    for name, seconds, rhat, steps, peak in rows:
        print(f"{name:<{width}}  {seconds:8.1f}  {rhat:9.3f}  {steps:10.1f}  {peak:7.2f}")
    if not args.skip_baseline:
        print(f"\nspeed-up of our NUTS over the straightforward version: {base_s / eq_s:.2f}x")
    print(f"peak memory is each fit's own (a forked process per fit); cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
