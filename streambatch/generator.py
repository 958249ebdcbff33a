"""Deterministic synthetic ``orders``, ``clicks`` and ``logs`` events, and a Kafka producer.

Generation is pure: the same arguments give the same records, byte for byte,
on every machine (no wall clock, no global random state). Each record is one
Kafka message: its key is the ``order_id``,
``session_id`` or ``service`` and its value an orjson-encoded JSON object, or,
for the malformed share, bytes that the flow must dead-letter.

The workflow per order: ``OrderPlaced``, ``StockReserved``, then either
``PaymentAuthorized``, ``StockDecreased``, ``PurchaseOrderSubmitted`` and one
``CustomerNotified`` per channel (email, then SMS), or ``PaymentFailed``,
``CustomerNotified`` (email), ``FinanceAlerted`` and ``StockReleased``. The
events of up to 16 concurrent orders are interleaved; each order's events keep
their workflow order and ``occurred_at`` never goes backwards.

:func:`generate_stream_records` adds the clicks and logs of the same shop,
derived from the orders so that they join on ``customer_id``/``user_id``,
``sku`` and ``order_id``: every ``OrderPlaced`` follows a click session of its
customer that put its SKUs in the cart and started checkout, and every
``PaymentFailed`` comes with a burst of ``ERROR`` lines from ``payments``.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from random import Random
from types import TracebackType
from typing import Any, Final, Literal, Protocol, TypeVar

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connectors.kafka_clients import new_producer
from streambatch.errors import TransientError
from streambatch.gc_pause import gc_paused

__all__ = [
    "DEFAULT_MALFORMED_CLASSES",
    "DEFAULT_START",
    "LOG_SERVICES",
    "PRODUCER_DEFAULTS",
    "STREAM_MALFORMED_CLASSES",
    "GeneratedRecord",
    "GenerationSummary",
    "ProduceReport",
    "ProduceTimeoutError",
    "RecordKind",
    "generate_click_records",
    "generate_log_records",
    "generate_order_records",
    "generate_stream_records",
    "produce_records",
    "summarize",
]

RecordKind = Literal["valid", "duplicate", "malformed"]

DEFAULT_MALFORMED_CLASSES: Final[tuple[str, ...]] = (
    "not_json",
    "not_utf8",
    "missing_event_id",
    "wrong_type",
    "bad_timestamp",
    "unknown_event_type",
    "negative_quantity",
)
"""Every kind of bad input the generator can emit, in the order it cycles through them."""

STREAM_MALFORMED_CLASSES: Final[tuple[str, ...]] = (
    "not_json",
    "not_utf8",
    "missing_event_id",
    "wrong_type",
    "bad_timestamp",
    "unknown_event_type",
)
"""Bad input of the clicks and logs streams, in the order it cycles through them.

``negative_quantity`` only means something for orders. ``wrong_type`` is a
numeric ``url`` or ``user_id`` in clicks, and a ``LOUD`` level or a numeric
attribute value in logs.
"""

LOG_SERVICES: Final[tuple[str, ...]] = (
    "checkout",
    "payments",
    "inventory",
    "notifications",
    "gateway",
)
"""The services that write to the ``logs`` topic."""

DEFAULT_START: Final[datetime] = datetime(2026, 11, 28, tzinfo=UTC)
"""``occurred_at`` of the first event unless told otherwise: fixed, so output is reproducible."""

PRODUCER_DEFAULTS: Final[dict[str, str]] = {
    "enable.idempotence": "true",
    "linger.ms": "20",
    "compression.type": "lz4",
}
"""librdkafka settings of :func:`produce_records`; the caller's config overrides them."""

_CURRENCIES: Final = ("EUR", "USD", "GBP")
_WAREHOUSES: Final = ("WH-AMS-1", "WH-FRA-2", "WH-LHR-1", "WH-NYC-3", "WH-WAW-1")
_FAILURE_REASONS: Final = (
    "insufficient_funds",
    "card_expired",
    "fraud_suspected",
    "issuer_unavailable",
    "3ds_authentication_failed",
)
_PAYMENT_SUCCESS_RATE: Final = 0.9
_MAX_ITEMS: Final = 5
_MAX_QUANTITY: Final = 5
_MIN_PRICE_CENTS: Final = 99
_MAX_PRICE_CENTS: Final = 24_999
_SKU_COUNT: Final = 2_000
_CUSTOMER_COUNT: Final = 5_000
_MAX_IN_FLIGHT: Final = 16
_NEW_ORDER_PROBABILITY: Final = 0.3
# Mean step ~310 ms: 50,000 events span about 4.3 hours of event time.
_MIN_STEP_MS: Final = 20
_MAX_STEP_MS: Final = 600
_DUPLICATE_LOOKBACK: Final = 64
_BAD_BYTES_MARKER: Final = "@@not-utf8@@"

_PROGRESS_CHUNK: Final = 1_024
_UNKNOWN_TOTAL_LINE_EVERY: Final = 100_000


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    """One Kafka message to produce to the ``orders``, ``clicks`` or ``logs`` topic.

    Attributes:
        key: The ``order_id``, ``session_id`` or ``service`` as UTF-8 bytes;
            malformed records have one too.
        value: The message value, byte for byte.
        kind: ``valid``, ``duplicate`` (an exact re-send of an earlier valid
            record) or ``malformed`` (must be dead-lettered).
        event_id: The ``event_id`` a consumer can read from the value; ``None``
            when the value is not a readable JSON object with one.
        malformed_class: One of :data:`DEFAULT_MALFORMED_CLASSES` for malformed
            records, else ``None``.
        total_amount: The exact ``total_amount`` of a valid ``OrderPlaced``;
            ``None`` for every other record, duplicates included.
    """

    key: bytes
    value: bytes
    kind: RecordKind
    event_id: str | None
    malformed_class: str | None = None
    total_amount: Decimal | None = None


@dataclass(frozen=True, slots=True)
class GenerationSummary:
    """What a flow must end up with after reading a set of generated records.

    Attributes:
        total: Number of records.
        valid: Records that must land in the lake exactly once each.
        duplicates: Re-sends that deduplication must drop.
        malformed: Records that must go to the dead-letter topic.
        orders_placed: Distinct valid ``OrderPlaced`` events (0 for clicks and logs).
        valid_event_ids: The ``event_id`` of every valid record.
        malformed_by_class: Malformed records per class.
        total_amount_sum: Sum of ``total_amount`` over distinct valid
            ``OrderPlaced`` (0 for clicks and logs).
    """

    total: int
    valid: int
    duplicates: int
    malformed: int
    orders_placed: int
    valid_event_ids: frozenset[str]
    malformed_by_class: dict[str, int]
    total_amount_sum: Decimal


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


