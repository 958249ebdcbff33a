"""Interactive charts of the HTML report, drawn by plotly.js inlined in the page.

Each chart is a ``<div class="plot" data-series-count="N">`` and a script
that draws it with ``Plotly.newPlot``: hover shows each point's exact value,
drag zooms, a double click zooms back out. plotly.js itself comes from the
plotly wheel (:func:`plotly_script`), so the page fetches nothing.

Strings from the data are given to plotly with ``&``, ``<`` and ``>``
escaped: plotly reads a few HTML tags in its labels and shows entities as
the characters they stand for. The figure's JSON has ``<``, ``>`` and ``&``
written as ``\\u003c``, ``\\u003e`` and ``\\u0026``, so no value can close the
script it sits in. Values are floats only to place marks: every number a
reader sees (hover, legend) is text made from the exact value.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

__all__ = [
    "BarSeries",
    "LineSeries",
    "Point",
    "ScatterSeries",
    "bar_chart",
    "line_chart",
    "plotly_script",
    "scatter_chart",
]

PALETTE: Final = (
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
"""Series colours, in order (Tableau 10)."""

_LEGEND_CHARS: Final = 40
_NO_DATA: Final = "no data yet"
_HEIGHT_PX: Final = 340
# Zoom and pan stay; the buttons that need a network or a 3D scene go.
_CONFIG: Final = {"displaylogo": False, "responsive": True, "showLink": False}
_JSON_ESCAPES: Final = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


@dataclass(frozen=True)
class Point:
    """A value and its hover text."""

    value: Decimal
    label: str


@dataclass(frozen=True)
class LineSeries:
    """One line of a time chart: a point per window, ``None`` for a gap."""

    name: str
    legend: str
    points: list[Point | None]


@dataclass(frozen=True)
class BarSeries:
    """Bars of one series: category index -> value, with a hover text each."""

    name: str
    legend: str
    values: Mapping[int, int]
    labels: Mapping[int, str]


@dataclass(frozen=True)
class ScatterSeries:
    """Dots of one series: (x time, y value, hover text)."""

    name: str
    legend: str
    points: list[tuple[datetime, Decimal, str]]


def plotly_script() -> str:
    """The ``<script>`` element that defines ``Plotly``: plotly.js from the plotly wheel."""
    # The minified source has no "</script": it can sit in the page as it is.
    return f'<script charset="utf-8">{get_plotlyjs()}</script>'


def line_chart(
    chart_id: str,
    windows: Sequence[datetime],
    series: Sequence[LineSeries],
    *,
    x_label: str,
    y_label: str,
) -> str:
    """A line per series over the window starts; gaps where a point is ``None``."""
    if not series or not windows:
        return _plot(chart_id, 0, _empty_figure())
    x = [_time(start) for start in windows]
    traces = [_line(x, index, line) for index, line in enumerate(series)]
    return _plot(chart_id, len(traces), _figure(traces, x_label, y_label, time_axis=True))


def bar_chart(
    chart_id: str,
    categories: Sequence[str],
    series: Sequence[BarSeries],
    *,
    x_label: str,
    y_label: str,
) -> str:
    """Bars per category, the series stacked."""
    if not series or not categories:
        return _plot(chart_id, 0, _empty_figure())
    x = [_safe(name) for name in categories]
    traces = [
        go.Bar(
            x=[x[category] for category in bars.values],
            y=list(bars.values.values()),
            textposition="none",
            marker={"color": _color(index)},
            **_hover(bars, [bars.labels[category] for category in bars.values]),
        )
        for index, bars in enumerate(series)
    ]
    figure = _figure(traces, x_label, y_label, time_axis=False)
    figure.update_layout(barmode="stack")
    figure.update_xaxes(categoryorder="array", categoryarray=x)
    return _plot(chart_id, len(traces), figure)


def scatter_chart(
    chart_id: str, series: Sequence[ScatterSeries], *, x_label: str, y_label: str
) -> str:
    """A dot per point, coloured by series, over time."""
    if not series:
        return _plot(chart_id, 0, _empty_figure())
    traces = [
        go.Scatter(
            x=[_time(at) for at, _, _ in dots.points],
            y=[float(value) for _, value, _ in dots.points],
            mode="markers",
            marker={"color": _color(index), "size": 7, "opacity": 0.8},
            **_hover(dots, [label for _, _, label in dots.points]),
        )
        for index, dots in enumerate(series)
    ]
    return _plot(chart_id, len(traces), _figure(traces, x_label, y_label, time_axis=True))


def _line(x: list[str], index: int, line: LineSeries) -> go.Scatter:
    return go.Scatter(
        x=x,
        y=[None if point is None else float(point.value) for point in line.points],
        mode="lines+markers",
        connectgaps=False,
        line={"color": _color(index), "width": 2},
        marker={"color": _color(index), "size": 5},
        **_hover(line, [None if point is None else point.label for point in line.points]),
    )


def _hover(
    series: LineSeries | BarSeries | ScatterSeries, labels: Sequence[str | None]
) -> dict[str, Any]:
    """A trace's legend entry, and its points' hover texts shown as they are."""
    return {
        "name": _legend(series),
        "text": [None if label is None else _safe(label) for label in labels],
        "hovertemplate": "%{text}<extra></extra>",
    }


def _figure(
    traces: Sequence[go.Scatter | go.Bar], x_label: str, y_label: str, *, time_axis: bool
) -> go.Figure:
    figure = go.Figure(data=list(traces))
    _lay_out(figure, x_label=x_label, y_label=y_label, time_axis=time_axis)
    return figure


def _lay_out(figure: go.Figure, *, x_label: str, y_label: str, time_axis: bool) -> None:
    figure.update_layout(
        height=_HEIGHT_PX,
        margin={"l": 70, "r": 20, "t": 10, "b": 50},
        template="plotly_white",
        hovermode="closest",
        showlegend=True,
        legend={"orientation": "v", "x": 1.02, "y": 1, "traceorder": "normal"},
        font={"family": "system-ui, sans-serif", "size": 12},
    )
    figure.update_xaxes(title_text=_safe(x_label))
    figure.update_yaxes(title_text=_safe(y_label), rangemode="tozero")
    if time_axis:
        # Times are given in UTC without an offset: plotly shows them as they are.
        figure.update_xaxes(type="date")


def _empty_figure() -> go.Figure:
    figure = go.Figure()
    figure.update_layout(
        height=_HEIGHT_PX // 2,
        margin={"l": 20, "r": 20, "t": 10, "b": 10},
        template="plotly_white",
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {
                "text": _NO_DATA,
                "showarrow": False,
                "font": {"size": 18, "color": "#8c959f"},
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
            }
        ],
    )
    return figure


def _plot(chart_id: str, series_count: int, figure: go.Figure) -> str:
    """The chart's ``<div>`` and the script that draws it."""
    plot_id = f"plot-{chart_id}"
    spec = pio.to_json(figure, validate=True).translate(_JSON_ESCAPES)
    config = json.dumps(_CONFIG)
    return (
        f'<div class="plot" id="{plot_id}" data-series-count="{series_count}"></div>\n'
        f"<script>(function () {{ const figure = {spec}; "
        f'Plotly.newPlot("{plot_id}", figure.data, figure.layout, {config}); }})();</script>'
    )


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _legend(series: LineSeries | BarSeries | ScatterSeries) -> str:
    """The legend entry, its name cut short: what follows the name (a total) stays whole."""
    name, legend = series.name, series.legend
    if len(name) <= _LEGEND_CHARS or not legend.startswith(name):
        return _safe(legend)
    return _safe(name[: _LEGEND_CHARS - 1] + "\u2026" + legend[len(name) :])


def _safe(text: str) -> str:
    """``text`` for plotly's labels: its few HTML tags and entities read as plain text."""
    return html.escape(text, quote=False)
