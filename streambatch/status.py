"""``streambatch status``: lag, fence and open-batch age per stream and Kafka partition.

The fence (next offset to read) comes from the lake, the last commit from the
``batches`` table, the end offset from Kafka. A partition is *stalled* when it
has records past its fence and its open batch is older than two windows: a
batch closes one window after it opens, so by then a running flow would have
committed it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from rich.console import JustifyMethod
from rich.markup import escape
from rich.table import Table

from config.settings import load_stream_settings
from connectors.kafka_clients import TopicUnavailable, describe_topic, new_consumer
from events.registry import get_stream
from foundation.errors import StreambatchError
from sinks.delta_lake import BATCHES_TABLE, DeltaLake
from sinks.lake_location import LakeLocation, LakeTable, lake_in

__all__ = [
    "STALL_WINDOWS",
    "PartitionStatus",
    "collect_status",
    "render_status",
    "stalled",
]

STALL_WINDOWS = 2
"""A partition with lag whose open batch is this many windows old is stalled."""

_KAFKA_TIMEOUT_SECONDS = 10.0
_PROBE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """Where one Kafka partition of a stream stands, as observed at ``observed_at``.

    Attributes:
        stream: Stream name (``orders``).
        topic: Its source topic.
        partition: Kafka partition; ``None`` only when the topic does not exist
            and the lake knows no partition of it (see ``note``).
        end_offset: Kafka end offset (high watermark), ``None`` if unknown.
            Never below a record actually read: brokers that under-report the
            listed watermark are corrected by a fetch at the fence.
        fence: Next offset to read, from the lake; ``None`` before the first commit
            (or when the stream's table does not exist yet).
        lag: Records at or past the fence (``end_offset - fence``, never negative);
            ``None`` if the end is unknown.
        last_commit_at: When the partition's last batch was committed (``batches``).
        first_uncommitted_at: Kafka timestamp of the record at the fence, if any.
        open_batch_age: Upper bound of the age of the open batch when ``lag > 0``:
            time since the later of ``last_commit_at`` and ``first_uncommitted_at``
            (the batch cannot have opened before either); ``None`` when there is
            no lag or neither time is known.
        window: The stream's ``STREAMBATCH_WINDOW_SECONDS`` as a duration.
        observed_at: The injected clock's time of the observation (aware UTC).
        note: Why something is unknown (missing topic, unreadable fence), or ``""``.
    """

    stream: str
    topic: str
    partition: int | None
    end_offset: int | None
    fence: int | None
    lag: int | None
    last_commit_at: datetime | None
    first_uncommitted_at: datetime | None
    open_batch_age: timedelta | None
    window: timedelta
    observed_at: datetime
    note: str = ""

    @property
    def label(self) -> str:
        """``stream topic/partition`` for messages."""
        partition = "?" if self.partition is None else str(self.partition)
        return f"{self.stream} {self.topic}/{partition}"

    def is_stalled(self, window: timedelta | None = None) -> bool:
        """Lag > 0 and the open batch is at least :data:`STALL_WINDOWS` windows old.

        ``window`` overrides the stream's own window.
        """
        limit = STALL_WINDOWS * (self.window if window is None else window)
        return bool(self.lag) and self.open_batch_age is not None and self.open_batch_age >= limit

    def describe(self) -> str:
        """One line: lag, open batch age and last commit (for stall messages)."""
        last = "never" if self.last_commit_at is None else _format_time(self.last_commit_at)
        return (
            f"{self.label}: lag {self.lag}, open batch age {_format_age(self.open_batch_age)} "
            f"(window {_format_age(self.window)}), last commit {last}"
        )


@dataclass
class _Probe:
    """What one consumer assigned at the fence saw of a partition."""

    low: int = -1
    listed_high: int = -1
    fetched_high: int = -1
    first_offset: int | None = None
    first_timestamp: datetime | None = None
    max_seen: int = -1
    error: str = ""
    done: bool = False

    def end_offset(self) -> int | None:
        candidates = [self.listed_high, self.fetched_high, self.max_seen + 1]
        end = max(candidates)
        return end if end >= 0 else None


@dataclass
class _TopicProbe:
    partitions: dict[int, _Probe] = field(default_factory=dict)
    missing: bool = False


def collect_status(
    streams: Sequence[str],
    data_dir: LakeLocation | Path,
    connection: dict[str, str],
    now: Callable[[], datetime],
) -> list[PartitionStatus]:
    """One status per Kafka partition of each stream's topic (and per partition the lake knows).

    Topics come from ``load_stream_settings(stream).topic``, windows from its
    ``window_seconds``; ``data_dir`` is the lake's location, or a data directory
    whose lake is ``<data_dir>/lake``. Reads only: nothing is
    committed to Kafka or the lake. ``now`` must return an aware datetime.

    Raises:
        StreambatchError: an unknown stream, or Kafka cannot be reached.
        ValueError: ``now()`` returned a naive datetime.
    """
    observed_at = _aware_utc(now())
    lake_dir = lake_in(data_dir)
    last_commits = _last_commits(lake_dir.table(BATCHES_TABLE), streams)
    statuses: list[PartitionStatus] = []
    for name in streams:
        schema = get_stream(name)  # UnknownStreamError names the known ones
        settings = load_stream_settings(name)
        topic = settings.topic
        lake = DeltaLake(lake_dir, schema)
        lake_partitions = {p for (s, t, p) in last_commits if s == name and t == topic}
        partitions = _topic_partitions(connection, topic)
        wanted = sorted(set(partitions or []) | lake_partitions)
        fences = _fences(lake, topic, set(wanted))
        probe = (
            _probe_topic(connection, topic, {p: fences[p] for p in partitions})
            if partitions
            else _TopicProbe(missing=True)
        )
        absent = f"topic {topic!r} not found" if probe.missing else f"not in topic {topic!r}"
        if not wanted:
            statuses.append(
                PartitionStatus(
                    stream=name,
                    topic=topic,
                    partition=None,
                    end_offset=None,
                    fence=None,
                    lag=None,
                    last_commit_at=None,
                    first_uncommitted_at=None,
                    open_batch_age=None,
                    window=settings.window,
                    observed_at=observed_at,
                    note=f"topic {topic!r} not found and nothing committed",
                )
            )
            continue
        for partition in wanted:
            seen = probe.partitions.get(partition)
            statuses.append(
                _partition_status(
                    name,
                    topic,
                    partition,
                    fences[partition],
                    seen,
                    last_commits.get((name, topic, partition)),
                    settings.window,
                    observed_at,
                    note="" if seen is not None else absent,
                )
            )
    return statuses


def _partition_status(
    stream: str,
    topic: str,
    partition: int,
    fence: int | None,
    probe: _Probe | None,
    last_commit_at: datetime | None,
    window: timedelta,
    observed_at: datetime,
    note: str,
) -> PartitionStatus:
    end = probe.end_offset() if probe is not None else None
    lag: int | None = None
    first_at = probe.first_timestamp if probe is not None else None
    if probe is not None and probe.error:
        note = probe.error
    if end is not None and probe is not None:
        if fence is not None:
            base = fence
        elif probe.first_offset is not None:
            base = probe.first_offset
        else:
            base = max(probe.low, 0)
        lag = max(0, end - base)
    age: timedelta | None = None
    if lag:
        known = [t for t in (last_commit_at, first_at) if t is not None]
        if known:
            age = max(timedelta(0), observed_at - max(known))
    return PartitionStatus(
        stream=stream,
        topic=topic,
        partition=partition,
        end_offset=end,
        fence=fence,
        lag=lag,
        last_commit_at=last_commit_at,
        first_uncommitted_at=first_at if lag else None,
        open_batch_age=age,
        window=window,
        observed_at=observed_at,
        note=note,
    )


def stalled(
    statuses: Sequence[PartitionStatus], window_seconds: int | None = None
) -> list[PartitionStatus]:
    """The stalled partitions: lag > 0 and no commit for two windows.

    ``window_seconds`` overrides each stream's own ``STREAMBATCH_WINDOW_SECONDS``.
    A partition whose open-batch age is unknown is never reported.
    """
    window = None if window_seconds is None else timedelta(seconds=window_seconds)
    return [status for status in statuses if status.is_stalled(window)]


def render_status(statuses: Sequence[PartitionStatus], window_seconds: int | None = None) -> Table:
    """A rich table, one row per partition; stalled rows are marked red."""
    observed = statuses[0].observed_at if statuses else None
    title = "status" if observed is None else f"status at {_format_time(observed)}"
    table = Table(title=title)
    columns: list[tuple[str, JustifyMethod]] = [
        ("stream", "left"),
        ("topic", "left"),
        ("partition", "right"),
        ("end offset", "right"),
        ("fence", "right"),
        ("lag", "right"),
        ("open batch age", "right"),
        ("last commit", "left"),
        ("state", "left"),
    ]
    for name, justify in columns:
        table.add_column(name, justify=justify)
    window = None if window_seconds is None else timedelta(seconds=window_seconds)
    for status in statuses:
        if status.is_stalled(window):
            state = "[bold red]STALLED[/]"
        elif status.lag is None:
            state = "[yellow]unknown[/]"
        elif status.lag:
            state = "behind"
        else:
            state = "[green]ok[/]"
        if status.note:
            state += f" ({escape(status.note)})"
        last = "never" if status.last_commit_at is None else _format_time(status.last_commit_at)
        if status.last_commit_at is not None:
            last += f" ({_format_age(status.observed_at - status.last_commit_at)} ago)"
        table.add_row(
            escape(status.stream),
            escape(status.topic),
            _text(status.partition),
            _text(status.end_offset),
            _text(status.fence),
            _text(status.lag),
            _format_age(status.open_batch_age) if status.open_batch_age is not None else "-",
            last,
            state,
        )
    return table


def _text(value: int | None) -> str:
    return "-" if value is None else str(value)


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _format_age(age: timedelta | None) -> str:
    if age is None:
        return "-"
    seconds = max(0, int(age.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def _aware_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"the clock must return aware datetimes, got {moment.isoformat()}")
    return moment.astimezone(UTC)


def _last_commits(
    batches_path: LakeTable, streams: Sequence[str]
) -> dict[tuple[str, str, int], datetime]:
    """Newest ``committed_at`` per (stream, topic, partition) from ``batches``."""
    if not batches_path.exists():
        return {}
    rows = (
        batches_path.open()
        .to_pyarrow_dataset()
        .to_table(
            columns=["stream", "topic", "partition", "committed_at"],
            filter=pc.field("stream").isin(list(streams)),
        )
    )
    if rows.num_rows == 0:
        return {}
    newest = rows.group_by(["stream", "topic", "partition"]).aggregate([("committed_at", "max")])
    return {
        (stream, topic, int(partition)): committed.astimezone(UTC)
        for stream, topic, partition, committed in zip(
            newest.column("stream").to_pylist(),
            newest.column("topic").to_pylist(),
            newest.column("partition").to_pylist(),
            newest.column("committed_at_max").to_pylist(),
            strict=True,
        )
    }


def _fences(lake: DeltaLake, topic: str, partitions: set[int]) -> dict[int, int | None]:
    """Fence per partition, reading the Delta log once."""
    if not partitions:
        return {}
    if not lake.table_path.exists():
        return dict.fromkeys(partitions)
    table = lake.table_path.open()
    fences: dict[int, int | None] = {}
    for partition in partitions:
        version = table.transaction_version(lake.app_id(topic, partition))
        fences[partition] = None if version is None else int(version)
    return fences


def _topic_partitions(connection: dict[str, str], topic: str) -> list[int] | None:
    """The topic's partitions, or ``None`` if it does not exist (never creating it).

    Raises:
        KafkaUnreachable: the cluster did not answer.
    """
    try:
        described = describe_topic(connection, topic, timeout_seconds=_KAFKA_TIMEOUT_SECONDS)
    except TopicUnavailable:
        return None
    return sorted(described.partitions) or None


def _probe_topic(
    connection: dict[str, str], topic: str, fences: dict[int, int | None]
) -> _TopicProbe:
    """Listed watermarks, plus one fetch at each fence: first record and true end.

    A fetch response carries the partition's high watermark, which corrects
    brokers whose listed offsets lag (the embedded Tansu reports the base offset
    of the last record batch + 1); a record read at the fence proves lag > 0.
    """
    consumer = new_consumer(
        {
            **connection,
            "group.id": "streambatch-status",  # required by librdkafka; no group is joined
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            "enable.partition.eof": "true",
            "allow.auto.create.topics": "false",
            # A fence outside the topic's offsets is reported, never silently moved.
            "auto.offset.reset": "error",
            # Only the first record per partition is wanted: keep the prefetch small.
            "fetch.max.bytes": str(1024 * 1024),
            "max.partition.fetch.bytes": str(256 * 1024),
            "queued.max.messages.kbytes": str(1024),
        }
    )
    probes = {partition: _Probe() for partition in fences}
    try:
        for partition, probe in probes.items():
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=_KAFKA_TIMEOUT_SECONDS
                )
            except KafkaException as exc:
                raise StreambatchError(
                    f"cannot read the offsets of {topic}/{partition}: {exc}"
                ) from None
            probe.low, probe.listed_high = int(low), int(high)
        consumer.assign(
            [
                TopicPartition(topic, p, OFFSET_BEGINNING if fence is None else fence)
                for p, fence in fences.items()
            ]
        )
        deadline = time.monotonic() + _PROBE_SECONDS
        while not all(p.done for p in probes.values()) and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.2):
                number = message.partition()
                target = probes.get(number) if number is not None else None
                if target is None:
                    continue  # not about one of our partitions (e.g. a client-wide error)
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        # The EOF event's offset is the end the fetch saw.
                        target.fetched_high = max(target.fetched_high, int(message.offset() or 0))
                    else:
                        target.error = f"fetch at the fence failed: {error.str()}"
                    target.done = True
                    continue
                offset = int(message.offset() or 0)
                target.max_seen = max(target.max_seen, offset)
                if target.first_offset is None:
                    target.first_offset = offset
                    kind, millis = message.timestamp()
                    if kind != TIMESTAMP_NOT_AVAILABLE and millis >= 0:
                        target.first_timestamp = datetime.fromtimestamp(millis / 1000, tz=UTC)
                target.done = True
        for partition, probe in probes.items():
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            probe.fetched_high = max(probe.fetched_high, int(high))
            if not probe.done and not probe.error:
                probe.error = f"no fetch answer in {_PROBE_SECONDS:.0f} s"
    finally:
        consumer.close()
    return _TopicProbe(partitions=probes)
