"""The handful of lake operations the commit path needs, whatever the lake's storage.

:class:`~sinks.delta_lake.DeltaLake` implements them for every location a
:class:`~sinks.lake_location.LakeLocation` names (a local directory or an
object store): the committer above this interface has no line that depends
on where the lake lives.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import pyarrow as pa

from sinks.delta_lake import BatchRecord

__all__ = ["LakeStore"]


class LakeStore(Protocol):
    """What :class:`~sinks.lake_sink.PartitionCommitter` asks of the lake."""

    def fence(self, topic: str, partition: int) -> int | None:
        """Read the fence: the next offset to read, None before the first commit."""
        ...

    def repair_batch_log(self, topic: str, partition: int) -> bool:
        """Append the ``batches`` row of the last commit if a crash lost it."""
        ...

    def recent_arrivals(self, topic: str, partition: int, since: datetime) -> pa.Table:
        """Read the ids committed within the dedupe horizon (id, value digest, arrival)."""
        ...

    def commit(self, table: pa.Table, record: BatchRecord) -> BatchRecord:
        """Write the data files, commit them with the fence as app transaction, then
        append the ``batches`` row; returns the record with its lake version."""
        ...
