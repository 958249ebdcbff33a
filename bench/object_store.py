"""An S3 API for the benchmark: moto's server in a child process, one fresh bucket.

moto is a development dependency (``pip install -e '.[dev]'``); the bench
says so when it is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from foundation.errors import StreambatchError

__all__ = ["moto_lake"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def moto_lake(log_dir: Path, bucket: str = "bench") -> Iterator[dict[str, str]]:
    """Start moto, create ``bucket``; yield the environment of a flow whose lake is in it.

    Raises:
        StreambatchError: moto is not installed, or did not start.
    """
    if importlib.util.find_spec("moto") is None:
        raise StreambatchError(
            "the S3 benchmark needs moto: pip install -e '.[dev]' (or make install)"
        )
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with (log_dir / "moto.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # moto accepts unsigned requests: a plain PUT creates the bucket.
                request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")  # noqa: S310
                with urllib.request.urlopen(request, timeout=2):  # noqa: S310
                    break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise StreambatchError(f"moto did not start on {endpoint}: {exc}") from None
                time.sleep(0.1)
        yield {
            "STREAMBATCH_LAKE_URI": f"s3://{bucket}/lake",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench-secret",
            "AWS_REGION": "us-east-1",
        }
    finally:
        process.kill()
        process.wait()
