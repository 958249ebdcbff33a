"""The orders stream: the workflow of concurrent orders, one event at a time."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from random import Random
from typing import Any, Final

import orjson

from generator.malformed import DEFAULT_MALFORMED_CLASSES, break_order_body
from generator.records import GeneratedRecord, interleave

__all__ = [
    "CUSTOMER_COUNT",
    "DEFAULT_START",
    "SKU_COUNT",
    "generate_order_records",
]

DEFAULT_START: Final[datetime] = datetime(2026, 11, 28, tzinfo=UTC)
"""``occurred_at`` of the first event unless told otherwise: fixed, so output is reproducible."""

SKU_COUNT: Final = 2_000
"""SKUs are ``SKU-00001`` to ``SKU-02000``, in every stream."""

CUSTOMER_COUNT: Final = 5_000
"""Customers are ``cus-000001`` to ``cus-005000``, in every stream."""

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
_MAX_IN_FLIGHT: Final = 16
_NEW_ORDER_PROBABILITY: Final = 0.3
# Mean step ~310 ms: 50,000 events span about 4.3 hours of event time.
_MIN_STEP_MS: Final = 20
_MAX_STEP_MS: Final = 600


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
    return interleave(
        workflow, valid=valid, duplicates=duplicates, malformed=malformed, classes=classes
    )


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
        event_id = f"evt-{self._seed}-m{number:09d}"
        placed = self._order_placed_fields(order_id)
        body: dict[str, Any] = {
            "event_id": event_id,
            "event_type": "OrderPlaced",
            "occurred_at": self._tick(),
            **placed.fields,
        }
        value, readable = break_order_body(body, cls, variant)
        return GeneratedRecord(
            key=order_id.encode(),
            value=value,
            kind="malformed",
            event_id=event_id if readable else None,
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
                    "sku": f"SKU-{rng.randint(1, SKU_COUNT):05d}",
                    "quantity": quantity,
                    "unit_price": _format_cents(price_cents),
                }
            )
        total = _format_cents(total_cents)
        fields = {
            "order_id": order_id,
            "customer_id": f"cus-{rng.randint(1, CUSTOMER_COUNT):06d}",
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
