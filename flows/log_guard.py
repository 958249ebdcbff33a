"""Check that every fence belongs to the broker's log; accept a new log on an operator's word.

:func:`check_logs` runs when a flow starts: it records the topic id of a
partition's first log before anything is committed for it, and reports every
partition whose fence does not fit the broker's log (see
:mod:`connectors.kafka_log`). :func:`accept_logs` is ``streambatch
accept-log``: it records the new log in the lake, with the offsets given up
as lost, and moves the fence to the new log's start.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from connectors.kafka_clients import describe_topic
from connectors.kafka_log import (
    BrokerLog,
    LogMismatch,
    compare_log,
    read_broker_log,
    record_value_at,
    topic_id,
)
from events.stream import StreamSchema
from flows.record_validation import value_digest
from foundation.clock import Clock, utc_now
from foundation.errors import TerminalError
from sinks.delta_lake import DeltaLake
from sinks.source_logs import LogGeneration, SourceLogs

__all__ = ["AcceptedLog", "accept_logs", "check_logs", "mismatch_line"]


@dataclass(frozen=True, slots=True)
class AcceptedLog:
    """What ``accept-log`` did to one partition (``generation`` None: nothing to accept)."""

    topic: str
    partition: int
    fence: int | None
    broker: BrokerLog
    generation: LogGeneration | None

    def summary(self) -> str:
        """One line for the operator."""
        where = f"{self.topic}/{self.partition}"
        accepted = self.generation
        if accepted is None:
            return f"{where}: fence {self.fence} belongs to the broker's log; nothing to accept"
        lost = (
            f"offsets [{accepted.lost_from}, {accepted.lost_until}) given up as lost"
            if accepted.lost
            else "no offsets given up"
        )
        return (
            f"{where}: accepted log {accepted.topic_id} (generation {accepted.generation}); "
            f"fence {self.fence} -> {accepted.start_offset}; {lost}"
        )


def mismatch_line(stream: str, mismatches: list[LogMismatch]) -> str:
    """One line for all mismatches: the first in full, the others by partition."""
    line = mismatches[0].line(stream)
    others = [str(m.partition) for m in mismatches[1:]]
    if others:
        line += f" (also partitions {', '.join(others)}; omit --partition to accept all)"
    return line


def _partitions(connection: dict[str, str], topic: str) -> list[int]:
    return sorted(describe_topic(connection, topic).partitions)


def check_logs(
    stream: StreamSchema,
    lake: DeltaLake,
    connection: dict[str, str],
    topic: str,
    *,
    now: Clock = utc_now,
) -> list[LogMismatch]:
    """Every partition of ``topic`` whose fence does not belong to the broker's log.

    Side effects, both before any record of the partition is committed or
    read: a partition without a recorded log gets its topic id recorded
    (``first-read``; ``adopted`` for a fence committed before identities were
    recorded, if the fence fits the log), and a ``batches`` fence left ahead by
    an interrupted ``accept-log`` is set to the accepted start.
    """
    logs = SourceLogs(lake, stream)
    identity = topic_id(connection, topic)
    history = logs.history(topic)
    mismatches = []
    for partition in _partitions(connection, topic):
        current = _current(history, partition)
        logs.align_batch_log(current)
        fence = lake.fence(topic, partition)
        broker = read_broker_log(connection, topic, partition, fence, identity)
        mismatch = _mismatch(lake, connection, topic, partition, fence, current, broker)
        if mismatch is not None:
            # The watermark may under-report the end: the line shows the fetched one.
            exact = read_broker_log(connection, topic, partition, fence, identity, exact=True)
            mismatches.append(replace(mismatch, broker=exact))
        elif current is None or (fence is None and current.topic_id != identity):
            # Nothing committed yet (or nothing ever fenced on the recorded log):
            # this log is the one the first fence will belong to.
            first = LogGeneration(
                stream=stream.name,
                topic=topic,
                partition=partition,
                generation=1 if current is None else current.generation + 1,
                topic_id=identity,
                start_offset=broker.low if fence is None else fence,
                reason="first-read" if fence is None else "adopted",
                previous_topic_id=None,
                previous_fence=None,
                lost_from=None,
                lost_until=None,
                recorded_at=now(),
            )
            logs.record(first, fence=None)
    return mismatches


def accept_logs(
    stream: StreamSchema,
    lake: DeltaLake,
    connection: dict[str, str],
    topic: str,
    partition: int | None = None,
    *,
    now: Clock = utc_now,
) -> list[AcceptedLog]:
    """Accept the broker's log for mismatched partitions (all, or ``partition``).

    A new log (another topic id, or one shorter than the fence) is read from
    its low watermark, or from its end if only the records past the end were
    lost with the same id; offsets below the low watermark that the lake never
    read are recorded as given up (lost). Partitions whose fence fits are left
    alone. Run it while the stream's flow is stopped.
    """
    logs = SourceLogs(lake, stream)
    identity = topic_id(connection, topic)
    history = logs.history(topic)
    partitions = _partitions(connection, topic)
    if partition is not None and partition not in partitions:
        raise TerminalError(f"topic {topic!r} has no partition {partition}")
    results = []
    for number in partitions if partition is None else [partition]:
        current = _current(history, number)
        logs.align_batch_log(current)
        fence = lake.fence(topic, number)
        recorded = None if current is None else current.topic_id
        broker = read_broker_log(connection, topic, number, fence, identity)
        mismatch = _mismatch(lake, connection, topic, number, fence, current, broker)
        if mismatch is None or fence is None:
            results.append(AcceptedLog(topic, number, fence, broker, None))
            continue
        changed = (recorded is not None and recorded != identity) or mismatch.detail is not None
        if changed or fence < broker.low:
            start = broker.low
            lost_from = 0 if changed else fence
        else:
            start = broker.high  # same log, its end below the fence: new records from there
            lost_from = start
        accepted = LogGeneration(
            stream=stream.name,
            topic=topic,
            partition=number,
            generation=(0 if current is None else current.generation) + 1,
            topic_id=identity,
            start_offset=start,
            reason="accepted",
            previous_topic_id=recorded,
            previous_fence=fence,
            lost_from=lost_from if start > lost_from else None,
            lost_until=start if start > lost_from else None,
            recorded_at=now(),
        )
        logs.record(accepted, fence=start)
        results.append(AcceptedLog(topic, number, fence, broker, accepted))
    return results


def _mismatch(
    lake: DeltaLake,
    connection: dict[str, str],
    topic: str,
    partition: int,
    fence: int | None,
    current: LogGeneration | None,
    broker: BrokerLog,
) -> LogMismatch | None:
    """:func:`compare_log`, plus a value check where no topic id was recorded yet.

    A lake committed before topic ids were recorded has only its offsets to
    go by: its last row must still be the record the broker holds at that
    offset (same value digest), else the log is another one.
    """
    recorded = None if current is None else current.topic_id
    mismatch = compare_log(topic, partition, fence, recorded, broker)
    if mismatch is not None or current is not None or fence is None:
        return mismatch
    last = lake.last_row_digest(topic, partition, fence)
    if last is None or last[0] < broker.low:
        return None  # nothing to compare (no row, or retention removed the record since)
    offset, digest = last
    value = record_value_at(connection, topic, partition, offset)
    if value is not None and value_digest(value) == digest:
        return None
    detail = f"the record at offset {offset} is not the one the lake holds (value digest differs)"
    return LogMismatch(topic, partition, fence, recorded, broker, detail)


def _current(history: list[LogGeneration], partition: int) -> LogGeneration | None:
    records = [record for record in history if record.partition == partition]
    return records[-1] if records else None
