"""Produce generated records to Kafka with an idempotent producer and count the outcome."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable, Sized
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connectors.kafka_clients import new_producer
from foundation.errors import TransientError
from generator.progress import LineProgress, Progress, RichProgress
from generator.records import GeneratedRecord

__all__ = ["PRODUCER_DEFAULTS", "ProduceReport", "ProduceTimeoutError", "produce_records"]

PRODUCER_DEFAULTS: Final[dict[str, str]] = {
    "enable.idempotence": "true",
    "linger.ms": "20",
    "compression.type": "lz4",
}
"""librdkafka settings of :func:`produce_records`; the caller's config overrides them."""


@dataclass(frozen=True, slots=True)
class ProduceReport:
    """Outcome of :func:`produce_records`.

    Attributes:
        delivered: Records the broker acknowledged.
        failed: Records that were refused, at produce time or on delivery.
        failures: ``failed`` split by librdkafka error name (``MSG_SIZE_TOO_LARGE``).
        seconds: Wall time from the first produce to the end of the flush.
    """

    delivered: int
    failed: int
    failures: dict[str, int]
    seconds: float


class ProduceTimeoutError(TransientError, RuntimeError):
    """The final flush left records undelivered: the broker is slow or unreachable."""


def produce_records(
    records: Iterable[GeneratedRecord],
    *,
    producer_config: dict[str, str],
    topic: str,
    rate: float | None = None,
    progress: bool | None = None,
    total: int | None = None,
    flush_timeout: timedelta = timedelta(seconds=60),
) -> ProduceReport:
    """Produce records to ``topic`` with an idempotent producer and count the outcome.

    A record the producer refuses (at produce time or on delivery) is counted
    in the report by error name, never raised. A full local queue is waited
    out, not dropped. Neither the config nor its secrets are ever printed.

    Args:
        records: Records to produce, in order.
        producer_config: librdkafka settings (``bootstrap.servers``, security);
            they override :data:`PRODUCER_DEFAULTS`.
        topic: Destination topic.
        rate: Upper bound in records per second; ``None`` for as fast as possible.
        progress: A rich progress bar if ``True``, a plain line on stderr every
            10% if ``False``; ``None`` picks the bar when stderr is a terminal.
        total: Number of records, for the progress; taken from ``len(records)``
            when ``None`` and ``records`` has a length.
        flush_timeout: How long the final flush may wait for acknowledgements.

    Raises:
        ValueError: If ``rate`` is not positive.
        ProduceTimeoutError: (a ``RuntimeError``) if records are still
            undelivered when the flush times out.
    """
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 records/s, got {rate}")
    if total is None and isinstance(records, Sized):
        total = len(records)
    use_bar = sys.stderr.isatty() if progress is None else progress
    tally = _DeliveryTally()
    producer = new_producer({**PRODUCER_DEFAULTS, **producer_config})
    produced = 0
    started = time.monotonic()
    # The progress counts acknowledged records (delivered or refused by the
    # broker), not records handed to the client's queue.
    with RichProgress(total) if use_bar else LineProgress(total) as bar:
        for record in records:
            if rate is not None:
                _wait_until(producer, started + produced / rate)
            _produce_one(producer, topic, record, tally)
            produced += 1
            producer.poll(0)
            bar.update(tally.delivered + tally.failed)
        remaining = _flush_with_progress(producer, flush_timeout, bar, tally)
        bar.update(tally.delivered + tally.failed, force=True)
    seconds = time.monotonic() - started
    if remaining > 0:
        message = (
            f"{remaining} of {produced} records to topic {topic!r} still undelivered after "
            f"a {flush_timeout.total_seconds():g} s flush ({tally.delivered} delivered, "
            f"{tally.failed} failed); is the broker reachable?"
        )
        raise ProduceTimeoutError(message)
    return ProduceReport(
        delivered=tally.delivered,
        failed=tally.failed,
        failures=dict(tally.failures),
        seconds=seconds,
    )


def _flush_with_progress(
    producer: Producer, timeout: timedelta, bar: Progress, tally: _DeliveryTally
) -> int:
    """Wait up to ``timeout`` for acknowledgements, moving ``bar``; returns how many are left."""
    deadline = time.monotonic() + timeout.total_seconds()
    remaining = producer.flush(0)
    while remaining > 0 and time.monotonic() < deadline:
        remaining = producer.flush(min(0.2, max(0.0, deadline - time.monotonic())))
        bar.update(tally.delivered + tally.failed)
    return remaining


class _DeliveryTally:
    """Counts acknowledgements; called from the producer's poll on this thread."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failures: Counter[str] = Counter()

    @property
    def failed(self) -> int:
        return self.failures.total()

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failures[error.name()] += 1


def _produce_one(
    producer: Producer, topic: str, record: GeneratedRecord, tally: _DeliveryTally
) -> None:
    while True:
        try:
            producer.produce(
                topic, value=record.value, key=record.key, on_delivery=tally.on_delivery
            )
        except BufferError:
            # Local queue full: serve delivery reports to make room, then retry.
            producer.poll(0.1)
            continue
        except KafkaException as exc:
            # Refused before it left (e.g. MSG_SIZE_TOO_LARGE): count it, keep going.
            tally.failures[_error_name(exc)] += 1
        return


def _error_name(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.name() if isinstance(error, KafkaError) else type(exc).__name__


def _wait_until(producer: Producer, due: float) -> None:
    # Poll rather than sleep so delivery reports keep flowing while throttled.
    while (wait := due - time.monotonic()) > 0:
        producer.poll(min(wait, 0.1))
