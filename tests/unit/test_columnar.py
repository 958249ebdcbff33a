"""The columnar fast path: parse once with Arrow, check columns, pydantic for the rest.

It may only accept what pydantic accepts, with the same values, and must
refuse (hand to pydantic) whatever Arrow reads differently. Each case below
is one way the two could disagree; each is compared with pure pydantic, and
the clean cases must really take the columnar path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

import flows.columnar_validation as columnar_validation
import flows.validation as validation
from events.columnar import build_columnar_validator
from events.common import EventBase
from events.registry import CLICKS, LOGS, ORDERS
from events.stream import StreamSchema
from flows.validation import validate_batch
from tests.unit.test_prevalidation import SAMPLES, assert_same, batch_of
from tests.unit.test_validation import VALID_EVENTS, event

VALID = [event(event_type) for event_type in VALID_EVENTS]


def columnar_rows(stream: StreamSchema, values: list[bytes]) -> int:
    """How many of ``values`` the columnar checks accepted; -1: Arrow refused the slice."""
    refused_slices: list[bool] = []
    to_pydantic: list[int] = []
    columnar_slice = validation.validate_columnar
    per_record = columnar_validation.validate_records

    def spy_slice(*args: Any, **kwargs: Any) -> Any:
        part = columnar_slice(*args, **kwargs)
        refused_slices.append(part is None)
        return part

    def spy_records(*args: Any, **kwargs: Any) -> Any:
        to_pydantic.append(len(args[2]))
        return per_record(*args, **kwargs)

    setattr(validation, "validate_columnar", spy_slice)  # noqa: B010 - a spy, put back below
    setattr(columnar_validation, "validate_records", spy_records)  # noqa: B010
    try:
        validate_batch(stream, batch_of(values))
    finally:
        setattr(validation, "validate_columnar", columnar_slice)  # noqa: B010
        setattr(columnar_validation, "validate_records", per_record)  # noqa: B010
    return -1 if any(refused_slices) else len(values) - sum(to_pydantic)


def test_clean_events_of_every_type_take_the_columnar_path() -> None:
    assert_same(ORDERS, VALID)
    assert columnar_rows(ORDERS, VALID) == len(VALID)
    clicks = [record.value for record in SAMPLES["clicks"]]
    assert_same(CLICKS, clicks)
    assert columnar_rows(CLICKS, clicks) == len(clicks)


def test_line_breaks_inside_records_across_arrow_blocks() -> None:
    """Over 1 MiB (Arrow reads in blocks cut at a line break, maybe one inside a
    record): the result equals pydantic's, whichever path each record took."""
    values = []
    for index in range(9000):
        record = place(order_id=f"ord-{index:06d}")
        if index % 3 == 0:
            record = record.replace(b",", b",\n")  # pretty-printed
        elif index % 7 == 0:
            record = record + record  # two objects in one value: refused
        values.append(record)
    assert sum(map(len, values)) > 2 * 1024 * 1024
    assert_same(ORDERS, values)
    assert columnar_rows(ORDERS, values) != 0  # one such record does not refuse them all


def test_logs_have_no_columnar_path() -> None:
    # Arrow's JSON reader builds no map columns: logs use the per-record fast path.
    assert LOGS.columnar is None
    assert ORDERS.columnar is not None and CLICKS.columnar is not None


def place(**changes: Any) -> bytes:
    return event("OrderPlaced", **changes)


