"""Settings: one pydantic-settings model per component, one source of truth.

Values come from the environment and from an optional ``streambatch.toml`` in
the working directory: top-level field names (``window_seconds = 60``) or
variable names (``STREAMBATCH_WINDOW_SECONDS = 60``), a ``[kafka]`` table of
librdkafka properties and ``[streams.<name>]`` tables (see
:func:`load_config_file`). The environment wins over the file. A bad value, an
unknown key or (once ``connectors.kafka_settings`` had librdkafka check them)
an unknown librdkafka property is refused with a
:class:`~foundation.errors.ConfigError` whose message names the variable (and
the file's line). Every model of :data:`SETTINGS_MODELS` is listed by
``streambatch config show`` and in the README's table (``python -m config.docs``).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError

from foundation.errors import ConfigError

__all__ = [
    "CONFIG_FILE_NAME",
    "KAFKA_TOOL_VARIABLES",
    "PER_STREAM_FIELDS",
    "SETTINGS_MODELS",
    "ConfigFile",
    "HandlerSettings",
    "KafkaSettings",
    "LogSettings",
    "PipelineSettings",
    "StreamSettings",
    "is_secret_property",
    "kafka_property_origins",
    "load_config_file",
    "load_handler_settings",
    "load_log_settings",
    "load_pipeline_settings",
    "load_settings",
    "load_stream_settings",
    "read_kafka_settings",
]

CONFIG_FILE_NAME = "streambatch.toml"

SettingsT = TypeVar("SettingsT", bound=BaseSettings)

# Read by Kafka's own shell tools (kafka-topics.sh, ...), not librdkafka
# properties: a shell set up for those tools must still run streambatch.
KAFKA_TOOL_VARIABLES = frozenset(
    {
        "KAFKA_HOME",
        "KAFKA_OPTS",
        "KAFKA_HEAP_OPTS",
        "KAFKA_JVM_PERFORMANCE_OPTS",
        "KAFKA_LOG4J_OPTS",
        "KAFKA_JMX_OPTS",
        "KAFKA_DEBUG",
        "KAFKA_GC_LOG_OPTS",
    }
)
_SECRET_PROPERTIES = frozenset(
    {"ssl.key.pem", "ssl_key", "sasl.oauthbearer.config", "sasl.jaas.config"}
)


def is_secret_property(name: str) -> bool:
    """Whether librdkafka property ``name`` (dotted) holds a secret: never printed."""
    name = name.lower()
    return (
        name in _SECRET_PROPERTIES
        or any(word in name for word in ("password", "secret", "passphrase"))
        or name.endswith("private.key.pem")
    )


class _EnvFirstSettings(BaseSettings):
    """Base: environment beats init keywords (which carry the TOML file)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


