"""Progress of a produce run on stderr: a rich bar on a terminal, else a line every 10%."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Final, Protocol

__all__ = ["LineProgress", "Progress", "RichProgress"]

_PROGRESS_CHUNK: Final = 1_024
_UNKNOWN_TOTAL_LINE_EVERY: Final = 100_000


class Progress(Protocol):
    """Told how many records are acknowledged so far; draws when it is worth it."""

    def update(self, produced: int, *, force: bool = False) -> None: ...


class RichProgress:
    """A rich progress bar on stderr."""

    def __init__(self, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import Progress as ProgressBar

        self._progress = ProgressBar(console=Console(stderr=True), transient=False)
        self._task = self._progress.add_task("acknowledged", total=total)
        self._shown = 0

    def __enter__(self) -> Progress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, produced: int, *, force: bool = False) -> None:
        # Refresh every chunk: a lock round trip per record would cost throughput.
        if force or produced - self._shown >= _PROGRESS_CHUNK:
            self._shown = produced
            self._progress.update(self._task, completed=produced)


class LineProgress:
    """A plain line on stderr every 10% (every 100,000 records if the total is unknown)."""

    def __init__(self, total: int | None) -> None:
        self._total = total
        self._next_line = self._threshold(1)
        self._step = 1
        self._last_printed = -1

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def update(self, produced: int, *, force: bool = False) -> None:
        if produced >= self._next_line:
            while produced >= self._next_line:
                self._step += 1
                self._next_line = self._threshold(self._step)
            self._print(produced)
        elif force and produced != self._last_printed:
            self._print(produced)

    def _threshold(self, step: int) -> int:
        if self._total is None:
            return step * _UNKNOWN_TOTAL_LINE_EVERY
        if step > 10:
            return sys.maxsize
        # Ceiling of step/10 of the total, and at least 1 record.
        return max(1, -(-self._total * step // 10))

    def _print(self, produced: int) -> None:
        self._last_printed = produced
        if self._total:
            line = (
                f"acknowledged {produced:,}/{self._total:,} records "
                f"({100 * produced // self._total}%)"
            )
        else:
            line = f"acknowledged {produced:,} records"
        print(line, file=sys.stderr, flush=True)
