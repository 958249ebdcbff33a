"""Deterministic synthetic ``orders`` workflow events, and a Kafka producer for them.

Generation is pure: the same arguments give the same records, byte for byte,
on every machine (no wall clock, no global random state). Each record is one
Kafka message of the ``orders`` topic (CONTRACT.md section 2): its key is the
``order_id`` and its value an orjson-encoded JSON object, or, for the
malformed share, bytes that the flow must dead-letter.

The workflow per order: ``OrderPlaced``, ``StockReserved``, then either
``PaymentAuthorized``, ``StockDecreased``, ``PurchaseOrderSubmitted`` and one
``CustomerNotified`` per channel (email, then SMS), or ``PaymentFailed``,
``CustomerNotified`` (email), ``FinanceAlerted`` and ``StockReleased``. The
events of up to 16 concurrent orders are interleaved; each order's events keep
their workflow order and ``occurred_at`` never goes backwards.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from random import Random
from types import TracebackType
from typing import Any, Final, Literal, Protocol

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streambatch.errors import TransientError

__all__ = [
    "DEFAULT_MALFORMED_CLASSES",
    "DEFAULT_START",
    "PRODUCER_DEFAULTS",
    "GeneratedRecord",
    "GenerationSummary",
    "ProduceReport",
    "ProduceTimeoutError",
    "RecordKind",
    "generate_order_records",
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
    """One Kafka message to produce to the ``orders`` topic.

    Attributes:
        key: The ``order_id`` as UTF-8 bytes; malformed records have one too.
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
        orders_placed: Distinct valid ``OrderPlaced`` events.
        valid_event_ids: The ``event_id`` of every valid record.
        malformed_by_class: Malformed records per class.
        total_amount_sum: Sum of ``total_amount`` over distinct valid ``OrderPlaced``.
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
) -> Iterator[GeneratedRecord]:
    """Yield ``count`` records of the orders workflow, deterministically for ``seed``.

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
    workflow = _OrderWorkflow(Random(seed), seed, first.astimezone(UTC))
    return _generate(
        workflow, valid=valid, duplicates=duplicates, malformed=malformed, classes=classes
    )


def summarize(records: Iterable[GeneratedRecord]) -> GenerationSummary:
    """Count generated records the way a correct flow must see them.

    Valid records are counted once per ``event_id``, so summarising the same
    records twice over gives the same ``total_amount_sum``.
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
    producer = Producer({**PRODUCER_DEFAULTS, **producer_config})
    produced = 0
    started = time.monotonic()
    with _RichProgress(total) if use_bar else _LineProgress(total) as bar:
        for record in records:
            if rate is not None:
                _wait_until(producer, started + produced / rate)
            _produce_one(producer, topic, record, tally)
            produced += 1
            producer.poll(0)
            bar.update(produced)
        bar.update(produced, force=True)
    remaining = producer.flush(flush_timeout.total_seconds())
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


# --- generation internals -------------------------------------------------------------


def _generate(
    workflow: _OrderWorkflow,
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
        self._task = self._progress.add_task("producing", total=total)

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
        if force or produced % _PROGRESS_CHUNK == 0:
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
                f"produced {produced:,}/{self._total:,} records ({100 * produced // self._total}%)"
            )
        else:
            line = f"produced {produced:,} records"
        print(line, file=sys.stderr, flush=True)
