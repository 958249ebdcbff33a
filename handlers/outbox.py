"""The outbox relay: publish what handlers committed, then mark it sent.

Guarantee: every outbox row committed by a handler reaches its topic at least
once, acknowledged by the broker (``acks=all``, idempotent producer) before it
is marked sent. A crash between the two re-sends the row with the same bytes
and event id; the lake's dedupe and the next handler's inbox drop the repeat.
One relay runs per worker process, in its own thread, and publishes the rows
of that process's workers (and rows that name no publisher, from stores made
before publishers were recorded): processes that share a store do not
publish each other's rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta

from connectors.kafka_clients import new_producer
from foundation.errors import TransientError
from foundation.failpoints import failpoint
from foundation.metrics import OUTBOX_PUBLISHED
from handlers.kafka_io import DeliveryFailures, produce_waiting
from handlers.store import OutboxMessage, Store

__all__ = ["OutboxRelay"]

log = logging.getLogger(__name__)
_BATCH = 500
# Sent rows are kept a while (to look at when something went wrong), then purged.
_KEEP_SENT = timedelta(hours=1)
_PURGE_EVERY_SECONDS = 600.0
_FLUSH_SECONDS = 10.0


class OutboxRelay:
    """Publishes pending outbox rows of ``store``; :meth:`nudge` after each commit."""

    def __init__(
        self,
        store: Store,
        connection: Mapping[str, str],
        poll_interval_seconds: float = 0.5,
        *,
        publishers: Sequence[str] | None = None,
    ) -> None:
        self._store = store
        # The workers of this process: each process's relay publishes its own
        # workers' rows, so processes sharing a store do not publish each
        # other's (None: every row, as a relay of the whole store).
        self._publishers = None if publishers is None else tuple(publishers)
        self._poll_interval = poll_interval_seconds
        self._producer = new_producer(
            {
                **connection,
                "enable.idempotence": "true",
                "acks": "all",
                "linger.ms": "5",
                "message.timeout.ms": "0",  # wait through outages; rows stay pending meanwhile
                "error_cb": lambda error: log.warning("outbox producer: %s", error.str()),
            }
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failure: BaseException | None = None

    def nudge(self) -> None:
        """Something was committed: publish soon."""
        self._wake.set()

    def publish_pending(self) -> int:
        """Publish every pending row now; returns how many were published.

        Raises:
            TransientError: when the broker refused or did not acknowledge a row
                (nothing is marked sent; the next call tries again).
        """
        published = 0
        with self._lock:  # the thread and a final drain never publish the same rows at once
            while True:
                rows = self._store.pending_outbox(_BATCH, self._publishers)
                if not rows:
                    return published
                self._publish_batch(rows)
                failpoint("outbox_after_publish")
                self._store.mark_sent([row.id for row in rows])
                for row in rows:
                    OUTBOX_PUBLISHED.labels(row.topic).inc()
                published += len(rows)

    def _publish_batch(self, rows: Sequence[OutboxMessage]) -> None:
        failures = DeliveryFailures()
        for row in rows:
            produce_waiting(
                self._producer,
                row.topic,
                value=row.value,
                key=row.key,
                headers=list(row.headers),
                on_delivery=failures,
            )
        remaining = self._producer.flush(_FLUSH_SECONDS)
        while remaining and not failures.errors and not self._stop.is_set():
            log.warning("outbox: waiting for the broker to acknowledge %d events", remaining)
            remaining = self._producer.flush(_FLUSH_SECONDS)
        if remaining or failures.errors:
            detail = failures.errors[0] if failures.errors else f"{remaining} not acknowledged"
            raise TransientError(f"outbox: {len(rows)} events not published: {detail}")

    def start(self) -> None:
        """Run the relay in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, publish what is left (best effort: logged, never lost), close."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.publish_pending()
        except Exception as exc:
            log.warning("outbox: rows left for the next start: %s", exc)
        finally:
            self._producer.close()

    def _run(self) -> None:
        next_purge = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self._poll_interval)
            self._wake.clear()
            try:
                self.publish_pending()
                self.failure = None
                if time.monotonic() >= next_purge:
                    purged = self._store.purge_sent(_KEEP_SENT)
                    next_purge = time.monotonic() + _PURGE_EVERY_SECONDS
                    if purged:
                        log.info("outbox: purged %d rows sent over an hour ago", purged)
            except TransientError as exc:
                log.warning("%s; retrying", exc)
                self._stop.wait(1.0)
            except Exception as exc:  # a bug or a dead store: the workers must stop
                log.exception("outbox relay failed")
                self.failure = exc
                return
