"""A batch worker: one batch handler as a Kafka consumer-group member on a batches topic.

Guarantees, per batch id:

* Handled once: the handler runs in a store transaction that claims the
  batch id in the inbox (``(handler name, batch id)``); a repeated
  announcement, a redelivery or a redrive of a handled batch is a no-op. A
  handler whose effect leaves the store (an HTTP POST) is called again only if
  its transaction did not commit, with the same batch id (an idempotency key).
* At least once: an announcement's offset is stored for commit only after
  its transaction committed or its dead letter was acknowledged.
* Failures are retried with exponential backoff and full jitter under the
  handler's retry policy, then dead-lettered to ``<name>.dlq`` with the
  announcement's bytes and headers (``batch.id`` among them) plus
  ``error.*``, ``source.*``, ``handler.name`` and ``handler.attempts``;
  ``streambatch dlq redrive --worker <name>`` sends them back. A
  ``TerminalError`` (a malformed announcement) is dead-lettered at once. If a
  dead letter cannot be written the worker stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from random import Random

from confluent_kafka import Message

from connectors.dead_letter_headers import HANDLER_ATTEMPTS, HANDLER_NAME
from connectors.dead_letters import DeadLetterWriter
from connectors.records import DeadLetter
from foundation.clock import utc_now
from foundation.errors import TerminalError
from foundation.metrics import BATCH_HANDLER_DELAY, HANDLER_MESSAGES
from handlers.batch.lake_reader import read_batch_rows
from handlers.batch.runtime import (
    BatchContext,
    BatchHandler,
    BatchHandlerPlan,
    resolve_batch_handler,
)
from handlers.kafka_io import (
    Activity,
    ConsumerLoop,
    QuietClock,
    ensure_topics,
    group_consumer,
    read_records,
    track_assignment,
    track_revoke,
)
from handlers.store import Store
from handlers.worker import WorkerCounts
from sinks.batch_announcements import BatchAnnouncement

__all__ = ["BatchWorker", "InvalidAnnouncementError", "build_batch_worker", "decode_announcement"]

log = logging.getLogger(__name__)
_POLL_SECONDS = 0.5


class InvalidAnnouncementError(TerminalError):
    """The record is not a batch announcement of the handler's stream."""


class _Stopping(Exception):
    """Stop requested during a retry wait: leave the announcement uncommitted."""


def decode_announcement(value: bytes | None, stream: str) -> BatchAnnouncement:
    """The announcement in ``value``; InvalidAnnouncementError naming what is wrong."""
    try:
        announcement = BatchAnnouncement.from_json(value or b"")
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidAnnouncementError(f"not a batch announcement: {exc}") from None
    if announcement.stream != stream:
        raise InvalidAnnouncementError(
            f"{announcement.batch_id} is a batch of {announcement.stream!r}, not of {stream!r}"
        )
    return announcement


class BatchWorker(ConsumerLoop):
    """Calls ``handler`` once per announced batch of ``plan.stream`` (see module guarantees)."""

    def __init__(
        self,
        plan: BatchHandlerPlan,
        handler: BatchHandler,
        store: Store,
        connection: Mapping[str, str],
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
        self._now = now
        self._rng = rng or Random()
        self._activity = Activity()
        self._dead_letters = DeadLetterWriter(self._connection, f"batch:{plan.name}")

    def prepare(self) -> None:
        """Create the handler's tables and the worker's topics (existing ones are fine)."""
        self._store.migrate(list(self._handler.ddl))
        ensure_topics(self._connection, [self.plan.topic, self.plan.dead_letter_topic])

    def run(self, until_idle_seconds: float | None = None) -> WorkerCounts:
        """Consume until :meth:`stop`, or until settled for ``until_idle_seconds``.

        Settled: partitions assigned, each read to its end, nothing in work.
        """
        consumer = group_consumer(
            self._connection,
            self.plan.group_id,
            f"streambatch-batch-{self.plan.name}",
            start_from=self.plan.start_from,
            max_poll_interval_ms=self._max_poll_interval_ms(),
        )
        owner = f"batch handler {self.plan.name}"
        consumer.subscribe(
            [self.plan.topic],
            on_assign=track_assignment(self._activity, owner),
            on_revoke=track_revoke(self._activity),
        )
        quiet = QuietClock()
        try:
            while not self._activity.stopping.is_set():
                message = consumer.poll(_POLL_SECONDS)
                records = read_records([message], self._activity, owner) if message else []
                for record in records:
                    try:
                        with self._activity.busy():
                            self._handle(record)
                    except _Stopping:
                        return self.counts
                    consumer.store_offsets(message=record)
                if (
                    until_idle_seconds is not None
                    and quiet.held_for(self.settled) >= until_idle_seconds
                ):
                    break
        finally:
            consumer.close()
            self._dead_letters.close()
        return self.counts

    def _max_poll_interval_ms(self) -> int:
        waits = sum(
            self.plan.retry.ceiling(n).total_seconds() for n in range(1, self.plan.retry.attempts)
        )
        return int(max(300.0, waits + 600.0) * 1000)

    def _handle(self, message: Message) -> None:
        try:
            batch = decode_announcement(message.value(), self.plan.stream)
        except InvalidAnnouncementError as exc:
            self._dead_letter(message, exc, attempts=1)
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                first_time = self._apply(batch)
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
                    "batch handler %s: %s on %s, attempt %d of %d; retrying in %.2f s",
                    self.plan.name,
                    type(exc).__name__,
                    batch.batch_id,
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
            else:
                self.counts.duplicates += 1
            HANDLER_MESSAGES.labels(self.plan.name, outcome).inc()
            return

    def _apply(self, batch: BatchAnnouncement) -> bool:
        """Read the rows, then one transaction: claim and handler. False if done before."""
        if self._store.claimed(self.plan.name, batch.batch_id):
            return False
        rows = read_batch_rows(self.plan.lake, batch)
        delay = (self._now() - batch.committed_at).total_seconds()
        BATCH_HANDLER_DELAY.labels(self.plan.name).observe(max(delay, 0.0))
        # Effects outside the store (an HTTP POST) come first: the store is never
        # locked while they wait, and a crash before the commit repeats them.
        deliver = getattr(self._handler, "deliver", None)
        if callable(deliver):
            deliver(batch, rows)
        with self._store.transaction() as transaction:
            if not transaction.claim(self.plan.name, batch.batch_id):
                return False
            context = BatchContext(self.plan.name, transaction, self._now)
            self._handler.handle(batch, rows, context)
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
            stage="batch_handler",
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
            "batch handler %s: dead-lettered %s after %d attempt(s): %s: %s",
            self.plan.name,
            (message.key() or b"?").decode(errors="replace"),
            attempts,
            error_class,
            exc,
        )


def build_batch_worker(
    plan: BatchHandlerPlan, store: Store, connection: Mapping[str, str]
) -> BatchWorker:
    """Resolve the plan's handler and build its worker."""
    return BatchWorker(plan, resolve_batch_handler(plan.handler, plan.options), store, connection)
