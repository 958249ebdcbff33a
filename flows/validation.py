"""Validation: raw Kafka records to typed Arrow rows plus dead letters.

Every record ends up in exactly one of the two outputs. A record is refused
with an error class a person can act on (``InvalidJson``, ``NotUtf8``,
``MissingField``, ``WrongType``, ``BadTimestamp``, ``UnknownEventType``,
``OutOfRange``, ``EmptyValue``, ``NotAnObject``, ``RecordTooLarge``) and
pydantic's message.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import xxhash
from pydantic import BaseModel, ValidationError

from events.stream import StreamSchema
from flows.records import BatchRange, ClosedBatch, DeadLetter, ValidatedBatch
from streambatch.gc_pause import gc_paused

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "VALIDATION_STAGE",
    "classify_error",
    "validate_batch",
    "value_digest",
]

VALIDATION_STAGE = "validate"
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
_SLICE_RECORDS = 8192
_COLUMNAR_SLICE_RECORDS = 65536

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


def validate_batch(
    stream: StreamSchema,
    batch: ClosedBatch,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    *,
    fast_path: bool = True,
) -> ValidatedBatch:
    """Validate every record of ``batch`` against ``stream``'s event models.

    Returns a :class:`ValidatedBatch` whose table has one row per valid record,
    in offset order, with lineage and partition columns; every other record is
    a :class:`DeadLetter` carrying the original key, value and headers. The
    result is the same with ``fast_path`` off (pydantic for every record), only
    slower; property tests hold the two to that.
    """
    records = batch.records
    parts: list[_Slice] = []
    # Slices bound the Python objects alive at once (a 10 MB batch is ~40k
    # records); each slice becomes Arrow columns and its objects are freed. The
    # columnar path makes few Python objects and Arrow parses large slices faster.
    columnar = fast_path and stream.columnar is not None
    size = _COLUMNAR_SLICE_RECORDS if columnar else _SLICE_RECORDS
    with gc_paused():
        for start in range(0, len(records.values), size):
            stop = min(start + size, len(records.values))
            part = (
                _columnar_slice(stream, batch, start, stop, max_record_bytes) if columnar else None
            )
            if part is not None:
                parts.append(part)
                continue
            for begin in range(start, stop, _SLICE_RECORDS):
                indices = range(begin, min(begin + _SLICE_RECORDS, stop))
                found = None
                if fast_path:
                    found = _validate_slice(stream, batch, indices, max_record_bytes, fast=True)
                if found is None:
                    found = _validate_slice(stream, batch, indices, max_record_bytes, fast=False)
                assert found is not None  # the pydantic path always yields a slice
                parts.append(found)
    columns = (
        pa.concat_tables([part.columns for part in parts])
        if parts
        else _event_schema(stream).empty_table()
    )
    table = _with_lineage(
        stream,
        columns,
        _joined_extras(parts),
        np.concatenate([part.digests for part in parts]) if parts else _NO_INTS,
        records.topic,
        records.partition,
        np.concatenate([part.offsets for part in parts]) if parts else _NO_INTS,
    )
    letters = [letter for part in parts for letter in part.dead_letters]
    return ValidatedBatch(
        stream=stream.name, batch=BatchRange.of(batch), table=table, dead_letters=letters
    )


@dataclass(slots=True)
class _Slice:
    """What one slice of a batch produced, row for row (``columns`` in offset order)."""

    columns: pa.Table
    offsets: npt.NDArray[np.int64]
    extras: list[str | None] | None  # None: no row has extra fields
    digests: npt.NDArray[np.int64]
    dead_letters: list[DeadLetter]


_NO_INTS: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
_NO_TEXT = pa.array([], type=pa.large_string())


def _joined_extras(parts: list[_Slice]) -> list[str | None] | None:
    if all(part.extras is None for part in parts):
        return None
    joined: list[str | None] = []
    for part in parts:
        joined.extend(part.extras if part.extras is not None else [None] * len(part.offsets))
    return joined


def _columnar_slice(
    stream: StreamSchema, batch: ClosedBatch, start: int, stop: int, max_record_bytes: int
) -> _Slice | None:
    """Records ``[start, stop)`` parsed once by Arrow and checked column-wise.

    Rows the columnar checks accept (see ``events.columnar``) keep Arrow's
    columns; every other record (tombstone, too large, pretty-printed, or
    refused by a check) goes through pydantic one by one. Returns None when
    Arrow refuses the slice as a whole (an unknown field, invalid UTF-8, a
    JSON type Arrow will not convert): the caller then takes the per-record
    fast path. Rows are aligned by construction: each line handed to Arrow
    starts with ``{`` and has no line break, so it yields at least one row, and
    the row count must equal the line count.
    """
    assert stream.columnar is not None
    records = batch.records
    values = records.values[start:stop]
    lines = _arrow_lines(values, max_record_bytes)
    if lines is None:
        return None
    if not lines.values:
        return None
    largest = max(map(len, lines.values))
    try:
        table = pj.read_json(
            io.BytesIO(lines.joined),
            read_options=pj.ReadOptions(block_size=max(1 << 20, 2 * largest + 2)),
            parse_options=stream.columnar.parse_options,
        )
        # The reader does not check UTF-8; a string column with invalid bytes
        # fails here and the per-record path names the record.
        table.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(lines.values):
        return None
    may_hold_nulls = b"null" in lines.joined
    text = lines.text() if may_hold_nulls else _NO_TEXT
    lines.joined = b""  # parsed: free the copy now (a window's worth) unless text holds it
    accepted_rows, columns = stream.columnar.check(
        table, lambda: text, may_hold_nulls=may_hold_nulls
    )
    fast_positions = lines.positions[accepted_rows]
    digests = np.fromiter(map(_XXH3_64, lines.values), dtype=np.uint64, count=len(lines.values))
    part = _Slice(
        columns.filter(pa.array(accepted_rows)),
        np.asarray(records.offsets[start:stop], dtype=np.int64)[fast_positions],
        None,
        digests[accepted_rows].view(np.int64),  # signed, as value_digest
        [],
    )
    if len(fast_positions) == stop - start:
        return part
    refused = np.ones(stop - start, dtype=bool)
    refused[fast_positions] = False
    rest = (np.flatnonzero(refused) + start).tolist()
    slow = _validate_slice(stream, batch, rest, max_record_bytes, fast=False)
    assert slow is not None  # the pydantic path always yields a slice
    return _merged(part, slow)


def _merged(first: _Slice, second: _Slice) -> _Slice:
    """Two slices of one batch as one, rows and dead letters in offset order."""
    letters = sorted([*first.dead_letters, *second.dead_letters], key=lambda d: d.offset)
    if not len(second.offsets):
        return _Slice(first.columns, first.offsets, first.extras, first.digests, letters)
    if not len(first.offsets):
        return _Slice(second.columns, second.offsets, second.extras, second.digests, letters)
    offsets = np.concatenate([first.offsets, second.offsets])
    order = np.argsort(offsets, kind="stable")
    extras = _joined_extras([first, second])
    columns = pa.concat_tables([first.columns, second.columns]).take(order).combine_chunks()
    return _Slice(
        columns,
        offsets[order],
        None if extras is None else [extras[i] for i in order.tolist()],
        np.concatenate([first.digests, second.digests])[order],
        letters,
    )


@dataclass
class _ArrowLines:
    """The records of a slice handed to Arrow: one line each, by position in the slice."""

    positions: npt.NDArray[np.intp]
    values: list[bytes]
    joined: bytes
    _offsets: npt.NDArray[np.int64]

    def text(self) -> pa.Array:
        """Each line as a string (with its line break), sharing ``joined``'s memory."""
        buffers = [None, pa.py_buffer(self._offsets), pa.py_buffer(self.joined)]
        return pa.Array.from_buffers(pa.large_string(), len(self.values), buffers)


def _arrow_lines(values: list[bytes | None], max_record_bytes: int) -> _ArrowLines | None:
    """The records of ``values`` that can be one line each: a value, starting with
    ``{``, without CR or LF, within the size limit. None when UTF-8 is invalid."""
    count = len(values)
    if count and None not in values:
        clean = cast(list[bytes], values)
        joined = b"\n".join(clean)
        # Every line break is a separator; then each line must start with "{".
        if (
            joined.count(b"\n") == count - 1
            and b"\r" not in joined
            and max(map(len, clean)) <= max_record_bytes
        ):
            every = _lines(np.arange(count), clean, joined)
            if pc.all(pc.starts_with(every.text(), "{")).as_py():
                return every
    raw = pa.array(values, type=pa.binary())
    try:
        text = raw.cast(pa.string())
    except pa.ArrowInvalid:
        return None  # invalid UTF-8 somewhere: the per-record path names the record
    eligible = pc.and_(
        pc.starts_with(text, "{"),
        pc.less_equal(pc.binary_length(raw), pa.scalar(max_record_bytes, pa.int64())),
    )
    eligible = pc.and_(eligible, pc.invert(pc.match_substring_regex(text, "[\r\n]")))
    positions = np.flatnonzero(pc.fill_null(eligible, False).to_numpy(zero_copy_only=False))
    # Eligible values are never None (they start with "{").
    lines = cast(list[bytes], [values[p] for p in positions.tolist()])
    return _lines(positions, lines, b"\n".join(lines))


def _lines(positions: npt.NDArray[np.intp], values: list[bytes], joined: bytes) -> _ArrowLines:
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values)) + 1, out=offsets[1:])
    offsets[-1] = len(joined)  # the last line has no line break
    return _ArrowLines(positions, values, joined, offsets)


