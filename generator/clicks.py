"""The clicks stream: sessions of page views, clicks and cart changes around the orders."""

from __future__ import annotations

from random import Random
from typing import Any, Final

from generator.orders import CUSTOMER_COUNT, SKU_COUNT
from generator.records import GeneratedRecord
from generator.timeline import (
    OrderTimeline,
    RowSource,
    between,
    pick,
    records_from_rows,
)

__all__ = ["click_records"]

_CATEGORIES: Final = (
    "shoes",
    "shirts",
    "trousers",
    "jackets",
    "bags",
    "watches",
    "toys",
    "kitchen",
    "garden",
    "books",
)
# Direct visits (null) and search engines dominate, as in most shops.
_REFERRERS: Final[tuple[str | None, ...]] = (
    None,
    None,
    None,
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
    "https://newsletter.example.com/",
    "https://newsletter.example.com/",
    "https://www.instagram.com/",
    "https://t.co/",
)
_CHECKOUT_LEAD_MS: Final = (15_000, 240_000)
_CLICK_GAP_MS: Final = (2_000, 40_000)
_BROWSE_SESSIONS_PER_ORDER_EVENT: Final = 0.4
_BROWSE_LEAD_MS: Final = 30 * 60_000
_BROWSE_PAGES: Final = (1, 8)
_ANONYMOUS_SHARE: Final = 0.6
_KNOWN_CUSTOMER_SHARE: Final = 0.8
_ADD_TO_CART_PROBABILITY: Final = 0.2
_REMOVE_FROM_CART_PROBABILITY: Final = 0.3
_ABANDONED_CHECKOUT_PROBABILITY: Final = 0.3
_SWAP_ITEM_PROBABILITY: Final = 0.15

# A step of a click session: event_type, url, sku.
_Step = tuple[str, str, str | None]
# ms offset, tie-breaker, event_type, session_id, user_id, url, referrer, sku.
_ClickRow = tuple[int, int, str, str, str | None, str, str | None, str | None]


def click_records(
    timeline: OrderTimeline, seed: int, duplicate_ratio: float, malformed_ratio: float
) -> list[GeneratedRecord]:
    """The click records derived from ``timeline``, sorted by ``occurred_at``."""
    rng = Random(f"streambatch-clicks-{seed}")
    rows = _click_rows(timeline, rng, seed)
    source = _ClickSource(rng, seed, timeline.clock, rows)
    return records_from_rows(source, len(rows), duplicate_ratio, malformed_ratio)


def _sku(number: int) -> str:
    return f"SKU-{number:05d}"


def _category_of(sku: str) -> str:
    return _CATEGORIES[(int(sku[4:]) - 1) % len(_CATEGORIES)]


def _sku_in_category(rng: Random, category_index: int) -> str:
    per_category = SKU_COUNT // len(_CATEGORIES)
    return _sku(category_index + 1 + len(_CATEGORIES) * int(rng.random() * per_category))


def _checkout_steps(rng: Random, skus: tuple[str, ...]) -> list[_Step]:
    """A session that lands, puts exactly ``skus`` in the cart and starts checkout."""
    first = skus[0]
    landing = rng.random()
    steps: list[_Step]
    if landing < 0.4:
        steps = [("page_view", "/", None)]
    elif landing < 0.7:
        steps = [("page_view", f"/c/{_category_of(first)}", None)]
    else:
        steps = [("page_view", f"/p/{first}", first)]
    for sku in skus:
        product = f"/p/{sku}"
        if steps[-1][1] != product:
            if rng.random() < 0.5:
                category = f"/c/{_category_of(sku)}"
                steps += [("page_view", category, None), ("click", category, sku)]
            steps.append(("page_view", product, sku))
        steps.append(("add_to_cart", product, sku))
    if rng.random() < _SWAP_ITEM_PROBABILITY:
        # Added and taken out again: the cart at checkout is still the order.
        extra = _sku(between(rng, 1, SKU_COUNT))
        if extra not in skus:
            steps += [
                ("page_view", f"/p/{extra}", extra),
                ("add_to_cart", f"/p/{extra}", extra),
                ("page_view", "/cart", None),
                ("remove_from_cart", "/cart", extra),
            ]
    steps += [("page_view", "/cart", None), ("checkout_started", "/checkout", None)]
    return steps


