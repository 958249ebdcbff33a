"""Whole-slice validation on Arrow columns, derived from a stream's pydantic models.

The fastest path of ``flows.validation``: a slice of records is parsed once by
Arrow's JSON reader (strict about JSON types: a number is never read as a
string, nor a string as an int), then every rule the pydantic models state is
checked on whole columns: which fields each event type requires and which it
must not have, string lengths and patterns, literals, integer bounds, list
lengths, nested models, money range and places, strict RFC 3339 timestamps
inside years 1..9999 in UTC. A row passes only when every rule holds; every
other row is validated by pydantic, which either accepts it (lax coercions,
extra fields) or says why not. pydantic stays the definition of what is
valid and the author of every error message; this module may only accept a
*subset* of what pydantic accepts, with the same values (property tests hold
it to that).

What the reader cannot tell apart is handled here, not guessed:

* A field of another event type sent as ``null`` reads as a null column, but
  pydantic keeps it as an extra field. Each row's keys of such fields are
  counted in the raw JSON and must equal its non-null columns of them; a
  ``\\u`` escape anywhere in the row also counts, since an escaped key could
  spell a field name.
* Timestamps are read as strings, matched against one RFC 3339 form and cast
  by Arrow, which refuses impossible dates (February 30, hour 24, second 60).

Unsupported annotations make :func:`build_columnar_validator` return None:
that stream then uses the per-record fast path (msgspec) and pydantic.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from pydantic import AwareDatetime, BaseModel, Strict, StringConstraints
from pydantic.fields import FieldInfo

from events.common import MONEY_PRECISION, MONEY_SCALE, Rfc3339Text
from events.model_shapes import EVENT_TYPE, length_bounds, require_money, union_members, unwrap
from events.model_shapes import UnsupportedModel as _Unsupported

__all__ = ["ColumnarValidator", "build_columnar_validator"]


# One RFC 3339 form, a subset of ``events.common.RFC3339_PATTERN``: upper-case
# T and Z, at most microseconds, an offset with a colon under 24 hours.
_RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
_FIRST_INSTANT_US = -62135596800 * 1_000_000  # 0001-01-01T00:00:00Z
_END_INSTANT_US = 253402300800 * 1_000_000  # 10000-01-01T00:00:00Z
# Built once: turning a Python value into an Arrow scalar costs ~0.1 ms per call,
# more than most checks on a whole slice.
_FIRST_INSTANT = pa.scalar(_FIRST_INSTANT_US, type=pa.int64())
_END_INSTANT = pa.scalar(_END_INSTANT_US, type=pa.int64())
_NO_STRING = pa.scalar(None, type=pa.string())


def _int(value: int) -> pa.Scalar:
    return pa.scalar(value, type=pa.int64())


def _bounds_check(minimum: int | None, maximum: int | None) -> RowCheck:
    """Lengths within ``[minimum, maximum]`` (inclusive); a null length passes."""
    lowest, highest = _int(minimum or 0), None if maximum is None else _int(maximum)

    def check(lengths: pa.Array) -> pa.Array:
        ok = pc.fill_null(pc.greater_equal(lengths, lowest), True)
        if highest is not None:
            ok = pc.and_(ok, pc.fill_null(pc.less_equal(lengths, highest), True))
        return ok

    return check


RowCheck = Callable[[pa.Array], pa.Array]
"""Values of one column -> booleans without nulls (a null value passes)."""


@dataclass(frozen=True)
class _FieldRule:
    """One field of one event model: its column, whether it is required, its checks."""

    column: str
    required: bool
    check_key: str
    check: RowCheck | None


@dataclass(frozen=True)
class _ColumnCheck:
    """One distinct check of one column, and which models it applies to (by index)."""

    column: str
    check: RowCheck
    models: np.ndarray  # bool per model index, plus False for the "unknown type" model


@dataclass(frozen=True)
class _ModelRule:
    """One event model: the ``event_type`` values it owns and its field rules."""

    tags: tuple[str, ...]
    fields: tuple[_FieldRule, ...]
    foreign: tuple[str, ...]  # stream columns this model does not have: must be absent


@dataclass(frozen=True)
class ColumnarValidator:
    """Checks a whole slice read by Arrow; see the module docstring.

    ``parse_options`` read the stream's event columns with timestamps as
    strings and fail the slice on any unknown field (pydantic then decides
    record by record).
    """

    parse_options: pj.ParseOptions
    event_schema: pa.Schema
    timestamp_columns: tuple[str, ...]
    tag_values: pa.Array
    model_of_tag: np.ndarray  # per tag (and -1: unknown), the model's index
    required_bits: np.ndarray  # per model: columns that must be present
    allowed_bits: np.ndarray  # per model: columns that may be present
    checks: tuple[_ColumnCheck, ...]
    key_pattern: str | None
    key_columns: tuple[str, ...]

    def check(
        self, table: pa.Table, raw: pa.Array, *, may_hold_nulls: bool
    ) -> tuple[np.ndarray, pa.Table]:
        """Rows pydantic would accept as is, and the event columns in their final types.

        ``raw()`` gives each row's JSON text (same order); ``may_hold_nulls``
        False promises that no row contains the text ``null`` (then no field
        can be an explicit null, and the raw text need not be searched). The
        returned table's values are only meaningful where the mask is true.
        """
        accepted = self._rules_hold(table)
        columns = []
        for name in self.event_schema.names:
            column = table.column(name)  # chunked as read: no copy of the table
            if name in self.timestamp_columns:
                good, column = _parse_timestamps(column)
                accepted &= good.to_numpy(zero_copy_only=False)
            columns.append(column)
        if self.key_pattern is not None and may_hold_nulls:
            accepted &= self._no_null_keys(table, raw())
        return accepted, pa.table(columns, schema=self.event_schema)

    def _rules_hold(self, table: pa.Table) -> np.ndarray:
        """Per row: a known event type, its required fields present, no foreign field, every
        field's constraints. Presence is a bit per column, compared with each model's masks."""
        tags = pc.index_in(table.column(EVENT_TYPE), value_set=self.tag_values)
        tag_index = pc.fill_null(tags, -1).to_numpy(zero_copy_only=False)
        model = self.model_of_tag[tag_index]  # index -1 is the "unknown type" model
        present = np.zeros(len(tag_index), dtype=np.int64)
        for bit, name in enumerate(self.event_schema.names):
            valid = pc.is_valid(table.column(name)).to_numpy(zero_copy_only=False)
            present |= valid.astype(np.int64) << bit
        required = self.required_bits[model]
        accepted: np.ndarray = ((present & required) == required) & (
            (present & ~self.allowed_bits[model]) == 0
        )
        for check in self.checks:
            holds = check.check(table.column(check.column))
            accepted &= holds.to_numpy(zero_copy_only=False) | ~check.models[model]
        return accepted

    def _no_null_keys(self, table: pa.Table, raw: pa.Array) -> np.ndarray:
        """Each row names exactly as many optional-per-type keys as it has non-null values."""
        assert self.key_pattern is not None
        named = pc.fill_null(pc.count_substring_regex(raw, self.key_pattern), -1)
        filled = np.zeros(len(raw), dtype=np.int64)
        for column in self.key_columns:
            filled += pc.is_valid(table.column(column)).to_numpy(zero_copy_only=False)
        result: np.ndarray = named.to_numpy(zero_copy_only=False) == filled
        return result


def _parse_timestamps(strings: pa.Array) -> tuple[pa.Array, pa.Array]:
    """RFC 3339 strings -> (acceptable per row, UTC microsecond timestamps)."""
    target = pa.timestamp("us", tz="UTC")
    good = pc.fill_null(pc.match_substring_regex(strings, _RFC3339), True)
    usable = pc.if_else(good, strings, _NO_STRING)
    try:
        parsed = pc.cast(usable, target)
    except pa.ArrowInvalid:
        # An impossible date somewhere: parse row by row, refusing only those rows.
        parsed = pa.array([_parse_one(value) for value in usable.to_pylist()], type=pa.int64())
        parsed = parsed.cast(target)
    in_range = pc.fill_null(
        pc.and_(
            pc.greater_equal(parsed.cast(pa.int64()), _FIRST_INSTANT),
            pc.less(parsed.cast(pa.int64()), _END_INSTANT),
        ),
        True,
    )
    parsed_where_given = pc.or_(pc.is_null(strings), pc.is_valid(parsed))
    return pc.and_(pc.and_(good, in_range), parsed_where_given), parsed


def _parse_one(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(pa.scalar(value).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).as_py())
    except pa.ArrowInvalid:
        return None


def build_columnar_validator(event_model: Any, event_schema: pa.Schema) -> ColumnarValidator | None:
    """A :class:`ColumnarValidator` for a model or a union discriminated by ``event_type``."""
    try:
        return _build(event_model, event_schema)
    except _Unsupported:
        return None


def _build(event_model: Any, event_schema: pa.Schema) -> ColumnarValidator:
    if EVENT_TYPE not in event_schema.names:
        raise _Unsupported("the schema needs an event_type column")
    timestamps: set[str] = set()
    rules = [_model_rule(m, event_schema, timestamps) for m in union_members(event_model)]
    tags = [tag for rule in rules for tag in rule.tags]
    if len(set(tags)) != len(tags):
        raise _Unsupported("an event_type value owned by two models")
    model_of_tag, required_bits, allowed_bits = _presence_masks(rules, event_schema.names)
    key_columns = tuple(sorted({name for rule in rules for name in rule.foreign}))
    key_pattern = None
    if key_columns:
        names = "|".join(re.escape(name) for name in key_columns)
        key_pattern = rf'"(?:{names})"\s*:|\\u'
    parse_schema = pa.schema(
        [pa.field(f.name, pa.string()) if f.name in timestamps else f for f in event_schema]
    )
    return ColumnarValidator(
        parse_options=pj.ParseOptions(
            explicit_schema=parse_schema, unexpected_field_behavior="error"
        ),
        event_schema=event_schema,
        timestamp_columns=tuple(sorted(timestamps)),
        tag_values=pa.array(tags, type=pa.string()),
        model_of_tag=model_of_tag,
        required_bits=required_bits,
        allowed_bits=allowed_bits,
        checks=_distinct_checks(rules),
        key_pattern=key_pattern,
        key_columns=key_columns,
    )


def _model_rule(
    model: type[BaseModel], event_schema: pa.Schema, timestamps: set[str]
) -> _ModelRule:
    """One union member's rule; adds its timestamp columns to ``timestamps``."""
    _require_plain_config(model)
    tags = _literal_values(model.model_fields.get(EVENT_TYPE))
    fields = []
    for name, info in model.model_fields.items():
        if name == EVENT_TYPE:
            continue
        if info.alias not in (None, name) or name not in event_schema.names:
            raise _Unsupported(f"{model.__name__}.{name} has no column of its name")
        arrow_type = event_schema.field(name).type
        required = _is_required(info)
        annotation, metadata = _unwrap(info.annotation, list(info.metadata))
        if annotation is AwareDatetime:
            _require_strict_timestamp(metadata, arrow_type)
            timestamps.add(name)
            fields.append(_FieldRule(name, required, "timestamp", None))
            continue
        check = _check_for(annotation, metadata, arrow_type)
        fields.append(_FieldRule(name, required, repr((annotation, metadata)), check))
    own = {EVENT_TYPE, *model.model_fields}
    foreign = tuple(name for name in event_schema.names if name not in own)
    return _ModelRule(tags, tuple(fields), foreign)


