"""Per-record validation: pydantic's verdict and message for each record.

The path for what the columnar checks leave (see ``flows.columnar_validation``)
and for streams without a columnar path. ``fast``: records the msgspec
prevalidator accepts skip pydantic and their columns come from Arrow's JSON
reader; otherwise pydantic validates every record and builds the columns.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import xxhash
from pydantic import BaseModel, ValidationError

from connectors.records import ClosedBatch, DeadLetter
from events.stream import StreamSchema
from flows.slices import Slice

__all__ = [
    "VALIDATION_STAGE",
    "InvalidRecord",
    "classify_error",
    "dead_letter",
    "decode_exactly",
    "event_schema",
    "unprocessable",
    "validate_records",
    "value_digest",
    "value_digests",
]

VALIDATION_STAGE = "validate"

_ERROR_CLASSES: dict[str, str] = {
    "missing": "MissingField",
    "union_tag_not_found": "MissingField",
    "union_tag_invalid": "UnknownEventType",
    "model_type": "NotAnObject",
    "model_attributes_type": "NotAnObject",
    "dict_type": "NotAnObject",
    "extra_forbidden": "UnexpectedField",
}
_TIMESTAMP_ERRORS = ("datetime", "timezone", "date_")
_RANGE_ERRORS = (
    "greater_than",
    "less_than",
    "too_short",
    "too_long",
    "string_too",
    "decimal_max",
    "decimal_whole",
    "finite_number",
    "string_pattern_mismatch",
    "literal_error",
)


# Exact JSON: every number with a fraction or an exponent becomes a Decimal of its
# very text (never a binary float), integers of any size stay ints, and NaN,
# Infinity and lone surrogates are refused (they are not JSON).
_EXACT_JSON = msgspec.json.Decoder(float_hook=Decimal)
# Extra fields as JSON again, numbers as they were sent (1.50 stays 1.50, 2**70 exact).
_EXTRA_JSON = msgspec.json.Encoder(decimal_format="number")


def decode_exactly(value: bytes) -> Any:
    """``value`` as Python objects, numbers exact; raises :class:`InvalidRecord` if not JSON."""
    try:
        return _EXACT_JSON.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as decode_error:
            raise InvalidRecord("NotUtf8", f"value is not UTF-8: {decode_error}") from None
        hint = ""
        if _NOT_JSON_NUMBERS.search(value):
            hint = " (NaN and Infinity are not JSON numbers)"
        raise InvalidRecord("InvalidJson", f"invalid JSON: {exc}{hint}") from None
    except RecursionError:
        raise InvalidRecord("InvalidJson", "JSON nested too deeply") from None


_NOT_JSON_NUMBERS = re.compile(rb"(?<![\w\"])-?(NaN|Infinity)\b")


def _exact_validator(stream: StreamSchema) -> Callable[[bytes], BaseModel]:
    """pydantic's verdict on a record, every number read exactly from its text.

    For a stream without decimal fields, pydantic's own JSON parser is exact
    on every record it accepts without extra fields (the only place a float, a
    NaN or a big integer could then sit), so those skip the exact decoder.
    """
    adapter = stream.adapter

    def exact(value: bytes) -> BaseModel:
        event: BaseModel = adapter.validate_python(decode_exactly(value))
        return event

    if stream.has_decimals:
        return exact

    def shortcut(value: bytes) -> BaseModel:
        try:
            event: BaseModel = adapter.validate_json(value)
        except ValidationError:
            return exact(value)  # the exact decoder names the error (NaN: InvalidJson)
        return exact(value) if event.__pydantic_extra__ else event

    return shortcut


class InvalidRecord(Exception):
    """A record refused before pydantic saw it: error class and message."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message


def classify_error(exc: ValidationError, value: bytes) -> tuple[str, str]:
    """Error class and message for a refused record, from its first error."""
    first = exc.errors(include_url=False)[0]
    kind = str(first["type"])
    where = ".".join(str(part) for part in first["loc"])
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    if kind == "json_invalid":
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as decode_error:
            return "NotUtf8", f"value is not UTF-8: {decode_error}"
        return "InvalidJson", message
    if kind in _ERROR_CLASSES:
        return _ERROR_CLASSES[kind], message
    if kind.startswith(_TIMESTAMP_ERRORS):
        return "BadTimestamp", message
    if kind.startswith(_RANGE_ERRORS):
        return "OutOfRange", message
    return "WrongType", message


