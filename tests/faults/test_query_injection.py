"""SQL injection and file access through ``streambatch query`` and ``sinks.duckdb.connect``.

Named reports bind their parameters, so a quote in a value is data, not SQL;
ad-hoc SQL must be one ``SELECT``; the connection reads the tables' committed
files and nothing else, and writes nothing.

Pass: legitimate queries give the same results before and after every hostile
one; each hostile one ends with exit code 2 and a one-line ``streambatch: ...``
message without a traceback (or, for a hostile value of a text parameter,
with no rows, since it is compared as a value); no file appears at any target
and the lake is byte-for-byte unchanged; no content of a file outside the lake
is ever printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka.admin import AdminClient

from connectors.embedded_broker import create_topics
from generator import generate_order_records, produce_records
from sinks.duckdb import connect
from tests.support import REPO_ROOT, StreamTopics, flow_env, run_flow

pytestmark = pytest.mark.slow

SECRET_LINE = "streambatch-secret-outside-the-lake"


@dataclass(frozen=True)
class Lake:
    data_dir: Path
    targets: Path  # where hostile SQL tries to write; must stay empty
    outside_csv: Path  # a readable file outside the lake
    outside_parquet: Path
    stray_parquet: Path  # inside the lake directory, but in no commit
    legitimate: list[Result]  # results of LEGITIMATE before any hostile query


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def lake(bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """One lake for the module: 3,000 orders (1 % malformed) through the real flow."""
    root = tmp_path_factory.mktemp("injection")
    name = f"t{uuid.uuid4().hex[:12]}"
    topics = StreamTopics(bootstrap_servers, name, 3)
    create_topics(bootstrap_servers, [name, topics.dead_letter_topic], 3)
    try:
        report = produce_records(
            generate_order_records(3_000, seed=5, malformed_ratio=0.01),
            producer_config={"bootstrap.servers": bootstrap_servers},
            topic=name,
            progress=False,
        )
        assert report.failed == 0
        data_dir = root / "data"
        run_flow(flow_env(topics, data_dir))
        targets = root / "targets"
        targets.mkdir()
        outside = root / "outside"
        outside.mkdir()
        (outside / "secret.csv").write_text(f"a,b\n{SECRET_LINE},1\n")
        pq.write_table(pa.table({"a": [SECRET_LINE]}), outside / "secret.parquet")
        stray = data_dir / "lake" / "orders" / "stray.parquet"
        pq.write_table(pa.table({"a": [SECRET_LINE]}), stray)
        made = Lake(
            data_dir, targets, outside / "secret.csv", outside / "secret.parquet", stray, []
        )
        made.legitimate.extend(legitimate_results(made))
        yield made
    finally:
        client = AdminClient({"bootstrap.servers": bootstrap_servers})
        for future in client.delete_topics([name, topics.dead_letter_topic]).values():
            with contextlib.suppress(Exception):
                future.result(timeout=10)


def cli(lake: Lake, *args: str) -> Result:
    """``streambatch query --data-dir ... ARGS`` as a user runs it, output to a pipe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMBATCH_", "KAFKA_"))}
    env.pop("COLUMNS", None)  # the width of a pipe, not of the terminal pytest runs in
    env["PYTHONPATH"] = str(REPO_ROOT)
    completed = subprocess.run(
        [sys.executable, "-m", "streambatch.cli", "query", "--data-dir", str(lake.data_dir), *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return Result(
        completed.returncode,
        completed.stdout.decode(errors="replace"),
        completed.stderr.decode(errors="replace"),
    )


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


LEGITIMATE = (
    ("SELECT count(*) AS n, sum(total_amount) AS revenue FROM orders", "--format", "json"),
    ("SELECT event_type, count(*) FROM orders GROUP BY 1 ORDER BY 1", "--format", "csv"),
    ("--report", "orders_per_window", "--format", "json"),
    ("--report", "dead_letters", "--param", "stream=orders", "--format", "json"),
)


def legitimate_results(lake: Lake) -> list[Result]:
    results = [cli(lake, *args) for args in LEGITIMATE]
    for args, result in zip(LEGITIMATE, results, strict=True):
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.strip(), args
    return results


def bad_parameter_cases(lake: Lake) -> list[tuple[str, ...]]:
    target = lake.targets / "x.csv"
    return [
        ("--report", "orders_per_window", "--param", "since=2026-01-01'; DROP VIEW orders; --"),
        ("--report", "orders_per_window", "--param", "until=2027-01-01' OR '1'='1"),
        ("--report", "orders_per_window", "--param", "limit=1; DROP VIEW orders"),
        ("--report", "orders_per_window", "--param", f"window_minutes=10) TO '{target}'; --"),
        ("--report", "orders_per_window", "--param", "owner=1"),
        ("--report", "batches", "--param", f"stream={'x' * 201}"),
        ("--report", "no_such_report'; DROP VIEW orders; --"),
    ]


HOSTILE_SQL = (
    "COPY (SELECT 1) TO '{targets}/copy.csv'",
    "COPY orders TO '{targets}/orders.parquet' (FORMAT parquet)",
    "COPY orders TO '{data}/lake/orders/evil.parquet' (FORMAT parquet)",
    "EXPORT DATABASE '{targets}/export'",
    "ATTACH '{targets}/evil.duckdb' AS evil",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "RESET enable_external_access",
    "SET allowed_directories = ['/']",
    "DROP VIEW orders",
    "CREATE TABLE t AS SELECT * FROM orders",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{targets}/explain.csv'",
    "SELECT 1; COPY (SELECT 1) TO '{targets}/second.csv'",
    "PRAGMA version",
    "CALL duckdb_settings()",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_csv('{outside_csv}')",
    "SELECT * FROM read_parquet('{outside_parquet}')",
    "SELECT * FROM read_parquet('{stray}')",
    "SELECT * FROM read_json('{data}/lake/orders/_delta_log/00000000000000000000.json')",
    "SELECT * FROM read_blob('{outside_csv}')",
    "SELECT * FROM orders WHERE",
    "SELECT * FROM no_such_view",
)
# Statements that would change the session for later queries if they ran.
CHANGING_SQL = HOSTILE_SQL[7:12]


def hostile_sql(lake: Lake, template: str) -> str:
    return template.format(
        targets=lake.targets,
        data=lake.data_dir,
        outside_csv=lake.outside_csv,
        outside_parquet=lake.outside_parquet,
        stray=lake.stray_parquet,
    )


def assert_clean_refusal(result: Result, what: str) -> None:
    assert result.returncode == 2, f"{what}: exit {result.returncode}\n{result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr, f"{what}: traceback\n{result.stderr[-2000:]}"
    assert result.stderr.startswith("streambatch: "), f"{what}: {result.stderr[-2000:]}"


def assert_nothing_escaped(lake: Lake, result: Result, lake_before: dict[str, str]) -> None:
    assert list(lake.targets.iterdir()) == []
    assert tree_digest(lake.data_dir) == lake_before
    for stream in (result.stdout, result.stderr):
        assert SECRET_LINE not in stream
        assert "root:" not in stream  # a line of /etc/passwd


def test_report_parameters_are_bound_never_spliced(lake: Lake) -> None:
    lake_before = tree_digest(lake.data_dir)
    for args in bad_parameter_cases(lake):
        result = cli(lake, *args)
        assert_clean_refusal(result, " ".join(args))
        assert_nothing_escaped(lake, result, lake_before)

    # A quote in a text parameter is part of the value: no stream has that name.
    outside = Path(f"/tmp/streambatch-injection-{uuid.uuid4().hex}.csv")
    for target in (lake.targets / "x.csv", outside):
        stream = f"orders'; COPY (SELECT 1) TO '{target}'; --"
        for report in ("batches", "dead_letters"):
            result = cli(
                lake, "--report", report, "--param", f"stream={stream}", "--format", "jsonl"
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout == "", f"{report}: rows for a stream that does not exist"
            assert_nothing_escaped(lake, result, lake_before)
        assert not target.exists()
    # LEGITIMATE holds the same report with a real stream: it has rows.
    assert legitimate_results(lake) == lake.legitimate


@pytest.mark.parametrize("template", HOSTILE_SQL)
def test_ad_hoc_sql_that_writes_changes_or_reads_outside_is_refused_cleanly(
    lake: Lake, template: str
) -> None:
    sql = hostile_sql(lake, template)
    lake_before = tree_digest(lake.data_dir)
    result = cli(lake, sql)
    assert_nothing_escaped(lake, result, lake_before)
    assert_clean_refusal(result, sql)


def test_legitimate_results_survive_hostile_sql(lake: Lake) -> None:
    for template in CHANGING_SQL:
        cli(lake, hostile_sql(lake, template))
    assert legitimate_results(lake) == lake.legitimate


def test_refusals_are_one_line(lake: Lake) -> None:
    cases: list[tuple[str, ...]] = [
        (hostile_sql(lake, HOSTILE_SQL[0]),),
        ("SELECT * FROM read_csv('/etc/passwd')",),
        bad_parameter_cases(lake)[0],
    ]
    for args in cases:
        result = cli(lake, *args)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, f"{args}: {len(lines)} lines:\n{result.stderr[-2000:]}"


def test_connection_reads_committed_files_only(lake: Lake) -> None:
    with connect(lake.data_dir) as conn:
        total = conn.execute("SELECT count(*) FROM orders").fetchall()[0][0]
        assert total > 2_900
        for sql in (
            "SELECT * FROM read_csv('/etc/passwd')",
            f"SELECT * FROM read_csv('{lake.outside_csv}')",
            f"SELECT * FROM read_parquet('{lake.outside_parquet}')",
            f"SELECT * FROM read_parquet('{lake.stray_parquet}')",
            f"COPY (SELECT 1) TO '{lake.targets / 'direct.csv'}'",
            "SET enable_external_access = true",
            "INSTALL httpfs",
        ):
            with pytest.raises(duckdb.Error):
                conn.execute(sql).fetchall()
        # Still usable, and still locked, after the refusals.
        assert conn.execute("SELECT count(*) FROM orders").fetchall()[0][0] == total
    assert list(lake.targets.iterdir()) == []


def test_format_json_is_one_json_document_and_jsonl_a_line_per_row(lake: Lake) -> None:
    sql = "SELECT event_type, count(*) AS n FROM orders GROUP BY 1 ORDER BY 1"
    as_json = cli(lake, sql, "--format", "json")
    as_lines = cli(lake, sql, "--format", "jsonl")
    assert as_json.returncode == 0 and as_lines.returncode == 0, as_json.stderr + as_lines.stderr
    document = json.loads(as_json.stdout)
    lines = [json.loads(line) for line in as_lines.stdout.splitlines()]
    assert isinstance(document, list) and document, as_json.stdout
    assert document == lines
    assert set(document[0]) == {"event_type", "n"}
