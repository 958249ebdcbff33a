"""Read commit information straight from a Delta table's ``_delta_log``.

``DeltaTable.history`` (deltalake 1.x) labels each commit by counting down
from the newest version *in storage* while reading the commit infos it
listed a moment before: a commit by another writer in between shifts every
label by one. Exactly-once bookkeeping (the ``lake_version`` of a batch, the
checks after a compaction) needs the true version, so it reads the commit
file of that version itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

__all__ = ["commit_info", "commits_from", "recent_commits"]


def commit_info(table_path: Path | str, version: int) -> dict[str, Any] | None:
    """The ``commitInfo`` action of ``version`` (custom metadata included).

    Returns None when the commit has no commitInfo or its log file is gone
    (log retention keeps only the checkpointed state of old versions).
    """
    log_file = Path(table_path) / "_delta_log" / f"{version:020d}.json"
    try:
        text = log_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        info = action.get("commitInfo")
        if isinstance(info, dict):
            return info
    return None


def recent_commits(
    table_path: Path | str, limit: int | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(version, commitInfo)`` from the newest version down, at most ``limit`` of them.

    The newest version is fixed when iteration starts; commits that land
    later are not seen. Stops at the first version whose log file is gone.
    """
    newest = DeltaTable(str(table_path)).version()
    oldest = 0 if limit is None else max(0, newest - limit + 1)
    for version in range(newest, oldest - 1, -1):
        info = commit_info(table_path, version)
        if info is None:
            if not (Path(table_path) / "_delta_log" / f"{version:020d}.json").exists():
                return
            continue
        yield version, info


def commits_from(
    table_path: Path | str, version: int, limit: int
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(version, commitInfo)`` from ``version`` up, at most ``limit`` versions.

    Stops at the first version without a log file (not committed yet). Reads
    only those log files: no table load, which replays the whole log.
    """
    for current in range(version, version + limit):
        if not (Path(table_path) / "_delta_log" / f"{current:020d}.json").exists():
            return
        info = commit_info(table_path, current)
        if info is not None:
            yield current, info
