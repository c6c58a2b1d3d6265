"""Transitions: conventions, readers, validation messages and graph views against hand counts."""

from __future__ import annotations

import datetime
import itertools
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from detailed_balance.data import DataError, Transitions, read_transitions, read_visits

CLAUDE = pd.DataFrame(
    {
        "source": ["TURKEY", "PERSONAL", "PROBLEMS", "BUZZY", "BUZZY", "ATTITUDE", "ATTITUDE"],
        "target": ["ATTITUDE"] * 4 + ["TURKEY", "PERSONAL", "PROBLEMS"],
        "count": [4122, 3879, 3558, 3859, 238, 66, 20],
    }
)


def test_uniform_visits_are_calls_over_prompt_states():
    data = Transitions.from_counts(CLAUDE, "uniform", calls=20000)
    assert data.visits["visits"].tolist() == [4000.0] * 5
    moves = data.moves().set_index(["source", "target"])
    # T = min(1, n/N0): TURKEY→ATTITUDE 4122 > 4000 is capped at 1
    assert moves.loc[("TURKEY", "ATTITUDE"), "rate"] == 1.0
    assert moves.loc[("ATTITUDE", "PERSONAL"), "rate"] == pytest.approx(66 / 4000)
    # without `calls` the total count is used: 15742 / 5
    assert Transitions.from_counts(CLAUDE, "uniform").visits["visits"].iloc[0] == 15742 / 5


def test_outgoing_visits_drop_rarely_used_states():
    counts = pd.DataFrame(
        {
            "source": ["a", "a", "b", "b", "c", "a"],
            "target": ["b", "c", "a", "a", "a", "a"],  # b→a twice (summed), a→a is a self step
            "count": [3, 1, 2, 1, 1, 5],
        }
    )
    data = Transitions.from_counts(counts, "outgoing")
    visits = data.visits.set_index("source")["visits"]
    # N0(a) = 3 + 1 (self step excluded) = 4, N0(b) = 3, N0(c) = 1 ≤ 1 → c dropped everywhere
    assert visits.to_dict() == {"a": 4.0, "b": 3.0}
    assert set(data.states) == {"a", "b"}
    assert data.dropped_states == 1
    assert data.counts.set_index(["source", "target"])["count"].to_dict() == {
        ("a", "a"): 5,
        ("a", "b"): 3,
        ("b", "a"): 3,
    }


def test_pairs_orders_and_counts_both_directions():
    data = Transitions.from_counts(CLAUDE, "uniform", calls=20000)
    pairs = data.pairs().set_index(["f", "g"])
    assert pairs.loc[("ATTITUDE", "PERSONAL"), ["n_fg", "n_gf"]].tolist() == [66, 3879]
    assert pairs.loc[("BUZZY", "TURKEY"), ["n_fg", "n_gf"]].tolist() == [238, 0]
    assert len(pairs) == 5
    assert (pairs["N_f"] == 4000).all()


def test_unvisited_targets_have_unknown_visits():
    counts = pd.DataFrame(
        {"source": ["a", "b", "a"], "target": ["b", "a", "INVALID"], "count": [2, 3, 4]}
    )
    data = Transitions.from_counts(counts, pd.DataFrame({"source": ["a", "b"], "visits": [10, 5]}))
    pair = data.pairs().set_index(["f", "g"]).loc[("INVALID", "a")]
    assert np.isnan(pair["N_f"]) and pair["N_g"] == 10 and pair["n_gf"] == 4


def _brute_force_triangles(matrix: np.ndarray, min_count: int) -> set[tuple[int, int, int]]:
    n = len(matrix)
    out = set()
    for i, j, k in itertools.combinations(range(n), 3):
        edges = [(i, j), (j, i), (j, k), (k, j), (i, k), (k, i)]
        if all(matrix[a, b] >= min_count for a, b in edges):
            out.add((i, j, k))
    return out


