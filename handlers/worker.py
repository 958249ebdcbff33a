"""A queue worker: one handler as a Kafka consumer-group member.

Guarantees:

* At least once: a message's offset is stored for commit only after its
  handler transaction committed or its dead letter was acknowledged. A crash
  before that redelivers it; the inbox (same transaction as the handler's
  state) makes the second delivery a no-op.
* Transient failures (``TransientError`` and unexpected exceptions) are
  retried with exponential backoff and full jitter, up to the worker's
  ``attempts``; then the message goes to the worker's dead-letter topic.
  ``TerminalError`` (an invalid event, out of stock) goes there at once.
* A dead letter carries the original key, value and headers plus
  ``error.stage``, ``error.class``, ``error.message``, ``source.topic``,
  ``source.partition``, ``source.offset``, ``handler.name`` and
  ``handler.attempts``. If it cannot be written, the worker stops: nothing is
  skipped silently.

Retries block the partition they came from (order is kept per key).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from random import Random
from typing import Any

import orjson
from confluent_kafka import Message, TopicPartition

from connectors.dead_letter_headers import HANDLER_ATTEMPTS, HANDLER_NAME
from connectors.dead_letters import DeadLetterWriter
from flows.records import DeadLetter
from handlers.config import WorkerPlan
from handlers.kafka_io import Activity, ConsumerLoop, ensure_topics, group_consumer, is_record
from handlers.outbox import OutboxRelay
from handlers.runtime import Handler, HandlerContext, InvalidEventError
from handlers.store import Store
from streambatch.clock import utc_now
from streambatch.errors import StreambatchError, TerminalError
from streambatch.failpoints import deliveries, failpoint
from streambatch.metrics import HANDLER_MESSAGES

__all__ = ["QueueWorker", "WorkerCounts", "build_worker", "decode_event"]

log = logging.getLogger(__name__)
_POLL_SECONDS = 0.5
_MAX_EVENT_ID = 128


@dataclass
class WorkerCounts:
    """What a worker did since it started."""

    processed: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dead_letter_classes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for logs and ``--json`` output."""
        return {
            "processed": self.processed,
            "duplicates": self.duplicates,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "dead_letter_classes": dict(self.dead_letter_classes),
        }


