"""No single record can stop a partition: every record ends as a row or a dead letter.

A property test feeds arbitrary JSON texts (integers of any size, exact and
huge decimals, NaN and Infinity tokens, nested objects and lists, strings with
odd unicode and escapes, nulls) into every field and into unknown fields of
valid events of every stream, through the real validation paths (columnar,
per record, pydantic): validation never raises, every offset is exactly once
a row or a dead letter with a reason, the fast paths agree with pydantic, and
an unknown field's value is kept exactly as sent. Then: a record whose Arrow
encoding fails is isolated, and a dead letter too large for a message is cut
to fit with its size and digest.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

from connectors.dead_letters import fitted
from connectors.records import ClosedBatch, DeadLetter, RecordChunk
from events.common import Count, EventBase
from events.registry import CLICKS, LOGS, ORDERS
from events.stream import StreamSchema
from flows.validation import validate_batch
from generator import generate_stream_records

SAMPLES = generate_stream_records(60, seed=13, duplicate_ratio=0.0, malformed_ratio=0.0)
STREAMS = {"orders": ORDERS, "clicks": CLICKS, "logs": LOGS}

NUMBER_TOKENS = [
    "0",
    "-0",
    "-0.0",
    "1.0",
    "1e0",
    "1E+2",
    "1e400",
    "-1e-400",
    "18446744073709551616",
    "-9223372036854775809",
    str(10**40),
    "12345678901234.56789",
    "99999999999999.9999",
    "0.00001",
    "NaN",
    "Infinity",
    "-Infinity",
]
ODD_STRINGS = [
    "",
    "1764331200",
    "2026-11-28",
    "2026-11-28T14:03:11Z",
    "2026-11-28T14:03:11.1234567Z",
    "1.5",
    "NaN",
    "EUR",
    "sms",
    "INFO",
    "\u0000",
    "\u202e",
    "\ud800",  # a lone surrogate: escaped, it is not valid JSON text
    "\U0001f600",
    "\u2028",
    "é",
]


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False) if text.isprintable() else json.dumps(text)


SCALARS = (
    st.sampled_from(["null", "true", "false"])
    | st.sampled_from(NUMBER_TOKENS)
    | st.integers().map(str)
    | st.decimals(allow_nan=False, allow_infinity=False).map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.sampled_from(ODD_STRINGS).map(_string)
    | st.text(max_size=6).map(_string)
)
JSON_TEXT = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(
            st.tuples(st.sampled_from(["sku", "quantity", "unit_price", "k", "é"]), children),
            max_size=3,
        ).map(lambda pairs: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}")
    ),
    max_leaves=5,
)


@st.composite
def hostile_record(draw: st.DrawFn, stream: str) -> tuple[bytes, dict[str, str]]:
    """A valid event of ``stream`` with some fields (known or unknown) set to hostile
    JSON text; returns the record and the JSON text of its unknown fields."""
    sample = json.loads(draw(st.sampled_from(SAMPLES[stream])).value)
    fields = {name: json.dumps(value) for name, value in sample.items()}
    unknown: dict[str, str] = {}
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        text = draw(JSON_TEXT)
        if draw(st.booleans()):
            fields[draw(st.sampled_from(sorted(fields)))] = text
        else:
            name = draw(st.sampled_from(["note", "meta", "x_amount"]))
            fields[name] = unknown[name] = text
    unknown = {name: fields[name] for name in unknown}  # as last set
    if isinstance(sample.get("items"), list) and draw(st.booleans()):
        item = sample["items"][0]
        nested = {name: json.dumps(value) for name, value in item.items()}
        nested[draw(st.sampled_from(sorted(nested)))] = draw(JSON_TEXT)
        body = ",".join(f'"{k}":{v}' for k, v in nested.items())
        fields["items"] = "[{" + body + "}]"
    value = "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}"
    return value.encode("utf-8", "surrogatepass"), unknown


def batch_of(values: list[bytes]) -> ClosedBatch:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    count = len(values)
    chunk = RecordChunk("t", 0, list(range(count)), [b"k"] * count, list(values), [None] * count)
    return ClosedBatch(chunk, "end", now, now, sum(map(len, values)))


def exact(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


@pytest.mark.parametrize("name", sorted(STREAMS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_hostile_record_ends_as_a_row_or_a_dead_letter(
    name: str, data: st.DataObject
) -> None:
    drawn = data.draw(st.lists(hostile_record(name), min_size=1, max_size=5))
    clean = [record.value for record in SAMPLES[name][:3]]
    values = [*clean, *(value for value, _ in drawn)]
    stream = STREAMS[name]
    results = [validate_batch(stream, batch_of(values), fast_path=fast) for fast in (True, False)]
    for result in results:
        rows = result.table.column("_offset").to_pylist()
        letters = [letter.offset for letter in result.dead_letters]
        assert sorted(rows + letters) == list(range(len(values)))
        assert set(range(len(clean))) <= set(rows)
        for letter in result.dead_letters:
            assert letter.error_class and letter.error_message and letter.stage
            assert letter.value == values[letter.offset]
        # Unknown fields are kept exactly as sent (never NaN made null, never a big
        # integer or a decimal rounded).
        extras = dict(zip(rows, result.table.column("_extra").to_pylist(), strict=True))
        for offset, (_, unknown) in enumerate(drawn, start=len(clean)):
            if offset in extras and unknown:
                kept = exact(extras[offset] or "{}")
                assert kept == {k: exact(v) for k, v in unknown.items()}
    fast, slow = results
    assert fast.table.equals(slow.table), (fast.table.to_pylist(), slow.table.to_pylist())
    assert [(d.offset, d.error_class) for d in fast.dead_letters] == [
        (d.offset, d.error_class) for d in slow.dead_letters
    ]


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_an_integer_above_64_bits_in_an_unknown_field_is_kept(name: str) -> None:
    body = json.loads(SAMPLES[name][0].value)
    value = json.dumps({**body, "note": 2**64}).encode()
    for fast in (True, False):
        result = validate_batch(STREAMS[name], batch_of([value]), fast_path=fast)
        assert result.dead_letters == []
        assert result.table.column("_extra").to_pylist() == ['{"note":18446744073709551616}']


class _Tiny(EventBase):
    """An event whose column is narrower than its model: Arrow cannot encode 1000."""

    event_type: Literal["tiny"]
    level: Annotated[Count, Field(ge=0)]


TINY = StreamSchema(
    name="tiny",
    event_model=_Tiny,
    event_types=("tiny",),
    columns=pa.schema([("level", pa.int8())]),
)


def tiny(event_id: str, level: int, extra: str = "") -> bytes:
    return (
        f'{{"event_id":"{event_id}","event_type":"tiny",'
        f'"occurred_at":"2026-11-28T14:03:11Z","level":{level}{extra}}}'
    ).encode()


@pytest.mark.parametrize("fast", [True, False])
def test_a_record_arrow_cannot_encode_is_isolated_as_a_dead_letter(fast: bool) -> None:
    values = [tiny("a", 1), tiny("b", 1000), tiny("c", 2, ',"note":1'), tiny("d", 3)]
    result = validate_batch(TINY, batch_of(values), fast_path=fast)
    assert result.table.column("event_id").to_pylist() == ["a", "c", "d"]
    assert result.table.column("level").to_pylist() == [1, 2, 3]
    (letter,) = result.dead_letters
    assert (letter.offset, letter.stage, letter.error_class) == (1, "encode", "Unprocessable")
    assert "ArrowInvalid" in letter.error_message
    assert letter.value == values[1]


def letter_of(key: bytes | None, value: bytes | None, headers: Any = None) -> DeadLetter:
    return DeadLetter(key, value, headers, 7, "validate", "RecordTooLarge", "value is too big")


def test_a_letter_that_fits_is_left_as_it_is() -> None:
    letter = letter_of(b"k", b"v" * 1000, [("h", b"x")])
    assert fitted(letter, 1024 * 1024) is letter


def test_an_oversized_value_is_cut_with_its_size_and_digest() -> None:
    value = b"v" * (3 * 1024 * 1024)
    letter = letter_of(b"key", value, [("trace", b"t-1")])
    cut = fitted(letter, 1024 * 1024)
    assert cut.key == b"key" and cut.offset == 7
    assert cut.value is not None and value.startswith(cut.value)
    assert len(cut.value) + len(cut.key) < 1024 * 1024 - 60 * 1024
    headers = dict(cut.headers or [])
    assert headers["trace"] == b"t-1"
    assert headers["original.size"] == str(len(value)).encode()
    assert headers["original.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert cut.error_message.startswith("value is too big; dead letter truncated: ")
    assert f"value cut from {len(value)} to {len(cut.value)} bytes" in cut.error_message


def test_an_oversized_key_and_headers_are_cut_too() -> None:
    key = b"k" * (1024 * 1024)
    headers = [("big", b"h" * (1024 * 1024))]
    cut = fitted(letter_of(key, b"small", headers), 1024 * 1024)
    names = dict(cut.headers or [])
    assert "big" not in names
    assert names["original.headers.size"] == str(3 + 1024 * 1024).encode()
    assert names["original.key.sha256"] == hashlib.sha256(key).hexdigest().encode()
    assert cut.value == b"small" and cut.key is not None and key.startswith(cut.key)
    assert "key cut from" in cut.error_message and "headers" in cut.error_message
