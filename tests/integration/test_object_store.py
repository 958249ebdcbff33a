"""The lake in an S3 bucket (a real S3 API over HTTP): flows, CLI and maintenance."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc

from connectors.embedded_broker import create_topics
from generator import generate_order_records, summarize
from sinks.lake_location import resolve_lake_location
from tests.support import (
    REPO_ROOT,
    StreamTopics,
    flow_command,
    flow_env,
    read_topic,
    run_flow,
    send,
)
from tests.support_batch import handlers_config, report_rows, rollup_rows, run_batch_handlers
from tests.support_s3 import S3Lake, S3Server

FINISHED_HOUR = datetime(2026, 11, 20, 9, tzinfo=UTC)


def bucket_env(topics: StreamTopics, data_dir: Path, lake: S3Lake, **extra: str) -> dict[str, str]:
    """A flow's environment with its lake in the bucket (the data dir stays empty)."""
    return flow_env(topics, data_dir, **lake.env(), **extra)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streambatch.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_orders_flow_on_a_bucket_exactly_once_with_dead_letters(
    topics: StreamTopics, data_dir: Path, s3_lake: S3Lake, tmp_path: Path
) -> None:
    records = list(
        generate_order_records(1500, seed=41, duplicate_ratio=0.05, malformed_ratio=0.03)
    )
    send(topics, records)
    expected = summarize(records)
    assert expected.duplicates and expected.malformed
    env = bucket_env(topics, data_dir, s3_lake, STREAMBATCH_WINDOW_BYTES="65536")

    run_flow(env)

    assert not any(data_dir.iterdir()), "nothing of the lake on the local disk"
    lake = s3_lake.table(columns=["event_id", "_offset"])
    ids = lake.column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) == len(expected.valid_event_ids)
    assert set(ids) == expected.valid_event_ids
    dead = read_topic(topics.bootstrap_servers, topics.dead_letter_topic)
    assert len(dead) == expected.malformed
    batches = s3_lake.table("batches")
    assert pc.sum(batches.column("rows")).as_py() == len(ids)
    assert pc.sum(batches.column("dead_letters")).as_py() == expected.malformed

    secret = s3_lake.server.secret_access_key
    verified = cli(env, "verify")
    assert verified.returncode == 0, verified.stderr
    assert "lost = 0, duplicated = 0" in verified.stdout

    queried = cli(env, "query", "SELECT count(*) AS n FROM orders", "--format", "csv")
    assert queried.returncode == 0, queried.stderr
    assert queried.stdout.splitlines() == ["n", str(len(ids))]
    named = cli(env, "query", "--report", "batches", "--format", "csv")
    assert named.returncode == 0, named.stderr

    status = cli(env, "status")
    assert status.returncode in (0, 1), status.stderr
    assert topics.name in status.stdout

    page = tmp_path / "report.html"
    reported = cli(env, "report", "--html", str(page))
    assert reported.returncode == 0, reported.stderr
    assert "<html" in page.read_text(encoding="utf-8")

    for result in (verified, queried, named, status, reported):
        assert secret not in result.stdout + result.stderr
    assert secret not in page.read_text(encoding="utf-8")


def test_a_missing_bucket_is_one_line_naming_it_and_exit_2(
    topics: StreamTopics, data_dir: Path, s3_lake: S3Lake
) -> None:
    send(topics, generate_order_records(50, seed=3))
    missing = S3Lake(s3_lake.server, "no-such-bucket-here", "s3://no-such-bucket-here/lake")
    env = bucket_env(topics, data_dir, missing)

    flow = subprocess.run(
        flow_command(), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )

    assert flow.returncode == 2, flow.stderr[-2000:]
    lines = [line for line in flow.stderr.splitlines() if line.startswith("streambatch:")]
    assert len(lines) == 1, flow.stderr[-2000:]
    assert "s3://no-such-bucket-here/lake" in lines[0]
    assert s3_lake.server.secret_access_key not in flow.stderr + flow.stdout
    assert "Traceback" not in flow.stderr
    assert read_topic(topics.bootstrap_servers, topics.dead_letter_topic) == []

    query = cli(env, "query", "SELECT count(*) FROM orders")
    assert query.returncode == 2
    assert "no-such-bucket-here" in query.stderr
    assert s3_lake.server.secret_access_key not in query.stderr + query.stdout
    assert len(query.stderr.strip().splitlines()) == 1, query.stderr


