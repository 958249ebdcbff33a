"""Backpressure accounting: exact to the record, never stuck below the limit."""

from __future__ import annotations

from connectors.backpressure import CommitBoard, InFlightLimiter


def limiter(board: CommitBoard, max_bytes: int = 100) -> InFlightLimiter:
    return InFlightLimiter("orders", 0, max_bytes, lambda _t, _p: None, board=board)


def test_counts_read_bytes_until_committed() -> None:
    board = CommitBoard()
    tracker = limiter(board)
    tracker.record_read([0, 1, 2], [10, 20, 30])
    assert tracker.in_flight_bytes() == 60
    board.publish("orders", 0, 3)
    assert tracker.in_flight_bytes() == 0


def test_fence_inside_a_chunk_releases_exactly_the_committed_records() -> None:
    board = CommitBoard()
    tracker = limiter(board, max_bytes=50)
    tracker.record_read([5, 6, 7, 8], [10, 20, 30, 40])
    assert tracker.must_wait()
    board.publish("orders", 0, 7)  # offsets 5 and 6 committed
    assert tracker.in_flight_bytes() == 70
    tracker.record_read([9], [5])
    board.publish("orders", 0, 9)
    assert tracker.in_flight_bytes() == 5
    assert not tracker.must_wait()


def test_unknown_partition_falls_back_to_the_lake_fence() -> None:
    fences: dict[str, int | None] = {"value": None}
    tracker = InFlightLimiter(
        "orders", 1, 10, lambda _t, _p: fences["value"], board=CommitBoard(), lake_poll_seconds=0
    )
    tracker.record_read([0, 1], [8, 8])
    assert tracker.must_wait()
    fences["value"] = 2
    assert not tracker.must_wait()


def test_board_never_moves_backwards() -> None:
    board = CommitBoard()
    board.publish("orders", 0, 10)
    board.publish("orders", 0, 4)
    assert board.get("orders", 0) == 10
    assert board.get("orders", 1) is None
