"""Kafka plumbing shared by the router, the queue workers and the outbox relay."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from confluent_kafka import Consumer, KafkaError, Message, Producer

from connectors.embedded_broker import create_topics
from connectors.kafka_clients import new_consumer
from streambatch.errors import StreambatchError

log = logging.getLogger(__name__)

__all__ = [
    "Activity",
    "ConsumerLoop",
    "DeliveryFailures",
    "ensure_topics",
    "group_consumer",
    "is_record",
    "produce_waiting",
]


class Activity:
    """A consumer loop's state: assigned yet, busy or idle since when, asked to stop."""

    def __init__(self) -> None:
        self.assigned = threading.Event()
        self.stopping = threading.Event()
        self._busy = False
        self._last = time.monotonic()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Around the work on one message or batch."""
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
            self._last = time.monotonic()

    @property
    def idle_seconds(self) -> float:
        """Seconds since the last work ended; 0 while working."""
        return 0.0 if self._busy else time.monotonic() - self._last

    def idle_for(self, seconds: float | None) -> bool:
        """True once assigned and idle for ``seconds`` (never when ``seconds`` is None)."""
        return seconds is not None and self.assigned.is_set() and self.idle_seconds >= seconds


class ConsumerLoop:
    """What a supervisor needs of a router or worker: readiness, idleness, a stop."""

    _activity: Activity

    @property
    def ready(self) -> threading.Event:
        """Set once the consumer group gave this loop its first assignment."""
        return self._activity.assigned

    @property
    def idle_seconds(self) -> float:
        """Seconds since the last message or batch was done; 0 while one is in work."""
        return self._activity.idle_seconds

    def stop(self) -> None:
        """Finish the current message or batch (a retry wait is abandoned) and return."""
        self._activity.stopping.set()


class DeliveryFailures:
    """A producer ``on_delivery`` callback that keeps the errors, for one flush."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.errors.append(f"{message.topic()}: {error.str()}")


def ensure_topics(
    connection: Mapping[str, str], topics: Iterable[str], partitions: int = 3
) -> None:
    """Create ``topics`` with the connection's security settings (existing ones are fine)."""
    rest = {key: value for key, value in connection.items() if key != "bootstrap.servers"}
    create_topics(connection["bootstrap.servers"], list(topics), partitions, rest)


def produce_waiting(
    producer: Producer,
    topic: str,
    *,
    value: bytes | None,
    key: bytes | None,
    headers: list[tuple[str, str | bytes | None]],
    on_delivery: DeliveryFailures,
) -> None:
    """Produce one record, serving delivery reports while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.1)


def group_consumer(
    connection: Mapping[str, str],
    group_id: str,
    client_id: str,
    *,
    start_from: str = "earliest",
    max_poll_interval_ms: int | None = None,
) -> Consumer:
    """An at-least-once consumer-group member.

    Offsets are stored by the caller after its work is done, and committed by
    the client in the background and on close: nothing is committed unfinished.
    """
    config = {
        **connection,
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": "true",
        "enable.auto.offset.store": "false",
        "auto.commit.interval.ms": "1000",
        "auto.offset.reset": start_from,
        "session.timeout.ms": "10000",
    }
    if max_poll_interval_ms is not None:
        config["max.poll.interval.ms"] = str(max_poll_interval_ms)
    return new_consumer(config)


def is_record(message: Message, owner: str) -> bool:
    """True for a record; an end-of-partition event is skipped, other errors logged.

    Raises:
        StreambatchError: on a fatal client error, naming ``owner``.
    """
    error = message.error()
    if error is None:
        return True
    if error.fatal():
        raise StreambatchError(f"{owner}: {error.str()}")
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("%s: %s", owner, error.str())
    return False
