"""``streambatch status``: fences, lag and stalls of real flow runs on a real broker."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from foundation.clock import utc_now
from generator import generate_order_records
from streambatch.status import PartitionStatus, collect_status, render_status, stalled
from tests.support import REPO_ROOT, StreamTopics, flow_env, read_topic, run_flow, send

WINDOW_SECONDS = 60


def produce(topics: StreamTopics, count: int, seed: int) -> None:
    records = generate_order_records(count, seed=seed, duplicate_ratio=0.02, malformed_ratio=0.01)
    send(topics, records)


def records_per_partition(topics: StreamTopics) -> Counter[int]:
    messages = read_topic(topics.bootstrap_servers, topics.name)
    return Counter(message.partition() for message in messages)


def run_to_end(
    topics: StreamTopics, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Run the orders flow to the end; the test process sees the flow's settings."""
    env = flow_env(topics, data_dir, STREAMBATCH_WINDOW_SECONDS=str(WINDOW_SECONDS))
    run_flow(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def status_of(
    topics: StreamTopics, data_dir: Path, now: datetime, streams: tuple[str, ...] = ("orders",)
) -> list[PartitionStatus]:
    return collect_status(
        streams, data_dir, {"bootstrap.servers": topics.bootstrap_servers}, lambda: now
    )


def number(status: PartitionStatus) -> int:
    assert status.partition is not None, status.note
    return status.partition


def rendered(statuses: list[PartitionStatus]) -> str:
    console = Console(width=200, record=True)
    console.print(render_status(statuses))
    return console.export_text()


def test_healthy_lake_has_no_lag_and_nothing_stalled(
    topics: StreamTopics, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    produce(topics, 900, seed=41)
    run_to_end(topics, data_dir, monkeypatch)
    counts = records_per_partition(topics)

    a_day_later = utc_now() + timedelta(days=1)
    statuses = status_of(topics, data_dir, a_day_later)

    assert [s.partition for s in statuses] == list(range(topics.partitions))
    for status in statuses:
        assert status.topic == topics.name
        assert status.fence == counts[number(status)]
        assert status.end_offset == status.fence
        assert status.lag == 0
        assert status.open_batch_age is None
        assert status.last_commit_at is not None
        assert status.last_commit_at < a_day_later
        assert status.window == timedelta(seconds=WINDOW_SECONDS)
    # Idle for a day but nothing waiting: not stalled.
    assert stalled(statuses) == []
    text = rendered(statuses)
    assert "ok" in text and "STALLED" not in text


def test_records_waiting_two_windows_without_a_commit_are_stalled(
    topics: StreamTopics, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    produce(topics, 300, seed=42)
    run_to_end(topics, data_dir, monkeypatch)
    committed = records_per_partition(topics)
    produce(topics, 60, seed=43)  # no flow runs: these stay past the fence
    waiting = records_per_partition(topics) - committed
    assert waiting

    statuses = status_of(topics, data_dir, utc_now())
    lags = {s.partition: s.lag for s in statuses}
    assert lags == {p: waiting[p] for p in range(topics.partitions)}
    # Within a window of the last commit the partition is behind, not stalled.
    assert stalled(statuses) == []

    later = utc_now() + timedelta(seconds=2 * WINDOW_SECONDS + 30)
    statuses = status_of(topics, data_dir, later)
    stuck = stalled(statuses)
    assert sorted(number(s) for s in stuck) == sorted(waiting)
    for status in stuck:
        assert status.fence == committed[number(status)]
        assert status.lag == waiting[number(status)]
        assert status.open_batch_age is not None
        assert status.open_batch_age >= timedelta(seconds=2 * WINDOW_SECONDS)
        assert status.first_uncommitted_at is not None
        assert topics.name in status.describe()
    assert "STALLED" in rendered(statuses)
    # A longer window (given explicitly) is not exceeded yet.
    assert stalled(statuses, window_seconds=10 * WINDOW_SECONDS) == []


def test_a_stream_without_a_table_shows_no_fence(
    topics: StreamTopics, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    produce(topics, 90, seed=44)
    counts = records_per_partition(topics)
    # The clicks flow never ran on this topic: no table, no batches.
    monkeypatch.setenv("STREAMBATCH_CLICKS_TOPIC", topics.name)
    monkeypatch.setenv("STREAMBATCH_WINDOW_SECONDS", str(WINDOW_SECONDS))

    statuses = status_of(topics, data_dir, utc_now(), streams=("clicks",))
    assert {s.partition: s.lag for s in statuses} == {
        p: counts[p] for p in range(topics.partitions)
    }
    assert all(s.fence is None and s.last_commit_at is None for s in statuses)
    assert "-" in rendered(statuses)

    a_day_later = utc_now() + timedelta(days=1)
    stuck = stalled(status_of(topics, data_dir, a_day_later, streams=("clicks",)))
    assert sorted(number(s) for s in stuck) == sorted(p for p in counts if counts[p])


def test_a_missing_topic_and_a_naive_clock(
    topics: StreamTopics, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMBATCH_LOGS_TOPIC", f"{topics.name}-missing")
    statuses = status_of(topics, data_dir, utc_now(), streams=("logs",))
    assert len(statuses) == 1
    assert statuses[0].partition is None and statuses[0].lag is None
    assert "not found" in statuses[0].note
    assert stalled(statuses) == []
    with pytest.raises(ValueError, match="aware"):
        status_of(topics, data_dir, datetime(2026, 11, 28), streams=("logs",))


def test_status_command_exits_zero_when_healthy(
    topics: StreamTopics, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    produce(topics, 300, seed=45)
    env = run_to_end(topics, data_dir, monkeypatch)
    result = subprocess.run(
        [sys.executable, "-m", "streambatch.cli", "status", "--stream", "orders"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert topics.name.encode() in result.stdout
