"""kill -9 the orders flow at random moments and at named points: 0 lost, 0 duplicated.

The oracle is ``streambatch verify`` (every offset below the fence is a row, a
dead letter or a dropped duplicate) plus a check against what was produced.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from config.settings import load_stream_settings
from events.registry import ORDERS
from foundation.failpoints import FLOW_FAILPOINTS
from generator import (
    GenerationSummary,
    generate_order_records,
    summarize,
)
from streambatch.verify import verify_stream
from tests.support import (
    REPO_ROOT,
    StreamTopics,
    committed_rows,
    flow_command,
    flow_env,
    lake_table,
    run_flow,
    send,
)

pytestmark = pytest.mark.slow


def produce(topics: StreamTopics, count: int, seed: int) -> GenerationSummary:
    records = list(generate_order_records(count, seed=seed))
    send(topics, records)
    return summarize(records)


def assert_exactly_once(
    topics: StreamTopics,
    data_dir: Path,
    expected: GenerationSummary,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = lake_table(data_dir, columns=["event_id"]).column("event_id").to_pylist()
    lost = expected.valid_event_ids - set(ids)
    duplicated = len(ids) - len(set(ids))
    assert (len(lost), duplicated) == (0, 0)
    assert len(ids) == len(expected.valid_event_ids)
    # Every committed batch has its row, even when a kill fell between the two commits.
    batches = lake_table(data_dir, "batches")
    assert sum(batches.column("rows").to_pylist()) == len(ids)
    # Every file the log names is readable; nothing else is visible to readers.
    table = DeltaTable(str(data_dir / "lake" / "orders"))
    for uri in table.file_uris():
        assert pq.ParquetFile(uri.removeprefix("file://")).metadata.num_rows > 0
    for name, value in flow_env(topics, data_dir).items():
        monkeypatch.setenv(name, value)
    report = verify_stream(
        ORDERS, load_stream_settings("orders"), {"bootstrap.servers": topics.bootstrap_servers}
    )
    assert (report.lost, report.duplicated, report.ok) == (0, 0, True), report.offenders()
    assert sum(p.dead_letters for p in report.partitions) >= expected.malformed


def test_kill_nine_at_ten_random_moments(
    topics: StreamTopics, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = produce(topics, 200_000, seed=11)
    # Small batches so that every kill lands between many commits.
    env = flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES="131072")
    rng = random.Random(20261128)
    kills = 0
    for _ in range(10):
        before = committed_rows(data_dir)
        process = subprocess.Popen(
            flow_command(),
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Wait for progress, then kill at a random moment within the next half second.
        deadline = time.monotonic() + 120
        while committed_rows(data_dir) <= before and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 8, "the flow finished before it could be killed; produce more events"

    run_flow(env)  # the final restart, to the end of the topic
    assert_exactly_once(topics, data_dir, expected, monkeypatch)


@pytest.mark.parametrize("point", FLOW_FAILPOINTS)
def test_kill_nine_at_a_named_point_of_the_commit_path(
    topics: StreamTopics, data_dir: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    expected = produce(topics, 20_000, seed=12)
    env = flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES="131072")
    # Die at the third time the point is reached, then twice more on restarts.
    for _ in range(3):
        crashed = subprocess.run(
            flow_command(),
            env={**env, "STREAMBATCH_FAILPOINT": f"{point}:3"},
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    if point == "after_files_before_commit":
        # The orphan files exist on disk but no reader sees them.
        on_disk = {p.name for p in (data_dir / "lake" / "orders").rglob("*.parquet")}
        in_log = {Path(u).name for u in DeltaTable(str(data_dir / "lake" / "orders")).file_uris()}
        assert on_disk - in_log, "expected uncommitted files left by the crash"
    run_flow(env)
    assert_exactly_once(topics, data_dir, expected, monkeypatch)
