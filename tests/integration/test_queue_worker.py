"""Queue workers against a real broker and store: retries then one dead letter, terminal
errors at once, redrive after a fix, and a subscriber added by configuration only."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from generator import generate_order_records
from handlers.config import load_handlers_config
from handlers.outbox import OutboxRelay
from handlers.service import NotSettledError, run_workers
from handlers.store import open_store
from handlers.worker import build_worker
from tests.support import StreamTopics, read_topic, send
from tests.support_handlers import HandlerSetup, stop, summary_counts

ATTEMPTS = 4


def produce_raw(setup: HandlerSetup, topic: str, events: list[dict[str, str]]) -> list[bytes]:
    """Send events straight to a worker's topic; returns their bytes."""
    producer = Producer({"bootstrap.servers": setup.topics.bootstrap_servers})
    values = [orjson.dumps(event) for event in events]
    for value, event in zip(values, events, strict=True):
        producer.produce(
            topic, value=value, key=event["event_id"].encode(), headers=[("trace", b"t-1")]
        )
    assert producer.flush(30) == 0
    return values


def run_worker_until_idle(setup: HandlerSetup, *names: str, idle: float = 6) -> str:
    process = setup.start("worker", *names, "--until-idle", str(idle), log_name="worker.log")
    assert process.wait(timeout=180) == 0, setup.log("worker.log")[-3000:]
    return setup.log("worker.log")


def test_always_transient_handler_gets_exactly_n_attempts_then_one_dead_letter(
    topics: StreamTopics, tmp_path: Path
) -> None:
    setup = HandlerSetup(topics, tmp_path)
    setup.write_rules([])
    calls = tmp_path / "calls.txt"
    setup.write_handlers(
        {
            "flaky": {
                "handler": "tests.support_handlers:AlwaysTransient",
                "topics": ["work"],
                "options": {"calls_file": str(calls)},
                "retry": {
                    "attempts": ATTEMPTS,
                    "base_delay_seconds": 0.05,
                    "max_delay_seconds": 0.2,
                },
            }
        }
    )
    events = [{"event_id": f"e-{n}", "event_type": "Anything"} for n in range(3)]
    run_worker_until_idle(setup, "flaky", idle=0.5)  # creates the topics, joins the group
    values = produce_raw(setup, setup.topic("work"), events)
    log = run_worker_until_idle(setup, "flaky")
    assert Counter(calls.read_text().split()) == {f"e-{n}": ATTEMPTS for n in range(3)}
    letters = read_topic(topics.bootstrap_servers, setup.dead_letter_topic("flaky"))
    assert sorted(letter.value() for letter in letters) == sorted(values)
    for letter in letters:
        headers = {key: value.decode() for key, value in letter.headers()}
        assert headers["trace"] == "t-1"  # the original headers are kept
        assert headers["error.stage"] == "handler"
        assert headers["error.class"] == "TransientError"
        assert "dependency down for e-" in headers["error.message"]
        assert headers["source.topic"] == setup.topic("work")
        assert headers["handler.name"] == "flaky"
        assert headers["handler.attempts"] == str(ATTEMPTS)
        assert {"source.partition", "source.offset"} <= headers.keys()
    counts = summary_counts(log, "flaky")
    assert counts["retries"] == 3 * (ATTEMPTS - 1)
    assert counts["dead-lettered"] == 3
    # The offsets were committed: a restart does not try them again.
    run_worker_until_idle(setup, "flaky", idle=3)
    assert len(calls.read_text().split()) == 3 * ATTEMPTS


