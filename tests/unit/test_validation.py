"""Validation of every order event type and of every malformed class."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from connectors.records import ClosedBatch, RecordChunk
from events import ORDERS
from flows.validation import validate_batch

ITEMS = [{"sku": "sku-1", "quantity": 2, "unit_price": "19.99"}]
BASE = {"event_id": "evt-1", "occurred_at": "2026-11-28T14:03:11.123+01:00", "order_id": "o-1"}

VALID_EVENTS: dict[str, dict[str, Any]] = {
    "OrderPlaced": {
        "customer_id": "c-1",
        "currency": "EUR",
        "items": ITEMS,
        "total_amount": "39.98",
    },
    "StockReserved": {"items": ITEMS},
    "StockReleased": {"items": ITEMS},
    "StockDecreased": {"items": ITEMS},
    "PaymentAuthorized": {"payment_id": "p-1", "amount": "39.98", "currency": "EUR"},
    "PaymentFailed": {
        "payment_id": "p-1",
        "amount": "39.98",
        "currency": "EUR",
        "reason": "card declined",
    },
    "PurchaseOrderSubmitted": {"warehouse": "dc-north"},
    "CustomerNotified": {
        "customer_id": "c-1",
        "channel": "sms",
        "template": "order_confirmed",
    },
    "FinanceAlerted": {"reason": "payment failed"},
    "StockUnavailable": {"items": ITEMS, "reason": "2 x SKU-1 not available"},
    "PaymentRefunded": {
        "payment_id": "p-1",
        "amount": "39.98",
        "currency": "EUR",
        "reason": "out of stock",
    },
}


def batch_of(values: list[bytes | None]) -> ClosedBatch:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    records = RecordChunk(
        topic="orders",
        partition=2,
        offsets=list(range(100, 100 + len(values))),
        keys=[b"o-1"] * len(values),
        values=values,
        headers=[[("trace", b"t-1")]] * len(values),
    )
    return ClosedBatch(records, "end", now, now, sum(len(v or b"") for v in values))


def event(event_type: str, **changes: Any) -> bytes:
    body = {**BASE, "event_type": event_type, **VALID_EVENTS[event_type], **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def test_every_schema_event_type_is_covered() -> None:
    assert set(VALID_EVENTS) == set(ORDERS.event_types)


@pytest.mark.parametrize("event_type", sorted(VALID_EVENTS))
def test_each_event_type_validates_to_a_lake_row(event_type: str) -> None:
    result = validate_batch(ORDERS, batch_of([event(event_type)]))
    assert result.dead_letters == []
    (row,) = result.table.to_pylist()
    assert row["event_type"] == event_type
    # Normalised to UTC, microseconds.
    assert row["occurred_at"] == datetime(2026, 11, 28, 13, 3, 11, 123000, tzinfo=UTC)
    assert (row["event_date"], row["event_hour"]) == ("2026-11-28", "13")
    assert (row["_topic"], row["_partition"], row["_offset"]) == ("orders", 2, 100)
    assert result.table.column("event_id").to_pylist() == ["evt-1"]
    assert result.table.schema == ORDERS.table_schema


def test_money_is_exact_decimal() -> None:
    result = validate_batch(ORDERS, batch_of([event("OrderPlaced", total_amount="0.1")]))
    (row,) = result.table.to_pylist()
    assert row["total_amount"] == Decimal("0.1000")
    assert row["items"][0]["unit_price"] == Decimal("19.99")


def test_unknown_fields_are_kept() -> None:
    result = validate_batch(ORDERS, batch_of([event("FinanceAlerted", coupon="X1")]))
    (row,) = result.table.to_pylist()
    assert orjson.loads(row["_extra"]) == {"coupon": "X1"}


MALFORMED: list[tuple[str, bytes | None, str]] = [
    ("not json", b"{not json", "InvalidJson"),
    ("not utf-8", b'{"event_id": "\xff\xfe"}', "NotUtf8"),
    ("array", b"[1, 2]", "NotAnObject"),
    ("tombstone", None, "EmptyValue"),
    ("missing event_id", event("FinanceAlerted", event_id=...), "MissingField"),
    ("missing event_type", orjson.dumps({**BASE, "reason": "x"}), "MissingField"),
    ("unknown event_type", orjson.dumps({**BASE, "event_type": "Nope"}), "UnknownEventType"),
    ("wrong type", event("OrderPlaced", total_amount={"a": 1}), "WrongType"),
    (
        "quantity as text",
        event("StockReserved", items=[{"sku": "s", "quantity": "two", "unit_price": "1"}]),
        "WrongType",
    ),
    (
        "timestamp without offset",
        event("FinanceAlerted", occurred_at="2026-11-28T10:00:00"),
        "BadTimestamp",
    ),
    ("timestamp as number", event("FinanceAlerted", occurred_at=1700000000), "BadTimestamp"),
    ("timestamp as words", event("FinanceAlerted", occurred_at="yesterday"), "BadTimestamp"),
    (
        "negative quantity",
        event("StockReserved", items=[{"sku": "s", "quantity": -1, "unit_price": "1"}]),
        "OutOfRange",
    ),
    ("negative money", event("OrderPlaced", total_amount="-1.00"), "OutOfRange"),
    ("too many decimals", event("OrderPlaced", total_amount="1.00001"), "OutOfRange"),
    ("bad currency", event("OrderPlaced", currency="euro"), "OutOfRange"),
    ("empty event_id", event("FinanceAlerted", event_id=""), "OutOfRange"),
    ("event_id too long", event("FinanceAlerted", event_id="x" * 129), "OutOfRange"),
    ("no items", event("StockReserved", items=[]), "OutOfRange"),
    ("bad channel", event("CustomerNotified", channel="pigeon"), "OutOfRange"),
]


@pytest.mark.parametrize(("name", "value", "error_class"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_record_becomes_a_dead_letter(
    name: str, value: bytes | None, error_class: str
) -> None:
    result = validate_batch(ORDERS, batch_of([event("FinanceAlerted"), value]))
    assert result.table.num_rows == 1
    (letter,) = result.dead_letters
    assert letter.error_class == error_class, letter.error_message
    assert letter.value == value  # original bytes, untouched
    assert letter.key == b"o-1"
    assert letter.headers == [("trace", b"t-1")]
    assert letter.offset == 101
    assert letter.error_message


def test_rows_and_dead_letters_partition_the_input() -> None:
    values: list[bytes | None] = [
        event("FinanceAlerted", event_id=f"e{i}") if i % 3 else b"{" for i in range(30)
    ]
    result = validate_batch(ORDERS, batch_of(values))
    offsets = result.table.column("_offset").to_pylist() + [d.offset for d in result.dead_letters]
    assert sorted(offsets) == list(range(100, 130))
    assert len(result.dead_letters) == 10
