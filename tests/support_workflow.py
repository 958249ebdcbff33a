"""Expected outcome of the order workflow handlers, and the check of a final state."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

from generator import generate_order_records
from handlers.workflow import stable_fraction
from tests.support import read_topic
from tests.support_handlers import HandlerSetup

INITIAL_STOCK = 10_000
SHIPPED_WORKERS = (
    "inventory-reserve",
    "inventory-decrease",
    "inventory-release",
    "payments",
    "payments-refund",
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


# --- the per-order invariants (whatever the stock, the timing and the crashes) -------------

PAID_IN_STOCK = "paid, in stock"
PAID_OUT_OF_STOCK = "paid, out of stock"
FAILED_RESERVED = "payment failed, reserved"
FAILED_OUT_OF_STOCK = "payment failed, out of stock"


def order_outcomes(
    orders: Sequence[Mapping[str, Any]],
    published: Iterable[Mapping[str, Any]],
    on_hand: Mapping[str, int],
    reserved: Mapping[str, int],
    initial_stock: int,
) -> Counter[str]:
    """Check every order's steps against its two outcomes; how many orders ended which way.

    ``published``: the events the handlers published (repeats of one event id are
    dropped here, as the lake and the inboxes drop them). ``on_hand``/``reserved``:
    the final stock per SKU (a SKU never reserved may be missing).
    """
    distinct = {str(e["event_id"]): e for e in published if e["event_type"] != "OrderPlaced"}
    steps: dict[str, Counter[str]] = defaultdict(Counter)
    for event in distinct.values():
        kind = str(event["event_type"])
        if kind == "CustomerNotified":
            kind = f"{event['template']}/{event['channel']}"
        steps[str(event["order_id"])][kind] += 1
    outcomes: Counter[str] = Counter()
    sold: Counter[str] = Counter()
    for order in orders:
        order_id = str(order["order_id"])
        seen = steps[order_id]
        assert seen["StockReserved"] + seen["StockUnavailable"] == 1, (order_id, seen)
        assert seen["PaymentAuthorized"] + seen["PaymentFailed"] == 1, (order_id, seen)
        in_stock, paid = seen["StockReserved"] == 1, seen["PaymentAuthorized"] == 1
        if paid and in_stock:
            outcome = PAID_IN_STOCK
            expected = ["StockDecreased", "PurchaseOrderSubmitted", "order_confirmed"]
            for item in order["items"]:
                sold[str(item["sku"])] += int(item["quantity"])
        elif paid:
            outcome = PAID_OUT_OF_STOCK
            expected = ["PaymentRefunded", "FinanceAlerted", "order_cancelled_refunded"]
        else:
            outcome = FAILED_RESERVED if in_stock else FAILED_OUT_OF_STOCK
            expected = ["FinanceAlerted", "payment_failed"]
            expected += ["StockReleased"] if in_stock else []
        outcomes[outcome] += 1
        want = Counter(
            {
                "StockReserved" if in_stock else "StockUnavailable": 1,
                "PaymentAuthorized" if paid else "PaymentFailed": 1,
            }
        )
        for step in expected:
            if step[0].islower():  # a customer message: one per channel
                want[f"{step}/email"] = want[f"{step}/sms"] = 1
            else:
                want[step] = 1
        assert seen == want, f"{order_id} ({outcome}): {dict(seen)} != {dict(want)}"
    skus = {str(item["sku"]) for order in orders for item in order["items"]}
    for sku in skus:
        assert on_hand.get(sku, initial_stock) == initial_stock - sold[sku], sku
        assert reserved.get(sku, 0) == 0, f"{sku}: units still reserved"
    return outcomes


def published_events(setup: HandlerSetup) -> list[dict[str, Any]]:
    """Every event the handlers published to the test's orders topic, decoded."""
    return [
        orjson.loads(m.value())
        for m in read_topic(setup.topics.bootstrap_servers, setup.topics.name)
        if "streambatch.handler" in dict(m.headers() or [])
    ]


def stock_levels(setup: HandlerSetup) -> tuple[dict[str, int], dict[str, int]]:
    """On hand and reserved units per SKU, from the store."""
    rows = setup.rows("SELECT sku, on_hand, reserved FROM inventory_stock")
    return {r[0]: int(r[1]) for r in rows}, {r[0]: int(r[2]) for r in rows}


def outcomes_settled(setup: HandlerSetup, orders: int) -> bool:
    """Every order has both outcomes and every follow-up step recorded in the store."""
    decided = setup.rows(
        "SELECT COUNT(*) FROM inventory_reservations"
        " WHERE state IN ('decreased', 'released', 'unavailable')"
    )
    if _count(setup, "payments") != orders or not decided or decided[0][0] != orders:
        return False
    refunds_due = setup.rows(
        "SELECT COUNT(*) FROM payments WHERE status = 'authorized' AND order_id IN"
        " (SELECT order_id FROM inventory_reservations WHERE state = 'unavailable')"
    )
    decreased = setup.rows("SELECT COUNT(*) FROM inventory_reservations WHERE state = 'decreased'")[
        0
    ][0]
    failed_or_refunded = setup.rows(
        "SELECT COUNT(*) FROM payments WHERE status IN ('failed', 'refunded')"
    )[0][0]
    return (
        refunds_due[0][0] == 0
        and _count(setup, "purchase_orders") == decreased
        and _count(setup, "finance_alerts") == failed_or_refunded
        and _count(setup, "notifications") == 2 * orders
    )


def _count(setup: HandlerSetup, table: str) -> int:
    rows = setup.rows(f"SELECT COUNT(*) FROM {table}")
    return int(rows[0][0]) if rows else 0
