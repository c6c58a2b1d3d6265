"""`detailed-balance compare`: several LLMs in one hierarchical model, as a table and a report.

    detailed-balance compare DATA... [--visits ...] -o compare.html [--json]
    detailed-balance compare --store runs.db -o compare.html [--json]

DATA is one file with an `llm` column or several files (each file's LLM is its `llm` column,
else the file name's stem). Writes `compare.html`, its Markdown twin and `compare.json`; with
--json the JSON object is printed to stdout as well.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import UserError, prepare_report_path, sibling_visits

if TYPE_CHECKING:
    import pandas as pd

    from detailed_balance.data import Transitions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", nargs="*", help="transition data file(s)")
    parser.add_argument("--store", metavar="RUNS.db", help="read the LLMs' runs from a run store")
    parser.add_argument(
        "--visits",
        metavar="uniform|outgoing|VISITS.csv",
        help="visits convention or a visits table (default: what the data carries, else outgoing)",
    )
    parser.add_argument("--min-visits", type=float, default=1, help="as in `fit` (default 1)")
    parser.add_argument(
        "-o", "--out", default="compare.html", help="HTML report path (default compare.html)"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON summary to stdout")
    parser.add_argument(
        "--method", choices=("nuts", "advi", "map"), default="nuts", help="hierarchical fit"
    )
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ci", type=float, default=0.9, help="credible interval (default 0.9)")
    parser.add_argument("--reference", help="LLM whose β is fixed at 1 (default: most calls)")
    parser.add_argument(
        "--verdicts",
        choices=("auto", "map", "nuts", "advi", "none"),
        default="auto",
        help="how each LLM's own eq/non-eq models are fitted for its verdict (default auto: "
        "MAP + Laplace, calibrated; nuts for the final word)",
    )


def load_panel(args: argparse.Namespace) -> tuple[Transitions, dict[str, pd.DataFrame] | None]:
    """All LLMs' transitions in one `Transitions` (files merged, or the run store), and the
    run store's real discovery curves when reading a store."""
    import pandas as pd

    from detailed_balance.data import Transitions, read_transitions

    if args.store and args.data:
        raise UserError("give either DATA files or --store, not both.")
    if args.store:
        return _from_store(Path(args.store))
    if not args.data:
        raise UserError("compare needs DATA (one file with an llm column, or several files).")
    counts, visits, owner = [], [], {}
    if len(args.data) == 1 and args.data[0].endswith(".db"):
        return _from_store(Path(args.data[0]))
    for raw in args.data:
        path = Path(raw)
        chosen = args.visits
        if chosen is None and path.suffix.lower() != ".json":
            found = sibling_visits(path)
            chosen = str(found) if found is not None else None
        llm = None if len(args.data) == 1 else path.stem
        part = read_transitions(path, chosen, llm=llm, min_visits=args.min_visits)
        for name in part.llms:
            if name in owner:
                raise UserError(
                    f"{owner[name]} and {path} both hold LLM {name!r}; give each LLM's data once "
                    f"(or merge them into one file with an llm column)."
                )
            owner[name] = path
        counts.append(part.counts)
        visits.append(part.visits)
    merged = Transitions.from_counts(
        pd.concat(counts, ignore_index=True), pd.concat(visits, ignore_index=True)
    )
    return merged, None


def _from_store(path: Path) -> tuple[Transitions, dict[str, pd.DataFrame]]:
    import pandas as pd

    from detailed_balance.agents import RunStore

    with RunStore(path, readonly=True) as store:  # reading never creates, upgrades or writes
        data = store.transitions()
        found = store.discovery()
    curves = {
        str(name): pd.DataFrame(
            {"calls": group["calls"].to_numpy(float), "distinct": group["distinct_states"]}
        )
        for name, group in found.groupby("llm", sort=True)
    }
    return data, curves


def run(args: argparse.Namespace) -> int:
    from detailed_balance.reports.compare import comparison_document
    from detailed_balance.workflow import compare_llms

    prepare_report_path(args.out, "compare report")  # before anything is read or fitted
    data, curves = load_panel(args)
    if len(data.llms) < 2:
        raise UserError(
            f"compare needs at least two LLMs; the data has {data.llms}. Give one file with an "
            f"llm column, or several files (one per LLM)."
        )
    if not 0 < args.ci < 1:
        raise UserError(f"--ci must be between 0 and 1, got {args.ci}.")
    comparison = compare_llms(
        data,
        method=args.method,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        seed=args.seed,
        ci=args.ci,
        model_config={"reference": args.reference} if args.reference else None,
        verdict_method=None if args.verdicts == "none" else args.verdicts,
        discovery=curves,
        log=lambda text: print(text, file=sys.stderr),
    )
    doc, summary = comparison_document(comparison)
    out = Path(args.out)
    written = doc.write(out, summary, out.with_suffix(".json"))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {written['html']} ({written['markdown'].name}, {written['summary'].name})")
    return 0
