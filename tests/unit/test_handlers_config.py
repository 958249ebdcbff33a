"""The handlers file: the shipped one, merging of retry and options, defaults, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from foundation.clock import utc_now
from foundation.errors import ConfigError
from handlers.config import handler_store_url, load_handlers_config
from handlers.retry import RetryPolicy
from handlers.rules import RuleSet
from handlers.runtime import HandlerContext, builtin_handlers, resolve_handler
from handlers.schemas import InvalidEventError, event_schema
from handlers.store import open_store
from handlers.workflow import AuthorizePayment, NotifyCustomer, ReserveStock

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "handlers.toml"

MINIMAL_WORKER = """
[workers.finance]
handler = "finance.alert"
topics = ["finance.alerts"]
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STREAMBATCH_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "handlers.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_handlers_config(path)
    return str(caught.value)


# --- the shipped file ------------------------------------------------------------------------


def test_shipped_file_loads_with_its_rules_next_to_it() -> None:
    config = load_handlers_config(SHIPPED)
    assert config.rules == SHIPPED.parent / "rules.toml"
    assert config.rules.is_file()
    assert config.source_topics == ["orders"]
    assert config.publish_stream == "orders"
    assert config.topic_of("orders") == "orders"
    assert set(config.workers) == {
        "inventory-reserve",
        "inventory-decrease",
        "inventory-release",
        "payments",
        "payments-refund",
        "distribution",
        "email-sender",
        "sms-sender",
        "finance",
    }
    assert config.router_dead_letter_topic == "router.dlq"
    assert config.router_validates
    assert config.plan("payments").retry_topic_prefix == "payments.retry"


def test_every_shipped_worker_resolves_to_its_handler() -> None:
    config = load_handlers_config(SHIPPED)
    for name in config.workers:
        plan = config.plan(name)
        handler = resolve_handler(plan.handler, plan.options)
        assert handler.ddl, name
        assert plan.publish_topic == "orders"
    payments = config.plan("payments")
    handler = resolve_handler(payments.handler, payments.options)
    assert isinstance(handler, AuthorizePayment)
    assert handler.failure_rate == pytest.approx(0.10)
    assert handler.transient_failure_rate == pytest.approx(0.02)
    sms = config.plan("sms-sender")
    notifier = resolve_handler(sms.handler, sms.options)
    assert isinstance(notifier, NotifyCustomer)
    assert notifier.channel == "sms"


def test_every_shipped_worker_topic_is_published_to_by_some_rule() -> None:
    config = load_handlers_config(SHIPPED)
    targets = {target for rule in RuleSet.load(config.rules) for target in rule.targets}
    listened = {topic for settings in config.workers.values() for topic in settings.topics}
    assert listened - targets == set()


def test_shipped_retry_overrides_merge_over_the_retry_table() -> None:
    config = load_handlers_config(SHIPPED)
    assert config.plan("finance").retry == RetryPolicy(
        attempts=5, base_delay=timedelta(seconds=0.2), max_delay=timedelta(seconds=10)
    )
    # Only attempts is set: the delays come from [retry].
    assert config.plan("payments").retry == RetryPolicy(
        attempts=8, base_delay=timedelta(seconds=0.2), max_delay=timedelta(seconds=10)
    )
    assert config.plan("email-sender").retry == RetryPolicy(
        attempts=12, base_delay=timedelta(seconds=0.2), max_delay=timedelta(seconds=5)
    )


# --- merging and defaults -------------------------------------------------------------------


def test_worker_retry_merges_field_by_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[retry]
attempts = 3
max_delay_seconds = 30

[workers.only-attempts]
handler = "finance.alert"
topics = ["a"]
retry = { attempts = 9 }

[workers.only-base]
handler = "finance.alert"
topics = ["b"]
retry = { base_delay_seconds = 2.5 }

