"""Helpers for tests that run real flows against a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from deltalake import DeltaTable

from streambatch.generator import GeneratedRecord, produce_records

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class StreamTopics:
    """A test's source topic and its dead-letter topic."""

    bootstrap_servers: str
    name: str
    partitions: int

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.name}.dlq"


def flow_env(
    topics: StreamTopics, data_dir: Path, stream: str = "orders", **extra: str
) -> dict[str, str]:
    """Environment for ``python -m bytewax.run flows.<stream>`` on the test's topic."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STREAMBATCH_", "KAFKA_"))
    }
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": topics.bootstrap_servers,
            f"STREAMBATCH_{stream.upper()}_TOPIC": topics.name,
            "STREAMBATCH_DATA_DIR": str(data_dir),
            "STREAMBATCH_STOP_AT_END": "true",
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    env.update(extra)
    return env


def flow_command(stream: str = "orders", processes: int = 1) -> list[str]:
    """The command a user types, for one process or several local ones."""
    if processes == 1:
        return [sys.executable, "-m", "bytewax.run", f"flows.{stream}"]
    return [sys.executable, "-m", "bytewax.testing", f"flows.{stream}:flow", "-p", str(processes)]


def run_flow(env: Mapping[str, str], stream: str = "orders", timeout: float = 300) -> None:
    """Run a flow to the end of its topic; fail with its output if it fails."""
    result = subprocess.run(
        flow_command(stream),
        env=dict(env),
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"flow exited {result.returncode}\n{result.stderr.decode(errors='replace')[-4000:]}"
        )


def lake_table(
    data_dir: Path, stream: str = "orders", columns: Iterable[str] | None = None
) -> pa.Table:
    """The committed rows of a stream's Delta table."""
    dataset = DeltaTable(str(data_dir / "lake" / stream)).to_pyarrow_dataset()
    return dataset.to_table(columns=list(columns) if columns is not None else None)


def read_topic(bootstrap_servers: str, topic: str, partitions: int, timeout: float = 60) -> list:
    """Every message of ``topic`` from the beginning to its current end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "streambatch-tests",
            "enable.partition.eof": "true",
            "enable.auto.commit": "false",
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    messages = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(at_end) < partitions and time.monotonic() < deadline:
        for message in consumer.consume(1000, 0.5):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(cast(int, message.partition()))
                    continue
                raise AssertionError(f"consume error: {error.str()}")
            messages.append(message)
    consumer.close()
    if len(at_end) < partitions:
        raise AssertionError(f"{topic}: did not reach the end in {timeout}s")
    return messages


def send(topics: StreamTopics, records: Iterable[GeneratedRecord]) -> None:
    """Produce ``records`` to the test's topic; every one must be acknowledged."""
    report = produce_records(
        records,
        producer_config={"bootstrap.servers": topics.bootstrap_servers},
        topic=topics.name,
        progress=False,
    )
    assert report.failed == 0, report.failures
