"""Named crash points for fault-injection tests (like TiKV's fail-rs).

``STREAMBATCH_FAILPOINT=<name>[:<n>]`` makes the process kill itself with
SIGKILL the n-th time (default: first) it reaches ``<name>``: exactly what a
``kill -9`` at that instant does. Unset (always, outside tests), a failpoint
costs one dictionary lookup.

Points: ``after_files_before_commit`` (Parquet files written, Delta commit
not made), ``after_commit`` (data and fence committed, ``batches`` row not
yet), ``during_dead_letter_write`` (some dead letters produced, not flushed),
``before_announcement`` (batch and ``batches`` row committed, not announced);
of the queue workers: ``handler_after_commit`` (state, inbox and outbox
committed, Kafka offset not stored), ``outbox_after_publish`` (outbox events
acknowledged by Kafka, not yet marked sent); of ``dlq redrive``:
``during_redrive`` (some letters produced, not flushed), ``redrive_before_marks``
(every letter acknowledged, none recorded as redriven); of ``accept-log``:
``accept_log_after_row`` (the new log's row written, not in force yet),
``accept_log_after_commit`` (new log and fence committed, the ``batches``
table's fence not moved yet).

``STREAMBATCH_REDELIVER=<n>`` makes queue workers handle every message ``n``
times and the router publish every routed event ``n`` times: what a consumer
sees after rebalances and producer retries, on demand.
"""

from __future__ import annotations

import os
import signal

__all__ = [
    "FAILPOINTS",
    "FLOW_FAILPOINTS",
    "HANDLER_FAILPOINTS",
    "LOG_FAILPOINTS",
    "REDRIVE_FAILPOINTS",
    "deliveries",
    "failpoint",
]

FLOW_FAILPOINTS = (
    "after_files_before_commit",
    "after_commit",
    "during_dead_letter_write",
    "before_announcement",
)
HANDLER_FAILPOINTS = ("handler_after_commit", "outbox_after_publish")
REDRIVE_FAILPOINTS = ("during_redrive", "redrive_before_marks")
LOG_FAILPOINTS = ("accept_log_after_row", "accept_log_after_commit")
FAILPOINTS = FLOW_FAILPOINTS + HANDLER_FAILPOINTS + REDRIVE_FAILPOINTS + LOG_FAILPOINTS
_ENV = "STREAMBATCH_FAILPOINT"


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in FAILPOINTS:
        raise ValueError(f"{_ENV}: unknown failpoint {name!r}; known: {', '.join(FAILPOINTS)}")
    return name, int(count or "1")


_armed = _parse(os.environ.get(_ENV))
_reached: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Die here, as ``kill -9`` would, if the failpoint ``name`` is armed and due."""
    if _armed is None or _armed[0] != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] >= _armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def deliveries() -> int:
    """How many times each message is handled or routed: ``STREAMBATCH_REDELIVER`` or 1."""
    raw = os.environ.get("STREAMBATCH_REDELIVER", "1")
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(f"STREAMBATCH_REDELIVER must be an integer >= 1, got {raw!r}") from None
    if count < 1:
        raise ValueError(f"STREAMBATCH_REDELIVER must be an integer >= 1, got {raw!r}")
    return count
