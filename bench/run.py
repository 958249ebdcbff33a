"""``streambatch bench``: the orders flow against hand-written baselines, same workload.

Numbers, not assertions. For the flow, events/s is measured from the first
record read (the first batch's ``opened_at``) to the last batch committed;
for the baselines, from the first record read to the last file written. Peak
RSS is the kernel's high-water mark (``VmHWM``) of the measured processes;
late RSS the median resident size over the second half of the run (steady
state: if memory grew with the events read, it would show here).

Scenarios (one embedded broker, events produced once per topic):
1. ``events`` order events (~300 B, 1 % duplicates) on 2 partitions: the
   ingest ceiling (consume and count), both baselines and the flow in one
   process; ratio flow / read_json baseline.
2. The same on 4 partitions: the flow in 1 process and in 2 processes; and
   again with each process pinned to a core of its own (1 process on 1 core,
   2 processes on 1 core each): one process's threads keep more than one core
   busy, so on a 2-core machine the unpinned pair can only add what the
   single process left idle; the pinned pair shows how processes scale when
   each gets a free core.
3. The flow of 1. again with batch announcements off (ratio on / off), and a
   batch handler's delay from commit to call (p50, p99; see bench.batch_latency).
4. The flow of scenario 1 with its lake in an S3 bucket (moto's server over
   HTTP on this machine): events/s and peak RSS beside the same run on local
   disk. Every flow run also reports its commit latency (p50, p99: from the
   batch record being built to its Delta commit's timestamp, so writing the
   files and the commit itself).
5. With ``scale`` > 1: the flow at ``scale`` x the events, to show the cost
   per event stays flat (events/s, peak and late RSS compared with scenario
   1); the ingest ceiling on the same topic (the broker serves the larger
   topic at least as fast: 1.15 x in the README's run); and the
   read_json baseline, whose set of seen ids grows with the run (its rate
   and memory do not stay flat; the flow's index is bounded by its horizon).
6. With ``workflow_orders`` > 0: the order workflow (``bench/workflow.py``):
   the router alone, then ``workflow_orders`` checkouts through
   ``streambatch worker --all --with-router`` on SQLite and on PostgreSQL,
   each also with the router and every worker in a process of its own.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from bench.batch_latency import measure_batch_delay
from bench.object_store import moto_lake
from connectors.embedded_broker import EmbeddedBroker, create_topics
from flows.runner import PeakRssMonitor, run_flow_to_end
from foundation.errors import StreambatchError
from generator import generate_order_records, produce_records
from sinks.dedupe import BYTES_PER_ID
from sinks.delta_log import commit_info
from sinks.lake_location import LakeLocation, resolve_lake_location

__all__ = ["run_benchmarks"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _children_cpu_seconds() -> float:
    """User + system CPU of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _flow_rate(lake: LakeLocation) -> tuple[int, float, float, float]:
    """Input records, seconds from first read to last commit, commit latency p50 and p99 (ms).

    From ``batches``; a batch's commit latency runs from its record's
    ``committed_at`` (set just before the files are written) to the
    timestamp of its Delta commit (``lake_version``).
    """
    batches = lake.table("batches").open().to_pyarrow_dataset().to_table()
    records = int(pc.sum(batches.column("input_records")).as_py())
    first: datetime = pc.min(batches.column("opened_at")).as_py()
    last: datetime = pc.max(batches.column("committed_at")).as_py()
    orders = lake.table("orders")
    latencies = []
    for started, version in zip(
        batches.column("committed_at").to_pylist(),
        batches.column("lake_version").to_pylist(),
        strict=True,
    ):
        info = commit_info(orders, int(version))
        if info is not None and "timestamp" in info:
            latencies.append(int(info["timestamp"]) - started.timestamp() * 1000)
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (0.0, 0.0)
    return records, (last - first).total_seconds(), float(p50), float(p99)


