"""The streams streambatch knows, by name.

Adding a stream: a pydantic model (or a discriminated union of models) for its
events, its Arrow columns, a :class:`StreamSchema` here, and a flow module of
a few lines (see ``flows/logs.py``).
"""

from __future__ import annotations

from events.clicks import CLICK_EVENT_TYPES, CLICKS_ARROW_SCHEMA, ClickEvent
from events.logs import LOG_EVENT_TYPES, LOGS_ARROW_SCHEMA, LogEvent
from events.orders import ORDER_EVENT_TYPES, ORDERS_ARROW_SCHEMA, OrderEvent
from events.stream import StreamSchema
from streambatch.errors import UnknownStreamError

__all__ = ["CLICKS", "LOGS", "ORDERS", "STREAMS", "get_stream"]

ORDERS = StreamSchema(
    name="orders",
    event_model=OrderEvent,
    event_types=ORDER_EVENT_TYPES,
    columns=ORDERS_ARROW_SCHEMA,
)
CLICKS = StreamSchema(
    name="clicks",
    event_model=ClickEvent,
    event_types=CLICK_EVENT_TYPES,
    columns=CLICKS_ARROW_SCHEMA,
)
LOGS = StreamSchema(
    name="logs",
    event_model=LogEvent,
    event_types=LOG_EVENT_TYPES,
    columns=LOGS_ARROW_SCHEMA,
)

STREAMS: dict[str, StreamSchema] = {stream.name: stream for stream in (ORDERS, CLICKS, LOGS)}


def get_stream(name: str) -> StreamSchema:
    """The stream called ``name``.

    Raises:
        UnknownStreamError: naming the known ones.
    """
    try:
        return STREAMS[name]
    except KeyError:
        raise UnknownStreamError(
            f"unknown stream {name!r}; known: {', '.join(sorted(STREAMS))}"
        ) from None
