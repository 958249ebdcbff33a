"""The SQLite store: one file in WAL mode, durable at every commit.

Write transactions take the write lock up front (``BEGIN IMMEDIATE``) after
our writers' turn (:class:`WriterTurn`), wait up to 30 s for it, and are
durable at commit (``synchronous=FULL``), so a ``kill -9`` right after a
commit loses nothing.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handlers.store.common import BUSY_TIMEOUT_MS, Dialect, Row, Session, StoreError

__all__ = ["SQLiteDriver", "sqlite_driver"]


class WriterTurn:
    """Our writers' turns at one SQLite file, across processes: an ``flock`` beside it.

    SQLite makes a writer that finds the database locked sleep in steps of up
    to 100 ms before it looks again, so under contention the file sits idle
    while writers sleep. Waiting on this lock instead, in steps of at most
    2 ms, hands the turn on at once. It only orders our own writers:
    SQLite's locking still decides (``BEGIN IMMEDIATE`` follows). The kernel
    releases the lock of a process that dies.
    """

    def __init__(self, path: Path) -> None:
        self._descriptor = os.open(f"{path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._held = False

    def take(self, timeout_seconds: float) -> None:
        """Wait for our turn; after ``timeout_seconds`` go on and let SQLite wait."""
        deadline = time.monotonic() + timeout_seconds
        pause = 0.0001
        while True:
            try:
                fcntl.flock(self._descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return  # SQLite's busy timeout says what is wrong
                time.sleep(pause)
                pause = min(pause * 2, 0.002)
                continue
            self._held = True
            return

    def give_back(self) -> None:
        if self._held:
            self._held = False
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)

    def close(self) -> None:
        self.give_back()
        os.close(self._descriptor)


class SQLiteSession:
    def __init__(self, connection: sqlite3.Connection, turn: WriterTurn) -> None:
        self.in_transaction = False
        self._connection = connection
        self._turn = turn
        self._closed = False

    @property
    def usable(self) -> bool:
        return not self._closed

    def begin(self, write: bool) -> None:
        # IMMEDIATE takes the write lock now, waiting for it if need be. A
        # deferred transaction that reads first and then writes fails at once,
        # without waiting, if another writer committed in between (its WAL
        # snapshot is stale): "database is locked" under plain contention.
        if not write:
            self._connection.execute("BEGIN")
            return
        self._turn.take(BUSY_TIMEOUT_MS / 1000)
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._turn.give_back()
            raise

    def run(self, sql: str, params: Sequence[Any], fetch: bool) -> tuple[int, list[Row]]:
        cursor = self._connection.execute(sql, tuple(params))
        try:
            rows = cursor.fetchall() if fetch else []
            return cursor.rowcount, rows
        finally:
            cursor.close()

    def lock_ddl(self) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already excludes every other writer."""

    def commit(self) -> None:
        try:
            self._connection.execute("COMMIT")
        finally:
            if not self._connection.in_transaction:
                self._turn.give_back()

    def rollback(self) -> None:
        # SQLite rolls back by itself on some errors (disk full, I/O): then
        # there is nothing left to roll back and ROLLBACK would fail.
        try:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
        finally:
            self._turn.give_back()

    def close(self) -> None:
        self._closed = True
        self._turn.close()
        self._connection.close()


@dataclass(frozen=True)
class SQLiteDriver:
    path: Path
    dialect: Dialect = "sqlite"

    @property
    def location(self) -> str:
        return str(self.path)

    def connect(self) -> Session:
        # isolation_level=None: the sqlite3 module must not open transactions
        # behind our back; we issue BEGIN/COMMIT ourselves. check_same_thread
        # is off only so that close() may close other threads' connections.
        connection = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._ensure_wal(connection)
            # FULL: the WAL is synced at every commit, so a commit survives kill -9
            # and power loss (NORMAL would only survive the former).
            connection.execute("PRAGMA synchronous = FULL")
            return SQLiteSession(connection, WriterTurn(self.path))
        except BaseException:
            connection.close()
            raise

    def _ensure_wal(self, connection: sqlite3.Connection) -> None:
        # WAL is a property of the file, set once by whoever comes first. The
        # switch needs an exclusive lock and fails at once instead of calling
        # the busy handler when another process holds any lock (e.g. while it
        # switches too), hence our own wait.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() == "wal":
                return
            try:
                (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
            except sqlite3.OperationalError as exc:
                if self.transient_reason(exc) is None or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
                continue
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"sqlite store {self.path}: cannot switch to WAL mode (got {mode!r}); "
                    "is it on a network file system?"
                )
            return

    def transient_reason(self, exc: BaseException) -> str | None:
        if not isinstance(exc, sqlite3.OperationalError):
            return None
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        text = str(exc)
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in text:
            return f"{text} (another connection kept the database locked)"
        return None

    def own_tables(self) -> Sequence[str]:
        return (
            """CREATE TABLE IF NOT EXISTS inbox (
                handler TEXT NOT NULL,
                event_id TEXT NOT NULL,
                processed_at TEXT NOT NULL,
                PRIMARY KEY (handler, event_id)
            ) WITHOUT ROWID""",
            # AUTOINCREMENT: ids are never reused, even after the newest rows are
            # deleted, so the relay's "oldest first" stays true.
            """CREATE TABLE IF NOT EXISTS outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                topic TEXT NOT NULL,
                key BLOB,
                value BLOB NOT NULL,
                headers TEXT NOT NULL,
                event_id TEXT NOT NULL,
                created_at TEXT NOT NULL,
                sent_at TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL",
        )


def sqlite_driver(url: str) -> SQLiteDriver:
    prefix = "sqlite:///"
    if not url.lower().startswith(prefix):
        raise StoreError(
            "sqlite store URL must be sqlite:///relative/path.db or sqlite:////absolute/path.db "
            "(no host)"
        )
    raw = url[len(prefix) :]
    if not raw or raw == ":memory:" or raw.startswith("file:"):
        raise StoreError(
            "sqlite store URL needs a file path: an in-memory database cannot be shared "
            "by threads and processes"
        )
    if "?" in raw or "#" in raw:
        raise StoreError("sqlite store URL takes no query string or fragment")
    # sqlite:////abs/path.db leaves "/abs/path.db": absolute; anything else is
    # relative to the working directory now, not when a thread connects.
    path = Path(raw).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteDriver(path)
