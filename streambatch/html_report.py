"""A self-contained HTML report of the lake: five charts drawn as inline SVG in Python.

The page needs nothing at view time: no script, no font, no stylesheet or
image from anywhere. Its Content-Security-Policy forbids every fetch and every
script, so the page stays inert even if some value escaped the escaping. Every
string that comes from the data (currencies, services, error classes, stream
names) goes through :func:`html.escape`; money is printed from ``Decimal``
exactly (floats only place pixels).

Charts, each an ``<svg data-series-count="N">`` whose series are
``<g class="series series-<slug>" data-series="<name>">`` groups:

- revenue per 10-minute window, one line per currency (currencies are not
  converted, so they are not stacked);
- the click funnel, one bar per step, summed over the windows shown;
- the error rate per service and window, one line per service;
- rows per committed batch over commit time, one colour per close reason;
- dead letters per error class, stacked by stream.

The windowed charts (revenue, funnel, error rate) cover ``span`` (24 hours)
of event time ending with the newest order, click or log line in the lake,
not with the wall clock: a lake of last week's events still shows them. The
workflow's own step events are stamped when a handler ran, so they do not
move the window. An explicit ``until`` wins. The page says which window it shows.
"""

from __future__ import annotations

import html
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal, localcontext
from pathlib import Path
from typing import Any, Final

import duckdb

from sinks.duckdb import connect, lake_cursor, run_report
from sinks.lake_location import LakeLocation

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
_PALETTE: Final = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#59a14f",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#9c755f",
    "#ff9da7",
    "#6b6b6b",
)
_NO_DATA: Final = "no data yet"

# Chart geometry (SVG user units; the svg scales down with the page).
_WIDTH: Final = 960
_HEIGHT: Final = 300
_LEFT: Final = 84
_RIGHT: Final = 736
_TOP: Final = 16
_BOTTOM: Final = 236
_LEGEND_X: Final = 756
_LEGEND_CHARS: Final = 26

