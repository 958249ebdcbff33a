"""What validating one slice of a batch produces, and how slices are put together.

Shared by the columnar and the per-record validation paths (see
``flows.validation``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from connectors.records import DeadLetter

__all__ = ["NO_INTS", "Slice", "joined_extras", "merged"]


@dataclass(slots=True)
class Slice:
    """What one slice of a batch produced, row for row (``columns`` in offset order)."""

    columns: pa.Table
    offsets: npt.NDArray[np.int64]
    extras: list[str | None] | None  # None: no row has extra fields
    digests: npt.NDArray[np.int64]
    dead_letters: list[DeadLetter]


NO_INTS: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)


def joined_extras(parts: list[Slice]) -> list[str | None] | None:
    """The ``_extra`` values of ``parts`` in order; None when no row has extra fields."""
    if all(part.extras is None for part in parts):
        return None
    joined: list[str | None] = []
    for part in parts:
        joined.extend(part.extras if part.extras is not None else [None] * len(part.offsets))
    return joined


def merged(first: Slice, second: Slice) -> Slice:
    """Two slices of one batch as one, rows and dead letters in offset order."""
    letters = sorted([*first.dead_letters, *second.dead_letters], key=lambda d: d.offset)
    if not len(second.offsets):
        return Slice(first.columns, first.offsets, first.extras, first.digests, letters)
    if not len(first.offsets):
        return Slice(second.columns, second.offsets, second.extras, second.digests, letters)
    offsets = np.concatenate([first.offsets, second.offsets])
    order = np.argsort(offsets, kind="stable")
    extras = joined_extras([first, second])
    columns = pa.concat_tables([first.columns, second.columns]).take(order).combine_chunks()
    return Slice(
        columns,
        offsets[order],
        None if extras is None else [extras[i] for i in order.tolist()],
        np.concatenate([first.digests, second.digests])[order],
        letters,
    )
