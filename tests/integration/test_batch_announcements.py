"""Every committed batch is announced on ``<topic>.batches``, under its stable batch id."""

from __future__ import annotations

import json
from pathlib import Path

from confluent_kafka.admin import AdminClient

from connectors.embedded_broker import create_topics
from generator import generate_order_records
from sinks.batch_announcements import BATCH_ID_HEADER, BatchAnnouncement, batch_id
from tests.support import StreamTopics, flow_env, lake_table, read_topic, run_flow, send


def announcements(topics: StreamTopics) -> list[BatchAnnouncement]:
    messages = read_topic(topics.bootstrap_servers, f"{topics.name}.batches")
    found = []
    for message in messages:
        announcement = BatchAnnouncement.from_json(message.value())
        assert message.key().decode() == announcement.batch_id
        assert dict(message.headers())[BATCH_ID_HEADER].decode() == announcement.batch_id
        found.append(announcement)
    return found


def manifest_ids(data_dir: Path) -> set[str]:
    batches = lake_table(data_dir, "batches").to_pylist()
    return {
        batch_id(
            row["stream"], row["topic"], row["partition"], row["first_offset"], row["next_offset"]
        )
        for row in batches
    }


def test_each_committed_batch_is_announced_once_with_its_numbers(
    topics: StreamTopics, data_dir: Path
) -> None:
    create_topics(topics.bootstrap_servers, [f"{topics.name}.batches"], 3)
    send(topics, generate_order_records(3000, seed=5, duplicate_ratio=0.02, malformed_ratio=0.01))
    run_flow(flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES="65536"))
    found = announcements(topics)
    assert len(found) == len({a.batch_id for a in found})
    assert {a.batch_id for a in found} == manifest_ids(data_dir)
    assert len(found) > 3
    rows = lake_table(data_dir, columns=["_partition", "_offset", "occurred_at"])
    by_partition: dict[int, list[int]] = {}
    for row in rows.to_pylist():
        by_partition.setdefault(row["_partition"], []).append(row["_offset"])
    for announcement in found:
        (offsets,) = announcement.offset_ranges
        assert offsets["topic"] == topics.name
        inside = [
            o
            for o in by_partition.get(offsets["partition"], [])
            if offsets["first_offset"] <= o < offsets["next_offset"]
        ]
        assert len(inside) == announcement.rows
        assert announcement.close_reason in ("size", "end")
        assert announcement.lake_version >= 1
        assert announcement.files and all(f.endswith(".parquet") for f in announcement.files)
        for file in announcement.files:
            assert (data_dir / "lake" / "orders" / file).is_file()
    assert sum(a.rows for a in found) == rows.num_rows
    assert json.loads(found[0].to_json())["batch_id"] == found[0].batch_id


def test_announcements_can_be_switched_off(topics: StreamTopics, data_dir: Path) -> None:
    send(topics, generate_order_records(300, seed=6))
    run_flow(flow_env(topics, data_dir, STREAMBATCH_ANNOUNCE_BATCHES="false"))
    assert lake_table(data_dir, columns=["event_id"]).num_rows > 0
    listed = AdminClient({"bootstrap.servers": topics.bootstrap_servers}).list_topics(timeout=10)
    assert f"{topics.name}.batches" not in listed.topics
