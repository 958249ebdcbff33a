"""Clicks and logs flows end to end, and per-stream settings, on the shared pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator import generate_stream_records, summarize
from tests.support import StreamTopics, flow_env, lake_table, read_topic, run_flow, send

STREAMS = generate_stream_records(1_500, seed=17, duplicate_ratio=0.03, malformed_ratio=0.02)


@pytest.mark.parametrize("stream", ["clicks", "logs"])
def test_stream_end_to_end_with_duplicates_and_malformed(
    stream: str, topics: StreamTopics, data_dir: Path
) -> None:
    expected = summarize(STREAMS[stream])
    assert expected.duplicates > 0 and expected.malformed > 0
    send(topics, STREAMS[stream])
    run_flow(flow_env(topics, data_dir, stream), stream)

    ids = lake_table(data_dir, stream, ["event_id"]).column("event_id").to_pylist()
    assert len(ids) == len(set(ids))
    assert set(ids) == expected.valid_event_ids
    dead = read_topic(topics.bootstrap_servers, topics.dead_letter_topic)
    assert len(dead) == expected.malformed
    batches = lake_table(data_dir, "batches")
    assert set(batches.column("stream").to_pylist()) == {stream}
    assert sum(batches.column("duplicates").to_pylist()) == expected.duplicates
    assert sum(batches.column("dead_letters").to_pylist()) == expected.malformed


def test_logs_keep_their_attributes_as_a_map(topics: StreamTopics, data_dir: Path) -> None:
    send(topics, STREAMS["logs"])
    run_flow(flow_env(topics, data_dir, "logs"), "logs")
    table = lake_table(data_dir, "logs", ["level", "attributes", "trace_id"])
    errors = [
        dict(row["attributes"])
        for row in table.to_pylist()
        if row["level"] == "ERROR" and row["trace_id"] is not None
    ]
    assert errors and all("order_id" in attributes for attributes in errors)


def test_per_stream_window_override_is_honoured(topics: StreamTopics, data_dir: Path) -> None:
    send(topics, STREAMS["logs"])
    env = flow_env(
        topics,
        data_dir,
        "logs",
        STREAMBATCH_WINDOW_BYTES="10485760",
        STREAMBATCH_LOGS_WINDOW_BYTES="32768",
    )
    run_flow(env, "logs")
    batches = lake_table(data_dir, "batches")
    sizes = [
        size
        for size, reason in zip(
            batches.column("input_bytes").to_pylist(),
            batches.column("close_reason").to_pylist(),
            strict=True,
        )
        if reason == "size"
    ]
    assert len(sizes) >= 3
    assert all(size <= 32768 for size in sizes)
