"""Run queue workers (one thread each, one outbox relay) or the router in this process.

``SIGTERM``/``SIGINT`` stop them gracefully: the current message finishes,
stored offsets are committed, the outbox is drained. A worker that fails
(dead-letter topic unwritable, store gone) stops the others and the error is
raised: the process exits non-zero rather than skip anything.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from handlers.config import HandlersConfig
from handlers.outbox import OutboxRelay
from handlers.router import EventRouter, RouterCounts
from handlers.rules import RuleSet
from handlers.store import open_store
from handlers.worker import QueueWorker, WorkerCounts, build_worker

__all__ = ["run_router", "run_workers"]

log = logging.getLogger(__name__)


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


def run_workers(
    names: Sequence[str],
    config: HandlersConfig,
    connection: Mapping[str, str],
    store_url: str,
    *,
    until_idle_seconds: float | None = None,
    on_ready: Callable[[], None] | None = None,
) -> dict[str, WorkerCounts]:
    """Run the named workers until stopped (or idle); returns their counts.

    Raises:
        ConfigError: an unknown worker or handler, bad options.
        StreambatchError: a worker failed; the others were stopped first.
    """
    plans = [config.plan(name) for name in names]
    store = open_store(store_url)
    relay = OutboxRelay(store, connection)
    workers: list[QueueWorker] = [build_worker(plan, store, connection, relay) for plan in plans]
    for worker in workers:
        worker.prepare()
    failures: list[BaseException] = []

    def stop_all() -> None:
        for worker in workers:
            worker.stop()

    def run_one(worker: QueueWorker) -> None:
        try:
            worker.run(until_idle_seconds)
        except BaseException as exc:
            log.exception("worker %s failed", worker.plan.name)
            failures.append(exc)
            stop_all()

    relay.publish_pending()  # what a crash left committed but unsent
    relay.start()
    threads = [
        threading.Thread(target=run_one, args=(w,), name=f"worker-{w.plan.name}", daemon=True)
        for w in workers
    ]
    with _stop_on_signals(stop_all):
        for thread in threads:
            thread.start()
        if on_ready is not None:
            for worker in workers:
                while not worker.ready.wait(0.5) and any(t.is_alive() for t in threads):
                    pass
            on_ready()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    relay.stop()
    store.close()
    if failures:
        raise failures[0]
    return {worker.plan.name: worker.counts for worker in workers}


def run_router(
    config: HandlersConfig,
    connection: Mapping[str, str],
    *,
    until_idle_seconds: float | None = None,
    on_ready: Callable[[], None] | None = None,
) -> RouterCounts:
    """Route the source topics by the rules until stopped (or idle)."""
    router = EventRouter(
        RuleSet.load(config.rules), config.source_topics, config.router_group, connection
    )
    router.prepare()
    result: list[RouterCounts] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            result.append(router.run(until_idle_seconds))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, name="router", daemon=True)
    with _stop_on_signals(router.stop):
        thread.start()
        if on_ready is not None:
            while not router.ready.wait(0.5) and thread.is_alive():
                pass
            on_ready()
        while thread.is_alive():
            thread.join(0.5)
    if failures:
        raise failures[0]
    return result[0]
