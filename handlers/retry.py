"""Retry policy of a queue worker: exponential backoff, one retry topic per delay.

The delay before retry ``n`` (1-based) is ``min(max_delay, base_delay * 2 **
(n - 1))``. A queue worker does not wait in place: a failed message goes to
the retry topic of that delay (:class:`RetryTopics`, the way Spring Kafka's
non-blocking retries and Uber's retry queues do it) and the worker goes on
with the next one. Every record of one retry topic has the same delay, so
its partitions are in due-time order and the consumer only has to wait for
the head. :meth:`RetryPolicy.backoff` (full jitter, for waits in place) is
kept for callers that retry a whole batch against a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from random import Random

__all__ = ["RetryPolicy", "RetryTopics"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a handler is retried on transient errors.

    Attributes:
        attempts: Total tries of one message, the first included (>= 1); after
            the last failed one the message goes to the dead-letter topic.
        base_delay: Upper bound of the first backoff.
        max_delay: Cap of every backoff.
    """

    attempts: int = 5
    base_delay: timedelta = timedelta(milliseconds=200)
    max_delay: timedelta = timedelta(seconds=10)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.base_delay < timedelta(0):
            raise ValueError(f"base_delay must be >= 0, got {self.base_delay}")
        if self.max_delay < self.base_delay:
            raise ValueError(
                f"max_delay ({self.max_delay}) must be >= base_delay ({self.base_delay})"
            )

    def ceiling(self, retry: int) -> timedelta:
        """The largest backoff before retry number ``retry`` (1 = the first retry)."""
        if retry < 1:
            raise ValueError(f"retry must be >= 1, got {retry}")
        # Grow in float seconds: a timedelta times 2 ** 60 overflows, a float does not.
        grown = self.base_delay.total_seconds() * 2.0 ** min(retry - 1, 1000)
        if grown >= self.max_delay.total_seconds():
            return self.max_delay  # the cap itself: never rebuilt from a rounded float
        return min(self.max_delay, timedelta(seconds=grown))

    def backoff(self, retry: int, rng: Random) -> timedelta:
        """A jittered backoff before retry number ``retry``, in ``[0, ceiling(retry)]``."""
        return self.ceiling(retry) * rng.random()

    def should_retry(self, attempt: int) -> bool:
        """True if a message that failed its ``attempt``-th try (1-based) gets another."""
        return attempt < self.attempts


@dataclass(frozen=True, slots=True)
class RetryTopics:
    """The retry topics of one worker: ``<prefix>.<delay in ms>ms``, one per distinct delay.

    Retry ``n`` (1 = the first retry) goes to the topic of ``policy.ceiling(n)``;
    once the delays reach ``max_delay`` the last topic is reused.
    """

    prefix: str
    policy: RetryPolicy

    def topic(self, retry: int) -> str:
        """Where a message waits before retry number ``retry``."""
        return f"{self.prefix}.{self.delay_ms(retry)}ms"

    def delay_ms(self, retry: int) -> int:
        """The wait before retry number ``retry``, in whole milliseconds."""
        return round(self.policy.ceiling(retry).total_seconds() * 1000)

    def topics(self) -> list[str]:
        """Every retry topic the policy uses, shortest delay first (none for one attempt)."""
        names: list[str] = []
        for retry in range(1, self.policy.attempts):
            name = self.topic(retry)
            if name not in names:
                names.append(name)
            if self.policy.ceiling(retry) >= self.policy.max_delay:
                break
        return names
