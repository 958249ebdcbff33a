"""The event router (the event bridge): rules decide which target topics get an event.

It reads the source topics as a consumer group, matches each event against
the rules and publishes the original key, value and headers to every target
of every matching rule, once per event and target (a target named by two
matching rules gets one copy). Added headers: ``route.rules`` (the matching
rule names) and ``source.topic``/``source.partition``/``source.offset``.

Guarantee: at least once per (event, target), with the event id unchanged.
Offsets are stored only after every copy of a poll batch was acknowledged
(idempotent producer, ``acks=all``); a crash in between re-publishes, and the
subscribers' inboxes drop the repeat. Records that are not JSON objects are
skipped and counted: the stream's flow dead-letters them already.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message, TopicPartition

from connectors.kafka_clients import new_producer
from handlers.kafka_io import (
    Activity,
    ConsumerLoop,
    DeliveryFailures,
    ensure_topics,
    group_consumer,
    is_record,
    produce_waiting,
)
from handlers.rules import RuleSet, parse_event
from streambatch.errors import StreambatchError, TerminalError
from streambatch.failpoints import deliveries
from streambatch.metrics import ROUTED_EVENTS

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
    ) -> None:
        self.rules = rules
        self.counts = RouterCounts()
        self._source_topics = list(source_topics)
        self._group_id = group_id
        self._connection = dict(connection)
        self._target_partitions = target_partitions
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
        """Create the target topics (existing ones are fine)."""
        ensure_topics(self._connection, self.targets(), self._target_partitions)

    def run(self, until_idle_seconds: float | None = None) -> RouterCounts:
        """Route until :meth:`stop`, or until idle that long after the first assignment."""
        consumer = group_consumer(self._connection, self._group_id, "streambatch-router")
        consumer.subscribe(self._source_topics, on_assign=lambda _c, parts: self._on_assign(parts))
        try:
            while not self._activity.stopping.is_set():
                messages = consumer.consume(_BATCH, 0.5)
                batch = [m for m in messages if is_record(m, "router")]
                if not batch:
                    if self._activity.idle_for(until_idle_seconds):
                        break
                    continue
                with self._activity.busy():
                    self._route(batch)
                for message in batch:
                    consumer.store_offsets(message=message)
        finally:
            consumer.close()
            self._producer.close()  # every copy was flushed before its offsets were stored
        return self.counts

    def _on_assign(self, partitions: Sequence[TopicPartition]) -> None:
        log.info("router assigned %s", ", ".join(f"{p.topic}/{p.partition}" for p in partitions))
        self._activity.assigned.set()

    def _route(self, batch: Sequence[Message]) -> None:
        failures = DeliveryFailures()

        for message in batch:
            self.counts.events += 1
            try:
                event = parse_event(message.value() or b"")
            except TerminalError:
                self.counts.unreadable += 1
                continue
            matching = self.rules.matching_rules(event)
            if not matching:
                self.counts.unmatched += 1
                continue
            rules_by_target: dict[str, list[str]] = {}
            for rule in matching:
                for target in rule.targets:
                    rules_by_target.setdefault(target, []).append(rule.name)
            for target, rule_names in rules_by_target.items():
                headers: list[tuple[str, str | bytes | None]] = [
                    (str(pair[0]), pair[1]) for pair in message.headers() or []
                ]
                headers += [
                    ("route.rules", ",".join(rule_names).encode()),
                    (
                        "route.source",
                        f"{message.topic()}/{message.partition()}@{message.offset()}".encode(),
                    ),
                ]
                for _ in range(self._deliveries):
                    produce_waiting(
                        self._producer,
                        target,
                        value=message.value(),
                        key=message.key(),
                        headers=headers,
                        on_delivery=failures,
                    )
                self.counts.published[target] = self.counts.published.get(target, 0) + 1
                for name in rule_names:
                    ROUTED_EVENTS.labels(name, target).inc()
        remaining = self._producer.flush(_FLUSH_SECONDS)
        while remaining and not failures.errors and not self._activity.stopping.is_set():
            log.warning("router: waiting for the broker to acknowledge %d copies", remaining)
            remaining = self._producer.flush(_FLUSH_SECONDS)
        if remaining or failures.errors:
            detail = failures.errors[0] if failures.errors else f"{remaining} not acknowledged"
            raise StreambatchError(f"router: copies not delivered ({detail}); offsets not stored")


def _position(message: Message) -> str:
    return f"{message.topic()}/{message.partition()}@{message.offset()}"
