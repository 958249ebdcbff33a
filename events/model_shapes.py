"""What the fast validators derived from the pydantic models understand.

``events.prevalidation`` (msgspec) and ``events.columnar`` (Arrow) both
translate the models and give up, with :class:`UnsupportedModel`, on any
shape they do not translate exactly: that stream then validates with the
slower paths. These are the shapes both read the same way.
"""

from __future__ import annotations

import types
from decimal import Decimal
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel

from events.common import MONEY_PRECISION, MONEY_SCALE

__all__ = [
    "EVENT_TYPE",
    "UnsupportedModel",
    "has_decimals",
    "length_bounds",
    "require_money",
    "union_members",
    "unwrap",
]

EVENT_TYPE = "event_type"


class UnsupportedModel(Exception):
    """A model, annotation or setting a fast validator does not translate."""


def union_members(event_model: Any) -> list[type[BaseModel]]:
    """The models of a stream: one model, or a union discriminated by ``event_type``."""
    if isinstance(event_model, type) and issubclass(event_model, BaseModel):
        return [event_model]
    if get_origin(event_model) is Annotated:
        inner, *metadata = get_args(event_model)
        if not any(getattr(m, "discriminator", None) == EVENT_TYPE for m in metadata):
            raise UnsupportedModel("a union must be discriminated by event_type")
        members = get_args(inner)
        if all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
            return list(members)
    raise UnsupportedModel(f"event model {event_model!r}")


def has_decimals(annotation: Any) -> bool:
    """Whether a decimal appears anywhere in ``annotation`` (models, unions, lists, dicts)."""
    if annotation is Decimal:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(has_decimals(f.annotation) for f in annotation.model_fields.values())
    return any(has_decimals(arg) for arg in get_args(annotation))


def require_money(metadata: list[Any]) -> None:
    """Only the project's Money type: ``ge=0`` and ``decimal(18, 4)`` limits.

    Its Arrow column then has exactly that type; Arrow refuses extra places
    and digits by itself, and the fast paths check ``0 <= value < 10**14``.
    """
    seen = {"ge": False, "digits": False}
    for item in metadata:
        if isinstance(item, annotated_types.Ge) and item.ge == 0:
            seen["ge"] = True
        elif getattr(item, "allow_inf_nan", None) is False:
            continue
        elif (
            getattr(item, "max_digits", None) == MONEY_PRECISION
            and getattr(item, "decimal_places", None) == MONEY_SCALE
        ):
            seen["digits"] = True
        else:
            raise UnsupportedModel(f"decimal metadata {item!r}")
    if not all(seen.values()):
        raise UnsupportedModel("decimals must be Money: ge=0, decimal(18, 4)")


def length_bounds(metadata: list[Any]) -> tuple[int | None, int | None]:
    """``(min_length, max_length)`` from ``MinLen``/``MaxLen`` metadata, nothing else."""
    minimum = maximum = None
    for item in metadata:
        if isinstance(item, annotated_types.MinLen):
            minimum = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            maximum = item.max_length
        else:
            raise UnsupportedModel(f"length metadata {item!r}")
    return minimum, maximum


def unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any], bool]:
    """``(type, metadata, nullable)``: Annotated layers and ``X | None`` taken off.

    The metadata of every layer is gathered; ``nullable`` says a ``| None``
    was there. Any other union is not translated.
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return unwrap(inner, [*extra, *metadata])
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if len(options) != 1 or len(get_args(annotation)) != 2:
            raise UnsupportedModel(f"union {annotation!r}")
        inner, gathered, _ = unwrap(options[0], metadata)
        return inner, gathered, True
    return annotation, metadata, False
