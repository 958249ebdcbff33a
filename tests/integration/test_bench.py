"""`streambatch bench` runs every scenario end to end and reports consistent numbers.

A smoke run with few events: the numbers themselves are the benchmark's to
print, not a test's to judge; what is checked is that every run processed
every event and that the ratios are computed from the runs they name.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from rich.console import Console

from bench.run import run_benchmarks
from bench.workflow import run_router_bench, run_workflow_bench
from connectors.embedded_broker import EmbeddedBroker


def test_every_scenario_processes_every_event_and_reports_its_ratio() -> None:
    results = run_benchmarks(Console(file=io.StringIO()), events=3000, scale=2)
    runs = {key: value for key, value in results.items() if isinstance(value, dict)}
    ratios = runs.pop("ratios")
    delay = runs.pop("batch handler delay")
    assert delay["batches"] >= 1
    assert 0 <= delay["p50_seconds"] <= delay["p99_seconds"] <= delay["max_seconds"]
    pinned = len(os.sched_getaffinity(0)) >= 2
    assert {key: run["events"] for key, run in runs.items()} == {
        "ingest ceiling, consume and count": 3000,
        "baseline read_json (1 process)": 3000,
        "baseline orjson per event (1 process)": 3000,
        "orders flow, 2 partitions, 1 process": 3000,
        "orders flow, 2 partitions, 1 process, announcements off": 3000,
        "orders flow, 2 partitions, 1 process, lake in S3 (moto)": 3000,
        "orders flow, 4 partitions, 1 process": 3000,
        "orders flow, 4 partitions, 2 processes": 3000,
        **(
            {
                "orders flow, 4 partitions, 1 process on 1 core": 3000,
                "orders flow, 4 partitions, 2 processes on 1 core each": 3000,
            }
            if pinned
            else {}
        ),
        "orders flow, 2x events, 1 process": 6000,
        "ingest ceiling, 2x events": 6000,
        "baseline read_json, 2x events (1 process)": 6000,
    }
    for run in runs.values():
        assert run["events_per_second"] > 0
        assert run["peak_rss_mib"] >= run["late_rss_mib"] > 0
    flow, baseline = (
        runs["orders flow, 2 partitions, 1 process"],
        runs["baseline read_json (1 process)"],
    )
    expected = round(flow["events_per_second"] / baseline["events_per_second"], 2)
    assert ratios["flow / read_json baseline"] == expected
    scaled = runs["orders flow, 2x events, 1 process"]
    expected = round(scaled["late_rss_mib"] / flow["late_rss_mib"], 2)
    assert ratios["2x late RSS / 1x late RSS"] == expected
    assert set(ratios) == {
        "flow / read_json baseline",
        "2 processes / 1 process (4 partitions)",
        "announcements on / off (events/s)",
        "S3 lake / local disk (events/s)",
        "S3 lake / local disk (peak RSS)",
        *(["2 processes / 1 process, 1 core each (4 partitions)"] if pinned else []),
        "2x events/s / 1x events/s",
        "ingest ceiling 2x / 1x",
        "flow / read_json baseline at 2x events",
        "2x peak RSS / 1x peak RSS",
        "2x late RSS / 1x late RSS",
    }
    s3 = runs["orders flow, 2 partitions, 1 process, lake in S3 (moto)"]
    expected = round(s3["events_per_second"] / flow["events_per_second"], 2)
    assert ratios["S3 lake / local disk (events/s)"] == expected
    for run in (flow, s3, scaled):
        assert run["commit_p99_ms"] >= run["commit_p50_ms"] > 0
    assert results["dedupe_bytes_per_remembered_id"] == 32


def test_the_workflow_scenario_finishes_every_order_and_reports_the_broker_share(
    tmp_path: Path,
) -> None:
    console = Console(file=io.StringIO())
    with EmbeddedBroker() as broker:
        router = run_router_bench(console, broker, tmp_path, events=400)
        workflow = run_workflow_bench(
            console,
            broker,
            tmp_path,
            orders=50,
            store_url=f"sqlite:///{tmp_path / 's.db'}",
            label="sqlite",
        )
    assert router["events"] == 400
    assert router["copies"] > router["events"]  # most events have more than one target
    assert router["broker_cpu_us_per_event"] > 0
    # run_workflow_bench raises unless every order finished; 8 handler events each.
    assert workflow["orders"] == 50
    assert workflow["handled_events"] == 8 * 50
    assert workflow["broker_cpu_ms_per_order"] > 0
    # The checkout, what the handlers published and the router's copies of it.
    assert workflow["records_per_order"] > 1 + 7
