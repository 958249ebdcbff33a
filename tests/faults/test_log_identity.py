"""Offsets that restart are never skipped silently: the fence belongs to one log.

A topic deleted and created again, or a broker that lost its data, starts its
offsets at 0 again. The flow must stop with one line naming the partition, the
fence and the broker's offsets instead of reading on from the old fence, and
``streambatch accept-log`` must make it read the new log from its start.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from deltalake import CommitProperties, DeltaTable, Transaction

from config.settings import load_stream_settings
from connectors.embedded_broker import EmbeddedBroker, create_topics
from events.registry import ORDERS
from events.stream import PARTITION_COLUMNS
from foundation.failpoints import LOG_FAILPOINTS
from generator import generate_order_records
from sinks.delta_lake import DeltaLake
from sinks.source_logs import SourceLogs
from streambatch.verify import verify_stream
from tests.support import REPO_ROOT, StreamTopics, flow_command, flow_env, lake_table, send

pytestmark = pytest.mark.partitions(2)
FIRST = 100
SECOND = 300
MISMATCH_SECONDS = 60.0


def produce(topics: StreamTopics, count: int, seed: int, malformed_ratio: float = 0) -> set[str]:
    """``count`` orders records (valid ones, and malformed at ``malformed_ratio``); valid ids."""
    records = list(
        generate_order_records(count, seed=seed, duplicate_ratio=0, malformed_ratio=malformed_ratio)
    )
    send(topics, records)
    return {r.event_id for r in records if r.kind == "valid" and r.event_id is not None}


def recreate(topics: StreamTopics) -> None:
    """Delete the source topic and create it again (a new topic id, offsets from 0)."""
    admin = AdminClient({"bootstrap.servers": topics.bootstrap_servers})
    for future in admin.delete_topics([topics.name]).values():
        future.result(timeout=30)
    deadline = time.monotonic() + 30
    while topics.name in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, "topic not deleted"
        time.sleep(0.1)
    create_topics(topics.bootstrap_servers, [topics.name], topics.partitions)


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def run_flow(env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run(env, *flow_command(), timeout=timeout)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(env, sys.executable, "-m", "streambatch.cli", *args, timeout=120)


def fences(data_dir: Path, topic: str, partitions: int) -> list[int | None]:
    lake = DeltaLake(data_dir / "lake", ORDERS)
    return [lake.fence(topic, p) for p in range(partitions)]


def lake_ids(data_dir: Path) -> list[str]:
    return list(lake_table(data_dir, columns=["event_id"]).column("event_id").to_pylist())


def assert_one_line_stop(result: subprocess.CompletedProcess[str], topic: str) -> str:
    """The flow ended non-zero with one line naming partition, fence, offsets and the command."""
    assert result.returncode != 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "accept-log" in line]
    assert len(lines) == 1, result.stderr[-4000:]
    line = lines[0]
    assert f"{topic}/" in line
    assert "fence" in line and "low" in line and "high" in line
    assert "streambatch accept-log --stream orders" in line
    return line


@pytest.mark.slow
def test_recreated_topic_stops_the_flow_then_accept_log_reads_it_all(
    topics: StreamTopics, data_dir: Path
) -> None:
    env = flow_env(topics, data_dir)
    first = produce(topics, FIRST, seed=1)
    assert run_flow(env).returncode == 0
    old_fences = fences(data_dir, topics.name, topics.partitions)
    assert sum(f or 0 for f in old_fences) == FIRST

    recreate(topics)
    # Malformed records too: their dead letters must count for the new log.
    second = produce(topics, SECOND, seed=2, malformed_ratio=0.05)
    assert len(second) < SECOND
    started = time.monotonic()
    stopped = run_flow(env, timeout=MISMATCH_SECONDS)
    assert time.monotonic() - started < MISMATCH_SECONDS
    line = assert_one_line_stop(stopped, topics.name)
    assert f"fence {old_fences[int(line.split('/')[1].split(':')[0])]}" in line
    # Nothing committed past the old fence.
    assert fences(data_dir, topics.name, topics.partitions) == old_fences
    assert sorted(lake_ids(data_dir)) == sorted(first)

    # verify does not call the lake complete while it belongs to another log.
    assert cli(env, "verify").returncode == 1

    accepted = cli(env, "accept-log", "--stream", "orders")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.count("accepted log") == topics.partitions
    history = SourceLogs(DeltaLake(data_dir / "lake", ORDERS), ORDERS).history(topics.name)
    changes = [g for g in history if g.reason == "accepted"]
    assert {g.partition for g in changes} == set(range(topics.partitions))
    assert all(g.previous_fence == old_fences[g.partition] for g in changes)
    assert all(g.previous_topic_id != g.topic_id and g.start_offset == 0 for g in changes)

    done = run_flow(env)
    assert done.returncode == 0, done.stderr[-4000:]
    ids = lake_ids(data_dir)
    assert len(ids) == len(set(ids)) == FIRST + len(second)
    assert set(ids) == first | second

    verified = cli(env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "lost = 0, duplicated = 0" in verified.stdout
    # A second run of the flow and of accept-log change nothing.
    assert run_flow(env).returncode == 0
    again = cli(env, "accept-log", "--stream", "orders")
    assert again.returncode == 0 and "nothing to accept" in again.stdout
    assert len(lake_ids(data_dir)) == FIRST + len(second)


def test_a_restart_on_the_same_log_reads_on_whatever_the_high_watermark_says(
    topics: StreamTopics, data_dir: Path
) -> None:
    """Right after a burst of produces the embedded broker under-reports its high watermark.

    The start check confirms a fence past the reported watermark by fetching
    to the partition's end, so a restart on an unchanged log never stops.
    """
    env = flow_env(topics, data_dir)
    first = produce(topics, FIRST, seed=9)
    assert run_flow(env).returncode == 0
    second = produce(topics, FIRST, seed=10)
    restarted = run_flow(env)
    assert restarted.returncode == 0, restarted.stderr[-4000:]
    assert "accept-log" not in restarted.stderr
    assert set(lake_ids(data_dir)) == first | second
    history = SourceLogs(DeltaLake(data_dir / "lake", ORDERS), ORDERS).history(topics.name)
    assert [(g.partition, g.generation, g.reason) for g in history] == [
        (p, 1, "first-read") for p in range(topics.partitions)
    ]


@pytest.mark.slow
def test_a_lake_from_before_topic_ids_is_checked_by_the_value_below_its_fence(
    topics: StreamTopics, data_dir: Path
) -> None:
    """No topic id recorded (a lake written before they were): the last row's digest decides."""
    env = flow_env(topics, data_dir)
    first = produce(topics, FIRST, seed=11)
    assert run_flow(env).returncode == 0
    old_fences = fences(data_dir, topics.name, topics.partitions)
    shutil.rmtree(data_dir / "lake" / "source_logs")

    recreate(topics)
    produce(topics, SECOND, seed=12)  # every old fence lies inside the new log
    line = assert_one_line_stop(run_flow(env, timeout=MISMATCH_SECONDS), topics.name)
    assert "is not the one the lake holds" in line
    assert fences(data_dir, topics.name, topics.partitions) == old_fences
    assert sorted(lake_ids(data_dir)) == sorted(first)

    assert cli(env, "accept-log", "--stream", "orders").returncode == 0
    assert run_flow(env).returncode == 0
    assert len(lake_ids(data_dir)) == FIRST + SECOND


