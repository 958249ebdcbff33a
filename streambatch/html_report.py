"""A self-contained HTML report of the lake: five interactive charts and their data.

The page needs nothing at view time: plotly.js is inlined from the plotly
wheel (see :mod:`streambatch.report_charts`), with no font, stylesheet or
image from anywhere. Its Content-Security-Policy forbids every fetch and
allows only the page's own inline scripts. Every string that comes from the
data (currencies, services, error classes, stream names) is escaped for the
place it goes (HTML text, or plotly's labels); money is printed from
``Decimal`` exactly (floats only place marks). Hover gives each point's exact
value; drag zooms, a double click zooms out.

Charts, each a ``<div class="plot" data-series-count="N">`` drawn by plotly:

- revenue per 10-minute window, one line per currency (currencies are not
  converted, so they are not stacked);
- the click funnel, one bar per step, summed over the windows shown;
- the error rate per service and window, one line per service;
- rows per committed batch over commit time, one colour per close reason;
- dead letters per error class, stacked by stream.

Below each chart its data, as a table. The queries are :mod:`sinks.duckdb`'s.

The windowed charts (revenue, funnel, error rate) cover ``span`` (24 hours)
of event time ending with the newest order, click or log line in the lake,
not with the wall clock: a lake of last week's events still shows them. The
workflow's own step events are stamped when a handler ran, so they do not
move the window. An explicit ``until`` wins. The page says which window it shows.
"""

from __future__ import annotations

import html
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import duckdb

from sinks.duckdb import connect, lake_cursor, run_report
from sinks.lake_location import LakeLocation
from streambatch.report_charts import (
    BarSeries,
    LineSeries,
    Point,
    ScatterSeries,
    bar_chart,
    line_chart,
    plotly_script,
    scatter_chart,
)

__all__ = [
    "DEFAULT_SPAN",
    "MAX_BATCHES",
    "MAX_SERIES",
    "WINDOW",
    "render_report_html",
    "write_report",
]

WINDOW: Final = timedelta(minutes=10)
"""Width of the event-time windows of the revenue and error-rate charts."""

DEFAULT_SPAN: Final = timedelta(hours=24)
"""Event time covered by the windowed charts, back from the newest charted event in the lake."""

MAX_SERIES: Final = 10
"""At most this many series per chart (the biggest); the page says how many were left out."""

MAX_BATCHES: Final = 2_000
"""The batches chart shows the latest this many committed batches."""

_REPORT_ROW_LIMIT: Final = 200_000
_FUNNEL_STEPS: Final = ("page_view", "add_to_cart", "checkout_started", "order_placed")
_NO_DATA: Final = "no data yet"

# No fetch of any kind; the only code is the page's own (plotly.js and each chart's call).
_CSP: Final = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)

