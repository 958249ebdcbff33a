"""Reading a dead-letter topic (redriving it: :mod:`streambatch.redrive`)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    KafkaError,
    Message,
    TopicPartition,
)
from rich.console import Group
from rich.table import Table

from connectors.dead_letter_headers import (
    ERROR_CLASS,
    ERROR_HEADER_NAMES,
    ERROR_MESSAGE,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
)
from connectors.kafka_clients import describe_topic, new_consumer
from foundation.errors import StreambatchError

__all__ = [
    "ERROR_HEADER_NAMES",
    "DeadLetterSummary",
    "header",
    "header_pairs",
    "inspect_dead_letters",
    "iter_topic",
    "read_topic",
    "source_of",
]


def read_topic(
    connection: dict[str, str], topic: str, timeout_seconds: float = 60
) -> list[Message]:
    """Every record of ``topic``, from the beginning to its current end."""
    return list(iter_topic(connection, topic, timeout_seconds=timeout_seconds))


def iter_topic(
    connection: dict[str, str],
    topic: str,
    start_offsets: Mapping[int, int] | None = None,
    timeout_seconds: float = 60,
) -> Iterator[Message]:
    """The records of ``topic`` up to its current end, from ``start_offsets`` on.

    ``start_offsets``: partition -> first offset to read; partitions it does
    not name are read from the beginning.
    """
    starts = start_offsets or {}
    partitions = sorted(describe_topic(connection, topic).partitions)
    consumer = new_consumer(
        {
            **connection,
            "group.id": "streambatch-reader",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
        }
    )
    consumer.assign([TopicPartition(topic, p, starts.get(p, OFFSET_BEGINNING)) for p in partitions])
    at_end: set[int | None] = set()
    deadline = time.monotonic() + timeout_seconds
    try:
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                raise StreambatchError(f"{topic}: end not reached in {timeout_seconds:.0f} s")
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is None:
                    yield message
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                else:
                    raise StreambatchError(f"{topic}: {error.str()}")
    finally:
        consumer.close()


def header_pairs(message: Message) -> list[tuple[str, str | bytes | None]]:
    # Consumed messages carry headers as a list of pairs; the stubs also allow a
    # dict, which only producers pass.
    return cast(list[tuple[str, str | bytes | None]], message.headers() or [])


def source_of(message: Message) -> tuple[str, int, int] | None:
    """``(topic, partition, offset)`` a dead letter came from, from its headers."""
    try:
        return (
            header(message, SOURCE_TOPIC),
            int(header(message, SOURCE_PARTITION)),
            int(header(message, SOURCE_OFFSET)),
        )
    except ValueError:
        return None


def header(message: Message, name: str) -> str:
    """The value of the header ``name`` as text ("" when absent)."""
    for key, value in header_pairs(message):
        if key == name and value is not None:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return ""


@dataclass
class DeadLetterSummary:
    """Dead letters by error class, plus a few samples."""

    topic: str
    by_class: Counter[str] = field(default_factory=Counter)
    samples: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """How many dead letters there are."""
        return sum(self.by_class.values())

    def render(self) -> Group:
        """Two rich tables: counts by class and samples."""
        counts = Table(title=f"{self.topic}: {self.total} dead letters")
        counts.add_column(ERROR_CLASS)
        counts.add_column("count", justify="right")
        for name, count in self.by_class.most_common():
            counts.add_row(name, str(count))
        samples = Table(title="samples")
        for column in ("source", ERROR_CLASS, ERROR_MESSAGE, "value (start)"):
            samples.add_column(column, overflow="fold")
        for row in self.samples:
            samples.add_row(*row)
        return Group(counts, samples)


def inspect_dead_letters(connection: dict[str, str], topic: str, limit: int) -> DeadLetterSummary:
    """Count the letters of ``topic`` by ``error.class`` and keep ``limit`` samples."""
    summary = DeadLetterSummary(topic)
    for message in read_topic(connection, topic):
        error_class = header(message, ERROR_CLASS) or "(no error.class header)"
        summary.by_class[error_class] += 1
        if len(summary.samples) < limit:
            source = (
                f"{header(message, SOURCE_TOPIC)}/{header(message, SOURCE_PARTITION)}"
                f"@{header(message, SOURCE_OFFSET)}"
            )
            value = (message.value() or b"")[:80].decode("utf-8", "replace")
            summary.samples.append(
                (source, error_class, header(message, ERROR_MESSAGE)[:200], value)
            )
    return summary
