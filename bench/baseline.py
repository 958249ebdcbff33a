"""Hand-written baselines: consume, parse, dedupe, write zstd Parquet per 10 MB.

Two parsers, as in the issue's reference table: ``read_json`` (pyarrow's JSON
reader per batch) and ``orjson`` (one ``orjson.loads`` per event, then
``pa.Table.from_pylist``). No validation beyond parsing, no exactly-once, no
dead letters: the ceiling a plain script reaches, to compare the flow with.
And ``count``: consume and count only, the ingest ceiling of this broker and
client (what no consumer of the topic can beat).
Usage: ``python -m bench.baseline MODE BOOTSTRAP TOPIC PARTITIONS OUT_DIR``.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

__all__ = ["MODES", "run_baseline"]

MODES = ("read_json", "orjson", "count")
_BATCH_BYTES = 10 * 1024 * 1024


def _parse(mode: str, values: list[bytes]) -> pa.Table:
    if mode == "read_json":
        return pj.read_json(io.BytesIO(b"\n".join(values)))
    return pa.Table.from_pylist([orjson.loads(value) for value in values])


def run_baseline(
    mode: str, bootstrap: str, topic: str, partitions: int, out_dir: Path
) -> dict[str, float]:
    """Read ``topic`` to its end, writing deduplicated zstd Parquet; return timings."""
    out_dir.mkdir(parents=True, exist_ok=True)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-baseline",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "fetch.max.bytes": str(64 * 1024 * 1024),
            "max.partition.fetch.bytes": str(8 * 1024 * 1024),
            "queued.min.messages": "200000",
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    seen: set[str] = set()
    buffer: list[bytes] = []
    buffered = 0
    events = 0
    files = 0
    first: float | None = None
    at_end: set[int | None] = set()

    def flush() -> None:
        nonlocal buffer, buffered, files
        if not buffer:
            return
        table = _parse(mode, buffer)
        keep = []
        for event_id in table.column("event_id").to_pylist():
            keep.append(event_id not in seen)
            seen.add(event_id)
        pq.write_table(
            table.filter(pa.array(keep)), out_dir / f"part-{files:05d}.parquet", compression="zstd"
        )
        files += 1
        buffer, buffered = [], 0

    while len(at_end) < partitions:
        for message in consumer.consume(10_000, 0.5):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                continue
            if first is None:
                first = time.monotonic()
            events += 1
            if mode == "count":
                continue
            value = message.value() or b""
            buffer.append(value)
            buffered += len(value)
            if buffered >= _BATCH_BYTES:
                flush()
    flush()
    consumer.close()
    elapsed = time.monotonic() - (first or time.monotonic())
    return {"events": events, "seconds": elapsed, "events_per_second": events / elapsed}


if __name__ == "__main__":
    mode_arg, bootstrap_arg, topic_arg, partitions_arg, out_arg = sys.argv[1:6]
    if mode_arg not in MODES:
        raise SystemExit(f"mode must be one of {MODES}, not {mode_arg!r}")
    result = run_baseline(mode_arg, bootstrap_arg, topic_arg, int(partitions_arg), Path(out_arg))
    print(json.dumps(result))
