"""The run store: one SQLite file, one row per LLM call, several LLMs and runs.

Schema (``calls``; primary key ``(run_id, call_id)``, so writing a call twice is a no-op):

    run_id, call_id, llm, agent, source, answer (raw text, capped), target, valid, reason,
    tokens_in, tokens_out, cost, latency, attempts, error, timestamp,
    answer_chars, answer_sha256

``runs`` holds one row per run (agent, model, llm, requested calls, seed, config JSON without
secrets, status: ``running``, ``complete``, ``incomplete`` (some calls still unanswered, e.g.
every call failed; ``--resume`` finishes them), ``stopped``, ``interrupted``, ``auth failed``).
A call that ended in a transport error has ``error`` set and no target; a later attempt at the
same call id (``--resume``) replaces it, while a call with an answer is never rewritten.

Raw answers are capped: ``answer`` keeps the first `ANSWER_CHARS` (4,000) characters, and
``answer_chars`` / ``answer_sha256`` the length and SHA-256 (of the UTF-8 text) of the *whole*
answer, so a runaway 2 MB answer costs 4 kB in the store and can still be told apart. The
collector parses the whole answer before it is capped (target, valid, reason are exact). Stores
written before the cap (no ``answer_chars`` / ``answer_sha256``) are read as they are (the two
columns read as null) and upgraded in place when opened for writing.

One writer per run: ``leases`` holds, per run being collected, the writer's random token, pid,
host (hostname and pid namespace), start time and heartbeat. `RunStore.hold_run` takes the
lease (refusing with the owner's pid, host and start time while it is alive), a thread renews
the heartbeat every `HEARTBEAT_SECONDS`, and every commit checks the lease is still ours. A
lease is free once released, when its owner's pid is gone on this host (kill -9), or when its
heartbeat is older than `LEASE_SECONDS` (an owner on another host, whose pids we cannot see).

Opening checks the file first: a directory, a missing or empty file (read-only), a file that
is not SQLite or not a run store, and a damaged file (``PRAGMA quick_check``) are refused with a
`StoreError` naming the file, before anything is written. ``RunStore(path, readonly=True)``
(what ``export`` and ``compare`` need) never writes or creates anything: a store no writer has
open is read as immutable (no ``-wal``/``-shm`` files, so a read-only file or folder works);
a store being collected is read through its write-ahead log.

Durability: WAL journal. Rows are buffered and committed in batches (every `batch` rows or
`flush_seconds`); a process killed at any point, even by SIGKILL, loses at most the uncommitted
batch, whose call ids simply have no row and are redone by ``--resume``. With
``synchronous=NORMAL`` (default) a committed batch survives a process crash; only an OS crash or
power loss can drop the last batches. ``synchronous=FULL`` (``--fsync full``) fsyncs every
commit (measured cost: docs/benchmarks.md, "Collector").

One module on purpose (~770 lines): the schema, its upgrades, the writer lease and every
query share one connection and one transaction discipline; split, the invariants above would
be spread over files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from detailed_balance.data import DataError, Transitions, atomic_path, prepare_output

ANSWER_CHARS = 4000
"""Characters of each raw answer kept in the store (the full length and hash are kept too)."""

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
    answer_chars INTEGER,
    answer_sha256 TEXT,
    PRIMARY KEY (run_id, call_id)
);
CREATE INDEX IF NOT EXISTS calls_llm ON calls (llm);
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    since REAL NOT NULL,
    heartbeat REAL NOT NULL
);
"""
ROW_COLUMNS = (
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
"""The fields of a row given to `RunStore.add` (``answer`` whole; the store caps it)."""
ADDED_COLUMNS = {"answer_chars": "INTEGER", "answer_sha256": "TEXT"}
"""Columns added after the first stores were written (upgraded in place on a writable open)."""
COLUMNS = ROW_COLUMNS + tuple(ADDED_COLUMNS)
"""The stored columns of ``calls``, in table order."""
_ANSWER = ROW_COLUMNS.index("answer")
_INSERT = (
    f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (run_id, call_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[2:])
    + " WHERE calls.error IS NOT NULL"
)
_SQLITE_MAGIC = b"SQLite format 3\x00"
Fsync = Literal["normal", "full", "off"]


class StoreError(DataError):
    """A problem with the run store that the user can fix (the message says how)."""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(seconds))


