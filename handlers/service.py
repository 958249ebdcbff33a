"""Run queue workers (one thread each, one outbox relay) and optionally the router here.

``SIGTERM``/``SIGINT`` stop them gracefully: the current message finishes,
stored offsets are committed, the outbox is drained. A component that fails
(dead-letter topic unwritable, store gone) stops the others and its error is
raised: the process exits non-zero rather than skip anything.

``until_idle_seconds`` stops everything once the whole workflow has settled:
every component has its partitions assigned, has read each of them to its
end, has nothing in work and no retry waiting, and the outbox is empty; and
all of that held for ``until_idle_seconds`` in a row (the clock never starts
before every assignment). ``settle_timeout_seconds`` bounds the wait: a
workflow that has not settled by then raises :class:`NotSettledError`
naming what is still open.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from foundation.errors import StreambatchError
from handlers.batch.service import build_batch_workers
from handlers.config import HandlersConfig
from handlers.kafka_io import QuietClock
from handlers.outbox import OutboxRelay
from handlers.router import EventRouter, RouterCounts
from handlers.rules import RuleSet
from handlers.schemas import event_schema
from handlers.store import Store, open_store
from handlers.worker import WorkerCounts, build_worker
from sinks.lake_location import LakeLocation

__all__ = ["NotSettledError", "ServiceResult", "build_router", "run_router", "run_workers"]

log = logging.getLogger(__name__)
_TICK_SECONDS = 0.25


class NotSettledError(StreambatchError):
    """The workflow did not settle in time; the message says which component is open."""


class _Component(Protocol):
    name: str

    @property
    def ready(self) -> threading.Event: ...

    @property
    def settled(self) -> bool: ...

    def describe(self) -> str: ...

    def stop(self) -> None: ...

    def run(self, until_idle_seconds: float | None = None) -> Any: ...


@dataclass
class ServiceResult:
    """Counts of every worker, and of the router when it ran here."""

    workers: dict[str, WorkerCounts]
    router: RouterCounts | None
    batch_handlers: dict[str, WorkerCounts] = field(default_factory=dict)


@contextmanager
def _stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop`` on SIGTERM/SIGINT while inside (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop()

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def build_router(config: HandlersConfig, connection: Mapping[str, str]) -> EventRouter:
    """The router of ``config``: its rules file, source topics and group."""
    return EventRouter(
        RuleSet.load(config.rules),
        config.source_topics,
        config.router_group,
        connection,
        dead_letter_topic=config.router_dead_letter_topic,
        schema=event_schema(config.publish_stream) if config.router_validates else None,
    )


def _run_all(
    components: Sequence[_Component],
    *,
    until_idle_seconds: float | None,
    settled: Callable[[], bool],
    on_ready: Callable[[], None] | None,
    settle_timeout_seconds: float | None = None,
) -> list[Any]:
    """Run each component in a thread until stopped, failed or settled; their results."""
    results: list[Any] = [None] * len(components)
    failures: list[BaseException] = []
    quiet = QuietClock()
    deadline = (
        time.monotonic() + settle_timeout_seconds if settle_timeout_seconds is not None else None
    )

    def stop_all() -> None:
        for component in components:
            component.stop()

    def run_one(index: int) -> None:
        try:
            results[index] = components[index].run(None)
        except BaseException as exc:
            log.exception("%s failed", type(components[index]).__name__)
            failures.append(exc)
            stop_all()

    threads = [
        threading.Thread(target=run_one, args=(i,), name=f"component-{i}", daemon=True)
        for i in range(len(components))
    ]
    announced = False
    with _stop_on_signals(stop_all):
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            time.sleep(_TICK_SECONDS)
            everyone_ready = all(c.ready.is_set() for c in components)
            if everyone_ready and not announced and on_ready is not None:
                announced = True
                on_ready()
            if until_idle_seconds is None or failures:
                continue
            calm = all(c.settled for c in components) and settled()
            if quiet.held_for(calm) >= until_idle_seconds:
                log.info("settled for %.1f s: stopping", until_idle_seconds)
                stop_all()
            elif deadline is not None and time.monotonic() > deadline:
                open_parts = (
                    "; ".join(f"{c.name}: {c.describe()}" for c in components if not c.settled)
                    or "outbox not empty"
                )
                failures.append(
                    NotSettledError(
                        f"the workflow did not settle within {settle_timeout_seconds:.0f} s "
                        f"({open_parts})"
                    )
                )
                stop_all()
    if failures:
        raise failures[0]
    return results


def run_workers(
    names: Sequence[str],
    config: HandlersConfig,
    connection: Mapping[str, str],
    store_url: str,
    *,
    with_router: bool = False,
    until_idle_seconds: float | None = None,
    on_ready: Callable[[], None] | None = None,
    batch_handlers: Sequence[str] = (),
    lake: LakeLocation | None = None,
    settle_timeout_seconds: float | None = None,
) -> ServiceResult:
    """Run the named workers, batch handlers (reading ``lake``) and router until stopped or settled.

    Raises:
        ConfigError: an unknown worker or handler, bad options.
        NotSettledError: not settled within ``settle_timeout_seconds``.
        StreambatchError: a component failed; the others were stopped first.
    """
    plans = [config.plan(name) for name in names]
    store: Store = open_store(store_url)
    # This process's relay publishes the rows of its own workers only.
    publishers = [*names, *batch_handlers]
    relay = OutboxRelay(store, connection, publishers=publishers)
    try:
        workers = [build_worker(plan, store, connection, relay) for plan in plans]
        batch_workers = build_batch_workers(batch_handlers, config, store, connection, lake)
        router = build_router(config, connection) if with_router else None
        if router is not None:
            router.prepare()
        for worker in workers:
            worker.prepare()
        for batch_worker in batch_workers:
            batch_worker.prepare()
        relay.publish_pending()  # what a crash left committed but unsent
        relay.start()
        try:
            components: list[_Component] = [
                *workers,
                *batch_workers,
                *([router] if router else []),
            ]
            _run_all(
                components,
                until_idle_seconds=until_idle_seconds,
                settled=lambda: not store.pending_outbox(1, publishers),
                on_ready=on_ready,
                settle_timeout_seconds=settle_timeout_seconds,
            )
        finally:
            relay.stop()
        result = ServiceResult(
            workers={worker.plan.name: worker.counts for worker in workers},
            router=router.counts if router is not None else None,
            batch_handlers={worker.plan.name: worker.counts for worker in batch_workers},
        )
    finally:
        store.close()
    # Their Kafka clients sit in reference cycles (callbacks bound to their owners):
    # collect them now, while the broker is still there, not at some later GC.
    del workers, batch_workers, router, relay
    gc.collect()
    return result


def run_router(
    config: HandlersConfig,
    connection: Mapping[str, str],
    *,
    until_idle_seconds: float | None = None,
    on_ready: Callable[[], None] | None = None,
) -> RouterCounts:
    """Route the source topics by the rules until stopped (or idle)."""
    router = build_router(config, connection)
    router.prepare()
    _run_all(
        [router], until_idle_seconds=until_idle_seconds, settled=lambda: True, on_ready=on_ready
    )
    counts = router.counts
    del router
    gc.collect()
    return counts
