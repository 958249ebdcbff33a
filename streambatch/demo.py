"""``make demo``: the whole pipeline on a laptop, start to finish, in one command."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    import duckdb

    from handlers.batch.rollup import RollupRow
    from handlers.config import HandlersConfig

from connectors.embedded_broker import EmbeddedBroker, create_topics, stream_topics
from flows.runner import run_flow_to_end
from foundation.errors import StreambatchError
from sinks.lake_location import lake_in

__all__ = ["DEMO_REPORTS", "run_demo"]

DEMO_REPORTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("orders_per_window", {"limit": "9"}),
    ("order_workflow", {}),
    ("payment_failures", {}),
    ("click_funnel", {"limit": "6"}),
    ("top_failing_services", {}),
    ("dead_letters", {}),
    ("batches", {}),
)
_REPO_ROOT = Path(__file__).resolve().parent.parent
# The workflow has settled when router and workers were all settled this long at once.
_WORKFLOW_QUIET_SECONDS = 3.0
# A workflow that has not settled by then has a problem: say so instead of going on.
_WORKFLOW_SETTLE_TIMEOUT_SECONDS = 600.0


def _fresh_data_dir(data_dir: Path) -> None:
    """Empty the demo's lake; refuse a directory that is not a streambatch one."""
    if data_dir.exists():
        ours = ("lake", "handlers", "broker.log")
        unknown = [p.name for p in data_dir.iterdir() if p.name not in ours]
        if unknown:
            raise StreambatchError(
                f"{data_dir} holds files that are not a streambatch lake ({unknown[:3]}); "
                "choose another --data-dir"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)


def run_demo(console: Console, *, events: int, data_dir: Path) -> None:
    """Broker up, topics made, events produced, three flows run to the end, report printed.

    The broker keeps data in memory, so each demo starts from empty topics and
    an empty lake (a lake's fences only make sense for the topics it read).
    """
    from generator import generate_stream_records, produce_records
    from sinks.duckdb import connect, run_report
    from streambatch.dead_letter_tools import inspect_dead_letters
    from streambatch.tables import render_table

    data_dir = data_dir.resolve()
    _fresh_data_dir(data_dir)
    console.rule("[bold]streambatch demo")
    with EmbeddedBroker(log_file=data_dir / "broker.log") as broker:
        connection = {"bootstrap.servers": broker.bootstrap_servers}
        topics = stream_topics()
        create_topics(broker.bootstrap_servers, topics, partitions=3)
        console.print(
            f"1. embedded Kafka broker on {broker.bootstrap_servers}: orders, clicks, logs (x3)"
        )
        # Checkouts only: the workflow handlers below make the rest of each order.
        streams = generate_stream_records(
            events, seed=42, duplicate_ratio=0.02, malformed_ratio=0.01, checkouts_only=True
        )
        for name, records in streams.items():
            produce_records(records, producer_config=connection, topic=name, progress=False)
        counts = ", ".join(f"{len(records):,} {name}" for name, records in streams.items())
        console.print(
            f"2. produced {counts} (orders are checkouts; about 2 % re-sent duplicates, "
            "1 % malformed)"
        )
        checkouts = len(streams.get("orders", []))
        _run_workflow(console, connection, data_dir, checkouts)
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "STREAMBATCH_DATA_DIR": str(data_dir),
            # Small batches so that the demo shows several per partition.
            "STREAMBATCH_WINDOW_BYTES": str(256 * 1024),
        }
        for name in streams:
            started = time.monotonic()
            with console.status(f"python -m bytewax.run flows.{name}"):
                run = run_flow_to_end(name, env, cwd=_REPO_ROOT)
            if run.returncode != 0:
                console.print(run.stderr_tail)
                raise StreambatchError(f"flows.{name} failed with exit code {run.returncode}")
            letters = inspect_dead_letters(connection, f"{name}.dlq", limit=0)
            console.print(
                f"4. python -m bytewax.run flows.{name}: done in "
                f"{time.monotonic() - started:.1f} s, peak RSS "
                f"{run.peak_rss_bytes / 2**20:.0f} MiB, {letters.total} dead letters in {name}.dlq"
            )
        rollup = _run_batch_handlers(console, connection, data_dir)
        console.rule("[bold]DuckDB report over the lake")
        with connect(data_dir) as conn:
            for report, params in DEMO_REPORTS:
                columns, rows = run_report(conn, report, params)
                console.print(render_table(columns, rows, title=report))
            _compare_rollup(console, conn, rollup)
    console.print(
        f"Lake: {data_dir / 'lake'}. Try: .venv/bin/streambatch query --data-dir {data_dir} "
        '"SELECT event_type, count(*) FROM clicks GROUP BY 1"'
    )