def generate_order_records(
    count: int,
    *,
    seed: int = 42,
    duplicate_ratio: float = 0.02,
    malformed_ratio: float = 0.01,
    start: datetime | None = None,
    malformed_classes: Sequence[str] = DEFAULT_MALFORMED_CLASSES,
    checkouts_only: bool = False,
) -> Iterator[GeneratedRecord]:
    """Yield ``count`` records of the orders workflow, deterministically for ``seed``.

    With ``checkouts_only`` every valid record is an ``OrderPlaced``: the input
    of the downstream handlers, which make the rest of the workflow.

    Exactly ``round(count * duplicate_ratio)`` records are duplicates and
    ``round(count * malformed_ratio)`` are malformed, cycling through
    ``malformed_classes``; the rest are valid, with unique event ids. Both
    kinds are spread at random over the stream. A duplicate repeats the key and
    value of one of the last 64 valid records, so it always comes after its
    original. The stream ends after ``count`` records even in mid-workflow.

    Args:
        count: Total number of records, valid, duplicate and malformed.
        seed: Seed of the only random source used.
        duplicate_ratio: Share of duplicates, in ``[0, 1]``.
        malformed_ratio: Share of malformed records, in ``[0, 1]``.
        start: Aware ``occurred_at`` of the first event; :data:`DEFAULT_START` if ``None``.
        malformed_classes: Classes to cycle through, each in :data:`DEFAULT_MALFORMED_CLASSES`.
        checkouts_only: Only ``OrderPlaced`` events (plus duplicates and malformed ones).

    Returns:
        A lazy iterator; memory does not grow with ``count``.

    Raises:
        ValueError: On a negative count, a ratio outside ``[0, 1]``, more
            duplicates and malformed records than ``count``, duplicates
            without any valid record, a naive ``start`` or an unknown class.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    for name, ratio in (("duplicate_ratio", duplicate_ratio), ("malformed_ratio", malformed_ratio)):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {ratio}")
    duplicates = round(count * duplicate_ratio)
    malformed = round(count * malformed_ratio)
    valid = count - duplicates - malformed
    if valid < 0:
        message = (
            f"duplicate_ratio ({duplicate_ratio}) + malformed_ratio ({malformed_ratio}) "
            f"ask for {duplicates + malformed} records out of count={count}"
        )
        raise ValueError(message)
    if duplicates and not valid:
        message = (
            f"duplicate_ratio ({duplicate_ratio}) asks for {duplicates} duplicates but "
            f"malformed_ratio ({malformed_ratio}) leaves no valid record to duplicate"
        )
        raise ValueError(message)
    classes = tuple(malformed_classes)
    unknown = sorted(set(classes) - set(DEFAULT_MALFORMED_CLASSES))
    if unknown:
        raise ValueError(
            f"unknown malformed classes {unknown}; known: {list(DEFAULT_MALFORMED_CLASSES)}"
        )
    if malformed and not classes:
        raise ValueError("malformed_ratio > 0 needs at least one malformed class")
    first = DEFAULT_START if start is None else start
    if first.tzinfo is None or first.utcoffset() is None:
        raise ValueError(f"start must be timezone-aware, got {first.isoformat()}")
    kind = _Checkouts if checkouts_only else _OrderWorkflow
    workflow = kind(Random(seed), seed, first.astimezone(UTC))
    return _generate(
        workflow, valid=valid, duplicates=duplicates, malformed=malformed, classes=classes
    )


def generate_stream_records(
    count: int,
    *,
    seed: int = 42,
    duplicate_ratio: float = 0.02,
    malformed_ratio: float = 0.01,
    start: datetime | None = None,
    checkouts_only: bool = False,
) -> dict[str, list[GeneratedRecord]]:
    """Generate the orders of :func:`generate_order_records` and the clicks and logs around them.

    ``orders`` is exactly ``list(generate_order_records(count, ...))`` with
    the same arguments. ``clicks`` and ``logs`` are derived from its valid
    events and sorted by ``occurred_at``:

    - clicks (key ``session_id``): every valid ``OrderPlaced`` follows, 15 s
      to 4 min later, the ``checkout_started`` that ends a session of its
      customer (``user_id`` = ``customer_id``) which added each of the
      order's SKUs to the cart. Other sessions browse ``/``, ``/c/<category>``
      and ``/p/<sku>`` pages of the same SKU catalogue: anonymous ones
      (``user_id`` null) never start checkout, logged-in ones sometimes do
      without ordering. The first ``page_view`` of a session carries its
      referrer (null for a direct visit). About 4 click events per order
      record (about 30 per order placed).
    - logs (key ``service``, one of :data:`LOG_SERVICES`): 2 to 4 lines per
      valid order event, mostly ``INFO`` with an ``order_id`` attribute and
      the event's ``trace_id``, some background lines without a trace; each
      ``PaymentFailed`` gets a burst of ``ERROR`` lines from ``payments``
      sharing one ``trace_id`` (sometimes a ``CRITICAL`` too).

    In clicks and logs, ``duplicates`` and ``malformed`` are
    ``round(valid * ratio / (1 - duplicate_ratio - malformed_ratio))`` each,
    so each share is within half a record of ``ratio * total``, like the
    orders' ``round(total * ratio)``. Malformed records cycle through
    :data:`STREAM_MALFORMED_CLASSES`. Event ids are ``evt-c-...`` and
    ``evt-l-...``: unique per stream and never equal to another stream's.

    Args:
        count: Number of order records, valid, duplicate and malformed.
        seed: Seed of the generation; each stream has its own random source.
        duplicate_ratio: Share of duplicates of every stream, in ``[0, 1)``.
        malformed_ratio: Share of malformed records of every stream, in ``[0, 1)``.
        start: Aware ``occurred_at`` of the first order event;
            :data:`DEFAULT_START` if ``None``. Clicks start up to 30 min earlier.
        checkouts_only: Orders are only ``OrderPlaced`` events (for the
            workflow handlers, which make the rest).

    Returns:
        ``{"orders": [...], "clicks": [...], "logs": [...]}``.

    Raises:
        ValueError: On the arguments :func:`generate_order_records` refuses,
            or if ``duplicate_ratio + malformed_ratio >= 1``.
    """
    with gc_paused():
        orders = _order_list(
            count, seed, duplicate_ratio, malformed_ratio, start, checkouts_only=checkouts_only
        )
        timeline = _read_orders(orders, start)
        return {
            "orders": orders,
            "clicks": _click_records(timeline, seed, duplicate_ratio, malformed_ratio),
            "logs": _log_records(timeline, seed, duplicate_ratio, malformed_ratio),
        }


def generate_click_records(
    count: int,
    *,
    seed: int = 42,
    duplicate_ratio: float = 0.02,
    malformed_ratio: float = 0.01,
    start: datetime | None = None,
) -> list[GeneratedRecord]:
    """Return ``generate_stream_records(...)["clicks"]`` without building the logs."""
    with gc_paused():
        orders = _order_list(count, seed, duplicate_ratio, malformed_ratio, start)
        timeline = _read_orders(orders, start)
        return _click_records(timeline, seed, duplicate_ratio, malformed_ratio)


def generate_log_records(
    count: int,
    *,
    seed: int = 42,
    duplicate_ratio: float = 0.02,
    malformed_ratio: float = 0.01,
    start: datetime | None = None,
) -> list[GeneratedRecord]:
    """Return ``generate_stream_records(...)["logs"]`` without building the clicks."""
    with gc_paused():
        orders = _order_list(count, seed, duplicate_ratio, malformed_ratio, start)
        timeline = _read_orders(orders, start)
        return _log_records(timeline, seed, duplicate_ratio, malformed_ratio)


def summarize(records: Iterable[GeneratedRecord]) -> GenerationSummary:
    """Count generated records of one stream the way a correct flow must see them.

    Valid records are counted once per ``event_id``, so summarising the same
    records twice over gives the same ``total_amount_sum``. Works for every
    stream; clicks and logs have no ``OrderPlaced``, so their
    ``orders_placed`` and ``total_amount_sum`` are 0.
    """
    kinds: Counter[str] = Counter()
    by_class: Counter[str] = Counter()
    valid_ids: set[str] = set()
    amount_sum = Decimal(0)
    orders_placed = 0
    for record in records:
        kinds[record.kind] += 1
        if record.kind == "malformed":
            by_class[record.malformed_class or "unknown"] += 1
        elif record.kind == "valid" and record.event_id is not None:
            if record.event_id in valid_ids:
                continue
            valid_ids.add(record.event_id)
            if record.total_amount is not None:
                orders_placed += 1
                amount_sum += record.total_amount
    return GenerationSummary(
        total=kinds.total(),
        valid=kinds["valid"],
        duplicates=kinds["duplicate"],
        malformed=kinds["malformed"],
        orders_placed=orders_placed,
        valid_event_ids=frozenset(valid_ids),
        malformed_by_class=dict(by_class),
        total_amount_sum=amount_sum,
    )


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
    with _RichProgress(total) if use_bar else _LineProgress(total) as bar:
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
    producer: Producer, timeout: timedelta, bar: _Progress, tally: _DeliveryTally
) -> int:
    """Wait up to ``timeout`` for acknowledgements, moving ``bar``; returns how many are left."""
    deadline = time.monotonic() + timeout.total_seconds()
    remaining = producer.flush(0)
    while remaining > 0 and time.monotonic() < deadline:
        remaining = producer.flush(min(0.2, max(0.0, deadline - time.monotonic())))
        bar.update(tally.delivered + tally.failed)
    return remaining


# --- generation internals -------------------------------------------------------------


class _RecordSource(Protocol):
    """What :func:`_generate` draws valid and malformed records from."""

    rng: Random

    def next_valid(self) -> GeneratedRecord: ...

    def next_malformed(self, cls: str, variant: int) -> GeneratedRecord: ...


def _generate(
    workflow: _RecordSource,
    *,
    valid: int,
    duplicates: int,
    malformed: int,
    classes: tuple[str, ...],
) -> Iterator[GeneratedRecord]:
    rng = workflow.rng
    recent: deque[GeneratedRecord] = deque(maxlen=_DUPLICATE_LOOKBACK)
    malformed_emitted = 0
    left = valid + duplicates + malformed
    while left:
        # Selection sampling: exact counts, each arrangement equally likely, O(1) memory.
        draw = rng.randrange(left)
        left -= 1
        if draw < malformed:
            malformed -= 1
            cls = classes[malformed_emitted % len(classes)]
            variant = (malformed_emitted // len(classes)) % 2
            malformed_emitted += 1
            yield workflow.next_malformed(cls, variant)
        elif draw < malformed + duplicates and recent:
            duplicates -= 1
            original = rng.choice(recent)
            yield GeneratedRecord(
                key=original.key,
                value=original.value,
                kind="duplicate",
                event_id=original.event_id,
            )
        else:
            # Also taken for a duplicate drawn before any valid record exists:
            # that duplicate stays owed, and valid >= 1 is left as none was emitted.
            valid -= 1
            record = workflow.next_valid()
            recent.append(record)
            yield record


@dataclass(slots=True)
class _PendingEvent:
    event_type: str
    fields: dict[str, Any]
    total_amount: Decimal | None = None


class _OrderWorkflow:
    """Interleaves the workflows of concurrent orders; owns the event clock."""

    def __init__(self, rng: Random, seed: int, start: datetime) -> None:
        self.rng = rng
        self._seed = seed
        self._start = start
        self._elapsed_ms = 0
        self._orders_started = 0
        self._valid_emitted = 0
        self._malformed_emitted = 0
        self._in_flight: list[deque[_PendingEvent]] = []

    def next_valid(self) -> GeneratedRecord:
        rng = self.rng
        if not self._in_flight or (
            len(self._in_flight) < _MAX_IN_FLIGHT and rng.random() < _NEW_ORDER_PROBABILITY
        ):
            self._in_flight.append(self._start_order())
            index = len(self._in_flight) - 1
        else:
            index = rng.randrange(len(self._in_flight))
        pending = self._in_flight[index]
        event = pending.popleft()
        if not pending:
            # Swap-remove keeps this O(1) and deterministic.
            self._in_flight[index] = self._in_flight[-1]
            self._in_flight.pop()
        event_id = f"evt-{self._seed}-{self._valid_emitted:010d}"
        self._valid_emitted += 1
        body = {
            "event_id": event_id,
            "event_type": event.event_type,
            "occurred_at": self._tick(),
            **event.fields,
        }
        return GeneratedRecord(
            key=str(body["order_id"]).encode(),
            value=orjson.dumps(body),
            kind="valid",
            event_id=event_id,
            total_amount=event.total_amount,
        )

    def next_malformed(self, cls: str, variant: int) -> GeneratedRecord:
        number = self._malformed_emitted
        self._malformed_emitted += 1
        order_id = f"ord-{self._seed}-m{number:07d}"
        event_id: str | None = f"evt-{self._seed}-m{number:09d}"
        placed = self._order_placed_fields(order_id)
        body: dict[str, Any] = {
            "event_id": event_id,
            "event_type": "OrderPlaced",
            "occurred_at": self._tick(),
            **placed.fields,
        }
        items: list[dict[str, Any]] = body["items"]
        if cls == "not_json":
            value = b"{not json" if variant else orjson.dumps(body)[: -len(order_id)]
            event_id = None
        elif cls == "not_utf8":
            body["customer_id"] = f"cus-{_BAD_BYTES_MARKER}"
            value = orjson.dumps(body).replace(_BAD_BYTES_MARKER.encode(), b"\xff\xfe")
            event_id = None
        elif cls == "missing_event_id":
            del body["event_id"]
            value = orjson.dumps(body)
            event_id = None
        else:
            if cls == "wrong_type":
                if variant:
                    body["total_amount"] = {"value": body["total_amount"], "scale": 2}
                else:
                    items[0]["quantity"] = "two"
            elif cls == "bad_timestamp":
                # Variant 1 drops the offset: a naive time is not RFC 3339.
                body["occurred_at"] = str(body["occurred_at"])[:-1] if variant else "yesterday"
            elif cls == "unknown_event_type":
                body["event_type"] = "OrderTeleported"
            elif cls == "negative_quantity":
                items[0]["quantity"] = -int(items[0]["quantity"])
            else:  # pragma: no cover - classes are checked in generate_order_records
                raise ValueError(f"unknown malformed class {cls!r}")
            value = orjson.dumps(body)
        return GeneratedRecord(
            key=order_id.encode(),
            value=value,
            kind="malformed",
            event_id=event_id,
            malformed_class=cls,
        )

    def _tick(self) -> str:
        self._elapsed_ms += self.rng.randint(_MIN_STEP_MS, _MAX_STEP_MS)
        moment = self._start + timedelta(milliseconds=self._elapsed_ms)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _start_order(self) -> deque[_PendingEvent]:
        rng = self.rng
        number = self._orders_started
        self._orders_started += 1
        order_id = f"ord-{self._seed}-{number:08d}"
        placed = self._order_placed_fields(order_id)
        customer_id = placed.fields["customer_id"]
        currency = placed.fields["currency"]
        items = placed.fields["items"]
        payment = {
            "order_id": order_id,
            "payment_id": f"pay-{self._seed}-{number:08d}",
            "amount": placed.fields["total_amount"],
            "currency": currency,
        }
        events = [
            placed,
            _PendingEvent("StockReserved", {"order_id": order_id, "items": items}),
        ]
        if rng.random() < _PAYMENT_SUCCESS_RATE:
            events += [
                _PendingEvent("PaymentAuthorized", payment),
                _PendingEvent("StockDecreased", {"order_id": order_id, "items": items}),
                _PendingEvent(
                    "PurchaseOrderSubmitted",
                    {"order_id": order_id, "warehouse": rng.choice(_WAREHOUSES)},
                ),
                *(
                    _PendingEvent(
                        "CustomerNotified",
                        _notification(order_id, customer_id, channel, "order_confirmed"),
                    )
                    for channel in ("email", "sms")
                ),
            ]
        else:
            reason = rng.choice(_FAILURE_REASONS)
            events += [
                _PendingEvent("PaymentFailed", {**payment, "reason": reason}),
                _PendingEvent(
                    "CustomerNotified",
                    _notification(order_id, customer_id, "email", "payment_failed"),
                ),
                _PendingEvent(
                    "FinanceAlerted",
                    {"order_id": order_id, "reason": f"payment failed: {reason}"},
                ),
                _PendingEvent("StockReleased", {"order_id": order_id, "items": items}),
            ]
        return deque(events)

    def _order_placed_fields(self, order_id: str) -> _PendingEvent:
        rng = self.rng
        items: list[dict[str, Any]] = []
        total_cents = 0
        for _ in range(rng.randint(1, _MAX_ITEMS)):
            quantity = rng.randint(1, _MAX_QUANTITY)
            price_cents = rng.randint(_MIN_PRICE_CENTS, _MAX_PRICE_CENTS)
            total_cents += quantity * price_cents
            items.append(
                {
                    "sku": f"SKU-{rng.randint(1, _SKU_COUNT):05d}",
                    "quantity": quantity,
                    "unit_price": _format_cents(price_cents),
                }
            )
        total = _format_cents(total_cents)
        fields = {
            "order_id": order_id,
            "customer_id": f"cus-{rng.randint(1, _CUSTOMER_COUNT):06d}",
            "currency": rng.choice(_CURRENCIES),
            "items": items,
            "total_amount": total,
        }
        return _PendingEvent("OrderPlaced", fields, Decimal(total))


class _Checkouts(_OrderWorkflow):
    """Only the ``OrderPlaced`` of each order: the handlers make the rest."""

    def _start_order(self) -> deque[_PendingEvent]:
        number = self._orders_started
        self._orders_started += 1
        return deque([self._order_placed_fields(f"ord-{self._seed}-{number:08d}")])


def _notification(order_id: str, customer_id: str, channel: str, template: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": customer_id,
        "channel": channel,
        "template": template,
    }


def _format_cents(cents: int) -> str:
    # Integer cents, formatted by hand: money never passes through a float.
    return f"{cents // 100}.{cents % 100:02d}"


# --- clicks and logs internals ---------------------------------------------------------

_T = TypeVar("_T")
_ONE_MS: Final = timedelta(milliseconds=1)
_CATEGORIES: Final = (
    "shoes",
    "shirts",
    "trousers",
    "jackets",
    "bags",
    "watches",
    "toys",
    "kitchen",
    "garden",
    "books",
)
# Direct visits (null) and search engines dominate, as in most shops.
_REFERRERS: Final[tuple[str | None, ...]] = (
    None,
    None,
    None,
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
    "https://newsletter.example.com/",
    "https://newsletter.example.com/",
    "https://www.instagram.com/",
    "https://t.co/",
)
_CHECKOUT_LEAD_MS: Final = (15_000, 240_000)
_CLICK_GAP_MS: Final = (2_000, 40_000)
_BROWSE_SESSIONS_PER_ORDER_EVENT: Final = 0.4
_BROWSE_LEAD_MS: Final = 30 * 60_000
_BROWSE_PAGES: Final = (1, 8)
_ANONYMOUS_SHARE: Final = 0.6
_KNOWN_CUSTOMER_SHARE: Final = 0.8
_ADD_TO_CART_PROBABILITY: Final = 0.2
_REMOVE_FROM_CART_PROBABILITY: Final = 0.3
_ABANDONED_CHECKOUT_PROBABILITY: Final = 0.3
_SWAP_ITEM_PROBABILITY: Final = 0.15

_EXTRA_LOG_LINES: Final = (1, 3)
_LOG_SPREAD_MS: Final = 1_500
_BACKGROUND_SHARE: Final = 0.3
_GATEWAY_SHARE: Final = 0.4
_PAYMENT_ATTEMPTS: Final = (2, 4)
_PAYMENT_RETRY_MS: Final = (150, 800)
_CRITICAL_AFTER_FAILURE: Final = 0.15
# Cumulative thresholds of the extra lines' levels: ~72% INFO, 15% DEBUG, 12% WARNING.
_LEVEL_THRESHOLDS: Final = (
    (0.72, "INFO"),
    (0.87, "DEBUG"),
    (0.99, "WARNING"),
    (0.999, "ERROR"),
    (1.0, "CRITICAL"),
)
_TRACED_MESSAGES: Final[dict[str, tuple[str, ...]]] = {
    "DEBUG": ("db query executed", "cache hit", "cache miss", "feature flag evaluated"),
    "INFO": ("request handled", "state persisted", "event published", "idempotency key stored"),
    "WARNING": (
        "slow downstream response",
        "retrying after timeout",
        "connection pool nearly exhausted",
        "deprecated client version",
    ),
    "ERROR": ("downstream call timed out", "unexpected response from downstream"),
    "CRITICAL": ("worker crashed, restarting",),
}
_BACKGROUND_MESSAGES: Final[dict[str, tuple[str, ...]]] = {
    "DEBUG": ("heartbeat sent", "connection pool stats", "gc pause"),
    "INFO": ("health check ok", "metrics flushed", "config reloaded"),
}
_HTTP_STATUS: Final = {
    "DEBUG": "200",
    "INFO": "200",
    "WARNING": "429",
    "ERROR": "504",
    "CRITICAL": "503",
}
# service, level and message of the line that records each order event.
_EVENT_LINES: Final[dict[str, tuple[str, str, str]]] = {
    "OrderPlaced": ("checkout", "INFO", "order placed"),
    "StockReserved": ("inventory", "INFO", "stock reserved"),
    "StockReleased": ("inventory", "INFO", "stock released"),
    "StockDecreased": ("inventory", "INFO", "stock decreased"),
    "PaymentAuthorized": ("payments", "INFO", "payment authorized"),
    "PaymentFailed": ("payments", "ERROR", "payment failed"),
    "PurchaseOrderSubmitted": ("inventory", "INFO", "purchase order submitted"),
    "CustomerNotified": ("notifications", "INFO", "customer notified"),
    "FinanceAlerted": ("checkout", "WARNING", "finance alerted"),
}
_GATEWAY_ROUTES: Final[dict[str, tuple[str, str]]] = {
    "OrderPlaced": ("POST", "/api/orders"),
    "StockReserved": ("POST", "/api/stock/reservations"),
    "StockReleased": ("DELETE", "/api/stock/reservations"),
    "StockDecreased": ("POST", "/api/stock/movements"),
    "PaymentAuthorized": ("POST", "/api/payments"),
    "PaymentFailed": ("POST", "/api/payments"),
    "PurchaseOrderSubmitted": ("POST", "/api/purchase-orders"),
    "CustomerNotified": ("POST", "/api/notifications"),
    "FinanceAlerted": ("POST", "/api/alerts"),
}
_ATTRIBUTE_FIELDS: Final[tuple[str, ...]] = (
    "order_id",
    "customer_id",
    "payment_id",
    "amount",
    "total_amount",
    "currency",
    "reason",
    "warehouse",
    "channel",
    "template",
)
_PROVIDER_STATUSES: Final = ("502", "503", "504")

# A step of a click session: event_type, url, sku.
_Step = tuple[str, str, str | None]
# ms offset, tie-breaker, event_type, session_id, user_id, url, referrer, sku.
_ClickRow = tuple[int, int, str, str, str | None, str, str | None, str | None]
# ms offset, tie-breaker, service, level, message, trace_id, attributes.
_LogRow = tuple[int, int, str, str, str, str | None, dict[str, str]]
# ms offset, event_type, string fields (and item_count), distinct skus.
_OrderFact = tuple[int, str, dict[str, str], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class _OrderTimeline:
    """The valid order events, with times as milliseconds after ``clock``'s base."""

    clock: _MillisClock
    events: list[_OrderFact]


