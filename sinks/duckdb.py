"""The query layer: DuckDB views over the committed lake, named reports and guarded SQL.

:func:`connect` opens an in-memory DuckDB connection whose views ``orders``,
``clicks``, ``logs`` and ``batches`` read the files of the latest committed
version of each Delta table, as listed by its transaction log: files of a
commit that never happened are never visible. The connection is a snapshot
taken when it was opened; connect again to see newer commits. It only reads
immutable Parquet files and takes no lock, so it never blocks the writers.

DuckDB's ``delta`` and ``httpfs`` extensions are not used: many deployments
cannot download extensions at run time, and the ``deltalake`` package already
knows the list of active files. A lake in an object store is read through
deltalake's own Arrow dataset of the same committed version (its files are
fetched by deltalake's object store, with the lake's storage options).

After the views exist the connection is locked down: no file outside the
tables' active files can be read or written, no extension installed or
loaded, no setting changed. User SQL should still go through :func:`run_sql`,
which only runs ``SELECT`` statements (see there why).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

from events.registry import STREAMS, stream_names
from events.stream import COMMON_COLUMNS, LINEAGE_COLUMNS, PARTITION_COLUMNS
from foundation.errors import LakeError, StreambatchError
from sinks.delta_lake import BATCHES_SCHEMA, BATCHES_TABLE
from sinks.lake_location import LakeLocation, LakeTable, lake_in

__all__ = [
    "REPORTS",
    "ForbiddenStatementError",
    "Report",
    "ReportParam",
    "ReportParameterError",
    "UnknownReportError",
    "connect",
    "lake_cursor",
    "run_report",
    "run_sql",
]

ParamKind = Literal["timestamp", "positive_int", "text"]

# Reader features whose meaning plain Parquet reads would silently ignore
# (deleted rows reappearing, columns under the wrong names).
_UNSUPPORTED_READER_FEATURES: Final = frozenset({"deletionVectors", "columnMapping"})
_MAX_TEXT_PARAM_CHARS: Final = 200
# The deltalake datasets behind the views of a connection to an object-store lake.
_DATASET_VIEWS: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, list[tuple[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


class UnknownReportError(StreambatchError, KeyError):
    """No report has this name; the message lists the known ones."""

    def __str__(self) -> str:
        # KeyError would print the repr of its argument, quotes and all.
        return str(self.args[0]) if self.args else ""


class ReportParameterError(StreambatchError, ValueError):
    """A report parameter is unknown or its value is invalid; the message names it."""


class ForbiddenStatementError(StreambatchError, ValueError):
    """Ad-hoc SQL that is not a single read-only ``SELECT`` statement."""


# --------------------------------------------------------------------------- connection


@dataclass(frozen=True)
class _TableSnapshot:
    """The active files and schema of one table at its latest committed version."""

    schema: pa.Schema
    partition_columns: tuple[str, ...]
    files: tuple[str, ...]


def connect(
    data_dir: LakeLocation | Path | str, *, streams: Sequence[str] | None = None
) -> duckdb.DuckDBPyConnection:
    """Open an in-memory DuckDB connection with one view per stream plus ``batches``.

    Each view reads the active files of the table's latest committed Delta
    version (a snapshot taken now). A table that does not exist yet gives an
    empty view with the stream's columns (a stub of common, lineage and
    partition columns for a stream unknown to ``events.registry``), so reports
    return no rows instead of failing. Partition columns ``event_date`` and
    ``event_hour`` are ``VARCHAR``; money columns stay ``DECIMAL``.

    The returned connection is locked down (see :func:`_lock_down`).

    Args:
        data_dir: the lake's location, or a data directory whose tables live
            under ``<data_dir>/lake/``.
        streams: stream names, each a lower-case identifier other than ``batches``
            (default: every registered stream).

    Raises:
        ValueError: a stream name is invalid or repeated.
        LakeError: a table needs Delta features we cannot honour, or lists a
            file outside its own directory.
    """
    names = _validate_streams(stream_names() if streams is None else streams)
    location = lake_in(data_dir)
    conn = duckdb.connect(":memory:")
    try:
        # Buckets and printed timestamps in UTC, whatever the machine's zone.
        conn.execute("SET GLOBAL TimeZone = 'UTC'")
        allowed: list[str] = []
        for name in (*names, BATCHES_TABLE):
            if not location.is_local:
                _register_dataset(conn, name, location.table(name), _fallback_schema(name))
                continue
            snapshot = _read_snapshot(location.local_path / name, _fallback_schema(name))
            conn.execute(_view_sql(conn, name, snapshot))
            allowed.extend(snapshot.files)
        _lock_down(conn, allowed)
    except BaseException:
        conn.close()
        raise
    return conn


def _validate_streams(streams: Sequence[str]) -> tuple[str, ...]:
    names = tuple(streams)
    for name in names:
        if not name.isidentifier() or not name.islower() or name == BATCHES_TABLE:
            raise ValueError(
                f"invalid stream name {name!r}: a lower-case identifier other than "
                f"{BATCHES_TABLE!r} is required"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"stream names repeat: {list(names)}")
    return names


def _fallback_schema(name: str) -> pa.Schema:
    """Columns of the empty view of a table that does not exist yet."""
    if name == BATCHES_TABLE:
        return BATCHES_SCHEMA
    stream = STREAMS.get(name)
    if stream is not None:
        return stream.table_schema
    return pa.schema([*COMMON_COLUMNS, *LINEAGE_COLUMNS, *PARTITION_COLUMNS])


def _read_snapshot(table_dir: Path, fallback: pa.Schema) -> _TableSnapshot:
    """The latest committed version of the table at ``table_dir``, or an empty one.

    A directory without a committed Delta log (nothing written yet, or a first
    commit in flight) counts as an empty table.
    """
    if not DeltaTable.is_deltatable(str(table_dir)):
        return _TableSnapshot(schema=fallback, partition_columns=(), files=())
    table = DeltaTable(str(table_dir))
    _check_reader_features(table, table_dir)
    root = table_dir.resolve()
    files: list[str] = []
    for uri in table.file_uris():
        path = _local_path(uri)
        # The log may name absolute paths; never let it steer reads out of the table.
        if not Path(path).resolve().is_relative_to(root):
            raise LakeError(f"the Delta table at {table_dir} lists a file outside it: {uri}")
        files.append(path)
    return _TableSnapshot(
        schema=pa.schema(table.schema().to_arrow()),
        partition_columns=tuple(table.metadata().partition_columns),
        files=tuple(files),
    )


def _register_dataset(
    conn: duckdb.DuckDBPyConnection, name: str, table: LakeTable, fallback: pa.Schema
) -> None:
    """A view over deltalake's dataset of the table's latest version (an object-store lake).

    The dataset is registered under a private name; the view selects the
    table's own columns in schema order. No table yet: an empty view.
    """
    try:
        exists = table.exists()
        delta = table.open() if exists else None
    except OSError as exc:
        raise table.location.error("read", exc) from None
    if delta is None:
        conn.execute(_view_sql(conn, name, _TableSnapshot(fallback, (), ())))
        return
    _check_reader_features(delta, table.uri)
    dataset = delta.to_pyarrow_dataset()
    _DATASET_VIEWS.setdefault(conn, []).append((name, dataset))
    _create_dataset_view(conn, name, dataset)


def _create_dataset_view(conn: duckdb.DuckDBPyConnection, name: str, dataset: Any) -> None:
    # Registered objects and views over them belong to one connection (a
    # cursor is another one): lake_cursor() creates them again on each cursor.
    source = f"_delta_{name}"
    conn.register(source, dataset)
    columns = ", ".join(_quote_identifier(column) for column in dataset.schema.names)
    conn.execute(
        f"CREATE TEMP VIEW {_quote_identifier(name)} AS "
        f"SELECT {columns} FROM {_quote_identifier(source)}"
    )


def lake_cursor(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of ``conn`` that sees the same lake views (close it after use).

    Use it instead of ``conn.cursor()``: the views of an object-store lake
    read Arrow datasets registered on ``conn`` alone.
    """
    cursor = conn.cursor()
    for name, dataset in _DATASET_VIEWS.get(conn, ()):
        _create_dataset_view(cursor, name, dataset)
    return cursor


