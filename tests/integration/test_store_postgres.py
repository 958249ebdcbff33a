"""The handlers' store on a real PostgreSQL: the shared contract, lost connections, deadlocks.

Each test gets a schema of its own (``search_path`` in the URL), so tests do
not see each other's inbox and outbox, also against a shared external server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from foundation.errors import TransientError
from handlers.store import Store, open_store
from tests.integration.test_store import COUNTER_DDL, StoreContract, counter_value


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def url(self, schema_url: str) -> str:
        return schema_url


@pytest.fixture
def store(schema_url: str) -> Iterator[Store]:
    store = open_store(schema_url)
    yield store
    store.close()


def test_dialect_and_postgres_scheme_alias(schema_url: str) -> None:
    alias = open_store(schema_url.replace("postgresql://", "postgres://", 1))
    assert alias.dialect == "postgresql"
    alias.close()


def test_lost_connection_is_transient_and_the_next_transaction_reconnects(
    store: Store, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    with pytest.raises(TransientError, match="AdminShutdown"), store.transaction() as tx:
        assert tx.claim("h", "e1")
        (backend,) = tx.query("SELECT pg_backend_pid()")[0]
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        tx.claim("h", "e2")
    # Killed while idle between transactions: the next one fails, the one after works.
    with store.transaction() as tx:
        (backend,) = tx.query("SELECT pg_backend_pid()")[0]
    admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    with pytest.raises(TransientError), store.transaction() as tx:
        tx.claim("h", "e1")
    with store.transaction() as tx:
        assert tx.claim("h", "e1") is True  # the first claim died with its connection
    assert store.processed_count("h") == 1


def test_deadlock_is_transient_and_only_the_victim_rolls_back(store: Store) -> None:
    store.migrate(
        [
            "CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, qty BIGINT NOT NULL)",
            "INSERT INTO stock VALUES ('a', 0), ('b', 0) ON CONFLICT (sku) DO NOTHING",
        ]
    )
    both_locked_one = threading.Barrier(2, timeout=30)
    outcomes: dict[str, BaseException | None] = {}

    def reserve(first: str, second: str) -> None:
        try:
            with store.transaction() as tx:
                tx.execute("UPDATE stock SET qty = qty + 1 WHERE sku = ?", (first,))
                both_locked_one.wait()
                tx.execute("UPDATE stock SET qty = qty + 1 WHERE sku = ?", (second,))
            outcomes[first] = None
        except BaseException as exc:
            outcomes[first] = exc

    threads = [
        threading.Thread(target=reserve, args=("a", "b")),
        threading.Thread(target=reserve, args=("b", "a")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    errors = [error for error in outcomes.values() if error is not None]
    assert len(outcomes) == 2
    assert len(errors) == 1
    assert isinstance(errors[0], TransientError)
    assert "DeadlockDetected" in str(errors[0])
    with store.transaction() as tx:
        assert tx.query("SELECT sku, qty FROM stock ORDER BY sku") == [("a", 1), ("b", 1)]


def test_serialization_failure_is_transient(store: Store) -> None:
    store.migrate(COUNTER_DDL)
    both_read = threading.Barrier(2, timeout=30)
    first_committed = threading.Event()
    outcomes: dict[str, BaseException | None] = {}

    def increment(name: str) -> None:
        try:
            with store.transaction() as tx:
                tx.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                (value,) = tx.query("SELECT n FROM counter WHERE id = 1")[0]
                both_read.wait()
                if name == "second":
                    first_committed.wait(timeout=30)
                tx.execute("UPDATE counter SET n = ? WHERE id = 1", (value + 1,))
            outcomes[name] = None
        except BaseException as exc:
            outcomes[name] = exc
        finally:
            if name == "first":
                first_committed.set()

    threads = [threading.Thread(target=increment, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes["first"] is None
    assert isinstance(outcomes["second"], TransientError)
    assert "SerializationFailure" in str(outcomes["second"])
    assert counter_value(store) == 1


def test_each_thread_gets_its_own_connection(store: Store) -> None:
    backends: dict[str, set[int]] = {}

    def record(name: str) -> None:
        for _ in range(3):
            with store.transaction() as tx:
                backends.setdefault(name, set()).add(tx.query("SELECT pg_backend_pid()")[0][0])

    threads = [threading.Thread(target=record, args=(f"t{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(len(pids) for pids in backends.values()) == [1, 1, 1]  # reused per thread
    assert len(set.union(*backends.values())) == 3  # never shared between threads


def test_password_stays_out_of_repr_and_errors(
    schema_url: str, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    if "postgres:@" not in schema_url:
        pytest.skip("needs the embedded server's password-less URL to add a password to")
    # The embedded server trusts local connections, so any password is accepted.
    store = open_store(schema_url.replace("postgres:@", "postgres:hunter2@", 1))
    assert "hunter2" not in repr(store)
    with pytest.raises(TransientError) as caught, store.transaction() as tx:
        (backend,) = tx.query("SELECT pg_backend_pid()")[0]
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        tx.claim("h", "e1")
    assert "hunter2" not in str(caught.value)
    store.close()
