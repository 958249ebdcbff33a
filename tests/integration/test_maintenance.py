"""``compact`` and ``vacuum`` on lakes written by real flow runs against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError
from deltalake.table import TableOptimizer

from config.settings import load_stream_settings
from events.registry import ORDERS
from foundation.errors import StreambatchError
from generator import (
    GeneratedRecord,
    generate_order_records,
    summarize,
)
from sinks.delta_lake import DeltaLake
from streambatch.maintenance import compact_stream, vacuum_lake
from streambatch.verify import verify_stream
from tests.support import (
    REPO_ROOT,
    StreamTopics,
    flow_command,
    flow_env,
    lake_table,
    run_flow,
    send,
)

# Small batches: every commit writes a few small files, as a quiet stream does.
SMALL_WINDOW = {"STREAMBATCH_WINDOW_BYTES": "8192"}
FINISHED = datetime(2026, 11, 27, 22, 40, tzinfo=UTC)
CURRENT_HOUR = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
HALF_PAST = CURRENT_HOUR + timedelta(minutes=30)  # the injected clock: 05:xx is not finished


def produce(topics: StreamTopics, count: int, seed: int, start: datetime) -> list[GeneratedRecord]:
    records = list(
        generate_order_records(
            count, seed=seed, duplicate_ratio=0.02, malformed_ratio=0.01, start=start
        )
    )
    send(topics, records)
    return records


def table_path(data_dir: Path) -> Path:
    return data_dir / "lake" / "orders"


def live_files(data_dir: Path) -> set[str]:
    adds = pa.table(DeltaTable(str(table_path(data_dir))).get_add_actions(flatten=True))
    return set(adds.column("path").to_pylist())


def files_per_hour(data_dir: Path) -> Counter[tuple[str, str]]:
    adds = pa.table(DeltaTable(str(table_path(data_dir))).get_add_actions(flatten=True))
    return Counter(
        zip(
            adds.column("partition.event_date").to_pylist(),
            adds.column("partition.event_hour").to_pylist(),
            strict=True,
        )
    )


def fences(data_dir: Path, topics: StreamTopics) -> dict[int, int | None]:
    lake = DeltaLake(data_dir / "lake", ORDERS)
    return {p: lake.fence(topics.name, p) for p in range(topics.partitions)}


def event_ids(data_dir: Path) -> list[str]:
    ids: list[str] = lake_table(data_dir, columns=["event_id"]).column("event_id").to_pylist()
    return ids


def last_commit_actions(data_dir: Path) -> list[dict[str, Any]]:
    log = sorted((table_path(data_dir) / "_delta_log").glob("*.json"))[-1]
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_compact_merges_finished_hours_and_keeps_rows_and_fences(
    topics: StreamTopics, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished = produce(topics, 1_500, seed=11, start=FINISHED)
    current = produce(topics, 200, seed=12, start=CURRENT_HOUR)
    env = flow_env(topics, data_dir, **SMALL_WINDOW)
    run_flow(env)

    before_files = files_per_hour(data_dir)
    before_fences = fences(data_dir, topics)
    assert None not in before_fences.values()
    before_ids = event_ids(data_dir)
    current_key = ("2026-11-28", "05")
    finished_keys = [key for key in before_files if key < current_key]
    assert finished_keys and all(before_files[key] > 1 for key in finished_keys)
    assert before_files[current_key] > 1

    result = compact_stream(data_dir, "orders", lambda: HALF_PAST, progress=False)

    assert sorted(result.partitions) == sorted(
        f"event_date={d}/event_hour={h}" for d, h in finished_keys
    )
    assert result.skipped == ()
    assert result.files_before == sum(before_files[key] for key in finished_keys)
    assert result.files_after == len(finished_keys) < result.files_before
    assert result.rows_before == result.rows_after > 0
    after_files = files_per_hour(data_dir)
    assert all(after_files[key] == 1 for key in finished_keys)
    assert after_files[current_key] == before_files[current_key], "the current hour is left alone"
    assert fences(data_dir, topics) == before_fences
    after_ids = event_ids(data_dir)
    assert len(after_ids) == len(before_ids)
    assert set(after_ids) == set(before_ids)
    # A compaction commit rewrites, it changes no data: readers of changes skip it.
    actions = last_commit_actions(data_dir)
    assert actions[0]["commitInfo"]["operation"] == "OPTIMIZE"
    rewritten = [
        a["add"] if "add" in a else a["remove"] for a in actions if {"add", "remove"} & set(a)
    ]
    assert rewritten and all(not action["dataChange"] for action in rewritten)

    # Nothing left to merge: a second run changes nothing.
    again = compact_stream(data_dir, "orders", lambda: HALF_PAST, progress=False)
    assert again.partitions == () and again.files_before == 0

    # The flow continues exactly once after compaction, also into a compacted hour.
    late = produce(topics, 400, seed=13, start=FINISHED)
    run_flow(env)
    ids = event_ids(data_dir)
    assert len(ids) == len(set(ids)), "duplicate rows after compaction"
    expected = summarize([*finished, *current, *late]).valid_event_ids
    assert set(ids) == expected
    set_env(monkeypatch, env)
    report = verify_stream(
        ORDERS, load_stream_settings("orders"), {"bootstrap.servers": topics.bootstrap_servers}
    )
    assert report.ok, report.offenders()


def test_compact_while_the_flow_runs_loses_and_duplicates_nothing(
    topics: StreamTopics, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = produce(topics, 3_000, seed=21, start=FINISHED)
    env = flow_env(topics, data_dir, **SMALL_WINDOW)
    far_future = datetime(2030, 1, 1, tzinfo=UTC)
    flow = subprocess.Popen(
        flow_command(), env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    compacted = 0
    try:
        deadline = time.monotonic() + 240
        while flow.poll() is None and time.monotonic() < deadline:
            if DeltaTable.is_deltatable(str(table_path(data_dir))):
                result = compact_stream(data_dir, "orders", lambda: far_future, progress=False)
                compacted += len(result.partitions)
            time.sleep(0.2)
        _, stderr = flow.communicate(timeout=60)
    finally:
        if flow.poll() is None:
            flow.kill()
    assert flow.returncode == 0, stderr.decode(errors="replace")[-4000:]
    assert compacted > 0, "compaction never overlapped the flow"

    ids = event_ids(data_dir)
    assert len(ids) == len(set(ids))
    assert set(ids) == summarize(records).valid_event_ids
    set_env(monkeypatch, env)
    report = verify_stream(
        ORDERS, load_stream_settings("orders"), {"bootstrap.servers": topics.bootstrap_servers}
    )
    assert report.ok, report.offenders()


def test_a_conflicting_partition_is_retried_then_skipped_with_a_message(
    topics: StreamTopics,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    produce(topics, 300, seed=51, start=FINISHED)
    run_flow(flow_env(topics, data_dir, **SMALL_WINDOW))
    before = files_per_hour(data_dir)
    real_compact = TableOptimizer.compact
    conflicts = {"left": 1_000_000}  # every attempt conflicts

    def conflicting(self: TableOptimizer, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # What delta-rs raises when a concurrent commit removed files this one read.
        if conflicts["left"] > 0:
            conflicts["left"] -= 1
            raise CommitFailedError("Commit failed: a concurrent transaction deleted data")
        result: dict[str, Any] = real_compact(self, *args, **kwargs)
        return result

    monkeypatch.setattr(TableOptimizer, "compact", conflicting)
    future = datetime(2030, 1, 1, tzinfo=UTC)

    skipped = compact_stream(data_dir, "orders", lambda: future, progress=False)
    assert skipped.partitions == ()
    assert [name for name, _ in skipped.skipped] == [
        f"event_date={d}/event_hour={h}" for d, h in sorted(before)
    ]
    assert files_per_hour(data_dir) == before
    assert "skipped" in capsys.readouterr().err

    conflicts["left"] = 1  # one conflict, then the retry goes through
    retried = compact_stream(data_dir, "orders", lambda: future, progress=False)
    assert retried.skipped == ()
    assert len(retried.partitions) == len(before)
    assert retried.rows_after == retried.rows_before
    assert "commit conflict (attempt 1 of" in capsys.readouterr().err


def test_compact_refuses_a_missing_table_and_an_unknown_stream(data_dir: Path) -> None:
    with pytest.raises(StreambatchError, match="no Delta table"):
        compact_stream(data_dir, "orders", lambda: datetime.now(UTC))
    with pytest.raises(StreambatchError, match="unknown stream"):
        compact_stream(data_dir, "nope", lambda: datetime.now(UTC))


def test_vacuum_removes_only_unreferenced_old_files(topics: StreamTopics, data_dir: Path) -> None:
    produce(topics, 600, seed=31, start=FINISHED)
    run_flow(flow_env(topics, data_dir, **SMALL_WINDOW))
    replaced = live_files(data_dir)
    compact_stream(data_dir, "orders", lambda: datetime(2030, 1, 1, tzinfo=UTC), progress=False)
    live = live_files(data_dir)
    replaced -= live  # removed by compaction just now: still needed by older snapshots
    assert replaced
    rows = DeltaTable(str(table_path(data_dir))).count()
    before_fences = fences(data_dir, topics)

    # What a crash between writing a batch's files and its commit leaves behind.
    partition_dir = table_path(data_dir) / next(iter(live)).rsplit("/", 1)[0]
    old_orphan = partition_dir / "part-00000000-crashed.zstd.parquet"
    old_orphan.write_bytes(b"PAR1 not committed")
    long_ago = time.time() - 200 * 3600
    os.utime(old_orphan, (long_ago, long_ago))
    fresh_orphan = partition_dir / "part-11111111-in-flight.zstd.parquet"
    fresh_orphan.write_bytes(b"PAR1 written, commit pending")

    listed = vacuum_lake(data_dir, dry_run=True)
    assert listed == [str(old_orphan)]
    assert old_orphan.exists()

    removed = vacuum_lake(data_dir)
    assert removed == [str(old_orphan)]
    assert not old_orphan.exists()
    assert fresh_orphan.exists(), "younger than the retention: maybe a commit in progress"
    root = table_path(data_dir)
    assert all((root / path).exists() for path in live | replaced)
    table = DeltaTable(str(root))
    assert table.count() == rows
    assert lake_table(data_dir).num_rows == rows
    assert fences(data_dir, topics) == before_fences

    with pytest.raises(StreambatchError, match="--force"):
        vacuum_lake(data_dir, retention=timedelta(0), dry_run=True)
    everything = set(vacuum_lake(data_dir, retention=timedelta(0), dry_run=True, force=True))
    assert {str(root / path) for path in replaced} | {str(fresh_orphan)} <= everything
    assert not {str(root / path) for path in live} & everything
    assert all((root / path).exists() for path in replaced), "a dry run deletes nothing"


def test_vacuum_refuses_a_missing_lake(tmp_path: Path) -> None:
    with pytest.raises(StreambatchError, match="no lake"):
        vacuum_lake(tmp_path)
