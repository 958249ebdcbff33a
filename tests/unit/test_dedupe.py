"""Dedupe keeps the first of each id, counts the rest and the conflicts, honours the horizon.

Times given to the index are arrival times (the flow's clock, in microseconds).
"""

from __future__ import annotations

import tracemalloc
from datetime import timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.dedupe import BYTES_PER_ID, DedupeIndex, _merge, _Run, digest_ids

HOUR_US = 3600 * 1_000_000


def same_payload(ids: list[str]) -> list[int]:
    """Value digests as if every re-send carried the same bytes as the first."""
    return [hash(i) for i in ids]


def test_within_a_batch_first_wins() -> None:
    index = DedupeIndex(timedelta(hours=1))
    result = index.check(["a", "b", "a", "c", "b"], [1, 2, 1, 3, 2])
    assert result.keep == [True, True, False, True, False]
    assert (result.duplicates, result.conflicts) == (2, 0)


def test_same_id_other_payload_is_a_counted_conflict() -> None:
    index = DedupeIndex(timedelta(hours=1))
    result = index.check(["a", "a", "a"], [1, 1, 9])
    assert result.keep == [True, False, False]
    assert (result.duplicates, result.conflicts) == (2, 1)
    index.remember(["a"], [0], [1])
    again = index.check(["a", "a"], [1, 7])
    assert again.keep == [False, False]
    assert (again.duplicates, again.conflicts) == (2, 1)


def test_against_remembered_ids() -> None:
    index = DedupeIndex(timedelta(hours=1))
    index.remember(["a", "b"], [0, 0], [1, 2])
    result = index.check(["b", "c"], [2, 3])
    assert result.keep == [False, True]
    assert result.duplicates == 1


def test_ids_older_than_the_horizon_are_forgotten() -> None:
    index = DedupeIndex(timedelta(hours=1))
    index.remember(["old"], [0], [1])
    index.remember(["new"], [2 * HOUR_US], [2])
    assert index.check(["old", "new"], [1, 2]).keep == [True, False]


def test_the_window_runs_from_the_first_arrival() -> None:
    index = DedupeIndex(timedelta(hours=1))
    index.remember(["a"], 0, [1])
    assert index.check(["a"], [1], arrived_at_us=HOUR_US - 1).keep == [False]
    # The dropped copy is not remembered: the window still runs from the first.
    assert index.check(["a"], [1], arrived_at_us=HOUR_US).keep == [True]


def test_a_clock_stepping_back_brings_no_forgotten_id_back() -> None:
    index = DedupeIndex(timedelta(hours=1))
    index.remember(["a"], 0, [1])
    assert index.check(["a"], [1], arrived_at_us=2 * HOUR_US).keep == [True]
    assert index.check(["a"], [1], arrived_at_us=0).keep == [True]


def test_a_zero_horizon_dedupes_within_a_batch_only() -> None:
    index = DedupeIndex(timedelta(0))
    index.remember(["a"], 5, [1])
    assert index.check(["a", "b", "b"], [1, 2, 2], arrived_at_us=5).keep == [True, True, False]


def test_memory_per_id_is_32_bytes() -> None:
    index = DedupeIndex(timedelta(days=1))
    ids = [f"evt-{i:012d}" for i in range(100_000)]
    index.remember(ids, [0] * len(ids), same_payload(ids))
    assert len(index) == 100_000
    assert index.nbytes == BYTES_PER_ID * 100_000 == 32 * 100_000


def test_digests_are_stable_and_distinct() -> None:
    digests = digest_ids(["a", "b", "a"])
    assert digests.shape == (3, 2)
    assert (digests[0] == digests[2]).all()
    assert not (digests[0] == digests[1]).all()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdefghij"), max_size=12), max_size=8))
def test_keeps_first_of_each_id_across_batches_and_is_idempotent(batches: list[list[str]]) -> None:
    index = DedupeIndex(timedelta(days=1))
    kept: list[str] = []
    for batch in batches:
        result = index.check(batch, same_payload(batch))
        new = [i for i, keep in zip(batch, result.keep, strict=True) if keep]
        assert result.duplicates == len(batch) - len(new)
        assert result.conflicts == 0
        index.remember(new, [0] * len(new), same_payload(new))
        kept.extend(new)
    flat = [i for batch in batches for i in batch]
    assert kept == list(dict.fromkeys(flat))  # first occurrences, in order
    # Replaying everything again keeps nothing.
    for batch in batches:
        assert not any(index.check(batch, same_payload(batch)).keep)


