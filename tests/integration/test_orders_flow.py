"""The orders flow end to end on a real broker, real Delta tables, real DuckDB."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from events.registry import ORDERS
from generator import (
    GeneratedRecord,
    generate_order_records,
    produce_records,
    summarize,
)
from sinks.delta_lake import CHECKPOINT_INTERVAL
from sinks.duckdb import connect
from tests.support import (
    REPO_ROOT,
    StreamTopics,
    flow_command,
    flow_env,
    lake_table,
    local_cluster_ports,
    read_topic,
    run_flow,
    send,
)

ERROR_HEADERS = {
    "error.stage",
    "error.class",
    "error.message",
    "source.topic",
    "source.partition",
    "source.offset",
}


def produce(
    topics: StreamTopics,
    count: int,
    seed: int = 7,
    duplicate_ratio: float = 0.02,
    malformed_ratio: float = 0.01,
) -> list[GeneratedRecord]:
    records = list(
        generate_order_records(
            count, seed=seed, duplicate_ratio=duplicate_ratio, malformed_ratio=malformed_ratio
        )
    )
    send(topics, records)
    return records


def test_fifty_thousand_events_exactly_once_with_dead_letters(
    topics: StreamTopics, data_dir: Path
) -> None:
    records = produce(topics, 50_000, duplicate_ratio=0.02, malformed_ratio=0.01)
    expected = summarize(records)
    assert expected.duplicates == 1000 and expected.malformed == 500

    run_flow(flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES="1048576"))

    lake = lake_table(data_dir, columns=["event_id", "event_type", "total_amount", "_offset"])
    ids = lake.column("event_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate rows in the lake"
    assert set(ids) == expected.valid_event_ids
    placed = lake.filter(pc.equal(lake.column("event_type"), "OrderPlaced"))
    assert sum(placed.column("total_amount").to_pylist(), Decimal(0)) == expected.total_amount_sum

    dead = read_topic(topics.bootstrap_servers, topics.dead_letter_topic)
    assert len(dead) == expected.malformed
    originals = {r.value for r in records if r.kind == "malformed"}
    for message in dead:
        headers = dict(message.headers())
        assert set(headers) >= ERROR_HEADERS
        assert headers["source.topic"] == topics.name.encode()
        assert message.value() in originals  # the original bytes
    classes = Counter(dict(m.headers())["error.class"].decode() for m in dead)
    assert set(classes) >= {"InvalidJson", "NotUtf8", "MissingField", "UnknownEventType"}

    batches = lake_table(data_dir, "batches")
    assert sum(batches.column("duplicates").to_pylist()) == expected.duplicates
    assert sum(batches.column("dead_letters").to_pylist()) == expected.malformed
    assert sum(batches.column("rows").to_pylist()) == len(ids)
    assert set(batches.column("close_reason").to_pylist()) <= {"size", "end"}
    assert "size" in batches.column("close_reason").to_pylist()
    for table in (ORDERS.name, "batches"):
        # More than 10 commits: the log was checkpointed after the 10th
        # (versions count from 0), see CHECKPOINT_INTERVAL.
        checkpoint = f"{CHECKPOINT_INTERVAL - 1:020d}.checkpoint.parquet"
        assert (data_dir / "lake" / table / "_delta_log" / checkpoint).exists(), table

    with connect(data_dir) as conn:
        distinct = conn.execute("SELECT count(DISTINCT event_id) FROM orders").fetchall()
        assert distinct == [(len(expected.valid_event_ids),)]
        total = conn.execute(
            "SELECT sum(total_amount) FROM orders WHERE event_type = 'OrderPlaced'"
        ).fetchall()
        assert total == [(expected.total_amount_sum,)]


def summary_of(stderr: str) -> str:
    """The flow's one closing line (it prints exactly one)."""
    (line,) = [line for line in stderr.splitlines() if "flow stopped at the end" in line]
    return line


