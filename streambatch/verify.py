"""``streambatch verify``: reconcile a topic against the lake and its dead letters.

Every offset below a partition's fence must be accounted for exactly once:
a lake row, a dead letter, or a duplicate whose event id is in the lake.
Offsets at or past the fence are not consumed yet (lag), not lost.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson
import pyarrow.compute as pc
from confluent_kafka import Message
from rich.table import Table

from config.settings import StreamSettings
from events.stream import StreamSchema
from sinks.delta_lake import DeltaLake
from sinks.lake_location import lake_location_of
from streambatch.dead_letter_tools import read_topic, source_of

__all__ = ["PartitionReport", "VerifyReport", "verify_stream"]

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

    @property
    def lag(self) -> int:
        """Records not consumed yet (at or past the fence)."""
        return self.records - (self.fence or 0)


@dataclass
class VerifyReport:
    """Per-partition reports plus event ids stored more than once."""

    topic: str
    partitions: list[PartitionReport]
    duplicated_ids: dict[str, int]

    @property
    def lost(self) -> int:
        """Offsets below the fence found nowhere."""
        return sum(len(p.lost) for p in self.partitions)

    @property
    def duplicated(self) -> int:
        """Extra lake rows: an event id or a source offset stored more than once."""
        extra_ids = sum(count - 1 for count in self.duplicated_ids.values())
        return extra_ids + sum(len(p.duplicated_offsets) for p in self.partitions)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing duplicated, nothing committed past a fence."""
        past = sum(len(p.rows_past_fence) for p in self.partitions)
        return self.lost == 0 and self.duplicated == 0 and past == 0

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
                str(len(p.lost)),
                str(len(p.duplicated_offsets)),
            )
        return table

    def offenders(self) -> list[str]:
        """Human-readable lines naming what is off (at most a few per kind)."""
        lines = []
        for p in self.partitions:
            if p.lost:
                lines.append(f"{self.topic}/{p.partition}: lost offsets {p.lost[:_MAX_OFFENDERS]}")
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


def _event_id(message: Message) -> str | None:
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
    dead: Counter[tuple[int, int]] = Counter()
    for letter in read_topic(connection, settings.dead_letter_topic):
        source = source_of(letter)
        if source is not None and source[0] == topic:
            dead[(source[1], source[2])] += 1
    rows = None
    if lake.table_path.exists():
        rows = (
            lake.table_path.open()
            .to_pyarrow_dataset()
            .to_table(
                columns=["event_id", "_partition", "_offset"], filter=pc.field("_topic") == topic
            )
        )
    ids: Counter[str] = Counter()
    stored: Counter[tuple[int, int]] = Counter()
    if rows is not None:
        ids.update(rows.column("event_id").to_pylist())
        stored.update(
            zip(
                rows.column("_partition").to_pylist(),
                rows.column("_offset").to_pylist(),
                strict=True,
            )
        )
    by_partition: dict[int, list[Message]] = {}
    for message in records:
        by_partition.setdefault(int(message.partition() or 0), []).append(message)
    reports = []
    for partition in sorted(set(by_partition) | {p for p, _ in stored}):
        report = PartitionReport(partition, fence=lake.fence(topic, partition))
        fence = report.fence or 0
        for message in by_partition.get(partition, []):
            offset = int(message.offset() or 0)
            report.records += 1
            if offset >= fence:
                if stored[(partition, offset)]:
                    report.rows_past_fence.append(offset)
                continue
            if stored[(partition, offset)]:
                report.rows += 1
                if stored[(partition, offset)] > 1:
                    report.duplicated_offsets.append(offset)
            elif dead[(partition, offset)]:
                report.dead_letters += 1
            elif (event_id := _event_id(message)) is not None and ids[event_id]:
                report.duplicates_dropped += 1
            else:
                report.lost.append(offset)
        reports.append(report)
    duplicated_ids = {event_id: count for event_id, count in ids.items() if count > 1}
    return VerifyReport(topic, reports, duplicated_ids)
