"""The demo as jobs: `run_demo` (what `detailed-balance demo` runs) and `run_compare_demo`.

`run_demo`, offline on the embedded default:

1. collect word100 calls from the embedded simulated LLM (known landscape) into a run store;
2. the paper's least-action potential and checks, compared with the simulator's truth;
3. the Bayesian equilibrium and non-equilibrium fits and the detailed-balance verdict;
4. the posterior report of the equilibrium fit (HTML + Markdown + report.json);
5. two simulated LLMs compared in the hierarchical model → the comparison report
   (`run_compare_demo`: two simulated LLMs → `compare_llms` → the HTML report);
6. a design-matched calibration of the demo's own data (`calibrate`: 10 reversible and 10
   driven replicates refitted by MAP on a 2-worker local dask cluster): the false-alarm
   rate, the power and the coverage of the intervals → ``calibration/``.

Every step writes its files under the output folder; the last line is the report's path.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from detailed_balance.reports.compare import comparison_document
from detailed_balance.simulation import simulate_panel

from .compare import compare_llms
from .verdict import bayes_check

DEMO_BETAS = {"llm-warm": 1.0, "llm-cold": 2.0}


def run_compare_demo(
    out_dir: str | Path,
    seed: int = 0,
    *,
    n_states: int = 80,
    visits: int = 200,
    draws: int = 400,
    log: Callable[[str], None] = print,
) -> Path:
    """Simulate two LLMs on one landscape (β = 1 and 2), compare them, write the report.

    Returns the path of `compare.html` in `out_dir` (with `compare.md` and `compare.json`).
    Takes well under two minutes on a 2-core machine with the defaults.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    panel = simulate_panel(DEMO_BETAS, n_states=n_states, visits=visits, seed=seed)
    panel.data.to_csv(out / "compare_transitions.csv", out / "compare_visits.csv")
    comparison = compare_llms(
        panel.data,
        method="nuts",
        draws=draws,
        tune=draws,
        chains=2,
        seed=seed + 1,
        model_config={"reference": "llm-warm"},
        verdict_method="auto",
        log=log,
    )
    doc, summary = comparison_document(comparison)
    written = doc.write(out / "compare.html", summary, out / "compare.json")
    beta = summary["llms"]["llm-cold"]["beta"]
    log(
        f"llm-cold runs at β = {beta['mean']:.2f} [{beta['lower']:.2f}, {beta['upper']:.2f}] "
        f"relative to llm-warm (truth 2.0)"
    )
    return written["html"]


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


def run_demo(
    out_dir: str | Path,
    *,
    seed: int = 7,
    calls: int = 4000,
    states: int = 40,
    skip_compare: bool = False,
    calibration_replicates: int = 10,
    workers: int = 2,
) -> Path:
    """The `detailed-balance demo` job (steps in the module docstring), printing each step's
    numbers and wall time; returns the path of the last report written."""
    from scipy.stats import spearmanr

    from detailed_balance.agents import RunStore, collect_simulated_demo
    from detailed_balance.diagnostics import checks_json, paper_checks
    from detailed_balance.models import EquilibriumModel, least_action
    from detailed_balance.reports.evidence import format_bayes, format_summary
    from detailed_balance.reports.report import write_report
    from detailed_balance.sampling import fit

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    step = _Steps()

    step(f"collect {calls} word100 calls from the simulated LLM (known landscape)")
    result, sim = collect_simulated_demo(
        out / "runs.db", calls=calls, seed=seed, states=states, progress=sys.stderr
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
        seed=seed,
        progressbar=False,
    )
    posterior.save(out / "fit.nc")
    attrs = posterior.posterior.attrs
    print(f"   equilibrium fit: {attrs['likelihood']} likelihood ({attrs['likelihood_reason']})")
    posterior.summary().to_csv(out / "posterior_potentials.csv", index=False)
    verdict = bayes_check(
        data,
        posterior,
        method="nuts",
        draws=1000,
        tune=1000,
        chains=4,
        seed=seed,
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
        seed=seed,
        source="simulated word100",
    )
    print(f"   report → {written['html']}")
    step.done()

    report = written["html"]
    if not skip_compare:
        step("two simulated LLMs in one hierarchical model (β = 1 and 2)")
        report = run_compare_demo(out / "compare", seed=seed, log=lambda m: print(f"   {m}"))
        step.done()
    if calibration_replicates > 0:
        from detailed_balance.reports.calibration import calibration_text

        from .calibration import calibrate

        step(
            f"calibration on this design: {calibration_replicates} reversible + "
            f"{calibration_replicates} driven replicates, MAP refits on {workers} dask workers"
        )
        calibrated = calibrate(
            data,
            posterior,
            out=out / "calibration",
            replicates=calibration_replicates,
            method="map",
            drive=[1.0],
            workers=workers,
            seed=seed,
            resume=False,
            progress=sys.stderr,
        )
        for line in calibration_text(calibrated.summary).splitlines():
            print(f"   {line.strip()}")
        print(f"   calibration → {calibrated.files['report']}")
        step.done()
    print(f"\nDone. Files are in {out}/. Report: {report}")
    return report
