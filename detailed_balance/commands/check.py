"""`detailed-balance check`: the paper's detailed-balance checks on transition data.

Fits the least-action potential, then runs the scatter, loop, downhill, Gaussian-fit and
action-size checks; `--json` prints one JSON object (null where a check has no data).
"""

from __future__ import annotations

import argparse
import json
import math

from ._common import add_data_arguments, load_data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--kernel", default="softplus", choices=("softplus", "exp"))
    parser.add_argument(
        "--loop-min-count", type=int, default=1, help="each loop edge seen at least this often"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    bayes = parser.add_argument_group("Bayesian tests (see docs/diagnostics.md)")
    bayes.add_argument(
        "--posterior",
        action="append",
        metavar="FIT.nc",
        help="a fit of DATA (equilibrium and/or non-equilibrium; repeat for both); adds `bayes`",
    )
    bayes.add_argument(
        "--bayes-method",
        default="auto",
        choices=("auto", "map", "nuts", "advi"),
        help="how to fit the model --posterior lacks (auto = map: MAP + Laplace, seconds)",
    )
    bayes.add_argument("--fdr", type=float, default=0.05, help="Bayesian FDR of flags")
    bayes.add_argument("--seed", type=int, default=1, help="seed of quick fits and PPC draws")


def paper_summary(data, kernel: str = "softplus", loop_min_count: int = 1) -> dict:
    """The `check --json` object for `data` (least-action potentials + the paper's checks)."""
    from detailed_balance.diagnostics import checks_json, paper_checks
    from detailed_balance.models import least_action

    result = least_action(data, kernel=kernel)
    return checks_json(paper_checks(data, result, loop_min_count=loop_min_count))


def run(args: argparse.Namespace) -> int:
    data = load_data(args)
    summary = paper_summary(data, args.kernel, args.loop_min_count)
    verdict = _bayes(data, args) if getattr(args, "posterior", None) else None
    if verdict is not None:
        summary["bayes"] = verdict.evidence
    if args.json:
        print(json.dumps(_clean(summary)))
    else:
        from detailed_balance.reports.evidence import format_bayes, format_summary

        print(format_summary(summary))
        if verdict is not None:
            print(f"\n{format_bayes(verdict.evidence)}")
    return 0


def _bayes(data, args: argparse.Namespace):
    """The Bayesian verdict from --posterior file(s) (workflow.bayes_from_files)."""
    from detailed_balance.diagnostics import FitError
    from detailed_balance.workflow import bayes_from_files

    from ._common import UserError, refuse_directory

    for path in args.posterior:
        refuse_directory(path, "a fit file (FIT.nc, written by `detailed-balance fit ... --out`)")
    try:
        return bayes_from_files(
            data, args.posterior, method=args.bayes_method, seed=args.seed, fdr=args.fdr
        )
    except FitError as exc:
        raise UserError(str(exc)) from None


def _clean(value):
    """JSON-safe: NaN/inf become null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
