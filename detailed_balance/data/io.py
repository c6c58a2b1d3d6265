"""Readers and writers for transition data: CSV, Parquet, JSONL and the paper's two JSON layouts.

The format is chosen from the file extension, or sniffed from the content when the extension
says nothing; anything unrecognised is an error that says what is accepted.

Every problem is a `DataError` whose message names the file, the row and the column:

- Rows: "data row N" is the N-th record after the header, counted from 1, the same in every
  format — CSV/TSV (data row 1 is the line after the header; blank lines are not rows),
  Parquet (data row 1 is the table's first row) and JSONL (data row 1 is the first non-blank
  line). In the JSON layouts, entries, answers and records are also counted from 1.
- Names: in delimited files (CSV/TSV) whitespace around every cell and header is removed, so
  ``A, B, 5`` is the move A→B (a name is never " B"). Names must be text; Parquet/JSONL whole
  numbers become their decimal text, anything else (bool, float, bytes, dates, lists, objects)
  is refused, as are empty names and names containing NUL.
- Counts: whole numbers 0 ≤ n ≤ 2**53. In CSV/TSV they are parsed from text (``3``, ``3.0``,
  ``1e3``); in Parquet/JSONL they must be numbers (a string or a bool is refused, naming the
  type). Visits files follow the same rules and must hold whole numbers.
- Data with no transitions between different states (a header only, only self steps) is
  refused: there is nothing to analyse.
"""

from __future__ import annotations

import json
import math
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


#: Formats whose values carry their own types (counts must be numbers, not text).
TYPED = {"parquet", "jsonl"}


def _read_table(path: Path, fmt: str) -> pd.DataFrame:
    """The raw table, one row per record (data row 1 first)."""
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a broken file
            raise DataError(f"{path}: could not read as parquet: {_short(exc)}") from None
    sep = "\t" if fmt == "tsv" else ","
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path}: the file is empty; expected a header line source,target,count[,llm] "
            f"and one line per transition."
        ) from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: could not read as {fmt}: {_short(exc)}") from None
    # Delimited files: surrounding whitespace is never part of a name, a count or a header.
    frame.columns = [str(column).strip() for column in frame.columns]
    for column in frame.columns[frame.dtypes.map(pd.api.types.is_string_dtype).to_numpy()]:
        frame[column] = frame[column].str.strip().replace("", None)
    return frame


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per non-blank line; values keep their JSON types (checked later)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}); expected {ACCEPTED}.") from None
    lines = [line for line in text.split("\n") if line.strip()]
    try:  # one parse of the whole file; on any problem, line by line to name the bad line
        records = json.loads("[" + ",".join(lines) + "]")
        if len(records) != len(lines) or not all(isinstance(r, dict) for r in records):
            records = None
    except (RecursionError, ValueError):
        records = None
    if records is None:
        records = _jsonl_records(path, text)
    if not records:
        return pd.DataFrame({"source": [], "target": [], "count": []}, dtype=object)
    columns = list(dict.fromkeys(key for record in records for key in record))
    return pd.DataFrame(
        {key: pd.Series([r.get(key) for r in records], dtype=object) for key in columns}
    )


def _jsonl_records(path: Path, text: str) -> list[dict]:
    records: list[dict] = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}: data row {len(records) + 1} (line {line_number})"
        try:
            record = json.loads(line)
        except RecursionError:
            raise DataError(f"{where}: the JSON is nested too deeply to be a record.") from None
        except ValueError as exc:
            raise DataError(f"{where}: not valid JSON ({_short(exc)}).") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{where}: each line must be a JSON object such as "
                f'{{"source": "A", "target": "B", "count": 3}}, got a {type(record).__name__}.'
            )
        records.append(record)
    return records


def _has_moves(counts: pd.DataFrame) -> bool:
    return bool(((counts["source"] != counts["target"]) & (counts["count"] > 0)).any())


def _no_moves(path: Path) -> DataError:
    return DataError(
        f"{path}: there are no transitions between different states in this file (only a "
        f"header, self steps or zero counts); nothing to analyse."
    )


def _refuse_directory(path: Path, what: str) -> None:
    if path.is_dir():
        raise DataError(f"{path} is a directory, expected a {what}.")


