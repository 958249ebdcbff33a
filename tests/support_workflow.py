"""Expected outcome of the order workflow handlers, and the check of a final state."""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import orjson

from handlers.workflow import stable_fraction
from streambatch.generator import generate_order_records
from tests.support import read_topic
from tests.support_handlers import HandlerSetup

INITIAL_STOCK = 10_000
SHIPPED_WORKERS = (
    "inventory-reserve",
    "inventory-decrease",
    "inventory-release",
    "payments",
    "distribution",
    "email-sender",
    "sms-sender",
    "finance",
)


def placed_orders(count: int, seed: int) -> list[dict[str, Any]]:
    records = generate_order_records(
        count, seed=seed, duplicate_ratio=0, malformed_ratio=0, checkouts_only=True
    )
    return [orjson.loads(record.value) for record in records]


def expected_outcome(orders: list[dict[str, Any]]) -> tuple[set[str], dict[str, int]]:
    """Refused order ids (as the simulated provider decides) and final on-hand stock per SKU."""
    refused = {o["order_id"] for o in orders if stable_fraction("payments", o["order_id"]) < 0.1}
    on_hand: dict[str, int] = defaultdict(lambda: INITIAL_STOCK)
    for order in orders:
        for item in order["items"]:
            on_hand[item["sku"]] += 0 if order["order_id"] in refused else -item["quantity"]
    return refused, dict(on_hand)


def workflow_done(setup: HandlerSetup, orders: int, refused: int) -> bool:
    paid = orders - refused
    counts = {
        "payments": setup.rows("SELECT COUNT(*) FROM payments"),
        "settled": setup.rows(
            "SELECT COUNT(*) FROM inventory_reservations WHERE state IN ('decreased', 'released')"
        ),
        "purchase_orders": setup.rows("SELECT COUNT(*) FROM purchase_orders"),
        "notifications": setup.rows("SELECT COUNT(*) FROM notifications"),
        "finance_alerts": setup.rows("SELECT COUNT(*) FROM finance_alerts"),
    }
    values = {name: (rows[0][0] if rows else 0) for name, rows in counts.items()}
    return values == {
        "payments": orders,
        "settled": orders,
        "purchase_orders": paid,
        "notifications": 2 * orders,
        "finance_alerts": refused,
    }


def check_final_state(
    setup: HandlerSetup, orders: list[dict[str, Any]], refused: set[str], on_hand: dict[str, int]
) -> None:
    """The store and the published events say exactly what the workflow must have done."""
    order_ids = {o["order_id"] for o in orders}
    payments = dict(setup.rows("SELECT order_id, status FROM payments"))
    assert set(payments) == order_ids
    assert {o for o, status in payments.items() if status == "failed"} == refused
    stock = {
        sku: (left, held)
        for sku, left, held in setup.rows("SELECT sku, on_hand, reserved FROM inventory_stock")
    }
    assert {sku: left for sku, (left, _) in stock.items()} == on_hand
    assert all(held == 0 for _, held in stock.values()), "every reservation settled"
    states = dict(setup.rows("SELECT order_id, state FROM inventory_reservations"))
    assert {o for o, state in states.items() if state == "released"} == refused
    assert {o for o, state in states.items() if state == "decreased"} == order_ids - refused
    assert {row[0] for row in setup.rows("SELECT order_id FROM finance_alerts")} == refused
    notified = Counter(
        (template, channel)
        for template, channel in setup.rows("SELECT template, channel FROM notifications")
    )
    paid = len(order_ids) - len(refused)
    assert notified == {
        ("order_confirmed", "email"): paid,
        ("order_confirmed", "sms"): paid,
        ("payment_failed", "email"): len(refused),
        ("payment_failed", "sms"): len(refused),
    }
    published = [
        orjson.loads(m.value())
        for m in read_topic(setup.topics.bootstrap_servers, setup.topics.name)
    ]
    by_id = {
        event["event_id"]: event for event in published if event["event_type"] != "OrderPlaced"
    }
    per_type = Counter(event["event_type"] for event in by_id.values())
    assert per_type == {
        "StockReserved": len(order_ids),
        "PaymentAuthorized": paid,
        "PaymentFailed": len(refused),
        "StockDecreased": paid,
        "StockReleased": len(refused),
        "PurchaseOrderSubmitted": paid,
        "CustomerNotified": 2 * len(order_ids),
        "FinanceAlerted": len(refused),
    }
    # Never two payments (two distinct events) for one order.
    payment_events = Counter(
        e["order_id"] for e in by_id.values() if e["event_type"].startswith("Payment")
    )
    assert set(payment_events.values()) == {1}
    amounts = {o["order_id"]: Decimal(o["total_amount"]) for o in orders}
    assert all(
        Decimal(e["amount"]) == amounts[e["order_id"]]
        for e in by_id.values()
        if e["event_type"].startswith("Payment")
    )