class KafkaSettings(_EnvFirstSettings):
    """How to reach Kafka; rendered into a librdkafka dict by :meth:`librdkafka_config`."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="localhost:9092", min_length=1, description="the brokers: host:port[,host:port...]"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="librdkafka security.protocol"
    )
    sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None
    ) = Field(default=None, description="librdkafka sasl.mechanism")
    sasl_username: str | None = Field(default=None, description="SASL user name")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password; a secret, never printed"
    )
    properties: dict[str, str | SecretStr] = Field(
        default_factory=dict,
        description="any other librdkafka property, dots as underscores: "
        "`KAFKA_SSL_CA_LOCATION` sets `ssl.ca.location`, `KAFKA_SASL_OAUTHBEARER_METHOD` "
        "sets `sasl.oauthbearer.method`; in the file's `[kafka]` table by either name. "
        "An unknown property or a bad value is refused; secrets (passwords, private "
        "keys, `sasl.jaas.config`, `sasl.oauthbearer.config`) are never printed",
    )

    @field_validator("properties", mode="after")
    @classmethod
    def _hide_secret_properties(
        cls, properties: dict[str, str | SecretStr]
    ) -> dict[str, str | SecretStr]:
        return {
            name: SecretStr(value) if isinstance(value, str) and is_secret_property(name) else value
            for name, value in properties.items()
        }

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        uses_sasl = self.security_protocol.startswith("SASL")
        if uses_sasl and self.sasl_mechanism is None:
            raise ValueError(
                "KAFKA_SECURITY_PROTOCOL is SASL_* but KAFKA_SASL_MECHANISM is not set"
            )
        needs_password = self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
        if needs_password and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(
                "KAFKA_SASL_MECHANISM needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        return self

    def librdkafka_config(self) -> dict[str, str]:
        """The connection part of a librdkafka configuration (holds the secret)."""
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        for name, value in self.properties.items():
            config[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return config


class _PipelineFields(BaseModel):
    """The pipeline's fields, declared once.

    :class:`PipelineSettings` reads them from ``STREAMBATCH_<FIELD>``;
    :class:`StreamSettings` holds one stream's values after its overrides.
    """

    data_dir: Path = Field(default=Path("data"), description="root of all output")
    lake_uri: str | None = Field(
        default=None,
        description=(
            "where the Delta tables live: a local path, `file://`, `s3://bucket/prefix`, "
            "`gs://`, `az://` or `abfss://` (credentials from each cloud's standard "
            "variables, see Object storage); unset: `<data_dir>/lake`"
        ),
    )
    window_seconds: int = Field(
        default=600,
        gt=0,
        le=7 * 86400,
        description="a batch closes this long after its first event",
    )
    window_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="... or when its buffered input reaches this many bytes",
    )
    dedupe_horizon_seconds: int = Field(
        default=86400,
        ge=0,
        le=365 * 86400,
        description=(
            "a repeated event_id that arrives within this long of the first is dropped (first"
            " wins); measured in arrival time (when the flow committed the first copy), so no"
            " event's own timestamp can shrink the window for others; 0 dedupes within a batch"
            " only"
        ),
    )
    stop_at_end: bool = Field(
        default=False, description="read to the current end of every partition, flush, exit 0"
    )
    max_record_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="a record value larger than this is dead-lettered as RecordTooLarge",
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="serve Prometheus metrics on this port"
    )
    retry_seconds: int = Field(
        default=600,
        ge=1,
        le=86400,
        description="transient failures (commit conflicts, the broker away during a dead-letter "
        "write) are retried this long, then the flow exits",
    )
    max_partitions_per_commit: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="a batch whose events span more hive partitions (hours) is committed "
        "in consecutive offset ranges of at most this many partitions each",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="address the metrics endpoint binds to: loopback only by default (it has no "
        "authentication); 0.0.0.0 for every interface, as docker-compose.yml sets it",
    )
    announce_batches: bool = Field(
        default=True,
        description="after each commit, publish one record per batch to the batches topic",
    )


class PipelineSettings(_EnvFirstSettings, _PipelineFields):
    """Settings shared by every stream; each may be overridden per stream."""

    model_config = SettingsConfigDict(env_prefix="STREAMBATCH_", extra="ignore")


class StreamSettings(_PipelineFields):
    """The settings of one stream after per-stream overrides were applied."""

    model_config = ConfigDict(frozen=True)

    stream: str
    # 245: "<topic>.dlq" must fit Kafka's 249-character limit too.
    topic: str = Field(
        min_length=1,
        max_length=245,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="the stream's source topic; dead letters go to `<topic>.dlq`",
    )
    batches_topic: str | None = Field(
        default=None,
        max_length=249,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="where batch announcements go (default <topic>.batches)",
    )

    @model_validator(mode="after")
    def _announcement_topic_fits(self) -> StreamSettings:
        if self.announce_batches and len(self.announcement_topic) > 249:
            raise ValueError(
                f"the batches topic {self.announcement_topic!r} is longer than Kafka's 249 "
                "characters: shorten the TOPIC or set BATCHES_TOPIC"
            )
        return self

    @property
    def announcement_topic(self) -> str:
        """Where this stream announces its committed batches."""
        return self.batches_topic or f"{self.topic}.batches"

    @property
    def dead_letter_topic(self) -> str:
        """Where this stream's invalid records go."""
        return f"{self.topic}.dlq"

    @property
    def window(self) -> timedelta:
        """The batch age limit as a duration."""
        return timedelta(seconds=self.window_seconds)

    @property
    def dedupe_horizon(self) -> timedelta:
        """How long an event id is remembered, in arrival time."""
        return timedelta(seconds=self.dedupe_horizon_seconds)

    @property
    def lake_dir(self) -> Path:
        """The default local lake (the lake itself: ``lake_location_of(settings)``)."""
        return self.data_dir / "lake"


class LogSettings(_EnvFirstSettings):
    """How the flows and the handler processes log, to stderr."""

    model_config = SettingsConfigDict(env_prefix="STREAMBATCH_", extra="ignore")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="log level of the flows and handlers (a line per batch at INFO)"
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="json: one object per line, for a collector; text: for people at a terminal",
    )

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()


