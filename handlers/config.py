"""The downstream handlers' configuration: router, workers, retry policies, services.

One TOML file (default ``config/handlers.toml``, or ``STREAMBATCH_HANDLERS_FILE``;
``.json`` files are read as JSON with the same structure)
describes the whole event bridge: which topics the router reads, which rules
file it applies, where handlers publish, and one ``[workers.<name>]`` table per
queue worker (its handler, the topics it subscribes to, its retry policy and
options). Adding a subscriber is adding a worker table: no code change.

The store of inboxes, outboxes and handler state comes from
``STREAMBATCH_HANDLER_STORE`` (``sqlite:///path.db`` or ``postgresql://...``;
default: SQLite under the data directory).
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from config.settings import load_handler_settings, load_stream_settings
from events.registry import get_stream
from foundation.errors import ConfigError
from handlers.retry import RetryPolicy

__all__ = [
    "DEFAULT_HANDLERS_FILE",
    "SHIPPED_HANDLERS_FILE",
    "SHIPPED_RULES_FILE",
    "BatchHandlerSettings",
    "HandlersConfig",
    "RetrySettings",
    "WorkerPlan",
    "WorkerSettings",
    "handler_store_url",
    "load_handlers_config",
]

DEFAULT_HANDLERS_FILE = Path("config/handlers.toml")
# The files installed with the package: the defaults when the working
# directory has no config/ of its own (``pip install`` and run from anywhere).
SHIPPED_HANDLERS_FILE = Path(__file__).resolve().parent.parent / "config" / "handlers.toml"
SHIPPED_RULES_FILE = SHIPPED_HANDLERS_FILE.with_name("rules.toml")
_HANDLERS_FILE_ENV = "STREAMBATCH_HANDLERS_FILE"
_TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,245}$"
_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
_STREAM_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class RetrySettings(BaseModel):
    """Retry policy fields; each may be left out to inherit the default table's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int | None = Field(default=None, ge=1, le=1000, description="tries per message")
    base_delay_seconds: float | None = Field(default=None, ge=0, le=3600)
    max_delay_seconds: float | None = Field(default=None, ge=0, le=3600)

    def over(self, default: RetryPolicy) -> RetryPolicy:
        """These fields on top of ``default``."""
        try:
            return RetryPolicy(
                attempts=self.attempts if self.attempts is not None else default.attempts,
                base_delay=(
                    timedelta(seconds=self.base_delay_seconds)
                    if self.base_delay_seconds is not None
                    else default.base_delay
                ),
                max_delay=(
                    timedelta(seconds=self.max_delay_seconds)
                    if self.max_delay_seconds is not None
                    else default.max_delay
                ),
            )
        except ValueError as exc:
            raise ConfigError(f"retry: {exc}") from None


class WorkerSettings(BaseModel):
    """One ``[workers.<name>]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    handler: str = Field(
        min_length=1, description="a built-in handler name or 'package.module:attribute'"
    )
    topics: list[str] = Field(min_length=1, description="topics this worker subscribes to")
    retry: RetrySettings = Field(default_factory=RetrySettings)
    options: dict[str, Any] = Field(default_factory=dict, description="handler options")
    start_from: Literal["earliest", "latest"] = Field(
        default="earliest", description="where a new consumer group starts"
    )
    dead_letter_topic: str | None = Field(default=None, pattern=_TOPIC_PATTERN)
    group_id: str | None = Field(default=None, min_length=1, max_length=255)
    retry_topic_prefix: str | None = Field(
        default=None,
        pattern=_TOPIC_PATTERN,
        description="retry topics are '<prefix>.<delay>ms' (default '<name>.retry')",
    )
    publish_stream: str | None = Field(
        default=None,
        pattern=_STREAM_PATTERN,
        description="the registered stream this worker publishes to (default: the file's)",
    )
    publish_topic: str | None = Field(
        default=None,
        pattern=_TOPIC_PATTERN,
        description="where its events go (default: the file's, or the stream's topic)",
    )

    @model_validator(mode="after")
    def _topics_are_names(self) -> WorkerSettings:
        for topic in self.topics:
            if not re.fullmatch(_TOPIC_PATTERN, topic):
                raise ValueError(f"topics: {topic!r} is not a valid Kafka topic name")
        return self


class BatchHandlerSettings(BaseModel):
    """One ``[batch_handlers.<name>]`` table: a handler called once per committed batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="whose batches")
    handler: str = Field(min_length=1, description="a built-in name or 'package.module:Class'")
    retry: RetrySettings = Field(default_factory=RetrySettings)
    options: dict[str, Any] = Field(default_factory=dict, description="handler options")
    topic: str | None = Field(
        default=None, pattern=_TOPIC_PATTERN, description="default: the stream's batches topic"
    )
    start_from: Literal["earliest", "latest"] = "earliest"
    dead_letter_topic: str | None = Field(default=None, pattern=_TOPIC_PATTERN)
    group_id: str | None = Field(default=None, min_length=1, max_length=255)


