"""Kafka source that resumes every partition from the lake's offset fence.

One Bytewax source partition per Kafka partition, each with its own
``assign()``-ed consumer (no consumer group, no Kafka commits): the offset of
record lives in the lake, committed atomically with the data. Emits one
:class:`~connectors.records.RecordChunk` per ``consume()`` call, not one item per
record. While reading, each partition stops the flow when its offsets go
backwards or its topic is replaced (another topic id): the fence the flow
started from belongs to the old log (see :mod:`connectors.kafka_log`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import cast

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    KafkaError,
    KafkaException,
    Message,
    TopicCollection,
    TopicPartition,
)

from connectors.backpressure import InFlightLimiter
from connectors.kafka_clients import TopicUnavailable, describe_topic, new_admin, new_consumer
from connectors.kafka_log import BrokerLog, LogMismatch
from connectors.records import Headers, RecordChunk, partition_key
from foundation.clock import utc_now
from foundation.errors import TerminalError
from foundation.gc_pause import gc_paused
from foundation.metrics import (
    BROKER_CONNECTED,
    CONSUMER_LAG,
    KAFKA_ERRORS,
    observe_client_stats,
)

__all__ = ["FenceReader", "LakeFencedKafkaSource", "PartitionRecovery"]

log = logging.getLogger(__name__)

FenceReader = Callable[[str, int], int | None]
"""``(topic, partition) -> next offset to read`` or None for the beginning."""
PartitionRecovery = Callable[[str, int], None]
"""``(topic, partition)``: finish what a crash left undone for it, before it is read."""

_IDLE_WAIT = timedelta(milliseconds=20)
_LOG_CHECK_INTERVAL = timedelta(seconds=5)
# Records after at least this long at the end of the log get the topic id checked first.
_END_WAIT = timedelta(seconds=1)
_FATAL_CODES = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError._UNKNOWN_PARTITION,
}


@dataclass(frozen=True)
class LakeFencedKafkaSource(FixedPartitionedSource[RecordChunk, None]):
    """Reads ``topic`` from the lake's fence per partition; holds settings only.

    Args:
        consumer_config: librdkafka settings (connection and tuning).
        topic: the source topic.
        read_fence: where to start each partition (see :data:`FenceReader`).
        recover_partition: called once per partition when it is opened, before
            its fence is read (see :data:`PartitionRecovery`); an exception
            stops the flow.
        stop_at_end: stop each partition at its end (``enable.partition.eof``).
        batch_size: most records per ``consume()`` call.
        max_in_flight_bytes: stop reading a partition while this many bytes
            are read but not committed (bounds memory; see connectors.backpressure).
        prefetch_bytes: the client's prefetch queues of all partitions of the
            topic together (each partition gets its share, 1 to 8 MiB). The
            client counts fetched bytes, which for a compressed topic are a
            fraction of the records they hold.
    """

    stream: str
    consumer_config: dict[str, str]
    topic: str
    read_fence: FenceReader
    recover_partition: PartitionRecovery | None = None
    stop_at_end: bool = False
    batch_size: int = 5000
    max_in_flight_bytes: int = 64 * 1024 * 1024
    prefetch_bytes: int = 4 * 1024 * 1024

    def list_parts(self) -> list[str]:
        try:
            described = describe_topic(self.consumer_config, self.topic, timeout_seconds=30)
        except TopicUnavailable as exc:
            raise TopicUnavailable(f"source {exc}") from None
        return [partition_key(self.topic, p) for p in sorted(described.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _FencedPartition:
        topic, _, partition = for_part.rpartition("/")
        return _FencedPartition(self, topic, int(partition), self._partition_count)

    @cached_property
    def _partition_count(self) -> int:
        """Partitions of the topic (each gets its share of ``prefetch_bytes``); asked once."""
        return len(self.list_parts())


def _prefetch_kbytes(total_bytes: int, partitions: int) -> int:
    """One partition's share of the prefetch budget, in KiB, within 1 to 8 MiB."""
    share = total_bytes // max(partitions, 1) // 1024
    return max(1024, min(8 * 1024, share))


