"""The lake: one Delta table per stream, committed together with the Kafka offset fence.

Each commit of a batch carries a Delta *application transaction*
``(app_id = streambatch/<stream>/<topic>/<partition>, version = next offset)``
in the same atomic log entry as its data files. The transaction version is the
fence: the next offset to read for that partition. Readers only ever see
committed versions; files of a commit that never happened are invisible.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.transaction import AddAction, RemoveAction

from events.stream import PARTITION_COLUMNS, StreamSchema
from foundation.errors import FenceMovedError, LakeError, TransientError
from foundation.failpoints import failpoint
from sinks.delta_log import commits_from, recent_commits
from sinks.lake_location import LakeLocation, LakeTable

__all__ = [
    "BATCHES_SCHEMA",
    "BATCHES_TABLE",
    "BatchRecord",
    "DeltaLake",
    "ensure_inside",
]

BATCHES_TABLE = "batches"
_BATCH_METADATA_KEY = "streambatch.batch"
_COMMIT_ATTEMPTS = 8
_VERSION_SEARCH = 64  # versions read to find our commit after delta-rs retried
CHECKPOINT_INTERVAL = 10
"""Commits between Delta checkpoints of the tables this lake creates.

Spark's default; delta-rs's is 100. delta-rs rebuilds a handle's state from
the last checkpoint on every update and commit, so each commit costs more
the further the last checkpoint lies behind: with 100, the 100th commit
after one took three times as long as the first and a 10,000,000-event run
slowed in a saw-tooth from 200,000 to 125,000 events/s. A checkpoint every
10 commits halved the commit overhead of a small table and cost nothing
measurable with 50,000 files (readers such as DuckDB replay less log too).
"""
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HOUR = re.compile(r"\d{2}")

BATCHES_SCHEMA = pa.schema(
    [
        ("stream", pa.string()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("first_offset", pa.int64()),
        ("next_offset", pa.int64()),
        ("rows", pa.int64()),
        ("input_records", pa.int64()),
        ("input_bytes", pa.int64()),
        ("duplicates", pa.int64()),
        ("conflicts", pa.int64()),
        ("dead_letters", pa.int64()),
        ("dead_letters_by_class", pa.string()),
        ("files", pa.int64()),
        ("close_reason", pa.string()),
        ("opened_at", pa.timestamp("us", tz="UTC")),
        ("committed_at", pa.timestamp("us", tz="UTC")),
        ("min_occurred_at", pa.timestamp("us", tz="UTC")),
        ("max_occurred_at", pa.timestamp("us", tz="UTC")),
        ("lake_version", pa.int64()),
    ]
)


def ensure_inside(root: Path, path: Path) -> Path:
    """``path`` resolved, refusing anything outside ``root`` (no event steers a path)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise LakeError(f"refusing to write outside the data directory: {path}")
    return resolved


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One row of the ``batches`` table: what a committed batch held and why it closed."""

    stream: str
    topic: str
    partition: int
    first_offset: int
    next_offset: int
    rows: int
    input_records: int
    input_bytes: int
    duplicates: int
    conflicts: int
    dead_letters: int
    dead_letters_by_class: str
    files: int
    close_reason: str
    opened_at: datetime
    committed_at: datetime
    min_occurred_at: datetime | None
    max_occurred_at: datetime | None
    lake_version: int

    def to_json(self) -> str:
        """Lossless JSON (timestamps as ISO strings) for the commit's metadata."""
        values = asdict(self)
        for name in ("opened_at", "committed_at", "min_occurred_at", "max_occurred_at"):
            if values[name] is not None:
                values[name] = values[name].isoformat()
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> BatchRecord:
        """Inverse of :meth:`to_json`."""
        values: dict[str, Any] = json.loads(text)
        for name in ("opened_at", "committed_at", "min_occurred_at", "max_occurred_at"):
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


