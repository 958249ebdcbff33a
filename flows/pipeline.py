"""The one pipeline builder behind every stream's flow.

read Kafka (from the lake fence) and batch (age or size) in each source
partition -> validate, dedupe, dead-letter, commit to the lake exactly once
(the sink, in threads of its own, so reading goes on meanwhile).
"""

from __future__ import annotations

import sys

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from deltalake.exceptions import DeltaError

from config.settings import KafkaSettings, StreamSettings, load_kafka_settings, load_stream_settings
from connectors.kafka_clients import TopicUnavailable, describe_topic
from connectors.kafka_source import LakeFencedKafkaSource
from events.stream import StreamSchema
from flows.batching import FlushPolicy
from flows.batching_source import BatchingSource
from flows.records import ClosedBatch, ValidatedBatch
from flows.validation import validate_batch
from sinks.delta_lake import DeltaLake
from sinks.lake_location import LakeLocation, lake_location_of
from sinks.lake_sink import LakeSink
from streambatch.allocators import use_compact_allocators
from streambatch.clock import Clock, utc_now
from streambatch.errors import ConfigError, TerminalError
from streambatch.gc_pause import collect_less_often, freeze_startup_objects
from streambatch.logs import configure_logging
from streambatch.metrics import serve_metrics

__all__ = ["build_flow", "check_lake", "flow_from_environment"]


def build_flow(
    stream: StreamSchema,
    settings: StreamSettings,
    kafka: KafkaSettings,
    *,
    now: Clock = utc_now,
) -> Dataflow:
    """The dataflow of one stream, with every setting already validated."""
    lake = DeltaLake(lake_location_of(settings), stream)
    lake.ensure_tables()
    if settings.metrics_port is not None:
        serve_metrics(settings.metrics_port)
    connection = kafka.librdkafka_config()
    flow = Dataflow(f"streambatch_{stream.name}")
    reader = LakeFencedKafkaSource(
        stream=stream.name,
        consumer_config=connection,
        topic=settings.topic,
        read_fence=lake.fence,
        stop_at_end=settings.stop_at_end,
        # Per partition: a window being validated or committed while half of
        # the next is read. More read-ahead measured barely faster and cost a
        # window of memory per partition.
        max_in_flight_bytes=3 * settings.window_bytes // 2,
    )
    policy = FlushPolicy(window=settings.window, max_bytes=settings.window_bytes)
    # Each source partition closes its own batches (see flows.batching_source):
    # a batch is validated and committed on the worker that read it.
    closed = op.input("read_and_batch_kafka", flow, BatchingSource(reader, policy, now))

    def validate(batch: ClosedBatch) -> ValidatedBatch:
        return validate_batch(stream, batch, settings.max_record_bytes)

    # The sink validates and commits in threads of its own (see sinks.lake_sink).
    op.output("validate_commit_lake", closed, LakeSink(lake, settings, connection, validate))
    return flow


def flow_from_environment(stream: StreamSchema) -> Dataflow:
    """Build ``stream``'s flow from env and ``streambatch.toml``.

    A bad setting ends the process with exit code 2 and a message naming the
    variable, before anything connects.
    """
    use_compact_allocators()
    try:
        configure_logging()
        settings = load_stream_settings(stream.name)
        kafka = load_kafka_settings()
    except ConfigError as exc:
        print(f"streambatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        check_source_topic(kafka, settings.topic)
        check_lake(stream, lake_location_of(settings))
    except TerminalError as exc:
        print(f"streambatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    flow = build_flow(stream, settings, kafka)
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
