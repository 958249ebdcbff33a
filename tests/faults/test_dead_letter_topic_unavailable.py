"""The dead-letter topic is missing (never created, or deleted while the flow runs).

The contract: "A record that cannot be dead-lettered is never silently dropped:
the flow fails closed" and "If the dead-letter topic cannot be written, the
flow stops before its fence moves past the record". Pass, per partition: every
malformed record below the lake's fence is in the dead-letter topic, and if the
flow got past a malformed record it is because the letter was delivered. Then,
with the topic (re)created, a run to the end leaves 0 records unaccounted for:
every produced offset is a lake row (``_partition``/``_offset``), a duplicate
dropped by dedupe (its ``event_id`` is a row at an earlier offset of the same
partition), or a dead letter (``source.partition``/``source.offset`` headers).

How the embedded broker behaves, found by experiment (Tansu 0.6): a metadata
request for an unknown topic creates it (4 partitions), like Kafka's
``auto.create.topics.enable=true``, so a dead-letter topic missing when the flow
starts is created by the writer's first produce and the flow cannot be made to
fail closed that way. The tests probe the broker and assert the strict property
(the flow does not finish as if all were well) when topics are not created on
produce, and the weaker but still meaningful one (nothing lost, every letter
delivered before the fence passed it) when they are. A topic deleted under a
running producer is worse on Tansu: see ``TANSU_LOSES_ACKED_WRITES``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable

from connectors.embedded_broker import create_topics
from foundation.failure import EXIT_CODE
from generator import generate_order_records
from tests.faults import test_broker_outage
from tests.faults.test_broker_outage import ProxiedBroker
from tests.support import (
    REPO_ROOT,
    StreamTopics,
    committed_rows,
    flow_command,
    flow_env,
    lake_table,
    read_topic,
    run_flow,
    send,
)

pytestmark = pytest.mark.slow

Offset = tuple[int, int]  # (partition, offset)
# A broker of its own behind a proxy the test can cut (its clients are spared).
proxied_broker = test_broker_outage.proxied_broker
BOUNDED_WAIT_SECONDS = 90.0


@dataclass(frozen=True)
class FlowOutcome:
    """How a bounded flow run ended: exit code (None if it had to be killed) and stderr."""

    returncode: int | None
    stderr: str


def admin(bootstrap_servers: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap_servers})


def topic_partitions(bootstrap_servers: str, topic: str) -> int | None:
    """Partition count of ``topic``, or None if the broker does not know it."""
    described = admin(bootstrap_servers).list_topics(timeout=10).topics.get(topic)
    if described is None or described.error is not None:
        return None
    return len(described.partitions)


def delete_topic(bootstrap_servers: str, topic: str) -> None:
    client = admin(bootstrap_servers)  # keep the handle alive until the futures resolve
    for future in client.delete_topics([topic]).values():
        future.result(timeout=10)
    deadline = time.monotonic() + 15
    while topic_partitions(bootstrap_servers, topic) is not None:
        assert time.monotonic() < deadline, f"{topic} still listed after its deletion"
        time.sleep(0.2)


def broker_creates_topics_on_produce(bootstrap_servers: str) -> bool:
    """Produce once to a topic nobody created, with the dead-letter writer's settings."""
    probe = f"probe-{uuid.uuid4().hex[:12]}"
    producer = Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": "true",
            "acks": "all",
            "message.timeout.ms": "10000",
        }
    )
    errors: list[str] = []
    producer.produce(
        probe, value=b"probe", on_delivery=lambda e, _m: errors.append(e.str()) if e else None
    )
    producer.flush(15)
    created = topic_partitions(bootstrap_servers, probe) is not None
    if created:
        with contextlib.suppress(Exception):
            delete_topic(bootstrap_servers, probe)
    return created and not errors


