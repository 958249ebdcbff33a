"""Transactions on the store: inbox claims, outbox rows and handler state together.

See :mod:`handlers.store` for the guarantees; the databases themselves are in
:mod:`handlers.store.sqlite` and :mod:`handlers.store.postgresql`.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from foundation.errors import TransientError
from handlers.store.common import (
    BYTES,
    Dialect,
    Driver,
    OutboxMessage,
    Row,
    Session,
    StoreError,
    decode_headers,
    encode_headers,
    iso_utc,
    utc_now,
)
from handlers.store.postgresql import postgres_driver
from handlers.store.sqlite import sqlite_driver

__all__ = ["Store", "Transaction", "open_store"]

_MARK_SENT_CHUNK = 500
# Rows per multi-row INSERT: well under SQLite's 32,766 bound variables.
_ROWS_PER_INSERT = 500
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def _driver_for(url: str) -> Driver:
    head, colon, _ = url.partition(":")
    if not colon or not _SCHEME.fullmatch(head):
        raise StoreError(
            "store URL has no scheme: use sqlite:///path.db or postgresql://user@host:port/db"
        )
    scheme = head.lower()
    if scheme == "sqlite":
        return sqlite_driver(url)
    if scheme in ("postgresql", "postgres"):
        return postgres_driver(url, scheme)
    raise StoreError(
        f"unsupported store URL scheme {scheme!r}: use sqlite:///path.db or "
        "postgresql://user@host:port/db"
    )


# --- the public API -------------------------------------------------------------


class _ThreadSessions:
    """One session per thread, opened on the thread's first use."""

    def __init__(self, connect: Callable[[], Session]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[tuple[weakref.ref[threading.Thread], Session]] = []
        self._inherited: list[Session] = []
        self._pid = os.getpid()

    def current(self) -> Session:
        """The calling thread's session, (re)connected if it has none or lost it."""
        if os.getpid() != self._pid:
            self._forget_parent()
        session: Session | None = getattr(self._local, "session", None)
        if session is not None and session.usable:
            return session
        if session is not None:
            self.discard(session)
        session = self._connect()
        with self._lock:
            self._close_ended_threads()
            self._sessions.append((weakref.ref(threading.current_thread()), session))
        self._local.session = session
        return session

    def discard(self, session: Session) -> None:
        """Close ``session`` and forget it; its thread reconnects on next use."""
        with self._lock:
            self._sessions = [entry for entry in self._sessions if entry[1] is not session]
        if getattr(self._local, "session", None) is session:
            self._local.session = None
        with suppress(Exception):
            session.close()

    def close_all(self) -> None:
        """Close every thread's session; a connection already lost is fine."""
        with self._lock:
            sessions = [session for _, session in self._sessions]
            self._sessions = []
        for session in sessions:
            with suppress(Exception):
                session.close()

    def _close_ended_threads(self) -> None:
        alive = []
        for thread_ref, session in self._sessions:
            thread = thread_ref()
            if thread is not None and thread.is_alive():
                alive.append((thread_ref, session))
            else:
                with suppress(Exception):
                    session.close()
        self._sessions = alive

    def _forget_parent(self) -> None:
        # After fork the connections belong to the parent: closing them here
        # would end the parent's sessions, and letting them be collected may
        # too. Keep them, unused, for the life of this process.
        self._inherited += [session for _, session in self._sessions]
        self._sessions = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = os.getpid()


class Transaction:
    """One open transaction of a :class:`Store`; usable only inside its ``with`` block.

    Statements use ``?`` placeholders on both databases. Outbox rows are
    written at commit, all in a few statements: a query inside the
    transaction does not see them yet.
    """

    def __init__(self, session: Session, driver: Driver, now: Callable[[], datetime]) -> None:
        """Made by :meth:`Store.transaction`, never directly."""
        self._session = session
        self._driver = driver
        self._now = now
        self._open = True
        self._savepoints = 0
        self._outbox: list[tuple[Any, ...]] = []
        self._stamp: str | None = None

    def _timestamp(self) -> str:
        """The transaction's time (its first use), for ``processed_at`` and ``created_at``."""
        if self._stamp is None:
            self._stamp = iso_utc(self._now())
        return self._stamp

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed (-1 if not applicable)."""
        rowcount, _ = self._run(sql, params, fetch=False)
        return rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return all its rows as tuples."""
        _, rows = self._run(sql, params, fetch=True)
        return rows

    def claim(self, handler: str, event_id: str) -> bool:
        """Record in the inbox that ``handler`` processes ``event_id``.

        Returns:
            True if this call recorded it: the event is processed for the first
            time and the handler does its work. False if it was processed
            before (committed): the handler skips it. A concurrent claim of the
            same id waits until the first transaction ends.
        """
        if not handler or not event_id:
            raise ValueError("claim needs a non-empty handler name and event id")
        rowcount = self.execute(
            "INSERT INTO inbox (handler, event_id, processed_at) VALUES (?, ?, ?) "
            "ON CONFLICT (handler, event_id) DO NOTHING",
            (handler, event_id, self._timestamp()),
        )
        return rowcount == 1

    def claim_many(self, handler: str, event_ids: Sequence[str]) -> set[str]:
        """:meth:`claim` for many ids in a few statements; returns the ids claimed now.

        An id listed twice is claimed once. Ids missing from the result were
        processed before (or by a transaction this one waited for).
        """
        if not handler or not all(event_ids):
            raise ValueError("claim_many needs a non-empty handler name and event ids")
        unique = list(dict.fromkeys(event_ids))
        stamp = self._timestamp()
        claimed: set[str] = set()
        for start in range(0, len(unique), _ROWS_PER_INSERT):
            chunk = unique[start : start + _ROWS_PER_INSERT]
            rows = self.query(
                "INSERT INTO inbox (handler, event_id, processed_at) VALUES "
                + ", ".join(["(?, ?, ?)"] * len(chunk))
                + " ON CONFLICT (handler, event_id) DO NOTHING RETURNING event_id",
                [value for event_id in chunk for value in (handler, event_id, stamp)],
            )
            claimed.update(str(row[0]) for row in rows)
        return claimed

    def unclaim(self, handler: str, event_id: str) -> None:
        """Take back a claim made in this transaction (its event failed and left no trace)."""
        self.execute("DELETE FROM inbox WHERE handler = ? AND event_id = ?", (handler, event_id))

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested part of this transaction: an exception inside rolls back only its writes.

        Lets one transaction carry a whole batch of events while a failing
        event leaves no trace (on PostgreSQL a failed statement no longer
        aborts the whole transaction once it is rolled back to its savepoint).
        The exception is re-raised.
        """
        # Named by nesting depth, not by a running count: a few statement texts
        # for a whole batch, so the driver's prepared-statement cache keeps them
        # (and the handlers' statements) instead of preparing each anew.
        self._savepoints += 1
        name = f"event_{self._savepoints}"
        outbox_rows = len(self._outbox)
        try:
            self.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                del self._outbox[outbox_rows:]
                self.execute(f"ROLLBACK TO SAVEPOINT {name}")
                self.execute(f"RELEASE SAVEPOINT {name}")
                raise
            self.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            self._savepoints -= 1

    def add_outbox(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        event_id: str,
        headers: Sequence[tuple[str, bytes]] = (),
        publisher: str | None = None,
    ) -> None:
        """Queue a message for publishing once this transaction commits.

        ``publisher`` (a worker's name) lets the relay of that worker's process
        publish it, and no other relay (see :meth:`Store.pending_outbox`).

        The row is written at commit (see the class); a savepoint rolled back
        drops the rows added inside it.
        """
        if not topic:
            raise ValueError("add_outbox needs a topic")
        if not isinstance(value, BYTES) or not (key is None or isinstance(key, BYTES)):
            raise TypeError("an outbox key is bytes or None and its value is bytes")
        self._outbox.append(
            (
                topic,
                None if key is None else bytes(key),
                bytes(value),
                encode_headers(headers),
                event_id,
                self._timestamp(),
                publisher,
            )
        )

    def _write_outbox(self) -> None:
        """Insert the queued outbox rows, in the order they were added."""
        rows, self._outbox = self._outbox, []
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            self.execute(
                "INSERT INTO outbox (topic, key, value, headers, event_id, created_at, publisher)"
                " VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk)),
                [value for row in chunk for value in row],
            )

    def _run(self, sql: str, params: Sequence[Any], fetch: bool) -> tuple[int, list[Row]]:
        if not self._open:
            raise StoreError("this transaction has ended: use it inside its with block only")
        try:  # not _transient_errors: this runs for every statement, keep it cheap
            return self._session.run(sql, params, fetch)
        except Exception as exc:
            reason = self._driver.transient_reason(exc)
            if reason is None:
                raise
            where = f"{self._driver.dialect} store {self._driver.location}"
            raise TransientError(f"{where}: statement failed, retry: {reason}") from exc

    def _end(self) -> None:
        self._open = False


@contextmanager
def _transient_errors(driver: Driver, doing: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        reason = driver.transient_reason(exc)
        if reason is None:
            raise
        message = f"{driver.dialect} store {driver.location}: {doing} failed, retry: {reason}"
        raise TransientError(message) from exc


class Store:
    """Inbox, outbox and handler state in one database; see :func:`open_store`.

    Guarantee: what one :meth:`transaction` writes commits entirely or not at
    all, and a claimed event id is claimed exactly once per handler.
    """

    dialect: Dialect

    def __init__(self, driver: Driver, now: Callable[[], datetime] = utc_now) -> None:
        """Made by :func:`open_store`; opens no connection."""
        self.dialect = driver.dialect
        self._driver = driver
        self._now = now
        self._closed = False
        self._sessions = _ThreadSessions(self._connect)
        # SQLite has one writer at a time. Threads of this process queue here and
        # wake as soon as the writer commits; SQLite's own busy handler (left for
        # other processes) would sleep in growing steps instead.
        self._write_lock: threading.Lock | None = (
            threading.Lock() if driver.dialect == "sqlite" else None
        )

    def __repr__(self) -> str:
        return f"Store({self.dialect}, {self._driver.location})"

    @property
    def events_per_transaction(self) -> int:
        """How many events a queue worker may apply in one transaction of this store.

        SQLite has one writer at a time: a whole batch per transaction saves a
        sync per event and blocks nobody more. PostgreSQL lets workers write at
        once: one event per transaction keeps each one's row locks few and in
        one order (a batch would hold many orders' rows and deadlock with
        another worker's batch).
        """
        return 500 if self.dialect == "sqlite" else 1

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def migrate(self, statements: Sequence[str]) -> None:
        """Run a handler's idempotent DDL (``CREATE TABLE IF NOT EXISTS ...``) in one transaction.

        Safe to run from many processes at once: DDL runs one process at a time.
        """
        with self._transaction(write=True, ddl=True) as transaction:
            for statement in statements:
                transaction.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One atomic write transaction: commit on normal exit, roll back on an exception.

        The exception is re-raised. If the commit itself fails with a
        TransientError it may still have happened (connection lost while
        committing): retrying is safe because :meth:`Transaction.claim` then
        returns False.

        Raises:
            TransientError: lock wait timed out, connection lost, serialization
                failure or deadlock; retry the whole transaction.
            StoreError: the store is closed, or this thread is already inside a
                transaction of this store.
        """
        with self._transaction(write=True, ddl=False) as transaction:
            yield transaction

    def pending_outbox(
        self, limit: int = 500, publishers: Sequence[str] | None = None
    ) -> list[OutboxMessage]:
        """Unsent outbox messages, oldest (lowest id) first, at most ``limit``.

        ``publishers``: only the rows these publishers added (and rows that
        name none, written before publishers were recorded); None: every row.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        mine = ""
        params: list[Any] = []
        if publishers is not None:
            names = sorted(set(publishers))
            marks = ", ".join("?" * len(names)) or "NULL"
            mine = f" AND (publisher IN ({marks}) OR publisher IS NULL)"
            params += names
        with self._transaction(write=False, ddl=False) as transaction:
            rows = transaction.query(
                "SELECT id, topic, key, value, headers, event_id FROM outbox "
                f"WHERE sent_at IS NULL{mine} ORDER BY id LIMIT ?",
                (*params, limit),
            )
        return [
            OutboxMessage(
                id=int(row[0]),
                topic=row[1],
                key=None if row[2] is None else bytes(row[2]),
                value=bytes(row[3]),
                headers=decode_headers(row[4]),
                event_id=row[5],
            )
            for row in rows
        ]

    def mark_sent(self, ids: Sequence[int]) -> None:
        """Mark outbox messages as published; ids already marked or unknown are ignored."""
        unique = sorted({int(message_id) for message_id in ids})
        if not unique:
            return
        sent_at = iso_utc(self._now())
        with self._transaction(write=True, ddl=False) as transaction:
            for start in range(0, len(unique), _MARK_SENT_CHUNK):
                chunk = unique[start : start + _MARK_SENT_CHUNK]
                marks = ", ".join("?" * len(chunk))
                transaction.execute(
                    f"UPDATE outbox SET sent_at = ? WHERE sent_at IS NULL AND id IN ({marks})",
                    (sent_at, *chunk),
                )

    def purge_sent(self, older_than: timedelta) -> int:
        """Delete outbox rows marked sent more than ``older_than`` ago; returns how many.

        Unsent rows are never deleted. (Fixed-width ISO text compares in time order.)
        """
        cutoff = iso_utc(self._now() - older_than)
        with self._transaction(write=True, ddl=False) as transaction:
            return transaction.execute(
                "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (cutoff,)
            )

    def claimed(self, handler: str, event_id: str) -> bool:
        """True if ``handler`` has a committed claim of ``event_id`` (see ``Transaction.claim``)."""
        with self._transaction(write=False, ddl=False) as transaction:
            rows = transaction.query(
                "SELECT 1 FROM inbox WHERE handler = ? AND event_id = ?", (handler, event_id)
            )
        return bool(rows)

    def processed_count(self, handler: str) -> int:
        """How many event ids ``handler`` has claimed (committed ones)."""
        with self._transaction(write=False, ddl=False) as transaction:
            rows = transaction.query("SELECT COUNT(*) FROM inbox WHERE handler = ?", (handler,))
        return int(rows[0][0])

    def close(self) -> None:
        """Close every connection of every thread; the store is unusable afterwards."""
        self._closed = True
        self._sessions.close_all()

    def _bootstrap(self) -> None:
        self.migrate(self._driver.own_tables())
        self._add_publisher_column()

    def _add_publisher_column(self) -> None:
        """The outbox's ``publisher`` column (added to stores made before it)."""
        with self._transaction(write=True, ddl=True) as transaction:
            if self._driver.dialect == "sqlite":
                present = transaction.query(
                    "SELECT COUNT(*) FROM pragma_table_info('outbox') WHERE name = 'publisher'"
                )
            else:
                present = transaction.query(
                    "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'outbox'"
                    " AND column_name = 'publisher' AND table_schema = current_schema()"
                )
            if not present[0][0]:
                transaction.execute("ALTER TABLE outbox ADD COLUMN publisher TEXT")

    def _connect(self) -> Session:
        with _transient_errors(self._driver, "connect"):
            return self._driver.connect()

    @contextmanager
    def _transaction(self, write: bool, ddl: bool) -> Iterator[Transaction]:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        session = self._sessions.current()
        if session.in_transaction:
            raise StoreError("this thread is already inside a transaction of this store")
        session.in_transaction = True
        transaction: Transaction | None = None
        lock = self._write_lock if write else None
        if lock is not None:
            lock.acquire()
        try:
            with _transient_errors(self._driver, "begin"):
                session.begin(write)
                if ddl:
                    session.lock_ddl()
            transaction = Transaction(session, self._driver, self._now)
            yield transaction
            transaction._write_outbox()
            transaction._end()
            with _transient_errors(self._driver, "commit"):
                session.commit()
        except BaseException:
            if transaction is not None:
                transaction._end()
            self._rollback(session)
            raise
        finally:
            if lock is not None:
                lock.release()
            session.in_transaction = False
            if not session.usable:
                self._sessions.discard(session)

    def _rollback(self, session: Session) -> None:
        # The error that got us here matters more than one from the rollback
        # (e.g. the connection is gone, which rolls back anyway).
        with suppress(Exception):
            session.rollback()


def open_store(url: str, *, now: Callable[[], datetime] = utc_now) -> Store:
    """Open the store at ``url`` and create its inbox and outbox tables if missing.

    Args:
        url: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
            (parent directories are created), or
            ``postgresql://user:password@host:port/db`` (also ``postgres://``,
            with any libpq URI parameter).
        now: The clock of ``processed_at`` and outbox timestamps; aware UTC.

    Safe to call from many processes at once.

    Raises:
        StoreError: the URL is malformed or its scheme unsupported; the message
            names the scheme or the problem, never the password.
        TransientError: the database cannot be reached right now.
    """
    store = Store(_driver_for(url), now=now)
    try:
        store._bootstrap()
    except BaseException:
        store.close()
        raise
    return store
