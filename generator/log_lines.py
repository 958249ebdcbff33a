"""The logs stream: lines about each order event, bursts of errors for failed payments.

Named ``log_lines`` so that it is not taken for the project's own logging.
"""

from __future__ import annotations

from random import Random
from typing import Any, Final

from generator.records import GeneratedRecord
from generator.timeline import (
    OrderTimeline,
    RowSource,
    between,
    pick,
    records_from_rows,
)

__all__ = ["LOG_SERVICES", "log_records"]

LOG_SERVICES: Final[tuple[str, ...]] = (
    "checkout",
    "payments",
    "inventory",
    "notifications",
    "gateway",
)
"""The services that write to the ``logs`` topic."""
_EXTRA_LOG_LINES: Final = (1, 3)
_LOG_SPREAD_MS: Final = 1_500
_BACKGROUND_SHARE: Final = 0.3
_GATEWAY_SHARE: Final = 0.4
_PAYMENT_ATTEMPTS: Final = (2, 4)
_PAYMENT_RETRY_MS: Final = (150, 800)
_CRITICAL_AFTER_FAILURE: Final = 0.15
# Cumulative thresholds of the extra lines' levels: ~72% INFO, 15% DEBUG, 12% WARNING.
_LEVEL_THRESHOLDS: Final = (
    (0.72, "INFO"),
    (0.87, "DEBUG"),
    (0.99, "WARNING"),
    (0.999, "ERROR"),
    (1.0, "CRITICAL"),
)
_TRACED_MESSAGES: Final[dict[str, tuple[str, ...]]] = {
    "DEBUG": ("db query executed", "cache hit", "cache miss", "feature flag evaluated"),
    "INFO": ("request handled", "state persisted", "event published", "idempotency key stored"),
    "WARNING": (
        "slow downstream response",
        "retrying after timeout",
        "connection pool nearly exhausted",
        "deprecated client version",
    ),
    "ERROR": ("downstream call timed out", "unexpected response from downstream"),
    "CRITICAL": ("worker crashed, restarting",),
}
_BACKGROUND_MESSAGES: Final[dict[str, tuple[str, ...]]] = {
    "DEBUG": ("heartbeat sent", "connection pool stats", "gc pause"),
    "INFO": ("health check ok", "metrics flushed", "config reloaded"),
}
_HTTP_STATUS: Final = {
    "DEBUG": "200",
    "INFO": "200",
    "WARNING": "429",
    "ERROR": "504",
    "CRITICAL": "503",
}
# service, level and message of the line that records each order event.
_EVENT_LINES: Final[dict[str, tuple[str, str, str]]] = {
    "OrderPlaced": ("checkout", "INFO", "order placed"),
    "StockReserved": ("inventory", "INFO", "stock reserved"),
    "StockReleased": ("inventory", "INFO", "stock released"),
    "StockDecreased": ("inventory", "INFO", "stock decreased"),
    "PaymentAuthorized": ("payments", "INFO", "payment authorized"),
    "PaymentFailed": ("payments", "ERROR", "payment failed"),
    "PurchaseOrderSubmitted": ("inventory", "INFO", "purchase order submitted"),
    "CustomerNotified": ("notifications", "INFO", "customer notified"),
    "FinanceAlerted": ("checkout", "WARNING", "finance alerted"),
}
_GATEWAY_ROUTES: Final[dict[str, tuple[str, str]]] = {
    "OrderPlaced": ("POST", "/api/orders"),
    "StockReserved": ("POST", "/api/stock/reservations"),
    "StockReleased": ("DELETE", "/api/stock/reservations"),
    "StockDecreased": ("POST", "/api/stock/movements"),
    "PaymentAuthorized": ("POST", "/api/payments"),
    "PaymentFailed": ("POST", "/api/payments"),
    "PurchaseOrderSubmitted": ("POST", "/api/purchase-orders"),
    "CustomerNotified": ("POST", "/api/notifications"),
    "FinanceAlerted": ("POST", "/api/alerts"),
}
_PROVIDER_STATUSES: Final = ("502", "503", "504")

# ms offset, tie-breaker, service, level, message, trace_id, attributes.
_LogRow = tuple[int, int, str, str, str, str | None, dict[str, str]]


def log_records(
    timeline: OrderTimeline, seed: int, duplicate_ratio: float, malformed_ratio: float
) -> list[GeneratedRecord]:
    """The log records derived from ``timeline``, sorted by ``occurred_at``."""
    rng = Random(f"streambatch-logs-{seed}")
    rows = _log_rows(timeline, rng)
    source = _LogSource(rng, seed, timeline.clock, rows)
    return records_from_rows(source, len(rows), duplicate_ratio, malformed_ratio)


def _log_level(rng: Random) -> str:
    draw = rng.random()
    for threshold, level in _LEVEL_THRESHOLDS:
        if draw < threshold:
            return level
    return "CRITICAL"


