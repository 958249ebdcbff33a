"""A small HTTP endpoint for batch deliveries, for the demo and the compose stack.

It accepts what :mod:`handlers.batch.http_delivery` POSTs (gzip JSON lines),
answers 200, counts batches by their ``Idempotency-Key`` (a repeat is
acknowledged and not counted again) and rows, and logs one line per batch.
Run it with ``python -m handlers.batch.receiver --port 8787``.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import logging
import threading
from types import TracebackType
from typing import Any

__all__ = ["BatchEndpoint", "main"]

log = logging.getLogger(__name__)
_MAX_BODY_BYTES = 256 * 1024 * 1024


class BatchEndpoint:
    """An HTTP server in a thread of its own; a context manager.

    Attributes:
        batches: Rows received per batch id (first delivery of each id).
        repeats: Deliveries of a batch id received before.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.batches: dict[str, int] = {}
        self.repeats = 0
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer((host, port), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Where to POST batches."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/batches"

    @property
    def rows(self) -> int:
        """Rows received, repeats not counted."""
        with self._lock:
            return sum(self.batches.values())

    def __enter__(self) -> BatchEndpoint:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        self._server.serve_forever()

    def _receive(self, key: str, body: bytes, encoding: str) -> None:
        data = gzip.decompress(body) if encoding == "gzip" else body
        rows = data.count(b"\n")
        with self._lock:
            if key in self.batches:
                self.repeats += 1
                return
            self.batches[key] = rows
        log.info("received batch %s: %d rows", key, rows)

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                key = self.headers.get("Idempotency-Key") or ""
                if not key or not 0 <= length <= _MAX_BODY_BYTES:
                    self.send_error(400, "an Idempotency-Key and a Content-Length are required")
                    return
                try:
                    endpoint._receive(
                        key, self.rfile.read(length), self.headers.get("Content-Encoding", "")
                    )
                except (OSError, EOFError) as exc:
                    self.send_error(400, f"unreadable body: {exc}")
                    return
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


def main() -> None:
    """``python -m handlers.batch.receiver [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(description="an HTTP endpoint for batch deliveries")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    endpoint = BatchEndpoint(arguments.host, arguments.port)
    log.info("batch endpoint on %s", endpoint.url)
    endpoint.serve_forever()


if __name__ == "__main__":
    main()
