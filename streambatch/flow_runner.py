"""Run a stream's Bytewax flow as a child process, the way a user would."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

__all__ = ["FlowRun", "flow_command", "run_flow_to_end"]


def flow_command(stream: str, processes: int = 1) -> list[str]:
    """``python -m bytewax.run flows.<stream>`` (or ``bytewax.testing -p N`` for N processes)."""
    if processes == 1:
        return [sys.executable, "-m", "bytewax.run", f"flows.{stream}"]
    return [sys.executable, "-m", "bytewax.testing", f"flows.{stream}:flow", "-p", str(processes)]


class FlowRun:
    """The outcome of one flow process: exit code and peak RSS (bytes)."""

    def __init__(self, returncode: int, peak_rss_bytes: int, stderr_tail: str) -> None:
        self.returncode = returncode
        self.peak_rss_bytes = peak_rss_bytes
        self.stderr_tail = stderr_tail


def run_flow_to_end(
    stream: str,
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    processes: int = 1,
    quiet: bool = True,
) -> FlowRun:
    """Run the flow with ``STREAMBATCH_STOP_AT_END=true`` and wait for it.

    Peak RSS is the kernel's high-water mark of the flow process (``VmHWM``,
    sampled until it exits; it only grows, so the last sample is the peak up to
    a few milliseconds before the end). ``ru_maxrss`` is not used: it counts the
    parent's pages that the child had between fork and exec.
    """
    full_env = {**os.environ, **env, "STREAMBATCH_STOP_AT_END": "true"}
    with subprocess.Popen(
        flow_command(stream, processes),
        env=full_env,
        cwd=cwd,
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.PIPE if quiet else None,
    ) as process:
        monitor = PeakRssMonitor(process.pid)
        monitor.start()
        tail = b""
        if process.stderr is not None:
            for line in process.stderr:
                tail = (tail + line)[-8000:]
        process.wait()
        monitor.stop()
    return FlowRun(process.returncode, monitor.peak_bytes, tail.decode(errors="replace"))


class PeakRssMonitor:
    """Samples ``VmHWM`` of a process (and its children) every few milliseconds."""

    def __init__(self, pid: int, interval_seconds: float = 0.02) -> None:
        self._pid = pid
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_bytes = 0

    def start(self) -> None:
        """Begin sampling in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling; :attr:`peak_bytes` is final after this."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _high_water_mark(self._pid))
            self._stop.wait(self._interval)


def _high_water_mark(pid: int) -> int:
    """Sum of ``VmHWM`` of ``pid`` and its children, in bytes (0 if gone).

    A sum of peaks: for several worker processes it may exceed the true
    simultaneous peak a little, never understate it.
    """
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    peak = 0
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak += int(line.split()[1]) * 1024
    return peak
