"""The metrics endpoint listens on loopback only unless told otherwise."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from config import load_pipeline_settings, load_stream_settings
from connectors.embedded_broker import free_port
from foundation.metrics import serve_metrics


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port``, from the kernel's table."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("STREAMBATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_the_default_address_is_loopback() -> None:
    assert load_pipeline_settings().metrics_host == "127.0.0.1"
    assert load_stream_settings("orders").metrics_host == "127.0.0.1"


@pytest.mark.usefixtures("clean_env")
def test_the_address_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMBATCH_METRICS_HOST", "0.0.0.0")
    assert load_stream_settings("logs").metrics_host == "0.0.0.0"


def test_served_with_defaults_the_endpoint_listens_on_loopback_only() -> None:
    port = free_port()
    serve_metrics(port)
    assert listening_addresses(port) == {"127.0.0.1"}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert connection.recv(64).startswith(b"HTTP/1.0 200")


def test_served_on_every_interface_when_told() -> None:
    port = free_port()
    serve_metrics(port, "0.0.0.0")
    assert listening_addresses(port) == {"0.0.0.0"}