def validate_records(
    stream: StreamSchema,
    batch: ClosedBatch,
    indices: Sequence[int],
    max_record_bytes: int,
    *,
    fast: bool,
) -> Slice | None:
    """Records at ``indices`` (ascending) as event columns plus dead letters.

    ``fast``: records the prevalidator accepts skip pydantic, and columns come
    from Arrow's JSON reader; returns None when Arrow disagrees anywhere in
    the slice (the caller then runs the slice again with ``fast=False``, where
    pydantic validates every record and builds the columns).
    """
    records = batch.records
    prevalidator = stream.prevalidator if fast and stream.arrow_json_readable else None
    validate = _exact_validator(stream)
    column_names = set(stream.event_column_names)
    events: list[BaseModel] = []
    event_ids: list[str] = []
    valid_values: list[bytes] = []
    offsets: list[int] = []
    extras: list[str | None] = []
    digests: list[int] = []
    dead_letters: list[DeadLetter] = []
    extras_shadow_columns = False
    for index in indices:
        value = records.values[index]
        if value is None:
            dead_letters.append(
                dead_letter(batch, index, "EmptyValue", "record has no value (tombstone)")
            )
            continue
        if len(value) > max_record_bytes:
            message = f"value is {len(value)} bytes, over the limit of {max_record_bytes}"
            dead_letters.append(dead_letter(batch, index, "RecordTooLarge", message))
            continue
        event_id = prevalidator.event_id(value) if prevalidator is not None else None
        extra_json = None
        if event_id is None:
            try:
                event = validate(value)
                extra = event.__pydantic_extra__
                extra_json = _EXTRA_JSON.encode(extra).decode() if extra else None
            except InvalidRecord as exc:
                dead_letters.append(dead_letter(batch, index, exc.error_class, exc.message))
                continue
            except ValidationError as exc:
                error_class, message = classify_error(exc, value)
                dead_letters.append(dead_letter(batch, index, error_class, message))
                continue
            except Exception as exc:  # one record never stops a partition
                dead_letters.append(unprocessable(batch, index, exc))
                continue
            events.append(event)
            event_id = event.__dict__["event_id"]
            if extra:
                extras_shadow_columns = extras_shadow_columns or not column_names.isdisjoint(extra)
        valid_values.append(value)
        event_ids.append(event_id)
        offsets.append(records.offsets[index])
        digests.append(value_digest(value))
        extras.append(extra_json)
    columns = None
    if stream.arrow_json_readable and not extras_shadow_columns:
        columns = _columns_from_json(stream, valid_values, event_ids)
    if columns is None:
        if len(events) != len(valid_values):
            return None  # some records skipped pydantic: redo the slice without the fast path
        columns = _columns_from_models(stream, events)
    return Slice(
        columns,
        np.array(offsets, dtype=np.int64),
        extras,
        np.array(digests, dtype=np.int64),
        dead_letters,
    )


_XXH3_64 = xxhash.xxh3_64_intdigest
_TWO_TO_63 = 1 << 63
_TWO_TO_64 = 1 << 64


def value_digest(value: bytes) -> int:
    """A stable 64-bit fingerprint of a record's raw value (tells re-sends from conflicts).

    XXH3-64 (one C call, ~6x cheaper than blake2b here); stable across
    processes and releases, since digests are stored in the lake. Not keyed: it
    only ever compares two values that already share an event id.
    """
    digest = _XXH3_64(value)
    # Signed, for the int64 column.
    return digest - _TWO_TO_64 if digest >= _TWO_TO_63 else digest


def value_digests(values: list[bytes]) -> npt.NDArray[np.int64]:
    """:func:`value_digest` of each of ``values``, by a C-level map (no bytecode per value)."""
    unsigned = np.fromiter(map(_XXH3_64, values), dtype=np.uint64, count=len(values))
    return unsigned.view(np.int64)  # signed, as value_digest


def event_schema(stream: StreamSchema) -> pa.Schema:
    """The event columns of ``stream``'s table (no lineage, no partition columns)."""
    return pa.schema([stream.table_schema.field(name) for name in stream.event_column_names])


