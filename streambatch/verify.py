"""``streambatch verify``: reconcile a topic against the lake and its dead letters.

Every offset below a partition's fence must be accounted for exactly once:
a lake row holding that record (same offset and value digest), a dead
letter, or a duplicate whose event id is in the lake. Offsets at or past the
fence are not consumed yet (lag), not lost.

Offsets below the fence that the topic no longer holds (removed by retention,
or a log that started again) are accounted for by what the lake and the dead
letters cover, never by the fence alone: a lake row or dead letter at that
offset, or a committed batch whose range the flow read across (transaction
markers and compaction leave such gaps). Anything else was removed before the
lake read it and is reported as lost, also when ``accept-log`` gave it up.
Lake rows of an earlier log (before an accepted log change) are told from the
current log's by their value digest and the batches committed since.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import orjson
import pyarrow.compute as pc
from confluent_kafka import Message
from rich.table import Table

from config.settings import StreamSettings
from connectors.kafka_log import topic_id
from events.stream import StreamSchema
from flows.record_validation import value_digest
from foundation.errors import StreambatchError
from sinks.delta_lake import DeltaLake
from sinks.lake_location import lake_location_of
from sinks.source_logs import LogGeneration, SourceLogs
from streambatch.dead_letter_tools import read_topic, source_of

__all__ = [
    "PartitionReport",
    "SourceRecord",
    "VerifyReport",
    "reconcile_partition",
    "verify_stream",
]

_MAX_OFFENDERS = 20


@dataclass
class PartitionReport:
    """The reconciliation of one Kafka partition."""

    partition: int
    records: int = 0
    fence: int | None = None
    rows: int = 0
    dead_letters: int = 0
    duplicates_dropped: int = 0
    lost: list[int] = field(default_factory=list)
    duplicated_offsets: list[int] = field(default_factory=list)
    rows_past_fence: list[int] = field(default_factory=list)
    end: int = 0
    removed_unread: list[int] = field(default_factory=list)
    given_up: list[LogGeneration] = field(default_factory=list)
    log_mismatch: str | None = None

    @property
    def lag(self) -> int:
        """Offsets not consumed yet (from the fence to the end of the log)."""
        return max(0, self.end - (self.fence or 0))


@dataclass
class VerifyReport:
    """Per-partition reports plus event ids stored more than once."""

    topic: str
    partitions: list[PartitionReport]
    duplicated_ids: dict[str, int]

    @property
    def lost(self) -> int:
        """Offsets below the fence found nowhere (records, and offsets removed unread)."""
        return sum(len(p.lost) + len(p.removed_unread) for p in self.partitions)

    @property
    def duplicated(self) -> int:
        """Extra lake rows: an event id or a source offset stored more than once."""
        extra_ids = sum(count - 1 for count in self.duplicated_ids.values())
        return extra_ids + sum(len(p.duplicated_offsets) for p in self.partitions)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing duplicated, nothing committed past a fence."""
        past = sum(len(p.rows_past_fence) for p in self.partitions)
        mismatched = any(p.log_mismatch for p in self.partitions)
        return self.lost == 0 and self.duplicated == 0 and past == 0 and not mismatched

    def render(self) -> Table:
        """A rich table, one row per partition."""
        table = Table(
            title=f"verify {self.topic}: lost = {self.lost}, duplicated = {self.duplicated}"
        )
        for name in (
            "partition",
            "records",
            "fence",
            "lag",
            "lake rows",
            "dead letters",
            "duplicates dropped",
            "lost",
            "duplicated",
        ):
            table.add_column(name, justify="right")
        for p in self.partitions:
            table.add_row(
                str(p.partition),
                str(p.records),
                str(p.fence),
                str(p.lag),
                str(p.rows),
                str(p.dead_letters),
                str(p.duplicates_dropped),
                str(len(p.lost) + len(p.removed_unread)),
                str(len(p.duplicated_offsets)),
            )
        return table

    def offenders(self) -> list[str]:
        """Human-readable lines naming what is off (at most a few per kind)."""
        lines = []
        for p in self.partitions:
            if p.log_mismatch:
                lines.append(f"{self.topic}/{p.partition}: {p.log_mismatch}")
            if p.lost:
                lines.append(f"{self.topic}/{p.partition}: lost offsets {p.lost[:_MAX_OFFENDERS]}")
            if p.removed_unread:
                ranges = _ranges(p.removed_unread)[:_MAX_OFFENDERS]
                spans = ", ".join(f"[{low}, {high})" for low, high in ranges)
                lines.append(
                    f"{self.topic}/{p.partition}: lost offsets {spans}: removed from the "
                    "topic before the lake read them"
                )
            for change in p.given_up:
                lines.append(
                    f"{self.topic}/{p.partition}: accept-log at {change.recorded_at.isoformat()} "
                    f"gave up offsets [{change.lost_from}, {change.lost_until}) of log "
                    f"{change.topic_id} (fence was {change.previous_fence})"
                )
            if p.duplicated_offsets:
                lines.append(
                    f"{self.topic}/{p.partition}: offsets stored twice "
                    f"{p.duplicated_offsets[:_MAX_OFFENDERS]}"
                )
            if p.rows_past_fence:
                past = p.rows_past_fence[:_MAX_OFFENDERS]
                lines.append(f"{self.topic}/{p.partition}: rows past the fence {past}")
        for event_id, count in list(self.duplicated_ids.items())[:_MAX_OFFENDERS]:
            lines.append(f"event id {event_id!r} stored {count} times")
        return lines


