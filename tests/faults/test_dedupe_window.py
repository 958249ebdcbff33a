"""No event's own timestamp moves the dedupe window: it is measured in arrival time.

An event dated two days ahead (a client with a skewed clock) must not make
the flow forget the ids it remembers, and an event three days old sent twice
must land once: both within one run and across a restart (the index rebuilt
from the lake).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from generator import GeneratedRecord, generate_order_records
from tests.support import StreamTopics, flow_env, lake_table, run_flow, send

# Small batches: the re-sends meet the index, not the batch they came in with.
_WINDOW_BYTES = "4096"


def dated(record: GeneratedRecord, event_id: str, occurred_at: datetime) -> GeneratedRecord:
    """A new valid event like ``record``, with its own id and ``occurred_at``."""
    document = orjson.loads(record.value)
    document["event_id"] = event_id
    document["occurred_at"] = occurred_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return GeneratedRecord(record.key, orjson.dumps(document), "valid", event_id)


def current_events(count: int, seed: int) -> list[GeneratedRecord]:
    start = datetime.now(UTC) - timedelta(hours=1)
    return list(
        generate_order_records(
            count, seed=seed, duplicate_ratio=0.0, malformed_ratio=0.0, start=start
        )
    )


def lake_ids(data_dir: Path) -> list[str]:
    ids: list[str] = lake_table(data_dir, columns=["event_id"]).column("event_id").to_pylist()
    return ids


@pytest.mark.partitions(1)
def test_an_event_dated_two_days_ahead_does_not_expire_remembered_ids(
    topics: StreamTopics, data_dir: Path
) -> None:
    events = current_events(120, seed=31)
    ahead = dated(events[0], "evt-from-a-skewed-clock", datetime.now(UTC) + timedelta(days=2))
    env = flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES=_WINDOW_BYTES)
    # One run: the re-sends come batches after the event from the future.
    send(topics, [*events, ahead, *events[:60]])
    run_flow(env)
    ids = lake_ids(data_dir)
    assert len(ids) == len(set(ids)) == 121

    # A restart rebuilds the index from the lake: still nothing forgotten.
    send(topics, [ahead, *events])
    run_flow(env)
    ids = lake_ids(data_dir)
    assert len(ids) == len(set(ids)) == 121
    batches = lake_table(data_dir, "batches")
    assert sum(batches.column("duplicates").to_pylist()) == 60 + 121


@pytest.mark.partitions(1)
def test_an_event_three_days_old_sent_twice_lands_once(
    topics: StreamTopics, data_dir: Path
) -> None:
    events = current_events(120, seed=32)
    old = dated(events[0], "evt-three-days-old", datetime.now(UTC) - timedelta(days=3))
    older = dated(events[1], "evt-a-year-old", datetime.now(UTC) - timedelta(days=365))
    env = flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES=_WINDOW_BYTES)
    send(topics, [old, *events, old, older, *events[:10], older])
    run_flow(env)
    ids = lake_ids(data_dir)
    assert len(ids) == len(set(ids)) == 122

    send(topics, [old, older])
    run_flow(env)
    ids = lake_ids(data_dir)
    assert len(ids) == len(set(ids)) == 122
    # Kept with their own times, not clamped to the arrival time.
    rows = lake_table(data_dir, columns=["event_id", "occurred_at"]).to_pylist()
    occurred = {row["event_id"]: row["occurred_at"] for row in rows}
    assert occurred["evt-a-year-old"] < datetime.now(UTC) - timedelta(days=364)
