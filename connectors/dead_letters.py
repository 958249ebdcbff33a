"""Dead-letter writer: the original record plus six error headers, or the flow stops.

Headers added to the original ones (the README's "What you get"): ``error.stage``,
``error.class``, ``error.message``, ``source.topic``, ``source.partition``,
``source.offset``. Delivery is acknowledged (``acks=all``, idempotent
producer) before the lake fence moves past the record: at least once into the
dead-letter topic, never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message

from connectors.kafka_clients import new_producer
from flows.records import DeadLetter
from streambatch.errors import DeadLetterWriteError
from streambatch.failpoints import failpoint
from streambatch.metrics import BROKER_CONNECTED, KAFKA_ERRORS

__all__ = ["DeadLetterWriter", "dead_letter_headers"]

_FLUSH_SECONDS = 10.0
log = logging.getLogger(__name__)


def dead_letter_headers(
    letter: DeadLetter, source_topic: str, source_partition: int
) -> list[tuple[str, str | bytes | None]]:
    """The original headers followed by the six error headers."""
    headers = list(letter.headers or [])
    headers += [
        ("error.stage", letter.stage.encode()),
        ("error.class", letter.error_class.encode()),
        ("error.message", letter.error_message.encode("utf-8", "replace")),
        ("source.topic", source_topic.encode()),
        ("source.partition", str(source_partition).encode()),
        ("source.offset", str(letter.offset).encode()),
    ]
    return headers


class DeadLetterWriter:
    """Writes dead letters to ``<topic>.dlq`` and waits for every acknowledgement.

    Guarantee: :meth:`write` returns only when every letter is acknowledged by
    the broker; otherwise it raises :class:`DeadLetterWriteError`.
    """

    def __init__(self, producer_config: dict[str, str], stream: str) -> None:
        self._stream = stream
        config: dict[str, object] = {
            **producer_config,
            "enable.idempotence": "true",
            "acks": "all",
            "linger.ms": "5",
            "message.max.bytes": str(16 * 1024 * 1024),
            # No delivery timeout: through a broker outage the flow waits (and
            # says so) instead of failing; permanent errors still surface.
            "message.timeout.ms": "0",
            # Served during flush(): an outage shows up while the flow waits.
            "error_cb": self._on_error,
        }
        self._producer = new_producer(config)

    def close(self) -> None:
        """Flush what is left and release the client (the writer is unusable afterwards)."""
        self._producer.flush(_FLUSH_SECONDS)
        self._producer.close()

    def _on_error(self, error: KafkaError) -> None:
        KAFKA_ERRORS.labels(self._stream, error.name()).inc()
        log.warning("dead-letter producer: %s", error.str())

    def write(
        self,
        letters: Sequence[DeadLetter],
        source_topic: str,
        source_partition: int,
        topic: str | None = None,
    ) -> None:
        """Produce ``letters`` to ``topic`` (default ``<source_topic>.dlq``), flush; fail closed."""
        if not letters:
            return
        topic = topic or f"{source_topic}.dlq"
        failures: list[str] = []

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(error.str())

        for letter in letters:
            headers = dead_letter_headers(letter, source_topic, source_partition)
            while True:
                try:
                    self._producer.produce(
                        topic,
                        value=letter.value,
                        key=letter.key,
                        headers=headers,
                        on_delivery=on_delivery,
                    )
                    failpoint("during_dead_letter_write")
                    break
                except BufferError:
                    self._producer.poll(0.1)
                except Exception as exc:
                    raise DeadLetterWriteError(
                        f"cannot write dead letter of {source_topic}/{source_partition}"
                        f"@{letter.offset} to {topic}: {exc}"
                    ) from exc
        remaining = self._producer.flush(_FLUSH_SECONDS)
        connected = BROKER_CONNECTED.labels(self._stream, f"{source_topic}/{source_partition}")
        while remaining and not failures:
            # The worker waits here (fail closed); say so in the log and the metrics.
            connected.set(0)
            log.warning(
                "waiting for the broker to acknowledge %d dead letters to %s", remaining, topic
            )
            remaining = self._producer.flush(_FLUSH_SECONDS)
        connected.set(1)
        if remaining or failures:
            detail = failures[0] if failures else f"{remaining} not acknowledged in time"
            raise DeadLetterWriteError(
                f"dead-letter write to {topic} failed ({len(failures) or remaining} of "
                f"{len(letters)}): {detail}; stopping rather than losing records"
            )
