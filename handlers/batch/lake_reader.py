"""Exactly one committed batch's rows, read back from the lake.

The announcement names the files its commit added: those are read directly
while they exist (a compaction keeps them, with the same rows, until a vacuum
deletes them). Otherwise the table is read, pruned to the dates of the
batch's ``occurred_at`` range. Either way rows are filtered to the batch's
offset ranges, so the result is exactly the batch: no more, no less.
"""

from __future__ import annotations

from datetime import UTC

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from events.registry import get_stream
from events.stream import PARTITION_COLUMNS
from foundation.errors import TransientError
from sinks.batch_announcements import BatchAnnouncement
from sinks.lake_location import LakeLocation, LakeTable

__all__ = ["read_batch_rows"]


def read_batch_rows(lake: LakeLocation, batch: BatchAnnouncement) -> pa.Table:
    """The rows of ``batch`` from the stream's table in ``lake`` (local or bucket), in offset order.

    Columns are the stream's table columns, in the table's order.

    Raises:
        TransientError: the table is not there (yet), or the rows read do not
            number what the announcement says (retried: a lake being restored).
    """
    schema = get_stream(batch.stream).table_schema
    if batch.rows == 0:
        return schema.empty_table()
    table = lake.table(batch.stream)
    rows = _read_files(table, batch, schema) if batch.files else None
    if rows is None or rows.num_rows != batch.rows:
        rows = _read_table(table, batch, schema)
    if rows.num_rows != batch.rows:
        raise TransientError(
            f"{batch.batch_id}: {rows.num_rows} rows in the lake, "
            f"the announcement says {batch.rows}"
        )
    return rows


def _read_files(table: LakeTable, batch: BatchAnnouncement, schema: pa.Schema) -> pa.Table | None:
    """The batch's rows from the files its commit added; None if one of them is gone.

    A compaction rewrites files but keeps the old ones (with the same rows)
    until a vacuum deletes them: reading them is right as long as they exist.
    No table load: building a dataset of the whole table costs time with its
    file count.
    """
    files = [table.path(relative) for relative in batch.files]
    try:
        dataset = ds.dataset(
            files,
            schema=schema,
            format="parquet",
            filesystem=table.location.filesystem(),
            partitioning=ds.partitioning(PARTITION_COLUMNS, flavor="hive"),
            partition_base_dir=table.path(),
        )
        return _in_order(dataset.to_table(filter=_offsets(batch)), schema)
    except OSError:  # a file gone (FileNotFoundError), or an object store's "not found"
        return None


def _read_table(table: LakeTable, batch: BatchAnnouncement, schema: pa.Schema) -> pa.Table:
    """The batch's rows from the table's committed files, pruned to the batch's dates."""
    if not table.exists():
        raise TransientError(f"{table.uri} is not a Delta table (yet)")
    dataset = table.open().to_pyarrow_dataset()
    return _in_order(dataset.to_table(filter=_offsets(batch) & _hours(batch)), schema)


def _in_order(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    ordered = rows.sort_by([("_partition", "ascending"), ("_offset", "ascending")])
    return ordered.select(schema.names)


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
