"""What clicks and logs are derived from, and how their rows become records.

The valid order events on a millisecond clock (:class:`OrderTimeline`), and
:class:`RowSource`, which numbers, times and breaks the rows of either stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any, ClassVar, Final, Generic, TypeVar

import orjson

from generator.malformed import STREAM_MALFORMED_CLASSES, break_stream_body
from generator.orders import DEFAULT_START, generate_order_records
from generator.records import GeneratedRecord, interleave

__all__ = [
    "MillisClock",
    "OrderFact",
    "OrderTimeline",
    "RowSource",
    "between",
    "encode",
    "order_timeline",
    "pick",
    "records_from_rows",
]

_T = TypeVar("_T")
_ONE_MS: Final = timedelta(milliseconds=1)
_ATTRIBUTE_FIELDS: Final[tuple[str, ...]] = (
    "order_id",
    "customer_id",
    "payment_id",
    "amount",
    "total_amount",
    "currency",
    "reason",
    "warehouse",
    "channel",
    "template",
)
# ms offset, event_type, string fields (and item_count), distinct skus.
OrderFact = tuple[int, str, dict[str, str], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class OrderTimeline:
    """The valid order events, with times as milliseconds after ``clock``'s base."""

    clock: MillisClock
    events: list[OrderFact]


def between(rng: Random, low: int, high: int) -> int:
    """A uniform integer in ``[low, high]``, at a fraction of ``Random.randint``'s cost."""
    return low + int(rng.random() * (high - low + 1))


def pick(rng: Random, options: Sequence[_T]) -> _T:
    """A uniform choice, at a fraction of ``Random.choice``'s cost."""
    return options[int(rng.random() * len(options))]


class MillisClock:
    """Formats millisecond offsets from a UTC instant as RFC 3339 strings."""

    def __init__(self, base: datetime) -> None:
        self._anchor = base.replace(microsecond=0)
        self._anchor_ms = base.microsecond // 1000
        # Formatting each whole second once keeps a formatted time at a dict lookup.
        self._seconds: dict[int, str] = {}

    def format(self, offset_ms: int) -> str:
        second, millis = divmod(self._anchor_ms + offset_ms, 1000)
        prefix = self._seconds.get(second)
        if prefix is None:
            prefix = (self._anchor + timedelta(seconds=second)).isoformat()[:19]
            self._seconds[second] = prefix
        return f"{prefix}.{millis:03d}Z"


def encode(body: dict[str, Any]) -> bytes:
    """Compact JSON of ``body``, in a bytes object of its own size."""
    # orjson's result keeps its oversized first allocation; many of them held
    # at once fragment the heap (docs/performance.md).
    return bytes(memoryview(orjson.dumps(body)))


def _order_list(
    count: int,
    seed: int,
    duplicate_ratio: float,
    malformed_ratio: float,
    start: datetime | None,
    *,
    checkouts_only: bool = False,
) -> list[GeneratedRecord]:
    records = generate_order_records(
        count,
        seed=seed,
        duplicate_ratio=duplicate_ratio,
        malformed_ratio=malformed_ratio,
        start=start,
        checkouts_only=checkouts_only,
    )
    if duplicate_ratio + malformed_ratio >= 1.0:
        message = (
            f"duplicate_ratio ({duplicate_ratio}) + malformed_ratio ({malformed_ratio}) "
            "must be < 1 to leave room for valid clicks and logs"
        )
        raise ValueError(message)
    return list(records)


