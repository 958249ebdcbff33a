"""Memory stays bounded under a 50 MB burst into one partition while eight stay idle.

The README states the bound: 500 MiB + 5 x STREAMBATCH_WINDOW_BYTES for each
partition receiving data, + 32 bytes per remembered event id. With one busy
partition, 10 MiB windows and ~210k ids that is 500 + 50 + 7 = 557 MiB.

Pass: the flow exits 0, its peak RSS (``VmHWM``, via
``flows.runner.run_flow_to_end``) is below that bound, and the
lake holds exactly the distinct valid events, once each.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from flows.runner import run_flow_to_end
from generator import generate_order_records
from tests.support import REPO_ROOT, StreamTopics, flow_env, lake_table

pytestmark = pytest.mark.slow

BURST_BYTES = 50 * 1024 * 1024
WINDOW_BYTES = 10 * 1024 * 1024
MIB = 1024 * 1024
# The README's bound for one busy partition (ids: at most one per ~250 B event).
PEAK_RSS_BOUND_BYTES = 500 * MIB + 5 * WINDOW_BYTES + 32 * (BURST_BYTES // 250)
BUSY_PARTITION = 4


def produce_burst(topics: StreamTopics) -> set[str]:
    """At least ``BURST_BYTES`` of valid events (key + value) into one partition."""
    producer = Producer(
        {
            "bootstrap.servers": topics.bootstrap_servers,
            "enable.idempotence": "true",
            "linger.ms": "20",
            "compression.type": "lz4",
        }
    )
    failures: list[str] = []

    def on_delivery(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    ids: set[str] = set()
    produced = 0
    for record in generate_order_records(
        400_000, seed=77, duplicate_ratio=0.0, malformed_ratio=0.0
    ):
        if produced >= BURST_BYTES:
            break
        while True:
            try:
                producer.produce(
                    topics.name,
                    value=record.value,
                    key=record.key,
                    partition=BUSY_PARTITION,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        produced += len(record.key) + len(record.value)
        assert record.event_id is not None
        ids.add(record.event_id)
    assert producer.flush(60) == 0
    assert failures == []
    assert produced >= BURST_BYTES
    return ids


@pytest.mark.partitions(9)
def test_peak_rss_of_a_burst_into_one_of_nine_partitions(
    topics: StreamTopics, data_dir: Path, record_property: Callable[[str, object], None]
) -> None:
    ids = produce_burst(topics)

    run = run_flow_to_end(
        "orders",
        flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES=str(WINDOW_BYTES)),
        cwd=REPO_ROOT,
    )
    record_property("peak_rss_mib", round(run.peak_rss_bytes / 2**20, 1))
    assert run.returncode == 0, run.stderr_tail
    assert run.peak_rss_bytes > 50 * 2**20, "implausible peak RSS: was the process sampled?"
    assert run.peak_rss_bytes < PEAK_RSS_BOUND_BYTES, (
        f"peak RSS {run.peak_rss_bytes / 2**20:.0f} MiB >= {PEAK_RSS_BOUND_BYTES / 2**20:.0f} MiB"
    )

    rows = lake_table(data_dir, columns=["event_id", "_partition"])
    lake_ids = rows.column("event_id").to_pylist()
    assert len(lake_ids) == len(ids) == len(set(lake_ids))
    assert set(lake_ids) == ids
    assert set(rows.column("_partition").to_pylist()) == {BUSY_PARTITION}
    batches = lake_table(data_dir, "batches")
    reasons = batches.column("close_reason").to_pylist()
    assert reasons.count("size") >= 4, reasons  # 50 MB through 10 MiB windows
    assert max(batches.column("input_bytes").to_pylist()) <= WINDOW_BYTES
