"""Validation: raw Kafka records to typed Arrow rows plus dead letters.

Every record ends up in exactly one of the two outputs. A record is refused
with an error class a person can act on (``InvalidJson``, ``NotUtf8``,
``MissingField``, ``WrongType``, ``BadTimestamp``, ``UnknownEventType``,
``OutOfRange``, ``EmptyValue``, ``NotAnObject``, ``RecordTooLarge``) and
pydantic's message.

pydantic defines what is valid; three paths give its verdict, fastest first:

1. columnar (``flows.columnar_validation``): Arrow parses a whole slice once
   and every rule of the models is checked on whole columns; the records a
   check refuses go to pydantic one by one;
2. per record (``flows.record_validation``), when Arrow refuses a slice as a
   whole (an unknown field, say): a msgspec prevalidator, then Arrow's reader
   on the records it accepts;
3. pydantic for every record of the slice, when Arrow and pydantic disagree.

Property tests hold the fast paths to the third: same rows, same dead letters.

No single record can stop a partition: when a path raises on a slice (an
input no path foresaw), the next path takes the slice, and the last one
validates it record by record; a record on which even that raises becomes an
``Unprocessable`` dead letter naming the exception (stage ``encode`` when its
columns could not be built).
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from connectors.records import BatchRange, ClosedBatch, ValidatedBatch
from events.stream import StreamSchema
from flows.columnar_validation import validate_columnar
from flows.record_validation import (
    VALIDATION_STAGE,
    classify_error,
    event_schema,
    unprocessable,
    validate_records,
    value_digest,
)
from flows.slices import NO_INTS, Slice, joined_extras
from foundation.gc_pause import gc_paused

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "ENCODE_STAGE",
    "VALIDATION_STAGE",
    "classify_error",
    "validate_batch",
    "value_digest",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
ENCODE_STAGE = "encode"
_SLICE_RECORDS = 8192
_COLUMNAR_SLICE_RECORDS = 65536


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
    parts: list[Slice] = []
    # Slices bound the Python objects alive at once (a 10 MB batch is ~40k
    # records); each slice becomes Arrow columns and its objects are freed. The
    # columnar path makes few Python objects and Arrow parses large slices faster.
    columnar = fast_path and stream.columnar is not None
    size = _COLUMNAR_SLICE_RECORDS if columnar else _SLICE_RECORDS
    with gc_paused():
        for start in range(0, len(records.values), size):
            stop = min(start + size, len(records.values))
            part = _columnar(stream, batch, start, stop, max_record_bytes) if columnar else None
            if part is not None:
                parts.append(part)
                continue
            for begin in range(start, stop, _SLICE_RECORDS):
                indices = range(begin, min(begin + _SLICE_RECORDS, stop))
                parts += _per_record(stream, batch, indices, max_record_bytes, fast_path)
    columns = (
        pa.concat_tables([part.columns for part in parts])
        if parts
        else event_schema(stream).empty_table()
    )
    table = _with_lineage(
        stream,
        columns,
        joined_extras(parts),
        np.concatenate([part.digests for part in parts]) if parts else NO_INTS,
        records.topic,
        records.partition,
        np.concatenate([part.offsets for part in parts]) if parts else NO_INTS,
    )
    letters = [letter for part in parts for letter in part.dead_letters]
    return ValidatedBatch(
        stream=stream.name, batch=BatchRange.of(batch), table=table, dead_letters=letters
    )


def _columnar(
    stream: StreamSchema, batch: ClosedBatch, start: int, stop: int, max_record_bytes: int
) -> Slice | None:
    """The columnar path; None (the per-record path decides) also when it raises."""
    try:
        return validate_columnar(stream, batch, start, stop, max_record_bytes)
    except Exception:  # the per-record path isolates the record
        log.warning("columnar validation failed; validating record by record", exc_info=True)
        return None


def _per_record(
    stream: StreamSchema,
    batch: ClosedBatch,
    indices: range,
    max_record_bytes: int,
    fast_path: bool,
) -> list[Slice]:
    """The per-record paths on ``indices``: fast, then pydantic, then one record at a time."""
    found = None
    try:
        if fast_path:
            found = validate_records(stream, batch, indices, max_record_bytes, fast=True)
        if found is None:
            found = validate_records(stream, batch, indices, max_record_bytes, fast=False)
    except Exception:  # isolate the record that raised
        log.warning("validating a slice failed; validating record by record", exc_info=True)
    if found is not None:
        return [found]
    return [_alone(stream, batch, index, max_record_bytes) for index in indices]


def _alone(stream: StreamSchema, batch: ClosedBatch, index: int, max_record_bytes: int) -> Slice:
    """Record ``index`` validated on its own; an ``Unprocessable`` letter if that raises."""
    try:
        found = validate_records(stream, batch, [index], max_record_bytes, fast=False)
    except Exception as exc:  # one record never stops a partition
        letter = unprocessable(batch, index, exc, ENCODE_STAGE)
        return Slice(event_schema(stream).empty_table(), NO_INTS, None, NO_INTS, [letter])
    assert found is not None  # the pydantic path always yields a slice
    return found


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
