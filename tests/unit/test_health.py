"""Liveness and readiness of a flow, from its own metric series."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import timedelta

from prometheus_client import CollectorRegistry, Gauge

from connectors.embedded_broker import free_port
from foundation.health import FlowHealth, serve_flow_endpoints


class FlowGauges:
    """The three series the probes read, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["stream", "partition"]
        self.lag = Gauge("streambatch_consumer_lag_records", "", labels, registry=self.registry)
        self.last_commit = Gauge(
            "streambatch_last_commit_timestamp_seconds", "", labels, registry=self.registry
        )
        self.connected = Gauge("streambatch_broker_connected", "", labels, registry=self.registry)

    def health(self, now: float, started_at: float = 1_000.0) -> FlowHealth:
        return FlowHealth(
            stream="orders",
            stall_after=timedelta(seconds=60),
            started_at=started_at,
            registry=self.registry,
            clock=lambda: now,
        )


def test_a_backlog_without_a_recent_commit_is_a_stall() -> None:
    gauges = FlowGauges()
    gauges.lag.labels("orders", "orders/0").set(10)
    gauges.last_commit.labels("orders", "orders/0").set(1_000)
    assert gauges.health(now=1_050).liveness().ok
    verdict = gauges.health(now=1_061).liveness()
    assert not verdict.ok
    assert "orders/0" in verdict.reason and "stalled" in verdict.reason


def test_no_backlog_is_healthy_however_long_ago_the_last_commit() -> None:
    gauges = FlowGauges()
    gauges.lag.labels("orders", "orders/0").set(0)
    gauges.last_commit.labels("orders", "orders/0").set(1_000)
    assert gauges.health(now=100_000).liveness().ok


def test_a_partition_never_committed_counts_from_the_start() -> None:
    gauges = FlowGauges()
    gauges.lag.labels("orders", "orders/1").set(5)
    assert gauges.health(now=1_030, started_at=1_000).liveness().ok
    assert not gauges.health(now=1_100, started_at=1_000).liveness().ok


def test_other_streams_do_not_count() -> None:
    gauges = FlowGauges()
    gauges.lag.labels("clicks", "clicks/0").set(5)
    assert gauges.health(now=10_000).liveness().ok


def test_ready_once_every_partition_has_a_broker() -> None:
    gauges = FlowGauges()
    assert not gauges.health(now=0).readiness().ok
    gauges.connected.labels("orders", "orders/0").set(1)
    gauges.connected.labels("orders", "orders/1").set(0)
    verdict = gauges.health(now=0).readiness()
    assert not verdict.ok and "orders/1" in verdict.reason
    gauges.connected.labels("orders", "orders/1").set(1)
    assert gauges.health(now=0).readiness().ok


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_endpoints_answer_over_http_beside_the_metrics() -> None:
    gauges = FlowGauges()
    gauges.lag.labels("orders", "orders/0").set(3)
    gauges.connected.labels("orders", "orders/0").set(1)
    port = free_port()
    server = serve_flow_endpoints(gauges.health(now=5_000), port)
    try:
        base = f"http://127.0.0.1:{port}"
        status, body = _get(f"{base}/healthz")
        assert status == 503 and json.loads(body)["ok"] is False
        status, body = _get(f"{base}/readyz")
        assert status == 200 and json.loads(body)["ok"] is True
        status, body = _get(f"{base}/metrics")
        assert status == 200 and b"streambatch_consumer_lag_records" in body
    finally:
        server.shutdown()
        server.server_close()