class DeltaLake:
    """Delta tables of one stream plus the shared ``batches`` table.

    Delivery guarantee: exactly once per Kafka offset range. :meth:`commit`
    writes data and fence atomically; a batch below the fence is refused.
    """

    def __init__(self, lake: LakeLocation | Path, stream: StreamSchema) -> None:
        self.location = lake if isinstance(lake, LakeLocation) else LakeLocation.local(lake)
        self._stream = stream
        self.table_path = self.location.table(stream.name)
        self.batches_path = self.location.table(BATCHES_TABLE)
        # Per thread, one handle per table, updated incrementally: loading a
        # table afresh replays its log and cost more than writing a batch.
        self._handles = threading.local()

    def app_id(self, topic: str, partition: int) -> str:
        """The Delta application-transaction id of one source partition."""
        return f"streambatch/{self._stream.name}/{topic}/{partition}"

    def ensure_tables(self) -> None:
        """Create the stream's table and ``batches`` if absent (safe to race).

        New tables are checkpointed every :data:`CHECKPOINT_INTERVAL` commits;
        existing ones keep their ``delta.checkpointInterval`` (changing it is a
        metadata commit, which would fail the commits of running writers).
        """
        self._create(self.table_path, self._stream.table_schema, PARTITION_COLUMNS.names)
        self._create(self.batches_path, BATCHES_SCHEMA, [])
        existing = self.table_path.open().schema().to_arrow()
        wanted = self._stream.table_schema
        missing = [name for name in wanted.names if name not in existing.names]
        if missing:
            raise LakeError(
                f"{self.table_path} exists with another schema: missing columns {missing}; "
                "point STREAMBATCH_LAKE_URI elsewhere or migrate the table"
            )

    def _create(self, table: LakeTable, schema: pa.Schema, partition_by: list[str]) -> None:
        if table.exists():
            return
        if self.location.is_local:
            Path(table.uri).mkdir(parents=True, exist_ok=True)
        try:
            DeltaTable.create(
                table.uri,
                schema,
                mode="ignore",
                partition_by=partition_by or None,
                configuration={"delta.checkpointInterval": str(CHECKPOINT_INTERVAL)},
                storage_options=table.storage_options(),
            )
        except Exception:
            # Another worker created it between our check and our create.
            if not table.exists():
                raise

    def fence(self, topic: str, partition: int) -> int | None:
        """Next offset to read for a partition, or None if nothing was committed."""
        return self._transaction_version(self.table_path, self.app_id(topic, partition))

    def batch_log_fence(self, topic: str, partition: int) -> int | None:
        """Fence as recorded in ``batches`` (lags :meth:`fence` only after a crash)."""
        return self._transaction_version(self.batches_path, self.app_id(topic, partition))

    def _transaction_version(self, path: LakeTable, app_id: str) -> int | None:
        table = self._table(path)
        if table is None:
            return None
        version = table.transaction_version(app_id)
        return None if version is None else int(version)

    def _table(self, path: LakeTable, *, refresh: bool = True) -> DeltaTable | None:
        """This thread's handle on the table at ``path``, at its newest version.

        None if there is no table there. ``refresh=False`` skips catching up
        with other writers (a listing of the log), for a handle this thread
        has just refreshed. A handle that cannot catch up (its log files
        cleaned up meanwhile) is replaced by a fresh load.
        """
        handles: dict[str, DeltaTable] = self._handles.__dict__.setdefault("tables", {})
        table = handles.get(path.uri)
        if table is not None:
            try:
                if refresh:
                    table.update_incremental()
                return table
            except Exception:
                del handles[path.uri]
        if not path.exists():
            return None
        handles[path.uri] = table = path.open()
        return table

    def _existing_table(self, path: LakeTable, *, refresh: bool = True) -> DeltaTable:
        table = self._table(path, refresh=refresh)
        if table is None:
            raise LakeError(f"{path} is not a Delta table (was it deleted while running?)")
        return table

    def commit(self, table: pa.Table, record: BatchRecord) -> BatchRecord:
        """Append ``table`` and move the fence to ``record.next_offset``, atomically.

        Two phases: Parquet files are written under the table (invisible to
        readers: no log entry names them), then one Delta commit adds them and
        sets the fence. A crash between the two leaves orphan files that no
        reader sees and the old fence, so the batch is simply written again.
        Then ``record`` is appended to ``batches`` (idempotent by the same fence).
        Returns the record with its files count and lake version filled in.

        Raises:
            FenceMovedError: the fence is already past this batch's first offset
                (replay, or another writer of the partition committed first).
        """
        app_id = self.app_id(record.topic, record.partition)
        current = self.fence(record.topic, record.partition)
        if current is not None and current > record.first_offset:
            raise FenceMovedError(
                f"{app_id}: batch [{record.first_offset}, {record.next_offset}) is below "
                f"the committed fence {current}; refusing to write it twice"
            )
        actions = self._write_files(table)
        failpoint("after_files_before_commit")
        provisional = replace(record, files=len(actions))
        properties = CommitProperties(
            custom_metadata={_BATCH_METADATA_KEY: provisional.to_json()},
            app_transactions=[Transaction(app_id, record.next_offset)],
            max_commit_retries=_COMMIT_ATTEMPTS,
        )
        # fence() above brought the handle up to date; a writer that commits
        # since is detected by delta-rs (and no two writers own one partition).
        handle = self._existing_table(self.table_path, refresh=False)
        before = handle.version()
        handle.create_write_transaction(
            actions,
            mode="append",
            schema=self._stream.table_schema,
            partition_by=PARTITION_COLUMNS.names,
            commit_properties=properties,
        )
        failpoint("after_commit")
        final = replace(provisional, lake_version=self._version_of(provisional, before + 1))
        self._append_batch_record(final)
        return final

    def _write_files(self, table: pa.Table) -> list[AddAction | RemoveAction]:
        """One zstd Parquet file per hive partition of ``table``, not yet committed.

        One after the other: the validation thread already uses the second
        core (docs/performance.md).
        """
        if table.num_rows == 0:
            return []
        keys = pc.binary_join_element_wise(
            table.column("event_date"), table.column("event_hour"), "/"
        )
        data_columns = [n for n in table.column_names if n not in PARTITION_COLUMNS.names]
        dictionary = _dictionary_columns(table.select(data_columns))
        return [
            _write_file(self.table_path, key, part.select(data_columns), part, dictionary)
            for key, part in _partitions(table, keys)
        ]

    def _version_of(self, record: BatchRecord, likely: int) -> int:
        """The log version of our commit (other partitions may have committed since).

        ``likely``: the version after the one our commit started from, which is
        ours unless delta-rs retried past other writers; checked, never trusted.
        Our commit is at or after it, so the search reads forwards from there
        (with other processes committing, a search from the newest version
        down loaded the table, which replays the log, on most commits).
        """
        text = record.to_json()
        for version, commit in commits_from(self.table_path, likely, _VERSION_SEARCH):
            if commit.get(_BATCH_METADATA_KEY) == text:
                return version
        raise LakeError(
            f"{self.table_path}: our commit is not in the {_VERSION_SEARCH} versions from {likely}"
        )

    def _append_batch_record(self, record: BatchRecord) -> None:
        """Append ``record`` to ``batches`` once (its fence is the transaction version).

        One Parquet file, then ``create_write_transaction``, as for the
        stream's table: ``write_deltalake`` would plan the write with
        DataFusion, which costs memory at the flow's peak (docs/performance.md).
        """
        app_id = self.app_id(record.topic, record.partition)
        row = pa.Table.from_pylist([asdict(record)], schema=BATCHES_SCHEMA)
        properties = CommitProperties(app_transactions=[Transaction(app_id, record.next_offset)])
        action: AddAction | None = None
        for attempt in range(_COMMIT_ATTEMPTS):
            # Also after a failed attempt: the commit may have landed all the same.
            done = self._transaction_version(self.batches_path, app_id)
            if done is not None and done >= record.next_offset:
                return
            if action is None:
                action = _add_file(
                    self.batches_path, f"part-{uuid.uuid4()}.zstd.parquet", row, row, {}, []
                )
            try:
                # _transaction_version has just refreshed this thread's handle.
                self._existing_table(self.batches_path, refresh=False).create_write_transaction(
                    [action], mode="append", schema=row.schema, commit_properties=properties
                )
                return
            except Exception as exc:
                # Concurrent writers of other partitions can race us to a log
                # version; delta-rs retries most of those itself, we add a few.
                if "conflict" not in str(exc).lower() and "exists" not in str(exc).lower():
                    raise
                if attempt == _COMMIT_ATTEMPTS - 1:
                    raise TransientError(
                        f"{self.batches_path}: commit kept conflicting: {exc}"
                    ) from exc
                time.sleep(0.05 * (attempt + 1))

    def repair_batch_log(self, topic: str, partition: int) -> bool:
        """Write the ``batches`` row of the last commit if a crash lost it.

        Returns True when a row was written.
        """
        fence = self.fence(topic, partition)
        logged = self.batch_log_fence(topic, partition)
        if fence is None or (logged is not None and logged >= fence):
            return False
        app_id = self.app_id(topic, partition)
        for version, commit in recent_commits(self.table_path):
            text = commit.get(_BATCH_METADATA_KEY)
            if not isinstance(text, str):
                continue
            record = BatchRecord.from_json(text)
            if self.app_id(record.topic, record.partition) == app_id:
                if record.next_offset != fence:
                    break
                self._append_batch_record(replace(record, lake_version=version))
                return True
        raise LakeError(f"{app_id}: no commit metadata found for fence {fence}")

    def last_row_digest(self, topic: str, partition: int, fence: int) -> tuple[int, int] | None:
        """``(offset, value digest)`` of a partition's highest-offset row below ``fence``.

        Looks at the last 10,000 offsets first (file statistics prune the rest).
        """
        if not self.table_path.exists():
            return None
        dataset = self.table_path.open().to_pyarrow_dataset()
        mine = (pc.field("_topic") == topic) & (pc.field("_partition") == partition)
        for low in (max(0, fence - 10_000), 0):
            rows = dataset.to_table(
                columns=["_offset", "_value_digest"],
                filter=mine & (pc.field("_offset") >= low) & (pc.field("_offset") < fence),
            )
            if rows.num_rows:
                index = pc.index(rows.column("_offset"), pc.max(rows.column("_offset"))).as_py()
                return int(rows.column("_offset")[index].as_py()), int(
                    rows.column("_value_digest")[index].as_py()
                )
        return None

    def recent_arrivals(self, topic: str, partition: int, since: datetime) -> pa.Table:
        """Dedupe keys of a partition's rows committed after ``since``.

        Columns ``event_id``, ``_value_digest`` and ``_arrived_at``: the
        ``committed_at`` of the batch that holds the row's offset (the flow's
        clock, recorded in ``batches`` for every commit), whatever the row's
        ``occurred_at``.
        """
        columns = ["event_id", "_value_digest", "_arrived_at"]
        empty = pa.schema(
            [
                ("event_id", pa.string()),
                ("_value_digest", pa.int64()),
                ("_arrived_at", pa.timestamp("us", tz="UTC")),
            ]
        ).empty_table()
        if not (self.batches_path.exists() and self.table_path.exists()):
            return empty
        recent = (
            self.batches_path.open()
            .to_pyarrow_dataset()
            .to_table(
                columns=["first_offset", "next_offset", "committed_at"],
                filter=(
                    (pc.field("stream") == self._stream.name)
                    & (pc.field("topic") == topic)
                    & (pc.field("partition") == partition)
                    & (pc.field("committed_at") > pa.scalar(since, pa.timestamp("us", tz="UTC")))
                ),
            )
            .sort_by("first_offset")
        )
        if not recent.num_rows:
            return empty
        starts = recent.column("first_offset").to_numpy()
        stops = recent.column("next_offset").to_numpy()
        rows = (
            self.table_path.open()
            .to_pyarrow_dataset()
            .to_table(
                columns=["event_id", "_value_digest", "_offset"],
                filter=(
                    (pc.field("_topic") == topic)
                    & (pc.field("_partition") == partition)
                    & (pc.field("_offset") >= int(starts[0]))
                    & (pc.field("_offset") < int(stops.max()))
                ),
            )
        )
        offsets = rows.column("_offset").to_numpy()
        batch = np.searchsorted(starts, offsets, side="right") - 1
        inside = offsets < stops[batch]  # offsets between recent batches: older commits
        arrived = recent.column("committed_at").take(pa.array(batch[inside]))
        return rows.filter(pa.array(inside)).append_column("_arrived_at", arrived).select(columns)


