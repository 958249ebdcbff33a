"""Lake maintenance: ``streambatch compact`` and ``streambatch vacuum``.

Both are safe while the flows run. Compaction rewrites the small files of
finished hours into few large ones in ``data_change = false`` commits, which
Delta's optimistic concurrency lets through next to the flows' appends; a
conflict (another writer removed files it read) is retried, then the
partition is skipped. Every compaction commit is checked afterwards: the
partition holds the same number of rows and every Kafka fence (application
transaction) is unchanged. Vacuum deletes only files the current version
does not reference: removed files once their removal is older than the
retention (readers of older snapshots keep theirs meanwhile), and orphans once
their modification time is, so the files a flow has written but not committed
yet survive.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from deltalake import DeltaTable, WriterProperties
from deltalake.exceptions import CommitFailedError, DeltaError

from events.registry import get_stream
from foundation.errors import LakeError, StreambatchError
from sinks.delta_lake import DeltaLake
from sinks.delta_log import commit_info
from sinks.lake_location import LakeLocation, LakeTable, lake_in

__all__ = [
    "DEFAULT_TARGET_SIZE_BYTES",
    "DEFAULT_VACUUM_RETENTION",
    "MIN_VACUUM_RETENTION",
    "CompactionResult",
    "compact_stream",
    "finished_hour_partitions",
    "vacuum_lake",
]

DEFAULT_TARGET_SIZE_BYTES = 128 * 1024 * 1024
DEFAULT_VACUUM_RETENTION = timedelta(hours=168)
MIN_VACUUM_RETENTION = timedelta(hours=1)
_CONFLICT_ATTEMPTS = 3
_CONFLICT_BACKOFF_SECONDS = 0.5

PartitionKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What :func:`compact_stream` did to the finished hours of one stream.

    Files and rows count the candidate partitions only (finished hours with
    more than one file). ``rows_after`` exceeds ``rows_before`` only if a flow
    appended late events to those hours meanwhile; each compaction commit on
    its own changed no row (checked).

    Attributes:
        stream: The stream's table.
        files_before: Files in the candidate partitions before.
        files_after: Files in the candidate partitions after.
        partitions: Compacted partitions, ``event_date=YYYY-MM-DD/event_hour=HH``.
        rows_before: Rows in the candidate partitions before.
        rows_after: Rows in the candidate partitions after.
        skipped: ``(partition, reason)`` of partitions left as they were.
    """

    stream: str
    files_before: int
    files_after: int
    partitions: tuple[str, ...]
    rows_before: int
    rows_after: int
    skipped: tuple[tuple[str, str], ...] = ()

    def summary(self) -> str:
        """One line for the command line."""
        line = (
            f"{self.stream}: {len(self.partitions)} partitions compacted, "
            f"files {self.files_before} -> {self.files_after}, "
            f"rows {self.rows_before} -> {self.rows_after}"
        )
        if self.skipped:
            line += f", {len(self.skipped)} skipped (run compact again later)"
        return line


class _Reporter(Protocol):
    def partition_done(self, line: str) -> None: ...

    def partition_skipped(self, line: str) -> None: ...

    def warn(self, line: str) -> None: ...


def _partition_name(key: PartitionKey) -> str:
    """``event_date=YYYY-MM-DD/event_hour=HH``."""
    return f"event_date={key[0]}/event_hour={key[1]}"


def finished_hour_partitions(table: DeltaTable, now: datetime) -> dict[PartitionKey, int]:
    """Files per hive partition strictly older than the hour of ``now`` (UTC)."""
    current = _aware_utc(now)
    current_key = (current.strftime("%Y-%m-%d"), current.strftime("%H"))
    # Zero-padded strings: lexical order is time order.
    return {key: files for key, files in _files_per_partition(table).items() if key < current_key}


