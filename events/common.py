"""Field types and the base model shared by every stream's events.

The event contract: every event has ``event_id`` (1..128
chars), ``event_type`` and ``occurred_at`` (RFC 3339 with an offset). Money is
a :class:`~decimal.Decimal` that fits ``decimal(18, 4)``: a value with more
places is refused, never rounded (records are decoded with exact decimals,
never through a binary float). Timestamps are RFC 3339 text with an offset,
nothing else; they keep their offset here and are stored as UTC microseconds.
Integers are JSON integers (:data:`Count`): ``true``, ``"1"`` and ``1.0`` are
refused. Unknown extra fields are kept in ``model_extra``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
)
from pydantic_core import core_schema

__all__ = [
    "MONEY_PRECISION",
    "MONEY_SCALE",
    "RFC3339_PATTERN",
    "Count",
    "EventBase",
    "Identifier",
    "Money",
    "Rfc3339Text",
    "ShortText",
    "UtcTimestamp",
]

MONEY_PRECISION = 18
MONEY_SCALE = 4


# RFC 3339 ``date-time`` (``T`` and ``Z`` in either case) with an offset; fractional
# digits past microseconds only when they are zeros, so nothing is ever truncated.
# ``$`` is the end of the text for pydantic's Rust regex and Arrow's RE2 (Python's
# ``re`` needs ``\Z`` instead: a ``$`` there also matches before a final newline).
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6}0*)?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


@dataclass(frozen=True)
class Rfc3339Text:
    """Annotation: the value must be RFC 3339 text before it is parsed as a datetime.

    Checked by pydantic-core itself (a string pattern chained before the
    datetime), so no Python call per value; a refusal is a ``datetime_rfc3339``
    error (class ``BadTimestamp``).
    """

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        text = core_schema.str_schema(pattern=RFC3339_PATTERN, strict=True)
        form = core_schema.custom_error_schema(
            text,
            custom_error_type="datetime_rfc3339",
            custom_error_message=(
                "Input should be an RFC 3339 timestamp with an offset, "
                "like 2026-11-28T14:03:11.123Z (at most 6 fractional digits)"
            ),
        )
        return core_schema.chain_schema([form, handler(source)])


def _representable_in_utc(value: datetime) -> datetime:
    """Refuse instants whose UTC date leaves years 1..9999 (``9999-12-31T23:59-23:59``)."""
    if 1 < value.year < 9999:
        return value  # an offset moves the date by a day at most: always representable
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant in UTC is outside years 1 to 9999") from None
    return value


# Only RFC 3339 text: a JSON number, a string of digits or a date without a time
# is not a timestamp. The offset is kept on the model; Arrow stores the instant
# in UTC. (The validation fast paths check the same form and range on the text
# and on the Arrow column.)
UtcTimestamp = Annotated[AwareDatetime, Rfc3339Text(), AfterValidator(_representable_in_utc)]
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
