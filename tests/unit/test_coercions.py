"""Never rounded, never guessed: the coercions the README allows, on every path.

Each row of the table puts one JSON text into one field of a valid event of
one stream and says what must happen: a row with exactly this value, or a
dead letter of this class whose message names the field. The fast paths
(columnar and per record) and the pydantic path must give the same answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, get_args, get_origin

import annotated_types
import pytest
from pydantic import AwareDatetime, BaseModel

from connectors.records import ClosedBatch, RecordChunk, ValidatedBatch
from events.common import Rfc3339Text
from events.model_shapes import union_members, unwrap
from events.registry import CLICKS, LOGS, ORDERS, STREAMS
from events.stream import StreamSchema
from flows.validation import validate_batch

AT = '"2026-11-28T14:03:11.123Z"'
BASES: dict[str, dict[str, str]] = {
    "orders": {
        "event_id": '"e-1"',
        "event_type": '"OrderPlaced"',
        "occurred_at": AT,
        "order_id": '"o-1"',
        "customer_id": '"c-1"',
        "currency": '"EUR"',
        "items": '[{"sku":"s-1","quantity":QUANTITY,"unit_price":UNIT_PRICE}]',
        "total_amount": '"39.98"',
    },
    "clicks": {
        "event_id": '"e-1"',
        "event_type": '"click"',
        "occurred_at": AT,
        "session_id": '"s-1"',
        "user_id": '"u-1"',
        "url": '"https://shop.example/p/1"',
    },
    "logs": {
        "event_id": '"e-1"',
        "event_type": '"log"',
        "occurred_at": AT,
        "service": '"checkout"',
        "level": '"INFO"',
        "message": '"ok"',
        "attributes": '{"k":"v"}',
    },
}
NESTED_DEFAULTS = {"QUANTITY": "2", "UNIT_PRICE": '"19.99"'}
STAMP = datetime(2026, 11, 28, 14, 3, 11, 123000, tzinfo=UTC)
REFUSED_TIMESTAMPS = [
    ('"1764331200"', "Unix time in a string"),
    ("1764331200", "Unix time as a number"),
    ('"2026-11-28"', "a date alone"),
    ('"2026-11-28T14:03:11"', "no offset"),
    ('"2026-11-28 14:03:11Z"', "a space for T"),
    ('"2026-11-28T14:03Z"', "no seconds"),
    ('"2026-11-28T14:03:11+0100"', "an offset without colon"),
    ('"2026-11-28T14:03:11.1234567Z"', "a digit past microseconds"),
    ('"2026-02-30T14:03:11Z"', "an impossible date"),
]
ACCEPTED_TIMESTAMPS = [
    (AT, STAMP),
    ('"2026-11-28t14:03:11.123z"', STAMP),
    ('"2026-11-28T15:03:11.123+01:00"', STAMP),
    ('"2026-11-28T14:03:11.1230000Z"', STAMP),  # zeros past microseconds: nothing cut
]

# (stream, field, JSON text, expected): expected is ("row", column, value) or
# ("dead", error class). ``field`` may be QUANTITY / UNIT_PRICE (inside items)
# or an unknown field, added to the event.
Row = tuple[str, str, str, tuple[Any, ...]]


def every_stream(field: str, text: str, expected: tuple[Any, ...]) -> list[Row]:
    return [(stream, field, text, expected) for stream in STREAMS]


EXACT = "12345678901234.5678"  # 18 digits: a binary float would make it ...4.568
LARGEST = "99999999999999.9999"
TS = "occurred_at"
TABLE: list[Row] = [
    *[r for t, v in ACCEPTED_TIMESTAMPS for r in every_stream(TS, t, ("row", TS, v))],
    *[r for t, _ in REFUSED_TIMESTAMPS for r in every_stream(TS, t, ("dead", "BadTimestamp"))],
    # Integers: JSON integers only.
    ("orders", "QUANTITY", "3", ("row", "quantity", 3)),
    ("orders", "QUANTITY", "true", ("dead", "WrongType")),
    ("orders", "QUANTITY", '"1"', ("dead", "WrongType")),
    ("orders", "QUANTITY", "1.0", ("dead", "WrongType")),
    ("orders", "QUANTITY", "1e0", ("dead", "WrongType")),
    ("orders", "QUANTITY", "18446744073709551616", ("dead", "OutOfRange")),
    # Money: a JSON string or number, exact, within decimal(18, 4), never rounded.
    ("orders", "total_amount", '"12.50"', ("row", "total_amount", Decimal("12.5"))),
    ("orders", "total_amount", "12.5", ("row", "total_amount", Decimal("12.5"))),
    ("orders", "total_amount", "7", ("row", "total_amount", Decimal(7))),
    ("orders", "total_amount", "1e2", ("row", "total_amount", Decimal(100))),
    ("orders", "total_amount", EXACT, ("row", "total_amount", Decimal(EXACT))),
    ("orders", "total_amount", LARGEST, ("row", "total_amount", Decimal(LARGEST))),
    ("orders", "total_amount", "12345678901234.56789", ("dead", "OutOfRange")),
    ("orders", "total_amount", '"12345678901234.56789"', ("dead", "OutOfRange")),
    ("orders", "total_amount", "1.23456", ("dead", "OutOfRange")),
    ("orders", "total_amount", "100000000000000", ("dead", "OutOfRange")),
    ("orders", "total_amount", "-1", ("dead", "OutOfRange")),
    ("orders", "total_amount", '"NaN"', ("dead", "OutOfRange")),
    ("orders", "total_amount", "NaN", ("dead", "InvalidJson")),
    ("orders", "total_amount", "true", ("dead", "WrongType")),
    ("orders", "UNIT_PRICE", "0.1", ("row", "unit_price", Decimal("0.1"))),
    ("orders", "UNIT_PRICE", "1234567890123.45678", ("dead", "OutOfRange")),
    # Strings: JSON strings only.
    ("orders", "order_id", "1", ("dead", "WrongType")),
    ("clicks", "url", "1", ("dead", "WrongType")),
    ("clicks", "user_id", "null", ("row", "user_id", None)),
    ("clicks", "user_id", "false", ("dead", "WrongType")),
    ("logs", "attributes", '{"k":1}', ("dead", "WrongType")),
    ("logs", "message", "1.5", ("dead", "WrongType")),
    # Unknown fields: kept exactly as sent, or refused when they are not JSON.
    *every_stream("note", str(2**64), ("row", "_extra", f'{{"note":{2**64}}}')),
    *every_stream("note", "1.50", ("row", "_extra", '{"note":1.50}')),
    *every_stream("note", "1e400", ("row", "_extra", '{"note":1E+400}')),
    *every_stream("note", "NaN", ("dead", "InvalidJson")),
    *every_stream("note", "-Infinity", ("dead", "InvalidJson")),
]  # fmt: skip


def record(stream: str, field: str, text: str) -> bytes:
    fields = dict(BASES[stream])
    nested = dict(NESTED_DEFAULTS)
    if field in nested:
        nested[field] = text
    else:
        fields[field] = text
    body = "{" + ",".join(f'"{name}":{value}' for name, value in fields.items()) + "}"
    for marker, value in nested.items():
        body = body.replace(marker, value)
    return body.encode()


def batch_of(values: list[bytes]) -> ClosedBatch:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    count = len(values)
    chunk = RecordChunk("t", 0, list(range(count)), [None] * count, list(values), [None] * count)
    return ClosedBatch(chunk, "end", now, now, sum(map(len, values)))


def column_value(result: ValidatedBatch, column: str) -> Any:
    (row,) = result.table.to_pylist()
    if column in ("quantity", "unit_price"):
        (item,) = row["items"]
        return item[column]
    return row[column]


@pytest.mark.parametrize(("stream", "field", "text", "expected"), TABLE)
def test_every_path_gives_the_tabled_answer(
    stream: str, field: str, text: str, expected: tuple[Any, ...]
) -> None:
    schema = STREAMS[stream]
    value = record(stream, field, text)
    valid = record(stream, "event_id", '"e-0"')  # a clean record beside it: a mixed slice
    results = {
        "columnar": validate_batch(schema, batch_of([valid, value])),
        "pydantic": validate_batch(schema, batch_of([valid, value]), fast_path=False),
        # Alone, the hostile record is the whole slice each path sees.
        "alone": validate_batch(schema, batch_of([value])),
        "alone pydantic": validate_batch(schema, batch_of([value]), fast_path=False),
    }
    for path, result in results.items():
        if len(result.table) + len(result.dead_letters) == 2:  # drop the clean record
            assert result.table.column("event_id").to_pylist()[0] == "e-0", path
            result = ValidatedBatch(
                result.stream, result.batch, result.table.slice(1), result.dead_letters
            )
        if expected[0] == "row":
            assert result.dead_letters == [], (path, result.dead_letters)
            got = column_value(result, expected[1])
            assert got == expected[2] and type(got) is type(expected[2]), (path, got)
            if isinstance(got, Decimal):
                assert str(got.normalize()) == str(expected[2].normalize()), path
        else:
            assert result.table.num_rows == 0, (path, result.table.to_pylist())
            (letter,) = result.dead_letters
            assert letter.error_class == expected[1], (path, letter.error_message)
            if expected[1] not in ("InvalidJson",):
                name = field.lower() if field.isupper() else field
                assert name in letter.error_message, (path, letter.error_message)


def test_money_is_refused_naming_the_field_not_rounded() -> None:
    value = record("orders", "total_amount", "12345678901234.56789")
    for fast in (True, False):
        result = validate_batch(ORDERS, batch_of([value]), fast_path=fast)
        assert result.table.num_rows == 0
        (letter,) = result.dead_letters
        assert letter.error_class == "OutOfRange"
        assert "total_amount" in letter.error_message


def test_nan_in_an_unknown_field_is_refused_never_made_null() -> None:
    for schema in (ORDERS, CLICKS, LOGS):
        value = record(schema.name, "note", "NaN")
        for fast in (True, False):
            result = validate_batch(schema, batch_of([value]), fast_path=fast)
            assert result.table.num_rows == 0
            (letter,) = result.dead_letters
            assert letter.error_class == "InvalidJson"
            assert "NaN" in letter.error_message


def _fields(model: type[BaseModel]) -> list[tuple[str, Any, list[Any]]]:
    found = []
    for name, info in model.model_fields.items():
        annotation, metadata, _ = unwrap(info.annotation, list(info.metadata))
        found.append((f"{model.__name__}.{name}", annotation, metadata))
        inner = get_args(annotation) if get_origin(annotation) in (list, dict) else ()
        for item in inner:
            item_type, _, _ = unwrap(item, [])
            if isinstance(item_type, type) and issubclass(item_type, BaseModel):
                found += _fields(item_type)
    return found


@pytest.mark.parametrize("schema", list(STREAMS.values()), ids=list(STREAMS))
def test_every_model_field_is_one_of_the_exact_types(schema: StreamSchema) -> None:
    """The class, not the examples: any int is strict, any datetime RFC 3339 text only,
    any decimal Money. A field added later without them fails here."""
    for model in union_members(schema.event_model):
        for where, annotation, metadata in _fields(model):
            if annotation is int:
                assert any(getattr(m, "strict", False) for m in metadata), where
            elif annotation is AwareDatetime:
                assert any(isinstance(m, Rfc3339Text) for m in metadata), where
            elif annotation is Decimal:
                assert any(isinstance(m, annotated_types.Ge) for m in metadata), where
                assert any(getattr(m, "decimal_places", None) == 4 for m in metadata), where
            else:
                nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
                kinds = (list, dict, Literal)
                assert annotation is str or nested or get_origin(annotation) in kinds, where
