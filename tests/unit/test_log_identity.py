"""Pure logic of the log identity: when a fence does not fit a log, and what verify counts lost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from connectors.kafka_log import BrokerLog, compare_log
from flows.record_validation import value_digest
from sinks.source_logs import LogGeneration
from streambatch.verify import PartitionReport, reconcile_partition

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    """A consumed record as reconciliation reads it."""

    number: int
    payload: bytes

    def offset(self) -> int:
        return self.number

    def value(self) -> bytes:
        return self.payload


def record(offset: int, log: str = "a") -> Record:
    return Record(offset, orjson.dumps({"event_id": f"{log}-{offset}"}))


def rows_of(records: list[Record]) -> Counter[tuple[int, int]]:
    return Counter((r.number, value_digest(r.payload)) for r in records)


def generation(
    number: int,
    topic_id: str,
    start: int,
    reason: str,
    *,
    previous_topic_id: str | None = None,
    previous_fence: int | None = None,
    lost_from: int | None = None,
    lost_until: int | None = None,
) -> LogGeneration:
    return LogGeneration(
        stream="orders",
        topic="orders",
        partition=0,
        generation=number,
        topic_id=topic_id,
        start_offset=start,
        reason=reason,
        previous_topic_id=previous_topic_id,
        previous_fence=previous_fence,
        lost_from=lost_from,
        lost_until=lost_until,
        recorded_at=T0 + timedelta(hours=number),
    )


# compare_log: the fence fits the log, or names what does not.


def test_a_fence_inside_the_log_with_its_topic_id_fits() -> None:
    broker = BrokerLog("A", low=0, high=300)
    assert compare_log("orders", 0, 100, "A", broker) is None
    assert compare_log("orders", 0, 300, "A", broker) is None  # caught up
    assert compare_log("orders", 0, None, "B", broker) is None  # nothing committed yet


def test_a_recreated_topic_is_a_mismatch_even_with_the_fence_inside_it() -> None:
    mismatch = compare_log("orders", 1, 100, "A", BrokerLog("B", low=0, high=300))
    assert mismatch is not None
    line = mismatch.line("orders")
    assert line.startswith("orders/1: the lake's fence 100 ")
    assert "(low 0, high 300)" in line and "topic id is B" in line and "A" in line
    assert line.endswith("streambatch accept-log --stream orders --partition 1")
    assert "\n" not in line


def test_a_fence_past_the_end_or_below_the_start_is_a_mismatch() -> None:
    shorter = compare_log("orders", 0, 100, "A", BrokerLog("A", low=0, high=30))
    assert shorter is not None and "shorter" in shorter.reason
    removed = compare_log("orders", 0, 100, "A", BrokerLog("A", low=150, high=300))
    assert removed is not None and "removed before the lake read them" in removed.reason
    # Not recorded yet (a lake older than identities): the offsets alone decide.
    assert compare_log("orders", 0, 100, None, BrokerLog("A", low=150, high=300)) is not None
    assert compare_log("orders", 0, 100, None, BrokerLog("A", low=0, high=300)) is None


# reconcile_partition: what the lake and the dead letters cover decides, not the fence.


def reconcile(
    fence: int,
    messages: list[Record],
    stored: Counter[tuple[int, int]],
    generations: list[LogGeneration],
    batches: list[tuple[int, int, datetime]],
    dead: dict[int, set[int]] | None = None,
) -> PartitionReport:
    report = PartitionReport(0, fence=fence)
    ids: Counter[str] = Counter()
    reconcile_partition(report, messages, stored, dead or {}, ids, generations, batches)
    return report


def test_records_removed_before_the_lake_read_them_are_lost() -> None:
    # The lake read [0, 100); retention removed [0, 150) since; the fence was
    # moved to 150 by accept-log, which gave [100, 150) up.
    old = [record(o) for o in range(100)]
    held = [record(o) for o in range(150, 200)]
    generations = [
        generation(1, "A", 0, "first-read"),
        generation(
            2,
            "A",
            150,
            "accepted",
            previous_topic_id="A",
            previous_fence=100,
            lost_from=100,
            lost_until=150,
        ),
    ]
    report = reconcile(200, held, rows_of(old + held), generations, [(0, 100, T0)])
    assert report.removed_unread == list(range(100, 150))
    assert report.lost == []
    assert [g.generation for g in report.given_up] == [2]


def test_offsets_the_topic_no_longer_holds_are_fine_when_the_lake_covers_them() -> None:
    old = [record(o) for o in range(100)]
    held = [record(o) for o in range(50, 100)]  # [0, 50) removed after the lake read them
    # Offsets 10 and 11 hold no row: dropped duplicates inside a committed batch.
    stored = rows_of([r for r in old if r.number not in (10, 11)])
    report = reconcile(
        100, held, stored, [generation(1, "A", 0, "first-read")], [(0, 60, T0), (60, 100, T0)]
    )
    assert report.removed_unread == [] and report.lost == []
    assert report.rows == 50


def test_a_gap_no_batch_read_across_and_nothing_covers_is_lost() -> None:
    old = [record(o) for o in range(100)]
    stored = rows_of([r for r in old if not 40 <= r.number < 45])
    # The topic lost [0, 50): only what the lake covers counts, not the fence.
    report = reconcile(
        100, old[50:], stored, [generation(1, "A", 0, "first-read")], [(0, 40, T0), (45, 100, T0)]
    )
    assert report.removed_unread == [40, 41, 42, 43, 44]


def test_rows_of_another_log_do_not_count_for_the_records_at_their_offsets() -> None:
    # The lake holds offsets [0, 100) of log A; the topic now is log B with
    # [0, 300), read from 100 on (what a silent skip looks like).
    old = [record(o, "a") for o in range(100)]
    new = [record(o, "b") for o in range(300)]
    stored = rows_of(old)
    for r in new[100:]:
        stored[(r.number, value_digest(r.payload))] += 1
    report = reconcile(300, new, stored, [generation(1, "A", 0, "first-read")], [(0, 300, T0)])
    assert report.lost == list(range(100))
    assert report.rows == 200


def test_after_an_accepted_new_log_old_rows_and_batches_do_not_cover_it() -> None:
    old = [record(o, "a") for o in range(100)]
    new = [record(o, "b") for o in range(50, 80)]  # the new log lost [0, 50) before it was read
    generations = [
        generation(1, "A", 0, "first-read"),
        generation(
            2,
            "B",
            50,
            "accepted",
            previous_topic_id="A",
            previous_fence=100,
            lost_from=0,
            lost_until=50,
        ),
    ]
    stored = rows_of(old)  # the old log's rows at the same offsets stay in the lake
    for r in new:
        stored[(r.number, value_digest(r.payload))] += 1
    old_batch = (0, 100, T0)
    new_batch = (50, 80, T0 + timedelta(hours=3))
    report = reconcile(80, new, rows_of(old), generations, [old_batch, new_batch])
    # Only the new log's records count: none of them is in the lake here.
    assert report.lost == list(range(50, 80))
    assert report.removed_unread == list(range(50))
    report = reconcile(80, new, stored, generations, [old_batch, new_batch])
    assert report.lost == [] and report.rows == 30 and report.duplicated_offsets == []
    assert report.removed_unread == list(range(50))
