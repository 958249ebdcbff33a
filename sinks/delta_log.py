"""Read commit information straight from a Delta table's ``_delta_log``.

``DeltaTable.history`` (deltalake 1.x) labels each commit by counting down
from the newest version *in storage* while reading the commit infos it
listed a moment before: a commit by another writer in between shifts every
label by one. Exactly-once bookkeeping (the ``lake_version`` of a batch, the
checks after a compaction) needs the true version, so it reads the commit
file of that version itself, through the lake's filesystem (a local
directory or an object store alike).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sinks.lake_location import LakeLocation, LakeTable

__all__ = ["as_lake_table", "commit_info", "commits_from", "recent_commits"]


def as_lake_table(table: LakeTable | Path | str) -> LakeTable:
    """A local path names a table in a local lake (its parent directory)."""
    if isinstance(table, LakeTable):
        return table
    path = Path(table).absolute()
    return LakeLocation.local(path.parent).table(path.name)


def _log_file(table: LakeTable, version: int) -> str:
    return table.path(f"_delta_log/{version:020d}.json")


def commit_info(table: LakeTable | Path | str, version: int) -> dict[str, Any] | None:
    """The ``commitInfo`` action of ``version`` (custom metadata included).

    Returns None when the commit has no commitInfo or its log file is gone
    (log retention keeps only the checkpointed state of old versions).
    """
    lake_table = as_lake_table(table)
    return _parse_commit_info(lake_table.location.read_file(_log_file(lake_table, version)))


def _parse_commit_info(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    for line in data.decode("utf-8").splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        info = action.get("commitInfo")
        if isinstance(info, dict):
            return info
    return None


def recent_commits(
    table: LakeTable | Path | str, limit: int | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(version, commitInfo)`` from the newest version down, at most ``limit`` of them.

    The newest version is fixed when iteration starts; commits that land
    later are not seen. Stops at the first version whose log file is gone.
    """
    lake_table = as_lake_table(table)
    newest = lake_table.open().version()
    oldest = 0 if limit is None else max(0, newest - limit + 1)
    for version in range(newest, oldest - 1, -1):
        info = commit_info(lake_table, version)
        if info is None:
            if not lake_table.location.file_exists(_log_file(lake_table, version)):
                return
            continue
        yield version, info


def commits_from(
    table: LakeTable | Path | str, version: int, limit: int
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(version, commitInfo)`` from ``version`` up, at most ``limit`` versions.

    Stops at the first version without a log file (not committed yet). Reads
    only those log files: no table load, which replays the whole log.
    """
    lake_table = as_lake_table(table)
    for current in range(version, version + limit):
        data = lake_table.location.read_file(_log_file(lake_table, current))
        if data is None:
            return
        info = _parse_commit_info(data)
        if info is not None:
            yield current, info