def _read_orders(orders: Iterable[GeneratedRecord], start: datetime | None) -> OrderTimeline:
    first = (DEFAULT_START if start is None else start).astimezone(UTC)
    # Order times are the start plus whole milliseconds, printed to the millisecond.
    base = first.replace(microsecond=first.microsecond // 1000 * 1000)
    events: list[OrderFact] = []
    for record in orders:
        if record.kind != "valid":
            continue
        body = orjson.loads(record.value)
        moment = datetime.fromisoformat(body["occurred_at"])
        fields = {name: body[name] for name in _ATTRIBUTE_FIELDS if name in body}
        skus: tuple[str, ...] = ()
        if "items" in body:
            fields["item_count"] = str(len(body["items"]))
            skus = tuple(dict.fromkeys(item["sku"] for item in body["items"]))
        events.append(((moment - base) // _ONE_MS, body["event_type"], fields, skus))
    return OrderTimeline(MillisClock(base), events)


def _share_counts(valid: int, duplicate_ratio: float, malformed_ratio: float) -> tuple[int, int]:
    room = 1.0 - duplicate_ratio - malformed_ratio
    return round(valid * duplicate_ratio / room), round(valid * malformed_ratio / room)


def order_timeline(
    count: int,
    seed: int,
    duplicate_ratio: float,
    malformed_ratio: float,
    start: datetime | None,
    *,
    checkouts_only: bool = False,
) -> tuple[list[GeneratedRecord], OrderTimeline]:
    """The order records of :func:`generate_order_records` and the timeline of their valid events.

    Raises:
        ValueError: On the arguments :func:`generate_order_records` refuses,
            or if ``duplicate_ratio + malformed_ratio >= 1``.
    """
    orders = _order_list(
        count, seed, duplicate_ratio, malformed_ratio, start, checkouts_only=checkouts_only
    )
    return orders, _read_orders(orders, start)


_Row = TypeVar("_Row", bound=tuple[Any, ...])


class RowSource(Generic[_Row]):
    """Turns rows sorted by time (milliseconds first) into records; makes malformed ones in between.

    A stream's subclass says how a row becomes a body and what a malformed
    body looks like; numbering, timing and breaking are shared. A malformed
    record carries the time of the last valid one, so times never go backwards.
    """

    event_id_prefix: ClassVar[str]
    """``evt-c`` or ``evt-l``: event ids are unique per stream and never equal to another's."""
    text_field: ClassVar[str]
    """The text field that ``not_utf8`` puts bad bytes into."""
    unknown_event_type: ClassVar[str]
    """The ``event_type`` of an ``unknown_event_type`` record."""

    def __init__(self, rng: Random, seed: int, clock: MillisClock, rows: list[_Row]) -> None:
        self.rng = rng
        self._seed = seed
        self._clock = clock
        self._rows = iter(rows)
        self._valid_emitted = 0
        self._malformed_emitted = 0
        self._last_time = clock.format(rows[0][0] if rows else 0)

    def next_valid(self) -> GeneratedRecord:
        row = next(self._rows)
        event_id = f"{self.event_id_prefix}-{self._seed}-{self._valid_emitted:010d}"
        self._valid_emitted += 1
        self._last_time = self._clock.format(row[0])
        key, body = self.valid_body(row, event_id, self._last_time)
        return GeneratedRecord(
            key=key.encode(), value=encode(body), kind="valid", event_id=event_id
        )

    def next_malformed(self, cls: str, variant: int) -> GeneratedRecord:
        number = self._malformed_emitted
        self._malformed_emitted += 1
        event_id = f"{self.event_id_prefix}-{self._seed}-m{number:09d}"
        key, body = self.malformed_body(number, event_id, self._last_time)
        value, readable = break_stream_body(
            body,
            cls,
            variant,
            text_field=self.text_field,
            break_type=self.break_type,
            unknown_event_type=self.unknown_event_type,
        )
        return GeneratedRecord(
            key=key.encode(),
            value=value,
            kind="malformed",
            event_id=event_id if readable else None,
            malformed_class=cls,
        )

    def valid_body(self, row: _Row, event_id: str, occurred_at: str) -> tuple[str, dict[str, Any]]:
        """The key and the body of the valid record of ``row``."""
        raise NotImplementedError

    def malformed_body(
        self, number: int, event_id: str, occurred_at: str
    ) -> tuple[str, dict[str, Any]]:
        """The key and the still valid body of the ``number``-th malformed record."""
        raise NotImplementedError

    def break_type(self, body: dict[str, Any], variant: int) -> None:
        """Give a field of ``body`` the wrong JSON type (class ``wrong_type``)."""
        raise NotImplementedError


def records_from_rows(
    source: RowSource[Any], rows: int, duplicate_ratio: float, malformed_ratio: float
) -> list[GeneratedRecord]:
    """Every record of ``source``: its ``rows`` valid ones, plus duplicates and malformed ones.

    Duplicates and malformed records are ``round(rows * ratio / (1 - duplicate_ratio -
    malformed_ratio))`` each, so each share is within half a record of ``ratio * total``.
    """
    duplicates, malformed = _share_counts(rows, duplicate_ratio, malformed_ratio)
    return list(
        interleave(
            source,
            valid=rows,
            duplicates=duplicates,
            malformed=malformed,
            classes=STREAM_MALFORMED_CLASSES,
        )
    )
