"""Shared fixtures: a real Kafka-protocol broker, a unique topic per test, a real PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from psycopg import sql

from connectors.embedded_broker import EmbeddedBroker, create_topics
from tests.support import StreamTopics
from tests.support_s3 import S3Lake, S3Server


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


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``STREAMBATCH_TEST_POSTGRES_URL`` if set, else an embedded PostgreSQL for this session.

    The embedded server (the ``pgserver`` wheel's PostgreSQL 16) listens on a
    Unix socket in its own data directory only, so every xdist worker has its
    own server and no port can clash. It is stopped and deleted at the end.
    """
    external = os.environ.get("STREAMBATCH_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root, CI) and falls
        # back to /tmp/runtime-<uid>, which is fine for pgserver's lock file.
        warnings.simplefilter("ignore")
        import pgserver
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root; pgserver then runs it as the system
        # user "pgserver", creating it with useradd. Two xdist workers may race
        # to create it: create it here, where losing the race is fine.
        _ensure_system_user("pgserver")
    server = pgserver.get_server(tmp_path_factory.mktemp("postgres") / "pgdata", "delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _ensure_system_user(name: str) -> None:
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        return
    subprocess.run(["useradd", "--shell", "/bin/bash", name], capture_output=True, check=False)
    pwd.getpwnam(name)  # KeyError here: useradd failed for another reason than a race


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


def with_search_path(base: str, schema: str) -> str:
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-c%20search_path%3D{schema}"


@pytest.fixture
def admin(postgres_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection of the test's own, outside any store."""
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def schema_url(postgres_url: str, admin: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    schema = f"store_{uuid.uuid4().hex[:12]}"
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield with_search_path(postgres_url, schema)
    admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3 API over HTTP: ``STREAMBATCH_TEST_S3_ENDPOINT`` (a MinIO), else moto on a free port."""
    server = S3Server.from_environment_or_moto(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_lake(s3_server: S3Server) -> S3Lake:
    """A lake in a fresh bucket of the session's S3 server."""
    return s3_server.new_lake()


# The files whose tests take longest, longest first (minutes of waiting for an
# outage, a paused S3 server, kill -9 rounds).
_LONGEST_FILES = (
    "tests/faults/test_broker_outage.py",
    "tests/faults/test_object_store_faults.py",
    "tests/faults/test_kill9.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the long files first: with ``--dist loadfile`` a long file that starts
    last keeps one worker busy alone at the end. Order inside a file is kept."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    root = Path(str(config.rootpath))

    def rank(item: pytest.Item) -> tuple[int, int]:
        relative = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        if relative in _LONGEST_FILES:
            return (0, _LONGEST_FILES.index(relative))
        return (1, 0) if item.path in slow_files else (2, 0)

    items.sort(key=rank)
