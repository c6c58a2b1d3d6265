"""`detailed-balance export`: a run store → the transition and visits files `fit`/`check` read.

Writes ``llm,source,target,count`` (`--out`) and ``llm,source,visits`` (`--visits-out`, default
``visits.csv`` beside `--out`); with `--calls-out` also every call row (CSV, Parquet or JSONL
by suffix), and with `--discovery-out` the distinct-states-vs-calls curve.
"""

from __future__ import annotations

import argparse


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
    from detailed_balance.data import atomic_path, prepare_output

    # Every output's folder is made (or refused) before the store is read; every file is
    # written to a temporary sibling and renamed, so a failed export leaves the old files.
    out = prepare_output(args.out, "transitions file")
    visits_out = prepare_output(
        args.visits_out or out.with_name(f"visits{out.suffix}"), "visits file"
    )
    calls_out = prepare_output(args.calls_out, "calls file") if args.calls_out else None
    discovery_out = (
        prepare_output(args.discovery_out, "discovery file") if args.discovery_out else None
    )
    with RunStore(args.store, readonly=True) as store:
        data = store.transitions(
            args.llm, args.run_id, invalid="drop" if args.drop_invalid else "state"
        )
        # An OS error while writing (disk full, ...) is an OutputError naming both files.
        with (
            atomic_path(out, "transitions file") as tmp,
            atomic_path(visits_out, "visits file") as tmp_visits,
        ):
            if out.suffix.lower() in (".parquet", ".pq"):
                data.to_parquet(tmp, tmp_visits)
            else:
                data.to_csv(tmp, tmp_visits)
        print(f"{data} → {out}, {visits_out}")
        if calls_out is not None:
            print(f"calls → {store.export_calls(calls_out, args.llm, args.run_id)}")
        if discovery_out is not None:
            curve = store.discovery(args.llm, args.run_id)
            with atomic_path(discovery_out, "discovery file") as tmp:
                curve.to_csv(tmp, index=False)
            print(f"discovery curve → {discovery_out}")
    return 0
