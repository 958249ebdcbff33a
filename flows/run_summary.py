"""The one line a flow prints when it stops at the end of its topic.

``streambatch: orders flow stopped at the end: 5,000 records read (4,850 rows
written, 100 duplicates dropped, 50 dead letters) in 12 batches, 8.4 s``:
read from the flow's own counters, so it says what the metrics say. A flow
that failed prints its failure instead, never this line.
"""

from __future__ import annotations

import atexit
import sys
import time
from collections.abc import Callable
from types import TracebackType

from prometheus_client import REGISTRY, CollectorRegistry

__all__ = ["print_summary_at_exit", "summary_line"]


def _counter_total(registry: CollectorRegistry, name: str, stream: str, **labels: str) -> int:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            wanted = {"stream": stream, **labels}
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                total += sample.value
    return int(total)


def summary_line(stream: str, seconds: float, registry: CollectorRegistry = REGISTRY) -> str:
    """What this process's flow of ``stream`` did, in one line."""
    rows, duplicates, dead = (
        _counter_total(registry, "streambatch_records_total", stream, outcome=outcome)
        for outcome in ("valid", "duplicate", "invalid")
    )
    batches = _counter_total(registry, "streambatch_batches_committed_total", stream)
    return (
        f"streambatch: {stream} flow stopped at the end: {rows + duplicates + dead:,} records "
        f"read ({rows:,} rows written, {duplicates:,} duplicates dropped, {dead:,} dead "
        f"letters) in {batches:,} batches, {seconds:.1f} s"
    )


def print_summary_at_exit(
    stream: str, clock: Callable[[], float] = time.monotonic, registry: CollectorRegistry = REGISTRY
) -> None:
    """At a clean exit of this process, print :func:`summary_line` on stderr."""
    started = clock()
    failed = False
    previous_hook = sys.excepthook

    def note_failure(
        kind: type[BaseException], error: BaseException, traceback: TracebackType | None
    ) -> None:
        nonlocal failed
        failed = True
        previous_hook(kind, error, traceback)

    def report() -> None:
        if not failed:
            print(summary_line(stream, clock() - started, registry), file=sys.stderr, flush=True)

    # An uncaught error reaches the hook before the exit handlers run.
    sys.excepthook = note_failure
    atexit.register(report)
