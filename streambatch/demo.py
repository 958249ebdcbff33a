"""``make demo``: the whole pipeline on a laptop, start to finish, in one command."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console

from connectors.embedded_broker import EmbeddedBroker, create_topics
from streambatch.errors import StreambatchError
from streambatch.flow_runner import run_flow_to_end

__all__ = ["DEMO_REPORTS", "run_demo"]

DEMO_REPORTS = ("orders_per_window", "payment_failures", "dead_letters", "batches")
_REPO_ROOT = Path(__file__).resolve().parent.parent


def _fresh_data_dir(data_dir: Path) -> None:
    """Empty the demo's lake; refuse a directory that is not a streambatch one."""
    if data_dir.exists():
        unknown = [p.name for p in data_dir.iterdir() if p.name not in ("lake",)]
        if unknown:
            raise StreambatchError(
                f"{data_dir} holds files that are not a streambatch lake ({unknown[:3]}); "
                "choose another --data-dir"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)


def run_demo(console: Console, *, events: int, data_dir: Path) -> None:
    """Broker up, topics made, events produced, flow run to the end, report printed.

    The broker keeps data in memory, so each demo starts from empty topics and
    an empty lake (a lake's fences only make sense for the topics it read).
    """
    from sinks.duckdb import connect, render_table, run_report
    from streambatch.dead_letter_tools import inspect_dead_letters
    from streambatch.generator import generate_order_records, produce_records

    data_dir = data_dir.resolve()
    _fresh_data_dir(data_dir)
    console.rule("[bold]streambatch demo")
    with EmbeddedBroker(log_file=data_dir / "broker.log") as broker:
        connection = {"bootstrap.servers": broker.bootstrap_servers}
        create_topics(broker.bootstrap_servers, ["orders", "orders.dlq"], partitions=3)
        console.print(f"1. embedded Kafka broker on {broker.bootstrap_servers}, topic orders x3")
        records = generate_order_records(
            events, seed=42, duplicate_ratio=0.02, malformed_ratio=0.01
        )
        report = produce_records(
            records, producer_config=connection, topic="orders", progress=None, total=events
        )
        console.print(
            f"2. produced {report.delivered} order events (about 2 % re-sent duplicates, "
            "1 % malformed)"
        )
        console.print("3. python -m bytewax.run flows.orders (to the end of the topic) ...")
        started = time.monotonic()
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "STREAMBATCH_DATA_DIR": str(data_dir),
            # Small batches so that the demo shows several per partition.
            "STREAMBATCH_WINDOW_BYTES": str(256 * 1024),
        }
        with console.status("flow running"):
            run = run_flow_to_end("orders", env, cwd=_REPO_ROOT)
        if run.returncode != 0:
            console.print(run.stderr_tail)
            raise StreambatchError(f"the orders flow failed with exit code {run.returncode}")
        console.print(
            f"   done in {time.monotonic() - started:.1f} s, "
            f"peak RSS {run.peak_rss_bytes / 2**20:.0f} MiB"
        )
        letters = inspect_dead_letters(connection, "orders.dlq", limit=3)
        console.print(f"4. {letters.total} dead letters in orders.dlq (original bytes + headers)")
        console.rule("[bold]DuckDB report over the lake")
        with connect(data_dir) as conn:
            for name in DEMO_REPORTS:
                params = {"limit": "12"} if name == "orders_per_window" else {}
                columns, rows = run_report(conn, name, params)
                console.print(render_table(columns, rows, title=name))
    console.print(
        f"Lake: {data_dir / 'lake'}. Try: .venv/bin/streambatch query --data-dir {data_dir} "
        '"SELECT event_type, count(*) FROM orders GROUP BY 1"'
    )
