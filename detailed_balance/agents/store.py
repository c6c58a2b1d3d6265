"""The run store: one SQLite file, one row per LLM call, several LLMs and runs.

Schema (``calls``; primary key ``(run_id, call_id)``, so writing a call twice is a no-op):

    run_id, call_id, llm, agent, source, answer (raw text), target, valid, reason,
    tokens_in, tokens_out, cost, latency, attempts, error, timestamp

``runs`` holds one row per run (agent, model, llm, requested calls, seed, config JSON without
secrets, status). A call that ended in a transport error has ``error`` set and no target; a
later attempt at the same call id (``--resume``) replaces it, while a call with an answer is
never rewritten.

Durability: WAL journal. Rows are buffered and committed in batches (every `batch` rows or
`flush_seconds`); a process killed at any point, even by SIGKILL, loses at most the uncommitted
batch, whose call ids simply have no row and are redone by ``--resume``. With
``synchronous=NORMAL`` (default) a committed batch survives a process crash; only an OS crash or
power loss can drop the last batches. ``synchronous=FULL`` (``--fsync full``) fsyncs every
commit (see the README for the measured cost).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from detailed_balance.data import DataError, Transitions

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    model TEXT NOT NULL,
    llm TEXT NOT NULL,
    calls INTEGER NOT NULL,
    seed INTEGER,
    config TEXT,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    run_id TEXT NOT NULL,
    call_id INTEGER NOT NULL,
    llm TEXT NOT NULL,
    agent TEXT NOT NULL,
    source TEXT NOT NULL,
    answer TEXT,
    target TEXT,
    valid INTEGER,
    reason TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    cost REAL,
    latency REAL,
    attempts INTEGER,
    error TEXT,
    timestamp REAL NOT NULL,
    PRIMARY KEY (run_id, call_id)
);
CREATE INDEX IF NOT EXISTS calls_llm ON calls (llm);
"""
COLUMNS = (
    "run_id",
    "call_id",
    "llm",
    "agent",
    "source",
    "answer",
    "target",
    "valid",
    "reason",
    "tokens_in",
    "tokens_out",
    "cost",
    "latency",
    "attempts",
    "error",
    "timestamp",
)
_INSERT = (
    f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (run_id, call_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[2:])
    + " WHERE calls.error IS NOT NULL"
)
Fsync = Literal["normal", "full", "off"]


class StoreError(DataError):
    """A problem with the run store that the user can fix (the message says how)."""


