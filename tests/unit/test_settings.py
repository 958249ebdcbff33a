"""Configuration: defaults, TOML file, env precedence, per-stream overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import load_kafka_settings, load_pipeline_settings, load_stream_settings
from streambatch.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("STREAMBATCH_", "KAFKA_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_match_the_contract() -> None:
    settings = load_stream_settings("orders")
    assert settings.topic == "orders"
    assert settings.dead_letter_topic == "orders.dlq"
    assert settings.window_seconds == 600
    assert settings.window_bytes == 10 * 1024 * 1024
    assert settings.dedupe_horizon_seconds == 86400
    assert settings.stop_at_end is False
    assert settings.data_dir == Path("data")
    assert load_kafka_settings().bootstrap_servers == "localhost:9092"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STREAMBATCH_WINDOW_SECONDS", "-5"),
        ("STREAMBATCH_WINDOW_SECONDS", "ten"),
        ("STREAMBATCH_WINDOW_BYTES", "12"),
        ("STREAMBATCH_DEDUPE_HORIZON_SECONDS", "-1"),
        ("STREAMBATCH_STOP_AT_END", "maybe"),
        ("STREAMBATCH_ORDERS_TOPIC", "bad/topic"),
        ("STREAMBATCH_ORDERS_WINDOW_SECONDS", "0"),
        ("KAFKA_SECURITY_PROTOCOL", "CARRIER_PIGEON"),
    ],
)
def test_bad_value_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        load_stream_settings("orders")
        load_kafka_settings()
    assert variable in str(error.value)


def test_file_sets_keys_and_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("streambatch.toml").write_text(
        'STREAMBATCH_WINDOW_SECONDS = 60\nSTREAMBATCH_DATA_DIR = "/tmp/lake"\n'
        'KAFKA_BOOTSTRAP_SERVERS = "kafka:9092"\n'
    )
    assert load_pipeline_settings().window_seconds == 60
    assert load_kafka_settings().bootstrap_servers == "kafka:9092"
    monkeypatch.setenv("STREAMBATCH_WINDOW_SECONDS", "30")
    settings = load_stream_settings("orders")
    assert settings.window_seconds == 30
    assert settings.data_dir == Path("/tmp/lake")


def test_bad_value_in_file_names_the_key() -> None:
    Path("streambatch.toml").write_text("STREAMBATCH_WINDOW_BYTES = 3\n")
    with pytest.raises(ConfigError, match="STREAMBATCH_WINDOW_BYTES"):
        load_pipeline_settings()


def test_per_stream_override_beats_shared_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMBATCH_WINDOW_SECONDS", "300")
    monkeypatch.setenv("STREAMBATCH_LOGS_WINDOW_SECONDS", "60")
    monkeypatch.setenv("STREAMBATCH_ORDERS_TOPIC", "shop.orders")
    assert load_stream_settings("logs").window_seconds == 60
    orders = load_stream_settings("orders")
    assert orders.window_seconds == 300
    assert orders.dead_letter_topic == "shop.orders.dlq"


def test_sasl_needs_credentials_and_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2-secret")
    with pytest.raises(ConfigError) as error:
        load_kafka_settings()
    assert "KAFKA_SASL_USERNAME" in str(error.value)
    assert "hunter2-secret" not in str(error.value)
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "app")
    settings = load_kafka_settings()
    assert "hunter2-secret" not in repr(settings)
    assert settings.librdkafka_config()["sasl.password"] == "hunter2-secret"


def test_per_stream_override_from_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("streambatch.toml").write_text(
        "STREAMBATCH_WINDOW_SECONDS = 600\nSTREAMBATCH_LOGS_WINDOW_SECONDS = 60\n"
        "STREAMBATCH_LOGS_DEDUPE_HORIZON_SECONDS = 3600\n"
    )
    logs = load_stream_settings("logs")
    assert (logs.window_seconds, logs.dedupe_horizon_seconds) == (60, 3600)
    assert load_stream_settings("clicks").window_seconds == 600
    monkeypatch.setenv("STREAMBATCH_LOGS_WINDOW_SECONDS", "30")
    assert load_stream_settings("logs").window_seconds == 30


def test_bad_per_stream_override_in_the_file_names_the_key() -> None:
    Path("streambatch.toml").write_text("STREAMBATCH_CLICKS_WINDOW_BYTES = 1\n")
    with pytest.raises(ConfigError, match="STREAMBATCH_CLICKS_WINDOW_BYTES"):
        load_stream_settings("clicks")
