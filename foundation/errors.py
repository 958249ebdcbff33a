"""The one error hierarchy of streambatch.

Transient errors may succeed when retried after a delay; terminal errors
never will: the record goes to the dead-letter topic or the flow stops.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeadLetterWriteError",
    "FenceMovedError",
    "LakeError",
    "StreambatchError",
    "TerminalError",
    "TransientError",
    "UnknownStreamError",
]


class StreambatchError(Exception):
    """Root of every error that streambatch raises on purpose."""


class TransientError(StreambatchError):
    """May succeed on retry (broker briefly away, commit conflict)."""


class TerminalError(StreambatchError):
    """Will not succeed on retry: dead-letter the record or stop."""


class ConfigError(TerminalError):
    """A setting is missing or invalid; the message names the variable."""


class UnknownStreamError(ConfigError):
    """A stream name that the registry does not know; the message lists the known ones."""


class DeadLetterWriteError(TerminalError):
    """A dead letter could not be written: the flow stops rather than lose it."""


class FenceMovedError(TransientError):
    """Another writer moved a partition's fence past our batch: retry from the new fence."""


class LakeError(TerminalError):
    """The lake is in a state we refuse to write over (e.g. foreign schema)."""