def _log_rows(timeline: OrderTimeline, rng: Random) -> list[_LogRow]:
    rows: list[_LogRow] = []
    for at, event_type, attributes, _ in timeline.events:
        order_id = attributes["order_id"]
        trace_id = f"{rng.getrandbits(128):032x}"
        service, level, message = _EVENT_LINES[event_type]
        if event_type == "PaymentFailed":
            _add_payment_failure(rows, rng, at, trace_id, attributes)
        else:
            # Rows never change their attributes: sharing the fact's dict is safe.
            moment = at + between(rng, 0, 40)
            rows.append((moment, len(rows), service, level, message, trace_id, attributes))
        for _ in range(between(rng, *_EXTRA_LOG_LINES)):
            rows.append(_extra_log_line(rng, at, len(rows), event_type, order_id, trace_id))
    # (time, tie-breaker) is unique: the sort never compares the other fields.
    rows.sort()
    return rows


def _add_payment_failure(
    rows: list[_LogRow], rng: Random, at: int, trace_id: str, attributes: dict[str, str]
) -> None:
    """A burst of ERROR lines of one trace: retries against the provider, then the failure."""
    attempts = between(rng, *_PAYMENT_ATTEMPTS)
    moments = [at]
    for _ in range(attempts):
        moments.append(moments[-1] - between(rng, *_PAYMENT_RETRY_MS))
    moments.reverse()
    for attempt, moment in enumerate(moments[:-1], start=1):
        status = pick(rng, _PROVIDER_STATUSES)
        retry = {
            "order_id": attributes["order_id"],
            "payment_id": attributes["payment_id"],
            "http_status": status,
            "attempt": str(attempt),
        }
        message = f"payment provider returned {status} (attempt {attempt} of {attempts})"
        rows.append((moment, len(rows), "payments", "ERROR", message, trace_id, retry))
    failed = {**attributes, "attempts": str(attempts)}
    rows.append((at, len(rows), "payments", "ERROR", "payment failed", trace_id, failed))
    if rng.random() < _CRITICAL_AFTER_FAILURE:
        alert = {"order_id": attributes["order_id"], "circuit": "open"}
        message = "payment provider circuit breaker open"
        moment = at + between(rng, 1, 50)
        rows.append((moment, len(rows), "payments", "CRITICAL", message, trace_id, alert))


def _extra_log_line(
    rng: Random, at: int, seq: int, event_type: str, order_id: str, trace_id: str
) -> _LogRow:
    level = _log_level(rng)
    moment = at + between(rng, 1, _LOG_SPREAD_MS)
    background = _BACKGROUND_MESSAGES.get(level)
    if background is not None and rng.random() < _BACKGROUND_SHARE:
        # Housekeeping outside any request: no trace, no order.
        service = pick(rng, LOG_SERVICES)
        return (moment, seq, service, level, pick(rng, background), None, {})
    if rng.random() < _GATEWAY_SHARE:
        method, path = _GATEWAY_ROUTES[event_type]
        status = _HTTP_STATUS[level]
        attributes = {
            "order_id": order_id,
            "http_method": method,
            "path": path,
            "http_status": status,
            "duration_ms": str(between(rng, 3, 900)),
        }
        return (moment, seq, "gateway", level, f"{method} {path} {status}", trace_id, attributes)
    service = _EVENT_LINES[event_type][0]
    message = pick(rng, _TRACED_MESSAGES[level])
    return (moment, seq, service, level, message, trace_id, {"order_id": order_id})


class _LogSource(RowSource[_LogRow]):
    """Turns sorted log rows into records; makes malformed lines in between."""

    event_id_prefix = "evt-l"
    text_field = "message"
    unknown_event_type = "metric"

    def valid_body(
        self, row: _LogRow, event_id: str, occurred_at: str
    ) -> tuple[str, dict[str, Any]]:
        _, _, service, level, message, trace_id, attributes = row
        body = {
            "event_id": event_id,
            "event_type": "log",
            "occurred_at": occurred_at,
            "service": service,
            "level": level,
            "message": message,
            "trace_id": trace_id,
            "attributes": attributes,
        }
        return service, body

    def malformed_body(
        self, number: int, event_id: str, occurred_at: str
    ) -> tuple[str, dict[str, Any]]:
        service = pick(self.rng, LOG_SERVICES)
        body: dict[str, Any] = {
            "event_id": event_id,
            "event_type": "log",
            "occurred_at": occurred_at,
            "service": service,
            "level": "INFO",
            "message": "request handled",
            "trace_id": None,
            "attributes": {"http_status": "200"},
        }
        return service, body

    def break_type(self, body: dict[str, Any], variant: int) -> None:
        if variant:
            body["attributes"] = {"http_status": 502}
        else:
            body["level"] = "LOUD"
