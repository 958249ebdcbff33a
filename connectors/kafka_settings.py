"""Kafka settings as librdkafka accepts them: what every command and flow loads.

:mod:`config.settings` declares and reads the settings; whether librdkafka
takes its properties is known only by building a client, which is this
layer's job (:mod:`connectors.kafka_clients` builds every client).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import KafkaException

from config.settings import (
    KafkaSettings,
    is_secret_property,
    kafka_property_origins,
    read_kafka_settings,
)
from connectors.kafka_clients import kafka_error_text, new_producer
from foundation.errors import ConfigError

__all__ = ["load_kafka_settings"]


def load_kafka_settings(config_file: Path | None = None) -> KafkaSettings:
    """Kafka settings from env and ``streambatch.toml``, checked by librdkafka itself.

    Raises:
        ConfigError: a bad value or an unknown property, naming it (never a secret).
    """
    settings = read_kafka_settings(config_file)
    _check_with_librdkafka(settings, kafka_property_origins(config_file))
    return settings


def _check_with_librdkafka(settings: KafkaSettings, origins: Mapping[str, str]) -> None:
    """Build (never connect) a client with ``settings``: librdkafka refuses what it does
    not know, and values it cannot use (a missing CA file, a missing OIDC endpoint)."""
    config = settings.librdkafka_config()
    # No brokers: nothing connects, nothing is sent.
    config.pop("bootstrap.servers", None)
    try:
        new_producer(config)
    except KafkaException as exc:
        reason = kafka_error_text(exc).removeprefix("Failed to create producer: ")
        for name, value in config.items():
            if is_secret_property(name) and value:
                reason = reason.replace(value, "**********")
        named = re.search(r'property "([^"]+)"', reason)
        prop = named.group(1) if named else next((n for n in origins if n in reason), None)
        origin = origins.get(prop or "", f"Kafka setting {prop}" if prop else "Kafka settings")
        location = config.get(prop or "", "")
        if (prop or "").endswith(".location") and location and not Path(location).exists():
            reason += f" ({location}: no such file)"
        raise ConfigError(
            f"{origin}: {reason}; see librdkafka's CONFIGURATION.md for its properties"
        ) from None
