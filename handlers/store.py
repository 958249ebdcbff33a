"""The handlers' transactional store: inbox, outbox and handler state in one database.

A queue worker reads Kafka at least once. A handler becomes idempotent by
claiming the event id in the *inbox* in the same transaction as its own state
change, and publishes through the *outbox*: rows written in that transaction,
sent by a relay after commit and then marked sent. Either everything of one
event commits (claim, state, outbox rows) or nothing does.

Two databases, one API:

* SQLite in WAL mode (``sqlite:///relative/path.db``,
  ``sqlite:////absolute/path.db``), the local store. Write transactions take
  the write lock up front (``BEGIN IMMEDIATE``), wait up to 30 s for it, and
  are durable at commit (``synchronous=FULL``), so a ``kill -9`` right after a
  commit loses nothing.
* PostgreSQL through psycopg 3 (``postgresql://user:password@host:port/db``,
  also ``postgres://``), the store of the docker-compose stack. READ
  COMMITTED: handlers guard their updates with ``UPDATE ... WHERE``.

Handlers write SQL once, with ``?`` placeholders, for both databases; for
PostgreSQL it is rewritten by :func:`to_pyformat`. Portable SQL here means:
TEXT, BIGINT and INTEGER columns with PRIMARY KEY clauses, ``'...'``
strings, ``"..."`` identifiers, ``--`` and ``/* */`` comments, and
``INSERT ... ON CONFLICT (...) DO NOTHING`` (no ``INSERT OR IGNORE``, no
``$$`` or ``E'...'`` strings).

Errors: lock waits, lost connections, serialization failures and deadlocks
raise :class:`~foundation.errors.TransientError` (retry the whole event);
a bad URL raises :class:`StoreError`; every other database error propagates
as the driver raised it (``sqlite3.IntegrityError``,
``psycopg.errors.UniqueViolation``, ...). On PostgreSQL a failed statement
aborts the transaction: let the error leave the ``with`` block.

A :class:`Store` may be shared by the threads of one process: each thread
gets its own connection, opened on its first use. A child process that
inherits a Store through ``fork`` opens connections of its own and never
touches the parent's.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import json
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import parse_qsl, unquote

from foundation.errors import TerminalError, TransientError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "OutboxMessage",
    "Store",
    "StoreError",
    "Transaction",
    "open_store",
    "to_pyformat",
]

Dialect = Literal["sqlite", "postgresql"]
Row = tuple[Any, ...]

_BUSY_TIMEOUT_MS = 30_000
_MARK_SENT_CHUNK = 500
# Rows per multi-row INSERT: well under SQLite's 32,766 bound variables.
_ROWS_PER_INSERT = 500
# Any constant works: it only has to be the same in every process that runs DDL.
_DDL_LOCK_KEY = 0x5B_57_0E_00
_BYTES = (bytes, bytearray, memoryview)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# Quoted strings, quoted identifiers and comments are copied (``%`` doubled);
# a bare ``?`` becomes ``%s`` and a bare ``%`` becomes ``%%``. The alternatives
# start with different characters, so matching is linear.
_SQL_TOKEN = re.compile(
    r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|--[^\n]*|/\*.*?(?:\*/|\Z)|\?|%""",
    re.DOTALL,
)


class StoreError(TerminalError):
    """The store cannot be used as configured: bad URL, unsupported scheme, closed store.

    The message names the scheme or the problem, never a password.
    """


@dataclass(frozen=True)
class OutboxMessage:
    """One unsent outbox row, as the relay publishes it.

    Attributes:
        id: Position in the outbox; ids grow with insertion (on PostgreSQL a
            lower id may commit after a higher one, so it can show up later).
        topic: Kafka topic to publish to.
        key: Kafka key, ``None`` for no key.
        value: Kafka value, byte for byte.
        headers: Kafka headers in their original order, duplicates kept.
        event_id: Id of the event this message carries, for deduplication downstream.
    """

    id: int
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    event_id: str


def to_pyformat(sql: str) -> str:
    """Rewrite qmark SQL (``?``) to psycopg's pyformat (``%s``).

    ``?`` inside quoted strings, quoted identifiers and comments stays as it
    is; every literal ``%`` is doubled, which psycopg turns back into ``%``.
    The result is only correct when parameters are passed (even ``()``).
    """
    return _SQL_TOKEN.sub(_pyformat_token, sql)


def _pyformat_token(match: re.Match[str]) -> str:
    text = match.group()
    return "%s" if text == "?" else text.replace("%", "%%")


# Handlers run the same few statements for every event: rewrite each once.
_cached_pyformat = functools.lru_cache(maxsize=1024)(to_pyformat)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso_utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"the store's clock returned a naive datetime: {moment!r}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    pairs: list[list[str]] = []
    for name, value in headers:
        if not isinstance(name, str) or not isinstance(value, _BYTES):
            raise TypeError(f"a header is (str, bytes), got ({type(name).__name__}, ...)")
        pairs.append([name, base64.b64encode(value).decode("ascii")])
    return json.dumps(pairs, ensure_ascii=False)


def _decode_headers(text: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, base64.b64decode(value)) for name, value in json.loads(text))


