"""Run-store faults: damaged, empty, read-only and foreign files, unknown run ids, runs with
no answered call, prices kept in the config while secrets stay redacted, the cap on stored
raw answers, and export's output files (parents made first, written atomically)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from detailed_balance.agents import (
    Faults,
    RunStore,
    SimulatedLLM,
    StoreError,
    collect,
    load_agent,
)
from detailed_balance.agents.store import ANSWER_CHARS
from detailed_balance.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _row(call_id, run_id="a", llm="m", answer=None, source=None, target=None):
    source = source or f"S{call_id % 50}"
    target = target or f"S{(call_id + 1) % 50}"
    answer = answer if answer is not None else f"answer {call_id} " * 4
    return (run_id, call_id, llm, "word100", source, answer, target, 1, None,
            10, 2, 0.0, 0.01, 1, None, 1000.0 + call_id)  # fmt: skip


def _make_store(path: Path, runs=(("a", "m"),), calls=3000) -> Path:
    with RunStore(path) as store:
        for run_id, llm in runs:
            store.start_run(run_id, agent="word100", model="simulated/word100", llm=llm,
                            calls=calls, seed=0, config={}, resume=False)  # fmt: skip
            store.add_many(_row(i, run_id, llm) for i in range(calls))
    return path


def _corrupt_middle(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(bytes(range(256)) * 12)


def _export(store, tmp_path, *extra):
    return main(["export", "--store", str(store), "--out", str(tmp_path / "out" / "t.csv"),
                 *extra])  # fmt: skip


# -- damaged, empty, foreign files ----------------------------------------------------------
def test_damaged_store_is_refused_on_open_by_every_verb(tmp_path, capsys):
    db = _make_store(tmp_path / "bad.db")
    _corrupt_middle(db)
    before = db.read_bytes()
    assert _export(db, tmp_path) == 2
    err = capsys.readouterr().err
    assert f"{db}" in err and "damaged" in err and "unexpected" not in err
    assert "SELECT" not in err  # no raw SQL
    assert main(["compare", "--store", str(db), "-o", str(tmp_path / "c.html")]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and "unexpected" not in err and "SELECT" not in err
    # collect refuses at once instead of writing into the damaged file.
    args = ["collect", "--agent", "word100", "--model", "simulated/word100", "--calls", "3100",
            "--store", str(db), "--run-id", "a", "--resume", "--quiet"]  # fmt: skip
    assert main(args) == 2
    assert "damaged" in capsys.readouterr().err
    assert db.read_bytes() == before
    with pytest.raises(StoreError, match="damaged"):
        RunStore(db)


def test_empty_file_is_not_turned_into_a_store(tmp_path, capsys):
    empty = tmp_path / "empty.db"
    empty.touch()
    assert _export(empty, tmp_path) == 2
    assert "empty" in capsys.readouterr().err
    assert empty.stat().st_size == 0
    assert not Path(f"{empty}-wal").exists() and not Path(f"{empty}-shm").exists()
    with pytest.raises(StoreError, match="empty"):
        RunStore(empty, readonly=True)


def test_foreign_files_and_directories(tmp_path, capsys):
    folder = tmp_path / "folder.db"
    folder.mkdir()
    assert _export(folder, tmp_path) == 2
    assert "is a directory" in capsys.readouterr().err
    csv = tmp_path / "t.csv"
    csv.write_text("source,target,count\nA,B,1\n")
    assert _export(csv, tmp_path) == 2
    assert "not an SQLite" in capsys.readouterr().err
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE x (y)")
    con.close()
    assert _export(other, tmp_path) == 2
    assert "not a run store" in capsys.readouterr().err
    assert _export(tmp_path / "missing.db", tmp_path) == 2
    assert "no such run store" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(StoreError, match="is a directory"):
        RunStore(folder)


def _run_without_root_override(script: str, *args: str, timeout: float = 120):
    """Run `script` in a subprocess that file modes bind (root ignores them: it runs in a user
    namespace via `unshare -U`); skip when that is impossible here."""
    cmd = [sys.executable, "-c", script, *args]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("running as root without unshare: cannot make a file read-only")
        cmd = ["unshare", "-U", *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"unshare -U not permitted here: {done.stderr.strip()}")
    return done


_READONLY_EXPORT = """
import sys
from detailed_balance.cli import main
sys.exit(main(["export", "--store", sys.argv[1], "--out", sys.argv[2]]))
"""


@pytest.mark.parametrize("where", ["file", "folder"])
def test_read_only_store_can_be_exported(tmp_path, where):
    folder = tmp_path / "ro"
    folder.mkdir()
    db = _make_store(folder / "runs.db", calls=200)
    out = tmp_path / "out" / "t.csv"
    db.chmod(0o444)
    if where == "folder":
        folder.chmod(0o555)
    try:
        done = _run_without_root_override(_READONLY_EXPORT, str(db), str(out))
        assert done.returncode == 0, done.stderr
        assert sum(int(x) for x in pd.read_csv(out)["count"]) == 200
        assert sorted(p.name for p in folder.iterdir()) == ["runs.db"]
    finally:
        folder.chmod(stat.S_IRWXU)
        db.chmod(0o644)


def test_reading_never_writes(tmp_path):
    db = _make_store(tmp_path / "r.db", calls=100)
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    with RunStore(db, readonly=True) as store:
        assert store.transitions().total_calls == 100
        with pytest.raises(StoreError, match="read-only"):
            store.add(_row(100))
            store.flush()
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before


# -- unknown run ids and LLMs ------------------------------------------------------------------
def test_unknown_run_id_is_refused_with_the_known_ones(tmp_path, capsys):
    db = _make_store(tmp_path / "two.db", runs=(("a", "m1"), ("b", "m2")), calls=20)
    assert _export(db, tmp_path, "--run-id", "a", "--run-id", "nosuch") == 2
    err = capsys.readouterr().err
    assert "'nosuch'" in err and "a, b" in err
    assert not (tmp_path / "out" / "t.csv").exists()
    assert _export(db, tmp_path, "--llm", "m3") == 2
    assert "'m3'" in capsys.readouterr().err
    assert _export(db, tmp_path, "--run-id", "a", "--run-id", "b") == 0
    assert pd.read_csv(tmp_path / "out" / "t.csv")["count"].sum() == 40


# -- run status ------------------------------------------------------------------------------
def test_run_without_answers_is_incomplete_and_resume_finishes_it(tmp_path):
    db = tmp_path / "fail.db"
    broken = SimulatedLLM.word100(states=8, seed=1, faults=Faults(server_error=1.0))
    result = collect("word100", broken.model, 10, store=db, run_id="z", simulator=broken,
                     retries=0, backoff=0.001, concurrency=2)  # fmt: skip
    assert (result.completed, result.errors) == (0, 10)
    with RunStore(db) as store:
        assert store.runs().loc[0, "status"] == "incomplete"
    working = SimulatedLLM.word100(states=8, seed=1)
    again = collect("word100", working.model, 10, store=db, run_id="z", resume=True,
                    simulator=working, concurrency=2)  # fmt: skip
    assert (again.new_calls, again.completed) == (10, 10)
    with RunStore(db) as store:
        assert store.runs().loc[0, ["status", "completed", "errors"]].tolist() == [
            "complete", 10, 0]  # fmt: skip


def test_config_keeps_prices_and_redacts_secrets(tmp_path):
    sim = SimulatedLLM.word100(states=8, seed=2)
    key = "sk-proj-" + "Z" * 24
    collect("word100", sim.model, 5, store=tmp_path / "c.db", run_id="p", simulator=sim,
            input_cost_per_token=2e-6, output_cost_per_token=None,
            params={"max_tokens": 16, "api_key": key, "access_token": "tok-0123456789abcdef",
                    "extra_headers": {"Authorization": "Basic dXNlcjpwYXNz"}})  # fmt: skip
    with RunStore(tmp_path / "c.db", readonly=True) as store:
        config = store.run_info("p")["config"]
    assert config["input_cost_per_token"] == 2e-6
    assert config["output_cost_per_token"] is None
    assert config["params"]["max_tokens"] == 16
    assert config["params"]["api_key"] == "[REDACTED]"
    assert config["params"]["access_token"] == "[REDACTED]"
    assert config["params"]["extra_headers"] == "[REDACTED]"
    dump = "\n".join(sqlite3.connect(tmp_path / "c.db").iterdump())
    assert key not in dump and "tok-0123456789abcdef" not in dump and "dXNlcjpwYXNz" not in dump


# -- the cap on stored raw answers -------------------------------------------------------------
def test_long_answers_are_capped_with_length_and_hash(tmp_path):
    db = tmp_path / "long.db"
    answers = [("word " * 400_000)[: 2_000_000 - i] + "TURKEY" for i in range(5)]  # ≈ 2 MB each
    with RunStore(db) as store:
        store.start_run("l", agent="word100", model="x", llm="m", calls=5, seed=0, config={},
                        resume=False)  # fmt: skip
        store.add_many(_row(i, "l", answer=a) for i, a in enumerate(answers))
        store.add(_row(5, "l", answer="short"))
        store.add(_row(6, "l")[:5] + (None,) + _row(6, "l")[6:])  # no answer (an error row)
    assert db.stat().st_size < 1_000_000  # was > 10 MB: every answer stored whole
    with RunStore(db, readonly=True) as store:
        rows = store.calls().set_index("call_id")
    for i, answer in enumerate(answers):
        assert rows.loc[i, "answer"] == answer[:ANSWER_CHARS]
        assert rows.loc[i, "answer_chars"] == len(answer)
        assert rows.loc[i, "answer_sha256"] == hashlib.sha256(answer.encode()).hexdigest()
    assert rows.loc[5, "answer"] == "short" and rows.loc[5, "answer_chars"] == 5
    assert pd.isna(rows.loc[6, "answer_chars"]) and rows.loc[6, "answer_sha256"] is None


def test_collector_parses_the_whole_answer_and_stores_the_capped_one(tmp_path):
    sim = SimulatedLLM.word100(states=8, seed=4, invalid_rate=0.0)
    padding = "x" * 2_000_000
    original = sim.answer

    def long_answer(messages, call):
        return padding + " " + original(messages, call) if call % 2 else original(messages, call)

    sim.answer = long_answer
    agent = load_agent("word100")
    parse, parsed_chars = agent.parse, []

    def recording_parse(text, source):
        parsed_chars.append(len(text))
        return parse(text, source)

    agent.parse = recording_parse
    db = tmp_path / "c.db"
    collect(agent, sim.model, 10, store=db, run_id="c", simulator=sim, concurrency=1)
    assert db.stat().st_size < 2_000_000
    with RunStore(db, readonly=True) as store:
        rows = store.calls().set_index("call_id")
    long = rows.loc[1::2]
    assert (long["answer_chars"] > 2_000_000).all()
    assert (long["answer"].str.len() == ANSWER_CHARS).all()
    # Parsed on the whole answer (word100 rejects it for its length; the capped text would
    # be rejected too, so the parser's input is checked as well).
    assert sorted(parsed_chars)[-5:] == sorted(long["answer_chars"].tolist())
    assert (long["reason"] == "answer longer than 64 characters").all()
    # Short answers are stored whole and parsed as usual (the simulator may repeat the prompt
    # word, which word100 rejects as a self-loop).
    short = rows.loc[0::2]
    assert (short["answer"].str.len() == short["answer_chars"]).all()
    assert ((short["valid"] == 1) | (short["reason"] == "same as the prompt word")).all()
    assert (short["valid"] == 1).sum() >= 3


# -- export's outputs: parents first, atomic writes -------------------------------------------
def test_export_makes_missing_folders_and_writes_every_output(tmp_path):
    db = _make_store(tmp_path / "x.db", calls=50)
    out = tmp_path / "missing" / "dir" / "t.csv"
    calls_out = tmp_path / "c1" / "calls.jsonl"
    disc = tmp_path / "d1" / "d2" / "disc.csv"
    code = main(["export", "--store", str(db), "--out", str(out), "--calls-out", str(calls_out),
                 "--discovery-out", str(disc)])  # fmt: skip
    assert code == 0
    assert pd.read_csv(out)["count"].sum() == 50
    assert pd.read_csv(out.with_name("visits.csv"))["visits"].sum() == 50
    assert len(calls_out.read_text().splitlines()) == 50
    assert pd.read_csv(disc)["calls"].iloc[-1] == 50
    with RunStore(db, readonly=True) as store:
        path = store.export_calls(tmp_path / "e1" / "e2" / "calls.parquet")
    assert len(pd.read_parquet(path)) == 50


def test_export_refuses_an_unwritable_output_before_reading(tmp_path, capsys):
    db = _make_store(tmp_path / "x.db", calls=20)
    (tmp_path / "afile").write_text("x")
    assert main(["export", "--store", str(db), "--out", str(tmp_path / "afile" / "t.csv")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_failed_export_leaves_the_old_files_and_no_partial(tmp_path, monkeypatch, capsys):
    db = _make_store(tmp_path / "x.db", calls=30)
    out = tmp_path / "t.parquet"
    assert main(["export", "--store", str(db), "--out", str(out)]) == 0
    old = (out.read_bytes(), out.with_name("visits.parquet").read_bytes())
    _make_store(tmp_path / "y.db", calls=60)
    real = pd.DataFrame.to_parquet

    def half_then_fail(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_fail)
    assert main(["export", "--store", str(tmp_path / "y.db"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and str(out) in err and "unexpected" not in err
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    assert (out.read_bytes(), out.with_name("visits.parquet").read_bytes()) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["x.db", "y.db", "t.parquet", "visits.parquet"]
    )


def test_collect_truth_out_makes_its_folder(tmp_path):
    truth = tmp_path / "new" / "sub" / "truth.csv"
    store = tmp_path / "stores" / "runs.db"
    args = ["collect", "--agent", "word100", "--model", "simulated/word100", "--calls", "20",
            "--store", str(store), "--run-id", "t", "--quiet", "--sim-states", "6",
            "--truth-out", str(truth)]  # fmt: skip
    assert main(args) == 0
    assert pd.read_csv(truth).columns.tolist() == ["state", "potential"]
    assert store.is_file()
    assert not any(p.name.endswith(".tmp") for p in truth.parent.iterdir())


def test_collect_refuses_an_unwritable_truth_out_before_collecting(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    store = tmp_path / "runs.db"
    args = ["collect", "--agent", "word100", "--model", "simulated/word100", "--calls", "20",
            "--store", str(store), "--run-id", "t", "--quiet",
            "--truth-out", str(tmp_path / "afile" / "truth.csv")]  # fmt: skip
    assert main(args) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert not store.exists()  # nothing collected


def test_old_store_without_answer_columns_is_read_and_upgraded(tmp_path):
    db = tmp_path / "old.db"
    _make_store(db, calls=10)
    with sqlite3.connect(db) as con:  # the schema before the answer cap
        con.execute("ALTER TABLE calls DROP COLUMN answer_chars")
        con.execute("ALTER TABLE calls DROP COLUMN answer_sha256")
    con.close()
    with RunStore(db, readonly=True) as store:
        rows = store.calls()
        assert rows["answer_chars"].isna().all() and len(rows) == 10
    with RunStore(db) as store:
        store.start_run("a", agent="word100", model="simulated/word100", llm="m", calls=11,
                        seed=0, config={}, resume=True)  # fmt: skip
        store.add(_row(10, "a", answer="abc"))
    with RunStore(db, readonly=True) as store:
        assert store.calls().set_index("call_id").loc[10, "answer_chars"] == 3


_READONLY_COMPARE = """
import sys
from detailed_balance.cli import main
sys.exit(main(["compare", "--store", sys.argv[1], "-o", sys.argv[2], "--method", "map",
               "--verdicts", "none"]))
"""


def test_compare_reads_a_read_only_store(tmp_path):
    """compare opened the store for writing: a read-only store (file and folder) failed, and a
    writable one could be created or upgraded by a reading verb."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = _make_store(folder / "runs.db", runs=(("a", "m1"), ("b", "m2")), calls=400)
    before = db.read_bytes()
    out = tmp_path / "out" / "compare.html"
    db.chmod(0o444)
    folder.chmod(0o555)
    try:
        done = _run_without_root_override(_READONLY_COMPARE, str(db), str(out), timeout=300)
        assert done.returncode == 0, done.stderr
        summary = json.loads(out.with_suffix(".json").read_text())
        assert sorted(summary["llms"]) == ["m1", "m2"]
        assert sum(e["calls"] for e in summary["llms"].values()) == 800
        assert sorted(p.name for p in folder.iterdir()) == ["runs.db"]
        assert db.read_bytes() == before
    finally:
        folder.chmod(stat.S_IRWXU)
        db.chmod(0o644)
