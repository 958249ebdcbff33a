"""The order workflow of the seed article, as idempotent handlers on simulated services.

OrderPlaced -> ``inventory.reserve`` (StockReserved or StockUnavailable) and
``payments.authorize`` (PaymentAuthorized or PaymentFailed), in parallel.
PaymentAuthorized -> ``inventory.decrease`` (StockDecreased when reserved);
StockDecreased -> ``distribution.submit-order`` and ``notifications.send``
(order confirmed, one worker per channel). PaymentFailed -> ``inventory.release``
(when reserved), ``notifications.send``, ``finance.alert``. The compensation:
StockUnavailable -> ``payments.refund`` (PaymentRefunded when the payment was
taken) -> ``notifications.send`` (order cancelled) and ``finance.alert``; no
purchase order and no confirmation, because both wait for StockDecreased.
The README's state table lists every transition. Each handler
keeps its service's state in the handler store (same transaction as the inbox
claim) and publishes the resulting event to the ``orders`` topic, so the lake
records the whole workflow.

Idempotency has two layers: the inbox drops a redelivered event id, and every
state change is guarded by the service's own keys (one reservation, one
payment, one purchase order, one notification per order and template), so even
a re-sent order under a new event id changes nothing twice.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import orjson

from foundation.errors import TerminalError, TransientError
from handlers.runtime import HandlerContext
from handlers.schemas import event_schema

__all__ = [
    "AlertFinance",
    "AuthorizePayment",
    "DecreaseStock",
    "NotifyCustomer",
    "RefundPayment",
    "ReleaseStock",
    "ReserveStock",
    "SubmitPurchaseOrder",
    "stable_fraction",
]

_INVENTORY_DDL = (
    "CREATE TABLE IF NOT EXISTS inventory_stock ("
    " sku TEXT PRIMARY KEY, on_hand BIGINT NOT NULL, reserved BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS inventory_reservations ("
    " order_id TEXT PRIMARY KEY, items TEXT NOT NULL, state TEXT NOT NULL,"
    " updated_at TEXT NOT NULL)",
    # The payment outcome as inventory learnt it; it may come before the reservation.
    "CREATE TABLE IF NOT EXISTS inventory_payment_outcomes ("
    " order_id TEXT PRIMARY KEY, outcome TEXT NOT NULL)",
)
# What to do with reserved units once the payment outcome is known.
_SETTLEMENTS = {
    "authorized": ("decreased", "StockDecreased", True),
    "failed": ("released", "StockReleased", False),
}
_FAILURE_REASONS = ("insufficient_funds", "card_declined", "fraud_suspected", "expired_card")
_MAX_REASON = 4096
_WAREHOUSES = ("WH-NYC-1", "WH-AMS-1", "WH-FRA-2", "WH-SIN-1")


class _ShortOfStock(Exception):
    """Raised inside a savepoint to undo a partial reservation."""


def stable_fraction(*parts: str) -> float:
    """A number in ``[0, 1)`` fixed by ``parts``: the same in every process and run."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    # 53 bits: exactly representable in a float, so the result is always below 1.0.
    return (int.from_bytes(digest[:8], "big") >> 11) / 2.0**53


