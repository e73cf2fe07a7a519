"""One retry policy for every outbound delivery: agent to Kafka, worker to the TSDB, outbox to ITSM.

Capped exponential backoff with jitter. The exponent is bounded before it is
raised, so the delay stays finite after any number of failures (an agent whose
certificate expired keeps trying for months without overflowing), and jitter
keeps 26,000 agents from reconnecting in lockstep after an outage. Failures that
retrying cannot fix (rejected credentials, a 4xx answer) are raised as
:class:`PermanentError` so callers report them instead of retrying blindly.
Standard library only: the agent imports it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

# 2**62 times any sane base is far past every cap, and still an exact float.
_MAX_EXPONENT = 62

# 4xx answers that describe the server's state, not the request: worth another try.
_RETRYABLE_4XX = frozenset({408, 425, 429})


class PermanentError(Exception):
    """A failure another identical attempt cannot fix: report it, do not retry it blindly."""


def is_permanent_status(status: int) -> bool:
    """True for HTTP answers that reject the request itself (4xx but timeouts and rate limits)."""
    return 400 <= status < 500 and status not in _RETRYABLE_4XX


@dataclass(frozen=True)
class RetryPolicy:
    """Delay before the next attempt: ``base_s * 2**(failures-1)`` capped at ``cap_s``, jittered.

    Jitter is "equal jitter": the delay lies in ``[ceiling/2, ceiling]``, so a fleet spreads out
    without any client retrying almost immediately.
    """

    base_s: float
    cap_s: float

    def __post_init__(self) -> None:
        if not (self.base_s > 0 and self.cap_s >= self.base_s):
            raise ValueError(f"need 0 < base_s <= cap_s, got base_s={self.base_s}, cap_s={self.cap_s}")

    def ceiling(self, failures: int) -> float:
        """The un-jittered delay after ``failures`` consecutive failures (0 before any failure)."""
        if failures <= 0:
            return 0.0
        exponent = min(failures - 1, _MAX_EXPONENT)
        return min(self.cap_s, self.base_s * 2.0**exponent)

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = self.ceiling(failures)
        return ceiling * (0.5 + 0.5 * rand())


@dataclass
class Backoff:
    """Consecutive-failure state for a loop that retries on its own clock (monotonic seconds)."""

    policy: RetryPolicy
    failures: int = 0
    not_before: float = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.not_before

    def failed(self, now: float) -> float:
        """Record a failure at ``now``; returns the delay until the next attempt."""
        self.failures += 1
        delay = self.policy.delay(self.failures)
        self.not_before = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = 0.0
