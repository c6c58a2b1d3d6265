"""The SQLite run store: idempotent rows, exports against hand-counted tables, the discovery
curve, and kill -9 / resume with a real subprocess ending with exactly N answered calls."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detailed_balance.agents import Faults, RunStore, SimulatedLLM, StoreError, collect
from detailed_balance.agents.store import COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def _row(call_id, source, answer, target, valid, error=None, run_id="r", llm="m"):
    reason = None if valid or error else "bad"
    return (
        run_id, call_id, llm, "word100", source, answer, target, valid, reason,
        10, 2, 0.001, 0.01, 1, error, 1000.0 + call_id,
    )  # fmt: skip


def _start(store, run_id="r", llm="m", calls=10):
    return store.start_run(
        run_id, agent="word100", model="simulated/word100", llm=llm, calls=calls, seed=0,
        config={"concurrency": 1}, resume=False,
    )  # fmt: skip


# Hand-made log: A→B, A→B, A→INVALID, B→A, B→C, C→A (valid), one transport error from C.
HAND_ROWS = [
    _row(0, "A", "B", "B", 1),
    _row(1, "A", "b.", "B", 1),
    _row(2, "A", "xx", "INVALID", 0),
    _row(3, "B", "A", "A", 1),
    _row(4, "B", "C", "C", 1),
    _row(5, "C", "A", "A", 1),
    _row(6, "C", None, None, None, error="Timeout: slow"),
]


@pytest.fixture
def hand_store(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    _start(store)
    store.add_many(HAND_ROWS)
    store.flush()
    yield store
    store.close()


def test_schema_and_wal(hand_store):
    db = hand_store.db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cols = [r[1] for r in db.execute("PRAGMA table_info(calls)")]
    assert tuple(cols) == COLUMNS
    assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 7


def test_transitions_match_hand_counts(hand_store):
    data = hand_store.transitions()
    counts = data.counts.set_index(["source", "target"])["count"].to_dict()
    assert counts == {
        ("A", "B"): 2,
        ("A", "INVALID"): 1,
        ("B", "A"): 1,
        ("B", "C"): 1,
        ("C", "A"): 1,
    }
    visits = data.visits.set_index("source")["visits"].to_dict()
    # Visits: every answered call (the invalid one included); the transport error is not one.
    assert visits == {"A": 3, "B": 2, "C": 1}
    moves = data.moves().set_index(["source", "target"])["rate"]
    assert moves[("A", "B")] == pytest.approx(2 / 3)
    dropped = hand_store.transitions(invalid="drop")
    assert "INVALID" not in set(dropped.counts["target"])
    assert dropped.visits.set_index("source")["visits"].to_dict() == visits


def test_idempotent_rows_and_error_replacement(hand_store):
    # The same call written again (a duplicate delivery) changes nothing …
    hand_store.add(_row(0, "A", "C", "C", 1))
    # … but a transport-error row is replaced by a later answer to the same call id.
    hand_store.add(_row(6, "C", "B", "B", 1))
    hand_store.flush()
    rows = hand_store.calls().set_index("call_id")
    assert len(rows) == 7
    assert rows.loc[0, "target"] == "B"
    assert rows.loc[6, "target"] == "B" and rows.loc[6, "error"] is None
    assert hand_store.pending_calls("r", 10).tolist() == [7, 8, 9]


def test_pending_found_and_runs_table(hand_store):
    assert hand_store.pending_calls("r", 10).tolist() == [6, 7, 8, 9]  # errored + missing
    assert hand_store.found_states("r") == ["B", "A", "C"]
    runs = hand_store.runs()
    assert runs.loc[0, ["requested", "completed", "errors"]].tolist() == [10, 6, 1]
    assert runs.loc[0, "cost"] == pytest.approx(0.007)


def test_run_id_collisions_and_resume_checks(hand_store):
    with pytest.raises(StoreError, match="already exists.*--resume"):
        _start(hand_store)
    with pytest.raises(StoreError, match="model"):
        hand_store.start_run(
            "r", agent="word100", model="openai/x", llm="m", calls=10, seed=0, config={},
            resume=True,
        )  # fmt: skip
    info = hand_store.start_run(
        "r", agent="word100", model="simulated/word100", llm="m", calls=20, seed=0, config={},
        resume=True,
    )  # fmt: skip
    assert info["calls"] == 20


def test_discovery_curve_by_hand(tmp_path):
    with RunStore(tmp_path / "d.db") as store:
        _start(store, "r1", "m1")
        _start(store, "r2", "m2")
        targets = ["B", "B", "INVALID", "C", "B", "D"]
        valid = [1, 1, 0, 1, 1, 1]
        store.add_many(
            _row(i, "A", t, t, v, run_id="r1", llm="m1")
            for i, (t, v) in enumerate(zip(targets, valid, strict=True))
        )
        store.add(_row(0, "A", "Z", "Z", 1, run_id="r2", llm="m2"))
        curve = store.discovery()
    m1 = curve[curve["llm"] == "m1"]
    assert m1["calls"].tolist() == [1, 2, 3, 4, 5, 6]
    assert m1["distinct_states"].tolist() == [1, 1, 1, 2, 2, 3]
    assert curve[curve["llm"] == "m2"]["distinct_states"].tolist() == [1]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_export_calls_formats(hand_store, tmp_path, suffix):
    path = hand_store.export_calls(tmp_path / f"calls{suffix}")
    if suffix == ".csv":
        frame = pd.read_csv(path)
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()])
    assert list(frame.columns) == list(COLUMNS)
    assert frame["target"].fillna("-").tolist() == ["B", "B", "INVALID", "A", "C", "A", "-"]
    with pytest.raises(StoreError, match="unknown format"):
        hand_store.export_calls(tmp_path / "calls.xlsx")


def test_empty_store_and_bad_file(tmp_path):
    with RunStore(tmp_path / "e.db") as store, pytest.raises(StoreError, match="no answered calls"):
        store.transitions()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="is not an SQLite file, so not a run store"):
        RunStore(junk)


def test_export_cli_writes_files_fit_and_check_read(hand_store, tmp_path):
    from detailed_balance.cli import main
    from detailed_balance.data import read_transitions

    hand_store.flush()
    out = tmp_path / "transitions.csv"
    code = main(["export", "--store", str(hand_store.path), "--out", str(out),
                 "--discovery-out", str(tmp_path / "disc.csv")])  # fmt: skip
    assert code == 0
    assert (tmp_path / "visits.csv").read_text().splitlines()[0] == "llm,source,visits"
    data = read_transitions(out, str(tmp_path / "visits.csv"))
    assert data.visits.set_index("source")["visits"].to_dict() == {"A": 3, "B": 2, "C": 1}
    assert pd.read_csv(tmp_path / "disc.csv")["distinct_states"].iloc[-1] == 3
    assert main(["export", "--store", str(tmp_path / "missing.db")]) == 2


_KILL_SCRIPT = """
import sys
from detailed_balance.agents import SimulatedLLM, Faults, collect
sim = SimulatedLLM.word100(states=20, seed=3, faults=Faults(latency=0.002))
r = collect("word100", sim.model, int(sys.argv[2]), store=sys.argv[1], run_id="k",
            resume=True, simulator=sim, concurrency=16, seed=3)
print("DONE", r.completed, r.new_calls)
"""


def _count(db: Path) -> int:
    with sqlite3.connect(db) as con:
        try:
            return con.execute("SELECT COUNT(*) FROM calls WHERE error IS NULL").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.slow
def test_kill_minus_9_then_resume_gives_exactly_n_calls(tmp_path):
    db, n = tmp_path / "kill.db", 1200
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(n)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    while _count(db) < 200 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = _count(db)
    assert 0 < killed_at < n, "the run must be killed mid-way"
    # Resume in this process with the same settings as the killed one.
    sim = SimulatedLLM.word100(states=20, seed=3, faults=Faults(latency=0.002))
    result = collect("word100", sim.model, n, store=db, run_id="k", resume=True, simulator=sim,
                     concurrency=16, seed=3)  # fmt: skip
    assert result.completed == n and result.new_calls == n - killed_at
    with sqlite3.connect(db) as con:
        ids = np.array([r[0] for r in con.execute("SELECT call_id FROM calls WHERE run_id='k'")])
    assert len(ids) == n and np.array_equal(np.sort(ids), np.arange(n))  # none lost, none twice
    with RunStore(db) as store:
        assert store.transitions().total_calls == n
        assert store.runs().loc[0, "status"] == "complete"
