"""Benchmark of `workflow.calibrate` on dask: 1 vs 2 local workers (issue 15).

    .venv/bin/python benchmarks/calibrate.py [--states 300] [--calls-per-state 100]
        [--replicates 40] [--workers 1,2]

For each worker count: the wall time of `replicates` reversible MAP replicates (refit of both
models + verdict each) on an already started cluster (cold: the first task of each worker also
imports the package and loads numba's cache; reported separately as the cluster's start-up),
the sum of the replicates' own compute seconds, the speed-up against the first worker count,
and the scheduler's overhead per task (1,000 no-op tasks through the same `run_tasks`).
"""

from __future__ import annotations

import argparse
import operator
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=300)
    parser.add_argument("--calls-per-state", type=float, default=100)
    parser.add_argument("--replicates", type=int, default=40)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from distributed import Client

    from detailed_balance.models import EquilibriumModel
    from detailed_balance.sampling import fit
    from detailed_balance.simulation import simulate
    from detailed_balance.workflow import calibrate
    from detailed_balance.workflow._tasks import local_cluster, run_tasks

    sim = simulate(args.states, int(args.states * args.calls_per_state), seed=args.seed)
    fitted = fit(
        EquilibriumModel(), sim.transitions, method="map", chains=1, seed=1, progressbar=False
    )
    print(
        f"design: {args.states} states, {int(args.states * args.calls_per_state)} calls, "
        f"{fitted.pairs.n_pairs} pairs, {fitted.posterior.attrs['likelihood']} likelihood; "
        f"{args.replicates} reversible MAP replicates"
    )
    base = None
    for workers in [int(w) for w in args.workers.split(",")]:
        start = time.perf_counter()
        with local_cluster(workers) as cluster, Client(cluster, set_as_default=False) as client:
            # warm every worker (imports, numba cache) with one small replicate each
            calibrate(
                posterior=fitted,
                replicates=workers,
                drive=[],
                client=client,
                seed=10_000,
                progress=None,
            )
            startup = time.perf_counter() - start
            start = time.perf_counter()
            result = calibrate(
                posterior=fitted,
                replicates=args.replicates,
                drive=[],
                client=client,
                seed=args.seed,
                progress=None,
            )
            wall = time.perf_counter() - start
            noop = [{"id": k} for k in range(1000)]
            start = time.perf_counter()
            run_tasks(
                operator.is_,
                None,
                noop,
                on_result=lambda s, v: None,
                on_failure=lambda s, e: None,
                client=client,
                progress=None,
            )
            overhead = (time.perf_counter() - start) / len(noop)
        compute = float(np.nansum(result.replicates["seconds"]))
        base = base or wall
        print(
            f"workers={workers}: wall {wall:.1f} s ({wall / args.replicates:.2f} s/replicate), "
            f"compute {compute:.1f} s, speed-up {base / wall:.2f}x, start-up + warm-up "
            f"{startup:.1f} s, scheduler overhead {1000 * overhead:.1f} ms/task; "
            f"false alarm {result.summary['false_alarm']['rate']:.3f}, "
            f"V coverage {result.summary['coverage']['V']:.3f}"
        )


if __name__ == "__main__":
    main()
