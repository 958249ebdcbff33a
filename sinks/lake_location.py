"""Where the lake lives: a URI plus storage options, resolved once, used by every part.

``STREAMBATCH_LAKE_URI`` names the lake's root: a local path or ``file://``
URI (the default is ``<data_dir>/lake``), or an object store: ``s3://bucket/prefix``
(AWS S3, MinIO, R2, any S3-compatible server), ``gs://`` (Google Cloud
Storage), ``az://`` / ``abfss://`` (Azure Blob Storage / ADLS Gen2). Each
Delta table is a directory under that root (``<root>/orders``).

Credentials, region and endpoint come from each cloud's standard environment
variables (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``AZURE_STORAGE_ACCOUNT_NAME``, ...) and are handed to deltalake as storage
options. Secret values are held as :class:`~pydantic.SecretStr`: the
location's ``repr``, :meth:`LakeLocation.describe` and every error built with
:meth:`LakeLocation.scrub` never contain them.

Concurrent writers on S3: commits use conditional writes
(``conditional_put=etag``, put-if-absent on the log entry), which AWS S3,
MinIO and R2 honour, so two processes committing the same log version never
both succeed; the loser retries on the new version. GCS and Azure have
put-if-absent natively.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.fs import DeltaStorageHandler
from pydantic import SecretStr

from foundation.errors import ConfigError, LakeError

__all__ = [
    "OBJECT_STORE_SCHEMES",
    "STORAGE_VARIABLES",
    "LakeLocation",
    "LakeTable",
    "lake_in",
    "lake_location_of",
    "resolve_lake_location",
]

OBJECT_STORE_SCHEMES: Final = frozenset({"s3", "s3a", "gs", "az", "abfs", "abfss"})
_CLOUD: Final = {
    "s3": "aws",
    "s3a": "aws",
    "gs": "google",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
}

STORAGE_VARIABLES: Final[Mapping[str, tuple[str, ...]]] = {
    "aws": (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ALLOW_HTTP",
        "AWS_PROFILE",
        "AWS_S3_LOCKING_PROVIDER",
        "DELTA_DYNAMO_TABLE_NAME",
    ),
    "google": ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_SERVICE_ACCOUNT_KEY"),
    "azure": (
        "AZURE_STORAGE_ACCOUNT_NAME",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_CLIENT_ID",
        "AZURE_STORAGE_CLIENT_SECRET",
        "AZURE_STORAGE_TENANT_ID",
        "AZURE_STORAGE_USE_EMULATOR",
        "AZURE_STORAGE_ENDPOINT",
    ),
}
"""The standard variables read per cloud; each one set becomes a storage option."""

_SECRETS: Final = frozenset(
    {
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_CLIENT_SECRET",
    }
)


@dataclass(frozen=True)
class LakeLocation:
    """The lake's root URI and the storage options to reach it (secrets hidden).

    ``root`` has no trailing slash. A local lake's root is an absolute path.
    """

    root: str
    options: Mapping[str, SecretStr] = field(default_factory=dict)

    @classmethod
    def local(cls, path: Path | str) -> LakeLocation:
        """A lake in a local directory."""
        return cls(str(Path(path).absolute()))

    @property
    def scheme(self) -> str:
        """``file`` for a local lake, else the object store's URI scheme."""
        parsed = urlparse(self.root)
        return parsed.scheme if parsed.scheme in OBJECT_STORE_SCHEMES else "file"

    @property
    def is_local(self) -> bool:
        """True when the lake is a local directory."""
        return self.scheme == "file"

    @property
    def local_path(self) -> Path:
        """The root as a local path; only for a local lake.

        Raises:
            LakeError: the lake is in an object store.
        """
        if not self.is_local:
            raise LakeError(f"the lake at {self.describe()} is not a local directory")
        return Path(self.root)

    @property
    def bucket(self) -> str:
        """The bucket (container) of an object-store lake, else the root."""
        return urlparse(self.root).netloc if not self.is_local else self.root

    def storage_options(self) -> dict[str, str]:
        """Options for deltalake and its object store (holds the secrets: never print it)."""
        return {key: value.get_secret_value() for key, value in self.options.items()}

    def table(self, name: str) -> LakeTable:
        """The Delta table ``name`` directly under the root.

        Raises:
            LakeError: ``name`` is not a plain directory name.
        """
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise LakeError(f"refusing table name {name!r}")
        return LakeTable(self, name)

    @cached_property
    def _handler(self) -> _ObjectStoreHandler:
        return _ObjectStoreHandler(self.root, self.storage_options())

    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem rooted at the lake, for reading; paths are relative to the root.

        Object stores go through deltalake's own object store (the same
        client and options as the commits); a local lake through the local
        file system. Write with :meth:`write_file`.
        """
        if self.is_local:
            return pafs.SubTreeFileSystem(self.root, pafs.LocalFileSystem())
        return pafs.PyFileSystem(self._handler)

    def read_file(self, relative: str) -> bytes | None:
        """The whole file at ``relative`` (to the root), or None if there is none."""
        try:
            with self.filesystem().open_input_stream(relative) as stream:
                return bytes(stream.read())
        except FileNotFoundError:
            return None

    def file_exists(self, relative: str) -> bool:
        """True when a file exists at ``relative`` (to the root)."""
        info = self.filesystem().get_file_info(relative)
        return bool(info.type == pafs.FileType.File)

    def write_file(self, relative: str, data: pa.Buffer) -> None:
        """Store ``data`` at ``relative`` (to the root) in one piece, replacing any file there."""
        if self.is_local:
            path = Path(self.root) / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(memoryview(data))
            return
        self._handler.put(relative, data)

    def describe(self) -> str:
        """The root URI, safe to print (options are never included)."""
        return self.root

    def scrub(self, text: str) -> str:
        """``text`` with every secret value of this location replaced by ``***``."""
        for key, value in self.options.items():
            secret = value.get_secret_value()
            if key.upper() in _SECRETS and secret:
                text = text.replace(secret, "***")
        return text

    def error(self, action: str, exc: BaseException) -> LakeError:
        """One line naming the lake (and so its bucket) and the reason, secrets scrubbed."""
        return LakeError(self.scrub(f"cannot {action} the lake at {self.root}: {_reason(exc)}"))

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{key}={'***' if key.upper() in _SECRETS else value.get_secret_value()!r}"
            for key, value in sorted(self.options.items())
        )
        return f"LakeLocation({self.root!r}, {{{shown}}})"


@dataclass(frozen=True, repr=False)
class LakeTable:
    """One Delta table of a lake: its URI and a filesystem to read its log."""

    location: LakeLocation
    name: str

    @property
    def uri(self) -> str:
        """What deltalake opens (a local path or an object-store URI)."""
        return f"{self.location.root}/{self.name}"

    def storage_options(self) -> dict[str, str]:
        """The lake's storage options (holds the secrets: never print it)."""
        return self.location.storage_options()

    def exists(self) -> bool:
        """True when a committed Delta table is there."""
        return DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options())

    def open(self, version: int | None = None) -> DeltaTable:
        """A deltalake handle on the table (its newest version unless ``version``)."""
        return DeltaTable(self.uri, version=version, storage_options=self.storage_options())

    def path(self, relative: str = "") -> str:
        """A path inside the table, for :meth:`LakeLocation.filesystem`."""
        return f"{self.name}/{relative}" if relative else self.name

    def __repr__(self) -> str:
        return f"LakeTable({self.uri!r})"

    def __str__(self) -> str:
        return self.uri


