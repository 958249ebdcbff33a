"""Kafka plumbing shared by the router, the queue workers and the outbox relay."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from connectors.embedded_broker import create_topics
from connectors.kafka_clients import new_consumer
from foundation.errors import StreambatchError

log = logging.getLogger(__name__)

__all__ = [
    "Activity",
    "ConsumerLoop",
    "DeliveryFailures",
    "QuietClock",
    "ensure_topics",
    "group_consumer",
    "is_record",
    "next_offsets",
    "produce_waiting",
    "read_records",
    "track_assignment",
    "track_revoke",
]


class Activity:
    """A consumer loop's state: assigned yet, read to the end, busy, waiting, asked to stop.

    The loop reports what happens (assignment, records, partition ends,
    retries waiting); a supervisor reads :attr:`settled`. Both run in
    different threads: every field is replaced whole, never mutated in place.
    """

    def __init__(self) -> None:
        self.assigned = threading.Event()
        self.stopping = threading.Event()
        self._busy = False
        self._last = time.monotonic()
        self._assignment: frozenset[tuple[str, int]] = frozenset()
        self._behind: frozenset[tuple[str, int]] = frozenset()
        self._waiting: frozenset[tuple[str, int]] = frozenset()
        self._rebalancing = False

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

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """A new assignment: every partition counts as unread until its end is seen."""
        self._assignment = frozenset(partitions)
        self._behind = self._assignment
        self._waiting = frozenset()
        self._rebalancing = False
        self.assigned.set()

    def revoke(self) -> None:
        """The assignment was taken away: not settled until the next one."""
        self._rebalancing = True
        self._assignment = frozenset()
        self._behind = frozenset()
        self._waiting = frozenset()

    def reached_end(self, partition: tuple[str, int]) -> None:
        """The consumer read to the end of ``partition`` (partition EOF)."""
        self._behind = self._behind - {partition}

    def more_to_read(self, partitions: Iterable[tuple[str, int]]) -> None:
        """A record came from, or was just written to, these partitions: read them again."""
        mine = self._assignment.intersection(partitions)
        if not mine <= self._behind:
            self._behind = self._behind | mine

    def wait_on(self, partition: tuple[str, int], waiting: bool) -> None:
        """``partition`` holds a record waiting for its retry time (or no longer)."""
        self._waiting = (self._waiting | {partition}) if waiting else (self._waiting - {partition})

    @property
    def settled(self) -> bool:
        """Assigned, read to the end of every partition, nothing in work or waiting."""
        return (
            self.assigned.is_set()
            and not self._rebalancing
            and not self._busy
            and not self._behind
            and not self._waiting
        )

    def describe(self) -> str:
        """What keeps this loop from being settled, for a message."""
        if not self.assigned.is_set() or self._rebalancing:
            return "no partitions assigned yet"
        parts = []
        if self._behind:
            parts.append("not read to the end: " + _names(self._behind))
        if self._waiting:
            parts.append("retries waiting on: " + _names(self._waiting))
        if self._busy:
            parts.append("busy")
        return "; ".join(parts) or "settled"


def _names(partitions: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{topic}/{partition}" for topic, partition in sorted(partitions))


class QuietClock:
    """Measures how long a condition has held without a break; starts only once it holds."""

    def __init__(self) -> None:
        self._since: float | None = None

    def held_for(self, condition: bool) -> float:
        """Seconds ``condition`` has been true at every call in a row (0 when false now)."""
        now = time.monotonic()
        if not condition:
            self._since = None
            return 0.0
        if self._since is None:
            self._since = now
        return now - self._since


class ConsumerLoop:
    """What a supervisor needs of a router or worker: readiness, settling, a stop."""

    name: str
    _activity: Activity

    @property
    def ready(self) -> threading.Event:
        """Set once the consumer group gave this loop its first assignment."""
        return self._activity.assigned

    @property
    def idle_seconds(self) -> float:
        """Seconds since the last message or batch was done; 0 while one is in work."""
        return self._activity.idle_seconds

    @property
    def settled(self) -> bool:
        """Assigned, read to the end of each partition, nothing in work or waiting."""
        return self._activity.settled

    def describe(self) -> str:
        """Why this loop is not settled (or ``settled``)."""
        return self._activity.describe()

    def stop(self) -> None:
        """Finish the current batch and return (a record waiting for its retry stays unread)."""
        self._activity.stopping.set()


def track_assignment(activity: Activity, owner: str) -> Callable[..., None]:
    """The ``on_assign`` callback keeping ``activity`` in step with the group's assignment."""

    def on_assign(_consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        log.info(
            "%s assigned %s",
            owner,
            ", ".join(f"{p.topic}/{p.partition}" for p in partitions) or "nothing",
        )
        activity.assign((p.topic, p.partition) for p in partitions)

    return on_assign


def track_revoke(activity: Activity) -> Callable[..., None]:
    """The ``on_revoke`` callback that clears ``activity``'s assignment."""

    def on_revoke(_consumer: Consumer, _partitions: Sequence[TopicPartition]) -> None:
        activity.revoke()

    return on_revoke


def read_records(messages: Sequence[Message], activity: Activity, owner: str) -> list[Message]:
    """The records among ``messages``; partition ends and records update ``activity``.

    What ``activity`` learns is what the last message of each partition says:
    a record (more to read) or its end.
    """
    records = []
    last: dict[tuple[str, int], bool] = {}  # partition -> its last message was a record
    for message in messages:
        if is_record(message, owner):
            records.append(message)
            last[str(message.topic()), int(message.partition() or 0)] = True
        elif _is_end(message):
            last[str(message.topic()), int(message.partition() or 0)] = False
    if last:
        activity.more_to_read([where for where, record in last.items() if record])
        for where, record in last.items():
            if not record:
                activity.reached_end(where)
    return records


def _is_end(message: Message) -> bool:
    error = message.error()
    return error is not None and error.code() == KafkaError._PARTITION_EOF


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
    on_delivery: Callable[[KafkaError | None, Message], None],
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
        # Joins take about session.timeout.ms on some brokers: keep it short.
        "session.timeout.ms": "6000",
        "heartbeat.interval.ms": "1000",
        # Settling needs to know when every partition was read to its end.
        "enable.partition.eof": "true",
        "fetch.wait.max.ms": "100",
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


def next_offsets(records: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit after ``records``: one past the last one, per partition."""
    last: dict[tuple[str, int], int] = {}
    for message in records:
        where = (str(message.topic()), int(message.partition() or 0))
        last[where] = max(last.get(where, -1), int(message.offset() or 0))
    return [TopicPartition(t, p, offset + 1) for (t, p), offset in last.items()]
