"""Batch announcements: one Kafka record per committed batch, for downstream batch handlers.

Delivery guarantee: at least once per committed batch, each under a stable
batch id. After each commit the flow produces one small JSON record to the
stream's batches topic (``<topic>.batches`` unless configured), asynchronously:
the commit path never waits for it. Its key is the batch id
``<stream>/<topic>/<partition>/<first offset>-<next offset>``, the same
whenever the batch is announced again (a consumer dedupes on it), and every
announcement of one source partition goes to one partition of the batches
topic (chosen from the source partition, not the key), by an idempotent
producer, so they lie there in commit order without gaps.

A crash between a commit and its announcement is repaired when the partition
is next opened, before anything new is committed: the lake's ``batches``
manifest says what was committed, the tail of the batches topic what was
announced; the manifest rows after the last announced one are announced again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from connectors.kafka_clients import new_consumer, new_producer
from foundation.errors import LakeError, StreambatchError
from sinks.delta_lake import BatchRecord, DeltaLake
from sinks.delta_log import as_lake_table
from sinks.lake_location import LakeTable

__all__ = [
    "BATCH_ID_HEADER",
    "BatchAnnouncement",
    "BatchAnnouncer",
    "added_files",
    "announcement_partition",
    "batch_id",
]

log = logging.getLogger(__name__)

BATCH_ID_HEADER = "batch.id"
# Records read per step while searching the batches topic backwards at start.
_TAIL_STEP = 500
_TAIL_SECONDS = 60
_REDRIVEN_HEADER = "streambatch.redriven-from"
_TIMESTAMPS = ("opened_at", "committed_at", "min_occurred_at", "max_occurred_at")


def batch_id(stream: str, topic: str, partition: int, first_offset: int, next_offset: int) -> str:
    """The stable id of a committed batch: its stream and source offset range."""
    return f"{stream}/{topic}/{partition}/{first_offset}-{next_offset}"


def announcement_partition(stream: str, topic: str, partition: int, partitions: int) -> int:
    """The batches-topic partition of every announcement of one source partition."""
    return zlib.crc32(f"{stream}/{topic}/{partition}".encode()) % partitions


@dataclass(frozen=True, slots=True)
class BatchAnnouncement:
    """What a batch handler learns about one committed batch.

    Attributes:
        batch_id: Stable id (see :func:`batch_id`); the idempotency key.
        stream: Stream name; its Delta table is ``<lake>/<stream>``.
        offset_ranges: ``[{topic, partition, first_offset, next_offset}]``, half-open.
        lake_version: Delta version of the stream's table that committed the batch.
        files: Data files the commit added, relative to the table (empty when
            the log entry is gone; readers then filter the table by offsets).
        rows, input_records, input_bytes, duplicates, dead_letters: counts.
        close_reason: ``size``, ``time`` or ``end``.
    """

    batch_id: str
    stream: str
    offset_ranges: tuple[dict[str, Any], ...]
    lake_version: int
    rows: int
    input_records: int
    input_bytes: int
    duplicates: int
    dead_letters: int
    close_reason: str
    opened_at: datetime
    committed_at: datetime
    min_occurred_at: datetime | None
    max_occurred_at: datetime | None
    files: tuple[str, ...] = field(default=())

    @classmethod
    def of(cls, record: BatchRecord, files: tuple[str, ...]) -> BatchAnnouncement:
        """The announcement of a committed ``record`` that added ``files``."""
        return cls(
            batch_id=batch_id(
                record.stream,
                record.topic,
                record.partition,
                record.first_offset,
                record.next_offset,
            ),
            stream=record.stream,
            offset_ranges=(
                {
                    "topic": record.topic,
                    "partition": record.partition,
                    "first_offset": record.first_offset,
                    "next_offset": record.next_offset,
                },
            ),
            lake_version=record.lake_version,
            rows=record.rows,
            input_records=record.input_records,
            input_bytes=record.input_bytes,
            duplicates=record.duplicates,
            dead_letters=record.dead_letters,
            close_reason=record.close_reason,
            opened_at=record.opened_at,
            committed_at=record.committed_at,
            min_occurred_at=record.min_occurred_at,
            max_occurred_at=record.max_occurred_at,
            files=files,
        )

    def to_json(self) -> bytes:
        """The record's value: JSON, timestamps as RFC 3339 strings."""
        values = asdict(self)
        for name in _TIMESTAMPS:
            if values[name] is not None:
                values[name] = values[name].isoformat()
        values["offset_ranges"] = list(values["offset_ranges"])
        values["files"] = list(values["files"])
        return json.dumps(values, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, value: bytes) -> BatchAnnouncement:
        """Inverse of :meth:`to_json`; ValueError (or KeyError, TypeError) when malformed."""
        values: dict[str, Any] = json.loads(value)
        if not isinstance(values, dict):
            raise ValueError("a batch announcement is a JSON object")
        for name in _TIMESTAMPS:
            if values.get(name) is not None:
                values[name] = datetime.fromisoformat(values[name])
        values["offset_ranges"] = tuple(dict(r) for r in values["offset_ranges"])
        values["files"] = tuple(str(f) for f in values.get("files", ()))
        return cls(**values)

    @property
    def source_key(self) -> tuple[str, int]:
        """``(topic, partition)`` of the (single) source partition."""
        first = self.offset_ranges[0]
        return str(first["topic"]), int(first["partition"])

    @property
    def next_offset(self) -> int:
        """End (exclusive) of the batch's offset range."""
        return int(self.offset_ranges[0]["next_offset"])