def _run_workflow(
    console: Console, connection: dict[str, str], data_dir: Path, checkouts: int
) -> None:
    """Router and every worker of config/handlers.toml, in this process, until settled.

    Raises:
        StreambatchError: the workflow did not settle, or settled without
            having read the checkouts (one line, the CLI exits non-zero).
    """
    from handlers.config import load_handlers_config
    from handlers.service import run_workers

    config = load_handlers_config(_REPO_ROOT / "config" / "handlers.toml")
    store_url = f"sqlite:///{data_dir / 'handlers' / 'state.db'}"
    started = time.monotonic()
    # Each dead letter is logged as a warning; the demo sums them up in one line instead.
    handler_logs = logging.getLogger("handlers")
    level = handler_logs.level
    handler_logs.setLevel(logging.ERROR)
    with console.status("streambatch worker --all --with-router (the order workflow)"):
        try:
            result = run_workers(
                sorted(config.workers),
                config,
                connection,
                store_url,
                with_router=True,
                until_idle_seconds=_WORKFLOW_QUIET_SECONDS,
                settle_timeout_seconds=_WORKFLOW_SETTLE_TIMEOUT_SECONDS,
            )
        finally:
            handler_logs.setLevel(level)
    router_read = result.router.events if result.router else 0
    if router_read < checkouts:
        raise StreambatchError(
            f"the order workflow did not settle: the router read {router_read:,} events, "
            f"fewer than the {checkouts:,} checkouts produced"
        )
    processed = sum(counts.processed for counts in result.workers.values())
    retried = sum(counts.retried for counts in result.workers.values())
    dead = sum(counts.dead_lettered for counts in result.workers.values())
    routed = sum(result.router.published.values()) if result.router else 0
    invalid = (result.router.invalid + result.router.unreadable) if result.router else 0
    console.print(
        f"3. order workflow: router sent {routed:,} copies to the handlers' topics; "
        f"{len(result.workers)} workers handled {processed:,} events ({retried:,} retries, "
        f"{dead:,} dead-lettered) and published every step to orders in "
        f"{time.monotonic() - started:.1f} s; the router dead-lettered "
        f"{invalid:,} malformed checkouts once each"
    )


def _run_batch_handlers(
    console: Console, connection: dict[str, str], data_dir: Path
) -> list[RollupRow]:
    """The batch handlers of config/handlers.toml over the flows' batches; the rollup's rows.

    HTTP deliveries go to an endpoint this process serves.
    """
    from handlers.batch.receiver import BatchEndpoint
    from handlers.batch.rollup import read_rollup
    from handlers.config import load_handlers_config
    from handlers.service import run_workers
    from handlers.store import open_store

    config = load_handlers_config(_REPO_ROOT / "config" / "handlers.toml")
    store_url = f"sqlite:///{data_dir / 'handlers' / 'state.db'}"
    started = time.monotonic()
    with BatchEndpoint() as endpoint:
        config = _deliver_to(config, endpoint.url)
        with console.status("streambatch worker orders-rollup orders-delivery (batch handlers)"):
            result = run_workers(
                [],
                config,
                connection,
                store_url,
                until_idle_seconds=_WORKFLOW_QUIET_SECONDS,
                batch_handlers=sorted(config.batch_handlers),
                lake=lake_in(data_dir),
            )
    handled = ", ".join(
        f"{name} {counts.processed} batches" for name, counts in result.batch_handlers.items()
    )
    console.print(
        f"5. batch handlers: {handled}; {len(endpoint.batches)} batches "
        f"({endpoint.rows:,} rows, gzip JSON lines) POSTed to {endpoint.url} "
        f"in {time.monotonic() - started:.1f} s"
    )
    with open_store(store_url) as store:
        return read_rollup(store)


def _deliver_to(config: HandlersConfig, url: str) -> HandlersConfig:
    """``config`` with every HTTP delivery pointed at ``url``."""
    handlers = {
        name: (
            settings.model_copy(update={"options": {**settings.options, "url": url, "url_env": ""}})
            if settings.handler == "batch.http-delivery"
            else settings
        )
        for name, settings in config.batch_handlers.items()
    }
    return config.model_copy(update={"batch_handlers": handlers})


def _compare_rollup(
    console: Console, conn: duckdb.DuckDBPyConnection, rollup: list[RollupRow]
) -> None:
    """Print the rollup next to DuckDB's report; raise if they differ anywhere."""
    from sinks.duckdb import run_report
    from streambatch.tables import render_table

    columns, rows = run_report(conn, "orders_per_window", {"limit": "1000000"})
    report = {
        (row["window_start"], row["currency"]): (row["orders"], row["revenue"])
        for row in (dict(zip(columns, values, strict=True)) for values in rows)
    }
    kept = {(row.window_start, row.currency): (row.orders, row.revenue) for row in rollup}
    keys = sorted(report.keys() | kept.keys())
    shown = [
        (
            start,
            currency,
            *report.get((start, currency), (None, None)),
            *kept.get((start, currency), (None, None)),
        )
        for start, currency in keys[:9]
    ]
    console.print(
        render_table(
            [
                "window_start",
                "currency",
                "orders (DuckDB)",
                "revenue (DuckDB)",
                "orders (rollup)",
                "revenue (rollup)",
            ],
            shown,
            title="orders_per_window: DuckDB over the lake vs the batch handler's rollup",
        )
    )
    differing = [key for key in keys if report.get(key) != kept.get(key)]
    if differing:
        raise StreambatchError(
            f"the rollup differs from the DuckDB report in {len(differing)} of {len(keys)} "
            f"windows, first {differing[0]}: {report.get(differing[0])} vs {kept.get(differing[0])}"
        )
    console.print(
        f"6. the rollup equals the DuckDB report: {len(keys)} windows x currencies, "
        f"{sum(n for n, _ in kept.values()):,} orders, exact decimals"
    )
