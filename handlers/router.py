"""The event router (the event bridge): rules decide which target topics get an event.

It reads the source topics as a consumer group, matches each event against
the rules and publishes the original key, value and headers to every target
of every matching rule, once per event and target (a target named by two
matching rules gets one copy). Added headers: ``route.rules`` (the matching
rule names) and ``source.topic``/``source.partition``/``source.offset``.

Guarantee: at least once per (event, target), with the event id unchanged.
Offsets are stored only after every copy of a poll batch was acknowledged
(idempotent producer, ``acks=all``); a crash in between re-publishes, and the
subscribers' inboxes drop the repeat.

Validation before fan-out: a record that is not a JSON object, or (given a
``schema``: the publish stream's) an event a rule matches that fails it, is
dead-lettered once, here, with its reason (``error.class``,
``error.message``), instead of once by every subscriber of every target.
Events our handlers published (``streambatch.handler`` header) were checked
against the schema when they were published and are not checked again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message

from connectors.dead_letters import DeadLetterWriter
from connectors.kafka_clients import new_producer
from connectors.records import DeadLetter
from foundation.errors import StreambatchError, TerminalError
from foundation.failpoints import deliveries
from foundation.metrics import ROUTED_EVENTS
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
from handlers.rules import Rule, RuleSet
from handlers.runtime import PUBLISHER_HEADER
from handlers.schemas import EventSchema

__all__ = ["EventRouter", "RouterCounts"]

log = logging.getLogger(__name__)
_BATCH = 500
_FLUSH_SECONDS = 10.0


@dataclass
class RouterCounts:
    """What the router did since it started."""

    events: int = 0
    unmatched: int = 0
    unreadable: int = 0
    invalid: int = 0
    published: dict[str, int] = field(default_factory=dict)


class EventRouter(ConsumerLoop):
    """Routes events of ``source_topics`` to rule targets (see the module guarantee)."""

    def __init__(
        self,
        rules: RuleSet,
        source_topics: Sequence[str],
        group_id: str,
        connection: Mapping[str, str],
        target_partitions: int = 3,
        *,
        dead_letter_topic: str = "router.dlq",
        schema: EventSchema | None = None,
    ) -> None:
        self.rules = rules
        self.name = "router"
        self.counts = RouterCounts()
        self._source_topics = list(source_topics)
        self._group_id = group_id
        self._connection = dict(connection)
        self._target_partitions = target_partitions
        self.dead_letter_topic = dead_letter_topic
        self._schema = schema
        self._dead_letters = DeadLetterWriter(self._connection, "router")
        self._activity = Activity()
        self._deliveries = deliveries()
        self._producer = new_producer(
            {
                **self._connection,
                "enable.idempotence": "true",
                "acks": "all",
                "linger.ms": "5",
                "message.timeout.ms": "0",  # wait through outages: never drop a copy
                "error_cb": lambda error: log.warning("router producer: %s", error.str()),
            }
        )

    def targets(self) -> list[str]:
        """Every target topic named by a rule, sorted."""
        return sorted({target for rule in self.rules for target in rule.targets})

    def prepare(self) -> None:
        """Create the target topics and the dead-letter topic (existing ones are fine)."""
        ensure_topics(
            self._connection, [*self.targets(), self.dead_letter_topic], self._target_partitions
        )

    def run(self, until_idle_seconds: float | None = None) -> RouterCounts:
        """Route until :meth:`stop`, or until settled for ``until_idle_seconds``."""
        consumer = group_consumer(self._connection, self._group_id, "streambatch-router")
        consumer.subscribe(
            self._source_topics,
            on_assign=track_assignment(self._activity, "router"),
            on_revoke=lambda _c, _parts: self._activity.revoke(),
        )
        quiet = QuietClock()
        try:
            while not self._activity.stopping.is_set():
                messages = consumer.consume(_BATCH, 0.2)
                batch = read_records(messages, self._activity, "router")
                if batch:
                    with self._activity.busy():
                        self._route(batch)
                    consumer.store_offsets(offsets=next_offsets(batch))
                if (
                    until_idle_seconds is not None
                    and quiet.held_for(self.settled) >= until_idle_seconds
                ):
                    break
        finally:
            consumer.close()
            self._producer.close()  # every copy was flushed before its offsets were stored
            self._dead_letters.close()
        return self.counts

    def _route(self, batch: Sequence[Message]) -> None:
        failures = DeliveryFailures()
        letters: dict[tuple[str, int], list[DeadLetter]] = {}
        routed: dict[tuple[str, str], int] = {}
        published = self.counts.published
        produce = self._producer.produce
        for message in batch:
            self.counts.events += 1
            value = message.value() or b""
            try:
                matching = self.rules.matching_rules_json(value)
            except TerminalError as exc:
                self.counts.unreadable += 1
                _add_letter(letters, message, exc)
                continue
            if not matching:
                self.counts.unmatched += 1
                continue
            original: list[tuple[str, str | bytes | None]] = list(message.headers() or [])  # type: ignore[arg-type]  # a list of pairs at run time; the stub also allows a dict
            if self._schema is not None and not _published_by_a_handler(original):
                try:
                    self._schema.check_json(value)
                except TerminalError as exc:
                    self.counts.invalid += 1
                    _add_letter(letters, message, exc)
                    continue
            source = f"{message.topic()}/{message.partition()}@{message.offset()}".encode()
            key = message.key()
            for target, rule_names in _rules_by_target(matching).items():
                headers: list[tuple[str, str | bytes | None]] = [
                    *original,
                    ("route.rules", ",".join(rule_names).encode()),
                    ("route.source", source),
                ]
                for _ in range(self._deliveries):
                    try:
                        produce(target, value=value, key=key, headers=headers, on_delivery=failures)
                    except BufferError:  # the local queue is full: wait for acknowledgements
                        produce_waiting(
                            self._producer,
                            target,
                            value=value,
                            key=key,
                            headers=headers,
                            on_delivery=failures,
                        )
                published[target] = published.get(target, 0) + 1
                for name in rule_names:
                    routed[name, target] = routed.get((name, target), 0) + 1
        for (name, target), count in routed.items():
            ROUTED_EVENTS.labels(name, target).inc(count)
        remaining = self._producer.flush(_FLUSH_SECONDS)
        while remaining and not failures.errors and not self._activity.stopping.is_set():
            log.warning("router: waiting for the broker to acknowledge %d copies", remaining)
            remaining = self._producer.flush(_FLUSH_SECONDS)
        if remaining or failures.errors:
            detail = failures.errors[0] if failures.errors else f"{remaining} not acknowledged"
            raise StreambatchError(f"router: copies not delivered ({detail}); offsets not stored")
        for (topic, partition), partition_letters in letters.items():
            self._dead_letters.write(
                partition_letters, topic, partition, topic=self.dead_letter_topic
            )
            for letter in partition_letters:
                log.warning(
                    "router: dead-lettered %s/%s@%s: %s: %s",
                    topic,
                    partition,
                    letter.offset,
                    letter.error_class,
                    letter.error_message,
                )


def _published_by_a_handler(headers: Sequence[tuple[str, object]]) -> bool:
    """Events our handlers publish were checked against the schema on the way out."""
    return any(pair[0] == PUBLISHER_HEADER for pair in headers)


def _rules_by_target(matching: Sequence[Rule]) -> dict[str, list[str]]:
    """Each target of the matching rules once, with the names of the rules that name it."""
    found: dict[str, list[str]] = {}
    for rule in matching:
        for target in rule.targets:
            found.setdefault(target, []).append(rule.name)
    return found


def _add_letter(
    letters: dict[tuple[str, int], list[DeadLetter]], message: Message, exc: BaseException
) -> None:
    letter = DeadLetter(
        key=message.key(),
        value=message.value(),
        headers=[(str(pair[0]), pair[1]) for pair in message.headers() or []],
        offset=int(message.offset() or 0),
        stage="router",
        error_class=type(exc).__name__,
        error_message=str(exc)[:2000],
    )
    where = (str(message.topic()), int(message.partition() or 0))
    letters.setdefault(where, []).append(letter)
