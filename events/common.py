"""Field types and the base model shared by every stream's events.

Contract (CONTRACT.md section 2): every event has ``event_id`` (1..128
chars), ``event_type`` and ``occurred_at`` (RFC 3339 with an offset). Money is
a :class:`~decimal.Decimal` that fits ``decimal(18, 4)``: a value with more
places is refused, never rounded (records are decoded with exact decimals,
never through a binary float). Timestamps are RFC 3339 text with an offset,
nothing else; they keep their offset here and are stored as UTC microseconds.
Integers are JSON integers (:data:`Count`): ``true``, ``"1"`` and ``1.0`` are
refused. Unknown extra fields are kept in ``model_extra``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "MONEY_PRECISION",
    "MONEY_SCALE",
    "RFC3339_PATTERN",
    "Count",
    "EventBase",
    "Identifier",
    "Money",
    "ShortText",
    "UtcTimestamp",
]

MONEY_PRECISION = 18
MONEY_SCALE = 4


# RFC 3339 ``date-time`` (``T`` and ``Z`` in either case) with an offset; fractional
# digits past microseconds only when they are zeros, so nothing is ever truncated.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6}0*)?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])\Z"
)
_RFC3339 = re.compile(RFC3339_PATTERN)


def _rfc3339_text(value: object) -> object:
    """Refuse anything but RFC 3339 text: no Unix time, no date alone, no other form."""
    if not isinstance(value, str) or _RFC3339.match(value) is None:
        raise PydanticCustomError(
            "datetime_rfc3339",
            "Input should be an RFC 3339 timestamp with an offset, "
            "like 2026-11-28T14:03:11.123Z (at most 6 fractional digits)",
        )
    return value


def _representable_in_utc(value: datetime) -> datetime:
    """Refuse instants whose UTC date leaves years 1..9999 (``9999-12-31T23:59-23:59``)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant in UTC is outside years 1 to 9999") from None
    return value


# Only RFC 3339 text: a JSON number, a string of digits or a date without a time
# is not a timestamp. The offset is kept on the model; Arrow stores the instant
# in UTC. (The validation fast paths check the same form and range on the text
# and on the Arrow column.)
UtcTimestamp = Annotated[
    AwareDatetime, BeforeValidator(_rfc3339_text), AfterValidator(_representable_in_utc)
]
# A JSON integer, nothing coerced into one (no bool, no string, no 1.0).
Count = Annotated[int, Field(strict=True)]
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
