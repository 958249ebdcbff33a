"""A threaded TCP proxy on loopback that a test can cut and restore: a broker outage on demand.

Put it between a client and a broker (advertise the proxy's port to clients)
and call :meth:`TcpProxy.cut`: every live connection is reset at once and every
new one is accepted and reset until :meth:`TcpProxy.restore`. The client sees
exactly what a crashed or unreachable broker looks like ("connection reset",
"disconnected"), while the broker behind keeps its data. Only loopback
addresses are accepted; no third-party code.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import NamedTuple

__all__ = ["Address", "ClientConnection", "SparePredicate", "TcpProxy"]

log = logging.getLogger(__name__)

Address = tuple[str, int]
"""``(host, port)`` as the socket module gives it for IPv4."""

_CHUNK_BYTES = 64 * 1024
_ACCEPT_POLL_SECONDS = 0.1
_CONNECT_TIMEOUT_SECONDS = 5.0
_JOIN_TIMEOUT_SECONDS = 5.0
# SO_LINGER on, timeout 0: close() sends RST instead of FIN, like a dead peer.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class ClientConnection(NamedTuple):
    """One accepted connection: the client's end and the proxy's end."""

    client: Address
    proxy: Address


SparePredicate = Callable[[ClientConnection], bool]
"""Decides at accept time whether a connection survives cuts (a path the outage spares)."""


def _loopback(host: str) -> str:
    """``host`` if it is a loopback IPv4 literal; anything else is refused."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an IP address: {host!r}; the proxy takes loopback only") from None
    if address.version != 4 or not address.is_loopback:
        raise ValueError(f"not an IPv4 loopback address: {host!r}")
    return host


def _close_abruptly(sock: socket.socket) -> None:
    """Reset ``sock`` and wake any thread blocked on it; never raises."""
    # Either may fail on a socket the peer already reset; closing is what matters.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    with contextlib.suppress(OSError):
        # close() alone does not wake a recv() blocked in another thread; SHUT_RD
        # does, and unlike SHUT_WR sends no FIN, so the peer gets the RST only.
        sock.shutdown(socket.SHUT_RD)
    sock.close()


class _Link:
    """A client socket and its upstream socket, pumped by two threads."""

    def __init__(self, client: socket.socket, upstream: socket.socket, spared: bool) -> None:
        self.client = client
        self.upstream = upstream
        self.spared = spared
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Reset both ends once; later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _close_abruptly(self.client)
        _close_abruptly(self.upstream)


class TcpProxy:
    """Forwards ``listen_host:listen_port`` to ``upstream_host:upstream_port``; cut on demand.

    Thread-safe. A context manager: ``with TcpProxy(9092) as proxy:`` starts it
    and stops it (closing every connection and joining every thread).

    Args:
        upstream_port: the real service's port.
        upstream_host: the real service's loopback address.
        listen_port: the proxy's port; 0 picks a free one (see :attr:`port`).
        listen_host: the proxy's loopback address.
        spare: connections for which this returns True are never cut (for
            example a test's own producer, to write while its subject is cut off).
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        upstream_host: str = "127.0.0.1",
        listen_port: int = 0,
        listen_host: str = "127.0.0.1",
        spare: SparePredicate | None = None,
    ) -> None:
        self._upstream: Address = (_loopback(upstream_host), upstream_port)
        self._listen: Address = (_loopback(listen_host), listen_port)
        self._spare = spare
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._cut = False
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._accepted = 0
        self._dropped = 0

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> TcpProxy:
        """Bind and start accepting; returns self."""
        if self._listener is not None:
            raise RuntimeError("proxy already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self._listen)
        listener.listen(128)
        # A timeout lets the accept loop notice stop() without a wake-up socket.
        listener.settimeout(_ACCEPT_POLL_SECONDS)
        self._listen = listener.getsockname()
        self._listener = listener
        self._stopping.clear()
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"tcp-proxy-accept-{self.port}", daemon=True
        )
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Stop accepting, reset every connection and join the threads."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(_JOIN_TIMEOUT_SECONDS)
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            links = list(self._links)
            self._links.clear()
        for link in links:
            link.close()
        for link in links:
            for thread in link.threads:
                thread.join(_JOIN_TIMEOUT_SECONDS)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- the outage -----------------------------------------------------------------

    def cut(self) -> int:
        """Reset every live connection (spared ones excepted) and every new one until restore.

        Returns:
            How many live connections were reset.
        """
        with self._lock:
            self._cut = True
            victims = [link for link in self._links if not link.spared]
            for link in victims:
                self._links.discard(link)
            self._dropped += len(victims)
        for link in victims:
            link.close()
        log.info("proxy %d cut: %d connections reset", self.port, len(victims))
        return len(victims)

    def restore(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._cut = False
        log.info("proxy %d restored", self.port)

    # --- state ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port clients connect to (known once started when 0 was asked)."""
        return self._listen[1]

    @property
    def address(self) -> str:
        """``host:port`` for a client configuration."""
        return f"{self._listen[0]}:{self._listen[1]}"

    @property
    def is_cut(self) -> bool:
        """Whether the proxy is cut right now."""
        with self._lock:
            return self._cut

    @property
    def accepted(self) -> int:
        """Connections accepted so far, forwarded or not."""
        with self._lock:
            return self._accepted

    @property
    def dropped(self) -> int:
        """Connections reset by a cut: live ones, and new ones while cut."""
        with self._lock:
            return self._dropped

    @property
    def live(self) -> int:
        """Connections being forwarded right now."""
        with self._lock:
            return len(self._links)

    # --- internals ------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            client.settimeout(None)
            self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        try:
            connection = ClientConnection(client.getpeername(), client.getsockname())
        except OSError:  # the client gave up before we got to it
            client.close()
            return
        spared = self._spare is not None and self._spare(connection)
        with self._lock:
            self._accepted += 1
            refuse = self._cut and not spared
            if refuse:
                self._dropped += 1
        if refuse:
            _close_abruptly(client)
            return
        try:
            upstream = socket.create_connection(self._upstream, _CONNECT_TIMEOUT_SECONDS)
        except OSError as exc:
            log.warning("proxy %d: upstream %s unreachable: %s", self.port, self._upstream, exc)
            _close_abruptly(client)
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client, upstream, spared)
        with self._lock:
            # A cut between the check above and here must not miss this link.
            if (self._cut and not spared) or self._stopping.is_set():
                self._dropped += 1
                late = True
            else:
                self._links.add(link)
                late = False
        if late:
            link.close()
            return
        for source, target, direction in ((client, upstream, "up"), (upstream, client, "down")):
            thread = threading.Thread(
                target=self._pump,
                args=(link, source, target),
                name=f"tcp-proxy-{self.port}-{connection.client[1]}-{direction}",
                daemon=True,
            )
            link.threads.append(thread)
        for thread in link.threads:
            thread.start()

    def _pump(self, link: _Link, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(_CHUNK_BYTES):
                target.sendall(chunk)
        except OSError:
            pass  # reset by a cut, by stop() or by either peer: the link is over
        finally:
            # Kafka never half-closes: one side gone means the connection is over.
            with self._lock:
                self._links.discard(link)
            link.close()