def added_files(table_path: LakeTable | Path | str, version: int) -> tuple[str, ...]:
    """Paths (relative to the table) of the files added by ``version``; () if its log is gone."""
    table = as_lake_table(table_path)
    data = table.location.read_file(table.path(f"_delta_log/{version:020d}.json"))
    if data is None:
        return ()
    text = data.decode("utf-8")
    paths = []
    for line in text.splitlines():
        if line.strip():
            add = json.loads(line).get("add")
            if isinstance(add, dict):
                paths.append(str(add["path"]))
    return tuple(paths)


class BatchAnnouncer:
    """Produces the announcements of one stream's committed batches (see module docstring).

    Thread-safe. A delivery that fails after the client's own retries is
    raised by the next :meth:`announce` or by :meth:`close`: the flow stops
    and the restart announces what was lost.
    """

    def __init__(self, connection: Mapping[str, str], stream: str, topic: str) -> None:
        self.stream = stream
        self.topic = topic
        self._connection = dict(connection)
        self._producer = new_producer(
            self._connection,
            {
                "enable.idempotence": "true",
                "acks": "all",
                "linger.ms": "5",
                # Wait through a broker outage like the dead-letter producer: a
                # delivery timeout would stop a flow that only waited for Kafka.
                "message.timeout.ms": "0",
                "client.id": f"streambatch-announcer-{topic}",
            },
        )
        self._partitions: int | None = None
        self._lock = threading.Lock()
        self._failure: str | None = None

    def announce(
        self, record: BatchRecord, table_path: LakeTable | Path | str
    ) -> BatchAnnouncement:
        """Produce the announcement of committed ``record`` (not waiting for the broker)."""
        self._raise_failure()
        announcement = BatchAnnouncement.of(record, added_files(table_path, record.lake_version))
        self._produce(announcement)
        return announcement

    def repair(self, lake: DeltaLake, topic: str, partition: int) -> int:
        """Announce the manifest rows of a source partition after its last announcement.

        Waits until they are acknowledged. Returns how many were announced.
        """
        fence = lake.fence(topic, partition)
        if fence is None:
            return 0
        announced = self._last_announced(self.stream, topic, partition)
        if announced is not None and announced >= fence:
            return 0  # the usual start: nothing to read from the manifest
        rows = _manifest_rows(lake, self.stream, topic, partition, after=announced)
        for record in rows:
            self._produce(
                BatchAnnouncement.of(record, added_files(lake.table_path, record.lake_version))
            )
        if rows:
            self.flush()
            log.info(
                "%s/%d: announced %d committed batch(es) a crash left unannounced",
                topic,
                partition,
                len(rows),
            )
        return len(rows)

    def flush(self, timeout_seconds: float = 60) -> None:
        """Wait for every announcement so far to be acknowledged; raise if one failed."""
        remaining = self._producer.flush(timeout_seconds)
        if remaining:
            self._failure = self._failure or f"{remaining} not acknowledged in {timeout_seconds} s"
        self._raise_failure()

    def close(self) -> None:
        """Flush (see :meth:`flush`)."""
        self.flush()

    def _produce(self, announcement: BatchAnnouncement) -> None:
        topic, partition = announcement.source_key
        target = announcement_partition(announcement.stream, topic, partition, self._count())
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=announcement.to_json(),
                    key=announcement.batch_id.encode(),
                    partition=target,
                    headers=[(BATCH_ID_HEADER, announcement.batch_id.encode())],
                    on_delivery=self._delivered,
                )
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None and self._failure is None:
            self._failure = f"{message.topic()}: {error.str()}"

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise StreambatchError(
                f"batch announcement to {self.topic} failed: {self._failure}; "
                "a restart announces the committed batches again"
            )

    def _count(self) -> int:
        with self._lock:
            if self._partitions is None:
                # Asked as producing would ask: a broker that creates topics on
                # demand creates it, one that does not says so here.
                metadata = self._producer.list_topics(self.topic, timeout=30)
                described = metadata.topics.get(self.topic)
                if described is None or described.error is not None or not described.partitions:
                    reason = described.error.str() if described and described.error else "absent"
                    raise StreambatchError(
                        f"batches topic {self.topic!r} is not available: {reason} (create it, "
                        "or set STREAMBATCH_ANNOUNCE_BATCHES=false)"
                    )
                self._partitions = len(described.partitions)
            return self._partitions

    def _last_announced(self, stream: str, topic: str, partition: int) -> int | None:
        """The largest ``next_offset`` announced for a source partition, None if none is.

        Reads the batches-topic partition of the source partition backwards,
        a step at a time, until a step holds one of its announcements. The
        first step reads to the end-of-partition event, not to the high
        watermark (which a broker may report late right after a burst).
        Redriven copies (older batches sent back by ``dlq redrive``) are skipped.
        """
        target = TopicPartition(
            self.topic, announcement_partition(stream, topic, partition, self._count())
        )
        consumer = new_consumer(
            self._connection,
            {
                "group.id": "streambatch-announcer",
                "enable.auto.commit": "false",
                "enable.partition.eof": "true",
                # The end of the partition is what we wait for: don't let the
                # broker hold the fetch that reports it.
                "fetch.wait.max.ms": "10",
            },
        )
        try:
            low, high = consumer.get_watermark_offsets(target, timeout=30)
            stop: int | None = None
            start = max(low, high - _TAIL_STEP)
            while True:
                found = _announced_in(consumer, target, start, stop, stream, topic, partition)
                if found is not None or start <= low:
                    return found
                stop, start = start, max(low, start - _TAIL_STEP)
        finally:
            consumer.close()


