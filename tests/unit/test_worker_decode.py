"""decode_event: what a queue worker accepts as an event before its handler sees it."""

from __future__ import annotations

import orjson
import pytest

from foundation.errors import TerminalError
from generator import generate_order_records
from handlers.schemas import InvalidEventError
from handlers.worker import decode_event


def test_accepts_an_object_with_a_string_event_id() -> None:
    assert decode_event(b'{"event_id": "e-1", "x": [1, 2]}') == {"event_id": "e-1", "x": [1, 2]}


@pytest.mark.parametrize("length", [1, 128])
def test_accepts_event_ids_of_one_to_128_characters(length: int) -> None:
    event_id = "e" * length
    assert decode_event(orjson.dumps({"event_id": event_id}))["event_id"] == event_id


def test_accepts_generated_orders_unchanged() -> None:
    for record in generate_order_records(
        20, checkouts_only=True, duplicate_ratio=0, malformed_ratio=0
    ):
        assert decode_event(record.value) == orjson.loads(record.value)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "empty message value"),
        (b"", "empty message value"),
        (b"{not json", "not JSON"),
        (b'{"event_id": "e-1"', "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b'[{"event_id": "e-1"}]', "not a JSON object but list"),
        (b"42", "not a JSON object but int"),
        (b"1.5", "not a JSON object but float"),
        (b'"e-1"', "not a JSON object but str"),
        (b"null", "not a JSON object but NoneType"),
        (b"{}", "event_id missing"),
        (b'{"id": "e-1"}', "event_id missing"),
        (b'{"event_id": null}', "not a string"),
        (b'{"event_id": 17}', "not a string"),
        (b'{"event_id": ["e-1"]}', "not a string"),
        (b'{"event_id": ""}', "1..128 characters"),
        (orjson.dumps({"event_id": "e" * 129}), "1..128 characters"),
    ],
)
def test_refuses_what_is_not_an_event_and_says_why(value: bytes | None, says: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        decode_event(value)
    assert says in str(caught.value)
    # Terminal: the worker dead-letters it at once instead of retrying.
    assert isinstance(caught.value, TerminalError)