def test_many_batches_keep_few_runs_and_forget_past_the_horizon() -> None:
    """Size-tiered merging: the index stays searchable in O(log n) runs and its
    memory follows the horizon, however many batches were remembered."""
    index = DedupeIndex(timedelta(hours=1))
    batch = 1_000
    minute_us = 60 * 1_000_000
    for number in range(300):  # 300 batches, one per minute of event time
        ids = [f"e{number}-{i}" for i in range(batch)]
        index.remember(ids, [number * minute_us] * batch, [0] * batch)
    # Every id of the last hour is still known; one from 2 hours before is not.
    recent = [f"e{n}-7" for n in range(241, 300)]
    assert index.check(recent, [0] * len(recent)).keep == [False] * len(recent)
    assert index.check(["e100-7"], [0]).keep == [True]
    assert len(index) <= 2 * 61 * batch  # about one horizon of ids, at most twice
    assert index.nbytes == len(index) * BYTES_PER_ID
    assert index.runs <= 12


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 2)), max_size=12),
        max_size=5,
    )
)
def test_matches_a_plain_dictionary(batches: list[list[tuple[str, int]]]) -> None:
    """Keep, duplicates and conflicts equal those of a dict of first values."""
    index = DedupeIndex(timedelta(hours=1))
    first_value: dict[str, int] = {}
    for batch in batches:
        ids = [event_id for event_id, _ in batch]
        values = [value for _, value in batch]
        result = index.check(ids, values)
        expected_keep, conflicts, seen = [], 0, dict(first_value)
        for event_id, value in batch:
            if event_id in seen:
                expected_keep.append(False)
                conflicts += seen[event_id] != value
            else:
                expected_keep.append(True)
                seen[event_id] = value
        assert result.keep == expected_keep
        assert result.duplicates == expected_keep.count(False)
        assert result.conflicts == conflicts
        kept = [i for i, keep in enumerate(result.keep) if keep]
        index.remember([ids[i] for i in kept], [0] * len(kept), [values[i] for i in kept])
        first_value = seen


def test_ids_sharing_only_the_high_word_stay_apart() -> None:
    """A 64-bit collision of the high words must not merge two different ids."""
    index = DedupeIndex(timedelta(hours=1))
    digests = digest_ids(["x", "y", "x"])
    digests[1, 0] = digests[0, 0]  # same high word as "x", other low word
    result = index.check_digests(digests, [1, 2, 1])
    assert result.keep == [True, True, False]


def _run_of(rows: list[tuple[int, int, int]]) -> _Run:
    """A run of (high word, time, value) rows; low words number the rows (to tell them apart)."""
    high = np.array([row[0] for row in rows], dtype=np.uint64)
    low = np.arange(len(rows), dtype=np.uint64) + np.uint64(1000 * len(rows))
    times = np.array([row[1] for row in rows], dtype=np.int64)
    values = np.array([row[2] for row in rows], dtype=np.int64)
    return _Run.sorting(high, low, times, values)


_rows = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 9), st.integers(-3, 3)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(older=_rows, newer=_rows, cutoff=st.integers(-1, 10))
def test_merge_equals_a_stable_sort_of_the_live_rows(
    older: list[tuple[int, int, int]], newer: list[tuple[int, int, int]], cutoff: int
) -> None:
    """The linear merge gives what sorting both runs end to end gives, older first
    among equal high words, without the ids older than the cutoff."""
    a, b = _run_of(older), _run_of(newer)
    columns = {name: np.concatenate([getattr(a, name), getattr(b, name)]) for name in _Run.COLUMNS}
    live = columns["times"] >= cutoff
    expected = _Run.sorting(*(columns[name][live] for name in _Run.COLUMNS))
    merged = _merge(a, b, cutoff)
    for name in _Run.COLUMNS:
        assert getattr(merged, name).tolist() == getattr(expected, name).tolist(), name
    assert len(merged) == int(live.sum())


def test_merging_holds_little_more_than_the_merged_ids() -> None:
    """Merging two runs of 500,000 ids allocates about the merged run plus a
    position per newer id: not a copy of everything plus a sort order."""
    size = 500_000
    rng = np.random.default_rng(7)

    def random_run() -> _Run:
        words = rng.integers(0, 2**63, size=(size, 2), dtype=np.int64).view(np.uint64)
        times = np.zeros(size, dtype=np.int64)
        return _Run.sorting(words[:, 0], words[:, 1], times, times.copy())

    older, newer = random_run(), random_run()
    tracemalloc.start()
    try:
        merged = _merge(older, newer, cutoff_us=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert merged.nbytes == 2 * size * BYTES_PER_ID
    assert bool((np.diff(merged.high.astype(np.float64)) >= 0).all())
    # The merged run (32 MB) plus one bool per id and one position per newer id.
    assert peak <= merged.nbytes + 2 * size + 8 * size + 1_000_000
