"""Options and helpers shared by the subcommands, and `UserError` (a message the CLI shows as
is, exit 2).

Light to import: `detailed-balance --help` builds every subcommand's parser, so this module
and the subcommands import the data layer (pandas) and anything heavier only when they run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detailed_balance.data import Transitions


class UserError(Exception):
    """An error whose message is the whole story for the user (no traceback needed): the CLI
    prints it without a traceback and exits with 2."""


def refuse_directory(path: str | Path, what: str) -> None:
    """A `UserError` when `path` is a directory where the user had to name a file."""
    if Path(path).is_dir():
        raise UserError(f"{path} is a directory, expected {what}.")


def add_data_arguments(parser: argparse.ArgumentParser, *, nargs: str | None = None) -> None:
    """`DATA` and `--visits uniform|outgoing|VISITS.csv` (+ `--calls`, `--min-visits`, `--llm`)."""
    parser.add_argument("data", metavar="DATA", nargs=nargs, help="transition data file")
    add_visits_arguments(parser)
    parser.add_argument("--llm", help="the LLM to analyse when the data holds several")


def add_visits_arguments(parser: argparse.ArgumentParser) -> None:
    """`--visits uniform|outgoing|VISITS.csv`, `--calls` and `--min-visits` (read by `load_data`)."""
    parser.add_argument(
        "--visits",
        metavar="uniform|outgoing|VISITS.csv",
        help="visits convention or a visits table (default: what the data carries, else outgoing)",
    )
    parser.add_argument(
        "--calls", type=float, help="total LLM calls for --visits uniform (default: total count)"
    )
    parser.add_argument(
        "--min-visits",
        type=float,
        default=1,
        help="with --visits outgoing, drop states with at most this many visits (default 1)",
    )


def sibling_visits(path: Path) -> Path | None:
    """The visits table written beside a transitions file (`transitions.csv` → `visits.csv`)."""
    candidates = [path.with_name(f"{path.stem}.visits{path.suffix}")]
    if "transitions" in path.stem:
        candidates.append(path.with_name(path.name.replace("transitions", "visits")))
    return next((c for c in candidates if c.is_file() and c != path), None)


def load_data(
    args: argparse.Namespace, path: str | None = None, *, one_llm: bool = True
) -> Transitions:
    """Read DATA with the visits options (and `--llm`; with `one_llm`, data of several LLMs
    without `--llm` are refused with the names to choose from).

    Without --visits the data's own visits are used: the JSON layouts carry them, and a
    `visits.csv` written beside `transitions.csv` (by `simulate` or `export`) is picked up;
    otherwise the "outgoing" convention applies.
    """
    from detailed_balance.data import DataError, read_transitions

    data_path = Path(path or args.data)
    visits = args.visits
    if visits is None and data_path.suffix.lower() != ".json":
        found = sibling_visits(data_path)
        if found is not None:
            print(f"using visits from {found}", file=sys.stderr)
            visits = str(found)
    data = read_transitions(data_path, visits, calls=args.calls, min_visits=args.min_visits)
    if getattr(args, "llm", None):
        data = data.select(args.llm)
    elif one_llm and len(data.llms) > 1:
        names = [repr(n if len(n) <= 40 else n[:39] + "…") for n in data.llms[:5]]
        more = f" and {len(data.llms) - 5} more" if len(data.llms) > 5 else ""
        raise DataError(
            f"{data_path} holds several LLMs ({', '.join(names)}{more}); choose one with "
            f"--llm NAME, or compare them with `detailed-balance compare {data_path}`."
        )
    return data


def prepare_report_path(out: str | Path, what: str = "report") -> Path:
    """Check the HTML path of a report before any work (its folder is created).

    The Markdown twin (`X.md`, `X_figures/`) and the summary (`X.json`) are written beside it,
    so `-o` must not itself be one of those.
    """
    from detailed_balance.data.files import OutputError

    path = Path(out)
    if path.suffix.lower() in (".md", ".json"):
        raise OutputError(
            f"-o {path}: give the HTML path (e.g. {path.with_suffix('.html')}); the Markdown twin "
            f"and the summary JSON are written beside it."
        )
    return prepare_output(path, what)


def prepare_output(path: str | Path, what: str = "output") -> Path:
    """`detailed_balance.data.files.prepare_output`, imported when called."""
    from detailed_balance.data.files import prepare_output as prepare

    return prepare(path, what)


def write_frame_atomic(frame: Any, path: str | Path, what: str = "output", **options: Any) -> Path:
    """`detailed_balance.data.files.write_frame_atomic`, imported when called."""
    from detailed_balance.data.files import write_frame_atomic as write

    return write(frame, path, what, **options)
