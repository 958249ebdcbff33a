"""Re-sends and conflicting re-uses of event ids: 0 duplicate rows, conflicts counted exactly."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pyarrow.compute as pc

from generator import (
    GeneratedRecord,
    generate_order_records,
    summarize,
)
from tests.support import StreamTopics, flow_env, lake_table, run_flow, send


def conflicting_copy(record: GeneratedRecord) -> GeneratedRecord:
    """Same key and event id, other (still valid) payload."""
    document = orjson.loads(record.value)
    document["note"] = "re-sent with other content"
    return GeneratedRecord(record.key, orjson.dumps(document), "duplicate", record.event_id)


def test_resends_and_conflicts_then_restart_and_resend_committed(
    topics: StreamTopics, data_dir: Path
) -> None:
    records = list(
        generate_order_records(100_000, seed=21, duplicate_ratio=0.05, malformed_ratio=0.0)
    )
    expected = summarize(records)
    assert expected.duplicates == 5_000
    valid = [r for r in records if r.kind == "valid"]
    rng = random.Random(7)
    conflicts = [conflicting_copy(r) for r in rng.sample(valid, 1_000)]
    send(topics, records)
    send(topics, conflicts)
    env = flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES="1048576")
    run_flow(env)

    lake = lake_table(data_dir, columns=["event_id", "_extra"])
    ids = lake.column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) == len(expected.valid_event_ids)
    # The first payload won: no row carries the conflicting copy's extra field.
    assert pc.sum(pc.is_valid(lake.column("_extra"))).as_py() in (0, None)
    batches = lake_table(data_dir, "batches")
    assert sum(batches.column("conflicts").to_pylist()) == 1_000
    assert sum(batches.column("duplicates").to_pylist()) == 6_000

    # Restart, then a producer retry storm re-sends 10,000 committed events.
    send(topics, rng.sample(valid, 10_000))
    run_flow(env)
    ids = lake_table(data_dir, columns=["event_id"]).column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) == len(expected.valid_event_ids)
    batches = lake_table(data_dir, "batches")
    assert sum(batches.column("conflicts").to_pylist()) == 1_000
    assert sum(batches.column("duplicates").to_pylist()) == 16_000