# --- sessions: one connection of one thread ----------------------------------


class _Session(Protocol):
    """A connection owned by one thread, with the few operations the store needs."""

    in_transaction: bool

    @property
    def usable(self) -> bool: ...

    def begin(self, write: bool) -> None: ...

    def run(self, sql: str, params: Sequence[Any], fetch: bool) -> tuple[int, list[Row]]: ...

    def lock_ddl(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


class _Driver(Protocol):
    """What differs between SQLite and PostgreSQL."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def location(self) -> str:
        """Where the database is, for messages: a path or ``db on host:port``, no password."""

    def connect(self) -> _Session: ...

    def transient_reason(self, exc: BaseException) -> str | None: ...

    def own_tables(self) -> Sequence[str]: ...


class _WriterTurn:
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


class _SQLiteSession:
    def __init__(self, connection: sqlite3.Connection, turn: _WriterTurn) -> None:
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
        self._turn.take(_BUSY_TIMEOUT_MS / 1000)
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
class _SQLiteDriver:
    path: Path
    dialect: Dialect = "sqlite"

    @property
    def location(self) -> str:
        return str(self.path)

    def connect(self) -> _Session:
        # isolation_level=None: the sqlite3 module must not open transactions
        # behind our back; we issue BEGIN/COMMIT ourselves. check_same_thread
        # is off only so that close() may close other threads' connections.
        connection = sqlite3.connect(
            self.path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._ensure_wal(connection)
            # FULL: the WAL is synced at every commit, so a commit survives kill -9
            # and power loss (NORMAL would only survive the former).
            connection.execute("PRAGMA synchronous = FULL")
            return _SQLiteSession(connection, _WriterTurn(self.path))
        except BaseException:
            connection.close()
            raise

    def _ensure_wal(self, connection: sqlite3.Connection) -> None:
        # WAL is a property of the file, set once by whoever comes first. The
        # switch needs an exclusive lock and fails at once instead of calling
        # the busy handler when another process holds any lock (e.g. while it
        # switches too), hence our own wait.
        deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
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


class _PostgresSession:
    def __init__(self, connection: psycopg.Connection[Row]) -> None:
        self.in_transaction = False
        self._connection = connection

    @property
    def usable(self) -> bool:
        return not self._connection.closed and not self._connection.broken

    def begin(self, write: bool) -> None:
        """Nothing to do: psycopg opens the transaction at the first statement."""

    def run(self, sql: str, params: Sequence[Any], fetch: bool) -> tuple[int, list[Row]]:
        with self._connection.cursor() as cursor:
            # Always pass a tuple: psycopg only reads %% as % when parameters are given.
            cursor.execute(_cached_pyformat(sql), tuple(params))
            rows = cursor.fetchall() if fetch else []
            return cursor.rowcount, rows

    def lock_ddl(self) -> None:
        # Concurrent CREATE TABLE IF NOT EXISTS of the same table can fail with a
        # unique violation in pg_type: let one process at a time run DDL.
        self.run("SELECT pg_advisory_xact_lock(?)", (_DDL_LOCK_KEY,), fetch=True)

    def commit(self) -> None:
        self._connection.commit()

    def rollback(self) -> None:
        self._connection.rollback()

    def close(self) -> None:
        self._connection.close()


@dataclass(frozen=True)
class _PostgresDriver:
    # Both hold the password: keep them out of reprs, tracebacks and logs.
    url: str = field(repr=False)
    location: str
    secrets: tuple[str, ...] = field(repr=False)
    dialect: Dialect = "postgresql"

    def connect(self) -> _Session:
        import psycopg

        try:
            connection = psycopg.connect(self.url, autocommit=False)
        except psycopg.ProgrammingError as exc:
            message = _redact(str(exc).strip(), self.secrets)
            raise StoreError(f"postgresql store URL is invalid: {message}") from None
        return _PostgresSession(connection)

    def transient_reason(self, exc: BaseException) -> str | None:
        import psycopg

        # OperationalError covers connection loss, admin shutdown and, as its
        # subclasses, SerializationFailure and DeadlockDetected.
        if isinstance(exc, psycopg.OperationalError):
            kind = type(exc).__name__
            return _redact(f"{kind}: {str(exc).strip()}", self.secrets)
        return None

    def own_tables(self) -> Sequence[str]:
        return (
            """CREATE TABLE IF NOT EXISTS inbox (
                handler TEXT NOT NULL,
                event_id TEXT NOT NULL,
                processed_at TEXT NOT NULL,
                PRIMARY KEY (handler, event_id)
            )""",
            """CREATE TABLE IF NOT EXISTS outbox (
                id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                topic TEXT NOT NULL,
                key BYTEA,
                value BYTEA NOT NULL,
                headers TEXT NOT NULL,
                event_id TEXT NOT NULL,
                created_at TEXT NOT NULL,
                sent_at TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL",
        )


# --- URLs -----------------------------------------------------------------------


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _url_secrets(url: str) -> tuple[str, ...]:
    """The password of a URL, raw and decoded, from the user info and the query."""
    found: list[str] = []
    rest = url.split("://", 1)[-1]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        userinfo = authority.rsplit("@", 1)[0]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    if "?" in rest:
        for name, value in parse_qsl(rest.split("?", 1)[1], keep_blank_values=True):
            if name == "password":
                found.append(value)
    found += [unquote(secret) for secret in found]
    # Longest first, so that a decoded password is not half-replaced by a shorter one.
    return tuple(sorted({secret for secret in found if secret}, key=len, reverse=True))


def _sqlite_driver(url: str) -> _SQLiteDriver:
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
    return _SQLiteDriver(path)


def _postgres_driver(url: str, scheme: str) -> _PostgresDriver:
    secrets = _url_secrets(url)
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise StoreError(
            f"a {scheme}:// store needs psycopg: pip install 'streambatch[postgres]'"
        ) from None
    import psycopg

    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        message = _redact(str(exc).strip(), secrets)
        raise StoreError(f"{scheme} store URL is invalid: {message}") from None
    port = str(params.get("port", ""))
    if port and not all(part.isdigit() for part in port.split(",")):
        raise StoreError(f"{scheme} store URL has a port that is not a number: {port!r}")
    host = str(params.get("host", "localhost"))
    where = f"{host}:{port}" if port else host
    location = f"{params.get('dbname', '(default database)')} on {where}"
    return _PostgresDriver(url=url, location=location, secrets=secrets)


def _driver_for(url: str) -> _Driver:
    head, colon, _ = url.partition(":")
    if not colon or not _SCHEME.fullmatch(head):
        raise StoreError(
            "store URL has no scheme: use sqlite:///path.db or postgresql://user@host:port/db"
        )
    scheme = head.lower()
    if scheme == "sqlite":
        return _sqlite_driver(url)
    if scheme in ("postgresql", "postgres"):
        return _postgres_driver(url, scheme)
    raise StoreError(
        f"unsupported store URL scheme {scheme!r}: use sqlite:///path.db or "
        "postgresql://user@host:port/db"
    )


# --- the public API -------------------------------------------------------------


class _ThreadSessions:
    """One session per thread, opened on the thread's first use."""

    def __init__(self, connect: Callable[[], _Session]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[tuple[weakref.ref[threading.Thread], _Session]] = []
        self._inherited: list[_Session] = []
        self._pid = os.getpid()

    def current(self) -> _Session:
        """The calling thread's session, (re)connected if it has none or lost it."""
        if os.getpid() != self._pid:
            self._forget_parent()
        session: _Session | None = getattr(self._local, "session", None)
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

    def discard(self, session: _Session) -> None:
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

    def __init__(self, session: _Session, driver: _Driver, now: Callable[[], datetime]) -> None:
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
            self._stamp = _iso_utc(self._now())
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
    ) -> None:
        """Queue a message for publishing once this transaction commits.

        The row is written at commit (see the class); a savepoint rolled back
        drops the rows added inside it.
        """
        if not topic:
            raise ValueError("add_outbox needs a topic")
        if not isinstance(value, _BYTES) or not (key is None or isinstance(key, _BYTES)):
            raise TypeError("an outbox key is bytes or None and its value is bytes")
        self._outbox.append(
            (
                topic,
                None if key is None else bytes(key),
                bytes(value),
                _encode_headers(headers),
                event_id,
                self._timestamp(),
            )
        )

    def _write_outbox(self) -> None:
        """Insert the queued outbox rows, in the order they were added."""
        rows, self._outbox = self._outbox, []
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            self.execute(
                "INSERT INTO outbox (topic, key, value, headers, event_id, created_at) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)),
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
def _transient_errors(driver: _Driver, doing: str) -> Iterator[None]:
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

    def __init__(self, driver: _Driver, now: Callable[[], datetime] = _utc_now) -> None:
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

    def pending_outbox(self, limit: int = 500) -> list[OutboxMessage]:
        """Unsent outbox messages, oldest (lowest id) first, at most ``limit``."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        with self._transaction(write=False, ddl=False) as transaction:
            rows = transaction.query(
                "SELECT id, topic, key, value, headers, event_id FROM outbox "
                "WHERE sent_at IS NULL ORDER BY id LIMIT ?",
                (limit,),
            )
        return [
            OutboxMessage(
                id=int(row[0]),
                topic=row[1],
                key=None if row[2] is None else bytes(row[2]),
                value=bytes(row[3]),
                headers=_decode_headers(row[4]),
                event_id=row[5],
            )
            for row in rows
        ]

    def mark_sent(self, ids: Sequence[int]) -> None:
        """Mark outbox messages as published; ids already marked or unknown are ignored."""
        unique = sorted({int(message_id) for message_id in ids})
        if not unique:
            return
        sent_at = _iso_utc(self._now())
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
        cutoff = _iso_utc(self._now() - older_than)
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

    def _connect(self) -> _Session:
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

    def _rollback(self, session: _Session) -> None:
        # The error that got us here matters more than one from the rollback
        # (e.g. the connection is gone, which rolls back anyway).
        with suppress(Exception):
            session.rollback()


def open_store(url: str, *, now: Callable[[], datetime] = _utc_now) -> Store:
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
