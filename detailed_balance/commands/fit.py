"""`detailed-balance fit`: estimate potentials.

`--method least-action` is the paper's exact point estimate (writes `state,potential,bounded`,
potential empty where unbounded); the Bayesian methods write a netCDF posterior.
"""

from __future__ import annotations

import argparse
import sys

from detailed_balance.cli import UserError

from ._common import add_data_arguments, load_data

BAYES_METHODS = ("nuts", "advi", "map")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument(
        "--method",
        default="least-action",
        choices=("least-action", *BAYES_METHODS),
        help="least-action (the paper's point estimate) or a Bayesian method",
    )
    parser.add_argument("--kernel", default="softplus", choices=("softplus", "exp"))
    parser.add_argument("--reference", help="state whose potential is 0 in its piece")
    parser.add_argument("--out", required=True, help="potentials.csv (least action) or fit.nc")


def run(args: argparse.Namespace) -> int:
    data = load_data(args)
    if args.method == "least-action":
        return _least_action(args, data)
    raise UserError(f"method {args.method!r} is not available in this build")


def _least_action(args: argparse.Namespace, data) -> int:
    from detailed_balance.models import least_action

    if args.reference is not None and args.reference not in data.states:
        raise UserError(f"unknown --reference state {args.reference!r}")
    result = least_action(data, kernel=args.kernel, reference=args.reference)
    result.table().to_csv(args.out, index=False)
    n_bounded = int(result.bounded.sum())
    print(
        f"least action ({args.kernel}): {n_bounded} of {len(result.bounded)} states bounded, "
        f"action {result.action:.4g}, converged={result.converged} → {args.out}",
        file=sys.stderr,
    )
    return 0
