"""Malformed-record injection: the kinds of bad input, and how a valid body is broken into each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson

__all__ = [
    "DEFAULT_MALFORMED_CLASSES",
    "STREAM_MALFORMED_CLASSES",
    "break_order_body",
    "break_stream_body",
]

DEFAULT_MALFORMED_CLASSES: Final[tuple[str, ...]] = (
    "not_json",
    "not_utf8",
    "missing_event_id",
    "wrong_type",
    "bad_timestamp",
    "unknown_event_type",
    "negative_quantity",
)
"""Every kind of bad input the generator can emit, in the order it cycles through them."""

STREAM_MALFORMED_CLASSES: Final[tuple[str, ...]] = (
    "not_json",
    "not_utf8",
    "missing_event_id",
    "wrong_type",
    "bad_timestamp",
    "unknown_event_type",
)
"""Bad input of the clicks and logs streams, in the order it cycles through them.

``negative_quantity`` only means something for orders. ``wrong_type`` is a
numeric ``url`` or ``user_id`` in clicks, and a ``LOUD`` level or a numeric
attribute value in logs.
"""

_BAD_BYTES_MARKER: Final = "@@not-utf8@@"


def break_order_body(body: dict[str, Any], cls: str, variant: int) -> tuple[bytes, bool]:
    """Encode the ``OrderPlaced`` ``body`` broken as ``cls`` says.

    Returns:
        The value, and whether its ``event_id`` is still readable.

    Raises:
        ValueError: ``cls`` is not one of :data:`DEFAULT_MALFORMED_CLASSES`.
    """
    items: list[dict[str, Any]] = body["items"]
    if cls == "not_json":
        return (b"{not json" if variant else orjson.dumps(body)[: -len(body["order_id"])]), False
    if cls == "not_utf8":
        body["customer_id"] = f"cus-{_BAD_BYTES_MARKER}"
        return orjson.dumps(body).replace(_BAD_BYTES_MARKER.encode(), b"\xff\xfe"), False
    if cls == "missing_event_id":
        del body["event_id"]
        return orjson.dumps(body), False
    if cls == "wrong_type":
        if variant:
            body["total_amount"] = {"value": body["total_amount"], "scale": 2}
        else:
            items[0]["quantity"] = "two"
    elif cls == "bad_timestamp":
        _break_timestamp(body, variant)
    elif cls == "unknown_event_type":
        body["event_type"] = "OrderTeleported"
    elif cls == "negative_quantity":
        items[0]["quantity"] = -int(items[0]["quantity"])
    else:
        raise ValueError(f"unknown malformed class {cls!r}")
    return orjson.dumps(body), True


def break_stream_body(
    body: dict[str, Any],
    cls: str,
    variant: int,
    *,
    text_field: str,
    break_type: Callable[[dict[str, Any], int], None],
    unknown_event_type: str,
) -> tuple[bytes, bool]:
    """Encode ``body`` broken as ``cls`` says; also tell whether its event_id is still readable."""
    if cls == "not_json":
        # Variant 0 cuts the closing brace off: a truncated message.
        return (b"{not json" if variant else orjson.dumps(body)[:-2]), False
    if cls == "not_utf8":
        body[text_field] = f"{body[text_field]}{_BAD_BYTES_MARKER}"
        return orjson.dumps(body).replace(_BAD_BYTES_MARKER.encode(), b"\xff\xfe"), False
    if cls == "missing_event_id":
        del body["event_id"]
        return orjson.dumps(body), False
    if cls == "wrong_type":
        break_type(body, variant)
    elif cls == "bad_timestamp":
        _break_timestamp(body, variant)
    elif cls == "unknown_event_type":
        body["event_type"] = unknown_event_type
    else:  # pragma: no cover - the classes are STREAM_MALFORMED_CLASSES
        raise ValueError(f"unknown malformed class {cls!r}")
    return orjson.dumps(body), True


def _break_timestamp(body: dict[str, Any], variant: int) -> None:
    # Variant 1 drops the offset: a naive time is not RFC 3339.
    body["occurred_at"] = str(body["occurred_at"])[:-1] if variant else "yesterday"
