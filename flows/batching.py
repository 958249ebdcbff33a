"""Per-partition batching: close a batch at an age or a size, whichever first.

The batcher is keyed by Kafka partition, so a batch is always a contiguous
offset range of one partition: that is what makes the lake's offset fence
exact. It keeps raw bytes only; on a restart nothing is restored from Bytewax
state, because the source re-reads everything after the lake's fence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bytewax.operators import StatefulBatchLogic

from connectors.records import ClosedBatch, CloseReason, RecordChunk
from foundation.clock import Clock, utc_now

__all__ = ["FlushPolicy", "PartitionBatcher"]


@dataclass(frozen=True)
class FlushPolicy:
    """When a batch closes: ``window`` after its first record, or at ``max_bytes``.

    One method per trigger, each testable on its own.
    """

    window: timedelta
    max_bytes: int

    def __post_init__(self) -> None:
        if self.window <= timedelta(0):
            raise ValueError(f"window must be positive, got {self.window}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {self.max_bytes}")

    def deadline(self, opened_at: datetime) -> datetime:
        """When a batch opened at ``opened_at`` closes by age."""
        return opened_at + self.window

    def is_expired(self, opened_at: datetime, now: datetime) -> bool:
        """Age trigger: the window since the first record has passed."""
        return now >= self.deadline(opened_at)

    def is_full(self, buffered_bytes: int) -> bool:
        """Size trigger: the buffered input reached ``max_bytes``."""
        return buffered_bytes >= self.max_bytes

    def fits(self, buffered_records: int, buffered_bytes: int, record_bytes: int) -> bool:
        """Whether one more record stays within ``max_bytes`` (an empty batch takes any)."""
        return buffered_records == 0 or buffered_bytes + record_bytes <= self.max_bytes

    def closes_at_end(self, buffered_records: int) -> bool:
        """End trigger: at end of input, a non-empty batch closes."""
        return buffered_records > 0

    def build(self, now: Clock = utc_now) -> PartitionBatcher:
        """A fresh batcher for one partition."""
        return PartitionBatcher(self, now)


class PartitionBatcher(StatefulBatchLogic[RecordChunk, ClosedBatch, None]):
    """Buffers one partition's records and emits :class:`ClosedBatch` es.

    Guarantees: every record lands in exactly one batch, in offset order; a
    batch never holds more than ``max_bytes`` unless one record alone is larger;
    a batch closes by age even when no new record arrives (``notify_at``).
    """

    def __init__(self, policy: FlushPolicy, now: Clock) -> None:
        self._policy = policy
        self._now = now
        self._buffer: RecordChunk | None = None
        self._buffered_bytes = 0
        self._opened_at: datetime | None = None

    def on_batch(self, values: list[RecordChunk]) -> tuple[Iterable[ClosedBatch], bool]:
        closed: list[ClosedBatch] = []
        for chunk in values:
            self._add(chunk, closed)
        return closed, self._discard_if_empty()

    def on_notify(self) -> tuple[Iterable[ClosedBatch], bool]:
        closed: list[ClosedBatch] = []
        if self._opened_at is not None and self._policy.is_expired(self._opened_at, self._now()):
            closed.append(self._close("time"))
        return closed, self._discard_if_empty()

    def on_eof(self) -> tuple[Iterable[ClosedBatch], bool]:
        closed: list[ClosedBatch] = []
        if self._buffer is not None and self._policy.closes_at_end(len(self._buffer)):
            closed.append(self._close("end"))
        return closed, self._discard_if_empty()

    def notify_at(self) -> datetime | None:
        if self._opened_at is None:
            return None
        return self._policy.deadline(self._opened_at)

    def snapshot(self) -> None:
        # Nothing to save: after a restart the source resumes from the lake's
        # fence, so an open batch is simply read again. Keeping state empty also
        # keeps Bytewax's per-epoch snapshot free.
        return None

    def _add(self, chunk: RecordChunk, closed: list[ClosedBatch]) -> None:
        sizes = chunk.record_sizes()
        total = int(sizes.sum())
        if self._buffered_bytes + total < self._policy.max_bytes:
            self._append(chunk, total)
            return
        # Slow path: split the chunk where the batch fills up.
        start = 0
        pending = 0
        buffered = len(self._buffer) if self._buffer is not None else 0
        for index, size in enumerate(sizes.tolist()):
            if not self._policy.fits(
                buffered + index - start, self._buffered_bytes + pending, size
            ):
                self._append(chunk.slice(start, index), pending)
                closed.append(self._close("size"))
                start, pending, buffered = index, 0, 0
            pending += size
        self._append(chunk.slice(start, len(sizes)), pending)
        if self._policy.is_full(self._buffered_bytes):
            closed.append(self._close("size"))

    def _append(self, chunk: RecordChunk, size: int) -> None:
        if len(chunk) == 0:
            return
        if self._buffer is None:
            self._buffer = RecordChunk(chunk.topic, chunk.partition)
            self._opened_at = self._now()
        self._buffer.extend(chunk)
        self._buffered_bytes += size

    def _close(self, reason: CloseReason) -> ClosedBatch:
        assert self._buffer is not None and self._opened_at is not None
        batch = ClosedBatch(
            records=self._buffer,
            reason=reason,
            opened_at=self._opened_at,
            closed_at=self._now(),
            input_bytes=self._buffered_bytes,
        )
        self._buffer = None
        self._buffered_bytes = 0
        self._opened_at = None
        return batch

    def _discard_if_empty(self) -> bool:
        return self.DISCARD if self._buffer is None else self.RETAIN
