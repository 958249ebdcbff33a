"""Configuration of streambatch (the README's "Configuration" section)."""

from config.settings import (
    CONFIG_FILE_NAME,
    KafkaSettings,
    PipelineSettings,
    StreamSettings,
    load_pipeline_settings,
    load_stream_settings,
    read_kafka_settings,
)

__all__ = [
    "CONFIG_FILE_NAME",
    "KafkaSettings",
    "PipelineSettings",
    "StreamSettings",
    "load_pipeline_settings",
    "load_stream_settings",
    "read_kafka_settings",
]
