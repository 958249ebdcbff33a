"""No single record can stop a partition; nothing is rounded or guessed (real broker).

Per stream, a few valid events and a handful of hostile ones go through the
real flow: an integer above 64 bits and a huge exponent in unknown fields
(kept exactly), NaN and Infinity tokens, money with too many digits (refused,
never rounded), Unix time in a string, ``true`` / ``"1"`` / ``1.0`` as a
quantity, a lone surrogate, deep nesting. Then a 17 MiB record the broker
accepted, larger than the dead-letter producer's 16 MiB limit.

Pass: the flow exits 0; rows in the lake plus dead letters equal the records
produced, each offset once; each hostile record ends where the README says,
with its reason; the 17 MiB letter is cut, with its size and SHA-256 in headers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from generator import GeneratedRecord, generate_stream_records, produce_records
from tests.support import StreamTopics, flow_env, lake_table, read_topic, run_flow, send

pytestmark = pytest.mark.slow

SAMPLES = generate_stream_records(4, seed=31, duplicate_ratio=0.0, malformed_ratio=0.0)
BIG = 2**64


def with_fields(sample: bytes, event_id: str, **texts: str) -> bytes:
    """``sample`` with a new event id and each field set to the given JSON text."""
    fields = {name: json.dumps(value) for name, value in json.loads(sample).items()}
    fields["event_id"] = json.dumps(event_id)
    fields.update(texts)
    return ("{" + ",".join(f'"{name}":{text}' for name, text in fields.items()) + "}").encode()


def hostile(stream: str) -> Iterator[tuple[bytes, str]]:
    """(record, where it must end: ``row`` or the dead letter's error class)."""
    sample = SAMPLES[stream][0].value
    yield with_fields(sample, "big-int", note=str(BIG)), "row"
    yield with_fields(sample, "huge-exponent", note="1e400", meta="[1.50, -0.0]"), "row"
    yield with_fields(sample, "nan", note="NaN"), "InvalidJson"
    yield with_fields(sample, "infinity", note='{"x": -Infinity}'), "InvalidJson"
    yield with_fields(sample, "unix-time", occurred_at='"1764331200"'), "BadTimestamp"
    yield with_fields(sample, "surrogate", note='"\\ud800"'), "InvalidJson"
    yield with_fields(sample, "deep", note="[" * 5000 + "]" * 5000), "InvalidJson"
    if stream == "orders":
        placed = next(r.value for r in SAMPLES["orders"] if b'"OrderPlaced"' in r.value)
        yield with_fields(placed, "money", total_amount="12345678901234.56789"), "OutOfRange"
        yield with_fields(placed, "money-exact", total_amount="12345678901234.5678"), "row"
        for i, quantity in enumerate(("true", '"1"', "1.0")):
            items = f'[{{"sku":"SKU-1","quantity":{quantity},"unit_price":"1.00"}}]'
            yield with_fields(placed, f"quantity-{i}", items=items), "WrongType"


def record(value: bytes) -> GeneratedRecord:
    return GeneratedRecord(key=b"k", value=value, kind="valid", event_id=None)


@pytest.mark.partitions(1)
@pytest.mark.parametrize("stream", ["orders", "clicks", "logs"])
def test_hostile_records_each_end_as_a_row_or_a_dead_letter_with_a_reason(
    topics: StreamTopics, data_dir: Path, stream: str
) -> None:
    cases = list(hostile(stream))
    valid = [r.value for r in SAMPLES[stream][1:4]]
    produced = [*valid[:2], *(value for value, _ in cases), valid[2]]
    send(topics, [record(value) for value in produced])

    run_flow(flow_env(topics, data_dir, stream=stream), stream=stream, timeout=150)

    rows = lake_table(data_dir, stream, columns=["event_id", "_offset", "_extra"]).to_pylist()
    dead = read_topic(topics.bootstrap_servers, topics.dead_letter_topic)
    row_offsets = [row["_offset"] for row in rows]
    letter_offsets = [int(dict(m.headers())["source.offset"]) for m in dead]
    assert sorted(row_offsets + letter_offsets) == list(range(len(produced)))

    where = {value: outcome for value, outcome in cases}
    extras = {row["event_id"]: row["_extra"] for row in rows}
    for value, outcome in where.items():
        event_id = value.split(b'"event_id":"', 1)[1].split(b'"', 1)[0].decode()
        if outcome == "row":
            assert event_id in extras, event_id
    assert extras["big-int"] == f'{{"note":{BIG}}}'
    assert extras["huge-exponent"] == '{"note":1E+400,"meta":[1.50,-0.0]}'
    for message in dead:
        headers = dict(message.headers())
        error_class = headers["error.class"].decode()
        assert where[message.value()] == error_class, headers["error.message"]
        assert headers["error.message"] and headers["error.stage"] == b"validate"
        if error_class == "OutOfRange":
            assert b"total_amount" in headers["error.message"]
    if stream == "orders":
        amounts = lake_table(data_dir, stream, columns=["event_id", "total_amount"]).to_pylist()
        exact = {a["event_id"]: a["total_amount"] for a in amounts}["money-exact"]
        assert str(exact) == "12345678901234.5678"


@pytest.mark.partitions(1)
def test_a_record_larger_than_a_dead_letter_is_cut_to_fit_and_the_flow_goes_on(
    topics: StreamTopics, data_dir: Path
) -> None:
    sample = SAMPLES["orders"][0].value
    huge = with_fields(sample, "huge", note=json.dumps("x" * (17 * 1024 * 1024)))
    assert len(huge) > 17 * 1024 * 1024
    send(topics, [record(SAMPLES["orders"][1].value)])
    report = produce_records(
        [record(huge)],
        producer_config={
            "bootstrap.servers": topics.bootstrap_servers,
            "message.max.bytes": str(32 * 1024 * 1024),
        },
        topic=topics.name,
        progress=False,
    )
    assert (report.delivered, report.failed) == (1, 0), report.failures
    send(topics, [record(SAMPLES["orders"][2].value)])

    run_flow(flow_env(topics, data_dir), timeout=150)

    offsets = lake_table(data_dir, columns=["_offset"]).column("_offset").to_pylist()
    assert sorted(offsets) == [0, 2]
    (letter,) = read_topic(topics.bootstrap_servers, topics.dead_letter_topic)
    headers = dict(letter.headers())
    assert headers["error.class"] == b"RecordTooLarge"
    assert headers["source.offset"] == b"1"
    assert headers["original.size"] == str(len(huge)).encode()
    assert headers["original.sha256"] == hashlib.sha256(huge).hexdigest().encode()
    assert b"dead letter truncated" in headers["error.message"]
    assert len(letter.value()) < 16 * 1024 * 1024 and huge.startswith(letter.value())