def _write_file(
    root: LakeTable, key: str, data: pa.Table, part: pa.Table, dictionary: list[str]
) -> AddAction:
    """One hive partition's Parquet file (``data``: its columns in the file) and its add action.

    ``part`` still has the partition columns, for the file statistics.
    """
    event_date, event_hour = key.split("/")
    # Partition values come from validated timestamps; checked anyway.
    if not (_DATE.fullmatch(event_date) and _HOUR.fullmatch(event_hour)):
        raise LakeError(f"refusing partition value {key!r}")
    relative = f"event_date={event_date}/event_hour={event_hour}/part-{uuid.uuid4()}.zstd.parquet"
    partition_values = {"event_date": event_date, "event_hour": event_hour}
    return _add_file(root, relative, data, part, partition_values, dictionary)


def _add_file(
    root: LakeTable,
    relative: str,
    data: pa.Table,
    part: pa.Table,
    partition_values: Mapping[str, str | None],
    dictionary: list[str],
) -> AddAction:
    """Write ``data`` as zstd Parquet at ``relative`` in table ``root``; its add action.

    The file is not committed yet. In a local lake it is written in place
    (checked to stay inside the table); in an object store it is encoded in
    memory and stored as one object.
    """
    written: list[pq.FileMetaData] = []
    options: dict[str, Any] = {
        "compression": "zstd",
        "use_dictionary": dictionary,
        "write_statistics": True,
        "metadata_collector": written,
    }
    if root.location.is_local:
        table_dir = Path(root.uri)
        path = ensure_inside(table_dir, table_dir / relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, path, **options)
        size = path.stat().st_size
    else:
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink, **options)
        buffer = sink.getvalue()
        root.location.write_file(root.path(relative), buffer)
        size = buffer.size
    return AddAction(
        path=relative,
        size=size,
        partition_values=partition_values,
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=_file_stats(part, written[0]),
    )


