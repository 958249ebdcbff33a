"""Synthetic clicks and logs: determinism, shares, the event contract, correlation with orders."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from events.clicks import CLICK_EVENT_TYPES, ClickEvent
from events.logs import LOG_LEVELS, LogEvent
from generator import (
    DEFAULT_START,
    LOG_SERVICES,
    STREAM_MALFORMED_CLASSES,
    GeneratedRecord,
    generate_click_records,
    generate_log_records,
    generate_order_records,
    generate_stream_records,
    summarize,
)

Streams = dict[str, list[GeneratedRecord]]
Body = dict[str, Any]

RFC3339_MILLIS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SKU = re.compile(r"^SKU-\d{5}$")
URL = re.compile(r"^/(c/[a-z]+|p/SKU-\d{5}|cart|checkout)?$")
CLICK_EVENT = TypeAdapter(ClickEvent)
LOG_EVENT = TypeAdapter(LogEvent)
COUNT = 20_000
SEED = 7


@pytest.fixture(scope="module")
def streams() -> Streams:
    return generate_stream_records(COUNT, seed=SEED)


def valid_bodies(records: list[GeneratedRecord]) -> list[Body]:
    return [orjson.loads(r.value) for r in records if r.kind == "valid"]


def moment(body: Body) -> datetime:
    return datetime.fromisoformat(body["occurred_at"])


def time_range(records: list[GeneratedRecord]) -> tuple[datetime, datetime]:
    times = [moment(body) for body in valid_bodies(records)]
    return min(times), max(times)


def sessions_of(clicks: list[GeneratedRecord]) -> dict[str, list[Body]]:
    sessions: dict[str, list[Body]] = defaultdict(list)
    for body in valid_bodies(clicks):
        sessions[body["session_id"]].append(body)
    return sessions


# --- determinism and the orders part -----------------------------------------------------


def test_orders_are_exactly_the_order_generator_output(streams: Streams) -> None:
    assert set(streams) == {"orders", "clicks", "logs"}
    assert streams["orders"] == list(generate_order_records(COUNT, seed=SEED))


def test_same_seed_gives_same_bytes_and_another_seed_other_records() -> None:
    first = generate_stream_records(2_000, seed=11)
    assert first == generate_stream_records(2_000, seed=11)
    other = generate_stream_records(2_000, seed=12)
    for name in ("clicks", "logs"):
        assert [r.value for r in first[name]] != [r.value for r in other[name]]


def test_single_stream_functions_match_the_combined_one() -> None:
    combined = generate_stream_records(1_500, seed=3, duplicate_ratio=0.05, malformed_ratio=0.03)
    kwargs: dict[str, Any] = {"seed": 3, "duplicate_ratio": 0.05, "malformed_ratio": 0.03}
    assert generate_click_records(1_500, **kwargs) == combined["clicks"]
    assert generate_log_records(1_500, **kwargs) == combined["logs"]


# --- shares ---------------------------------------------------------------------------------
#
# Orders have exactly round(total * ratio) duplicates and malformed records. Clicks and logs
# first get their valid events from the orders, then round(valid * ratio / (1 - d - m)) of
# each kind: every share is within half a record of ratio * total.


def assert_shares(records: list[GeneratedRecord], duplicate: float, malformed: float) -> None:
    summary = summarize(records)
    assert summary.valid + summary.duplicates + summary.malformed == summary.total
    assert len(summary.valid_event_ids) == summary.valid
    assert abs(summary.duplicates - duplicate * summary.total) <= 0.5 + 1e-9
    assert abs(summary.malformed - malformed * summary.total) <= 0.5 + 1e-9
    assert sum(summary.malformed_by_class.values()) == summary.malformed


@pytest.mark.parametrize(
    ("count", "duplicate_ratio", "malformed_ratio"),
    [(0, 0.02, 0.01), (1, 0.0, 0.0), (100, 0.02, 0.01), (1_000, 0.1, 0.05), (3_001, 0.333, 0.2)],
)
def test_duplicate_and_malformed_shares_follow_the_rule(
    count: int, duplicate_ratio: float, malformed_ratio: float
) -> None:
    generated = generate_stream_records(
        count, duplicate_ratio=duplicate_ratio, malformed_ratio=malformed_ratio
    )
    orders = summarize(generated["orders"])
    assert orders.total == count
    assert orders.duplicates == round(count * duplicate_ratio)
    assert orders.malformed == round(count * malformed_ratio)
    for name in ("clicks", "logs"):
        assert_shares(generated[name], duplicate_ratio, malformed_ratio)
        if count == 0:
            assert generated[name] == []
        else:
            assert summarize(generated[name]).valid > 0


@settings(max_examples=30, deadline=None)
@given(
    count=st.integers(min_value=0, max_value=300),
    duplicate_ratio=st.floats(min_value=0.0, max_value=0.4),
    malformed_ratio=st.floats(min_value=0.0, max_value=0.3),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_shares_hold_for_any_arguments(
    count: int, duplicate_ratio: float, malformed_ratio: float, seed: int
) -> None:
    generated = generate_stream_records(
        count, seed=seed, duplicate_ratio=duplicate_ratio, malformed_ratio=malformed_ratio
    )
    for name in ("clicks", "logs"):
        assert_shares(generated[name], duplicate_ratio, malformed_ratio)


def test_without_ratios_every_record_is_valid() -> None:
    generated = generate_stream_records(500, duplicate_ratio=0, malformed_ratio=0)
    for records in generated.values():
        assert {r.kind for r in records} == {"valid"}


def test_summarize_counts_no_orders_or_money_in_clicks_and_logs(streams: Streams) -> None:
    for name in ("clicks", "logs"):
        summary = summarize(streams[name])
        assert summary.orders_placed == 0
        assert summary.total_amount_sum == 0


def test_volumes_per_order(streams: Streams) -> None:
    orders = summarize(streams["orders"])
    clicks = summarize(streams["clicks"])
    logs = summarize(streams["logs"])
    assert 3 <= clicks.valid / orders.total <= 6
    assert 2 <= logs.valid / orders.valid <= 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": -1},
        {"count": 10, "duplicate_ratio": 1.5},
        {"count": 1, "duplicate_ratio": 0.5, "malformed_ratio": 0.5},
        {"count": 10, "start": datetime(2026, 11, 28)},
    ],
)
def test_bad_arguments_fail_at_call_time(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        generate_stream_records(**kwargs)


# --- the event contract ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "adapter"), [("clicks", CLICK_EVENT), ("logs", LOG_EVENT)])
def test_valid_records_pass_and_malformed_fail_the_event_models(
    streams: Streams, name: str, adapter: TypeAdapter[Any]
) -> None:
    records = streams[name]
    for record in records:
        if record.kind == "malformed":
            with pytest.raises(ValidationError):
                adapter.validate_json(record.value)
        else:
            adapter.validate_json(record.value)
    assert {r.kind for r in records} == {"valid", "duplicate", "malformed"}


@pytest.mark.parametrize("name", ["clicks", "logs"])
def test_malformed_records_are_broken_as_named(streams: Streams, name: str) -> None:
    malformed = [r for r in streams[name] if r.kind == "malformed"]
    assert {r.malformed_class for r in malformed} == set(STREAM_MALFORMED_CLASSES)
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
            if name == "clicks":
                assert isinstance(body["url"], int) or isinstance(body["user_id"], int)
            else:
                assert body["level"] == "LOUD" or isinstance(body["attributes"]["http_status"], int)
        elif record.malformed_class == "bad_timestamp":
            assert not RFC3339_MILLIS_Z.match(body["occurred_at"])
        elif record.malformed_class == "unknown_event_type":
            allowed = CLICK_EVENT_TYPES if name == "clicks" else ("log",)
            assert body["event_type"] not in allowed


@pytest.mark.parametrize("name", ["clicks", "logs"])
def test_duplicates_are_byte_identical_copies_of_earlier_valid_records(
    streams: Streams, name: str
) -> None:
    seen: set[tuple[bytes, bytes]] = set()
    duplicates = 0
    for record in streams[name]:
        if record.kind == "valid":
            seen.add((record.key, record.value))
        elif record.kind == "duplicate":
            duplicates += 1
            assert (record.key, record.value) in seen
            assert record.event_id == orjson.loads(record.value)["event_id"]
    assert duplicates


def test_event_ids_are_unique_per_stream_and_never_shared_across_streams(
    streams: Streams,
) -> None:
    ids: dict[str, set[str]] = {}
    for name, records in streams.items():
        distinct = [r for r in records if r.kind != "duplicate" and r.event_id is not None]
        ids[name] = {r.event_id for r in distinct if r.event_id is not None}
        assert len(ids[name]) == len(distinct)
        for body in valid_bodies(records):
            assert 1 <= len(body["event_id"]) <= 128
    assert all(i.startswith("evt-c-") for i in ids["clicks"])
    assert all(i.startswith("evt-l-") for i in ids["logs"])
    assert not ids["orders"] & ids["clicks"]
    assert not ids["orders"] & ids["logs"]
    assert not ids["clicks"] & ids["logs"]


@pytest.mark.parametrize(("name", "key_field"), [("clicks", "session_id"), ("logs", "service")])
def test_keys_times_and_encoding(streams: Streams, name: str, key_field: str) -> None:
    previous = None
    for record in streams[name]:
        if record.kind != "valid":
            continue
        assert b"\n" not in record.value
        body = orjson.loads(record.value)
        assert record.value == orjson.dumps(body), "values are compact orjson output"
        assert record.event_id == body["event_id"]
        assert record.key == body[key_field].encode()
        assert record.total_amount is None
        assert RFC3339_MILLIS_Z.match(body["occurred_at"])
        current = moment(body)
        assert current.tzinfo is not None
        if previous is not None:
            assert current >= previous, "occurred_at never goes backwards"
        previous = current


def test_time_ranges_overlap_the_orders(streams: Streams) -> None:
    orders_first, orders_last = time_range(streams["orders"])
    for name in ("clicks", "logs"):
        first, last = time_range(streams[name])
        assert first < orders_last and orders_first < last
        assert orders_first - first <= timedelta(minutes=31)
        assert last - orders_last <= timedelta(minutes=30)


def test_start_moves_every_stream() -> None:
    start = datetime(2030, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    generated = generate_stream_records(300, start=start, duplicate_ratio=0, malformed_ratio=0)
    for name, records in generated.items():
        first, last = time_range(records)
        assert start - timedelta(minutes=31) <= first, name
        assert last < start + timedelta(hours=1), name
    first_order = moment(orjson.loads(generated["orders"][0].value))
    assert first_order.date() != DEFAULT_START.date()


# --- clicks ---------------------------------------------------------------------------------


def test_clicks_have_the_contract_fields_and_sensible_values(streams: Streams) -> None:
    counts: Counter[str] = Counter()
    for body in valid_bodies(streams["clicks"]):
        counts[body["event_type"]] += 1
        assert set(body) == {
            "event_id",
            "event_type",
            "occurred_at",
            "session_id",
            "user_id",
            "url",
            "referrer",
            "sku",
        }
        assert URL.match(body["url"]), body["url"]
        if body["event_type"] in {"add_to_cart", "remove_from_cart"}:
            assert body["sku"] is not None
        if body["sku"] is not None:
            assert SKU.match(body["sku"])
    assert set(counts) == set(CLICK_EVENT_TYPES)
    assert counts["page_view"] == max(counts.values())
    assert counts["remove_from_cart"] < counts["add_to_cart"]


def test_referrer_is_on_the_first_page_view_only(streams: Streams) -> None:
    first_referrers: Counter[str | None] = Counter()
    for events in sessions_of(streams["clicks"]).values():
        assert events[0]["event_type"] == "page_view"
        first_referrers[events[0]["referrer"]] += 1
        assert all(event["referrer"] is None for event in events[1:])
    assert first_referrers[None] > 0, "direct visits"
    assert any(r and "google" in r for r in first_referrers)
    assert any(r and "newsletter" in r for r in first_referrers)


def test_anonymous_sessions_never_check_out(streams: Streams) -> None:
    sessions = sessions_of(streams["clicks"])
    anonymous = [events for events in sessions.values() if events[0]["user_id"] is None]
    assert len(anonymous) > len(sessions) / 10
    for events in sessions.values():
        assert len({event["user_id"] for event in events}) == 1
    for events in anonymous:
        assert "checkout_started" not in {event["event_type"] for event in events}
    assert any(event["event_type"] == "add_to_cart" for events in anonymous for event in events)


def test_every_order_follows_a_checkout_session_of_its_customer(streams: Streams) -> None:
    checkouts: dict[str, list[tuple[datetime, set[str]]]] = defaultdict(list)
    for events in sessions_of(streams["clicks"]).values():
        if events[-1]["event_type"] != "checkout_started" or events[0]["user_id"] is None:
            continue
        cart: set[str] = set()
        for event in events:
            if event["event_type"] == "add_to_cart":
                cart.add(event["sku"])
            elif event["event_type"] == "remove_from_cart":
                cart.discard(event["sku"])
        checkouts[events[0]["user_id"]].append((moment(events[-1]), cart))
    placed = [b for b in valid_bodies(streams["orders"]) if b["event_type"] == "OrderPlaced"]
    assert len(placed) > 1_000
    for order in placed:
        ordered_at = moment(order)
        skus = {item["sku"] for item in order["items"]}
        assert any(
            timedelta(0) < ordered_at - started <= timedelta(minutes=30) and cart == skus
            for started, cart in checkouts[order["customer_id"]]
        ), order["order_id"]


def test_clicks_use_the_orders_customers_and_skus(streams: Streams) -> None:
    orders = valid_bodies(streams["orders"])
    customers = {b["customer_id"] for b in orders if "customer_id" in b}
    skus = {item["sku"] for b in orders if "items" in b for item in b["items"]}
    clicks = valid_bodies(streams["clicks"])
    users = {b["user_id"] for b in clicks if b["user_id"] is not None}
    carted = {b["sku"] for b in clicks if b["event_type"] == "add_to_cart"}
    assert customers <= users
    assert skus <= carted
    assert all(re.match(r"^cus-\d{6}$", user) for user in users)


# --- logs -----------------------------------------------------------------------------------


def test_logs_have_the_contract_fields_and_sensible_values(streams: Streams) -> None:
    levels: Counter[str] = Counter()
    services: Counter[str] = Counter()
    untraced_info = 0
    for body in valid_bodies(streams["logs"]):
        assert body["event_type"] == "log"
        assert body["level"] in LOG_LEVELS
        assert body["message"]
        attributes = body["attributes"]
        assert isinstance(attributes, dict)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items())
        levels[body["level"]] += 1
        services[body["service"]] += 1
        if body["level"] == "INFO" and body["trace_id"] is None:
            untraced_info += 1
    total = levels.total()
    assert set(services) == set(LOG_SERVICES)
    assert levels.most_common(1)[0][0] == "INFO"
    assert levels["INFO"] / total > 0.7
    assert levels["DEBUG"] > levels["ERROR"]
    assert levels["WARNING"] > levels["CRITICAL"]
    assert (levels["ERROR"] + levels["CRITICAL"]) / total < 0.05
    assert levels["CRITICAL"] > 0
    assert untraced_info > 0


def test_every_failed_payment_has_an_error_burst_from_payments(streams: Streams) -> None:
    errors: dict[str, list[Body]] = defaultdict(list)
    for body in valid_bodies(streams["logs"]):
        if body["service"] == "payments" and body["level"] == "ERROR":
            errors[body["attributes"].get("order_id", "")].append(body)
    failed = [b for b in valid_bodies(streams["orders"]) if b["event_type"] == "PaymentFailed"]
    assert len(failed) > 50
    for order in failed:
        lines = errors[order["order_id"]]
        assert lines, order["order_id"]
        trace_ids = {line["trace_id"] for line in lines}
        assert None not in trace_ids
        assert len(lines) >= 2
        assert len(trace_ids) == 1, "a burst shares one trace"
        assert any(line["attributes"].get("http_status") for line in lines)
        assert all(abs(moment(line) - moment(order)) < timedelta(seconds=10) for line in lines)


def test_log_lines_refer_to_real_orders(streams: Streams) -> None:
    order_ids = {b["order_id"] for b in valid_bodies(streams["orders"])}
    referenced = {
        b["attributes"]["order_id"]
        for b in valid_bodies(streams["logs"])
        if "order_id" in b["attributes"]
    }
    assert referenced == order_ids


# --- speed ----------------------------------------------------------------------------------


def test_fifty_thousand_orders_with_clicks_and_logs_take_seconds() -> None:
    started = time.process_time()
    generated = generate_stream_records(50_000)
    seconds = time.process_time() - started
    assert len(generated["orders"]) == 50_000
    assert len(generated["clicks"]) > 100_000
    assert len(generated["logs"]) > 100_000
    # CPU time, so a busy machine does not fail it; about 2-3 s on a laptop.
    assert seconds < 15
