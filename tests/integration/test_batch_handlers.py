"""Batch handlers: once per committed batch, exactly its rows, retries, dead letters, redrive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from connectors.embedded_broker import create_topics
from generator import generate_order_records
from handlers.store import open_store
from streambatch.dead_letter_tools import inspect_dead_letters
from tests.support import (
    REPO_ROOT,
    StreamTopics,
    flow_env,
    lake_table,
    read_topic,
    run_flow,
    send,
)
from tests.support_batch import (
    CALLS_TABLE,
    batch_receiver,
    handlers_config,
    manifest_batch_ids,
    report_rows,
    rollup_rows,
    run_batch_handlers,
)

RECORDING = "tests.support_batch:RecordingBatchHandler"


def run_orders(topics: StreamTopics, data_dir: Path, count: int = 2000) -> None:
    create_topics(topics.bootstrap_servers, [f"{topics.name}.batches"], 3)
    records = generate_order_records(count, seed=9, duplicate_ratio=0.03, malformed_ratio=0.02)
    send(topics, records)
    run_flow(flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES="65536"))


def calls(store_url: str, handler: str) -> list[tuple[str, int, list[str]]]:
    with open_store(store_url) as store, store.transaction() as transaction:
        rows = transaction.query(
            f"SELECT batch_id, announced_rows, event_ids FROM {CALLS_TABLE} WHERE handler = ?",
            (handler,),
        )
    return [(str(b), int(n), json.loads(ids)) for b, n, ids in rows]


def test_each_batch_is_handled_once_with_exactly_its_rows_after_two_failures(
    topics: StreamTopics, data_dir: Path, tmp_path: Path
) -> None:
    run_orders(topics, data_dir)
    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    config = handlers_config(
        topics,
        {
            "flaky": {"handler": RECORDING, "options": {"failures": 2}},
            "rollup": {"handler": "batch.rollup"},
        },
    )
    result = run_batch_handlers(topics, config, store_url, data_dir)
    expected = manifest_batch_ids(data_dir)
    assert len(expected) > 3
    made = calls(store_url, "flaky")
    assert sorted(batch for batch, _, _ in made) == sorted(expected)
    assert result.batch_handlers["flaky"].retried == 2 * len(expected)
    assert result.batch_handlers["flaky"].dead_lettered == 0
    # Exactly each batch's rows: together every lake row once.
    lake_ids = lake_table(data_dir, columns=["event_id"]).column("event_id").to_pylist()
    handed = [event_id for _, _, ids in made for event_id in ids]
    assert sorted(handed) == sorted(lake_ids)
    assert all(len(ids) == rows for _, rows, ids in made)
    # The rollup equals DuckDB's report over the lake, to the last decimal.
    rollup = rollup_rows(store_url)
    assert rollup == report_rows(data_dir)
    assert len(rollup) > 1
    # A second run (the same announcements again) changes nothing.
    again = run_batch_handlers(topics, config, store_url, data_dir, until_idle_seconds=2.5)
    assert again.batch_handlers["flaky"].processed == 0
    assert len(calls(store_url, "flaky")) == len(expected)


def test_always_failing_handler_dead_letters_then_a_redrive_handles_each_batch_once(
    topics: StreamTopics, data_dir: Path, tmp_path: Path
) -> None:
    run_orders(topics, data_dir, count=800)
    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    fixed = tmp_path / "fixed"
    config = handlers_config(
        topics, {"broken": {"handler": RECORDING, "options": {"fixed_flag": str(fixed)}}}
    )
    connection = {"bootstrap.servers": topics.bootstrap_servers}
    result = run_batch_handlers(topics, config, store_url, data_dir, until_idle_seconds=2.5)
    expected = manifest_batch_ids(data_dir)
    assert result.batch_handlers["broken"].dead_lettered == len(expected)
    dead_letter_topic = f"{topics.name}.broken.dlq"
    letters = read_topic(topics.bootstrap_servers, dead_letter_topic)
    carried = {dict(m.headers())["batch.id"].decode() for m in letters}
    assert carried == expected
    assert {dict(m.headers())["handler.name"] for m in letters} == {b"broken"}
    summary = inspect_dead_letters(connection, dead_letter_topic, limit=1)
    assert summary.by_class == {"RuntimeError": len(expected)}
    assert calls(store_url, "broken") == []

    # The operator's commands, with the batch handler's name.
    handlers_file = tmp_path / "handlers.json"
    handlers_file.write_text(config.model_dump_json())
    dlq = [sys.executable, "-m", "streambatch.cli", "dlq"]
    options = ["--worker", "broken", "--config", str(handlers_file)]
    options += ["-b", topics.bootstrap_servers]
    inspected = subprocess.run(
        [*dlq, "inspect", *options], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert inspected.returncode == 0, inspected.stderr
    assert dead_letter_topic in inspected.stdout
    assert f"{len(expected)} dead letters" in inspected.stdout
    assert "RuntimeError" in inspected.stdout
    fixed.touch()
    redriven = subprocess.run(
        [*dlq, "redrive", *options], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert redriven.returncode == 0, redriven.stderr
    assert f"{len(expected)} dead letters of {dead_letter_topic} sent back" in redriven.stdout
    result = run_batch_handlers(topics, config, store_url, data_dir, until_idle_seconds=2.5)
    assert result.batch_handlers["broken"].processed == len(expected)
    assert sorted(b for b, _, _ in calls(store_url, "broken")) == sorted(expected)


def test_http_delivery_posts_each_batch_as_gzip_json_lines_with_its_batch_id(
    topics: StreamTopics, data_dir: Path, tmp_path: Path
) -> None:
    run_orders(topics, data_dir, count=800)
    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    with batch_receiver(refusals=2) as receiver:
        config = handlers_config(
            topics,
            {
                "delivery": {
                    "handler": "batch.http-delivery",
                    "options": {"url": receiver.url, "timeout_seconds": 5},
                }
            },
        )
        result = run_batch_handlers(topics, config, store_url, data_dir)
    expected = manifest_batch_ids(data_dir)
    keys = [headers["Idempotency-Key"] for headers, _ in receiver.posts]
    assert sorted(keys) == sorted(expected)
    assert result.batch_handlers["delivery"].retried == 2
    delivered = [row["event_id"] for _, rows in receiver.posts for row in rows]
    lake = lake_table(data_dir, columns=["event_id", "total_amount"])
    assert sorted(delivered) == sorted(lake.column("event_id").to_pylist())
    for headers, rows in receiver.posts:
        assert headers["Content-Type"] == "application/x-ndjson"
        assert int(headers["X-Streambatch-Rows"]) == len(rows)
    # Money arrives as exact decimal strings.
    amounts = {row["event_id"]: row["total_amount"] for _, rows in receiver.posts for row in rows}
    for event_id, amount in zip(
        lake.column("event_id").to_pylist(), lake.column("total_amount").to_pylist(), strict=True
    ):
        assert amounts[event_id] == (None if amount is None else str(amount))
