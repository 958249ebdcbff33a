"""Broker unreachable mid-run: the same flow process waits, says so, and catches up exactly once.

A :class:`~tests.faults.tcp_proxy.TcpProxy` sits between the flow and a
dedicated broker that advertises the proxy's port, so every connection the
flow makes (bootstrap, partition leader, dead-letter producer) goes through
it. Each test cuts the proxy mid-run (30 s, and 5 minutes: longer than any
librdkafka session, request or socket timeout), produces more events while the
flow is cut off, checks during the cut that the outage shows in the flow's
stderr and in its Prometheus metrics, restores, and checks the lake: every
valid event exactly once, with the same flow process still running.

The test's own connections are spared by the cut. A broker advertises one
address, so a second path "straight to the broker's port" does not exist: the
first metadata response sends every client back to the proxy.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.embedded_broker import EmbeddedBroker, create_topics, free_port
from generator import (
    DEFAULT_START,
    GeneratedRecord,
    generate_order_records,
    produce_records,
    summarize,
)
from tests.faults.tcp_proxy import ClientConnection, TcpProxy
from tests.support import (
    REPO_ROOT,
    StreamTopics,
    committed_rows,
    flow_command,
    flow_env,
    lake_table,
    read_topic,
)

PARTITIONS = 3
EVENTS = 100_000
EVENTS_DURING_OUTAGE = 20_000
START_SECONDS = 120.0
CATCH_UP_SECONDS = 240.0
RECONNECT_SECONDS = 15.0
# What the flow logs when it loses its broker: a client's error callback
# (``kafka client error on orders/0: 1/1 brokers are down``, ``dead-letter
# producer: 1/1 brokers are down``: a source waiting for commits serves no
# callbacks, the dead-letter producer waiting for acknowledgements does) or the
# source's change of connection state (``no broker connection for orders/0``).
# librdkafka's own lines (``%3|...|FAIL|rdkafka#...``) go to the debug log.
KAFKA_ERROR_LINE = re.compile(
    rb"kafka client error|dead-letter producer: |no broker connection for"
)
RAW_CLIENT_LOG_LINE = re.compile(rb"^%\d\|", re.MULTILINE)
DEAD_LETTER_WAIT_LINE = re.compile(rb"waiting for the broker to acknowledge \d+ dead letters")

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]
"""Scraped metrics: sample name -> sorted label pairs -> value."""


@dataclass(frozen=True)
class ProxiedBroker:
    """A broker that clients reach through ``proxy`` only (its advertised address)."""

    proxy: TcpProxy
    broker_port: int

    @property
    def bootstrap_servers(self) -> str:
        return self.proxy.address


@dataclass
class OutageWatch:
    """What the test saw of the flow while the broker was cut off."""

    partitions: frozenset[str]
    kafka_errors_before: float
    scrapes: int = 0
    disconnected: set[str] = field(default_factory=set)
    kafka_errors_max: float = 0.0
    error_names: set[str] = field(default_factory=set)

    def observe(self, samples: Samples) -> set[str]:
        """Take one scrape; return the partitions newly seen disconnected."""
        self.scrapes += 1
        down = {p for p, v in broker_connected(samples).items() if p in self.partitions and not v}
        new = down - self.disconnected
        self.disconnected |= down
        errors = kafka_errors(samples)
        self.kafka_errors_max = max(self.kafka_errors_max, sum(errors.values()))
        self.error_names |= {name for name, count in errors.items() if count}
        return new

    @property
    def visible(self) -> bool:
        """Every partition reported disconnected, or the error counter went up."""
        return self.disconnected == self.partitions or (
            self.kafka_errors_max > self.kafka_errors_before
        )


def opened_by_this_process(connection: ClientConnection) -> bool:
    """Whether the client end of ``connection`` is a socket of the test process itself."""
    for own in psutil.Process(os.getpid()).net_connections(kind="tcp"):
        if own.laddr and own.raddr and (own.laddr.ip, own.laddr.port) == connection.client:
            return bool((own.raddr.ip, own.raddr.port) == connection.proxy)
    return False


@pytest.fixture(scope="module")
def proxied_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedBroker]:
    """A dedicated embedded broker behind a proxy whose cuts spare the test's own clients."""
    broker_port = free_port()
    log_file = tmp_path_factory.mktemp("outage-broker") / "tansu.log"
    with (
        TcpProxy(broker_port, spare=opened_by_this_process) as proxy,
        EmbeddedBroker(port=broker_port, advertised_port=proxy.port, log_file=log_file),
    ):
        yield ProxiedBroker(proxy, broker_port)


