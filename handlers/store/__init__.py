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

from handlers.store.api import Store, Transaction, open_store
from handlers.store.common import OutboxMessage, StoreError, to_pyformat

__all__ = [
    "OutboxMessage",
    "Store",
    "StoreError",
    "Transaction",
    "open_store",
    "to_pyformat",
]