@pytest.mark.partitions(1)
@pytest.mark.parametrize("point", LOG_FAILPOINTS)
def test_accept_log_killed_midway_then_run_again_reads_the_new_log_once(
    topics: StreamTopics, data_dir: Path, point: str
) -> None:
    """``kill -9`` inside ``accept-log``: the flow still stops, or reads the new log once.

    One partition, so that the kill lands in the only partition's change. The
    new log is shorter than the old fence: a ``batches`` table whose fence
    still stood at the old one would skip the new batch's row.
    """
    env = flow_env(topics, data_dir)
    first = produce(topics, FIRST, seed=13)
    assert run_flow(env).returncode == 0
    recreate(topics)
    second = produce(topics, FIRST // 2, seed=14)

    killed = cli({**env, "STREAMBATCH_FAILPOINT": point}, "accept-log", "--stream", "orders")
    assert killed.returncode == -9
    if point == "accept_log_after_row":
        # The new log's row is not in force: the flow still refuses the new log.
        assert_one_line_stop(run_flow(env, timeout=MISMATCH_SECONDS), topics.name)
        assert cli(env, "accept-log", "--stream", "orders").returncode == 0
    # After the commit (the batches fence mended at start), or after a second accept-log.
    done = run_flow(env)
    assert done.returncode == 0, done.stderr[-4000:]
    ids = lake_ids(data_dir)
    assert len(ids) == len(set(ids)) == FIRST + FIRST // 2
    assert set(ids) == first | second
    batches = lake_table(data_dir, "batches", columns=["rows"])
    assert sum(batches.column("rows").to_pylist()) == FIRST + FIRST // 2


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, which the test restarts (losing all its data)."""
    broker = EmbeddedBroker(log_file=tmp_path / "tansu.log")
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.slow
def test_broker_restart_stops_the_flow_then_accept_log_reads_the_new_log(
    own_broker: EmbeddedBroker, data_dir: Path
) -> None:
    topics = StreamTopics(own_broker.bootstrap_servers, "orders-restart", 2)
    create_topics(topics.bootstrap_servers, [topics.name, topics.dead_letter_topic], 2)
    env = flow_env(topics, data_dir)
    first = produce(topics, FIRST, seed=3)
    assert run_flow(env).returncode == 0
    old_fences = fences(data_dir, topics.name, topics.partitions)

    # The restarted broker has lost everything: same port, offsets from 0 again.
    own_broker.stop()
    own_broker.start()
    create_topics(topics.bootstrap_servers, [topics.name, topics.dead_letter_topic], 2)
    second = produce(topics, SECOND, seed=4)
    stopped = run_flow(env, timeout=MISMATCH_SECONDS)
    assert_one_line_stop(stopped, topics.name)
    assert fences(data_dir, topics.name, topics.partitions) == old_fences

    assert cli(env, "accept-log", "--stream", "orders").returncode == 0
    assert run_flow(env).returncode == 0
    ids = lake_ids(data_dir)
    assert len(ids) == len(set(ids)) == FIRST + SECOND
    assert set(ids) == first | second


def test_topic_recreated_under_a_running_flow_stops_it(
    topics: StreamTopics, data_dir: Path
) -> None:
    """The running flow ends non-zero without committing the new log; a restart says why.

    The running flow either stops on its own check (the topic id changed, or
    offsets went backwards) with the one line, or its Kafka client dies first:
    librdkafka 2.16 crashes (SIGSEGV) when a topic it is assigned is deleted on
    the embedded broker, also in a bare ``Consumer``. Either way nothing of the
    new log is committed, and the restart stops with the one line.
    """
    env = flow_env(
        topics, data_dir, STREAMBATCH_STOP_AT_END="false", STREAMBATCH_WINDOW_SECONDS="1"
    )
    first = produce(topics, FIRST, seed=5)
    process = subprocess.Popen(
        flow_command(),
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while sum(f or 0 for f in fences(data_dir, topics.name, topics.partitions)) < FIRST:
            assert process.poll() is None, process.communicate()[1][-4000:]
            assert time.monotonic() < deadline, "the first records were not committed"
            time.sleep(0.2)
        old_fences = fences(data_dir, topics.name, topics.partitions)
        recreate(topics)
        produce(topics, SECOND, seed=6)
        process.communicate(timeout=MISMATCH_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert fences(data_dir, topics.name, topics.partitions) == old_fences
    assert sorted(lake_ids(data_dir)) == sorted(first)
    restarted = run_flow(flow_env(topics, data_dir), timeout=MISMATCH_SECONDS)
    assert_one_line_stop(restarted, topics.name)
    assert fences(data_dir, topics.name, topics.partitions) == old_fences


def test_fence_beyond_what_the_broker_holds_stops_and_verify_reports_the_gap_lost(
    topics: StreamTopics, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lake's fence of partition 0 lies 50 offsets past the log's end, no row for them.

    What retention leaves behind when records go before the lake reads them
    (the embedded broker cannot delete records, so the fence is moved instead):
    the flow refuses to start, and ``verify`` reports the 50 offsets as lost
    from what the lake and the dead letters cover, not from the fence.
    """
    env = flow_env(topics, data_dir)
    produce(topics, FIRST, seed=7)
    assert run_flow(env).returncode == 0
    lake = DeltaLake(data_dir / "lake", ORDERS)
    end = lake.fence(topics.name, 0)
    assert end is not None
    table = DeltaTable(str(lake.table_path))
    table.create_write_transaction(
        [],
        mode="append",
        schema=ORDERS.table_schema,
        partition_by=list(PARTITION_COLUMNS.names),
        commit_properties=CommitProperties(
            app_transactions=[Transaction(lake.app_id(topics.name, 0), end + 50)]
        ),
    )

    line = assert_one_line_stop(run_flow(env, timeout=MISMATCH_SECONDS), topics.name)
    assert line.startswith(f"streambatch: {topics.name}/0: the lake's fence {end + 50} ")
    assert f"high {end})" in line and "shorter" in line

    verified = cli(env, "verify")
    assert verified.returncode == 1
    assert f"lost offsets [{end}, {end + 50}): removed from the topic" in verified.stderr
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    report = verify_stream(
        ORDERS, load_stream_settings("orders"), {"bootstrap.servers": topics.bootstrap_servers}
    )
    assert report.lost == 50
    assert report.partitions[0].removed_unread == list(range(end, end + 50))

    accepted = cli(env, "accept-log", "--stream", "orders", "--partition", "0")
    assert accepted.returncode == 0, accepted.stderr
    assert f"fence {end + 50} -> {end}" in accepted.stdout
    more = produce(topics, 20, seed=8)
    assert run_flow(env).returncode == 0
    assert more <= set(lake_ids(data_dir))