def scrape(port: int) -> Samples:
    """The flow's ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def broker_connected(samples: Samples) -> dict[str, float]:
    """``streambatch_broker_connected`` per partition label."""
    series = samples.get("streambatch_broker_connected", {})
    return {dict(labels)["partition"]: value for labels, value in series.items()}


def kafka_errors(samples: Samples) -> dict[str, float]:
    """``streambatch_kafka_errors_total`` per error name."""
    series = samples.get("streambatch_kafka_errors_total", {})
    return {dict(labels)["error"]: value for labels, value in series.items()}


def all_connected(samples: Samples, partitions: frozenset[str]) -> bool:
    connected = broker_connected(samples)
    return all(connected.get(partition) == 1 for partition in partitions)


def produce(bootstrap_servers: str, topic: str, records: list[GeneratedRecord]) -> None:
    report = produce_records(
        records,
        producer_config={"bootstrap.servers": bootstrap_servers},
        topic=topic,
        progress=False,
        flush_timeout=timedelta(seconds=120),
    )
    assert report.failed == 0, report.failures


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the flow does not exit within 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:]


def run_outage(
    proxied_broker: ProxiedBroker, tmp_path: Path, outage_seconds: float, seed: int
) -> None:
    """The whole scenario (see the module docstring); prints a timeline for the record."""
    proxy = proxied_broker.proxy
    name = f"outage{uuid.uuid4().hex[:10]}"
    topics = StreamTopics(proxied_broker.bootstrap_servers, name, PARTITIONS)
    create_topics(topics.bootstrap_servers, [name, topics.dead_letter_topic], PARTITIONS)
    partitions = frozenset(f"{name}/{p}" for p in range(PARTITIONS))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    stderr_path = tmp_path / "flow.stderr"

    records = list(generate_order_records(EVENTS, seed=seed))
    during_outage = list(
        generate_order_records(
            EVENTS_DURING_OUTAGE, seed=seed + 1, start=DEFAULT_START + timedelta(hours=12)
        )
    )
    expected = summarize(records + during_outage)
    produce(topics.bootstrap_servers, name, records)

    metrics_port = free_port()
    env = flow_env(
        topics,
        data_dir,
        STREAMBATCH_STOP_AT_END="false",
        STREAMBATCH_WINDOW_BYTES="262144",
        STREAMBATCH_WINDOW_SECONDS="2",
        STREAMBATCH_METRICS_PORT=str(metrics_port),
    )
    started = time.monotonic()
    timeline: list[str] = []

    def note(event: str) -> None:
        timeline.append(f"{time.monotonic() - started:7.1f}s {event}")

    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            flow_command(), env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        # Mid-run: some batches committed and the connection gauge up (it comes
        # from the client's statistics, once a second), most of the topic to go.
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert process.poll() is None, tail(stderr_path)
            assert time.monotonic() < deadline, "no commit and no connection before the cut"
            if committed_rows(data_dir) > 0:
                before = scrape(metrics_port)
                if all_connected(before, partitions):
                    break
            time.sleep(0.05)
        watch = OutageWatch(partitions, sum(kafka_errors(before).values()))
        rows_at_cut = committed_rows(data_dir)
        log_at_cut = stderr_path.stat().st_size
        restore_at = time.monotonic() + outage_seconds
        dropped_before = proxy.dropped
        note(f"cut: {proxy.cut()} connections reset, {rows_at_cut} rows committed")
        assert rows_at_cut < len(expected.valid_event_ids), "the flow finished before the cut"

        # Events keep arriving while the flow is cut off (the test's producer is spared).
        produce(topics.bootstrap_servers, name, during_outage)
        note(f"produced {len(during_outage)} more events during the outage")

        while (left := restore_at - time.monotonic()) > 0:
            assert process.poll() is None, f"the flow exited during the outage\n{tail(stderr_path)}"
            if newly_down := watch.observe(scrape(metrics_port)):
                note(f"streambatch_broker_connected == 0 for {sorted(newly_down)}")
            time.sleep(min(1.0, left))
        rows_at_restore = committed_rows(data_dir)
        outage_log = stderr_path.read_bytes()[log_at_cut:]
        proxy.restore()
        resets = proxy.dropped - dropped_before
        note(f"restore: {rows_at_restore} rows committed, {resets} connections reset in all")

        rows = rows_at_restore
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while rows < len(expected.valid_event_ids) and time.monotonic() < deadline:
            assert process.poll() is None, f"the flow exited after the outage\n{tail(stderr_path)}"
            time.sleep(0.25)
            previous, rows = rows, committed_rows(data_dir)
            if previous == rows_at_restore < rows:
                note(f"first commit after restore ({rows} rows)")
        note(f"caught up: {rows} of {len(expected.valid_event_ids)} rows")
        deadline = time.monotonic() + RECONNECT_SECONDS
        while not all_connected(after := scrape(metrics_port), partitions):
            assert time.monotonic() < deadline, f"not reconnected: {broker_connected(after)}"
            time.sleep(0.5)
        assert process.poll() is None, "the flow must still be the same running process"
    finally:
        proxy.restore()  # idempotent; the proxy outlives this test
        stop(process)

    error_lines = [line for line in outage_log.splitlines() if KAFKA_ERROR_LINE.search(line)]
    waits = len(DEAD_LETTER_WAIT_LINE.findall(outage_log))
    for line in timeline:
        print(line)
    print(f"{len(error_lines)} Kafka client error lines during the outage")
    print(f"{waits} 'waiting for the broker to acknowledge ... dead letters' lines")
    print(
        f"{watch.scrapes} scrapes during the outage: disconnected {sorted(watch.disconnected)}, "
        f"kafka errors {watch.kafka_errors_before:g} -> {watch.kafka_errors_max:g} "
        f"{sorted(watch.error_names)}"
    )

    # 0 lost, 0 duplicated, the events produced during the outage included.
    ids = lake_table(data_dir, columns=["event_id"]).column("event_id").to_pylist()
    lost = expected.valid_event_ids - set(ids)
    duplicated = len(ids) - len(set(ids))
    assert (len(lost), duplicated) == (0, 0)
    assert len(ids) == len(expected.valid_event_ids)
    batches = lake_table(data_dir, "batches")
    assert sum(batches.column("rows").to_pylist()) == len(ids)
    assert sum(batches.column("duplicates").to_pylist()) == expected.duplicates
    assert sum(batches.column("dead_letters").to_pylist()) == expected.malformed
    # Dead letters waited through the outage: at least once each, none lost.
    dead = read_topic(topics.bootstrap_servers, topics.dead_letter_topic)
    sources = {
        (dict(m.headers())["source.partition"], dict(m.headers())["source.offset"]) for m in dead
    }
    print(f"{len(dead)} dead letters for {expected.malformed} malformed records")
    assert len(sources) == expected.malformed

    # The outage was logged and visible in a metric while it lasted.
    assert error_lines, "no Kafka client error in the flow's stderr during the outage"
    assert not RAW_CLIENT_LOG_LINE.search(outage_log), "librdkafka wrote to the terminal"
    assert watch.visible, (
        f"during {outage_seconds:g} s without a broker, {watch.scrapes} scrapes showed neither "
        "streambatch_broker_connected == 0 for every partition nor a rise of "
        "streambatch_kafka_errors_total"
    )


def echo_server() -> tuple[socket.socket, threading.Thread]:
    """A loopback echo server for the proxy's own test; close the socket to stop it."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def round_trip(port: int, payload: bytes = b"ping") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(len(payload))


