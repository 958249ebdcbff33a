"""The ``streambatch`` command line (typer): broker, produce, query, dlq, route, worker, ..."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import duckdb
import typer
from deltalake.exceptions import DeltaError
from rich.console import Console
from rich.markup import escape

# Typer vendors click: its usage errors are only importable from here.
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from config.settings import (
    load_log_settings,
    load_pipeline_settings,
    load_stream_settings,
)
from connectors.kafka_settings import load_kafka_settings
from foundation.errors import ConfigError, StreambatchError
from sinks.lake_location import LakeLocation, lake_in, lake_location_of

if TYPE_CHECKING:
    from handlers.router import RouterCounts

__all__ = ["app", "main"]

app = typer.Typer(
    name="streambatch",
    help="Kafka event streams into clean, deduplicated, queryable batches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
dlq_app = typer.Typer(help="Inspect and redrive dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        print(f"streambatch {version('streambatch')}")
        raise typer.Exit()


@app.callback()
def _global_options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Kafka event streams into clean, deduplicated, queryable batches."""


# At least 120 columns: reports stay readable when piped or logged.
console = Console(width=max(120, Console().width))
# soft_wrap: an error is one line even when stderr is not a terminal.
errors = Console(stderr=True, soft_wrap=True)

StreamOption = Annotated[
    str, typer.Option("--stream", "-s", help="a registered stream: orders, clicks, logs, ...")
]
ProduceStreamOption = Annotated[
    str, typer.Option("--stream", "-s", help="orders, clicks, logs or all")
]
BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-server",
        "-b",
        help="Kafka brokers, host:port[,host:port] (default: KAFKA_BOOTSTRAP_SERVERS)",
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="read the lake at DATA_DIR/lake (default: STREAMBATCH_LAKE_URI, "
        "else STREAMBATCH_DATA_DIR/lake, else ./data/lake)",
    ),
]


def _kafka_connection(bootstrap: str | None) -> dict[str, str]:
    """The librdkafka connection of the KAFKA_* settings (``-b`` wins), once the cluster answers.

    Raises:
        KafkaUnreachable: within seconds, naming the brokers.
    """
    from connectors.kafka_clients import require_cluster

    if bootstrap is not None:
        # Through the environment, so processes this command starts see it too.
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    connection = load_kafka_settings().librdkafka_config()
    require_cluster(connection)
    return connection


def _lake(data_dir: Path | None) -> LakeLocation:
    """``--data-dir``'s lake if given, else the configured one (``STREAMBATCH_LAKE_URI``)."""
    if data_dir is not None:
        return lake_in(data_dir)
    return lake_location_of(load_pipeline_settings())


