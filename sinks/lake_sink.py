"""Bytewax sink: validate, dedupe, dead-letter and commit each closed batch to the lake.

Delivery guarantee: exactly once per Kafka offset range. Per batch, in this
order: drop what is below the lake fence (replay), drop duplicates (within the
batch, then against ids committed within the horizon), write dead letters and
wait for their acknowledgement, commit rows and fence in one Delta commit,
append the ``batches`` row. A crash anywhere re-reads from the last fence.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from config.settings import StreamSettings
from connectors.dead_letters import DeadLetterWriter
from flows.dedupe import DedupeIndex, digest_ids
from flows.progress import COMMITTED
from flows.records import BatchRange, ClosedBatch, ValidatedBatch, partition_key
from sinks.delta_lake import BatchRecord, DeltaLake
from sinks.lake_store import LakeStore
from streambatch.allocators import release_free_memory
from streambatch.clock import Clock, utc_now
from streambatch.metrics import (
    BATCH_BYTES,
    BATCH_ROWS,
    BATCHES_COMMITTED,
    COMMIT_SECONDS,
    LAST_COMMIT,
    RECORDS,
)

__all__ = ["CommitOutcome", "LakeSink", "PartitionCommitter"]

log = logging.getLogger(__name__)
# Closed batches waiting for the commit thread (the one in hand not counted).
_PENDING_BATCHES = 1
Validator = Callable[[ClosedBatch], ValidatedBatch]
_Int64s = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """What one batch commit did (for logs, metrics and tests)."""

    record: BatchRecord | None
    skipped_below_fence: int


@dataclass
class PartitionCommitter:
    """Commit state of one Kafka partition: its fence and its dedupe memory.

    Built from the lake on first use, so it is right after any restart and on
    any worker that takes the partition over.
    """

    lake: LakeStore
    dead_letters: DeadLetterWriter
    topic: str
    partition: int
    horizon: timedelta
    now: Clock = utc_now
    fence: int | None = field(init=False)
    index: DedupeIndex = field(init=False)

    def __post_init__(self) -> None:
        self.lake.repair_batch_log(self.topic, self.partition)
        self.fence = self.lake.fence(self.topic, self.partition)
        self.index = DedupeIndex(self.horizon)
        watermark = self.lake.watermark_us(self.topic, self.partition)
        if watermark is not None:
            since = watermark - int(self.horizon / timedelta(microseconds=1))
            recent = self.lake.recent_rows(self.topic, self.partition, since)
            self.index.remember(*_dedupe_keys(recent))
            log.info(
                "%s/%d: fence %s, %d event ids remembered for dedupe",
                self.topic,
                self.partition,
                self.fence,
                recent.num_rows,
            )

    def commit(
        self, validated: ValidatedBatch, id_digests: npt.NDArray[np.uint64] | None = None
    ) -> CommitOutcome:
        """Dedupe, dead-letter and commit one batch (see module docstring).

        ``id_digests``: ``digest_ids`` of the table's event ids, row for row,
        when the caller computed them already (the sink does, in its
        validation thread).
        """
        batch = validated.batch
        offsets = batch.offsets
        table, letters = validated.table, validated.dead_letters
        if id_digests is None:
            id_digests = digest_ids(table.column("event_id").to_pylist())
        first_offset = offsets[0]
        skipped = 0
        # Stage 1, drop below the fence: what an earlier run committed already.
        if self.fence is not None and first_offset < self.fence:
            if offsets[-1] < self.fence:
                COMMITTED.publish(self.topic, self.partition, self.fence)
                return CommitOutcome(None, len(offsets))
            # Only after a takeover mid-range: keep what is at or past the fence.
            skipped = sum(1 for offset in offsets if offset < self.fence)
            at_or_past = _int64s(table.column("_offset")) >= self.fence
            table = table.filter(pa.array(at_or_past))
            id_digests = id_digests[at_or_past]
            letters = [letter for letter in letters if letter.offset >= self.fence]
            first_offset = self.fence
        # Stage 2, dedupe: within the batch, then against ids committed within the horizon.
        result = self.index.check_digests(id_digests, _int64s(table.column("_value_digest")))
        kept_digests = result.digests
        if result.duplicates:
            keep = np.asarray(result.keep, dtype=bool)
            table = table.filter(pa.array(keep))
            kept_digests = kept_digests[keep]
        started = time.monotonic()
        # Stage 3, dead letters: acknowledged before the commit moves the fence past them.
        self.dead_letters.write(letters, self.topic, self.partition)
        occurred = pc.min_max(table.column("occurred_at")).as_py() if table.num_rows else None
        record = BatchRecord(
            stream=validated.stream,
            topic=self.topic,
            partition=self.partition,
            first_offset=first_offset,
            next_offset=batch.next_offset,
            rows=table.num_rows,
            input_records=len(offsets) - skipped,
            input_bytes=batch.input_bytes,
            duplicates=result.duplicates,
            conflicts=result.conflicts,
            dead_letters=len(letters),
            dead_letters_by_class=json.dumps(
                dict(sorted(Counter(letter.error_class for letter in letters).items()))
            ),
            files=0,
            close_reason=batch.reason,
            opened_at=batch.opened_at,
            committed_at=self.now(),
            min_occurred_at=occurred["min"] if occurred else None,
            max_occurred_at=occurred["max"] if occurred else None,
            lake_version=-1,
        )
        # Stage 4, commit: rows and fence in one Delta commit, then the batches row.
        committed = self.lake.commit(table, record)
        self.index.remember_digests(kept_digests, *_times_and_values(table))
        self.fence = batch.next_offset
        COMMITTED.publish(self.topic, self.partition, self.fence)
        _observe(committed, time.monotonic() - started)
        log.info("batch committed", extra={"fields": {"batch": _log_fields(committed)}})
        return CommitOutcome(committed, skipped)


def _dedupe_keys(table: pa.Table) -> tuple[list[str], _Int64s, _Int64s]:
    """Event ids, event times (us) and value digests of ``table``, row for row."""
    return (table.column("event_id").to_pylist(), *_times_and_values(table))


def _times_and_values(table: pa.Table) -> tuple[_Int64s, _Int64s]:
    """Event times (us) and value digests of ``table``, row for row."""
    return (
        _int64s(table.column("occurred_at").cast(pa.int64())),
        _int64s(table.column("_value_digest")),
    )


def _int64s(column: pa.ChunkedArray) -> _Int64s:
    values: _Int64s = column.to_numpy().astype(np.int64, copy=False)
    return values


def _observe(record: BatchRecord, seconds: float) -> None:
    stream = record.stream
    RECORDS.labels(stream, "valid").inc(record.rows)
    RECORDS.labels(stream, "duplicate").inc(record.duplicates)
    RECORDS.labels(stream, "invalid").inc(record.dead_letters)
    BATCHES_COMMITTED.labels(stream, record.close_reason).inc()
    BATCH_ROWS.labels(stream).observe(record.rows)
    BATCH_BYTES.labels(stream).observe(record.input_bytes)
    COMMIT_SECONDS.labels(stream).observe(seconds)
    LAST_COMMIT.labels(stream, f"{record.topic}/{record.partition}").set(
        record.committed_at.timestamp()
    )


def _log_fields(record: BatchRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "stream": record.stream,
        "partition": f"{record.topic}/{record.partition}",
        "offsets": [record.first_offset, record.next_offset],
        "rows": record.rows,
        "duplicates": record.duplicates,
        "conflicts": record.conflicts,
        "dead_letters": record.dead_letters,
        "bytes": record.input_bytes,
        "reason": record.close_reason,
        "version": record.lake_version,
        "opened_at": record.opened_at.isoformat(),
        "committed_at": record.committed_at.isoformat(),
    }
    return fields


class LakeSink(DynamicSink[ClosedBatch]):
    """Validates closed batches and commits them to the lake; holds settings only.

    Delivery guarantee: exactly once per Kafka offset range.
    """

    def __init__(
        self,
        lake: DeltaLake,
        settings: StreamSettings,
        producer_config: dict[str, str],
        validate: Validator,
    ) -> None:
        self._lake = lake
        self._settings = settings
        self._producer_config = producer_config
        self._validate = validate

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LakeSinkPartition:
        return _LakeSinkPartition(self._lake, self._settings, self._producer_config, self._validate)


class _LakeSinkPartition(StatelessSinkPartition[ClosedBatch]):
    """Validates, then commits, each in a thread of its own: a three-stage pipeline.

    While the source reads batch n+2, batch n+1 is validated and batch n
    committed. That pays because the biggest parts of both stages (Arrow's JSON
    reader, Parquet encoding, the Delta commit) release the GIL. Batches are
    committed one at a time in arrival order (so per Kafka partition in offset
    order). At most ``_PENDING_BATCHES`` wait before each stage: then
    ``write_batch`` blocks, on top of the sources' own backpressure. A failure
    in either thread stops both, and the next ``write_batch`` or ``close``
    raises it: nothing after it is committed, the flow stops, a restart
    re-reads from the fence.
    """

    def __init__(
        self,
        lake: DeltaLake,
        settings: StreamSettings,
        producer_config: dict[str, str],
        validate: Validator,
    ) -> None:
        self._lake = lake
        self._horizon = settings.dedupe_horizon
        self._validate = validate
        self._dead_letters = DeadLetterWriter(producer_config, settings.stream)
        self._committers: dict[str, PartitionCommitter] = {}
        self._to_validate: queue.Queue[ClosedBatch | None] = queue.Queue(maxsize=_PENDING_BATCHES)
        self._to_commit: queue.Queue[tuple[ValidatedBatch, npt.NDArray[np.uint64]] | None] = (
            queue.Queue(maxsize=_PENDING_BATCHES)
        )
        self._failure: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._validate_all, name="lake-validate", daemon=True),
            threading.Thread(target=self._commit_all, name="lake-commit", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def write_batch(self, items: list[ClosedBatch]) -> None:
        for item in items:
            self._put(self._to_validate, item)
            self._raise_failure()

    def close(self) -> None:
        """Wait for every queued batch to be committed (at the end of finite input)."""
        self._put(self._to_validate, None)
        for thread in self._threads:
            thread.join()
        self._raise_failure()

    def _put(self, stage: queue.Queue[Any], item: Any) -> None:
        """Hand ``item`` to a stage; gives up (silently) once a stage has failed."""
        while self._failure is None:
            try:
                stage.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _validate_all(self) -> None:
        while (batch := self._to_validate.get()) is not None:
            try:
                validated = self._validate(batch)
            except BaseException as exc:
                self._fail(exc, "validation")
                break
            del batch  # the raw records: freed before waiting for the committer
            # Hashing the ids for dedupe here balances the two threads.
            id_digests = digest_ids(validated.table.column("event_id").to_pylist())
            self._put(self._to_commit, (validated, id_digests))
            del validated, id_digests
        self._put(self._to_commit, None)

    def _commit_all(self) -> None:
        while (item := self._to_commit.get()) is not None:
            validated, id_digests = item
            try:
                self._committer(validated.batch).commit(validated, id_digests)
            except BaseException as exc:
                self._fail(exc, "commit")
                return
            # The batch's table and its encoding are freed now: give their
            # pages back before the next window is parsed (see allocators).
            del item, validated, id_digests
            release_free_memory()

    def _fail(self, exc: BaseException, stage: str) -> None:
        log.exception("%s failed; the flow stops, a restart resumes at the fence", stage)
        if self._failure is None:
            self._failure = exc

    def _committer(self, batch: BatchRange) -> PartitionCommitter:
        key = partition_key(batch.topic, batch.partition)
        committer = self._committers.get(key)
        if committer is None:
            committer = PartitionCommitter(
                self._lake, self._dead_letters, batch.topic, batch.partition, self._horizon
            )
            self._committers[key] = committer
        return committer
