"""Columnar validation of a slice: Arrow parses it once, ``events.columnar`` checks it.

Rows the checks accept keep Arrow's columns; every other record goes through
pydantic one by one (``flows.record_validation``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from events.stream import StreamSchema
from flows.record_validation import validate_records, value_digests
from flows.records import ClosedBatch
from flows.slices import Slice, merged

__all__ = ["validate_columnar"]

_NO_TEXT = pa.array([], type=pa.large_string())


def validate_columnar(
    stream: StreamSchema, batch: ClosedBatch, start: int, stop: int, max_record_bytes: int
) -> Slice | None:
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
    if lines is None or not lines.values:
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
    digests = value_digests(lines.values)
    everything = bool(accepted_rows.all())
    part = Slice(
        columns if everything else columns.filter(pa.array(accepted_rows)),
        np.asarray(records.offsets[start:stop], dtype=np.int64)[fast_positions],
        None,
        digests[accepted_rows],
        [],
    )
    if len(fast_positions) == stop - start:
        return part
    refused = np.ones(stop - start, dtype=bool)
    refused[fast_positions] = False
    rest = (np.flatnonzero(refused) + start).tolist()
    slow = validate_records(stream, batch, rest, max_record_bytes, fast=False)
    assert slow is not None  # the pydantic path always yields a slice
    return merged(part, slow)


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
