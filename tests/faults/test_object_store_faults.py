"""Faults with the lake in an S3 bucket: kill -9, several machines, the store unreachable.

Every run ends with ``streambatch verify`` on the bucket: 0 lost, 0 duplicated.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator import GenerationSummary, generate_order_records, summarize
from tests.support import REPO_ROOT, StreamTopics, flow_command, flow_env, run_flow, send
from tests.support_s3 import S3Lake, free_port

pytestmark = pytest.mark.slow


def produce(topics: StreamTopics, count: int, seed: int) -> GenerationSummary:
    records = list(generate_order_records(count, seed=seed))
    send(topics, records)
    return summarize(records)


def committed(lake: S3Lake) -> int:
    return lake.table(columns=["_offset"]).num_rows if lake.exists() else 0


def assert_exactly_once(env: dict[str, str], lake: S3Lake, expected: GenerationSummary) -> None:
    ids = lake.table(columns=["event_id"]).column("event_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicated rows in the bucket"
    assert set(ids) == expected.valid_event_ids, "lost rows"
    batches = lake.table("batches", columns=["rows"])
    assert sum(batches.column("rows").to_pylist()) == len(ids)
    verified = subprocess.run(
        [sys.executable, "-m", "streambatch.cli", "verify"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]
    assert "lost = 0, duplicated = 0" in verified.stdout


def wait_for_progress(lake: S3Lake, beyond: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while committed(lake) <= beyond and time.monotonic() < deadline:
        if process.poll() is not None:
            return
        time.sleep(0.2)


def test_kill_nine_at_five_random_moments_on_a_bucket(
    topics: StreamTopics, data_dir: Path, s3_lake: S3Lake
) -> None:
    expected = produce(topics, 30_000, seed=61)
    env = flow_env(topics, data_dir, **s3_lake.env(), STREAMBATCH_WINDOW_BYTES="65536")
    rng = random.Random(20261206)
    kills = 0
    for _ in range(5):
        before = committed(s3_lake)
        process = subprocess.Popen(
            flow_command(),
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_progress(s3_lake, before, process)
        time.sleep(rng.uniform(0.0, 1.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 4, "the flow finished before it could be killed; produce more events"

    run_flow(env)
    assert_exactly_once(env, s3_lake, expected)


@pytest.mark.partitions(4)
def test_two_machines_sharing_only_the_bucket_one_killed_finished_by_one(
    topics: StreamTopics, tmp_path: Path, s3_lake: S3Lake
) -> None:
    expected = produce(topics, 30_000, seed=62)
    addresses = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    cluster = ["-a", addresses[0], "-a", addresses[1]]
    machines = []
    for index in range(2):
        # Each "machine": its own working and data directory, nothing on disk in common.
        home = tmp_path / f"machine{index}"
        (home / "data").mkdir(parents=True)
        env = flow_env(topics, home / "data", **s3_lake.env(), STREAMBATCH_WINDOW_BYTES="65536")
        command = [sys.executable, "-m", "bytewax.run", "flows.orders", *cluster, "-i", str(index)]
        machines.append(
            subprocess.Popen(
                command,
                env=env,
                cwd=home,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    try:
        deadline = time.monotonic() + 180
        while committed(s3_lake) < 5_000 and time.monotonic() < deadline:
            assert all(m.poll() is None for m in machines), "a machine ended before the kill"
            time.sleep(0.2)
        os.killpg(machines[0].pid, signal.SIGKILL)
        machines[0].wait()
        # The survivor loses its peer; it is stopped too (a cluster restarts as a whole).
        time.sleep(1)
    finally:
        for machine in machines:
            if machine.poll() is None:
                os.killpg(machine.pid, signal.SIGKILL)
            machine.wait()
    partial = committed(s3_lake)
    assert 0 < partial < len(expected.valid_event_ids)

    third = tmp_path / "machine2"
    (third / "data").mkdir(parents=True)
    env = flow_env(topics, third / "data", **s3_lake.env())
    finished = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "flows.orders"],
        env=env,
        cwd=third,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr.decode(errors="replace")[-3000:]
    for home in (tmp_path / "machine0", tmp_path / "machine1", third):
        assert not any((home / "data").iterdir()), f"{home}: lake data on a local disk"
    assert_exactly_once(env, s3_lake, expected)


def test_object_store_unreachable_mid_run_is_retried_then_caught_up(
    topics: StreamTopics, data_dir: Path, s3_lake: S3Lake
) -> None:
    if s3_lake.server.port is None:
        pytest.skip("needs the moto server of the fixture, which the test can pause")
    expected = produce(topics, 20_000, seed=63)
    env = flow_env(topics, data_dir, **s3_lake.env(), STREAMBATCH_WINDOW_BYTES="65536")
    process = subprocess.Popen(
        flow_command(),
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_progress(s3_lake, 0, process)
        assert process.poll() is None, "the flow finished before the outage"
        assert committed(s3_lake) < len(expected.valid_event_ids), "no work left to stall"
        s3_lake.server.pause()
        try:
            time.sleep(30)
        finally:
            s3_lake.server.resume()
        _, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    assert_exactly_once(env, s3_lake, expected)