def _data_dir_with_lake(data_dir: Path | None) -> LakeLocation:
    """The lake of ``data_dir`` (default: the settings), once it holds a lake the flows wrote.

    Only a local lake is checked here; an object store names its own errors.

    Raises:
        ConfigError: the directory or its lake is absent, naming the path.
    """
    location = _lake(data_dir)
    if location.is_local and not any(location.local_path.glob("*/_delta_log")):
        raise ConfigError(
            f"no lake at {location.local_path}: no flow has written there; pass --data-dir "
            "(or set STREAMBATCH_DATA_DIR or STREAMBATCH_LAKE_URI) to your flows' lake"
        )
    return location


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 9092,
    partitions: Annotated[int, typer.Option(min=1, help="partitions per topic")] = 3,
) -> None:
    """Run the embedded Kafka-compatible broker (in memory) until Ctrl-C, with topics made."""
    from connectors.embedded_broker import EmbeddedBroker, create_topics, stream_topics

    with EmbeddedBroker(port=port) as running:
        topics = stream_topics()
        create_topics(running.bootstrap_servers, topics, partitions)
        console.print(
            f"broker ready on [bold]{running.bootstrap_servers}[/] with topics "
            f"{', '.join(topics)}; Ctrl-C stops it (all data is in memory)"
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


@app.command()
def produce(
    stream: ProduceStreamOption = "orders",
    count: Annotated[int, typer.Option(min=1, help="records to send")] = 10_000,
    rate: Annotated[float | None, typer.Option(min=1, help="records per second")] = None,
    duplicates: Annotated[float, typer.Option(min=0, max=0.5, help="ratio re-sent")] = 0.02,
    malformed: Annotated[float, typer.Option(min=0, max=0.5, help="ratio malformed")] = 0.01,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same events)")] = 42,
    progress: Annotated[bool | None, typer.Option(help="progress bar (default: on a TTY)")] = None,
    checkouts_only: Annotated[
        bool,
        typer.Option(
            "--checkouts-only",
            help="orders are only OrderPlaced events: the workflow handlers make the rest",
        ),
    ] = False,
    bootstrap: BootstrapOption = None,
) -> None:
    """Send synthetic events (with duplicates and malformed records).

    --stream orders sends COUNT order workflow events; clicks or
    logs send the click sessions or service logs around COUNT order events
    (same customers, skus and time range); all sends the three.
    """
    from events.registry import CLICKS, LOGS, ORDERS
    from generator import (
        generate_order_records,
        generate_stream_records,
        produce_records,
    )

    # The generator makes the built-in streams only; a user's stream brings its own data.
    generated = (ORDERS.name, CLICKS.name, LOGS.name)
    if stream not in (*generated, "all"):
        raise StreambatchError(f"--stream must be one of {', '.join(generated)} or all")
    if checkouts_only and stream not in ("orders", "all"):
        raise StreambatchError("--checkouts-only needs --stream orders or all")
    connection = _kafka_connection(bootstrap)
    if stream == "orders":
        batches = {
            "orders": list(
                generate_order_records(
                    count,
                    seed=seed,
                    duplicate_ratio=duplicates,
                    malformed_ratio=malformed,
                    checkouts_only=checkouts_only,
                )
            )
        }
    else:
        batches = generate_stream_records(
            count,
            seed=seed,
            duplicate_ratio=duplicates,
            malformed_ratio=malformed,
            checkouts_only=checkouts_only,
        )
        if stream != "all":
            batches = {stream: batches[stream]}
    failed = 0
    for name, records in batches.items():
        topic = load_stream_settings(name).topic
        report = produce_records(
            records,
            producer_config=connection,
            topic=topic,
            rate=rate,
            progress=progress,
            total=len(records),
        )
        console.print(
            f"{report.delivered} delivered to {topic}, {report.failed} failed "
            f"in {report.seconds:.1f} s"
        )
        for reason, count_failed in sorted(report.failures.items()):
            errors.print(f"  {count_failed} failed: {reason}")
        failed += report.failed
    if failed:
        raise typer.Exit(1)


@app.command()
def query(
    sql: Annotated[str | None, typer.Argument(help="a SELECT over orders, batches, ...")] = None,
    report: Annotated[str | None, typer.Option("--report", "-r", help="a named report")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="report parameter NAME=VALUE")
    ] = None,
    list_reports: Annotated[bool, typer.Option("--list", help="list the named reports")] = False,
    output: Annotated[
        str, typer.Option("--format", help="table, csv, json (one array) or jsonl (a line a row)")
    ] = "table",
    data_dir: DataDirOption = None,
) -> None:
    """Run SQL or a named report on DuckDB views of the lake (read-only)."""
    from sinks.duckdb import REPORTS, connect, run_report, run_sql
    from streambatch.tables import render_table

    if list_reports:
        for name, known in REPORTS.items():
            console.print(f"[bold]{name}[/]: {known.description}")
        return
    if (sql is None) == (report is None):
        raise StreambatchError("give either SQL or --report NAME (see --list)")
    if output not in ("table", "csv", "json", "jsonl"):
        raise StreambatchError(f"--format must be table, csv, json or jsonl, not {output!r}")
    root = _data_dir_with_lake(data_dir)
    with connect(root) as conn:
        if report is not None:
            params = dict(_parse_param(item) for item in param or [])
            columns, rows = run_report(conn, report, params)
        else:
            assert sql is not None
            columns, rows = run_sql(conn, sql)
    if output == "table":
        console.print(render_table(columns, rows, title=report))
    elif output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    elif output == "json":
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        print(json.dumps(records, default=str))
    else:
        for row in rows:
            print(json.dumps(dict(zip(columns, row, strict=True)), default=str))


def _parse_param(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise StreambatchError(f"--param wants NAME=VALUE, got {item!r}")
    return name, value


WorkerOption = Annotated[
    str | None,
    typer.Option(
        "--worker",
        "-w",
        help="a queue worker's or batch handler's (or 'router': the router's) dead letters",
    ),
]
HandlersFileOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="handlers file (default: STREAMBATCH_HANDLERS_FILE or config/handlers.toml)",
    ),
]