def _columns_from_json(
    stream: StreamSchema, values: list[bytes], event_ids: list[str]
) -> pa.Table | None:
    """Arrow's JSON reader on the original bytes of records already found valid.

    Every value is one JSON object, so a raw CR or LF in it can only be
    whitespace: blanking them keeps it one line. Where Arrow reads a value
    differently from pydantic (``"2"`` for an int, 7 fractional digits, a
    duplicate key, money out of range, ...) this returns None and the caller
    builds the columns from pydantic models instead. The event ids are
    compared row for row, so a misaligned result can never pass.
    """
    if not values:
        return None
    text = b"\n".join(values)
    if b"\r" in text or text.count(b"\n") != len(values) - 1:
        # Rare: a raw CR or LF inside a record (whitespace there); blank them first.
        text = b"\n".join(v.replace(b"\n", b" ").replace(b"\r", b" ") for v in values)
    largest = max(map(len, values))
    try:
        table = pj.read_json(
            io.BytesIO(text),
            read_options=pj.ReadOptions(block_size=max(1 << 20, 2 * largest + 2)),
            parse_options=stream.json_parse_options,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(event_ids) or table.column("event_id").to_pylist() != event_ids:
        return None
    table = table.select(stream.event_column_names).combine_chunks()
    return table if _money_in_range(table) and _instants_in_range(table) else None


_FIRST_INSTANT_US = -62135596800 * 1_000_000  # 0001-01-01T00:00:00Z
_END_INSTANT_US = 253402300800 * 1_000_000  # 10000-01-01T00:00:00Z


def _instants_in_range(table: pa.Table) -> bool:
    """Every timestamp's UTC date within years 1..9999, as pydantic requires."""
    for column in table.columns:
        if pa.types.is_timestamp(column.type) and column.null_count < len(column):
            bounds = pc.min_max(column.cast(pa.int64())).as_py()
            if bounds["min"] < _FIRST_INSTANT_US or bounds["max"] >= _END_INSTANT_US:
                return False
    return True


def _money_in_range(table: pa.Table) -> bool:
    """Every decimal (also inside lists of structs) in ``[0, 10**(precision - scale))``.

    Arrow refuses more decimal places than the column's scale by itself, but
    not more whole digits, and it takes signs: the Money rules pydantic checks.
    """
    for column in table.columns:
        for values in _decimal_leaves(column.combine_chunks() if column.num_chunks else column):
            if values.null_count == len(values):
                continue
            bounds = pc.min_max(values).as_py()
            limit = Decimal(10) ** (values.type.precision - values.type.scale)
            if bounds["min"] < 0 or bounds["max"] >= limit:
                return False
    return True


def _decimal_leaves(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    kind = values.type
    if pa.types.is_decimal(kind):
        return [values]
    if pa.types.is_list(kind):
        return _decimal_leaves(pc.list_flatten(values))
    if pa.types.is_struct(kind):
        return [
            leaf
            for index in range(kind.num_fields)
            for leaf in _decimal_leaves(pc.struct_field(values, [index]))
        ]
    return []


def _columns_from_models(stream: StreamSchema, events: list[BaseModel]) -> pa.Table:
    """Slow path: columns from the validated models, one event type at a time."""
    schema = event_schema(stream)
    by_type: dict[type[BaseModel], list[int]] = {}
    for position, event in enumerate(events):
        by_type.setdefault(type(event), []).append(position)
    tables = []
    for model, positions in by_type.items():
        attributes = [events[p].__dict__ for p in positions]
        columns = [
            _column([a[f.name] for a in attributes], f.type)
            if f.name in model.model_fields
            else pa.nulls(len(positions), type=f.type)
            for f in schema
        ]
        columns.append(pa.array(positions, type=pa.int64()))
        tables.append(pa.table(columns, names=[*schema.names, "_position"]))
    if not tables:
        return schema.empty_table()
    table = pa.concat_tables(tables)
    table = table.take(pc.sort_indices(table.column("_position")))
    return table.drop_columns(["_position"]).combine_chunks()


def _list_of_structs(values: Sequence[Any], list_type: pa.ListType) -> pa.Array:
    """Nested models (line items) straight into Arrow children, no dict per item."""
    struct_type = list_type.value_type
    names = [child.name for child in struct_type]
    children: list[list[Any]] = [[] for _ in names]
    offsets = [0]
    missing = []
    count = 0
    for items in values:
        missing.append(items is None)
        for item in items or ():
            attributes = item.__dict__
            for child, name in zip(children, names, strict=True):
                child.append(attributes[name])
            count += 1
        offsets.append(count)
    struct = pa.StructArray.from_arrays(
        [pa.array(child, type=f.type) for child, f in zip(children, struct_type, strict=True)],
        fields=list(struct_type),
    )
    mask = pa.array(missing, type=pa.bool_()) if any(missing) else None
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), struct, mask=mask)


def _column(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    if pa.types.is_map(arrow_type):
        return pa.array([None if v is None else list(v.items()) for v in values], type=arrow_type)
    if pa.types.is_list(arrow_type) and pa.types.is_struct(arrow_type.value_type):
        return _list_of_structs(values, arrow_type)
    return pa.array(values, type=arrow_type)


def dead_letter(
    batch: ClosedBatch,
    index: int,
    error_class: str,
    message: str,
    stage: str = VALIDATION_STAGE,
) -> DeadLetter:
    """Record ``index`` of ``batch``, refused at ``stage``, with its original bytes."""
    records = batch.records
    return DeadLetter(
        key=records.keys[index],
        value=records.values[index],
        headers=records.headers[index],
        offset=records.offsets[index],
        stage=stage,
        error_class=error_class,
        error_message=message[:1000],
    )


def unprocessable(
    batch: ClosedBatch, index: int, exc: BaseException, stage: str = VALIDATION_STAGE
) -> DeadLetter:
    """Record ``index``, on which processing raised ``exc``: an ``Unprocessable`` letter.

    The last resort that keeps one record from stopping its partition; the
    message names the exception so the cause can be fixed.
    """
    message = f"processing the record failed: {type(exc).__name__}: {exc}"
    return dead_letter(batch, index, "Unprocessable", message, stage)
