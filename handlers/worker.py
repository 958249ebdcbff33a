"""A queue worker: one handler as a Kafka consumer-group member, a batch at a time.

Guarantees:

* At least once: the offsets of a batch are stored for commit only after its
  store transaction committed and its retries and dead letters were
  acknowledged. A crash before that redelivers the batch; the inbox (same
  transaction as the handler's state) makes a second delivery a no-op.
* One store transaction per consumed batch on SQLite (one writer at a time,
  so a long transaction blocks nobody it would not block anyway); one per
  event on PostgreSQL, where a batch would hold the row locks of many orders
  and workers would deadlock on them. Each event runs in a savepoint, so a
  failing event leaves no trace and does not fail the others.
* Non-blocking retries: a transient failure (``TransientError`` or an
  unexpected exception) sends the message to the retry topic of its next
  delay (:class:`~handlers.retry.RetryTopics`) and the worker goes on with
  the messages behind it. The worker also consumes its retry topics: when the
  head record of a retry partition is not due yet, that partition is paused
  and rewound until it is. After the last attempt the message goes to the
  worker's dead-letter topic; ``TerminalError`` (an invalid event) goes there
  at once. A store that cannot commit at all (locked, down) is retried in
  place: moving messages aside would not help.
* Order: the messages of one partition are handled in offset order on their
  first delivery; a message that is retried is handled after the ones
  behind it (ordering is kept per partition for messages that do not fail).
* A dead letter carries the original key, value and headers plus
  ``error.stage``, ``error.class``, ``error.message``, ``source.topic``,
  ``source.partition``, ``source.offset`` (of the original message, also
  after retries), ``handler.name`` and ``handler.attempts``. If it cannot be
  written, the worker stops: nothing is skipped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from random import Random
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from connectors.dead_letter_headers import HANDLER_ATTEMPTS, HANDLER_NAME
from connectors.dead_letters import DeadLetterWriter
from connectors.kafka_clients import new_producer
from connectors.records import DeadLetter
from foundation.clock import utc_now
from foundation.errors import StreambatchError, TerminalError, TransientError
from foundation.failpoints import deliveries, failpoint
from foundation.metrics import HANDLER_MESSAGES
from handlers.config import WorkerPlan
from handlers.kafka_io import (
    Activity,
    ConsumerLoop,
    DeliveryFailures,
    QuietClock,
    ensure_topics,
    group_consumer,
    next_offsets,
    produce_waiting,
    read_records,
    track_assignment,
)
from handlers.outbox import OutboxRelay
from handlers.retry import RetryTopics
from handlers.runtime import Handler, HandlerContext
from handlers.schemas import InvalidEventError, event_schema
from handlers.store import Store, Transaction

__all__ = ["QueueWorker", "WorkerCounts", "build_worker", "decode_event"]

log = logging.getLogger(__name__)
_POLL_SECONDS = 0.2
_BATCH = 500
_MAX_EVENT_ID = 128
_FLUSH_SECONDS = 10.0
# Headers a retry adds; stripped again before the next retry and in dead letters.
_RETRY_ATTEMPT = "retry.attempt"
_RETRY_DUE = "retry.due_ms"
_RETRY_SOURCE = ("retry.source.topic", "retry.source.partition", "retry.source.offset")
_RETRY_ERROR = "retry.error"


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
    """Stop requested while a batch waited for the store: leave it uncommitted."""


def _event_of(delivery: _Delivery) -> dict[str, Any]:
    assert delivery.event is not None  # undecodable ones never reach the store
    return delivery.event


@dataclass
class _Delivery:
    """One consumed message: its event (None if undecodable) and which attempt this is."""

    message: Message
    event: dict[str, Any] | None
    attempt: int
    error: BaseException | None = None


@dataclass
class _BatchOutcome:
    processed: int = 0
    duplicates: int = 0
    failed: list[_Delivery] = field(default_factory=list)


def _headers(message: Message) -> list[tuple[str, str | bytes | None]]:
    return [(str(pair[0]), pair[1]) for pair in message.headers() or []]


def _header(message: Message, name: str) -> bytes | None:
    for key, value in _headers(message):
        if key == name:
            return value if isinstance(value, bytes) else None
    return None


def _original_headers(message: Message) -> list[tuple[str, str | bytes | None]]:
    return [(k, v) for k, v in _headers(message) if not k.startswith("retry.")]


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
        self.name = plan.name
        self.counts = WorkerCounts()
        self._handler = handler
        self._store = store
        self._connection = dict(connection)
        self._relay = relay
        self._now = now
        self._rng = rng or Random()
        self._activity = Activity()
        self._deliveries = deliveries()
        self._publish_schema = event_schema(plan.publish_stream)
        self._retry_topics = RetryTopics(plan.retry_topic_prefix, plan.retry)
        self._retry_topic_names = frozenset(self._retry_topics.topics())
        self._dead_letters = DeadLetterWriter(self._connection, f"worker:{plan.name}")
        self._producer: Producer | None = None
        # Retry partitions paused until their head record is due: epoch ms.
        self._held: dict[tuple[str, int], int] = {}

    def prepare(self) -> None:
        """Create the handler's tables and the worker's topics (existing ones are fine)."""
        self._store.migrate(list(self._handler.ddl))
        ensure_topics(
            self._connection,
            [*self.plan.topics, *self._retry_topic_names, self.plan.dead_letter_topic],
        )

    def run(self, until_idle_seconds: float | None = None) -> WorkerCounts:
        """Consume until :meth:`stop`, or until settled for ``until_idle_seconds``.

        Settled: partitions assigned, every one read to its end, no retry
        waiting, nothing in work (see :attr:`settled`); the clock starts then.
        """
        consumer = group_consumer(
            self._connection,
            self.plan.group_id,
            f"streambatch-worker-{self.plan.name}",
            start_from=self.plan.start_from,
        )
        owner = f"worker {self.plan.name}"
        consumer.subscribe(
            [*self.plan.topics, *sorted(self._retry_topic_names)],
            on_assign=track_assignment(self._activity, owner),
            on_revoke=lambda c, _partitions: self._on_revoke(c),
        )
        quiet = QuietClock()
        try:
            while not self._activity.stopping.is_set():
                if self._relay.failure is not None:
                    raise StreambatchError(f"outbox relay stopped: {self._relay.failure}")
                self._resume_due(consumer)
                messages = consumer.consume(_BATCH, _POLL_SECONDS)
                records = self._hold_early(consumer, read_records(messages, self._activity, owner))
                if records:
                    try:
                        with self._activity.busy():
                            self._handle_batch(records)
                    except _Stopping:
                        break
                    for _ in records:
                        failpoint("handler_after_commit")
                    consumer.store_offsets(offsets=next_offsets(records))
                if (
                    until_idle_seconds is not None
                    and quiet.held_for(self.settled) >= until_idle_seconds
                ):
                    break
        finally:
            consumer.close()  # commits the stored offsets
            self._dead_letters.close()
            if self._producer is not None:
                self._producer.flush(_FLUSH_SECONDS)
        return self.counts

    # --- retry topics: pause a partition until its head record is due -------------

    def _hold_early(self, consumer: Consumer, records: Sequence[Message]) -> list[Message]:
        """The records to handle now; a retry record not due yet pauses its partition there."""
        kept: list[Message] = []
        now_ms = int(self._now().timestamp() * 1000)
        for message in records:
            where = (str(message.topic()), int(message.partition() or 0))
            if where in self._held:
                continue  # fetched before the pause: read again once due
            if where[0] in self._retry_topic_names:
                due = _due_ms(message)
                if due > now_ms:
                    partition = TopicPartition(where[0], where[1], int(message.offset() or 0))
                    consumer.pause([partition])
                    consumer.seek(partition)
                    self._held[where] = due
                    self._activity.wait_on(where, True)
                    continue
            kept.append(message)
        return kept

    def _resume_due(self, consumer: Consumer) -> None:
        if not self._held:
            return
        now_ms = int(self._now().timestamp() * 1000)
        for where, due in list(self._held.items()):
            if due <= now_ms:
                consumer.resume([TopicPartition(where[0], where[1])])
                del self._held[where]
                self._activity.more_to_read([where])
                self._activity.wait_on(where, False)

    def _on_revoke(self, consumer: Consumer) -> None:
        if self._held:
            try:
                consumer.resume([TopicPartition(t, p) for t, p in self._held])
            except Exception as exc:  # the partitions are going anyway
                log.debug("worker %s: resume on revoke: %s", self.plan.name, exc)
        self._held.clear()
        self._activity.revoke()

    # --- one batch: one transaction, then retries and dead letters ----------------

    def _handle_batch(self, records: Sequence[Message]) -> None:
        deliveries: list[_Delivery] = []
        for message in records:
            attempt = self._attempt_of(message)
            try:
                deliveries.append(_Delivery(message, decode_event(message.value()), attempt))
            except InvalidEventError as exc:
                deliveries.append(_Delivery(message, None, attempt, exc))
        outcome = self._commit_batch([d for d in deliveries if d.event is not None])
        if outcome.processed:
            self._relay.nudge()
        self.counts.processed += outcome.processed
        self.counts.duplicates += outcome.duplicates
        HANDLER_MESSAGES.labels(self.plan.name, "processed").inc(outcome.processed)
        HANDLER_MESSAGES.labels(self.plan.name, "duplicate").inc(outcome.duplicates)
        failed = [d for d in deliveries if d.event is None] + outcome.failed
        self._route_failures(failed)

    def _attempt_of(self, message: Message) -> int:
        if str(message.topic()) not in self._retry_topic_names:
            return 1
        raw = _header(message, _RETRY_ATTEMPT)
        try:
            return max(2, int(raw or b"2"))
        except ValueError:
            return 2

    def _commit_batch(self, deliveries: Sequence[_Delivery]) -> _BatchOutcome:
        """Apply the events in as few transactions as the store allows, each retried whole
        while the store cannot commit."""
        outcome = _BatchOutcome()
        size = self._store.events_per_transaction
        for start in range(0, len(deliveries), size):
            part = self._commit_part(deliveries[start : start + size])
            outcome.processed += part.processed
            outcome.duplicates += part.duplicates
            outcome.failed += part.failed
        return outcome

    def _commit_part(self, deliveries: Sequence[_Delivery]) -> _BatchOutcome:
        tries = 0
        while True:
            tries += 1
            try:
                return self._apply_batch(deliveries)
            except TransientError as exc:
                delay = self.plan.retry.backoff(min(tries, 30), self._rng).total_seconds()
                log.warning(
                    "worker %s: store transaction of %d events failed (%s); again in %.2f s",
                    self.plan.name,
                    len(deliveries),
                    exc,
                    delay,
                )
                if self._activity.stopping.wait(delay):
                    raise _Stopping from None

    def _apply_batch(self, deliveries: Sequence[_Delivery]) -> _BatchOutcome:
        """The events in one transaction: one bulk inbox claim, each event in a savepoint.

        A failing event is rolled back to its savepoint and its claim removed,
        so it leaves no trace and the others commit; the handler is called
        once per attempt, never again for a neighbour's failure.
        """
        outcome = _BatchOutcome()
        with self._store.transaction() as transaction:
            ids = [str(_event_of(delivery)["event_id"]) for delivery in deliveries]
            fresh = transaction.claim_many(self.plan.name, ids)
            released: set[str] = set()  # claims taken back after a failure: claim anew
            for delivery, event_id in zip(deliveries, ids, strict=True):
                delivery.error = None
                for _ in range(self._deliveries):
                    claimed = event_id in fresh
                    fresh.discard(event_id)  # a repeat in this batch is a duplicate
                    if not claimed and event_id not in released:
                        outcome.duplicates += 1
                        continue
                    try:
                        with transaction.savepoint():
                            if claimed:
                                self._handle(transaction, _event_of(delivery))
                                first_time = True
                            else:
                                first_time = self._apply(transaction, _event_of(delivery))
                    except Exception as exc:
                        if claimed:
                            transaction.unclaim(self.plan.name, event_id)
                        released.add(event_id)
                        delivery.error = exc
                        outcome.failed.append(delivery)
                        break
                    released.discard(event_id)
                    if first_time:
                        outcome.processed += 1
                    else:
                        outcome.duplicates += 1
        return outcome

    def _apply(self, transaction: Transaction, event: Mapping[str, Any]) -> bool:
        """Inbox claim, handler state, outbox, in a savepoint. False if seen before."""
        if not transaction.claim(self.plan.name, str(event["event_id"])):
            return False
        self._handle(transaction, event)
        return True

    def _handle(self, transaction: Transaction, event: Mapping[str, Any]) -> None:
        context = HandlerContext(
            worker=self.plan.name,
            cause=event,
            transaction=transaction,
            publish_topic=self.plan.publish_topic,
            now=self._now,
            publish_schema=self._publish_schema,
        )
        self._handler.handle(event, context)

    def _route_failures(self, failed: Sequence[_Delivery]) -> None:
        """Each failure to its next retry topic or, after the last attempt, a dead letter."""
        if not failed:
            return
        retries = DeliveryFailures()
        written: list[tuple[str, int]] = []
        for delivery in failed:
            exc = delivery.error
            assert exc is not None
            if isinstance(exc, TerminalError) or not self.plan.retry.should_retry(delivery.attempt):
                self._dead_letter(delivery.message, exc, attempts=delivery.attempt)
            else:
                self._send_to_retry(delivery, exc, retries, written)
        if self._producer is None:
            return
        remaining = self._producer.flush(_FLUSH_SECONDS)
        while remaining and not retries.errors and not self._activity.stopping.is_set():
            log.warning("worker %s: %d retries not acknowledged yet", self.plan.name, remaining)
            remaining = self._producer.flush(_FLUSH_SECONDS)
        if remaining or retries.errors:
            detail = retries.errors[0] if retries.errors else f"{remaining} not acknowledged"
            raise StreambatchError(
                f"worker {self.plan.name}: retries not written ({detail}); offsets not stored"
            )
        # The records just written are ours to read (if we own those partitions).
        self._activity.more_to_read(written)

    def _send_to_retry(
        self,
        delivery: _Delivery,
        exc: BaseException,
        failures: DeliveryFailures,
        written: list[tuple[str, int]],
    ) -> None:
        message = delivery.message
        retry = delivery.attempt  # the n-th retry follows the n-th failed attempt
        topic = self._retry_topics.topic(retry)
        delay_ms = self._retry_topics.delay_ms(retry)
        due_ms = int(self._now().timestamp() * 1000) + delay_ms
        source_topic, source_partition, source_offset = _source_of(message)
        headers = [
            *_original_headers(message),
            (_RETRY_ATTEMPT, str(delivery.attempt + 1).encode()),
            (_RETRY_DUE, str(due_ms).encode()),
            (_RETRY_SOURCE[0], source_topic.encode()),
            (_RETRY_SOURCE[1], str(source_partition).encode()),
            (_RETRY_SOURCE[2], str(source_offset).encode()),
            (_RETRY_ERROR, f"{type(exc).__name__}: {exc}"[:1000].encode()),
        ]
        if self._producer is None:
            self._producer = new_producer(
                {
                    **self._connection,
                    "enable.idempotence": "true",
                    "acks": "all",
                    "linger.ms": "5",
                    "error_cb": lambda error: log.warning("retry producer: %s", error.str()),
                }
            )

        def on_delivery(error: KafkaError | None, record: Message) -> None:
            failures(error, record)
            if error is None:
                written.append((str(record.topic()), int(record.partition() or 0)))

        produce_waiting(
            self._producer,
            topic,
            value=message.value(),
            key=message.key(),
            headers=headers,
            on_delivery=on_delivery,
        )
        self.counts.retried += 1
        HANDLER_MESSAGES.labels(self.plan.name, "retried").inc()
        log.info(
            "worker %s: %s on %s/%s@%s, attempt %d of %d; retry in %.2f s via %s",
            self.plan.name,
            type(exc).__name__,
            source_topic,
            source_partition,
            source_offset,
            delivery.attempt,
            self.plan.retry.attempts,
            delay_ms / 1000,
            topic,
        )

    def _dead_letter(self, message: Message, exc: BaseException, *, attempts: int) -> None:
        error_class = type(exc).__name__
        source_topic, source_partition, source_offset = _source_of(message)
        headers = [
            *_original_headers(message),
            (HANDLER_NAME, self.plan.name.encode()),
            (HANDLER_ATTEMPTS, str(attempts).encode()),
        ]
        letter = DeadLetter(
            key=message.key(),
            value=message.value(),
            headers=headers,
            offset=source_offset,
            stage="handler",
            error_class=error_class,
            error_message=str(exc)[:2000],
        )
        self._dead_letters.write(
            [letter], source_topic, source_partition, topic=self.plan.dead_letter_topic
        )
        self.counts.dead_lettered += 1
        classes = self.counts.dead_letter_classes
        classes[error_class] = classes.get(error_class, 0) + 1
        HANDLER_MESSAGES.labels(self.plan.name, "dead_lettered").inc()
        log.warning(
            "worker %s: dead-lettered %s/%s@%s after %d attempt(s): %s: %s",
            self.plan.name,
            source_topic,
            source_partition,
            source_offset,
            attempts,
            error_class,
            exc,
        )


def _due_ms(message: Message) -> int:
    raw = _header(message, _RETRY_DUE)
    try:
        return int(raw or b"0")
    except ValueError:
        return 0  # a damaged header: due now rather than never


def _source_of(message: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of the original message (also for a retried copy)."""
    topic = _header(message, _RETRY_SOURCE[0])
    partition = _header(message, _RETRY_SOURCE[1])
    offset = _header(message, _RETRY_SOURCE[2])
    if topic is not None and partition is not None and offset is not None:
        try:
            return topic.decode(), int(partition), int(offset)
        except ValueError:
            pass
    return str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)


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
