"""Readers and writers for transition data: CSV, Parquet, JSONL and the paper's two JSON layouts.

The format is chosen from the file extension, or sniffed from the content when the extension
says nothing; anything unrecognised is an error that says what is accepted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from .transitions import DataError, Transitions, VisitsSpec, normalise_counts, normalise_visits

TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
JSON_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
ACCEPTED = (
    "CSV/TSV/Parquet/JSONL with columns source,target,count[,llm], or the paper's JSON layouts "
    "(word: {prompt: [answers...]}; expression: [{target_expression, source_expressions}])"
)


def _sniff(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TABLE_FORMATS:
        return TABLE_FORMATS[suffix]
    if suffix in JSON_FORMATS:
        return JSON_FORMATS[suffix]
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.decode("utf-8", errors="replace").lstrip()
    if text.startswith("{") and "\n{" in text:
        return "jsonl"
    if text.startswith(("{", "[")):
        return "json"
    first = text.splitlines()[0] if text else ""
    if "source" in first and "target" in first:
        return "tsv" if "\t" in first else "csv"
    raise DataError(f"{path}: cannot tell the format of this file; expected {ACCEPTED}.")


def _read_table(path: Path, fmt: str) -> tuple[pd.DataFrame, int]:
    """The raw table and the line number of its first data row (for messages)."""
    try:
        if fmt == "parquet":
            return pd.read_parquet(path), 0
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False), 1
        sep = "\t" if fmt == "tsv" else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""]), 2
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: could not read as {fmt}: {exc}") from None


def read_visits(path: str | Path, *, llm: str | None = None) -> pd.DataFrame:
    """A visits table ``source,visits[,llm]`` (CSV, TSV, Parquet or JSONL)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such visits file.")
    fmt = TABLE_FORMATS.get(path.suffix.lower()) or JSON_FORMATS.get(path.suffix.lower(), "csv")
    if fmt == "json":
        fmt = "jsonl"
    frame, offset = _read_table(path, fmt)
    return normalise_visits(frame, origin=str(path), row_offset=offset, llm=llm)


def read_transitions(
    path: str | Path,
    visits: VisitsSpec | str | Path = None,
    *,
    llm: str | None = None,
    calls: float | Mapping[str, float] | None = None,
    min_visits: float = 1,
) -> Transitions:
    """Read transition data, choosing the format from the extension or the content.

    visits: ``"uniform"``, ``"outgoing"``, a visits table or a path to one. None means the
    visits the data carries (the JSON layouts), otherwise ``"outgoing"``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file.")
    if isinstance(visits, str | Path) and visits not in ("uniform", "outgoing"):
        visits = read_visits(visits, llm=llm)
    fmt = _sniff(path)
    options = dict(calls=calls, min_visits=min_visits, origin=str(path), llm=llm)
    if fmt == "json":
        counts, carried, scores = _read_paper_json(path)
        chosen = carried if visits is None else visits
        return Transitions.from_counts(counts, chosen, scores=scores, **options)
    frame, offset = _read_table(path, fmt)
    if "count" not in frame.columns and {"source", "target"} <= set(frame.columns):
        raise DataError(f"{path}: missing column 'count'; expected {ACCEPTED}.")
    counts = normalise_counts(frame, origin=str(path), row_offset=offset, llm=llm)
    return Transitions.from_counts(counts, visits, **options)


def _read_paper_json(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float] | None]:
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); expected {ACCEPTED}.") from None
    if isinstance(payload, dict):
        return (*_word_layout(payload, path), None)
    if isinstance(payload, list):
        return _expression_layout(payload, path)
    raise DataError(f"{path}: JSON must be an object or a list; expected {ACCEPTED}.")


def _word_layout(payload: dict, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """{prompt: [answer, ...]}: one entry per call; the list length is the prompt's visits."""
    sources, targets, counts, visits = [], [], [], {}
    for key, answers in payload.items():
        if not isinstance(answers, list):
            raise DataError(
                f"{path}: entry {key!r} must be a list of answers (one per call), "
                f"got {type(answers).__name__}."
            )
        for position, answer in enumerate(answers):
            if not isinstance(answer, str) or not answer.strip():
                raise DataError(
                    f"{path}: entry {key!r}, answer {position}: {answer!r} is not a state name; "
                    f"use a pooled name such as INVALID for rejected answers."
                )
        tally = Counter(answers)
        sources.extend([key] * len(tally))
        targets.extend(tally.keys())
        counts.extend(tally.values())
        visits[key] = len(answers)
    frame = pd.DataFrame({"source": sources, "target": targets, "count": counts})
    table = pd.DataFrame({"source": list(visits), "visits": list(visits.values())})
    return frame, table


def _expression_layout(
    payload: list, path: Path
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """[{target_expression, source_expressions: [{expression, score?}], target_score?}, ...]."""
    sources, targets, scores = [], [], {}
    for position, record in enumerate(payload):
        if not isinstance(record, dict) or "target_expression" not in record:
            raise DataError(
                f"{path}: record {position} needs a 'target_expression' and a list "
                f"'source_expressions' of {{'expression', 'score'}} objects."
            )
        target = record["target_expression"]
        listed = record.get("source_expressions")
        if not isinstance(target, str) or not target.strip() or not isinstance(listed, list):
            raise DataError(
                f"{path}: record {position}: 'target_expression' must be a non-empty string and "
                f"'source_expressions' a list."
            )
        if record.get("target_score") is not None:
            scores[target] = _score(record["target_score"], path, position)
        for item in listed:
            source = item.get("expression") if isinstance(item, dict) else None
            if not isinstance(source, str) or not source.strip():
                raise DataError(
                    f"{path}: record {position}: every source needs a non-empty 'expression'."
                )
            sources.append(source)
            targets.append(target)
            if item.get("score") is not None:
                scores[source] = _score(item["score"], path, position)
    frame = pd.DataFrame({"source": sources, "target": targets, "count": 1})
    visits = frame.groupby("source", as_index=False)["count"].sum()
    return frame, visits.rename(columns={"count": "visits"}), scores


def _score(value, path: Path, position: int) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: record {position}: score {value!r} is not a number.") from None