@pytest.mark.parametrize("min_count", [1, 2])
def test_cycles_match_brute_force(min_count):
    rng = np.random.default_rng(3)
    n = 40
    matrix = rng.poisson(2.0, size=(n, n)) * (rng.random((n, n)) < 0.6)
    np.fill_diagonal(matrix, 0)
    i, j = np.nonzero(matrix)
    names = np.array([f"s{k:02d}" for k in range(n)])
    counts = pd.DataFrame({"source": names[i], "target": names[j], "count": matrix[i, j]})
    data = Transitions.from_counts(counts, pd.DataFrame({"source": names, "visits": 1000}))
    assert list(data.states) == list(names)
    found = data.cycles(min_count=min_count)
    got = set(map(tuple, found[["i", "j", "k"]].to_numpy()))
    expected = _brute_force_triangles(matrix, min_count)
    assert got == expected and len(expected) > 5
    assert (found["i"] < found["j"]).all() and (found["j"] < found["k"]).all()


def test_components():
    counts = pd.DataFrame(
        {
            "source": ["a", "b", "b", "c", "x", "y"],
            "target": ["b", "a", "c", "d", "y", "x"],
            "count": 1,
        }
    )
    data = Transitions.from_counts(counts, "uniform")
    strong = pd.Series(data.strong_components(), index=data.states)
    weak = pd.Series(data.weak_components(), index=data.states)
    assert strong["a"] == strong["b"] != strong["c"] != strong["d"]
    assert weak["a"] == weak["d"] and weak["a"] != weak["x"] and weak["x"] == weak["y"]


def test_several_llms_share_one_state_index():
    counts = pd.concat([CLAUDE.assign(llm="claude"), CLAUDE.head(2).assign(llm="gemini")])
    # gemini counts 8001 transitions, so it made at least 8001 calls (fewer are refused)
    data = Transitions.from_counts(counts, "uniform", calls={"claude": 20000, "gemini": 10000})
    assert data.llms == ["claude", "gemini"]
    with pytest.raises(DataError, match="several LLMs"):
        data.pairs()
    assert data.visits_array("gemini")[data.index_of(["TURKEY"])[0]] == 5000.0
    assert len(data.pairs("gemini")) == 2 and data.select("gemini").n_states == 3


# -- readers ---------------------------------------------------------------------------------


def test_csv_parquet_jsonl_round_trip(tmp_path):
    data = Transitions.from_counts(CLAUDE, "uniform", calls=25000)
    data.to_csv(tmp_path / "t.csv", tmp_path / "v.csv")
    data.to_parquet(tmp_path / "t.parquet")
    data.counts.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    for name in ("t.csv", "t.parquet", "t.jsonl"):
        back = read_transitions(tmp_path / name, tmp_path / "v.csv")
        assert back.counts.equals(data.counts)
        assert back.visits.equals(data.visits)
        assert back.data_hash() == data.data_hash()
    # no extension: sniffed from the content
    (tmp_path / "noext").write_text((tmp_path / "t.csv").read_text())
    assert read_transitions(tmp_path / "noext", "uniform").counts.equals(data.counts)


def test_word_layout(tmp_path):
    payload = {"BUZZY": ["ATTITUDE", "ATTITUDE", "INVALID", "BUZZY"], "ATTITUDE": ["TURKEY"]}
    path = tmp_path / "words.json"
    path.write_text(json.dumps(payload))
    data = read_transitions(path)
    assert data.visits.set_index("source")["visits"].to_dict() == {"ATTITUDE": 1, "BUZZY": 4}
    counts = data.counts.set_index(["source", "target"])["count"].to_dict()
    assert counts == {
        ("ATTITUDE", "TURKEY"): 1,
        ("BUZZY", "ATTITUDE"): 2,
        ("BUZZY", "BUZZY"): 1,  # a self step: a visit without a move
        ("BUZZY", "INVALID"): 1,
    }
    assert data.moves()["count"].sum() == 4


def test_expression_layout(tmp_path):
    payload = [
        {
            "target_expression": "p1*x",
            "target_score": -2.0,
            "source_expressions": [{"expression": "x", "score": -1.0}, {"expression": "p1*x"}],
        },
        {"target_expression": "x", "source_expressions": [{"expression": "p1*x", "score": -2.0}]},
    ]
    path = tmp_path / "expr.json"
    path.write_text(json.dumps(payload))
    data = read_transitions(path)
    assert data.visits.set_index("source")["visits"].to_dict() == {"p1*x": 2, "x": 1}
    assert data.moves().set_index(["source", "target"])["count"].to_dict() == {
        ("p1*x", "x"): 1,
        ("x", "p1*x"): 1,
    }
    assert data.state_table()["score"].to_dict() == {"p1*x": -2.0, "x": -1.0}


