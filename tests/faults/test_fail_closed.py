"""Failing closed means exiting: a lake the flow cannot write ends the process.

A full disk (a small tmpfs) and a read-only lake (a read-only remount) while
a running flow (``STREAMBATCH_STOP_AT_END=false``: no end of input to reach)
has batches to commit: it must exit within seconds, non-zero, with one line
naming the root cause. Once the cause is gone, a restart continues exactly
once: the lake holds every distinct valid event once. A second flow on the
same partitions and lake races the first: both finish, the fence keeps the
lake exactly once.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from flows.runner import cluster_commands
from foundation.failure import EXIT_CODE
from generator import generate_order_records
from tests.support import (
    REPO_ROOT,
    StreamTopics,
    flow_command,
    flow_env,
    lake_table,
    run_flow,
    send,
)

pytestmark = pytest.mark.slow

# From the start of the process: start-up (imports, Kafka, the lake) plus a
# one-second window, on a loaded two-core machine. A hang is minutes.
EXIT_WITHIN_SECONDS = 60.0
FAILURE_PREFIX = "streambatch: "


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs, unmounted afterwards (mounting needs root; CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def produce(topics: StreamTopics, count: int, seed: int) -> set[str]:
    """Produce valid order events (some re-sent); return their distinct event ids."""
    records = list(
        generate_order_records(count, seed=seed, duplicate_ratio=0.05, malformed_ratio=0.0)
    )
    send(topics, records)
    return {orjson.loads(record.value)["event_id"] for record in records}


def assert_exactly_once(data_dir: Path, event_ids: set[str]) -> None:
    rows = lake_table(data_dir, columns=["event_id", "_partition", "_offset"])
    ids = rows.column("event_id").to_pylist()
    assert len(ids) == len(set(ids)), "an event is in the lake twice"
    assert set(ids) == event_ids
    where = list(
        zip(rows.column("_partition").to_pylist(), rows.column("_offset").to_pylist(), strict=True)
    )
    assert len(where) == len(set(where)), "an offset is in the lake twice"


def run_until_exit(env: dict[str, str], log: Path) -> tuple[int | None, float, str]:
    """Run the flow until it exits or EXIT_WITHIN_SECONDS pass: (status, seconds, stderr)."""
    started = time.monotonic()
    with log.open("wb") as err:
        process = subprocess.Popen(
            flow_command(), env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            status: int | None = process.wait(timeout=EXIT_WITHIN_SECONDS)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            process.kill()
            process.wait()
    return status, time.monotonic() - started, log.read_text(errors="replace")


def assert_failed_closed(status: int | None, stderr: str, *named: str) -> None:
    """Exited with EXIT_CODE and exactly one ``streambatch:`` line, which names ``named``."""
    assert status is not None, f"still running after {EXIT_WITHIN_SECONDS} s:\n{stderr[-3000:]}"
    assert status == EXIT_CODE, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith(FAILURE_PREFIX)]
    assert len(lines) == 1, stderr[-3000:]
    for words in named:
        assert words in lines[0], lines[0]


def running_env(topics: StreamTopics, data_dir: Path) -> dict[str, str]:
    """A flow that runs until stopped, closing a batch every second."""
    return flow_env(
        topics, data_dir, STREAMBATCH_STOP_AT_END="false", STREAMBATCH_WINDOW_SECONDS="1"
    )


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the filler file."""
    filler = disk / "filler"
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False
    )
    with contextlib.suppress(OSError), (disk / "last").open("wb") as last:
        while True:  # what dd's last block could not take
            last.write(b"\0" * 512)
            last.flush()
    return filler