class SourceRecord(Protocol):
    """What reconciliation reads of a consumed record (a confluent-kafka ``Message``)."""

    def offset(self) -> int | None: ...

    def value(self) -> bytes | None: ...


def _event_id(message: SourceRecord) -> str | None:
    try:
        document = orjson.loads(message.value() or b"")
    except orjson.JSONDecodeError:
        return None
    value = document.get("event_id") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def verify_stream(
    stream: StreamSchema, settings: StreamSettings, connection: dict[str, str]
) -> VerifyReport:
    """Read the topic, the dead-letter topic and the lake; account for every offset."""
    topic = settings.topic
    lake = DeltaLake(lake_location_of(settings), stream)
    records = read_topic(connection, topic)
    dead: dict[int, dict[int, set[int]]] = {}
    for letter in read_topic(connection, settings.dead_letter_topic):
        source = source_of(letter)
        if source is not None and source[0] == topic:
            digests = dead.setdefault(source[1], {}).setdefault(source[2], set())
            digests.add(value_digest(letter.value() or b""))
    ids: Counter[str] = Counter()
    stored: dict[int, Counter[tuple[int, int]]] = {}
    if lake.table_path.exists():
        rows = (
            lake.table_path.open()
            .to_pyarrow_dataset()
            .to_table(
                columns=["event_id", "_partition", "_offset", "_value_digest"],
                filter=pc.field("_topic") == topic,
            )
        )
        ids.update(rows.column("event_id").to_pylist())
        for partition, offset, digest in zip(
            rows.column("_partition").to_pylist(),
            rows.column("_offset").to_pylist(),
            rows.column("_value_digest").to_pylist(),
            strict=True,
        ):
            stored.setdefault(partition, Counter())[(offset, digest)] += 1
    history = SourceLogs(lake, stream).history(topic)
    try:
        broker_topic_id: str | None = topic_id(connection, topic)
    except StreambatchError:
        broker_topic_id = None
    batches = _batch_ranges(lake, stream.name, topic)
    by_partition: dict[int, list[Message]] = {}
    for message in records:
        by_partition.setdefault(int(message.partition() or 0), []).append(message)
    reports = []
    for partition in sorted(set(by_partition) | set(stored) | set(batches)):
        generations = [g for g in history if g.partition == partition]
        report = PartitionReport(partition, fence=lake.fence(topic, partition))
        current = generations[-1] if generations else None
        if current is not None and broker_topic_id not in (None, current.topic_id):
            report.log_mismatch = (
                f"the lake's fence belongs to topic id {current.topic_id}, the broker's "
                f"topic has {broker_topic_id}: the flow will not read it until "
                f"`streambatch accept-log --stream {stream.name}`"
            )
        reconcile_partition(
            report,
            by_partition.get(partition, []),
            stored.get(partition, Counter()),
            dead.get(partition, {}),
            ids,
            generations,
            batches.get(partition, []),
        )
        reports.append(report)
    duplicated_ids = {event_id: count for event_id, count in ids.items() if count > 1}
    return VerifyReport(topic, reports, duplicated_ids)


