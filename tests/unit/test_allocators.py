"""Freed heap memory goes back to the system when the flow asks for it."""

from __future__ import annotations

import ctypes.util
import re
from pathlib import Path

import pytest

from streambatch.allocators import release_free_memory


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