[workers.inherits]
handler = "finance.alert"
topics = ["c"]
""",
    )
    config = load_handlers_config(path)
    default_base = RetryPolicy().base_delay
    assert config.plan("only-attempts").retry == RetryPolicy(
        attempts=9, base_delay=default_base, max_delay=timedelta(seconds=30)
    )
    assert config.plan("only-base").retry == RetryPolicy(
        attempts=3, base_delay=timedelta(seconds=2.5), max_delay=timedelta(seconds=30)
    )
    assert config.plan("inherits").retry == RetryPolicy(
        attempts=3, base_delay=default_base, max_delay=timedelta(seconds=30)
    )


def test_no_retry_table_means_the_built_in_defaults(tmp_path: Path) -> None:
    config = load_handlers_config(write(tmp_path, MINIMAL_WORKER))
    assert config.plan("finance").retry == RetryPolicy()


def test_service_options_merge_under_worker_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[services.inventory]
initial_stock = 7
note = "service"

[services.payments]
failure_rate = 0.5

[workers.reserve]
handler = "inventory.reserve"
topics = ["inventory.reserve"]
options = { note = "worker", extra = 1 }

[workers.release]
handler = "inventory.release"
topics = ["inventory.release"]

[workers.custom]
handler = "handlers.workflow:ReserveStock"
topics = ["custom"]
""",
    )
    config = load_handlers_config(path)
    assert config.plan("reserve").options == {"initial_stock": 7, "note": "worker", "extra": 1}
    assert config.plan("release").options == {"initial_stock": 7, "note": "service"}
    # A 'module:attribute' handler's service is its first name part: not "inventory".
    assert config.plan("custom").options == {}
    plan = config.plan("reserve")
    reserve = resolve_handler(plan.handler, plan.options)
    assert isinstance(reserve, ReserveStock)
    assert reserve.initial_stock == 7


def test_worker_defaults_for_dead_letters_group_and_start(tmp_path: Path) -> None:
    config = load_handlers_config(write(tmp_path, MINIMAL_WORKER))
    plan = config.plan("finance")
    assert plan.dead_letter_topic == "finance.dlq"
    assert plan.group_id == "streambatch-finance"
    assert plan.start_from == "earliest"
    assert plan.topics == ("finance.alerts",)
    assert plan.publish_topic == "orders"


def test_worker_may_name_its_dead_letter_topic_and_group(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL_WORKER + 'dead_letter_topic = "finance.parked"\ngroup_id = "fin"\n'
        'start_from = "latest"\n',
    )
    plan = load_handlers_config(path).plan("finance")
    assert (plan.dead_letter_topic, plan.group_id, plan.start_from) == (
        "finance.parked",
        "fin",
        "latest",
    )


def test_relative_rules_path_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", 'rules = "more/rules.toml"\n' + MINIMAL_WORKER)
    assert load_handlers_config(path).rules == tmp_path / "conf" / "more" / "rules.toml"


def test_file_comes_from_the_environment_when_not_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, MINIMAL_WORKER, name="elsewhere.toml")
    monkeypatch.setenv("STREAMBATCH_HANDLERS_FILE", str(path))
    assert set(load_handlers_config().workers) == {"finance"}


def test_json_file_reads_like_the_toml_one(tmp_path: Path) -> None:
    document = {
        "retry": {"attempts": 4},
        "services": {"payments": {"failure_rate": 0.3}},
        "workers": {
            "payments": {
                "handler": "payments.authorize",
                "topics": ["payments.authorize"],
                "retry": {"max_delay_seconds": 3},
            }
        },
    }
    path = write(tmp_path, json.dumps(document), name="handlers.json")
    plan = load_handlers_config(path).plan("payments")
    assert plan.retry == RetryPolicy(
        attempts=4, base_delay=RetryPolicy().base_delay, max_delay=timedelta(seconds=3)
    )
    assert plan.options == {"failure_rate": 0.3}


# --- refusals -------------------------------------------------------------------------------


def test_unknown_worker_lists_the_known_ones(tmp_path: Path) -> None:
    config = load_handlers_config(SHIPPED)
    with pytest.raises(ConfigError) as caught:
        config.plan("paymnets")
    message = str(caught.value)
    assert "'paymnets'" in message
    for name in ("distribution", "email-sender", "finance", "payments", "sms-sender"):
        assert name in message
    empty = load_handlers_config(write(tmp_path, 'publish_topic = "orders"\n'))
    with pytest.raises(ConfigError, match="known: none"):
        empty.plan("payments")


