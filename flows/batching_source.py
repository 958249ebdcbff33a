"""A source whose partitions close their own batches: no exchange between workers.

Bytewax assigns source partitions to workers round-robin but routes keyed
state by a hash of the key, so with a ``key_on`` + ``stateful_batch`` step
half the chunks of a two-process flow were pickled to the other process,
and the commits of a partition happened where its reader could not see them
(its in-flight limit then waited for a poll of the lake). Here each source
partition runs the same :class:`~flows.batching.PartitionBatcher` over its
own records and emits :class:`~connectors.records.ClosedBatch` es; the sink
(a ``DynamicSink``) validates and commits them on the same worker.

The batcher's guarantees hold unchanged: contiguous offsets of one
partition per batch, closed at ``max_bytes``, at the window's age (also on
an idle partition: the partition asks to be woken at the deadline), and at
the end of finite input.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.records import ClosedBatch, RecordChunk
from flows.batching import FlushPolicy, PartitionBatcher
from foundation.clock import Clock, utc_now
from foundation.errors import TerminalError
from foundation.failure import FailureLatch

__all__ = ["BatchingSource"]


@dataclass(frozen=True)
class BatchingSource(FixedPartitionedSource[ClosedBatch, None]):
    """Wraps a source of :class:`RecordChunk` s; batches each partition with ``policy``."""

    chunks: FixedPartitionedSource[RecordChunk, None]
    policy: FlushPolicy
    now: Clock = utc_now
    failure: FailureLatch | None = None
    """Polled on every read: a failure downstream (the sink's threads) stops the worker;
    a reader's terminal error (its log changed) trips it, so it ends the flow in one line."""

    def list_parts(self) -> list[str]:
        return self.chunks.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _BatchingPartition:
        inner = self.chunks.build_part(step_id, for_part, resume_state)
        return _BatchingPartition(inner, self.policy.build(self.now), self.now, self.failure)


class _BatchingPartition(StatefulSourcePartition[ClosedBatch, None]):
    """One partition's reader and batcher."""

    def __init__(
        self,
        chunks: StatefulSourcePartition[RecordChunk, None],
        batcher: PartitionBatcher,
        now: Clock,
        failure: FailureLatch | None = None,
    ) -> None:
        self._chunks = chunks
        self._batcher = batcher
        self._now = now
        self._failure = failure
        self._ended = False

    def next_batch(self) -> list[ClosedBatch]:
        if self._failure is not None:
            self._failure.raise_if_tripped()
        if self._ended:
            raise StopIteration()
        try:
            chunks = self._chunks.next_batch()
        except StopIteration:
            # End of finite input: the open batch closes ("end"), then we stop.
            self._ended = True
            closed, _ = self._batcher.on_eof()
            batches = list(closed)
            if not batches:
                raise
            return batches
        except TerminalError as exc:
            # The reader cannot go on (e.g. its log changed): fail closed, in one line.
            if self._failure is not None:
                self._failure.trip(str(exc), exc)
            raise
        batches = list(self._batcher.on_batch(list(chunks))[0]) if chunks else []
        deadline = self._batcher.notify_at()
        if deadline is not None and self._now() >= deadline:
            batches.extend(self._batcher.on_notify()[0])
        return batches

    def next_awake(self) -> datetime | None:
        reader = self._chunks.next_awake()
        if reader is None:
            return None  # the reader wants to be polled again at once
        deadline = self._batcher.notify_at()
        return reader if deadline is None else min(reader, deadline)

    def snapshot(self) -> None:
        # The lake's fence is the offset of record; an open batch is read again.
        return None

    def close(self) -> None:
        self._chunks.close()
