"""Fuzz every reader: any byte string parses to valid `Transitions` or raises `DataError`.

Readers: CSV, TSV, Parquet, JSONL, the paper's word and expression JSON layouts, and visits
tables. Each test feeds raw bytes and structured near-valid inputs (valid rows with odd names
and numbers, NUL, surrounding whitespace, huge numbers, deep nesting, then byte mutations), so
the examples get past the first byte into the parsing and validation code. Deterministic
(`derandomize=True`, no example database) and bounded: every parse must finish within
`PER_PARSE_SECONDS`, and a parse that returns must give data that satisfies the invariants
of `Transitions` (non-negative whole int64 counts, non-empty string names without NUL, finite
non-negative visits for every state moved out of, at least one move between different states).
"""

from __future__ import annotations

import io
import json
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detailed_balance.data import DataError, Transitions, read_transitions, read_visits

PER_PARSE_SECONDS = 2.0
MAX_COUNT = 2**53
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- building blocks -------------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(
        ["A", "B", "C", "BUZZY", " B", "B ", " ", "", "a\x00", "\x00", "x,y", 'q"uote', "Ä中🙂"]
        + ["line\nbreak", "tab\there", "nan", "NULL", "true", "3", "-1", "\u202eexe", "x" * 300]
    ),
    st.text(max_size=8),
)
NUMBER_TEXT = st.one_of(
    st.sampled_from(
        ["0", "1", "3", "17", "-1", "2.5", "3.0", "1e3", "1e300", "-1e300", "1e400", "inf", "nan"]
        + ["", " 5", "5 ", "0x10", "1_000", "true", "9007199254740992", "9007199254740993"]
        + ["12345678901234567890123456", "9" * 500, "+4", "٣", "1,5"]
    ),
    st.integers(min_value=-5, max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([2**53, 2**53 + 1, 2**63, 10**400, 0, 1, 3, 5]),
    st.floats(allow_nan=False, allow_infinity=False),
    NAMES,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)
COUNTS = st.one_of(
    st.integers(min_value=0, max_value=50),
    st.integers(min_value=-3, max_value=2**63 - 1),
    st.sampled_from([2**53, 2**53 + 1, 10**26, 10**400, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    NAMES,
)


def deep(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


@st.composite
def mutated(draw, base: st.SearchStrategy[bytes]) -> bytes:
    """`base`, then up to three byte-level edits (flip, insert, delete, truncate, duplicate)."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
        position = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if kind == "insert" or not data:
            data[position:position] = draw(
                st.sampled_from([b"\x00", b",", b"\t", b"\n", b'"', b"{", b"[", b"\xff", b" "])
            )
        elif kind == "flip":
            data[position] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "delete":
            del data[position]
        elif kind == "truncate":
            del data[position:]
        else:
            data[position:position] = data[position : position + 8]
    return bytes(data)


@st.composite
def delimited(draw, sep: str, columns: tuple[str, ...] = ("source", "target", "count")) -> bytes:
    """A header (sometimes altered) and rows of odd names and numbers."""
    header = list(columns)
    if draw(st.booleans()):
        header.append("llm")
    alteration = draw(st.sampled_from(["none", "none", "spaces", "drop", "extra", "twice"]))
    if alteration == "spaces":
        header = [f" {name} " for name in header]
    elif alteration == "drop":
        header.pop(draw(st.integers(min_value=0, max_value=len(header) - 1)))
    elif alteration == "extra":
        header.append("weight")
    elif alteration == "twice":
        header.append(header[0])
    numeric = {"count", "visits"}
    rows = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        cells = [draw(NUMBER_TEXT if name.strip() in numeric else NAMES) for name in header]
        if draw(st.integers(min_value=0, max_value=9)) == 0:  # a short or long row
            cells = cells[:-1] if draw(st.booleans()) else [*cells, "extra"]
        rows.append(sep.join(cells))
    text = "\n".join([sep.join(header), *rows]) + draw(st.sampled_from(["\n", "", "\r\n", "\n\n"]))
    return text.encode("utf-8", "surrogatepass")


def plain_rows(draw, n: int) -> list[tuple[str, str, int]]:
    """Valid rows between a few states (so that some examples parse)."""
    states = ["A", "B", "C", "D"]
    return [
        (draw(st.sampled_from(states)), draw(st.sampled_from(states)), draw(st.integers(0, 20)))
        for _ in range(n)
    ]


@st.composite
def valid_csv(draw, sep: str) -> bytes:
    rows = plain_rows(draw, draw(st.integers(min_value=1, max_value=8)))
    pad = draw(st.sampled_from(["", " ", "  "]))
    lines = [sep.join(["source", "target", "count"])]
    lines += [sep.join(f"{pad}{cell}{pad}" for cell in map(str, row)) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def csv_inputs(sep: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=400),
        delimited(sep),
        valid_csv(sep),
        mutated(valid_csv(sep)),
        mutated(delimited(sep)),
    )


@st.composite
def jsonl_records(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        record = {
            "source": draw(st.one_of(NAMES, JSON_VALUES)),
            "target": draw(st.one_of(NAMES, JSON_VALUES)),
            "count": draw(COUNTS),
        }
        if draw(st.booleans()):
            record["llm"] = draw(st.one_of(NAMES, JSON_SCALARS))
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            del record[draw(st.sampled_from(sorted(record)))]
        lines.append(json.dumps(record))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        lines.append(draw(st.sampled_from([deep(50_000), '{"source": ' + deep(5000) + "}", "[]"])))
    return ("\n".join(lines) + "\n").encode()


@st.composite
def valid_jsonl(draw) -> bytes:
    rows = plain_rows(draw, draw(st.integers(min_value=1, max_value=8)))
    lines = [json.dumps({"source": s, "target": t, "count": n}) for s, t, n in rows]
    return ("\n".join(lines) + "\n").encode()


@st.composite
def parquet_table(draw) -> bytes:
    n = draw(st.integers(min_value=0, max_value=6))
    states = ["A", "B", "C"]
    name_kind = st.sampled_from(["str", "str", "int", "float", "bool", "bytes", "date", "none"])
    count_kind = st.sampled_from(["int", "int", "float", "bool", "str", "none", "big", "uint"])

    def column(kind: str, role: str):
        if kind == "str":
            return [draw(st.one_of(st.sampled_from(states), NAMES)) for _ in range(n)]
        if kind == "int":
            return np.array([draw(st.integers(-3, 20)) for _ in range(n)], dtype=np.int64)
        if kind == "uint":
            return np.array(
                [draw(st.sampled_from([0, 3, 2**63 + 5, 2**64 - 1])) for _ in range(n)],
                dtype=np.uint64,
            )
        if kind == "big":
            return np.array(
                [draw(st.sampled_from([2**53, 2**53 + 1, 2**62, 2**63 - 1, 5])) for _ in range(n)],
                dtype=np.int64,
            )
        if kind == "float":
            return np.array(
                [draw(st.floats(allow_nan=True, allow_infinity=True)) for _ in range(n)],
                dtype=float,
            )
        if kind == "bool":
            return np.array([draw(st.booleans()) for _ in range(n)], dtype=bool)
        if kind == "bytes":
            return [draw(st.sampled_from(states)).encode() for _ in range(n)]
        if kind == "date":
            return pd.to_datetime(["2020-01-01"] * n).date.tolist()
        return [None] * n

    frame = pd.DataFrame(
        {
            "source": pd.Series(column(draw(name_kind), "name"), dtype=object)
            if n
            else pd.Series([], dtype=object),
            "target": pd.Series(column(draw(name_kind), "name"), dtype=object)
            if n
            else pd.Series([], dtype=object),
        }
    )
    frame["source"] = frame["source"].infer_objects()
    frame["target"] = frame["target"].infer_objects()
    counts = column(draw(count_kind), "count")
    frame["count"] = counts if n else []
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        frame["llm"] = column(draw(name_kind), "name") if n else []
    if draw(st.integers(min_value=0, max_value=6)) == 0:
        frame = frame.drop(columns=[draw(st.sampled_from(list(frame.columns)))])
    buffer = io.BytesIO()
    try:
        frame.to_parquet(buffer, index=False)
    except Exception:  # noqa: BLE001 - a frame pyarrow cannot store: fall back to a valid one
        buffer = io.BytesIO()
        pd.DataFrame({"source": ["A"], "target": ["B"], "count": [3]}).to_parquet(buffer)
    return buffer.getvalue()


@st.composite
def valid_parquet(draw) -> bytes:
    rows = plain_rows(draw, draw(st.integers(min_value=1, max_value=8)))
    buffer = io.BytesIO()
    pd.DataFrame(rows, columns=["source", "target", "count"]).to_parquet(buffer, index=False)
    return buffer.getvalue()


@st.composite
def word_layout(draw) -> bytes:
    payload = {}
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        key = draw(NAMES)
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            payload[key] = draw(JSON_VALUES)
        else:
            payload[key] = draw(
                st.lists(
                    st.one_of(st.sampled_from(["A", "B", "C", "INVALID"]), JSON_VALUES), max_size=6
                )
            )
    return json.dumps(payload).encode()


@st.composite
def valid_word_layout(draw) -> bytes:
    states = ["A", "B", "C", "INVALID"]
    payload = {
        key: draw(st.lists(st.sampled_from(states), min_size=1, max_size=6))
        for key in draw(st.lists(st.sampled_from(states[:3]), min_size=1, max_size=3, unique=True))
    }
    return json.dumps(payload).encode()


SCORES = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    NAMES,
    st.sampled_from([10**400, -(10**400), 1, -2]),
)


@st.composite
def expression_layout(draw) -> bytes:
    records = []
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        record = {
            "target_expression": draw(
                st.one_of(st.sampled_from(["x", "p1*x", "x+1"]), JSON_VALUES)
            ),
            "source_expressions": draw(
                st.one_of(
                    st.lists(
                        st.one_of(
                            st.fixed_dictionaries(
                                {
                                    "expression": st.one_of(
                                        st.sampled_from(["x", "p1*x"]), NAMES, JSON_SCALARS
                                    )
                                },
                                optional={"score": SCORES},
                            ),
                            JSON_VALUES,
                        ),
                        max_size=4,
                    ),
                    JSON_VALUES,
                )
            ),
        }
        if draw(st.booleans()):
            record["target_score"] = draw(SCORES)
        if draw(st.integers(min_value=0, max_value=6)) == 0:
            del record[draw(st.sampled_from(sorted(record)))]
        records.append(record)
    return json.dumps(records).encode()


@st.composite
def valid_expression_layout(draw) -> bytes:
    exprs = ["x", "p1*x", "x+1"]
    records = [
        {
            "target_expression": target,
            "target_score": draw(st.floats(-10, 0)),
            "source_expressions": [
                {"expression": e, "score": draw(st.floats(-10, 0))}
                for e in draw(st.lists(st.sampled_from(exprs), min_size=1, max_size=3))
            ],
        }
        for target in draw(st.lists(st.sampled_from(exprs), min_size=1, max_size=3))
    ]
    return json.dumps(records).encode()


DEEP_JSON = st.sampled_from(
    [
        deep(100_000).encode(),
        deep(100_000, '{"a":', "}").encode()[:500_000],
        b'{"A": ' + deep(3000).encode() + b"}",
    ]
)

# -- invariants ------------------------------------------------------------------------------


def check_names(values, what: str) -> None:
    for name in np.asarray(values, dtype=object):
        assert type(name) is str, f"{what} {name!r} is a {type(name).__name__}"
        assert name.strip() and "\x00" not in name, f"{what} {name!r}"


def check_transitions(data: Transitions) -> None:
    counts, visits = data.counts, data.visits
    assert list(counts.columns) == ["llm", "source", "target", "count"]
    assert counts["count"].dtype == np.int64
    assert (counts["count"] >= 0).all() and (counts["count"] <= MAX_COUNT).all()
    assert not counts.duplicated(["llm", "source", "target"]).any()
    for column in ("llm", "source", "target"):
        check_names(counts[column], column)
    assert list(visits.columns) == ["llm", "source", "visits"]
    values = visits["visits"].to_numpy(dtype=float)
    assert np.isfinite(values).all() and (values >= 0).all()
    check_names(visits["llm"], "llm")
    check_names(visits["source"], "source")
    moves = counts[(counts["source"] != counts["target"]) & (counts["count"] > 0)]
    assert len(moves) > 0, "a parse that returns has transitions between different states"
    out = counts[counts["count"] > 0][["llm", "source"]].drop_duplicates()
    known = pd.MultiIndex.from_frame(visits[["llm", "source"]])
    assert pd.MultiIndex.from_frame(out).isin(known).all(), "a state moved out of has no visits"
    if data.scores is not None:
        assert np.isfinite(data.scores.to_numpy(dtype=float)).all()
    # the views work on whatever was accepted
    for llm in data.llms:
        data.moves(llm), data.pairs(llm), data.state_table(llm)


def check_visits_table(table: pd.DataFrame) -> None:
    assert list(table.columns) == ["llm", "source", "visits"]
    values = table["visits"].to_numpy(dtype=float)
    assert np.isfinite(values).all() and (values >= 0).all()
    assert (values == np.round(values)).all() and (values <= MAX_COUNT).all()
    check_names(table["llm"], "llm")
    check_names(table["source"], "source")


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


OUTCOMES: dict[str, Counter] = defaultdict(Counter)


def parse(workdir: Path, name: str, payload: bytes, read, check, also: Path | None = None) -> None:
    """Write `payload`, read it with `read`; DataError or valid data, in bounded time.

    A DataError must name the file it is about: `name`, or `also` (a second file read).
    """
    path = workdir / name
    path.write_bytes(payload)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy/pandas warnings are defects too
            result = read(path)
    except DataError as exc:
        named = str(path) in str(exc) or (also is not None and str(also) in str(exc))
        assert named, f"the message does not name the file: {exc}"
        result = None
    elapsed = time.perf_counter() - start
    assert elapsed < PER_PARSE_SECONDS, f"{name}: parse took {elapsed:.2f} s"
    OUTCOMES[name]["refused" if result is None else "parsed"] += 1
    if result is not None:
        check(result)


VISITS_OPTIONS = st.sampled_from(
    [(None, None), ("uniform", None), ("uniform", 3.0), ("uniform", 1000.0), ("outgoing", None)]
)


def transitions_reader(options):
    visits, calls = options
    return lambda path: read_transitions(path, visits, calls=calls)


# -- the tests -------------------------------------------------------------------------------


@FUZZ
@given(payload=csv_inputs(","), options=VISITS_OPTIONS)
def test_csv_reader(workdir, payload, options):
    parse(workdir, "t.csv", payload, transitions_reader(options), check_transitions)


@FUZZ
@given(payload=csv_inputs("\t"), options=VISITS_OPTIONS)
def test_tsv_reader(workdir, payload, options):
    parse(workdir, "t.tsv", payload, transitions_reader(options), check_transitions)


@FUZZ
@given(
    payload=st.one_of(
        st.binary(max_size=400),
        parquet_table(),
        valid_parquet(),
        mutated(valid_parquet()),
        valid_parquet().map(lambda b: b[: len(b) // 2]),
    ),
    options=VISITS_OPTIONS,
)
def test_parquet_reader(workdir, payload, options):
    parse(workdir, "t.parquet", payload, transitions_reader(options), check_transitions)


@FUZZ
@given(
    payload=st.one_of(
        st.binary(max_size=400), jsonl_records(), valid_jsonl(), mutated(valid_jsonl())
    ),
    options=VISITS_OPTIONS,
)
def test_jsonl_reader(workdir, payload, options):
    parse(workdir, "t.jsonl", payload, transitions_reader(options), check_transitions)


@FUZZ
@given(
    payload=st.one_of(
        st.binary(max_size=400),
        word_layout(),
        valid_word_layout(),
        mutated(valid_word_layout()),
        DEEP_JSON,
    ),
    options=VISITS_OPTIONS,
)
def test_word_json_reader(workdir, payload, options):
    parse(workdir, "words.json", payload, transitions_reader(options), check_transitions)


@FUZZ
@given(
    payload=st.one_of(
        st.binary(max_size=400),
        expression_layout(),
        valid_expression_layout(),
        mutated(valid_expression_layout()),
        DEEP_JSON,
    ),
    options=VISITS_OPTIONS,
)
def test_expression_json_reader(workdir, payload, options):
    parse(workdir, "expr.json", payload, transitions_reader(options), check_transitions)


@FUZZ
@given(
    payload=st.one_of(
        st.binary(max_size=400),
        delimited(",", ("source", "visits")),
        mutated(delimited(",", ("source", "visits"))),
    )
)
def test_visits_reader(workdir, payload):
    parse(workdir, "v.csv", payload, read_visits, check_visits_table)


@st.composite
def valid_visits(draw) -> bytes:
    """Visits for the states of `valid_csv`, often enough (≥ 160 = 8 rows × 20) to be accepted."""
    rows = [
        f"{state},{draw(st.sampled_from(['160', '200', '1', '0', '2.5', '-3', '']))}"
        for state in draw(st.lists(st.sampled_from("ABCD"), min_size=1, max_size=4, unique=True))
    ]
    return ("\n".join(["source,visits", *rows]) + "\n").encode()


@FUZZ
@given(
    counts=valid_csv(","),
    visits=st.one_of(
        valid_visits(),
        valid_visits(),
        mutated(valid_visits()),
        delimited(",", ("source", "visits")),
    ),
)
def test_transitions_with_a_visits_file(workdir, counts, visits):
    visits_path = workdir / "with_v.csv"
    visits_path.write_bytes(visits)
    parse(
        workdir,
        "with_t.csv",
        counts,
        lambda path: read_transitions(path, visits_path),
        check_transitions,
        also=visits_path,
    )


def test_the_structured_inputs_reach_both_outcomes():
    """Each reader's examples were near enough to valid that some parsed and some were refused
    (runs after the fuzz tests above, in file order; skipped when they were deselected)."""
    if len(OUTCOMES) < 8:
        pytest.skip("the fuzz tests of every reader did not run in this session")
    for name, seen in OUTCOMES.items():
        assert seen["parsed"] >= 5 and seen["refused"] >= 5, (name, dict(seen))