def compact_stream(
    data_dir: LakeLocation | Path,
    stream: str,
    now: Callable[[], datetime],
    target_size_bytes: int = DEFAULT_TARGET_SIZE_BYTES,
    progress: bool | None = None,
) -> CompactionResult:
    """Merge the small files of each finished hour of ``stream``, one commit per hour.

    Finished hours are partitions strictly older than the current hour of
    ``now()`` (aware, taken as UTC); the current hour is still being written.
    Rows are not changed, only rewritten (``data_change = false``). A commit
    conflict is retried a few times, then the partition is skipped and named
    in the result. Progress goes to stderr: a rich bar per partition when
    ``progress`` is true, plain lines when false, the bar on a terminal when
    ``None``.

    Raises:
        StreambatchError: unknown stream or no table at ``<lake>/<stream>``
            (``data_dir``: a lake location, or a data directory whose lake is
            ``<data_dir>/lake``).
        LakeError: a compaction commit changed a partition's rows or a fence
            (never expected; the message names the version to restore).
        ValueError: ``target_size_bytes`` not positive or ``now()`` naive.
    """
    if target_size_bytes <= 0:
        raise ValueError(f"target_size_bytes must be > 0, got {target_size_bytes}")
    lake = DeltaLake(lake_in(data_dir), get_stream(stream))  # UnknownStreamError if unknown
    path = lake.table_path
    if not path.exists():
        raise StreambatchError(
            f"no Delta table at {lake.table_path}: has the {stream} flow run with this lake?"
        )
    table = path.open()
    planned = finished_hour_partitions(table, now())
    candidates = sorted(key for key, files in planned.items() if files > 1)
    rows_before = _rows(table, candidates)
    app_ids = _known_app_ids(lake, table)
    writer_properties = WriterProperties(compression="ZSTD")
    compacted: list[str] = []
    skipped: list[tuple[str, str]] = []
    with _reporter(progress, len(candidates)) as report:
        for key in candidates:
            name = _partition_name(key)
            started = time.monotonic()
            outcome = _compact_partition(
                path, key, target_size_bytes, writer_properties, app_ids, report
            )
            if outcome is None:
                reason = (
                    f"a concurrent commit conflicted {_CONFLICT_ATTEMPTS} times; "
                    "the partition is unchanged"
                )
                skipped.append((name, reason))
                report.partition_skipped(
                    f"{stream} {name}: skipped: {reason}; run compact again later"
                )
                continue
            removed, added = outcome
            if removed == 0:
                # Its files are already near the target size: nothing to merge.
                report.partition_done(f"{stream} {name}: nothing to merge")
                continue
            compacted.append(name)
            report.partition_done(
                f"{stream} {name}: {removed} files -> {added} ({time.monotonic() - started:.1f} s)"
            )
    final = path.open()
    after = _files_per_partition(final)
    return CompactionResult(
        stream=stream,
        files_before=sum(planned[key] for key in candidates),
        files_after=sum(after.get(key, 0) for key in candidates),
        partitions=tuple(compacted),
        rows_before=rows_before,
        rows_after=_rows(final, candidates),
        skipped=tuple(skipped),
    )


def _compact_partition(
    path: LakeTable,
    key: PartitionKey,
    target_size_bytes: int,
    writer_properties: WriterProperties,
    app_ids: list[str],
    report: _Reporter,
) -> tuple[int, int] | None:
    """Compact one partition and check its commit; ``None`` if it kept conflicting."""
    filters = [("event_date", "=", key[0]), ("event_hour", "=", key[1])]
    for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
        table = path.open()
        since = table.version()
        try:
            metrics = table.optimize.compact(
                partition_filters=filters,
                target_size=target_size_bytes,
                writer_properties=writer_properties,
            )
        except (CommitFailedError, DeltaError) as exc:
            # Only conflicts are retried; anything else is a real failure.
            text = str(exc).lower()
            if not isinstance(exc, CommitFailedError) and "conflict" not in text:
                raise
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            report.warn(
                f"{_partition_name(key)}: commit conflict (attempt {attempt} of "
                f"{_CONFLICT_ATTEMPTS}): {first_line}"
            )
            time.sleep(_CONFLICT_BACKOFF_SECONDS * attempt)
            continue
        _check_compaction_commits(path, since, key, app_ids)
        return int(metrics.get("numFilesRemoved", 0)), int(metrics.get("numFilesAdded", 0))
    return None


