"""A built-in batch handler to copy: POST each batch to an HTTP endpoint, as Firehose does.

Each committed batch becomes one ``POST`` of its rows as gzip-compressed JSON
lines (``Content-Type: application/x-ndjson``, ``Content-Encoding: gzip``;
money as decimal strings, timestamps RFC 3339), with the batch id in an
``Idempotency-Key`` header (and ``X-Streambatch-Batch-Id``,
``X-Streambatch-Rows``): the endpoint can drop a repeat. A 2xx answer is
success; a timeout, a connection error, 408, 429 or a 5xx is retried by the
worker's retry policy, then dead-lettered; any other answer is dead-lettered
at once. Delivery is at least once per batch id: the POST happens before the
inbox transaction commits (the store is never locked during a POST), so a
crash between the two POSTs the same batch id again.

    [batch_handlers.orders-delivery]
    stream = "orders"
    handler = "batch.http-delivery"
    options = { url = "http://127.0.0.1:8787/batches", timeout_seconds = 10 }

``url_env`` names an environment variable that, when set, replaces ``url``
(the compose stack points it at its receiver).
"""

from __future__ import annotations

import gzip
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson
import pyarrow as pa

from foundation.errors import TerminalError, TransientError
from handlers.batch.runtime import BatchContext
from sinks.batch_announcements import BatchAnnouncement

__all__ = ["DELIVERIES_TABLE", "HttpDelivery", "encode_rows"]

DELIVERIES_TABLE = "batch_http_deliveries"
_RETRIED_STATUSES = frozenset({408, 429})
_OPTIONS = {"url", "url_env", "timeout_seconds"}


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def encode_rows(rows: pa.Table) -> bytes:
    """``rows`` as gzip-compressed JSON lines, one object per row."""
    lines = b"".join(
        orjson.dumps(row, default=_default, option=orjson.OPT_APPEND_NEWLINE)
        for row in rows.to_pylist()
    )
    return gzip.compress(lines, compresslevel=6)


class HttpDelivery:
    """POSTs each batch's rows to ``url`` (see module docstring)."""

    ddl: ClassVar[Sequence[str]] = (
        f"""CREATE TABLE IF NOT EXISTS {DELIVERIES_TABLE} (
            handler TEXT NOT NULL,
            batch_id TEXT NOT NULL,
            rows_sent BIGINT NOT NULL,
            status INTEGER NOT NULL,
            delivered_at TEXT NOT NULL,
            PRIMARY KEY (handler, batch_id)
        )""",
    )

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; known: {sorted(_OPTIONS)}")
        url_env = options.get("url_env")
        url = (os.environ.get(str(url_env)) if url_env else None) or options.get("url")
        if not url or urlsplit(str(url)).scheme not in ("http", "https"):
            raise ValueError(f"url must be an http(s) URL, got {url!r}")
        self.url = str(url)
        self.timeout_seconds = float(options.get("timeout_seconds", 10))
        if not 0 < self.timeout_seconds <= 300:
            raise ValueError(f"timeout_seconds must be in (0, 300], got {self.timeout_seconds}")
        self._status: dict[str, int] = {}

    def deliver(self, batch: BatchAnnouncement, rows: pa.Table) -> None:
        """POST the batch (before the inbox transaction; see module docstring).

        Raises:
            TransientError: timeout, connection error, 408, 429 or 5xx.
            TerminalError: any other non-2xx answer.
        """
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            self.url,
            data=encode_rows(rows),
            method="POST",
            headers={
                "Content-Type": "application/x-ndjson",
                "Content-Encoding": "gzip",
                "Idempotency-Key": batch.batch_id,
                "X-Streambatch-Batch-Id": batch.batch_id,
                "X-Streambatch-Rows": str(rows.num_rows),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            message = f"POST {self.url} for {batch.batch_id}: HTTP {exc.code} {exc.reason}"
            if exc.code >= 500 or exc.code in _RETRIED_STATUSES:
                raise TransientError(message) from None
            raise TerminalError(message) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise TransientError(f"POST {self.url} for {batch.batch_id}: {exc}") from None
        self._status[batch.batch_id] = status

    def handle(self, batch: BatchAnnouncement, rows: pa.Table, context: BatchContext) -> None:
        """Record the delivery in the inbox transaction."""
        status = self._status.pop(batch.batch_id, 0)
        context.transaction.execute(
            f"INSERT INTO {DELIVERIES_TABLE} "
            "(handler, batch_id, rows_sent, status, delivered_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (handler, batch_id) DO NOTHING",
            (context.handler, batch.batch_id, rows.num_rows, status, context.now().isoformat()),
        )
