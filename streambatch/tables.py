"""Query results as rich tables for the terminal: the CLI's presentation of rows.

The query layer (:mod:`sinks.duckdb`) returns column names and rows; this
module decides how they look.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from rich.table import Table
from rich.text import Text

__all__ = ["render_table"]


def render_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None
) -> Table:
    """A rich table of a result: numbers right-aligned, decimals exact, ``NULL`` dimmed.

    Cells are plain text, never rich markup: values come from the data.
    """
    table = Table(title=title, show_lines=False)
    for index, column in enumerate(columns):
        numeric = any(_is_number(row[index]) for row in rows)
        table.add_column(Text(column), justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    return table


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _cell(value: Any) -> Text:
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, datetime):
        # Compact and unambiguous: UTC shown as "Z", whole seconds unless finer.
        utc = value.astimezone(UTC) if value.tzinfo is not None else value
        text = utc.isoformat(sep=" ", timespec="seconds" if not utc.microsecond else "auto")
        return Text(text.replace("+00:00", "Z"))
    if isinstance(value, date):
        return Text(value.isoformat())
    return Text(str(value))