def produce(topics: StreamTopics, count: int, seed: int, malformed_ratio: float) -> set[bytes]:
    """Produce generated records; return the values the generator made malformed."""
    records = list(
        generate_order_records(
            count, seed=seed, duplicate_ratio=0.02, malformed_ratio=malformed_ratio
        )
    )
    send(topics, records)
    return {r.value for r in records if r.kind == "malformed"}


def read_source(topics: StreamTopics) -> dict[Offset, bytes]:
    return {
        (m.partition(), m.offset()): m.value()
        for m in read_topic(topics.bootstrap_servers, topics.name)
    }


def bad_offsets(source: dict[Offset, bytes], malformed: set[bytes]) -> set[Offset]:
    return {where for where, value in source.items() if value in malformed}


def fences(topics: StreamTopics, data_dir: Path) -> dict[int, int]:
    """The lake's fence (next offset to read) per partition; 0 if nothing was committed."""
    path = str(data_dir / "lake" / "orders")
    table = DeltaTable(path) if DeltaTable.is_deltatable(path) else None
    result = {}
    for partition in range(topics.partitions):
        app_id = f"streambatch/orders/{topics.name}/{partition}"
        version = table.transaction_version(app_id) if table is not None else None
        result[partition] = 0 if version is None else int(version)
    return result


def dead_letter_sources(topics: StreamTopics) -> Counter[Offset]:
    """Source (partition, offset) of every letter in the DLQ; empty if the topic is absent."""
    partitions = topic_partitions(topics.bootstrap_servers, topics.dead_letter_topic)
    if partitions is None:
        return Counter()
    found: Counter[Offset] = Counter()
    for message in read_topic(topics.bootstrap_servers, topics.dead_letter_topic):
        headers = dict(message.headers() or [])
        assert headers["source.topic"] == topics.name.encode()
        found[(int(headers["source.partition"]), int(headers["source.offset"]))] += 1
    return found


