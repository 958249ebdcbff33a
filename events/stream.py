"""What a stream is: its name, its event models and the columns of its table.

A flow module only names a :class:`StreamSchema`; the pipeline does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.json as pj
from pydantic import TypeAdapter

from events.columnar import ColumnarValidator, build_columnar_validator
from events.model_shapes import has_decimals
from events.prevalidation import Prevalidator, build_prevalidator

__all__ = ["COMMON_COLUMNS", "LINEAGE_COLUMNS", "PARTITION_COLUMNS", "StreamSchema"]

COMMON_COLUMNS = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
    ]
)
LINEAGE_COLUMNS = pa.schema(
    [
        ("_extra", pa.string()),
        ("_value_digest", pa.int64()),
        ("_topic", pa.string()),
        ("_partition", pa.int32()),
        ("_offset", pa.int64()),
    ]
)
PARTITION_COLUMNS = pa.schema([("event_date", pa.string()), ("event_hour", pa.string())])


@dataclass(frozen=True)
class StreamSchema:
    """A stream's contract: event models (a discriminated union) and table columns.

    Attributes:
        name: stream name, also the default topic and the lake table name.
        event_model: a pydantic type (usually ``Annotated[A | B, Field(discriminator=...)]``)
            that validates one record's JSON.
        event_types: every accepted ``event_type``.
        columns: the stream's own columns, besides common, lineage and partition ones.

    ``has_decimals`` says some event field is a decimal: its JSON numbers must
    be read exactly, so pydantic never parses its records alone.
    """

    name: str
    event_model: Any
    event_types: tuple[str, ...]
    columns: pa.Schema
    adapter: TypeAdapter[Any] = field(init=False, repr=False, compare=False)
    table_schema: pa.Schema = field(init=False, repr=False, compare=False)
    json_parse_options: pj.ParseOptions = field(init=False, repr=False, compare=False)
    arrow_json_readable: bool = field(init=False, repr=False, compare=False)
    prevalidator: Prevalidator | None = field(init=False, repr=False, compare=False)
    columnar: ColumnarValidator | None = field(init=False, repr=False, compare=False)
    has_decimals: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.name.islower():
            raise ValueError(f"stream name must be a lower-case identifier, got {self.name!r}")
        clash = set(self.columns.names) & set(
            COMMON_COLUMNS.names + LINEAGE_COLUMNS.names + PARTITION_COLUMNS.names
        )
        if clash:
            raise ValueError(f"stream {self.name!r} redefines reserved columns {sorted(clash)}")
        object.__setattr__(self, "adapter", TypeAdapter(self.event_model))
        fields = [*COMMON_COLUMNS, *self.columns, *LINEAGE_COLUMNS, *PARTITION_COLUMNS]
        object.__setattr__(self, "table_schema", pa.schema(fields))
        event_schema = pa.schema([*COMMON_COLUMNS, *self.columns])
        # Arrow's JSON reader cannot build map columns: such streams skip the fast path.
        readable = not any(pa.types.is_map(f.type) for f in event_schema)
        object.__setattr__(self, "arrow_json_readable", readable)
        object.__setattr__(self, "prevalidator", build_prevalidator(self.event_model))
        object.__setattr__(self, "has_decimals", has_decimals(self.event_model))
        columnar = build_columnar_validator(self.event_model, event_schema) if readable else None
        object.__setattr__(self, "columnar", columnar)
        object.__setattr__(
            self,
            "json_parse_options",
            pj.ParseOptions(explicit_schema=event_schema, unexpected_field_behavior="ignore"),
        )

    @property
    def event_column_names(self) -> list[str]:
        """Columns filled from the validated event, in table order."""
        return COMMON_COLUMNS.names + self.columns.names
