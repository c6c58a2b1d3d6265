"""The `detailed-balance` command.

Each subcommand lives in `detailed_balance.commands.<name>` and provides
``add_arguments(parser)`` and ``run(args) -> int``. Errors a user can fix (bad data, bad
options, provider failures) are printed to stderr without a traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from detailed_balance.commands import UserError

# Subcommand name → (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "simulate → fit → check end to end on the embedded default and report"),
    "simulate": ("simulate", "sample transitions from a known landscape (ground truth)"),
    "fit": ("fit", "estimate potentials (least action or a Bayesian model)"),
    "check": ("check", "the paper's detailed-balance checks (and Bayesian tests with --posterior)"),
    "collect": ("collect", "collect transitions from an LLM through litellm into a run store"),
    "export": ("export", "export a run store to transition and visits files"),
    "report": ("report", "write the HTML/Markdown report of a fit"),
    "compare": ("compare", "compare several LLMs in one hierarchical model"),
    "calibrate": ("calibrate", "error rates and coverage on replicates of your own design (dask)"),
    "fit-many": ("fit_many", "fit one model to many data sets in parallel (dask), one fit each"),
}


def _available() -> dict[str, object]:
    modules = {}
    for name, (module, _) in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"detailed_balance.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"detailed_balance.commands.{module}":
                raise
    return modules


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="detailed-balance",
        description="Detailed balance, potentials and violation tests for LLM-driven agents.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = _available()
    for name, module in modules.items():
        command = sub.add_parser(name, help=COMMANDS[name][1], description=COMMANDS[name][1])
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
        module.add_arguments(command)
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into messages
        if getattr(args, "debug", False):
            raise
        if not _is_user_error(exc):
            print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
            print("(run again with --debug for the traceback)", file=sys.stderr)
            return 1
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _is_user_error(exc: Exception) -> bool:
    from detailed_balance.data import DataError

    return isinstance(exc, UserError | DataError | FileNotFoundError | PermissionError)


if __name__ == "__main__":
    # `python -m detailed_balance.cli`: UserError lives in `commands`, so it is the same class
    # here as in the subcommands that raise it.
    sys.exit(main())