class _FencedPartition(StatefulSourcePartition[RecordChunk, None]):
    """The I/O half: a consumer assigned at the fence of one partition."""

    def __init__(
        self, source: LakeFencedKafkaSource, topic: str, partition: int, partitions: int
    ) -> None:
        if source.recover_partition is not None:
            source.recover_partition(topic, partition)
        fence = source.read_fence(topic, partition)
        queue_kbytes = _prefetch_kbytes(source.prefetch_bytes, partitions)
        start = OFFSET_BEGINNING if fence is None else fence
        config = {
            "group.id": "streambatch-unused",  # required by librdkafka; no group is joined
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            "enable.partition.eof": "true" if source.stop_at_end else "false",
            # A fence past the end (topic recreated) or before the start (retention
            # deleted unread records) is an error, never a silent jump.
            "auto.offset.reset": "error",
            # Small fetches, fetched again as soon as the queue has room, the
            # queue bounded by bytes: librdkafka's count bound and its pause
            # once full made the flow wait (docs/performance.md).
            "fetch.max.bytes": str(2 * 1024 * 1024),
            "max.partition.fetch.bytes": str(1024 * 1024),
            "queued.max.messages.kbytes": str(queue_kbytes),
            "queued.min.messages": "1000000",
            "fetch.queue.backoff.ms": "2",
            **source.consumer_config,
            "error_cb": self._on_error,
            "stats_cb": self._on_stats,
            "statistics.interval.ms": "1000",
        }
        self._stream = source.stream
        self._label = partition_key(topic, partition)
        self._connected: bool | None = None
        self._consumer = new_consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, start)])
        self._start = start
        self._start_offset = fence or 0
        self._topic = topic
        self._partition = partition
        self._stop_at_end = source.stop_at_end
        self._batch_size = source.batch_size
        self._at_end = False
        self._idle = False
        self._limiter = InFlightLimiter(
            topic, partition, source.max_in_flight_bytes, source.read_fence
        )
        # The log this partition reads (checked against the lake's when the
        # flow started): a recreated topic under a running flow gets another id.
        self._admin = new_admin(source.consumer_config)
        self._topic_id = self._describe_topic_id()
        self._next_offset = fence
        self._read_nothing_since: datetime | None = None  # consume() returned nothing since
        self._log_checked_at = utc_now()
        log.info(
            "reading %s from %s",
            partition_key(topic, partition),
            "the beginning" if fence is None else f"offset {fence} (lake fence)",
        )

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka retries by itself; make the outage visible instead of silent.
        KAFKA_ERRORS.labels(self._stream, error.name()).inc()
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            BROKER_CONNECTED.labels(self._stream, self._label).set(0)
        log.warning("kafka client error on %s: %s", self._label, error.str())

    def _on_stats(self, stats_json: str) -> None:
        connected, high = observe_client_stats(self._stream, self._label, stats_json)
        if connected != self._connected:
            # librdkafka's own lines are debug detail; the change of state is news.
            if connected:
                log.info("%s: broker connection up", self._label)
            elif self._connected is not None:
                log.warning("no broker connection for %s; retrying", self._label)
            self._connected = connected
        fence = self._limiter.committed_fence()
        if high is not None:
            CONSUMER_LAG.labels(self._stream, self._label).set(
                max(0, high - (fence if fence is not None else self._start_offset))
            )

    def next_batch(self) -> list[RecordChunk]:
        if self._at_end:
            raise StopIteration()
        if self._limiter.must_wait():
            self._idle = True  # not idle, but waiting for commits: same back-off
            return []
        # Messages are GC-tracked and freed by reference counting at once: without
        # the pause, thousands per call set off full collections of the heap.
        with gc_paused():
            messages = self._consumer.consume(self._batch_size, 0.01)
            if any(map(Message.error, messages)):
                self._handle_errors(messages)
                messages = [message for message in messages if message.error() is None]
            # C-level maps over the methods: no bytecode per record. Offsets and
            # headers of a fetched record are always set; the stubs also
            # describe produced messages, hence the casts.
            chunk = RecordChunk(
                self._topic,
                self._partition,
                cast(list[int], list(map(Message.offset, messages))),
                list(map(Message.key, messages)),
                list(map(Message.value, messages)),
                cast(list[Headers], list(map(Message.headers, messages))),
            )
            del messages
        self._idle = not chunk.offsets
        now = utc_now()
        waited = self._read_nothing_since
        if chunk.offsets:
            self._read_nothing_since = None
        elif waited is None:
            self._read_nothing_since = now
        after_wait = bool(chunk.offsets) and waited is not None and now - waited >= _END_WAIT
        self._check_log(chunk.offsets, after_wait, now)
        if not chunk.offsets:
            return []
        self._limiter.record_read(chunk.offsets, chunk.record_sizes())
        return [chunk]

    def _describe_topic_id(self) -> str | None:
        future = self._admin.describe_topics(TopicCollection([self._topic]), request_timeout=10)
        try:
            described = future[self._topic].result(timeout=10)
        except TimeoutError:
            log.warning("cannot describe %s: no answer in 10 s", self._label)
            return None
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return ""  # deleted: no id, which differs from every id
            log.warning("cannot describe %s: %s", self._label, exc)
            return None  # unknown for now (broker away): checked again later
        return None if described.topic_id is None else str(described.topic_id)

    def _check_log(self, offsets: list[int], after_wait: bool, now: datetime) -> None:
        """Stop when offsets go backwards or the topic is replaced while running.

        A gap forwards is fine (transaction markers, compaction); a jump past
        the log's end cannot be read. The topic id is asked every few seconds,
        and before the first records that arrive after a second or more at the
        end (what a recreated topic's records look like to a reader at the old
        end): those are never handed on if the id changed.
        """
        if offsets:
            if self._next_offset is not None and offsets[0] < self._next_offset:
                self._stop_on_mismatch(
                    self._topic_id, f"offset {offsets[0]} read after {self._next_offset - 1}"
                )
            self._next_offset = offsets[-1] + 1
        if not after_wait and now - self._log_checked_at < _LOG_CHECK_INTERVAL:
            return
        self._log_checked_at = now
        current = self._describe_topic_id()
        if self._topic_id is None:
            self._topic_id = current
        elif current is not None and current != self._topic_id:
            self._stop_on_mismatch(current)

    def _stop_on_mismatch(self, broker_topic_id: str | None, detail: str | None = None) -> None:
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._partition), timeout=5, cached=False
            )
        except KafkaException:
            low, high = -1, -1  # shown as such: the broker did not say
        fence = self._limiter.committed_fence()
        mismatch = LogMismatch(
            self._topic,
            self._partition,
            fence if fence is not None else self._start_offset,
            self._topic_id,
            BrokerLog(broker_topic_id or "(none: topic deleted)", int(low), int(high)),
            detail,
        )
        raise TerminalError(mismatch.line(self._stream))

    def _handle_errors(self, messages: list[Message]) -> None:
        """End of partition, a fence outside the topic, fatal or passing errors."""
        for message in messages:
            error = message.error()
            if error is None:
                continue
            if error.code() == KafkaError._PARTITION_EOF:
                if self._stop_at_end:
                    self._at_end = True
                continue
            if error.code() == KafkaError._AUTO_OFFSET_RESET:
                self._stop_on_mismatch(
                    self._describe_topic_id(), f"the fence is outside the log ({error.str()})"
                )
            if error.code() in _FATAL_CODES or error.fatal():
                raise TerminalError(f"{partition_key(self._topic, self._partition)}: {error.str()}")
            log.warning("consume error on %s: %s", self._topic, error.str())

    def next_awake(self) -> datetime | None:
        # Poll again at once while data flows; back off a little when idle so
        # idle partitions do not spin a core.
        if self._idle:
            return utc_now() + _IDLE_WAIT
        return None

    def snapshot(self) -> None:
        # The lake's fence, not Bytewax recovery, is the offset of record.
        return None

    def close(self) -> None:
        self._consumer.close()