class WorkerPlan(BaseModel):
    """Everything a running worker needs, defaults and service options applied."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    handler: str
    topics: tuple[str, ...]
    retry: RetryPolicy
    options: dict[str, Any]
    start_from: Literal["earliest", "latest"]
    dead_letter_topic: str
    group_id: str
    publish_stream: str
    publish_topic: str
    retry_topic_prefix: str


class HandlersConfig(BaseModel):
    """The whole ``handlers.toml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: Path = Field(default=Path("rules.toml"), description="relative to this file")
    source_topics: list[str] = Field(default_factory=lambda: ["orders"], min_length=1)
    publish_stream: str = Field(
        default="orders",
        pattern=_STREAM_PATTERN,
        description=(
            "the registered stream handlers publish to (their events are checked against its "
            "schema) and the router checks events against"
        ),
    )
    publish_topic: str | None = Field(
        default=None,
        pattern=_TOPIC_PATTERN,
        description="where handlers publish (default: the publish stream's topic)",
    )
    router_group: str = Field(default="streambatch-router", min_length=1, max_length=255)
    router_dead_letter_topic: str = Field(
        default="router.dlq",
        pattern=_TOPIC_PATTERN,
        description="where the router puts events that fail the schema (not fanned out)",
    )
    router_validates: bool = Field(
        default=True,
        description="check every event a rule matches against the publish stream's schema first",
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)
    services: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="options shared by the handlers of one service"
    )
    workers: dict[str, WorkerSettings] = Field(default_factory=dict)
    batch_handlers: dict[str, BatchHandlerSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_are_well_formed(self) -> HandlersConfig:
        for name in self.batch_handlers:
            if not re.fullmatch(_NAME_PATTERN, name) or name in self.workers:
                raise ValueError(
                    f"batch_handlers: {name!r} is not a handler name (lower case, digits, '.', "
                    "'_', '-') or is a worker's name too (names key the inbox)"
                )
        for name in self.workers:
            if not re.fullmatch(_NAME_PATTERN, name):
                raise ValueError(
                    f"workers: {name!r} is not a worker name (lower case, digits, '.', '_', '-')"
                )
        for topic in self.source_topics:
            if not re.fullmatch(_TOPIC_PATTERN, topic):
                raise ValueError(f"source_topics: {topic!r} is not a valid Kafka topic name")
        return self

    def default_retry(self) -> RetryPolicy:
        """The ``[retry]`` table over the built-in defaults."""
        return self.retry.over(RetryPolicy())

    def topic_of(self, stream: str) -> str:
        """Where events of ``stream`` are published: ``publish_topic`` for the file's
        publish stream, else the stream's own topic (its settings).

        Raises:
            UnknownStreamError: ``stream`` is not registered (the known ones named).
        """
        get_stream(stream)
        if stream == self.publish_stream and self.publish_topic is not None:
            return self.publish_topic
        return load_stream_settings(stream).topic

    def plan(self, name: str) -> WorkerPlan:
        """The plan of worker ``name``; ConfigError naming the known ones if it is unknown."""
        settings = self.workers.get(name)
        if settings is None:
            known = ", ".join(sorted(self.workers)) or "none"
            raise ConfigError(f"no worker named {name!r} in the handlers file (known: {known})")
        service = settings.handler.split(".", 1)[0].split(":", 1)[0]
        stream = settings.publish_stream or self.publish_stream
        return WorkerPlan(
            name=name,
            handler=settings.handler,
            topics=tuple(settings.topics),
            retry=settings.retry.over(self.default_retry()),
            options={**self.services.get(service, {}), **settings.options},
            start_from=settings.start_from,
            dead_letter_topic=settings.dead_letter_topic or f"{name}.dlq",
            group_id=settings.group_id or f"streambatch-{name}",
            publish_stream=stream,
            publish_topic=settings.publish_topic or self.topic_of(stream),
            retry_topic_prefix=settings.retry_topic_prefix or f"{name}.retry",
        )


def _locate(path: Path | None) -> Path:
    """The file asked for, else ``$STREAMBATCH_HANDLERS_FILE``, else the working
    directory's ``config/handlers.toml``, else the one shipped with the package."""
    if path is not None:
        return path
    from_settings = load_handler_settings().handlers_file
    if from_settings is not None:
        return from_settings
    return DEFAULT_HANDLERS_FILE if DEFAULT_HANDLERS_FILE.is_file() else SHIPPED_HANDLERS_FILE


def load_handlers_config(path: Path | None = None) -> HandlersConfig:
    """Read and validate the handlers file; the rules path becomes absolute.

    Raises:
        ConfigError: naming the file and the field that is refused.
    """
    located = _locate(path)
    try:
        raw = located.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"handlers file {located} not found (set {_HANDLERS_FILE_ENV} or pass --config)"
        ) from None
    try:
        if located.suffix.lower() == ".json":
            document = json.loads(raw)
        else:
            document = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError and JSONDecodeError
        kind = "JSON" if located.suffix.lower() == ".json" else "TOML"
        raise ConfigError(f"{located}: not valid {kind}: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{located}: the top level must be a table (object)")
    try:
        config = HandlersConfig.model_validate(document)
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors()
        ]
        message = f"{located}: invalid handlers configuration:\n  " + "\n  ".join(lines)
        raise ConfigError(message) from None
    try:
        config.default_retry()
    except ConfigError as exc:
        message = f"{located}: {exc} (the [retry] table over the built-in defaults)"
        raise ConfigError(message) from None
    try:
        config.topic_of(config.publish_stream)
    except ConfigError as exc:
        raise ConfigError(f"{located}: publish_stream: {exc}") from None
    for name in config.workers:
        try:
            config.plan(name)  # checks the merged retry policy of each worker
        except ConfigError as exc:
            raise ConfigError(f"{located}: workers.{name}.{exc}") from None
    rules = config.rules if config.rules.is_absolute() else located.parent / config.rules
    return config.model_copy(update={"rules": rules})


def handler_store_url(data_dir: Path) -> str:
    """``STREAMBATCH_HANDLER_STORE``, else a SQLite file under ``data_dir``."""
    url = load_handler_settings().handler_store
    if url is not None:
        return url.get_secret_value()
    return f"sqlite:///{(data_dir / 'handlers' / 'state.db').resolve()}"
