"""The three streams of one shop together: orders, and the clicks and logs around them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from foundation.gc_pause import gc_paused
from generator.clicks import click_records
from generator.log_lines import log_records
from generator.records import GeneratedRecord
from generator.timeline import OrderTimeline, order_timeline

__all__ = ["generate_click_records", "generate_log_records", "generate_stream_records"]


def generate_stream_records(
    count: int,
    *,
    seed: int = 42,
    duplicate_ratio: float = 0.02,
    malformed_ratio: float = 0.01,
    start: datetime | None = None,
    checkouts_only: bool = False,
) -> dict[str, list[GeneratedRecord]]:
    """Generate the orders of :func:`generate_order_records` and the clicks and logs around them.

    ``orders`` is exactly ``list(generate_order_records(count, ...))`` with
    the same arguments. ``clicks`` and ``logs`` are derived from its valid
    events and sorted by ``occurred_at``:

    - clicks (key ``session_id``): every valid ``OrderPlaced`` follows, 15 s
      to 4 min later, the ``checkout_started`` that ends a session of its
      customer (``user_id`` = ``customer_id``) which added each of the
      order's SKUs to the cart. Other sessions browse ``/``, ``/c/<category>``
      and ``/p/<sku>`` pages of the same SKU catalogue: anonymous ones
      (``user_id`` null) never start checkout, logged-in ones sometimes do
      without ordering. The first ``page_view`` of a session carries its
      referrer (null for a direct visit). About 4 click events per order
      record (about 30 per order placed).
    - logs (key ``service``, one of :data:`LOG_SERVICES`): 2 to 4 lines per
      valid order event, mostly ``INFO`` with an ``order_id`` attribute and
      the event's ``trace_id``, some background lines without a trace; each
      ``PaymentFailed`` gets a burst of ``ERROR`` lines from ``payments``
      sharing one ``trace_id`` (sometimes a ``CRITICAL`` too).

    In clicks and logs, ``duplicates`` and ``malformed`` are
    ``round(valid * ratio / (1 - duplicate_ratio - malformed_ratio))`` each,
    so each share is within half a record of ``ratio * total``, like the
    orders' ``round(total * ratio)``. Malformed records cycle through
    :data:`STREAM_MALFORMED_CLASSES`. Event ids are ``evt-c-...`` and
    ``evt-l-...``: unique per stream and never equal to another stream's.

    Args:
        count: Number of order records, valid, duplicate and malformed.
        seed: Seed of the generation; each stream has its own random source.
        duplicate_ratio: Share of duplicates of every stream, in ``[0, 1)``.
        malformed_ratio: Share of malformed records of every stream, in ``[0, 1)``.
        start: Aware ``occurred_at`` of the first order event;
            :data:`DEFAULT_START` if ``None``. Clicks start up to 30 min earlier.
        checkouts_only: Orders are only ``OrderPlaced`` events (for the
            workflow handlers, which make the rest).

    Returns:
        ``{"orders": [...], "clicks": [...], "logs": [...]}``.

    Raises:
        ValueError: On the arguments :func:`generate_order_records` refuses,
            or if ``duplicate_ratio + malformed_ratio >= 1``.
    """
    with gc_paused():
        orders, timeline = order_timeline(
            count, seed, duplicate_ratio, malformed_ratio, start, checkouts_only=checkouts_only
        )
        return {
            "orders": orders,
            "clicks": click_records(timeline, seed, duplicate_ratio, malformed_ratio),
            "logs": log_records(timeline, seed, duplicate_ratio, malformed_ratio),
        }


def generate_click_records(
    count: int,
    *,
    seed: int = 42,
    duplicate_ratio: float = 0.02,
    malformed_ratio: float = 0.01,
    start: datetime | None = None,
) -> list[GeneratedRecord]:
    """Return ``generate_stream_records(...)["clicks"]`` without building the logs."""
    return _derived(click_records, count, seed, duplicate_ratio, malformed_ratio, start)


def generate_log_records(
    count: int,
    *,
    seed: int = 42,
    duplicate_ratio: float = 0.02,
    malformed_ratio: float = 0.01,
    start: datetime | None = None,
) -> list[GeneratedRecord]:
    """Return ``generate_stream_records(...)["logs"]`` without building the clicks."""
    return _derived(log_records, count, seed, duplicate_ratio, malformed_ratio, start)


def _derived(
    derive: Callable[[OrderTimeline, int, float, float], list[GeneratedRecord]],
    count: int,
    seed: int,
    duplicate_ratio: float,
    malformed_ratio: float,
    start: datetime | None,
) -> list[GeneratedRecord]:
    with gc_paused():
        _, timeline = order_timeline(count, seed, duplicate_ratio, malformed_ratio, start)
        return derive(timeline, seed, duplicate_ratio, malformed_ratio)
