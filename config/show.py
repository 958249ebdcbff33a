"""Every setting with its value, default and source: what ``streambatch config show`` prints.

The rows come from the settings models (:data:`~config.settings.SETTINGS_MODELS`)
and the per-stream fields, so a field added to a model is listed with no other
edit. Secrets are redacted here, before anything is printed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from config.settings import (
    PER_STREAM_FIELDS,
    SETTINGS_MODELS,
    KafkaSettings,
    PipelineSettings,
    is_secret_property,
    load_config_file,
    load_pipeline_settings,
    load_settings,
    load_stream_settings,
    read_kafka_settings,
)

__all__ = ["REDACTED", "SettingRow", "display_value", "list_settings", "model_fields"]

REDACTED = "**********"
Source = Literal["environment", "file", "default"]


@dataclass(frozen=True)
class SettingRow:
    """One setting as ``config show`` lists it; ``value`` is already redacted."""

    name: str
    value: str
    default: str
    source: Source
    where: str
    description: str

    def as_json(self) -> dict[str, str]:
        """The row as a JSON object."""
        return asdict(self)


def model_fields(
    model: type[BaseSettings],
) -> Iterator[tuple[str, str, FieldInfo]]:
    """``(field name, variable name, field)`` of every field of ``model``, in order."""
    prefix = str(model.model_config.get("env_prefix", ""))
    for name, info in model.model_fields.items():
        yield name, f"{prefix}{name.upper()}", info


def _redact_url(url: str) -> str:
    """``postgresql://user:**********@host/db``: a store URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{REDACTED}@{host}"))


def display_value(value: Any) -> str:
    """A setting's value as text: ``unset`` for None, booleans in lower case, secrets hidden."""
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        if "://" in secret:
            return _redact_url(secret)
        return REDACTED if secret else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _default(info: FieldInfo) -> Any:
    return info.get_default(call_default_factory=True)


class _Sources:
    """Where a variable's value came from: the environment beats the file."""

    def __init__(self, config_file: Path | None) -> None:
        self.file = load_config_file(config_file)
        self.environment = {name.upper() for name in os.environ}

    def of(self, name: str) -> tuple[Source, str]:
        if name in self.environment:
            return "environment", ""
        if name in self.file.values:
            return "file", self.file.where(name)
        return "default", ""


def list_settings(streams: Sequence[str], config_file: Path | None = None) -> list[SettingRow]:
    """Every setting, in model order, then every librdkafka property set, then per stream.

    Whether librdkafka takes the Kafka properties is not checked here (that
    needs a Kafka client: ``connectors.kafka_settings``, which the command runs
    first).

    Raises:
        ConfigError: a setting's value is refused (as when a command starts).
    """
    sources = _Sources(config_file)
    kafka = read_kafka_settings(config_file)
    pipeline = load_pipeline_settings(config_file)
    loaded: dict[type[BaseSettings], BaseSettings] = {
        KafkaSettings: kafka,
        PipelineSettings: pipeline,
    }
    for model in SETTINGS_MODELS:
        loaded.setdefault(model, load_settings(model, config_file))
    rows: list[SettingRow] = []
    for model in SETTINGS_MODELS:
        settings = loaded[model]
        for field, name, info in model_fields(model):
            if model is KafkaSettings and field == "properties":
                continue
            source, where = sources.of(name)
            rows.append(
                SettingRow(
                    name=name,
                    value=display_value(getattr(settings, field)),
                    default=display_value(_default(info)),
                    source=source,
                    where=where,
                    description=info.description or "",
                )
            )
    for prop, value in sorted(kafka.properties.items()):
        name = "KAFKA_" + prop.replace(".", "_").upper()
        source, where = sources.of(name)
        shown = REDACTED if is_secret_property(prop) else display_value(value)
        rows.append(SettingRow(name, shown, "librdkafka's", source, where, f"librdkafka {prop}"))
    for stream in streams:
        stream_settings = load_stream_settings(stream, config_file)
        for field in PER_STREAM_FIELDS:
            name = f"STREAMBATCH_{stream.upper()}_{field.upper()}"
            shared = stream if field == "topic" else getattr(pipeline, field, None)
            source, where = sources.of(name)
            rows.append(
                SettingRow(
                    name=name,
                    value=display_value(getattr(stream_settings, field)),
                    default=display_value(shared),
                    source=source,
                    where=where,
                    description=f"{stream}: "
                    + (
                        "source topic"
                        if field == "topic"
                        else f"STREAMBATCH_{field.upper()} for this stream"
                    ),
                )
            )
    return rows
