"""`detailed-balance fit-many`: fit one model to many data sets in parallel, one fit file each.

``fit-many A.csv B.csv ... --out fits/ [--model ...] [--method map] [--workers N |
--scheduler ADDRESS]`` reads every DATA file (with the same --visits options as `fit`; a
`visits.csv` beside a transitions file is picked up), then `detailed_balance.workflow.fit_many`
fits them as independent dask tasks and writes ``fits/<name>.nc`` as each finishes, plus
``fits/fits.csv``. The name of a data set is its file stem (the folder's name for a file
called ``transitions.*``); a rerun skips the fits already written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import UserError, add_visits_arguments, load_data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", nargs="+", help="transition data files")
    add_visits_arguments(parser)
    parser.add_argument("--llm", help="the LLM to fit when the data hold several")
    parser.add_argument("--out", required=True, help="folder for the fit files and fits.csv")
    parser.add_argument("--model", default="equilibrium", choices=("equilibrium", "nonequilibrium"))
    parser.add_argument("--likelihood", default="auto", choices=("auto", "kernel", "pairs"))
    parser.add_argument(
        "--prior", default="wide", choices=("wide", "normal", "student_t"), help="prior on V"
    )
    parser.add_argument("--method", default="map", choices=("map", "nuts", "advi"))
    parser.add_argument("--draws", type=int, help="draws per chain (default 1000)")
    parser.add_argument("--tune", type=int, help="NUTS tuning steps (default 1000)")
    parser.add_argument("--chains", type=int, help="chains (default: 1 for map, 4 otherwise)")
    parser.add_argument("--seed", type=int, default=1)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    where.add_argument(
        "--scheduler", metavar="ADDRESS", help="an existing dask scheduler (tcp://host:8786)"
    )
    parser.add_argument("--no-resume", action="store_true", help="refit even if a fit exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def data_name(path: Path) -> str:
    """A data set's name: the file stem, or the folder's name for ``transitions.*``."""
    if path.stem == "transitions" and path.parent.name:
        return path.parent.name
    return path.stem


def run(args: argparse.Namespace) -> int:
    from detailed_balance.data.files import prepare_dir
    from detailed_balance.workflow import fit_many

    if args.scheduler is None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}.")
    for name in ("draws", "chains"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be at least 1, got {value}")
    out = prepare_dir(args.out, "--out folder")
    datasets = {}
    for path in map(Path, args.data):
        name = data_name(path)
        if name in datasets:
            raise UserError(f"two DATA files are named {name!r}; rename one of them.")
        datasets[name] = load_data(args, str(path))
    config = {"V_prior": args.prior, "likelihood": args.likelihood}
    table = fit_many(
        datasets,
        out=out,
        model=args.model,
        model_config=config,
        method=args.method,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        seed=args.seed,
        workers=args.workers,
        scheduler=args.scheduler,
        resume=not args.no_resume,
        progress=None if args.quiet else sys.stderr,
    )
    for row in table.itertuples():
        detail = row.error if row.status == "failed" else row.path
        print(f"{row.name}: {row.status} {detail}")
    failed = int((table["status"] == "failed").sum())
    print(f"{len(table) - failed} of {len(table)} fitted or already there → {out}/fits.csv")
    return 1 if failed else 0
