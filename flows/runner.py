"""Run a stream's Bytewax flow as child processes, the way a user would."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from connectors.embedded_broker import free_port

__all__ = ["FlowRun", "PeakRssMonitor", "cluster_commands", "flow_command", "run_flow_to_end"]


def flow_command(stream: str, processes: int = 1) -> list[str]:
    """``python -m bytewax.run flows.<stream>`` (or ``bytewax.testing -p N`` for N processes)."""
    if processes == 1:
        return [sys.executable, "-m", "bytewax.run", f"flows.{stream}"]
    return [sys.executable, "-m", "bytewax.testing", f"flows.{stream}:flow", "-p", str(processes)]


def cluster_commands(stream: str, processes: int) -> list[list[str]]:
    """One ``bytewax.run -i K -a ...`` command per process of a local cluster.

    What a deployment runs (one process per machine or container), here with
    free local ports: ``bytewax.testing -p`` always takes ports 2101 and up,
    so two of its clusters on one machine collide.
    """
    if processes == 1:
        return [flow_command(stream)]
    addresses = ";".join(f"localhost:{port}" for port in _distinct_free_ports(processes))
    return [
        [sys.executable, "-m", "bytewax.run", f"flows.{stream}", "-i", str(k), "-a", addresses]
        for k in range(processes)
    ]


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class FlowRun:
    """The outcome of one flow run (all its processes).

    ``peak_rss_bytes`` is the sum of each process's high-water mark;
    ``late_rss_bytes`` the median resident size over the second half of the
    run (the steady state, without start-up), both in bytes.
    """

    def __init__(
        self, returncode: int, peak_rss_bytes: int, late_rss_bytes: int, stderr_tail: str
    ) -> None:
        self.returncode = returncode
        self.peak_rss_bytes = peak_rss_bytes
        self.late_rss_bytes = late_rss_bytes
        self.stderr_tail = stderr_tail


def run_flow_to_end(
    stream: str,
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    processes: int = 1,
    one_core_each: bool = False,
    quiet: bool = True,
) -> FlowRun:
    """Run the flow with ``STREAMBATCH_STOP_AT_END=true`` and wait for it.

    ``processes`` > 1 runs a local cluster (:func:`cluster_commands`); if one
    process fails the others are stopped. ``one_core_each`` pins process K to
    the K-th core this process may use (for scaling measurements: each
    process then has a core of its own, whatever its threads could use).

    Peak RSS is the kernel's high-water mark of each flow process (``VmHWM``,
    sampled until it exits; it only grows, so the last sample is the peak up
    to a few milliseconds before the end). ``ru_maxrss`` is not used: it counts
    the parent's pages that the child had between fork and exec.
    """
    full_env = {**os.environ, **env, "STREAMBATCH_STOP_AT_END": "true"}
    cores = sorted(os.sched_getaffinity(0))
    with contextlib.ExitStack() as stack:
        logs: list[IO[bytes]] = []
        running: list[subprocess.Popen[bytes]] = []
        for k, command in enumerate(cluster_commands(stream, processes)):
            log = stack.enter_context(tempfile.TemporaryFile()) if quiet else None
            if one_core_each:
                command = _pinned(command, cores[k % len(cores)])
            running.append(
                stack.enter_context(
                    subprocess.Popen(
                        command,
                        env=full_env,
                        cwd=cwd,
                        stdout=subprocess.DEVNULL if quiet else None,
                        stderr=log,
                    )
                )
            )
            if log is not None:
                logs.append(log)
        monitor = PeakRssMonitor([process.pid for process in running])
        monitor.start()
        returncode = _wait_for_all(running)
        monitor.stop()
        tail = b""
        for written in logs:
            written.seek(0)
            tail += written.read()[-8000:]
    return FlowRun(
        returncode, monitor.peak_bytes, monitor.late_bytes(), tail.decode(errors="replace")
    )


def _pinned(command: list[str], core: int) -> list[str]:
    """``command`` run on ``core`` only (its threads included).

    A small exec wrapper rather than ``preexec_fn``, which is unsafe in a
    parent with threads (the RSS monitor, rich's live display).
    """
    pin_and_exec = (
        "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); "
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    return [sys.executable, "-c", pin_and_exec, str(core), *command]


def _wait_for_all(running: Sequence[subprocess.Popen[bytes]]) -> int:
    """Wait for every process; the first non-zero exit code stops the rest."""
    while True:
        codes = [process.poll() for process in running]
        failed = [code for code in codes if code not in (None, 0)]
        if failed:
            for process in running:
                if process.poll() is None:
                    process.terminate()
            for process in running:
                process.wait()
            return failed[0] if failed[0] is not None else 1
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.05)


class PeakRssMonitor:
    """Samples ``VmHWM`` and ``VmRSS`` of processes (and their children) every few ms."""

    def __init__(self, pids: Sequence[int], interval_seconds: float = 0.02) -> None:
        self._pids = list(pids)
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._rss_samples: list[int] = []
        self.peak_bytes = 0

    def start(self) -> None:
        """Begin sampling in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling; :attr:`peak_bytes` is final after this."""
        self._stop.set()
        self._thread.join()

    def late_bytes(self) -> int:
        """Median resident size over the second half of the samples (0 if none)."""
        late = [sample for sample in self._rss_samples[len(self._rss_samples) // 2 :] if sample]
        return int(statistics.median(late)) if late else 0

    def _run(self) -> None:
        while not self._stop.is_set():
            peak = resident = 0
            for pid in self._pids:
                high_water, now = _memory_of_tree(pid)
                peak += high_water
                resident += now
            self.peak_bytes = max(self.peak_bytes, peak)
            self._rss_samples.append(resident)
            self._stop.wait(self._interval)


def _memory_of_tree(pid: int) -> tuple[int, int]:
    """Sums of ``VmHWM`` and ``VmRSS`` of ``pid`` and its children, in bytes (0 if gone).

    A sum of peaks: for several processes it may exceed the true simultaneous
    peak a little, never understate it.
    """
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    high_water = resident = 0
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    high_water += int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    resident += int(line.split()[1]) * 1024
    return high_water, resident
