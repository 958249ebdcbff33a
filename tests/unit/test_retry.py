"""RetryPolicy: bounds of the full-jitter backoff, growth of its ceiling, attempts, validation."""

from __future__ import annotations

from datetime import timedelta
from random import Random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.retry import RetryPolicy, RetryTopics

DAY_US = 86_400 * 10**6


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    """Valid policies: base from 0 to a minute, cap from base to a day."""
    base_us = draw(st.integers(min_value=0, max_value=60 * 10**6))
    max_us = draw(st.integers(min_value=base_us, max_value=DAY_US))
    return RetryPolicy(
        attempts=draw(st.integers(min_value=1, max_value=50)),
        base_delay=timedelta(microseconds=base_us),
        max_delay=timedelta(microseconds=max_us),
    )


retries = st.integers(min_value=1, max_value=10_000)
huge_retries = st.integers(min_value=1_000, max_value=10**18)


def test_defaults_are_valid_and_documented() -> None:
    policy = RetryPolicy()
    assert policy.attempts == 5
    assert policy.base_delay == timedelta(milliseconds=200)
    assert policy.max_delay == timedelta(seconds=10)


@settings(max_examples=200, deadline=None)
@given(policies(), retries, st.integers(min_value=0, max_value=2**32))
def test_backoff_is_within_zero_and_the_ceiling(policy: RetryPolicy, retry: int, seed: int) -> None:
    delay = policy.backoff(retry, Random(seed))
    assert timedelta(0) <= delay <= policy.ceiling(retry)


@settings(max_examples=200, deadline=None)
@given(policies(), st.integers(min_value=1, max_value=200))
def test_ceiling_is_non_decreasing_and_capped(policy: RetryPolicy, retry: int) -> None:
    assert policy.ceiling(retry) <= policy.ceiling(retry + 1) <= policy.max_delay


@settings(max_examples=200, deadline=None)
@given(policies(), st.integers(min_value=1, max_value=40))
def test_ceiling_doubles_from_base_until_the_cap(policy: RetryPolicy, retry: int) -> None:
    expected = min(policy.max_delay, policy.base_delay * 2 ** (retry - 1))
    assert policy.ceiling(retry) == expected


@given(policies())
def test_first_ceiling_is_base_or_cap(policy: RetryPolicy) -> None:
    assert policy.ceiling(1) == min(policy.base_delay, policy.max_delay)


@settings(max_examples=200, deadline=None)
@given(policies(), huge_retries, st.integers(min_value=0, max_value=2**32))
def test_huge_retry_numbers_do_not_overflow(policy: RetryPolicy, retry: int, seed: int) -> None:
    ceiling = policy.ceiling(retry)
    if policy.base_delay > timedelta(0):
        assert ceiling == policy.max_delay
    else:
        assert ceiling == timedelta(0)
    assert timedelta(0) <= policy.backoff(retry, Random(seed)) <= ceiling


@given(policies(), st.integers(min_value=-5, max_value=100))
def test_should_retry_exactly_before_the_last_attempt(policy: RetryPolicy, attempt: int) -> None:
    assert policy.should_retry(attempt) is (attempt < policy.attempts)


@given(policies())
def test_a_message_gets_attempts_tries_in_all(policy: RetryPolicy) -> None:
    # The worker's loop: try, and go on while should_retry says so.
    tries = 1
    while policy.should_retry(tries):
        tries += 1
    assert tries == policy.attempts


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": -3}, "attempts"),
        ({"base_delay": timedelta(microseconds=-1)}, "base_delay"),
        ({"base_delay": timedelta(seconds=2), "max_delay": timedelta(seconds=1)}, "max_delay"),
    ],
)
def test_invalid_policy_raises_naming_the_field(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        RetryPolicy(**kwargs)


def test_max_below_base_names_both_fields() -> None:
    with pytest.raises(ValueError) as caught:
        RetryPolicy(base_delay=timedelta(seconds=3), max_delay=timedelta(seconds=2))
    assert "max_delay" in str(caught.value)
    assert "base_delay" in str(caught.value)


@pytest.mark.parametrize("retry", [0, -1])
def test_retry_numbers_start_at_one(retry: int) -> None:
    with pytest.raises(ValueError, match="retry"):
        RetryPolicy().ceiling(retry)


def test_zero_base_never_waits() -> None:
    policy = RetryPolicy(base_delay=timedelta(0), max_delay=timedelta(0))
    assert {policy.backoff(n, Random(n)) for n in range(1, 50)} == {timedelta(0)}


def test_jitter_differs_between_random_sources() -> None:
    policy = RetryPolicy(base_delay=timedelta(seconds=1), max_delay=timedelta(seconds=60))
    assert policy.backoff(3, Random(1)) != policy.backoff(3, Random(2))


def test_jitter_is_full_and_repeatable_per_seed() -> None:
    policy = RetryPolicy(base_delay=timedelta(seconds=1), max_delay=timedelta(seconds=60))
    ceiling = policy.ceiling(4)
    draws = [policy.backoff(4, Random(seed)) for seed in range(1_000)]
    # Full jitter: the whole of [0, ceiling] is used, not a band near the ceiling.
    assert min(draws) < ceiling * 0.05
    assert max(draws) > ceiling * 0.95
    mean = sum(draws, timedelta(0)) / len(draws)
    assert ceiling * 0.4 < mean < ceiling * 0.6
    assert [policy.backoff(4, Random(seed)) for seed in range(1_000)] == draws


def test_uncapped_policy_with_timedelta_max_does_not_overflow() -> None:
    policy = RetryPolicy(base_delay=timedelta(seconds=1), max_delay=timedelta.max)
    assert policy.ceiling(200) == timedelta.max


def test_retry_topics_one_per_delay_the_last_reused() -> None:
    policy = RetryPolicy(
        attempts=12, base_delay=timedelta(milliseconds=200), max_delay=timedelta(seconds=5)
    )
    topics = RetryTopics("payments.retry", policy)
    assert topics.topics() == [
        "payments.retry.200ms",
        "payments.retry.400ms",
        "payments.retry.800ms",
        "payments.retry.1600ms",
        "payments.retry.3200ms",
        "payments.retry.5000ms",
    ]
    assert [topics.topic(n) for n in (1, 5, 6, 11)] == [
        "payments.retry.200ms",
        "payments.retry.3200ms",
        "payments.retry.5000ms",
        "payments.retry.5000ms",
    ]
    assert topics.delay_ms(3) == 800


def test_one_attempt_needs_no_retry_topic_and_few_attempts_only_their_own() -> None:
    assert RetryTopics("w.retry", RetryPolicy(attempts=1)).topics() == []
    assert RetryTopics("w.retry", RetryPolicy(attempts=3)).topics() == [
        "w.retry.200ms",
        "w.retry.400ms",
    ]
