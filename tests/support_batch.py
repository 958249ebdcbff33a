"""Batch handlers for tests, and helpers to run batch workers against a test's topics."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from foundation.errors import TransientError
from handlers.batch.rollup import read_rollup
from handlers.batch.runtime import BatchContext
from handlers.config import HandlersConfig
from handlers.service import ServiceResult, run_workers
from handlers.store import open_store
from sinks.batch_announcements import BatchAnnouncement, batch_id
from sinks.duckdb import connect, run_report
from sinks.lake_location import LakeLocation, lake_in
from tests.support import StreamTopics, lake_table

CALLS_TABLE = "test_batch_calls"


class RecordingBatchHandler:
    """Records every call (batch id, rows, event ids); fails the first ``failures`` tries."""

    ddl: ClassVar[Sequence[str]] = (
        f"""CREATE TABLE IF NOT EXISTS {CALLS_TABLE} (
            handler TEXT NOT NULL,
            batch_id TEXT NOT NULL,
            announced_rows BIGINT NOT NULL,
            event_ids TEXT NOT NULL
        )""",
    )

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.failures = int(options.get("failures", 0))
        self.fixed_flag = Path(options["fixed_flag"]) if "fixed_flag" in options else None
        self.tries: dict[str, int] = {}

    def handle(self, batch: BatchAnnouncement, rows: pa.Table, context: BatchContext) -> None:
        tries = self.tries[batch.batch_id] = self.tries.get(batch.batch_id, 0) + 1
        if tries <= self.failures:
            raise TransientError(f"try {tries} of {batch.batch_id} fails on purpose")
        if self.fixed_flag is not None and not self.fixed_flag.exists():
            raise RuntimeError(f"broken until {self.fixed_flag} exists")
        context.transaction.execute(
            f"INSERT INTO {CALLS_TABLE} (handler, batch_id, announced_rows, event_ids) "
            "VALUES (?, ?, ?, ?)",
            (
                context.handler,
                batch.batch_id,
                batch.rows,
                json.dumps(rows.column("event_id").to_pylist()),
            ),
        )


def handlers_config(
    topics: StreamTopics, handlers: Mapping[str, Mapping[str, Any]], **retry: Any
) -> HandlersConfig:
    """A handlers file of batch handlers only, on this test's batches topic."""
    return HandlersConfig.model_validate(
        {
            "retry": retry
            or {"attempts": 4, "base_delay_seconds": 0.01, "max_delay_seconds": 0.05},
            "batch_handlers": {
                name: {
                    "stream": "orders",
                    "topic": f"{topics.name}.batches",
                    "group_id": f"{topics.name}-{name}",
                    "dead_letter_topic": f"{topics.name}.{name}.dlq",
                    **handler,
                }
                for name, handler in handlers.items()
            },
        }
    )


def run_batch_handlers(
    topics: StreamTopics,
    config: HandlersConfig,
    store_url: str,
    data_dir: Path | LakeLocation,
    until_idle_seconds: float = 3.0,
) -> ServiceResult:
    """Run every batch handler of ``config`` on a data directory's lake (or any lake)
    until all were idle that long."""
    return run_workers(
        [],
        config,
        {"bootstrap.servers": topics.bootstrap_servers},
        store_url,
        until_idle_seconds=until_idle_seconds,
        batch_handlers=sorted(config.batch_handlers),
        lake=lake_in(data_dir),
    )


def rollup_rows(store_url: str) -> list[tuple[Any, ...]]:
    """The rollup handler's table: (window start, currency, orders, revenue)."""
    with open_store(store_url) as store:
        return [(r.window_start, r.currency, r.orders, r.revenue) for r in read_rollup(store)]


def report_rows(data_dir: Path | LakeLocation) -> list[tuple[Any, ...]]:
    """DuckDB's ``orders_per_window`` over the lake: (window start, currency, orders, revenue)."""
    with connect(lake_in(data_dir)) as conn:
        columns, rows = run_report(conn, "orders_per_window", {"limit": "100000"})
    named = [dict(zip(columns, row, strict=True)) for row in rows]
    return [(r["window_start"], r["currency"], r["orders"], r["revenue"]) for r in named]


def manifest_batch_ids(data_dir: Path) -> set[str]:
    """Batch ids of every row of the lake's ``batches`` manifest."""
    return {
        batch_id(r["stream"], r["topic"], r["partition"], r["first_offset"], r["next_offset"])
        for r in lake_table(data_dir, "batches").to_pylist()
    }


class BatchReceiver:
    """An HTTP endpoint in a thread: keeps every POST; answers 503 to the first ``refusals``."""

    def __init__(self, refusals: int = 0) -> None:
        self.posts: list[tuple[dict[str, str], list[dict[str, Any]]]] = []
        self.refusals = refusals
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    if receiver.refusals > 0:
                        receiver.refusals -= 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    assert self.headers["Content-Encoding"] == "gzip"
                    lines = gzip.decompress(body).decode().splitlines()
                    receiver.posts.append(
                        (dict(self.headers.items()), [json.loads(line) for line in lines])
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/batches"


@contextmanager
def batch_receiver(refusals: int = 0) -> Iterator[BatchReceiver]:
    """A :class:`BatchReceiver` serving for the block."""
    receiver = BatchReceiver(refusals)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
