"""Failing closed: a failure the flow cannot get past ends the process, saying why.

A flow that stops committing but stays alive is the worst outcome: no
supervisor restarts it, and it does not recover when the cause goes away.
So every failure is classified (:func:`is_transient`), named by its root
cause in one line (:func:`root_cause`), and reported to a
:class:`FailureLatch`, which the Bytewax worker polls (it raises there) and
which, in a flow process, ends the process at once. Nothing past the lake's
fence is lost by exiting: a restart re-reads from it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import threading
from collections.abc import Callable

from foundation.errors import TerminalError, TransientError

__all__ = [
    "EXIT_CODE",
    "FailureLatch",
    "FlowFailed",
    "exit_on_failure",
    "is_transient",
    "is_unreachable",
    "remedy",
    "root_cause",
    "root_errno",
]

EXIT_CODE = 70
"""Exit status of a flow that failed closed (``EX_SOFTWARE``; a bad setting is 2)."""

log = logging.getLogger(__name__)

# Rust and C++ libraries (delta-rs, Arrow) put the errno in their message only.
_ERRNO_IN_TEXT = re.compile(r"(?:os error|\[errno) (\d+)", re.IGNORECASE)
# Errors of the environment that retrying cannot fix (a full disk, a
# read-only or forbidden lake): fail closed at once.
_TERMINAL_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)
# delta-rs: another writer committed first; a retry on the new log may succeed.
_CONFLICT = re.compile(r"conflict|concurrent|already exists|version \d+ exists", re.IGNORECASE)
# An object store that did not answer in time (a network hiccup, a paused or
# restarting server), as object_store reports it through deltalake.
_UNREACHABLE = re.compile(
    r"error sending request|operation timed out|connection (?:refused|reset|closed)",
    re.IGNORECASE,
)
_REMEDIES = {
    errno.ENOSPC: "free space and restart",
    errno.EDQUOT: "free space (or raise the quota) and restart",
    errno.EFBIG: "free space and restart",
    errno.EROFS: "make it writable and restart",
    errno.EACCES: "give this process write access and restart",
    errno.EPERM: "give this process write access and restart",
}


class FlowFailed(TerminalError):
    """The flow failed closed; the message is the one line naming the cause."""


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes (``__cause__``, else ``__context__``), outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not other for other in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def root_errno(exc: BaseException) -> int | None:
    """The deepest operating-system error number in ``exc``'s chain, if any."""
    found = None
    for link in _chain(exc):
        number = link.errno if isinstance(link, OSError) else None
        if number is None:
            match = _ERRNO_IN_TEXT.search(str(link))
            number = int(match.group(1)) if match else None
        if number:
            found = number
    return found


def root_cause(exc: BaseException) -> str:
    """The root cause of ``exc`` in a few words, e.g. ``no space left on device (ENOSPC)``.

    An operating-system error anywhere in the chain wins (a full disk shows
    up as an Arrow error about file metadata, the errno two links below);
    otherwise the first line of the innermost error's message.
    """
    number = root_errno(exc)
    if number is not None:
        name = errno.errorcode.get(number, f"errno {number}")
        return f"{os.strerror(number).lower()} ({name})"
    innermost = _chain(exc)[-1]
    text = str(innermost).strip().splitlines()
    return f"{type(innermost).__name__}: {text[0]}" if text else type(innermost).__name__


def remedy(exc: BaseException) -> str:
    """What the operator does about ``exc`` (the end of the one-line message)."""
    number = root_errno(exc)
    return _REMEDIES.get(number or 0, "fix the cause and restart")


def is_transient(exc: BaseException) -> bool:
    """True if retrying after a delay may succeed (a commit conflict, a hiccup).

    :class:`TransientError` is; :class:`TerminalError` and a full, read-only
    or forbidden file system are not; otherwise a commit conflict reported by
    delta-rs is, and so is an object store that did not answer
    (:func:`is_unreachable`; whether such a commit happened is unknown, and a
    retry starts from the lake as committed). Anything else is terminal:
    failing closed (and being restarted) is safe, retrying an unknown error
    forever is not.
    """
    chain = _chain(exc)
    if any(isinstance(link, TerminalError) for link in chain):
        return False
    if root_errno(exc) in _TERMINAL_ERRNOS:
        return False
    if any(isinstance(link, TransientError) for link in chain):
        return True
    return any(_CONFLICT.search(str(link)) for link in chain) or is_unreachable(exc)


def is_unreachable(exc: BaseException) -> bool:
    """True if ``exc`` says a remote store did not answer (timed out, connection lost)."""
    return any(_UNREACHABLE.search(str(link)) for link in _chain(exc))


class FailureLatch:
    """Set once by the first failure the flow cannot get past; read by every worker.

    :meth:`trip` keeps the first failure (as a :class:`FlowFailed` whose
    message is the one line naming the cause) and runs the callbacks of
    :meth:`on_trip`; :meth:`raise_if_tripped` raises it in whoever polls.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failure: FlowFailed | None = None
        self.raised = False
        """True once :meth:`raise_if_tripped` has raised (the worker is unwinding)."""
        self._callbacks: list[Callable[[FlowFailed], None]] = []

    @property
    def failure(self) -> FlowFailed | None:
        """The first failure, or None while all is well."""
        return self._failure

    def trip(self, line: str, cause: BaseException | None = None) -> FlowFailed:
        """Record a failure named by ``line`` (the first one wins); returns the one kept."""
        failure = FlowFailed(" ".join(line.split()))
        failure.__cause__ = cause
        with self._lock:
            if self._failure is not None:
                return self._failure
            self._failure = failure
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(failure)
        return failure

    def raise_if_tripped(self) -> None:
        """Raise the recorded failure, if any."""
        if self._failure is not None:
            self.raised = True
            raise self._failure

    def on_trip(self, callback: Callable[[FlowFailed], None]) -> None:
        """Call ``callback`` with the failure when the latch trips (at once if it has)."""
        with self._lock:
            self._callbacks.append(callback)
            failure = self._failure
        if failure is not None:
            callback(failure)


def exit_on_failure(latch: FailureLatch) -> None:
    """Make a tripped ``latch`` end this process at once: :data:`EXIT_CODE` and one line.

    For a flow process (``python -m bytewax.run``), not for tests. The line
    ``streambatch: <cause>`` goes to stderr. The process exits without
    unwinding Bytewax (whose workers would panic, print pages of Rust
    backtrace and, with a sink raising again in its destructor, abort): the
    lake's fence is the checkpoint, so this is as safe as a ``kill -9``, and
    the other processes of a cluster lose their peer and stop too.
    """

    def announce(failure: FlowFailed) -> None:
        print(f"streambatch: {failure}", file=sys.stderr, flush=True)
        _exit_now()

    latch.on_trip(announce)


def _exit_now() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_CODE)