def _reason(exc: BaseException) -> str:
    """The gist of an object-store error: its first line plus the server's error code."""
    text = str(exc)
    lines = [line.strip(" \u21b3\x1b[31m0") for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    code = re.search(r"<Code>([^<]+)</Code>", text)
    status = re.search(r"\b([45]\d\d) [A-Z][A-Za-z ]+", text)
    extra = [
        found.group(0) if found is status else found.group(1) for found in (status, code) if found
    ]
    if extra:
        reason = f"{reason} ({', '.join(extra)})"
    return reason[:300]


class _ObjectStoreHandler(DeltaStorageHandler):
    """deltalake's pyarrow filesystem handler, plus a whole-object put.

    Its output stream takes only ``bytes`` while pyarrow's writers hand it
    buffers, so files are encoded in memory and stored with :meth:`put`.
    """

    def put(self, path: str, data: pa.Buffer) -> None:
        stream = self._handler.open_output_stream(path, None)
        try:
            stream.write(data.to_pybytes())
        finally:
            # close() exists at run time; deltalake's stubs omit it.
            stream.close()  # type: ignore[attr-defined]


def resolve_lake_location(
    lake_uri: str | None, data_dir: Path, environ: Mapping[str, str] | None = None
) -> LakeLocation:
    """The lake named by ``STREAMBATCH_LAKE_URI`` (``lake_uri``), else ``<data_dir>/lake``.

    Storage options come from the standard variables of the URI's cloud in
    ``environ`` (default: the process environment). For S3, commits use
    conditional writes (``conditional_put=etag``) unless
    ``AWS_S3_LOCKING_PROVIDER`` names another locking deltalake supports.

    Raises:
        ConfigError: an unsupported scheme, or an object-store URI without a bucket.
    """
    env = os.environ if environ is None else environ
    if not lake_uri:
        return LakeLocation.local(data_dir / "lake")
    parsed = urlparse(lake_uri)
    if parsed.scheme == "file":
        return LakeLocation.local(url2pathname(unquote(parsed.path)))
    if parsed.scheme not in OBJECT_STORE_SCHEMES:
        if len(parsed.scheme) > 1:  # one letter is a Windows drive
            raise ConfigError(
                f"STREAMBATCH_LAKE_URI: unsupported scheme {parsed.scheme!r} "
                f"(use a local path, file://, s3://, gs://, az:// or abfss://)"
            )
        return LakeLocation.local(lake_uri)
    if not parsed.netloc:
        raise ConfigError(f"STREAMBATCH_LAKE_URI: no bucket in {lake_uri!r}")
    cloud = _CLOUD[parsed.scheme]
    options: dict[str, SecretStr] = {}
    for name in STORAGE_VARIABLES[cloud]:
        value = env.get(name)
        if value:
            options[name] = SecretStr(value)
    if cloud == "aws":
        if "AWS_REGION" not in options and "AWS_DEFAULT_REGION" in options:
            options["AWS_REGION"] = options.pop("AWS_DEFAULT_REGION")
        options.pop("AWS_DEFAULT_REGION", None)
        if "AWS_S3_LOCKING_PROVIDER" not in options:
            options["conditional_put"] = SecretStr("etag")
    root = lake_uri.rstrip("/")
    if parsed.scheme == "s3a":
        root = "s3" + root[len("s3a") :]
    return LakeLocation(root, options)


class _LakeSettings(Protocol):
    @property
    def data_dir(self) -> Path: ...
    @property
    def lake_uri(self) -> str | None: ...


def lake_location_of(settings: _LakeSettings) -> LakeLocation:
    """The lake of a settings object (``STREAMBATCH_LAKE_URI``, else ``<data_dir>/lake``)."""
    return resolve_lake_location(settings.lake_uri, settings.data_dir)


def lake_in(lake_or_data_dir: LakeLocation | Path | str) -> LakeLocation:
    """A location as is; a path is a data directory, whose lake is ``<data_dir>/lake``."""
    if isinstance(lake_or_data_dir, LakeLocation):
        return lake_or_data_dir
    return LakeLocation.local(Path(lake_or_data_dir) / "lake")
