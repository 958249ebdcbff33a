"""Handlers are idempotent: every message delivered twice, the workers killed with kill -9
at random moments and at the named points of the commit path, the router killed too; the
final state is exactly the one of a clean run."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from foundation.failpoints import HANDLER_FAILPOINTS
from generator import GeneratedRecord, generate_order_records
from tests.support import StreamTopics, send
from tests.support_handlers import HandlerSetup, kill, stop, summary_counts
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

ORDERS = 300
SEED = 83
RANDOM_KILLS = 4


def every_order_twice() -> list[GeneratedRecord]:
    records = list(
        generate_order_records(
            ORDERS, seed=SEED, duplicate_ratio=0, malformed_ratio=0, checkouts_only=True
        )
    )
    return [record for record in records for _ in range(2)]


@pytest.mark.partitions(3)
def test_double_delivery_and_kill_9_leave_the_same_final_state(
    topics: StreamTopics, tmp_path: Path
) -> None:
    setup = HandlerSetup(topics, tmp_path)
    setup.write_shipped_rules()
    setup.write_shipped_handlers(
        payments={"failure_rate": 0.1, "transient_failure_rate": 0.0},
        inventory={"initial_stock": INITIAL_STOCK},
    )
    orders = placed_orders(ORDERS, seed=SEED)
    refused, on_hand = expected_outcome(orders)
    twice = {"STREAMBATCH_REDELIVER": "2"}  # every message handled twice, every copy routed twice
    rng = random.Random(5)
    send(topics, every_order_twice())
    router = setup.start("route", log_name="router.log", **twice)
    logs = ("router.log", "workers.log")
    try:
        # Crashes at the named points: after the handler's commit (offset not stored) and
        # after the outbox was published (not yet marked sent).
        for point in (f"{name}:{n}" for name, n in zip(HANDLER_FAILPOINTS, (40, 3), strict=True)):
            workers = setup.start(
                "worker", "--all", log_name="workers.log", STREAMBATCH_FAILPOINT=point, **twice
            )
            assert workers.wait(timeout=180) == -9, f"{point} not reached"
        for n in range(RANDOM_KILLS):
            workers = setup.start("worker", "--all", log_name="workers.log", **twice)
            time.sleep(rng.uniform(2.0, 8.0))
            kill(workers)
            if n == 1:
                kill(router)
                router = setup.start("route", log_name="router.log", **twice)
        logged_before = len(setup.log("workers.log"))
        workers = setup.start("worker", "--all", log_name="workers.log", **twice)
        try:
            setup.wait_for(
                lambda: workflow_done(setup, ORDERS, len(refused)), 300, "the workflow", logs
            )
            # The earlier runs may have finished the work: stop this process only once
            # it is running (partitions assigned), or the stop meets its start-up.
            setup.wait_for(
                lambda: " assigned " in setup.log("workers.log")[logged_before:],
                120,
                "the last workers' assignment",
                logs,
            )
        finally:
            assert stop(workers) == 0, setup.log("workers.log")[-3000:]
    finally:
        assert stop(router) == 0, setup.log("router.log")[-3000:]
    check_final_state(setup, orders, refused, on_hand)
    # The last run handled each of its messages twice: the inbox made every second
    # handling a no-op, so duplicates >= first handlings (the state check above is
    # the criterion; this one fails if the inbox claimed an event id twice).
    last_run = setup.log("workers.log")
    totals = [summary_counts(last_run, worker) for worker in SHIPPED_WORKERS]
    processed = sum(counts["processed"] for counts in totals)
    assert sum(counts["duplicates"] for counts in totals) >= processed, totals


LOW_STOCK = 4  # units per SKU: orders with a line of 5, or late for a popular SKU, run out


@pytest.mark.slow
@pytest.mark.partitions(3)
def test_low_stock_and_kill_9_keep_every_order_invariant(
    topics: StreamTopics, tmp_path: Path
) -> None:
    """Router and workers in one process, killed at random moments, some orders out of stock:
    every order still ends with its outcomes and exactly its steps, and the run that
    exits by --until-idle leaves nothing undone."""
    setup = HandlerSetup(topics, tmp_path)
    setup.write_shipped_rules()
    setup.write_shipped_handlers(
        payments={"failure_rate": 0.2, "transient_failure_rate": 0.05},
        inventory={"initial_stock": LOW_STOCK},
    )
    orders = placed_orders(ORDERS, seed=89)
    send(
        topics,
        generate_order_records(
            ORDERS, seed=89, duplicate_ratio=0, malformed_ratio=0, checkouts_only=True
        ),
    )
    rng = random.Random(13)
    for _ in range(3):
        workers = setup.start("worker", "--all", "--with-router", log_name="workers.log")
        time.sleep(rng.uniform(3.0, 9.0))
        kill(workers)
    settled = setup.start(
        "worker", "--all", "--with-router", "--until-idle", "3", log_name="workers.log"
    )
    assert settled.wait(timeout=300) == 0, setup.log("workers.log")[-3000:]
    # --until-idle returned: every order must be finished now, not later.
    assert outcomes_settled(setup, ORDERS), setup.log("workers.log")[-3000:]
    on_hand, reserved = stock_levels(setup)
    outcomes = order_outcomes(orders, published_events(setup), on_hand, reserved, LOW_STOCK)
    assert outcomes[PAID_IN_STOCK] > 0, outcomes
    assert outcomes[PAID_OUT_OF_STOCK] > 0, outcomes
