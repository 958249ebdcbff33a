"""Which Kafka log each partition's fence belongs to, and every accepted change of log.

A fence (the next offset to read) only means something for one log: a topic
deleted and created again, or a broker that lost its data, starts its offsets
at 0 again, and the old fence would silently skip the new records. So the lake
also stores the identity of the log:

- ``<lake>/source_logs``: one row per *generation* of a partition's log: the
  Kafka topic id, the offset the lake started reading it from, and for an
  operator's ``accept-log`` what was left behind (the old fence and topic id,
  and the offsets given up as lost).
- In the stream's table, the application transaction
  ``<app id>/log`` holds the generation in force. It is committed in the same
  Delta commit that moves the fence to a new log's start, so a crash leaves
  either the old log and fence, or the new ones, never a mix. A row written
  before a crash whose generation never came into force is ignored.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction

from events.stream import PARTITION_COLUMNS, StreamSchema
from foundation.errors import LakeError
from foundation.failpoints import failpoint
from sinks.delta_lake import (
    BATCHES_SCHEMA,
    CHECKPOINT_INTERVAL,
    DeltaLake,
    _add_file,
)

__all__ = ["SOURCE_LOGS_SCHEMA", "SOURCE_LOGS_TABLE", "LogGeneration", "SourceLogs"]

SOURCE_LOGS_TABLE = "source_logs"
_ATTEMPTS = 8

SOURCE_LOGS_SCHEMA = pa.schema(
    [
        ("stream", pa.string()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("generation", pa.int64()),
        ("topic_id", pa.string()),
        ("start_offset", pa.int64()),
        ("reason", pa.string()),
        ("previous_topic_id", pa.string()),
        ("previous_fence", pa.int64()),
        ("lost_from", pa.int64()),
        ("lost_until", pa.int64()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True, slots=True)
class LogGeneration:
    """One generation of a partition's log, as recorded in ``source_logs``.

    ``reason``: ``first-read`` (a partition's first log), ``adopted`` (a lake
    written before identities were recorded, whose fence fits the log), or
    ``accepted`` (an operator's ``streambatch accept-log``). Offsets
    ``[lost_from, lost_until)`` of this log were given up as lost (removed
    before the lake read them); empty when both are None.
    """

    stream: str
    topic: str
    partition: int
    generation: int
    topic_id: str
    start_offset: int
    reason: str
    previous_topic_id: str | None
    previous_fence: int | None
    lost_from: int | None
    lost_until: int | None
    recorded_at: datetime

    @property
    def lost(self) -> int:
        """How many offsets this change gave up."""
        if self.lost_from is None or self.lost_until is None:
            return 0
        return max(0, self.lost_until - self.lost_from)


class SourceLogs:
    """The log identities of one stream's partitions, next to its lake.

    Thread-safe enough for its callers: every method opens its own handles.
    """

    def __init__(self, lake: DeltaLake, stream: StreamSchema) -> None:
        self._lake = lake
        self._schema = stream.table_schema
        self._stream = stream.name
        self.path = lake.location.table(SOURCE_LOGS_TABLE)

    def _generation_app_id(self, topic: str, partition: int) -> str:
        return f"{self._lake.app_id(topic, partition)}/log"

    def generation_in_force(self, topic: str, partition: int) -> int | None:
        """The generation committed with the fence (None: none recorded yet)."""
        if not self._lake.table_path.exists():
            return None
        table = self._lake.table_path.open()
        version = table.transaction_version(self._generation_app_id(topic, partition))
        return None if version is None else int(version)

    def history(self, topic: str) -> list[LogGeneration]:
        """Every generation in force or before it, of every partition of ``topic``.

        Ordered by partition, then generation. Rows of a generation that never
        came into force (a crash inside ``accept-log``) are left out.
        """
        if not self.path.exists():
            return []
        expression = (pc.field("stream") == self._stream) & (pc.field("topic") == topic)
        rows = self.path.open().to_pyarrow_dataset().to_table(filter=expression)
        latest: dict[tuple[int, int], LogGeneration] = {}
        for values in rows.to_pylist():
            record = LogGeneration(**values)
            key = (record.partition, record.generation)
            if key not in latest or latest[key].recorded_at < record.recorded_at:
                latest[key] = record
        if not self._lake.table_path.exists():
            return []
        table = self._lake.table_path.open()
        in_force = {
            p: table.transaction_version(self._generation_app_id(topic, p)) for p, _ in latest
        }
        return [
            record
            for (partition, generation), record in sorted(latest.items())
            if (in_force[partition] or 0) >= generation
        ]

    def current(self, topic: str, partition: int) -> LogGeneration | None:
        """The generation in force for a partition, or None if none is recorded."""
        records = [r for r in self.history(topic) if r.partition == partition]
        return records[-1] if records else None

    def record(self, generation: LogGeneration, fence: int | None) -> None:
        """Write ``generation`` and bring it into force, with the fence at ``fence``.

        The row first (ignored until in force), then one Delta commit of the
        stream's table that sets the generation and, unless ``fence`` is None,
        the fence: both change together or not at all. Last, the ``batches``
        table's own fence follows (see :meth:`align_batch_log`; a crash before
        it is mended when the flow starts).
        """
        self._append(generation)
        if generation.reason == "accepted":
            failpoint("accept_log_after_row")
        app_id = self._lake.app_id(generation.topic, generation.partition)
        transactions = [
            Transaction(
                self._generation_app_id(generation.topic, generation.partition),
                generation.generation,
            )
        ]
        if fence is not None:
            transactions.append(Transaction(app_id, fence))
        properties = CommitProperties(
            custom_metadata={"streambatch.log": _to_json(generation)},
            app_transactions=transactions,
            max_commit_retries=_ATTEMPTS,
        )
        table = self._lake.table_path.open()
        try:
            table.create_write_transaction(
                [],
                mode="append",
                schema=self._schema,
                partition_by=PARTITION_COLUMNS.names,
                commit_properties=properties,
            )
        except Exception:
            # Another process of the flow may have recorded the same generation.
            in_force = self.generation_in_force(generation.topic, generation.partition)
            if in_force is None or in_force < generation.generation:
                raise
        if generation.reason == "accepted":
            failpoint("accept_log_after_commit")
        self.align_batch_log(generation)

    def align_batch_log(self, generation: LogGeneration | None) -> bool:
        """Set the ``batches`` table's fence to where an accepted log put the stream's.

        The ``batches`` table skips a row whose fence it already has, and
        repairs rows missing below the stream's fence: both would misread a
        fence that ``accept-log`` moved without a batch. While the fence is
        still at the accepted log's start, the two must agree. Returns True if
        it moved.
        """
        if generation is None or generation.reason != "accepted":
            return False
        topic, partition = generation.topic, generation.partition
        fence = self._lake.fence(topic, partition)
        if fence != generation.start_offset:
            return False
        if self._lake.batch_log_fence(topic, partition) == fence:
            return False
        properties = CommitProperties(
            app_transactions=[Transaction(self._lake.app_id(topic, partition), fence)],
            max_commit_retries=_ATTEMPTS,
        )
        self._lake.batches_path.open().create_write_transaction(
            [], mode="append", schema=BATCHES_SCHEMA, commit_properties=properties
        )
        return True

    def _append(self, generation: LogGeneration) -> None:
        self._create()
        row = pa.Table.from_pylist([asdict(generation)], schema=SOURCE_LOGS_SCHEMA)
        action = _add_file(self.path, f"part-{uuid.uuid4()}.zstd.parquet", row, row, {}, [])
        self.path.open().create_write_transaction(
            [action],
            mode="append",
            schema=SOURCE_LOGS_SCHEMA,
            commit_properties=CommitProperties(max_commit_retries=_ATTEMPTS),
        )

    def _create(self) -> None:
        if self.path.exists():
            return
        if self._lake.location.is_local:
            Path(self.path.uri).mkdir(parents=True, exist_ok=True)
        try:
            DeltaTable.create(
                self.path.uri,
                SOURCE_LOGS_SCHEMA,
                mode="ignore",
                configuration={"delta.checkpointInterval": str(CHECKPOINT_INTERVAL)},
                storage_options=self.path.storage_options(),
            )
        except Exception:
            if not self.path.exists():
                raise LakeError(f"cannot create {self.path}") from None


def _to_json(generation: LogGeneration) -> str:
    values = asdict(generation)
    values["recorded_at"] = generation.recorded_at.isoformat()
    return json.dumps(values)
