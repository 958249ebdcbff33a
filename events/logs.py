"""The logs stream: what the services say (key: ``service``)."""

from __future__ import annotations

from typing import Annotated, Literal

import pyarrow as pa
from pydantic import Field, StringConstraints

from events.common import EventBase, Identifier

__all__ = ["LOGS_ARROW_SCHEMA", "LOG_EVENT_TYPES", "LOG_LEVELS", "LogEvent"]

LOG_EVENT_TYPES = ("log",)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

AttributeKey = Annotated[str, StringConstraints(min_length=1, max_length=256)]
AttributeValue = Annotated[str, StringConstraints(max_length=4096)]


class LogEvent(EventBase):
    """One log line of one service."""

    event_type: Literal["log"]
    service: Identifier
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    message: Annotated[str, StringConstraints(max_length=65536)]
    trace_id: Identifier | None = None
    attributes: Annotated[dict[AttributeKey, AttributeValue], Field(max_length=256)] = {}


LOGS_ARROW_SCHEMA = pa.schema(
    [
        ("service", pa.string()),
        ("level", pa.string()),
        ("message", pa.string()),
        ("trace_id", pa.string()),
        ("attributes", pa.map_(pa.string(), pa.string())),
    ]
)
"""Columns of the logs table besides the common and lineage ones."""
