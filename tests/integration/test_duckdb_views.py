"""The DuckDB query layer over real Delta tables: views, reports and the lockdown."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake
from hypothesis import given, settings
from hypothesis import strategies as st

from events.registry import ORDERS
from sinks.delta_lake import BATCHES_SCHEMA
from sinks.duckdb import (
    REPORTS,
    ForbiddenStatementError,
    Report,
    ReportParam,
    ReportParameterError,
    UnknownReportError,
    connect,
    run_report,
    run_sql,
)

VIEWS = ("orders", "clicks", "logs", "batches")


def _at(hour: int, minute: int) -> datetime:
    return datetime(2026, 1, 1, hour, minute, tzinfo=UTC)


def _event(offset: int, event_type: str, occurred_at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{offset}",
        "event_type": event_type,
        "occurred_at": occurred_at,
        "order_id": f"o{offset}",
        "_topic": "orders",
        "_partition": 0,
        "_offset": offset,
        "event_date": occurred_at.strftime("%Y-%m-%d"),
        "event_hour": occurred_at.strftime("%H"),
        **fields,
    }


def _placed(offset: int, occurred_at: datetime, currency: str, total: str) -> dict[str, Any]:
    item = {"sku": "sku-1", "quantity": 1, "unit_price": Decimal(total)}
    return _event(
        offset,
        "OrderPlaced",
        occurred_at,
        customer_id="c1",
        currency=currency,
        items=[item],
        total_amount=Decimal(total),
    )


def _payment(offset: int, occurred_at: datetime, reason: str | None = None) -> dict[str, Any]:
    event_type = "PaymentFailed" if reason else "PaymentAuthorized"
    amount = Decimal("1.0000")
    return _event(
        offset, event_type, occurred_at, payment_id=f"p{offset}", amount=amount, reason=reason
    )


# Two commits, three hour partitions. 0.1 + 0.2 is where binary floats go wrong.
FIRST_COMMIT = [
    _placed(0, _at(10, 1), "EUR", "10.1000"),
    _placed(1, _at(10, 5), "EUR", "0.1000"),
    _placed(2, _at(10, 12), "USD", "5.5500"),
    _payment(3, _at(10, 2)),
    _payment(4, _at(10, 6)),
    _payment(5, _at(10, 13)),
    _payment(6, _at(10, 14), "card_declined"),
]
SECOND_COMMIT = [
    _placed(7, _at(11, 59), "EUR", "0.2000"),
    _payment(8, _at(11, 3), "card_declined"),
    _payment(9, _at(12, 0), "insufficient_funds"),
]


def _batch(
    stream: str, close_reason: str, rows: int, dead_letters: dict[str, int], committed: datetime
) -> dict[str, Any]:
    classes = ", ".join(f'"{name}": {count}' for name, count in dead_letters.items())
    return {
        "stream": stream,
        "topic": stream,
        "partition": 0,
        "first_offset": 0,
        "next_offset": rows + sum(dead_letters.values()) + 1,
        "rows": rows,
        "input_records": rows + sum(dead_letters.values()) + 1,
        "input_bytes": 100 * rows,
        "duplicates": 1,
        "conflicts": 0,
        "dead_letters": sum(dead_letters.values()),
        "dead_letters_by_class": "{" + classes + "}",
        "files": 2,
        "close_reason": close_reason,
        "opened_at": committed,
        "committed_at": committed,
        "min_occurred_at": None,
        "max_occurred_at": None,
        "lake_version": 1,
    }


BATCHES = [
    _batch("orders", "size", 7, {"InvalidJson": 3, "ValidationError": 1}, _at(10, 30)),
    _batch("orders", "end", 3, {"InvalidJson": 2}, _at(12, 30)),
    _batch("clicks", "time", 5, {}, _at(11, 0)),
]


def _append_orders(data_dir: Path, rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(rows, schema=ORDERS.table_schema)
    write_deltalake(
        data_dir / "lake" / "orders",
        table,
        mode="append",
        partition_by=["event_date", "event_hour"],
    )


def _append_batches(data_dir: Path, rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(rows, schema=BATCHES_SCHEMA)
    write_deltalake(data_dir / "lake" / "batches", table, mode="append")


def _build_lake(data_dir: Path) -> Path:
    _append_orders(data_dir, FIRST_COMMIT)
    _append_orders(data_dir, SECOND_COMMIT)
    _append_batches(data_dir, BATCHES)
    return data_dir


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_lake(tmp_path_factory.mktemp("lake"))


@pytest.fixture
def conn(lake: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(lake)
    yield connection
    connection.close()


def _scalar(conn: duckdb.DuckDBPyConnection, sql: str) -> Any:
    _, rows = run_sql(conn, sql)
    return rows[0][0]


def _views(conn: duckdb.DuckDBPyConnection) -> set[str]:
    _, rows = run_sql(conn, "SELECT view_name FROM duckdb_views() WHERE NOT internal")
    return {row[0] for row in rows}


# ----------------------------------------------------------------------------- views


def test_views_return_the_committed_rows(conn: duckdb.DuckDBPyConnection) -> None:
    _, rows = run_sql(conn, "SELECT event_id FROM orders ORDER BY _offset")
    assert [row[0] for row in rows] == [f"e{i}" for i in range(10)]
    assert _scalar(conn, "SELECT count(*) FROM batches") == 3
    assert _views(conn) == set(VIEWS)


def test_money_is_exact_decimal(conn: duckdb.DuckDBPyConnection) -> None:
    total = _scalar(conn, "SELECT sum(total_amount) FROM orders WHERE currency = 'EUR'")
    assert isinstance(total, Decimal)
    assert total == Decimal("10.4000")
    small = _scalar(conn, "SELECT sum(total_amount) FROM orders WHERE total_amount < 1")
    assert small == Decimal("0.3000")  # 0.1 + 0.2, exactly
    prices = _scalar(conn, "SELECT list(i.unit_price) FROM orders, unnest(items) AS u(i)")
    assert all(isinstance(price, Decimal) for price in prices)


def test_column_types_and_partition_columns(conn: duckdb.DuckDBPyConnection) -> None:
    _, described = run_sql(conn, "DESCRIBE orders")
    types = {row[0]: row[1] for row in described}
    assert types["total_amount"] == "DECIMAL(18,4)"
    assert types["amount"] == "DECIMAL(18,4)"
    assert types["occurred_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["event_date"] == "VARCHAR"
    assert types["event_hour"] == "VARCHAR"
    assert list(types) == ORDERS.table_schema.names
    _, rows = run_sql(
        conn, "SELECT DISTINCT event_date, event_hour FROM orders ORDER BY event_hour"
    )
    assert rows == [("2026-01-01", "10"), ("2026-01-01", "11"), ("2026-01-01", "12")]


def test_timestamps_come_back_in_utc(conn: duckdb.DuckDBPyConnection) -> None:
    first = _scalar(conn, "SELECT min(occurred_at) FROM orders")
    assert first == _at(10, 1)
    assert first.utcoffset() is not None
    assert first.utcoffset().total_seconds() == 0


def test_uncommitted_stray_file_is_invisible(tmp_path: Path) -> None:
    data_dir = _build_lake(tmp_path)
    partition = data_dir / "lake" / "orders" / "event_date=2026-01-01" / "event_hour=10"
    # A file a writer produced but never committed (it died before the commit).
    schema = ORDERS.table_schema
    file_schema = schema.remove(schema.get_field_index("event_date")).remove(
        schema.get_field_index("event_hour") - 1
    )
    stray = pa.Table.from_pylist([{**FIRST_COMMIT[0], "event_id": "stray"}], schema=file_schema)
    pq.write_table(stray, partition / "part-99999-stray.parquet")
    connection = connect(data_dir)
    try:
        assert _scalar(connection, "SELECT count(*) FROM orders") == 10
        assert _scalar(connection, "SELECT count(*) FROM orders WHERE event_id = 'stray'") == 0
        # Nor can it be read directly: only the committed files are allowed paths.
        with pytest.raises(duckdb.Error):
            run_sql(
                connection, f"SELECT * FROM read_parquet('{partition}/part-99999-stray.parquet')"
            )
    finally:
        connection.close()


def test_missing_tables_give_empty_views(tmp_path: Path) -> None:
    connection = connect(tmp_path)
    try:
        for view in VIEWS:
            assert _scalar(connection, f"SELECT count(*) FROM {view}") == 0
        _, described = run_sql(connection, "DESCRIBE orders")
        assert {row[0]: row[1] for row in described}["total_amount"] == "DECIMAL(18,4)"
        columns, _ = run_sql(connection, "SELECT * FROM clicks")
        assert columns[:3] == ["event_id", "event_type", "occurred_at"]
        columns, _ = run_sql(connection, "SELECT * FROM batches")
        assert columns == BATCHES_SCHEMA.names
        for name in REPORTS:
            assert run_report(connection, name, {})[1] == []
    finally:
        connection.close()


def test_an_existing_table_without_files_gives_an_empty_view(tmp_path: Path) -> None:
    _append_orders(tmp_path, [])
    connection = connect(tmp_path)
    try:
        columns, rows = run_sql(connection, "SELECT * FROM orders")
        assert (columns, rows) == (ORDERS.table_schema.names, [])
    finally:
        connection.close()


def test_key_value_directories_above_the_lake_add_no_column(tmp_path: Path) -> None:
    data_dir = _build_lake(tmp_path / "env=prod")
    connection = connect(data_dir)
    try:
        columns, _ = run_sql(connection, "SELECT * FROM orders LIMIT 0")
        assert "env" not in columns
        assert columns == ORDERS.table_schema.names
    finally:
        connection.close()


def test_a_connection_is_a_snapshot_and_never_blocks_writers(tmp_path: Path) -> None:
    data_dir = _build_lake(tmp_path)
    old = connect(data_dir)
    try:
        _append_orders(data_dir, [_placed(10, _at(13, 0), "EUR", "1.0000")])
        assert _scalar(old, "SELECT count(*) FROM orders") == 10
        new = connect(data_dir)
        try:
            assert _scalar(new, "SELECT count(*) FROM orders") == 11
        finally:
            new.close()
    finally:
        old.close()


def test_streams_unknown_to_the_registry_get_a_stub_view(tmp_path: Path) -> None:
    connection = connect(tmp_path, streams=("orders", "metrics"))
    try:
        columns, rows = run_sql(connection, "SELECT * FROM metrics")
        assert columns[:3] == ["event_id", "event_type", "occurred_at"]
        assert rows == []
    finally:
        connection.close()


@pytest.mark.parametrize("streams", [("Orders",), ("batches",), ("a b",), ("orders", "orders")])
def test_invalid_stream_names_are_refused(tmp_path: Path, streams: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="stream name"):
        connect(tmp_path, streams=streams)


# ----------------------------------------------------------------------------- reports


def test_orders_per_window(conn: duckdb.DuckDBPyConnection) -> None:
    columns, rows = run_report(conn, "orders_per_window", {})
    assert columns == ["window_start", "window_end", "currency", "orders", "revenue"]
    assert rows == [
        (_at(10, 0), _at(10, 10), "EUR", 2, Decimal("10.2000")),
        (_at(10, 10), _at(10, 20), "USD", 1, Decimal("5.5500")),
        (_at(11, 50), _at(12, 0), "EUR", 1, Decimal("0.2000")),
    ]
    assert all(isinstance(row[4], Decimal) for row in rows)


def test_orders_per_window_parameters(conn: duckdb.DuckDBPyConnection) -> None:
    _, rows = run_report(
        conn, "orders_per_window", {"since": "2026-01-01T10:10:00Z", "window_minutes": "60"}
    )
    assert rows == [
        (_at(10, 0), _at(11, 0), "USD", 1, Decimal("5.5500")),
        (_at(11, 0), _at(12, 0), "EUR", 1, Decimal("0.2000")),
    ]
    # Without an offset a timestamp means UTC.
    _, rows = run_report(conn, "orders_per_window", {"until": "2026-01-01 10:10", "limit": "1"})
    assert rows == [(_at(10, 0), _at(10, 10), "EUR", 2, Decimal("10.2000"))]


def test_payment_failures(conn: duckdb.DuckDBPyConnection) -> None:
    columns, rows = run_report(conn, "payment_failures", {})
    assert columns == ["reason", "failures", "attempts", "failure_rate"]
    assert rows == [
        ("card_declined", 2, 6, Decimal("0.3333")),
        ("insufficient_funds", 1, 6, Decimal("0.1667")),
        ("(all)", 3, 6, Decimal("0.5000")),
    ]
    _, rows = run_report(conn, "payment_failures", {"until": "2026-01-01T11:00:00+00:00"})
    assert rows == [("card_declined", 1, 4, Decimal("0.2500")), ("(all)", 1, 4, Decimal("0.2500"))]


def test_dead_letters(conn: duckdb.DuckDBPyConnection) -> None:
    columns, rows = run_report(conn, "dead_letters", {})
    assert columns == ["stream", "error_class", "dead_letters"]
    assert rows == [("orders", "InvalidJson", 5), ("orders", "ValidationError", 1)]
    _, rows = run_report(conn, "dead_letters", {"since": "2026-01-01T12:00:00Z"})
    assert rows == [("orders", "InvalidJson", 2)]


def test_batches(conn: duckdb.DuckDBPyConnection) -> None:
    columns, rows = run_report(conn, "batches", {})
    assert columns[:9] == [
        "stream",
        "close_reason",
        "batches",
        "rows",
        "input_records",
        "duplicates",
        "conflicts",
        "dead_letters",
        "files",
    ]
    assert [row[:9] for row in rows] == [
        ("clicks", "time", 1, 5, 6, 1, 0, 0, 2),
        ("orders", "end", 1, 3, 6, 1, 0, 2, 2),
        ("orders", "size", 1, 7, 12, 1, 0, 4, 2),
    ]
    _, rows = run_report(conn, "batches", {"stream": "clicks"})
    assert [row[:3] for row in rows] == [("clicks", "time", 1)]


def test_revenue_by_currency(conn: duckdb.DuckDBPyConnection) -> None:
    columns, rows = run_report(conn, "revenue_by_currency", {})
    assert columns == ["currency", "orders", "revenue", "smallest_order", "largest_order"]
    assert rows == [
        ("EUR", 3, Decimal("10.4000"), Decimal("0.1000"), Decimal("10.1000")),
        ("USD", 1, Decimal("5.5500"), Decimal("5.5500"), Decimal("5.5500")),
    ]


def test_unknown_report_names_the_known_ones(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(KeyError) as caught:
        run_report(conn, "nope", {})
    assert isinstance(caught.value, UnknownReportError)
    assert "unknown report 'nope'" in str(caught.value)
    for name in REPORTS:
        assert name in str(caught.value)


def test_unknown_parameter_is_a_clear_value_error(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match=r"no parameter 'sinse'.*since") as caught:
        run_report(conn, "revenue_by_currency", {"sinse": "2026-01-01"})
    assert isinstance(caught.value, ReportParameterError)


@pytest.mark.parametrize(
    ("name", "value"),
    [("since", "yesterday"), ("limit", "0"), ("limit", "10; DROP VIEW orders"), ("limit", "x")],
)
def test_invalid_parameter_values_are_refused(
    conn: duckdb.DuckDBPyConnection, name: str, value: str
) -> None:
    with pytest.raises(ReportParameterError, match=repr(name)):
        run_report(conn, "orders_per_window", {name: value})


def test_sql_injection_through_a_parameter_is_inert(conn: duckdb.DuckDBPyConnection) -> None:
    before = run_report(conn, "orders_per_window", {})
    with pytest.raises(ReportParameterError, match="since"):
        run_report(conn, "orders_per_window", {"since": "2026-01-01'; DROP VIEW orders; --"})
    # A text parameter is bound as a value: it matches no stream and runs nothing.
    injected = "orders' OR '1'='1'; DROP VIEW batches; --"
    assert run_report(conn, "batches", {"stream": injected})[1] == []
    assert run_report(conn, "orders_per_window", {}) == before
    assert set(VIEWS) <= _views(conn)


@settings(max_examples=50, deadline=None)
@given(value=st.text(max_size=200))
def test_any_text_parameter_is_only_a_value(lake: Path, value: str) -> None:
    connection = connect(lake)
    try:
        _, rows = run_report(connection, "dead_letters", {"stream": value})
        if value != "orders":
            assert rows == []
        assert set(VIEWS) <= _views(connection)
    finally:
        connection.close()


def test_every_report_declares_exactly_the_parameters_it_uses() -> None:
    with pytest.raises(ValueError, match="declares parameters"):
        Report("bad", "uses an undeclared parameter", "SELECT $x", ())
    with pytest.raises(ValueError, match="single SELECT"):
        Report("bad", "writes", "COPY (SELECT 1) TO 'x.csv'", ())
    param = ReportParam("x", "text", None, "x")
    assert Report("good", "ok", "SELECT $x", (param,)).defaults == {"x": None}


# ----------------------------------------------------------------------------- lockdown


def test_copy_to_a_file_fails_and_creates_nothing(
    conn: duckdb.DuckDBPyConnection, tmp_path: Path, lake: Path
) -> None:
    for target in (tmp_path / "x.csv", lake / "lake" / "orders" / "x.csv"):
        with pytest.raises(duckdb.PermissionException):
            conn.execute(f"COPY (SELECT 1) TO '{target}'")
        with pytest.raises(ForbiddenStatementError, match="COPY"):
            run_sql(conn, f"COPY (SELECT 1) TO '{target}'")
        assert not target.exists()


def test_files_outside_the_lake_cannot_be_read(conn: duckdb.DuckDBPyConnection) -> None:
    for sql in (
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
    ):
        with pytest.raises(duckdb.PermissionException):
            run_sql(conn, sql)


def test_attach_fails_and_creates_nothing(conn: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    target = tmp_path / "x.duckdb"
    with pytest.raises(duckdb.PermissionException):
        conn.execute(f"ATTACH '{target}' AS x")
    with pytest.raises(ForbiddenStatementError, match="ATTACH"):
        run_sql(conn, f"ATTACH '{target}' AS x")
    assert not target.exists()


def test_extensions_cannot_be_installed_or_loaded(conn: duckdb.DuckDBPyConnection) -> None:
    for sql in ("INSTALL delta", "LOAD delta"):
        with pytest.raises(duckdb.Error):
            conn.execute(sql)
        with pytest.raises(ForbiddenStatementError):
            run_sql(conn, sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SET enable_external_access = true",
        "RESET enable_external_access",
        "SET lock_configuration = false",
        "SET allowed_directories = ['/']",
        "SET allowed_paths = ['/etc/passwd']",
    ],
)
def test_the_lockdown_cannot_be_undone(conn: duckdb.DuckDBPyConnection, sql: str) -> None:
    with pytest.raises(duckdb.InvalidInputException, match="locked"):
        conn.execute(sql)
    with pytest.raises(ForbiddenStatementError):
        run_sql(conn, sql)
    assert _scalar(conn, "SELECT current_setting('enable_external_access')") is False


@pytest.mark.parametrize(
    "sql",
    [
        "DROP VIEW orders",
        "CREATE TABLE t AS SELECT 1",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'",
        "SELECT 1; DROP VIEW orders",
        "CALL checkpoint()",
        "PRAGMA version",
        "",
    ],
)
def test_run_sql_only_runs_one_select(conn: duckdb.DuckDBPyConnection, sql: str) -> None:
    with pytest.raises(ForbiddenStatementError):
        run_sql(conn, sql)
    assert set(VIEWS) <= _views(conn)


def test_run_sql_accepts_every_kind_of_query(conn: duckdb.DuckDBPyConnection) -> None:
    assert _scalar(conn, "WITH x AS (SELECT 2 AS n) SELECT n FROM x") == 2
    assert _scalar(conn, "FROM orders SELECT count(*)") == 10
    assert run_sql(conn, "SHOW TABLES")[1]
    columns, rows = run_sql(conn, "SELECT 1 AS a, 'b' AS b;")
    assert (columns, rows) == (["a", "b"], [(1, "b")])


def test_a_failed_query_leaves_the_connection_usable(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(duckdb.Error):
        run_sql(conn, "SELECT no_such_column FROM orders")
    assert _scalar(conn, "SELECT count(*) FROM orders") == 10
