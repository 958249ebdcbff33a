"""Configuration of streambatch (see CONTRACT.md section 3)."""

from config.settings import (
    CONFIG_FILE_NAME,
    STREAM_NAMES,
    KafkaSettings,
    PipelineSettings,
    StreamSettings,
    load_kafka_settings,
    load_pipeline_settings,
    load_stream_settings,
)

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
