"""Configuration: defaults, TOML file, env precedence, per-stream overrides, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config import load_pipeline_settings, load_stream_settings
from config.settings import load_handler_settings, load_log_settings
from connectors.kafka_settings import load_kafka_settings
from foundation.errors import ConfigError


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


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ("# lake\nwindow_bytes = 3\n", "STREAMBATCH_WINDOW_BYTES (streambatch.toml:2): "),
        ("[streams.logs]\ntopic = 'a/b'\n", "STREAMBATCH_LOGS_TOPIC (streambatch.toml:2): "),
    ],
)
def test_bad_value_in_file_names_its_line(document: str, says: str) -> None:
    Path("streambatch.toml").write_text(document)
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_stream_settings("logs")


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


def test_file_takes_the_documented_names_and_tables() -> None:
    Path("streambatch.toml").write_text(
        'window_seconds = 60\ndata_dir = "/tmp/lake"\nlog_level = "debug"\n\n'
        '[kafka]\nbootstrap_servers = "kafka:9093"\n"client.id" = "shop"\n'
        "socket.keepalive.enable = true\nmessage_max_bytes = 2000000\n\n"
        '[streams.orders]\ntopic = "shop.orders"\nwindow_seconds = 30\n'
    )
    assert load_pipeline_settings().window_seconds == 60
    orders = load_stream_settings("orders")
    assert (orders.topic, orders.window_seconds, orders.data_dir) == (
        "shop.orders",
        30,
        Path("/tmp/lake"),
    )
    assert load_stream_settings("clicks").window_seconds == 60
    assert load_log_settings().log_level == "DEBUG"
    config = load_kafka_settings().librdkafka_config()
    assert config["bootstrap.servers"] == "kafka:9093"
    assert config["client.id"] == "shop"
    assert config["socket.keepalive.enable"] == "true"
    assert config["message.max.bytes"] == "2000000"


@pytest.mark.parametrize(
    ("document", "line", "key"),
    [
        ("window_seconds = 60\nwindow_second = 60\n", 2, "window_second"),
        ("[streams.orders]\ntopic = 'a'\n\nwindw_bytes = 5000\n", 4, "streams.orders.windw_bytes"),
        ("STREAMBATCH_WINDOW_SECONDS = 1\nSTREAMBATCH_WINDOW_SECOND = 1\n", 2, "WINDOW_SECOND"),
        ("[pipeline]\nwindow_seconds = 60\n", 1, "pipeline"),
        ("bootstrap_servers = 'x:1'\n", 1, "bootstrap_servers"),
    ],
)
def test_unknown_key_in_the_file_is_refused_with_its_line(
    document: str, line: int, key: str
) -> None:
    Path("streambatch.toml").write_text(document)
    with pytest.raises(ConfigError) as error:
        load_pipeline_settings()
    message = str(error.value)
    assert message.startswith(f"streambatch.toml:{line}: unknown key")
    assert key in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("document", "line"),
    [
        ('[kafka]\nclient_id = "shop"\n"ssl.ca.locaton" = "x"\n', 3),
        ('[kafka]\nclient_id = "shop"\nssl.ca.locaton = "x"\n', 3),
        ('window_seconds = 60\n[kafka.ssl]\n\nca.locaton = "x"\n', 4),
        ('window_seconds = 60\nkafka = { "ssl.ca.locaton" = "x" }\n', 2),
    ],
    ids=["quoted", "dotted", "sub-table", "inline-table"],
)
def test_unknown_kafka_property_in_the_file_is_refused_with_its_line(
    document: str, line: int
) -> None:
    Path("streambatch.toml").write_text(document)
    with pytest.raises(ConfigError) as error:
        load_kafka_settings()
    message = str(error.value)
    assert f"KAFKA_SSL_CA_LOCATON (streambatch.toml:{line})" in message
    assert 'No such configuration property: "ssl.ca.locaton"' in message


def test_a_setting_given_twice_in_the_file_is_refused() -> None:
    Path("streambatch.toml").write_text("window_seconds = 60\nSTREAMBATCH_WINDOW_SECONDS = 30\n")
    with pytest.raises(ConfigError, match=r"streambatch.toml:2: .*second time \(line 1\)"):
        load_pipeline_settings()


def test_any_librdkafka_property_from_the_environment_beats_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Path("streambatch.toml").write_text('[kafka]\n"client.id" = "from-file"\nlinger_ms = 5\n')
    monkeypatch.setenv("KAFKA_CLIENT_ID", "from-env")
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", "/etc/kafka/ca.pem")
    monkeypatch.setenv("KAFKA_SASL_OAUTHBEARER_METHOD", "oidc")
    config = load_kafka_settings().librdkafka_config()
    assert config["client.id"] == "from-env"
    assert config["linger.ms"] == "5"
    assert config["ssl.ca.location"] == "/etc/kafka/ca.pem"
    assert config["sasl.oauthbearer.method"] == "oidc"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("KAFKA_NO_SUCH_THING", "1", 'No such configuration property: "no.such.thing"'),
        ("KAFKA_MESSAGE_MAX_BYTES", "lots", 'configuration property "message.max.bytes"'),
        ("KAFKA_SSL_CA_LOCATION", "/nonexistent/ca.pem", "/nonexistent/ca.pem: no such file"),
    ],
)
def test_a_property_librdkafka_refuses_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        load_kafka_settings()
    message = str(error.value)
    assert message.startswith(f"{variable} (environment): ")
    assert says in message
    assert "\n" not in message


def test_kafka_shell_tool_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    from config.settings import KAFKA_TOOL_VARIABLES

    for name in KAFKA_TOOL_VARIABLES:
        monkeypatch.setenv(name, "-Xmx1G /opt/kafka")
    config = load_kafka_settings().librdkafka_config()
    assert set(config) == {"bootstrap.servers", "security.protocol"}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KAFKA_SSL_KEY_PASSWORD", "hunter2-key"),
        ("KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", "hunter2-client"),
        ("KAFKA_SASL_OAUTHBEARER_CONFIG", "principal=hunter2-config"),
        ("KAFKA_SSL_KEY_PEM", "hunter2-pem"),
    ],
)
def test_secret_properties_are_never_shown(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    if variable == "KAFKA_SSL_KEY_PEM":
        # Not a key: librdkafka refuses it, and the refusal must not show it.
        with pytest.raises(ConfigError) as error:
            load_kafka_settings()
        assert variable in str(error.value)
        assert value not in str(error.value)
        return
    monkeypatch.setenv("KAFKA_MESSAGE_MAX_BYTES", "lots")  # an error beside the secret
    with pytest.raises(ConfigError) as error:
        load_kafka_settings()
    assert value not in str(error.value)
    monkeypatch.delenv("KAFKA_MESSAGE_MAX_BYTES")
    settings = load_kafka_settings()
    assert value not in repr(settings)
    assert value not in str(settings.model_dump())
    prop = variable.removeprefix("KAFKA_").lower().replace("_", ".")
    assert settings.librdkafka_config()[prop] == value


def test_log_and_handler_settings_come_from_env_and_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Path("streambatch.toml").write_text(
        'log_format = "TEXT"\nhandler_store = "postgresql://app:hunter2@db/h"\n'
    )
    assert load_log_settings().log_format == "text"
    assert "hunter2" not in repr(load_handler_settings())
    monkeypatch.setenv("STREAMBATCH_HANDLER_STORE", "")
    assert load_handler_settings().handler_store is None
    monkeypatch.setenv("STREAMBATCH_LOG_LEVEL", "verbose")
    with pytest.raises(ConfigError, match="STREAMBATCH_LOG_LEVEL"):
        load_log_settings()


def test_stream_settings_declare_each_pipeline_field_once() -> None:
    from config.settings import PER_STREAM_FIELDS, PipelineSettings, StreamSettings

    for name, info in PipelineSettings.model_fields.items():
        own = StreamSettings.model_fields[name]
        assert (own.annotation, own.default, own.metadata) == (
            info.annotation,
            info.default,
            info.metadata,
        ), name
    assert set(StreamSettings.model_fields) - set(PipelineSettings.model_fields) == {
        "stream",
        "topic",
        "batches_topic",
    }
    assert PER_STREAM_FIELDS == (
        "topic",
        "window_seconds",
        "window_bytes",
        "dedupe_horizon_seconds",
        "max_record_bytes",
        "retry_seconds",
        "max_partitions_per_commit",
        "announce_batches",
        "batches_topic",
    )


def test_a_per_stream_override_is_checked_like_the_global_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STREAMBATCH_WINDOW_SECONDS", "30")
    monkeypatch.setenv("STREAMBATCH_CLICKS_WINDOW_SECONDS", "0")
    assert load_stream_settings("orders").window_seconds == 30
    with pytest.raises(ConfigError, match="STREAMBATCH_CLICKS_WINDOW_SECONDS"):
        load_stream_settings("clicks")
