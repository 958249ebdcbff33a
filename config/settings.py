"""Settings: one pydantic-settings model per component, one source of truth.

Values come from the environment and from an optional ``streambatch.toml`` in
the working directory, whose top-level keys are the environment variable names
(``STREAMBATCH_WINDOW_SECONDS = 60``). The environment wins over the file.
A bad value is refused with a :class:`~streambatch.errors.ConfigError` whose
message names the variable.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from streambatch.errors import ConfigError

__all__ = [
    "CONFIG_FILE_NAME",
    "STREAM_NAMES",
    "KafkaSettings",
    "PipelineSettings",
    "StreamSettings",
    "load_kafka_settings",
    "load_pipeline_settings",
    "load_stream_settings",
]

CONFIG_FILE_NAME = "streambatch.toml"
STREAM_NAMES = ("orders", "clicks", "logs")

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


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
        default="localhost:9092", min_length=1, description="host:port[,host:port...]"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="librdkafka security.protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = (
        Field(default=None, description="librdkafka sasl.mechanism")
    )
    sasl_username: str | None = Field(default=None, description="SASL user name")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password; a secret, never printed"
    )

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
        return config


class PipelineSettings(_EnvFirstSettings):
    """Settings shared by every stream; each may be overridden per stream."""

    model_config = SettingsConfigDict(env_prefix="STREAMBATCH_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="root of all output")
    lake_uri: str | None = Field(
        default=None,
        description=(
            "where the Delta tables live: a local path or file://, s3://, gs://, az://, "
            "abfss:// URI; default <data_dir>/lake"
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
        default=86400, ge=0, le=365 * 86400, description="repeated event_id within this is dropped"
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


class StreamSettings(BaseModel):
    """The settings of one stream after per-stream overrides were applied."""

    model_config = ConfigDict(frozen=True)

    stream: str
    # 245: "<topic>.dlq" must fit Kafka's 249-character limit too.
    topic: str = Field(min_length=1, max_length=245, pattern=r"^[A-Za-z0-9._-]+$")
    data_dir: Path
    lake_uri: str | None = None
    window_seconds: int = Field(gt=0, le=7 * 86400)
    window_bytes: int = Field(ge=1024, le=1024 * 1024 * 1024)
    dedupe_horizon_seconds: int = Field(ge=0, le=365 * 86400)
    stop_at_end: bool
    max_record_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

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
        """How long an event id is remembered, in event time."""
        return timedelta(seconds=self.dedupe_horizon_seconds)

    @property
    def lake_dir(self) -> Path:
        """Root of the Delta tables."""
        return self.data_dir / "lake"


def _read_config_file(path: Path) -> dict[str, Any]:
    """Top-level keys of ``streambatch.toml``, upper-cased like env names."""
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return {str(key).upper(): value for key, value in document.items()}


def _explain(exc: ValidationError, prefix: str) -> str:
    """Turn a pydantic error into lines that name the variables."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = f"{prefix}{field.upper()}" if field else prefix.rstrip("_")
        value = error.get("input")
        # Show only a plain value of a named, non-secret field: a model-level
        # error's input is the whole mapping, secrets included.
        secret = "password" in field or not field or isinstance(value, dict)
        shown = "" if secret else f" (got {value!r})"
        lines.append(f"{name}: {error['msg']}{shown}")
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
        return model(**from_file, **fixed)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, prefix)) from None


def load_kafka_settings(config_file: Path | None = None) -> KafkaSettings:
    """Kafka settings from env and ``streambatch.toml``; raises ConfigError."""
    file_values = _read_config_file(config_file or Path(CONFIG_FILE_NAME))
    return _build(KafkaSettings, "KAFKA_", file_values)


def load_pipeline_settings(config_file: Path | None = None) -> PipelineSettings:
    """Global pipeline settings from env and ``streambatch.toml``; raises ConfigError."""
    file_values = _read_config_file(config_file or Path(CONFIG_FILE_NAME))
    return _build(PipelineSettings, "STREAMBATCH_", file_values)


def load_stream_settings(stream: str, config_file: Path | None = None) -> StreamSettings:
    """Settings of one stream: ``STREAMBATCH_<STREAM>_<KEY>`` beats ``STREAMBATCH_<KEY>``.

    Raises:
        ConfigError: naming the variable whose value is refused.
    """
    if stream not in STREAM_NAMES and not stream.isidentifier():
        raise ConfigError(f"unknown stream name {stream!r}")
    file_values = _read_config_file(config_file or Path(CONFIG_FILE_NAME))
    shared = load_pipeline_settings(config_file)
    prefix = f"STREAMBATCH_{stream.upper()}_"
    overrides = {**file_values, **{k: v for k, v in os.environ.items() if k.startswith(prefix)}}
    values: dict[str, Any] = {
        "stream": stream,
        "topic": stream,
        "data_dir": shared.data_dir,
        "lake_uri": shared.lake_uri,
        "window_seconds": shared.window_seconds,
        "window_bytes": shared.window_bytes,
        "dedupe_horizon_seconds": shared.dedupe_horizon_seconds,
        "stop_at_end": shared.stop_at_end,
        "metrics_port": shared.metrics_port,
        "max_record_bytes": shared.max_record_bytes,
    }
    for key, value in overrides.items():
        if key.startswith(prefix):
            field = key[len(prefix) :].lower()
            if field in values and field not in (
                "stream",
                "data_dir",
                "lake_uri",
                "stop_at_end",
                "metrics_port",
            ):
                values[field] = value
    try:
        return StreamSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, prefix)) from None