def _parquet_bounds(written: pq.FileMetaData) -> dict[str, tuple[Any, Any] | None]:
    """Per top-level flat column of a written file: (min, max) over its row groups.

    None for a column with values but no bounds in some row group.
    """
    bounds: dict[str, tuple[Any, Any] | None] = {}
    for group_index in range(written.num_row_groups):
        group = written.row_group(group_index)
        for column_index in range(group.num_columns):
            chunk = group.column(column_index)
            name = chunk.path_in_schema
            if "." in name or bounds.get(name, ()) is None:
                continue  # nested leaf, or already without bounds
            stats = chunk.statistics
            if stats is not None and stats.has_null_count and stats.null_count == group.num_rows:
                continue  # all null here: no bounds to merge
            if stats is None or not stats.has_min_max:
                bounds[name] = None
                continue
            known = bounds.get(name)
            low, high = stats.min, stats.max
            if known is not None:
                low, high = min(known[0], low), max(known[1], high)
            bounds[name] = (low, high)
    return bounds


def _partitions(table: pa.Table, keys: pa.ChunkedArray) -> list[tuple[str, pa.Table]]:
    """``table`` split by partition key, rows in their order within each part.

    Zero-copy slices of runs of equal keys: events arrive roughly in time
    order, so each key is usually one run. Otherwise one stable sort first
    (a filter per key would read the whole table once per partition).
    """
    runs = _runs(keys.combine_chunks())
    if len({key for key, _, _ in runs}) != len(runs):
        order = pc.sort_indices(keys)  # stable: offsets stay ascending within a key
        table, keys = table.take(order), keys.take(order)
        runs = _runs(keys.combine_chunks())
    return [(key, table.slice(start, stop - start)) for key, start, stop in runs]