_STYLE: Final = """
:root { color-scheme: light; }
body { margin: 0; background: #f6f7f9; color: #1f2328;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header, main { max-width: 1000px; margin: 0 auto; padding: 0 16px; }
header { padding-top: 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 0 0 2px; }
.meta, .note { color: #57606a; margin: 0 0 6px; }
nav a { margin-right: 12px; color: #0969da; }
section.chart { background: #fff; border: 1px solid #d0d7de; border-radius: 6px;
  padding: 12px 16px 8px; margin: 12px 0; }
div.plot { width: 100%; }
details { margin: 4px 0; }
summary { cursor: pointer; color: #0969da; }
table { border-collapse: collapse; margin: 6px 0; font-size: 12px; }
th, td { border-bottom: 1px solid #eaeef2; padding: 2px 10px; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


# --------------------------------------------------------------------------- public API


def render_report_html(
    conn: duckdb.DuckDBPyConnection,
    title: str,
    generated_at: datetime,
    *,
    span: timedelta = DEFAULT_SPAN,
    until: datetime | None = None,
) -> str:
    """The report page for the views of ``conn`` (see :func:`sinks.duckdb.connect`).

    Args:
        conn: a connection with the views ``orders``, ``clicks``, ``logs``, ``batches``.
        title: the page title (escaped like everything else).
        generated_at: when the report was made; timezone-aware, printed in UTC.
        span: event time covered by the windowed charts.
        until: end of the windowed charts' event time; ``None``: the end of the
            window holding the newest order, click or log line in the lake.

    Raises:
        ValueError: ``generated_at`` or ``until`` is naive, or ``span`` is
            shorter than a window.
    """
    if generated_at.tzinfo is None:
        raise ValueError("generated_at must be timezone-aware")
    if until is not None and until.tzinfo is None:
        raise ValueError("until must be timezone-aware")
    if span < WINDOW:
        raise ValueError(f"span must be at least one window ({WINDOW}), got {span}")
    given = until is not None
    newest = _newest_charted_event(conn)
    if until is None and newest is not None:
        until = _window_start(newest) + WINDOW
    params = {
        "window_minutes": str(WINDOW // timedelta(minutes=1)),
        "limit": str(_REPORT_ROW_LIMIT),
    }
    if until is not None:
        params["since"] = (until - span).isoformat()
        params["until"] = until.isoformat()
    _, revenue_rows = run_report(conn, "orders_per_window", params)
    _, funnel_rows = run_report(conn, "click_funnel", params)
    _, error_rows = run_report(conn, "error_rate", params)
    _, dead_letter_rows = run_report(conn, "dead_letters")
    _, batch_totals = run_report(conn, "batches")
    batch_rows = _latest_batches(conn)

    windows = _window_grid([row[0] for row in (*revenue_rows, *error_rows)])
    sections = [
        _revenue_section(windows, revenue_rows),
        _funnel_section(funnel_rows),
        _error_rate_section(windows, error_rows),
        _batches_section(batch_rows, batch_totals),
        _dead_letters_section(dead_letter_rows),
    ]
    coverage = _coverage(span, until, newest, given=given)
    nav = "".join(
        f'<a href="#{chart_id}">{_escape_html(label)}</a>' for chart_id, label, _ in sections
    )
    body = "\n".join(text for _, _, text in sections)
    generated = _format_time(generated_at, seconds=True)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_escape_html(_CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="streambatch">
<title>{_escape_html(title)}</title>
<style>{_STYLE}</style>
{plotly_script()}
</head>
<body>
<header>
<h1>{_escape_html(title)}</h1>
<p class="meta">Generated {_escape_html(generated)} from the committed
lake. {_escape_html(coverage)}</p>
<nav>{nav}</nav>
</header>
<main>
{body}
</main>
</body>
</html>
"""


