"""Pure logic of batch announcements and the built-in batch handlers."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from config.settings import load_stream_settings
from foundation.errors import ConfigError
from handlers.batch.http_delivery import HttpDelivery, encode_rows
from handlers.batch.rollup import RevenueRollup
from handlers.batch.runtime import resolve_batch_handler
from handlers.batch.worker import InvalidAnnouncementError, decode_announcement
from handlers.config import HandlersConfig
from sinks.batch_announcements import BatchAnnouncement, announcement_partition, batch_id
from sinks.delta_lake import BatchRecord

MOMENT = datetime(2026, 11, 28, 14, 3, 11, 123000, tzinfo=UTC)


def record(**changes: object) -> BatchRecord:
    values: dict[str, object] = {
        "stream": "orders",
        "topic": "orders",
        "partition": 2,
        "first_offset": 100,
        "next_offset": 250,
        "rows": 140,
        "input_records": 150,
        "input_bytes": 48_000,
        "duplicates": 7,
        "conflicts": 0,
        "dead_letters": 3,
        "dead_letters_by_class": "{}",
        "files": 1,
        "close_reason": "size",
        "opened_at": MOMENT,
        "committed_at": MOMENT,
        "min_occurred_at": MOMENT,
        "max_occurred_at": None,
        "lake_version": 12,
    }
    values.update(changes)
    return BatchRecord(**values)  # type: ignore[arg-type]  # test data, checked by the dataclass


def test_announcement_round_trips_and_its_id_is_the_offset_range() -> None:
    announcement = BatchAnnouncement.of(
        record(), ("event_date=2026-11-28/event_hour=14/a.parquet",)
    )
    assert (
        announcement.batch_id
        == "orders/orders/2/100-250"
        == batch_id("orders", "orders", 2, 100, 250)
    )
    assert BatchAnnouncement.from_json(announcement.to_json()) == announcement
    value = json.loads(announcement.to_json())
    assert value["offset_ranges"] == [
        {"topic": "orders", "partition": 2, "first_offset": 100, "next_offset": 250}
    ]
    assert value["min_occurred_at"] == "2026-11-28T14:03:11.123000+00:00"
    # The same range committed again under another version is the same batch.
    again = BatchAnnouncement.of(record(lake_version=99), ())
    assert again.batch_id == announcement.batch_id


def test_one_source_partition_always_lands_in_one_batches_partition() -> None:
    chosen = {announcement_partition("orders", "orders", 2, 3) for _ in range(5)}
    assert len(chosen) == 1 and chosen <= {0, 1, 2}
    spread = {announcement_partition("orders", "orders", p, 3) for p in range(30)}
    assert spread == {0, 1, 2}


def test_a_malformed_or_foreign_announcement_is_refused_with_its_reason() -> None:
    with pytest.raises(InvalidAnnouncementError, match="not a batch announcement"):
        decode_announcement(b"{not json", "orders")
    foreign = BatchAnnouncement.of(record(stream="clicks"), ()).to_json()
    with pytest.raises(InvalidAnnouncementError, match="not of 'orders'"):
        decode_announcement(foreign, "orders")


def orders_table(rows: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("event_id", pa.string()),
                ("event_type", pa.string()),
                ("occurred_at", pa.timestamp("us", tz="UTC")),
                ("currency", pa.string()),
                ("total_amount", pa.decimal128(18, 4)),
            ]
        ),
    )


def test_rollup_sums_exact_decimals_per_ten_minute_window_and_currency() -> None:
    table = orders_table(
        [
            {
                "event_id": "a",
                "event_type": "OrderPlaced",
                "occurred_at": datetime(2026, 11, 28, 14, 0, tzinfo=UTC),
                "currency": "EUR",
                "total_amount": Decimal("0.1000"),
            },
            {
                "event_id": "b",
                "event_type": "OrderPlaced",
                "occurred_at": datetime(2026, 11, 28, 14, 9, 59, 999999, tzinfo=UTC),
                "currency": "EUR",
                "total_amount": Decimal("0.2001"),
            },
            {
                "event_id": "c",
                "event_type": "OrderPlaced",
                "occurred_at": datetime(2026, 11, 28, 14, 10, tzinfo=UTC),
                "currency": "EUR",
                "total_amount": Decimal("99999999999999.9999"),
            },
            {
                "event_id": "d",
                "event_type": "PaymentAuthorized",
                "occurred_at": datetime(2026, 11, 28, 14, 1, tzinfo=UTC),
                "currency": "EUR",
                "total_amount": None,
            },
            {
                "event_id": "e",
                "event_type": "OrderPlaced",
                "occurred_at": datetime(1999, 12, 31, 23, 55, tzinfo=UTC),
                "currency": "USD",
                "total_amount": Decimal("1"),
            },
        ]
    )
    rows = sorted(RevenueRollup({}).aggregate(table))
    assert rows == [
        ("1999-12-31T23:50:00Z", "USD", 1, 10_000),
        ("2026-11-28T14:00:00Z", "EUR", 2, 3_001),
        ("2026-11-28T14:10:00Z", "EUR", 1, 999_999_999_999_999_999),
    ]
    with pytest.raises(ValueError, match="window_minutes"):
        RevenueRollup({"window_minutes": 0})


def test_http_delivery_encodes_rows_as_gzip_json_lines_with_decimal_strings() -> None:
    table = orders_table(
        [
            {
                "event_id": "a",
                "event_type": "OrderPlaced",
                "occurred_at": MOMENT,
                "currency": "EUR",
                "total_amount": Decimal("12.3400"),
            }
        ]
    )
    lines = gzip.decompress(encode_rows(table)).decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "event_id": "a",
            "event_type": "OrderPlaced",
            "occurred_at": "2026-11-28T14:03:11.123000+00:00",
            "currency": "EUR",
            "total_amount": "12.3400",
        }
    ]
    with pytest.raises(ValueError, match="http"):
        HttpDelivery({"url": "file:///etc/passwd"})
    with pytest.raises(ValueError, match="unknown options"):
        HttpDelivery({"url": "http://x", "retries": 3})


def test_http_delivery_url_env_replaces_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DELIVERY_URL", "http://receiver:8787/batches")
    delivery = HttpDelivery({"url": "http://127.0.0.1/x", "url_env": "TEST_DELIVERY_URL"})
    assert delivery.url == "http://receiver:8787/batches"


def test_batch_handler_names_and_handlers_are_checked() -> None:
    with pytest.raises(ValueError, match="worker's name too"):
        HandlersConfig.model_validate(
            {
                "workers": {"same": {"handler": "finance.alert", "topics": ["t"]}},
                "batch_handlers": {"same": {"stream": "orders", "handler": "batch.rollup"}},
            }
        )
    with pytest.raises(ConfigError, match="unknown batch handler 'nope'"):
        resolve_batch_handler("nope", {})
    with pytest.raises(ConfigError, match="bad options"):
        resolve_batch_handler("batch.rollup", {"window": 5})


def test_batches_topic_defaults_to_the_topic_and_may_be_set_per_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMBATCH_ORDERS_TOPIC", "shop.orders")
    assert load_stream_settings("orders").announcement_topic == "shop.orders.batches"
    monkeypatch.setenv("STREAMBATCH_ORDERS_BATCHES_TOPIC", "orders-closed")
    assert load_stream_settings("orders").announcement_topic == "orders-closed"
    monkeypatch.setenv("STREAMBATCH_LOGS_ANNOUNCE_BATCHES", "false")
    assert load_stream_settings("logs").announce_batches is False
    assert load_stream_settings("orders").announce_batches is True
