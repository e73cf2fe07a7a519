"""The one retry policy: capped, jittered, never overflowing, 4xx classified as permanent."""

from __future__ import annotations

import pytest

from fleetpulse.retry import Backoff, RetryPolicy, is_permanent_status


def test_ten_thousand_failures_stay_capped_and_finite() -> None:
    backoff = Backoff(RetryPolicy(base_s=2.0, cap_s=300.0))
    now = 0.0
    for _ in range(10_000):
        delay = backoff.failed(now)
        assert 0.0 < delay <= 300.0
        now += delay
    assert backoff.failures == 10_000
    assert backoff.policy.ceiling(10**9) == 300.0


def test_delay_grows_exponentially_with_equal_jitter() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=1000.0)
    assert [policy.ceiling(n) for n in range(5)] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert policy.delay(4, rand=lambda: 0.0) == 4.0
    assert policy.delay(4, rand=lambda: 1.0) == 8.0


def test_success_resets() -> None:
    backoff = Backoff(RetryPolicy(base_s=1.0, cap_s=10.0))
    backoff.failed(100.0)
    assert not backoff.ready(100.0)
    backoff.succeeded()
    assert backoff.ready(0.0)
    assert backoff.failures == 0


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="base_s"):
        RetryPolicy(base_s=10.0, cap_s=1.0)


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (401, True), (404, True), (408, False), (429, False), (500, False), (503, False), (204, False)],
)
def test_permanent_statuses(status: int, permanent: bool) -> None:
    assert is_permanent_status(status) is permanent
