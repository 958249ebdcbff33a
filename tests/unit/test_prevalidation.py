"""The validation fast path agrees with pydantic on every input (property tests).

The fast path (msgspec prevalidator + Arrow's JSON reader + column checks) may
only ever accept what pydantic accepts, with the same values; anything else
must reach pydantic. So for any batch, fast and pure-pydantic validation give
the same rows and the same dead letters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.records import ClosedBatch, RecordChunk
from events.registry import CLICKS, LOGS, ORDERS
from events.stream import StreamSchema
from flows.validation import validate_batch
from generator import generate_stream_records

SAMPLES = generate_stream_records(300, seed=3, duplicate_ratio=0.0, malformed_ratio=0.0)
STREAMS = {"orders": ORDERS, "clicks": CLICKS, "logs": LOGS}

ODD_STRINGS = [
    "",
    " ",
    "x" * 129,
    "0",
    "-1",
    "1.23456",
    "1e2",
    "+1.5",
    "19.99990",
    "NaN",
    "Infinity",
    "99999999999999.9999",
    "100000000000000",
    "2026-11-28T14:03:11Z",
    "2026-11-28",
    "2026-11-28T14:03:11.1234567Z",
    "2026-11-28t14:03:11z",
    "2026-11-28 14:03:11+01:00",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "2026-12-31T23:59:60Z",
    "EUR",
    "eur",
    "email",
    "sms",
    "INFO",
    "LOUD",
    "../../etc",
    "\u202e",
    "\u0000",
    "é",
]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(ODD_STRINGS)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["sku", "quantity", "unit_price", "k"]), children, max_size=3
        )
    ),
    max_leaves=6,
)


@st.composite
def mutated_record(draw: st.DrawFn, stream: str) -> bytes:
    """A valid record of ``stream`` with a few fields removed, replaced or added."""
    document: dict[str, Any] = orjson.loads(draw(st.sampled_from(SAMPLES[stream])).value)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        action = draw(st.sampled_from(["drop", "replace", "add", "nested"]))
        keys = sorted(document)
        if action == "drop" and keys:
            document.pop(draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            document[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
        elif action == "add":
            document[draw(st.sampled_from(["note", "reason", "amount", "sku"]))] = draw(JSON_VALUES)
        elif (
            action == "nested"
            and isinstance(document.get("items"), list)
            and document["items"]
            and isinstance(document["items"][0], dict)
        ):
            item = document["items"][0]
            item[draw(st.sampled_from(["sku", "quantity", "unit_price", "x"]))] = draw(JSON_VALUES)
    raw = orjson.dumps(document)
    if draw(st.booleans()):
        raw = raw.replace(b",", b",\n", 1)  # whitespace newlines are legal JSON
    return raw


def batch_of(values: list[bytes]) -> ClosedBatch:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    count = len(values)
    chunk = RecordChunk("t", 0, list(range(count)), [None] * count, list(values), [None] * count)
    return ClosedBatch(chunk, "end", now, now, sum(map(len, values)))


def assert_same(stream: StreamSchema, values: list[bytes]) -> None:
    fast = validate_batch(stream, batch_of(values))
    slow = validate_batch(stream, batch_of(values), fast_path=False)
    assert fast.table.equals(slow.table), (fast.table.to_pylist(), slow.table.to_pylist())
    assert [(d.offset, d.error_class) for d in fast.dead_letters] == [
        (d.offset, d.error_class) for d in slow.dead_letters
    ]


@pytest.mark.parametrize("name", sorted(STREAMS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_path_equals_pydantic(name: str, data: st.DataObject) -> None:
    values = data.draw(st.lists(mutated_record(name), min_size=1, max_size=6))
    assert_same(STREAMS[name], values)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_unmutated_samples_take_the_fast_path_and_match(name: str) -> None:
    values = [record.value for record in SAMPLES[name]]
    stream = STREAMS[name]
    assert stream.prevalidator is not None
    accepted = [stream.prevalidator.event_id(value) for value in values]
    assert all(event_id is not None for event_id in accepted)
    assert_same(stream, values)
