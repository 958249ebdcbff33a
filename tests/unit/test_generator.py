"""The synthetic orders generator: determinism, exact shares, and the event contract."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from events.orders import ORDER_EVENT_TYPES, OrderEvent
from generator import (
    DEFAULT_MALFORMED_CLASSES,
    DEFAULT_START,
    GeneratedRecord,
    ProduceReport,
    ProduceTimeoutError,
    generate_order_records,
    produce_records,
    summarize,
)

RFC3339_MILLIS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
MONEY_2DP = re.compile(r"^\d+\.\d{2}$")
SUCCESS_FLOW = [
    "OrderPlaced",
    "StockReserved",
    "PaymentAuthorized",
    "StockDecreased",
    "PurchaseOrderSubmitted",
    "CustomerNotified",
    "CustomerNotified",
]
FAILURE_FLOW = [
    "OrderPlaced",
    "StockReserved",
    "PaymentFailed",
    "CustomerNotified",
    "FinanceAlerted",
    "StockReleased",
]
ORDER_EVENT = TypeAdapter(OrderEvent)

# Nothing listens on port 1: librdkafka fails to connect without any broker involved.
UNREACHABLE = {"bootstrap.servers": "127.0.0.1:1", "log_level": "0"}


@pytest.fixture(scope="module")
def records() -> list[GeneratedRecord]:
    return list(generate_order_records(20_000, seed=7))


def valid_bodies(records: list[GeneratedRecord]) -> list[dict[str, object]]:
    return [orjson.loads(r.value) for r in records if r.kind == "valid"]


def test_same_seed_gives_same_bytes() -> None:
    first = list(generate_order_records(3_000, seed=11))
    second = list(generate_order_records(3_000, seed=11))
    assert first == second


def test_other_seed_gives_other_records() -> None:
    first = [r.value for r in generate_order_records(500, seed=1)]
    second = [r.value for r in generate_order_records(500, seed=2)]
    assert first != second


def test_default_start_is_fixed_not_the_wall_clock() -> None:
    first = orjson.loads(
        next(generate_order_records(1, duplicate_ratio=0, malformed_ratio=0)).value
    )
    assert first["occurred_at"].startswith(DEFAULT_START.date().isoformat())


@pytest.mark.parametrize(
    ("count", "duplicate_ratio", "malformed_ratio"),
    [(0, 0.02, 0.01), (1, 0.0, 0.0), (100, 0.02, 0.01), (1_000, 0.1, 0.05), (5_001, 0.333, 0.2)],
)
def test_counts_match_ratios_exactly(
    count: int, duplicate_ratio: float, malformed_ratio: float
) -> None:
    generated = list(
        generate_order_records(
            count, duplicate_ratio=duplicate_ratio, malformed_ratio=malformed_ratio
        )
    )
    summary = summarize(generated)
    assert len(generated) == summary.total == count
    assert summary.duplicates == round(count * duplicate_ratio)
    assert summary.malformed == round(count * malformed_ratio)
    assert summary.valid == count - summary.duplicates - summary.malformed


def test_duplicates_are_byte_identical_copies_of_earlier_valid_records(
    records: list[GeneratedRecord],
) -> None:
    earlier: dict[tuple[bytes, bytes], int] = {}
    distances = []
    for position, record in enumerate(records):
        if record.kind == "valid":
            earlier[(record.key, record.value)] = position
        elif record.kind == "duplicate":
            assert (record.key, record.value) in earlier
            assert record.total_amount is None
            assert record.event_id == orjson.loads(record.value)["event_id"]
            distances.append(position - earlier[(record.key, record.value)])
    assert distances
    assert max(distances) > 1, "duplicates must not always follow their original"


def test_valid_records_parse_and_have_the_common_fields(records: list[GeneratedRecord]) -> None:
    valid = [r for r in records if r.kind == "valid"]
    for record in valid:
        assert b"\n" not in record.value
        body = orjson.loads(record.value)
        assert body["event_id"] == record.event_id
        assert 1 <= len(body["event_id"]) <= 128
        assert body["event_type"] in ORDER_EVENT_TYPES
        assert RFC3339_MILLIS_Z.match(body["occurred_at"])
        assert record.key == body["order_id"].encode()
    assert len({r.event_id for r in valid}) == len(valid)


def test_valid_records_pass_and_malformed_fail_the_event_models(
    records: list[GeneratedRecord],
) -> None:
    for record in records:
        if record.kind == "malformed":
            with pytest.raises(ValidationError):
                ORDER_EVENT.validate_json(record.value)
        else:
            ORDER_EVENT.validate_json(record.value)


def test_total_amount_is_the_exact_sum_of_items(records: list[GeneratedRecord]) -> None:
    placed = [r for r in records if r.kind == "valid" and r.total_amount is not None]
    assert placed
    for record in placed:
        body = orjson.loads(record.value)
        assert body["event_type"] == "OrderPlaced"
        assert body["currency"] in {"EUR", "USD", "GBP"}
        assert 1 <= len(body["items"]) <= 5
        for item in body["items"]:
            assert 1 <= item["quantity"] <= 5
            assert MONEY_2DP.match(item["unit_price"])
        assert MONEY_2DP.match(body["total_amount"])
        expected = sum(
            (item["quantity"] * Decimal(item["unit_price"]) for item in body["items"]), Decimal(0)
        )
        assert Decimal(body["total_amount"]) == expected == record.total_amount


def test_payment_amount_matches_the_order_total(records: list[GeneratedRecord]) -> None:
    totals = {}
    for body in valid_bodies(records):
        if body["event_type"] == "OrderPlaced":
            totals[body["order_id"]] = (body["total_amount"], body["currency"])
        elif body["event_type"] in {"PaymentAuthorized", "PaymentFailed"}:
            assert (body["amount"], body["currency"]) == totals[body["order_id"]]


def test_each_order_follows_the_workflow_in_order(records: list[GeneratedRecord]) -> None:
    flows: dict[object, list[object]] = defaultdict(list)
    for body in valid_bodies(records):
        flows[body["order_id"]].append(body["event_type"])
    assert len(flows) > 100
    completed = {"success": 0, "failure": 0}
    for flow in flows.values():
        assert flow in (SUCCESS_FLOW[: len(flow)], FAILURE_FLOW[: len(flow)])
        if flow == SUCCESS_FLOW:
            completed["success"] += 1
        elif flow == FAILURE_FLOW:
            completed["failure"] += 1
    # About 10% of payments fail.
    assert 0.05 < completed["failure"] / sum(completed.values()) < 0.15


def test_concurrent_orders_are_interleaved(records: list[GeneratedRecord]) -> None:
    bodies = valid_bodies(records)[:200]
    switches = sum(a["order_id"] != b["order_id"] for a, b in pairwise(bodies))
    assert switches > 100


def test_occurred_at_never_goes_backwards_and_spans_hours(records: list[GeneratedRecord]) -> None:
    times = []
    for record in records:
        if record.kind != "valid":
            continue
        times.append(datetime.fromisoformat(orjson.loads(record.value)["occurred_at"]))
    assert times == sorted(times)
    assert times[-1] - times[0] > timedelta(hours=1)


def test_start_sets_the_first_occurred_at() -> None:
    start = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    body = orjson.loads(
        next(generate_order_records(1, start=start, duplicate_ratio=0, malformed_ratio=0)).value
    )
    first = datetime.fromisoformat(body["occurred_at"])
    assert timedelta(0) < first - start < timedelta(seconds=1)


def test_each_malformed_class_appears_and_is_broken_as_named(
    records: list[GeneratedRecord],
) -> None:
    malformed = [r for r in records if r.kind == "malformed"]
    assert {r.malformed_class for r in malformed} == set(DEFAULT_MALFORMED_CLASSES)
    for record in malformed:
        assert record.key
        if record.malformed_class in {"not_json", "not_utf8"}:
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(record.value)
            assert record.event_id is None
            if record.malformed_class == "not_utf8":
                assert b"\xff\xfe" in record.value
            continue
        body = orjson.loads(record.value)
        if record.malformed_class == "missing_event_id":
            assert "event_id" not in body
            assert record.event_id is None
            continue
        assert body["event_id"] == record.event_id
        if record.malformed_class == "wrong_type":
            assert body["items"][0]["quantity"] == "two" or isinstance(body["total_amount"], dict)
        elif record.malformed_class == "bad_timestamp":
            assert not RFC3339_MILLIS_Z.match(body["occurred_at"])
        elif record.malformed_class == "unknown_event_type":
            assert body["event_type"] not in ORDER_EVENT_TYPES
        elif record.malformed_class == "negative_quantity":
            assert body["items"][0]["quantity"] < 0


def test_malformed_ids_never_collide_with_valid_ids(records: list[GeneratedRecord]) -> None:
    summary = summarize(records)
    malformed_ids = {r.event_id for r in records if r.kind == "malformed" and r.event_id}
    assert malformed_ids
    assert not malformed_ids & summary.valid_event_ids


def test_malformed_classes_can_be_restricted() -> None:
    generated = list(
        generate_order_records(200, malformed_ratio=0.1, malformed_classes=["not_utf8"])
    )
    assert summarize(generated).malformed_by_class == {"not_utf8": 20}


def test_summarize_sums_each_order_once(records: list[GeneratedRecord]) -> None:
    summary = summarize(records)
    placed = [r for r in records if r.kind == "valid" and r.total_amount is not None]
    assert summary.orders_placed == len(placed)
    assert summary.total_amount_sum == sum(
        (r.total_amount or Decimal(0) for r in placed), Decimal(0)
    )
    assert summarize(records + records).total_amount_sum == summary.total_amount_sum
    assert sum(summary.malformed_by_class.values()) == summary.malformed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": -1},
        {"count": 10, "duplicate_ratio": 1.5},
        {"count": 10, "malformed_ratio": -0.1},
        {"count": 10, "duplicate_ratio": 0.6, "malformed_ratio": 0.6},
        {"count": 10, "duplicate_ratio": 0.5, "malformed_ratio": 0.5},
        {"count": 10, "malformed_classes": ["cosmic_ray"]},
        {"count": 10, "malformed_ratio": 0.5, "malformed_classes": []},
        {"count": 10, "start": datetime(2026, 11, 28)},
    ],
)
def test_bad_arguments_fail_at_call_time(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        generate_order_records(**kwargs)  # type: ignore[arg-type]  # kwargs deliberately bad


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=0, max_value=300),
    duplicate_ratio=st.floats(min_value=0.0, max_value=0.5),
    malformed_ratio=st.floats(min_value=0.0, max_value=0.4),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_summary_counts_add_up_to_count(
    count: int, duplicate_ratio: float, malformed_ratio: float, seed: int
) -> None:
    duplicates, malformed = round(count * duplicate_ratio), round(count * malformed_ratio)
    # A duplicate needs a valid record to copy (other shares are refused: tested above).
    assume(duplicates == 0 or count - duplicates - malformed >= 1)
    generated = list(
        generate_order_records(
            count, seed=seed, duplicate_ratio=duplicate_ratio, malformed_ratio=malformed_ratio
        )
    )
    summary = summarize(generated)
    assert summary.valid + summary.duplicates + summary.malformed == summary.total == count
    assert summary.duplicates == round(count * duplicate_ratio)
    assert summary.malformed == round(count * malformed_ratio)
    assert len(summary.valid_event_ids) == summary.valid
    assert sum(summary.malformed_by_class.values()) == summary.malformed


# --- producing, without a broker -------------------------------------------------------


def test_producer_errors_are_counted_by_name_not_raised() -> None:
    generated = list(generate_order_records(30, duplicate_ratio=0, malformed_ratio=0))
    too_large = GeneratedRecord(key=b"k", value=b"x" * 5_000, kind="valid", event_id="big")
    config = {**UNREACHABLE, "message.timeout.ms": "500", "message.max.bytes": "2000"}
    report = produce_records(
        [*generated, too_large], producer_config=config, topic="orders", progress=False
    )
    assert isinstance(report, ProduceReport)
    assert report.delivered == 0
    assert report.failed == 31
    assert report.failures == {"MSG_SIZE_TOO_LARGE": 1, "_MSG_TIMED_OUT": 30}


def test_flush_timeout_raises_a_runtime_error() -> None:
    generated = list(generate_order_records(5, duplicate_ratio=0, malformed_ratio=0))
    config = {**UNREACHABLE, "message.timeout.ms": "30000"}
    with pytest.raises(RuntimeError, match=r"5 of 5 records .* still undelivered"):
        produce_records(
            generated,
            producer_config=config,
            topic="orders",
            progress=False,
            flush_timeout=timedelta(milliseconds=300),
        )


def test_progress_lines_and_no_secret_on_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    generated = list(generate_order_records(40, duplicate_ratio=0, malformed_ratio=0))
    config = {
        **UNREACHABLE,
        "message.timeout.ms": "300",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "producer",
        "sasl.password": "hunter2-do-not-print",
    }
    report = produce_records(generated, producer_config=config, topic="orders", progress=False)
    assert report.failed == 40
    captured = capfd.readouterr()
    assert "hunter2-do-not-print" not in captured.out + captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("acknowledged ")]
    # The progress follows acknowledgements (here: 40 refusals), never the queue.
    assert lines and len(lines) <= 10
    assert lines[-1] == "acknowledged 40/40 records (100%)"


def test_rate_limits_records_per_second() -> None:
    generated = list(generate_order_records(10, duplicate_ratio=0, malformed_ratio=0))
    config = {**UNREACHABLE, "message.timeout.ms": "100"}
    report = produce_records(
        iter(generated), producer_config=config, topic="orders", rate=20, progress=False
    )
    # Ten records at 20/s: the last one is due 0.45 s after the first.
    assert report.seconds >= 0.45
    assert report.failed == 10


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate"):
        produce_records([], producer_config=UNREACHABLE, topic="orders", rate=0)


def test_progress_never_counts_records_that_are_only_queued(
    capfd: pytest.CaptureFixture[str],
) -> None:
    generated = list(generate_order_records(40, duplicate_ratio=0, malformed_ratio=0))
    config = {**UNREACHABLE, "message.timeout.ms": "30000"}
    with pytest.raises(ProduceTimeoutError, match="40 of 40 records"):
        produce_records(
            generated,
            producer_config=config,
            topic="orders",
            progress=False,
            flush_timeout=timedelta(milliseconds=500),
        )
    lines = [line for line in capfd.readouterr().err.splitlines() if "records" in line]
    assert "acknowledged 40/40 records (100%)" not in lines