def reconcile_partition(
    report: PartitionReport,
    messages: Sequence[SourceRecord],
    stored: Counter[tuple[int, int]],
    dead: dict[int, set[int]],
    ids: Counter[str],
    generations: list[LogGeneration],
    batches: list[tuple[int, int, datetime]],
) -> None:
    """Account for every offset of one partition below its fence (see module docstring).

    Args:
        report: the partition's report, with its fence; filled in here.
        messages: the records the topic holds now, in offset order.
        stored: how many lake rows hold each ``(offset, value digest)``.
        dead: value digests of the dead letters by source offset.
        ids: how many lake rows hold each event id.
        generations: the partition's logs in force (see ``sinks.source_logs``).
        batches: ``(first_offset, next_offset, committed_at)`` of each committed batch.
    """
    fence = report.fence or 0
    new_logs = [g for g in generations if _starts_new_log(g)]
    since = new_logs[-1].recorded_at if new_logs else None
    start = _log_start(generations, batches)
    report.given_up = [
        g for g in generations if g.lost and (since is None or g.recorded_at >= since)
    ]
    held: set[int] = set()
    for message in messages:
        offset = int(message.offset() or 0)
        held.add(offset)
        report.records += 1
        report.end = max(report.end, offset + 1)
        digest = value_digest(message.value() or b"")
        count = stored[(offset, digest)]
        if offset >= fence:
            if count:
                report.rows_past_fence.append(offset)
            continue
        if offset < start:
            continue  # before the lake started reading this log
        if count:
            report.rows += 1
            if count > 1:
                report.duplicated_offsets.append(offset)
        elif offset in dead and (since is None or digest in dead[offset]):
            # After a log change, only a letter of this very record counts.
            report.dead_letters += 1
        elif (event_id := _event_id(message)) is not None and ids[event_id]:
            report.duplicates_dropped += 1
        else:
            report.lost.append(offset)
    # Offsets the topic no longer holds: covered by the lake, or removed unread.
    read_across = sorted(
        (first, following)
        for first, following, committed_at in batches
        if since is None or committed_at > since
    )
    firsts = [first for first, _ in read_across]
    # The furthest a batch starting at or before each one reaches.
    reach = list(itertools.accumulate((following for _, following in read_across), max))
    stored_offsets = {offset for offset, _ in stored} if since is None else set()
    for offset in range(start, fence):
        if offset in held:
            continue
        if since is None and (offset in stored_offsets or offset in dead):
            continue  # read, then removed from the topic
        index = bisect.bisect_right(firsts, offset) - 1
        if index >= 0 and reach[index] > offset:
            continue  # inside a committed batch: a marker, compacted away, or dropped
        report.removed_unread.append(offset)


def _starts_new_log(generation: LogGeneration) -> bool:
    """An accepted log whose offsets restart (another topic id, or its end below the fence)."""
    if generation.reason != "accepted":
        return False
    moved_back = (generation.previous_fence or 0) > generation.start_offset
    return generation.previous_topic_id != generation.topic_id or moved_back


def _log_start(generations: list[LogGeneration], batches: list[tuple[int, int, datetime]]) -> int:
    """The first offset of the current log the lake is answerable for.

    A first log counts from where the lake started reading it (records removed
    before the lake existed are not its loss; for a lake from before logs were
    recorded, its first batch says where); a log accepted in place of another
    counts from 0 (what the lake missed of it is lost).
    """
    if any(_starts_new_log(g) for g in generations):
        return 0
    if generations and generations[0].reason == "first-read":
        return generations[0].start_offset
    return min((first for first, _, _ in batches), default=0)


def _batch_ranges(
    lake: DeltaLake, stream: str, topic: str
) -> dict[int, list[tuple[int, int, datetime]]]:
    """Per partition, the ``[first_offset, next_offset)`` of each committed batch and its time."""
    if not lake.batches_path.exists():
        return {}
    expression = (pc.field("stream") == stream) & (pc.field("topic") == topic)
    table = (
        lake.batches_path.open()
        .to_pyarrow_dataset()
        .to_table(
            columns=["partition", "first_offset", "next_offset", "committed_at"],
            filter=expression,
        )
    )
    ranges: dict[int, list[tuple[int, int, datetime]]] = {}
    for row in table.to_pylist():
        ranges.setdefault(row["partition"], []).append(
            (row["first_offset"], row["next_offset"], row["committed_at"])
        )
    return ranges


def _ranges(offsets: list[int]) -> list[tuple[int, int]]:
    """Sorted offsets as half-open ``[low, high)`` runs."""
    runs: list[tuple[int, int]] = []
    for offset in sorted(offsets):
        if runs and runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], offset + 1)
        else:
            runs.append((offset, offset + 1))
    return runs
