"""Columnar validation of a slice: Arrow parses it once, ``events.columnar`` checks it.

Rows the checks accept keep Arrow's columns; every other record goes through
pydantic one by one (``flows.record_validation``).
"""

from __future__ import annotations

import ctypes
import io
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from connectors.records import ClosedBatch, byte_lengths
from events.stream import StreamSchema
from flows.record_validation import validate_records, value_digests
from flows.slices import Slice, merged
from foundation.libc import libc_function

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
    starts with ``{``, so it yields at least one row (or an error), and the row
    count must equal the line count.
    """
    assert stream.columnar is not None
    records = batch.records
    values = records.values[start:stop]
    # Every record as one line first; when Arrow disagrees about the lines (a
    # record with a line break inside), only the records that can be lines.
    lines = _all_lines(values, max_record_bytes)
    table = _parse(stream, lines) if lines is not None else None
    if table is None:
        lines = _eligible_lines(values, max_record_bytes)
        if lines is None or not lines.values:
            return None
        table = _parse(stream, lines)
        if table is None:
            return None
    assert lines is not None
    may_hold_nulls = _contains(lines.joined, b"null")
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

    def largest(self) -> int:
        """Bytes of the longest line (its line break included)."""
        return int(np.diff(self._offsets).max()) if len(self.values) else 0

    def text(self) -> pa.Array:
        """Each line as a string (with its line break), sharing ``joined``'s memory."""
        buffers = [None, pa.py_buffer(self._offsets), pa.py_buffer(self.joined)]
        return pa.Array.from_buffers(pa.large_string(), len(self.values), buffers)


def _parse(stream: StreamSchema, lines: _ArrowLines) -> pa.Table | None:
    """Arrow's table of ``lines``: None if Arrow refuses them or finds another row count.

    Each line starts with ``{``, so it yields at least one row or an error;
    as many rows as lines means one row per line.
    """
    assert stream.columnar is not None
    try:
        table = pj.read_json(
            io.BytesIO(lines.joined),
            read_options=pj.ReadOptions(block_size=max(1 << 20, 2 * lines.largest() + 2)),
            parse_options=stream.columnar.parse_options,
        )
        # The reader does not check UTF-8; a string column with invalid bytes
        # fails here and the per-record path names the record.
        table.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == len(lines.values) else None


def _all_lines(values: list[bytes | None], max_record_bytes: int) -> _ArrowLines | None:
    """Every record as one line, if each is a value starting with ``{``, without
    CR and within the size limit; else None.

    A record with a line break inside is not looked for (a scan of the whole
    window under the GIL): Arrow then reads more lines than records, or fails,
    and :func:`_parse` says so. A record that is an object followed by blank
    lines reads as one row, as pydantic reads it.
    """
    count = len(values)
    if not count or None in values:
        return None
    clean = cast(list[bytes], values)
    sizes = byte_lengths(values)
    if int(sizes.max()) > max_record_bytes:
        return None
    joined = b"\n".join(clean)
    if b"\r" in joined:
        return None
    every = _lines(np.arange(count), clean, joined, sizes)
    return every if pc.all(pc.starts_with(every.text(), "{")).as_py() else None


def _eligible_lines(values: list[bytes | None], max_record_bytes: int) -> _ArrowLines | None:
    """The records that can be one line each: a value, starting with ``{``,
    without CR or LF, within the size limit. None when UTF-8 is invalid."""
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
    return _lines(positions, lines, b"\n".join(lines), byte_lengths(lines))


def _lines(
    positions: npt.NDArray[np.intp],
    values: list[bytes],
    joined: bytes,
    sizes: npt.NDArray[np.int64],
) -> _ArrowLines:
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(sizes + 1, out=offsets[1:])
    offsets[-1] = len(joined)  # the last line has no line break
    return _ArrowLines(positions, values, joined, offsets)


_MEMMEM = libc_function(
    "memmem", (ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t), ctypes.c_void_p
)


def _contains(haystack: bytes, needle: bytes) -> bool:
    """``needle in haystack``, for a window of text: 2.5 times faster and without
    holding the GIL (the other stages' threads run meanwhile)."""
    if _MEMMEM is None or not needle:
        return needle in haystack
    return _MEMMEM(haystack, len(haystack), needle, len(needle)) is not None