def test_terminal_error_dead_letters_at_once_and_redrive_after_the_fix_processes_it(
    topics: StreamTopics, tmp_path: Path
) -> None:
    setup = HandlerSetup(topics, tmp_path)
    setup.write_rules([])
    calls, flag = tmp_path / "calls.txt", tmp_path / "fixed.flag"
    setup.write_handlers(
        {
            "buggy": {
                "handler": "tests.support_handlers:TerminalUntilFlag",
                "topics": ["work"],
                "options": {"calls_file": str(calls), "flag_file": str(flag)},
                "retry": {"attempts": 5, "base_delay_seconds": 0.05},
            }
        }
    )
    events = [{"event_id": f"t-{n}", "event_type": "Anything"} for n in range(4)]
    run_worker_until_idle(setup, "buggy", idle=0.5)
    produce_raw(setup, setup.topic("work"), events)
    not_json = b"{not json"
    producer = Producer({"bootstrap.servers": topics.bootstrap_servers})
    producer.produce(setup.topic("work"), value=not_json)
    assert producer.flush(30) == 0
    log = run_worker_until_idle(setup, "buggy")
    assert Counter(calls.read_text().split()) == {f"t-{n}": 1 for n in range(4)}  # no retries
    letters = read_topic(topics.bootstrap_servers, setup.dead_letter_topic("buggy"))
    classes = Counter(dict(letter.headers())["error.class"].decode() for letter in letters)
    assert classes == {"TerminalError": 4, "InvalidEventError": 1}
    assert summary_counts(log, "buggy") == {
        "processed": 0,
        "duplicates": 0,
        "retries": 0,
        "dead-lettered": 5,
    }

    flag.touch()  # the fix is deployed
    redrive = subprocess.run(
        [*setup.start_command(), "dlq", "redrive", "--worker", "buggy", "--class", "TerminalError"],
        env=setup.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert redrive.returncode == 0, redrive.stderr
    assert "4 dead letters" in redrive.stdout
    log = run_worker_until_idle(setup, "buggy")
    fixed = {row[0] for row in setup.rows("SELECT event_id FROM fixed_events")}
    assert fixed == {f"t-{n}" for n in range(4)}
    assert summary_counts(log, "buggy")["processed"] == 4


@pytest.mark.partitions(3)
def test_a_subscriber_added_by_configuration_receives_every_matching_event(
    topics: StreamTopics, tmp_path: Path
) -> None:
    setup = HandlerSetup(topics, tmp_path)
    setup.write_rules(
        [{"name": "news", "pattern": {"event_type": ["OrderPlaced"]}, "targets": ["news"]}]
    )
    subscriber = {"handler": "tests.support_handlers:Recorder", "topics": ["news"]}
    setup.write_handlers({"first": subscriber})
    router = setup.start("route", log_name="router.log")
    first = setup.start("worker", "first", log_name="first.log")
    try:
        before = list(
            generate_order_records(
                30, seed=3, duplicate_ratio=0, malformed_ratio=0, checkouts_only=True
            )
        )
        send(topics, before)
        received = "SELECT event_id FROM received WHERE worker = ?"
        setup.wait_for(
            lambda: len(setup.rows(received, ("first",))) == 30,
            120,
            "the first subscriber",
            logs=("router.log", "first.log"),
        )
        # A new subscriber: one more table in the configuration, no code.
        setup.write_handlers({"first": subscriber, "second": subscriber})
        second = setup.start("worker", "second", log_name="second.log")
        try:
            setup.wait_for(
                lambda: "worker second assigned" in setup.log("second.log"),
                120,
                "second's group",
                logs=("second.log",),
            )
            after = list(
                generate_order_records(
                    40, seed=4, duplicate_ratio=0, malformed_ratio=0, checkouts_only=True
                )
            )
            send(topics, after)
            setup.wait_for(
                lambda: (
                    len(setup.rows(received, ("first",))) == 70
                    and {r[0] for r in setup.rows(received, ("second",))}
                    >= {r.event_id for r in after}
                ),
                120,
                "both subscribers",
                logs=("router.log", "first.log", "second.log"),
            )
        finally:
            assert stop(second) == 0
    finally:
        assert stop(first) == 0
        assert stop(router) == 0
    first_ids = [row[0] for row in setup.rows(received, ("first",))]
    assert sorted(first_ids) == sorted(r.event_id for r in [*before, *after] if r.event_id)
    second_ids = {row[0] for row in setup.rows(received, ("second",))}
    assert second_ids >= {r.event_id for r in after}


def test_worker_counts_and_metrics_say_processed_duplicates_retried_dead_lettered(
    topics: StreamTopics, tmp_path: Path
) -> None:
    setup = HandlerSetup(topics, tmp_path)
    setup.write_rules([])
    setup.write_handlers(
        {
            "scripted": {
                "handler": "tests.support_handlers:Scripted",
                "topics": ["work"],
                "retry": {"attempts": 3, "base_delay_seconds": 0.01, "max_delay_seconds": 0.05},
            }
        }
    )
    ids = ["ok-1", "ok-2", "ok-3", "flaky-1", "flaky-2", "bad-1", "ok-1"]  # ok-1 twice
    produce_raw(setup, setup.topic("work"), [{"event_id": i, "event_type": "X"} for i in ids])
    connection = {"bootstrap.servers": topics.bootstrap_servers}
    plan = load_handlers_config(setup.handlers_file).plan("scripted")
    store = open_store(setup.store_url)
    relay = OutboxRelay(store, connection)
    worker = build_worker(plan, store, connection, relay)
    worker.prepare()
    try:
        counts = worker.run(until_idle_seconds=3)
    finally:
        store.close()
    assert counts.as_dict() == {
        "processed": 5,
        "duplicates": 1,
        "retried": 2,
        "dead_lettered": 1,
        "dead_letter_classes": {"TerminalError": 1},
    }

    def metric(outcome: str) -> float | None:
        labels = {"worker": "scripted", "outcome": outcome}
        return REGISTRY.get_sample_value("streambatch_handler_messages_total", labels)

    assert [metric(o) for o in ("processed", "duplicate", "retried", "dead_lettered")] == [
        5.0,
        1.0,
        2.0,
        1.0,
    ]


def test_a_message_waiting_for_its_retry_does_not_hold_up_the_ones_behind_it(
    topics: StreamTopics, tmp_path: Path
) -> None:
    """Non-blocking retries: one order whose step fails for 2 s, 30 others on its partition."""
    setup = HandlerSetup(topics, tmp_path)
    setup.write_rules([])
    setup.write_handlers(
        {
            "slow": {
                "handler": "tests.support_handlers:SlowDependency",
                "topics": ["work"],
                "options": {"ready_after_seconds": 2.0},
                "retry": {"attempts": 12, "base_delay_seconds": 0.2, "max_delay_seconds": 1},
            }
        }
    )
    run_worker_until_idle(setup, "slow", idle=0.5)  # creates the topics, joins the group
    # One key: every message on the same partition, the waiting one first.
    ids = ["wait-1", *(f"ok-{n:02d}" for n in range(30))]
    producer = Producer({"bootstrap.servers": topics.bootstrap_servers})
    for event_id in ids:
        value = orjson.dumps({"event_id": event_id, "event_type": "X"})
        producer.produce(setup.topic("work"), value=value, key=b"one-key")
    assert producer.flush(30) == 0
    log = run_worker_until_idle(setup, "slow", idle=3)
    handled = setup.rows("SELECT event_id, at FROM handled ORDER BY seq")
    order = [event_id for event_id, _ in handled]
    # Everything behind the waiting message went on, in its offset order; it came last.
    assert order == [*ids[1:], "wait-1"]
    at = dict(handled)
    assert at["wait-1"] - at["ok-29"] > 1.0, "the others did not wait for the retry"
    counts = summary_counts(log, "slow")
    assert counts["processed"] == 31
    assert counts["retries"] >= 2
    assert counts["dead-lettered"] == 0
    # The retries went through the retry topics of the policy's delays.
    retried = read_topic(topics.bootstrap_servers, setup.topic("slow.retry.200ms"))
    assert [dict(m.headers())["retry.attempt"] for m in retried] == [b"2"]


def test_a_workflow_that_cannot_settle_in_time_fails_and_says_why(
    topics: StreamTopics, tmp_path: Path
) -> None:
    setup = HandlerSetup(topics, tmp_path)
    setup.write_rules([])
    calls = tmp_path / "calls.txt"
    setup.write_handlers(
        {
            "stuck": {
                "handler": "tests.support_handlers:AlwaysTransient",
                "topics": ["work"],
                "options": {"calls_file": str(calls)},
                "retry": {"attempts": 3, "base_delay_seconds": 60, "max_delay_seconds": 60},
            }
        }
    )
    run_worker_until_idle(setup, "stuck", idle=0.5)
    produce_raw(setup, setup.topic("work"), [{"event_id": "e-1", "event_type": "X"}])
    connection = {"bootstrap.servers": topics.bootstrap_servers}
    config = load_handlers_config(setup.handlers_file)
    with pytest.raises(
        NotSettledError, match=r"stuck: retries waiting on: \S*stuck\.retry\.60000ms"
    ):
        run_workers(
            ["stuck"],
            config,
            connection,
            setup.store_url,
            until_idle_seconds=1,
            settle_timeout_seconds=15,
        )
    assert calls.read_text().split() == ["e-1"]


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_failed_try_leaves_no_row_and_no_outbox_event_behind(
    store: str, topics: StreamTopics, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # One transaction per event on PostgreSQL, per batch on SQLite; each event in a
    # savepoint: either way the failed try is undone and the others are kept.
    url = request.getfixturevalue("schema_url") if store == "postgresql" else None
    setup = HandlerSetup(topics, tmp_path, store_url=url)
    setup.write_rules([])
    setup.write_handlers(
        {
            "writer": {
                "handler": "tests.support_handlers:WritesThenFailsOnce",
                "topics": ["work"],
                "retry": {"attempts": 3, "base_delay_seconds": 0.05, "max_delay_seconds": 0.1},
            }
        }
    )
    run_worker_until_idle(setup, "writer", idle=0.5)  # creates the topics, joins the group
    produce_raw(setup, setup.topic("work"), [{"event_id": f"e-{n}"} for n in range(20)])
    log = run_worker_until_idle(setup, "writer", idle=3)
    counts = summary_counts(log, "writer")
    assert (counts["processed"], counts["retries"], counts["dead-lettered"]) == (20, 20, 0)
    written = setup.rows("SELECT event_id, COUNT(*) FROM written GROUP BY event_id")
    assert sorted(written) == sorted((f"e-{n}", 1) for n in range(20))
    outbox = setup.rows("SELECT event_id FROM outbox")
    assert sorted(row[0] for row in outbox) == sorted(f"out-e-{n}" for n in range(20))
