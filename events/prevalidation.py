"""A fast, strict pre-validator derived from a stream's pydantic models.

pydantic stays the definition of what is valid and the author of every error
message; this module builds, from the same models, msgspec types that accept
a *subset* of what pydantic accepts, several times faster. The validation
fast path (``flows.validation``) accepts a record only when this decoder
accepts it AND Arrow's JSON reader converts it AND its money columns are in
range; anything else is validated by pydantic, which either accepts it (lax
coercions, extra fields) or says why not. So the rules are declared once, and
a disagreement can only cost speed, never correctness. Property tests check
the subset relation.

Money (``Decimal`` with ``ge=0``, ``max_digits``, ``decimal_places``) is
decoded without constraints here; its range and places are checked on the
Arrow column (see ``money_bounds``). Unsupported annotations make
:func:`build_prevalidator` return None: that stream validates with pydantic
alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import msgspec
from pydantic import AwareDatetime, BaseModel, Strict, StringConstraints
from pydantic.fields import FieldInfo

from events.common import RFC3339_PATTERN, Rfc3339Text
from events.model_shapes import UnsupportedModel as _Unsupported
from events.model_shapes import length_bounds, require_money, union_members, unwrap

__all__ = ["Prevalidator", "build_prevalidator"]


# Built from metadata at run time: the stubs' overloads cannot follow, hence Any.
_Meta: Any = msgspec.Meta


@dataclass(frozen=True)
class Prevalidator:
    """Decodes one record; returns its event id, or None when pydantic must decide."""

    decoder: msgspec.json.Decoder[Any]

    def event_id(self, value: bytes) -> str | None:
        """The event id if the decoder accepts the record, else None."""
        try:
            event_id: str = self.decoder.decode(value).event_id
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            return None
        return event_id


def build_prevalidator(event_model: Any) -> Prevalidator | None:
    """A :class:`Prevalidator` for a model or a union discriminated by ``event_type``."""
    try:
        members = union_members(event_model)
        if len(members) == 1:
            return Prevalidator(msgspec.json.Decoder(_struct_for(members[0], tag=None)))
        structs = tuple(
            _struct_for(model, tag=_single_literal(model.model_fields["event_type"]))
            for model in members
        )
        return Prevalidator(msgspec.json.Decoder(Union[structs]))  # noqa: UP007 - runtime union
    except _Unsupported:
        return None


def _single_literal(info: FieldInfo) -> str:
    values = get_args(info.annotation) if get_origin(info.annotation) is Literal else ()
    if len(values) != 1 or not isinstance(values[0], str):
        raise _Unsupported("each union member needs event_type: Literal['...']")
    return values[0]


def _struct_for(model: type[BaseModel], tag: str | None) -> Any:
    """A msgspec Struct mirroring ``model``; unknown fields are refused (pydantic decides)."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, info in model.model_fields.items():
        if info.alias not in (None, name):
            raise _Unsupported(f"alias on {model.__name__}.{name}")
        if tag is not None and name == "event_type":
            continue
        kind = _translate(info.annotation, list(info.metadata))
        if info.is_required():
            fields.append((name, kind))
        elif info.default is None:
            fields.append((name, kind, None))
        elif info.default == {}:
            fields.append((name, kind, msgspec.field(default_factory=dict)))
        else:
            raise _Unsupported(f"default of {model.__name__}.{name}")
    options: dict[str, Any] = {"forbid_unknown_fields": True, "kw_only": True}
    if tag is not None:
        options.update(tag_field="event_type", tag=tag)
    return msgspec.defstruct(f"Fast{model.__name__}", fields, **options)


def _translate(annotation: Any, metadata: list[Any]) -> Any:
    """The msgspec type for one pydantic annotation plus its metadata."""
    annotation, metadata, nullable = unwrap(annotation, metadata)
    if nullable:
        return _translate(annotation, metadata) | None
    origin = get_origin(annotation)
    if origin is Literal:
        return annotation
    if annotation is str:
        return _constrained_str(metadata)
    if annotation is int:
        return Annotated[int, _Meta(**_bounds(metadata))]
    if annotation is Decimal:
        require_money(metadata)
        return Decimal
    if annotation is AwareDatetime:
        # The RFC 3339 form only, as text: Arrow parses it (refusing impossible
        # dates) and checks the UTC range on the column.
        if not any(isinstance(m, Rfc3339Text) for m in metadata):
            raise _Unsupported("datetimes must be RFC 3339 text (events.common.UtcTimestamp)")
        # The UTC range is checked on the Arrow column, after this decoder.
        unknown = [
            m for m in metadata if not (isinstance(m, Rfc3339Text) or _is_utc_range_check(m))
        ]
        if unknown:
            raise _Unsupported(f"datetime metadata {unknown!r}")
        # Python's re: "$" would also match before a final newline.
        return Annotated[str, _Meta(pattern=RFC3339_PATTERN.removesuffix("$") + r"\Z")]
    if origin is list:
        (item,) = get_args(annotation)
        items: Any = list[_translate(item, [])]  # type: ignore[misc]  # a type built at run time
        return Annotated[items, _Meta(**_lengths(metadata))]
    if origin is dict:
        key, value = get_args(annotation)
        mapping: Any = dict[_translate(key, []), _translate(value, [])]  # type: ignore[misc]  # a type built at run time
        return Annotated[mapping, _Meta(**_lengths(metadata))]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation.model_config.get("extra") != "forbid":
            raise _Unsupported(f"nested model {annotation.__name__} must forbid extra fields")
        return _struct_for(annotation, tag=None)
    raise _Unsupported(f"annotation {annotation!r}")


def _is_utc_range_check(item: Any) -> bool:
    return getattr(getattr(item, "func", None), "__name__", "") == "_representable_in_utc"


def _constrained_str(metadata: list[Any]) -> Any:
    meta: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, StringConstraints):
            if item.strip_whitespace or item.to_upper or item.to_lower or item.ascii_only:
                raise _Unsupported("string transformations")
            for key in ("min_length", "max_length", "pattern"):
                if getattr(item, key) is not None:
                    meta[key] = getattr(item, key)
        else:
            meta.update(_lengths([item]))
    return Annotated[str, _Meta(**meta)] if meta else str


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, Strict) and item.strict:
            continue  # msgspec never coerces into an int
        if isinstance(item, annotated_types.Ge):
            bounds["ge"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            bounds["gt"] = item.gt
        elif isinstance(item, annotated_types.Le):
            bounds["le"] = item.le
        elif isinstance(item, annotated_types.Lt):
            bounds["lt"] = item.lt
        else:
            raise _Unsupported(f"integer metadata {item!r}")
    return bounds


def _lengths(metadata: list[Any]) -> dict[str, int]:
    minimum, maximum = length_bounds(metadata)
    lengths = {"min_length": minimum, "max_length": maximum}
    return {key: value for key, value in lengths.items() if value is not None}
