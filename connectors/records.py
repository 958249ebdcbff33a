"""Plain data that moves between the steps of a flow.

Records travel as column lists (one list per field) rather than one object per
record: it is cheaper to build, to route between workers and to pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = [
    "BatchRange",
    "CloseReason",
    "ClosedBatch",
    "DeadLetter",
    "Headers",
    "RecordChunk",
    "ValidatedBatch",
    "byte_lengths",
    "partition_key",
]

Headers = list[tuple[str, str | bytes | None]] | None
CloseReason = Literal["size", "time", "end"]


def partition_key(topic: str, partition: int) -> str:
    """The Bytewax key of a Kafka partition: ``"orders/3"``."""
    return f"{topic}/{partition}"


@dataclass(slots=True)
class RecordChunk:
    """Consecutive records of one Kafka partition, offsets ascending."""

    topic: str
    partition: int
    offsets: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    headers: list[Headers] = field(default_factory=list)
    # record_sizes() of these records, once asked for: the source and the batcher
    # both need them. Dropped whenever the records change.
    _sizes: npt.NDArray[np.int64] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.offsets)

    def record_sizes(self) -> npt.NDArray[np.int64]:
        """Bytes each record adds to a buffer (key plus value); computed once per chunk.

        An array: no Python int per record (this runs for every record read,
        on the thread that reads).
        """
        if self._sizes is None or len(self._sizes) != len(self.offsets):
            self._sizes = byte_lengths(self.keys) + byte_lengths(self.values)
        return self._sizes

    def slice(self, start: int, stop: int) -> RecordChunk:
        """Records ``[start, stop)`` as a new chunk."""
        return RecordChunk(
            self.topic,
            self.partition,
            self.offsets[start:stop],
            self.keys[start:stop],
            self.values[start:stop],
            self.headers[start:stop],
            None if self._sizes is None else self._sizes[start:stop],
        )

    def extend(self, other: RecordChunk) -> None:
        """Append ``other``'s records (same partition) after ours."""
        self.offsets.extend(other.offsets)
        self.keys.extend(other.keys)
        self.values.extend(other.values)
        self.headers.extend(other.headers)
        self._sizes = None


def byte_lengths(items: Sequence[bytes | None]) -> npt.NDArray[np.int64]:
    """``len`` of each item, 0 for None, by a C-level ``map`` when none is None."""
    count = len(items)
    try:
        return np.fromiter(map(len, cast(Sequence[bytes], items)), dtype=np.int64, count=count)
    except TypeError:  # a missing key or value (tombstone) somewhere
        if items.count(None) == count:
            return np.zeros(count, dtype=np.int64)
        lengths = (0 if item is None else len(item) for item in items)
        return np.fromiter(lengths, dtype=np.int64, count=count)


@dataclass(slots=True)
class ClosedBatch:
    """A contiguous offset range of one partition, closed by a flush trigger."""

    records: RecordChunk
    reason: CloseReason
    opened_at: datetime
    closed_at: datetime
    input_bytes: int

    @property
    def next_offset(self) -> int:
        """The fence this batch moves to: one past its last offset."""
        return self.records.offsets[-1] + 1


@dataclass(frozen=True, slots=True)
class BatchRange:
    """What committing needs of a closed batch once validated: its offsets, not its bytes.

    Validation turns the records into Arrow rows and dead letters; keeping
    only this lets the raw values be freed before the commit (a window's worth
    of memory per batch waiting or being committed).
    """

    topic: str
    partition: int
    offsets: list[int]
    reason: CloseReason
    opened_at: datetime
    closed_at: datetime
    input_bytes: int

    @classmethod
    def of(cls, batch: ClosedBatch) -> BatchRange:
        records = batch.records
        return cls(
            records.topic,
            records.partition,
            records.offsets,
            batch.reason,
            batch.opened_at,
            batch.closed_at,
            batch.input_bytes,
        )

    @property
    def next_offset(self) -> int:
        """The fence this batch moves to: one past its last offset."""
        return self.offsets[-1] + 1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An invalid record with the original bytes and why it was refused."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    offset: int
    stage: str
    error_class: str
    error_message: str


@dataclass(slots=True)
class ValidatedBatch:
    """A closed batch after validation: valid rows as Arrow, the rest as dead letters.

    ``table`` holds every valid record (duplicates not removed yet) in offset
    order, with lineage columns (``_value_digest`` fingerprints the raw value).
    """

    stream: str
    batch: BatchRange
    table: pa.Table
    dead_letters: list[DeadLetter]