# No fetch of any kind and no script: the page is data, never code.
_CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
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
svg.chart-svg { display: block; width: 100%; height: auto; max-width: 960px; }
svg text { font-family: inherit; fill: #1f2328; }
svg .tick { font-size: 11px; fill: #57606a; }
svg .axis-label { font-size: 12px; fill: #1f2328; }
svg .legend-item text { font-size: 12px; }
svg .value-label { font-size: 11px; fill: #1f2328; }
svg .no-data-text { font-size: 18px; fill: #8c959f; }
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
    nav = "".join(f'<a href="#{chart_id}">{_e(label)}</a>' for chart_id, label, _ in sections)
    body = "\n".join(text for _, _, text in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="streambatch">
<title>{_e(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>{_e(title)}</h1>
<p class="meta">Generated {_e(_format_time(generated_at, seconds=True))} from the committed
lake. {_e(coverage)}</p>
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
    series: list[_LineSeries] = []
    for name in shown:
        points: list[_Point | None] = []
        for start in windows:
            # No order in a window of the grid means no revenue there, not missing data.
            orders, revenue = cells.get((name, start), (0, Decimal(0)))
            label = (
                f"{name}, {_format_time(start)} to {_format_time(start + WINDOW)}: "
                f"{orders:,} orders, revenue {_money(revenue)}"
            )
            points.append(_Point(revenue, label))
        series.append(_LineSeries(name, f"{name} {_money(totals[name])}", points))
    note = (
        "OrderPlaced events per window; each currency is its own line (no conversion). "
        "The legend gives each currency's total over the windows shown."
    )
    svg = _line_chart(
        chart_id,
        heading,
        windows,
        series,
        y_label="revenue (in each currency)",
        y_format=_format_axis_number,
        integer=False,
    )
    table = _table(
        ("window start (UTC)", "currency", "orders", "revenue"),
        [
            (_format_time(start), _text(currency), f"{orders:,}", _money(revenue))
            for start, _, currency, orders, revenue in rows
        ],
        numeric=(2, 3),
    )
    return chart_id, "Revenue", _section(chart_id, heading, note, hidden, svg, table)


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
        _BarSeries(step, step, {index: count}, {index: labels[index]})
        for index, (step, count) in enumerate(zip(_FUNNEL_STEPS, sums, strict=True))
    ]
    if not rows:
        series = []
    note = (
        "Sessions per 10-minute window that viewed a page, added to cart and started "
        "checkout, and those whose user placed an order in the same window; summed over "
        "the windows shown. Percentages are of page_view."
    )
    svg = _bar_chart(
        chart_id,
        heading,
        list(_FUNNEL_STEPS),
        series,
        x_label="funnel step",
        y_label="sessions",
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
    return chart_id, "Click funnel", _section(chart_id, heading, note, 0, svg, table)


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
    series: list[_LineSeries] = []
    for name in shown:
        points: list[_Point | None] = []
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
            points.append(_Point(rate * 100, label))
        series.append(_LineSeries(name, f"{name} ({errors_by[name]:,} errors)", points))
    note = "Share of ERROR and CRITICAL log lines per service and 10-minute window."
    svg = _line_chart(
        chart_id,
        heading,
        windows,
        series,
        y_label="error rate (%)",
        y_format=lambda value: f"{_format_axis_number(value)} %",
        integer=False,
    )
    table = _table(
        ("window start (UTC)", "service", "lines", "errors", "error rate"),
        [
            (_format_time(start), _text(service), f"{lines:,}", f"{errors:,}", _percent(rate))
            for start, service, lines, errors, rate in rows
        ],
        numeric=(2, 3, 4),
    )
    return chart_id, "Error rate", _section(chart_id, heading, note, hidden, svg, table)


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
        _ScatterSeries(
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
    svg = _scatter_chart(
        chart_id, heading, series, x_label="committed at (UTC)", y_label="rows per batch"
    )
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
    return chart_id, "Batches", _section(chart_id, heading, note, hidden, svg, table)


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
            _BarSeries(stream_name, f"{stream_name} ({by_stream[stream_name]:,})", values, labels)
        )
    note = "Records sent to the dead-letter topics, per error class and stream, all time."
    svg = _bar_chart(
        chart_id, heading, classes, series, x_label="error class", y_label="dead letters"
    )
    table = _table(
        ("stream", "error class", "dead letters"),
        [(_text(stream), _text(cls), f"{count:,}") for stream, cls, count in rows],
        numeric=(2,),
    )
    return chart_id, "Dead letters", _section(chart_id, heading, note, hidden, svg, table)


def _section(chart_id: str, heading: str, note: str, hidden: int, svg: str, table: str) -> str:
    more = (
        f'<p class="note">{hidden:,} more series not shown (the chart keeps the '
        f"{MAX_SERIES} biggest).</p>"
        if hidden
        else ""
    )
    return (
        f'<section class="chart" id="{chart_id}">\n<h2>{_e(heading)}</h2>\n'
        f'<p class="note">{_e(note)}</p>{more}\n{svg}\n'
        f"<details><summary>data</summary>\n{table}\n</details>\n</section>"
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[int]) -> str:
    if not rows:
        return f'<p class="note">{_NO_DATA}</p>'

    def cell(tag: str, index: int, text: str) -> str:
        kind = ' class="num"' if index in numeric else ""
        return f"<{tag}{kind}>{_e(text)}</{tag}>"

    head = "".join(cell("th", index, text) for index, text in enumerate(headers))
    body = "\n".join(
        "<tr>" + "".join(cell("td", index, text) for index, text in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


# --------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class _Point:
    value: Decimal
    label: str


@dataclass(frozen=True)
class _LineSeries:
    name: str
    legend: str
    points: list[_Point | None]  # one per window; None is a gap


@dataclass(frozen=True)
class _BarSeries:
    name: str
    legend: str
    values: Mapping[int, int]  # category index -> value
    labels: Mapping[int, str]


@dataclass(frozen=True)
class _ScatterSeries:
    name: str
    legend: str
    points: list[tuple[datetime, Decimal, str]]


def _line_chart(
    chart_id: str,
    heading: str,
    windows: list[datetime],
    series: Sequence[_LineSeries],
    *,
    y_label: str,
    y_format: Callable[[Decimal], str],
    integer: bool,
) -> str:
    if not series or not windows:
        return _empty_svg(chart_id, heading)
    values = [point.value for line in series for point in line.points if point is not None]
    ticks = _nice_ticks(max(values, default=Decimal(0)), integer=integer)
    band = (_RIGHT - _LEFT) / len(windows)
    parts = [_y_axis(ticks, y_format, y_label), _time_band_axis(windows, band)]
    slugs = _slugs([line.name for line in series])
    for index, line in enumerate(series):
        color = _color(index)
        commands: list[str] = []
        markers: list[str] = []
        pen_down = False
        for position, point in enumerate(line.points):
            if point is None:
                pen_down = False
                continue
            x = _LEFT + (position + 0.5) * band
            y = _y(point.value, ticks)
            commands.append(f"{'L' if pen_down else 'M'}{x:.1f} {y:.1f}")
            pen_down = True
            markers.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}">'
                f"<title>{_e(point.label)}</title></circle>"
            )
        path = (
            f'<path d="{" ".join(commands)}" fill="none" stroke="{color}" '
            f'stroke-width="2" stroke-linejoin="round"/>'
        )
        parts.append(_series_group(line.name, slugs[index], [path, *markers]))
    parts.append(_legend([(line.name, line.legend) for line in series]))
    return _svg(chart_id, heading, len(series), parts, x_label="window start (UTC)")


def _bar_chart(
    chart_id: str,
    heading: str,
    categories: list[str],
    series: Sequence[_BarSeries],
    *,
    x_label: str,
    y_label: str,
) -> str:
    """Bars per category, the series stacked in order."""
    if not series or not categories:
        return _empty_svg(chart_id, heading)
    stacks = [sum(bar.values.get(index, 0) for bar in series) for index in range(len(categories))]
    ticks = _nice_ticks(Decimal(max(stacks)), integer=True)
    band = (_RIGHT - _LEFT) / len(categories)
    width = min(band * 0.6, 120.0)
    parts = [_y_axis(ticks, _format_axis_number, y_label)]
    for index, category in enumerate(categories):
        center = _LEFT + (index + 0.5) * band
        top = _y(Decimal(stacks[index]), ticks)
        parts.append(
            f'<text class="tick" x="{center:.1f}" y="{_BOTTOM + 16}" text-anchor="middle">'
            f"{_e(_shorten(category, max(6, int(band / 7))))}<title>{_e(category)}</title></text>"
        )
        parts.append(
            f'<text class="value-label" x="{center:.1f}" y="{top - 4:.1f}" '
            f'text-anchor="middle">{stacks[index]:,}</text>'
        )
    parts.append(_x_label(x_label))
    base = [0] * len(categories)
    slugs = _slugs([bar.name for bar in series])
    for number, bar in enumerate(series):
        color = _color(number)
        rects: list[str] = []
        for index in range(len(categories)):
            value = bar.values.get(index, 0)
            if value <= 0:
                continue
            low = _y(Decimal(base[index]), ticks)
            high = _y(Decimal(base[index] + value), ticks)
            base[index] += value
            x = _LEFT + (index + 0.5) * band - width / 2
            rects.append(
                f'<rect x="{x:.1f}" y="{high:.1f}" width="{width:.1f}" '
                f'height="{max(low - high, 1.0):.1f}" fill="{color}">'
                f"<title>{_e(bar.labels.get(index, f'{value:,}'))}</title></rect>"
            )
        parts.append(_series_group(bar.name, slugs[number], rects))
    parts.append(_legend([(bar.name, bar.legend) for bar in series]))
    return _svg(chart_id, heading, len(series), parts, x_label=None)


def _scatter_chart(
    chart_id: str,
    heading: str,
    series: Sequence[_ScatterSeries],
    *,
    x_label: str,
    y_label: str,
) -> str:
    moments = [moment for dots in series for moment, _, _ in dots.points]
    if not moments:
        return _empty_svg(chart_id, heading)
    first, last = min(moments), max(moments)
    if last - first < timedelta(seconds=2):
        first, last = first - timedelta(seconds=1), last + timedelta(seconds=1)
    width = (last - first).total_seconds()
    ticks = _nice_ticks(max(value for dots in series for _, value, _ in dots.points), integer=True)
    parts = [_y_axis(ticks, _format_axis_number, y_label)]
    count = 5
    for step in range(count + 1):
        moment = first + (last - first) * step / count
        x = _LEFT + (_RIGHT - _LEFT) * step / count
        parts.append(_x_tick(x, moment.strftime("%H:%M:%S"), _date_line(moment, step == 0)))
    parts.append(_x_label(x_label))
    slugs = _slugs([dots.name for dots in series])
    span_px = _RIGHT - _LEFT
    for index, dots in enumerate(series):
        color = _color(index)
        circles = [
            f'<circle cx="{_LEFT + span_px * (moment - first).total_seconds() / width:.1f}"'
            f' cy="{_y(value, ticks):.1f}" r="4" fill="{color}">'
            f"<title>{_e(label)}</title></circle>"
            for moment, value, label in dots.points
        ]
        parts.append(_series_group(dots.name, slugs[index], circles))
    parts.append(_legend([(dots.name, dots.legend) for dots in series]))
    return _svg(chart_id, heading, len(series), parts, x_label=None)


def _svg(
    chart_id: str, heading: str, series_count: int, parts: Sequence[str], *, x_label: str | None
) -> str:
    label = _x_label(x_label) if x_label is not None else ""
    return (
        f'<svg class="chart-svg" id="svg-{chart_id}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" role="img" '
        f'aria-label="{_e(heading)}" data-series-count="{series_count}">\n'
        f"<title>{_e(heading)}</title>\n" + "\n".join(parts) + label + "\n</svg>"
    )


def _empty_svg(chart_id: str, heading: str) -> str:
    middle_x, middle_y = (_LEFT + _RIGHT) / 2, (_TOP + _BOTTOM) / 2
    parts = [
        f'<rect x="{_LEFT}" y="{_TOP}" width="{_RIGHT - _LEFT}" height="{_BOTTOM - _TOP}" '
        f'fill="#fafbfc" stroke="#d0d7de" stroke-dasharray="4 4"/>',
        f'<text class="no-data-text" x="{middle_x:.1f}" y="{middle_y:.1f}" '
        f'text-anchor="middle">{_NO_DATA}</text>',
    ]
    return _svg(chart_id, heading, 0, parts, x_label=None)


def _series_group(name: str, slug: str, shapes: Sequence[str]) -> str:
    return (
        f'<g class="series series-{slug}" data-series="{_e(name)}">'
        f"<title>{_e(name)}</title>" + "".join(shapes) + "</g>"
    )


def _legend(entries: Sequence[tuple[str, str]]) -> str:
    items = []
    for index, (name, text) in enumerate(entries):
        y = _TOP + 6 + index * 20
        items.append(
            f'<g class="legend-item" data-series="{_e(name)}">'
            f'<rect x="{_LEGEND_X}" y="{y}" width="12" height="12" fill="{_color(index)}"/>'
            f'<text x="{_LEGEND_X + 18}" y="{y + 10}">{_e(_shorten(text, _LEGEND_CHARS))}</text>'
            f"<title>{_e(text)}</title></g>"
        )
    return '<g class="legend">' + "".join(items) + "</g>"


def _y_axis(ticks: Sequence[Decimal], y_format: Callable[[Decimal], str], label: str) -> str:
    parts = []
    for tick in ticks:
        y = _y(tick, ticks)
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_RIGHT}" y2="{y:.1f}" stroke="#eaeef2"/>'
            f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_e(y_format(tick))}</text>"
        )
    middle = (_TOP + _BOTTOM) / 2
    parts.append(
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_BOTTOM}" stroke="#8c959f"/>'
        f'<line x1="{_LEFT}" y1="{_BOTTOM}" x2="{_RIGHT}" y2="{_BOTTOM}" stroke="#8c959f"/>'
        f'<text class="axis-label y-label" x="16" y="{middle:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {middle:.1f})">{_e(label)}</text>'
    )
    return '<g class="axis">' + "".join(parts) + "</g>"


def _time_band_axis(windows: list[datetime], band: float) -> str:
    every = max(1, math.ceil(len(windows) / 10))
    parts = []
    previous_date = ""
    for index in range(0, len(windows), every):
        moment = windows[index]
        date = moment.strftime("%Y-%m-%d")
        x = _LEFT + (index + 0.5) * band
        parts.append(_x_tick(x, moment.strftime("%H:%M"), date if date != previous_date else ""))
        previous_date = date
    return "".join(parts)


def _x_tick(x: float, text: str, second_line: str) -> str:
    below = f'<tspan x="{x:.1f}" dy="13">{_e(second_line)}</tspan>' if second_line else ""
    return (
        f'<line x1="{x:.1f}" y1="{_BOTTOM}" x2="{x:.1f}" y2="{_BOTTOM + 4}" stroke="#8c959f"/>'
        f'<text class="tick" x="{x:.1f}" y="{_BOTTOM + 16}" text-anchor="middle">'
        f"{_e(text)}{below}</text>"
    )


def _date_line(moment: datetime, first: bool) -> str:
    return moment.strftime("%Y-%m-%d") if first else ""


def _x_label(text: str) -> str:
    return (
        f'<text class="axis-label x-label" x="{(_LEFT + _RIGHT) / 2:.1f}" y="{_HEIGHT - 8}" '
        f'text-anchor="middle">{_e(text)}</text>'
    )


def _y(value: Decimal, ticks: Sequence[Decimal]) -> float:
    top = ticks[-1]
    share = float(value) / float(top) if top else 0.0
    return _BOTTOM - share * (_BOTTOM - _TOP)


# --------------------------------------------------------------------------- numbers and text


def _nice_ticks(maximum: Decimal, *, integer: bool, target: int = 5) -> tuple[Decimal, ...]:
    """Ticks ``0, s, 2s, ...`` up to at least ``maximum``, ``s`` being 1, 2 or 5 x 10^k.

    Decimal throughout, so that labels are exact (``0.3``, not ``0.30000000000000004``).
    """
    if maximum <= 0:
        return (Decimal(0), Decimal(1))
    with localcontext() as context:
        context.prec = 60
        raw = maximum / target
        exponent = raw.adjusted()
        mantissa = raw.scaleb(-exponent)
        multiple = next(m for m in (1, 2, 5, 10) if mantissa <= m)
        step = Decimal(multiple).scaleb(exponent)
        if integer and step < 1:
            step = Decimal(1)
        count = int((maximum / step).to_integral_value(rounding=ROUND_CEILING))
        # One significant digit: the step's exponent is its number of decimal places.
        quantum = Decimal(1).scaleb(min(step.adjusted(), 0))
        return tuple((step * index).quantize(quantum) for index in range(count + 1))


def _format_axis_number(value: Decimal) -> str:
    return f"{value:,f}"


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


_SLUG_JUNK: Final = re.compile(r"[^a-z0-9_-]+")


def _slugs(names: Sequence[str]) -> list[str]:
    """A CSS class token per name: lower-case ``[a-z0-9_-]``, unique within the chart."""
    seen: set[str] = set()
    slugs = []
    for name in names:
        base = _SLUG_JUNK.sub("-", name.lower()).strip("-")[:40] or "unnamed"
        slug, number = base, 2
        while slug in seen:
            slug, number = f"{base}-{number}", number + 1
        seen.add(slug)
        slugs.append(slug)
    return slugs


def _color(index: int) -> str:
    return _PALETTE[index % len(_PALETTE)]


_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text(value: object) -> str:
    """A value from the data as display text: ``NULL`` spelled out, control characters dropped."""
    if value is None:
        return "(null)"
    return _CONTROL.sub("", str(value))


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _format_time(moment: datetime, *, seconds: bool = False) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%SZ" if seconds else "%Y-%m-%d %H:%MZ")


def _minutes(duration: timedelta) -> int:
    return duration // timedelta(minutes=1)


def _hours(duration: timedelta) -> str:
    hours = duration / timedelta(hours=1)
    return f"{hours:g} hours" if hours != 1 else "hour"
