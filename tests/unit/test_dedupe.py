"""Dedupe keeps the first of each id, counts the rest, honours the horizon."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from flows.dedupe import DedupeIndex, digest_ids

HOUR_US = 3600 * 1_000_000


def test_within_a_batch_first_wins() -> None:
    index = DedupeIndex(timedelta(hours=1))
    result = index.check(["a", "b", "a", "c", "b"])
    assert result.keep == [True, True, False, True, False]
    assert result.duplicates == 2


def test_against_remembered_ids() -> None:
    index = DedupeIndex(timedelta(hours=1))
    index.remember(["a", "b"], [0, 0])
    result = index.check(["b", "c"])
    assert result.keep == [False, True]
    assert result.duplicates == 1


def test_ids_older_than_the_horizon_are_forgotten() -> None:
    index = DedupeIndex(timedelta(hours=1))
    index.remember(["old"], [0])
    index.remember(["new"], [2 * HOUR_US])
    assert index.check(["old", "new"]).keep == [True, False]


def test_memory_per_id_is_24_bytes() -> None:
    index = DedupeIndex(timedelta(days=1))
    ids = [f"evt-{i:012d}" for i in range(100_000)]
    index.remember(ids, [0] * len(ids))
    assert len(index) == 100_000
    assert index.nbytes == 24 * 100_000


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
        result = index.check(batch)
        new = [i for i, keep in zip(batch, result.keep, strict=True) if keep]
        assert result.duplicates == len(batch) - len(new)
        index.remember(new, [0] * len(new))
        kept.extend(new)
    flat = [i for batch in batches for i in batch]
    assert kept == list(dict.fromkeys(flat))  # first occurrences, in order
    # Replaying everything again keeps nothing.
    for batch in batches:
        assert not any(index.check(batch).keep)
