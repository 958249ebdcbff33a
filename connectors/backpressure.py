"""Commit progress shared between a process's sinks and sources (backpressure).

Bytewax has no backpressure: a source that reads faster than the lake commits
would buffer the whole topic in memory. Each source partition therefore stops
reading while the bytes it read past the committed fence exceed a limit. The
sink publishes every fence it commits on the process-wide :data:`commit_board`;
a source whose partition is committed by another process reads the fence from
the lake instead (rate-limited).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["CommitBoard", "InFlightLimiter", "commit_board"]


class CommitBoard:
    """Latest committed fence per ``(topic, partition)`` in this process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fences: dict[tuple[str, int], int] = {}

    def publish(self, topic: str, partition: int, fence: int) -> None:
        """Record that everything below ``fence`` is committed."""
        with self._lock:
            key = (topic, partition)
            self._fences[key] = max(fence, self._fences.get(key, fence))

    def get(self, topic: str, partition: int) -> int | None:
        """The fence, if a sink of this process committed the partition."""
        with self._lock:
            return self._fences.get((topic, partition))


commit_board = CommitBoard()
"""Process-wide mutable state, owned by this module: one board per process.

Written only by the lake sink (``sinks.lake_sink``), after each commit of a
partition; read by the fenced Kafka source's :class:`InFlightLimiter`, whose
default board it is. Tests give a limiter a board of its own.
"""


class InFlightLimiter:
    """Counts the bytes of one partition that were read but are not committed.

    The count is exact to the record (a fence may fall inside a chunk), so
    waiting can never deadlock: the open batch holds less than one window,
    hence a limit of two windows is only reached with a full closed batch on
    its way to the lake. ``read_lake_fence`` is only called when the board
    knows nothing of the partition, at most once per ``lake_poll_seconds``.
    """

    def __init__(
        self,
        topic: str,
        partition: int,
        max_bytes: int,
        read_lake_fence: Callable[[str, int], int | None],
        board: CommitBoard = commit_board,
        lake_poll_seconds: float = 0.25,
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._max_bytes = max_bytes
        self._read_lake_fence = read_lake_fence
        self._board = board
        self._lake_poll_seconds = lake_poll_seconds
        # Per chunk read: its offsets and the running byte total after each record
        # (an array: no Python int per record in flight).
        self._chunks: deque[tuple[list[int], npt.NDArray[np.int64]]] = deque()
        self._uncommitted_bytes = 0
        self._lake_fence: int | None = None
        self._lake_polled_at = 0.0

    def record_read(self, offsets: list[int], sizes: Sequence[int] | npt.NDArray[np.int64]) -> None:
        """A chunk of records (ascending offsets, their byte sizes) was read."""
        if offsets:
            running = np.cumsum(sizes, dtype=np.int64)
            self._chunks.append((offsets, running))
            self._uncommitted_bytes += int(running[-1])

    def in_flight_bytes(self) -> int:
        """Bytes read past the committed fence."""
        fence = self._fence()
        if fence is None:
            return self._uncommitted_bytes
        while self._chunks and self._chunks[0][0][0] < fence:
            offsets, running = self._chunks[0]
            committed = bisect_left(offsets, fence)  # records below the fence
            if committed == len(offsets):
                self._chunks.popleft()
                self._uncommitted_bytes -= int(running[-1])
                continue
            # The fence is inside this chunk: drop the committed head.
            head = int(running[committed - 1])
            self._chunks[0] = (offsets[committed:], running[committed:] - head)
            self._uncommitted_bytes -= head
            break
        return self._uncommitted_bytes

    def committed_fence(self) -> int | None:
        """The last fence seen (board or lake), without polling the lake."""
        fence = self._board.get(self._topic, self._partition)
        return fence if fence is not None else self._lake_fence

    def must_wait(self) -> bool:
        """Whether reading more would exceed the limit."""
        return self.in_flight_bytes() >= self._max_bytes

    def _fence(self) -> int | None:
        fence = self._board.get(self._topic, self._partition)
        if fence is not None:
            return fence
        now = time.monotonic()
        if now - self._lake_polled_at >= self._lake_poll_seconds:
            self._lake_polled_at = now
            self._lake_fence = self._read_lake_fence(self._topic, self._partition)
        return self._lake_fence
