"""Two hot-path helpers written out by hand: they must equal what they replace."""

from __future__ import annotations

import base64
import json
import uuid

from hypothesis import given
from hypothesis import strategies as st

from handlers.runtime import derived_event_id
from handlers.store.common import decode_headers, encode_headers

# The namespace the derived ids have always used (fixed forever).
NAMESPACE = uuid.UUID("9b5a8f0e-4c1d-5e36-a7f2-3d0c8e61b4a9")

texts = st.text(min_size=0, max_size=60)


@given(worker=texts, cause=texts, event_type=texts, detail=texts)
def test_derived_event_id_is_uuid5_of_the_joined_name(
    worker: str, cause: str, event_type: str, detail: str
) -> None:
    name = f"{worker}\x1f{cause}\x1f{event_type}\x1f{detail}"
    assert derived_event_id(worker, cause, event_type, detail) == str(uuid.uuid5(NAMESPACE, name))


def test_a_derived_event_id_from_an_earlier_release_is_unchanged() -> None:
    # Computed with uuid.uuid5 by the first release: a redelivered cause after an
    # upgrade must still get the id its first delivery got.
    derived = derived_event_id("payments", "evt-1", "PaymentAuthorized")
    assert derived == "3ab95227-3921-5a7c-8b92-6b9c85ddbe63"


@given(st.lists(st.tuples(st.text(max_size=30), st.binary(max_size=40)), max_size=6))
def test_headers_round_trip(headers: list[tuple[str, bytes]]) -> None:
    assert decode_headers(encode_headers(headers)) == tuple(headers)


def test_headers_written_by_an_earlier_release_are_read() -> None:
    # json.dumps(..., ensure_ascii=False) spelling, with spaces and non-ASCII names.
    pairs = [["streambatch.cause", base64.b64encode(b"evt-1").decode()], ["zürich", ""]]
    assert decode_headers(json.dumps(pairs, ensure_ascii=False)) == (
        ("streambatch.cause", b"evt-1"),
        ("zürich", b""),
    )
