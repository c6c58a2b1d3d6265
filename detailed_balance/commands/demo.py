"""`detailed-balance demo`: the main job end to end on the embedded default, offline.

1. collect word100 calls from the embedded simulated LLM (known landscape) into a run store;
2. the paper's least-action potential and checks, compared with the simulator's truth;
3. the Bayesian equilibrium and non-equilibrium fits and the detailed-balance verdict;
4. the posterior report of the equilibrium fit (HTML + Markdown + report.json);
5. two simulated LLMs compared in the hierarchical model → the comparison report.
Every step writes its files under `--out`; the last line is the report's path.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .check import format_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-output", help="folder for the demo's files")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--calls", type=int, default=4000, help="simulated LLM calls to collect")
    parser.add_argument("--states", type=int, default=40, help="simulated word vocabulary size")
    parser.add_argument(
        "--skip-compare", action="store_true", help="stop after the single-LLM report"
    )


class _Steps:
    """Numbered step headers with their wall time."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.number = 0

    def __call__(self, title: str) -> None:
        self.number += 1
        print(f"\n== {self.number}. {title}", flush=True)
        self.start = time.perf_counter()

    def done(self, note: str = "") -> None:
        print(f"   {note}({time.perf_counter() - self.start:.1f} s)", flush=True)


def run(args: argparse.Namespace) -> int:
    from scipy.stats import spearmanr

    from detailed_balance.agents import RunStore, collect_simulated_demo
    from detailed_balance.diagnostics import checks_json, paper_checks
    from detailed_balance.models import EquilibriumModel, least_action
    from detailed_balance.reports import format_bayes, write_report
    from detailed_balance.sampling import fit
    from detailed_balance.workflow import bayes_check, run_compare_demo

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    step = _Steps()

    step(f"collect {args.calls} word100 calls from the simulated LLM (known landscape)")
    result, sim = collect_simulated_demo(
        out / "runs.db", calls=args.calls, seed=args.seed, states=args.states, progress=sys.stderr
    )
    with RunStore(out / "runs.db") as store:
        data = store.transitions(run_id="demo")
    data.to_csv(out / "transitions.csv", out / "visits.csv")
    truth = sim.truth_table().set_index("state")["potential"]
    truth.to_csv(out / "truth.csv")
    print(f"   {data} → {out / 'transitions.csv'}")
    step.done()

    step("least-action potential and the paper's checks")
    point = least_action(data)
    point.table().to_csv(out / "potentials.csv", index=False)
    known = [
        s
        for s in data.states[point.bounded.reindex(data.states).to_numpy(bool)]
        if s in truth.index and data.visits_array()[data.index_of([s])[0]] >= 20
    ]
    rho = spearmanr(point.potentials[known], truth[known]).statistic
    print(
        f"   {int(point.bounded.sum())} of {data.n_states} states bounded; "
        f"Spearman vs the simulator's V = {rho:.3f} (states visited ≥ 20×)"
    )
    summary = checks_json(paper_checks(data, point))
    (out / "checks.json").write_text(json.dumps(summary, indent=2))
    print(format_summary(summary))
    step.done()

    step("Bayesian potentials (NUTS) and the detailed-balance verdict")
    posterior = fit(
        EquilibriumModel(),
        data,
        method="nuts",
        draws=1000,
        tune=1000,
        chains=4,
        seed=args.seed,
        progressbar=False,
    )
    posterior.save(out / "fit.nc")
    posterior.summary().to_csv(out / "posterior_potentials.csv", index=False)
    verdict = bayes_check(
        data,
        posterior,
        method="nuts",
        draws=1000,
        tune=1000,
        chains=4,
        seed=args.seed,
        return_verdict=True,
    )
    (out / "bayes.json").write_text(json.dumps(verdict.evidence, indent=2, default=str))
    print(format_bayes(verdict.evidence))
    step.done()

    step("posterior report")
    written = write_report(
        posterior,
        out / "report.html",
        data,
        evidence=verdict,
        seed=args.seed,
        source="simulated word100",
    )
    print(f"   report → {written['html']}")
    step.done()

    report = written["html"]
    if not args.skip_compare:
        step("two simulated LLMs in one hierarchical model (β = 1 and 2)")
        report = run_compare_demo(out / "compare", seed=args.seed, log=lambda m: print(f"   {m}"))
        step.done()
    print(f"\nDone. Files are in {out}/. Report: {report}")
    return 0
