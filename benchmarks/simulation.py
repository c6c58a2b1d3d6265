"""Simulator: the vectorised count sampler vs the sampler written plainly (issue 2, §5).

Both sides sample the same thing: for a fixed kernel T (CSR, diagonal = rejection) and fixed
visits N_f, the outcomes of N_f calls from every state f.

Baselines, measured in the same run on the same kernel and visits:
* per call: ``rng.choice(row targets, p=row probabilities)`` once per call (the plainest
  transcription of "call the LLM, see where it goes"). At 1,000,000 calls it is timed on the
  first 50,000 calls and scaled linearly (the loop body does not depend on the call index).
* per state: ``rng.multinomial(N_f, row probabilities)`` once per state (a Python loop over
  states).
Ours: `_sample_uniform` (one uniform per call, one searchsorted over row-offset cumulative
probabilities, one bincount). Also timed: all of `simulate()` (graph, kernel, sampling,
`Transitions` and truth tables) at 100,000 states / 1,000,000 calls, the chain allocation,
and the stationary distribution of a driven 100,000-state kernel.

Run: `python benchmarks/simulation.py` (about a minute) or `--quick`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table, timed, timed_wall  # noqa: E402

from detailed_balance import simulate  # noqa: E402
from detailed_balance.simulation.kernels import _sample_uniform  # noqa: E402


def per_call(kernel, visits: np.ndarray, rng: np.random.Generator, limit: int | None = None):
    """One rng.choice per call; stops after `limit` calls (for extrapolation)."""
    counts = np.zeros(kernel.nnz, dtype=np.int64)
    done = 0
    for f in range(kernel.shape[0]):
        lo, hi = kernel.indptr[f], kernel.indptr[f + 1]
        p = kernel.data[lo:hi]
        for _ in range(int(visits[f])):
            counts[lo + rng.choice(hi - lo, p=p)] += 1
            done += 1
            if limit is not None and done >= limit:
                return counts, done
    return counts, done


def per_state(kernel, visits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One rng.multinomial per state."""
    counts = np.zeros(kernel.nnz, dtype=np.int64)
    for f in range(kernel.shape[0]):
        lo, hi = kernel.indptr[f], kernel.indptr[f + 1]
        p = kernel.data[lo:hi]
        counts[lo:hi] = rng.multinomial(int(visits[f]), p / p.sum())
    return counts


def compare(n_states: int, calls: int, call_limit: int | None) -> dict:
    sim = simulate(n_states, calls, mean_degree=4.5, seed=1)
    kernel, visits = sim.kernel, sim.visits
    ours, counts = timed(lambda: _sample_uniform(kernel, visits, np.random.default_rng(2)), 3)
    assert counts.sum() == calls
    state_time, _ = timed(lambda: per_state(kernel, visits, np.random.default_rng(3)))
    limit = call_limit if call_limit and call_limit < calls else None
    call_time, (_, done) = timed(lambda: per_call(kernel, visits, np.random.default_rng(4), limit))
    call_total = call_time * calls / done
    note = "" if done == calls else f" (from {done:,} calls)"
    return {
        "states / calls": f"{n_states:,} / {calls:,}",
        "ours (s)": f"{ours:.3f}",
        "per state (s)": f"{state_time:.2f}",
        "per call (s)": f"{call_total:.1f}{note}",
        "vs per state": f"{state_time / ours:.0f}×",
        "vs per call": f"{call_total / ours:.0f}×",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(f"# simulator benchmark ({machine()})\n")
    sizes = [(7_500, 88_000), (100_000 // scale, 1_000_000 // scale)]
    rows = [compare(n, m, call_limit=50_000 // scale) for n, m in sizes]
    print("Count sampler (CPU time; uniform allocation; 'ours' is the median of 3)\n")
    print(table(rows))

    n, m = 100_000 // scale, 1_000_000 // scale
    end_to_end = []
    for label, kwargs in [
        ("simulate(), uniform", {}),
        ("simulate(), chain", {"allocation": "chain"}),
        ("simulate(), drive=0.5", {"drive": 0.5}),
    ]:
        wall, sim = timed_wall(lambda kwargs=kwargs: simulate(n, m, seed=5, **kwargs))
        end_to_end.append(
            {"what": f"{label}, {n:,} states / {m:,} calls", "wall (s)": f"{wall:.2f}"}
        )
    wall, pi = timed_wall(lambda: sim.stationary.to_numpy())
    residual = np.abs(pi @ sim.kernel - pi).max() / pi.max()
    end_to_end.append(
        {
            "what": f"stationary π of the driven {n:,}-state kernel (residual {residual:.0e})",
            "wall (s)": f"{wall:.2f}",
        }
    )
    print("\nWhole calls (wall time)\n")
    print(table(end_to_end))


if __name__ == "__main__":
    main()