class RunStore:
    """A SQLite run log (see module doc). Use as a context manager or call `close()`."""

    def __init__(
        self,
        path: str | Path,
        *,
        fsync: Fsync = "normal",
        batch: int = 256,
        flush_seconds: float = 0.5,
    ) -> None:
        self.path = Path(path)
        if fsync not in ("normal", "full", "off"):
            raise StoreError(f"fsync must be normal, full or off (got {fsync!r}).")
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={fsync.upper()}")
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path}: not a usable run store ({exc}); pass another --store."
            ) from None
        self.batch = batch
        self.flush_seconds = flush_seconds
        self._buffer: list[tuple] = []
        self._last_flush = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self.flush()
        self.db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- runs --------------------------------------------------------------------------------
    def run_info(self, run_id: str) -> dict | None:
        row = self.db.execute(
            "SELECT run_id, agent, model, llm, calls, seed, config, status FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        keys = ("run_id", "agent", "model", "llm", "calls", "seed", "config", "status")
        info = dict(zip(keys, row, strict=True))
        info["config"] = json.loads(info["config"] or "{}")
        return info

    def runs(self) -> pd.DataFrame:
        """One row per run with its requested and completed calls."""
        return pd.read_sql_query(
            "SELECT r.run_id, r.agent, r.model, r.llm, r.calls AS requested, r.seed, r.status, "
            "COUNT(c.call_id) FILTER (WHERE c.error IS NULL) AS completed, "
            "COUNT(c.call_id) FILTER (WHERE c.error IS NOT NULL) AS errors, "
            "COALESCE(SUM(c.cost), 0) AS cost "
            "FROM runs r LEFT JOIN calls c ON c.run_id = r.run_id GROUP BY r.run_id ORDER BY r.created",
            self.db,
        )

    def start_run(
        self,
        run_id: str,
        *,
        agent: str,
        model: str,
        llm: str,
        calls: int,
        seed: int | None,
        config: dict,
        resume: bool,
    ) -> dict:
        """Create a run, or check and reopen it with ``resume=True``; returns the run info."""
        info = self.run_info(run_id)
        now = time.time()
        if info is None:
            self.db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (run_id, agent, model, llm, calls, seed, json.dumps(config, default=str), now, now),
            )
            return self.run_info(run_id)  # type: ignore[return-value]
        if not resume:
            raise StoreError(
                f"{self.path}: run {run_id!r} already exists ({info['agent']}, {info['model']}); "
                f"pass --resume to continue it, or another --run-id for a new run."
            )
        for key, value in (("agent", agent), ("model", model), ("llm", llm)):
            if info[key] != value:
                raise StoreError(
                    f"{self.path}: run {run_id!r} was collected with {key} {info[key]!r}, not "
                    f"{value!r}; resume it with the same {key} or start a new --run-id."
                )
        self.db.execute(
            "UPDATE runs SET calls = ?, status = 'running', updated = ? WHERE run_id = ?",
            (max(calls, int(info["calls"])), now, run_id),
        )
        return self.run_info(run_id)  # type: ignore[return-value]

    def finish_run(self, run_id: str, status: str) -> None:
        self.flush()
        self.db.execute(
            "UPDATE runs SET status = ?, updated = ? WHERE run_id = ?",
            (status, time.time(), run_id),
        )

    def pending_calls(self, run_id: str, calls: int) -> np.ndarray:
        """Call ids in [0, calls) without an answered row (missing or errored), ascending."""
        done = self.db.execute(
            "SELECT call_id FROM calls WHERE run_id = ? AND error IS NULL", (run_id,)
        ).fetchall()
        have = np.fromiter((r[0] for r in done), dtype=np.int64, count=len(done))
        return np.setdiff1d(np.arange(calls, dtype=np.int64), have)

    def previous_attempts(self, run_id: str) -> dict[int, int]:
        """Attempts already spent on calls that ended in a transport error (resume continues
        counting from there, so attempt numbers stay unique per call)."""
        rows = self.db.execute(
            "SELECT call_id, attempts FROM calls WHERE run_id = ? AND error IS NOT NULL", (run_id,)
        ).fetchall()
        return {int(c): int(a or 0) for c, a in rows}

    def found_states(self, run_id: str) -> list[str]:
        """Distinct valid targets of a run in call order (to reseed `uniform` on resume)."""
        rows = self.db.execute(
            "SELECT target FROM calls WHERE run_id = ? AND valid = 1 GROUP BY target "
            "ORDER BY MIN(call_id)",
            (run_id,),
        ).fetchall()
        return [r[0] for r in rows]

    def last_targets(self, run_id: str, walkers: int) -> list[str]:
        """The most recent valid targets (to restart `chain` walkers on resume)."""
        rows = self.db.execute(
            "SELECT target FROM calls WHERE run_id = ? AND valid = 1 ORDER BY call_id DESC LIMIT ?",
            (run_id, walkers),
        ).fetchall()
        return [r[0] for r in rows]

    # -- writing -----------------------------------------------------------------------------
    def add(self, row: Sequence) -> None:
        """Queue one call row (in `COLUMNS` order); commits when the batch is full or old."""
        self._buffer.append(tuple(row))
        if (
            len(self._buffer) >= self.batch
            or time.monotonic() - self._last_flush > self.flush_seconds
        ):
            self.flush()

    def add_many(self, rows: Iterable[Sequence]) -> None:
        for row in rows:
            self.add(row)

    def flush(self) -> None:
        """Commit the buffered rows in one transaction."""
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(_INSERT, rows)
        except BaseException:
            self.db.execute("ROLLBACK")
            self._buffer = rows + self._buffer
            raise
        self.db.execute("COMMIT")

    # -- reading -----------------------------------------------------------------------------
    def _where(self, llm, run_id, prefix: str = ""):
        clauses, params = [], []
        for column, value in ((f"{prefix}llm", llm), (f"{prefix}run_id", run_id)):
            if value is None:
                continue
            values = [value] if isinstance(value, str) else list(value)
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            params += values
        return (" AND ".join(clauses) or "1"), params

    def calls(self, llm=None, run_id=None) -> pd.DataFrame:
        """All call rows (optionally for some LLMs / runs), ordered by run and call id."""
        where, params = self._where(llm, run_id)
        return pd.read_sql_query(
            f"SELECT {', '.join(COLUMNS)} FROM calls WHERE {where} ORDER BY run_id, call_id",
            self.db,
            params=params,
        )

    def transitions(
        self,
        llm: str | Sequence[str] | None = None,
        run_id: str | Sequence[str] | None = None,
        *,
        invalid: Literal["state", "drop"] = "state",
    ) -> Transitions:
        """Counts and visits as `Transitions` (explicit visits table).

        Visits count every answered call of a source (valid, invalid, unparseable); calls that
        failed at the transport level are not visits. ``invalid="state"`` keeps transitions
        into the pooled INVALID state (the paper's data); ``"drop"`` removes those rows but
        keeps their visits (the escape probability stays in N₀).
        """
        self.flush()
        where, params = self._where(llm, run_id)
        counts = pd.read_sql_query(
            "SELECT llm, source, target, COUNT(*) AS count FROM calls "
            f"WHERE error IS NULL AND {where} GROUP BY llm, source, target",
            self.db,
            params=params,
        )
        visits = pd.read_sql_query(
            "SELECT llm, source, COUNT(*) AS visits FROM calls "
            f"WHERE error IS NULL AND {where} GROUP BY llm, source",
            self.db,
            params=params,
        )
        if counts.empty:
            raise StoreError(
                f"{self.path}: no answered calls"
                + (f" for llm {llm!r}" if llm is not None else "")
                + (f" in run {run_id!r}" if run_id is not None else "")
                + "; collect some first (detailed-balance collect ...)."
            )
        if invalid == "drop":
            invalid_targets = self._invalid_targets(where, params)
            counts = counts[~counts["target"].isin(invalid_targets)]
        return Transitions.from_counts(counts, visits, origin=str(self.path))

    def _invalid_targets(self, where: str, params: list) -> list[str]:
        rows = self.db.execute(
            f"SELECT DISTINCT target FROM calls WHERE error IS NULL AND valid = 0 AND {where}",
            params,
        ).fetchall()
        return [r[0] for r in rows]

    def discovery(self, llm=None, run_id=None) -> pd.DataFrame:
        """Distinct valid states found vs answered calls, per LLM (the paper's discovery curve).

        Columns ``llm, calls, distinct_states``: after the n-th answered call of that LLM (runs
        in creation order, calls by id), how many distinct valid targets had been produced.
        """
        self.flush()
        where, params = self._where(llm, run_id, prefix="c.")
        rows = pd.read_sql_query(
            "SELECT c.llm, c.target, c.valid FROM calls c JOIN runs r ON r.run_id = c.run_id "
            f"WHERE c.error IS NULL AND {where} "
            "ORDER BY c.llm, r.created, c.run_id, c.call_id",
            self.db,
            params=params,
        )
        parts = []
        for name, group in rows.groupby("llm", sort=True):
            valid = group["valid"].to_numpy() == 1
            targets = group["target"].to_numpy(dtype=object)
            first = np.zeros(len(group), dtype=bool)
            seen = pd.Series(targets[valid]).duplicated(keep="first").to_numpy()
            first[np.flatnonzero(valid)[~seen]] = True
            parts.append(
                pd.DataFrame(
                    {
                        "llm": name,
                        "calls": np.arange(1, len(group) + 1),
                        "distinct_states": np.cumsum(first),
                    }
                )
            )
        if not parts:
            return pd.DataFrame({"llm": [], "calls": [], "distinct_states": []})
        return pd.concat(parts, ignore_index=True)

    def export_calls(self, path: str | Path, llm=None, run_id=None) -> Path:
        """Write the call rows as CSV, Parquet or JSONL (chosen by the file suffix)."""
        path = Path(path)
        frame = self.calls(llm, run_id)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        elif suffix in (".parquet", ".pq"):
            frame.to_parquet(path, index=False)
        elif suffix in (".jsonl", ".ndjson"):
            frame.to_json(path, orient="records", lines=True, force_ascii=False)
        else:
            raise StoreError(f"{path}: unknown format {suffix!r}; use .csv, .parquet or .jsonl.")
        return path
