"""The order workflow scenario of ``streambatch bench``: router and every worker, end to end.

``orders`` checkouts are produced to a topic of their own, then
``streambatch worker --all --with-router --until-idle`` runs in a child
process, with its state in SQLite or in PostgreSQL (``pgserver``'s embedded
server, when installed); then again with ``streambatch route`` and each
``streambatch worker NAME`` in a process of its own, stopped once the store
shows every order finished. Orders/s is measured from the store, from the first
event a handler claimed to the last one (group joins and the quiet seconds
of ``--until-idle`` left out); the processes' wall time, cores, CPU time
per order and the machine's load average are recorded too. After
each run the store must show every order finished (one payment, a settled
reservation, two customer messages): a fast run that lost work is an error.

The router alone is measured in this process on the same checkouts plus the
rest of the workflow's events (``generate_order_records`` without
``checkouts_only``): events/s from its assignment to its last partition end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from connectors.embedded_broker import EmbeddedBroker, create_topics
from connectors.kafka_clients import end_offsets, new_admin
from foundation.errors import StreambatchError
from generator import generate_order_records, produce_records
from handlers.config import load_handlers_config
from handlers.service import build_router
from handlers.store import Store, open_store

__all__ = ["postgres_server", "run_router_bench", "run_workflow_bench"]

_REPO_ROOT = Path(__file__).resolve().parent.parent
_QUIET_SECONDS = 2.0
_PARTITIONS = 3


def _write_config(scratch: Path, prefix: str) -> Path:
    """The shipped handlers and rules, every topic and group renamed with ``prefix``."""
    import tomllib

    with (_REPO_ROOT / "config" / "handlers.toml").open("rb") as f:
        handlers = tomllib.load(f)
    with (_REPO_ROOT / "config" / "rules.toml").open("rb") as f:
        rules = tomllib.load(f)
    for rule in rules["rules"]:
        rule["targets"] = [f"{prefix}.{t}" for t in rule["targets"]]
    rules_file = scratch / f"{prefix}-rules.json"
    rules_file.write_text(json.dumps(rules))
    for name, worker in handlers["workers"].items():
        worker["topics"] = [f"{prefix}.{t}" for t in worker["topics"]]
        worker["group_id"] = f"{prefix}-{name}"
        worker["dead_letter_topic"] = f"{prefix}.{name}.dlq"
        worker["retry_topic_prefix"] = f"{prefix}.{name}.retry"
    # The scenario is the order workflow: batch handlers (lake announcements) stay out.
    handlers.pop("batch_handlers", None)
    handlers.update(
        rules=str(rules_file),
        source_topics=[prefix],
        publish_topic=prefix,
        router_group=f"{prefix}-router",
        router_dead_letter_topic=f"{prefix}.router.dlq",
    )
    handlers_file = scratch / f"{prefix}-handlers.json"
    handlers_file.write_text(json.dumps(handlers))
    return handlers_file


def _produce(
    console: Console, broker: EmbeddedBroker, topic: str, events: int, *, checkouts_only: bool
) -> int:
    create_topics(broker.bootstrap_servers, [topic], _PARTITIONS)
    records = generate_order_records(
        events, seed=7, duplicate_ratio=0, malformed_ratio=0, checkouts_only=checkouts_only
    )
    report = produce_records(
        records,
        producer_config={"bootstrap.servers": broker.bootstrap_servers},
        topic=topic,
        progress=False,
    )
    console.print(f"{topic}: {report.delivered:,} events on {_PARTITIONS} partitions")
    return int(report.delivered)


def _instant(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _finished(store: Store) -> tuple[int, int, int]:
    """Payments, settled reservations and customer messages in the store now."""
    with store.transaction() as tx:
        payments = tx.query("SELECT COUNT(*) FROM payments")[0][0]
        settled = tx.query(
            "SELECT COUNT(*) FROM inventory_reservations"
            " WHERE state IN ('decreased', 'released', 'unavailable')"
        )[0][0]
        messages = tx.query("SELECT COUNT(*) FROM notifications")[0][0]
    return int(payments), int(settled), int(messages)


def _finished_at(store_url: str) -> tuple[int, int, int]:
    """:func:`_finished` of the store at ``store_url``, or zeros while its tables are missing."""
    try:
        with open_store(store_url) as store:
            return _finished(store)
    except Exception:  # the workers create their tables as they start
        return (0, 0, 0)


def _run_split(
    command: list[str], names: list[str], env: dict[str, str], store_url: str, orders: int
) -> None:
    """The router and each worker in a process of its own, stopped (SIGTERM) once done.

    A process of its own has no whole-workflow view to settle on, so the store
    says when every order finished; then each process stops gracefully.
    """
    commands = [[*command, "route"]] + [[*command, "worker", name] for name in names]
    children = [
        subprocess.Popen(
            c, env=env, cwd=_REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for c in commands
    ]
    deadline = time.monotonic() + max(300.0, orders / 10)
    try:
        while _finished_at(store_url) != (orders, orders, 2 * orders):
            if any(child.poll() is not None for child in children):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        failed = []
        for c, child in zip(commands, children, strict=True):
            try:
                _, stderr = child.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
                _, stderr = child.communicate()
            if child.returncode != 0:
                failed.append(f"{' '.join(c[3:])}: exit {child.returncode}: {stderr[-500:]!r}")
    if failed:
        raise StreambatchError("workflow bench, split processes: " + "; ".join(failed))


def run_workflow_bench(
    console: Console,
    broker: EmbeddedBroker,
    scratch: Path,
    *,
    orders: int,
    store_url: str,
    label: str,
    split: bool = False,
) -> dict[str, Any]:
    """``orders`` checkouts through router and workers on ``store_url``; the numbers.

    ``split``: the router and each worker in a process of their own instead of
    ``worker --all --with-router`` (one process, one interpreter lock).
    """
    prefix = f"wf-{label}"
    handlers_file = _write_config(scratch, prefix)
    _produce(console, broker, prefix, orders, checkouts_only=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STREAMBATCH_", "KAFKA_"))},
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "STREAMBATCH_HANDLERS_FILE": str(handlers_file),
        "STREAMBATCH_HANDLER_STORE": store_url,
        "STREAMBATCH_DATA_DIR": str(scratch / prefix),
        "STREAMBATCH_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "streambatch.cli"]
    started = time.monotonic()
    cpu_before = os.times()
    broker_cpu_before = broker.cpu_seconds()
    with console.status(f"workflow on {label}: {orders:,} orders"):
        if split:
            names = sorted(load_handlers_config(handlers_file).workers)
            _run_split(command, names, env, store_url, orders)
        else:
            whole = [*command, "worker", "--all", "--with-router"]
            whole += ["--until-idle", str(_QUIET_SECONDS)]
            run = subprocess.run(whole, env=env, cwd=_REPO_ROOT, capture_output=True, check=False)
            if run.returncode != 0:
                tail = run.stderr.decode(errors="replace")[-2000:]
                raise StreambatchError(f"workflow bench on {label} failed:\n{tail}")
    wall = time.monotonic() - started
    cpu_after = os.times()
    broker_cpu = broker.cpu_seconds() - broker_cpu_before
    with open_store(store_url) as store:
        payments, settled, messages = _finished(store)
        with store.transaction() as tx:
            first, last = tx.query("SELECT MIN(processed_at), MAX(processed_at) FROM inbox")[0]
            handled = tx.query("SELECT COUNT(*) FROM inbox")[0][0]
    if (payments, settled, messages) != (orders, orders, 2 * orders):
        raise StreambatchError(
            f"workflow bench on {label}: not every order finished "
            f"({payments} payments, {settled} settled, {messages} messages of {orders} orders)"
        )
    seconds = _instant(last) - _instant(first)
    cpu = (cpu_after.children_user + cpu_after.children_system) - (
        cpu_before.children_user + cpu_before.children_system
    )
    result = {
        "orders": orders,
        "processes": 1 + len(load_handlers_config(handlers_file).workers) if split else 1,
        "handled_events": int(handled),
        "seconds": round(seconds, 2),
        "orders_per_second": round(orders / seconds),
        "process_wall_seconds": round(wall, 1),
        "process_cores": round(cpu / wall, 2),
        "cpu_ms_per_order": round(1000 * cpu / orders, 2),
        # The broker shares the cores: its CPU and the records it stored bound the rate.
        "broker_cpu_ms_per_order": round(1000 * broker_cpu / orders, 2),
        "records_per_order": round(_records_on(broker.bootstrap_servers, prefix) / orders, 1),
        "load_average": round(os.getloadavg()[0], 1),
    }
    console.print(f"  workflow, {label}: {result}")
    return result


def _records_on(bootstrap_servers: str, prefix: str) -> int:
    """Records stored on the topics named ``prefix`` or ``prefix.*`` (sum of end offsets)."""
    connection = {"bootstrap.servers": bootstrap_servers}
    listed = new_admin(connection).list_topics(timeout=30).topics
    mine = [name for name in listed if name == prefix or name.startswith(f"{prefix}.")]
    ends = end_offsets(connection, mine, group_id=f"{prefix}-count")
    return sum(sum(partitions.values()) for partitions in ends.values())


def _produce_as_workflow(console: Console, broker: EmbeddedBroker, topic: str, events: int) -> int:
    """Whole workflows as the router meets them: checkouts plain, the rest as handlers publish.

    The handlers' events carry the publisher header (they were checked against
    the schema when published, so the router does not check them again).
    """
    from confluent_kafka import Producer

    from handlers.runtime import PUBLISHER_HEADER

    create_topics(broker.bootstrap_servers, [topic], _PARTITIONS)
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "linger.ms": "20", "acks": "all"}
    )
    count = 0
    for record in generate_order_records(
        events, seed=7, duplicate_ratio=0, malformed_ratio=0, checkouts_only=False
    ):
        checkout = b'"event_type":"OrderPlaced"' in record.value
        headers: list[tuple[str, str | bytes | None]] = (
            [] if checkout else [(PUBLISHER_HEADER, b"bench")]
        )
        while True:
            try:
                producer.produce(topic, value=record.value, key=record.key, headers=headers)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    if producer.flush(60):
        raise StreambatchError(f"router bench: {topic} not acknowledged")
    console.print(f"{topic}: {count:,} events on {_PARTITIONS} partitions, handlers' marked")
    return count


def run_router_bench(
    console: Console,
    broker: EmbeddedBroker,
    scratch: Path,
    *,
    events: int,
    workflow_traffic: bool = True,
) -> dict[str, Any]:
    """The router alone, in this process, over ``events`` events of whole workflows.

    ``workflow_traffic``: the handlers' events carry the publisher header, as
    in a running workflow (only checkouts are schema-checked); off, every event
    comes from outside and is checked.
    """
    prefix = "rt-workflow" if workflow_traffic else "rt-external"
    handlers_file = _write_config(scratch, prefix)
    if workflow_traffic:
        produced = _produce_as_workflow(console, broker, prefix, events)
    else:
        produced = _produce(console, broker, prefix, events, checkouts_only=False)
    config = load_handlers_config(handlers_file)
    router = build_router(config, {"bootstrap.servers": broker.bootstrap_servers})
    router.prepare()
    thread = threading.Thread(target=router.run, name="router-bench", daemon=True)
    thread.start()
    router.ready.wait(120)
    began = time.monotonic()
    cpu_before = os.times()
    broker_cpu_before = broker.cpu_seconds()
    while not (router.settled and router.counts.events >= produced):
        if not thread.is_alive():
            raise StreambatchError("router bench: the router stopped")
        time.sleep(0.02)
    seconds = time.monotonic() - began
    cpu_after = os.times()
    broker_cpu = broker.cpu_seconds() - broker_cpu_before
    router.stop()
    thread.join(60)
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    result = {
        "events": router.counts.events,
        "validated": "checkouts only" if workflow_traffic else "every event",
        "seconds": round(seconds, 2),
        "events_per_second": round(router.counts.events / seconds),
        "cpu_us_per_event": round(1e6 * cpu / max(router.counts.events, 1), 1),
        "copies": sum(router.counts.published.values()),
        "broker_cpu_us_per_event": round(1e6 * broker_cpu / max(router.counts.events, 1), 1),
    }
    console.print(f"  router alone: {result}")
    return result


@contextlib.contextmanager
def postgres_server(directory: Path) -> Iterator[str | None]:
    """A throwaway PostgreSQL from ``pgserver`` (None when not installed or not startable)."""
    try:
        import pgserver
    except ImportError:
        yield None
        return
    try:
        server = pgserver.get_server(directory / "pgdata", "delete")
    except Exception as exc:  # no server here is a skipped row, not a failed bench
        print(f"pgserver unavailable: {exc}", file=sys.stderr)
        yield None
        return
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def run_workflow_benchmarks(console: Console, *, orders: int, router_events: int) -> dict[str, Any]:
    """The router alone, then the workflow on SQLite and on PostgreSQL; their numbers."""
    import tempfile

    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="streambatch-bench-workflow-") as scratch_name,
        EmbeddedBroker() as broker,
    ):
        scratch = Path(scratch_name)
        results["router alone, workflow traffic"] = run_router_bench(
            console, broker, scratch, events=router_events
        )
        results["router alone, every event validated"] = run_router_bench(
            console, broker, scratch, events=router_events, workflow_traffic=False
        )
        sqlite_url = f"sqlite:///{scratch / 'state.db'}"
        results["workflow, SQLite"] = run_workflow_bench(
            console, broker, scratch, orders=orders, store_url=sqlite_url, label="sqlite"
        )
        results["workflow, SQLite, a process per component"] = run_workflow_bench(
            console,
            broker,
            scratch,
            orders=orders,
            store_url=f"sqlite:///{scratch / 'state-split.db'}",
            label="sqlite-split",
            split=True,
        )
        for split in (False, True):
            name = "pg-split" if split else "pg"
            (scratch / name).mkdir()
            with postgres_server(scratch / name) as postgres_url:
                if postgres_url is None:
                    console.print("PostgreSQL: pgserver not available, run skipped")
                    break
                row = "workflow, PostgreSQL" + (", a process per component" if split else "")
                results[row] = run_workflow_bench(
                    console,
                    broker,
                    scratch,
                    orders=orders,
                    store_url=postgres_url,
                    label=name,
                    split=split,
                )
    return results


if __name__ == "__main__":
    run_workflow_benchmarks(Console(), orders=int(sys.argv[1]), router_events=int(sys.argv[2]))
