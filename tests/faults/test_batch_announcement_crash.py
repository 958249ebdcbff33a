"""kill -9 between a commit and its announcement: the restart announces what is missing.

Also when the partition gets no more records: the restart announces it when
it opens the partition, not at its next commit (which may never come).

Then the batch handlers: each batch id handled once, and the rollup equals
DuckDB's report over the lake (duplicates and malformed records included).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from connectors.embedded_broker import create_topics
from generator import generate_order_records
from handlers.store import open_store
from sinks.batch_announcements import BatchAnnouncement, batch_id
from tests.support import (
    REPO_ROOT,
    StreamTopics,
    flow_command,
    flow_env,
    lake_table,
    read_topic,
    run_flow,
    send,
)
from tests.support_batch import (
    CALLS_TABLE,
    handlers_config,
    report_rows,
    rollup_rows,
    run_batch_handlers,
)

pytestmark = pytest.mark.slow


def test_a_batch_committed_but_not_announced_is_announced_at_restart_and_handled_once(
    topics: StreamTopics, data_dir: Path, tmp_path: Path
) -> None:
    create_topics(topics.bootstrap_servers, [f"{topics.name}.batches"], 2)
    send(topics, generate_order_records(4000, seed=7, duplicate_ratio=0.03, malformed_ratio=0.02))
    env = flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES="65536")
    for point in ("before_announcement:3", "before_announcement:2"):
        crashed = subprocess.run(
            flow_command(),
            env={**env, "STREAMBATCH_FAILPOINT": point},
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
        manifest = lake_table(data_dir, "batches").to_pylist()
        announced = [
            BatchAnnouncement.from_json(m.value())
            for m in read_topic(topics.bootstrap_servers, f"{topics.name}.batches")
        ]
        # The crash left the last committed batch unannounced.
        assert len({a.batch_id for a in announced}) < len(manifest)
    run_flow(env)
    manifest = lake_table(data_dir, "batches").to_pylist()
    expected = {
        batch_id(r["stream"], r["topic"], r["partition"], r["first_offset"], r["next_offset"])
        for r in manifest
    }
    announced = [
        BatchAnnouncement.from_json(m.value())
        for m in read_topic(topics.bootstrap_servers, f"{topics.name}.batches")
    ]
    assert {a.batch_id for a in announced} == expected
    # Re-announcing is the repair only: at most the batches each crash cut off.
    assert len(announced) <= len(expected) + 2
    by_id = {a.batch_id: a for a in announced}
    for row in manifest:
        key = batch_id(
            row["stream"], row["topic"], row["partition"], row["first_offset"], row["next_offset"]
        )
        assert by_id[key].rows == row["rows"]
        assert by_id[key].lake_version == row["lake_version"]

    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    config = handlers_config(
        topics,
        {
            "recorder": {"handler": "tests.support_batch:RecordingBatchHandler"},
            "rollup": {"handler": "batch.rollup"},
        },
    )
    result = run_batch_handlers(topics, config, store_url, data_dir)
    assert result.batch_handlers["recorder"].processed == len(expected)
    assert result.batch_handlers["recorder"].duplicates == len(announced) - len(expected)
    with open_store(store_url) as store, store.transaction() as transaction:
        handled = transaction.query(f"SELECT batch_id FROM {CALLS_TABLE}")
    assert sorted(row[0] for row in handled) == sorted(expected)
    assert rollup_rows(store_url) == report_rows(data_dir)


@pytest.mark.partitions(1)
def test_the_last_batch_of_a_partition_is_announced_at_restart_though_nothing_more_is_read(
    topics: StreamTopics, data_dir: Path
) -> None:
    batches_topic = f"{topics.name}.batches"
    create_topics(topics.bootstrap_servers, [batches_topic], 1)
    send(topics, generate_order_records(300, seed=11))
    env = flow_env(topics, data_dir)
    crashed = subprocess.run(
        flow_command(),
        env={**env, "STREAMBATCH_FAILPOINT": "before_announcement:1"},
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    [row] = lake_table(data_dir, "batches").to_pylist()
    assert row["next_offset"] == 300
    assert read_topic(topics.bootstrap_servers, batches_topic) == []

    stderr = run_flow(env)  # the partition is at its end: no batch, no commit

    assert lake_table(data_dir, "batches").num_rows == 1
    announced = [
        BatchAnnouncement.from_json(m.value())
        for m in read_topic(topics.bootstrap_servers, batches_topic)
    ]
    assert [a.batch_id for a in announced] == [
        batch_id(row["stream"], row["topic"], row["partition"], 0, 300)
    ]
    assert announced[0].lake_version == row["lake_version"]
    assert "announced 1 committed batch(es) a crash left unannounced" in stderr
