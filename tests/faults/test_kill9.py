"""kill -9 the orders flow at random moments: 0 lost, 0 duplicated."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from streambatch.generator import generate_order_records, produce_records, summarize
from tests.support import REPO_ROOT, StreamTopics, flow_command, flow_env, lake_table, run_flow

pytestmark = pytest.mark.slow


def committed_rows(data_dir: Path) -> int:
    path = data_dir / "lake" / "orders"
    if not DeltaTable.is_deltatable(str(path)):
        return 0
    return lake_table(data_dir, columns=["_offset"]).num_rows


def test_kill_nine_at_three_random_moments_loses_and_duplicates_nothing(
    topics: StreamTopics, data_dir: Path
) -> None:
    records = list(generate_order_records(200_000, seed=11))
    expected = summarize(records)
    report = produce_records(
        records,
        producer_config={"bootstrap.servers": topics.bootstrap_servers},
        topic=topics.name,
        progress=False,
    )
    assert report.failed == 0
    # Small batches so that every kill lands between many commits.
    env = flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES="262144")
    rng = random.Random(20261128)
    kills = 0
    for _ in range(3):
        before = committed_rows(data_dir)
        process = subprocess.Popen(
            flow_command(),
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Wait for progress, then kill at a random moment within the next second.
        deadline = time.monotonic() + 120
        while committed_rows(data_dir) <= before and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 2, "the flow finished before it could be killed; produce more events"

    run_flow(env)  # the final restart, to the end of the topic

    ids = lake_table(data_dir, columns=["event_id"]).column("event_id").to_pylist()
    lost = expected.valid_event_ids - set(ids)
    duplicated = len(ids) - len(set(ids))
    assert (len(lost), duplicated) == (0, 0)
    assert len(ids) == len(expected.valid_event_ids)
    batches = lake_table(data_dir, "batches")
    # Every committed batch has its row, even when the kill fell between the two commits.
    assert sum(batches.column("rows").to_pylist()) == len(ids)