def _capped(row: Sequence) -> tuple:
    """A row in `COLUMNS` order: the answer capped, its full length and SHA-256 appended."""
    row = tuple(row)
    if len(row) != len(ROW_COLUMNS):
        raise ValueError(f"a call row has {len(ROW_COLUMNS)} fields ({', '.join(ROW_COLUMNS)}).")
    answer = row[_ANSWER]
    if answer is None:
        return (*row, None, None)
    answer = str(answer)
    digest = hashlib.sha256(answer.encode("utf-8", "surrogatepass")).hexdigest()
    return (*row[:_ANSWER], answer[:ANSWER_CHARS], *row[_ANSWER + 1 :], len(answer), digest)


class RunStore:
    """A SQLite run log (see module doc). Use as a context manager or call `close()`.

    ``readonly=True`` opens an existing store for reading only (nothing is created or written,
    `add` refuses); otherwise the file and its parent folders are created as needed.
    """

    HOST = f"{socket.gethostname()}:{_pid_namespace()}".rstrip(":")
    """This host as leases name it (hostname and pid namespace: pids are only comparable there)."""
    LEASE_SECONDS = 120.0
    """A lease whose heartbeat is older than this is free (its owner is gone)."""
    HEARTBEAT_SECONDS = 10.0
    """How often the owner of a lease renews its heartbeat."""

    def __init__(
        self,
        path: str | Path,
        *,
        fsync: Fsync = "normal",
        batch: int = 256,
        flush_seconds: float = 0.5,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = bool(readonly)
        if fsync not in ("normal", "full", "off"):
            raise StoreError(f"fsync must be normal, full or off (got {fsync!r}).")
        self.batch = batch
        self.flush_seconds = flush_seconds
        self._buffer: list[tuple] = []
        self._last_flush = time.monotonic()
        self._held: dict[str, str] = {}  # run id → our lease token
        self._lost: dict[str, str] = {}  # run id → who took the lease (seen by the heartbeat)
        self._check_file()
        self.db = self._connect()
        try:
            self._open(fsync)
        except BaseException:
            self.db.close()
            raise

    # -- opening -----------------------------------------------------------------------------
    def _check_file(self) -> None:
        path = self.path
        if path.is_dir():
            raise StoreError(
                f"{path} is a directory, not a run store; pass the store file (e.g. "
                f"{path / 'runs.db'})."
            )
        if not path.exists():
            if self.readonly:
                raise StoreError(f"{path}: no such run store; collect into it first.")
            prepare_output(path, "run store")
            return
        try:
            with open(path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(f"cannot read the run store {path}: {exc.strerror}.") from None
        if not head:
            if self.readonly:
                raise StoreError(
                    f"{path} is an empty file, not a run store (nothing was collected into "
                    f"it); collect into it first or pass another --store."
                )
            return  # a new store in an empty file
        if head != _SQLITE_MAGIC:
            raise StoreError(
                f"{path} is not an SQLite file, so not a run store; pass the store written by "
                f"`detailed-balance collect`."
            )

    def _connect(self) -> sqlite3.Connection:
        try:
            if not self.readonly:
                return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # A store without a write-ahead log has no writer: read it as immutable (no locks,
            # no -wal/-shm files, works in a read-only folder). A store being collected has
            # one: read through it (sees every committed batch).
            wal = Path(f"{self.path}-wal").exists()
            uri = f"{self.path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"
            return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the run store {self.path}: {exc}.") from None

    def _damaged(self, detail: str) -> StoreError:
        detail = " ".join(str(detail).split())[:200]
        return StoreError(
            f"{self.path} is damaged ({detail}); it cannot be read or written safely. Restore it "
            f"from a backup, or save what is readable with `sqlite3 {self.path} .recover` into "
            f"a new file, and pass another --store."
        )

    def _open(self, fsync: str) -> None:
        db = self.db
        try:
            db.execute("PRAGMA busy_timeout=10000")
            check = db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise StoreError(
                    f"{self.path} is not an SQLite file, so not a run store; pass the store "
                    f"written by `detailed-balance collect`."
                ) from None
            if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
                raise StoreError(f"cannot read the run store {self.path}: {exc}.") from None
            raise self._damaged(exc) from None
        if [r[0] for r in check] != ["ok"]:
            raise self._damaged(check[0][0] if check else "integrity check failed")
        try:
            tables = {
                r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            ours = {"runs", "calls"}
            if (self.readonly or tables) and not ours <= tables:
                found = f"its tables are {', '.join(sorted(tables))}" if tables else "no tables"
                raise StoreError(
                    f"{self.path} is an SQLite file but not a run store ({found}); pass the "
                    f"store written by `detailed-balance collect`."
                )
            if not self.readonly:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={fsync.upper()}")
                db.executescript(SCHEMA)
            have = [r[1] for r in db.execute("PRAGMA table_info(calls)")]
            if not self.readonly:
                for name, kind in ADDED_COLUMNS.items():
                    if name not in have:  # a store from before the answer cap: upgrade it
                        db.execute(f"ALTER TABLE calls ADD COLUMN {name} {kind}")
                        have.append(name)
            self._columns = set(have)
        except sqlite3.DatabaseError as exc:
            if "readonly" in str(exc) or "read-only" in str(exc):
                raise StoreError(
                    f"the run store {self.path} cannot be written ({exc}); collect into a "
                    f"writable copy (export and compare only read it)."
                ) from None
            raise StoreError(f"cannot open the run store {self.path}: {exc}.") from None

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(
                f"the run store {self.path} is open read-only; open it with RunStore(path) to "
                f"write."
            )

    # -- one writer per run ------------------------------------------------------------------
    @contextlib.contextmanager
    def hold_run(self, run_id: str) -> Iterator[None]:
        """Be the only writer of `run_id` while the block runs (see module doc).

        Raises `StoreError` naming the owner's pid, host and start time when another live
        writer (another process, or another `RunStore` of this one) holds the run.
        """
        self._writable()
        if run_id in self._held:
            raise StoreError(f"{self.path}: run {run_id!r} is already held by this store.")
        token = uuid.uuid4().hex
        self._acquire(run_id, token)
        self._held[run_id] = token
        self._lost.pop(run_id, None)
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(run_id, token, stop), name=f"lease {run_id}", daemon=True
        )
        beat.start()
        try:
            yield
            self.flush()  # our rows go in while we still hold the run
        finally:
            stop.set()
            beat.join()
            del self._held[run_id]
            with contextlib.suppress(sqlite3.Error):
                self.db.execute(
                    "DELETE FROM leases WHERE run_id = ? AND token = ?", (run_id, token)
                )

    def _acquire(self, run_id: str, token: str) -> None:
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute(
                "SELECT pid, host, since, heartbeat FROM leases WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is not None and not self._lease_gone(row[0], row[1], row[3], now):
                pid, host, since, heartbeat = row
                raise StoreError(
                    f"{self.path}: run {run_id!r} is being collected by process {pid} on "
                    f"{host} since {_when(since)} (last heartbeat {max(now - heartbeat, 0):.0f} s "
                    f"ago); wait for it to finish, or stop that process and then --resume. "
                    f"Two writers of one run would pay for every call twice and mix their answers."
                )
            self.db.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, token, os.getpid(), self.HOST, now, now),
            )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _lease_gone(self, pid: int, host: str, heartbeat: float, now: float) -> bool:
        if heartbeat < now - self.LEASE_SECONDS:
            return True
        return host == self.HOST and not _pid_alive(int(pid))

    def _heartbeat(self, run_id: str, token: str, stop: threading.Event) -> None:
        """Renew the lease (own connection) until `stop`; note it if someone took it."""
        try:
            con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return
        try:
            con.execute("PRAGMA busy_timeout=10000")
            while not stop.wait(self.HEARTBEAT_SECONDS):
                try:
                    done = con.execute(
                        "UPDATE leases SET heartbeat = ? WHERE run_id = ? AND token = ?",
                        (time.time(), run_id, token),
                    ).rowcount
                except sqlite3.Error:
                    continue  # busy or a transient I/O error: try again next beat
                if done == 0:
                    self._lost[run_id] = "lease taken"
                    return
        finally:
            con.close()

    def _check_leases(self, run_ids: Iterable[str]) -> None:
        """Inside a write transaction: refuse if a run we hold was taken over by another."""
        for run_id in run_ids:
            token = self._held.get(run_id)
            if token is None:
                continue
            row = self.db.execute(
                "SELECT token, pid, host, since FROM leases WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is not None and row[0] == token:
                continue
            who = (
                f"process {row[1]} on {row[2]} took it over at {_when(row[3])}"
                if row is not None
                else "its lease was removed"
            )
            raise StoreError(
                f"{self.path}: this collector lost its lock on run {run_id!r} ({who}); it stops "
                f"writing so that two writers never mix answers. Let the other one finish, then --resume."
            )

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
        self._writable()
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
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self._check_leases([run_id])
            self.db.execute(
                "UPDATE runs SET status = ?, updated = ? WHERE run_id = ?",
                (status, time.time(), run_id),
            )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

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
        """Queue one call row (in `ROW_COLUMNS` order, the whole answer); commits when the
        batch is full or old. The answer is capped here (see `ANSWER_CHARS`)."""
        self._writable()
        self._buffer.append(_capped(row))
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
            self._check_leases({row[0] for row in rows})
            self.db.executemany(_INSERT, rows)
        except BaseException:
            self.db.execute("ROLLBACK")
            self._buffer = rows + self._buffer
            raise
        self.db.execute("COMMIT")

    # -- reading -----------------------------------------------------------------------------
    def _check_selection(self, llm, run_id) -> None:
        """Refuse LLM names or run ids the store does not hold, naming the ones it does."""
        for column, value, what in (("llm", llm, "LLM"), ("run_id", run_id, "run")):
            if value is None:
                continue
            wanted = [value] if isinstance(value, str) else list(value)
            unknown = [
                v
                for v in dict.fromkeys(wanted)
                if self.db.execute(
                    f"SELECT 1 FROM runs WHERE {column} = ? LIMIT 1", (v,)
                ).fetchone()
                is None
                and self.db.execute(
                    f"SELECT 1 FROM calls WHERE {column} = ? LIMIT 1", (v,)
                ).fetchone()
                is None
            ]
            if not unknown:
                continue
            known = sorted(
                r[0]
                for r in self.db.execute(
                    f"SELECT {column} FROM runs UNION SELECT DISTINCT {column} FROM calls"
                )
            )
            names = ", ".join(repr(v) for v in unknown)
            raise StoreError(
                f"{self.path}: no {what} {names} in this store; its {what}s are "
                f"{', '.join(map(str, known)) or '(none)'}."
            )

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
        """All call rows (optionally for some LLMs / runs), ordered by run and call id.

        Columns `COLUMNS`; ``answer`` is the capped text, ``answer_chars`` / ``answer_sha256``
        the whole answer's length and hash (null in rows of stores from before the cap)."""
        self.flush()
        self._check_selection(llm, run_id)
        where, params = self._where(llm, run_id)
        select = ", ".join(c if c in self._columns else f"NULL AS {c}" for c in COLUMNS)
        frame = pd.read_sql_query(
            f"SELECT {select} FROM calls WHERE {where} ORDER BY run_id, call_id",
            self.db,
            params=params,
        )
        frame["answer_chars"] = frame["answer_chars"].astype("Int64")
        sha = frame["answer_sha256"].astype(object)
        frame["answer_sha256"] = sha.where(sha.notna(), None)
        return frame

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
        self._check_selection(llm, run_id)
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
        self._check_selection(llm, run_id)
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
        """Write the call rows as CSV, Parquet or JSONL (chosen by the file suffix).

        The parent folders are created first; the file is written atomically (a failed write
        leaves the old file, never a partial one)."""
        path = Path(path)
        suffix = path.suffix.lower()
        writers = {
            ".csv": lambda frame, tmp: frame.to_csv(tmp, index=False),
            ".parquet": lambda frame, tmp: frame.to_parquet(tmp, index=False),
            ".pq": lambda frame, tmp: frame.to_parquet(tmp, index=False),
            ".jsonl": lambda frame, tmp: frame.to_json(
                tmp, orient="records", lines=True, force_ascii=False
            ),
            ".ndjson": lambda frame, tmp: frame.to_json(
                tmp, orient="records", lines=True, force_ascii=False
            ),
        }
        if suffix not in writers:
            raise StoreError(f"{path}: unknown format {suffix!r}; use .csv, .parquet or .jsonl.")
        prepare_output(path, "calls file")
        frame = self.calls(llm, run_id)
        with atomic_path(path, "calls file") as tmp:  # an OSError becomes an OutputError
            writers[suffix](frame, tmp)
        return path