# Each: (a record, whether the columnar checks may accept it).
CASES: dict[str, tuple[bytes, bool]] = {
    "clean": (place(), True),
    "foreign field given as null (an extra for pydantic)": (place(payment_id=None), False),
    "foreign field with a value": (place(payment_id="p-9"), False),
    "own required field null": (place(customer_id=None), False),
    "own required field missing": (place(customer_id=...), False),
    "escaped key spelling a foreign field": (
        place().replace(b"{", b'{"payment\\u005fid":null,', 1),
        False,
    ),
    "escape inside a value": (place(order_id="caf\u00e9").replace("é".encode(), b"\\u00e9"), True),
    # Arrow reads it as one object, as pydantic does; in a window cut into
    # blocks at that line break Arrow fails and the record goes to pydantic.
    "pretty-printed (line breaks between tokens)": (place().replace(b",", b",\n", 1), True),
    "object then blank lines": (place() + b"\n\n", True),
    "two objects in one value": (place() + place(), False),
    "leading whitespace": (b" " + place(), False),
    "unknown event type": (place().replace(b"OrderPlaced", b"OrderShipped"), False),
    "empty items": (place(items=[]), False),
    "null item": (place(items=[None]), False),
    "item with null sku": (place(items=[{"sku": None, "quantity": 1, "unit_price": "1"}]), False),
    "item missing its price": (place(items=[{"sku": "s", "quantity": 1}]), False),
    "quantity zero": (place(items=[{"sku": "s", "quantity": 0, "unit_price": "1"}]), False),
    "negative money": (place(total_amount="-1"), False),
    "money at the limit": (place(total_amount="99999999999999.9999"), True),
    "money over the limit": (place(total_amount="100000000000000"), False),
    "money as a number": (place().replace(b'"39.98"', b"39.98"), True),
    "currency pattern": (place(currency="eur"), False),
    "id too long": (place(order_id="x" * 129), False),
    "id of 128 characters": (place(order_id="é" * 128), True),
    "empty id": (place(order_id=""), False),
    "timestamp without offset": (place(occurred_at="2026-11-28T14:03:11"), False),
    "timestamp date only": (place(occurred_at="2026-11-28"), False),
    "timestamp lower-case t": (place(occurred_at="2026-11-28t14:03:11Z"), False),
    "timestamp with a space": (place(occurred_at="2026-11-28 14:03:11Z"), False),
    "timestamp February 30": (place(occurred_at="2026-02-30T00:00:00Z"), False),
    "timestamp hour 24": (place(occurred_at="2026-11-28T24:00:00Z"), False),
    "timestamp leap second": (place(occurred_at="2026-12-31T23:59:60Z"), False),
    "timestamp offset 24 h": (place(occurred_at="2026-11-28T14:03:11+24:00"), False),
    "timestamp offset minute 60": (place(occurred_at="2026-11-28T14:03:11+01:60"), False),
    "timestamp 7 fractional digits": (place(occurred_at="2026-11-28T14:03:11.1234567Z"), False),
    "timestamp leaving year 9999 in UTC": (place(occurred_at="9999-12-31T23:59:59-23:59"), False),
    "timestamp before year 1 in UTC": (place(occurred_at="0001-01-01T00:00:00+23:59"), False),
    "timestamp with offset": (place(occurred_at="2024-02-29T23:59:59.5-05:30"), True),
    "timestamp as a number": (place(occurred_at=1764338591), False),
    "literal channel": (event("CustomerNotified", channel="fax"), False),
    "extra field (kept by pydantic)": (place(note="gift"), False),
    "duplicate key": (place().replace(b"{", b'{"order_id":"o-2",', 1), False),
    "quantity as a string": (
        place(items=[{"sku": "s", "quantity": "2", "unit_price": "1"}]),
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_disagreement_is_left_to_pydantic(name: str) -> None:
    record, may_accept = CASES[name]
    values = [VALID[0], record, VALID[1]]
    assert_same(ORDERS, values)
    accepted = columnar_rows(ORDERS, values)
    if may_accept:
        assert accepted == 3
    else:
        # Either the slice went to the per-record path (-1), or this row did.
        assert accepted in (-1, 2)


def test_an_impossible_date_refuses_only_its_row() -> None:
    values = [VALID[0], place(occurred_at="2026-02-30T00:00:00Z"), VALID[1]]
    assert columnar_rows(ORDERS, values) == 2
    result = validate_batch(ORDERS, batch_of(values))
    assert [letter.error_class for letter in result.dead_letters] == ["BadTimestamp"]


def test_rows_keep_offset_order_when_pydantic_takes_some() -> None:
    values = [place(event_id=f"e-{i}", payment_id=None if i % 3 == 0 else ...) for i in range(30)]
    result = validate_batch(ORDERS, batch_of(values))
    assert result.table.column("event_id").to_pylist() == [f"e-{i}" for i in range(30)]
    assert result.table.column("_offset").to_pylist() == list(range(30))
    extras = result.table.column("_extra").to_pylist()
    assert extras == ['{"payment_id":null}' if i % 3 == 0 else None for i in range(30)]


TEXT_EDITS = [
    (rb"\{", b'{"payment_id":null,'),
    (rb"\{", b'{"amount" :null,'),
    (rb"\{", b'{"re\\u0061son":null,'),
    (rb'"sku"', b'"sku":null,"sku"'),
    (rb"\}\]", b"},null]"),
    (rb'"quantity":\d+', b'"quantity":1.0'),
    (rb'"quantity":\d+', b'"quantity":-0'),
    (rb"Z\"", b'+00:00"'),
    (rb"\+\d\d:\d\d\"", b'+23:59"'),
    (rb"T\d\d:", b"T23:"),
    (rb"-\d\d-\d\dT", b"-02-29T"),
    (rb",", b" ,\t"),
    (rb",", b",\r\n"),
    (rb"$", b" "),
    (rb"^", b"\n"),
    (rb'"[0-9.]+"', b"1e2"),
    (rb'"[0-9.]+"', b'"1.50000"'),
    (rb'"[0-9.]+"', b'"12345678901234"'),
    (rb'"[A-Z]{3}"', b'"E\\u0055R"'),
    (rb'"c-1"', b'"\xc3\xa9"'),
    (rb'"c-1"', b'"\xff"'),
]


def _literal(replacement: bytes) -> Callable[[re.Match[bytes]], bytes]:
    return lambda _match: replacement


@st.composite
def edited_record(draw: st.DrawFn) -> bytes:
    """A valid orders record with a few textual edits (each may break or keep it)."""
    record = draw(st.sampled_from(VALID + [r.value for r in SAMPLES["orders"][:50]]))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        pattern, replacement = draw(st.sampled_from(TEXT_EDITS))
        # A function, so that backslashes in the replacement stay literal.
        record = re.sub(pattern, _literal(replacement), record, count=1)
    return record


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(edited_record(), min_size=1, max_size=8))
def test_textual_edits_agree_with_pydantic(values: list[bytes]) -> None:
    assert_same(ORDERS, values)


class _Flag(EventBase):
    event_type: Literal["flag"]
    on: bool


class _Strict(EventBase):
    model_config = ConfigDict(strict=True)
    event_type: Literal["strict"]


class _Nested(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str


class _Holder(EventBase):
    event_type: Literal["holder"]
    nested: list[_Nested]


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    common = [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
    ]
    return pa.schema([*common, *fields])


@pytest.mark.parametrize(
    ("model", "schema"),
    [
        (_Flag, _schema(("on", pa.bool_()))),
        (_Strict, _schema()),
        (_Holder, _schema(("nested", pa.list_(pa.struct([("name", pa.string())]))))),
        (
            Annotated[_Flag | _Strict, Field(discriminator="event_type")],
            _schema(("on", pa.bool_())),
        ),
    ],
    ids=["bool field", "strict model", "nested model ignoring extras", "union with a bool"],
)
def test_unsupported_models_have_no_columnar_path(model: Any, schema: pa.Schema) -> None:
    assert build_columnar_validator(model, schema) is None


def test_digest_and_lineage_match_the_per_record_path() -> None:
    values = [record.value for record in SAMPLES["orders"]]
    columnar = validate_batch(ORDERS, batch_of(values))
    assert columnar_rows(ORDERS, values) == len(values)
    expected = [validation.value_digest(value) for value in values]
    assert columnar.table.column("_value_digest").to_pylist() == expected
    assert orjson.loads(values[0])["event_id"] == columnar.table.column("event_id")[0].as_py()
