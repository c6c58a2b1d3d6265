"""`detailed-balance simulate`: transition counts from a landscape with known potential.

Writes ``DIR/transitions.csv`` (llm,source,target,count), ``DIR/visits.csv``
(llm,source,visits), ``DIR/truth.csv`` (state,potential) and, with ``--drive``,
``DIR/drive.csv`` (source,target,drive: A_fg for both directions of every graph edge).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--states", type=int, default=300, help="number of states (default 300)")
    parser.add_argument(
        "--transitions", type=int, default=30_000, help="number of LLM calls (default 30000)"
    )
    parser.add_argument(
        "--drive",
        type=float,
        default=0.0,
        help="size of the antisymmetric drive A (0 = detailed balance holds exactly; default 0)",
    )
    parser.add_argument("--seed", type=int, help="random seed (default: fresh randomness)")
    parser.add_argument(
        "--potential",
        choices=["normal", "skewed"],
        default="normal",
        help="distribution of the true V: normal, or skewed with a heavy uphill tail",
    )
    parser.add_argument("--spread", type=float, default=1.0, help="scale of V in kT (default 1)")
    parser.add_argument(
        "--mean-degree", type=float, default=6.0, help="mean degree of the state graph (default 6)"
    )
    parser.add_argument(
        "--allocation",
        choices=["uniform", "chain"],
        default="uniform",
        help="uniform: every state is the prompt transitions/N times (the paper); "
        "chain: one long Markov chain",
    )
    parser.add_argument(
        "--move-probability",
        type=float,
        default=1.0,
        help="probability that a call proposes a move at all (the rest are rejections; default 1)",
    )
    parser.add_argument("--llm", default="default", help="LLM name written in the files")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from detailed_balance.data.files import prepare_dir, write_frame_atomic
    from detailed_balance.simulation import simulate

    from ._common import UserError

    if args.states < 2:
        raise UserError(f"--states {args.states}: a landscape needs at least 2 states.")
    if args.transitions < 0:
        raise UserError(f"--transitions {args.transitions}: the number of calls must be >= 0.")
    prepare_dir(args.out, "--out folder")
    try:
        sim = simulate(
            args.states,
            args.transitions,
            potential=args.potential,
            spread=args.spread,
            mean_degree=args.mean_degree,
            drive=args.drive,
            allocation=args.allocation,
            move_probability=args.move_probability,
            seed=args.seed,
            llm=args.llm,
        )
    except ValueError as exc:  # bad option values: the message says which and why
        raise UserError(f"simulate: {exc}") from None
    out = Path(args.out)
    data = sim.transitions
    visits = data.visits.astype({"visits": np.int64})  # whole calls; the table stores floats
    tables = {"transitions.csv": data.counts, "visits.csv": visits, "truth.csv": sim.truth_table()}
    if sim.driven:
        tables["drive.csv"] = sim.drive
    for name, table in tables.items():
        write_frame_atomic(table, out / name, "simulated data", index=False)
    written = list(tables)
    moves = data.counts["source"] != data.counts["target"]
    print(
        f"simulated {len(sim.states)} states, {len(sim.graph)} edges, "
        f"{int(sim.visits.sum())} calls ({int(data.counts['count'][moves].sum())} moves, "
        f"{int(moves.sum())} distinct), V sd {sim.potential.std():.2f} kT, "
        f"{'drive ' + format(args.drive, 'g') if sim.driven else 'reversible'}, "
        f"allocation {args.allocation} → {out}/ ({', '.join(written)})"
    )
    return 0
