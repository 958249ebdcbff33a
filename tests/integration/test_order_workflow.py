"""The order workflow end to end: router + every worker of config/handlers.toml, real broker,
real SQLite store. 2,000 orders, 10 % refused payments, transient provider timeouts."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from foundation.errors import TerminalError
from generator import generate_order_records
from handlers.rules import RuleSet, parse_event
from tests.support import StreamTopics, read_topic, send
from tests.support_handlers import HandlerSetup, stop, summary_counts, summary_line
from tests.support_workflow import (
    INITIAL_STOCK,
    PAID_IN_STOCK,
    PAID_OUT_OF_STOCK,
    SHIPPED_WORKERS,
    check_final_state,
    expected_outcome,
    order_outcomes,
    outcomes_settled,
    placed_orders,
    published_events,
    stock_levels,
    workflow_done,
)

ORDERS = 2_000


@pytest.mark.partitions(3)
def test_two_thousand_orders_run_the_whole_workflow_exactly(
    topics: StreamTopics, tmp_path: Path
) -> None:
    setup = HandlerSetup(topics, tmp_path)
    setup.write_shipped_rules()
    # 5 % of provider calls time out: retried with backoff, never charged twice.
    setup.write_shipped_handlers(
        payments={"failure_rate": 0.1, "transient_failure_rate": 0.05},
        inventory={"initial_stock": INITIAL_STOCK},
    )
    orders = placed_orders(ORDERS, seed=61)
    refused, on_hand = expected_outcome(orders)
    assert 0.07 * ORDERS < len(refused) < 0.13 * ORDERS
    router = setup.start("route", log_name="router.log")
    workers = setup.start("worker", "--all", log_name="workers.log")
    try:
        send(
            topics,
            generate_order_records(
                ORDERS, seed=61, duplicate_ratio=0, malformed_ratio=0, checkouts_only=True
            ),
        )
        setup.wait_for(
            lambda: workflow_done(setup, ORDERS, len(refused)),
            timeout=300,
            what="the workflow of every order",
            logs=("router.log", "workers.log"),
        )
    finally:
        assert stop(workers) == 0, setup.log("workers.log")[-3000:]
        assert stop(router) == 0, setup.log("router.log")[-3000:]
    check_final_state(setup, orders, refused, on_hand)
    summary = setup.log("workers.log")
    # The simulated timeouts were retried, and nothing was dead-lettered.
    assert summary_counts(summary, "payments")["retries"] > 0, summary_line(summary, "payments")
    for name in SHIPPED_WORKERS:
        assert summary_counts(summary, name)["dead-lettered"] == 0, summary_line(summary, name)
        assert read_topic(topics.bootstrap_servers, setup.dead_letter_topic(name)) == []


@pytest.mark.partitions(3)
def test_the_workflow_runs_the_same_on_postgresql(
    topics: StreamTopics, tmp_path: Path, schema_url: str
) -> None:
    """The compose stack's store: the handlers' SQL, inbox and outbox on a real PostgreSQL."""
    orders_count = 300
    setup = HandlerSetup(topics, tmp_path, store_url=schema_url)
    setup.write_shipped_rules()
    setup.write_shipped_handlers(
        payments={"failure_rate": 0.1, "transient_failure_rate": 0.05},
        inventory={"initial_stock": INITIAL_STOCK},
    )
    orders = placed_orders(orders_count, seed=67)
    refused, on_hand = expected_outcome(orders)
    send(
        topics,
        generate_order_records(
            orders_count, seed=67, duplicate_ratio=0, malformed_ratio=0, checkouts_only=True
        ),
    )
    workers = setup.start("worker", "--all", "--with-router", log_name="workers.log")
    try:
        setup.wait_for(
            lambda: workflow_done(setup, orders_count, len(refused)),
            timeout=240,
            what="the workflow of every order on PostgreSQL",
            logs=("workers.log",),
        )
    finally:
        assert stop(workers) == 0, setup.log("workers.log")[-3000:]
    check_final_state(setup, orders, refused, on_hand)
    assert setup.rows("SELECT COUNT(*) FROM inbox")[0][0] > 0


def _refused_by_router(rules: RuleSet, value: bytes | None) -> bool:
    """A malformed record the router dead-letters: not a JSON object, or one a rule matches.

    (A record no rule matches, such as an unknown event type, is not fanned out at all.)
    """
    try:
        return bool(rules.matching_rules(parse_event(value or b"")))
    except TerminalError:
        return True


@pytest.mark.partitions(3)
def test_a_malformed_checkout_is_dead_lettered_once_by_the_router(
    topics: StreamTopics, tmp_path: Path
) -> None:
    setup = HandlerSetup(topics, tmp_path)
    setup.write_shipped_rules()
    setup.write_shipped_handlers(inventory={"initial_stock": INITIAL_STOCK})
    records = list(
        generate_order_records(
            150, seed=71, duplicate_ratio=0, malformed_ratio=0.1, checkouts_only=True
        )
    )
    valid = [r for r in records if r.kind == "valid"]
    malformed = [r for r in records if r.kind == "malformed"]
    rules = RuleSet.load(setup.rules_file)
    refused = [r for r in malformed if _refused_by_router(rules, r.value)]
    assert len(refused) >= 5
    send(topics, records)
    process = setup.start(
        "worker", "--all", "--with-router", "--until-idle", "3", log_name="workers.log"
    )
    assert process.wait(timeout=300) == 0, setup.log("workers.log")[-3000:]
    letters = read_topic(topics.bootstrap_servers, setup.topic("router.dlq"))
    assert sorted(letter.value() or b"" for letter in letters) == sorted(
        r.value or b"" for r in refused
    )
    for letter in letters:
        headers = {key: value.decode() for key, value in letter.headers()}
        assert headers["error.stage"] == "router"
        assert headers["error.class"] in ("InvalidEventError", "TerminalError")
        assert headers["error.message"]
    # Not once more by each of the four subscribers of a checkout.
    for name in SHIPPED_WORKERS:
        assert read_topic(topics.bootstrap_servers, setup.dead_letter_topic(name)) == [], name
    # The valid orders ran their whole workflow.
    orders = [orjson.loads(r.value) for r in valid if r.value is not None]
    assert outcomes_settled(setup, len(orders))
    on_hand, reserved = stock_levels(setup)
    order_outcomes(orders, published_events(setup), on_hand, reserved, INITIAL_STOCK)


@pytest.mark.partitions(3)
def test_low_stock_on_postgresql_keeps_every_order_invariant(
    topics: StreamTopics, tmp_path: Path, schema_url: str
) -> None:
    """Reservation and payment outcome, payment and refund, meet in concurrent transactions
    on PostgreSQL (READ COMMITTED): each order still ends exactly one way."""
    orders_count, low_stock = 200, 4
    setup = HandlerSetup(topics, tmp_path, store_url=schema_url)
    setup.write_shipped_rules()
    setup.write_shipped_handlers(
        payments={"failure_rate": 0.2, "transient_failure_rate": 0.05},
        inventory={"initial_stock": low_stock},
    )
    orders = placed_orders(orders_count, seed=73)
    send(
        topics,
        generate_order_records(
            orders_count, seed=73, duplicate_ratio=0, malformed_ratio=0, checkouts_only=True
        ),
    )
    process = setup.start(
        "worker", "--all", "--with-router", "--until-idle", "3", log_name="workers.log"
    )
    assert process.wait(timeout=300) == 0, setup.log("workers.log")[-3000:]
    assert outcomes_settled(setup, orders_count)
    on_hand, reserved = stock_levels(setup)
    outcomes = order_outcomes(orders, published_events(setup), on_hand, reserved, low_stock)
    assert outcomes[PAID_OUT_OF_STOCK] > 0, outcomes
    assert outcomes[PAID_IN_STOCK] > 0, outcomes