def decode_event(value: bytes | None) -> dict[str, Any]:
    """The message value as an event dict with a usable ``event_id``.

    Raises:
        InvalidEventError: naming what is wrong (empty, not JSON, not an object,
            no event id).
    """
    if not value:
        raise InvalidEventError("empty message value")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError(f"not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise InvalidEventError(f"not a JSON object but {type(event).__name__}")
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= _MAX_EVENT_ID:
        raise InvalidEventError("event_id missing or not a string of 1..128 characters")
    return event


class _Stopping(Exception):
    """Stop requested while a message was waiting for a retry: leave it uncommitted."""


class QueueWorker(ConsumerLoop):
    """Runs ``handler`` for every message of ``plan.topics`` (see the module guarantees)."""

    def __init__(
        self,
        plan: WorkerPlan,
        handler: Handler,
        store: Store,
        connection: Mapping[str, str],
        relay: OutboxRelay,
        *,
        now: Callable[[], datetime] = utc_now,
        rng: Random | None = None,
    ) -> None:
        self.plan = plan
        self.counts = WorkerCounts()
        self._handler = handler
        self._store = store
        self._connection = dict(connection)
        self._relay = relay
        self._now = now
        self._rng = rng or Random()
        self._activity = Activity()
        self._deliveries = deliveries()
        self._dead_letters = DeadLetterWriter(self._connection, f"worker:{plan.name}")

    def prepare(self) -> None:
        """Create the handler's tables and the worker's topics (existing ones are fine)."""
        self._store.migrate(list(self._handler.ddl))
        ensure_topics(self._connection, [*self.plan.topics, self.plan.dead_letter_topic])

    def run(self, until_idle_seconds: float | None = None) -> WorkerCounts:
        """Consume until :meth:`stop`, or until idle that long after the first assignment."""
        consumer = group_consumer(
            self._connection,
            self.plan.group_id,
            f"streambatch-worker-{self.plan.name}",
            start_from=self.plan.start_from,
            max_poll_interval_ms=self._max_poll_interval_ms(),
        )
        consumer.subscribe(
            list(self.plan.topics),
            on_assign=lambda _c, partitions: self._on_assign(partitions),
        )
        try:
            while not self._activity.stopping.is_set():
                if self._relay.failure is not None:
                    raise StreambatchError(f"outbox relay stopped: {self._relay.failure}")
                message = consumer.poll(_POLL_SECONDS)
                if message is None:
                    if self._activity.idle_for(until_idle_seconds):
                        break
                    continue
                if not is_record(message, f"worker {self.plan.name}"):
                    continue
                try:
                    with self._activity.busy():
                        self._handle(message)
                except _Stopping:
                    break
                failpoint("handler_after_commit")
                consumer.store_offsets(message=message)
        finally:
            consumer.close()  # commits the stored offsets
            self._dead_letters.close()
        return self.counts

    def _on_assign(self, partitions: Sequence[TopicPartition]) -> None:
        log.info(
            "worker %s assigned %s",
            self.plan.name,
            ", ".join(f"{p.topic}/{p.partition}" for p in partitions) or "nothing",
        )
        self._activity.assigned.set()

    def _max_poll_interval_ms(self) -> int:
        # A message may wait through every backoff: never let the group evict us for that.
        waits = sum(
            self.plan.retry.ceiling(n).total_seconds() for n in range(1, self.plan.retry.attempts)
        )
        return int(max(300.0, waits + 120.0) * 1000)

    def _handle(self, message: Message) -> None:
        try:
            event = decode_event(message.value())
        except InvalidEventError as exc:
            self._dead_letter(message, exc, attempts=1)
            return
        for _ in range(self._deliveries):
            self._handle_event(message, event)

    def _handle_event(self, message: Message, event: Mapping[str, Any]) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                first_time = self._apply(event)
            except TerminalError as exc:
                self._dead_letter(message, exc, attempts=attempt)
                return
            except Exception as exc:
                if not self.plan.retry.should_retry(attempt):
                    self._dead_letter(message, exc, attempts=attempt)
                    return
                delay = self.plan.retry.backoff(attempt, self._rng)
                self.counts.retried += 1
                HANDLER_MESSAGES.labels(self.plan.name, "retried").inc()
                log.info(
                    "worker %s: %s on %s, attempt %d of %d; retrying in %.2f s",
                    self.plan.name,
                    type(exc).__name__,
                    event["event_id"],
                    attempt,
                    self.plan.retry.attempts,
                    delay.total_seconds(),
                )
                if self._activity.stopping.wait(delay.total_seconds()):
                    raise _Stopping from None
                continue
            outcome = "processed" if first_time else "duplicate"
            if first_time:
                self.counts.processed += 1
                self._relay.nudge()
            else:
                self.counts.duplicates += 1
            HANDLER_MESSAGES.labels(self.plan.name, outcome).inc()
            return

    def _apply(self, event: Mapping[str, Any]) -> bool:
        """One transaction: inbox claim, handler state, outbox. False if seen before."""
        with self._store.transaction() as transaction:
            if not transaction.claim(self.plan.name, str(event["event_id"])):
                return False
            context = HandlerContext(
                worker=self.plan.name,
                cause=event,
                transaction=transaction,
                publish_topic=self.plan.publish_topic,
                now=self._now,
            )
            self._handler.handle(event, context)
        return True

    def _dead_letter(self, message: Message, exc: BaseException, *, attempts: int) -> None:
        error_class = type(exc).__name__
        headers: list[tuple[str, str | bytes | None]] = [
            (str(pair[0]), pair[1]) for pair in message.headers() or []
        ]
        headers += [
            (HANDLER_NAME, self.plan.name.encode()),
            (HANDLER_ATTEMPTS, str(attempts).encode()),
        ]
        letter = DeadLetter(
            key=message.key(),
            value=message.value(),
            headers=headers,
            offset=int(message.offset() or 0),
            stage="handler",
            error_class=error_class,
            error_message=str(exc)[:2000],
        )
        self._dead_letters.write(
            [letter],
            str(message.topic()),
            int(message.partition() or 0),
            topic=self.plan.dead_letter_topic,
        )
        self.counts.dead_lettered += 1
        classes = self.counts.dead_letter_classes
        classes[error_class] = classes.get(error_class, 0) + 1
        HANDLER_MESSAGES.labels(self.plan.name, "dead_lettered").inc()
        log.warning(
            "worker %s: dead-lettered %s/%s@%s after %d attempt(s): %s: %s",
            self.plan.name,
            message.topic(),
            message.partition(),
            message.offset(),
            attempts,
            error_class,
            exc,
        )


def build_worker(
    plan: WorkerPlan,
    store: Store,
    connection: Mapping[str, str],
    relay: OutboxRelay,
    **kwargs: Any,
) -> QueueWorker:
    """Resolve the plan's handler and build its worker."""
    from handlers.runtime import resolve_handler

    return QueueWorker(
        plan, resolve_handler(plan.handler, plan.options), store, connection, relay, **kwargs
    )
