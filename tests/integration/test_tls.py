"""Kafka over TLS, for real: a TLS listener in front of the embedded broker.

The test makes a CA and a server certificate, starts a broker that advertises
the port of a TLS-terminating proxy (tests/tls_proxy.py), and drives the
commands a user types with ``KAFKA_SECURITY_PROTOCOL=SSL`` and
``KAFKA_SSL_CA_LOCATION``: ``streambatch produce`` and the orders flow work
through TLS; with another CA a command fails in one line naming the TLS
failure, exit 2, no traceback and no librdkafka log line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from connectors.embedded_broker import EmbeddedBroker, free_port
from connectors.kafka_clients import new_admin
from tests.support import REPO_ROOT, committed_rows, flow_command
from tests.tls_proxy import Certificates, TlsProxy, make_certificates

CLI = (sys.executable, "-c", "from streambatch.cli import main; main()")


class TlsCluster:
    """The proxy's address, the right CA, and a CA the server is not signed by."""

    def __init__(self, address: str, certificates: Certificates, wrong_ca: Path) -> None:
        self.address = address
        self.certificates = certificates
        self.wrong_ca = wrong_ca

    def env(self, ca: Path, **extra: str) -> dict[str, str]:
        """A clean environment that reaches the cluster through TLS trusting ``ca``."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("KAFKA_", "STREAMBATCH_"))
        }
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.address,
                "KAFKA_SECURITY_PROTOCOL": "SSL",
                "KAFKA_SSL_CA_LOCATION": str(ca),
                "PYTHONPATH": str(REPO_ROOT),
                "COLUMNS": "200",
                **extra,
            }
        )
        return env


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    directory = tmp_path_factory.mktemp("tls")
    certificates = make_certificates(directory)
    wrong_ca = make_certificates(directory, ca_name="another CA").ca
    proxy_port = free_port()
    with (
        EmbeddedBroker(log_file=directory / "tansu.log", advertised_port=proxy_port) as broker,
        TlsProxy(broker.port, certificates, proxy_port) as proxy,
    ):
        yield TlsCluster(proxy.address, certificates, wrong_ca)


@pytest.fixture
def tls_topic(tls_cluster: TlsCluster) -> Iterator[str]:
    name = f"tls{uuid.uuid4().hex[:10]}"
    admin = new_admin(
        {
            "bootstrap.servers": tls_cluster.address,
            "security.protocol": "SSL",
            "ssl.ca.location": str(tls_cluster.certificates.ca),
        }
    )
    for future in admin.create_topics(
        [NewTopic(topic, 2, 1) for topic in (name, f"{name}.dlq")]
    ).values():
        future.result(timeout=30)
    yield name
    admin.delete_topics([name, f"{name}.dlq"])


def test_produce_and_flow_through_tls(
    tls_cluster: TlsCluster, tls_topic: str, tmp_path: Path
) -> None:
    env = tls_cluster.env(
        tls_cluster.certificates.ca,
        STREAMBATCH_ORDERS_TOPIC=tls_topic,
        STREAMBATCH_DATA_DIR=str(tmp_path / "data"),
        STREAMBATCH_STOP_AT_END="true",
    )
    produced = subprocess.run(
        [*CLI, "produce", "--count", "40", "--malformed", "0", "--duplicates", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert produced.returncode == 0, produced.stderr
    assert f"40 delivered to {tls_topic}, 0 failed" in produced.stdout
    flow = subprocess.run(
        flow_command("orders"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert flow.returncode == 0, flow.stderr[-3000:]
    assert committed_rows(tmp_path / "data") == 40


@pytest.mark.parametrize(
    "command",
    [
        (*CLI, "produce", "--count", "5"),
        (*CLI, "status"),
        (*CLI, "dlq", "inspect"),
        tuple(flow_command("orders")),
    ],
    ids=["produce", "status", "dlq-inspect", "flow"],
)
def test_wrong_ca_fails_in_one_line(
    tls_cluster: TlsCluster, tmp_path: Path, command: tuple[str, ...]
) -> None:
    completed = subprocess.run(
        command,
        env=tls_cluster.env(tls_cluster.wrong_ca, STREAMBATCH_DATA_DIR=str(tmp_path)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert "certificate verify failed" in lines[0]
    assert "TLS" in lines[0]
    assert "Traceback" not in completed.stderr
    assert "rdkafka" not in completed.stderr
