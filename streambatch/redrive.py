"""Redriving dead letters to the topics they came from, each letter at most once.

What was redriven is recorded in a state topic next to the dead-letter topic,
``<dead-letter topic>.redriven`` (one partition, compacted), keyed by the
letter's position ``<dead-letter topic>/<partition>@<offset>``. Every
redriven record carries that position in a ``streambatch.redriven-from``
header; the marker holds a digest of the letter's key and value, so a
letter at the same position of a recreated dead-letter topic is a new letter.
A run, in order:

1. reads the state; if an earlier run was killed midway (its *run* record is
   still there), finds which of its letters reached their topics by reading
   them from the end offsets that record holds, and marks those;
2. reads the dead-letter topic and plans the letters to send: not redriven
   yet, of the asked class, and not a letter that itself failed again after a
   redrive (it carries ``streambatch.redriven-from``: its letter was redriven
   once already);
3. records the run (the end offsets of every destination partition), sends the
   letters and waits for every acknowledgement, marks them, and clears the run.

A kill at any point leaves either nothing sent or a run record that the next
run resolves from the destination topics themselves: no letter is sent twice
and none is marked without being sent. Run one redrive of a topic at a time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import NewTopic

from connectors.dead_letter_headers import ERROR_CLASS, ERROR_HEADER_NAMES, SOURCE_TOPIC
from connectors.kafka_clients import (
    TopicUnavailable,
    describe_topic,
    end_offsets,
    kafka_error_text,
    new_admin,
    new_producer,
)
from foundation.errors import StreambatchError
from foundation.failpoints import failpoint
from streambatch.dead_letter_tools import (
    header,
    header_pairs,
    iter_topic,
    read_topic,
)

__all__ = [
    "REDRIVEN_FROM_HEADER",
    "STATE_TOPIC_SUFFIX",
    "PlannedLetter",
    "RedriveReport",
    "redrive_dead_letters",
]

REDRIVEN_FROM_HEADER = "streambatch.redriven-from"
STATE_TOPIC_SUFFIX = ".redriven"
_RUN_KEY = b"run"
_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class PlannedLetter:
    """One dead letter to redrive: where it is, where it goes, why it failed."""

    position: str
    destination: str
    error_class: str
    digest: str


@dataclass
class RedriveReport:
    """What a redrive sent (or, with ``dry_run``, would send) and what it skipped."""

    dead_letter_topic: str
    dry_run: bool
    letters: list[PlannedLetter] = field(default_factory=list)
    already_redriven: int = 0
    failed_again: int = 0
    other_class: int = 0
    recovered: int = 0

    @property
    def sent(self) -> int:
        """Letters sent by this run (0 on a dry run)."""
        return 0 if self.dry_run else len(self.letters)


@dataclass
class _State:
    # Position -> digest of the letter redriven from there.
    redriven: dict[str, str] = field(default_factory=dict)
    # Destination topic -> partition -> end offset before an unfinished run sent.
    unfinished_run: dict[str, dict[int, int]] | None = None


def redrive_dead_letters(
    connection: dict[str, str],
    dead_letter_topic: str,
    source_topic: str | None,
    error_class: str | None,
    *,
    dry_run: bool = False,
) -> RedriveReport:
    """Send each dead letter not redriven yet back to its topic, at most once ever.

    Key, value and headers are the original ones (the error and handler
    headers dropped) plus ``streambatch.redriven-from``. With ``source_topic``
    None each letter goes back to the topic its ``source.topic`` header names
    (a queue worker's letters come from several). With ``dry_run`` nothing is
    written anywhere: the report says what would be sent.

    Raises:
        StreambatchError: a topic is missing, a letter names no topic to go
            to, or a write was not acknowledged (nothing is marked then).
    """
    state_topic = dead_letter_topic + STATE_TOPIC_SUFFIX
    describe_topic(connection, dead_letter_topic)  # absent: one clear error, before any write
    if not dry_run:
        _ensure_state_topic(connection, state_topic)
    state = _read_state(connection, state_topic) if _exists(connection, state_topic) else _State()
    recovered: dict[str, str] = {}
    if state.unfinished_run is not None:
        recovered = _delivered_since(connection, dead_letter_topic, state.unfinished_run)
    report = RedriveReport(dead_letter_topic, dry_run, recovered=len(recovered))
    messages = _plan(connection, report, source_topic, error_class, state.redriven | recovered)
    if dry_run:
        return report
    with _StateWriter(connection, state_topic) as writer:
        if state.unfinished_run is not None:
            writer.mark(recovered)
            writer.clear_run()
        if not messages:
            return report
        destinations = {letter.destination for letter in report.letters}
        writer.start_run(end_offsets(connection, destinations, group_id="streambatch-redrive"))
        _send(connection, report, messages)
        failpoint("redrive_before_marks")
        writer.mark({letter.position: letter.digest for letter in report.letters})
        writer.clear_run()
    return report


def _plan(
    connection: dict[str, str],
    report: RedriveReport,
    source_topic: str | None,
    error_class: str | None,
    redriven: Mapping[str, str],
) -> list[Message]:
    """Fill ``report`` with the letters to send; their messages, in the same order."""
    topic = report.dead_letter_topic
    messages: list[Message] = []
    for message in read_topic(connection, topic):
        position = f"{topic}/{message.partition()}@{message.offset()}"
        digest = _digest(message)
        if redriven.get(position) == digest:
            report.already_redriven += 1
            continue
        if header(message, REDRIVEN_FROM_HEADER):
            report.failed_again += 1
            continue
        letter_class = header(message, ERROR_CLASS)
        if error_class is not None and letter_class != error_class:
            report.other_class += 1
            continue
        destination = source_topic or header(message, SOURCE_TOPIC)
        if not destination:
            raise StreambatchError(
                f"{position}: no source.topic header; pass the topic to send it to"
            )
        report.letters.append(PlannedLetter(position, destination, letter_class, digest))
        messages.append(message)
    return messages


def _send(connection: dict[str, str], report: RedriveReport, messages: list[Message]) -> None:
    """Produce every planned letter and wait for all acknowledgements."""
    producer = new_producer(connection, {"enable.idempotence": "true", "acks": "all"})
    failures: list[str] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error.str())

    for letter, message in zip(report.letters, messages, strict=True):
        headers = [(k, v) for k, v in header_pairs(message) if k not in ERROR_HEADER_NAMES]
        headers.append((REDRIVEN_FROM_HEADER, letter.position.encode()))
        producer.produce(
            letter.destination,
            value=message.value(),
            key=message.key(),
            headers=headers,
            on_delivery=on_delivery,
        )
        producer.poll(0)
        failpoint("during_redrive")
    remaining = producer.flush(_TIMEOUT_SECONDS)
    if remaining or failures:
        raise StreambatchError(
            f"redrive from {report.dead_letter_topic}: {len(failures) or remaining} of "
            f"{len(messages)} not delivered ({failures[0] if failures else 'timed out'}); "
            "run it again: letters that arrived are found and not sent twice"
        )


def _ensure_state_topic(connection: Mapping[str, str], topic: str) -> None:
    admin = new_admin(connection)
    wanted = NewTopic(topic, num_partitions=1, config={"cleanup.policy": "compact"})
    for future in admin.create_topics([wanted], operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not (
                isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
            ):
                raise StreambatchError(
                    f"cannot create topic {topic!r}: {kafka_error_text(exc)}"
                ) from exc


def _exists(connection: Mapping[str, str], topic: str) -> bool:
    """Whether ``topic`` exists (a dry run before any redrive finds no state topic)."""
    try:
        describe_topic(connection, topic)
    except TopicUnavailable:
        return False
    return True


def _read_state(connection: dict[str, str], topic: str) -> _State:
    """Letters redriven so far and the unfinished run, if any."""
    state = _State()
    for record in iter_topic(connection, topic):
        key = record.key() or b""
        value = record.value()
        if key == _RUN_KEY:
            state.unfinished_run = None if value is None else _decode_run(value)
        else:
            state.redriven[key.decode()] = (value or b"").decode()
    return state


def _decode_run(value: bytes) -> dict[str, dict[int, int]]:
    document: dict[str, dict[str, int]] = json.loads(value)
    return {
        topic: {int(partition): offset for partition, offset in offsets.items()}
        for topic, offsets in document.items()
    }


def _delivered_since(
    connection: dict[str, str], dead_letter_topic: str, since: Mapping[str, Mapping[int, int]]
) -> dict[str, str]:
    """Letters of ``dead_letter_topic`` found in the destinations after ``since``.

    Position -> digest, as the state topic records them.
    """
    prefix = f"{dead_letter_topic}/"
    found: dict[str, str] = {}
    for topic, offsets in since.items():
        for message in iter_topic(connection, topic, offsets):
            position = header(message, REDRIVEN_FROM_HEADER)
            if position.startswith(prefix):
                found[position] = _digest(message)
    return found


def _digest(message: Message) -> str:
    """A digest of a record's key and value (a redriven copy has its letter's)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (message.key(), message.value()):
        digest.update(b"\0" if part is None else b"\1" + len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


class _StateWriter:
    """Writes to the state topic and waits for each write to be acknowledged."""

    def __init__(self, connection: dict[str, str], topic: str) -> None:
        self._topic = topic
        self._producer = new_producer(connection, {"enable.idempotence": "true", "acks": "all"})

    def __enter__(self) -> _StateWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._producer.flush(_TIMEOUT_SECONDS)

    def start_run(self, end_offsets: Mapping[str, Mapping[int, int]]) -> None:
        self._write([(_RUN_KEY, json.dumps(end_offsets).encode())])

    def clear_run(self) -> None:
        self._write([(_RUN_KEY, None)])

    def mark(self, letters: Mapping[str, str]) -> None:
        """Record ``letters`` (position -> digest) as redriven."""
        self._write([(position.encode(), digest.encode()) for position, digest in letters.items()])

    def _write(self, records: list[tuple[bytes, bytes | None]]) -> None:
        failures: list[str] = []

        def on_delivery(error: KafkaError | None, _message: Any) -> None:
            if error is not None:
                failures.append(error.str())

        for key, value in records:
            self._producer.produce(self._topic, key=key, value=value, on_delivery=on_delivery)
            self._producer.poll(0)
        remaining = self._producer.flush(_TIMEOUT_SECONDS)
        if remaining or failures:
            raise StreambatchError(
                f"cannot record the redrive in {self._topic}: "
                f"{failures[0] if failures else f'{remaining} writes not acknowledged'}"
            )