def test_rerun_on_the_same_data_dir_adds_nothing(topics: StreamTopics, data_dir: Path) -> None:
    records = produce(topics, 3_000)
    expected = summarize(records)
    env = flow_env(topics, data_dir)
    first = summary_of(run_flow(env))
    version = DeltaTable(str(data_dir / "lake" / "orders")).version()
    rows = lake_table(data_dir).num_rows
    batches = lake_table(data_dir, "batches").num_rows
    assert first == (
        f"streambatch: orders flow stopped at the end: {len(records):,} records read "
        f"({rows:,} rows written, {expected.duplicates:,} duplicates dropped, "
        f"{expected.malformed:,} dead letters) in {batches:,} batches, {first.rsplit(', ', 1)[1]}"
    )
    second = summary_of(run_flow(env))
    assert "0 records read (0 rows written, 0 duplicates dropped, 0 dead letters) in 0" in second
    assert lake_table(data_dir).num_rows == rows
    assert DeltaTable(str(data_dir / "lake" / "orders")).version() == version


def test_resending_committed_events_is_deduplicated(topics: StreamTopics, data_dir: Path) -> None:
    records = produce(topics, 2_000, duplicate_ratio=0.0, malformed_ratio=0.0)
    env = flow_env(topics, data_dir)
    run_flow(env)
    # A producer retry storm: the same 500 events again, after they were committed.
    produce_records(
        records[:500],
        producer_config={"bootstrap.servers": topics.bootstrap_servers},
        topic=topics.name,
        progress=False,
    )
    run_flow(env)
    ids = lake_table(data_dir, columns=["event_id"]).column("event_id").to_pylist()
    assert len(ids) == 2_000 == len(set(ids))
    batches = lake_table(data_dir, "batches")
    assert sum(batches.column("duplicates").to_pylist()) == 500


@pytest.mark.partitions(2)
def test_time_flush_on_an_idle_partition(topics: StreamTopics, data_dir: Path) -> None:
    env = flow_env(
        topics, data_dir, STREAMBATCH_STOP_AT_END="false", STREAMBATCH_WINDOW_SECONDS="2"
    )
    process = subprocess.Popen(
        flow_command(), env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        produce(topics, 50, duplicate_ratio=0.0, malformed_ratio=0.0)
        # No more input from here on: only the clock can close the batches.
        deadline = time.monotonic() + 60
        rows = 0
        while time.monotonic() < deadline and rows < 50:
            time.sleep(0.5)
            if DeltaTable.is_deltatable(str(data_dir / "lake" / "batches")):
                rows = lake_table(data_dir).num_rows
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert rows == 50
        reasons = lake_table(data_dir, "batches").column("close_reason").to_pylist()
        assert reasons and set(reasons) == {"time"}
    finally:
        process.kill()
        process.wait()


def test_bad_configuration_is_refused_naming_the_variable(
    topics: StreamTopics, data_dir: Path
) -> None:
    env = flow_env(topics, data_dir, STREAMBATCH_WINDOW_SECONDS="soon")
    result = subprocess.run(
        flow_command(), env=env, cwd=REPO_ROOT, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert b"STREAMBATCH_WINDOW_SECONDS" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.partitions(4)
def test_two_processes_and_two_workers_write_the_same_lake_as_one(
    topics: StreamTopics, tmp_path: Path
) -> None:
    produce(topics, 8_000)
    lakes = {}
    for name, command in {
        "one": flow_command(),
        "two processes": flow_command(processes=2),
        "two workers": [*flow_command(), "-w", "2"],
    }.items():
        data_dir = tmp_path / name.replace(" ", "-")
        with local_cluster_ports():
            result = subprocess.run(
                command,
                env=flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES="131072"),
                cwd=REPO_ROOT,
                capture_output=True,
                timeout=180,
                check=False,
            )
        assert result.returncode == 0, result.stderr.decode()[-3000:]
        rows = lake_table(data_dir, columns=["event_id", "_partition", "_offset"])
        lakes[name] = sorted(zip(*(rows.column(i).to_pylist() for i in range(3)), strict=True))
    assert lakes["two processes"] == lakes["one"]
    assert lakes["two workers"] == lakes["one"]
    assert len({row[0] for row in lakes["one"]}) == len(lakes["one"])
