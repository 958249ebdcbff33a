"""The streams streambatch knows, by name."""

from __future__ import annotations

from events.orders import ORDER_EVENT_TYPES, ORDERS_ARROW_SCHEMA, OrderEvent
from events.stream import StreamSchema

__all__ = ["ORDERS", "STREAMS", "get_stream"]

ORDERS = StreamSchema(
    name="orders",
    event_model=OrderEvent,
    event_types=ORDER_EVENT_TYPES,
    columns=ORDERS_ARROW_SCHEMA,
)

STREAMS: dict[str, StreamSchema] = {ORDERS.name: ORDERS}


def get_stream(name: str) -> StreamSchema:
    """The stream called ``name``; raises KeyError naming the known ones."""
    try:
        return STREAMS[name]
    except KeyError:
        raise KeyError(f"unknown stream {name!r}; known: {', '.join(sorted(STREAMS))}") from None