class _Bench:
    """One broker, topics produced on demand, measurements collected as rows."""

    def __init__(self, console: Console, broker: EmbeddedBroker, scratch: Path) -> None:
        self.console = console
        self.broker = broker
        self.scratch = scratch
        self._wall_start = time.monotonic()
        self._children_start = 0.0
        self._broker_start = 0.0
        self.results: dict[str, Any] = {}

    def topic(self, name: str, partitions: int, events: int) -> str:
        topics = [name, f"{name}.dlq", f"{name}.batches"]
        create_topics(self.broker.bootstrap_servers, topics, partitions)
        records = generate_order_records(events, seed=1, duplicate_ratio=0.01, malformed_ratio=0.0)
        report = produce_records(
            records,
            producer_config={"bootstrap.servers": self.broker.bootstrap_servers},
            topic=name,
            total=events,
        )
        self.console.print(
            f"{name}: {report.delivered:,} events on {partitions} partitions "
            f"(produced at {report.delivered / report.seconds:,.0f}/s)"
        )
        return name

    def baseline(self, key: str, mode: str, topic: str, partitions: int) -> dict[str, Any]:
        out_dir = self.scratch / key
        command = [sys.executable, "-m", "bench.baseline", mode]
        command += [self.broker.bootstrap_servers, topic, str(partitions), str(out_dir)]
        self._cpu_start()
        with subprocess.Popen(command, cwd=_REPO_ROOT, stdout=subprocess.PIPE) as process:
            monitor = PeakRssMonitor([process.pid])
            monitor.start()
            assert process.stdout is not None
            output = process.stdout.read()
            process.wait()
            monitor.stop()
        if process.returncode != 0:
            raise StreambatchError(f"baseline {mode} failed with exit code {process.returncode}")
        measured: dict[str, Any] = json.loads(output)
        return self._record(
            key,
            int(measured["events"]),
            measured["seconds"],
            monitor.peak_bytes,
            monitor.late_bytes(),
        )

    def flow(
        self,
        key: str,
        topic: str,
        processes: int = 1,
        *,
        one_core_each: bool = False,
        announce: bool = True,
        lake_env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Run the orders flow; ``lake_env``: the variables of a lake elsewhere (a bucket)."""
        data_dir = self.scratch / key
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
            "STREAMBATCH_ORDERS_TOPIC": topic,
            "STREAMBATCH_DATA_DIR": str(data_dir),
            "STREAMBATCH_LOG_LEVEL": "WARNING",
            "STREAMBATCH_ANNOUNCE_BATCHES": str(announce).lower(),
            **(lake_env or {}),
        }
        self._cpu_start()
        with self.console.status(f"{key} running"):
            run = run_flow_to_end(
                "orders", env, cwd=_REPO_ROOT, processes=processes, one_core_each=one_core_each
            )
        if run.returncode != 0:
            raise StreambatchError(f"{key} failed:\n{run.stderr_tail}")
        lake = resolve_lake_location(env.get("STREAMBATCH_LAKE_URI"), data_dir, env)
        records, seconds, p50, p99 = _flow_rate(lake)
        result = self._record(key, records, seconds, run.peak_rss_bytes, run.late_rss_bytes)
        result["commit_p50_ms"], result["commit_p99_ms"] = round(p50), round(p99)
        self.console.print(f"  {key}: commit latency p50 {p50:.0f} ms, p99 {p99:.0f} ms")
        return result

    def _cpu_start(self) -> None:
        """Mark the CPU counters before a run (see :meth:`_record`)."""
        self._wall_start = time.monotonic()
        self._children_start = _children_cpu_seconds()
        self._broker_start = self.broker.cpu_seconds()

    def _record(
        self, key: str, events: int, seconds: float, peak: int, late: int
    ) -> dict[str, Any]:
        # Cores busy over the whole run (start-up included): the consumer's
        # process tree and the broker, which share this machine's cores.
        wall = time.monotonic() - self._wall_start
        result = {
            "events": events,
            "seconds": round(seconds, 2),
            "events_per_second": round(events / seconds),
            "peak_rss_mib": round(peak / 2**20),
            "late_rss_mib": round(late / 2**20),
            "consumer_cores": round((_children_cpu_seconds() - self._children_start) / wall, 2),
            "broker_cores": round((self.broker.cpu_seconds() - self._broker_start) / wall, 2),
        }
        self.results[key] = result
        self.console.print(f"  {key}: {result}")
        return result


def _ratio(run: dict[str, Any], other: dict[str, Any], measure: str = "events_per_second") -> float:
    """``run``'s measure over ``other``'s, to two decimals."""
    return round(run[measure] / other[measure], 2)


def run_benchmarks(
    console: Console, *, events: int, scale: int = 1, workflow_orders: int = 0
) -> dict[str, Any]:
    """Run the scenarios of the module docstring; return the numbers."""
    from bench.workflow import run_workflow_benchmarks

    with (
        tempfile.TemporaryDirectory(prefix="streambatch-bench-") as scratch,
        EmbeddedBroker() as broker,
    ):
        bench = _Bench(console, broker, Path(scratch))
        two = bench.topic("bench-2p", 2, events)
        ceiling = bench.baseline("ingest ceiling, consume and count", "count", two, 2)
        read_json = bench.baseline("baseline read_json (1 process)", "read_json", two, 2)
        bench.baseline("baseline orjson per event (1 process)", "orjson", two, 2)
        one_process = bench.flow("orders flow, 2 partitions, 1 process", two)
        silent = bench.flow(
            "orders flow, 2 partitions, 1 process, announcements off", two, announce=False
        )
        with moto_lake(Path(scratch)) as lake_env:
            on_s3 = bench.flow(
                "orders flow, 2 partitions, 1 process, lake in S3 (moto)", two, lake_env=lake_env
            )
        four = bench.topic("bench-4p", 4, events)
        on_four = bench.flow("orders flow, 4 partitions, 1 process", four)
        on_four_two = bench.flow("orders flow, 4 partitions, 2 processes", four, processes=2)
        results = bench.results
        results["ratios"] = {
            "flow / read_json baseline": _ratio(one_process, read_json),
            "2 processes / 1 process (4 partitions)": _ratio(on_four_two, on_four),
            "announcements on / off (events/s)": _ratio(one_process, silent),
            "S3 lake / local disk (events/s)": _ratio(on_s3, one_process),
            "S3 lake / local disk (peak RSS)": _ratio(on_s3, one_process, "peak_rss_mib"),
        }
        with console.status("batch handler delay"):
            delay = measure_batch_delay(broker.bootstrap_servers, two, Path(scratch))
        results["batch handler delay"] = delay
        console.print(f"  batch handler delay: {delay}")
        if len(os.sched_getaffinity(0)) >= 2:
            pinned_one = bench.flow(
                "orders flow, 4 partitions, 1 process on 1 core", four, one_core_each=True
            )
            pinned_two = bench.flow(
                "orders flow, 4 partitions, 2 processes on 1 core each",
                four,
                processes=2,
                one_core_each=True,
            )
            results["ratios"]["2 processes / 1 process, 1 core each (4 partitions)"] = _ratio(
                pinned_two, pinned_one
            )
        else:
            console.print("one core only: the pinned scaling runs need two")
        if scale > 1:
            big = bench.topic("bench-scaled", 2, events * scale)
            scaled = bench.flow(f"orders flow, {scale}x events, 1 process", big)
            scaled_ceiling = bench.baseline(f"ingest ceiling, {scale}x events", "count", big, 2)
            scaled_baseline = bench.baseline(
                f"baseline read_json, {scale}x events (1 process)", "read_json", big, 2
            )
            results["ratios"][f"{scale}x events/s / 1x events/s"] = _ratio(scaled, one_process)
            results["ratios"][f"ingest ceiling {scale}x / 1x"] = _ratio(scaled_ceiling, ceiling)
            results["ratios"][f"flow / read_json baseline at {scale}x events"] = _ratio(
                scaled, scaled_baseline
            )
            results["ratios"][f"{scale}x peak RSS / 1x peak RSS"] = _ratio(
                scaled, one_process, "peak_rss_mib"
            )
            results["ratios"][f"{scale}x late RSS / 1x late RSS"] = _ratio(
                scaled, one_process, "late_rss_mib"
            )
        results["dedupe_bytes_per_remembered_id"] = BYTES_PER_ID
    table = Table(title=f"{events:,} order events per run (embedded broker, this machine)")
    table.add_column("run")
    columns = (
        "events",
        "events/s",
        "peak RSS (MiB)",
        "late RSS",
        "cores: consumer",
        "broker",
        "commit p50 / p99 (ms)",
    )
    for column in columns:
        table.add_column(column, justify="right")
    runs = {key: run for key, run in results.items() if isinstance(run, dict) and "events" in run}
    for key, run in runs.items():
        table.add_row(
            key,
            f"{run['events']:,}",
            f"{run['events_per_second']:,}",
            f"{run['peak_rss_mib']}",
            f"{run['late_rss_mib']}",
            f"{run['consumer_cores']:.2f}",
            f"{run['broker_cores']:.2f}",
            f"{run['commit_p50_ms']} / {run['commit_p99_ms']}" if "commit_p50_ms" in run else "",
        )
    console.print(table)
    for name, ratio in results["ratios"].items():
        console.print(f"{name} = {ratio}")
    console.print(f"dedupe memory per remembered event id: {BYTES_PER_ID} bytes")
    delay = results["batch handler delay"]
    console.print(
        f"commit to batch handler call over {delay['batches']} batches: "
        f"p50 {delay['p50_seconds']} s, p99 {delay['p99_seconds']} s"
    )
    if workflow_orders > 0:
        results["workflow"] = run_workflow_benchmarks(
            console, orders=workflow_orders, router_events=workflow_orders * 8
        )
    return results
