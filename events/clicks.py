"""The clicks stream: what shoppers do on the site (key: ``session_id``)."""

from __future__ import annotations

from typing import Annotated, Literal

import pyarrow as pa
from pydantic import StringConstraints

from events.common import EventBase, Identifier

__all__ = ["CLICKS_ARROW_SCHEMA", "CLICK_EVENT_TYPES", "ClickEvent"]

CLICK_EVENT_TYPES = ("page_view", "click", "add_to_cart", "remove_from_cart", "checkout_started")

Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class ClickEvent(EventBase):
    """One shopper action in a browser session."""

    event_type: Literal["page_view", "click", "add_to_cart", "remove_from_cart", "checkout_started"]
    session_id: Identifier
    user_id: Identifier | None = None
    url: Url
    referrer: Annotated[str, StringConstraints(max_length=2048)] | None = None
    sku: Identifier | None = None


CLICKS_ARROW_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("url", pa.string()),
        ("referrer", pa.string()),
        ("sku", pa.string()),
    ]
)
"""Columns of the clicks table besides the common and lineage ones."""
