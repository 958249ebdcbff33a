"""Batching inside each source partition: size, age (also when idle) and end of input.

Driven like Bytewax drives a source partition: ``next_batch`` when
``next_awake`` says so, with a fake reader and a fake clock.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, run_main

from connectors.records import ClosedBatch, RecordChunk
from flows.batching import FlushPolicy
from flows.batching_source import BatchingSource
from foundation.errors import TerminalError
from foundation.failure import FailureLatch
from tests.unit.test_batching import FakeClock, chunk

IDLE = timedelta(milliseconds=20)


class ScriptedReader(StatefulSourcePartition[RecordChunk, None]):
    """Returns the scripted chunk lists one call at a time, then ends (or idles)."""

    def __init__(self, script: list[list[RecordChunk]], clock: FakeClock, ends: bool) -> None:
        self._script = deque(script)
        self._clock = clock
        self._ends = ends
        self.closed = False

    def next_batch(self) -> list[RecordChunk]:
        if self._script:
            return self._script.popleft()
        if self._ends:
            raise StopIteration()
        return []

    def next_awake(self) -> datetime | None:
        return None if self._script else self._clock() + IDLE

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


class ScriptedSource(FixedPartitionedSource[RecordChunk, None]):
    def __init__(self, readers: dict[str, ScriptedReader]) -> None:
        self.readers = readers

    def list_parts(self) -> list[str]:
        return sorted(self.readers)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> ScriptedReader:
        return self.readers[for_part]


def build(
    script: list[list[RecordChunk]], *, ends: bool, max_bytes: int = 100, window_s: int = 600
) -> tuple[StatefulSourcePartition[ClosedBatch, None], FakeClock, ScriptedReader]:
    clock = FakeClock()
    reader = ScriptedReader(script, clock, ends)
    source = BatchingSource(
        ScriptedSource({"t/0": reader}), FlushPolicy(timedelta(seconds=window_s), max_bytes), clock
    )
    return source.build_part("read", "t/0", None), clock, reader


def offsets(batch: ClosedBatch) -> list[int]:
    return batch.records.offsets


def test_a_batch_closes_at_max_bytes_inside_the_partition() -> None:
    part, _, _ = build([[chunk(0, [40, 40, 40, 40])]], ends=False)
    batches = list(part.next_batch())
    assert [offsets(b) for b in batches] == [[0, 1]]
    assert batches[0].reason == "size"


def test_an_idle_partition_closes_its_batch_at_the_window_age() -> None:
    part, clock, _ = build([[chunk(0, [10, 10])]], ends=False, window_s=60)
    assert part.next_batch() == []
    # Idle: the reader would wait 20 ms; the batch's deadline is later.
    awake = part.next_awake()
    assert awake is not None and awake == clock() + IDLE
    clock.advance(59)
    assert part.next_batch() == []
    clock.advance(1)
    batches = part.next_batch()
    assert [(offsets(b), b.reason) for b in batches] == [([0, 1], "time")]


def test_the_wake_up_is_never_later_than_the_deadline() -> None:
    part, clock, _ = build([[chunk(0, [10])]], ends=False, window_s=1)
    opened = clock()
    part.next_batch()
    clock.advance(0.999)
    # The reader would sleep 20 ms, past the deadline: the deadline wins.
    assert part.next_awake() == opened + timedelta(seconds=1)


def test_end_of_input_closes_the_open_batch_then_stops() -> None:
    part, _, reader = build([[chunk(0, [10, 10])], [chunk(2, [10])]], ends=True)
    assert part.next_batch() == []
    assert part.next_batch() == []
    batches = part.next_batch()
    assert [(offsets(b), b.reason) for b in batches] == [([0, 1, 2], "end")]
    with pytest.raises(StopIteration):
        part.next_batch()
    part.close()
    assert reader.closed


def test_end_of_input_with_nothing_open_stops_at_once() -> None:
    part, _, _ = build([], ends=True)
    with pytest.raises(StopIteration):
        part.next_batch()


def test_in_a_dataflow_every_record_lands_in_one_batch_per_partition() -> None:
    clock = FakeClock()
    readers = {
        f"t/{p}": ScriptedReader(
            [[chunk(0, [30] * 5, partition=p)], [chunk(5, [30] * 5, partition=p)]], clock, True
        )
        for p in range(3)
    }
    flow = Dataflow("batching_source")
    batches = op.input(
        "read", flow, BatchingSource(ScriptedSource(readers), FlushPolicy(timedelta(hours=1), 100))
    )
    out: list[ClosedBatch] = []
    op.output("out", batches, TestingSink(out))
    run_main(flow)
    for partition in range(3):
        mine = [b for b in out if b.records.partition == partition]
        assert [o for b in mine for o in offsets(b)] == list(range(10))
        assert all(sum(b.records.record_sizes()) <= 100 for b in mine)


class FailingReader(ScriptedReader):
    """A reader that finds its log changed under it."""

    def next_batch(self) -> list[RecordChunk]:
        raise TerminalError("t/0: the lake's fence 100 does not belong to the broker's log")


def test_a_reader_that_cannot_go_on_trips_the_failure_latch_with_its_line() -> None:
    clock = FakeClock()
    latch = FailureLatch()
    source = BatchingSource(
        ScriptedSource({"t/0": FailingReader([], clock, ends=False)}),
        FlushPolicy(timedelta(seconds=600), 100),
        clock,
        latch,
    )
    part = source.build_part("read", "t/0", None)
    with pytest.raises(TerminalError):
        part.next_batch()
    assert latch.failure is not None
    assert str(latch.failure) == "t/0: the lake's fence 100 does not belong to the broker's log"
