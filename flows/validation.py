"""Validation: raw Kafka records to typed Arrow rows plus dead letters.

Every record ends up in exactly one of the two outputs. A record is refused
with an error class a person can act on (``InvalidJson``, ``NotUtf8``,
``MissingField``, ``WrongType``, ``BadTimestamp``, ``UnknownEventType``,
``OutOfRange``, ``EmptyValue``, ``NotAnObject``) and pydantic's message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ValidationError

from events.stream import StreamSchema
from flows.records import ClosedBatch, DeadLetter, ValidatedBatch

__all__ = ["VALIDATION_STAGE", "classify_error", "validate_batch"]

VALIDATION_STAGE = "validate"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

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


def _row_value(value: Any) -> Any:
    """A model attribute as Arrow wants it: nested models become dicts."""
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return [item.__dict__ for item in value]
    if isinstance(value, BaseModel):
        return value.__dict__
    return value


def validate_batch(stream: StreamSchema, batch: ClosedBatch) -> ValidatedBatch:
    """Validate every record of ``batch`` against ``stream``'s event models.

    Returns a :class:`ValidatedBatch` whose table has one row per valid record,
    in offset order, with lineage and partition columns; every other record is
    a :class:`DeadLetter` carrying the original key, value and headers.
    """
    records = batch.records
    adapter = stream.adapter
    names = stream.event_column_names
    columns: dict[str, list[Any]] = {name: [] for name in names}
    extras: list[str | None] = []
    offsets: list[int] = []
    event_ids: list[str] = []
    dead_letters: list[DeadLetter] = []
    for index, value in enumerate(records.values):
        if value is None:
            dead_letters.append(
                _dead_letter(batch, index, "EmptyValue", "record has no value (tombstone)")
            )
            continue
        try:
            event = adapter.validate_json(value)
        except ValidationError as exc:
            error_class, message = classify_error(exc, value)
            dead_letters.append(_dead_letter(batch, index, error_class, message))
            continue
        attributes = event.__dict__
        for name in names:
            columns[name].append(_row_value(attributes.get(name)))
        extra = event.model_extra
        extras.append(orjson.dumps(extra).decode() if extra else None)
        offsets.append(records.offsets[index])
        event_ids.append(event.event_id)
    table = _to_table(stream, columns, extras, records.topic, records.partition, offsets)
    occurred = table.column("occurred_at").cast(pa.int64()).to_pylist()
    return ValidatedBatch(
        stream=stream.name,
        batch=batch,
        table=table,
        event_ids=event_ids,
        occurred_at_us=occurred,
        dead_letters=dead_letters,
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


def _to_table(
    stream: StreamSchema,
    columns: dict[str, list[Any]],
    extras: list[str | None],
    topic: str,
    partition: int,
    offsets: Sequence[int],
) -> pa.Table:
    schema = stream.table_schema
    arrays: dict[str, pa.Array] = {
        name: pa.array(values, type=schema.field(name).type) for name, values in columns.items()
    }
    rows = len(offsets)
    arrays["_extra"] = pa.array(extras, type=pa.string())
    arrays["_topic"] = pa.array([topic] * rows, type=pa.string())
    arrays["_partition"] = pa.array([partition] * rows, type=pa.int32())
    arrays["_offset"] = pa.array(offsets, type=pa.int64())
    occurred = arrays["occurred_at"]
    # Partition values come from the validated timestamp only, never from event
    # strings, so no event can steer where a file is written.
    arrays["event_date"] = pc.strftime(occurred, format="%Y-%m-%d")
    arrays["event_hour"] = pc.strftime(occurred, format="%H")
    return pa.table([arrays[name] for name in schema.names], schema=schema)
