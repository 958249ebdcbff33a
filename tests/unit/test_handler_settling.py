"""When a consumer loop counts as settled: assigned, read to the end, nothing waiting."""

from __future__ import annotations

import time

from handlers.kafka_io import Activity, QuietClock


def test_not_settled_before_assignment_nor_before_every_partition_end() -> None:
    activity = Activity()
    assert not activity.settled
    assert activity.describe() == "no partitions assigned yet"
    activity.assign([("work", 0), ("work", 1)])
    assert not activity.settled
    activity.reached_end(("work", 0))
    assert not activity.settled
    assert "work/1" in activity.describe()
    activity.reached_end(("work", 1))
    assert activity.settled


def test_a_record_or_a_write_to_an_own_partition_means_more_to_read() -> None:
    activity = Activity()
    activity.assign([("work", 0), ("work.retry.200ms", 0)])
    activity.reached_end(("work", 0))
    activity.reached_end(("work.retry.200ms", 0))
    activity.more_to_read([("other", 3)])  # not ours: another member reads it
    assert activity.settled
    activity.more_to_read([("work.retry.200ms", 0)])
    assert not activity.settled
    activity.reached_end(("work.retry.200ms", 0))
    assert activity.settled


def test_a_waiting_retry_or_work_in_progress_is_not_settled() -> None:
    activity = Activity()
    activity.assign([("work.retry.5000ms", 0)])
    activity.reached_end(("work.retry.5000ms", 0))
    activity.wait_on(("work.retry.5000ms", 0), True)
    assert not activity.settled
    assert "retries waiting on: work.retry.5000ms/0" in activity.describe()
    activity.wait_on(("work.retry.5000ms", 0), False)
    assert activity.settled
    with activity.busy():
        assert not activity.settled
    assert activity.settled


def test_an_empty_assignment_is_settled_and_a_rebalance_is_not() -> None:
    activity = Activity()
    activity.assign([])
    assert activity.settled  # more members than partitions: nothing to read
    activity.revoke()
    assert not activity.settled  # until the group hands out the partitions again
    activity.assign([])
    assert activity.settled


def test_the_quiet_clock_starts_when_the_condition_holds_and_resets_when_it_breaks() -> None:
    clock = QuietClock()
    assert clock.held_for(False) == 0.0
    assert clock.held_for(True) < 0.05
    time.sleep(0.05)
    assert clock.held_for(True) >= 0.05
    assert clock.held_for(False) == 0.0
    assert clock.held_for(True) < 0.05
