"""The one place where Kafka clients are built, and where "is Kafka there?" is asked.

Every consumer, producer and admin client of streambatch comes from here, so
each one gets the same treatment: librdkafka's own log lines go to the
``streambatch.librdkafka`` logger at debug level (never straight to the
terminal), and an unreachable cluster or an absent topic is one clear error
(:class:`KafkaUnreachable`, :class:`TopicUnavailable`) instead of a wall of
``%3|...|FAIL|`` lines and a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata, TopicMetadata

from foundation.errors import TerminalError

__all__ = [
    "REACH_TIMEOUT_SECONDS",
    "ClientConfig",
    "KafkaUnreachable",
    "TopicUnavailable",
    "describe_topic",
    "end_offsets",
    "kafka_error_text",
    "new_admin",
    "new_consumer",
    "new_producer",
    "require_cluster",
]

ClientConfig = Mapping[str, Any]
# Long enough for a slow cluster's first metadata answer, short enough that a
# command with a wrong address says so within about ten seconds.
REACH_TIMEOUT_SECONDS = 6.0

_librdkafka_log = logging.getLogger("streambatch.librdkafka")


class _DebugLevel(logging.LoggerAdapter[logging.Logger]):
    """librdkafka reports a refused connection as an error on every retry; to us it
    is detail behind the one line we print, so every level becomes debug."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.debug(msg, *args, **kwargs)


_LOGGER = _DebugLevel(_librdkafka_log, {})


class KafkaUnreachable(TerminalError):
    """No broker of the configured cluster answered in time."""


class TopicUnavailable(TerminalError):
    """The cluster answered but the topic is absent or in error."""


def _config(base: ClientConfig, overrides: ClientConfig | None) -> dict[str, Any]:
    # Ours win: a client's own settings (idempotence, offsets) are part of its
    # guarantee; the connection part comes from the user.
    return {**base, **(overrides or {}), "logger": _LOGGER}


def new_consumer(config: ClientConfig, overrides: ClientConfig | None = None) -> Consumer:
    """A consumer of ``config`` plus ``overrides``, logging through our logger."""
    return Consumer(_config(config, overrides))


def new_producer(config: ClientConfig, overrides: ClientConfig | None = None) -> Producer:
    """A producer of ``config`` plus ``overrides``, logging through our logger."""
    return Producer(_config(config, overrides))


def new_admin(config: ClientConfig, overrides: ClientConfig | None = None) -> AdminClient:
    """An admin client that never creates a topic by asking about it (Tansu and some
    brokers auto-create on a metadata request)."""
    return AdminClient(_config(config, {"allow.auto.create.topics": "false", **(overrides or {})}))


def kafka_error_text(exc: BaseException) -> str:
    """The readable reason inside a ``KafkaException`` (its ``KafkaError.str()``)."""
    if isinstance(exc, KafkaException) and exc.args and hasattr(exc.args[0], "str"):
        return str(exc.args[0].str())
    return str(exc) or type(exc).__name__


def _where(config: ClientConfig) -> str:
    servers = config.get("bootstrap.servers", "(no bootstrap.servers)")
    protocol = config.get("security.protocol", "PLAINTEXT")
    return f"{servers} ({protocol})"


def require_cluster(
    config: ClientConfig,
    *,
    topic: str | None = None,
    timeout_seconds: float = REACH_TIMEOUT_SECONDS,
) -> ClusterMetadata:
    """The cluster's metadata (of ``topic`` only, when given), or one clear error.

    Raises:
        KafkaUnreachable: naming the brokers and the client's reason (never a secret).
    """
    # The reason a handshake failed (a CA that did not sign the brokers' certificate,
    # refused credentials) reaches only the error callback, not list_topics.
    handshake_errors: list[KafkaError] = []
    admin = new_admin(config, {"error_cb": _keep_handshake_errors(handshake_errors)})
    try:
        return admin.list_topics(topic, timeout=timeout_seconds)
    except KafkaException as exc:
        admin.poll(0)  # serves the error callbacks
        if handshake_errors:
            raise KafkaUnreachable(_handshake_failure(config, handshake_errors[-1])) from None
        raise KafkaUnreachable(
            f"cannot reach Kafka at {_where(config)}: {kafka_error_text(exc)}; "
            "check KAFKA_BOOTSTRAP_SERVERS (or -b) and that the brokers are up"
        ) from None


def _keep_handshake_errors(kept: list[KafkaError]) -> Callable[[KafkaError], None]:
    def keep(error: KafkaError) -> None:
        if error.code() in (KafkaError._SSL, KafkaError._AUTHENTICATION):
            kept.append(error)

    return keep


def _handshake_failure(config: ClientConfig, error: KafkaError) -> str:
    if error.code() == KafkaError._SSL:
        return (
            f"TLS handshake with Kafka at {_where(config)} failed: {error.str()}; check "
            "KAFKA_SSL_CA_LOCATION (the CA that signed the brokers' certificates) and the "
            "other KAFKA_SSL_* settings"
        )
    return (
        f"Kafka at {_where(config)} refused the credentials: {error.str()}; check "
        "KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    )


def describe_topic(
    config: ClientConfig, topic: str, *, timeout_seconds: float = REACH_TIMEOUT_SECONDS
) -> TopicMetadata:
    """``topic``'s metadata (its partitions), asking once and never creating it.

    Raises:
        KafkaUnreachable: the cluster did not answer.
        TopicUnavailable: the cluster answered without the topic, or with an error for it.
    """
    described = require_cluster(config, topic=topic, timeout_seconds=timeout_seconds)
    found = described.topics.get(topic)
    if found is None or found.error is not None:
        reason = found.error.str() if found is not None and found.error else "it does not exist"
        raise TopicUnavailable(f"topic {topic!r} is not available at {_where(config)}: {reason}")
    return found


def end_offsets(
    config: ClientConfig, topics: Iterable[str], *, group_id: str = "streambatch-offsets"
) -> dict[str, dict[int, int]]:
    """The end offset (high watermark) of every partition of ``topics``, as the broker says now.

    A lower bound of what is there a moment later. Raises like :func:`describe_topic`.
    """
    consumer = new_consumer(config, {"group.id": group_id})
    try:
        ends: dict[str, dict[int, int]] = {}
        for topic in sorted(topics):
            described = describe_topic(config, topic)
            ends[topic] = {
                partition: consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=30
                )[1]
                for partition in sorted(described.partitions)
            }
        return ends
    finally:
        consumer.close()
