"""Hostile but well-formed values: path traversal, NUL, bidi overrides, look-alikes.

Event strings never steer where a file is written (partition values come from
the validated ``occurred_at`` only), are stored byte for byte, and what the
contract refuses (an identifier over 128 characters, a currency that is not
three ASCII capitals, an unknown ``event_type``) is dead-lettered.

Pass: the flow exits 0; nothing outside the data directory changes (a
snapshot of the test's whole temporary directory, the flow's working
directory included, before and after); every file in the data directory is
under ``<data_dir>/lake/``; partition directories are exactly
``event_date=YYYY-MM-DD/event_hour=HH``; the rows DuckDB returns equal the
valid events field for field; the dead letters are exactly the invalid events
with the expected error class.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from generator import GeneratedRecord, produce_records
from sinks.duckdb import connect
from tests.support import StreamTopics, flow_command, flow_env, read_topic, send

pytestmark = pytest.mark.slow

HOSTILE = (
    "../../etc",
    "a/../../x",
    "../../../../../../../../../../tmp/streambatch-escape",
    "/etc/passwd",
    "..\\..\\windows\\system32",
    "%2e%2e%2f",
    "%2e%2e/%2e%2e/etc",
    "event_date=1999-01-01/event_hour=00",
    "a\u0000b",
    "\u0000",
    "nul\u0000/../../etc",
    "\u202egnp.exe",
    "admin",
    "\u0430dmin",  # CYRILLIC SMALL LETTER A, then 'dmin'
    "p\u0430ypal.com/../x",
    "'; DROP TABLE orders; --",
    "line\nbreak\r\n",
    "y" * 128,  # the longest identifier allowed
    "z" * 129,  # one too long
    "w" * 300,
    "",
)
EVENT_TYPES = {
    "OrderPlaced",
    "StockReserved",
    "StockReleased",
    "StockDecreased",
    "PaymentAuthorized",
    "PaymentFailed",
    "PurchaseOrderSubmitted",
    "CustomerNotified",
    "FinanceAlerted",
}
IDENTIFIERS = ("event_id", "order_id", "customer_id", "payment_id", "warehouse", "template")
COLUMNS = (
    "event_id",
    "event_type",
    "order_id",
    "customer_id",
    "currency",
    "payment_id",
    "reason",
    "warehouse",
    "channel",
    "template",
)
DATE_DIR = re.compile(r"^event_date=\d{4}-\d{2}-\d{2}$")
HOUR_DIR = re.compile(r"^event_hour=\d{2}$")


def hostile_events() -> Iterator[dict[str, Any]]:
    """Each hostile string in every string field of the orders stream, one event each."""
    at = "2026-11-28T10:15:00.000Z"
    for i, text in enumerate(HOSTILE):
        yield {
            "event_id": text,
            "event_type": "FinanceAlerted",
            "occurred_at": at,
            "order_id": text,
            "reason": text,
        }
        yield {
            "event_id": f"placed-{i}",
            "event_type": "OrderPlaced",
            "occurred_at": at,
            "order_id": text,
            "customer_id": text,
            "currency": "EUR",
            "items": [{"sku": text, "quantity": 1, "unit_price": "1.50"}],
            "total_amount": "1.50",
        }
        yield {
            "event_id": f"failed-{i}",
            "event_type": "PaymentFailed",
            "occurred_at": at,
            "order_id": f"ord-{i}",
            "payment_id": text,
            "amount": "2.00",
            "currency": "USD",
            "reason": text * 10,  # up to 3,000 characters: free text may be long
        }
        yield {
            "event_id": f"po-{i}",
            "event_type": "PurchaseOrderSubmitted",
            "occurred_at": at,
            "order_id": f"ord-{i}",
            "warehouse": text,
        }
        yield {
            "event_id": f"notify-{i}",
            "event_type": "CustomerNotified",
            "occurred_at": at,
            "order_id": f"ord-{i}",
            "customer_id": text,
            "channel": "sms",
            "template": text,
        }
        yield {
            "event_id": f"type-{i}",
            "event_type": text,
            "occurred_at": at,
            "order_id": f"ord-{i}",
            "reason": "x",
        }
        yield {
            "event_id": f"currency-{i}",
            "event_type": "PaymentAuthorized",
            "occurred_at": at,
            "order_id": f"ord-{i}",
            "payment_id": f"pay-{i}",
            "amount": "3.00",
            "currency": text,
        }
    # Look-alikes of accepted values must not be accepted.
    yield {
        "event_id": "lookalike-type",
        "event_type": "OrderPl\u0430ced",
        "occurred_at": at,
        "order_id": "o",
    }
    yield {
        "event_id": "lookalike-currency",
        "event_type": "PaymentAuthorized",
        "occurred_at": at,
        "order_id": "o",
        "payment_id": "p",
        "amount": "1.00",
        "currency": "\u0415UR",  # CYRILLIC CAPITAL LETTER IE, then 'UR'
    }


def expected_error(event: dict[str, Any]) -> str | None:
    """The error class the contract demands for ``event``, or None if it is valid."""
    if event["event_type"] not in EVENT_TYPES:
        return "UnknownEventType"
    identifiers = [event[name] for name in IDENTIFIERS if name in event]
    identifiers += [item["sku"] for item in event.get("items", [])]
    if any(not 1 <= len(value) <= 128 for value in identifiers):
        return "OutOfRange"
    if "currency" in event and not re.fullmatch(r"[A-Z]{3}", event["currency"]):
        return "OutOfRange"
    if len(event.get("reason", "")) > 4096:
        return "OutOfRange"
    return None


def snapshot(root: Path, skip: Path) -> dict[str, str]:
    """Every path under ``root`` except ``skip``: a content digest for files, 'dir' else."""
    tree: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path == skip or skip in path.parents:
            continue
        relative = str(path.relative_to(root))
        if path.is_symlink():
            tree[relative] = f"link:{path.readlink()}"
        elif path.is_dir():
            tree[relative] = "dir"
        else:
            tree[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return tree


def test_hostile_strings_are_stored_exactly_and_never_steer_a_path(
    topics: StreamTopics, tmp_path: Path
) -> None:
    # The data directory sits three levels down so that "../.." from inside it
    # lands in directories the snapshot covers; the flow runs in a directory of
    # the snapshot too, so relative writes would show.
    data_dir = tmp_path / "outer" / "inner" / "data"
    data_dir.mkdir(parents=True)
    workdir = tmp_path / "outer" / "cwd"
    workdir.mkdir()
    (tmp_path / "outer" / "etc").mkdir()
    (tmp_path / "outer" / "etc" / "passwd").write_text("decoy\n")
    before = snapshot(tmp_path, data_dir)

    events = list(hostile_events())
    records = [
        GeneratedRecord(
            key=str(event["order_id"]).encode(),
            value=orjson.dumps(event),
            kind="malformed" if expected_error(event) else "valid",
            event_id=event["event_id"],
        )
        for event in events
    ]
    report = produce_records(
        records,
        producer_config={"bootstrap.servers": topics.bootstrap_servers},
        topic=topics.name,
        progress=False,
    )
    assert (report.delivered, report.failed) == (len(records), 0)

    result = subprocess.run(
        flow_command(),
        env=flow_env(topics, data_dir),
        cwd=workdir,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]

    assert snapshot(tmp_path, data_dir) == before, "files outside the data directory changed"
    lake = data_dir / "lake"
    strays = [p for p in data_dir.rglob("*") if p.is_file() and lake not in p.parents]
    assert strays == []
    for date_dir in (lake / "orders").iterdir():
        if date_dir.name == "_delta_log":
            continue
        assert date_dir.is_dir() and DATE_DIR.match(date_dir.name), date_dir.name
        for hour_dir in date_dir.iterdir():
            assert hour_dir.is_dir() and HOUR_DIR.match(hour_dir.name), hour_dir
            for data_file in hour_dir.iterdir():
                assert data_file.is_file() and data_file.suffix == ".parquet", data_file
    assert {p.name for p in (lake / "orders").iterdir()} == {"_delta_log", "event_date=2026-11-28"}

    valid = {event["event_id"]: event for event in events if expected_error(event) is None}
    assert len(valid) == sum(1 for event in events if expected_error(event) is None)
    with connect(data_dir) as conn:
        cursor = conn.execute(f"SELECT {', '.join(COLUMNS)}, items FROM orders")
        rows = cursor.fetchall()
    stored = {row[0]: row for row in rows}
    assert len(stored) == len(rows) == len(valid)
    assert set(stored) == set(valid)
    for event_id, event in valid.items():
        row = stored[event_id]
        for column, value in zip(COLUMNS, row[:-1], strict=True):
            wanted = event.get(column)
            assert value == wanted, (event_id, column, value, wanted)
            if isinstance(value, str):
                assert value.encode() == str(wanted).encode()
        skus = [item["sku"] for item in row[-1]] if row[-1] is not None else None
        wanted_skus = [item["sku"] for item in event["items"]] if "items" in event else None
        assert skus == wanted_skus, event_id

    invalid = {
        orjson.dumps(event): expected_error(event) for event in events if expected_error(event)
    }
    dead = read_topic(topics.bootstrap_servers, topics.dead_letter_topic)
    got = {m.value(): dict(m.headers() or [])["error.class"].decode() for m in dead}
    assert len(dead) == len(invalid)
    assert got == invalid


EXTREME_TIMESTAMPS = (
    "2026-11-28T10:15:00Z",
    "9999-12-31T23:59:59.999999Z",  # the last instant a year of four digits can hold
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-23:59",  # in UTC: 10000-01-01T23:58:59
    "0001-01-01T00:00:00+23:59",  # in UTC: 0000-12-31T00:01:00
)


def test_extreme_timestamps_never_make_a_malformed_partition_or_stop_the_flow(
    topics: StreamTopics, data_dir: Path
) -> None:
    events = [
        {
            "event_id": f"ts-{i}",
            "event_type": "PurchaseOrderSubmitted",
            "occurred_at": occurred_at,
            "order_id": f"ord-{i}",
            "warehouse": "WH-1",
        }
        for i, occurred_at in enumerate(EXTREME_TIMESTAMPS)
    ]
    records = [
        GeneratedRecord(
            key=event["order_id"].encode(),
            value=orjson.dumps(event),
            kind="valid",
            event_id=event["event_id"],
        )
        for event in events
    ]
    send(topics, records)

    result = subprocess.run(
        flow_command(),
        env=flow_env(topics, data_dir),
        cwd=data_dir,
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]

    # Each event is either a row in a well-named partition or a dead letter.
    table_dir = data_dir / "lake" / "orders"
    partitions = [p for p in table_dir.glob("*/*") if p.parent.name != "_delta_log"]
    bad_names = [
        str(p.relative_to(table_dir))
        for p in partitions
        if not (DATE_DIR.match(p.parent.name) and HOUR_DIR.match(p.name))
    ]
    assert bad_names == []
    with connect(data_dir) as conn:
        rows = {r[0] for r in conn.execute("SELECT event_id FROM orders").fetchall()}
    dead = read_topic(topics.bootstrap_servers, topics.dead_letter_topic)
    letters = {orjson.loads(m.value())["event_id"] for m in dead}
    assert not rows & letters
    assert rows | letters == {event["event_id"] for event in events}
    assert {"ts-0", "ts-1", "ts-2", "ts-3"} <= rows
