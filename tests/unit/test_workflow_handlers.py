"""The order workflow handlers on a real SQLite store, without Kafka.

Every event is applied the way a queue worker applies it: the inbox claim, the
handler's state change and its outbox rows in one transaction. Every event a
handler publishes is checked against the orders schema on the way out.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import Any

import orjson
import pytest

from foundation.errors import ConfigError, TerminalError, TransientError
from generator import generate_order_records
from handlers.config import load_handlers_config
from handlers.rules import RuleSet
from handlers.runtime import (
    Handler,
    HandlerContext,
    HandlerFactory,
    derived_event_id,
    install,
    resolve_handler,
)
from handlers.schemas import InvalidEventError, event_schema
from handlers.store import OutboxMessage, Store, open_store
from handlers.workflow import (
    AlertFinance,
    AuthorizePayment,
    DecreaseStock,
    NotifyCustomer,
    RefundPayment,
    ReleaseStock,
    ReserveStock,
    SubmitPurchaseOrder,
    stable_fraction,
)
from tests.support_workflow import (
    FAILED_OUT_OF_STOCK,
    FAILED_RESERVED,
    PAID_IN_STOCK,
    PAID_OUT_OF_STOCK,
    order_outcomes,
)

ORDERS = event_schema("orders")

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "handlers.toml"
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
FAILURE_REASONS = {"insufficient_funds", "card_declined", "fraud_suspected", "expired_card"}
_event_ids = itertools.count()


def clock() -> datetime:
    return NOW


def open_test_store(path: Path) -> Store:
    return open_store(f"sqlite:///{path}", now=clock)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_test_store(tmp_path / "state.db") as opened:
        yield opened


# --- events -----------------------------------------------------------------------------------


def new_event_id() -> str:
    return f"evt-test-{next(_event_ids)}"


def order_placed(
    order_id: str,
    lines: Sequence[tuple[str, int]],
    *,
    event_id: str | None = None,
    customer_id: str = "cus-000042",
) -> dict[str, Any]:
    items = [{"sku": sku, "quantity": quantity, "unit_price": "2.50"} for sku, quantity in lines]
    total = sum(Decimal("2.50") * quantity for _, quantity in lines)
    event = {
        "event_id": event_id or new_event_id(),
        "event_type": "OrderPlaced",
        "occurred_at": "2026-11-28T11:00:00.000Z",
        "order_id": order_id,
        "customer_id": customer_id,
        "currency": "EUR",
        "items": items,
        "total_amount": str(total),
    }
    event_schema("orders").check(event)
    return event


def payment(
    event_type: str, order_id: str, *, event_id: str | None = None, reason: str = "card_declined"
) -> dict[str, Any]:
    event = {
        "event_id": event_id or new_event_id(),
        "event_type": event_type,
        "occurred_at": "2026-11-28T11:00:01.000Z",
        "order_id": order_id,
        "payment_id": f"pay-{order_id}",
        "amount": "5.00",
        "currency": "EUR",
    }
    if event_type in ("PaymentFailed", "PaymentRefunded"):
        event["reason"] = reason
    event_schema("orders").check(event)
    return event


def stock_event(
    event_type: str, order_id: str, lines: Sequence[tuple[str, int]] = (("SKU-A", 1),)
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": new_event_id(),
        "event_type": event_type,
        "occurred_at": "2026-11-28T11:00:02.000Z",
        "order_id": order_id,
        "items": [{"sku": sku, "quantity": q, "unit_price": "2.50"} for sku, q in lines],
    }
    if event_type == "StockUnavailable":
        event["reason"] = "1 x SKU-A not available"
    event_schema("orders").check(event)
    return event


def generated_orders(count: int, seed: int = 42) -> list[dict[str, Any]]:
    records = generate_order_records(
        count, seed=seed, checkouts_only=True, duplicate_ratio=0, malformed_ratio=0
    )
    return [orjson.loads(record.value) for record in records]


# --- applying events ---------------------------------------------------------------------------


def build(store: Store, factory: HandlerFactory, **options: Any) -> Handler:
    handler = factory(options)
    install(handler, store)
    return handler


def body(message: OutboxMessage) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(message.value)
    return decoded


def check_published(message: OutboxMessage, worker: str, cause: Mapping[str, Any]) -> None:
    """What every published event must be: valid, traceable, deterministic in its id."""
    event = body(message)
    event_schema("orders").check(event)
    assert message.topic == "orders"
    assert message.event_id == event["event_id"]
    assert message.key == str(event["order_id"]).encode()
    assert event["occurred_at"] == "2026-11-28T12:00:00.000Z"
    assert dict(message.headers) == {
        "streambatch.cause": str(cause["event_id"]).encode(),
        "streambatch.handler": worker.encode(),
    }
    detail = event.get("channel", "") if event["event_type"] == "CustomerNotified" else ""
    assert event["event_id"] == derived_event_id(
        worker, str(cause["event_id"]), event["event_type"], detail
    )


def apply(
    store: Store, handler: Handler, event: Mapping[str, Any], worker: str = "worker"
) -> list[OutboxMessage]:
    """As the queue worker does: claim, handle, commit; the messages this published."""
    before = {message.id for message in store.pending_outbox(limit=100_000)}
    with store.transaction() as transaction:
        if transaction.claim(worker, str(event["event_id"])):
            context = HandlerContext(
                worker=worker,
                cause=event,
                transaction=transaction,
                publish_topic="orders",
                now=clock,
                publish_schema=ORDERS,
            )
            handler.handle(event, context)
    published = [m for m in store.pending_outbox(limit=100_000) if m.id not in before]
    for message in published:
        check_published(message, worker, event)
    return published


def query(store: Store, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with store.transaction() as transaction:
        return transaction.query(sql, params)


def stock(store: Store) -> dict[str, tuple[int, int]]:
    """SKU -> (on_hand, reserved)."""
    rows = query(store, "SELECT sku, on_hand, reserved FROM inventory_stock")
    return {str(sku): (int(on_hand), int(reserved)) for sku, on_hand, reserved in rows}


def outbox_size(store: Store) -> int:
    return len(store.pending_outbox(limit=100_000))


# --- inventory -----------------------------------------------------------------------------


def test_reserve_sets_items_aside_and_publishes_them(store: Store) -> None:
    reserve = build(store, ReserveStock, initial_stock=10)
    order = order_placed("ord-1", [("SKU-B", 2), ("SKU-A", 1)])
    [message] = apply(store, reserve, order, "inventory-reserve")
    assert stock(store) == {"SKU-A": (10, 1), "SKU-B": (10, 2)}
    event = body(message)
    assert event["event_type"] == "StockReserved"
    assert event["order_id"] == "ord-1"
    assert event["items"] == order["items"]
    assert event["event_id"] == derived_event_id(
        "inventory-reserve", order["event_id"], "StockReserved"
    )
    assert query(store, "SELECT order_id, state FROM inventory_reservations") == [
        ("ord-1", "reserved")
    ]


@pytest.mark.parametrize(("outcome", "settled"), [("Authorized", 95), ("Failed", 100)])
def test_a_payment_outcome_before_the_reservation_is_settled_by_the_reservation(
    store: Store, outcome: str, settled: int
) -> None:
    reserve = build(store, ReserveStock, initial_stock=100)
    settle = build(store, DecreaseStock if outcome == "Authorized" else ReleaseStock)
    # Nothing to settle yet, and nothing to wait for: the outcome is recorded.
    assert apply(store, settle, payment(f"Payment{outcome}", "ord-1"), "inventory-settle") == []
    published = apply(store, reserve, order_placed("ord-1", [("SKU-A", 5)]), "inventory-reserve")
    expected = "StockDecreased" if outcome == "Authorized" else "StockReleased"
    assert [body(m)["event_type"] for m in published] == ["StockReserved", expected]
    assert stock(store) == {"SKU-A": (settled, 0)}
    # The outcome redelivered later changes nothing.
    assert apply(store, settle, payment(f"Payment{outcome}", "ord-1")) == []
    assert stock(store) == {"SKU-A": (settled, 0)}


def test_decrease_takes_reserved_units_out_of_stock(store: Store) -> None:
    reserve = build(store, ReserveStock, initial_stock=100)
    decrease = build(store, DecreaseStock)
    # One SKU on two lines: its quantities add up.
    order = order_placed("ord-1", [("SKU-A", 2), ("SKU-B", 4), ("SKU-A", 3)])
    apply(store, reserve, order)
    assert stock(store) == {"SKU-A": (100, 5), "SKU-B": (100, 4)}
    [message] = apply(store, decrease, payment("PaymentAuthorized", "ord-1"), "inventory-decrease")
    assert stock(store) == {"SKU-A": (95, 0), "SKU-B": (96, 0)}
    event = body(message)
    assert event["event_type"] == "StockDecreased"
    assert event["items"] == order["items"]
    # The same payment re-sent under a new event id changes nothing.
    assert apply(store, decrease, payment("PaymentAuthorized", "ord-1")) == []
    assert stock(store) == {"SKU-A": (95, 0), "SKU-B": (96, 0)}


def test_release_frees_reserved_units_and_keeps_them_on_hand(store: Store) -> None:
    reserve = build(store, ReserveStock, initial_stock=100)
    release = build(store, ReleaseStock)
    decrease = build(store, DecreaseStock)
    apply(store, reserve, order_placed("ord-1", [("SKU-A", 7)]))
    apply(store, reserve, order_placed("ord-2", [("SKU-A", 1)]))
    [message] = apply(store, release, payment("PaymentFailed", "ord-1"), "inventory-release")
    assert stock(store) == {"SKU-A": (100, 1)}
    assert body(message)["event_type"] == "StockReleased"
    assert body(message)["items"][0]["quantity"] == 7
    assert apply(store, release, payment("PaymentFailed", "ord-1")) == []
    assert stock(store) == {"SKU-A": (100, 1)}
    # A released reservation can no longer be taken out of stock.
    with pytest.raises(TerminalError, match="released"):
        apply(store, decrease, payment("PaymentAuthorized", "ord-1"))
    assert stock(store) == {"SKU-A": (100, 1)}


def test_same_order_under_another_event_id_reserves_nothing_more(store: Store) -> None:
    reserve = build(store, ReserveStock, initial_stock=100)
    apply(store, reserve, order_placed("ord-1", [("SKU-A", 3)], event_id="evt-first"))
    again = apply(store, reserve, order_placed("ord-1", [("SKU-A", 3)], event_id="evt-resent"))
    assert again == []
    assert stock(store) == {"SKU-A": (100, 3)}
    assert outbox_size(store) == 1


def test_exactly_the_available_units_can_be_reserved(store: Store) -> None:
    reserve = build(store, ReserveStock, initial_stock=5)
    apply(store, reserve, order_placed("ord-1", [("SKU-A", 2)]))
    apply(store, reserve, order_placed("ord-2", [("SKU-A", 3)]))
    assert stock(store) == {"SKU-A": (5, 5)}
    [message] = apply(store, reserve, order_placed("ord-3", [("SKU-A", 1)]))
    event = body(message)
    assert event["event_type"] == "StockUnavailable"
    assert "1 x SKU-A" in event["reason"]
    assert stock(store) == {"SKU-A": (5, 5)}


def test_out_of_stock_is_an_outcome_and_reserves_nothing_of_the_order(store: Store) -> None:
    reserve = build(store, ReserveStock, initial_stock=3)
    apply(store, reserve, order_placed("ord-1", [("SKU-A", 1)]))
    before = stock(store)
    # SKU-A and SKU-B fit, SKU-C does not: nothing of the order may stay reserved.
    order = order_placed("ord-2", [("SKU-C", 4), ("SKU-A", 2), ("SKU-B", 1)])
    [message] = apply(store, reserve, order, "inventory-reserve")
    event = body(message)
    assert (event["event_type"], event["order_id"]) == ("StockUnavailable", "ord-2")
    assert "4 x SKU-C" in event["reason"]
    assert stock(store) == before
    assert query(store, "SELECT order_id, state FROM inventory_reservations ORDER BY 1") == [
        ("ord-1", "reserved"),
        ("ord-2", "unavailable"),
    ]
    # Decided once: the same order re-sent under a new event id changes nothing.
    assert apply(store, reserve, order_placed("ord-2", [("SKU-A", 1)]), "inventory-reserve") == []


def test_decrease_and_release_do_nothing_for_an_order_out_of_stock(store: Store) -> None:
    reserve = build(store, ReserveStock, initial_stock=0)
    decrease, release = build(store, DecreaseStock), build(store, ReleaseStock)
    apply(store, reserve, order_placed("ord-1", [("SKU-A", 1)]))
    apply(store, reserve, order_placed("ord-2", [("SKU-A", 1)]))
    assert apply(store, decrease, payment("PaymentAuthorized", "ord-1"), "inventory-decrease") == []
    assert apply(store, release, payment("PaymentFailed", "ord-2"), "inventory-release") == []
    assert all(held == 0 for _, held in stock(store).values())
    states = query(store, "SELECT DISTINCT state FROM inventory_reservations")
    assert states == [("unavailable",)]


def test_refund_pays_back_a_taken_payment_once_also_when_asked_before_it(
    store: Store,
) -> None:
    authorize = build(store, AuthorizePayment, failure_rate=0.0)
    refund = build(store, RefundPayment)
    unavailable = stock_event("StockUnavailable", "ord-1")
    # Out of stock before the payment: the refund is due, paid as soon as the payment is.
    assert apply(store, refund, unavailable, "payments-refund") == []
    authorized, message = apply(store, authorize, order_placed("ord-1", [("SKU-A", 2)]), "payments")
    assert body(authorized)["event_type"] == "PaymentAuthorized"
    event = body(message)
    assert event["event_type"] == "PaymentRefunded"
    assert event["payment_id"] == body(authorized)["payment_id"]
    assert Decimal(event["amount"]) == Decimal("5.00")
    assert "out of stock" in event["reason"]
    assert query(store, "SELECT status FROM payments") == [("refunded",)]
    # Redelivered, or the same order re-sent: never a second refund.
    again = stock_event("StockUnavailable", "ord-1")
    assert apply(store, refund, again, "payments-refund") == []
    assert apply(store, authorize, order_placed("ord-1", [("SKU-A", 2)]), "payments") == []
    # Asked after the payment: refunded at once.
    apply(store, authorize, order_placed("ord-2", [("SKU-A", 1)]), "payments")
    [late] = apply(store, refund, stock_event("StockUnavailable", "ord-2"), "payments-refund")
    assert body(late)["event_type"] == "PaymentRefunded"


def test_a_refused_payment_needs_no_refund(store: Store) -> None:
    authorize = build(store, AuthorizePayment, failure_rate=1.0)
    refund = build(store, RefundPayment)
    apply(store, authorize, order_placed("ord-1", [("SKU-A", 1)]), "payments")
    assert apply(store, refund, stock_event("StockUnavailable", "ord-1"), "payments-refund") == []
    assert query(store, "SELECT status FROM payments") == [("failed",)]


# --- payments --------------------------------------------------------------------------------


def test_authorized_payment_carries_the_order_amount(store: Store) -> None:
    authorize = build(store, AuthorizePayment, failure_rate=0.0)
    order = order_placed("ord-1", [("SKU-A", 3)])
    [message] = apply(store, authorize, order, "payments")
    event = body(message)
    assert event["event_type"] == "PaymentAuthorized"
    assert event["order_id"] == "ord-1"
    assert Decimal(event["amount"]) == Decimal("7.50")
    assert event["currency"] == "EUR"
    assert event["payment_id"].startswith("pay-")
    assert query(store, "SELECT status, reason FROM payments") == [("authorized", None)]
    assert apply(store, authorize, order_placed("ord-1", [("SKU-A", 3)])) == []


def test_refused_payment_says_why(store: Store) -> None:
    authorize = build(store, AuthorizePayment, failure_rate=1.0)
    [message] = apply(store, authorize, order_placed("ord-1", [("SKU-A", 3)]), "payments")
    event = body(message)
    assert event["event_type"] == "PaymentFailed"
    assert event["reason"] in FAILURE_REASONS
    assert query(store, "SELECT status, reason FROM payments") == [("failed", event["reason"])]


def test_payment_decision_is_fixed_by_the_order_id(tmp_path: Path) -> None:
    orders = generated_orders(40)
    outcomes: list[list[tuple[str, bytes]]] = []
    for name in ("first.db", "second.db"):
        with open_test_store(tmp_path / name) as fresh:
            authorize = build(fresh, AuthorizePayment, failure_rate=0.5)
            for order in orders:
                apply(fresh, authorize, order, "payments")
            outcomes.append([(m.event_id, m.value) for m in fresh.pending_outbox(limit=1_000)])
    assert outcomes[0] == outcomes[1]
    types = {orjson.loads(value)["event_type"] for _, value in outcomes[0]}
    assert types == {"PaymentAuthorized", "PaymentFailed"}
    # Re-sent orders (new event ids) are decided the same way on a store that never saw them.
    with open_test_store(tmp_path / "third.db") as fresh:
        authorize = build(fresh, AuthorizePayment, failure_rate=0.5)
        for order in orders:
            apply(fresh, authorize, {**order, "event_id": order["event_id"] + "-resent"})
        resent = [body(m) for m in fresh.pending_outbox(limit=1_000)]
    first = [orjson.loads(value) for _, value in outcomes[0]]
    assert [(e["event_type"], e["payment_id"], e.get("reason")) for e in resent] == [
        (e["event_type"], e["payment_id"], e.get("reason")) for e in first
    ]


def test_failure_share_follows_the_failure_rate(store: Store) -> None:
    authorize = build(store, AuthorizePayment, failure_rate=0.1)
    orders = generated_orders(2_000, seed=11)
    assert len({order["order_id"] for order in orders}) == 2_000
    # One transaction for all: a commit per order would dominate the run time.
    with store.transaction() as transaction:
        for order in orders:
            context = HandlerContext("payments", order, transaction, "orders", clock, ORDERS)
            authorize.handle(order, context)
    published = [body(m) for m in store.pending_outbox(limit=10_000)]
    assert len(published) == 2_000
    failed = sum(event["event_type"] == "PaymentFailed" for event in published)
    assert 0.07 <= failed / 2_000 <= 0.13
    assert {e["reason"] for e in published if e["event_type"] == "PaymentFailed"} == (
        FAILURE_REASONS
    )


def test_provider_timeouts_are_transient_and_write_nothing(store: Store) -> None:
    authorize = build(store, AuthorizePayment, failure_rate=0.0, transient_failure_rate=1.0)
    order = order_placed("ord-1", [("SKU-A", 1)])
    for _ in range(20):
        with pytest.raises(TransientError, match="timed out"):
            apply(store, authorize, order, "payments")
    assert query(store, "SELECT COUNT(*) FROM payments") == [(0,)]
    assert outbox_size(store) == 0
    assert store.processed_count("payments") == 0


@pytest.mark.parametrize("option", ["failure_rate", "transient_failure_rate"])
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_rates_outside_zero_and_one_are_refused(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        AuthorizePayment({option: value})


# --- distribution ----------------------------------------------------------------------------


def test_one_purchase_order_per_order_at_a_stable_warehouse(store: Store) -> None:
    submit = build(store, SubmitPurchaseOrder)
    [message] = apply(store, submit, stock_event("StockDecreased", "ord-1"), "distribution")
    warehouse = body(message)["warehouse"]
    assert warehouse in {"WH-NYC-1", "WH-AMS-1", "WH-FRA-2", "WH-SIN-1"}
    assert apply(store, submit, stock_event("StockDecreased", "ord-1")) == []
    assert query(store, "SELECT order_id, warehouse FROM purchase_orders") == [("ord-1", warehouse)]
    only = build(store, SubmitPurchaseOrder, warehouses=["WH-LON-1"])
    [other] = apply(store, only, stock_event("StockDecreased", "ord-2"))
    assert body(other)["warehouse"] == "WH-LON-1"
    with pytest.raises(ValueError, match="warehouses"):
        SubmitPurchaseOrder({"warehouses": []})


# --- notifications ---------------------------------------------------------------------------


def test_notification_waits_for_the_customer_then_is_sent_once(store: Store) -> None:
    email = build(store, NotifyCustomer, channel="email")
    authorized = stock_event("StockDecreased", "ord-1")
    with pytest.raises(TransientError, match="ord-1"):
        apply(store, email, authorized, "email-sender")
    assert outbox_size(store) == 0
    assert apply(store, email, order_placed("ord-1", [("SKU-A", 1)], customer_id="cus-7")) == []
    [message] = apply(store, email, authorized, "email-sender")
    event = body(message)
    assert event["event_type"] == "CustomerNotified"
    assert (event["order_id"], event["customer_id"]) == ("ord-1", "cus-7")
    assert (event["channel"], event["template"]) == ("email", "order_confirmed")
    # Re-sent under a new event id: still one notification.
    assert apply(store, email, stock_event("StockDecreased", "ord-1"), "email-sender") == []
    assert query(store, "SELECT COUNT(*) FROM notifications") == [(1,)]


def test_failed_payment_sends_its_own_template(store: Store) -> None:
    sms = build(store, NotifyCustomer, channel="sms")
    apply(store, sms, order_placed("ord-1", [("SKU-A", 1)], customer_id="cus-9"), "sms-sender")
    [message] = apply(store, sms, payment("PaymentFailed", "ord-1"), "sms-sender")
    event = body(message)
    assert (event["customer_id"], event["channel"], event["template"]) == (
        "cus-9",
        "sms",
        "payment_failed",
    )


def test_a_refund_tells_the_customer_and_alerts_finance(store: Store) -> None:
    sms, alert = build(store, NotifyCustomer, channel="sms"), build(store, AlertFinance)
    apply(store, sms, order_placed("ord-1", [("SKU-A", 1)], customer_id="cus-9"), "sms-sender")
    refunded = payment("PaymentRefunded", "ord-1", reason="out of stock: 1 x SKU-A")
    [told] = apply(store, sms, refunded, "sms-sender")
    assert body(told)["template"] == "order_cancelled_refunded"
    [alerted] = apply(store, alert, refunded, "finance")
    assert body(alerted)["reason"] == "refunded 5.00 EUR: out of stock: 1 x SKU-A"
    # No confirmation was ever sent: the order was not decreased.
    assert query(store, "SELECT template FROM notifications") == [("order_cancelled_refunded",)]


def test_each_channel_notifies_once_with_its_own_event_id(store: Store) -> None:
    email = build(store, NotifyCustomer, channel="email")
    sms = build(store, NotifyCustomer, channel="sms")
    order = order_placed("ord-1", [("SKU-A", 1)])
    authorized = stock_event("StockDecreased", "ord-1")
    ids = []
    for worker, handler in (("email-sender", email), ("sms-sender", sms)):
        apply(store, handler, order, worker)
        [message] = apply(store, handler, authorized, worker)
        ids.append(message.event_id)
    assert len(set(ids)) == 2
    assert query(store, "SELECT channel FROM notifications ORDER BY channel") == [
        ("email",),
        ("sms",),
    ]


def test_push_channel_is_refused() -> None:
    with pytest.raises(ValueError, match="'push'"):
        NotifyCustomer({"channel": "push"})
    with pytest.raises(ConfigError, match=r"notifications\.send"):
        resolve_handler("notifications.send", {"channel": "push"})


# --- finance -----------------------------------------------------------------------------------


def test_finance_is_alerted_once_per_order(store: Store) -> None:
    alert = build(store, AlertFinance)
    [message] = apply(
        store, alert, payment("PaymentFailed", "ord-1", reason="fraud_suspected"), "finance"
    )
    assert body(message)["event_type"] == "FinanceAlerted"
    assert body(message)["reason"] == "payment failed: fraud_suspected"
    assert apply(store, alert, payment("PaymentFailed", "ord-1"), "finance") == []
    [other] = apply(store, alert, payment("PaymentFailed", "ord-2"), "finance")
    assert body(other)["order_id"] == "ord-2"


def test_finance_alert_for_the_longest_valid_reason_is_published(store: Store) -> None:
    alert = build(store, AlertFinance)
    failed = payment("PaymentFailed", "ord-1", reason="x" * 4096)
    assert len(apply(store, alert, failed, "finance")) == 1


# --- every handler -----------------------------------------------------------------------------


WRONG_EVENTS: list[tuple[HandlerFactory, str]] = [
    (ReserveStock, "PaymentAuthorized"),
    (DecreaseStock, "PaymentFailed"),
    (ReleaseStock, "PaymentAuthorized"),
    (AuthorizePayment, "PaymentFailed"),
    (SubmitPurchaseOrder, "PaymentFailed"),
    (NotifyCustomer, "StockReserved"),
    (AlertFinance, "PaymentAuthorized"),
]


@pytest.mark.parametrize(("factory", "event_type"), WRONG_EVENTS)
def test_wrong_event_type_is_terminal(
    store: Store, factory: HandlerFactory, event_type: str
) -> None:
    handler = build(store, factory)
    if event_type == "StockReserved":
        event = {
            "event_id": "evt-x",
            "event_type": "StockReserved",
            "occurred_at": "2026-11-28T11:00:00Z",
            "order_id": "ord-1",
            "items": [{"sku": "SKU-A", "quantity": 1, "unit_price": "1"}],
        }
    else:
        event = payment(event_type, "ord-1")
    with pytest.raises(TerminalError, match=f"not {event_type}"):
        apply(store, handler, event, "w")
    assert outbox_size(store) == 0
    assert store.processed_count("w") == 0


@pytest.mark.parametrize(
    "factory",
    [ReserveStock, DecreaseStock, ReleaseStock, AuthorizePayment, NotifyCustomer, AlertFinance],
)
def test_schema_invalid_event_is_terminal_and_says_where(
    store: Store, factory: HandlerFactory
) -> None:
    handler = build(store, factory)
    event = payment("PaymentFailed", "ord-1")
    del event["order_id"]
    with pytest.raises(InvalidEventError, match="order_id"):
        apply(store, handler, event)


def test_published_ids_depend_only_on_worker_and_cause(tmp_path: Path) -> None:
    order = order_placed("ord-1", [("SKU-A", 1)], event_id="evt-cause")
    seen = []
    for name, worker in (("a.db", "inventory-reserve"), ("b.db", "inventory-reserve")):
        with open_test_store(tmp_path / name) as fresh:
            [message] = apply(fresh, build(fresh, ReserveStock), order, worker)
            seen.append((message.event_id, message.value))
    assert seen[0] == seen[1]
    with open_test_store(tmp_path / "c.db") as fresh:
        [other] = apply(fresh, build(fresh, ReserveStock), order, "inventory-reserve-2")
    assert other.event_id != seen[0][0]


def test_publish_refuses_an_event_outside_the_schema(store: Store) -> None:
    cause = order_placed("ord-1", [("SKU-A", 1)])
    with pytest.raises(InvalidEventError, match="items"), store.transaction() as transaction:
        context = HandlerContext("w", cause, transaction, "orders", clock, ORDERS)
        context.publish("StockReserved", {"order_id": "ord-1", "items": []})
    assert outbox_size(store) == 0


def test_failed_handler_leaves_no_inbox_claim(store: Store) -> None:
    email = build(store, NotifyCustomer, channel="email")
    decreased = stock_event("StockDecreased", "ord-1")
    with pytest.raises(TransientError), store.transaction() as transaction:
        assert transaction.claim("email-sender", decreased["event_id"])
        context = HandlerContext("email-sender", decreased, transaction, "orders", clock, ORDERS)
        email.handle(decreased, context)  # the customer is not known yet
    # Rolled back with the handler: the redelivery is processed, once.
    apply(store, email, order_placed("ord-1", [("SKU-A", 2)]))
    assert len(apply(store, email, decreased, "email-sender")) == 1
    assert store.processed_count("email-sender") == 1
    with store.transaction() as transaction:
        assert not transaction.claim("email-sender", decreased["event_id"])


# --- resolving handlers ----------------------------------------------------------------------


def test_resolve_builtin_and_module_attribute_handlers() -> None:
    builtin = resolve_handler("inventory.reserve", {"initial_stock": 3})
    assert isinstance(builtin, ReserveStock)
    assert builtin.initial_stock == 3
    imported = resolve_handler("handlers.workflow:AlertFinance", {})
    assert isinstance(imported, AlertFinance)


@pytest.mark.parametrize(
    ("spec", "options", "says"),
    [
        ("inventory.reserv", {}, "named: distribution.submit-order, finance.alert"),
        ("handlers.nowhere:Handler", {}, "cannot be loaded"),
        ("handlers.workflow:Nothing", {}, "cannot be loaded"),
        ("inventory.reserve", {"initial_stock": -1}, "initial_stock"),
        ("inventory.reserve", {"initial_stock": "many"}, "bad options"),
    ],
)
def test_unresolvable_handler_is_a_config_error(
    spec: str, options: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_handler(spec, options)
    assert repr(spec) in str(caught.value)
    assert says in str(caught.value)


def test_stable_fraction_is_fixed_and_in_range() -> None:
    values = [stable_fraction("payments", f"ord-{n}") for n in range(1_000)]
    assert all(0.0 <= value < 1.0 for value in values)
    assert values == [stable_fraction("payments", f"ord-{n}") for n in range(1_000)]
    assert stable_fraction("a", "b") != stable_fraction("ab")
    assert 0.45 < sum(values) / len(values) < 0.55


# --- the whole workflow ------------------------------------------------------------------------


@pytest.mark.parametrize("initial_stock", [10_000, 4])
def test_whole_workflow_converges_in_any_delivery_order(store: Store, initial_stock: int) -> None:
    """The shipped rules and workers, deliveries shuffled and repeated, retries on transients;
    with little stock, some orders run out and are compensated."""
    config = load_handlers_config(SHIPPED)
    rules = RuleSet.load(config.rules)
    workers: dict[str, tuple[tuple[str, ...], Handler]] = {}
    for name in config.workers:
        plan = config.plan(name)
        options = dict(plan.options)
        if name == "payments":
            options.update(failure_rate=0.3, transient_failure_rate=0.0)
        if plan.handler == "inventory.reserve":
            options.update(initial_stock=initial_stock)
        handler = resolve_handler(plan.handler, options)
        install(handler, store)
        workers[name] = (plan.topics, handler)

    def deliveries(event: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
        targets = rules.targets(event)
        return [
            (name, event)
            for name, (topics, _) in workers.items()
            if any(topic in targets for topic in topics)
        ]

    orders = generated_orders(25, seed=3)
    pending = [delivery for order in orders for delivery in deliveries(order)]
    rng = Random(5)
    published: list[dict[str, Any]] = []
    steps = retried = redelivered = 0
    while pending:
        steps += 1
        assert steps < 5_000, "the workflow does not converge"
        name, event = pending.pop(rng.randrange(len(pending)))
        if rng.random() < 0.1:
            pending.append((name, event))  # Kafka redelivers it later
            redelivered += 1
        try:
            new = apply(store, workers[name][1], event, name)
        except TransientError:
            pending.append((name, event))  # retried after a backoff
            retried += 1
            continue
        for message in new:
            published.append(body(message))
            pending.extend(deliveries(body(message)))

    # The run did meet both hazards: early payment outcomes and redeliveries.
    assert retried > 0
    assert redelivered > 0
    assert len({event["event_id"] for event in published}) == len(published)
    on_hand = {sku: left for sku, (left, _) in stock(store).items()}
    held = {sku: units for sku, (_, units) in stock(store).items()}
    outcomes = order_outcomes(orders, published, on_hand, held, initial_stock)
    assert outcomes[PAID_IN_STOCK] > 0
    assert outcomes[FAILED_RESERVED] + outcomes[FAILED_OUT_OF_STOCK] > 0
    if initial_stock < 10:
        assert outcomes[PAID_OUT_OF_STOCK] > 0, outcomes
    else:
        assert outcomes[PAID_OUT_OF_STOCK] + outcomes[FAILED_OUT_OF_STOCK] == 0
