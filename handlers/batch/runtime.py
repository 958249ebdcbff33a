"""What a batch handler is, what it gets per batch, and how its configuration is resolved.

A batch handler is a class built once per worker from its options, with the
tables it owns (``ddl``) and ``handle(batch, rows, context)``: ``batch`` is the
announcement (stable ``batch_id``, offsets, counts, times), ``rows`` exactly
that batch's rows as an Arrow table, read from the lake, and ``context`` holds
the store transaction that already claimed the batch id in the inbox. State
changes in that transaction commit together with the claim, or not at all.
Failure: raise :class:`~foundation.errors.TransientError` (retried with
backoff; any other exception counts as transient) or
:class:`~foundation.errors.TerminalError` (dead-lettered at once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

import pyarrow as pa

from config.settings import load_stream_settings
from foundation.errors import ConfigError
from handlers.config import HandlersConfig
from handlers.loading import build_named
from handlers.retry import RetryPolicy
from handlers.store import Transaction
from sinks.batch_announcements import BatchAnnouncement
from sinks.lake_location import LakeLocation

__all__ = [
    "BATCH_HANDLERS_ENTRY_POINT_GROUP",
    "BatchContext",
    "BatchHandler",
    "BatchHandlerPlan",
    "batch_plan",
    "resolve_batch_handler",
]

BATCH_HANDLERS_ENTRY_POINT_GROUP = "streambatch.batch_handlers"
"""Where batch handler kinds are named (``batch.rollup``, ``batch.http-delivery``, yours)."""


@dataclass(frozen=True)
class BatchContext:
    """The transaction of one batch.

    Attributes:
        handler: Name of the batch handler (the inbox key).
        transaction: Holds the inbox claim of the batch id; commit is the worker's job.
        now: The clock (UTC, aware).
    """

    handler: str
    transaction: Transaction
    now: Callable[[], datetime]


class BatchHandler(Protocol):
    """One batch handler kind: tables it owns and what it does per batch.

    A handler with effects outside the store may also define
    ``deliver(batch, rows)``: called before the inbox transaction opens, so no
    lock is held while it waits; it runs again if that transaction fails.
    """

    ddl: ClassVar[Sequence[str]]

    def handle(self, batch: BatchAnnouncement, rows: pa.Table, context: BatchContext) -> None:
        """Process one committed batch (``rows``: exactly its rows) in ``context.transaction``."""


@dataclass(frozen=True)
class BatchHandlerPlan:
    """Everything a running batch worker needs, defaults applied."""

    name: str
    stream: str
    handler: str
    topic: str
    retry: RetryPolicy
    options: Mapping[str, Any]
    start_from: str
    dead_letter_topic: str
    group_id: str
    lake: LakeLocation


def batch_plan(config: HandlersConfig, name: str, lake: LakeLocation) -> BatchHandlerPlan:
    """The plan of batch handler ``name``; ConfigError naming the known ones if unknown."""
    settings = config.batch_handlers.get(name)
    if settings is None:
        known = ", ".join(sorted(config.batch_handlers)) or "none"
        raise ConfigError(f"no batch handler named {name!r} in the handlers file (known: {known})")
    topic = settings.topic or load_stream_settings(settings.stream).announcement_topic
    return BatchHandlerPlan(
        name=name,
        stream=settings.stream,
        handler=settings.handler,
        topic=topic,
        retry=settings.retry.over(config.default_retry()),
        options=dict(settings.options),
        start_from=settings.start_from,
        dead_letter_topic=settings.dead_letter_topic or f"{name}.dlq",
        group_id=settings.group_id or f"streambatch-batch-{name}",
        lake=lake,
    )


def resolve_batch_handler(spec: str, options: Mapping[str, Any]) -> BatchHandler:
    """Build the handler named ``spec``: an entry point name or ``package.module:Class``.

    Raises:
        ConfigError: naming the spec when it cannot be found or refuses its options.
    """
    handler: BatchHandler = build_named(
        "batch handler", BATCH_HANDLERS_ENTRY_POINT_GROUP, spec, options
    )
    return handler
