"""Run a stream's Bytewax flow as a child process, the way a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["FlowRun", "flow_command", "run_flow_to_end"]


def flow_command(stream: str, processes: int = 1, workers: int = 1) -> list[str]:
    """``python -m bytewax.run flows.<stream>`` (or ``bytewax.testing -p N`` for N processes)."""
    if processes == 1:
        return [sys.executable, "-m", "bytewax.run", f"flows.{stream}", "-w", str(workers)]
    return [
        sys.executable,
        "-m",
        "bytewax.testing",
        f"flows.{stream}:flow",
        "-p",
        str(processes),
        "-w",
        str(workers),
    ]


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

    Peak RSS comes from the kernel's accounting of the child (``wait4``), so it
    is exact and costs nothing while the flow runs.
    """
    full_env = {**os.environ, **env, "STREAMBATCH_STOP_AT_END": "true"}
    with subprocess.Popen(
        flow_command(stream, processes),
        env=full_env,
        cwd=cwd,
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.PIPE if quiet else None,
    ) as process:
        tail = b""
        if process.stderr is not None:
            for line in process.stderr:
                tail = (tail + line)[-8000:]
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux.
    return FlowRun(process.returncode, usage.ru_maxrss * 1024, tail.decode(errors="replace"))
