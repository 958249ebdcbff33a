"""Metrics scraped during a run show the expected counts; commit logs are JSON lines."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

from deltalake import DeltaTable
from prometheus_client.parser import text_string_to_metric_families

from connectors.embedded_broker import free_port
from generator import generate_order_records, summarize
from tests.support import REPO_ROOT, StreamTopics, flow_command, flow_env, lake_table, send


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= set(found))


def test_metrics_and_json_commit_logs_during_a_run(topics: StreamTopics, data_dir: Path) -> None:
    records = list(generate_order_records(3_000, seed=41))
    expected = summarize(records)
    port = free_port()
    env = flow_env(
        topics,
        data_dir,
        STREAMBATCH_STOP_AT_END="false",
        STREAMBATCH_WINDOW_SECONDS="1",
        STREAMBATCH_METRICS_PORT=str(port),
    )
    process = subprocess.Popen(
        flow_command(), env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        send(topics, records)
        deadline = time.monotonic() + 90
        rows = 0
        while rows < len(expected.valid_event_ids) and time.monotonic() < deadline:
            time.sleep(0.5)
            if DeltaTable.is_deltatable(str(data_dir / "lake" / "orders")):
                rows = lake_table(data_dir, columns=["_offset"]).num_rows
        assert rows == len(expected.valid_event_ids)
        samples = scrape(port)
        assert total(samples, "streambatch_records_total", outcome="valid") == rows
        assert (
            total(samples, "streambatch_records_total", outcome="duplicate") == expected.duplicates
        )
        assert total(samples, "streambatch_records_total", outcome="invalid") == expected.malformed
        batches = lake_table(data_dir, "batches").num_rows
        assert total(samples, "streambatch_batches_committed_total") == batches
        assert total(samples, "streambatch_batch_rows_count") == batches
        commits = [
            v for (n, _), v in samples.items() if n == "streambatch_last_commit_timestamp_seconds"
        ]
        assert len(commits) == topics.partitions and all(v > 0 for v in commits)
        # The lag gauge follows the client's statistics (1 s): wait for it to reach 0.
        lag_deadline = time.monotonic() + 15
        while time.monotonic() < lag_deadline:
            lags = [
                v for (n, _), v in scrape(port).items() if n == "streambatch_consumer_lag_records"
            ]
            if len(lags) == topics.partitions and not any(lags):
                break
            time.sleep(0.5)
        assert len(lags) == topics.partitions and not any(lags)
        # The probes beside the metrics: committing, every partition connected.
        for probe in ("healthz", "readyz"):
            url = f"http://127.0.0.1:{port}/{probe}"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
                assert json.loads(response.read())["ok"] is True
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    committed = [line for line in lines if line["message"] == "batch committed"]
    assert len(committed) == batches
    assert sum(line["batch"]["rows"] for line in committed) == rows
    assert {line["level"] for line in committed} == {"INFO"}
