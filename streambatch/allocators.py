"""Allocator settings of a flow process: less memory kept, at no measured cost in speed.

A flow allocates in bursts (a window of raw records, its Arrow columns, its
Parquet encoding, librdkafka's decompressed fetches) from several threads.
glibc keeps what is freed for reuse and returns only the top of its heaps, so
at the peak a third of the heap was free memory nobody used. Three settings
(peak RSS of the 1,000,000-event benchmark, same speed):

* Arrow's buffers come from the system allocator instead of its own jemalloc
  pool, which keeps freed memory for reuse by Arrow only (590 -> 520 MiB).
* Two malloc arenas (``M_ARENA_MAX``) instead of eight per core: each arena
  holds on to its own freed memory (-50 MiB).
* Blocks of 1 MiB and more are mapped on their own (``M_MMAP_THRESHOLD``) and
  so returned to the system when freed. glibc's default starts there too but
  raises the threshold up to 32 MiB each time such a block is freed, after
  which every window-sized block is carved from the heap and kept
  (-60 MiB; 256 KiB measured a third slower, 2 MiB kept half the gain).

``ARROW_DEFAULT_MEMORY_POOL``, ``MALLOC_ARENA_MAX`` and
``MALLOC_MMAP_THRESHOLD_``, when set, win.

And after each committed batch, :func:`release_free_memory` hands the free
pages inside glibc's heaps back (``malloc_trim``): what a window's parsing and
encoding freed is otherwise kept resident between batches (-10 to -14 MiB
at the peak, about 5 ms per batch, no measured cost in speed).

deltalake's Rust library brings its own jemalloc (symbols prefixed
``_rjem_``, configured by ``_RJEM_MALLOC_CONF`` once, when the library
loads), which glibc's settings do not reach. By default it keeps freed
pages for ten seconds and then some more: in a long run the commits, log
replays and checkpoints left tens of MiB resident that no one used (peak
RSS of 10,000,000 events 417 -> 378 MiB, the 1,000,000-event run's 356
unchanged, same speed). :func:`configure_deltalake_allocator` makes it
return them at once; a ``_RJEM_MALLOC_CONF`` already set wins.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

import pyarrow as pa

from streambatch.libc import libc_function

__all__ = [
    "DELTALAKE_JEMALLOC_CONF",
    "configure_deltalake_allocator",
    "release_free_memory",
    "use_compact_allocators",
]

log = logging.getLogger(__name__)
# From glibc's malloc.h.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_ARENAS = 2
_MMAP_THRESHOLD_BYTES = 1024 * 1024
_DELTALAKE_JEMALLOC_VARIABLE = "_RJEM_MALLOC_CONF"
DELTALAKE_JEMALLOC_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"
"""Freed pages go back to the system at once instead of after a decay time."""


def configure_deltalake_allocator() -> None:
    """Set deltalake's jemalloc options (module docstring) unless the user set them.

    Only effective before ``deltalake`` is imported, which is why the ``flows``
    and ``sinks`` packages call it first thing.
    """
    if "deltalake" in sys.modules:
        log.debug("deltalake already loaded; its allocator keeps its settings")
        return
    os.environ.setdefault(_DELTALAKE_JEMALLOC_VARIABLE, DELTALAKE_JEMALLOC_CONF)


def use_compact_allocators() -> None:
    """Apply the settings of the module docstring; call before the flow starts threads."""
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        pa.set_memory_pool(pa.system_memory_pool())
    if "MALLOC_ARENA_MAX" not in os.environ:
        _mallopt(_M_ARENA_MAX, _ARENAS)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        _mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def release_free_memory() -> None:
    """Return the free pages of glibc's heaps to the system (no-op elsewhere).

    Call when a burst of allocations has just been freed; it does not block
    other threads for long (the walk holds one arena's lock at a time) and
    releases the GIL (a ctypes call).
    """
    trim = libc_function("malloc_trim", (ctypes.c_size_t,))
    if trim is not None:
        trim(0)


def _mallopt(option: int, value: int) -> None:
    mallopt = libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is not None and mallopt(option, value) != 1:
        log.debug("mallopt(%d, %d) refused; the default kept", option, value)