def _check_reader_features(table: DeltaTable, where: object) -> None:
    protocol = table.protocol()
    features = set(protocol.reader_features or ())
    if protocol.min_reader_version == 2 or features & _UNSUPPORTED_READER_FEATURES:
        raise LakeError(
            f"the Delta table at {where} needs reader features the query layer cannot "
            f"honour (min_reader_version={protocol.min_reader_version}, "
            f"reader_features={sorted(features)})"
        )


def _local_path(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return url2pathname(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive
        raise LakeError(f"only local lakes can be queried, got a file at {uri}")
    return uri


def _view_sql(conn: duckdb.DuckDBPyConnection, name: str, snapshot: _TableSnapshot) -> str:
    """``CREATE VIEW`` text for one table.

    Views cannot take bound parameters, so file paths are written as quoted
    SQL string literals (they come from the Delta log, never from a user).
    Only the table's own columns are selected: DuckDB's hive partitioning
    turns every ``key=value`` directory of the path into a column, including
    ones above the lake (``/srv/env=prod/data``).
    """
    types = dict(
        zip(
            snapshot.schema.names,
            (str(t) for t in conn.from_arrow(snapshot.schema.empty_table()).types),
            strict=True,
        )
    )
    view = _quote_identifier(name)
    if not snapshot.files:
        nulls = ", ".join(
            f"CAST(NULL AS {sql_type}) AS {_quote_identifier(column)}"
            for column, sql_type in types.items()
        )
        return f"CREATE VIEW {view} AS SELECT {nulls} WHERE false"
    file_list = "[" + ", ".join(_quote_literal(f) for f in snapshot.files) + "]"
    options = ["union_by_name = true"]
    if snapshot.partition_columns:
        hive_types = ", ".join(
            f"{_quote_literal(column)}: {types[column]}" for column in snapshot.partition_columns
        )
        options += ["hive_partitioning = true", f"hive_types = {{{hive_types}}}"]
    else:
        options.append("hive_partitioning = false")
    source = f"read_parquet({file_list}, {', '.join(options)})"
    # A column added to the schema but in no file yet is absent from the files.
    present = set(conn.sql(f"SELECT * FROM {source}").columns)
    projection = ", ".join(
        _quote_identifier(column)
        if column in present
        else f"CAST(NULL AS {sql_type}) AS {_quote_identifier(column)}"
        for column, sql_type in types.items()
    )
    return f"CREATE VIEW {view} AS SELECT {projection} FROM {source}"


def _lock_down(conn: duckdb.DuckDBPyConnection, files: Sequence[str]) -> None:
    """Forbid every file access but reading ``files``, then freeze the settings.

    The order matters. ``allowed_paths`` can no longer be changed once
    external access is disabled, so it comes first; the views keep working
    because DuckDB checks each file they read against it.

    ``allowed_paths`` (the exact active files) rather than ``allowed_directories``
    set to the lake: an allowed directory is writable too (``COPY ... TO
    '<lake>/x.parquet'`` succeeds), and stray, uncommitted files in it would be
    readable. Even an allowed file can be overwritten (``COPY ... TO <file>
    (USE_TMP_FILE false)``, ``ATTACH <file>``): no DuckDB setting makes the
    file system read-only, hence the ``SELECT``-only rule of :func:`run_sql`.

    ``temp_directory`` is emptied because DuckDB allows writes to it after
    external access is disabled (``./.tmp`` by default). Queries then cannot
    spill to disk, which the small aggregations of this layer never need.
    """
    conn.execute("SET temp_directory = ''")
    conn.execute("SET autoinstall_known_extensions = false")
    conn.execute("SET autoload_known_extensions = false")
    conn.execute("SET allow_community_extensions = false")
    conn.execute("SET allowed_paths = $files", {"files": list(files)})
    conn.execute("SET enable_external_access = false")
    conn.execute("SET lock_configuration = true")


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class ReportParam:
    """One parameter of a report, given as text and bound (never formatted) into its SQL.

    Attributes:
        name: the ``$name`` used in the report's SQL.
        kind: ``timestamp`` (ISO 8601; without an offset it means UTC),
            ``positive_int`` or ``text`` (at most 200 characters).
        default: the value used when none is given; ``None`` binds SQL ``NULL``
            (the reports read it as "no filter").
        description: one line for ``--help`` and the docs.
    """

    name: str
    kind: ParamKind
    default: str | None
    description: str

    def parse(self, raw: str | None) -> Any:
        """The value to bind for ``raw`` (``None`` stays ``None``).

        Raises:
            ReportParameterError: ``raw`` is not a valid value of ``kind``.
        """
        if raw is None:
            return None
        if self.kind == "timestamp":
            return self._parse_timestamp(raw)
        if self.kind == "positive_int":
            return self._parse_positive_int(raw)
        if len(raw) > _MAX_TEXT_PARAM_CHARS:
            message = f"parameter {self.name!r} is longer than {_MAX_TEXT_PARAM_CHARS} characters"
            raise ReportParameterError(message)
        return raw

    def _parse_timestamp(self, raw: str) -> datetime:
        try:
            value = datetime.fromisoformat(raw.strip())
        except ValueError:
            message = (
                f"parameter {self.name!r} must be an ISO 8601 timestamp "
                f"(e.g. 2026-11-28T14:00:00Z), got {raw!r}"
            )
            raise ReportParameterError(message) from None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    def _parse_positive_int(self, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            value = 0
        if value < 1:
            message = f"parameter {self.name!r} must be a positive integer, got {raw!r}"
            raise ReportParameterError(message)
        return value


@dataclass(frozen=True)
class Report:
    """A named query over the views, with bound parameters.

    Attributes:
        name: what ``streambatch query --report`` calls it.
        description: one line.
        sql: a single ``SELECT`` using exactly the parameters as ``$name``.
        params: its parameters, with defaults.
    """

    name: str
    description: str
    sql: str
    params: tuple[ReportParam, ...] = ()

    def __post_init__(self) -> None:
        statements = duckdb.extract_statements(self.sql)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise ValueError(f"report {self.name!r} must be a single SELECT statement")
        used = set(statements[0].named_parameters)
        declared = {param.name for param in self.params}
        if used != declared:
            raise ValueError(
                f"report {self.name!r} declares parameters {sorted(declared)} "
                f"but its SQL uses {sorted(used)}"
            )

    @property
    def defaults(self) -> dict[str, str | None]:
        """Each parameter's default, by name."""
        return {param.name: param.default for param in self.params}

    def bind(self, values: Mapping[str, str]) -> dict[str, Any]:
        """The parameters to execute the SQL with: ``values`` over the defaults, parsed.

        Raises:
            ReportParameterError: a name is not a parameter of this report, or a
                value is invalid.
        """
        known = {param.name: param for param in self.params}
        unknown = sorted(set(values) - set(known))
        if unknown:
            message = (
                f"report {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters: {', '.join(known) or 'none'}"
            )
            raise ReportParameterError(message)
        return {name: param.parse(values.get(name, param.default)) for name, param in known.items()}


_SINCE = ReportParam("since", "timestamp", None, "only events at or after this time (UTC)")
_UNTIL = ReportParam("until", "timestamp", None, "only events before this time (UTC)")
_COMMITTED_SINCE = ReportParam(
    "since", "timestamp", None, "only batches committed at or after this time (UTC)"
)
_COMMITTED_UNTIL = ReportParam(
    "until", "timestamp", None, "only batches committed before this time (UTC)"
)
_STREAM = ReportParam("stream", "text", None, "only this stream")
_LIMIT = ReportParam("limit", "positive_int", "1000", "at most this many rows")

_OCCURRED_BETWEEN = """
    AND ($since IS NULL OR occurred_at >= CAST($since AS TIMESTAMPTZ))
    AND ($until IS NULL OR occurred_at < CAST($until AS TIMESTAMPTZ))"""
_COMMITTED_BETWEEN = """
    AND ($since IS NULL OR committed_at >= CAST($since AS TIMESTAMPTZ))
    AND ($until IS NULL OR committed_at < CAST($until AS TIMESTAMPTZ))
    AND ($stream IS NULL OR stream = CAST($stream AS VARCHAR))"""

_REPORT_LIST: Final = (
    Report(
        name="orders_per_window",
        description="OrderPlaced count and revenue per time window and currency",
        sql=f"""
SELECT
    time_bucket(to_minutes(CAST($window_minutes AS BIGINT)), occurred_at) AS window_start,
    window_start + to_minutes(CAST($window_minutes AS BIGINT)) AS window_end,
    currency,
    count(*) AS orders,
    sum(total_amount) AS revenue
FROM orders
WHERE event_type = 'OrderPlaced'{_OCCURRED_BETWEEN}
GROUP BY ALL
ORDER BY window_start, currency
LIMIT $limit""",
        params=(
            ReportParam("window_minutes", "positive_int", "10", "window length in minutes"),
            _SINCE,
            _UNTIL,
            _LIMIT,
        ),
    ),
    Report(
        name="payment_failures",
        description=(
            "PaymentFailed by reason, and failures / (PaymentAuthorized + PaymentFailed); "
            "the row '(all)' is the total"
        ),
        sql=f"""
WITH payments AS (
    SELECT event_type, reason
    FROM orders
    WHERE event_type IN ('PaymentAuthorized', 'PaymentFailed'){_OCCURRED_BETWEEN}
),
totals AS (
    SELECT
        count(*) FILTER (WHERE event_type = 'PaymentFailed') AS failures,
        count(*) AS attempts
    FROM payments
),
failures AS (
    SELECT 0 AS total_row, reason, count(*) AS failures
    FROM payments
    WHERE event_type = 'PaymentFailed'
    GROUP BY reason
    UNION ALL
    SELECT 1, '(all)', failures FROM totals WHERE attempts > 0
)
SELECT
    f.reason,
    f.failures,
    t.attempts,
    CAST(round(f.failures / t.attempts, 4) AS DECIMAL(9, 4)) AS failure_rate
FROM failures AS f, totals AS t
ORDER BY f.total_row, f.failures DESC, f.reason""",
        params=(_SINCE, _UNTIL),
    ),
    Report(
        name="order_workflow",
        description=(
            "events of each workflow step and the orders they concern, in workflow order "
            "(the handlers' work as the lake recorded it)"
        ),
        sql=f"""
SELECT
    event_type,
    count(*) AS events,
    count(DISTINCT order_id) AS orders
FROM orders
WHERE true{_OCCURRED_BETWEEN}
GROUP BY event_type
ORDER BY CASE event_type
    WHEN 'OrderPlaced' THEN 1 WHEN 'StockReserved' THEN 2 WHEN 'PaymentAuthorized' THEN 3
    WHEN 'PaymentFailed' THEN 4 WHEN 'StockDecreased' THEN 5 WHEN 'StockReleased' THEN 6
    WHEN 'PurchaseOrderSubmitted' THEN 7 WHEN 'CustomerNotified' THEN 8
    WHEN 'FinanceAlerted' THEN 9 ELSE 10 END, event_type""",
        params=(_SINCE, _UNTIL),
    ),
    Report(
        name="dead_letters",
        description="records dead-lettered per stream and error class, from the batches table",
        sql=f"""
SELECT
    b.stream,
    j.key AS error_class,
    sum(CAST(j.value AS BIGINT)) AS dead_letters
FROM batches AS b, json_each(b.dead_letters_by_class) AS j
WHERE true{_COMMITTED_BETWEEN}
GROUP BY ALL
ORDER BY dead_letters DESC, b.stream, error_class""",
        params=(_COMMITTED_SINCE, _COMMITTED_UNTIL, _STREAM),
    ),
    Report(
        name="batches",
        description="committed batches per stream and close reason (size, time, end)",
        sql=f"""
SELECT
    stream,
    close_reason,
    count(*) AS batches,
    sum("rows") AS "rows",
    sum(input_records) AS input_records,
    sum(duplicates) AS duplicates,
    sum(conflicts) AS conflicts,
    sum(dead_letters) AS dead_letters,
    sum(files) AS files
FROM batches
WHERE true{_COMMITTED_BETWEEN}
GROUP BY ALL
ORDER BY stream, close_reason""",
        params=(_COMMITTED_SINCE, _COMMITTED_UNTIL, _STREAM),
    ),
    Report(
        name="revenue_by_currency",
        description="OrderPlaced count, revenue and order size range per currency",
        sql=f"""
SELECT
    currency,
    count(*) AS orders,
    sum(total_amount) AS revenue,
    min(total_amount) AS smallest_order,
    max(total_amount) AS largest_order
FROM orders
WHERE event_type = 'OrderPlaced'{_OCCURRED_BETWEEN}
GROUP BY currency
ORDER BY currency""",
        params=(_SINCE, _UNTIL),
    ),
)

_WINDOW = ReportParam("window_minutes", "positive_int", "10", "window length in minutes")
_BUCKET = "time_bucket(to_minutes(CAST($window_minutes AS BIGINT)), occurred_at)"

_STREAM_REPORTS: Final = (
    Report(
        name="click_funnel",
        description=(
            "sessions per window that viewed a page, added to cart, started checkout, and "
            "the orders placed by their users in the same window (conversion = ordered / viewed)"
        ),
        sql=f"""
WITH sessions AS (
    SELECT
        {_BUCKET} AS window_start,
        session_id,
        any_value(user_id) FILTER (WHERE user_id IS NOT NULL) AS user_id,
        bool_or(event_type = 'page_view') AS viewed,
        bool_or(event_type = 'add_to_cart') AS added,
        bool_or(event_type = 'checkout_started') AS checked_out
    FROM clicks
    WHERE true{_OCCURRED_BETWEEN}
    GROUP BY ALL
),
placed AS (
    SELECT DISTINCT {_BUCKET} AS window_start, customer_id
    FROM orders
    WHERE event_type = 'OrderPlaced'{_OCCURRED_BETWEEN}
)
SELECT
    s.window_start,
    count(*) FILTER (WHERE s.viewed) AS page_view,
    count(*) FILTER (WHERE s.added) AS add_to_cart,
    count(*) FILTER (WHERE s.checked_out) AS checkout_started,
    count(*) FILTER (WHERE s.checked_out AND p.customer_id IS NOT NULL) AS order_placed,
    CAST(round(
        count(*) FILTER (WHERE s.checked_out AND p.customer_id IS NOT NULL)
        / greatest(count(*) FILTER (WHERE s.viewed), 1), 4) AS DECIMAL(9, 4)) AS conversion
FROM sessions AS s
LEFT JOIN placed AS p ON p.window_start = s.window_start AND p.customer_id = s.user_id
GROUP BY s.window_start
ORDER BY s.window_start
LIMIT $limit""",
        params=(_WINDOW, _SINCE, _UNTIL, _LIMIT),
    ),
    Report(
        name="error_rate",
        description="log lines, ERROR+CRITICAL lines and their share per service and window",
        sql=f"""
SELECT
    {_BUCKET} AS window_start,
    service,
    count(*) AS lines,
    count(*) FILTER (WHERE level IN ('ERROR', 'CRITICAL')) AS errors,
    CAST(round(count(*) FILTER (WHERE level IN ('ERROR', 'CRITICAL')) / count(*), 4)
        AS DECIMAL(9, 4)) AS error_rate
FROM logs
WHERE true{_OCCURRED_BETWEEN}
GROUP BY ALL
ORDER BY window_start, service
LIMIT $limit""",
        params=(_WINDOW, _SINCE, _UNTIL, _LIMIT),
    ),
    Report(
        name="top_failing_services",
        description="services by ERROR+CRITICAL lines, with their error rate and distinct traces",
        sql=f"""
SELECT
    service,
    count(*) FILTER (WHERE level IN ('ERROR', 'CRITICAL')) AS errors,
    count(*) AS lines,
    CAST(round(count(*) FILTER (WHERE level IN ('ERROR', 'CRITICAL')) / count(*), 4)
        AS DECIMAL(9, 4)) AS error_rate,
    count(DISTINCT trace_id) FILTER (WHERE level IN ('ERROR', 'CRITICAL')) AS failing_traces
FROM logs
WHERE true{_OCCURRED_BETWEEN}
GROUP BY service
ORDER BY errors DESC, service
LIMIT $limit""",
        params=(_SINCE, _UNTIL, _LIMIT),
    ),
)

REPORTS: Final[dict[str, Report]] = {
    report.name: report for report in (*_REPORT_LIST, *_STREAM_REPORTS)
}
"""Every named report, by name."""


def run_report(
    conn: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, str] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run the report ``name`` with ``params`` (text values) over the defaults.

    Values are parsed in Python and bound as parameters, never written into
    the SQL text.

    Returns:
        The column names and all rows; money columns are ``Decimal``.

    Raises:
        UnknownReportError: no report is called ``name`` (a ``KeyError``).
        ReportParameterError: a parameter is unknown or invalid (a ``ValueError``).
    """
    try:
        report = REPORTS[name]
    except KeyError:
        message = f"unknown report {name!r}; known reports: {', '.join(sorted(REPORTS))}"
        raise UnknownReportError(message) from None
    bound = report.bind(params or {})
    return _fetch(conn, report.sql, bound)


# --------------------------------------------------------------------------- ad-hoc SQL


def run_sql(conn: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one user ``SELECT`` statement (``WITH``, ``FROM``, ``DESCRIBE``, ``SHOW`` too).

    Anything else is refused before it runs: the lockdown of :func:`connect`
    cannot stop ``COPY ... (USE_TMP_FILE false)`` or ``ATTACH`` from
    overwriting an active lake file, and ``EXPLAIN ANALYZE`` executes its
    statement, so only plain queries are let through.

    Returns:
        The column names and all rows.

    Raises:
        ForbiddenStatementError: ``sql`` is not exactly one ``SELECT`` statement.
        duckdb.Error: the query itself failed (syntax, unknown column, ...).
    """
    statements = duckdb.extract_statements(sql)
    if len(statements) != 1:
        message = f"expected exactly one SQL statement, got {len(statements)}"
        raise ForbiddenStatementError(message)
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        message = f"only read-only SELECT queries are allowed here, got a {kind.name} statement"
        raise ForbiddenStatementError(message)
    return _fetch(conn, sql, None)


def _fetch(
    conn: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    # A cursor of its own: an unfinished result on the shared connection would
    # otherwise make every later call on it fail.
    cursor = lake_cursor(conn)
    try:
        cursor.execute(sql, params)
        columns = [column[0] for column in cursor.description or ()]
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return columns, rows
