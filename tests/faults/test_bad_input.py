"""Bad input at scale: every malformed class, an oversized record and an unproducible one.

100,000 generated records, 1 % of each of the seven malformed classes, plus one
valid-JSON record of 2 MiB (over ``STREAMBATCH_MAX_RECORD_BYTES``, 1 MiB by
default, so it must become a ``RecordTooLarge`` dead letter) and one 20 MB
record that the producer itself refuses (its ``message.max.bytes`` is left at
the 1 MB default), which must be counted in the :class:`ProduceReport`, not
raised.

Pass: the flow exits 0; the dead-letter topic holds exactly the injected bad
records, per error class; every dead letter has the six error headers and the
original value byte for byte (matched by source partition and offset against
what the source topic holds); the lake holds exactly the valid event ids.

The embedded broker (Tansu 0.6) enforces no message size limit of its own (a
12 MB message was accepted in an experiment), so the topics need no
``max.message.bytes`` config; the only limit in the way of the 2 MiB record is
the producer's, raised for that one record.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from generator import (
    GeneratedRecord,
    ProduceReport,
    generate_order_records,
    produce_records,
    summarize,
)
from tests.support import StreamTopics, flow_env, lake_table, read_topic, run_flow

pytestmark = pytest.mark.slow

ERROR_HEADERS = (
    "error.stage",
    "error.class",
    "error.message",
    "source.topic",
    "source.partition",
    "source.offset",
)
# Generator class -> the error class validation must give it (README "Dead letters").
EXPECTED_CLASS = {
    "not_json": "InvalidJson",
    "not_utf8": "NotUtf8",
    "missing_event_id": "MissingField",
    "wrong_type": "WrongType",
    "bad_timestamp": "BadTimestamp",
    "unknown_event_type": "UnknownEventType",
    "negative_quantity": "OutOfRange",
}
RECORDS = 100_000
PER_CLASS = RECORDS // 100  # 1 % of each class
BIG_VALUE_BYTES = 2 * 1024 * 1024
TOO_BIG_VALUE_BYTES = 20 * 1024 * 1024


def big_valid_record(padding_bytes: int, event_id: str) -> GeneratedRecord:
    """A schema-valid OrderPlaced whose unknown ``note`` field makes it ``padding_bytes`` long."""
    body = {
        "event_id": event_id,
        "event_type": "OrderPlaced",
        "occurred_at": "2026-11-28T12:00:00.000Z",
        "order_id": f"ord-{event_id}",
        "customer_id": "cus-000001",
        "currency": "EUR",
        "items": [{"sku": "SKU-00001", "quantity": 1, "unit_price": "1.00"}],
        "total_amount": "1.00",
        "note": "",
    }
    overhead = len(orjson.dumps(body))
    body["note"] = "x" * (padding_bytes - overhead)
    value = orjson.dumps(body)
    assert len(value) == padding_bytes
    return GeneratedRecord(key=f"ord-{event_id}".encode(), value=value, kind="valid", event_id=None)


def produce(topics: StreamTopics, records: list[GeneratedRecord], **config: str) -> ProduceReport:
    return produce_records(
        records,
        producer_config={"bootstrap.servers": topics.bootstrap_servers, **config},
        topic=topics.name,
        progress=False,
    )


def test_every_bad_record_is_dead_lettered_byte_exact_and_every_valid_one_lands(
    topics: StreamTopics, data_dir: Path
) -> None:
    records = list(
        generate_order_records(
            RECORDS, seed=23, duplicate_ratio=0.0, malformed_ratio=len(EXPECTED_CLASS) / 100
        )
    )
    expected = summarize(records)
    assert expected.malformed_by_class == dict.fromkeys(EXPECTED_CLASS, PER_CLASS)
    big = big_valid_record(BIG_VALUE_BYTES, "evt-big-2mib")
    too_big = big_valid_record(TOO_BIG_VALUE_BYTES, "evt-too-big-20mb")
    half = RECORDS // 2

    # The 20 MB record sits in the middle of a run: refused, counted, and the run goes on.
    first = produce(topics, [*records[:half], too_big, *records[half : half + 10]])
    assert (first.delivered, first.failed) == (half + 10, 1), first.failures
    assert first.failures == {"MSG_SIZE_TOO_LARGE": 1}
    # The 2 MiB record needs a producer that allows it; the broker takes it as it is.
    middle = produce(topics, [big], **{"message.max.bytes": str(8 * 1024 * 1024)})
    assert (middle.delivered, middle.failed) == (1, 0), middle.failures
    last = produce(topics, records[half + 10 :])
    assert (last.delivered, last.failed) == (RECORDS - half - 10, 0), last.failures

    # What the source topic holds, by (partition, offset): the reference for byte equality.
    source = {
        (m.partition(), m.offset()): m.value()
        for m in read_topic(topics.bootstrap_servers, topics.name)
    }
    assert len(source) == RECORDS + 1
    assert Counter(source.values()) == Counter(r.value for r in [*records, big])

    # 1 MiB windows: the 2 MiB record is bigger than a whole window (and than the
    # in-flight limit of two windows) and must still pass without a deadlock.
    run_flow(flow_env(topics, data_dir, STREAMBATCH_WINDOW_BYTES="1048576"), timeout=120)

    class_of_value: dict[bytes, str] = {
        r.value: EXPECTED_CLASS[r.malformed_class]
        for r in records
        if r.kind == "malformed" and r.malformed_class is not None
    }
    class_of_value[big.value] = "RecordTooLarge"
    dead = read_topic(topics.bootstrap_servers, topics.dead_letter_topic)
    by_class: Counter[str] = Counter()
    seen_sources: set[tuple[int, int]] = set()
    for message in dead:
        headers = dict(message.headers() or [])
        missing = [name for name in ERROR_HEADERS if name not in headers]
        assert not missing, f"dead letter without headers {missing}: {headers}"
        assert headers["source.topic"] == topics.name.encode()
        assert headers["error.stage"]
        assert headers["error.message"]
        where = (int(headers["source.partition"]), int(headers["source.offset"]))
        assert where not in seen_sources, f"{where} dead-lettered twice"
        seen_sources.add(where)
        assert where in source, f"dead letter names {where}, which the source topic lacks"
        assert message.value() == source[where], f"dead letter of {where} is not the original"
        error_class = headers["error.class"].decode()
        assert error_class == class_of_value.get(source[where]), (where, error_class)
        by_class[error_class] += 1
    assert dict(by_class) == {
        **dict.fromkeys(EXPECTED_CLASS.values(), PER_CLASS),
        "RecordTooLarge": 1,
    }
    assert len(dead) == expected.malformed + 1

    ids = lake_table(data_dir, columns=["event_id"]).column("event_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate rows in the lake"
    assert set(ids) == expected.valid_event_ids
    batches = lake_table(data_dir, "batches")
    assert sum(batches.column("dead_letters").to_pylist()) == expected.malformed + 1
    assert sum(batches.column("rows").to_pylist()) == len(ids)
