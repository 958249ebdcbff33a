"""The clock, injected everywhere time matters."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock as an aware UTC datetime (the default :data:`Clock`)."""
    return datetime.now(UTC)
