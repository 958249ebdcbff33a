"""Dead-letter writer: the original record plus six error headers, or the flow stops.

Headers added to the original ones (the README's "What you get"): ``error.stage``,
``error.class``, ``error.message``, ``source.topic``, ``source.partition``,
``source.offset``. Delivery is acknowledged (``acks=all``, idempotent
producer) before the lake fence moves past the record: at least once into the
dead-letter topic, never lost.

A record too large to be a message of its own (over the producer's limit, or
refused by the broker as too large) is still dead-lettered: its value (and,
if it must, its key and original headers) is cut to fit, the headers
``original.size`` and ``original.sha256`` (``original.key.*`` for the key)
describe what was cut, and ``error.message`` says so. Only what no record
explains (the topic unwritable, the broker gone for good) stops the flow.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Message

from connectors.dead_letter_headers import (
    ERROR_CLASS,
    ERROR_MESSAGE,
    ERROR_STAGE,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
)
from connectors.kafka_clients import new_producer
from connectors.records import DeadLetter
from foundation.errors import DeadLetterWriteError
from foundation.failpoints import failpoint
from foundation.metrics import BROKER_CONNECTED, KAFKA_ERRORS

__all__ = ["MAX_MESSAGE_BYTES", "DeadLetterWriter", "dead_letter_headers", "fitted"]

_FLUSH_SECONDS = 10.0
_METADATA_SECONDS = 5.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The dead-letter producer's ``message.max.bytes``."""
# Room for the record batch framing and the error headers, under any limit.
_HEADROOM_BYTES = 64 * 1024
# When the broker refuses a letter as too large (its own or the topic's limit,
# 1 MB by default on Apache Kafka), it is cut to these sizes in turn.
_SMALLER_LIMITS = (1024 * 1024, 128 * 1024)
log = logging.getLogger(__name__)


def _size(data: str | bytes | None) -> int:
    if data is None:
        return 0
    return len(data.encode("utf-8", "replace") if isinstance(data, str) else data)


