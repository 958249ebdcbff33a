"""``make demo``: the whole pipeline on a laptop, start to finish, in one command."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from rich.console import Console

from connectors.embedded_broker import EmbeddedBroker, create_topics, stream_topics
from streambatch.errors import StreambatchError
from streambatch.flow_runner import run_flow_to_end

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
# The workflow has settled when router and workers were all idle this long at once.
_WORKFLOW_QUIET_SECONDS = 3.0


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
    from sinks.duckdb import connect, render_table, run_report
    from streambatch.dead_letter_tools import inspect_dead_letters
    from streambatch.generator import generate_stream_records, produce_records

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
        _run_workflow(console, connection, data_dir)
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
        console.rule("[bold]DuckDB report over the lake")
        with connect(data_dir) as conn:
            for report, params in DEMO_REPORTS:
                columns, rows = run_report(conn, report, params)
                console.print(render_table(columns, rows, title=report))
    console.print(
        f"Lake: {data_dir / 'lake'}. Try: .venv/bin/streambatch query --data-dir {data_dir} "
        '"SELECT event_type, count(*) FROM clicks GROUP BY 1"'
    )


def _run_workflow(console: Console, connection: dict[str, str], data_dir: Path) -> None:
    """Router and every worker of config/handlers.toml, in this process, until settled."""
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
            )
        finally:
            handler_logs.setLevel(level)
    processed = sum(counts.processed for counts in result.workers.values())
    retried = sum(counts.retried for counts in result.workers.values())
    dead = sum(counts.dead_lettered for counts in result.workers.values())
    routed = sum(result.router.published.values()) if result.router else 0
    console.print(
        f"3. order workflow: router sent {routed:,} copies to the handlers' topics; "
        f"{len(result.workers)} workers handled {processed:,} events ({retried:,} retries, "
        f"{dead:,} dead-lettered: the malformed checkouts) and published every step to "
        f"orders in {time.monotonic() - started:.1f} s"
    )
