"""Query results as rich tables: exact values, no markup from the data."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

from rich.console import Console

from streambatch.tables import render_table


def _printed(columns: list[str], rows: list[tuple[object, ...]]) -> str:
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render_table(columns, rows, title="revenue"))
    return console.export_text()


def test_render_table_prints_exact_values_and_no_markup() -> None:
    columns = ["currency", "orders", "revenue", "first_order"]
    rows: list[tuple[object, ...]] = [
        ("EUR", 3, Decimal("10.4000"), datetime(2026, 11, 28, 9, 5, tzinfo=UTC)),
        ("[bold]x[/]", 0, None, None),
    ]
    table = render_table(columns, rows, title="revenue")
    assert len(table.columns) == len(columns)
    assert table.row_count == len(rows)
    text = _printed(columns, rows)
    assert "10.4000" in text
    assert "[bold]x[/]" in text
    assert "NULL" in text
    assert "2026-11-28 09:05:00Z" in text


def test_render_table_right_aligns_numeric_columns_only() -> None:
    table = render_table(["name", "rows"], [("orders", 12), ("clicks", None)])
    assert [column.justify for column in table.columns] == ["left", "right"]
