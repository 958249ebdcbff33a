"""Exactly one committed batch's rows, read back from the lake.

The announcement names the files its commit added: those are read when the
table still holds all of them (the usual case). After a compaction rewrote
them, the table is read instead, pruned to the hive partitions of the batch's
``occurred_at`` range. Either way rows are filtered to the batch's offset
ranges, so the result is exactly the batch: no more, no less.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable

from sinks.batch_announcements import BatchAnnouncement
from streambatch.errors import TransientError

__all__ = ["read_batch_rows"]


def read_batch_rows(lake_dir: Path, batch: BatchAnnouncement) -> pa.Table:
    """The rows of ``batch`` from the stream's table under ``lake_dir``, in offset order.

    Raises:
        TransientError: the table is not there (yet), or the rows read do not
            number what the announcement says (retried: a lake being restored).
    """
    path = lake_dir / batch.stream
    if not DeltaTable.is_deltatable(str(path)):
        raise TransientError(f"{path} is not a Delta table (yet)")
    table = DeltaTable(str(path))
    dataset = table.to_pyarrow_dataset()
    if batch.rows == 0:
        return dataset.schema.empty_table()
    wanted = set(batch.files)
    fragments = [
        fragment
        for fragment in dataset.get_fragments()
        if _relative(fragment.path, str(path)) in wanted
    ]
    if wanted and len(fragments) == len(wanted):
        source: ds.Dataset = ds.FileSystemDataset(
            fragments, dataset.schema, dataset.format, dataset.filesystem
        )
        expression = _offsets(batch)
    else:
        source = dataset
        expression = _offsets(batch) & _hours(batch)
    rows = source.to_table(filter=expression).sort_by(
        [("_partition", "ascending"), ("_offset", "ascending")]
    )
    if rows.num_rows != batch.rows:
        raise TransientError(
            f"{batch.batch_id}: {rows.num_rows} rows in the lake, "
            f"the announcement says {batch.rows}"
        )
    return rows


def _relative(fragment_path: str, table_path: str) -> str:
    """A fragment's path relative to the table root."""
    root = table_path.rstrip("/") + "/"
    for prefix in (root, root.lstrip("/")):
        if fragment_path.startswith(prefix):
            return fragment_path[len(prefix) :]
    return fragment_path


def _offsets(batch: BatchAnnouncement) -> pc.Expression:
    expression: pc.Expression | None = None
    for offsets in batch.offset_ranges:
        one = (
            (pc.field("_topic") == offsets["topic"])
            & (pc.field("_partition") == int(offsets["partition"]))
            & (pc.field("_offset") >= int(offsets["first_offset"]))
            & (pc.field("_offset") < int(offsets["next_offset"]))
        )
        expression = one if expression is None else expression | one
    if expression is None:
        raise ValueError(f"{batch.batch_id}: no offset ranges")
    return expression


def _hours(batch: BatchAnnouncement) -> pc.Expression:
    """Hive partitions (``event_date``) that can hold the batch's rows."""
    if batch.min_occurred_at is None or batch.max_occurred_at is None:
        return pc.scalar(True)
    first = batch.min_occurred_at.astimezone(UTC).strftime("%Y-%m-%d")
    last = batch.max_occurred_at.astimezone(UTC).strftime("%Y-%m-%d")
    return (pc.field("event_date") >= first) & (pc.field("event_date") <= last)
