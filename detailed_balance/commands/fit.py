"""`detailed-balance fit`: estimate potentials.

`--method least-action` is the paper's exact point estimate (writes `state,potential,bounded`,
potential empty where unbounded); the Bayesian methods write a netCDF posterior.
"""

from __future__ import annotations

import argparse
import sys

from ._common import (
    UserError,
    add_data_arguments,
    load_data,
    prepare_output,
    write_frame_atomic,
)

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
    bayes = parser.add_argument_group("Bayesian methods (nuts, advi, map)")
    bayes.add_argument(
        "--model", default="equilibrium", choices=("equilibrium", "nonequilibrium", "features")
    )
    bayes.add_argument(
        "--features",
        metavar="builtin:words|builtin:expressions|FILE.csv",
        help="--model features: state features (also with --method least-action)",
    )
    bayes.add_argument(
        "--likelihood",
        default="auto",
        choices=("auto", "kernel", "pairs"),
        help="kernel: one multinomial per prompt state (needs true visit counts); pairs: one "
        "binomial per pair; auto (default): kernel when the visits are true counts",
    )
    bayes.add_argument(
        "--prior", default="wide", choices=("wide", "normal", "student_t"), help="prior on V"
    )
    bayes.add_argument("--draws", type=int, default=1000, help="draws per chain (default 1000)")
    bayes.add_argument("--tune", type=int, default=1000, help="NUTS tuning steps (default 1000)")
    bayes.add_argument("--chains", type=int, default=4, help="chains (default 4)")
    bayes.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    bayes.add_argument("--summary", help="also write state,mean,sd,lower,upper,bounded CSV")
    bayes.add_argument("--ci", type=float, default=0.9, help="summary interval (default 0.9)")
    bayes.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    # Every output is checked (its folder created) before the data are read or anything is
    # fitted: a typo in --out must not cost a long NUTS run.
    prepare_output(args.out, "--out")
    if getattr(args, "summary", None):
        prepare_output(args.summary, "--summary")
    if args.model == "features" and args.method != "least-action":
        from ._features import theta_path

        prepare_output(theta_path(args.out), "theta table")
    data = load_data(args)
    if args.method == "least-action" and args.model == "features":
        from ._features import least_action_features

        return least_action_features(args, data)
    if args.method == "least-action":
        return _least_action(args, data)
    return _bayes(args, data)


def _bayes(args: argparse.Namespace, data) -> int:
    """Fit a Bayesian pair model and write the self-contained netCDF (and summary CSV)."""
    from detailed_balance.models.equilibrium import model_from_name
    from detailed_balance.sampling import fit

    if not 0 < args.ci < 1:
        raise UserError(f"--ci must be between 0 and 1 (e.g. 0.9), got {args.ci}")
    for name in ("draws", "chains"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.tune < 0:
        raise UserError(f"--tune must be at least 0, got {args.tune}")
    if args.model == "features":
        from ._features import feature_model, write_theta

        if args.likelihood == "kernel":
            raise UserError(
                "--likelihood kernel is not available for --model features yet (it fits the "
                "pair likelihood); leave --likelihood at auto or pass pairs."
            )

        model = feature_model(args)
    else:
        config = {"V_prior": args.prior, "reference": args.reference}
        model = model_from_name(args.model, {**config, "likelihood": args.likelihood})
    result = fit(
        model,
        data,
        method=args.method,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        seed=args.seed,
        progressbar=not args.no_progress,
    )
    result.save(args.out)
    if args.model == "features":
        write_theta(result, args)
    pairs = result.pairs
    message = (
        f"{args.model} {args.method}: {pairs.n_states} states in {pairs.n_pairs} pairs "
        f"({int(pairs.bounded.sum())} bounded), {len(pairs.unidentified)} unidentified"
    )
    if len(pairs.excluded_pairs):
        message += f", {len(pairs.excluded_pairs)} pairs excluded (a visit count unknown)"
    attrs = result.posterior.attrs
    if attrs.get("likelihood_reason"):
        message += f"; {attrs['likelihood']} likelihood: {attrs['likelihood_reason']}"
    print(f"{message} → {args.out}", file=sys.stderr)
    if args.summary:
        write_frame_atomic(result.summary(args.ci), args.summary, "--summary", index=False)
        print(f"summary ({args.ci:.0%} intervals) → {args.summary}", file=sys.stderr)
    return 0


def _least_action(args: argparse.Namespace, data) -> int:
    from detailed_balance.models import least_action

    if args.reference is not None and args.reference not in data.states:
        raise UserError(f"unknown --reference state {args.reference!r}")
    result = least_action(data, kernel=args.kernel, reference=args.reference)
    write_frame_atomic(result.table(), args.out, "--out", index=False)
    n_bounded = int(result.bounded.sum())
    print(
        f"least action ({args.kernel}): {n_bounded} of {len(result.bounded)} states bounded, "
        f"action {result.action:.4g}, converged={result.converged} → {args.out}",
        file=sys.stderr,
    )
    return 0
