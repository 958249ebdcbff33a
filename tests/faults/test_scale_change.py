"""Change the process count across a kill -9: 2 processes, killed, finished by 1."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from generator import generate_order_records, summarize
from tests.support import (
    REPO_ROOT,
    StreamTopics,
    committed_rows,
    flow_command,
    flow_env,
    lake_table,
    local_cluster_ports,
    run_flow,
    send,
)

pytestmark = pytest.mark.slow


@pytest.mark.partitions(4)
def test_two_processes_killed_then_one_process_finishes_exactly_once(
    topics: StreamTopics, data_dir: Path
) -> None:
    records = list(generate_order_records(100_000, seed=31))
    expected = summarize(records)
    send(topics, records)
    env = flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES="131072")
    with local_cluster_ports():
        # Its own session, so that kill -9 reaches the launcher and both workers.
        process = subprocess.Popen(
            flow_command(processes=2),
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while committed_rows(data_dir) < 20_000 and time.monotonic() < deadline:
            assert process.poll() is None, "the 2-process flow ended before it was killed"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    partial = committed_rows(data_dir)
    assert 0 < partial < len(expected.valid_event_ids)

    run_flow(env)  # one process finishes the job

    ids = lake_table(data_dir, columns=["event_id"]).column("event_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicates after changing the process count"
    assert set(ids) == expected.valid_event_ids
