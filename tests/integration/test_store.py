"""The handlers' store on real SQLite files: inbox, outbox, atomicity, concurrency.

:class:`StoreContract` holds the behaviour every database must have; the
PostgreSQL tests run it again (tests/integration/test_store_postgres.py).
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from foundation.errors import TransientError
from handlers.store import OutboxMessage, Store, StoreError, open_store

COUNTER_DDL = (
    "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)",
    "INSERT INTO counter (id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
)


class Boom(Exception):
    """Raised inside a transaction to roll it back."""


def count_events(url: str, event_ids: list[str], start: Barrier) -> None:
    """One worker process: open the store, then claim-and-count each event in its own
    transaction. Runs in a spawned process, so it must live at module level."""
    start.wait(timeout=60)  # both processes open the store at the same moment
    store = open_store(url)
    store.migrate(COUNTER_DDL)
    for event_id in event_ids:
        with store.transaction() as transaction:
            # Read before writing, as a handler loading its state does: on SQLite
            # a transaction that only took its write lock now would fail at once
            # (no busy wait) if another process committed since the read.
            transaction.query("SELECT n FROM counter WHERE id = 1")
            if transaction.claim("counter", event_id):
                transaction.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
    store.close()


def counter_value(store: Store) -> int:
    with store.transaction() as transaction:
        return int(transaction.query("SELECT n FROM counter WHERE id = 1")[0][0])


class StoreContract:
    """What every database behind :class:`Store` does; subclasses provide ``url``."""

    @pytest.fixture
    def store(self, url: str) -> Iterator[Store]:
        store = open_store(url)
        yield store
        store.close()

    def test_claim_is_true_once_then_false(self, store: Store) -> None:
        with store.transaction() as transaction:
            assert transaction.claim("billing", "e1") is True
            assert transaction.claim("billing", "e1") is False
        with store.transaction() as transaction:
            assert transaction.claim("billing", "e1") is False
            assert transaction.claim("shipping", "e1") is True
        assert store.processed_count("billing") == 1
        assert store.processed_count("shipping") == 1
        assert store.processed_count("nobody") == 0

    def test_a_failed_savepoint_undoes_only_its_own_writes(self, store: Store) -> None:
        """A batch of events in one transaction: the failing one leaves no trace."""
        with store.transaction() as transaction:
            with transaction.savepoint():
                assert transaction.claim("billing", "ok-1")
            with pytest.raises(ValueError, match="handler failed"), transaction.savepoint():
                assert transaction.claim("billing", "bad-1")
                # On PostgreSQL a failed statement too is undone by the savepoint.
                with pytest.raises(Exception):  # noqa: B017 (driver-specific class)
                    transaction.execute("SELECT * FROM no_such_table")
                raise ValueError("handler failed")
            with transaction.savepoint():
                assert transaction.claim("billing", "ok-2")
        with store.transaction() as transaction:
            assert transaction.claim("billing", "bad-1") is True  # never claimed
        assert store.processed_count("billing") == 3

    def test_claim_holds_across_stores_and_reopening(self, store: Store, url: str) -> None:
        with store.transaction() as transaction:
            assert transaction.claim("billing", "e1")
        other = open_store(url)
        with other.transaction() as transaction:
            assert transaction.claim("billing", "e1") is False
            assert transaction.claim("billing", "e2") is True
        other.close()
        store.close()
        reopened = open_store(url)
        with reopened.transaction() as transaction:
            assert transaction.claim("billing", "e1") is False
            assert transaction.claim("billing", "e2") is False
        assert reopened.processed_count("billing") == 2
        reopened.close()

    def test_exception_rolls_back_claim_state_and_outbox(self, store: Store) -> None:
        store.migrate(COUNTER_DDL)
        error = Boom("handler failed")
        with pytest.raises(Boom) as caught, store.transaction() as transaction:
            assert transaction.claim("counter", "e1")
            transaction.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
            transaction.add_outbox("orders", b"k", b"v", "out-1")
            raise error
        assert caught.value is error
        assert store.processed_count("counter") == 0
        assert counter_value(store) == 0
        assert store.pending_outbox() == []
        # The event is not burnt: the retry claims and commits it.
        with store.transaction() as transaction:
            assert transaction.claim("counter", "e1")
            transaction.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
        assert counter_value(store) == 1

    def test_claim_many_claims_each_new_id_once_and_says_which(self, store: Store) -> None:
        with store.transaction() as transaction:
            assert transaction.claim("billing", "e1")
        with store.transaction() as transaction:
            claimed = transaction.claim_many("billing", ["e1", "e2", "e3", "e2"])
            assert claimed == {"e2", "e3"}
            assert transaction.claim_many("billing", ["e2", "e4"]) == {"e4"}
            assert transaction.claim_many("shipping", ["e1"]) == {"e1"}  # per handler
        assert store.processed_count("billing") == 4
        # More ids than one statement takes.
        many = [f"m{n}" for n in range(1234)]
        with store.transaction() as transaction:
            assert transaction.claim_many("billing", many) == set(many)
        assert store.processed_count("billing") == 4 + 1234

    def test_unclaim_gives_an_event_back(self, store: Store) -> None:
        with store.transaction() as transaction:
            assert transaction.claim_many("billing", ["e1", "e2"]) == {"e1", "e2"}
            transaction.unclaim("billing", "e1")
        assert not store.claimed("billing", "e1")
        assert store.claimed("billing", "e2")

    def test_a_rolled_back_savepoint_drops_its_outbox_rows_only(self, store: Store) -> None:
        with store.transaction() as transaction:
            transaction.add_outbox("orders", b"k", b"before", "out-1")
            with pytest.raises(Boom), transaction.savepoint():
                transaction.add_outbox("orders", b"k", b"inside", "out-2")
                raise Boom("this event failed")
            with transaction.savepoint():
                transaction.add_outbox("orders", b"k", b"after", "out-3")
        assert [row.value for row in store.pending_outbox()] == [b"before", b"after"]
        many = [(f"o{n}", b"%d" % n) for n in range(1234)]
        with store.transaction() as transaction:
            for event_id, value in many:
                transaction.add_outbox("orders", None, value, event_id)
        rows = store.pending_outbox(limit=2000)
        assert [row.event_id for row in rows[2:]] == [event_id for event_id, _ in many]

    def test_pending_outbox_for_some_publishers_skips_the_others_rows(self, store: Store) -> None:
        with store.transaction() as transaction:
            transaction.add_outbox("orders", None, b"a", "e1", publisher="payments")
            transaction.add_outbox("orders", None, b"b", "e2", publisher="finance")
            transaction.add_outbox("orders", None, b"c", "e3")  # no publisher named
        assert [m.value for m in store.pending_outbox()] == [b"a", b"b", b"c"]
        assert [m.value for m in store.pending_outbox(publishers=["payments"])] == [b"a", b"c"]
        assert [m.value for m in store.pending_outbox(publishers=[])] == [b"c"]
        assert [m.value for m in store.pending_outbox(publishers=["x", "finance"])] == [b"b", b"c"]

    def test_outbox_round_trips_bytes_and_headers_exactly(self, store: Store) -> None:
        headers = [("trace", b"\x00\xff\x10"), ("trace", b""), ("ünïcode", "é".encode())]
        with store.transaction() as transaction:
            transaction.add_outbox("orders", b"\x00key\xff", b"\x00value\xfe", "out-1", headers)
            transaction.add_outbox("orders.dlq", None, b"", "out-2")
        assert store.pending_outbox() == [
            OutboxMessage(
                id=store.pending_outbox()[0].id,
                topic="orders",
                key=b"\x00key\xff",
                value=b"\x00value\xfe",
                headers=tuple(headers),
                event_id="out-1",
            ),
            OutboxMessage(
                id=store.pending_outbox()[1].id,
                topic="orders.dlq",
                key=None,
                value=b"",
                headers=(),
                event_id="out-2",
            ),
        ]

    def test_pending_outbox_is_oldest_first_and_mark_sent_removes(self, store: Store) -> None:
        for batch in range(3):
            with store.transaction() as transaction:
                for number in range(4):
                    transaction.add_outbox("t", None, b"%d" % (batch * 4 + number), f"e{batch}")
        pending = store.pending_outbox()
        assert [message.value for message in pending] == [b"%d" % n for n in range(12)]
        ids = [message.id for message in pending]
        assert ids == sorted(ids)
        assert len(set(ids)) == 12
        assert [m.value for m in store.pending_outbox(limit=5)] == [b"0", b"1", b"2", b"3", b"4"]

        store.mark_sent(ids[:5])
        store.mark_sent([*ids[:2], 10**12])  # already sent and unknown ids: no error
        store.mark_sent([])
        assert [message.id for message in store.pending_outbox()] == ids[5:]
        store.mark_sent(ids)
        assert store.pending_outbox() == []

    def test_purge_sent_deletes_only_rows_sent_before_the_cutoff(self, url: str) -> None:
        clock = [datetime(2026, 11, 28, 12, tzinfo=UTC)]
        store = open_store(url, now=lambda: clock[0])
        try:
            with store.transaction() as transaction:
                for number in range(3):
                    transaction.add_outbox("t", None, b"%d" % number, f"p{number}")
            first, second, third = (message.id for message in store.pending_outbox())
            store.mark_sent([first])
            clock[0] += timedelta(minutes=50)
            store.mark_sent([second])
            clock[0] += timedelta(minutes=20)  # first sent 70 min ago, second 20, third unsent
            assert store.purge_sent(timedelta(hours=1)) == 1
            assert store.purge_sent(timedelta(hours=1)) == 0
            assert [m.id for m in store.pending_outbox()] == [third]
            clock[0] += timedelta(days=30)
            assert store.purge_sent(timedelta(hours=1)) == 1  # the second; never an unsent row
            assert [m.id for m in store.pending_outbox()] == [third]
        finally:
            store.close()

    def test_outbox_refuses_text_values(self, store: Store) -> None:
        with pytest.raises(TypeError), store.transaction() as transaction:
            transaction.add_outbox("t", None, "text", "e1")  # type: ignore[arg-type]  # on purpose
        with pytest.raises(TypeError), store.transaction() as transaction:
            transaction.add_outbox("t", None, b"v", "e1", [("h", "text")])  # type: ignore[list-item]  # on purpose
        assert store.pending_outbox() == []

    def test_literal_percent_and_question_mark_in_quotes(self, store: Store) -> None:
        with store.transaction() as transaction:
            rows = transaction.query(
                "SELECT '50% off?', ? || '%', 'it''s ?' -- really? 100%\n", ("x",)
            )
        assert rows == [("50% off?", "x%", "it's ?")]

    def test_execute_returns_rowcount(self, store: Store) -> None:
        store.migrate(["CREATE TABLE IF NOT EXISTS item (id TEXT PRIMARY KEY, qty INTEGER)"])
        with store.transaction() as transaction:
            for name in ("a", "b", "c"):
                assert transaction.execute("INSERT INTO item VALUES (?, ?)", (name, 1)) == 1
            assert transaction.execute("UPDATE item SET qty = qty + 1 WHERE qty = ?", (1,)) == 3
            # The atomic guard handlers rely on: a second UPDATE with the same
            # precondition changes nothing.
            assert (
                transaction.execute("UPDATE item SET qty = 9 WHERE id = ? AND qty = 1", ("a",)) == 0
            )
            assert transaction.query("SELECT id, qty FROM item ORDER BY id") == [
                ("a", 2),
                ("b", 2),
                ("c", 2),
            ]

    def test_migrate_is_idempotent_and_atomic(self, store: Store) -> None:
        store.migrate(COUNTER_DDL)
        store.migrate(COUNTER_DDL)
        assert counter_value(store) == 0
        with pytest.raises(Exception, match=r"(?i)syntax"):
            store.migrate(["CREATE TABLE IF NOT EXISTS half (id TEXT PRIMARY KEY)", "NOT SQL"])
        with store.transaction() as transaction:
            transaction.execute("CREATE TABLE half (id TEXT PRIMARY KEY)")  # was rolled back

    def test_other_database_errors_propagate_unchanged(self, store: Store) -> None:
        with pytest.raises(Exception) as caught, store.transaction() as transaction:
            transaction.execute("INSERT INTO inbox VALUES ('h', 'e', 'now')")
            transaction.execute("INSERT INTO inbox VALUES ('h', 'e', 'now')")
        assert not isinstance(caught.value, TransientError | StoreError)
        assert "unique" in str(caught.value).lower()
        assert store.processed_count("h") == 0

    def test_processed_at_comes_from_the_clock(self, url: str) -> None:
        store = open_store(url, now=lambda: datetime(2026, 11, 28, 14, 3, 11, tzinfo=UTC))
        with store.transaction() as transaction:
            transaction.claim("billing", "e1")
            assert transaction.query("SELECT processed_at FROM inbox") == [
                ("2026-11-28T14:03:11.000000+00:00",)
            ]
        store.close()

    def test_nested_and_stale_transactions_are_refused(self, store: Store) -> None:
        with store.transaction() as outer:
            with pytest.raises(StoreError, match="already inside"), store.transaction():
                pass
            assert outer.claim("h", "e1")
        with pytest.raises(StoreError, match="ended"):
            outer.claim("h", "e2")
        assert store.processed_count("h") == 1

    def test_closed_store_refuses_work(self, store: Store) -> None:
        store.close()
        with pytest.raises(StoreError, match="closed"), store.transaction():
            pass
        store.close()  # twice is fine

    def test_threads_share_one_store(self, store: Store) -> None:
        store.migrate(COUNTER_DDL)
        failures: list[BaseException] = []

        def work(first: int) -> None:
            try:
                for number in range(first, first + 60):
                    with store.transaction() as transaction:
                        if transaction.claim("counter", f"e{number}"):
                            transaction.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
            except BaseException as exc:
                failures.append(exc)

        # Overlapping ranges: 0..59, 30..89, 60..119, 90..149 -> 150 distinct ids.
        threads = [threading.Thread(target=work, args=(first,)) for first in (0, 30, 60, 90)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert failures == []
        assert counter_value(store) == 150
        assert store.processed_count("counter") == 150

    def test_two_processes_lose_no_update(self, store: Store, url: str) -> None:
        # Each process: 500 transactions; ids overlap by half, 750 distinct.
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(2)
        processes = [
            context.Process(
                target=count_events, args=(url, [f"e{n}" for n in range(first, first + 500)], start)
            )
            for first in (0, 250)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
        assert [process.exitcode for process in processes] == [0, 0]
        assert counter_value(store) == 750
        assert store.processed_count("counter") == 750


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'nested' / 'dirs' / 'state.db'}"


def test_sqlite_is_in_wal_mode_and_durable(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_store(f"sqlite:///{path}")
    with store.transaction() as transaction:
        assert transaction.query("PRAGMA journal_mode") == [("wal",)]
        assert transaction.query("PRAGMA synchronous") == [(2,)]  # FULL
        assert transaction.query("PRAGMA busy_timeout") == [(30_000,)]
    store.close()
    with sqlite3.connect(path) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    plain.close()


def test_sqlite_relative_path_is_relative_to_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///data/handlers/state.db")
    monkeypatch.chdir("/")  # threads that connect later still find the same file
    with store.transaction() as transaction:
        assert transaction.claim("h", "e1")
    store.close()
    assert (tmp_path / "data" / "handlers" / "state.db").is_file()


def test_sqlite_lock_timeout_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_store(f"sqlite:///{path}")
    with store.transaction() as transaction:
        # Wait 50 ms instead of 30 s for this connection, to keep the test fast.
        transaction.execute("PRAGMA busy_timeout = 50")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransientError, match="locked"), store.transaction() as transaction:
            transaction.claim("h", "e1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with store.transaction() as transaction:
        assert transaction.claim("h", "e1")
    store.close()


def test_a_store_made_before_publishers_gets_the_column_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key BLOB,
            value BLOB NOT NULL, headers TEXT NOT NULL, event_id TEXT NOT NULL,
            created_at TEXT NOT NULL, sent_at TEXT
        );
        INSERT INTO outbox (topic, key, value, headers, event_id, created_at)
            VALUES ('orders', NULL, X'6f6c64', '[]', 'old-1', '2026-01-01T00:00:00+00:00');
        """
    )
    old.close()
    store = open_store(f"sqlite:///{path}")
    with store.transaction() as transaction:
        transaction.add_outbox("orders", None, b"new", "new-1", publisher="payments")
    # Every relay publishes the old row; only the payments relay the new one.
    assert [m.value for m in store.pending_outbox(publishers=["finance"])] == [b"old"]
    assert [m.value for m in store.pending_outbox(publishers=["payments"])] == [b"old", b"new"]
    store.close()
    open_store(f"sqlite:///{path}").close()  # a second start finds the column there
