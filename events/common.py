"""Field types and the base model shared by every stream's events.

The event contract: every event has ``event_id`` (1..128
chars), ``event_type`` and ``occurred_at`` (RFC 3339 with an offset). Money is
a :class:`~decimal.Decimal` that fits ``decimal(18, 4)``: a value with more
places is refused, never rounded. Timestamps keep their offset here and
are stored as UTC microseconds. Unknown extra fields are kept in ``model_extra``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "MONEY_PRECISION",
    "MONEY_SCALE",
    "EventBase",
    "Identifier",
    "Money",
    "ShortText",
    "UtcTimestamp",
]

MONEY_PRECISION = 18
MONEY_SCALE = 4


def _representable_in_utc(value: datetime) -> datetime:
    """Refuse instants whose UTC date leaves years 1..9999 (``9999-12-31T23:59-23:59``)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant in UTC is outside years 1 to 9999") from None
    return value


# Strict: a JSON number or a date without a time is not an RFC 3339 timestamp.
# The offset is kept on the model; Arrow stores the instant in UTC. (The
# validation fast path checks the same range on the Arrow column.)
UtcTimestamp = Annotated[AwareDatetime, Field(strict=True), AfterValidator(_representable_in_utc)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ShortText = Annotated[str, StringConstraints(max_length=4096)]
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=MONEY_PRECISION, decimal_places=MONEY_SCALE, allow_inf_nan=False),
]


class EventBase(BaseModel):
    """Fields every event of every stream has."""

    model_config = ConfigDict(extra="allow", frozen=True, str_strip_whitespace=False)

    event_id: Identifier
    occurred_at: UtcTimestamp