class HandlerSettings(_EnvFirstSettings):
    """Where the downstream handlers find their configuration and keep their state."""

    model_config = SettingsConfigDict(env_prefix="STREAMBATCH_", extra="ignore")

    handlers_file: Path | None = Field(
        default=None,
        description="router, workers, retry policies and service options of the handlers "
        "(`.toml` or `.json`); unset: `config/handlers.toml` here, else the shipped one",
    )
    handler_store: SecretStr | None = Field(
        default=None,
        description="the handlers' store: `sqlite:///path.db` or "
        "`postgresql://user:password@host:5432/db` (the password is never printed); "
        "unset: `sqlite:///<data_dir>/handlers/state.db`",
    )

    @field_validator("handlers_file", "handler_store", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value


SETTINGS_MODELS: tuple[type[BaseSettings], ...] = (
    KafkaSettings,
    PipelineSettings,
    LogSettings,
    HandlerSettings,
)
"""Every settings model: ``config show`` and the README's table list their fields."""

# Fields of StreamSettings that one stream cannot set apart from the others.
_NOT_PER_STREAM = frozenset(
    {"stream", "data_dir", "lake_uri", "stop_at_end", "metrics_port", "metrics_host"}
)
PER_STREAM_FIELDS = tuple(
    dict.fromkeys(
        name
        for name in ("topic", *PipelineSettings.model_fields, *StreamSettings.model_fields)
        if name not in _NOT_PER_STREAM
    )
)
"""What ``STREAMBATCH_<STREAM>_<FIELD>`` (or ``[streams.<stream>]``) may set."""


@dataclass(frozen=True)
class ConfigFile:
    """``streambatch.toml`` as environment-style names (``STREAMBATCH_WINDOW_SECONDS``).

    ``lines`` gives the line of each name in the file, when it could be found.
    """

    path: Path
    values: dict[str, Any]
    lines: dict[str, int]

    def where(self, name: str) -> str:
        """``path:line`` of ``name`` (``path`` alone when the line is unknown)."""
        line = self.lines.get(name)
        return f"{self.path}:{line}" if line else str(self.path)


_TOML_KEY_PART = r"""(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)"""
_TOML_KEY = rf"{_TOML_KEY_PART}(?:\s*\.\s*{_TOML_KEY_PART})*"
_TABLE_LINE = re.compile(rf"^\s*\[\s*({_TOML_KEY})\s*\]\s*(?:#.*)?$")
_KEY_LINE = re.compile(rf"^\s*({_TOML_KEY})\s*=")


def _key_parts(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(_TOML_KEY_PART, key)]


def _key_lines(text: str) -> dict[str, int]:
    """Line of each key and table of a TOML text, by dotted path (tomllib gives none)."""
    lines: dict[str, int] = {}
    table: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _TABLE_LINE.match(line):
            table = _key_parts(header.group(1))
            lines.setdefault(".".join(table), number)
        elif key := _KEY_LINE.match(line):
            lines.setdefault(".".join([*table, *_key_parts(key.group(1))]), number)
    return lines


def _line_of(lines: Mapping[str, int], path: str) -> int | None:
    """Line of dotted ``path``, else of its nearest enclosing key (an inline table)."""
    while path:
        if path in lines:
            return lines[path]
        path = path.rpartition(".")[0]
    return None


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"ssl": {"ca": {"location": x}}}`` (bare dotted keys) as ``{"ssl.ca.location": x}``."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _streambatch_fields() -> set[str]:
    return {
        name
        for model in SETTINGS_MODELS
        if model.model_config.get("env_prefix") == "STREAMBATCH_"
        for name in model.model_fields
    }


def _top_level_name(key: str) -> str | None:
    """The environment-style name of a top-level key of the file, None if unknown."""
    upper = key.upper()
    fields = _streambatch_fields()
    if upper.startswith("KAFKA_"):
        return upper  # checked against librdkafka by connectors.kafka_settings
    if upper.startswith("STREAMBATCH_"):
        rest = upper.removeprefix("STREAMBATCH_").lower()
        if rest in fields:
            return upper
        for field in PER_STREAM_FIELDS:
            stream = rest.removesuffix(f"_{field}")
            if stream != rest and stream.isidentifier():
                return upper
        return None
    return f"STREAMBATCH_{upper}" if key in fields else None