def _check_compaction_commits(
    path: LakeTable, since: int, key: PartitionKey, app_ids: list[str]
) -> None:
    """Every OPTIMIZE commit after ``since`` kept the partition's rows and every fence.

    Raises:
        LakeError: naming the commit and the version to restore.
    """
    latest = path.open().version()
    for version in range(since + 1, latest + 1):
        info = commit_info(path, version)
        if info is None or info.get("operation") != "OPTIMIZE":
            continue
        before = path.open(version=version - 1)
        after = path.open(version=version)
        for app_id in app_ids:
            old, new = before.transaction_version(app_id), after.transaction_version(app_id)
            if old != new:
                raise LakeError(
                    f"{path}: compaction commit {version} moved the fence {app_id} from "
                    f"{old} to {new}; stop the flows and restore version {version - 1}"
                )
        rows_old, rows_new = _rows(before, [key]), _rows(after, [key])
        if rows_old != rows_new:
            raise LakeError(
                f"{path}: compaction commit {version} changed {_partition_name(key)} from "
                f"{rows_old} to {rows_new} rows; stop the flows and restore version {version - 1}"
            )


def _add_actions(table: DeltaTable) -> pa.Table:
    """The table's live files with partition values and statistics, as a pyarrow table."""
    # deltalake returns an arro3 table; pyarrow reads it through the Arrow C interface.
    return pa.table(table.get_add_actions(flatten=True))


def _files_per_partition(table: DeltaTable) -> dict[PartitionKey, int]:
    adds = _add_actions(table)
    counts: dict[PartitionKey, int] = {}
    if adds.num_rows == 0:
        return counts
    for event_date, event_hour in zip(
        adds.column("partition.event_date").to_pylist(),
        adds.column("partition.event_hour").to_pylist(),
        strict=True,
    ):
        key = (str(event_date), str(event_hour))
        counts[key] = counts.get(key, 0) + 1
    return counts


def _rows(table: DeltaTable, keys: Collection[PartitionKey]) -> int:
    """Rows of some hive partitions: from the log's statistics, else from Parquet footers."""
    adds = _add_actions(table)
    if not keys or adds.num_rows == 0:
        return 0
    joined = pc.binary_join_element_wise(
        adds.column("partition.event_date"), adds.column("partition.event_hour"), "/"
    )
    wanted = pa.array([f"{event_date}/{event_hour}" for event_date, event_hour in keys])
    records = adds.filter(pc.is_in(joined, value_set=wanted)).column("num_records")
    if records.null_count == 0:
        return int(pc.sum(records).as_py() or 0)
    return sum(
        int(
            table.to_pyarrow_dataset(
                partitions=[("event_date", "=", key[0]), ("event_hour", "=", key[1])]
            ).count_rows()
        )
        for key in keys
    )


def _known_app_ids(lake: DeltaLake, table: DeltaTable) -> list[str]:
    """Application-transaction ids of the stream: from ``batches`` and file statistics.

    The Delta API looks fences up by id only, so the ids are gathered from the
    (topic, partition) pairs the lake has seen.
    """
    pairs: set[tuple[str, int]] = set()
    if lake.batches_path.exists():
        name = lake.table_path.name
        rows = (
            lake.batches_path.open()
            .to_pyarrow_dataset()
            .to_table(columns=["topic", "partition"], filter=pc.field("stream") == name)
        )
        pairs.update(
            zip(
                rows.column("topic").to_pylist(),
                (int(p) for p in rows.column("partition").to_pylist()),
                strict=True,
            )
        )
    adds = _add_actions(table)
    for bound in ("min", "max"):
        topics, partitions = f"{bound}._topic", f"{bound}._partition"
        if topics in adds.column_names and partitions in adds.column_names:
            for topic, partition in zip(
                adds.column(topics).to_pylist(), adds.column(partitions).to_pylist(), strict=True
            ):
                if topic is not None and partition is not None:
                    pairs.add((str(topic), int(partition)))
    return sorted(lake.app_id(topic, partition) for topic, partition in pairs)