def test_the_proxy_resets_live_and_new_connections_while_cut_and_spares_on_request() -> None:
    server, thread = echo_server()
    spared_ports: set[int] = set()
    try:
        upstream = server.getsockname()[1]
        with TcpProxy(upstream, spare=lambda c: c.client[1] in spared_ports) as proxy:
            live = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            live.sendall(b"a")
            assert live.recv(1) == b"a"
            spared = socket.socket()
            spared.bind(("127.0.0.1", 0))
            spared_ports.add(spared.getsockname()[1])
            spared.settimeout(5)
            spared.connect(("127.0.0.1", proxy.port))
            assert round_trip(proxy.port) == b"ping"
            # The proxy notices the closed round trip on its own thread.
            deadline = time.monotonic() + 5
            while proxy.live != 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proxy.live == 2

            assert proxy.cut() == 1 and proxy.is_cut
            with pytest.raises(ConnectionResetError):
                live.recv(1)
            with pytest.raises(ConnectionResetError):
                round_trip(proxy.port)
            spared.sendall(b"still here")
            assert spared.recv(10) == b"still here"

            proxy.restore()
            assert round_trip(proxy.port) == b"ping"
            assert proxy.dropped == 2
            live.close()
            spared.close()
        with pytest.raises(ValueError, match="loopback"):
            TcpProxy(upstream, upstream_host="192.0.2.1")
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone does not
        server.close()
        thread.join(5)
        assert not thread.is_alive()


def test_thirty_second_outage_is_waited_out_and_caught_up(
    proxied_broker: ProxiedBroker, tmp_path: Path
) -> None:
    run_outage(proxied_broker, tmp_path, outage_seconds=30, seed=31)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_five_minute_outage_is_waited_out_and_caught_up(
    proxied_broker: ProxiedBroker, tmp_path: Path
) -> None:
    run_outage(proxied_broker, tmp_path, outage_seconds=300, seed=53)
