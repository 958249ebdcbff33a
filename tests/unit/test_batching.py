"""Flush triggers (size, age, end) with a fake clock, and the batcher's guarantees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.records import ClosedBatch, RecordChunk
from flows.batching import FlushPolicy


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def chunk(first_offset: int, sizes: list[int], partition: int = 0) -> RecordChunk:
    offsets = list(range(first_offset, first_offset + len(sizes)))
    return RecordChunk(
        topic="orders",
        partition=partition,
        offsets=offsets,
        keys=[None] * len(sizes),
        values=[b"x" * size for size in sizes],
        headers=[None] * len(sizes),
    )


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="window"):
        FlushPolicy(window=timedelta(0), max_bytes=10)
    with pytest.raises(ValueError, match="max_bytes"):
        FlushPolicy(window=timedelta(seconds=1), max_bytes=0)


def test_size_trigger_alone() -> None:
    policy = FlushPolicy(window=timedelta(seconds=60), max_bytes=100)
    assert not policy.is_full(99)
    assert policy.is_full(100)
    assert policy.fits(0, 0, 1000)  # an empty batch takes even an oversized record
    assert policy.fits(3, 60, 40)
    assert not policy.fits(3, 61, 40)
    assert not policy.fits(1, 0, 101)  # one zero-byte record makes a batch non-empty


def test_age_trigger_alone() -> None:
    policy = FlushPolicy(window=timedelta(seconds=60), max_bytes=100)
    opened = datetime(2026, 1, 1, tzinfo=UTC)
    assert not policy.is_expired(opened, opened + timedelta(seconds=59, microseconds=999999))
    assert policy.is_expired(opened, opened + timedelta(seconds=60))
    assert policy.deadline(opened) == opened + timedelta(seconds=60)


def test_end_trigger_alone() -> None:
    policy = FlushPolicy(window=timedelta(seconds=60), max_bytes=100)
    assert policy.closes_at_end(1)
    assert not policy.closes_at_end(0)


def test_batcher_closes_on_size_exactly_at_limit() -> None:
    clock = FakeClock()
    batcher = FlushPolicy(timedelta(seconds=600), max_bytes=100).build(clock)
    closed, _ = batcher.on_batch([chunk(0, [30, 30, 30, 30, 30])])
    batches = list(closed)
    assert [b.reason for b in batches] == ["size"]
    assert batches[0].records.offsets == [0, 1, 2]
    assert batches[0].input_bytes == 90
    closed, _ = batcher.on_eof()
    (rest,) = list(closed)
    assert rest.reason == "end"
    assert rest.records.offsets == [3, 4]


def test_batcher_closes_on_age_without_new_input() -> None:
    clock = FakeClock()
    batcher = FlushPolicy(timedelta(seconds=600), max_bytes=10_000).build(clock)
    closed, retain = batcher.on_batch([chunk(10, [5, 5])])
    assert list(closed) == []
    assert retain is False  # RETAIN: an open batch keeps the logic alive
    assert batcher.notify_at() == clock.now + timedelta(seconds=600)
    clock.advance(599)
    closed, _ = batcher.on_notify()
    assert list(closed) == []
    clock.advance(1)
    closed, discard = batcher.on_notify()
    (batch,) = list(closed)
    assert batch.reason == "time"
    assert batch.records.offsets == [10, 11]
    assert discard is True
    assert batcher.notify_at() is None


def test_window_starts_at_first_record_not_at_build() -> None:
    clock = FakeClock()
    batcher = FlushPolicy(timedelta(seconds=10), max_bytes=10_000).build(clock)
    clock.advance(100)
    batcher.on_batch([chunk(0, [1])])
    assert batcher.notify_at() == clock.now + timedelta(seconds=10)


def test_single_oversized_record_is_its_own_batch() -> None:
    batcher = FlushPolicy(timedelta(seconds=10), max_bytes=100).build(FakeClock())
    closed, _ = batcher.on_batch([chunk(0, [10, 500, 10])])
    batches = list(closed)
    assert [b.records.offsets for b in batches] == [[0], [1]]
    assert all(b.reason == "size" for b in batches)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(min_value=0, max_value=300), max_size=20), max_size=20),
    st.integers(min_value=1, max_value=1000),
)
def test_every_record_lands_in_exactly_one_batch_in_order(
    chunk_sizes: list[list[int]], max_bytes: int
) -> None:
    batcher = FlushPolicy(timedelta(seconds=10), max_bytes=max_bytes).build(FakeClock())
    emitted: list[ClosedBatch] = []
    offset = 0
    for sizes in chunk_sizes:
        closed, _ = batcher.on_batch([chunk(offset, sizes)])
        emitted.extend(closed)
        offset += len(sizes)
    closed, _ = batcher.on_eof()
    emitted.extend(closed)
    seen = [o for batch in emitted for o in batch.records.offsets]
    assert seen == list(range(offset))
    for batch in emitted:
        # Over the limit only when a single record alone is larger.
        assert batch.input_bytes <= max_bytes or len(batch.records) == 1
        assert batch.input_bytes == sum(batch.records.record_sizes())


def test_batcher_in_a_dataflow_keyed_by_partition() -> None:
    clock = FakeClock()
    policy = FlushPolicy(timedelta(seconds=600), max_bytes=50)
    items = [chunk(0, [20, 20], 0), chunk(0, [20], 1), chunk(2, [20, 20], 0)]
    out: list[tuple[str, ClosedBatch]] = []
    flow = Dataflow("batching")
    stream = op.input("in", flow, TestingSource(items))
    keyed = op.key_on("key", stream, lambda c: f"{c.topic}/{c.partition}")
    closed = op.stateful_batch("batch", keyed, lambda _state: policy.build(clock))
    op.output("out", closed, TestingSink(out))
    run_main(flow)
    by_key: dict[str, list[tuple[str, list[int]]]] = {}
    for key, batch in out:
        by_key.setdefault(key, []).append((batch.reason, batch.records.offsets))
    assert by_key["orders/0"] == [("size", [0, 1]), ("end", [2, 3])]
    assert by_key["orders/1"] == [("end", [0])]


def test_record_sizes_count_key_and_value_and_take_missing_ones_as_empty() -> None:
    chunk = RecordChunk("t", 0, [0, 1, 2], [None, b"k", None], [b"abc", None, b"de"], [None] * 3)
    assert chunk.record_sizes().tolist() == [3, 1, 2]
    no_keys = RecordChunk("t", 0, [0, 1], [None, None], [b"abc", b"de"], [None, None])
    assert no_keys.record_sizes().tolist() == [3, 2]
    both = RecordChunk("t", 0, [0, 1], [b"key", b"k"], [b"abc", b"de"], [None, None])
    assert both.record_sizes().tolist() == [6, 3]
    assert both.slice(1, 2).record_sizes().tolist() == [3]