@dlq_app.command("inspect")
def dlq_inspect(
    stream: StreamOption = "orders",
    limit: Annotated[int, typer.Option(min=0, help="sample letters to show")] = 10,
    worker_name: WorkerOption = None,
    config_file: HandlersFileOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Count dead letters by error class and show samples (of a stream or a worker)."""
    from streambatch.dead_letter_tools import inspect_dead_letters

    topic, _ = _dead_letter_route(stream, worker_name, config_file)
    summary = inspect_dead_letters(_kafka_connection(bootstrap), topic, limit)
    console.print(summary.render())


@dlq_app.command("redrive")
def dlq_redrive(
    stream: StreamOption = "orders",
    error_class: Annotated[
        str | None, typer.Option("--class", help="only letters of this error class")
    ] = None,
    worker_name: WorkerOption = None,
    config_file: HandlersFileOption = None,
    bootstrap: BootstrapOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print what would be redriven; change nothing")
    ] = False,
) -> None:
    """Send dead letters back to their source topic (after a fix), original bytes and headers.

    Each letter is redriven at most once, ever (recorded in the topic <dlq>.redriven).
    A worker's letters go back to the topic each came from; the other
    subscribers of that topic have it in their inbox already and skip it.
    """
    from streambatch.redrive import redrive_dead_letters

    topic, destination = _dead_letter_route(stream, worker_name, config_file)
    report = redrive_dead_letters(
        _kafka_connection(bootstrap), topic, destination, error_class, dry_run=dry_run
    )
    for letter in report.letters if dry_run else ():
        console.print(
            f"would redrive {letter.position} ({letter.error_class}) to {letter.destination}",
            soft_wrap=True,
        )
    verb = "would be sent" if dry_run else "sent"
    console.print(
        f"{len(report.letters)} dead letters of {topic} {verb} back to "
        f"{destination or 'their sources'}; skipped: {report.already_redriven} redriven "
        f"before, {report.failed_again} failed again after a redrive, "
        f"{report.other_class} of another class"
        + (f"; {report.recovered} found sent by an interrupted run" if report.recovered else ""),
        soft_wrap=True,
    )


def _dead_letter_route(
    stream: str, worker_name: str | None, config_file: Path | None
) -> tuple[str, str | None]:
    """(dead-letter topic, where redriven letters go: None = each letter's source.topic)."""
    if worker_name is None:
        from events.registry import get_stream

        get_stream(stream)  # an unknown name fails here, before Kafka is asked
        settings = load_stream_settings(stream)
        return settings.dead_letter_topic, settings.topic
    from handlers.config import load_handlers_config

    config = load_handlers_config(config_file)
    batch_handler = config.batch_handlers.get(worker_name)
    if batch_handler is not None:
        return batch_handler.dead_letter_topic or f"{worker_name}.dlq", None
    if worker_name == "router" and "router" not in config.workers:
        return config.router_dead_letter_topic, None  # what the router refused to fan out
    return config.plan(worker_name).dead_letter_topic, None


rules_app = typer.Typer(
    help="EventBridge-style event rules: which targets an event goes to.", no_args_is_help=True
)
app.add_typer(rules_app, name="rules")


@rules_app.command("test")
def rules_test(
    event_file: Annotated[
        Path, typer.Argument(metavar="EVENT.json", help="one event, a JSON object")
    ],
    rules_file: Annotated[
        Path | None,
        typer.Option(
            "--rules",
            help="rules file, .toml or .json (default: config/rules.toml, else the shipped one)",
        ),
    ] = None,
    misses: Annotated[
        bool, typer.Option("--misses", help="also say why the other rules do not match")
    ] = False,
) -> None:
    """Print which rules match an event and why; exit 1 when none does."""
    from handlers.config import SHIPPED_RULES_FILE
    from handlers.rules import RuleSet, load_event

    if rules_file is None:
        local = Path("config/rules.toml")
        rules_file = local if local.is_file() else SHIPPED_RULES_FILE
    rule_set = RuleSet.load(rules_file)
    event = load_event(event_file)
    console.print(
        rule_set.report(event, misses=misses), markup=False, highlight=False, soft_wrap=True
    )
    if not rule_set.matching_rules(event):
        raise typer.Exit(1)


UntilIdleOption = Annotated[
    float | None,
    typer.Option(
        "--until-idle",
        min=0.1,
        help="exit 0 once settled this many seconds: read to the end, no retry waiting",
    ),
]


def _stop_before_work(_signum: int, _frame: object) -> None:
    """SIGTERM while a handler process starts: nothing is in flight yet, exit cleanly."""
    raise SystemExit(0)


def _start_handler_process(metrics_port: int | None) -> None:
    from foundation.logging_setup import configure_logging
    from foundation.metrics import serve_metrics

    # Until the workers take over signals (a graceful stop of each), a stop ends
    # the process at once with 0, as docker stop or a supervisor expects.
    signal.signal(signal.SIGTERM, _stop_before_work)
    log_settings = load_log_settings()
    configure_logging(log_settings.log_level, log_settings.log_format)
    shared = load_pipeline_settings()
    port = metrics_port if metrics_port is not None else shared.metrics_port
    if port is not None:
        serve_metrics(port, shared.metrics_host)


@app.command()
def route(
    config_file: HandlersFileOption = None,
    until_idle: UntilIdleOption = None,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus metrics")] = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Run the event router: publish each event to the targets of the rules it matches."""
    from handlers.config import load_handlers_config
    from handlers.service import run_router

    _start_handler_process(metrics_port)
    config = load_handlers_config(config_file)
    counts = run_router(config, _kafka_connection(bootstrap), until_idle_seconds=until_idle)
    _print_router_counts(counts)


@app.command()
def worker(
    names: Annotated[
        list[str] | None, typer.Argument(metavar="NAME...", help="workers of the handlers file")
    ] = None,
    run_all: Annotated[bool, typer.Option("--all", help="every worker of the file")] = False,
    with_router: Annotated[
        bool, typer.Option("--with-router", help="run the router in this process too")
    ] = False,
    config_file: HandlersFileOption = None,
    until_idle: UntilIdleOption = None,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus metrics")] = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Run queue workers and batch handlers (one thread each): at least once, retries, inbox.

    With --until-idle the process exits 0 once every worker (and the router) has
    its partitions, has read each to its end, has no retry waiting, and the
    outbox is empty, all of that for that many seconds in a row.
    """
    from handlers.config import handler_store_url, load_handlers_config
    from handlers.service import run_workers

    config = load_handlers_config(config_file)
    chosen = [*config.workers, *config.batch_handlers] if run_all else list(names or [])
    if not chosen or (run_all and names):
        raise StreambatchError("name one or more workers, or pass --all (not both)")
    batch = sorted(name for name in chosen if name in config.batch_handlers)
    for name in chosen:
        if name not in config.batch_handlers:
            config.plan(name)  # an unknown name fails here, naming the known ones
    _start_handler_process(metrics_port)
    data_dir = load_pipeline_settings().data_dir
    result = run_workers(
        sorted(name for name in chosen if name not in config.batch_handlers),
        config,
        _kafka_connection(bootstrap),
        handler_store_url(data_dir),
        with_router=with_router,
        until_idle_seconds=until_idle,
        batch_handlers=batch,
        lake=_lake(None),
    )
    if result.router is not None:
        _print_router_counts(result.router)
    for name, count in [*result.workers.items(), *result.batch_handlers.items()]:
        console.print(
            f"worker {name}: {count.processed} processed, {count.duplicates} duplicates, "
            f"{count.retried} retries, {count.dead_lettered} dead-lettered",
            markup=False,
            highlight=False,
        )


def _print_router_counts(counts: RouterCounts) -> None:
    targets = ", ".join(f"{t}={n}" for t, n in sorted(counts.published.items())) or "none"
    console.print(
        f"router: {counts.events} events, {counts.unmatched} matched no rule, "
        f"{counts.unreadable} not JSON objects; published: {targets}",
        markup=False,
        highlight=False,
    )


@app.command()
def verify(
    stream: StreamOption = "orders",
    data_dir: DataDirOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Reconcile a stream: every offset below the fence is a row, a dead letter or a duplicate."""
    from events.registry import get_stream
    from streambatch.verify import verify_stream

    report = verify_stream(
        get_stream(stream),
        load_stream_settings(stream).model_copy(
            update={"lake_uri": _data_dir_with_lake(data_dir).root}
        ),
        _kafka_connection(bootstrap),
    )
    console.print(report.render())
    for line in report.offenders():
        errors.print(escape(line))
    console.print(f"lost = {report.lost}, duplicated = {report.duplicated}")
    if not report.ok:
        raise typer.Exit(1)


@app.command("accept-log")
def accept_log(
    stream: StreamOption = "orders",
    partition: Annotated[
        int | None, typer.Option("--partition", "-p", min=0, help="one partition (default: all)")
    ] = None,
    data_dir: DataDirOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Accept the broker's log where a fence does not belong to it (topic recreated, data lost).

    Recorded in the lake with the old fence, the new topic id and the offsets
    given up as lost; the flow then reads the new log from its start. Run it
    while the stream's flow is stopped.
    """
    from events.registry import get_stream
    from flows.log_guard import accept_logs
    from sinks.delta_lake import DeltaLake

    location = _data_dir_with_lake(data_dir)
    settings = load_stream_settings(stream).model_copy(update={"lake_uri": location.root})
    schema = get_stream(stream)
    lake = DeltaLake(location, schema)
    lake.ensure_tables()
    results = accept_logs(schema, lake, _kafka_connection(bootstrap), settings.topic, partition)
    for result in results:
        console.print(escape(result.summary()), highlight=False, soft_wrap=True)


@app.command()
def status(
    stream: Annotated[
        list[str] | None,
        typer.Option("--stream", "-s", help="a registered stream; repeat it (default: all)"),
    ] = None,
    data_dir: DataDirOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Kafka end offset, lake fence, lag and open-batch age per partition; exit 1 if stalled."""
    from events.registry import get_stream, stream_names
    from foundation.clock import utc_now
    from streambatch.status import collect_status, render_status, stalled

    for name in stream or []:
        get_stream(name)  # an unknown name fails here, before Kafka is asked

    statuses = collect_status(
        stream or list(stream_names()),
        _lake(data_dir),
        _kafka_connection(bootstrap),
        utc_now,
    )
    console.print(render_status(statuses))
    stuck = stalled(statuses)
    for partition in stuck:
        errors.print(f"[red]stalled:[/] {escape(partition.describe())}", highlight=False)
    if stuck:
        raise typer.Exit(1)


@app.command()
def compact(
    stream: Annotated[str, typer.Argument(help="a registered stream: orders, clicks, logs, ...")],
    target_size_mib: Annotated[int, typer.Option(min=1, help="target file size in MiB")] = 128,
    progress: Annotated[bool | None, typer.Option(help="progress bar (default: on a TTY)")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Merge the small files of finished hours (UTC) of STREAM; rows and fences unchanged."""
    from foundation.clock import utc_now
    from streambatch.maintenance import compact_stream

    result = compact_stream(
        _data_dir_with_lake(data_dir),
        stream,
        utc_now,
        target_size_bytes=target_size_mib * 1024 * 1024,
        progress=progress,
    )
    console.print(result.summary())
    for name, reason in result.skipped:
        errors.print(f"skipped {name}: {escape(reason)}", highlight=False)


@app.command()
def vacuum(
    retention_hours: Annotated[
        int, typer.Option(min=0, help="keep unreferenced files younger than this")
    ] = 168,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list the files, delete none")] = False,
    force: Annotated[bool, typer.Option("--force", help="allow --retention-hours below 1")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Delete lake files no version references that are older than the retention."""
    from datetime import timedelta

    from streambatch.maintenance import vacuum_lake

    removed = vacuum_lake(
        _data_dir_with_lake(data_dir),
        timedelta(hours=retention_hours),
        dry_run=dry_run,
        force=force,
    )
    for path in removed:
        console.print(escape(str(path)), highlight=False, soft_wrap=True)
    verb = "would be deleted (dry run)" if dry_run else "deleted"
    console.print(f"{len(removed)} unreferenced files {verb}")


@app.command()
def report(
    html_file: Annotated[
        Path, typer.Option("--html", help="write a self-contained HTML report (charts) here")
    ],
    title: Annotated[str, typer.Option(help="page title")] = "streambatch report",
    hours: Annotated[
        int, typer.Option(min=1, help="event time covered by the windowed charts")
    ] = 24,
    until: Annotated[
        str | None,
        typer.Option(
            help="end of the windowed charts (ISO 8601, UTC without an offset); "
            "default: the newest order, click or log line in the lake"
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Revenue, click funnel, error rates, batches and dead letters as one HTML file."""
    from datetime import UTC, datetime, timedelta

    from streambatch.html_report import write_report

    end = None
    if until is not None:
        try:
            end = datetime.fromisoformat(until.strip())
        except ValueError:
            message = f"must be an ISO 8601 time such as 2026-11-28T14:00:00Z, got {until!r}"
            raise typer.BadParameter(message, param_hint="--until") from None
        end = end if end.tzinfo is not None else end.replace(tzinfo=UTC)
    root = _data_dir_with_lake(data_dir)
    written = write_report(root, html_file, title=title, span=timedelta(hours=hours), until=end)
    console.print(f"report written to {escape(str(written))}")


config_app = typer.Typer(help="Settings: every one, its value and where it came from.")
app.add_typer(config_app, name="config", no_args_is_help=True)


@config_app.command("show")
def config_show(
    output: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Every setting: value (secrets redacted), default and source (environment, file, default)."""
    from rich.table import Table

    from config.show import list_settings
    from events.registry import STREAMS

    if output not in ("table", "json"):
        raise StreambatchError(f"--format must be table or json, not {output!r}")
    load_kafka_settings()  # refuses what librdkafka refuses, as when a command starts
    rows = list_settings(list(STREAMS))
    if output == "json":
        print(json.dumps([row.as_json() for row in rows], indent=2))
        return
    table = Table("setting", "value", "default", "source")
    for row in rows:
        source = f"{row.source} ({row.where})" if row.where else row.source
        table.add_row(*(escape(cell) for cell in (row.name, row.value, row.default, source)))
    console.print(table)


@app.command()
def demo(
    events: Annotated[
        int, typer.Option(min=100, help="order events (clicks, logs follow)")
    ] = 5_000,
    data_dir: Annotated[Path, typer.Option(help="the demo's own lake (wiped first)")] = Path(
        "data/demo"
    ),
) -> None:
    """Embedded broker, sample events, the orders flow to the end, a DuckDB report."""
    from streambatch.demo import run_demo

    run_demo(console, events=events, data_dir=data_dir)


@app.command()
def bench(
    events: Annotated[int, typer.Option(min=1000, help="order events per run")] = 1_000_000,
    scale: Annotated[int, typer.Option(min=1, help="also run the flow at this many x events")] = 1,
    output: Annotated[Path, typer.Option(help="JSON results file")] = Path("bench-results.json"),
    workflow_orders: Annotated[
        int, typer.Option(min=0, help="checkouts through router and workers (0: skip)")
    ] = 20_000,
) -> None:
    """Events/s and peak RSS of the orders flow against hand-written baselines; the workflow."""
    from bench.run import run_benchmarks

    results: dict[str, Any] = run_benchmarks(
        console, events=events, scale=scale, workflow_orders=workflow_orders
    )
    output.write_text(json.dumps(results, indent=2))
    console.print(f"results written to {output}")


def main() -> None:
    """Console-script entry point: every failure a user can cause is one line on stderr.

    Exit codes: 0 done, 1 the command ran and found a problem (or an unexpected
    error: its traceback with ``STREAMBATCH_DEBUG=1``), 2 usage, configuration
    or an error streambatch names (Kafka unreachable, lake absent, bad SQL),
    130 interrupted.
    """
    try:
        code = app(prog_name="streambatch", standalone_mode=False)
    except NoArgsIsHelpError:
        code = 2  # the help was printed
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "streambatch"
        _fail(f"{exc.format_message()} (see '{where} -h')", 2)
    except (StreambatchError, duckdb.Error) as exc:
        # duckdb.Error: user SQL that DuckDB refuses (syntax, unknown table, locked-down I/O).
        _fail(str(exc), 2)
    except (OSError, DeltaError) as exc:
        # The lake's storage refused or could not be reached (no bucket, bad credentials).
        _fail(str(lake_location_of(load_pipeline_settings()).error("read", exc)), 2)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except Exception as exc:
        if os.environ.get("STREAMBATCH_DEBUG"):
            raise
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        _fail(f"unexpected error ({reason}); set STREAMBATCH_DEBUG=1 for the traceback", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with ``code``."""
    one_line = " ".join(message.split())
    errors.print(f"[red]streambatch:[/] {escape(one_line)}", highlight=False)
    sys.exit(code)


if __name__ == "__main__":
    main()
