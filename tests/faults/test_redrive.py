"""`streambatch dlq redrive` sends each dead letter at most once, ever.

Letters that fail again after their redrive are not redriven again (the
dead-letter topic stops doubling); a letter redriven once and the redrive run
again after the dedupe window lands once; a redrive killed midway, then run
again, sends every letter exactly once; ``--dry-run`` changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from connectors.embedded_broker import create_topics
from foundation.failpoints import REDRIVE_FAILPOINTS
from generator import GeneratedRecord, generate_order_records
from tests.support import REPO_ROOT, StreamTopics, flow_env, lake_table, read_topic, run_flow, send

REDRIVEN_FROM = "streambatch.redriven-from"


def redrive(
    topics: StreamTopics, *arguments: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``streambatch dlq redrive`` for the test's stream."""
    env = flow_env(topics, Path("unused"), **extra)
    return subprocess.run(
        [sys.executable, "-m", "streambatch.cli", "dlq", "redrive", *arguments],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def redriven_copies(topics: StreamTopics) -> Counter[str]:
    """How many records of the source topic name each dead letter they were redriven from."""
    copies: Counter[str] = Counter()
    for message in read_topic(topics.bootstrap_servers, topics.name):
        for key, value in message.headers() or []:
            if key == REDRIVEN_FROM:
                copies[value.decode()] += 1
    return copies


def topic_size(topics: StreamTopics, topic: str) -> int:
    return len(read_topic(topics.bootstrap_servers, topic))


def oversized(record: GeneratedRecord) -> GeneratedRecord:
    """The same valid event grown past 1 KiB by an unknown field."""
    document = orjson.loads(record.value)
    document["note"] = "x" * 1500
    return GeneratedRecord(record.key, orjson.dumps(document), "valid", record.event_id)


@pytest.mark.partitions(2)
def test_letters_failing_again_are_not_redriven_again_and_dry_run_changes_nothing(
    topics: StreamTopics, data_dir: Path
) -> None:
    records = list(generate_order_records(60, seed=41, duplicate_ratio=0.0, malformed_ratio=0.1))
    send(topics, records)
    env = flow_env(topics, data_dir)
    run_flow(env)
    letters = topic_size(topics, topics.dead_letter_topic)
    assert letters == 6

    dry = redrive(topics, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would redrive") == letters
    assert f"{letters} dead letters of {topics.dead_letter_topic} would be sent" in dry.stdout
    assert topic_size(topics, topics.name) == 60
    state_topic = f"{topics.dead_letter_topic}.redriven"
    admin = AdminClient({"bootstrap.servers": topics.bootstrap_servers})
    assert state_topic not in admin.list_topics(timeout=30).topics

    sent = redrive(topics)
    assert sent.returncode == 0, sent.stderr
    assert f"{letters} dead letters" in sent.stdout
    run_flow(env)  # still malformed: each fails again, once
    assert topic_size(topics, topics.dead_letter_topic) == 2 * letters

    for _ in range(2):
        again = redrive(topics)
        assert again.returncode == 0, again.stderr
        assert f"0 dead letters of {topics.dead_letter_topic} sent" in again.stdout
        assert f"{letters} failed again after a redrive" in again.stdout
        run_flow(env)
    assert topic_size(topics, topics.dead_letter_topic) == 2 * letters
    assert topic_size(topics, topics.name) == 60 + letters
    assert set(redriven_copies(topics).values()) == {1}

    after = redrive(topics, "--dry-run")
    assert after.returncode == 0, after.stderr
    assert "would redrive" not in after.stdout


@pytest.mark.partitions(1)
def test_a_letter_redriven_again_after_the_dedupe_window_lands_once(
    topics: StreamTopics, data_dir: Path
) -> None:
    records = list(generate_order_records(20, seed=42, duplicate_ratio=0.0, malformed_ratio=0.0))
    big = [oversized(record) for record in records[:3]]
    send(topics, [*records[3:], *big])
    strict = flow_env(topics, data_dir, STREAMBATCH_MAX_RECORD_BYTES="1024")
    run_flow(strict)
    assert topic_size(topics, topics.dead_letter_topic) == 3

    # The fix: a larger limit, a one-second window, and the letters redriven.
    fixed = flow_env(topics, data_dir, STREAMBATCH_DEDUPE_HORIZON_SECONDS="1")
    assert redrive(topics).returncode == 0
    run_flow(fixed)
    time.sleep(1.5)  # past the dedupe window of the redriven copies
    second = redrive(topics)
    assert second.returncode == 0, second.stderr
    assert f"0 dead letters of {topics.dead_letter_topic} sent" in second.stdout
    run_flow(fixed)
    ids = lake_table(data_dir, columns=["event_id"]).column("event_id").to_pylist()
    expected = [record.event_id for record in records if record.event_id is not None]
    assert len(expected) == 20
    assert sorted(ids) == sorted(expected)
    assert topic_size(topics, topics.dead_letter_topic) == 3


@pytest.mark.slow
@pytest.mark.partitions(2)
@pytest.mark.parametrize("point", [f"{REDRIVE_FAILPOINTS[0]}:3", REDRIVE_FAILPOINTS[1]])
def test_a_redrive_killed_midway_then_run_again_sends_each_letter_once(
    topics: StreamTopics, data_dir: Path, point: str
) -> None:
    records = list(generate_order_records(80, seed=43, duplicate_ratio=0.0, malformed_ratio=0.1))
    send(topics, records)
    run_flow(flow_env(topics, data_dir))
    letters = topic_size(topics, topics.dead_letter_topic)
    assert letters == 8

    killed = redrive(topics, STREAMBATCH_FAILPOINT=point)
    assert killed.returncode == -9, killed.stderr
    for _ in range(2):
        again = redrive(topics)
        assert again.returncode == 0, again.stderr
    copies = redriven_copies(topics)
    assert len(copies) == letters
    assert set(copies.values()) == {1}
    assert topic_size(topics, topics.dead_letter_topic) == letters


@pytest.mark.partitions(1)
def test_letters_of_a_recreated_dead_letter_topic_are_new_letters(topics: StreamTopics) -> None:
    def write_letters(values: list[bytes]) -> None:
        producer = Producer({"bootstrap.servers": topics.bootstrap_servers})
        headers: list[tuple[str, str | bytes | None]] = [
            ("source.topic", topics.name.encode()),
            ("error.class", b"InvalidJson"),
        ]
        for value in values:
            producer.produce(topics.dead_letter_topic, value=value, headers=headers)
        assert producer.flush(30) == 0

    write_letters([b"first-1", b"first-2"])
    assert "2 dead letters" in redrive(topics).stdout
    admin = AdminClient({"bootstrap.servers": topics.bootstrap_servers})
    admin.delete_topics([topics.dead_letter_topic])[topics.dead_letter_topic].result(timeout=30)
    create_topics(topics.bootstrap_servers, [topics.dead_letter_topic], 1)
    write_letters([b"second-1", b"second-2"])  # the same offsets as the first two

    again = redrive(topics)
    assert f"2 dead letters of {topics.dead_letter_topic} sent" in again.stdout, again.stderr
    values = sorted(m.value() for m in read_topic(topics.bootstrap_servers, topics.name))
    assert values == [b"first-1", b"first-2", b"second-1", b"second-2"]
