"""Failing closed: root causes named in one line, transient vs terminal, no hang.

The sink's threads are driven by a real Bytewax dataflow (``run_main``) over
a real Delta lake in a temporary directory; the validation step is the one
injected function, made to fail the way a full disk does.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

from config.settings import load_stream_settings
from connectors.records import ClosedBatch, ValidatedBatch
from events.registry import STREAMS
from flows.batching import FlushPolicy
from flows.batching_source import BatchingSource
from foundation.errors import DeadLetterWriteError, FenceMovedError, LakeError, TransientError
from foundation.failure import FailureLatch, FlowFailed, is_transient, remedy, root_cause
from sinks.delta_lake import DeltaLake
from sinks.lake_sink import LakeSink
from tests.unit.test_batching import FakeClock, chunk
from tests.unit.test_batching_source import ScriptedReader, ScriptedSource

# A hang is forever; a flow that fails closed stops in well under this.
STOPS_WITHIN_SECONDS = 30.0


def disk_full_as_arrow_reports_it() -> RuntimeError:
    """What a full disk looks like from pyarrow: the ENOSPC two links down."""
    try:
        try:
            raise OSError(errno.ENOSPC, "Error writing bytes to file")
        except OSError as inner:
            raise OSError("Parquet writer failed") from inner
    except OSError as middle:
        outer = RuntimeError("file metadata is only available after writer close")
        outer.__context__ = middle
        return outer


def test_the_root_cause_is_found_down_the_chain_and_named() -> None:
    failure = disk_full_as_arrow_reports_it()
    assert root_cause(failure) == "no space left on device (ENOSPC)"
    assert remedy(failure) == "free space and restart"
    assert not is_transient(failure)


def test_an_errno_only_in_a_rust_message_is_found() -> None:
    failure = OSError("Generic LocalFileSystem error: Read-only file system (os error 30)")
    assert root_cause(failure) == "read-only file system (EROFS)"
    assert remedy(failure) == "make it writable and restart"
    assert not is_transient(failure)


def test_without_an_errno_the_innermost_message_is_the_cause() -> None:
    try:
        try:
            raise ValueError("bad thing\nwith a second line")
        except ValueError as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as outer:
        assert root_cause(outer) == "ValueError: bad thing"


@pytest.mark.parametrize(
    ("failure", "transient"),
    [
        (TransientError("broker away"), True),
        (FenceMovedError("another writer committed first"), True),
        (Exception("Failed to commit transaction: Concurrent transaction failed."), True),
        (LakeError("foreign schema"), False),
        (DeadLetterWriteError("dead-letter topic x.dlq does not exist"), False),
        (OSError(errno.EACCES, "Permission denied"), False),
        (KeyError("unknown"), False),
        # An object store that did not answer: the commit PUT is not retried by
        # object_store itself, so the sink retries it (from the lake as committed).
        (
            OSError(
                "Generic S3 error\n ↳ Error performing PUT http://127.0.0.1:1/b/t/_delta_log/"
                "00000000000000000005.json in 30.0s - HTTP error\n  ↳ error sending request\n"
                "   ↳ operation timed out"
            ),
            True,
        ),
        (OSError("Generic S3 error: connection refused"), True),
        (OSError("Generic S3 error: Access Denied (403)"), False),
    ],
)
def test_transient_or_terminal(failure: Exception, transient: bool) -> None:
    assert is_transient(failure) is transient


def test_the_first_failure_wins_and_is_one_line() -> None:
    latch = FailureLatch()
    seen: list[FlowFailed] = []
    latch.on_trip(seen.append)
    first = latch.trip("lake at /x: no space\nleft", OSError(errno.ENOSPC, "full"))
    latch.trip("a later failure")
    assert str(first) == "lake at /x: no space left"
    assert seen == [first]
    with pytest.raises(FlowFailed):
        latch.raise_if_tripped()
    assert latch.raised


def failing_flow(
    tmp_path: Path, *, ends: bool, validate: Callable[[ClosedBatch], ValidatedBatch]
) -> Dataflow:
    """Read two records, close them as a batch, validate them with ``validate``."""
    stream = STREAMS["orders"]
    lake = DeltaLake(tmp_path / "lake", stream)
    lake.ensure_tables()
    settings = load_stream_settings("orders")
    failure = FailureLatch()
    clock = FakeClock()
    reader = ScriptedReader([[chunk(0, [40, 40])]], clock, ends=ends)
    source = BatchingSource(
        ScriptedSource({"orders/0": reader}), FlushPolicy(timedelta(hours=1), 50), clock, failure
    )
    flow = Dataflow("fail_closed")
    closed = op.input("read", flow, source)
    sink = LakeSink(lake, settings, {"bootstrap.servers": "127.0.0.1:9"}, validate, failure)
    op.output("commit", closed, sink)
    return flow


def run_bounded(flow: Dataflow) -> BaseException | None:
    """Run ``flow`` in a thread; its exception, or fail if it is still running."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            run_main(flow)
        except BaseException as exc:
            raised.append(exc)

    runner = threading.Thread(target=target, daemon=True)
    runner.start()
    runner.join(STOPS_WITHIN_SECONDS)
    assert not runner.is_alive(), "the flow hangs after a failure in the sink's thread"
    return raised[0] if raised else None


def disk_full(batch: ClosedBatch) -> ValidatedBatch:
    raise disk_full_as_arrow_reports_it()


@pytest.mark.parametrize("ends", [True, False], ids=["at-end-of-input", "while-running"])
def test_a_failure_in_the_sinks_thread_stops_the_bytewax_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ends: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    raised = run_bounded(failing_flow(tmp_path, ends=ends, validate=disk_full))
    assert raised is not None, "the flow finished as if all were well"
    chain = []
    while raised is not None:
        chain.append(raised)
        raised = raised.__cause__ or raised.__context__
    failed = [link for link in chain if isinstance(link, FlowFailed)]
    assert failed, chain
    assert "no space left on device (ENOSPC) while validating a batch of orders/0" in str(failed[0])