def vacuum_lake(
    data_dir: LakeLocation | Path,
    retention: timedelta = DEFAULT_VACUUM_RETENTION,
    dry_run: bool = False,
    force: bool = False,
) -> list[str]:
    """Delete files of every lake table that no version references, older than ``retention``.

    Covers the stream tables and ``batches``: files removed by compaction once
    their removal is older than the retention, and orphans that no commit ever
    named (a crash between writing a batch's files and its commit) once their
    modification time is. ``retention`` is rounded up to whole hours. Returns
    the deleted files (with ``dry_run``, the files that would be deleted,
    none is touched): local paths, or URIs in an object store. ``data_dir``:
    a lake location, or a data directory whose lake is ``<data_dir>/lake``.

    Raises:
        StreambatchError: retention below :data:`MIN_VACUUM_RETENTION` without
            ``force`` (a running flow's written-but-uncommitted files could go),
            or no lake there.
    """
    if retention < timedelta(0):
        raise StreambatchError("the vacuum retention must not be negative")
    if retention < MIN_VACUUM_RETENTION and not force:
        hours = retention / timedelta(hours=1)
        raise StreambatchError(
            f"refusing a vacuum retention of {hours:g} h (< 1 h): files a running flow has "
            "written but not committed yet could be deleted; pass --force to do it anyway"
        )
    location = lake_in(data_dir)
    if location.is_local and not location.local_path.is_dir():
        raise StreambatchError(f"no lake at {location.describe()}")
    retention_hours = math.ceil(retention / timedelta(hours=1))
    removed: list[str] = []
    for table in _lake_tables(location):
        files = table.open().vacuum(
            retention_hours=retention_hours,
            dry_run=dry_run,
            # Our own floor (1 h, or --force) replaces the table's 7-day default.
            enforce_retention_duration=False,
            # Full: also orphans no commit ever named, not only removed files.
            full=True,
        )
        removed.extend(f"{table.uri}/{relative}" for relative in sorted(files))
    return removed


def _lake_tables(location: LakeLocation) -> list[LakeTable]:
    """The Delta tables directly under the lake's root, by name.

    Raises:
        StreambatchError: the lake cannot be listed (no bucket, no access).
    """
    try:
        entries = location.filesystem().get_file_info(pafs.FileSelector("", recursive=False))
    except (OSError, FileNotFoundError) as exc:
        raise location.error("list", exc) from None
    names = sorted(
        info.base_name
        for info in entries
        if info.type == pafs.FileType.Directory and not info.base_name.startswith(".")
    )
    tables = []
    for name in names:
        try:
            table = location.table(name)
        except LakeError:
            continue
        if table.exists():
            tables.append(table)
    return tables


def _aware_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"the clock must return aware datetimes, got {moment.isoformat()}")
    return moment.astimezone(UTC)


class _LineReporter:
    """Plain lines on stderr (not a terminal: logs, CI)."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._done = 0

    def partition_done(self, line: str) -> None:
        self._done += 1
        print(f"[{self._done}/{self._total}] {line}", file=sys.stderr, flush=True)

    def partition_skipped(self, line: str) -> None:
        self.partition_done(line)

    def warn(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)


class _BarReporter:
    """A rich progress bar on stderr, advanced per partition."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self.progress = Progress(console=Console(stderr=True), transient=False)
        self._task = self.progress.add_task("compacting", total=total)

    def partition_done(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False)
        self.progress.advance(self._task)

    def partition_skipped(self, line: str) -> None:
        self.warn(line)
        self.progress.advance(self._task)

    def warn(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False, style="yellow")


@contextmanager
def _reporter(progress: bool | None, total: int) -> Iterator[_Reporter]:
    use_bar = sys.stderr.isatty() if progress is None else progress
    if not use_bar or total == 0:
        yield _LineReporter(total)
        return
    bar = _BarReporter(total)
    bar.progress.start()
    try:
        yield bar
    finally:
        bar.progress.stop()
