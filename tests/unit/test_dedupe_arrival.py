"""The dedupe window runs in arrival time (the committer's clock), whatever events claim.

A partition committer on a local Delta table with an injected clock: the
window starts when an id's first copy is committed, survives a rebuild from
the lake, and no event's ``occurred_at`` (days ahead or behind) moves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from connectors.dead_letters import DeadLetterWriter
from connectors.records import ClosedBatch, RecordChunk
from events.registry import ORDERS
from flows.validation import validate_batch
from generator import generate_order_records
from sinks.delta_lake import DeltaLake
from sinks.lake_sink import PartitionCommitter

HORIZON = timedelta(days=1)
START = datetime(2026, 12, 1, 12, tzinfo=UTC)
TOPIC = "orders"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


class Partition:
    """Partition 0 of ``TOPIC``: appends records, commits them as batches."""

    def __init__(self, data_dir: Path, clock: FakeClock) -> None:
        self.lake = DeltaLake(data_dir / "lake", ORDERS)
        self.lake.ensure_tables()
        self.clock = clock
        # No letters in these tests: the writer never sends anything.
        self.letters = DeadLetterWriter(
            {"bootstrap.servers": "127.0.0.1:9", "log_level": "0"}, "orders"
        )
        self.next_offset = 0
        self.restart()

    def restart(self) -> None:
        """A new committer: its index rebuilt from the lake, as after a restart."""
        self.committer = PartitionCommitter(
            self.lake, self.letters, TOPIC, 0, HORIZON, now=self.clock
        )

    def commit(self, values: list[bytes]) -> int:
        """Commit ``values`` as one batch; the rows it kept."""
        offsets = list(range(self.next_offset, self.next_offset + len(values)))
        self.next_offset += len(values)
        count = len(values)
        chunk = RecordChunk(TOPIC, 0, offsets, [b"k"] * count, [*values], [None] * count)
        now = self.clock()
        batch = ClosedBatch(chunk, "size", now, now, sum(map(len, values)))
        outcome = self.committer.commit(validate_batch(ORDERS, batch))
        assert outcome.record is not None
        return outcome.record.rows


def event(event_id: str, occurred_at: datetime) -> bytes:
    record = next(generate_order_records(1, duplicate_ratio=0.0, malformed_ratio=0.0))
    document = orjson.loads(record.value)
    document["event_id"] = event_id
    document["occurred_at"] = occurred_at.isoformat().replace("+00:00", "Z")
    return orjson.dumps(document)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def partition(tmp_path: Path, clock: FakeClock) -> Iterator[Partition]:
    opened = Partition(tmp_path, clock)
    yield opened
    opened.letters.close()


def test_an_event_dated_ahead_expires_nothing(partition: Partition, clock: FakeClock) -> None:
    earlier = [event(f"e{i}", START - timedelta(minutes=i)) for i in range(5)]
    assert partition.commit(earlier) == 5
    clock.moment += timedelta(minutes=1)
    assert partition.commit([event("skewed", START + timedelta(days=2))]) == 1
    clock.moment += timedelta(minutes=1)
    assert partition.commit(earlier) == 0
    partition.restart()
    assert partition.commit(earlier) == 0


def test_an_old_event_sent_twice_lands_once(partition: Partition, clock: FakeClock) -> None:
    old = event("old", START - timedelta(days=3))
    assert partition.commit([event("now", START), old]) == 2
    clock.moment += timedelta(hours=23)
    assert partition.commit([old]) == 0
    partition.restart()
    assert partition.commit([old]) == 0


def test_a_resend_after_the_horizon_of_arrival_lands_again(
    partition: Partition, clock: FakeClock
) -> None:
    first = event("a", START)
    assert partition.commit([first]) == 1
    clock.moment += HORIZON - timedelta(microseconds=1)
    partition.restart()
    assert partition.commit([first]) == 0
    # The dropped copy did not extend the window: it runs from the first one.
    clock.moment += timedelta(microseconds=1)
    assert partition.commit([first]) == 1


def test_the_rebuild_reads_arrival_times_from_the_batches_table(
    partition: Partition, clock: FakeClock
) -> None:
    assert partition.commit([event("a", START)]) == 1
    clock.moment += timedelta(hours=12)
    assert partition.commit([event("b", START)]) == 1
    clock.moment += timedelta(hours=12)
    partition.restart()
    # "a" arrived a horizon ago (forgotten), "b" half a horizon ago.
    assert len(partition.committer.index) == 1
    assert partition.commit([event("a", START), event("b", START)]) == 1
