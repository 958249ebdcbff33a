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
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from config.settings import StreamSettings
from connectors.backpressure import commit_board
from connectors.dead_letters import DeadLetterWriter
from connectors.records import BatchRange, ClosedBatch, ValidatedBatch, partition_key
from foundation.allocators import release_free_memory
from foundation.clock import Clock, utc_now
from foundation.errors import DeadLetterWriteError
from foundation.failpoints import failpoint
from foundation.failure import FailureLatch, is_transient, is_unreachable, remedy, root_cause
from foundation.metrics import (
    BATCH_BYTES,
    BATCH_ROWS,
    BATCHES_COMMITTED,
    COMMIT_SECONDS,
    LAST_COMMIT,
    RECORDS,
)
from sinks.batch_announcements import BatchAnnouncer
from sinks.commit_ranges import DEFAULT_MAX_PARTITIONS_PER_COMMIT, commit_ranges
from sinks.dedupe import DedupeIndex, digest_ids
from sinks.delta_lake import BatchRecord, DeltaLake

__all__ = ["CommitOutcome", "LakeSink", "PartitionCommitter"]

log = logging.getLogger(__name__)
# Closed batches waiting for the commit thread (the one in hand not counted).
_PENDING_BATCHES = 1
Validator = Callable[[ClosedBatch], ValidatedBatch]
_Int64s = npt.NDArray[np.int64]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How often a stage thread waiting for work looks whether another one failed.
_POLL_SECONDS = 0.5
_FIRST_RETRY_SECONDS = 0.2
_MAX_RETRY_DELAY_SECONDS = 5.0


def _recover(lake: DeltaLake, announcer: BatchAnnouncer | None, topic: str, partition: int) -> None:
    """Finish what a crash left undone for a partition: its ``batches`` row, then its
    announcements (``announcer`` None: announcements are off)."""
    lake.repair_batch_log(topic, partition)
    if announcer is not None:
        announcer.repair(lake, topic, partition)


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

    lake: DeltaLake
    dead_letters: DeadLetterWriter
    topic: str
    partition: int
    horizon: timedelta
    now: Clock = utc_now
    max_partitions: int = DEFAULT_MAX_PARTITIONS_PER_COMMIT
    """Hive partitions one Delta commit may touch (``STREAMBATCH_MAX_PARTITIONS_PER_COMMIT``)."""
    announcer: BatchAnnouncer | None = None
    recovered: bool = False
    """The partition was recovered when it was opened (``LakeSink.recover_partition``):
    nothing to repair. False: repair first (a rebuild after a failed commit)."""
    fence: int | None = field(init=False)
    index: DedupeIndex = field(init=False)

    def __post_init__(self) -> None:
        if not self.recovered:
            _recover(self.lake, self.announcer, self.topic, self.partition)
        self.fence = self.lake.fence(self.topic, self.partition)
        self.index = DedupeIndex(self.horizon)
        # Arrival time is the flow's clock at commit (``batches.committed_at``).
        recent = self.lake.recent_arrivals(self.topic, self.partition, self.now() - self.horizon)
        if recent.num_rows:
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
                commit_board.publish(self.topic, self.partition, self.fence)
                return CommitOutcome(None, len(offsets))
            # Only after a takeover mid-range: keep what is at or past the fence.
            skipped = sum(1 for offset in offsets if offset < self.fence)
            at_or_past = _int64s(table.column("_offset")) >= self.fence
            table = table.filter(pa.array(at_or_past))
            id_digests = id_digests[at_or_past]
            letters = [letter for letter in letters if letter.offset >= self.fence]
            first_offset = self.fence
        # Stage 2, dedupe: within the batch, then against ids committed within the horizon.
        result = self.index.check_digests(
            id_digests, _int64s(table.column("_value_digest")), _microseconds(self.now())
        )
        kept_digests = result.digests
        checked_offsets = _int64s(table.column("_offset"))
        if result.duplicates:
            keep = np.asarray(result.keep, dtype=bool)
            table = table.filter(pa.array(keep))
            kept_digests = kept_digests[keep]
        started = time.monotonic()
        # Stage 3, dead letters: acknowledged before the commit moves the fence past them.
        self.dead_letters.write(letters, self.topic, self.partition)
        # A batch spanning many hours is committed in offset ranges of at most
        # max_partitions hive partitions each (see sinks.commit_ranges).
        ranges = commit_ranges(table, first_offset, batch.next_offset, self.max_partitions)
        dropped = (
            np.sort(checked_offsets[~np.asarray(result.keep, dtype=bool)])
            if result.duplicates
            else checked_offsets[:0]
        )
        # Stage 4, commit: per offset range, rows and fence in one Delta commit, then
        # the batches row.
        in_batch = np.asarray(offsets, dtype=np.int64)
        committed: BatchRecord | None = None
        for low, high in ranges:
            part, part_digests = table, kept_digests
            if len(ranges) > 1:
                row_offsets = _int64s(table.column("_offset"))
                in_range = (row_offsets >= low) & (row_offsets < high)
                part, part_digests = table.filter(pa.array(in_range)), kept_digests[in_range]
            part_letters = [letter for letter in letters if low <= letter.offset < high]
            records = _count_in(in_batch, low, high)
            occurred = pc.min_max(part.column("occurred_at")).as_py() if part.num_rows else None
            record = BatchRecord(
                stream=validated.stream,
                topic=self.topic,
                partition=self.partition,
                first_offset=low,
                next_offset=high,
                rows=part.num_rows,
                input_records=records,
                # Per range: the batch's bytes in proportion to its records.
                input_bytes=batch.input_bytes * records // max(len(offsets) - skipped, 1),
                duplicates=_count_in(dropped, low, high),
                conflicts=result.conflicts if low == first_offset else 0,
                dead_letters=len(part_letters),
                dead_letters_by_class=json.dumps(
                    dict(sorted(Counter(letter.error_class for letter in part_letters).items()))
                ),
                files=0,
                close_reason=batch.reason,
                opened_at=batch.opened_at,
                committed_at=self.now(),
                min_occurred_at=occurred["min"] if occurred else None,
                max_occurred_at=occurred["max"] if occurred else None,
                lake_version=-1,
            )
            committed = self.lake.commit(part, record)
            failpoint("before_announcement")
            if self.announcer is not None:
                self.announcer.announce(committed, self.lake.table_path)
            # Arrival time is committed_at: what a rebuild reads back from ``batches``.
            self.index.remember_digests(
                part_digests,
                _microseconds(record.committed_at),
                _int64s(part.column("_value_digest")),
            )
            self.fence = high
            commit_board.publish(self.topic, self.partition, self.fence)
            _observe(committed, time.monotonic() - started)
            log.info("batch committed", extra={"fields": {"batch": _log_fields(committed)}})
            started = time.monotonic()
        return CommitOutcome(committed, skipped)


