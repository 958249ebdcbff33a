"""The generated record, what a flow must make of a set of them, and how kinds are mixed.

A stream is valid records with duplicates and malformed ones spread among them
at random (:func:`interleave`); :func:`summarize` counts what a correct flow
must end up with.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from random import Random
from typing import Final, Literal, Protocol

__all__ = [
    "GeneratedRecord",
    "GenerationSummary",
    "RecordKind",
    "RecordSource",
    "interleave",
    "summarize",
]

RecordKind = Literal["valid", "duplicate", "malformed"]

_DUPLICATE_LOOKBACK: Final = 64


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    """One Kafka message to produce to the ``orders``, ``clicks`` or ``logs`` topic.

    Attributes:
        key: The ``order_id``, ``session_id`` or ``service`` as UTF-8 bytes;
            malformed records have one too.
        value: The message value, byte for byte.
        kind: ``valid``, ``duplicate`` (an exact re-send of an earlier valid
            record) or ``malformed`` (must be dead-lettered).
        event_id: The ``event_id`` a consumer can read from the value; ``None``
            when the value is not a readable JSON object with one.
        malformed_class: One of :data:`DEFAULT_MALFORMED_CLASSES` for malformed
            records, else ``None``.
        total_amount: The exact ``total_amount`` of a valid ``OrderPlaced``;
            ``None`` for every other record, duplicates included.
    """

    key: bytes
    value: bytes
    kind: RecordKind
    event_id: str | None
    malformed_class: str | None = None
    total_amount: Decimal | None = None


@dataclass(frozen=True, slots=True)
class GenerationSummary:
    """What a flow must end up with after reading a set of generated records.

    Attributes:
        total: Number of records.
        valid: Records that must land in the lake exactly once each.
        duplicates: Re-sends that deduplication must drop.
        malformed: Records that must go to the dead-letter topic.
        orders_placed: Distinct valid ``OrderPlaced`` events (0 for clicks and logs).
        valid_event_ids: The ``event_id`` of every valid record.
        malformed_by_class: Malformed records per class.
        total_amount_sum: Sum of ``total_amount`` over distinct valid
            ``OrderPlaced`` (0 for clicks and logs).
    """

    total: int
    valid: int
    duplicates: int
    malformed: int
    orders_placed: int
    valid_event_ids: frozenset[str]
    malformed_by_class: dict[str, int]
    total_amount_sum: Decimal


def summarize(records: Iterable[GeneratedRecord]) -> GenerationSummary:
    """Count generated records of one stream the way a correct flow must see them.

    Valid records are counted once per ``event_id``, so summarising the same
    records twice over gives the same ``total_amount_sum``. Works for every
    stream; clicks and logs have no ``OrderPlaced``, so their
    ``orders_placed`` and ``total_amount_sum`` are 0.
    """
    kinds: Counter[str] = Counter()
    by_class: Counter[str] = Counter()
    valid_ids: set[str] = set()
    amount_sum = Decimal(0)
    orders_placed = 0
    for record in records:
        kinds[record.kind] += 1
        if record.kind == "malformed":
            by_class[record.malformed_class or "unknown"] += 1
        elif record.kind == "valid" and record.event_id is not None:
            if record.event_id in valid_ids:
                continue
            valid_ids.add(record.event_id)
            if record.total_amount is not None:
                orders_placed += 1
                amount_sum += record.total_amount
    return GenerationSummary(
        total=kinds.total(),
        valid=kinds["valid"],
        duplicates=kinds["duplicate"],
        malformed=kinds["malformed"],
        orders_placed=orders_placed,
        valid_event_ids=frozenset(valid_ids),
        malformed_by_class=dict(by_class),
        total_amount_sum=amount_sum,
    )


class RecordSource(Protocol):
    """What :func:`interleave` draws valid and malformed records from."""

    rng: Random

    def next_valid(self) -> GeneratedRecord: ...

    def next_malformed(self, cls: str, variant: int) -> GeneratedRecord: ...


def interleave(
    source: RecordSource,
    *,
    valid: int,
    duplicates: int,
    malformed: int,
    classes: tuple[str, ...],
) -> Iterator[GeneratedRecord]:
    """Yield exactly ``valid``, ``duplicates`` and ``malformed`` records, spread at random.

    Malformed records cycle through ``classes`` (variant 0, then 1); a
    duplicate repeats one of the last 64 valid records, so it always comes
    after its original.
    """
    rng = source.rng
    recent: deque[GeneratedRecord] = deque(maxlen=_DUPLICATE_LOOKBACK)
    malformed_emitted = 0
    left = valid + duplicates + malformed
    while left:
        # Selection sampling: exact counts, each arrangement equally likely, O(1) memory.
        draw = rng.randrange(left)
        left -= 1
        if draw < malformed:
            malformed -= 1
            cls = classes[malformed_emitted % len(classes)]
            variant = (malformed_emitted // len(classes)) % 2
            malformed_emitted += 1
            yield source.next_malformed(cls, variant)
        elif draw < malformed + duplicates and recent:
            duplicates -= 1
            original = rng.choice(recent)
            yield GeneratedRecord(
                key=original.key,
                value=original.value,
                kind="duplicate",
                event_id=original.event_id,
            )
        else:
            # Also taken for a duplicate drawn before any valid record exists:
            # that duplicate stays owed, and valid >= 1 is left as none was emitted.
            valid -= 1
            record = source.next_valid()
            recent.append(record)
            yield record
