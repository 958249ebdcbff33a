"""The names of the headers a dead letter carries, for its writers and its readers.

The flow's writer adds the error and source headers; a queue worker adds the
handler headers too. ``dlq inspect`` and ``dlq redrive`` read them back, and a
redriven record leaves them all behind (:data:`ERROR_HEADER_NAMES`).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ERROR_CLASS",
    "ERROR_HEADER_NAMES",
    "ERROR_MESSAGE",
    "ERROR_STAGE",
    "HANDLER_ATTEMPTS",
    "HANDLER_NAME",
    "SOURCE_OFFSET",
    "SOURCE_PARTITION",
    "SOURCE_TOPIC",
]

ERROR_STAGE: Final = "error.stage"
ERROR_CLASS: Final = "error.class"
ERROR_MESSAGE: Final = "error.message"
SOURCE_TOPIC: Final = "source.topic"
SOURCE_PARTITION: Final = "source.partition"
SOURCE_OFFSET: Final = "source.offset"
HANDLER_NAME: Final = "handler.name"
HANDLER_ATTEMPTS: Final = "handler.attempts"

ERROR_HEADER_NAMES: Final = (
    ERROR_STAGE,
    ERROR_CLASS,
    ERROR_MESSAGE,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    HANDLER_NAME,
    HANDLER_ATTEMPTS,
)
"""Every header a dead letter gets besides the original record's own."""
