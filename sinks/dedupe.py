"""Compact memory of recent event ids, per Kafka partition, in arrival time.

An id is kept as a 128-bit digest (two ``uint64``), the time its first copy
arrived (microseconds of the flow's clock) and the 64-bit digest of its raw
value: 32 bytes per remembered id, with no Python object per id. The id
digest is two SipHash values (Python's ``hash`` of ``id`` and of
``id + "\\0"``), keyed with a random per-process key, so nobody can craft
colliding ids; the chance that two distinct ids share a digest is about
``n**2 / 2**129``: nil for any real stream, so no valid event is dropped. The
key changes with every process, which is fine: the index is rebuilt from the
ids in the lake at start.

Horizon: an event whose id arrived first less than ``horizon`` before it (in
arrival time, never in the events' own ``occurred_at``) is a duplicate; the
first occurrence wins. No event can move the window of others: an event dated
days ahead or behind is remembered from when it arrived, like any other. A
duplicate whose value differs from the first one's is also a *conflict* (same
id, other payload): still dropped, but counted apart.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BYTES_PER_ID", "DedupeIndex", "DedupeResult", "digest_ids"]

_U64 = npt.NDArray[np.uint64]
_I64 = npt.NDArray[np.int64]
BYTES_PER_ID = 32
# Lookups cost one binary search per run: never more runs than this.
_MAX_RUNS = 32
_EMPTY = np.empty(0, dtype=np.uint64)  # what a merged-away run keeps


def digest_ids(event_ids: Sequence[str]) -> npt.NDArray[np.uint64]:
    """128-bit digests of ``event_ids`` as an ``(n, 2)`` uint64 array (this process only).

    Two independent keyed SipHash values (``hash(id)`` and ``hash(id + "\\0")``),
    each computed by a C-level ``map``: no Python bytecode per id.
    """
    count = len(event_ids)
    high = np.fromiter(map(hash, event_ids), dtype=np.int64, count=count)
    salted = map(operator.add, event_ids, itertools.repeat("\0"))
    low = np.fromiter(map(hash, salted), dtype=np.int64, count=count)
    return np.stack([high, low], axis=1).view(np.uint64)


def _first_occurrences(
    digests: npt.NDArray[np.uint64], order: npt.NDArray[np.intp]
) -> npt.NDArray[np.intp]:
    """For each row, the row of the first occurrence of its digest (itself if first).

    ``order``: a stable argsort of the high words (equal ids are then adjacent,
    earliest first).
    """
    high = digests[order, 0]
    starts = np.empty(len(order), dtype=bool)
    starts[:1] = True
    starts[1:] = high[1:] != high[:-1]
    group = np.cumsum(starts) - 1
    owner = np.empty(len(order), dtype=np.intp)
    owner[order] = order[np.flatnonzero(starts)][group]
    if bool((digests[owner, 1] == digests[:, 1]).all()):
        return owner
    # Two ids share the high word only (about 1 in 2**64 pairs): compare both words.
    whole = np.ascontiguousarray(digests).view(np.dtype((np.void, 16))).ravel()
    _, first, inverse = np.unique(whole, return_index=True, return_inverse=True)
    exact: npt.NDArray[np.intp] = first[inverse]
    return exact


@dataclass(frozen=True, slots=True)
class DedupeResult:
    """Which rows of a batch to keep: the first occurrence of each new id.

    ``conflicts`` counts the dropped rows whose value differs from the kept one.
    """

    keep: list[bool]
    duplicates: int
    conflicts: int
    digests: npt.NDArray[np.uint64]  # of every row checked, for :meth:`DedupeIndex.remember`


class _Run:
    """A sorted run of digests (by high word) with arrival times and value digests."""

    __slots__ = ("high", "low", "newest_us", "oldest_us", "times", "values")
    COLUMNS = ("high", "low", "times", "values")

    def __init__(self, high: _U64, low: _U64, times: _I64, values: _I64) -> None:
        """A run of arrays already sorted by ``high`` (see :meth:`sorting`)."""
        self.high, self.low, self.times, self.values = high, low, times, values
        self._bounds()

    @classmethod
    def sorting(cls, high: _U64, low: _U64, times: _I64, values: _I64) -> _Run:
        """A run of unsorted arrays, sorted by ``high`` (stable: equal words keep their order)."""
        order = np.argsort(high, kind="stable")
        return cls(high[order], low[order], times[order], values[order])

    def _bounds(self) -> None:
        empty = self.times.size == 0
        self.newest_us = int(np.iinfo(np.int64).min) if empty else int(self.times.max())
        self.oldest_us = int(np.iinfo(np.int64).min) if empty else int(self.times.min())

    def drop_expired(self, cutoff_us: int) -> None:
        """Forget ids older than ``cutoff_us`` if they are at least half of the run."""
        if self.oldest_us >= cutoff_us:
            return
        live = self.times >= cutoff_us
        if 2 * int(live.sum()) > live.size:
            return  # not worth a copy yet; lookups ignore them anyway
        # A filter keeps the order: the run stays sorted.
        self.high, self.low = self.high[live], self.low[live]
        self.times, self.values = self.times[live], self.values[live]
        self._bounds()

    def __len__(self) -> int:
        return int(self.high.size)

    @property
    def nbytes(self) -> int:
        return int(self.high.nbytes + self.low.nbytes + self.times.nbytes + self.values.nbytes)

    def lookup(
        self, high: _U64, low: _U64, cutoff_us: int
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.intp]]:
        """Which digests are here (arrived at or after ``cutoff_us``), and where."""
        if self.high.size == 0:
            return np.zeros(high.size, dtype=bool), np.zeros(high.size, dtype=np.intp)
        position = np.minimum(np.searchsorted(self.high, high), self.high.size - 1)
        found = (
            (self.high[position] == high)
            & (self.low[position] == low)
            & (self.times[position] >= cutoff_us)
        )
        return found, position


class DedupeIndex:
    """Remembers event ids for ``horizon`` of arrival time; first occurrence wins.

    Arrival times come from the caller's clock (the flow's), one per batch;
    the newest one remembered or checked is the watermark, and an id is
    forgotten once it arrived ``horizon`` or more before it (a horizon of 0
    dedupes within a batch only). A clock that
    steps back never brings a forgotten id back.
    """

    def __init__(self, horizon: timedelta) -> None:
        if horizon < timedelta(0):
            raise ValueError(f"horizon must not be negative, got {horizon}")
        self._horizon_us = int(horizon / timedelta(microseconds=1))
        self._runs: list[_Run] = []
        self._watermark_us: int | None = None

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    @property
    def runs(self) -> int:
        """How many sorted runs a lookup searches (O(log n) by construction)."""
        return len(self._runs)

    @property
    def nbytes(self) -> int:
        """Memory held by the remembered ids (arrays only)."""
        return sum(run.nbytes for run in self._runs)

    def check(
        self,
        event_ids: Sequence[str],
        value_digests: Sequence[int] | _I64,
        arrived_at_us: int | None = None,
    ) -> DedupeResult:
        """Mark the rows to keep, without remembering them (see :meth:`remember`).

        ``arrived_at_us``: when these rows arrived; ids that arrived first
        ``horizon`` or more before that are not duplicates any more. None:
        the watermark (the newest arrival remembered).
        """
        return self.check_digests(digest_ids(event_ids), value_digests, arrived_at_us)

    def check_digests(
        self,
        digests: npt.NDArray[np.uint64],
        value_digests: Sequence[int] | _I64,
        arrived_at_us: int | None = None,
    ) -> DedupeResult:
        """:meth:`check` for ids already hashed by :func:`digest_ids` (row for row)."""
        self._advance(arrived_at_us)
        count = len(digests)
        if not count:
            return DedupeResult([], 0, 0, digests)
        values = np.asarray(value_digests, dtype=np.int64)
        # One sort serves both steps: equal ids become neighbours, and sorted
        # lookups walk each run's arrays forwards (half the time of random ones).
        order = np.argsort(digests[:, 0], kind="stable")
        # Within the batch: the first of equal ids.
        owner = _first_occurrences(digests, order)
        mask = owner == np.arange(count)
        # What each row is compared with: the remembered value of its id, else
        # the value of the id's first row in this batch.
        reference = values[owner]
        if self._runs:
            high, low = digests[order, 0], digests[order, 1]
            remembered = np.zeros(count, dtype=bool)
            remembered_value = np.zeros(count, dtype=np.int64)
            cutoff = self._cutoff_us()
            for run in self._runs:
                found, position = run.lookup(high, low, cutoff)
                found &= ~remembered  # an id is in one run at most; first found wins
                remembered |= found
                remembered_value[found] = run.values[position[found]]
            in_index = np.empty(count, dtype=bool)
            in_index[order] = remembered
            index_value = np.empty(count, dtype=np.int64)
            index_value[order] = remembered_value
            reference = np.where(in_index[owner], index_value[owner], reference)
            mask &= ~in_index
        conflicts = int((~mask & (values != reference)).sum())
        kept = int(mask.sum())
        return DedupeResult(mask.tolist(), count - kept, conflicts, digests)

    def remember(
        self,
        event_ids: Sequence[str],
        arrived_at_us: int | Sequence[int] | _I64,
        value_digests: Sequence[int] | _I64,
    ) -> None:
        """Add committed ids with when they arrived (one time for all, or row for row).

        Forgets the ids that arrived ``horizon`` or more before the watermark.
        """
        self.remember_digests(digest_ids(event_ids), arrived_at_us, value_digests)

    def remember_digests(
        self,
        digests: npt.NDArray[np.uint64],
        arrived_at_us: int | Sequence[int] | _I64,
        value_digests: Sequence[int] | _I64,
    ) -> None:
        """:meth:`remember` for ids already hashed by :func:`digest_ids` (row for row)."""
        if not len(digests):
            return
        times = np.asarray(arrived_at_us, dtype=np.int64)
        if times.ndim == 0:
            times = np.full(len(digests), times, dtype=np.int64)
        values = np.asarray(value_digests, dtype=np.int64)
        self._runs.append(_Run.sorting(digests[:, 0], digests[:, 1], times, values))
        self._advance(int(times.max()))
        self._compact()

    def _advance(self, arrived_at_us: int | None) -> None:
        """Move the watermark forwards to ``arrived_at_us`` (never backwards)."""
        if arrived_at_us is not None and (
            self._watermark_us is None or arrived_at_us > self._watermark_us
        ):
            self._watermark_us = arrived_at_us

    def _compact(self) -> None:
        """Drop runs past the horizon; merge runs size-tiered (LSM style).

        The newest run is merged into the one before it while it is at least
        half that one's size, so run sizes at least double from newest to
        oldest: O(log n) runs to search, and each id is re-sorted O(log n)
        times in all (merging everything every few batches made the cost per
        event grow with the index). A run whose ids are mostly past the
        horizon is filtered at once, so memory stays within about twice the
        ids of one horizon.
        """
        cutoff = self._cutoff_us()
        self._runs = [run for run in self._runs if run.newest_us >= cutoff]
        for run in self._runs:
            run.drop_expired(cutoff)
        while len(self._runs) >= 2 and 2 * len(self._runs[-1]) >= len(self._runs[-2]):
            newer = self._runs.pop()
            older = self._runs.pop()
            self._runs.append(_merge(older, newer, cutoff))
        if len(self._runs) > _MAX_RUNS:  # only with very uneven batch sizes
            self._runs = [functools.reduce(lambda a, b: _merge(a, b, cutoff), self._runs)]

    def _cutoff_us(self) -> int:
        """The earliest arrival still remembered: less than ``horizon`` before the watermark."""
        if self._watermark_us is None:
            return int(np.iinfo(np.int64).min)
        return self._watermark_us - self._horizon_us + 1


def _merge(older: _Run, newer: _Run, cutoff_us: int) -> _Run:
    """One run with the live ids of two sorted runs, in linear time; consumes both.

    Equal high words keep ``older``'s entries first, as a stable sort of the
    two runs end to end would. Each input array is released as soon as its
    merged column is built, so a merge holds about 1.3 times the ids of the
    two runs, far less than a concatenation and a sort (docs/performance.md).
    """
    older, newer = _live(older, cutoff_us), _live(newer, cutoff_us)
    total = len(older) + len(newer)
    # Where each of newer's ids lands: after every older id with a high word
    # at most its own.
    into = np.searchsorted(older.high, newer.high, side="right")
    into += np.arange(len(newer), dtype=into.dtype)
    from_older = np.ones(total, dtype=bool)
    from_older[into] = False
    merged: list[npt.NDArray[Any]] = []
    for name in _Run.COLUMNS:
        column = np.empty(total, dtype=getattr(older, name).dtype)
        column[into] = getattr(newer, name)
        column[from_older] = getattr(older, name)
        setattr(older, name, _EMPTY)
        setattr(newer, name, _EMPTY)
        merged.append(column)
    return _Run(*merged)


def _live(run: _Run, cutoff_us: int) -> _Run:
    """``run`` without its ids older than ``cutoff_us`` (itself when all are live)."""
    if run.oldest_us >= cutoff_us:
        return run
    live = run.times >= cutoff_us
    return _Run(run.high[live], run.low[live], run.times[live], run.values[live])
