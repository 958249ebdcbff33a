"""Freed heap memory goes back to the system when the flow asks for it."""

from __future__ import annotations

import ctypes.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from foundation.allocators import DELTALAKE_JEMALLOC_CONF, release_free_memory
from tests.support import REPO_ROOT


def _resident_mib() -> float:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


@pytest.mark.skipif(
    not Path("/proc/self/status").exists() or ctypes.util.find_library("c") is None,
    reason="needs Linux with glibc (the flow's own platform)",
)
def test_free_pages_inside_the_heap_are_released() -> None:
    # 80 MB of blocks too large for Python's small-object allocator and too
    # small to be mapped on their own; the last one pins the heap's top, so
    # glibc cannot give the rest back by itself.
    blocks = [bytes(1000) + bytes([i % 256]) for i in range(80_000)]
    pinned = blocks[-1]
    del blocks
    before = _resident_mib()
    release_free_memory()
    after = _resident_mib()
    assert before - after > 40, (before, after)
    assert pinned[1000] == 79_999 % 256


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if key != "_RJEM_MALLOC_CONF"}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )


@pytest.mark.parametrize("package", ["flows", "sinks"])
def test_deltalake_returns_freed_memory_at_once_in_flow_processes(package: str) -> None:
    shown = _run_python(f"import os, {package}, deltalake; print(os.environ['_RJEM_MALLOC_CONF'])")
    assert shown.stdout.strip() == DELTALAKE_JEMALLOC_CONF


def test_a_users_deltalake_allocator_settings_win() -> None:
    shown = _run_python(
        "import os, flows; print(os.environ['_RJEM_MALLOC_CONF'])",
        _RJEM_MALLOC_CONF="narenas:1",
    )
    assert shown.stdout.strip() == "narenas:1"


def test_deltalake_allocator_reads_the_variable_we_set() -> None:
    # If deltalake ever changes allocator (or its prefix), the setting above
    # silently stops working: this fails instead. ``stats_print`` makes
    # jemalloc print its statistics at exit, so it shows whether it read the
    # variable at all.
    write = (
        "import tempfile, flows, deltalake, pyarrow as pa; "
        "deltalake.write_deltalake(tempfile.mkdtemp(), pa.table({'a': [1]}))"
    )
    ran = _run_python(write, _RJEM_MALLOC_CONF="stats_print:true")
    assert "jemalloc statistics" in ran.stderr
