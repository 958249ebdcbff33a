"""The flow runner's process handling: pinning, clusters, failures, memory sampling."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from flows.runner import PeakRssMonitor, _pinned, _wait_for_all, cluster_commands


def test_a_pinned_command_runs_on_its_core_only() -> None:
    core = max(os.sched_getaffinity(0))
    show = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
    output = subprocess.run(_pinned(show, core), capture_output=True, text=True, check=True)
    assert output.stdout.strip() == f"[{core}]"


def test_a_cluster_gives_every_process_its_index_and_the_same_distinct_addresses() -> None:
    commands = cluster_commands("orders", 3)
    assert [command[command.index("-i") + 1] for command in commands] == ["0", "1", "2"]
    addresses = {command[command.index("-a") + 1] for command in commands}
    assert len(addresses) == 1
    ports = [address.rsplit(":", 1)[1] for address in addresses.pop().split(";")]
    assert len(set(ports)) == 3
    assert cluster_commands("orders", 1) == [[sys.executable, "-m", "bytewax.run", "flows.orders"]]


def test_one_failing_process_stops_the_others_and_its_exit_code_is_returned() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    started = time.monotonic()
    assert _wait_for_all([sleeper, failing]) == 3
    assert sleeper.returncode is not None, "the other process was left running"
    assert time.monotonic() - started < 30


def test_all_processes_succeeding_is_success() -> None:
    quick = [subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(2)]
    assert _wait_for_all(quick) == 0


def test_the_monitor_sees_a_process_peak_and_its_steady_size() -> None:
    megabytes = 64
    # Holds `megabytes` for the whole run: the late (steady) size must show them.
    hold = (
        f"import time; block = bytearray({megabytes} * 2**20); "
        "block[::4096] = b'x' * len(block[::4096]); time.sleep(1.5)"
    )
    process = subprocess.Popen([sys.executable, "-c", hold])
    monitor = PeakRssMonitor([process.pid], interval_seconds=0.01)
    monitor.start()
    process.wait()
    monitor.stop()
    assert monitor.late_bytes() >= megabytes * 2**20
    assert monitor.peak_bytes >= monitor.late_bytes()
