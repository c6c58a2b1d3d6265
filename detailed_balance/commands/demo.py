"""`detailed-balance demo`: the main job end to end on the embedded default, offline.

The steps (collect → least action and the paper's checks → Bayesian fits and the verdict → the
report → two simulated LLMs compared → a 10-replicate MAP calibration of its own data) are `detailed_balance.workflow.run_demo`; every step
writes its files under `--out`; the last line is the report's path.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-output", help="folder for the demo's files")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--calls", type=int, default=4000, help="simulated LLM calls to collect")
    parser.add_argument("--states", type=int, default=40, help="simulated word vocabulary size")
    parser.add_argument(
        "--skip-compare", action="store_true", help="stop after the single-LLM report"
    )
    parser.add_argument(
        "--calibration-replicates",
        type=int,
        default=10,
        help="replicates per drive level of the closing calibration (0: skip it; default 10)",
    )
    parser.add_argument("--workers", type=int, default=2, help="dask workers of the calibration")


def run(args: argparse.Namespace) -> int:
    from detailed_balance.workflow import run_demo

    run_demo(
        args.out,
        seed=args.seed,
        calls=args.calls,
        states=args.states,
        skip_compare=args.skip_compare,
        calibration_replicates=args.calibration_replicates,
        workers=args.workers,
    )
    return 0
