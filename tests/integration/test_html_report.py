"""The HTML report: real flows, a real lake, the page rendered by headless Chromium."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka.admin import AdminClient
from deltalake import write_deltalake
from plotly.offline import get_plotlyjs

from connectors.embedded_broker import create_topics
from events.registry import CLICKS, LOGS, ORDERS
from generator import generate_stream_records, produce_records
from sinks.delta_lake import BATCHES_SCHEMA
from sinks.duckdb import connect, run_sql
from streambatch.html_report import render_report_html, write_report
from tests.support import StreamTopics, flow_env, run_flow
from tests.support_browser import (
    ChartDom,
    PageDom,
    decode_png,
    dump_dom,
    parse_page,
    screenshot,
)

CHARTS = ("revenue", "funnel", "error-rate", "batches", "dead-letters")
HOSTILE = "<script>alert(1)</script>"
GENERATED_AT = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)


def _scalar(conn: Any, sql: str) -> Any:
    _, rows = run_sql(conn, sql)
    return rows[0][0]


@pytest.fixture
def more_topics(bootstrap_servers: str) -> Iterator[dict[str, str]]:
    """Topics for clicks and logs (``topics`` gives the orders one), deleted afterwards."""
    names = {stream: f"t{uuid.uuid4().hex[:12]}" for stream in ("clicks", "logs")}
    every = [topic for name in names.values() for topic in (name, f"{name}.dlq")]
    create_topics(bootstrap_servers, every, 3)
    yield names
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    for future in admin.delete_topics(every).values():
        with contextlib.suppress(Exception):
            future.result(timeout=10)


def _assert_drawn(chart: ChartDom, expected_series: int, name: str) -> None:
    """plotly drew the chart: an svg, one trace and one legend entry per series, marks in each."""
    assert chart.series_count == expected_series, f"{name}: data-series-count"
    assert chart.svg_count >= 1, f"{name}: plotly drew no svg"
    assert len(chart.traces) == expected_series, f"{name}: traces"
    assert len(chart.legend) == expected_series, f"{name}: legend entries"
    for trace, legend in zip(chart.traces, chart.legend, strict=True):
        assert trace.marks(), f"{name}: trace {legend!r} drew nothing"


def _assert_self_contained(page: PageDom, charts: int) -> None:
    """Nothing to fetch: no script, frame or image from anywhere, only in-page links."""
    # plotly.js, then one script per chart; all inline.
    assert len(page.scripts) == 1 + charts
    assert all("src" not in script for script in page.scripts)
    outside = [ref for ref in page.references if not ref[2].startswith("#")]
    assert not outside, f"references outside the page: {outside}"


def test_report_of_three_flows_renders_in_chromium(
    topics: StreamTopics,
    more_topics: dict[str, str],
    data_dir: Path,
    tmp_path: Path,
) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    # 3,000 orders: about 15 minutes of event time, so more than one window.
    streams = generate_stream_records(3_000, seed=23, duplicate_ratio=0.02, malformed_ratio=0.01)
    names = {"orders": topics.name, **more_topics}
    config = {"bootstrap.servers": topics.bootstrap_servers}
    for stream, records in streams.items():
        sent = produce_records(records, producer_config=config, topic=names[stream], progress=False)
        assert sent.failed == 0
    env = flow_env(
        topics,
        data_dir,
        "orders",
        STREAMBATCH_CLICKS_TOPIC=names["clicks"],
        STREAMBATCH_LOGS_TOPIC=names["logs"],
        # Small windows: several batches per partition, closed by size and by the end.
        STREAMBATCH_WINDOW_BYTES=str(64 * 1024),
    )
    timings["produce"] = time.monotonic() - started
    for stream in ("orders", "clicks", "logs"):
        started = time.monotonic()
        run_flow(env, stream)
        timings[f"flow {stream}"] = time.monotonic() - started

    started = time.monotonic()
    page = write_report(data_dir, tmp_path / "out" / "report.html")
    timings["write_report"] = time.monotonic() - started
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # Nothing to fetch at view time, and the page says so to the browser.
    assert re.search(r"Content-Security-Policy\" content=\"default-src &#x27;none&#x27;;", text)
    _assert_self_contained(parse_page(text), len(CHARTS))
    head = text[: text.index("<script")]
    assert "url(" not in head and "@import" not in head
    assert not list(page.parent.glob(".*.tmp")), "the temporary file was left behind"

    with connect(data_dir) as conn:
        currencies = _scalar(
            conn, "SELECT count(DISTINCT currency) FROM orders WHERE event_type = 'OrderPlaced'"
        )
        services = _scalar(conn, "SELECT count(DISTINCT service) FROM logs")
        reasons = _scalar(conn, "SELECT count(DISTINCT close_reason) FROM batches")
        streams_with_dead_letters = _scalar(
            conn, "SELECT count(DISTINCT stream) FROM batches WHERE dead_letters > 0"
        )
        _, revenue = run_sql(
            conn,
            "SELECT currency, sum(total_amount) FROM orders "
            "WHERE event_type = 'OrderPlaced' GROUP BY 1",
        )
    assert currencies >= 2 and services >= 2 and reasons >= 2 and streams_with_dead_letters == 3

    started = time.monotonic()
    charts = parse_page(dump_dom(page)).charts
    timings["chromium dump-dom"] = time.monotonic() - started
    assert set(charts) == {f"plot-{name}" for name in CHARTS}
    expected = {
        "revenue": currencies,
        "funnel": 4,
        "error-rate": services,
        "batches": reasons,
        "dead-letters": streams_with_dead_letters,
    }
    for name, count in expected.items():
        _assert_drawn(charts[f"plot-{name}"], count, name)
    # The funnel: one bar per step; the lines: a dot per window with data.
    assert charts["plot-funnel"].legend == [
        "page_view",
        "add_to_cart",
        "checkout_started",
        "order_placed",
    ]
    assert all(len(trace.marks()) == 1 for trace in charts["plot-funnel"].traces)
    # A dot per window for every currency (no order in a window is a revenue of 0).
    dots = {
        len([mark for mark in trace.marks() if mark.get("class") == "point"])
        for trace in charts["plot-revenue"].traces
    }
    assert len(dots) == 1 and dots.pop() >= 2, "revenue: a dot per window"
    # Money is printed exactly: each currency's total, to the last of its four places.
    legend = " ".join(charts["plot-revenue"].legend)
    for currency, total in revenue:
        assert isinstance(total, Decimal)
        assert f"{currency} {total:,f}" in legend

    started = time.monotonic()
    png = screenshot(page, tmp_path / "report.png", 1200, 2600)
    image = decode_png(png)
    timings["chromium screenshot + decode"] = time.monotonic() - started
    assert (image.width, image.height) == (1200, 2600)
    colours = image.colours()
    assert len(colours) > 50, f"the screenshot looks blank: {len(colours)} colours"
    for name in CHARTS:
        for trace, legend_text in zip(
            charts[f"plot-{name}"].traces, charts[f"plot-{name}"].legend, strict=True
        ):
            for rgb in trace.colours():
                painted = colours[rgb]
                assert painted >= 10, f"{name}: {legend_text} ({rgb}) is not on the screenshot"
    print("timings:", {step: round(seconds, 2) for step, seconds in timings.items()})


# --------------------------------------------------------------------------- no broker


def _hostile_lake(data_dir: Path) -> None:
    """A lake whose strings try to break out of the page, written straight to Delta."""
    at = datetime(2026, 11, 28, 0, 5, tzinfo=UTC)
    lineage = {"_topic": "orders", "_partition": 0, "event_date": "2026-11-28", "event_hour": "00"}
    orders = [
        {
            "event_id": f"o{offset}",
            "event_type": "OrderPlaced",
            "occurred_at": at,
            "order_id": f"o{offset}",
            "customer_id": "c1",
            "currency": currency,
            "total_amount": Decimal(total),
            "_offset": offset,
            **lineage,
        }
        for offset, (currency, total) in enumerate(
            [(HOSTILE, "12345678901234.5678"), ('"><img src=x>', "0.1000"), ("EUR", "0.2000")]
        )
    ]
    write_deltalake(
        data_dir / "lake" / "orders",
        pa.Table.from_pylist(orders, schema=ORDERS.table_schema),
        partition_by=["event_date", "event_hour"],
    )
    logs = [
        {
            "event_id": f"l{offset}",
            "event_type": "log",
            "occurred_at": at,
            "service": service,
            "level": level,
            "message": HOSTILE,
            "_offset": offset,
            **lineage,
        }
        for offset, (service, level) in enumerate(
            [(HOSTILE, "ERROR"), (HOSTILE, "INFO"), ("a b", "ERROR"), ("a-b", "INFO")]
        )
    ]
    write_deltalake(
        data_dir / "lake" / "logs",
        pa.Table.from_pylist(logs, schema=LOGS.table_schema),
        partition_by=["event_date", "event_hour"],
    )
    batch: dict[str, Any] = dict.fromkeys(BATCHES_SCHEMA.names, 0)
    batch.update(
        stream=HOSTILE,
        topic="orders",
        rows=3,
        dead_letters=2,
        dead_letters_by_class='{"<script>alert(1)</script>": 2}',
        close_reason=HOSTILE,
        opened_at=at,
        committed_at=at,
        min_occurred_at=at,
        max_occurred_at=at,
    )
    write_deltalake(
        data_dir / "lake" / "batches", pa.Table.from_pylist([batch], schema=BATCHES_SCHEMA)
    )


def test_hostile_strings_are_escaped_and_money_is_exact(data_dir: Path, tmp_path: Path) -> None:
    _hostile_lake(data_dir)
    with connect(data_dir) as conn:
        page = render_report_html(conn, f"lake {HOSTILE}", GENERATED_AT)
    _assert_self_contained(parse_page(page), len(CHARTS))
    ours = page.replace(get_plotlyjs(), "")
    # The data made no element: the only scripts are plotly.js and one per chart.
    assert ours.count("<script") == 1 + len(CHARTS) and "<img" not in ours
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # 18 significant digits: a float would print 12345678901234.568.
    assert "12,345,678,901,234.5678" in page
    assert "EUR 0.2000" in page

    path = tmp_path / "hostile.html"
    path.write_text(page, encoding="utf-8")
    rendered = parse_page(dump_dom(path))
    assert len(rendered.scripts) == 1 + len(CHARTS)
    assert not [ref for ref in rendered.references if ref[0] == "img"]
    charts = rendered.charts
    _assert_drawn(charts["plot-revenue"], 3, "revenue")
    # Shown as text, and exact: the legend gives each currency's total.
    assert sorted(charts["plot-revenue"].legend) == sorted(
        [f"{HOSTILE} 12,345,678,901,234.5678", '"><img src=x> 0.1000', "EUR 0.2000"]
    )
    _assert_drawn(charts["plot-error-rate"], 3, "error-rate")
    assert f"{HOSTILE} (1 errors)" in charts["plot-error-rate"].legend
    assert charts["plot-batches"].legend == [f"{HOSTILE} (1 batches)"]
    assert [entry.split(" (")[0] for entry in charts["plot-dead-letters"].legend] == [HOSTILE]


def test_empty_lake_gives_a_valid_page_with_no_data_notes(data_dir: Path, tmp_path: Path) -> None:
    path = write_report(data_dir, tmp_path / "empty.html", now=lambda: GENERATED_AT)
    page = path.read_text(encoding="utf-8")
    assert page.count("no data yet") >= len(CHARTS)
    assert "2026-11-28 01:00:00Z" in page
    charts = parse_page(page).charts
    assert {name: chart.series_count for name, chart in charts.items()} == {
        f"plot-{name}": 0 for name in CHARTS
    }


def test_naive_generated_at_is_refused(data_dir: Path) -> None:
    with connect(data_dir) as conn, pytest.raises(ValueError, match="timezone-aware"):
        render_report_html(conn, "t", datetime(2026, 1, 1))


# --------------------------------------------------------------------------- the window


def _days_old_lake(data_dir: Path, at: datetime, handled_at: datetime) -> None:
    """A lake like the demo's: orders, clicks and logs at ``at``, the workflow's steps later.

    The workflow's handlers stamp their events when they run (``handled_at``),
    so the newest event of the lake is not one any windowed chart draws.
    """
    lineage = {"_topic": "t", "_partition": 0, "event_date": "2026-11-23", "event_hour": "00"}
    orders = [
        {
            "event_id": f"o{offset}",
            "event_type": event_type,
            "occurred_at": occurred_at,
            "order_id": "o1",
            "customer_id": "u1",
            "currency": "EUR",
            "total_amount": Decimal("10.5000") if event_type == "OrderPlaced" else None,
            "_offset": offset,
            **lineage,
        }
        for offset, (event_type, occurred_at) in enumerate(
            [("OrderPlaced", at), ("PaymentAuthorized", handled_at), ("StockReserved", handled_at)]
        )
    ]
    write_deltalake(
        data_dir / "lake" / "orders",
        pa.Table.from_pylist(orders, schema=ORDERS.table_schema),
        partition_by=["event_date", "event_hour"],
    )
    clicks = [
        {
            "event_id": f"c{offset}",
            "event_type": event_type,
            "occurred_at": at - timedelta(minutes=3 - offset),
            "session_id": "s1",
            "user_id": "u1",
            "url": "/",
            "_offset": offset,
            **lineage,
        }
        for offset, event_type in enumerate(("page_view", "add_to_cart", "checkout_started"))
    ]
    write_deltalake(
        data_dir / "lake" / "clicks",
        pa.Table.from_pylist(clicks, schema=CLICKS.table_schema),
        partition_by=["event_date", "event_hour"],
    )
    logs = [
        {
            "event_id": f"l{offset}",
            "event_type": "log",
            "occurred_at": at,
            "service": "checkout",
            "level": level,
            "message": "m",
            "_offset": offset,
            **lineage,
        }
        for offset, level in enumerate(("INFO", "ERROR"))
    ]
    write_deltalake(
        data_dir / "lake" / "logs",
        pa.Table.from_pylist(logs, schema=LOGS.table_schema),
        partition_by=["event_date", "event_hour"],
    )
    batch: dict[str, Any] = dict.fromkeys(BATCHES_SCHEMA.names, 0)
    batch.update(
        stream="orders",
        topic="t",
        rows=3,
        dead_letters=1,
        dead_letters_by_class='{"invalid_json": 1}',
        close_reason="end",
        opened_at=handled_at,
        committed_at=handled_at,
        min_occurred_at=at,
        max_occurred_at=handled_at,
    )
    write_deltalake(
        data_dir / "lake" / "batches", pa.Table.from_pylist([batch], schema=BATCHES_SCHEMA)
    )


DAYS_AGO = datetime(2026, 11, 23, 0, 5, tzinfo=UTC)


def test_default_window_ends_with_the_newest_charted_event(data_dir: Path) -> None:
    _days_old_lake(data_dir, DAYS_AGO, handled_at=GENERATED_AT)
    with connect(data_dir) as conn:
        page = render_report_html(conn, "t", GENERATED_AT)
    charts = parse_page(page).charts
    for name in CHARTS:
        assert charts[f"plot-{name}"].series_count > 0, f"{name} has no data"
    assert "no data yet" not in page
    # The page says which window it shows, and why.
    assert "from 2026-11-22 00:10Z to 2026-11-23 00:10Z (24 hours" in page
    assert "ending with the newest order, click or log line in the lake (2026-11-23 00:05Z)" in page


def test_an_explicit_until_wins_and_the_page_says_so(data_dir: Path, tmp_path: Path) -> None:
    _days_old_lake(data_dir, DAYS_AGO, handled_at=GENERATED_AT)
    page_path = tmp_path / "report.html"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "streambatch.cli",
            "report",
            "--html",
            str(page_path),
            "--data-dir",
            str(data_dir),
            "--until",
            "2026-11-20T12:00",
            "--hours",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    page = page_path.read_text(encoding="utf-8")
    assert "from 2026-11-20 06:00Z to 2026-11-20 12:00Z (6 hours" in page
    assert "as asked; the newest order, click or log line is at 2026-11-23 00:05Z" in page
    charts = parse_page(page).charts
    # Nothing happened in the window asked for; the charts that are not windowed still draw.
    for name in ("revenue", "funnel", "error-rate"):
        assert charts[f"plot-{name}"].series_count == 0, name
    for name in ("batches", "dead-letters"):
        assert charts[f"plot-{name}"].series_count > 0, name


def test_a_bad_until_is_one_line_and_exit_2(data_dir: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "streambatch.cli",
            "report",
            "--html",
            str(tmp_path / "r.html"),
            "--data-dir",
            str(data_dir),
            "--until",
            "yesterday",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2
    assert len([line for line in run.stderr.splitlines() if line.strip()]) == 1, run.stderr
    assert "--until" in run.stderr and "'yesterday'" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "r.html").exists()
