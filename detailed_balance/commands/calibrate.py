"""`detailed-balance calibrate`: how often would the verdict be wrong on data like mine?

Replicates of DATA's design (its states, calls per state and possible moves) are drawn from
the fitted equilibrium posterior (``--posterior FIT.nc``, or a fit made here with
``--method``), reversible and with each ``--drive`` size added; each is refitted exactly as
the fit was and judged by the verdict (`detailed_balance.workflow.calibrate`). The replicates
run on dask.distributed: ``--workers N`` local processes, or ``--scheduler tcp://host:8786``.
Writes ``--out``/replicates.parquet (one row per finished replicate, as they finish: a
killed run resumes), calibration.json, calibration.csv and calibration.html.
"""

from __future__ import annotations

import argparse
import json
import sys

from ._common import UserError, add_visits_arguments, load_data, refuse_directory


def parse_drives(text: str) -> list[float]:
    """``"0.5,1.0"`` → [0.5, 1.0] (empty: no driven replicates)."""
    if text.strip() in ("", "none", "0"):
        return []
    try:
        drives = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--drive takes comma-separated numbers (e.g. 0.5,1.0), got {text!r}."
        ) from None
    if any(not d > 0 or d != d or d == float("inf") for d in drives):
        raise UserError(f"every --drive must be a positive number, got {text!r}.")
    return drives


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data", metavar="DATA", nargs="?", help="transition data (optional with --posterior)"
    )
    add_visits_arguments(parser)
    parser.add_argument("--llm", help="the LLM to analyse when the data holds several")
    parser.add_argument(
        "--posterior", metavar="FIT.nc", help="the equilibrium fit to calibrate (else fitted here)"
    )
    parser.add_argument(
        "--replicates", type=int, default=40, help="replicates per drive size (default 40)"
    )
    parser.add_argument(
        "--method",
        choices=("map", "nuts", "advi"),
        help="refit method (default: the fit's own; map when the fit is made here)",
    )
    parser.add_argument(
        "--drive",
        default="0.5,1.0",
        help="drive sizes of the driven replicates, comma-separated (default 0.5,1.0; none)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    where.add_argument(
        "--scheduler", metavar="ADDRESS", help="an existing dask scheduler (tcp://host:8786)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the replicates (default 0)")
    parser.add_argument("--out", required=True, help="folder for the calibration's files")
    parser.add_argument(
        "--no-resume", action="store_true", help="refuse to reuse replicates already in --out"
    )
    parser.add_argument("--json", action="store_true", help="print calibration.json on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from detailed_balance.data.files import prepare_dir
    from detailed_balance.diagnostics import FitError
    from detailed_balance.reports.calibration import calibration_text
    from detailed_balance.workflow import calibrate

    if args.replicates < 1:
        raise UserError(f"--replicates must be at least 1, got {args.replicates}.")
    if args.scheduler is None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}.")
    drives = parse_drives(args.drive)
    out = prepare_dir(args.out, "--out folder")
    if args.no_resume and (out / "replicates.parquet").exists():
        raise UserError(
            f"{out}/replicates.parquet exists and --no-resume was given; use another --out."
        )
    if args.data is None and args.posterior is None:
        raise UserError("give DATA, a fit (--posterior FIT.nc), or both.")
    data = load_data(args) if args.data is not None else None
    if args.posterior is not None:
        refuse_directory(args.posterior, "a fit file (FIT.nc)")
    try:
        result = calibrate(
            data,
            args.posterior,
            out=out,
            replicates=args.replicates,
            method=args.method,
            drive=drives,
            workers=args.workers,
            scheduler=args.scheduler,
            seed=args.seed,
            progress=None if args.quiet else sys.stderr,
        )
    except FitError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(result.summary))
    else:
        print(calibration_text(result.summary))
        print(f"files → {out}/ (calibration.json, replicates.parquet, calibration.html)")
    return 1 if result.summary["failed"] else 0
