"""The orders stream: the e-commerce workflow of the seed article."""

from __future__ import annotations

from typing import Annotated, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from events.common import (
    MONEY_PRECISION,
    MONEY_SCALE,
    Count,
    EventBase,
    Identifier,
    Money,
    ShortText,
)

__all__ = [
    "ORDERS_ARROW_SCHEMA",
    "ORDER_EVENT_TYPES",
    "CustomerNotified",
    "FinanceAlerted",
    "LineItem",
    "OrderEvent",
    "OrderPlaced",
    "PaymentAuthorized",
    "PaymentFailed",
    "PaymentRefunded",
    "PurchaseOrderSubmitted",
    "StockDecreased",
    "StockReleased",
    "StockReserved",
    "StockUnavailable",
]

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class LineItem(BaseModel):
    """One line of an order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: Identifier
    quantity: Annotated[Count, Field(ge=1, le=1_000_000)]
    unit_price: Money


Items = Annotated[list[LineItem], Field(min_length=1, max_length=100)]


class OrderPlaced(EventBase):
    """A checkout dispatched an order."""

    event_type: Literal["OrderPlaced"]
    order_id: Identifier
    customer_id: Identifier
    currency: Currency
    items: Items
    total_amount: Money


class StockReserved(EventBase):
    """Inventory set the items aside."""

    event_type: Literal["StockReserved"]
    order_id: Identifier
    items: Items


class StockUnavailable(EventBase):
    """Inventory could not set the items aside: the order cannot be fulfilled."""

    event_type: Literal["StockUnavailable"]
    order_id: Identifier
    items: Items
    reason: ShortText


class StockReleased(EventBase):
    """Inventory gave reserved items back."""

    event_type: Literal["StockReleased"]
    order_id: Identifier
    items: Items


class StockDecreased(EventBase):
    """Inventory took paid items out of stock."""

    event_type: Literal["StockDecreased"]
    order_id: Identifier
    items: Items


class PaymentAuthorized(EventBase):
    """The payment provider authorised the amount."""

    event_type: Literal["PaymentAuthorized"]
    order_id: Identifier
    payment_id: Identifier
    amount: Money
    currency: Currency


class PaymentFailed(EventBase):
    """The payment provider refused the amount."""

    event_type: Literal["PaymentFailed"]
    order_id: Identifier
    payment_id: Identifier
    amount: Money
    currency: Currency
    reason: ShortText


class PaymentRefunded(EventBase):
    """A payment taken for an order that cannot be fulfilled was paid back in full."""

    event_type: Literal["PaymentRefunded"]
    order_id: Identifier
    payment_id: Identifier
    amount: Money
    currency: Currency
    reason: ShortText


class PurchaseOrderSubmitted(EventBase):
    """The distribution centre received the purchase order."""

    event_type: Literal["PurchaseOrderSubmitted"]
    order_id: Identifier
    warehouse: Identifier


class CustomerNotified(EventBase):
    """The customer was told, by e-mail or SMS."""

    event_type: Literal["CustomerNotified"]
    order_id: Identifier
    customer_id: Identifier
    channel: Literal["email", "sms"]
    template: Identifier


class FinanceAlerted(EventBase):
    """Finance was told about a problem with an order."""

    event_type: Literal["FinanceAlerted"]
    order_id: Identifier
    reason: ShortText


OrderEvent = Annotated[
    OrderPlaced
    | StockReserved
    | StockReleased
    | StockDecreased
    | PaymentAuthorized
    | PaymentFailed
    | PurchaseOrderSubmitted
    | CustomerNotified
    | FinanceAlerted
    | StockUnavailable
    | PaymentRefunded,
    Field(discriminator="event_type"),
]

ORDER_EVENT_TYPES = (
    "OrderPlaced",
    "StockReserved",
    "StockReleased",
    "StockDecreased",
    "PaymentAuthorized",
    "PaymentFailed",
    "PurchaseOrderSubmitted",
    "CustomerNotified",
    "FinanceAlerted",
    "StockUnavailable",
    "PaymentRefunded",
)

_MONEY = pa.decimal128(MONEY_PRECISION, MONEY_SCALE)

ORDERS_ARROW_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("customer_id", pa.string()),
        ("currency", pa.string()),
        (
            "items",
            pa.list_(
                pa.struct([("sku", pa.string()), ("quantity", pa.int32()), ("unit_price", _MONEY)])
            ),
        ),
        ("total_amount", _MONEY),
        ("payment_id", pa.string()),
        ("amount", _MONEY),
        ("reason", pa.string()),
        ("warehouse", pa.string()),
        ("channel", pa.string()),
        ("template", pa.string()),
    ]
)
"""Columns of the orders table besides the common and lineage ones."""
