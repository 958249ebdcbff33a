"""Every failure a user can cause is one line, a non-zero exit, no traceback, no client log.

Table-driven across the commands and the flows: Kafka unreachable, a missing
lake, an unknown stream, a bad setting, bad SQL, a missing file. The cases run
side by side (each is a process that mostly waits), then each is asserted on
its own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from connectors.embedded_broker import free_port
from connectors.kafka_clients import REACH_TIMEOUT_SECONDS

CLI = (sys.executable, "-c", "from streambatch.cli import main; main()")
FLOW = (sys.executable, "-m", "bytewax.run")


@dataclass(frozen=True)
class Case:
    name: str
    command: tuple[str, ...]
    says: str
    env: Mapping[str, str] = field(default_factory=dict)
    exit_code: int = 2


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stderr: str
    seconds: float


def _cases(dead: str) -> list[Case]:
    unreachable = {"KAFKA_BOOTSTRAP_SERVERS": dead}
    reach = f"cannot reach Kafka at {dead}"
    no_lake = "nosuch/lake: no flow has written there"
    kafka_commands = {
        "produce": ("produce", "--count", "5"),
        "route": ("route", "--until-idle", "1"),
        "worker": ("worker", "--all", "--until-idle", "1"),
        "verify": ("verify", "--data-dir", "fake"),
        "status": ("status",),
        "dlq-inspect": ("dlq", "inspect"),
        "dlq-redrive": ("dlq", "redrive"),
    }
    cases = [
        Case(f"unreachable-{name}", (*CLI, *args), reach, unreachable)
        for name, args in kafka_commands.items()
    ]
    cases += [
        Case("unreachable-by-flag", (*CLI, "status", "-b", dead), reach),
        Case("unreachable-flow", (*FLOW, "flows.orders"), reach, unreachable),
        Case("no-lake-query", (*CLI, "query", "--data-dir", "nosuch", "SELECT 1"), no_lake),
        Case(
            "no-lake-report",
            (*CLI, "report", "--html", "out.html", "--data-dir", "nosuch"),
            no_lake,
        ),
        Case("no-lake-compact", (*CLI, "compact", "orders", "--data-dir", "nosuch"), no_lake),
        Case("no-lake-vacuum", (*CLI, "vacuum", "--data-dir", "nosuch"), no_lake),
        Case("no-lake-verify", (*CLI, "verify", "--data-dir", "nosuch"), no_lake),
        Case("unknown-stream-verify", (*CLI, "verify", "-s", "payments"), "unknown stream"),
        Case("unknown-stream-dlq", (*CLI, "dlq", "inspect", "-s", "payments"), "unknown stream"),
        Case("unknown-stream-status", (*CLI, "status", "-s", "payments"), "unknown stream"),
        Case(
            "unknown-stream-compact",
            (*CLI, "compact", "payments", "--data-dir", "fake"),
            "unknown stream",
        ),
        Case("unknown-stream-produce", (*CLI, "produce", "-s", "payments"), "--stream must be"),
        Case(
            "bad-setting-flow",
            (*FLOW, "flows.orders"),
            "STREAMBATCH_WINDOW_SECONDS",
            {"STREAMBATCH_WINDOW_SECONDS": "soon"},
        ),
        Case(
            "bad-setting-produce",
            (*CLI, "produce"),
            "KAFKA_SECURITY_PROTOCOL",
            {"KAFKA_SECURITY_PROTOCOL": "CARRIER_PIGEON"},
        ),
        Case(
            "bad-log-level-route",
            (*CLI, "route"),
            "STREAMBATCH_LOG_LEVEL",
            {"STREAMBATCH_LOG_LEVEL": "verbose"},
        ),
        Case(
            "bad-log-level-flow",
            (*FLOW, "flows.orders"),
            "STREAMBATCH_LOG_LEVEL",
            {"STREAMBATCH_LOG_LEVEL": "verbose"},
        ),
        Case("bad-sql", (*CLI, "query", "--data-dir", "fake", "SELEC 1"), "syntax error"),
        Case("missing-event-file", (*CLI, "rules", "test", "nosuch.json"), "nosuch.json"),
        Case("missing-handlers-file", (*CLI, "route", "--config", "nosuch.toml"), "nosuch.toml"),
        Case("unknown-worker", (*CLI, "worker", "nosuch"), "no worker named 'nosuch'"),
        Case("missing-argument", (*CLI, "compact"), "Missing argument"),
        Case("unknown-command", (*CLI, "nosuch"), "No such command"),
        Case("bad-option-value", (*CLI, "produce", "--count", "many"), "--count"),
    ]
    return cases


DEAD = f"127.0.0.1:{free_port()}"
CASES = _cases(DEAD)


def _run(case: Case, cwd: Path) -> Outcome:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KAFKA_", "STREAMBATCH_"))
    }
    # Nothing listens on DEAD: a case that asks Kafka without saying so fails fast.
    env.update({"KAFKA_BOOTSTRAP_SERVERS": DEAD, "COLUMNS": "200", **case.env})
    started = time.monotonic()
    completed = subprocess.run(
        case.command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    return Outcome(completed.returncode, completed.stderr, time.monotonic() - started)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    cwd = tmp_path_factory.mktemp("cli-failures")
    # A directory that looks like a lake to the commands that check for one first.
    (cwd / "fake" / "lake" / "orders" / "_delta_log").mkdir(parents=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda case: (case.name, _run(case, cwd)), CASES)
        return dict(results)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_failure_is_one_clear_line_and_a_non_zero_exit(
    case: Case, outcomes: dict[str, Outcome]
) -> None:
    outcome = outcomes[case.name]
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.returncode == case.exit_code, outcome.stderr
    assert len(lines) == 1, outcome.stderr
    assert case.says in lines[0], lines[0]
    assert "Traceback" not in outcome.stderr
    assert "%3|" not in outcome.stderr  # librdkafka's own log format


def test_unreachable_kafka_is_said_within_seconds(tmp_path: Path) -> None:
    """The wait for Kafka is bounded by the reach timeout, not librdkafka's minutes.

    Measured against the same command's start-up (``-h`` imports as much), run
    just before, so a loaded machine slows both alike.
    """
    startup = _run(Case("startup", (*CLI, "status", "-h"), "", exit_code=0), tmp_path)
    unreachable = _run(Case("status", (*CLI, "status"), "cannot reach Kafka"), tmp_path)
    assert startup.returncode == 0 and unreachable.returncode == 2, unreachable.stderr
    waited = unreachable.seconds - startup.seconds
    assert waited < REACH_TIMEOUT_SECONDS + 10, waited


def test_broker_on_a_taken_port_says_so_at_once(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        outcome = _run(Case("broker", (*CLI, "broker", "--port", str(port)), "taken"), tmp_path)
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.returncode == 2 and len(lines) == 1, outcome.stderr
    assert f"port {port} on 127.0.0.1 is taken" in lines[0]