def test_bad_worker_topic_is_refused_naming_file_and_topic(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_WORKER.replace('["finance.alerts"]', '["finance alerts"]'))
    message = refusal(path)
    assert str(path) in message
    assert "workers.finance" in message
    assert "'finance alerts' is not a valid Kafka topic name" in message


def test_bad_worker_name_is_refused_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_WORKER.replace("[workers.finance]", "[workers.Finance]"))
    message = refusal(path)
    assert str(path) in message
    assert "'Finance' is not a worker name" in message


def test_bad_source_topic_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'source_topics = ["orders", "bad/topic"]\n')
    message = refusal(path)
    assert str(path) in message
    assert "source_topics: 'bad/topic'" in message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("colour = 'blue'\n" + MINIMAL_WORKER, "colour"),
        (MINIMAL_WORKER + "colour = 'blue'\n", "workers.finance.colour"),
        ("[retry]\njitter = true\n" + MINIMAL_WORKER, "retry.jitter"),
        (MINIMAL_WORKER + "retry = { attempt = 3 }\n", "workers.finance.retry.attempt"),
    ],
)
def test_unknown_key_is_refused_naming_it(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    message = refusal(path)
    assert str(path) in message
    assert f"{field}: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('handler = ""', "workers.finance.handler"),
        ("topics = []", "workers.finance.topics"),
        ('start_from = "middle"', "workers.finance.start_from"),
        ('dead_letter_topic = "no spaces allowed"', "workers.finance.dead_letter_topic"),
        ("retry = { attempts = 0 }", "workers.finance.retry.attempts"),
        ("retry = { base_delay_seconds = -1 }", "workers.finance.retry.base_delay_seconds"),
    ],
)
def test_bad_worker_field_is_refused_naming_it(tmp_path: Path, line: str, field: str) -> None:
    key = line.split(" ", 1)[0]
    kept = [
        existing for existing in MINIMAL_WORKER.splitlines() if not existing.startswith(key + " ")
    ]
    path = write(tmp_path, "\n".join([*kept, line]) + "\n")
    message = refusal(path)
    assert str(path) in message
    assert field in message


def test_worker_max_delay_below_base_names_the_worker(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_WORKER + "retry = { base_delay_seconds = 20 }\n")
    message = refusal(path)
    assert str(path) in message
    assert "workers.finance.retry" in message
    assert "max_delay" in message
    assert "base_delay" in message


def test_max_delay_below_inherited_base_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[retry]\nbase_delay_seconds = 4\n"
        + MINIMAL_WORKER
        + "retry = { max_delay_seconds = 1 }\n",
    )
    message = refusal(path)
    assert "workers.finance.retry" in message
    assert "max_delay (0:00:01) must be >= base_delay (0:00:04)" in message


def test_invalid_retry_table_is_refused_without_workers(tmp_path: Path) -> None:
    path = write(tmp_path, "[retry]\nbase_delay_seconds = 20\n")
    message = refusal(path)
    assert str(path) in message


def test_invalid_retry_table_is_blamed_on_the_retry_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[retry]\nbase_delay_seconds = 20\n" + MINIMAL_WORKER)
    message = refusal(path)
    assert "workers.finance" not in message


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    message = refusal(path)
    assert str(path) in message
    assert "not found" in message
    assert "STREAMBATCH_HANDLERS_FILE" in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers.finance\nhandler = 'finance.alert'\n")
    message = refusal(path)
    assert message.startswith(f"{path}: not valid TOML")


def test_non_utf8_file_is_refused_as_invalid(tmp_path: Path) -> None:
    path = tmp_path / "handlers.toml"
    path.write_bytes(b"publish_topic = '\xff\xfe'\n")
    assert refusal(path).startswith(f"{path}: not valid TOML")


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '{"workers": {', name="handlers.json")
    assert refusal(path).startswith(f"{path}: not valid JSON")


def test_json_top_level_must_be_an_object(tmp_path: Path) -> None:
    path = write(tmp_path, '[{"workers": {}}]', name="handlers.json")
    message = refusal(path)
    assert str(path) in message
    assert "top level must be a table" in message


def test_toml_text_in_a_json_file_is_refused_as_json(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_WORKER, name="handlers.json")
    assert refusal(path).startswith(f"{path}: not valid JSON")


