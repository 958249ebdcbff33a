"""Validation: raw Kafka records to typed Arrow rows plus dead letters.

Every record ends up in exactly one of the two outputs. A record is refused
with an error class a person can act on (``InvalidJson``, ``NotUtf8``,
``MissingField``, ``WrongType``, ``BadTimestamp``, ``UnknownEventType``,
``OutOfRange``, ``EmptyValue``, ``NotAnObject``, ``RecordTooLarge``) and
pydantic's message.
"""

from __future__ import annotations

import gc
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from pydantic import BaseModel, ValidationError

from events.stream import StreamSchema
from flows.records import ClosedBatch, DeadLetter, ValidatedBatch

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "VALIDATION_STAGE",
    "classify_error",
    "validate_batch",
    "value_digest",
]

VALIDATION_STAGE = "validate"
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
_SLICE_RECORDS = 4096

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


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a batch builds tens of thousands of objects.

    Every container allocated counts towards a collection, and each full
    collection walks the whole heap: on a 10 MB batch that tripled the cost of
    validation. Nothing built here is cyclic, so reference counting frees it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def validate_batch(
    stream: StreamSchema, batch: ClosedBatch, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> ValidatedBatch:
    """Validate every record of ``batch`` against ``stream``'s event models.

    Returns a :class:`ValidatedBatch` whose table has one row per valid record,
    in offset order, with lineage and partition columns; every other record is
    a :class:`DeadLetter` carrying the original key, value and headers.
    """
    records = batch.records
    offsets: list[int] = []
    extras: list[str | None] = []
    digests: list[int] = []
    dead_letters: list[DeadLetter] = []
    slices: list[pa.Table] = []
    # Slices bound the models alive at once (a 10 MB batch is ~40k models,
    # ~100 MB of Python objects); each slice becomes Arrow columns and is freed.
    with _gc_paused():
        for start in range(0, len(records.values), _SLICE_RECORDS):
            stop = min(start + _SLICE_RECORDS, len(records.values))
            slices.append(
                _validate_slice(
                    stream,
                    batch,
                    start,
                    stop,
                    max_record_bytes,
                    _Collected(offsets, extras, digests, dead_letters),
                )
            )
    event_columns = pa.concat_tables(slices) if slices else _event_schema(stream).empty_table()
    table = _with_lineage(
        stream, event_columns, extras, digests, records.topic, records.partition, offsets
    )
    return ValidatedBatch(stream=stream.name, batch=batch, table=table, dead_letters=dead_letters)


def _validate_slice(
    stream: StreamSchema,
    batch: ClosedBatch,
    start: int,
    stop: int,
    max_record_bytes: int,
    collected: _Collected,
) -> pa.Table:
    """Records ``[start, stop)``: event columns returned, the rest appended to ``collected``."""
    offsets, extras, dead_letters = collected.offsets, collected.extras, collected.dead_letters
    records = batch.records
    validate_json = stream.adapter.validate_json
    column_names = set(stream.event_column_names)
    events: list[BaseModel] = []
    valid_values: list[bytes] = []
    extras_shadow_columns = False
    for index in range(start, stop):
        value = records.values[index]
        if value is None:
            dead_letters.append(
                _dead_letter(batch, index, "EmptyValue", "record has no value (tombstone)")
            )
            continue
        if len(value) > max_record_bytes:
            message = f"value is {len(value)} bytes, over the limit of {max_record_bytes}"
            dead_letters.append(_dead_letter(batch, index, "RecordTooLarge", message))
            continue
        try:
            event = validate_json(value)
        except ValidationError as exc:
            error_class, message = classify_error(exc, value)
            dead_letters.append(_dead_letter(batch, index, error_class, message))
            continue
        events.append(event)
        valid_values.append(value)
        offsets.append(records.offsets[index])
        collected.digests.append(value_digest(value))
        extra = event.__pydantic_extra__
        if extra:
            extras.append(orjson.dumps(extra).decode())
            extras_shadow_columns = extras_shadow_columns or not column_names.isdisjoint(extra)
        else:
            extras.append(None)
    columns = None
    if not extras_shadow_columns:
        columns = _columns_from_json(stream, valid_values, events)
    if columns is None:
        columns = _columns_from_models(stream, events)
    return columns


@dataclass(frozen=True, slots=True)
class _Collected:
    """Per-record outputs of a batch, filled slice by slice, row for row."""

    offsets: list[int]
    extras: list[str | None]
    digests: list[int]
    dead_letters: list[DeadLetter]


def value_digest(value: bytes) -> int:
    """A stable 64-bit fingerprint of a record's raw value (tells re-sends from conflicts)."""
    return int.from_bytes(blake2b(value, digest_size=8).digest(), "little", signed=True)


def _event_schema(stream: StreamSchema) -> pa.Schema:
    return pa.schema([stream.table_schema.field(name) for name in stream.event_column_names])


def _columns_from_json(
    stream: StreamSchema, values: list[bytes], events: list[BaseModel]
) -> pa.Table | None:
    """Fast path: Arrow's JSON reader on the original bytes of the valid records.

    Every value was already accepted by pydantic, so it is one JSON object and
    a raw CR or LF in it can only be whitespace: blanking them keeps it one
    line. Where Arrow reads a value differently from pydantic's lax rules
    (``"2"`` for an int, 7 fractional digits, a duplicate key, ...) it fails,
    and the caller builds the columns from the models instead. The event ids
    are compared row for row, so a misaligned result can never pass.
    """
    if not values or not stream.arrow_json_readable:
        return None
    lines = [
        v.replace(b"\n", b" ").replace(b"\r", b" ") if b"\n" in v or b"\r" in v else v
        for v in values
    ]
    largest = max(map(len, lines))
    try:
        table = pj.read_json(
            io.BytesIO(b"\n".join(lines)),
            read_options=pj.ReadOptions(block_size=max(1 << 20, 2 * largest + 2)),
            parse_options=stream.json_parse_options,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(events):
        return None
    event_ids = table.column("event_id").to_pylist()
    if any(a != b.__dict__["event_id"] for a, b in zip(event_ids, events, strict=True)):
        return None
    return table.select(stream.event_column_names).combine_chunks()


def _columns_from_models(stream: StreamSchema, events: list[BaseModel]) -> pa.Table:
    """Slow path: columns from the validated models, one event type at a time."""
    schema = _event_schema(stream)
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


def _with_lineage(
    stream: StreamSchema,
    columns: pa.Table,
    extras: list[str | None],
    digests: list[int],
    topic: str,
    partition: int,
    offsets: list[int],
) -> pa.Table:
    """Event columns plus ``_extra``, lineage and hive partition columns."""
    rows = len(offsets)
    arrays = {name: columns.column(name) for name in columns.column_names}
    arrays["_extra"] = pa.array(extras, type=pa.string())
    arrays["_value_digest"] = pa.array(digests, type=pa.int64())
    arrays["_topic"] = pa.array([topic] * rows, type=pa.string())
    arrays["_partition"] = pa.array([partition] * rows, type=pa.int32())
    arrays["_offset"] = pa.array(offsets, type=pa.int64())
    # Partition values come from the validated timestamp only, never from event
    # strings, so no event can steer where a file is written.
    occurred = columns.column("occurred_at")
    arrays["event_date"] = pc.cast(pc.cast(occurred, pa.date32()), pa.string())
    arrays["event_hour"] = pc.utf8_lpad(pc.cast(pc.hour(occurred), pa.string()), 2, "0")
    return pa.table(
        [arrays[name] for name in stream.table_schema.names], schema=stream.table_schema
    )


def _dead_letter(batch: ClosedBatch, index: int, error_class: str, message: str) -> DeadLetter:
    records = batch.records
    return DeadLetter(
        key=records.keys[index],
        value=records.values[index],
        headers=records.headers[index],
        offset=records.offsets[index],
        stage=VALIDATION_STAGE,
        error_class=error_class,
        error_message=message[:1000],
    )
