"""Helpers for tests that run real flows against a real broker."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable

from flows.runner import flow_command as runner_flow_command
from generator import GeneratedRecord, produce_records
from streambatch.dead_letter_tools import read_topic as read_whole_topic

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
    return runner_flow_command(stream, processes)


@contextlib.contextmanager
def local_cluster_ports() -> Iterator[None]:
    """Hold the ports of ``bytewax.testing -p N`` (2101 and up) for this block.

    That launcher (the command users type) always takes the same ports, so
    two of its clusters in tests running side by side (pytest-xdist workers)
    would collide; this machine-wide lock runs them one after the other.
    """
    lock_path = Path(tempfile.gettempdir()) / "streambatch-bytewax-testing-ports.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_flow(env: Mapping[str, str], stream: str = "orders", timeout: float = 300) -> str:
    """Run a flow to the end of its topic; its stderr, or fail with it if it fails."""
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
    return result.stderr.decode(errors="replace")


def lake_table(
    data_dir: Path, stream: str = "orders", columns: Iterable[str] | None = None
) -> pa.Table:
    """The committed rows of a stream's Delta table."""
    dataset = DeltaTable(str(data_dir / "lake" / stream)).to_pyarrow_dataset()
    return dataset.to_table(columns=list(columns) if columns is not None else None)


def read_topic(bootstrap_servers: str, topic: str) -> list[Any]:
    """Every message of ``topic`` from the beginning to its current end.

    ``Any``: the stubs type a consumed message's headers and offsets as they are
    for produced ones (maybe None, maybe a dict); tests read them as consumed.
    """
    return read_whole_topic({"bootstrap.servers": bootstrap_servers}, topic)


def committed_rows(data_dir: Path, stream: str = "orders") -> int:
    """Rows committed to a stream's table so far (0 before its first commit)."""
    if not DeltaTable.is_deltatable(str(data_dir / "lake" / stream)):
        return 0
    return lake_table(data_dir, stream, columns=["_offset"]).num_rows


def send(topics: StreamTopics, records: Iterable[GeneratedRecord]) -> None:
    """Produce ``records`` to the test's topic; every one must be acknowledged."""
    report = produce_records(
        records,
        producer_config={"bootstrap.servers": topics.bootstrap_servers},
        topic=topics.name,
        progress=False,
    )
    assert report.failed == 0, report.failures