def _quantities(lines: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Quantity per SKU of ``(sku, quantity)`` lines (an order may list one SKU twice)."""
    totals: dict[str, int] = {}
    for sku, quantity in lines:
        totals[sku] = totals.get(sku, 0) + quantity
    return dict(sorted(totals.items()))  # sorted: every writer locks rows in one order


def _item_dicts(items: Sequence[Any]) -> list[dict[str, Any]]:
    """Line items as JSON-ready dicts (money as decimal strings)."""
    return [{"sku": i.sku, "quantity": i.quantity, "unit_price": str(i.unit_price)} for i in items]


def _expect(event: Mapping[str, Any], *types: str) -> Any:
    model = event_schema("orders").check(event)
    if model.event_type not in types:
        raise TerminalError(
            f"this handler takes {' or '.join(types)}, not {model.event_type}: check the rules"
        )
    return model


def _probability(options: Mapping[str, Any], name: str, default: float) -> float:
    value = float(options.get(name, default))
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def _lock_order(context: HandlerContext, order_id: str) -> tuple[list[Any], str]:
    """The order's reservation row, created ``pending`` if absent, locked until commit.

    Reserve and the payment outcome run in parallel, in different workers: each
    takes this row first, so the second to commit sees what the first did (on
    PostgreSQL the upsert holds the row lock; SQLite has one writer anyway).
    """
    tx = context.transaction
    tx.execute(
        "INSERT INTO inventory_reservations (order_id, items, state, updated_at)"
        " VALUES (?, '[]', 'pending', ?)"
        " ON CONFLICT (order_id) DO UPDATE SET order_id = excluded.order_id",
        (order_id, context.now().isoformat()),
    )
    items_text, state = tx.query(
        "SELECT items, state FROM inventory_reservations WHERE order_id = ?", (order_id,)
    )[0]
    return list(orjson.loads(items_text)), str(state)


def _settle(context: HandlerContext, order_id: str, items: list[Any], outcome: str) -> None:
    """Take reserved units out of stock (paid) or free them (refused); publish it."""
    final_state, published, takes_from_on_hand = _SETTLEMENTS[outcome]
    tx = context.transaction
    lines = ((str(item["sku"]), int(item["quantity"])) for item in items)
    for sku, quantity in _quantities(lines).items():
        tx.execute(
            "UPDATE inventory_stock SET on_hand = on_hand - ?, reserved = reserved - ?"
            " WHERE sku = ?",
            (quantity if takes_from_on_hand else 0, quantity, sku),
        )
    tx.execute(
        "UPDATE inventory_reservations SET state = ?, updated_at = ? WHERE order_id = ?",
        (final_state, context.now().isoformat(), order_id),
    )
    context.publish(published, {"order_id": order_id, "items": items})


class ReserveStock:
    """``inventory.reserve``: OrderPlaced -> StockReserved, or StockUnavailable.

    All lines of an order are reserved, or none. When the payment outcome
    came first, the reservation is settled at once (StockDecreased or
    StockReleased follow in the same transaction). Options: ``initial_stock``
    (units of a SKU the first time it is seen, default 10,000).
    """

    ddl: ClassVar[Sequence[str]] = _INVENTORY_DDL

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.initial_stock = int(options.get("initial_stock", 10_000))
        if self.initial_stock < 0:
            raise ValueError(f"initial_stock must be >= 0, got {self.initial_stock}")

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        order = _expect(event, "OrderPlaced")
        tx = context.transaction
        _, state = _lock_order(context, order.order_id)
        if state != "pending":
            return  # decided already (the same order under another event id)
        items = _item_dicts(order.items)
        try:
            with tx.savepoint():  # a partial reservation is undone
                for sku, quantity in _quantities((i.sku, i.quantity) for i in order.items).items():
                    tx.execute(
                        "INSERT INTO inventory_stock (sku, on_hand, reserved) VALUES (?, ?, 0)"
                        " ON CONFLICT (sku) DO NOTHING",
                        (sku, self.initial_stock),
                    )
                    # The guard in the WHERE makes check-and-reserve one atomic step.
                    changed = tx.execute(
                        "UPDATE inventory_stock SET reserved = reserved + ?"
                        " WHERE sku = ? AND on_hand - reserved >= ?",
                        (quantity, sku, quantity),
                    )
                    if changed != 1:
                        raise _ShortOfStock(f"{quantity} x {sku} not available")
        except _ShortOfStock as short:
            state, published, extra = "unavailable", "StockUnavailable", {"reason": str(short)}
        else:
            state, published, extra = "reserved", "StockReserved", {}
        tx.execute(
            "UPDATE inventory_reservations SET items = ?, state = ?, updated_at = ?"
            " WHERE order_id = ?",
            (orjson.dumps(items).decode(), state, context.now().isoformat(), order.order_id),
        )
        context.publish(published, {"order_id": order.order_id, "items": items, **extra})
        if state == "reserved":
            known = tx.query(
                "SELECT outcome FROM inventory_payment_outcomes WHERE order_id = ?",
                (order.order_id,),
            )
            if known:
                _settle(context, order.order_id, items, str(known[0][0]))


class _SettleReservation:
    """Shared by decrease and release: settle the reservation once the payment is decided.

    The payment outcome is recorded first; if the reservation is there, it is
    settled now, else the reservation settles itself when it is made (see
    :class:`ReserveStock`): nobody waits or retries for the other.
    """

    ddl: ClassVar[Sequence[str]] = _INVENTORY_DDL
    trigger: ClassVar[str]
    outcome: ClassVar[str]

    def __init__(self, options: Mapping[str, Any]) -> None:
        del options  # no options

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        payment = _expect(event, self.trigger)
        tx = context.transaction
        items, state = _lock_order(context, payment.order_id)
        tx.execute(
            "INSERT INTO inventory_payment_outcomes (order_id, outcome) VALUES (?, ?)"
            " ON CONFLICT (order_id) DO NOTHING",
            (payment.order_id, self.outcome),
        )
        final_state = _SETTLEMENTS[self.outcome][0]
        if state in ("pending", "unavailable", final_state):
            return  # settled when reserved; nothing held; or settled already
        if state != "reserved":
            raise TerminalError(
                f"order {payment.order_id}: reservation is {state}, cannot become "
                f"{final_state} ({self.trigger})"
            )
        _settle(context, payment.order_id, items, self.outcome)


class DecreaseStock(_SettleReservation):
    """``inventory.decrease``: PaymentAuthorized -> StockDecreased (reserved units leave).

    Nothing happens for an order whose stock was unavailable.
    """

    trigger = "PaymentAuthorized"
    outcome = "authorized"


class ReleaseStock(_SettleReservation):
    """``inventory.release``: PaymentFailed -> StockReleased (reserved units are free again).

    Nothing happens for an order whose stock was unavailable (nothing is held).
    """

    trigger = "PaymentFailed"
    outcome = "failed"


class AuthorizePayment:
    """``payments.authorize``: OrderPlaced -> PaymentAuthorized or PaymentFailed.

    A simulated payment provider. Options: ``failure_rate`` (share of orders
    refused, decided by the order id so a retry decides the same), and
    ``transient_failure_rate`` (share of calls that time out and are retried).
    """

    ddl: ClassVar[Sequence[str]] = (
        "CREATE TABLE IF NOT EXISTS payments ("
        " order_id TEXT PRIMARY KEY, payment_id TEXT NOT NULL, amount TEXT NOT NULL,"
        " currency TEXT NOT NULL, status TEXT NOT NULL, reason TEXT)",
        # One row per order seen by payments; a refund asked for before the payment.
        "CREATE TABLE IF NOT EXISTS payment_orders ("
        " order_id TEXT PRIMARY KEY, refund_reason TEXT)",
    )

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.failure_rate = _probability(options, "failure_rate", 0.1)
        self.transient_failure_rate = _probability(options, "transient_failure_rate", 0.0)
        self.seed = str(options.get("seed", "payments"))
        self._rng = random.Random()

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        order = _expect(event, "OrderPlaced")
        if self._rng.random() < self.transient_failure_rate:
            raise TransientError("payment provider timed out (simulated)")
        tx = context.transaction
        refund_reason = _lock_payment(context, order.order_id, None)
        if tx.query("SELECT 1 FROM payments WHERE order_id = ?", (order.order_id,)):
            return  # one payment per order, whatever the event id
        payment_id = "pay-" + hashlib.sha256(order.order_id.encode()).hexdigest()[:20]
        refused = stable_fraction(self.seed, order.order_id) < self.failure_rate
        reason = (
            _FAILURE_REASONS[int(stable_fraction(self.seed, "reason", order.order_id) * 4)]
            if refused
            else None
        )
        tx.execute(
            "INSERT INTO payments (order_id, payment_id, amount, currency, status, reason)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                order.order_id,
                payment_id,
                str(order.total_amount),
                order.currency,
                "failed" if refused else "authorized",
                reason,
            ),
        )
        fields = {
            "order_id": order.order_id,
            "payment_id": payment_id,
            "amount": str(order.total_amount),
            "currency": order.currency,
        }
        if reason is None:
            context.publish("PaymentAuthorized", fields)
            if refund_reason is not None:  # out of stock was known before the payment
                _refund(context, order.order_id, refund_reason)
        else:
            context.publish("PaymentFailed", {**fields, "reason": reason})


class RefundPayment:
    """``payments.refund``: StockUnavailable -> PaymentRefunded, when the payment was taken.

    The compensation of an order that cannot be fulfilled: a taken payment is
    paid back once (its row becomes ``refunded``); a refused one needs
    nothing. When the payment is not decided yet, the refund is recorded as
    due and :class:`AuthorizePayment` pays it back right after taking it.
    """

    ddl: ClassVar[Sequence[str]] = AuthorizePayment.ddl

    def __init__(self, options: Mapping[str, Any]) -> None:
        del options

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        unavailable = _expect(event, "StockUnavailable")
        reason = f"out of stock: {unavailable.reason}"[:_MAX_REASON]
        _lock_payment(context, unavailable.order_id, reason)
        _refund(context, unavailable.order_id, reason)


def _lock_payment(context: HandlerContext, order_id: str, refund_reason: str | None) -> str | None:
    """The order's row of payments, locked until commit; records a refund due; returns it.

    Authorize and refund run in different workers: each takes this row first,
    so the second to commit sees what the first did.
    """
    tx = context.transaction
    if refund_reason is None:
        tx.execute(
            "INSERT INTO payment_orders (order_id) VALUES (?)"
            " ON CONFLICT (order_id) DO UPDATE SET order_id = excluded.order_id",
            (order_id,),
        )
    else:
        tx.execute(
            "INSERT INTO payment_orders (order_id, refund_reason) VALUES (?, ?)"
            " ON CONFLICT (order_id) DO UPDATE SET refund_reason = excluded.refund_reason",
            (order_id, refund_reason),
        )
    rows = tx.query("SELECT refund_reason FROM payment_orders WHERE order_id = ?", (order_id,))
    return None if rows[0][0] is None else str(rows[0][0])


def _refund(context: HandlerContext, order_id: str, reason: str) -> None:
    """Pay back a taken payment once; nothing for a refused, refunded or undecided one."""
    tx = context.transaction
    rows = tx.query(
        "SELECT payment_id, amount, currency, status FROM payments WHERE order_id = ?",
        (order_id,),
    )
    if not rows or rows[0][3] != "authorized":
        return
    payment_id, amount, currency, _ = rows[0]
    tx.execute(
        "UPDATE payments SET status = 'refunded', reason = ? WHERE order_id = ?",
        ("out_of_stock", order_id),
    )
    context.publish(
        "PaymentRefunded",
        {
            "order_id": order_id,
            "payment_id": payment_id,
            "amount": amount,
            "currency": currency,
            "reason": reason,
        },
    )


class SubmitPurchaseOrder:
    """``distribution.submit-order``: StockDecreased -> PurchaseOrderSubmitted.

    Triggered by the stock leaving the warehouse (paid and reserved), never by
    the payment alone: an order out of stock gets no purchase order.
    """

    ddl: ClassVar[Sequence[str]] = (
        "CREATE TABLE IF NOT EXISTS purchase_orders ("
        " order_id TEXT PRIMARY KEY, warehouse TEXT NOT NULL, submitted_at TEXT NOT NULL)",
    )

    def __init__(self, options: Mapping[str, Any]) -> None:
        warehouses = options.get("warehouses", _WAREHOUSES)
        if isinstance(warehouses, str) or not all(isinstance(w, str) for w in warehouses):
            raise ValueError(f"warehouses must be a list of names, got {warehouses!r}")
        self.warehouses = tuple(warehouses)
        if not self.warehouses:
            raise ValueError("warehouses must not be empty")

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        decreased = _expect(event, "StockDecreased")
        warehouse = self.warehouses[
            int(stable_fraction("warehouse", decreased.order_id) * len(self.warehouses))
        ]
        inserted = context.transaction.execute(
            "INSERT INTO purchase_orders (order_id, warehouse, submitted_at) VALUES (?, ?, ?)"
            " ON CONFLICT (order_id) DO NOTHING",
            (decreased.order_id, warehouse, context.now().isoformat()),
        )
        if inserted:
            context.publish(
                "PurchaseOrderSubmitted", {"order_id": decreased.order_id, "warehouse": warehouse}
            )


class NotifyCustomer:
    """``notifications.send``: tell the customer about their order on one channel.

    OrderPlaced only records who the customer is (this service's own view);
    StockDecreased (paid and in stock) sends ``order_confirmed``, PaymentFailed
    ``payment_failed``, PaymentRefunded (paid, out of stock)
    ``order_cancelled_refunded``.
    Options: ``channel`` (``email`` or ``sms``). Two workers with different
    channels on the same topics are two subscribers of one notification.
    """

    ddl: ClassVar[Sequence[str]] = (
        "CREATE TABLE IF NOT EXISTS notification_customers ("
        " order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS notifications ("
        " order_id TEXT NOT NULL, channel TEXT NOT NULL, template TEXT NOT NULL,"
        " customer_id TEXT NOT NULL, sent_at TEXT NOT NULL,"
        " PRIMARY KEY (order_id, channel, template))",
    )
    _TEMPLATES: ClassVar[dict[str, str]] = {
        "StockDecreased": "order_confirmed",
        "PaymentFailed": "payment_failed",
        "PaymentRefunded": "order_cancelled_refunded",
    }

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.channel = str(options.get("channel", "email"))
        if self.channel not in ("email", "sms"):
            raise ValueError(f"channel must be 'email' or 'sms', got {self.channel!r}")

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        model = _expect(event, "OrderPlaced", *self._TEMPLATES)
        tx = context.transaction
        if model.event_type == "OrderPlaced":
            tx.execute(
                "INSERT INTO notification_customers (order_id, customer_id) VALUES (?, ?)"
                " ON CONFLICT (order_id) DO NOTHING",
                (model.order_id, model.customer_id),
            )
            return
        rows = tx.query(
            "SELECT customer_id FROM notification_customers WHERE order_id = ?",
            (model.order_id,),
        )
        if not rows:
            # The OrderPlaced copy for this service may not have arrived yet.
            raise TransientError(f"order {model.order_id}: customer not known yet")
        customer_id = str(rows[0][0])
        template = self._TEMPLATES[model.event_type]
        inserted = tx.execute(
            "INSERT INTO notifications (order_id, channel, template, customer_id, sent_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (order_id, channel, template) DO NOTHING",
            (model.order_id, self.channel, template, customer_id, context.now().isoformat()),
        )
        if inserted:
            context.publish(
                "CustomerNotified",
                {
                    "order_id": model.order_id,
                    "customer_id": customer_id,
                    "channel": self.channel,
                    "template": template,
                },
                detail=self.channel,
            )


class AlertFinance:
    """``finance.alert``: PaymentFailed or PaymentRefunded (money moved back) -> FinanceAlerted."""

    ddl: ClassVar[Sequence[str]] = (
        "CREATE TABLE IF NOT EXISTS finance_alerts ("
        " order_id TEXT PRIMARY KEY, reason TEXT NOT NULL, alerted_at TEXT NOT NULL)",
    )

    def __init__(self, options: Mapping[str, Any]) -> None:
        del options

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        failure = _expect(event, "PaymentFailed", "PaymentRefunded")
        # FinanceAlerted.reason has the same 4,096-character limit as PaymentFailed.reason.
        if failure.event_type == "PaymentFailed":
            reason = f"payment failed: {failure.reason}"[:_MAX_REASON]
        else:
            reason = f"refunded {failure.amount} {failure.currency}: {failure.reason}"[:_MAX_REASON]
        inserted = context.transaction.execute(
            "INSERT INTO finance_alerts (order_id, reason, alerted_at) VALUES (?, ?, ?)"
            " ON CONFLICT (order_id) DO NOTHING",
            (failure.order_id, reason, context.now().isoformat()),
        )
        if inserted:
            context.publish("FinanceAlerted", {"order_id": failure.order_id, "reason": reason})
