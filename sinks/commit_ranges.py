"""How many hive partitions one Delta commit may touch: a batch's commit ranges.

Every hive partition (``event_date``/``event_hour``) a commit touches is one
Parquet file and one add action in the Delta log. A batch whose events span
many hours (a client clock years off, a backfill of old events) would
otherwise write one file per hour in one commit: 5,000 events in 5,000
hours, 5,000 files and a 7 MB log entry. So a batch is committed as
consecutive offset ranges, each touching at most ``limit`` partitions: a
range ends just before the first record (in offset order) whose partition
would be the ``limit + 1``-th distinct one. Every range is a commit with its
own fence (its end offset), so exactly once holds across the split, and every
event keeps its true ``event_date`` and ``event_hour``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["DEFAULT_MAX_PARTITIONS_PER_COMMIT", "commit_ranges", "partition_keys"]

DEFAULT_MAX_PARTITIONS_PER_COMMIT = 100
"""Four days of hours: late or early events within that never split a batch."""


def partition_keys(table: pa.Table) -> pa.ChunkedArray:
    """``event_date/event_hour`` of every row of ``table``."""
    return pc.binary_join_element_wise(table.column("event_date"), table.column("event_hour"), "/")


def commit_ranges(
    table: pa.Table, first_offset: int, next_offset: int, limit: int
) -> list[tuple[int, int]]:
    """``[start, stop)`` offset ranges that cover ``[first_offset, next_offset)``.

    Each range holds rows of at most ``limit`` distinct hive partitions; one
    range when the whole table does (the usual case, checked without a loop).
    ``table`` has the rows of one Kafka partition with offsets in that range.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if table.num_rows == 0:
        return [(first_offset, next_offset)]
    keys = partition_keys(table)
    if pc.count_distinct(keys).as_py() <= limit:
        return [(first_offset, next_offset)]
    offsets = table.column("_offset").to_numpy()
    order = np.argsort(offsets, kind="stable")
    in_order = keys.take(pa.array(order)).to_pylist()
    starts = [first_offset]
    seen: set[str] = set()
    for offset, key in zip(offsets[order].tolist(), in_order, strict=True):
        if key not in seen and len(seen) == limit:
            starts.append(offset)
            seen = set()
        seen.add(key)
    return list(zip(starts, [*starts[1:], next_offset], strict=True))
