"""Building the batch workers a ``streambatch worker`` process runs next to the queue workers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from foundation.errors import ConfigError
from handlers.batch.runtime import batch_plan
from handlers.batch.worker import BatchWorker, build_batch_worker
from handlers.config import HandlersConfig
from handlers.store import Store
from sinks.lake_location import LakeLocation

__all__ = ["build_batch_workers"]


def build_batch_workers(
    names: Sequence[str],
    config: HandlersConfig,
    store: Store,
    connection: Mapping[str, str],
    lake: LakeLocation | None,
) -> list[BatchWorker]:
    """One worker per named batch handler, reading ``lake`` (a local directory or a bucket).

    Raises:
        ConfigError: an unknown name or handler, bad options, or no lake given.
    """
    if not names:
        return []
    if lake is None:
        raise ConfigError("batch handlers need the lake: pass its directory")
    return [build_batch_worker(batch_plan(config, name, lake), store, connection) for name in names]