def _unknown_key(path: Path, lines: Mapping[str, int], key: str, known: set[str]) -> ConfigError:
    line = _line_of(lines, key)
    where = f"{path}:{line}" if line else str(path)
    close = difflib.get_close_matches(key.rpartition(".")[2], sorted(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(
        f"{where}: unknown key {key!r}; {hint}the file takes the settings of "
        "'streambatch config show' by field name (window_seconds = 60) or variable name, "
        "a [kafka] table and [streams.<name>] tables"
    )


def load_config_file(path: Path | None = None) -> ConfigFile:
    """Read ``streambatch.toml`` (absent: empty), refusing an unknown key with its line.

    Accepted: top-level field names (``window_seconds = 60``) or variable names
    (``STREAMBATCH_WINDOW_SECONDS = 60``), a ``[kafka]`` table of librdkafka
    properties (``"ssl.ca.location"`` or ``ssl_ca_location``) and
    ``[streams.<name>]`` tables of per-stream settings (``topic = "shop.orders"``).

    Raises:
        ConfigError: not TOML, an unknown key or a setting given twice, naming the line.
    """
    path = path or Path(CONFIG_FILE_NAME)
    if not path.is_file():
        return ConfigFile(path, {}, {})
    try:
        text = path.read_text(encoding="utf-8")
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    lines = _key_lines(text)
    values: dict[str, Any] = {}
    where: dict[str, int] = {}

    def add(name: str, value: Any, key: str) -> None:
        line = _line_of(lines, key)
        if name in values:
            first = f" (line {where[name]})" if name in where else ""
            raise ConfigError(f"{path}:{line or '?'}: {key!r} sets {name} a second time{first}")
        values[name] = value
        if line:
            where[name] = line

    for key, value in document.items():
        if key == "kafka" and isinstance(value, dict):
            for name, item in _flatten(value).items():
                add("KAFKA_" + re.sub(r"[.-]", "_", name).upper(), item, f"kafka.{name}")
        elif key == "streams" and isinstance(value, dict):
            for stream, table in value.items():
                if not isinstance(table, dict) or not stream.isidentifier():
                    raise _unknown_key(path, lines, f"streams.{stream}", {"streams.orders"})
                for field, item in table.items():
                    if field not in PER_STREAM_FIELDS:
                        known = set(PER_STREAM_FIELDS)
                        raise _unknown_key(path, lines, f"streams.{stream}.{field}", known)
                    add(
                        f"STREAMBATCH_{stream.upper()}_{field.upper()}",
                        item,
                        f"streams.{stream}.{field}",
                    )
        else:
            top = None if isinstance(value, dict) else _top_level_name(key)
            if top is None:
                raise _unknown_key(path, lines, key, _streambatch_fields() | {"kafka", "streams"})
            add(top, value, key)
    return ConfigFile(path, values, where)


class _FileValues(dict[str, Any]):
    """The settings of a file by environment-style name, knowing where each was set."""

    def __init__(self, file: ConfigFile) -> None:
        super().__init__(file.values)
        self.file = file


def _read_config_file(path: Path) -> dict[str, Any]:
    """The settings of ``streambatch.toml`` by environment-style name."""
    return _FileValues(load_config_file(path))


def _origin(name: str, file_values: Mapping[str, Any] | None) -> str:
    """`` (streambatch.toml:3)`` when ``name`` has its value from the file, else ''."""
    if not isinstance(file_values, _FileValues) or name not in file_values:
        return ""
    if any(variable.upper() == name for variable in os.environ):
        return ""
    return f" ({file_values.file.where(name)})"


def _explain(
    exc: ValidationError, prefix: str, file_values: Mapping[str, Any] | None = None
) -> str:
    """Turn a pydantic error into lines that name the variables (and the file's line)."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = f"{prefix}{field.upper()}" if field else prefix.rstrip("_")
        value = error.get("input")
        # Show only a plain value of a named, non-secret field: a model-level
        # error's input is the whole mapping, secrets included.
        secret = is_secret_property(field.replace("_", ".")) or not field or isinstance(value, dict)
        shown = "" if secret else f" (got {value!r})"
        lines.append(f"{name}{_origin(name, file_values)}: {error['msg']}{shown}")
    return "invalid configuration: " + "; ".join(lines)


def _build(
    model: type[SettingsT], prefix: str, file_values: Mapping[str, Any], **fixed: Any
) -> SettingsT:
    """Instantiate ``model`` from env + file, turning errors into :class:`ConfigError`."""
    from_file = {
        key[len(prefix) :].lower(): value
        for key, value in file_values.items()
        if key.startswith(prefix)
    }
    try:
        return model(**{**from_file, **fixed})
    except ValidationError as exc:
        raise ConfigError(_explain(exc, prefix, file_values)) from None
    except SettingsError as exc:  # a variable pydantic-settings could not parse (JSON)
        raise ConfigError(f"invalid configuration: {exc}") from None


def read_kafka_settings(config_file: Path | None = None) -> KafkaSettings:
    """Kafka settings from env and ``streambatch.toml``, not yet checked by librdkafka.

    Every ``KAFKA_<PROPERTY>`` variable (except :data:`KAFKA_TOOL_VARIABLES`)
    and every key of the file's ``[kafka]`` table is a librdkafka property; the
    environment wins over the file. Commands load them through
    ``connectors.kafka_settings.load_kafka_settings``, which also has librdkafka
    check the properties (the Kafka client lives in the layer above this one).

    Raises:
        ConfigError: a bad value of a declared field, naming it (never a secret).
    """
    file = load_config_file(config_file)
    properties, _origins = _kafka_properties(file)
    return _build(KafkaSettings, "KAFKA_", file.values, properties=properties)


def kafka_property_origins(config_file: Path | None = None) -> dict[str, str]:
    """Where each librdkafka property was set, for error messages.

    ``{"sasl.mechanism": "KAFKA_SASL_MECHANISM (environment)"}``, or the file
    and line for a property of ``streambatch.toml``.
    """
    return _kafka_properties(load_config_file(config_file))[1]


def _kafka_properties(file: ConfigFile) -> tuple[dict[str, str], dict[str, str]]:
    """The librdkafka properties of the environment and the file, and their origins."""
    declared = {f"KAFKA_{name.upper()}" for name in KafkaSettings.model_fields}
    origins: dict[str, str] = {}
    properties: dict[str, str] = {}
    candidates = [
        (name, value, f"{name} ({file.where(name)})") for name, value in file.values.items()
    ]
    candidates += [
        (name.upper(), value, f"{name.upper()} (environment)")
        for name, value in os.environ.items()
        if name.upper() not in KAFKA_TOOL_VARIABLES
    ]
    for name, value, origin in candidates:
        if not name.startswith("KAFKA_") or name in declared:
            continue
        prop = name.removeprefix("KAFKA_").lower().replace("_", ".")
        properties[prop] = _property_text(value)
        origins[prop] = origin
    return properties, origins


def _property_text(value: Any) -> str:
    """A TOML value as librdkafka wants it: text, ``true``/``false`` for booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_pipeline_settings(config_file: Path | None = None) -> PipelineSettings:
    """Global pipeline settings from env and ``streambatch.toml``; raises ConfigError."""
    file_values = _read_config_file(config_file or Path(CONFIG_FILE_NAME))
    return _build(PipelineSettings, "STREAMBATCH_", file_values)


def load_stream_settings(stream: str, config_file: Path | None = None) -> StreamSettings:
    """Settings of one stream: ``STREAMBATCH_<STREAM>_<KEY>`` beats ``STREAMBATCH_<KEY>``.

    Raises:
        ConfigError: naming the variable whose value is refused.
    """
    if not stream.isidentifier():
        raise ConfigError(f"unknown stream name {stream!r}")
    file_values = _read_config_file(config_file or Path(CONFIG_FILE_NAME))
    shared = load_pipeline_settings(config_file)
    prefix = f"STREAMBATCH_{stream.upper()}_"
    overrides = {**file_values, **{k: v for k, v in os.environ.items() if k.startswith(prefix)}}
    values: dict[str, Any] = {"stream": stream, "topic": stream, **shared.model_dump()}
    for key, value in overrides.items():
        if key.startswith(prefix):
            field = key[len(prefix) :].lower()
            if field in PER_STREAM_FIELDS:
                values[field] = value
    try:
        return StreamSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, prefix, file_values)) from None


def load_settings(model: type[SettingsT], config_file: Path | None = None) -> SettingsT:
    """Any settings model from env and ``streambatch.toml``; raises ConfigError.

    (Kafka's go through :func:`read_kafka_settings`, which also reads the
    librdkafka properties.)
    """
    if model is KafkaSettings:
        return read_kafka_settings(config_file)  # type: ignore[return-value]  # same model
    prefix = str(model.model_config.get("env_prefix", ""))
    return _build(model, prefix, _read_config_file(config_file or Path(CONFIG_FILE_NAME)))


def load_log_settings(config_file: Path | None = None) -> LogSettings:
    """Log level and format from env and ``streambatch.toml``; raises ConfigError."""
    return load_settings(LogSettings, config_file)


def load_handler_settings(config_file: Path | None = None) -> HandlerSettings:
    """Handlers file and store from env and ``streambatch.toml``; raises ConfigError."""
    return load_settings(HandlerSettings, config_file)
