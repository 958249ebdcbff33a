"""A built-in batch handler to copy: revenue per time window and currency, kept in the store.

For every committed batch of ``orders``: the ``OrderPlaced`` rows are counted
and their ``total_amount`` summed per window (``window_minutes``, default 10,
aligned as DuckDB's ``time_bucket`` aligns them) and currency, and added to
``batch_revenue_per_window`` in the same transaction as the batch's inbox
claim. Money stays exact: amounts are kept as integer ten-thousandths (the
lake's ``decimal(18,4)``), never as floats. Since each batch is added once,
the table equals the lake's ``orders_per_window`` report after any run.

    [batch_handlers.orders-rollup]
    stream = "orders"
    handler = "batch.rollup"
    options = { window_minutes = 10 }
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from handlers.batch.runtime import BatchContext
from handlers.store import Store
from sinks.batch_announcements import BatchAnnouncement

__all__ = ["ROLLUP_TABLE", "RevenueRollup", "RollupRow", "read_rollup"]

ROLLUP_TABLE = "batch_revenue_per_window"
_SCALE = 4  # decimal places of the lake's money columns
# DuckDB's time_bucket origin for minute widths: windows line up with its reports.
_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
_ORIGIN_US = int(_ORIGIN.timestamp()) * 1_000_000


@dataclass(frozen=True)
class RollupRow:
    """One window and currency of the rollup."""

    window_start: datetime
    window_minutes: int
    currency: str
    orders: int
    revenue: Decimal


class RevenueRollup:
    """Adds each batch's orders and revenue per window and currency (see module docstring)."""

    ddl: ClassVar[Sequence[str]] = (
        f"""CREATE TABLE IF NOT EXISTS {ROLLUP_TABLE} (
            window_start TEXT NOT NULL,
            window_minutes INTEGER NOT NULL,
            currency TEXT NOT NULL,
            orders BIGINT NOT NULL,
            revenue_units BIGINT NOT NULL,
            PRIMARY KEY (window_start, window_minutes, currency)
        )""",
    )

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = set(options) - {"window_minutes"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; known: window_minutes")
        minutes = int(options.get("window_minutes", 10))
        if not 1 <= minutes <= 24 * 60:
            raise ValueError(f"window_minutes must be 1..1440, got {minutes}")
        self.window_minutes = minutes

    def handle(self, batch: BatchAnnouncement, rows: pa.Table, context: BatchContext) -> None:
        """Add the batch's ``OrderPlaced`` rows to their windows, in the inbox transaction."""
        for window_start, currency, orders, units in self.aggregate(rows):
            context.transaction.execute(
                f"INSERT INTO {ROLLUP_TABLE} "
                "(window_start, window_minutes, currency, orders, revenue_units) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (window_start, window_minutes, currency) DO UPDATE SET "
                f"orders = {ROLLUP_TABLE}.orders + excluded.orders, "
                f"revenue_units = {ROLLUP_TABLE}.revenue_units + excluded.revenue_units",
                (window_start, self.window_minutes, currency, orders, units),
            )

    def aggregate(self, rows: pa.Table) -> list[tuple[str, str, int, int]]:
        """``(window start ISO, currency, orders, revenue in 1e-4 units)`` of ``rows``."""
        placed = rows.filter(pc.field("event_type") == "OrderPlaced")
        if placed.num_rows == 0:
            return []
        width = self.window_minutes * 60 * 1_000_000
        micros = placed.column("occurred_at").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        since = pc.subtract(micros, _ORIGIN_US)
        windows = pc.add(pc.multiply(_floor_divide(since, width), width), _ORIGIN_US)
        grouped = (
            pa.table(
                {
                    "window": windows,
                    "currency": placed.column("currency"),
                    "amount": placed.column("total_amount"),
                }
            )
            .group_by(["window", "currency"])
            .aggregate([("amount", "sum"), ("currency", "count", pc.CountOptions("all"))])
        )
        result = []
        for row in grouped.to_pylist():
            start = _ORIGIN + timedelta(microseconds=row["window"] - _ORIGIN_US)
            total: Decimal | None = row["amount_sum"]
            units = 0 if total is None else int(total.scaleb(_SCALE))
            result.append((_iso(start), str(row["currency"]), int(row["currency_count"]), units))
        return result


def _floor_divide(values: pa.ChunkedArray, divisor: int) -> pa.ChunkedArray:
    """Integer division rounding down (Arrow's ``divide`` truncates towards zero)."""
    quotient = pc.divide(values, divisor)
    negative_remainder = pc.less(pc.subtract(values, pc.multiply(quotient, divisor)), 0)
    return pc.if_else(negative_remainder, pc.subtract(quotient, 1), quotient)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_rollup(store: Store, window_minutes: int = 10) -> list[RollupRow]:
    """The rollup's rows of one window length, by window then currency."""
    with store.transaction() as transaction:
        rows = transaction.query(
            f"SELECT window_start, currency, orders, revenue_units FROM {ROLLUP_TABLE} "
            "WHERE window_minutes = ? ORDER BY window_start, currency",
            (window_minutes,),
        )
    return [
        RollupRow(
            window_start=datetime.strptime(str(start), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
            window_minutes=window_minutes,
            currency=str(currency),
            orders=int(orders),
            revenue=Decimal(int(units)).scaleb(-_SCALE),
        )
        for start, currency, orders, units in rows
    ]