# -- bad input: the message names the file, the row/state and what to do ----------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("source,target,count\na,b,3\nb,a,-1\n", r"data row 2, column 'count': '-1' is negative"),
        (
            "source,target,count\na,b,2.5\n",
            r"data row 1, column 'count': '2.5' is not a whole number",
        ),
        (
            "source,target,count\na,b,lots\n",
            r"data row 1, column 'count': 'lots' is missing or not a number",
        ),
        ("source,target,count\n,b,1\n", r"data row 1, column 'source': the source name is empty"),
        ("source,target,count,weight\na,b,1,2\n", r"unknown column 'weight'"),
        ("source,target\na,b\n", r"missing column 'count'"),
    ],
)
def test_bad_csv_messages(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(DataError, match=message) as info:
        read_transitions(path)
    assert str(path) in str(info.value)


def test_bad_visits_messages(tmp_path):
    (tmp_path / "t.csv").write_text("source,target,count\na,b,5\nb,a,1\n")
    (tmp_path / "v.csv").write_text("source,visits\na,3\nb,4\n")
    with pytest.raises(DataError, match=r"state 'a' .* has 3 visits but 5 transitions"):
        read_transitions(tmp_path / "t.csv", tmp_path / "v.csv")
    (tmp_path / "v.csv").write_text("source,visits\na,10\n")
    with pytest.raises(DataError, match=r"state 'b' .* no visits row"):
        read_transitions(tmp_path / "t.csv", tmp_path / "v.csv")
    (tmp_path / "v.csv").write_text("source,visits\na,-2\n")
    with pytest.raises(DataError, match=r"v.csv: data row 1, column 'visits': '-2'"):
        read_visits(tmp_path / "v.csv")


def test_duplicates_are_summed(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("source,target,count\na,b,2\na,b,3\nb,a,1\n")
    data = read_transitions(path, "uniform")
    assert data.counts.set_index(["source", "target"])["count"].to_dict() == {
        ("a", "b"): 5,
        ("b", "a"): 1,
    }


def test_unknown_format_and_bad_json(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_transitions(path)
    path = tmp_path / "x.json"
    path.write_text('{"a": "b"}')
    with pytest.raises(DataError, match="entry 'a' must be a list"):
        read_transitions(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_transitions(path)


# -- hardening (issue item 9): every reader refuses bad input with file, data row and column ---


def _write(tmp_path, name, body):
    path = tmp_path / name
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body)
    return path


@pytest.mark.parametrize("value", ["1e300", "12345678901234567890123456", "9007199254740993"])
def test_huge_counts_are_too_large_not_negative(tmp_path, value):
    path = _write(tmp_path, "big.csv", f"source,target,count\na,b,3\nb,a,{value}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way
        with pytest.raises(DataError) as info:
            read_transitions(path)
    message = str(info.value)
    assert f"{path}: data row 2, column 'count': {value!r} is too large" in message
    assert "negative" not in message and "np.int64" not in message


def test_duplicate_rows_summing_past_the_limit_are_too_large(tmp_path):
    big = 2**52
    path = _write(tmp_path, "sum.csv", f"source,target,count\na,b,{big}\na,b,{big}\na,b,1\n")
    with pytest.raises(DataError, match=r"sum.csv: .*'a' → 'b'.* add up to .* too large"):
        read_transitions(path, "uniform")


def test_row_numbers_are_data_rows_in_every_format(tmp_path):
    frame = pd.DataFrame(
        {"source": ["a", "b", "c"], "target": ["b", "a", "a"], "count": [2, 3, -1]}
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    for name in ("t.csv", "t.tsv", "t.parquet", "t.jsonl"):
        with pytest.raises(DataError) as info:
            read_transitions(tmp_path / name)
        assert str(info.value).startswith(
            f"{tmp_path / name}: data row 3, column 'count': -1 is negative"
        ) or str(info.value).startswith(
            f"{tmp_path / name}: data row 3, column 'count': '-1' is negative"
        ), str(info.value)


def test_visits_rows_use_the_same_convention(tmp_path):
    _write(tmp_path, "t.csv", "source,target,count\na,b,2\nb,a,2\n")
    _write(tmp_path, "v.csv", "source,visits\na,3\nb,-2\n")
    with pytest.raises(DataError, match=r"v.csv: data row 2, column 'visits': '-2'"):
        read_transitions(tmp_path / "t.csv", tmp_path / "v.csv")


def test_whitespace_around_names_in_delimited_files_is_stripped(tmp_path):
    path = _write(tmp_path, "sp.csv", "source, target, count\nA, B, 5\nB , A,3\n")
    data = read_transitions(path)
    assert data.counts.set_index(["source", "target"])["count"].to_dict() == {
        ("A", "B"): 5,
        ("B", "A"): 3,
    }
    tsv = _write(tmp_path, "sp.tsv", "source\ttarget\tcount\n A \tB\t 5\nB\tA \t3\n")
    assert read_transitions(tsv).counts.equals(data.counts)


@pytest.mark.parametrize("body", ["source,target,count\n", "source,target,count\na,a,3\nb,b,4\n"])
def test_no_moves_between_states_is_said_plainly(tmp_path, body):
    path = _write(tmp_path, "empty.csv", body)
    with pytest.raises(DataError) as info:
        read_transitions(path, "uniform")
    message = str(info.value)
    assert f"{path}: there are no transitions between different states" in message
    assert "several LLMs" not in message


def test_outgoing_dropping_every_state_is_said_plainly(tmp_path):
    path = _write(tmp_path, "rare.csv", "source,target,count\na,b,1\nb,a,1\n")
    with pytest.raises(
        DataError,
        match=r"rare.csv: no transitions between different states .*"
        r"--min-visits",
    ):
        read_transitions(path)


def test_views_of_data_without_llms_do_not_talk_of_several_llms():
    empty = Transitions.from_counts(
        pd.DataFrame({"source": [], "target": [], "count": []}), "uniform"
    )
    with pytest.raises(DataError, match="no transitions between different states"):
        empty.pairs()


def test_names_with_nul_are_refused_with_file_row_and_column(tmp_path):
    path = _write(tmp_path, "nul.csv", b"source,target,count\na,b,3\nb,a\x00,4\n")
    with pytest.raises(DataError) as info:
        read_transitions(path)
    assert f"{path}: data row 2, column 'target'" in str(info.value)
    assert "NUL" in str(info.value)
    words = _write(tmp_path, "nul.json", '{"a\\u0000": ["b", "b"], "b": ["a", "a"]}')
    with pytest.raises(DataError, match=r"nul.json: entry 'a\\x00'.*NUL"):
        read_transitions(words)
    expr = _write(
        tmp_path,
        "nul_expr.json",
        '[{"target_expression": "x", "source_expressions": [{"expression": "y\\u0000"}]}]',
    )
    with pytest.raises(DataError, match=r"nul_expr.json: record 1.*NUL"):
        read_transitions(expr)


def test_deeply_nested_json_is_a_data_error(tmp_path):
    path = _write(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=r"deep.json: .*nested too deeply"):
        read_transitions(path)
    lines = _write(tmp_path, "deep.jsonl", '{"source": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(DataError, match=r"deep.jsonl: .*nested too deeply"):
        read_transitions(lines)


@pytest.mark.parametrize(
    ("line", "column", "kind"),
    [
        ('{"source": ["a"], "target": "b", "count": 3}', "source", "list"),
        ('{"source": "a", "target": {"x": 1}, "count": 3}', "target", "dict"),
        ('{"source": "a", "target": "b", "count": true}', "count", "bool"),
        ('{"source": "a", "target": "b", "count": "3"}', "count", "str"),
        ('{"source": 1.5, "target": "b", "count": 3}', "source", "float"),
        ('{"source": "a", "target": false, "count": 3}', "target", "bool"),
    ],
)
def test_jsonl_values_of_the_wrong_type_are_refused(tmp_path, line, column, kind):
    good = '{"source": "b", "target": "a", "count": 4}'
    path = _write(tmp_path, "t.jsonl", f"{good}\n{line}\n")
    with pytest.raises(DataError) as info:
        read_transitions(path)
    message = str(info.value)
    assert f"{path}: data row 2, column '{column}'" in message and f"is a {kind}" in message


@pytest.mark.parametrize(
    ("column", "values", "kind"),
    [
        ("count", ["3", "4"], "str"),
        ("count", [True, True], "bool"),
        ("source", [b"a", b"b"], "bytes"),
        ("source", [datetime.date(2020, 1, 1), datetime.date(2020, 1, 2)], "date"),
    ],
)
def test_parquet_values_of_the_wrong_type_are_refused(tmp_path, column, values, kind):
    frame = pd.DataFrame({"source": ["a", "b"], "target": ["b", "a"], "count": [3, 4]})
    frame[column] = pd.Series(values, dtype=object if kind != "bool" else bool)
    path = tmp_path / "t.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(DataError) as info:
        read_transitions(path)
    message = str(info.value)
    assert f"{path}: data row 1, column '{column}'" in message and kind in message


def test_whole_number_names_in_typed_files_become_strings(tmp_path):
    frame = pd.DataFrame({"source": [1, 2], "target": [2, 1], "count": [3, 4]})
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    data = read_transitions(tmp_path / "t.parquet")
    assert list(data.states) == ["1", "2"]
    # JSONL gives an object column (a read-only view in pandas): found by the fuzz test
    _write(
        tmp_path,
        "t.jsonl",
        '{"source": 1, "target": "2", "count": 3}\n{"source": "2", "target": 1, "count": 4}\n',
    )
    assert list(read_transitions(tmp_path / "t.jsonl").states) == ["1", "2"]


@pytest.mark.parametrize(("value", "kind"), [("2.5", "not a whole number"), ("true", "")])
def test_fractional_or_odd_visits_are_refused(tmp_path, value, kind):
    _write(tmp_path, "t.csv", "source,target,count\na,b,2\nb,a,2\n")
    _write(tmp_path, "v.csv", f"source,visits\na,3\nb,{value}\n")
    with pytest.raises(DataError, match=rf"v.csv: data row 2, column 'visits': '{value}'"):
        read_transitions(tmp_path / "t.csv", tmp_path / "v.csv")
    _write(tmp_path, "v.jsonl", '{"source": "a", "visits": 3}\n{"source": "b", "visits": true}\n')
    with pytest.raises(DataError, match=r"v.jsonl: data row 2, column 'visits': True is a bool"):
        read_visits(tmp_path / "v.jsonl")


def test_uniform_calls_below_the_counted_moves_are_refused(tmp_path):
    path = _write(tmp_path, "t.csv", "source,target,count\na,b,3\na,c,2\nb,a,1\n")
    with pytest.raises(DataError) as info:
        read_transitions(path, "uniform", calls=3)
    message = str(info.value)
    assert str(path) in message
    assert "state 'a'" in message and "5 transitions out of it" in message and "calls 3" in message
    # enough calls: accepted (N₀ below one state's moves is the paper's capped convention)
    assert read_transitions(path, "uniform", calls=6).visits["visits"].tolist() == [3.0, 3.0]


def test_cli_reports_reader_errors_with_exit_2(tmp_path, capsys):
    from detailed_balance.cli import main

    big = _write(tmp_path, "big.csv", "source,target,count\na,b,1e300\nb,a,3\n")
    assert main(["check", str(big)]) == 2
    err = capsys.readouterr().err
    assert f"{big}: data row 1, column 'count': '1e300' is too large" in err
    assert "Traceback" not in err and "unexpected" not in err
    nul = _write(tmp_path, "nul.csv", b"source,target,count\na\x00,b,3\nb,a\x00,4\n")
    out = tmp_path / "fit.csv"
    assert main(["fit", str(nul), "--method", "least-action", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{nul}: data row 1, column 'source'" in err and "unexpected" not in err
    assert not out.exists()
    empty = _write(tmp_path, "empty.csv", "source,target,count\n")
    assert main(["check", str(empty)]) == 2
    assert "no transitions between different states" in capsys.readouterr().err
