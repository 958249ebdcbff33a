"""``streambatch verify`` passes a good lake and names what is wrong in a bad one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from config.settings import load_stream_settings
from events.registry import ORDERS
from generator import generate_order_records
from streambatch.verify import verify_stream
from tests.support import REPO_ROOT, StreamTopics, flow_env, run_flow, send


def produce(topics: StreamTopics, count: int) -> None:
    records = generate_order_records(count, seed=5, duplicate_ratio=0.03, malformed_ratio=0.02)
    send(topics, records)


def verify_cli(topics: StreamTopics, data_dir: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "streambatch.cli", "verify"],
        env=flow_env(topics, data_dir),
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_verify_accounts_for_every_offset(topics: StreamTopics, data_dir: Path) -> None:
    produce(topics, 5_000)
    env = flow_env(topics, data_dir)
    run_flow(env)
    result = verify_cli(topics, data_dir)
    assert result.returncode == 0, result.stderr.decode()
    assert b"lost = 0, duplicated = 0" in result.stdout


def test_verify_names_lost_offsets_and_exits_non_zero(
    topics: StreamTopics, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    produce(topics, 2_000)
    run_flow(flow_env(topics, data_dir))
    # Damage the lake behind the flow's back: rows of partition 0 below offset 10 vanish.
    DeltaTable(str(data_dir / "lake" / "orders")).delete("_partition = 0 AND _offset < 10")

    result = verify_cli(topics, data_dir)
    assert result.returncode == 1
    assert b"lost offsets [0, 1, 2" in result.stderr

    for name, value in flow_env(topics, data_dir).items():
        monkeypatch.setenv(name, value)
    report = verify_stream(
        ORDERS, load_stream_settings("orders"), {"bootstrap.servers": topics.bootstrap_servers}
    )
    lost = report.partitions[0].lost
    assert lost[:3] == [0, 1, 2]
    assert all(offset < 10 for offset in lost)
    assert report.lost == len(lost)
    assert report.duplicated == 0
    assert not report.ok