def _between(rng: Random, low: int, high: int) -> int:
    """A uniform integer in ``[low, high]``, at a fraction of ``Random.randint``'s cost."""
    return low + int(rng.random() * (high - low + 1))


def _pick(rng: Random, options: Sequence[_T]) -> _T:
    """A uniform choice, at a fraction of ``Random.choice``'s cost."""
    return options[int(rng.random() * len(options))]


class _MillisClock:
    """Formats millisecond offsets from a UTC instant as RFC 3339 strings."""

    def __init__(self, base: datetime) -> None:
        self._anchor = base.replace(microsecond=0)
        self._anchor_ms = base.microsecond // 1000
        # Formatting each whole second once keeps a formatted time at a dict lookup.
        self._seconds: dict[int, str] = {}

    def format(self, offset_ms: int) -> str:
        second, millis = divmod(self._anchor_ms + offset_ms, 1000)
        prefix = self._seconds.get(second)
        if prefix is None:
            prefix = (self._anchor + timedelta(seconds=second)).isoformat()[:19]
            self._seconds[second] = prefix
        return f"{prefix}.{millis:03d}Z"


def _encode(body: dict[str, Any]) -> bytes:
    """Compact JSON of ``body``, in a bytes object of its own size."""
    # orjson's result keeps its oversized first allocation: holding 100,000s of
    # them fragments the heap and costs 2 us a record; a right-sized copy, 0.3 us.
    return bytes(memoryview(orjson.dumps(body)))


