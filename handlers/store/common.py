"""What every database behind the store shares: errors, outbox messages, SQL and sessions.

:class:`Session` and :class:`Driver` are what a database module
(:mod:`handlers.store.sqlite`, :mod:`handlers.store.postgresql`) provides;
the transactions on top (:mod:`handlers.store.api`) use nothing else.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson

from foundation.errors import TerminalError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "BYTES",
    "Dialect",
    "Driver",
    "OutboxMessage",
    "Row",
    "Session",
    "StoreError",
    "cached_pyformat",
    "decode_headers",
    "encode_headers",
    "iso_utc",
    "redact",
    "to_pyformat",
    "utc_now",
]

Dialect = Literal["sqlite", "postgresql"]
Row = tuple[Any, ...]

# How long a writer waits for the database's write lock before TransientError.
BUSY_TIMEOUT_MS = 30_000
BYTES = (bytes, bytearray, memoryview)
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
cached_pyformat = functools.lru_cache(maxsize=1024)(to_pyformat)


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"the store's clock returned a naive datetime: {moment!r}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    pairs: list[list[str]] = []
    for name, value in headers:
        if not isinstance(name, str) or not isinstance(value, BYTES):
            raise TypeError(f"a header is (str, bytes), got ({type(name).__name__}, ...)")
        pairs.append([name, base64.b64encode(value).decode("ascii")])
    # orjson: a few times faster than json, and the same JSON (UTF-8, no escapes
    # beyond what JSON needs); decode_headers reads both spellings.
    return orjson.dumps(pairs).decode()


def decode_headers(text: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, base64.b64decode(value)) for name, value in orjson.loads(text))


# --- sessions: one connection of one thread ----------------------------------


class Session(Protocol):
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


class Driver(Protocol):
    """What differs between SQLite and PostgreSQL."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def location(self) -> str:
        """Where the database is, for messages: a path or ``db on host:port``, no password."""

    def connect(self) -> Session: ...

    def transient_reason(self, exc: BaseException) -> str | None: ...

    def own_tables(self) -> Sequence[str]: ...


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
