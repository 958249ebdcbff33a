"""The README's "Adding a stream", followed to the letter with its ``payments`` stream.

The modules and the entry point are the README's own code blocks, written to
a directory outside this repository with the distribution metadata that
``pip install`` would write. Nothing of ours is edited: the broker makes the
stream's topics, its flow commits it, ``query`` has its view, ``status`` lists
it and ``verify`` reconciles it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from connectors.embedded_broker import free_port
from generator import GeneratedRecord, produce_records
from tests.support import REPO_ROOT

VALID = 30


def readme_recipe() -> tuple[dict[str, str], dict[str, str]]:
    """The README section's modules (by the ``# file.py`` line opening each) and entry points."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("\n## Adding a stream\n", 1)[1].split("\n## ", 1)[0]
    [python] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    [toml] = re.findall(r"```toml\n(.*?)```", section, re.DOTALL)
    parts = re.split(r"^# (\w+\.py)\n", python, flags=re.MULTILINE)
    modules = dict(zip(parts[1::2], parts[2::2], strict=True))
    points: dict[str, str] = tomllib.loads(toml)["project"]["entry-points"]["streambatch.streams"]
    return modules, points


@pytest.fixture
def user_package(tmp_path: Path) -> Path:
    """A directory holding the README's modules and their distribution's metadata."""
    modules, points = readme_recipe()
    assert set(modules) == {"payments.py", "payments_flow.py"}
    root = tmp_path / "site"
    root.mkdir()
    for name, text in modules.items():
        (root / name).write_text(text)
    metadata = root / "payments_stream-1.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: payments-stream\nVersion: 1.0\n"
    )
    lines = [f"{name} = {value}" for name, value in points.items()]
    (metadata / "entry_points.txt").write_text("\n".join(["[streambatch.streams]", *lines, ""]))
    return root


@pytest.fixture
def env(user_package: Path, tmp_path: Path) -> dict[str, str]:
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STREAMBATCH_", "KAFKA_"))
    }
    return {
        **base,
        "PYTHONPATH": os.pathsep.join([str(user_package), str(REPO_ROOT)]),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "STREAMBATCH_DATA_DIR": str(tmp_path / "data"),
        "STREAMBATCH_STOP_AT_END": "true",
    }


@pytest.fixture
def broker(env: dict[str, str]) -> Iterator[str]:
    """``streambatch broker``: the code that makes every stream's topics."""
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    port = bootstrap.rsplit(":", 1)[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "streambatch.cli", "broker", "--port", port],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        # rich may wrap the line: read until the end of the sentence.
        while "Ctrl-C" not in ready and process.poll() is None:
            ready += process.stdout.readline()
        assert "broker ready" in ready, ready
        yield bootstrap
    finally:
        process.terminate()
        process.wait(timeout=30)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streambatch.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def payment(number: int) -> GeneratedRecord:
    value = {
        "event_id": f"pay-{number}",
        "occurred_at": f"2026-12-06T10:{number % 60:02d}:00Z",
        "event_type": "captured" if number % 3 else "refunded",
        "payment_id": f"p{number % 7}",
        "amount": f"{number}.25",
    }
    return GeneratedRecord(
        key=value["payment_id"].encode(),
        value=json.dumps(value).encode(),
        kind="valid",
        event_id=value["event_id"],
        malformed_class=None,
    )


def test_a_users_stream_gets_topics_flow_view_status_and_verify(
    env: dict[str, str], broker: str, tmp_path: Path
) -> None:
    topics = AdminClient({"bootstrap.servers": broker}).list_topics(timeout=30).topics
    assert {"payments", "payments.dlq"} <= set(topics)
    assert len(topics["payments"].partitions) == 3

    records = [payment(number) for number in range(VALID)]
    duplicate = records[4]
    malformed = GeneratedRecord(
        key=b"p1",
        value=b'{"event_id": "pay-bad", "event_type": "captured", "amount": "-1"}',
        kind="malformed",
        event_id="pay-bad",
        malformed_class="missing_field",
    )
    report = produce_records(
        [*records, duplicate, malformed],
        producer_config={"bootstrap.servers": broker},
        topic="payments",
        progress=False,
    )
    assert report.failed == 0, report.failures

    flow = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "payments_flow"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert flow.returncode == 0, flow.stderr[-4000:]

    query = cli(
        env, "query", "--format", "json", "SELECT count(*) AS n, sum(amount) AS total FROM payments"
    )
    assert query.returncode == 0, query.stderr
    [row] = json.loads(query.stdout)
    assert row["n"] == VALID
    assert Decimal(str(row["total"])) == sum(Decimal(f"{n}.25") for n in range(VALID))

    batches = cli(
        env,
        "query",
        "--format",
        "json",
        "SELECT sum(dead_letters) AS dead, sum(duplicates) AS dup FROM batches"
        " WHERE stream = 'payments'",
    )
    assert batches.returncode == 0, batches.stderr
    assert json.loads(batches.stdout) == [{"dead": 1, "dup": 1}]

    status = cli(env, "status")
    assert status.returncode == 0, status.stderr
    listed = [line for line in status.stdout.splitlines() if "payments" in line]
    assert len(listed) == 3, status.stdout  # one row per partition of its topic
    assert all(line.rstrip(" │").endswith("ok") for line in listed), status.stdout

    verify = cli(env, "verify", "-s", "payments")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "lost = 0, duplicated = 0" in verify.stdout