def test_a_wrong_credential_is_one_line_naming_the_bucket_never_the_secret(
    topics: StreamTopics, data_dir: Path, s3_server: S3Server, tmp_path: Path
) -> None:
    send(topics, generate_order_records(50, seed=4))
    if s3_server.port is None:  # a real MinIO: the right endpoint, a wrong secret
        server = S3Server(s3_server.endpoint, s3_server.access_key_id, "wrong-secret-123456")
    else:  # moto checking credentials: these keys are unknown to it
        server = S3Server.moto(tmp_path, enforce_auth=True)
    try:
        lake = S3Lake(server, "guarded-bucket", "s3://guarded-bucket/lake")
        env = bucket_env(topics, data_dir, lake)
        flow = subprocess.run(
            flow_command(), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
        )
        query = cli(env, "status")
    finally:
        if server is not s3_server:
            server.stop()
    assert flow.returncode == 2, flow.stderr[-2000:]
    lines = [line for line in flow.stderr.splitlines() if line.startswith("streambatch:")]
    assert len(lines) == 1 and "s3://guarded-bucket/lake" in lines[0], flow.stderr[-2000:]
    assert "403" in lines[0]
    assert query.returncode == 2 and "guarded-bucket" in query.stderr, query.stderr
    for output in (flow.stdout, flow.stderr, query.stdout, query.stderr):
        assert server.secret_access_key not in output
    assert read_topic(topics.bootstrap_servers, topics.dead_letter_topic) == []


def test_compact_and_vacuum_while_a_flow_commits_to_the_bucket_keep_every_row(
    topics: StreamTopics, data_dir: Path, s3_lake: S3Lake
) -> None:
    earlier = list(generate_order_records(600, seed=5, start=FINISHED_HOUR))
    send(topics, earlier)
    env = bucket_env(topics, data_dir, s3_lake, STREAMBATCH_WINDOW_BYTES="16384")
    run_flow(env)  # many small files in a finished hour
    files_before = len([k for k in s3_lake.object_keys() if k.endswith(".parquet")])
    later = list(generate_order_records(3000, seed=6))
    send(topics, later)
    expected = summarize(earlier).valid_event_ids | summarize(later).valid_event_ids

    flow = subprocess.Popen(
        flow_command(), env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        first_phase = len(summarize(earlier).valid_event_ids)
        deadline = time.monotonic() + 120
        while s3_lake.table(columns=["_offset"]).num_rows <= first_phase:
            assert flow.poll() is None and time.monotonic() < deadline, "no commit to overlap"
            time.sleep(0.2)
        compacted = cli(env, "compact", "orders", "--no-progress")
        # A retention of at least an hour: files the flow wrote but has not committed stay.
        vacuumed = cli(env, "vacuum", "--retention-hours", "1")
        _, flow_stderr = flow.communicate(timeout=300)
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.wait()
    assert compacted.returncode == 0, compacted.stderr
    assert vacuumed.returncode == 0, vacuumed.stderr
    assert flow.returncode == 0, flow_stderr.decode(errors="replace")[-3000:]

    ids = s3_lake.table(columns=["event_id"]).column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == expected
    verified = cli(env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Once nothing runs, the files compaction replaced can go.
    cleaned = cli(env, "vacuum", "--retention-hours", "0", "--force")
    assert cleaned.returncode == 0, cleaned.stderr
    assert sorted(s3_lake.table(columns=["event_id"]).column("event_id").to_pylist()) == sorted(ids)
    files_after = len([k for k in s3_lake.object_keys() if k.endswith(".parquet")])
    finished = Counter(
        key.rsplit("/", 1)[0]
        for key in s3_lake.object_keys()
        if "/orders/event_date=2026-11-20/" in key and key.endswith(".parquet")
    )
    assert finished and set(finished.values()) == {1}, "each finished hour compacted into one file"
    assert files_after > 0 and files_before > 1


def test_batch_handlers_read_each_batch_from_the_bucket(
    topics: StreamTopics, data_dir: Path, s3_lake: S3Lake, tmp_path: Path
) -> None:
    """The rollup over batches read from the bucket equals DuckDB's report over it."""
    create_topics(topics.bootstrap_servers, [f"{topics.name}.batches"], topics.partitions)
    records = list(generate_order_records(1200, seed=5, duplicate_ratio=0.03))
    send(topics, records)
    run_flow(bucket_env(topics, data_dir, s3_lake, STREAMBATCH_WINDOW_BYTES="65536"))
    lake = resolve_lake_location(s3_lake.uri, data_dir, s3_lake.env())
    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    config = handlers_config(topics, {"rollup": {"handler": "batch.rollup"}})

    result = run_batch_handlers(topics, config, store_url, lake)

    batches = s3_lake.table("batches").num_rows
    assert batches > 3
    assert result.batch_handlers["rollup"].processed == batches
    assert result.batch_handlers["rollup"].dead_lettered == 0
    rollup = rollup_rows(store_url)
    assert rollup == report_rows(lake) and len(rollup) > 1
    assert not any(data_dir.iterdir()), "nothing of the lake on the local disk"