def _validate_slice(
    stream: StreamSchema,
    batch: ClosedBatch,
    indices: Sequence[int],
    max_record_bytes: int,
    *,
    fast: bool,
) -> _Slice | None:
    """Records at ``indices`` (ascending) as event columns plus dead letters.

    ``fast``: records the prevalidator accepts skip pydantic, and columns come
    from Arrow's JSON reader; returns None when Arrow disagrees anywhere in
    the slice (the caller then runs the slice again with ``fast=False``, where
    pydantic validates every record and builds the columns).
    """
    records = batch.records
    prevalidator = stream.prevalidator if fast and stream.arrow_json_readable else None
    validate_json = stream.adapter.validate_json
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
                _dead_letter(batch, index, "EmptyValue", "record has no value (tombstone)")
            )
            continue
        if len(value) > max_record_bytes:
            message = f"value is {len(value)} bytes, over the limit of {max_record_bytes}"
            dead_letters.append(_dead_letter(batch, index, "RecordTooLarge", message))
            continue
        event_id = prevalidator.event_id(value) if prevalidator is not None else None
        extra = None
        if event_id is None:
            try:
                event = validate_json(value)
            except ValidationError as exc:
                error_class, message = classify_error(exc, value)
                dead_letters.append(_dead_letter(batch, index, error_class, message))
                continue
            events.append(event)
            event_id = event.__dict__["event_id"]
            extra = event.__pydantic_extra__
        valid_values.append(value)
        event_ids.append(event_id)
        offsets.append(records.offsets[index])
        digests.append(value_digest(value))
        if extra:
            extras.append(orjson.dumps(extra).decode())
            extras_shadow_columns = extras_shadow_columns or not column_names.isdisjoint(extra)
        else:
            extras.append(None)
    columns = None
    if stream.arrow_json_readable and not extras_shadow_columns:
        columns = _columns_from_json(stream, valid_values, event_ids)
    if columns is None:
        if len(events) != len(valid_values):
            return None  # some records skipped pydantic: redo the slice without the fast path
        columns = _columns_from_models(stream, events)
    return _Slice(
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


def _event_schema(stream: StreamSchema) -> pa.Schema:
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
    extras: list[str | None] | None,
    digests: npt.NDArray[np.int64],
    topic: str,
    partition: int,
    offsets: npt.NDArray[np.int64],
) -> pa.Table:
    """Event columns plus ``_extra``, lineage and hive partition columns."""
    rows = len(offsets)
    arrays = {name: columns.column(name) for name in columns.column_names}
    no_extras = extras is None
    arrays["_extra"] = pa.nulls(rows, pa.string()) if no_extras else pa.array(extras, pa.string())
    arrays["_value_digest"] = pa.array(digests, type=pa.int64())
    arrays["_topic"] = pa.repeat(pa.scalar(topic, type=pa.string()), rows)
    arrays["_partition"] = pa.repeat(pa.scalar(partition, type=pa.int32()), rows)
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