def _count_in(sorted_offsets: _Int64s, low: int, high: int) -> int:
    """How many of ``sorted_offsets`` lie in ``[low, high)``."""
    bounds = np.searchsorted(sorted_offsets, [low, high])
    return int(bounds[1] - bounds[0])


def _dedupe_keys(table: pa.Table) -> tuple[list[str], _Int64s, _Int64s]:
    """Event ids, arrival times (us) and value digests of ``table``, row for row."""
    return (
        table.column("event_id").to_pylist(),
        _int64s(table.column("_arrived_at").cast(pa.int64())),
        _int64s(table.column("_value_digest")),
    )


def _microseconds(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


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
        failure: FailureLatch | None = None,
    ) -> None:
        self._lake = lake
        self._settings = settings
        self._producer_config = producer_config
        self._validate = validate
        self.failure = failure or FailureLatch()
        self._announcer_lock = threading.Lock()
        self._announcer: BatchAnnouncer | None = None
        # Partitions recovered when opened, until their first committer is built.
        self._recovered: set[str] = set()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LakeSinkPartition:
        return _LakeSinkPartition(
            self._lake,
            self._settings,
            self._producer_config,
            self._validate,
            self.failure,
            self.announcer(),
            self._recovered,
        )

    def recover_partition(self, topic: str, partition: int) -> None:
        """Finish what a crash left undone for a partition: its ``batches`` row, its announcements.

        The source calls it when it opens the partition, before reading from
        the fence (see :class:`~connectors.kafka_source.LakeFencedKafkaSource`),
        so the last batch a crash left unannounced is announced even when
        nothing more is ever read from that partition. A committer rebuilt
        after a failed commit repeats it (that commit may have happened, and
        its announcement not).
        """
        try:
            _recover(self._lake, self.announcer(), topic, partition)
            self._recovered.add(partition_key(topic, partition))
        except Exception as exc:
            doing = f"finishing {partition_key(topic, partition)}'s last batch at start"
            line = f"{root_cause(exc)} while {doing}; {remedy(exc)}"
            # A flow process exits here with that line (foundation.failure.exit_on_failure).
            self.failure.trip(self._lake.location.scrub(line), exc)
            raise

    def announcer(self) -> BatchAnnouncer | None:
        """The process's batch announcer (None when announcements are off), made on first use.

        Made late, not with the sink: a flow built before its worker
        processes are forked must not hand them a Kafka client.
        """
        if not self._settings.announce_batches:
            return None
        with self._announcer_lock:
            if self._announcer is None:
                self._announcer = BatchAnnouncer(
                    self._producer_config,
                    self._settings.stream,
                    self._settings.announcement_topic,
                )
            return self._announcer


