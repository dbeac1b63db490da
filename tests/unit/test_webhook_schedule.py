"""The webhook retry schedule and Retry-After parsing (server/webhooks/delivery.py)."""

from __future__ import annotations

import random

from server.webhooks.delivery import MAX_DELAY_SECONDS, retry_after_seconds, retry_delay


def test_delays_double_with_jitter_and_cap_at_an_hour() -> None:
    rng = random.Random(7)
    for attempt, full in [(1, 5.0), (2, 10.0), (3, 20.0), (10, 2560.0), (11, 3600.0)]:
        delay = retry_delay(attempt, 5.0, rng)
        assert 0.5 * full <= delay <= full
    assert retry_delay(200, 5.0, rng) <= MAX_DELAY_SECONDS


def test_retry_after_in_seconds_or_http_date() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