def _distinct_checks(rules: list[_ModelRule]) -> tuple[_ColumnCheck, ...]:
    """Each distinct (column, constraint) once, with the models it applies to."""
    distinct: dict[tuple[str, str], tuple[RowCheck, set[int]]] = {}
    for index, rule in enumerate(rules):
        for f in rule.fields:
            if f.check is not None:
                distinct.setdefault((f.column, f.check_key), (f.check, set()))[1].add(index)
    models = len(rules) + 1  # plus the "unknown type" model, which no check applies to
    return tuple(
        _ColumnCheck(column, check, np.array([i in owners for i in range(models)], dtype=bool))
        for (column, _key), (check, owners) in distinct.items()
    )


def _presence_masks(
    rules: list[_ModelRule], column_names: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per tag its model's index; per model the bits of required and allowed columns.

    The last model index stands for an unknown ``event_type``: it requires a
    bit no row has, so such a row never passes.
    """
    if len(column_names) > 62:
        raise _Unsupported("more than 62 event columns (one bit each)")
    unknown = len(rules)
    model_of_tag = np.array(
        [index for index, rule in enumerate(rules) for _ in rule.tags] + [unknown], dtype=np.int64
    )
    required_bits = np.zeros(len(rules) + 1, dtype=np.int64)
    allowed_bits = np.zeros(len(rules) + 1, dtype=np.int64)
    required_bits[unknown] = 1 << 62
    for index, rule in enumerate(rules):
        allowed_columns = {EVENT_TYPE} | {f.column for f in rule.fields}
        required_columns = {EVENT_TYPE} | {f.column for f in rule.fields if f.required}
        required_bits[index] = sum(1 << column_names.index(n) for n in required_columns)
        allowed_bits[index] = sum(1 << column_names.index(n) for n in allowed_columns)
    return model_of_tag, required_bits, allowed_bits


def _require_plain_config(model: type[BaseModel]) -> None:
    """No setting that makes pydantic stricter or transforms values (Arrow would differ)."""
    config = model.model_config
    for key in ("strict", "str_strip_whitespace", "str_to_lower", "str_to_upper"):
        if config.get(key):
            raise _Unsupported(f"{model.__name__}: {key}")
    if config.get("str_min_length") or config.get("str_max_length"):
        raise _Unsupported(f"{model.__name__}: model-wide string lengths")


def _literal_values(info: FieldInfo | None) -> tuple[str, ...]:
    annotation = info.annotation if info is not None else None
    values = get_args(annotation) if get_origin(annotation) is Literal else ()
    if not values or not all(isinstance(v, str) for v in values):
        raise _Unsupported("every model needs event_type: Literal['...', ...]")
    return tuple(values)


def _is_required(info: FieldInfo) -> bool:
    """Required, or optional with a None default (null and absent then mean the same)."""
    if info.is_required():
        if _allows_none(info.annotation):
            raise _Unsupported("a required field that may be null (absent and null differ)")
        return True
    if info.default is not None or info.default_factory is not None:
        raise _Unsupported("defaults other than None")
    return False


def _allows_none(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        return _allows_none(get_args(annotation)[0])
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """The annotation without Annotated layers and ``| None``, with all its metadata."""
    inner, gathered, _ = unwrap(annotation, metadata)
    return inner, gathered


def _require_strict_timestamp(metadata: list[Any], arrow_type: pa.DataType) -> None:
    if arrow_type != pa.timestamp("us", tz="UTC"):
        raise _Unsupported("timestamps must be stored as timestamp[us, UTC]")
    if not any(isinstance(item, Rfc3339Text) for item in metadata):
        raise _Unsupported("timestamps must be RFC 3339 text (events.common.UtcTimestamp)")
    for item in metadata:
        # The form is checked here by _RFC3339 (a subset), the range as the instant range.
        if isinstance(item, Rfc3339Text):
            continue
        if getattr(getattr(item, "func", None), "__name__", "") == "_representable_in_utc":
            continue
        raise _Unsupported(f"timestamp metadata {item!r}")


def _check_for(annotation: Any, metadata: list[Any], arrow_type: pa.DataType) -> RowCheck | None:
    """The column check for one annotation (None: Arrow's type alone decides)."""
    if get_origin(annotation) is Literal:
        return _literal_check(annotation, metadata, arrow_type)
    if annotation is str:
        if not pa.types.is_string(arrow_type):
            raise _Unsupported("str needs a string column")
        return _string_check(metadata)
    if annotation is int:
        if not pa.types.is_integer(arrow_type):
            raise _Unsupported("int needs an integer column")
        return _int_check(metadata)
    if annotation is Decimal:
        return _money_check(metadata, arrow_type)
    if get_origin(annotation) is list:
        return _list_check(annotation, metadata, arrow_type)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if metadata:
            raise _Unsupported(f"metadata on a nested model {metadata!r}")
        return _struct_check(annotation, arrow_type)
    raise _Unsupported(f"annotation {annotation!r}")


def _literal_check(annotation: Any, metadata: list[Any], arrow_type: pa.DataType) -> RowCheck:
    allowed = get_args(annotation)
    if metadata or not pa.types.is_string(arrow_type):
        raise _Unsupported("literals are plain strings")
    if not all(isinstance(value, str) for value in allowed):
        raise _Unsupported("literals are plain strings")
    value_set = pa.array(list(allowed), type=pa.string())
    return lambda values: pc.fill_null(pc.is_in(values, value_set), True)


def _string_check(metadata: list[Any]) -> RowCheck | None:
    constraints = [item for item in metadata if isinstance(item, StringConstraints)]
    minimum, maximum = length_bounds([i for i in metadata if not isinstance(i, StringConstraints)])
    pattern = None
    for item in constraints:
        if item.strip_whitespace or item.to_upper or item.to_lower or item.strict:
            raise _Unsupported("string transformations or strictness")
        minimum = item.min_length if item.min_length is not None else minimum
        maximum = item.max_length if item.max_length is not None else maximum
        pattern = item.pattern if item.pattern is not None else pattern
    if minimum is None and maximum is None and pattern is None:
        return None
    if pattern is not None and not isinstance(pattern, str):
        raise _Unsupported("compiled patterns")
    lengths_hold = _bounds_check(minimum, maximum)

    def check(values: pa.Array) -> pa.Array:
        # pydantic counts characters (code points), as utf8_length does.
        ok = lengths_hold(pc.utf8_length(values))
        if pattern is not None:
            # RE2 (Arrow) is at least as strict as pydantic's Rust regex here:
            # \d, \w and \s are ASCII-only in RE2, Unicode in Rust.
            ok = pc.and_(ok, pc.fill_null(pc.match_substring_regex(values, pattern), True))
        return ok

    return check


def _int_check(metadata: list[Any]) -> RowCheck | None:
    bounds: list[tuple[Callable[..., pa.Array], pa.Scalar]] = []
    for item in metadata:
        if isinstance(item, Strict) and item.strict:
            continue  # Arrow reads only JSON integers into an integer column
        if isinstance(item, annotated_types.Ge):
            bounds.append((pc.greater_equal, _int(int(item.ge))))  # type: ignore[call-overload]
        elif isinstance(item, annotated_types.Gt):
            bounds.append((pc.greater, _int(int(item.gt))))  # type: ignore[call-overload]
        elif isinstance(item, annotated_types.Le):
            bounds.append((pc.less_equal, _int(int(item.le))))  # type: ignore[call-overload]
        elif isinstance(item, annotated_types.Lt):
            bounds.append((pc.less, _int(int(item.lt))))  # type: ignore[call-overload]
        else:
            raise _Unsupported(f"integer metadata {item!r}")
    if not bounds:
        return None
    compare_first, first = bounds[0]

    def check(values: pa.Array) -> pa.Array:
        ok = pc.fill_null(compare_first(values, first), True)
        for compare, bound in bounds[1:]:
            ok = pc.and_(ok, pc.fill_null(compare(values, bound), True))
        return ok

    return check


def _money_check(metadata: list[Any], arrow_type: pa.DataType) -> RowCheck:
    """Only the project's Money: ``ge=0``, ``decimal(18, 4)``, no NaN or infinity.

    Arrow refuses more places than the column's scale and more digits than its
    precision; the sign and ``< 10**14`` are checked here.
    """
    if arrow_type != pa.decimal128(MONEY_PRECISION, MONEY_SCALE):
        raise _Unsupported("decimals must be stored as decimal128(18, 4)")
    require_money(metadata)
    zero = pa.scalar(Decimal(0), type=arrow_type)
    largest = Decimal(10) ** (MONEY_PRECISION - MONEY_SCALE) - Decimal(10) ** -MONEY_SCALE
    limit = pa.scalar(largest, type=arrow_type)  # 99999999999999.9999

    def check(values: pa.Array) -> pa.Array:
        in_range = pc.and_(pc.greater_equal(values, zero), pc.less_equal(values, limit))
        return pc.fill_null(in_range, True)

    return check


def _list_check(annotation: Any, metadata: list[Any], arrow_type: pa.DataType) -> RowCheck:
    if not pa.types.is_list(arrow_type):
        raise _Unsupported("lists need a list column")
    (item_annotation,) = get_args(annotation)
    item, item_metadata = _unwrap(item_annotation, [])
    if _allows_none(item_annotation):
        raise _Unsupported("list items that may be null")
    item_check = _check_for(item, item_metadata, arrow_type.value_type)
    lengths_hold = _bounds_check(*length_bounds(metadata))

    def check(values: pa.Array) -> pa.Array:
        ok = lengths_hold(pc.list_value_length(values))
        flat = pc.list_flatten(values)
        item_ok = pc.is_valid(flat)  # a null item is never a model
        if item_check is not None:
            item_ok = pc.and_(item_ok, item_check(flat))
        if not pc.all(item_ok).as_py():
            parents = pc.list_parent_indices(values).to_numpy()
            bad_rows = parents[~item_ok.to_numpy(zero_copy_only=False)]
            mask = ok.to_numpy(zero_copy_only=False).copy()
            mask[bad_rows] = False
            ok = pa.array(mask)
        return ok

    return check


def _struct_check(model: type[BaseModel], arrow_type: pa.DataType) -> RowCheck:
    """A nested model: every field required and checked (nested models forbid extras)."""
    if not pa.types.is_struct(arrow_type):
        raise _Unsupported("nested models need a struct column")
    _require_plain_config(model)
    if model.model_config.get("extra") != "forbid":
        # Arrow refuses unknown keys, but "ignore" would have pydantic drop them.
        raise _Unsupported(f"nested model {model.__name__} must forbid extra fields")
    names = [arrow_type.field(i).name for i in range(arrow_type.num_fields)]
    if sorted(names) != sorted(model.model_fields):
        raise _Unsupported(f"struct fields of {model.__name__} differ from the model")
    children: list[tuple[int, RowCheck | None]] = []
    for name, info in model.model_fields.items():
        if not info.is_required():
            raise _Unsupported(f"optional nested field {model.__name__}.{name}")
        annotation, metadata = _unwrap(info.annotation, list(info.metadata))
        if annotation is AwareDatetime or _allows_none(info.annotation):
            raise _Unsupported(f"nested field {model.__name__}.{name}")
        index = names.index(name)
        children.append((index, _check_for(annotation, metadata, arrow_type.field(index).type)))

    def check(values: pa.Array) -> pa.Array:
        absent = pc.is_null(values)
        ok = None
        for index, child_check in children:
            child = pc.struct_field(values, [index])
            # A missing or null field inside a present item refuses the row.
            holds = pc.or_(absent, pc.is_valid(child))
            if child_check is not None:
                holds = pc.and_(holds, child_check(child))
            ok = holds if ok is None else pc.and_(ok, holds)
        assert ok is not None  # a model has fields
        return ok

    return check
