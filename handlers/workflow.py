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
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from handlers.runtime import HandlerContext, HandlerFactory, parse_order_event
from streambatch.errors import TerminalError, TransientError

__all__ = [
    "BUILTIN_HANDLERS",
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
)
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
    model = parse_order_event(event)
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


class ReserveStock:
    """``inventory.reserve``: OrderPlaced -> StockReserved, or StockUnavailable.

    All lines of an order are reserved, or none. Options: ``initial_stock``
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
        if tx.query("SELECT 1 FROM inventory_reservations WHERE order_id = ?", (order.order_id,)):
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
            "INSERT INTO inventory_reservations (order_id, items, state, updated_at)"
            " VALUES (?, ?, ?, ?)",
            (order.order_id, json.dumps(items), state, context.now().isoformat()),
        )
        context.publish(published, {"order_id": order.order_id, "items": items, **extra})


class _SettleReservation:
    """Shared by decrease and release: move a reservation to its final state once."""

    ddl: ClassVar[Sequence[str]] = _INVENTORY_DDL
    trigger: ClassVar[str]
    final_state: ClassVar[str]
    published: ClassVar[str]
    takes_from_on_hand: ClassVar[bool]

    def __init__(self, options: Mapping[str, Any]) -> None:
        del options  # no options

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        payment = _expect(event, self.trigger)
        tx = context.transaction
        rows = tx.query(
            "SELECT items, state FROM inventory_reservations WHERE order_id = ?",
            (payment.order_id,),
        )
        if not rows:
            # Reserve and payment run in parallel: the reservation may still come.
            raise TransientError(f"order {payment.order_id}: no stock reservation yet")
        items_text, state = rows[0]
        if state in (self.final_state, "unavailable"):
            return  # settled already, or nothing was ever held (payments refunds)
        if state != "reserved":
            raise TerminalError(
                f"order {payment.order_id}: reservation is {state}, cannot become "
                f"{self.final_state} ({self.trigger})"
            )
        items = json.loads(items_text)
        lines = ((str(item["sku"]), int(item["quantity"])) for item in items)
        for sku, quantity in _quantities(lines).items():
            tx.execute(
                "UPDATE inventory_stock SET on_hand = on_hand - ?, reserved = reserved - ?"
                " WHERE sku = ?",
                (quantity if self.takes_from_on_hand else 0, quantity, sku),
            )
        tx.execute(
            "UPDATE inventory_reservations SET state = ?, updated_at = ? WHERE order_id = ?",
            (self.final_state, context.now().isoformat(), payment.order_id),
        )
        context.publish(self.published, {"order_id": payment.order_id, "items": items})


class DecreaseStock(_SettleReservation):
    """``inventory.decrease``: PaymentAuthorized -> StockDecreased (reserved units leave).

    Nothing happens for an order whose stock was unavailable.
    """

    trigger = "PaymentAuthorized"
    final_state = "decreased"
    published = "StockDecreased"
    takes_from_on_hand = True


class ReleaseStock(_SettleReservation):
    """``inventory.release``: PaymentFailed -> StockReleased (reserved units are free again).

    Nothing happens for an order whose stock was unavailable (nothing is held).
    """

    trigger = "PaymentFailed"
    final_state = "released"
    published = "StockReleased"
    takes_from_on_hand = False


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
        else:
            context.publish("PaymentFailed", {**fields, "reason": reason})


class RefundPayment:
    """``payments.refund``: StockUnavailable -> PaymentRefunded, when the payment was taken.

    The compensation of an order that cannot be fulfilled: a taken payment is
    paid back once (its row becomes ``refunded``); a refused one needs
    nothing. The payment is decided in parallel, so a StockUnavailable that
    comes first waits for it (TransientError, retried).
    """

    ddl: ClassVar[Sequence[str]] = AuthorizePayment.ddl

    def __init__(self, options: Mapping[str, Any]) -> None:
        del options

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        unavailable = _expect(event, "StockUnavailable")
        tx = context.transaction
        rows = tx.query(
            "SELECT payment_id, amount, currency, status FROM payments WHERE order_id = ?",
            (unavailable.order_id,),
        )
        if not rows:
            raise TransientError(f"order {unavailable.order_id}: payment not decided yet")
        payment_id, amount, currency, status = rows[0]
        if status != "authorized":
            return  # refused (no money moved) or refunded already
        tx.execute(
            "UPDATE payments SET status = 'refunded', reason = ? WHERE order_id = ?",
            ("out_of_stock", unavailable.order_id),
        )
        context.publish(
            "PaymentRefunded",
            {
                "order_id": unavailable.order_id,
                "payment_id": payment_id,
                "amount": amount,
                "currency": currency,
                "reason": f"out of stock: {unavailable.reason}"[:_MAX_REASON],
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


BUILTIN_HANDLERS: dict[str, HandlerFactory] = {
    "inventory.reserve": ReserveStock,
    "inventory.decrease": DecreaseStock,
    "inventory.release": ReleaseStock,
    "payments.authorize": AuthorizePayment,
    "payments.refund": RefundPayment,
    "distribution.submit-order": SubmitPurchaseOrder,
    "notifications.send": NotifyCustomer,
    "finance.alert": AlertFinance,
}