def _browse_steps(rng: Random, *, may_check_out: bool) -> list[_Step]:
    """A session that looks around, maybe fills a cart, and never orders."""
    steps: list[_Step] = []
    cart: list[str] = []
    url = "/"
    category_index: int | None = None
    for page in range(between(rng, *_BROWSE_PAGES)):
        sku: str | None = None
        choice = rng.random()
        if page == 0 and choice < 0.3:
            url = "/"
            category_index = None
        elif choice < 0.55:
            if category_index is None:
                sku = _sku(between(rng, 1, SKU_COUNT))
            else:
                sku = _sku_in_category(rng, category_index)
                steps.append(("click", url, sku))
            url = f"/p/{sku}"
            category_index = None
        elif choice < 0.9:
            category_index = int(rng.random() * len(_CATEGORIES))
            url = f"/c/{_CATEGORIES[category_index]}"
        else:
            if page:
                steps.append(("click", url, None))
            url = "/"
            category_index = None
        steps.append(("page_view", url, sku))
        if sku is not None and rng.random() < _ADD_TO_CART_PROBABILITY:
            steps.append(("add_to_cart", url, sku))
            cart.append(sku)
    if cart and rng.random() < _REMOVE_FROM_CART_PROBABILITY:
        removed = cart.pop(int(rng.random() * len(cart)))
        steps += [("page_view", "/cart", None), ("remove_from_cart", "/cart", removed)]
    if may_check_out and cart and rng.random() < _ABANDONED_CHECKOUT_PROBABILITY:
        steps += [("page_view", "/cart", None), ("checkout_started", "/checkout", None)]
    return steps


def _click_rows(timeline: OrderTimeline, rng: Random, seed: int) -> list[_ClickRow]:
    rows: list[_ClickRow] = []
    sessions = 0

    def add_session(user_id: str | None, steps: list[_Step], times: list[int]) -> None:
        nonlocal sessions
        session_id = f"ses-{seed}-{sessions:08d}"
        sessions += 1
        referrer = pick(rng, _REFERRERS)
        for position, ((event_type, url, sku), at) in enumerate(zip(steps, times, strict=True)):
            rows.append(
                (
                    at,
                    len(rows),
                    event_type,
                    session_id,
                    user_id,
                    url,
                    referrer if position == 0 else None,
                    sku,
                )
            )

    customers: dict[str, None] = {}
    for at, event_type, fields, skus in timeline.events:
        if event_type != "OrderPlaced":
            continue
        customer_id = fields["customer_id"]
        customers[customer_id] = None
        steps = _checkout_steps(rng, skus)
        moment = at - between(rng, *_CHECKOUT_LEAD_MS)
        times = [moment]
        for _ in range(len(steps) - 1):
            moment -= between(rng, *_CLICK_GAP_MS)
            times.append(moment)
        times.reverse()
        add_session(customer_id, steps, times)

    if timeline.events:
        known = list(customers)
        earliest = timeline.events[0][0] - _BROWSE_LEAD_MS
        latest = timeline.events[-1][0]
        browse_sessions = round(len(timeline.events) * _BROWSE_SESSIONS_PER_ORDER_EVENT)
        for _ in range(browse_sessions):
            user_id: str | None = None
            if rng.random() >= _ANONYMOUS_SHARE:
                if known and rng.random() < _KNOWN_CUSTOMER_SHARE:
                    user_id = pick(rng, known)
                else:
                    user_id = f"cus-{between(rng, 1, CUSTOMER_COUNT):06d}"
            steps = _browse_steps(rng, may_check_out=user_id is not None)
            moment = between(rng, earliest, latest)
            times = [moment]
            for _ in range(len(steps) - 1):
                moment += between(rng, *_CLICK_GAP_MS)
                times.append(moment)
            add_session(user_id, steps, times)
    # (time, tie-breaker) is unique: the sort never compares the other fields.
    rows.sort()
    return rows


class _ClickSource(RowSource[_ClickRow]):
    """Turns sorted click rows into records; makes malformed clicks in between."""

    event_id_prefix = "evt-c"
    text_field = "url"
    unknown_event_type = "page_teleported"

    def valid_body(
        self, row: _ClickRow, event_id: str, occurred_at: str
    ) -> tuple[str, dict[str, Any]]:
        _, _, event_type, session_id, user_id, url, referrer, sku = row
        body = {
            "event_id": event_id,
            "event_type": event_type,
            "occurred_at": occurred_at,
            "session_id": session_id,
            "user_id": user_id,
            "url": url,
            "referrer": referrer,
            "sku": sku,
        }
        return session_id, body

    def malformed_body(
        self, number: int, event_id: str, occurred_at: str
    ) -> tuple[str, dict[str, Any]]:
        session_id = f"ses-{self._seed}-m{number:07d}"
        sku = _sku(between(self.rng, 1, SKU_COUNT))
        body: dict[str, Any] = {
            "event_id": event_id,
            "event_type": "page_view",
            "occurred_at": occurred_at,
            "session_id": session_id,
            "user_id": None,
            "url": f"/p/{sku}",
            "referrer": None,
            "sku": sku,
        }
        return session_id, body

    def break_type(self, body: dict[str, Any], variant: int) -> None:
        if variant:
            body["user_id"] = 1_234_567
        else:
            body["url"] = 404
