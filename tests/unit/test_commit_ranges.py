"""A batch's commit ranges: contiguous offsets, at most N hive partitions each."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sinks.commit_ranges import commit_ranges


def rows(offsets: list[int], hours: list[int]) -> pa.Table:
    return pa.table(
        {
            "_offset": pa.array(offsets, pa.int64()),
            "event_date": pa.array(["2026-11-28"] * len(offsets), pa.string()),
            "event_hour": pa.array([f"{hour:02d}" for hour in hours], pa.string()),
        }
    )


def test_a_batch_within_the_limit_is_one_range() -> None:
    table = rows([10, 11, 12, 13], [1, 2, 1, 3])
    assert commit_ranges(table, 10, 14, limit=3) == [(10, 14)]


def test_a_range_ends_before_the_record_of_one_partition_too_many() -> None:
    table = rows([10, 11, 12, 13, 14, 15], [1, 2, 1, 3, 2, 4])
    assert commit_ranges(table, 10, 16, limit=2) == [(10, 13), (13, 15), (15, 16)]


def test_ranges_cover_gaps_of_dead_letters_and_the_batch_end() -> None:
    # Offsets 11 and 14-19 are not rows (dead letters, duplicates): still covered.
    table = rows([10, 12, 13], [1, 2, 3])
    assert commit_ranges(table, 10, 20, limit=1) == [(10, 12), (12, 13), (13, 20)]


def test_rows_out_of_offset_order_are_walked_in_offset_order() -> None:
    table = rows([13, 10, 12, 11], [3, 1, 2, 1])
    assert commit_ranges(table, 10, 14, limit=2) == [(10, 13), (13, 14)]


def test_every_event_in_its_own_hour() -> None:
    table = pa.table(
        {
            "_offset": pa.array(range(240), pa.int64()),
            "event_date": [f"2026-11-{1 + hour // 24:02d}" for hour in range(240)],
            "event_hour": [f"{hour % 24:02d}" for hour in range(240)],
        }
    )
    ranges = commit_ranges(table, 0, 240, limit=50)
    assert ranges == [(0, 50), (50, 100), (100, 150), (150, 200), (200, 240)]


def test_an_empty_table_is_one_range() -> None:
    assert commit_ranges(rows([], []), 5, 9, limit=1) == [(5, 9)]


def test_the_limit_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        commit_ranges(rows([1], [1]), 1, 2, limit=0)
