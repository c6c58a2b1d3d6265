"""One writer per run: a second `collect` of a run that is being collected is refused with the
owner's pid, host and start time; a killed owner (kill -9) does not block a later resume."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from detailed_balance.agents import RunStore, SimulatedLLM, StoreError, collect

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT)}


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _collect_cmd(db, calls, *extra):
    return [sys.executable, "-m", "detailed_balance.cli", "collect", "--agent", "word100",
            "--model", "simulated/word100", "--calls", str(calls), "--store", str(db),
            "--run-id", "L", "--quiet", "--sim-states", "12", *extra]  # fmt: skip


def test_second_collect_of_a_running_run_is_refused_and_kill_9_frees_it(tmp_path):
    db, n = tmp_path / "lock.db", 300
    first = subprocess.Popen(_collect_cmd(db, n, "--sim-latency", "0.2", "--concurrency", "4"),
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _count(db) < 4 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        second = subprocess.run(_collect_cmd(db, n, "--resume"), env=ENV, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert first.poll() is None, "the first collector must still be running"
        assert second.returncode == 2, second.stderr
        message = second.stderr
        assert f"run 'L' is being collected by process {first.pid}" in message
        assert socket.gethostname() in message and "since" in message
        assert "Traceback" not in message
        stored_before = _count(db)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert 0 < stored_before < n
    # The killed writer's lock does not block a resume (its pid is gone on this host).
    sim = SimulatedLLM.word100(states=12, seed=0, invalid_rate=0.05)
    result = collect("word100", sim.model, n, store=db, run_id="L", resume=True, simulator=sim)
    assert result.completed == n
    with sqlite3.connect(db) as con:
        ids = np.array([r[0] for r in con.execute("SELECT call_id FROM calls WHERE run_id='L'")])
        leases = con.execute("SELECT COUNT(*) FROM leases").fetchone()[0]
    assert np.array_equal(np.sort(ids), np.arange(n)) and leases == 0
    with RunStore(db) as store:
        assert store.runs().loc[0, "status"] == "complete"


def _start(store, run_id="r"):
    return store.start_run(run_id, agent="word100", model="simulated/word100", llm="m",
                           calls=5, seed=0, config={}, resume=True)  # fmt: skip


def test_one_writer_per_run_across_threads(tmp_path):
    db = tmp_path / "t.db"
    errors: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def owner():
        with RunStore(db) as store, store.hold_run("r"):
            _start(store)
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=owner)
    thread.start()
    assert holding.wait(30)
    with RunStore(db) as other:
        with pytest.raises(StoreError, match=rf"being collected by process {os.getpid()}") as e:
            with other.hold_run("r"):
                pass
        errors.append(str(e.value))
        with other.hold_run("another-run"):  # other runs of the same store are free
            pass
        release.set()
        thread.join(30)
        with other.hold_run("r"):  # free once released
            assert other.runs().loc[0, "status"] == "running"
    assert "wait for it to finish" in errors[0]


def _fake_lease(db, run_id, pid, host, heartbeat):
    with RunStore(db):
        pass
    with sqlite3.connect(db) as con:
        con.execute("INSERT OR REPLACE INTO leases VALUES (?, 'someone-else', ?, ?, ?, ?)",
                    (run_id, pid, host, heartbeat - 60, heartbeat))  # fmt: skip
    con.close()


def test_stale_and_dead_leases_are_taken_over_live_ones_are_not(tmp_path):
    db = tmp_path / "s.db"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = RunStore.HOST
    now = time.time()
    # A dead pid on this host with a fresh heartbeat: kill -9 just happened → free at once.
    _fake_lease(db, "r", dead.pid, host, now)
    with RunStore(db) as store, store.hold_run("r"):
        pass
    # Another host, fresh heartbeat: held (we cannot see its processes).
    _fake_lease(db, "r", 1, "elsewhere:pid-ns", now)
    with RunStore(db) as store, pytest.raises(StoreError, match="elsewhere"):
        with store.hold_run("r"):
            pass
    # Another host whose heartbeat stopped (killed machine, kill -9 there) → free.
    _fake_lease(db, "r", 1, "elsewhere:pid-ns", now - RunStore.LEASE_SECONDS - 1)
    with RunStore(db) as store, store.hold_run("r"):
        pass


def test_heartbeat_keeps_the_lease_and_a_lost_lease_stops_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(RunStore, "HEARTBEAT_SECONDS", 0.05)
    db = tmp_path / "h.db"
    with RunStore(db) as store:
        with store.hold_run("r"):
            _start(store)
            first = store.db.execute("SELECT heartbeat FROM leases").fetchone()[0]
            time.sleep(0.5)
            later = store.db.execute("SELECT heartbeat FROM leases").fetchone()[0]
            assert later > first
            # Someone took the run over (this process looked dead to them): stop writing.
            store.db.execute("UPDATE leases SET token = 'thief', pid = 4242")
            time.sleep(0.5)
            # add() itself commits here (the buffer's last flush is older than flush_seconds).
            with pytest.raises(StoreError, match="lost its lock.*4242"):
                store.add(("r", 0, "m", "word100", "A", "B", "B", 1, None, 1, 1, 0.0, 0.0, 1,
                           None, 0.0))  # fmt: skip
                store.flush()
            store._buffer.clear()
    assert _count(db) == 0
