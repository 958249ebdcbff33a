"""The schema a handler's events are checked against: a registered stream's event models.

A worker publishes to one stream (``publish_stream``, per worker) and every
event it publishes is checked against that stream's models first, so a
handler never publishes what the stream's flow would dead-letter. The router
checks the events it fans out against the stream of its source topics.
pydantic's JSON mode is used throughout: timestamps are RFC 3339 strings
there, exactly as on the wire.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from events.registry import get_stream
from foundation.errors import TerminalError

__all__ = ["EventSchema", "InvalidEventError", "event_schema"]


class InvalidEventError(TerminalError):
    """The event does not satisfy the schema the handler needs."""


@dataclass(frozen=True)
class EventSchema:
    """The event models of stream ``stream``, as one checker.

    Attributes:
        stream: The registered stream's name (``orders``).
        adapter: pydantic's adapter of the stream's event model.
    """

    stream: str
    adapter: TypeAdapter[Any]

    def check_json(self, value: bytes) -> Any:
        """The raw record as its model.

        Raises:
            InvalidEventError: naming where the record is invalid and why.
        """
        try:
            return self.adapter.validate_json(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(the event)"
            raise InvalidEventError(f"event is invalid at {where}: {first['msg']}") from None

    def check(self, event: Mapping[str, Any]) -> Any:
        """A decoded event as its model (checked as the JSON it came from).

        Raises:
            InvalidEventError: naming the event type, where it is invalid and why.
        """
        try:
            return self.adapter.validate_json(orjson.dumps(dict(event)))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InvalidEventError(
                f"{event.get('event_type')!r} event is invalid at {where}: {first['msg']}"
            ) from None


@functools.cache
def event_schema(stream: str) -> EventSchema:
    """The checker of registered stream ``stream`` (built once per process).

    Raises:
        UnknownStreamError: naming the known streams.
    """
    return EventSchema(stream, get_stream(stream).adapter)
