"""What the broker holds of a partition's log, and whether a fence belongs to it.

A fence belongs to a log when the topic id is the one recorded with it and
``low <= fence <= high``. Offsets that went backwards (a recreated topic, a
broker that lost its data) or records removed before the lake read them
(retention) are mismatches; a gap inside the log (transaction markers,
compaction) is not.

The high watermark is never trusted when it alone says "mismatch": some
brokers under-report it right after a burst of produces. A fence past it is
confirmed by fetching from it to the end of the partition, which reports the
true end offset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition

from connectors.kafka_clients import kafka_error_text, new_admin, new_consumer
from foundation.errors import TerminalError, TransientError

__all__ = [
    "BrokerLog",
    "LogMismatch",
    "compare_log",
    "read_broker_log",
    "record_value_at",
    "topic_id",
]

_FETCH_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class BrokerLog:
    """One partition as the broker holds it now: topic id and offsets ``[low, high)``."""

    topic_id: str
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class LogMismatch:
    """A partition whose lake fence does not belong to the broker's log."""

    topic: str
    partition: int
    fence: int
    recorded_topic_id: str | None
    broker: BrokerLog
    detail: str | None = None

    @property
    def reason(self) -> str:
        """Which check failed, in words (``detail`` when the caller knows better)."""
        if self.detail is not None:
            return self.detail
        if self.recorded_topic_id is not None and self.recorded_topic_id != self.broker.topic_id:
            return (
                f"the topic id is {self.broker.topic_id}, the lake's fence belongs to "
                f"{self.recorded_topic_id} (topic recreated or broker data lost)"
            )
        if self.fence > self.broker.high:
            return "the log is shorter than the lake's fence (broker data lost)"
        return "records below the low watermark were removed before the lake read them"

    def line(self, stream: str) -> str:
        """The one line an operator reads: what, where, which offsets, and what to run."""
        return (
            f"{self.topic}/{self.partition}: the lake's fence {self.fence} does not belong to "
            f"the broker's log (low {self.broker.low}, high {self.broker.high}): {self.reason}; "
            f"nothing was read. To accept the broker's log, run: "
            f"streambatch accept-log --stream {stream} --partition {self.partition}"
        )


def compare_log(
    topic: str,
    partition: int,
    fence: int | None,
    recorded_topic_id: str | None,
    broker: BrokerLog,
) -> LogMismatch | None:
    """The mismatch between a fence (and the topic id recorded with it) and a log, if any.

    ``fence`` None (nothing committed yet) always fits. ``recorded_topic_id``
    None (not recorded yet) checks the offsets only. ``broker.high`` must be
    confirmed (see :func:`read_broker_log`).
    """
    if fence is None:
        return None
    changed = recorded_topic_id is not None and recorded_topic_id != broker.topic_id
    if changed or fence < broker.low or fence > broker.high:
        return LogMismatch(topic, partition, fence, recorded_topic_id, broker)
    return None


def topic_id(connection: dict[str, str], topic: str, timeout_seconds: float = 30) -> str:
    """The broker's id of ``topic`` (a recreated topic gets a new one).

    Raises:
        TerminalError: the topic does not exist or has no id.
    """
    admin = new_admin(connection)
    future = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout_seconds)[topic]
    try:
        described = future.result(timeout=timeout_seconds)
    except KafkaException as exc:
        raise TerminalError(f"cannot describe topic {topic!r}: {kafka_error_text(exc)}") from None
    if described.topic_id is None:
        raise TerminalError(f"the broker reports no topic id for {topic!r}")
    return str(described.topic_id)


def read_broker_log(
    connection: dict[str, str],
    topic: str,
    partition: int,
    fence: int | None,
    identity: str,
    *,
    exact: bool = False,
) -> BrokerLog:
    """Offsets ``[low, high)`` of a partition; ``high`` confirmed by a fetch if below ``fence``.

    ``exact``: confirm ``high`` by a fetch in any case (for a message that shows it).

    Raises:
        TransientError: the broker did not answer in time.
    """
    consumer = _check_consumer(connection)
    try:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=_FETCH_TIMEOUT_SECONDS
            )
        except KafkaException as exc:
            raise TransientError(
                f"{topic}/{partition}: no watermark offsets: {kafka_error_text(exc)}"
            ) from None
        if exact or (fence is not None and fence > high):
            high = _fetched_end(consumer, topic, partition, max(low, high))
        return BrokerLog(identity, int(low), int(high))
    finally:
        consumer.close()


def _check_consumer(connection: dict[str, str]) -> Consumer:
    """A consumer that reads single positions: no group, end of partition reported."""
    return new_consumer(
        connection,
        {
            "group.id": "streambatch-log-check",  # required by librdkafka; no group is joined
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "auto.offset.reset": "error",
        },
    )


def _fetched_end(consumer: Consumer, topic: str, partition: int, start: int) -> int:
    """The end offset of a partition as a fetch from ``start`` reaches it (its EOF)."""
    consumer.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + _FETCH_TIMEOUT_SECONDS
    end = start
    while time.monotonic() < deadline:
        for message in consumer.consume(10_000, 0.2):
            error = message.error()
            if error is None:
                end = max(end, int(message.offset() or 0) + 1)
            elif error.code() == KafkaError._PARTITION_EOF:
                return max(end, int(message.offset() or 0))
            elif error.code() == KafkaError._AUTO_OFFSET_RESET:
                return end  # the watermark itself is past the end: nothing more to read
            elif error.fatal():
                raise TransientError(f"{topic}/{partition}: {error.str()}")
    raise TransientError(
        f"{topic}/{partition}: the end of the log was not reached in "
        f"{_FETCH_TIMEOUT_SECONDS:.0f} s; cannot check the lake's fence against it"
    )


def record_value_at(
    connection: dict[str, str], topic: str, partition: int, offset: int
) -> bytes | None:
    """The value of the record at exactly ``offset``, or None if the log holds none there.

    Raises:
        TransientError: the broker did not answer in time.
    """
    consumer = _check_consumer(connection)
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + _FETCH_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            for message in consumer.consume(1, 0.2):
                error = message.error()
                if error is None:
                    found = message.offset() == offset
                    return (message.value() or b"") if found else None
                if error.code() in (KafkaError._PARTITION_EOF, KafkaError._AUTO_OFFSET_RESET):
                    return None
                if error.fatal():
                    raise TransientError(f"{topic}/{partition}: {error.str()}")
        raise TransientError(f"{topic}/{partition}: offset {offset} not fetched in time")
    finally:
        consumer.close()
