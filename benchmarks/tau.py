"""τ_A of the non-equilibrium model: the `map` method (Laplace-marginal mode + 5-node grid in
log τ_A, `models/_scales.py`) against NUTS on the same data, in the same run.

Two data generators: `simulate` (random sparse graphs with a Metropolis kernel, reversible or
with an antisymmetric drive) and the simulated word-sum LLM's exact answer kernel
(`SimulatedLLM.word100`, reversible or driven; counts drawn by `simulate_from_matrix`). For
each: τ_A's mean and 90% interval by both methods, the wall time of each (prepare + fit, NUTS
2 chains × 500 draws after 500 tuning), and the ratio of the means.

    python benchmarks/tau.py            # the table in docs/models.md
    python benchmarks/tau.py --quick    # two small cases
    python benchmarks/tau.py --coverage # map loop-affinity coverage (docs/calibration.md)

``--coverage``: 90% loop-affinity intervals of the `map` method against the true affinities
on 5 driven replicates (seeds 2000–2004, drive 1.0) of a sparse (300 states, mean degree 6)
and a dense (60 states, mean degree 12) design.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np  # noqa: E402


def _designs(quick: bool):
    from detailed_balance import simulate
    from detailed_balance.agents.simulated import SimulatedLLM
    from detailed_balance.simulation import simulate_from_matrix

    def word(drive: float, calls: int, seed: int):
        """Counts from the word LLM's exact answer kernel (garbage counts as no move)."""
        kernel = SimulatedLLM.word100(states=100, drive=drive, seed=seed).kernel()
        order = np.argsort(np.asarray(kernel.index, dtype=str))
        matrix = kernel.iloc[order, order].to_numpy().copy()
        matrix[np.diag_indices_from(matrix)] += kernel["INVALID"].to_numpy()[order]
        names = list(np.asarray(kernel.index, dtype=str)[order])
        return simulate_from_matrix(matrix, calls, state_names=names, seed=seed)

    cases = [
        ("simulate 300 × 30,000, drive 1.0", lambda: simulate(300, 30_000, seed=2, drive=1.0)),
        ("simulate 300 × 30,000, drive 0.5", lambda: simulate(300, 30_000, seed=2, drive=0.5)),
        ("simulate 300 × 30,000, reversible", lambda: simulate(300, 30_000, seed=2)),
        ("simulate 100 × 3,000, drive 1.0", lambda: simulate(100, 3_000, seed=1, drive=1.0)),
        ("simulate 100 × 3,000, reversible", lambda: simulate(100, 3_000, seed=1)),
        ("word100 LLM, 10,000 calls, drive 0.5", lambda: word(0.5, 10_000, 3)),
        ("word100 LLM, 10,000 calls, reversible", lambda: word(0.0, 10_000, 3)),
    ]
    if quick:
        cases = [cases[3], cases[6]]
    for name, make in cases:
        data = make()
        yield name, getattr(data, "transitions", data)


def coverage() -> None:
    import pandas as pd

    from detailed_balance import simulate
    from detailed_balance.models import NonEquilibriumModel
    from detailed_balance.sampling import fit

    designs = {
        "300 states × 30,000 calls, degree 6": {"n_states": 300, "transitions": 30_000},
        "60 states × 18,000 calls, degree 12": {
            "n_states": 60,
            "transitions": 18_000,
            "mean_degree": 12.0,
        },
    }
    for name, design in designs.items():
        inside = total = 0
        taus = []
        for rep in range(5):
            sim = simulate(**design, drive=1.0, seed=2000 + rep)
            result = fit(
                NonEquilibriumModel(),
                sim.transitions,
                method="map",
                draws=1000,
                chains=1,
                seed=rep,
                progressbar=False,
            )
            post, cd = result.posterior["posterior"], result.posterior["constant_data"]
            cycles = pd.DataFrame({k: cd[f"cycle_{k}"].to_numpy() for k in "abc"})
            truth = sim.loop_affinity(cycles)
            loops = post["loop_affinity"].to_numpy().reshape(-1, len(cycles))
            lo, hi = np.quantile(loops, [0.05, 0.95], axis=0)
            inside += int(np.sum((lo <= truth) & (truth <= hi)))
            total += len(cycles)
            taus.append(float(post["tau_A"].mean()))
        print(
            f"{name}: map loop coverage {inside / total:.3f} over {total} loops; "
            f"τ_A means {np.round(taus, 2)} (truth 1.0)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--coverage", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.coverage:
        return coverage()
    from detailed_balance.models import NonEquilibriumModel
    from detailed_balance.sampling import fit

    print(f"{'data':40s} {'map τ_A [90%]':>22s} {'s':>5s} {'nuts τ_A [90%]':>22s} {'s':>5s} ratio")
    for name, data in _designs(args.quick):
        out = {}
        for method, opts in (("map", {"draws": 1000, "chains": 1}), ("nuts", {"draws": 500})):
            start = time.perf_counter()
            result = fit(
                NonEquilibriumModel(), data, method=method, seed=1, progressbar=False, **opts
            )
            tau = result.posterior["posterior"]["tau_A"].to_numpy().ravel()
            lo, hi = np.quantile(tau, [0.05, 0.95])
            out[method] = (
                f"{tau.mean():.3f} [{lo:.3f}, {hi:.3f}]",
                time.perf_counter() - start,
                tau.mean(),
            )
        (m, tm, mm), (n, tn, nm) = out["map"], out["nuts"]
        print(f"{name:40s} {m:>22s} {tm:5.1f} {n:>22s} {tn:5.1f} {mm / nm:5.2f}", flush=True)


if __name__ == "__main__":
    main()
