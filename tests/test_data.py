"""Transitions: conventions, readers, validation messages and graph views against hand counts."""

from __future__ import annotations

import itertools
import json

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
    data = Transitions.from_counts(counts, "uniform", calls={"claude": 20000, "gemini": 10})
    assert data.llms == ["claude", "gemini"]
    with pytest.raises(DataError, match="several LLMs"):
        data.pairs()
    assert data.visits_array("gemini")[data.index_of(["TURKEY"])[0]] == 5.0
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
        ("source,target,count\na,b,3\nb,a,-1\n", r"row 3: count '-1' is negative"),
        ("source,target,count\na,b,2.5\n", r"row 2: count '2.5' is not a whole number"),
        ("source,target,count\na,b,lots\n", r"row 2: count 'lots' is missing or not a number"),
        ("source,target,count\n,b,1\n", r"row 2: the source name is empty"),
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
    with pytest.raises(DataError, match=r"v.csv: row 2: visits '-2'"):
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
