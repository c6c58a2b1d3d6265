"""`detailed-balance report FIT.nc [--data DATA] -o report.html`: the posterior report.

Writes one self-contained HTML file (figures embedded, no network), its Markdown twin
(`report.md` + `report_figures/`) and `report.json` (the summary) beside it. The fit's own data is used
unless --data is given. The other model of the verdict (equilibrium ↔ non-equilibrium) is
fitted with --other-method (MAP + Laplace by default; `nuts` for the final word) by
`detailed_balance.workflow.write_report`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import (
    UserError,
    add_visits_arguments,
    load_data,
    prepare_report_path,
    refuse_directory,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fit", metavar="FIT.nc", help="a fit saved by `detailed-balance fit`")
    parser.add_argument("--data", metavar="DATA", help="transition data (default: the fit's own)")
    add_visits_arguments(parser)  # apply with --data
    parser.add_argument(
        "-o", "--out", default="report.html", help="HTML path (default report.html)"
    )
    parser.add_argument(
        "--other-method",
        choices=("auto", "map", "nuts", "advi"),
        default="auto",
        help="how the other model of the verdict is fitted (default auto: MAP + Laplace)",
    )
    parser.add_argument("--ci", type=float, default=0.9, help="credible interval (default 0.9)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from detailed_balance.workflow import write_report

    path = Path(args.fit)
    refuse_directory(path, "a fit file (FIT.nc, written by `detailed-balance fit ... --out`)")
    if not path.is_file():
        raise UserError(f"{path}: no such fit file; write one with `detailed-balance fit ...`.")
    if not 0 < args.ci < 1:
        raise UserError(f"--ci must be between 0 and 1, got {args.ci}.")
    prepare_report_path(args.out)  # before the evidence is computed
    from detailed_balance.sampling import load_fit

    result = load_fit(path)  # FitFileError (a DataError) names the file and says why
    data = None
    if args.data:
        from detailed_balance.diagnostics import same_data

        args.llm = None
        data = load_data(args, args.data, one_llm=False)  # the fit says which LLM
        if not same_data(data, result):
            raise UserError(
                f"{path} was made on other data than {args.data} (their counts or visits "
                f"differ, e.g. another --visits convention or other states); give the "
                f"transitions and visits the fit was made from, or leave out --data to use the "
                f"fit's own data."
            )
    print(
        f"computing the evidence (the other model is fitted with {args.other_method}) ...",
        file=sys.stderr,
    )
    written = write_report(
        result,
        args.out,
        data,
        other_method=args.other_method,
        seed=args.seed,
        ci=args.ci,
        source=path.name,
    )
    print(f"wrote {written['html']} ({written['markdown'].name}, {written['summary'].name})")
    return 0