def run_bounded(env: dict[str, str], log: Path, seconds: float) -> FlowOutcome:
    """Run the flow until it exits or ``seconds`` pass (then kill it)."""
    with log.open("wb") as err:
        process = subprocess.Popen(
            flow_command(), env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            returncode: int | None = process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            process.kill()
            process.wait()
    return FlowOutcome(returncode, log.read_text(errors="replace"))


def assert_no_letter_skipped(
    topics: StreamTopics, data_dir: Path, bad: set[Offset], strict: bool, outcome: FlowOutcome
) -> None:
    """The fence passed a malformed record of ``bad`` only if its letter is in the DLQ."""
    fence = fences(topics, data_dir)
    delivered = dead_letter_sources(topics)
    skipped = sorted(where for where in bad if where[1] < fence[where[0]] and not delivered[where])
    assert not skipped, (
        f"fence moved past {len(skipped)} malformed records that are not in the DLQ: "
        f"{skipped[:5]}; fences {fence}\n{outcome.stderr[-3000:]}"
    )
    if outcome.returncode not in (0, None):
        # Failing closed is always allowed, but it must say why.
        named = topics.dead_letter_topic in outcome.stderr or "dead-letter" in outcome.stderr
        assert named, outcome.stderr[-3000:]
    if strict:
        # The broker does not create topics: no letter can have been delivered, so the
        # flow must not have finished as if all were well, nor wait: failing closed
        # means exiting, so that a supervisor restarts it.
        assert outcome.returncode not in (0, None), outcome.stderr[-3000:]


def assert_every_offset_accounted_for(
    topics: StreamTopics,
    data_dir: Path,
    source: dict[Offset, bytes],
    malformed: set[bytes],
    deleted_letters: Counter[Offset] | None = None,
) -> None:
    """``deleted_letters``: letters that were in the DLQ when the test deleted it."""
    rows = lake_table(data_dir, columns=["_partition", "_offset", "event_id"])
    lake = list(
        zip(
            rows.column("_partition").to_pylist(),
            rows.column("_offset").to_pylist(),
            rows.column("event_id").to_pylist(),
            strict=True,
        )
    )
    lake_offsets = Counter((p, o) for p, o, _ in lake)
    assert max(lake_offsets.values(), default=1) == 1, "an offset is in the lake twice"
    first_row_of: dict[tuple[int, str], int] = {}
    for partition, offset, event_id in lake:
        key = (partition, event_id)
        first_row_of[key] = min(offset, first_row_of.get(key, offset))
    letters = dead_letter_sources(topics) + (deleted_letters or Counter())
    duplicates = 0
    missing: list[Offset] = []
    for where, value in sorted(source.items()):
        if lake_offsets[where] or letters[where]:
            continue
        event_id = None if value in malformed else orjson.loads(value)["event_id"]
        original = first_row_of.get((where[0], event_id)) if event_id is not None else None
        if original is not None and original < where[1]:
            duplicates += 1
        else:
            missing.append(where)
    assert missing == [], f"{len(missing)} offsets neither rows, duplicates nor dead letters"
    assert not set(letters) - set(source), "dead letters of offsets that were never produced"
    batches = lake_table(data_dir, "batches")
    assert sum(batches.column("duplicates").to_pylist()) == duplicates


def test_dead_letter_topic_missing_from_the_start(
    topics: StreamTopics, data_dir: Path, tmp_path: Path
) -> None:
    strict = not broker_creates_topics_on_produce(topics.bootstrap_servers)
    delete_topic(topics.bootstrap_servers, topics.dead_letter_topic)
    malformed = produce(topics, 3_000, seed=31, malformed_ratio=0.02)
    source = read_source(topics)
    bad = bad_offsets(source, malformed)
    assert len(bad) == 60

    env = flow_env(
        topics, data_dir, STREAMBATCH_WINDOW_BYTES="65536", STREAMBATCH_RETRY_SECONDS="5"
    )
    outcome = run_bounded(env, tmp_path / "first.log", BOUNDED_WAIT_SECONDS)
    assert_no_letter_skipped(topics, data_dir, bad, strict, outcome)

    create_topics(topics.bootstrap_servers, [topics.dead_letter_topic], topics.partitions)
    run_flow(env, timeout=120)
    assert fences(topics, data_dir) == {
        p: 1 + max(o for q, o in source if q == p) for p in range(topics.partitions)
    }
    assert_every_offset_accounted_for(topics, data_dir, source, malformed)


# Tansu 0.6 acknowledges a produce to a deleted topic from a client that learnt of
# the topic before the deletion (librdkafka fetches all topics' metadata when it
# connects, so that is any long-lived producer, even one that never wrote to it),
# and the records are gone: the topic is not listed, nothing can be fetched. The
# flow's dead-letter producer lives as long as the flow, so letters written after
# the deletion are acknowledged and lost by the broker; the flow cannot tell.
# Real Kafka answers UNKNOWN_TOPIC_OR_PART instead, which the writer surfaces.
TANSU_LOSES_ACKED_WRITES = pytest.mark.xfail(
    condition=not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
    reason="embedded Tansu acks produce requests to a deleted topic and drops them",
    strict=True,
)


@pytest.mark.partitions(2)
@TANSU_LOSES_ACKED_WRITES
def test_dead_letter_topic_deleted_while_the_flow_runs(
    topics: StreamTopics, data_dir: Path, tmp_path: Path
) -> None:
    strict = not broker_creates_topics_on_produce(topics.bootstrap_servers)
    env = flow_env(
        topics,
        data_dir,
        STREAMBATCH_STOP_AT_END="false",
        STREAMBATCH_WINDOW_SECONDS="1",
        STREAMBATCH_WINDOW_BYTES="65536",
        STREAMBATCH_RETRY_SECONDS="5",
    )
    log = tmp_path / "running.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            flow_command(), env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            # Phase 1, all committed: valid records and malformed ones the DLQ still takes.
            malformed = produce(topics, 1_000, seed=41, malformed_ratio=0.01)
            first = read_source(topics)
            ends = {p: 1 + max(o for q, o in first if q == p) for p in range(topics.partitions)}
            deadline = time.monotonic() + 60
            while fences(topics, data_dir) != ends:
                assert process.poll() is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, f"not committed: {fences(topics, data_dir)}"
                time.sleep(0.2)

            # Phase 2: the DLQ goes away (with the letters of phase 1, counted first),
            # then more malformed records arrive.
            deleted_letters = dead_letter_sources(topics)
            assert sum(deleted_letters.values()) == len(bad_offsets(first, malformed)) == 10
            delete_topic(topics.bootstrap_servers, topics.dead_letter_topic)
            malformed |= produce(topics, 1_000, seed=43, malformed_ratio=0.05)
            source = read_source(topics)
            bad = bad_offsets(source, malformed) - set(first)
            assert len(bad) == 50
            ends = {p: 1 + max(o for q, o in source if q == p) for p in range(topics.partitions)}
            deadline = time.monotonic() + BOUNDED_WAIT_SECONDS
            while process.poll() is None and time.monotonic() < deadline:
                if fences(topics, data_dir) == ends:
                    break  # it got through: every letter must then be in the DLQ
                time.sleep(0.5)
            returncode = process.poll()
        finally:
            process.kill()
            process.wait()
    outcome = FlowOutcome(returncode, log.read_text(errors="replace"))
    assert_no_letter_skipped(topics, data_dir, bad, strict, outcome)

    create_topics(topics.bootstrap_servers, [topics.dead_letter_topic], topics.partitions)
    run_flow(flow_env(topics, data_dir), timeout=120)
    assert fences(topics, data_dir) == ends
    assert_every_offset_accounted_for(topics, data_dir, source, malformed, deleted_letters)


def test_dead_letter_topic_unreachable_past_the_retry_limit_exits_naming_it(
    proxied_broker: ProxiedBroker, tmp_path: Path
) -> None:
    """The broker goes away while letters wait: the flow exits, not waits forever.

    Through a proxy the test cuts once the flow has read the records and
    before their batches close: the letters cannot be acknowledged, and after
    ``STREAMBATCH_RETRY_SECONDS`` the flow exits with one line naming the
    dead-letter topic. With the broker back, a restart accounts for every
    offset.
    """
    name = f"unreachable{uuid.uuid4().hex[:10]}"
    topics = StreamTopics(proxied_broker.bootstrap_servers, name, 2)
    create_topics(topics.bootstrap_servers, [name, topics.dead_letter_topic], topics.partitions)
    malformed = produce(topics, 300, seed=47, malformed_ratio=0.2)
    source = read_source(topics)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = flow_env(
        topics,
        data_dir,
        STREAMBATCH_STOP_AT_END="false",
        STREAMBATCH_WINDOW_SECONDS="10",
        STREAMBATCH_RETRY_SECONDS="3",
    )
    log = tmp_path / "unreachable.log"
    proxy = proxied_broker.proxy
    with log.open("wb") as err:
        process = subprocess.Popen(
            flow_command(), env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + BOUNDED_WAIT_SECONDS
        while log.read_text(errors="replace").count(f'"reading {name}/') < topics.partitions:
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the flow did not start reading"
            time.sleep(0.1)
        time.sleep(3)  # the records are fetched; the batches close 10 s after the first
        proxy.cut()
        try:
            returncode = process.wait(timeout=BOUNDED_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            returncode = None
    finally:
        proxy.restore()
        process.kill()
        process.wait()
    stderr = log.read_text(errors="replace")
    assert returncode == EXIT_CODE, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("streambatch: ")]
    assert len(lines) == 1, stderr[-3000:]
    assert f"dead-letter write to {topics.dead_letter_topic} failed" in lines[0]
    assert "not acknowledged within 3 s" in lines[0]
    assert committed_rows(data_dir) == 0  # nothing committed past an unwritten letter

    run_flow(flow_env(topics, data_dir), timeout=120)
    assert_every_offset_accounted_for(topics, data_dir, source, malformed)
