"""Bounded amplification: a batch whose events span thousands of hours.

5,000 events, each in a different hour, in one batch: one commit would write
5,000 Parquet files and a Delta log entry of about 7 MB. Committed in offset
ranges of at most ``STREAMBATCH_MAX_PARTITIONS_PER_COMMIT`` (default 100)
hive partitions each, no commit adds more than 100 files and no log entry
grows past a bound proportional to that; every event is in the lake once,
under its true ``event_date``/``event_hour``, and the fence is at the end.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from deltalake import DeltaTable

from generator import generate_order_records
from sinks.commit_ranges import DEFAULT_MAX_PARTITIONS_PER_COMMIT
from tests.support import StreamTopics, flow_env, lake_table, run_flow, send

pytestmark = pytest.mark.slow

EVENTS = 5_000
START = datetime(2024, 1, 1, tzinfo=UTC)
# An add action with its file statistics is about 1.4 KB; twice that as margin.
LOG_BYTES_PER_FILE = 3_000


@pytest.mark.partitions(1)
def test_events_in_5000_hours_commit_at_most_100_files_each_and_none_is_lost(
    topics: StreamTopics, data_dir: Path
) -> None:
    records = []
    for hour, record in enumerate(
        generate_order_records(EVENTS, seed=71, duplicate_ratio=0.0, malformed_ratio=0.0)
    ):
        event = orjson.loads(record.value)
        event["occurred_at"] = (START + timedelta(hours=hour)).isoformat().replace("+00:00", "Z")
        records.append(dataclasses.replace(record, value=orjson.dumps(event)))
    send(topics, records)

    # One batch: the window holds all of it (about 3 MB).
    run_flow(flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES=str(64 * 1024 * 1024)))

    rows = lake_table(data_dir, columns=["event_id", "occurred_at", "event_date", "event_hour"])
    assert rows.num_rows == EVENTS
    assert len(set(rows.column("event_id").to_pylist())) == EVENTS
    for occurred, date, hour in zip(
        rows.column("occurred_at").to_pylist(),
        rows.column("event_date").to_pylist(),
        rows.column("event_hour").to_pylist(),
        strict=True,
    ):
        assert (date, hour) == (occurred.strftime("%Y-%m-%d"), occurred.strftime("%H"))

    batches = lake_table(data_dir, "batches").to_pylist()
    limit = DEFAULT_MAX_PARTITIONS_PER_COMMIT
    assert max(batch["files"] for batch in batches) == limit
    assert len(batches) == EVENTS // limit
    assert sum(batch["rows"] for batch in batches) == EVENTS
    assert sum(batch["input_records"] for batch in batches) == EVENTS
    ranges = sorted((batch["first_offset"], batch["next_offset"]) for batch in batches)
    assert [start for start, _ in ranges[1:]] == [stop for _, stop in ranges[:-1]]
    assert (ranges[0][0], ranges[-1][1]) == (0, EVENTS)

    table_path = data_dir / "lake" / "orders"
    app_id = f"streambatch/orders/{topics.name}/0"
    assert DeltaTable(str(table_path)).transaction_version(app_id) == EVENTS
    entries = sorted((table_path / "_delta_log").glob("*.json"))
    largest = max(entry.stat().st_size for entry in entries)
    print(f"{len(batches)} commits, at most {limit} files each; largest log entry {largest} B")
    assert largest <= limit * LOG_BYTES_PER_FILE, f"a log entry of {largest} bytes"
