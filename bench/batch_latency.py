"""Time from a batch's commit to its batch handler's call, with the flow and handler both live.

A batch worker (in a thread of this process) joins its group first; then the
orders flow runs to the end of a topic with small batches, announcing each
commit; the handler records, per batch, the time from the batch's
``committed_at`` (taken just before its Delta commit) to the moment it is
called with the batch's rows (read from the lake first). Percentiles are over
every batch of the run.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from deltalake import DeltaTable

from flows.runner import run_flow_to_end
from foundation.errors import StreambatchError
from handlers.batch.runtime import BatchContext, batch_plan
from handlers.batch.worker import build_batch_worker
from handlers.config import HandlersConfig
from handlers.store import open_store
from sinks.batch_announcements import BatchAnnouncement
from sinks.lake_location import lake_in

__all__ = ["DelayRecorder", "measure_batch_delay"]

_REPO_ROOT = Path(__file__).resolve().parent.parent
_delays: list[float] = []


class DelayRecorder:
    """A batch handler that records how long after its commit each batch reached it."""

    ddl: ClassVar[Sequence[str]] = ()

    def __init__(self, options: Mapping[str, Any]) -> None:
        del options

    def handle(self, batch: BatchAnnouncement, rows: pa.Table, context: BatchContext) -> None:
        """Record ``now - committed_at``."""
        _delays.append((context.now() - batch.committed_at).total_seconds())


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure_batch_delay(
    bootstrap_servers: str, topic: str, scratch: Path, *, window_bytes: int = 1 << 20
) -> dict[str, Any]:
    """Run the flow on ``topic`` with a live batch handler; delay percentiles in seconds."""
    _delays.clear()
    data_dir = scratch / "batch-delay"
    config = HandlersConfig.model_validate(
        {
            "batch_handlers": {
                "bench-delay": {
                    "stream": "orders",
                    "handler": "bench.batch_latency:DelayRecorder",
                    "topic": f"{topic}.batches",
                    "group_id": f"bench-delay-{time.time_ns()}",
                    "start_from": "latest",
                }
            }
        }
    )
    store = open_store(f"sqlite:///{scratch / 'batch-delay-state.db'}")
    plan = batch_plan(config, "bench-delay", lake_in(data_dir))
    worker = build_batch_worker(plan, store, {"bootstrap.servers": bootstrap_servers})
    worker.prepare()
    thread = threading.Thread(target=worker.run, name="bench-batch-worker", daemon=True)
    thread.start()
    try:
        if not worker.ready.wait(120):
            raise StreambatchError("the bench's batch worker got no assignment in 120 s")
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "STREAMBATCH_ORDERS_TOPIC": topic,
            "STREAMBATCH_DATA_DIR": str(data_dir),
            "STREAMBATCH_LOG_LEVEL": "WARNING",
            "STREAMBATCH_WINDOW_BYTES": str(window_bytes),
        }
        run = run_flow_to_end("orders", env, cwd=_REPO_ROOT)
        if run.returncode != 0:
            raise StreambatchError(f"the flow of the batch-delay run failed:\n{run.stderr_tail}")
        committed = DeltaTable(str(data_dir / "lake" / "batches")).to_pyarrow_dataset().count_rows()
        deadline = time.monotonic() + 120
        while len(_delays) < committed and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
        thread.join(60)
        store.close()
    if not _delays:
        raise StreambatchError("the batch handler was never called")
    return {
        "batches": len(_delays),
        "p50_seconds": round(_percentile(_delays, 0.50), 3),
        "p99_seconds": round(_percentile(_delays, 0.99), 3),
        "max_seconds": round(max(_delays), 3),
        "mean_seconds": round(statistics.fmean(_delays), 3),
    }
