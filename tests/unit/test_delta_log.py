"""Commit infos are read by their true version, also while another writer commits."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from deltalake import CommitProperties, write_deltalake

from sinks.delta_log import commit_info, commits_from, recent_commits


def _append(path: Path, tag: str) -> None:
    write_deltalake(
        str(path),
        pa.table({"x": [1]}),
        mode="append",
        commit_properties=CommitProperties(custom_metadata={"tag": tag}),
    )


def test_commit_info_returns_the_metadata_of_that_version(tmp_path: Path) -> None:
    for tag in ("zero", "one", "two"):
        _append(tmp_path, tag)
    assert [commit_info(tmp_path, v)["tag"] for v in range(3)] == ["zero", "one", "two"]  # type: ignore[index]  # present for these versions
    assert commit_info(tmp_path, 3) is None


def test_recent_commits_keeps_true_versions_when_a_commit_lands_meanwhile(tmp_path: Path) -> None:
    for tag in ("zero", "one", "two"):
        _append(tmp_path, tag)
    commits = recent_commits(tmp_path)
    first = next(commits)
    _append(tmp_path, "three")  # another writer commits while we iterate
    seen = [first, *commits]
    assert [(version, info["tag"]) for version, info in seen] == [
        (2, "two"),
        (1, "one"),
        (0, "zero"),
    ]


def test_recent_commits_honours_the_limit(tmp_path: Path) -> None:
    for tag in ("zero", "one", "two", "three"):
        _append(tmp_path, tag)
    assert [version for version, _ in recent_commits(tmp_path, 2)] == [3, 2]


def test_commits_from_reads_forwards_to_the_newest_or_the_limit(tmp_path: Path) -> None:
    for tag in ("zero", "one", "two", "three"):
        _append(tmp_path, tag)
    assert [(v, info["tag"]) for v, info in commits_from(tmp_path, 1, 64)] == [
        (1, "one"),
        (2, "two"),
        (3, "three"),
    ]
    assert [v for v, _ in commits_from(tmp_path, 0, 2)] == [0, 1]
    assert list(commits_from(tmp_path, 4, 64)) == []  # not committed yet
