"""Allocator settings of a flow process: less memory kept, at no cost in speed.

A flow allocates in bursts from several threads, and glibc keeps what is
freed for reuse: much of the heap at the peak is free memory nobody uses.
:func:`use_compact_allocators` makes Arrow use the system allocator, keeps two
malloc arenas (``M_ARENA_MAX``) and maps blocks of 1 MiB and more on their own
(``M_MMAP_THRESHOLD``, which glibc would otherwise raise as blocks are freed);
``ARROW_DEFAULT_MEMORY_POOL``, ``MALLOC_ARENA_MAX`` and ``MALLOC_MMAP_THRESHOLD_``,
when set, win. After each committed batch :func:`release_free_memory` hands
the free pages inside glibc's heaps back (``malloc_trim``).

deltalake's Rust library brings its own jemalloc, which glibc's settings do
not reach and which keeps freed pages for a while: :func:`configure_deltalake_allocator`
makes it return them at once; a ``_RJEM_MALLOC_CONF`` already set wins.

What each setting saves, and what else was tried, is in docs/performance.md.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

import pyarrow as pa

from foundation.libc import libc_function

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