def write_report(
    data_dir: LakeLocation | Path | str,
    path: Path | str,
    *,
    title: str = "streambatch report",
    span: timedelta = DEFAULT_SPAN,
    until: datetime | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Path:
    """Render the report of the lake (``data_dir``: its location or data directory) to ``path``.

    The page is written to a temporary file next to ``path`` and renamed over
    it: a reader sees the old report or the new one, never half of one.

    Returns:
        ``path`` as a ``Path``.
    """
    target = Path(path)
    with connect(data_dir) as conn:
        page = render_report_html(conn, title, now(), span=span, until=until)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(page)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private; a report is meant to be read by others.
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


# --------------------------------------------------------------------------- queries


def _newest_charted_event(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    """``occurred_at`` of the newest event a windowed chart draws, or None if there is none.

    Only what the charts draw counts: OrderPlaced (not the workflow's steps,
    stamped when a handler ran, which would move the window to the wall clock),
    clicks and log lines.
    """
    cursor = lake_cursor(conn)
    try:
        cursor.execute(
            "SELECT max(latest) FROM ("
            " SELECT max(occurred_at) AS latest FROM orders WHERE event_type = 'OrderPlaced'"
            " UNION ALL SELECT max(occurred_at) FROM clicks"
            " UNION ALL SELECT max(occurred_at) FROM logs)"
        )
        row = cursor.fetchone()
    finally:
        cursor.close()
    latest = row[0] if row else None
    return None if latest is None else latest.astimezone(UTC)


def _coverage(
    span: timedelta, until: datetime | None, newest: datetime | None, *, given: bool
) -> str:
    """The sentence of the page that says which event time the windowed charts show."""
    if until is None:
        return "No orders, clicks or log lines in the lake yet."
    shown = (
        f"Revenue, click funnel and error rate show event time from "
        f"{_format_time(until - span)} to {_format_time(until)} ({_hours(span)}, "
        f"windows of {_minutes(WINDOW)} minutes)"
    )
    if newest is None:
        return f"{shown}; the lake has no orders, clicks or log lines yet."
    newest_text = _format_time(newest)
    if given:
        return f"{shown}, as asked; the newest order, click or log line is at {newest_text}."
    return f"{shown}, ending with the newest order, click or log line in the lake ({newest_text})."


def _latest_batches(conn: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    cursor = lake_cursor(conn)
    try:
        cursor.execute(
            'SELECT committed_at, stream, "partition", first_offset, next_offset, "rows", '
            "close_reason FROM batches "
            'ORDER BY committed_at DESC, stream, "partition", first_offset LIMIT $limit',
            {"limit": MAX_BATCHES},
        )
        rows = cursor.fetchall()
    finally:
        cursor.close()
    rows.reverse()
    return rows


def _window_start(moment: datetime) -> datetime:
    """The window holding ``moment``, aligned like DuckDB's ``time_bucket`` (to the epoch)."""
    utc = moment.astimezone(UTC)
    step = int(WINDOW.total_seconds())
    return datetime.fromtimestamp(int(utc.timestamp()) // step * step, tz=UTC)


def _window_grid(starts: Iterable[datetime]) -> list[datetime]:
    """Every window from the first to the last of ``starts``, empty ones included."""
    known = [start.astimezone(UTC) for start in starts if start is not None]
    if not known:
        return []
    first, last = min(known), max(known)
    count = (last - first) // WINDOW + 1
    return [first + WINDOW * index for index in range(count)]


# --------------------------------------------------------------------------- sections

_Section = tuple[str, str, str]  # (id, nav label, html)


def _revenue_section(windows: list[datetime], rows: Sequence[tuple[Any, ...]]) -> _Section:
    """Rows: window_start, window_end, currency, orders, revenue."""
    chart_id, heading = "revenue", "Revenue per 10-minute window by currency"
    orders_by: dict[str, int] = {}
    totals: dict[str, Decimal] = {}
    cells: dict[tuple[str, datetime], tuple[int, Decimal]] = {}
    for start, _, currency, orders, revenue in rows:
        name = _text(currency)
        orders_by[name] = orders_by.get(name, 0) + orders
        totals[name] = totals.get(name, Decimal(0)) + revenue
        cells[(name, start.astimezone(UTC))] = (orders, revenue)
    shown, hidden = _pick_series(orders_by)
    series: list[LineSeries] = []
    for name in shown:
        points: list[Point | None] = []
        for start in windows:
            # No order in a window of the grid means no revenue there, not missing data.
            orders, revenue = cells.get((name, start), (0, Decimal(0)))
            label = (
                f"{name}, {_format_time(start)} to {_format_time(start + WINDOW)}: "
                f"{orders:,} orders, revenue {_money(revenue)}"
            )
            points.append(Point(revenue, label))
        series.append(LineSeries(name, f"{name} {_money(totals[name])}", points))
    note = (
        "OrderPlaced events per window; each currency is its own line (no conversion). "
        "The legend gives each currency's total over the windows shown."
    )
    chart = line_chart(
        chart_id,
        windows,
        series,
        x_label="window start (UTC)",
        y_label="revenue (in each currency)",
    )
    table = _table(
        ("window start (UTC)", "currency", "orders", "revenue"),
        [
            (_format_time(start), _text(currency), f"{orders:,}", _money(revenue))
            for start, _, currency, orders, revenue in rows
        ],
        numeric=(2, 3),
    )
    return chart_id, "Revenue", _section(chart_id, heading, note, hidden, chart, table)


def _funnel_section(rows: Sequence[tuple[Any, ...]]) -> _Section:
    """Rows: window_start, page_view, add_to_cart, checkout_started, order_placed, conversion."""
    chart_id, heading = "funnel", "Click funnel"
    sums = [sum(row[index + 1] for row in rows) for index in range(len(_FUNNEL_STEPS))]
    first = sums[0]
    labels = [
        f"{count:,} ({_percent(Decimal(count) / first)})" if first else f"{count:,}"
        for count in sums
    ]
    series = [
        BarSeries(step, step, {index: count}, {index: labels[index]})
        for index, (step, count) in enumerate(zip(_FUNNEL_STEPS, sums, strict=True))
    ]
    if not rows:
        series = []
    note = (
        "Sessions per 10-minute window that viewed a page, added to cart and started "
        "checkout, and those whose user placed an order in the same window; summed over "
        "the windows shown. Percentages are of page_view."
    )
    chart = bar_chart(
        chart_id, list(_FUNNEL_STEPS), series, x_label="funnel step", y_label="sessions"
    )
    table = _table(
        ("step", "sessions", "share of page_view"),
        [
            (step, f"{count:,}", _percent(Decimal(count) / first) if first else "")
            for step, count in zip(_FUNNEL_STEPS, sums, strict=True)
        ]
        if rows
        else [],
        numeric=(1, 2),
    )
    return chart_id, "Click funnel", _section(chart_id, heading, note, 0, chart, table)


def _error_rate_section(windows: list[datetime], rows: Sequence[tuple[Any, ...]]) -> _Section:
    """Rows: window_start, service, lines, errors, error_rate."""
    chart_id, heading = "error-rate", "Error rate per service"
    errors_by: dict[str, int] = {}
    cells: dict[tuple[str, datetime], tuple[int, int, Decimal]] = {}
    for start, service, lines, errors, rate in rows:
        name = _text(service)
        errors_by[name] = errors_by.get(name, 0) + errors
        cells[(name, start.astimezone(UTC))] = (lines, errors, rate)
    shown, hidden = _pick_series(errors_by)
    series: list[LineSeries] = []
    for name in shown:
        points: list[Point | None] = []
        for start in windows:
            cell = cells.get((name, start))
            if cell is None:
                # No line at all from the service: the rate is unknown, leave a gap.
                points.append(None)
                continue
            lines, errors, rate = cell
            label = (
                f"{name}, {_format_time(start)} to {_format_time(start + WINDOW)}: "
                f"{errors:,} of {lines:,} lines ERROR or CRITICAL ({_percent(rate)})"
            )
            points.append(Point(rate * 100, label))
        series.append(LineSeries(name, f"{name} ({errors_by[name]:,} errors)", points))
    note = "Share of ERROR and CRITICAL log lines per service and 10-minute window."
    chart = line_chart(
        chart_id, windows, series, x_label="window start (UTC)", y_label="error rate (%)"
    )
    table = _table(
        ("window start (UTC)", "service", "lines", "errors", "error rate"),
        [
            (_format_time(start), _text(service), f"{lines:,}", f"{errors:,}", _percent(rate))
            for start, service, lines, errors, rate in rows
        ],
        numeric=(2, 3, 4),
    )
    return chart_id, "Error rate", _section(chart_id, heading, note, hidden, chart, table)


def _batches_section(
    rows: Sequence[tuple[Any, ...]], totals: Sequence[tuple[Any, ...]]
) -> _Section:
    """Rows: committed_at, stream, partition, first_offset, next_offset, rows, close_reason."""
    chart_id, heading = "batches", "Batch sizes and close reasons"
    counts: dict[str, int] = {}
    for row in rows:
        reason = _text(row[6])
        counts[reason] = counts.get(reason, 0) + 1
    shown, hidden = _pick_series(counts)
    series = [
        ScatterSeries(
            reason,
            f"{reason} ({counts[reason]:,} batches)",
            [
                (
                    committed_at.astimezone(UTC),
                    Decimal(size),
                    f"{_text(stream)}/{partition} offsets {first:,} to {end - 1:,}: "
                    f"{size:,} rows, closed by {reason} at "
                    f"{_format_time(committed_at, seconds=True)}",
                )
                for committed_at, stream, partition, first, end, size, close in rows
                if _text(close) == reason
            ],
        )
        for reason in shown
    ]
    note = (
        f"Rows per committed batch (the latest {MAX_BATCHES:,} at most) by commit time, "
        "coloured by why the batch closed: size, time or end of input."
    )
    chart = scatter_chart(chart_id, series, x_label="committed at (UTC)", y_label="rows per batch")
    table = _table(
        (
            "stream",
            "close reason",
            "batches",
            "rows",
            "input records",
            "duplicates",
            "dead letters",
        ),
        [
            (
                _text(row[0]),
                _text(row[1]),
                f"{row[2]:,}",
                f"{row[3]:,}",
                f"{row[4]:,}",
                f"{row[5]:,}",
                f"{row[7]:,}",
            )
            for row in totals
        ],
        numeric=(2, 3, 4, 5, 6),
    )
    return chart_id, "Batches", _section(chart_id, heading, note, hidden, chart, table)


def _dead_letters_section(rows: Sequence[tuple[Any, ...]]) -> _Section:
    """Rows: stream, error_class, dead_letters."""
    chart_id, heading = "dead-letters", "Dead letters by error class"
    by_stream: dict[str, int] = {}
    by_class: dict[str, int] = {}
    cells: dict[tuple[str, str], int] = {}
    for stream, error_class, count in rows:
        stream_name, class_name = _text(stream), _text(error_class)
        by_stream[stream_name] = by_stream.get(stream_name, 0) + count
        by_class[class_name] = by_class.get(class_name, 0) + count
        cells[(stream_name, class_name)] = cells.get((stream_name, class_name), 0) + count
    classes = sorted(by_class, key=lambda name: (-by_class[name], name))
    shown, hidden = _pick_series(by_stream)
    series = []
    for stream_name in shown:
        values = {
            index: cells[(stream_name, name)]
            for index, name in enumerate(classes)
            if (stream_name, name) in cells
        }
        labels = {
            index: f"{stream_name}, {classes[index]}: {count:,} dead letters"
            for index, count in values.items()
        }
        series.append(
            BarSeries(stream_name, f"{stream_name} ({by_stream[stream_name]:,})", values, labels)
        )
    note = "Records sent to the dead-letter topics, per error class and stream, all time."
    chart = bar_chart(chart_id, classes, series, x_label="error class", y_label="dead letters")
    table = _table(
        ("stream", "error class", "dead letters"),
        [(_text(stream), _text(cls), f"{count:,}") for stream, cls, count in rows],
        numeric=(2,),
    )
    return chart_id, "Dead letters", _section(chart_id, heading, note, hidden, chart, table)


def _section(chart_id: str, heading: str, note: str, hidden: int, chart: str, table: str) -> str:
    more = (
        f'<p class="note">{hidden:,} more series not shown (the chart keeps the '
        f"{MAX_SERIES} biggest).</p>"
        if hidden
        else ""
    )
    return (
        f'<section class="chart" id="{chart_id}">\n<h2>{_escape_html(heading)}</h2>\n'
        f'<p class="note">{_escape_html(note)}</p>{more}\n{chart}\n'
        f"<details><summary>data</summary>\n{table}\n</details>\n</section>"
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[int]) -> str:
    if not rows:
        return f'<p class="note">{_NO_DATA}</p>'

    def cell(tag: str, index: int, text: str) -> str:
        kind = ' class="num"' if index in numeric else ""
        return f"<{tag}{kind}>{_escape_html(text)}</{tag}>"

    head = "".join(cell("th", index, text) for index, text in enumerate(headers))
    body = "\n".join(
        "<tr>" + "".join(cell("td", index, text) for index, text in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


# --------------------------------------------------------------------------- formatting


def _money(value: Decimal) -> str:
    """Exactly as stored: all decimal places, thousands separated (``1,234.5600``)."""
    return f"{value:,f}"


def _percent(share: Decimal) -> str:
    """A share as a percentage with two places (a ratio, not money: rounding is fine)."""
    return f"{(share * 100).quantize(Decimal('0.01')):f} %"


def _pick_series(weights: Mapping[str, int]) -> tuple[list[str], int]:
    """The :data:`MAX_SERIES` heaviest names, in name order, and how many were left out."""
    ranked = sorted(weights, key=lambda name: (-weights[name], name))
    return sorted(ranked[:MAX_SERIES]), max(0, len(ranked) - MAX_SERIES)


_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text(value: object) -> str:
    """A value from the data as display text: ``NULL`` spelled out, control characters dropped."""
    if value is None:
        return "(null)"
    return _CONTROL.sub("", str(value))


def _escape_html(text: str) -> str:
    return html.escape(text, quote=True)


def _format_time(moment: datetime, *, seconds: bool = False) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%SZ" if seconds else "%Y-%m-%d %H:%MZ")


def _minutes(duration: timedelta) -> int:
    return duration // timedelta(minutes=1)


def _hours(duration: timedelta) -> str:
    hours = duration / timedelta(hours=1)
    return f"{hours:g} hours" if hours != 1 else "hour"