def _runs(keys: pa.Array) -> list[tuple[str, int, int]]:
    """``(key, start, stop)`` of each run of equal consecutive keys."""
    count = len(keys)
    if count == 0:
        return []
    changed = pc.not_equal(keys.slice(1), keys.slice(0, count - 1))
    starts = [0, *(np.flatnonzero(changed.to_numpy(zero_copy_only=False)) + 1).tolist()]
    stops = [*starts[1:], count]
    return [(keys[start].as_py(), start, stop) for start, stop in zip(starts, stops, strict=True)]


def _dictionary_columns(table: pa.Table) -> list[str]:
    """Flat columns worth dictionary encoding: at most half distinct in a sample.

    Dictionaries of unique columns (ids, offsets, digests) are built and then
    abandoned by the writer, a waste of encoding time.
    """
    sample = table.slice(0, 2048)
    chosen = []
    for name in table.column_names:
        column = sample.column(name)
        if pa.types.is_nested(column.type):
            continue
        if 2 * pc.count_distinct(column, mode="all").as_py() <= max(len(column), 1):
            chosen.append(name)
    return chosen


def _file_stats(part: pa.Table, written: pq.FileMetaData) -> str:
    """Delta file statistics: rows, null counts, min/max of the flat columns.

    Readers prune files with them, so they must be complete: a column without
    a null count may be taken for all-null by some readers. Bounds come from
    the statistics the Parquet writer computed anyway (``written``); columns
    not in the file (the partition columns) are computed here.
    """
    from_file = _parquet_bounds(written)
    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in part.column_names:
        column = part.column(name)
        nulls[name] = column.null_count
        if pa.types.is_nested(column.type) or column.null_count == len(column):
            continue
        if name in from_file:
            bounds = from_file[name]
            if bounds is None:
                continue  # the writer kept no bounds (a very long string)
            low, high = bounds
        else:
            computed = pc.min_max(column).as_py()
            low, high = computed["min"], computed["max"]
        if isinstance(low, datetime):
            low = low.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
            high = high.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        elif isinstance(low, Decimal):
            continue  # as a JSON float a bound could round inwards and prune wrongly
        elif isinstance(low, str) and (len(low) > 32 or len(high) > 32):
            continue  # long strings: truncated bounds would be wrong, skip them
        minimum[name], maximum[name] = low, high
    return json.dumps(
        {
            "numRecords": part.num_rows,
            "minValues": minimum,
            "maxValues": maximum,
            "nullCount": nulls,
        }
    )
