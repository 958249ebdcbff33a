"""Prometheus metrics of the flows (served when ``STREAMBATCH_METRICS_PORT`` is set).

Served on ``STREAMBATCH_METRICS_HOST``, loopback by default: the endpoint has
no authentication, so exposing it is a deliberate choice (a container sets
``0.0.0.0`` and publishes the port).

Names follow Prometheus conventions; every series carries the ``stream`` label.
"""

from __future__ import annotations

import json
import logging
from typing import NamedTuple

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "BATCHES_COMMITTED",
    "BATCH_BYTES",
    "BATCH_HANDLER_DELAY",
    "BATCH_ROWS",
    "BROKER_CONNECTED",
    "COMMIT_SECONDS",
    "CONSUMER_LAG",
    "HANDLER_MESSAGES",
    "KAFKA_ERRORS",
    "LAST_COMMIT",
    "OUTBOX_PUBLISHED",
    "RECORDS",
    "ROUTED_EVENTS",
    "ClientStats",
    "observe_client_stats",
    "serve_metrics",
]

log = logging.getLogger(__name__)

RECORDS = Counter(
    "streambatch_records_total",
    "Records read, by outcome: valid (written), duplicate (dropped), invalid (dead-lettered)",
    ["stream", "outcome"],
)
BATCHES_COMMITTED = Counter(
    "streambatch_batches_committed_total", "Batches committed to the lake", ["stream", "reason"]
)
BATCH_ROWS = Histogram(
    "streambatch_batch_rows",
    "Rows per committed batch",
    ["stream"],
    buckets=(1, 10, 100, 1_000, 10_000, 50_000, 100_000, 500_000),
)
BATCH_BYTES = Histogram(
    "streambatch_batch_input_bytes",
    "Buffered input bytes per committed batch",
    ["stream"],
    buckets=(1e3, 1e4, 1e5, 1e6, 5e6, 1e7, 5e7, 1e8),
)
COMMIT_SECONDS = Histogram(
    "streambatch_commit_seconds", "Dead-letter write plus Delta commit time", ["stream"]
)
LAST_COMMIT = Gauge(
    "streambatch_last_commit_timestamp_seconds",
    "Unix time of the last commit of a partition",
    ["stream", "partition"],
)
CONSUMER_LAG = Gauge(
    "streambatch_consumer_lag_records",
    "High watermark minus the committed fence of a partition",
    ["stream", "partition"],
)
KAFKA_ERRORS = Counter(
    "streambatch_kafka_errors_total", "Errors reported by the Kafka client", ["stream", "error"]
)
BROKER_CONNECTED = Gauge(
    "streambatch_broker_connected",
    "1 while the partition's consumer has a broker connection up, else 0",
    ["stream", "partition"],
)

HANDLER_MESSAGES = Counter(
    "streambatch_handler_messages_total",
    "Messages of a queue worker by outcome: processed, duplicate (inbox hit), retried "
    "(one per retry), dead_lettered",
    ["worker", "outcome"],
)
ROUTED_EVENTS = Counter(
    "streambatch_routed_events_total",
    "Events the router published to a target topic, by rule and target",
    ["rule", "target"],
)
OUTBOX_PUBLISHED = Counter(
    "streambatch_outbox_published_total", "Outbox events published by the relay", ["topic"]
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``host:port`` (loopback unless told); a taken port is logged."""
    try:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)
    except OSError as exc:
        log.warning("metrics not served: %s:%d: %s", host, port, exc)


class ClientStats(NamedTuple):
    """What a partition's consumer statistics say: broker connection, high watermark."""

    connected: bool
    high_watermark: int | None


def observe_client_stats(stream: str, partition_label: str, stats_json: str) -> ClientStats:
    """Update the connection gauge from librdkafka statistics; return what they say."""
    stats = json.loads(stats_json)
    brokers = stats.get("brokers", {}).values()
    connected = any(
        broker.get("state") == "UP" and broker.get("nodeid", -1) >= 0 for broker in brokers
    )
    BROKER_CONNECTED.labels(stream, partition_label).set(1 if connected else 0)
    for topic in stats.get("topics", {}).values():
        for number, partition in topic.get("partitions", {}).items():
            if f"{topic.get('topic')}/{number}" == partition_label:
                high = partition.get("hi_offset", -1)
                return ClientStats(connected, int(high) if high >= 0 else None)
    return ClientStats(connected, None)


BATCH_HANDLER_DELAY = Histogram(
    "streambatch_batch_handler_delay_seconds",
    "Time from a batch's commit to its batch handler's call",
    ["handler"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