def test_disk_full_exits_naming_enospc_and_a_restart_continues_exactly_once(
    topics: StreamTopics, small_disk: Path, tmp_path: Path
) -> None:
    data_dir = small_disk / "data"
    ids = produce(topics, 600, seed=61)
    run_flow(flow_env(topics, data_dir))
    filler = fill(small_disk)
    ids |= produce(topics, 600, seed=62)

    status, _, stderr = run_until_exit(running_env(topics, data_dir), tmp_path / "full.log")
    assert_failed_closed(
        status, stderr, f"lake at {data_dir}", "no space left on device (ENOSPC)", "free space"
    )

    filler.unlink()
    (small_disk / "last").unlink()
    run_flow(flow_env(topics, data_dir))
    assert_exactly_once(data_dir, ids)


def test_read_only_lake_exits_naming_erofs_and_a_restart_continues_exactly_once(
    topics: StreamTopics, small_disk: Path, tmp_path: Path
) -> None:
    data_dir = small_disk / "data"
    ids = produce(topics, 600, seed=63)
    run_flow(flow_env(topics, data_dir))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    ids |= produce(topics, 600, seed=64)

    try:
        status, _, stderr = run_until_exit(running_env(topics, data_dir), tmp_path / "ro.log")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert_failed_closed(status, stderr, "read-only file system (EROFS)", "make it writable")

    run_flow(flow_env(topics, data_dir))
    assert_exactly_once(data_dir, ids)


def test_two_flows_on_the_same_partitions_race_and_the_lake_stays_exactly_once(
    topics: StreamTopics, data_dir: Path, tmp_path: Path
) -> None:
    ids = produce(topics, 3_000, seed=65)
    # Small batches: many commits of the same offset ranges, racing.
    env = flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES="16384")
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with logs[0].open("wb") as first_err, logs[1].open("wb") as second_err:
        flows = [
            subprocess.Popen(flow_command(), env=env, cwd=REPO_ROOT, stderr=err)
            for err in (first_err, second_err)
        ]
        try:
            statuses = [flow.wait(timeout=240) for flow in flows]
        finally:
            for flow in flows:
                flow.kill()
                flow.wait()
    assert statuses == [0, 0], [log.read_text(errors="replace")[-3000:] for log in logs]
    assert_exactly_once(data_dir, ids)


def test_a_failing_process_of_a_cluster_ends_the_whole_cluster(
    topics: StreamTopics, small_disk: Path, tmp_path: Path
) -> None:
    """Only one process has a batch to commit on the read-only lake: both exit."""
    data_dir = small_disk / "data"
    ids = produce(topics, 300, seed=66)
    run_flow(flow_env(topics, data_dir))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    records = list(generate_order_records(50, seed=67, duplicate_ratio=0.0, malformed_ratio=0.0))
    producer = Producer({"bootstrap.servers": topics.bootstrap_servers})
    for record in records:  # all to partition 0: the other process has nothing to commit
        producer.produce(topics.name, value=record.value, key=record.key, partition=0)
    assert producer.flush(30) == 0
    ids |= {orjson.loads(record.value)["event_id"] for record in records}

    logs = [tmp_path / "process0.log", tmp_path / "process1.log"]
    try:
        with logs[0].open("wb") as first_err, logs[1].open("wb") as second_err:
            processes = [
                subprocess.Popen(
                    command,
                    env=running_env(topics, data_dir),
                    cwd=REPO_ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
                for command, err in zip(
                    cluster_commands("orders", 2), (first_err, second_err), strict=True
                )
            ]
            deadline = time.monotonic() + EXIT_WITHIN_SECONDS
            try:
                while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
                    time.sleep(0.2)
                statuses = [p.poll() for p in processes]
            finally:
                for process in processes:
                    process.kill()
                    process.wait()
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    stderr = [log.read_text(errors="replace") for log in logs]
    assert None not in statuses, f"a process still running: {statuses}\n{stderr[1][-2000:]}"
    assert 0 not in statuses, statuses
    assert EXIT_CODE in statuses, statuses
    named = [line for text in stderr for line in text.splitlines() if "(EROFS)" in line]
    assert any(line.startswith(FAILURE_PREFIX) for line in named), stderr

    run_flow(flow_env(topics, data_dir))
    assert_exactly_once(data_dir, ids)