def _announced_in(
    consumer: Consumer,
    target: TopicPartition,
    start: int,
    stop: int | None,
    stream: str,
    topic: str,
    partition: int,
) -> int | None:
    """Largest ``next_offset`` announced for the source partition in ``[start, stop)``.

    ``stop`` None: up to the end of the partition.
    """
    consumer.assign([TopicPartition(target.topic, target.partition, start)])
    best: int | None = None
    deadline = time.monotonic() + _TAIL_SECONDS
    while time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return best
            raise StreambatchError(f"{target.topic}: {error.str()}")
        if stop is not None and int(message.offset() or 0) >= stop:
            return best
        headers = cast(list[tuple[str, bytes | None]], message.headers() or [])
        if any(key == _REDRIVEN_HEADER for key, _ in headers):
            continue
        try:
            announcement = BatchAnnouncement.from_json(message.value() or b"")
        except (ValueError, KeyError, TypeError):
            continue
        if announcement.stream == stream and announcement.source_key == (topic, partition):
            best = max(best or 0, announcement.next_offset)
    raise StreambatchError(
        f"{target.topic}/{target.partition}: the end of its announcements not reached "
        f"in {_TAIL_SECONDS} s"
    )


def _manifest_rows(
    lake: DeltaLake, stream: str, topic: str, partition: int, *, after: int | None
) -> list[BatchRecord]:
    """``batches`` rows of a source partition whose range ends after ``after``, in order."""
    if not lake.batches_path.exists():
        return []
    expression = (
        (pc.field("stream") == stream)
        & (pc.field("topic") == topic)
        & (pc.field("partition") == partition)
    )
    if after is not None:
        expression = expression & (pc.field("next_offset") > after)
    dataset = lake.batches_path.open().to_pyarrow_dataset()
    table = dataset.to_table(filter=expression).sort_by("next_offset")
    records = []
    for row in table.to_pylist():
        try:
            records.append(BatchRecord(**row))
        except TypeError as exc:
            raise LakeError(f"{lake.batches_path}: unexpected manifest row: {exc}") from None
    return records
