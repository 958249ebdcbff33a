"""Helpers for tests of the router and the queue workers against a real broker and store.

Every test gets its own topics (prefixed with the test's topic name), consumer
groups and SQLite store, so tests never see each other's messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from foundation.errors import TerminalError, TransientError
from handlers.runtime import HandlerContext
from handlers.store import open_store
from tests.support import REPO_ROOT, StreamTopics

SHIPPED_RULES = REPO_ROOT / "config" / "rules.toml"
SHIPPED_HANDLERS = REPO_ROOT / "config" / "handlers.toml"


class HandlerSetup:
    """Config files, store and environment of one test's handlers."""

    def __init__(self, topics: StreamTopics, directory: Path, store_url: str | None = None) -> None:
        self.topics = topics
        self.prefix = topics.name
        self.directory = directory
        self.store_url = store_url or f"sqlite:///{directory / 'state.db'}"
        self.rules_file = directory / "rules.json"
        self.handlers_file = directory / "handlers.json"

    def topic(self, name: str) -> str:
        """This test's copy of a target topic."""
        return f"{self.prefix}.{name}"

    def write_rules(self, rules: Sequence[Mapping[str, Any]]) -> None:
        """Rules with every target renamed to this test's copy."""
        renamed = [{**rule, "targets": [self.topic(t) for t in rule["targets"]]} for rule in rules]
        document = {"decimal_strings": True, "rules": renamed}
        self.rules_file.write_text(json.dumps(document, indent=2))

    def write_shipped_rules(self) -> None:
        """The shipped config/rules.toml, targets renamed."""
        with SHIPPED_RULES.open("rb") as f:
            shipped = tomllib.load(f)
        self.write_rules(shipped["rules"])

    def write_handlers(
        self,
        workers: Mapping[str, Mapping[str, Any]],
        *,
        services: Mapping[str, Mapping[str, Any]] | None = None,
        retry: Mapping[str, Any] | None = None,
    ) -> None:
        """A handlers file: topics, groups and dead-letter topics renamed for this test."""
        renamed = {
            name: {
                **worker,
                "topics": [self.topic(t) for t in worker["topics"]],
                "group_id": f"{self.prefix}-{name}",
                "dead_letter_topic": self.dead_letter_topic(name),
                "retry_topic_prefix": f"{self.prefix}.{name}.retry",
            }
            for name, worker in workers.items()
        }
        document: dict[str, Any] = {
            "rules": str(self.rules_file),
            "source_topics": [self.topics.name],
            "publish_topic": self.topics.name,
            "router_group": f"{self.prefix}-router",
            "router_dead_letter_topic": f"{self.prefix}.router.dlq",
            "services": dict(services or {}),
            "workers": renamed,
        }
        if retry is not None:
            document["retry"] = dict(retry)
        self.handlers_file.write_text(json.dumps(document, indent=2))

    def write_shipped_handlers(self, **service_overrides: Mapping[str, Any]) -> None:
        """The shipped config/handlers.toml, renamed, with service options overridden."""
        with SHIPPED_HANDLERS.open("rb") as f:
            shipped = tomllib.load(f)
        services = {
            name: {**options, **service_overrides.get(name, {})}
            for name, options in shipped.get("services", {}).items()
        }
        self.write_handlers(shipped["workers"], services=services, retry=shipped.get("retry"))

    def dead_letter_topic(self, worker: str) -> str:
        return f"{self.prefix}.{worker}.dlq"

    def env(self, **extra: str) -> dict[str, str]:
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("STREAMBATCH_", "KAFKA_"))
        }
        environment.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.topics.bootstrap_servers,
                "STREAMBATCH_HANDLERS_FILE": str(self.handlers_file),
                "STREAMBATCH_HANDLER_STORE": self.store_url,
                "STREAMBATCH_DATA_DIR": str(self.directory / "data"),
                "STREAMBATCH_LOG_FORMAT": "text",
                "PYTHONPATH": str(REPO_ROOT),
            }
        )
        environment.update(extra)
        return environment

    def start_command(self) -> list[str]:
        """``streambatch`` as this interpreter runs it."""
        return [sys.executable, "-m", "streambatch.cli"]

    def start(self, *arguments: str, log_name: str, **extra_env: str) -> subprocess.Popen[bytes]:
        """``streambatch <arguments>`` in the background, output to a log file."""
        log = (self.directory / log_name).open("ab")
        return subprocess.Popen(
            [*self.start_command(), *arguments],
            env=self.env(**extra_env),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def log(self, log_name: str) -> str:
        path = self.directory / log_name
        return path.read_text(errors="replace") if path.exists() else ""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query on the handlers' store (empty if the table does not exist yet)."""
        table = sql.split(" FROM ", 1)[1].split()[0]
        store = open_store(self.store_url)
        try:
            with store.transaction() as tx:
                if store.dialect == "sqlite":
                    exists = bool(
                        tx.query(
                            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (table,),
                        )
                    )
                else:
                    exists = tx.query("SELECT to_regclass(?)", (table,))[0][0] is not None
                return tx.query(sql, params) if exists else []
        finally:
            store.close()

    def wait_for(
        self, condition: Callable[[], bool], timeout: float, what: str, logs: Sequence[str] = ()
    ) -> None:
        """Poll ``condition`` until true; fail with the processes' logs if it never is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.5)
        tails = "\n".join(f"--- {name}\n{self.log(name)[-3000:]}" for name in logs)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def summary_line(log: str, worker: str) -> str:
    """The ``worker NAME: ...`` line a worker process prints when it stops."""
    prefix = f"worker {worker}: "
    lines = [line for line in log.splitlines() if line.startswith(prefix)]
    assert lines, f"no summary of worker {worker} in:\n{log[-3000:]}"
    return lines[-1]


def summary_counts(log: str, worker: str) -> dict[str, int]:
    """``{"processed": n, "duplicates": n, "retries": n, "dead-lettered": n}`` of a worker."""
    fields = summary_line(log, worker).split(": ", 1)[1].split(", ")
    return {field.split(" ", 1)[1]: int(field.split(" ", 1)[0]) for field in fields}


def stop(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM and wait: the graceful stop a user's Ctrl-C or ``docker stop`` gives."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout)


def kill(process: subprocess.Popen[bytes]) -> None:
    """``kill -9``."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


# --- handlers that tests name in their configuration ('tests.support_handlers:...') -------


class _FileLogged:
    """Appends each call's event id to ``options['calls_file']`` (outside any transaction)."""

    ddl: ClassVar[Sequence[str]] = ()

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.calls_file = Path(str(options["calls_file"]))

    def record(self, event: Mapping[str, Any]) -> None:
        with self.calls_file.open("a") as f:
            f.write(f"{event['event_id']}\n")


class AlwaysTransient(_FileLogged):
    """Fails every time with a TransientError (a dependency that never comes back)."""

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        self.record(event)
        raise TransientError(f"dependency down for {event['event_id']}")


class TerminalUntilFlag(_FileLogged):
    """Fails terminally while ``options['flag_file']`` is absent, then records the event."""

    ddl: ClassVar[Sequence[str]] = (
        "CREATE TABLE IF NOT EXISTS fixed_events (event_id TEXT PRIMARY KEY)",
    )

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.flag_file = Path(str(options["flag_file"]))

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        self.record(event)
        if not self.flag_file.exists():
            raise TerminalError("bug in the handler (fixed when the flag file exists)")
        context.transaction.execute(
            "INSERT INTO fixed_events (event_id) VALUES (?)", (str(event["event_id"]),)
        )


class Recorder:
    """Records which worker received which event (a subscriber in a fan-out test)."""

    ddl: ClassVar[Sequence[str]] = (
        "CREATE TABLE IF NOT EXISTS received ("
        " worker TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (worker, event_id))",
    )

    def __init__(self, options: Mapping[str, Any]) -> None:
        del options

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        context.transaction.execute(
            "INSERT INTO received (worker, event_id) VALUES (?, ?)",
            (context.worker, str(event["event_id"])),
        )


class Scripted:
    """Behaves by event id prefix: ``ok-`` succeeds, ``flaky-`` fails transiently on its
    first try only, ``bad-`` fails terminally."""

    ddl: ClassVar[Sequence[str]] = ()

    def __init__(self, options: Mapping[str, Any]) -> None:
        del options
        self.tried: set[str] = set()

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        event_id = str(event["event_id"])
        if event_id.startswith("bad-"):
            raise TerminalError(f"{event_id} can never be handled")
        if event_id.startswith("flaky-") and event_id not in self.tried:
            self.tried.add(event_id)
            raise TransientError(f"{event_id}: first try times out")


class SlowDependency:
    """Events whose id starts with ``wait-`` fail transiently until ``ready_after_seconds``
    after their first try; every success is recorded in arrival order with its time."""

    ddl: ClassVar[Sequence[str]] = (
        "CREATE TABLE IF NOT EXISTS handled ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, at REAL NOT NULL)",
    )

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.ready_after = float(options.get("ready_after_seconds", 2.0))
        self.first_try: dict[str, float] = {}

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        event_id = str(event["event_id"])
        now = time.time()
        if event_id.startswith("wait-"):
            first = self.first_try.setdefault(event_id, now)
            if now - first < self.ready_after:
                raise TransientError(f"{event_id}: dependency not ready yet")
        context.transaction.execute(
            "INSERT INTO handled (event_id, at) VALUES (?, ?)", (event_id, now)
        )


class WritesThenFailsOnce:
    """Writes a row and publishes an event, then fails transiently on an event's first try.

    Whatever the failing try wrote must vanish with it (its savepoint is rolled
    back): one row and one outbox event per event in the end.
    """

    ddl: ClassVar[Sequence[str]] = (
        "CREATE TABLE IF NOT EXISTS written (event_id TEXT NOT NULL, worker TEXT NOT NULL)",
    )

    def __init__(self, options: Mapping[str, Any]) -> None:
        del options
        self.tried: set[str] = set()

    def handle(self, event: Mapping[str, Any], context: HandlerContext) -> None:
        event_id = str(event["event_id"])
        context.transaction.execute(
            "INSERT INTO written (event_id, worker) VALUES (?, ?)", (event_id, context.worker)
        )
        context.transaction.add_outbox(
            context.publish_topic, event_id.encode(), b"{}", f"out-{event_id}"
        )
        if event_id not in self.tried:
            self.tried.add(event_id)
            raise TransientError(f"{event_id}: first try times out")
