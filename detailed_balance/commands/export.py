"""`detailed-balance export`: a run store → the transition and visits files `fit`/`check` read.

Writes ``llm,source,target,count`` (`--out`) and ``llm,source,visits`` (`--visits-out`, default
``visits.csv`` beside `--out`); with `--calls-out` also every call row (CSV, Parquet or JSONL
by suffix), and with `--discovery-out` the distinct-states-vs-calls curve.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="SQLite run store written by collect")
    parser.add_argument("--llm", action="append", help="only this LLM (repeatable)")
    parser.add_argument("--run-id", action="append", help="only this run (repeatable)")
    parser.add_argument(
        "--out", default="transitions.csv", help="transitions file (.csv or .parquet)"
    )
    parser.add_argument("--visits-out", help="visits file (default: visits.csv beside --out)")
    parser.add_argument("--drop-invalid", action="store_true",
                        help="leave out transitions into INVALID (their visits stay)")  # fmt: skip
    parser.add_argument("--calls-out", help="also write every call row (.csv, .parquet, .jsonl)")
    parser.add_argument("--discovery-out", help="also write distinct valid states vs calls (CSV)")


def run(args: argparse.Namespace) -> int:
    from detailed_balance.agents import RunStore
    from detailed_balance.cli import UserError

    if not Path(args.store).is_file():
        raise UserError(f"{args.store}: no such run store; collect into it first.")
    out = Path(args.out)
    visits_out = Path(args.visits_out) if args.visits_out else out.with_name(f"visits{out.suffix}")
    with RunStore(args.store) as store:
        data = store.transitions(
            args.llm, args.run_id, invalid="drop" if args.drop_invalid else "state"
        )
        if out.suffix.lower() in (".parquet", ".pq"):
            data.to_parquet(out, visits_out)
        else:
            data.to_csv(out, visits_out)
        print(f"{data} → {out}, {visits_out}")
        if args.calls_out:
            print(f"calls → {store.export_calls(args.calls_out, args.llm, args.run_id)}")
        if args.discovery_out:
            store.discovery(args.llm, args.run_id).to_csv(args.discovery_out, index=False)
            print(f"discovery curve → {args.discovery_out}")
    return 0
