"""Pydantic models of every stream's events and the streams' table schemas."""

from events.registry import ORDERS, STREAMS, get_stream
from events.stream import StreamSchema

__all__ = ["ORDERS", "STREAMS", "StreamSchema", "get_stream"]
