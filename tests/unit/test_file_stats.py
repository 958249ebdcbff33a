"""Delta file statistics taken from the Parquet writer equal a direct computation.

Readers prune files by these bounds: a bound that is too narrow loses rows
from query results, so the cheap source (the writer's own statistics) must
give exactly what computing them over the Arrow table gives.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.delta_lake import _file_stats


def reference_stats(part: pa.Table) -> dict[str, Any]:
    """The statistics as computed before: pc.min_max over each flat column."""
    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in part.column_names:
        column = part.column(name)
        nulls[name] = column.null_count
        if pa.types.is_nested(column.type) or column.null_count == len(column):
            continue
        bounds = pc.min_max(column).as_py()
        low, high = bounds["min"], bounds["max"]
        if isinstance(low, datetime):
            low = low.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
            high = high.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        elif isinstance(low, Decimal) or (
            isinstance(low, str) and (len(low) > 32 or len(high) > 32)
        ):
            continue
        minimum[name], maximum[name] = low, high
    return {
        "numRecords": part.num_rows,
        "minValues": minimum,
        "maxValues": maximum,
        "nullCount": nulls,
    }


def written_stats(part: pa.Table, directory: Path, row_group_size: int) -> dict[str, Any]:
    in_file = part.drop_columns(["event_date", "event_hour"])
    collected: list[pq.FileMetaData] = []
    path = directory / f"part-{len(list(directory.iterdir()))}.parquet"
    pq.write_table(in_file, path, row_group_size=row_group_size, metadata_collector=collected)
    stats: dict[str, Any] = json.loads(_file_stats(part, collected[0]))
    return stats


TEXT = st.text(alphabet=st.sampled_from("aAzé€😀 -0"), max_size=40)


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    rows = draw(st.integers(min_value=1, max_value=40))

    def column(values: st.SearchStrategy[Any]) -> list[Any]:
        return [draw(st.one_of(st.none(), values)) for _ in range(rows)]

    return pa.table(
        {
            "event_id": pa.array(column(TEXT), pa.string()),
            "occurred_at": pa.array(
                column(st.integers(min_value=-(10**15), max_value=10**16)),
                pa.timestamp("us", tz="UTC"),
            ),
            "quantity": pa.array(column(st.integers(-(2**31), 2**31 - 1)), pa.int32()),
            "_offset": pa.array(column(st.integers(0, 2**62)), pa.int64()),
            "amount": pa.array(
                column(st.decimals(min_value=0, max_value=10**6, places=4)), pa.decimal128(18, 4)
            ),
            "items": pa.array(
                column(st.lists(st.integers(0, 9), max_size=3)), pa.list_(pa.int64())
            ),
            "nothing": pa.nulls(rows, pa.string()),
            "event_date": pa.array(["2026-11-28"] * rows),
            "event_hour": pa.array(["14"] * rows),
        }
    )


@settings(max_examples=150, deadline=None)
@given(part=tables(), row_group_size=st.sampled_from([1, 3, 1000]))
def test_stats_from_the_writer_equal_direct_computation(
    part: pa.Table, row_group_size: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = tmp_path_factory.mktemp("stats")
    assert written_stats(part, directory, row_group_size) == reference_stats(part)


def test_a_very_long_string_keeps_no_bounds(tmp_path: Path) -> None:
    part = pa.table(
        {
            "message": ["x" * 10_000, "a"],
            "event_date": ["2026-11-28"] * 2,
            "event_hour": ["14"] * 2,
        }
    )
    stats = written_stats(part, tmp_path, 1000)
    assert "message" not in stats["minValues"]
    assert stats["minValues"]["event_date"] == "2026-11-28"
    assert stats["nullCount"]["message"] == 0