class _LakeSinkPartition(StatelessSinkPartition[ClosedBatch]):
    """Validates, then commits, each in a thread of its own: a three-stage pipeline.

    While the source reads batch n+2, batch n+1 is validated and batch n
    committed. That pays because the biggest parts of both stages (Arrow's JSON
    reader, Parquet encoding, the Delta commit) release the GIL. Batches are
    committed one at a time in arrival order (so per Kafka partition in offset
    order). At most ``_PENDING_BATCHES`` wait before each stage: then
    ``write_batch`` blocks, on top of the sources' own backpressure.

    Failing closed: a transient commit failure (a conflict with another
    writer, see :func:`~foundation.failure.is_transient`) is retried from
    the lake's fence for at most ``STREAMBATCH_RETRY_SECONDS``; any other
    failure in either thread, or retries running out, trips the flow's
    :class:`~foundation.failure.FailureLatch` with one line naming the root
    cause. Both threads then end, ``write_batch`` and ``close`` raise it (and
    so does the source, which polls the latch), so the worker stops: nothing
    after it is committed, a restart re-reads from the fence.
    """

    def __init__(
        self,
        lake: DeltaLake,
        settings: StreamSettings,
        producer_config: dict[str, str],
        validate: Validator,
        failure: FailureLatch,
        announcer: BatchAnnouncer | None,
        recovered: set[str],
    ) -> None:
        self._lake = lake
        self._horizon = settings.dedupe_horizon
        self._validate = validate
        self._latch = failure
        self._retry_seconds = settings.retry_seconds
        self._max_partitions = settings.max_partitions_per_commit
        self._dead_letters = DeadLetterWriter(
            producer_config, settings.stream, max_wait_seconds=settings.retry_seconds
        )
        self._announcer = announcer
        self._recovered = recovered
        self._committers: dict[str, PartitionCommitter] = {}
        self._to_validate: queue.Queue[ClosedBatch | None] = queue.Queue(maxsize=_PENDING_BATCHES)
        self._to_commit: queue.Queue[tuple[ValidatedBatch, npt.NDArray[np.uint64]] | None] = (
            queue.Queue(maxsize=_PENDING_BATCHES)
        )
        self._threads = [
            threading.Thread(target=self._validate_all, name="lake-validate", daemon=True),
            threading.Thread(target=self._commit_all, name="lake-commit", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def write_batch(self, items: list[ClosedBatch]) -> None:
        for item in items:
            self._latch.raise_if_tripped()
            self._put(self._to_validate, item)
        self._latch.raise_if_tripped()

    def close(self) -> None:
        """Wait for every queued batch to be committed (at the end of finite input).

        Never hangs on a failed stage: the threads end once the latch trips.
        Raises a failure the worker has not seen yet; never one it is already
        unwinding from (Bytewax closes sinks while it unwinds, and a second
        exception there aborts the process).
        """
        self._put(self._to_validate, None)
        for thread in self._threads:
            thread.join()
        if not self._latch.raised:
            self._latch.raise_if_tripped()
        if self._latch.failure is None and self._announcer is not None:
            self._announcer.close()

    def _put(self, stage: queue.Queue[Any], item: Any) -> None:
        """Hand ``item`` to a stage; gives up (silently) once the flow has failed."""
        while self._latch.failure is None:
            try:
                stage.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _get(self, stage: queue.Queue[Any]) -> Any:
        """The next item of a stage; None at its end or once the flow has failed."""
        while self._latch.failure is None:
            try:
                return stage.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
        return None

    def _validate_all(self) -> None:
        while (batch := self._get(self._to_validate)) is not None:
            try:
                validated = self._validate(batch)
            except BaseException as exc:
                where = f"{batch.records.topic}/{batch.records.partition}"
                self._fail(exc, f"validating a batch of {where}")
                break
            del batch  # the raw records: freed before waiting for the committer
            # Hashing the ids for dedupe here balances the two threads.
            id_digests = digest_ids(validated.table.column("event_id").to_pylist())
            self._put(self._to_commit, (validated, id_digests))
            del validated, id_digests
        self._put(self._to_commit, None)

    def _commit_all(self) -> None:
        while (item := self._get(self._to_commit)) is not None:
            validated, id_digests = item
            try:
                self._commit_with_retries(validated, id_digests)
            except BaseException as exc:
                self._fail(exc, _describe(validated.batch), validated.batch)
                return
            # The batch's table and its encoding are freed now: give their
            # pages back before the next window is parsed (see allocators).
            del item, validated, id_digests
            release_free_memory()

    def _commit_with_retries(
        self, validated: ValidatedBatch, id_digests: npt.NDArray[np.uint64]
    ) -> None:
        """Commit one batch, retrying transient failures for ``retry_seconds`` at most.

        Each retry starts from the lake afresh (a new committer: the fence and
        dedupe memory as committed), so a batch that another writer of the
        partition committed meanwhile is skipped, not written twice.
        """
        batch = validated.batch
        deadline = time.monotonic() + self._retry_seconds
        delay = _FIRST_RETRY_SECONDS
        while True:
            try:
                self._committer(batch).commit(validated, id_digests)
                return
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "%s failed, retrying in %.1f s: %s", _describe(batch), delay, root_cause(exc)
                )
                self._committers.pop(partition_key(batch.topic, batch.partition), None)
                time.sleep(delay)
                delay = min(2 * delay, _MAX_RETRY_DELAY_SECONDS)

    def _fail(self, exc: BaseException, doing: str, batch: BatchRange | None = None) -> None:
        """Trip the latch with one line naming the root cause (the first failure wins)."""
        log.error("%s failed; the flow stops, a restart resumes at the fence", doing, exc_info=exc)
        if isinstance(exc, DeadLetterWriteError):
            line = f"{exc}; make the dead-letter topic writable and restart"
        elif batch is not None and is_unreachable(exc):
            line = (
                f"lake at {self._lake.table_path} did not answer for {self._retry_seconds:g} s "
                f"({root_cause(exc)}) while {doing}; fix the connection and restart"
            )
        elif batch is not None and is_transient(exc):
            line = (
                f"{batch.topic}/{batch.partition}: another writer owns this partition: our "
                f"commits kept losing to its commits for {self._retry_seconds:g} s "
                f"({root_cause(exc)}; a second flow on the same topic and lake?); "
                "stop the other writer and restart"
            )
        elif batch is not None:
            cause = root_cause(exc)
            line = f"lake at {self._lake.table_path}: {cause} while {doing}; {remedy(exc)}"
        else:
            line = f"{root_cause(exc)} while {doing}; {remedy(exc)}"
        # An object store's error may quote a credential: never let it reach the line.
        self._latch.trip(self._lake.location.scrub(line), exc)

    def _committer(self, batch: BatchRange) -> PartitionCommitter:
        """The partition's committer, built from the lake on first use (and after a retry)."""
        key = partition_key(batch.topic, batch.partition)
        committer = self._committers.get(key)
        if committer is None:
            recovered = key in self._recovered
            self._recovered.discard(key)  # a rebuild after a failure repairs again
            committer = PartitionCommitter(
                self._lake,
                self._dead_letters,
                batch.topic,
                batch.partition,
                self._horizon,
                max_partitions=self._max_partitions,
                announcer=self._announcer,
                recovered=recovered,
            )
            self._committers[key] = committer
        return committer


def _describe(batch: BatchRange) -> str:
    """``committing orders/2 offsets [100, 200)``: what a failure interrupted."""
    return (
        f"committing {batch.topic}/{batch.partition} "
        f"offsets [{batch.offsets[0]}, {batch.next_offset})"
    )