def _order_list(
    count: int,
    seed: int,
    duplicate_ratio: float,
    malformed_ratio: float,
    start: datetime | None,
    *,
    checkouts_only: bool = False,
) -> list[GeneratedRecord]:
    records = generate_order_records(
        count,
        seed=seed,
        duplicate_ratio=duplicate_ratio,
        malformed_ratio=malformed_ratio,
        start=start,
        checkouts_only=checkouts_only,
    )
    if duplicate_ratio + malformed_ratio >= 1.0:
        message = (
            f"duplicate_ratio ({duplicate_ratio}) + malformed_ratio ({malformed_ratio}) "
            "must be < 1 to leave room for valid clicks and logs"
        )
        raise ValueError(message)
    return list(records)


def _read_orders(orders: Iterable[GeneratedRecord], start: datetime | None) -> _OrderTimeline:
    first = (DEFAULT_START if start is None else start).astimezone(UTC)
    # Order times are the start plus whole milliseconds, printed to the millisecond.
    base = first.replace(microsecond=first.microsecond // 1000 * 1000)
    events: list[_OrderFact] = []
    for record in orders:
        if record.kind != "valid":
            continue
        body = orjson.loads(record.value)
        moment = datetime.fromisoformat(body["occurred_at"])
        fields = {name: body[name] for name in _ATTRIBUTE_FIELDS if name in body}
        skus: tuple[str, ...] = ()
        if "items" in body:
            fields["item_count"] = str(len(body["items"]))
            skus = tuple(dict.fromkeys(item["sku"] for item in body["items"]))
        events.append(((moment - base) // _ONE_MS, body["event_type"], fields, skus))
    return _OrderTimeline(_MillisClock(base), events)


def _share_counts(valid: int, duplicate_ratio: float, malformed_ratio: float) -> tuple[int, int]:
    room = 1.0 - duplicate_ratio - malformed_ratio
    return round(valid * duplicate_ratio / room), round(valid * malformed_ratio / room)


def _click_records(
    timeline: _OrderTimeline, seed: int, duplicate_ratio: float, malformed_ratio: float
) -> list[GeneratedRecord]:
    rng = Random(f"streambatch-clicks-{seed}")
    rows = _click_rows(timeline, rng, seed)
    duplicates, malformed = _share_counts(len(rows), duplicate_ratio, malformed_ratio)
    source = _ClickSource(rng, seed, timeline.clock, rows)
    return list(
        _generate(
            source,
            valid=len(rows),
            duplicates=duplicates,
            malformed=malformed,
            classes=STREAM_MALFORMED_CLASSES,
        )
    )


def _log_records(
    timeline: _OrderTimeline, seed: int, duplicate_ratio: float, malformed_ratio: float
) -> list[GeneratedRecord]:
    rng = Random(f"streambatch-logs-{seed}")
    rows = _log_rows(timeline, rng)
    duplicates, malformed = _share_counts(len(rows), duplicate_ratio, malformed_ratio)
    source = _LogSource(rng, seed, timeline.clock, rows)
    return list(
        _generate(
            source,
            valid=len(rows),
            duplicates=duplicates,
            malformed=malformed,
            classes=STREAM_MALFORMED_CLASSES,
        )
    )


# Clicks: sessions of page views, clicks and cart changes.


def _sku(number: int) -> str:
    return f"SKU-{number:05d}"


def _category_of(sku: str) -> str:
    return _CATEGORIES[(int(sku[4:]) - 1) % len(_CATEGORIES)]


def _sku_in_category(rng: Random, category_index: int) -> str:
    per_category = _SKU_COUNT // len(_CATEGORIES)
    return _sku(category_index + 1 + len(_CATEGORIES) * int(rng.random() * per_category))


def _checkout_steps(rng: Random, skus: tuple[str, ...]) -> list[_Step]:
    """A session that lands, puts exactly ``skus`` in the cart and starts checkout."""
    first = skus[0]
    landing = rng.random()
    steps: list[_Step]
    if landing < 0.4:
        steps = [("page_view", "/", None)]
    elif landing < 0.7:
        steps = [("page_view", f"/c/{_category_of(first)}", None)]
    else:
        steps = [("page_view", f"/p/{first}", first)]
    for sku in skus:
        product = f"/p/{sku}"
        if steps[-1][1] != product:
            if rng.random() < 0.5:
                category = f"/c/{_category_of(sku)}"
                steps += [("page_view", category, None), ("click", category, sku)]
            steps.append(("page_view", product, sku))
        steps.append(("add_to_cart", product, sku))
    if rng.random() < _SWAP_ITEM_PROBABILITY:
        # Added and taken out again: the cart at checkout is still the order.
        extra = _sku(_between(rng, 1, _SKU_COUNT))
        if extra not in skus:
            steps += [
                ("page_view", f"/p/{extra}", extra),
                ("add_to_cart", f"/p/{extra}", extra),
                ("page_view", "/cart", None),
                ("remove_from_cart", "/cart", extra),
            ]
    steps += [("page_view", "/cart", None), ("checkout_started", "/checkout", None)]
    return steps


def _browse_steps(rng: Random, *, may_check_out: bool) -> list[_Step]:
    """A session that looks around, maybe fills a cart, and never orders."""
    steps: list[_Step] = []
    cart: list[str] = []
    url = "/"
    category_index: int | None = None
    for page in range(_between(rng, *_BROWSE_PAGES)):
        sku: str | None = None
        choice = rng.random()
        if page == 0 and choice < 0.3:
            url = "/"
            category_index = None
        elif choice < 0.55:
            if category_index is None:
                sku = _sku(_between(rng, 1, _SKU_COUNT))
            else:
                sku = _sku_in_category(rng, category_index)
                steps.append(("click", url, sku))
            url = f"/p/{sku}"
            category_index = None
        elif choice < 0.9:
            category_index = int(rng.random() * len(_CATEGORIES))
            url = f"/c/{_CATEGORIES[category_index]}"
        else:
            if page:
                steps.append(("click", url, None))
            url = "/"
            category_index = None
        steps.append(("page_view", url, sku))
        if sku is not None and rng.random() < _ADD_TO_CART_PROBABILITY:
            steps.append(("add_to_cart", url, sku))
            cart.append(sku)
    if cart and rng.random() < _REMOVE_FROM_CART_PROBABILITY:
        removed = cart.pop(int(rng.random() * len(cart)))
        steps += [("page_view", "/cart", None), ("remove_from_cart", "/cart", removed)]
    if may_check_out and cart and rng.random() < _ABANDONED_CHECKOUT_PROBABILITY:
        steps += [("page_view", "/cart", None), ("checkout_started", "/checkout", None)]
    return steps


def _click_rows(timeline: _OrderTimeline, rng: Random, seed: int) -> list[_ClickRow]:
    rows: list[_ClickRow] = []
    sessions = 0

    def add_session(user_id: str | None, steps: list[_Step], times: list[int]) -> None:
        nonlocal sessions
        session_id = f"ses-{seed}-{sessions:08d}"
        sessions += 1
        referrer = _pick(rng, _REFERRERS)
        for position, ((event_type, url, sku), at) in enumerate(zip(steps, times, strict=True)):
            rows.append(
                (
                    at,
                    len(rows),
                    event_type,
                    session_id,
                    user_id,
                    url,
                    referrer if position == 0 else None,
                    sku,
                )
            )

    customers: dict[str, None] = {}
    for at, event_type, fields, skus in timeline.events:
        if event_type != "OrderPlaced":
            continue
        customer_id = fields["customer_id"]
        customers[customer_id] = None
        steps = _checkout_steps(rng, skus)
        moment = at - _between(rng, *_CHECKOUT_LEAD_MS)
        times = [moment]
        for _ in range(len(steps) - 1):
            moment -= _between(rng, *_CLICK_GAP_MS)
            times.append(moment)
        times.reverse()
        add_session(customer_id, steps, times)

    if timeline.events:
        known = list(customers)
        earliest = timeline.events[0][0] - _BROWSE_LEAD_MS
        latest = timeline.events[-1][0]
        browse_sessions = round(len(timeline.events) * _BROWSE_SESSIONS_PER_ORDER_EVENT)
        for _ in range(browse_sessions):
            user_id: str | None = None
            if rng.random() >= _ANONYMOUS_SHARE:
                if known and rng.random() < _KNOWN_CUSTOMER_SHARE:
                    user_id = _pick(rng, known)
                else:
                    user_id = f"cus-{_between(rng, 1, _CUSTOMER_COUNT):06d}"
            steps = _browse_steps(rng, may_check_out=user_id is not None)
            moment = _between(rng, earliest, latest)
            times = [moment]
            for _ in range(len(steps) - 1):
                moment += _between(rng, *_CLICK_GAP_MS)
                times.append(moment)
            add_session(user_id, steps, times)
    # (time, tie-breaker) is unique: the sort never compares the other fields.
    rows.sort()
    return rows


class _ClickSource:
    """Turns sorted click rows into records; makes malformed clicks in between."""

    def __init__(self, rng: Random, seed: int, clock: _MillisClock, rows: list[_ClickRow]) -> None:
        self.rng = rng
        self._seed = seed
        self._clock = clock
        self._rows = iter(rows)
        self._valid_emitted = 0
        self._malformed_emitted = 0
        self._last_time = clock.format(rows[0][0] if rows else 0)

    def next_valid(self) -> GeneratedRecord:
        at, _, event_type, session_id, user_id, url, referrer, sku = next(self._rows)
        event_id = f"evt-c-{self._seed}-{self._valid_emitted:010d}"
        self._valid_emitted += 1
        self._last_time = self._clock.format(at)
        body = {
            "event_id": event_id,
            "event_type": event_type,
            "occurred_at": self._last_time,
            "session_id": session_id,
            "user_id": user_id,
            "url": url,
            "referrer": referrer,
            "sku": sku,
        }
        return GeneratedRecord(
            key=session_id.encode(), value=_encode(body), kind="valid", event_id=event_id
        )

    def next_malformed(self, cls: str, variant: int) -> GeneratedRecord:
        number = self._malformed_emitted
        self._malformed_emitted += 1
        session_id = f"ses-{self._seed}-m{number:07d}"
        event_id = f"evt-c-{self._seed}-m{number:09d}"
        sku = _sku(_between(self.rng, 1, _SKU_COUNT))
        body: dict[str, Any] = {
            "event_id": event_id,
            "event_type": "page_view",
            "occurred_at": self._last_time,
            "session_id": session_id,
            "user_id": None,
            "url": f"/p/{sku}",
            "referrer": None,
            "sku": sku,
        }
        value, readable = _break_body(
            body,
            cls,
            variant,
            text_field="url",
            break_type=_break_click_type,
            unknown_event_type="page_teleported",
        )
        return GeneratedRecord(
            key=session_id.encode(),
            value=value,
            kind="malformed",
            event_id=event_id if readable else None,
            malformed_class=cls,
        )


def _break_click_type(body: dict[str, Any], variant: int) -> None:
    if variant:
        body["user_id"] = 1_234_567
    else:
        body["url"] = 404


# Logs: lines about each order event, bursts of errors for failed payments.


def _log_level(rng: Random) -> str:
    draw = rng.random()
    for threshold, level in _LEVEL_THRESHOLDS:
        if draw < threshold:
            return level
    return "CRITICAL"


def _log_rows(timeline: _OrderTimeline, rng: Random) -> list[_LogRow]:
    rows: list[_LogRow] = []
    for at, event_type, attributes, _ in timeline.events:
        order_id = attributes["order_id"]
        trace_id = f"{rng.getrandbits(128):032x}"
        service, level, message = _EVENT_LINES[event_type]
        if event_type == "PaymentFailed":
            _add_payment_failure(rows, rng, at, trace_id, attributes)
        else:
            # Rows never change their attributes: sharing the fact's dict is safe.
            moment = at + _between(rng, 0, 40)
            rows.append((moment, len(rows), service, level, message, trace_id, attributes))
        for _ in range(_between(rng, *_EXTRA_LOG_LINES)):
            rows.append(_extra_log_line(rng, at, len(rows), event_type, order_id, trace_id))
    # (time, tie-breaker) is unique: the sort never compares the other fields.
    rows.sort()
    return rows


def _add_payment_failure(
    rows: list[_LogRow], rng: Random, at: int, trace_id: str, attributes: dict[str, str]
) -> None:
    """A burst of ERROR lines of one trace: retries against the provider, then the failure."""
    attempts = _between(rng, *_PAYMENT_ATTEMPTS)
    moments = [at]
    for _ in range(attempts):
        moments.append(moments[-1] - _between(rng, *_PAYMENT_RETRY_MS))
    moments.reverse()
    for attempt, moment in enumerate(moments[:-1], start=1):
        status = _pick(rng, _PROVIDER_STATUSES)
        retry = {
            "order_id": attributes["order_id"],
            "payment_id": attributes["payment_id"],
            "http_status": status,
            "attempt": str(attempt),
        }
        message = f"payment provider returned {status} (attempt {attempt} of {attempts})"
        rows.append((moment, len(rows), "payments", "ERROR", message, trace_id, retry))
    failed = {**attributes, "attempts": str(attempts)}
    rows.append((at, len(rows), "payments", "ERROR", "payment failed", trace_id, failed))
    if rng.random() < _CRITICAL_AFTER_FAILURE:
        alert = {"order_id": attributes["order_id"], "circuit": "open"}
        message = "payment provider circuit breaker open"
        moment = at + _between(rng, 1, 50)
        rows.append((moment, len(rows), "payments", "CRITICAL", message, trace_id, alert))


def _extra_log_line(
    rng: Random, at: int, seq: int, event_type: str, order_id: str, trace_id: str
) -> _LogRow:
    level = _log_level(rng)
    moment = at + _between(rng, 1, _LOG_SPREAD_MS)
    background = _BACKGROUND_MESSAGES.get(level)
    if background is not None and rng.random() < _BACKGROUND_SHARE:
        # Housekeeping outside any request: no trace, no order.
        service = _pick(rng, LOG_SERVICES)
        return (moment, seq, service, level, _pick(rng, background), None, {})
    if rng.random() < _GATEWAY_SHARE:
        method, path = _GATEWAY_ROUTES[event_type]
        status = _HTTP_STATUS[level]
        attributes = {
            "order_id": order_id,
            "http_method": method,
            "path": path,
            "http_status": status,
            "duration_ms": str(_between(rng, 3, 900)),
        }
        return (moment, seq, "gateway", level, f"{method} {path} {status}", trace_id, attributes)
    service = _EVENT_LINES[event_type][0]
    message = _pick(rng, _TRACED_MESSAGES[level])
    return (moment, seq, service, level, message, trace_id, {"order_id": order_id})


class _LogSource:
    """Turns sorted log rows into records; makes malformed lines in between."""

    def __init__(self, rng: Random, seed: int, clock: _MillisClock, rows: list[_LogRow]) -> None:
        self.rng = rng
        self._seed = seed
        self._clock = clock
        self._rows = iter(rows)
        self._valid_emitted = 0
        self._malformed_emitted = 0
        self._last_time = clock.format(rows[0][0] if rows else 0)

    def next_valid(self) -> GeneratedRecord:
        at, _, service, level, message, trace_id, attributes = next(self._rows)
        event_id = f"evt-l-{self._seed}-{self._valid_emitted:010d}"
        self._valid_emitted += 1
        self._last_time = self._clock.format(at)
        body = {
            "event_id": event_id,
            "event_type": "log",
            "occurred_at": self._last_time,
            "service": service,
            "level": level,
            "message": message,
            "trace_id": trace_id,
            "attributes": attributes,
        }
        return GeneratedRecord(
            key=service.encode(), value=_encode(body), kind="valid", event_id=event_id
        )

    def next_malformed(self, cls: str, variant: int) -> GeneratedRecord:
        number = self._malformed_emitted
        self._malformed_emitted += 1
        service = _pick(self.rng, LOG_SERVICES)
        event_id = f"evt-l-{self._seed}-m{number:09d}"
        body: dict[str, Any] = {
            "event_id": event_id,
            "event_type": "log",
            "occurred_at": self._last_time,
            "service": service,
            "level": "INFO",
            "message": "request handled",
            "trace_id": None,
            "attributes": {"http_status": "200"},
        }
        value, readable = _break_body(
            body,
            cls,
            variant,
            text_field="message",
            break_type=_break_log_type,
            unknown_event_type="metric",
        )
        return GeneratedRecord(
            key=service.encode(),
            value=value,
            kind="malformed",
            event_id=event_id if readable else None,
            malformed_class=cls,
        )


def _break_log_type(body: dict[str, Any], variant: int) -> None:
    if variant:
        body["attributes"] = {"http_status": 502}
    else:
        body["level"] = "LOUD"


def _break_body(
    body: dict[str, Any],
    cls: str,
    variant: int,
    *,
    text_field: str,
    break_type: Callable[[dict[str, Any], int], None],
    unknown_event_type: str,
) -> tuple[bytes, bool]:
    """Encode ``body`` broken as ``cls`` says; also tell whether its event_id is still readable."""
    if cls == "not_json":
        # Variant 0 cuts the closing brace off: a truncated message.
        return (b"{not json" if variant else orjson.dumps(body)[:-2]), False
    if cls == "not_utf8":
        body[text_field] = f"{body[text_field]}{_BAD_BYTES_MARKER}"
        return orjson.dumps(body).replace(_BAD_BYTES_MARKER.encode(), b"\xff\xfe"), False
    if cls == "missing_event_id":
        del body["event_id"]
        return orjson.dumps(body), False
    if cls == "wrong_type":
        break_type(body, variant)
    elif cls == "bad_timestamp":
        # Variant 1 drops the offset: a naive time is not RFC 3339.
        body["occurred_at"] = str(body["occurred_at"])[:-1] if variant else "yesterday"
    elif cls == "unknown_event_type":
        body["event_type"] = unknown_event_type
    else:  # pragma: no cover - the classes are STREAM_MALFORMED_CLASSES
        raise ValueError(f"unknown malformed class {cls!r}")
    return orjson.dumps(body), True


# --- producing internals --------------------------------------------------------------


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


class _Progress(Protocol):
    def update(self, produced: int, *, force: bool = False) -> None: ...


class _RichProgress:
    """A rich progress bar on stderr."""

    def __init__(self, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self._progress = Progress(console=Console(stderr=True), transient=False)
        self._task = self._progress.add_task("acknowledged", total=total)
        self._shown = 0

    def __enter__(self) -> _Progress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, produced: int, *, force: bool = False) -> None:
        # Refresh every chunk: a lock round trip per record would cost throughput.
        if force or produced - self._shown >= _PROGRESS_CHUNK:
            self._shown = produced
            self._progress.update(self._task, completed=produced)


class _LineProgress:
    """A plain line on stderr every 10% (every 100,000 records if the total is unknown)."""

    def __init__(self, total: int | None) -> None:
        self._total = total
        self._next_line = self._threshold(1)
        self._step = 1
        self._last_printed = -1

    def __enter__(self) -> _Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def update(self, produced: int, *, force: bool = False) -> None:
        if produced >= self._next_line:
            while produced >= self._next_line:
                self._step += 1
                self._next_line = self._threshold(self._step)
            self._print(produced)
        elif force and produced != self._last_printed:
            self._print(produced)

    def _threshold(self, step: int) -> int:
        if self._total is None:
            return step * _UNKNOWN_TOTAL_LINE_EVERY
        if step > 10:
            return sys.maxsize
        # Ceiling of step/10 of the total, and at least 1 record.
        return max(1, -(-self._total * step // 10))

    def _print(self, produced: int) -> None:
        self._last_printed = produced
        if self._total:
            line = (
                f"acknowledged {produced:,}/{self._total:,} records "
                f"({100 * produced // self._total}%)"
            )
        else:
            line = f"acknowledged {produced:,} records"
        print(line, file=sys.stderr, flush=True)
