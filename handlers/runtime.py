"""What a handler is and what it may do while it handles one event.

A handler is a class built once per worker from its options. For each event
it gets the decoded event (a dict with a string ``event_id``) and a
:class:`HandlerContext` whose transaction already holds the inbox claim of
that event: the handler's state changes and the events it publishes commit
together with the claim, or not at all. A handler signals failure by raising
:class:`~foundation.errors.TransientError` (retried with backoff) or
:class:`~foundation.errors.TerminalError` (dead-lettered at once); any other
exception counts as transient.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import orjson

from handlers.loading import build_named, named_in
from handlers.schemas import EventSchema, InvalidEventError
from handlers.store import Store, Transaction

__all__ = [
    "HANDLERS_ENTRY_POINT_GROUP",
    "PUBLISHER_HEADER",
    "Handler",
    "HandlerContext",
    "HandlerFactory",
    "InvalidEventError",
    "builtin_handlers",
    "derived_event_id",
    "format_instant",
    "install",
    "resolve_handler",
]

# Fixed forever: derived event ids must be the same in every process and release.
_EVENT_ID_NAMESPACE = uuid.UUID("9b5a8f0e-4c1d-5e36-a7f2-3d0c8e61b4a9")
_NAMESPACE_BYTES = _EVENT_ID_NAMESPACE.bytes
PUBLISHER_HEADER = "streambatch.handler"
"""The header naming the worker that published an event (checked against the schema)."""
HANDLERS_ENTRY_POINT_GROUP = "streambatch.handlers"
"""Where handler kinds are named: ``name = "package.module:Class"`` (the workflow's too)."""


class Handler(Protocol):
    """One handler kind: tables it owns and what it does per event."""

    ddl: ClassVar[Sequence[str]]

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        """Apply ``event`` in ``context.transaction``; publish through ``context``."""


HandlerFactory = Callable[[Mapping[str, Any]], Handler]


def format_instant(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and ``Z``, as the generator writes it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def derived_event_id(worker: str, cause_event_id: str, event_type: str, detail: str = "") -> str:
    """The id of an event a worker publishes because of ``cause_event_id``.

    Deterministic: a redelivered cause yields the same id, so the lake and the
    next handlers drop the repeat.
    """
    name = f"{worker}\x1f{cause_event_id}\x1f{event_type}\x1f{detail}"
    # uuid.uuid5, spelt out: the same bytes and text in a fifth of the time (it
    # runs for every event a handler publishes).
    # SHA-1 is what version 5 is made of (RFC 4122), not a security measure here.
    sha1 = hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False)
    digest = bytearray(sha1.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclass
class HandlerContext:
    """The transaction of one event plus the means to publish resulting events.

    Attributes:
        worker: Name of the worker (the inbox key).
        cause: The event being handled.
        transaction: Holds the inbox claim; commit is the worker's job.
        publish_topic: Where resulting events go (the worker's ``publish_topic``).
        now: The clock (UTC, aware).
        publish_schema: What resulting events are checked against: the
            worker's ``publish_stream``.
    """

    worker: str
    cause: Mapping[str, Any]
    transaction: Transaction
    publish_topic: str
    now: Callable[[], datetime]
    publish_schema: EventSchema

    def publish(self, event_type: str, fields: Mapping[str, Any], *, detail: str = "") -> str:
        """Add an event to the outbox (sent after commit); returns its event id.

        The event is checked against the schema of the worker's publish
        stream first: a handler never publishes what that stream's flow would
        dead-letter (InvalidEventError otherwise).
        """
        cause_id = str(self.cause["event_id"])
        event_id = derived_event_id(self.worker, cause_id, event_type, detail)
        body = {
            "event_id": event_id,
            "event_type": event_type,
            "occurred_at": format_instant(self.now()),
            **fields,
        }
        value = orjson.dumps(body)
        try:
            self.publish_schema.check_json(value)  # the bytes that go out, serialized once
        except InvalidEventError as exc:
            raise InvalidEventError(f"{event_type!r} {exc}") from None
        key = str(fields.get("order_id", event_id)).encode()
        headers = [
            ("streambatch.cause", cause_id.encode()),
            (PUBLISHER_HEADER, self.worker.encode()),
        ]
        self.transaction.add_outbox(
            self.publish_topic, key, value, event_id, headers, publisher=self.worker
        )
        return event_id


def builtin_handlers() -> dict[str, str]:
    """Handler names of the entry point group, each with its ``module:attribute``.

    The order workflow's handlers are named there by this package, as any
    installed package names its own.
    """
    return named_in(HANDLERS_ENTRY_POINT_GROUP)


def resolve_handler(spec: str, options: Mapping[str, Any]) -> Handler:
    """Build the handler named ``spec``: an entry point name or ``package.module:attribute``.

    Raises:
        ConfigError: naming the spec when it cannot be found or refuses its options.
    """
    handler: Handler = build_named("handler", HANDLERS_ENTRY_POINT_GROUP, spec, options)
    return handler


def install(handler: Handler, store: Store) -> None:
    """Create the handler's tables if missing."""
    store.migrate(list(handler.ddl))