def fitted(letter: DeadLetter, max_bytes: int) -> DeadLetter:
    """``letter`` as it is if it fits a message of ``max_bytes``, else cut to fit.

    Cut in this order, each only if it must be: original headers larger than a
    quarter of the room are dropped, a key larger than a quarter is cut to a
    quarter, the value is cut to what is left. Each cut part gets its size
    (and, for key and value, its SHA-256) in ``original.*`` headers, and the
    error message ends by saying what was cut.
    """
    room = max_bytes - _HEADROOM_BYTES
    key, value, headers = letter.key or b"", letter.value or b"", list(letter.headers or [])
    header_bytes = sum(_size(name) + _size(data) for name, data in headers)
    if len(key) + len(value) + header_bytes <= room:
        return letter
    notes: list[str] = []
    added: list[tuple[str, str | bytes | None]] = []
    if header_bytes > room // 4:
        added.append(("original.headers.size", str(header_bytes).encode()))
        notes.append(f"original headers ({header_bytes} bytes) dropped")
        headers, header_bytes = [], 0
    if len(key) > room // 4:
        added += _described("original.key", key)
        notes.append(f"key cut from {len(key)} to {room // 4} bytes")
        key = key[: room // 4]
    keep = max(0, room - len(key) - header_bytes)
    if len(value) > keep:
        added += _described("original", value)
        notes.append(f"value cut from {len(value)} to {keep} bytes")
        value = value[:keep]
    message = f"{letter.error_message}; dead letter truncated: {', '.join(notes)}"
    return dataclasses.replace(
        letter,
        key=key if letter.key is not None else None,
        value=value if letter.value is not None else None,
        headers=[*headers, *added],
        error_message=message,
    )


def _described(prefix: str, data: bytes) -> list[tuple[str, str | bytes | None]]:
    digest = hashlib.sha256(data).hexdigest()
    return [(f"{prefix}.size", str(len(data)).encode()), (f"{prefix}.sha256", digest.encode())]


def dead_letter_headers(
    letter: DeadLetter, source_topic: str, source_partition: int
) -> list[tuple[str, str | bytes | None]]:
    """The original headers followed by the six error headers."""
    headers = list(letter.headers or [])
    headers += [
        (ERROR_STAGE, letter.stage.encode()),
        (ERROR_CLASS, letter.error_class.encode()),
        (ERROR_MESSAGE, letter.error_message.encode("utf-8", "replace")),
        (SOURCE_TOPIC, source_topic.encode()),
        (SOURCE_PARTITION, str(source_partition).encode()),
        (SOURCE_OFFSET, str(letter.offset).encode()),
    ]
    return headers


class DeadLetterWriter:
    """Writes dead letters to ``<topic>.dlq`` and waits for every acknowledgement.

    Guarantee: :meth:`write` returns only when every letter is acknowledged by
    the broker; otherwise it raises :class:`DeadLetterWriteError`: at once
    for a delivery error or a topic the broker says does not exist, after
    ``max_wait_seconds`` of waiting for a broker that does not answer.
    """

    def __init__(
        self,
        producer_config: dict[str, str],
        stream: str,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_wait_seconds: float = 600.0,
    ) -> None:
        self._stream = stream
        self._max_bytes = max_message_bytes
        self._max_wait_seconds = max_wait_seconds
        config: dict[str, object] = {
            **producer_config,
            "enable.idempotence": "true",
            "acks": "all",
            "linger.ms": "5",
            "message.max.bytes": str(max_message_bytes),
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

    def _check_topic_exists(self, topic: str) -> None:
        """Raise at once if the broker says ``topic`` does not exist (waiting cannot help)."""
        try:
            listed = self._producer.list_topics(topic, timeout=_METADATA_SECONDS)
            described = listed.topics.get(topic)
        except KafkaException:
            return  # the broker is away: keep waiting
        error = described.error if described is not None else None
        if described is None or (
            error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            raise DeadLetterWriteError(
                f"dead-letter topic {topic} does not exist; stopping rather than losing records"
            )

    def write(
        self,
        letters: Sequence[DeadLetter],
        source_topic: str,
        source_partition: int,
        topic: str | None = None,
    ) -> None:
        """Produce ``letters`` to ``topic`` (default ``<source_topic>.dlq``), flush; fail closed.

        A letter too large for a message is cut to fit (see :func:`fitted`),
        first to the producer's limit, then, if the broker refuses it as too
        large, to smaller sizes in turn.
        """
        if not letters:
            return
        topic = topic or f"{source_topic}.dlq"
        pending = list(letters)
        for limit in (self._max_bytes, *(s for s in _SMALLER_LIMITS if s < self._max_bytes)):
            pending = self._write(pending, limit, source_topic, source_partition, topic)
            if not pending:
                return
        raise DeadLetterWriteError(
            f"dead-letter write to {topic} failed: the broker refuses {len(pending)} letters "
            f"as too large even cut to {_SMALLER_LIMITS[-1]} bytes; stopping rather than "
            "losing records"
        )

    def _write(
        self,
        letters: Sequence[DeadLetter],
        limit: int,
        source_topic: str,
        source_partition: int,
        topic: str,
    ) -> list[DeadLetter]:
        """Produce ``letters`` fitted to ``limit`` and flush; the ones the broker refused
        as too large are returned (uncut); any other failure raises."""
        failures: list[str] = []
        too_large: list[DeadLetter] = []

        def on_delivery(
            error: KafkaError | None, message: Message, original: DeadLetter | None = None
        ) -> None:
            if error is None:
                return
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE and original is not None:
                too_large.append(original)
            else:
                failures.append(error.str())

        for original in letters:
            letter = fitted(original, limit)
            headers = dead_letter_headers(letter, source_topic, source_partition)
            while True:
                try:
                    self._producer.produce(
                        topic,
                        value=letter.value,
                        key=letter.key,
                        headers=headers,
                        on_delivery=functools.partial(on_delivery, original=original),
                    )
                    failpoint("during_dead_letter_write")
                    break
                except BufferError:
                    self._producer.poll(0.1)
                except KafkaException as exc:
                    if exc.args and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                        too_large.append(original)
                        break
                    raise DeadLetterWriteError(
                        f"cannot write dead letter of {source_topic}/{source_partition}"
                        f"@{letter.offset} to {topic}: {exc}"
                    ) from exc
                except Exception as exc:
                    raise DeadLetterWriteError(
                        f"cannot write dead letter of {source_topic}/{source_partition}"
                        f"@{letter.offset} to {topic}: {exc}"
                    ) from exc
        deadline = time.monotonic() + self._max_wait_seconds
        remaining = self._producer.flush(min(_FLUSH_SECONDS, self._max_wait_seconds))
        connected = BROKER_CONNECTED.labels(self._stream, f"{source_topic}/{source_partition}")
        while remaining and not failures:
            # The worker waits here (fail closed), for a while: a broker that
            # is away may come back, a topic that does not exist will not.
            self._check_topic_exists(topic)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            connected.set(0)
            log.warning(
                "waiting for the broker to acknowledge %d dead letters to %s", remaining, topic
            )
            remaining = self._producer.flush(min(_FLUSH_SECONDS, left))
        connected.set(1)
        if remaining or failures:
            detail = (
                failures[0]
                if failures
                else (f"{remaining} not acknowledged within {self._max_wait_seconds:g} s")
            )
            raise DeadLetterWriteError(
                f"dead-letter write to {topic} failed ({len(failures) or remaining} of "
                f"{len(letters)}): {detail}; stopping rather than losing records"
            )
        if too_large:
            log.warning(
                "%d dead letters to %s too large for %d bytes; cutting them further",
                len(too_large),
                topic,
                limit,
            )
        return sorted(too_large, key=lambda letter: letter.offset)