# --- the store URL --------------------------------------------------------------------------


def test_store_url_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMBATCH_HANDLER_STORE", "postgresql://app@db:5432/handlers")
    assert handler_store_url(tmp_path) == "postgresql://app@db:5432/handlers"


def test_store_url_defaults_to_sqlite_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = handler_store_url(Path("data"))
    expected = tmp_path.resolve() / "data" / "handlers" / "state.db"
    assert url == f"sqlite:///{expected}"
    # The URL is one open_store reads as that absolute file.
    monkeypatch.chdir(tmp_path.parent)
    with open_store(url):
        pass
    assert expected.is_file()


def test_empty_store_variable_means_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMBATCH_HANDLER_STORE", "")
    assert handler_store_url(tmp_path).startswith("sqlite:///")


# --- the handler runtime apart from the workflow ---------------------------------------------


def test_the_workflows_handlers_are_named_by_entry_points_like_anyone_elses() -> None:
    named = builtin_handlers()
    assert named["inventory.reserve"] == "handlers.workflow:ReserveStock"
    assert named["finance.alert"] == "handlers.workflow:AlertFinance"
    shipped = {settings.handler for settings in load_handlers_config(SHIPPED).workers.values()}
    assert shipped <= set(named)
    # Naming the class directly builds the same kind of handler.
    direct = resolve_handler("handlers.workflow:ReserveStock", {"initial_stock": 3})
    assert isinstance(direct, ReserveStock)
    assert direct.initial_stock == 3


def test_an_unknown_handler_name_lists_the_named_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown handler 'nope'; named: .*inventory\.reserve"):
        resolve_handler("nope", {})


def test_the_runtime_does_not_import_the_workflow() -> None:
    code = (
        "import sys, handlers.runtime, handlers.worker, handlers.router; "
        "print('handlers.workflow' in sys.modules)"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert found == "False"


def test_publish_stream_is_a_per_worker_setting_with_the_streams_topic(tmp_path: Path) -> None:
    config = load_handlers_config(
        write(
            tmp_path,
            MINIMAL_WORKER
            + '\n[workers.clicks-echo]\nhandler = "finance.alert"\ntopics = ["x"]\n'
            + 'publish_stream = "clicks"\n'
            + '\n[workers.renamed]\nhandler = "finance.alert"\ntopics = ["x"]\n'
            + 'publish_stream = "clicks"\npublish_topic = "web.clicks"\n',
        )
    )
    assert (config.plan("finance").publish_stream, config.plan("finance").publish_topic) == (
        "orders",
        "orders",
    )
    assert (
        config.plan("clicks-echo").publish_stream,
        config.plan("clicks-echo").publish_topic,
    ) == (
        "clicks",
        "clicks",
    )
    assert config.plan("renamed").publish_topic == "web.clicks"
    # The file's own publish topic applies to the file's publish stream only.
    moved = load_handlers_config(
        write(tmp_path, 'publish_topic = "shop.orders"\n' + MINIMAL_WORKER)
    )
    assert moved.plan("finance").publish_topic == "shop.orders"


def test_an_unknown_publish_stream_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    message = refusal(write(tmp_path, 'publish_stream = "payments"\n'))
    assert "publish_stream" in message and "payments" in message and "orders" in message
    worker = MINIMAL_WORKER + 'publish_stream = "payments"\n'
    message = refusal(write(tmp_path, worker))
    assert "workers.finance" in message and "payments" in message


def test_a_worker_checks_what_it_publishes_against_its_publish_stream(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    cause = {"event_id": "e1", "event_type": "PageView"}
    with store.transaction() as transaction:
        clicks = HandlerContext("w", cause, transaction, "clicks", utc_now, event_schema("clicks"))
        # An orders event is not a clicks event: refused before it reaches the outbox.
        with pytest.raises(InvalidEventError, match="FinanceAlerted"):
            clicks.publish("FinanceAlerted", {"order_id": "o1", "reason": "r"})
        orders = HandlerContext("w", cause, transaction, "orders", utc_now, event_schema("orders"))
        orders.publish("FinanceAlerted", {"order_id": "o1", "reason": "r"})
    assert [message.topic for message in store.pending_outbox()] == ["orders"]
    store.close()