def read_visits(path: str | Path, *, llm: str | None = None) -> pd.DataFrame:
    """A visits table ``source,visits[,llm]`` (CSV, TSV, Parquet or JSONL)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such visits file.")
    _refuse_directory(path, "visits CSV/Parquet file (columns source,visits[,llm])")
    fmt = TABLE_FORMATS.get(path.suffix.lower()) or JSON_FORMATS.get(path.suffix.lower(), "csv")
    if fmt == "json":
        fmt = "jsonl"
    frame = _read_table(path, fmt)
    return normalise_visits(frame, origin=str(path), llm=llm, typed=fmt in TYPED, whole=True)


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
    _refuse_directory(path, "transitions CSV/Parquet file (or TSV, JSONL, the paper's JSON)")
    if isinstance(visits, str | Path) and visits not in ("uniform", "outgoing"):
        visits = read_visits(visits, llm=llm)
    fmt = _sniff(path)
    options = dict(calls=calls, min_visits=min_visits, origin=str(path), llm=llm)
    scores = None
    if fmt == "json":
        counts, carried, scores = _read_paper_json(path)
        visits = carried if visits is None else visits
        counts = normalise_counts(counts, origin=str(path), llm=llm)
    else:
        frame = _read_table(path, fmt)
        if "count" not in frame.columns and {"source", "target"} <= set(frame.columns):
            raise DataError(f"{path}: missing column 'count'; expected {ACCEPTED}.")
        counts = normalise_counts(frame, origin=str(path), llm=llm, typed=fmt in TYPED)
    if not _has_moves(counts):
        raise _no_moves(path)
    data = Transitions.from_counts(counts, visits, scores=scores, **options)
    if not _has_moves(data.counts):
        raise DataError(
            f"{path}: no transitions between different states are left: --visits outgoing "
            f"drops every state with at most {min_visits:g} visits (moves out of it), and here "
            f"that is every state; lower --min-visits, or pass --visits uniform or a visits table."
        )
    return data


def _read_paper_json(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float] | None]:
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except RecursionError:
        raise DataError(f"{path}: the JSON is nested too deeply; expected {ACCEPTED}.") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too-long integers
        raise DataError(f"{path}: not valid JSON ({_short(exc)}); expected {ACCEPTED}.") from None
    if isinstance(payload, dict):
        return (*_word_layout(payload, path), None)
    if isinstance(payload, list):
        return _expression_layout(payload, path)
    raise DataError(f"{path}: JSON must be an object or a list; expected {ACCEPTED}.")


def _word_layout(payload: dict, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """{prompt: [answer, ...]}: one entry per call; the list length is the prompt's visits."""
    sources, targets, counts, visits = [], [], [], {}
    for key, answers in payload.items():
        if not key.strip() or "\x00" in key:
            raise DataError(
                f"{path}: entry {key!r}: the prompt is not a state name (it is empty or "
                f"contains a NUL character); fix or delete the entry."
            )
        if not isinstance(answers, list):
            raise DataError(
                f"{path}: entry {key!r} must be a list of answers (one per call), "
                f"got {type(answers).__name__}."
            )
        for position, answer in enumerate(answers, start=1):
            if not isinstance(answer, str) or not answer.strip() or "\x00" in answer:
                raise DataError(
                    f"{path}: entry {key!r}, answer {position}: {_clip(answer)} is not a state "
                    f"name (names are non-empty text without NUL); use a pooled name such as "
                    f"INVALID for rejected answers."
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
    for position, record in enumerate(payload, start=1):
        if not isinstance(record, dict) or "target_expression" not in record:
            raise DataError(
                f"{path}: record {position} needs a 'target_expression' and a list "
                f"'source_expressions' of {{'expression', 'score'}} objects."
            )
        target = record["target_expression"]
        listed = record.get("source_expressions")
        if not _is_name(target) or not isinstance(listed, list):
            raise DataError(
                f"{path}: record {position}: 'target_expression' must be a non-empty string "
                f"without NUL and 'source_expressions' a list."
            )
        if record.get("target_score") is not None:
            scores[target] = _score(record["target_score"], path, position)
        for item in listed:
            source = item.get("expression") if isinstance(item, dict) else None
            if not _is_name(source):
                raise DataError(
                    f"{path}: record {position}: every source needs a non-empty 'expression' "
                    f"string without NUL."
                )
            sources.append(source)
            targets.append(target)
            if item.get("score") is not None:
                scores[source] = _score(item["score"], path, position)
    frame = pd.DataFrame({"source": sources, "target": targets, "count": 1})
    visits = frame.groupby("source", as_index=False)["count"].sum()
    return frame, visits.rename(columns={"count": "visits"}), scores


def _is_name(value) -> bool:
    return isinstance(value, str) and bool(value.strip()) and "\x00" not in value


def _clip(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _score(value, path: Path, position: int) -> float:
    number = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = None
    if number is None or not math.isfinite(number):
        raise DataError(
            f"{path}: record {position}: score {_clip(value)} is not a finite number "
            f"(write it as a JSON number)."
        )
    return number
