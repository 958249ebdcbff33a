"""The dead-letter header names: what the writer adds is what the readers strip and read."""

from __future__ import annotations

from connectors.dead_letter_headers import (
    ERROR_CLASS,
    ERROR_HEADER_NAMES,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
)
from connectors.dead_letters import dead_letter_headers
from connectors.records import DeadLetter


def letter() -> DeadLetter:
    return DeadLetter(
        key=b"k",
        value=b"{",
        headers=[("trace", b"t1")],
        offset=41,
        stage="parse",
        error_class="JSONDecodeError",
        error_message="unexpected end",
    )


def test_the_writer_adds_only_headers_the_readers_know() -> None:
    headers = dead_letter_headers(letter(), "orders", 2)
    assert headers[0] == ("trace", b"t1")
    added = dict(headers[1:])
    assert set(added) <= set(ERROR_HEADER_NAMES)
    assert added[SOURCE_TOPIC] == b"orders"
    assert added[SOURCE_PARTITION] == b"2"
    assert added[SOURCE_OFFSET] == b"41"
    assert added[ERROR_CLASS] == b"JSONDecodeError"


def test_redrive_strips_exactly_the_added_headers() -> None:
    kept = [
        name
        for name, _ in dead_letter_headers(letter(), "orders", 2)
        if name not in ERROR_HEADER_NAMES
    ]
    assert kept == ["trace"]
