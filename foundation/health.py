"""Liveness and readiness of a flow, served beside its metrics.

``/healthz`` answers 503 when the flow is alive but stuck: a partition has
records waiting (lag > 0) and nothing was committed for it within
``stall_after`` (a batch closes at most one window after its first record, so
a healthy flow commits well within that). A supervisor or an orchestrator's
liveness probe restarts such a process; a restart resumes from the lake's
fence. ``/readyz`` answers 200 once every partition the flow reads has a
broker connection. Both read the flow's own Prometheus series, so they say
exactly what the metrics say.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

__all__ = ["FlowHealth", "Verdict", "serve_flow_endpoints"]

_StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True, slots=True)
class Verdict:
    """An answer of a probe: ``ok``, and in a few words why not."""

    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class FlowHealth:
    """Health of one stream's flow in this process, from its metric series.

    ``clock`` returns Unix seconds (the commit gauge's unit); ``started_at``
    stands in for the last commit of a partition that has none yet.
    """

    stream: str
    stall_after: timedelta
    started_at: float
    registry: CollectorRegistry = REGISTRY
    clock: Callable[[], float] = time.time

    def liveness(self) -> Verdict:
        """Not ok when a partition with a backlog has not committed within ``stall_after``."""
        lags = self._series("streambatch_consumer_lag_records")
        commits = self._series("streambatch_last_commit_timestamp_seconds")
        now = self.clock()
        limit = self.stall_after.total_seconds()
        stalled = [
            partition
            for partition, lag in sorted(lags.items())
            if lag > 0 and now - commits.get(partition, self.started_at) > limit
        ]
        if stalled:
            return Verdict(
                False,
                f"{', '.join(stalled)}: records waiting and no commit for over "
                f"{limit:g} s (stalled)",
            )
        return Verdict(True, "committing")

    def readiness(self) -> Verdict:
        """Ok once every partition read in this process has a broker connection."""
        connected = self._series("streambatch_broker_connected")
        if not connected:
            return Verdict(False, "no partition assigned yet")
        down = sorted(partition for partition, up in connected.items() if up < 1)
        if down:
            return Verdict(False, f"no broker connection for {', '.join(down)}")
        return Verdict(True, f"{len(connected)} partitions connected")

    def _series(self, name: str) -> dict[str, float]:
        """``{partition: value}`` of this stream's samples of gauge ``name``."""
        values: dict[str, float] = {}
        for metric in self.registry.collect():
            for sample in metric.samples:
                labels = sample.labels
                if sample.name == name and labels.get("stream") == self.stream:
                    values[labels.get("partition", "")] = sample.value
        return values


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not news: no access log."""


def _probe_app(probes: dict[str, Callable[[], Verdict]], metrics: Any) -> Any:
    def app(environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            return metrics(environ, start_response)
        verdict = probe()
        body = json.dumps({"ok": verdict.ok, "reason": verdict.reason}).encode()
        status = "200 OK" if verdict.ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [body]

    return app


def serve_flow_endpoints(health: FlowHealth, port: int, host: str = "127.0.0.1") -> WSGIServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` in a daemon thread.

    Raises:
        OSError: the address is taken or not ours to bind.
    """
    app = _probe_app(
        {"/healthz": health.liveness, "/readyz": health.readiness},
        make_wsgi_app(health.registry),
    )
    server = make_server(host, port, app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
