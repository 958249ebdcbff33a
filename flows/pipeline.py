"""The one pipeline builder behind every stream's flow.

read Kafka (from the lake fence) and batch (age or size) in each source
partition -> validate, dedupe, dead-letter, commit to the lake exactly once
(the sink, in threads of its own, so reading goes on meanwhile).
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from deltalake.exceptions import DeltaError

from config.settings import KafkaSettings, StreamSettings, load_log_settings, load_stream_settings
from connectors.kafka_clients import TopicUnavailable, describe_topic
from connectors.kafka_settings import load_kafka_settings
from connectors.kafka_source import LakeFencedKafkaSource
from connectors.records import ClosedBatch, ValidatedBatch
from events.stream import StreamSchema
from flows.batching import FlushPolicy
from flows.batching_source import BatchingSource
from flows.log_guard import check_logs, mismatch_line
from flows.run_summary import print_summary_at_exit
from flows.validation import validate_batch
from foundation.allocators import use_compact_allocators
from foundation.clock import Clock, utc_now
from foundation.errors import ConfigError, TerminalError
from foundation.failure import FailureLatch, exit_on_failure
from foundation.gc_pause import collect_less_often, freeze_startup_objects
from foundation.health import FlowHealth, serve_flow_endpoints
from foundation.logging_setup import configure_logging
from sinks.delta_lake import DeltaLake
from sinks.lake_location import LakeLocation, lake_location_of
from sinks.lake_sink import LakeSink

__all__ = [
    "build_flow",
    "check_lake",
    "check_source_log",
    "flow_from_environment",
    "serve_health_and_metrics",
]

log = logging.getLogger(__name__)


def build_flow(
    stream: StreamSchema,
    settings: StreamSettings,
    kafka: KafkaSettings,
    *,
    now: Clock = utc_now,
    failure: FailureLatch | None = None,
) -> Dataflow:
    """The dataflow of one stream, with every setting already validated.

    ``failure``: tripped by a failure the flow cannot get past (see
    :mod:`foundation.failure`); the flow's workers then stop.
    """
    lake = DeltaLake(lake_location_of(settings), stream)
    lake.ensure_tables()
    if settings.metrics_port is not None:
        serve_health_and_metrics(stream.name, settings)
    connection = kafka.librdkafka_config()
    flow = Dataflow(f"streambatch_{stream.name}")
    # A failure the sink cannot get past trips the latch; the sources raise it.
    failure = failure or FailureLatch()

    def validate(batch: ClosedBatch) -> ValidatedBatch:
        return validate_batch(stream, batch, settings.max_record_bytes)

    # The sink validates and commits in threads of its own (see sinks.lake_sink).
    sink = LakeSink(lake, settings, connection, validate, failure)
    reader = LakeFencedKafkaSource(
        stream=stream.name,
        consumer_config=connection,
        topic=settings.topic,
        read_fence=lake.fence,
        # What a crash cut off (a batch committed, not announced) is finished
        # when its partition opens, even if nothing new is ever read from it.
        recover_partition=sink.recover_partition,
        stop_at_end=settings.stop_at_end,
        # Per partition: a window being validated or committed while half of
        # the next is read; more costs memory for little speed (docs/performance.md).
        max_in_flight_bytes=3 * settings.window_bytes // 2,
    )
    policy = FlushPolicy(window=settings.window, max_bytes=settings.window_bytes)
    # Each source partition closes its own batches (see flows.batching_source):
    # a batch is validated and committed on the worker that read it.
    closed = op.input("read_and_batch_kafka", flow, BatchingSource(reader, policy, now, failure))
    op.output("validate_commit_lake", closed, sink)
    return flow


def serve_health_and_metrics(stream: str, settings: StreamSettings) -> None:
    """``/metrics``, ``/healthz`` and ``/readyz`` on the metrics port; a taken port is logged.

    Stalled means records waiting and no commit for a window plus two minutes:
    a batch closes at most one window after its first record.
    """
    health = FlowHealth(
        stream=stream,
        stall_after=settings.window + timedelta(minutes=2),
        started_at=time.time(),
    )
    assert settings.metrics_port is not None
    try:
        serve_flow_endpoints(health, settings.metrics_port, settings.metrics_host)
    except OSError as exc:
        log.warning(
            "metrics not served: %s:%d: %s", settings.metrics_host, settings.metrics_port, exc
        )
        return
    log.info("metrics, /healthz and /readyz on %s:%d", settings.metrics_host, settings.metrics_port)


def flow_from_environment(stream: StreamSchema) -> Dataflow:
    """Build ``stream``'s flow from env and ``streambatch.toml``.

    A bad setting ends the process with exit code 2 and a message naming the
    variable, before anything connects.
    """
    use_compact_allocators()
    try:
        log_settings = load_log_settings()
        configure_logging(log_settings.log_level, log_settings.log_format)
        settings = load_stream_settings(stream.name)
        kafka = load_kafka_settings()
    except ConfigError as exc:
        print(f"streambatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        check_source_topic(kafka, settings.topic)
        check_lake(stream, lake_location_of(settings))
        check_source_log(stream, settings, kafka)
    except TerminalError as exc:
        print(f"streambatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    failure = FailureLatch()
    # Failing closed means exiting: one line on stderr, a non-zero status.
    exit_on_failure(failure)
    flow = build_flow(stream, settings, kafka, failure=failure)
    if settings.stop_at_end:
        print_summary_at_exit(stream.name)
    freeze_startup_objects()
    collect_less_often()
    return flow


def check_lake(stream: StreamSchema, location: LakeLocation) -> None:
    """Fail fast, with one line naming the lake, when its storage cannot be used.

    Creates the stream's tables if absent (what the flow does first anyway).

    Raises:
        LakeError: no such bucket, refused credentials, unreachable endpoint
            (never the secret), or a table of another schema.
    """
    try:
        DeltaLake(location, stream).ensure_tables()
    except (OSError, DeltaError) as exc:
        raise location.error("open", exc) from None


def check_source_topic(kafka: KafkaSettings, topic: str) -> None:
    """Fail fast, with one clear line, when Kafka or the topic cannot be reached.

    Raises:
        TerminalError: naming the brokers and the client's reason (never the password).
    """
    try:
        describe_topic(kafka.librdkafka_config(), topic)
    except TopicUnavailable as exc:
        raise TopicUnavailable(f"source {exc}") from None


def check_source_log(stream: StreamSchema, settings: StreamSettings, kafka: KafkaSettings) -> None:
    """Refuse to start when a partition's fence does not belong to the broker's log.

    Raises:
        TerminalError: one line naming topic, partition, fence, the broker's
            offsets and the ``streambatch accept-log`` command that accepts the log.
    """
    lake = DeltaLake(lake_location_of(settings), stream)
    lake.ensure_tables()
    mismatches = check_logs(stream, lake, kafka.librdkafka_config(), settings.topic)
    if mismatches:
        raise TerminalError(mismatch_line(stream.name, mismatches))
