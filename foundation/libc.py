"""glibc functions through ctypes, which releases the GIL for the call.

None where the C library lacks the function (musl, macOS): callers keep a
pure-Python way or skip a tuning.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from typing import Any

__all__ = ["libc_function"]


@functools.cache
def libc_function(
    name: str, argtypes: tuple[Any, ...], restype: Any = ctypes.c_int
) -> Callable[..., Any] | None:
    """The C library's ``name`` with these argument and result types, or None."""
    library = _c_library()
    if library is None:
        return None
    try:
        function = library[name]  # a fresh function object: its types are ours
    except AttributeError:
        return None
    function.argtypes = list(argtypes)
    function.restype = restype
    return function


@functools.cache
def _c_library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None
