"""An S3 API over HTTP for tests: moto's server in a child process, or a real MinIO.

moto runs in a process of its own (``python -m moto.server``, the same
threaded server as ``ThreadedMotoServer``): deltalake holds the GIL while it
waits for a response, so a server thread in the test process would never
answer. A child process can also be stopped and started again on the same
port, which is how tests make the object store unreachable for a while.

``STREAMBATCH_TEST_S3_ENDPOINT`` (plus ``STREAMBATCH_TEST_S3_ACCESS_KEY_ID``
and ``STREAMBATCH_TEST_S3_SECRET_ACCESS_KEY``) names a real S3-compatible
server (MinIO) to use instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]  # boto3 ships no type stubs
import pyarrow as pa
from deltalake import DeltaTable

__all__ = ["S3Lake", "S3Server", "free_port"]

_REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class S3Server:
    """An S3-compatible endpoint; :meth:`stop`/:meth:`start` only for the moto child."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    port: int | None = None
    log_file: Path | None = None
    enforce_auth: bool = False
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def moto(cls, log_dir: Path, *, enforce_auth: bool = False) -> S3Server:
        """moto on a free port; ``enforce_auth``: every request needs known IAM credentials."""
        port = free_port()
        server = cls(
            f"http://127.0.0.1:{port}",
            "AKIASTREAMBATCHTEST",
            f"test-secret-{uuid.uuid4().hex}",
            port=port,
            log_file=log_dir / "moto.log",
            enforce_auth=enforce_auth,
        )
        server.start()
        return server

    @classmethod
    def from_environment_or_moto(cls, log_dir: Path) -> S3Server:
        external = os.environ.get("STREAMBATCH_TEST_S3_ENDPOINT")
        if external:
            return cls(
                external,
                os.environ.get("STREAMBATCH_TEST_S3_ACCESS_KEY_ID", "minioadmin"),
                os.environ.get("STREAMBATCH_TEST_S3_SECRET_ACCESS_KEY", "minioadmin"),
            )
        return cls.moto(log_dir)

    def start(self) -> None:
        """Start moto on its port and wait until it answers (its buckets start empty)."""
        assert self.port is not None and self.log_file is not None, "not a moto server"
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                # 0 unauthenticated actions: credentials are checked from the first request.
                env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
                if self.enforce_auth
                else None,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"moto did not start on {self.endpoint}")

    def stop(self) -> None:
        """Kill the moto child (its state is lost)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def pause(self) -> None:
        """Make the server unreachable without losing its state (SIGSTOP)."""
        assert self._process is not None, "not a moto server"
        self._process.send_signal(19)  # SIGSTOP: connections hang, as with a lost network

    def resume(self) -> None:
        assert self._process is not None, "not a moto server"
        self._process.send_signal(18)  # SIGCONT

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=_REGION,
        )

    def env(self) -> dict[str, str]:
        """The standard AWS variables a streambatch process reads."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": _REGION,
        }

    def new_lake(self) -> S3Lake:
        """A fresh bucket with a prefix for the lake."""
        bucket = f"lake-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return S3Lake(self, bucket, f"s3://{bucket}/warehouse")


@dataclass(frozen=True)
class S3Lake:
    """A lake in a bucket of the test's S3 server."""

    server: S3Server
    bucket: str
    uri: str

    def env(self) -> dict[str, str]:
        """What a process needs to use this lake: ``STREAMBATCH_LAKE_URI`` and AWS variables."""
        return {"STREAMBATCH_LAKE_URI": self.uri, **self.server.env()}

    def storage_options(self) -> dict[str, str]:
        return {**self.server.env(), "conditional_put": "etag"}

    def table(self, name: str = "orders", columns: Iterable[str] | None = None) -> pa.Table:
        """The committed rows of a table of this lake."""
        delta = DeltaTable(f"{self.uri}/{name}", storage_options=self.storage_options())
        return delta.to_pyarrow_dataset().to_table(
            columns=list(columns) if columns is not None else None
        )

    def exists(self, name: str = "orders") -> bool:
        return DeltaTable.is_deltatable(
            f"{self.uri}/{name}", storage_options=self.storage_options()
        )

    def object_keys(self) -> list[str]:
        listed = self.server.client().list_objects_v2(Bucket=self.bucket)
        return [item["Key"] for item in listed.get("Contents", [])]
