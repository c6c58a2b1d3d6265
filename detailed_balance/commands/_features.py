"""The feature-potential branch of `detailed-balance fit` (``--model features``).

`detailed_balance.commands.fit` calls these three helpers so its own code stays small:

* `feature_model(args)` — the `FeaturePotentialModel` for ``--features`` (and ``--reference``);
* `write_theta(result, args)` — ``theta.csv`` (``feature,mean,sd,lower,upper``, ``--ci``
  interval, 90% by default) next to the ``--out`` file, and the headline numbers on stderr;
* `least_action_features(args, data)` — ``--method least-action --model features``: θ by
  minimising the paper's action, ``feature,theta,theta_std`` to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from detailed_balance.data import Transitions
from detailed_balance.data.files import write_frame_atomic
from detailed_balance.models import feature_least_action

# The PyMC model (`FeaturePotentialModel`) and the posterior summaries are imported where they
# are used: ``--method least-action`` is numpy/SciPy only and must not load PyMC or pytensor.


def _source(args: argparse.Namespace) -> str:
    from ._common import UserError, refuse_directory

    source = getattr(args, "features", None)
    if not source:
        raise UserError(
            "--model features needs --features builtin:words, builtin:expressions or FILE.csv "
            "(a `state` column and one numeric column per feature)."
        )
    if not source.startswith("builtin:"):
        refuse_directory(source, "a feature CSV file (a `state` column + numeric columns)")
    if not source.startswith("builtin:") and not Path(source).is_file():
        raise UserError(
            f"--features {source}: no such file; give builtin:words, builtin:expressions or a "
            f"CSV with a `state` column and one numeric column per feature."
        )
    return source


def feature_model(args: argparse.Namespace) -> Any:
    """`FeaturePotentialModel` configured from the command line."""
    from detailed_balance.models import FeaturePotentialModel

    return FeaturePotentialModel(_source(args), {"reference": getattr(args, "reference", None)})


def theta_path(out: str | Path) -> Path:
    """``theta.csv`` in the directory of the ``--out`` file."""
    return Path(out).with_name("theta.csv")


def write_theta(result: Any, args: argparse.Namespace) -> Path:
    """Write ``theta.csv`` next to ``--out``; print the share of V the features explain."""
    from detailed_balance.diagnostics import feature_share, theta_summary

    ci = float(getattr(args, "ci", 0.9))
    path = theta_path(args.out)
    write_frame_atomic(theta_summary(result, ci), path, "theta table", index=False)
    share = feature_share(result, ci)
    dropped = result.posterior["constant_data"].attrs.get("dropped_features", "[]")
    print(
        f"features explain {share['mean']:.1%} of V's spread "
        f"[{share['lower']:.1%}, {share['upper']:.1%}]; θ ({ci:.0%} intervals) → {path}"
        + (f"; constant features dropped: {dropped}" if dropped != "[]" else ""),
        file=sys.stderr,
    )
    return path


def least_action_features(args: argparse.Namespace, data: Transitions) -> int:
    """θ by least action (the paper's route): ``feature,theta,theta_std`` to ``--out``."""
    result = feature_least_action(data, _source(args), kernel=args.kernel)
    write_frame_atomic(result.table(), args.out, "--out", index=False)
    print(
        f"least action over {len(result.theta)} features ({args.kernel}): action "
        f"{result.action:.4g}, converged={result.converged} → {args.out}",
        file=sys.stderr,
    )
    if result.runaway:
        print(
            "warning: the action keeps falling along some direction of θ (features that only "
            "ever point downhill, or collinear features): θ is not finite there; drop or merge "
            "features, or use the Bayesian fit (--method map|nuts).",
            file=sys.stderr,
        )
    return 0
