"""Shared fixtures: a real Kafka-protocol broker and a unique topic per test."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from connectors.embedded_broker import EmbeddedBroker, create_topics
from tests.support import StreamTopics


@pytest.fixture(scope="session")
def bootstrap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set, else an embedded broker on a free port."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    log_file = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_file=log_file) as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def topics(bootstrap_servers: str, request: pytest.FixtureRequest) -> Iterator[StreamTopics]:
    """A fresh ``<name>`` and ``<name>.dlq`` with 3 partitions, deleted afterwards."""
    marker = request.node.get_closest_marker("partitions")
    partitions = int(marker.args[0]) if marker else 3
    name = f"t{uuid.uuid4().hex[:12]}"
    created = StreamTopics(bootstrap_servers, name, partitions)
    create_topics(bootstrap_servers, [name, created.dead_letter_topic], partitions)
    yield created
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    for future in admin.delete_topics([name, created.dead_letter_topic]).values():
        with contextlib.suppress(Exception):
            future.result(timeout=10)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh data directory for the lake."""
    path = tmp_path / "data"
    path.mkdir()
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "partitions(n): partitions of the test's topic")
