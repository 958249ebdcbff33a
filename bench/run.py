"""``streambatch bench``: the orders flow against a hand-written baseline, same workload.

Numbers, not assertions. events/s for the flow is measured from the first
record read (the first batch's ``opened_at``) to the last batch committed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from deltalake import DeltaTable
from rich.console import Console
from rich.table import Table

from connectors.embedded_broker import EmbeddedBroker, create_topics
from streambatch.errors import StreambatchError
from streambatch.flow_runner import PeakRssMonitor, run_flow_to_end
from streambatch.generator import generate_order_records, produce_records

__all__ = ["run_benchmarks"]

_REPO_ROOT = Path(__file__).resolve().parent.parent
_PARTITIONS = 2


def _flow_rate(data_dir: Path) -> tuple[int, float]:
    """Input records and seconds from first read to last commit, from ``batches``."""
    batches = DeltaTable(str(data_dir / "lake" / "batches")).to_pyarrow_dataset().to_table()
    records = int(pc.sum(batches.column("input_records")).as_py())
    first: datetime = pc.min(batches.column("opened_at")).as_py()
    last: datetime = pc.max(batches.column("committed_at")).as_py()
    return records, (last - first).total_seconds()


def _run_baseline(bootstrap: str, topic: str, out_dir: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.baseline", bootstrap, topic, str(_PARTITIONS)]
    with subprocess.Popen(
        [*command, str(out_dir)], cwd=_REPO_ROOT, stdout=subprocess.PIPE
    ) as process:
        monitor = PeakRssMonitor(process.pid)
        monitor.start()
        assert process.stdout is not None
        output = process.stdout.read()
        process.wait()
        monitor.stop()
    if process.returncode != 0:
        raise StreambatchError(f"baseline failed with exit code {process.returncode}")
    result: dict[str, Any] = json.loads(output)
    result["peak_rss_mib"] = monitor.peak_bytes / 2**20
    return result


def run_benchmarks(console: Console, *, events: int) -> dict[str, Any]:
    """Produce ``events`` order events once; run the baseline and the flow over them."""
    results: dict[str, Any] = {"events": events, "partitions": _PARTITIONS}
    with (
        tempfile.TemporaryDirectory(prefix="streambatch-bench-") as scratch,
        EmbeddedBroker() as broker,
    ):
        root = Path(scratch)
        topic = "bench-orders"
        create_topics(broker.bootstrap_servers, [topic, f"{topic}.dlq"], _PARTITIONS)
        connection = {"bootstrap.servers": broker.bootstrap_servers}
        records = generate_order_records(events, seed=1, duplicate_ratio=0.01, malformed_ratio=0.0)
        report = produce_records(records, producer_config=connection, topic=topic, total=events)
        results["produce_events_per_second"] = round(report.delivered / report.seconds)
        console.print(f"produced at {results['produce_events_per_second']:,} events/s")

        baseline = _run_baseline(broker.bootstrap_servers, topic, root / "baseline")
        results["baseline"] = {
            "events_per_second": round(baseline["events_per_second"]),
            "peak_rss_mib": round(baseline["peak_rss_mib"]),
        }
        console.print(f"baseline: {results['baseline']}")

        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "STREAMBATCH_ORDERS_TOPIC": topic,
            "STREAMBATCH_DATA_DIR": str(root / "flow"),
        }
        with console.status("orders flow running"):
            run = run_flow_to_end("orders", env, cwd=_REPO_ROOT)
        if run.returncode != 0:
            raise StreambatchError(f"orders flow failed:\n{run.stderr_tail}")
        processed, seconds = _flow_rate(root / "flow")
        results["flow"] = {
            "events_per_second": round(processed / seconds),
            "peak_rss_mib": round(run.peak_rss_bytes / 2**20),
            "records": processed,
        }
        results["flow_vs_baseline"] = round(
            results["flow"]["events_per_second"] / results["baseline"]["events_per_second"], 2
        )
    table = Table(title=f"{events:,} order events, {_PARTITIONS} partitions, embedded broker")
    for column in ("consumer", "events/s", "peak RSS (MiB)"):
        table.add_column(column, justify="right")
    table.add_row(
        "hand-written read_json baseline",
        f"{results['baseline']['events_per_second']:,}",
        str(results["baseline"]["peak_rss_mib"]),
    )
    table.add_row(
        "orders flow (validate, dedupe, exactly-once Delta)",
        f"{results['flow']['events_per_second']:,}",
        str(results["flow"]["peak_rss_mib"]),
    )
    console.print(table)
    console.print(f"flow / baseline = {results['flow_vs_baseline']}")
    return results
