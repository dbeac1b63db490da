"""Rate-limit buckets: refuse at once with the real wait, per account and overall."""

from __future__ import annotations

import asyncio

import pytest

from server.domain.errors import ResourceExhausted
from server.domain.limits import AuthFailureThrottle, Bucket, RateLimits, RateLimitSettings
from server.domain.messaging import Caller

SEND = "/sms.v1.MessageService/SendMessage"
QUERY = "/sms.v1.MessageService/GetMessageStatus"


def caller(account_id: int = 1, **overrides: float) -> Caller:
    return Caller(account_id=account_id, verified=True, **overrides)  # type: ignore[arg-type]


async def test_a_bucket_takes_its_burst_then_names_the_wait() -> None:
    bucket = Bucket(4, 1.0)  # 4 a second
    assert [bucket.take() for _ in range(4)] == [0.0] * 4
    wait = bucket.take()
    assert 0.2 < wait <= 0.25  # one token comes back every 0.25 s
    await asyncio.sleep(wait)
    assert bucket.take() == 0.0


def refusal(limits: RateLimits, who: Caller, method: str) -> ResourceExhausted | None:
    try:
        limits.admit(who, method)
    except ResourceExhausted as exc:
        return exc
    return None


async def test_sends_and_queries_are_counted_apart_per_account() -> None:
    limits = RateLimits(RateLimitSettings(0, 2, 3, 1.0, 0))
    assert [refusal(limits, caller(), SEND) for _ in range(2)] == [None, None]
    refused = refusal(limits, caller(), SEND)
    assert refused is not None and refused.reason == "ACCOUNT_SEND_RATE"
    assert refused.quota_subject == "account:1"
    assert [refusal(limits, caller(), QUERY) for _ in range(3)] == [None] * 3
    assert refusal(limits, caller(), QUERY) is not None
    assert refusal(limits, caller(2), SEND) is None  # another account


async def test_an_accounts_own_rate_overrides_the_default() -> None:
    limits = RateLimits(RateLimitSettings(0, 1, 0, 1.0, 0))
    generous = caller(send_per_second=3)
    assert [refusal(limits, generous, SEND) for _ in range(3)] == [None] * 3
    assert refusal(limits, generous, SEND) is not None


async def test_a_call_refused_overall_does_not_use_up_the_accounts_share() -> None:
    limits = RateLimits(RateLimitSettings(1, 2, 0, 1.0, 0))
    assert refusal(limits, caller(1), SEND) is None
    refused = refusal(limits, caller(2), SEND)
    assert refused is not None and refused.reason == "GLOBAL_SEND_RATE"
    # Account 2's refused call was given back: it still has two.
    limits.settings = RateLimitSettings(0, 2, 0, 1.0, 0)
    assert [refusal(limits, caller(2), SEND) for _ in range(2)] == [None, None]


async def test_zero_turns_a_limit_off() -> None:
    limits = RateLimits(RateLimitSettings(0, 0, 0, 1.0, 0))
    assert all(refusal(limits, caller(), SEND) is None for _ in range(10_000))


async def test_failed_authentications_close_a_key_from_a_source_for_a_while() -> None:
    throttle = AuthFailureThrottle(2)
    for _ in range(2):
        throttle.reserve("app_a", "10.0.0.1")  # counted before the (slow) check
    with pytest.raises(ResourceExhausted) as caught:
        throttle.reserve("app_a", "10.0.0.1")
    assert caught.value.reason == "TOO_MANY_AUTH_FAILURES"
    assert 0 < caught.value.retry_after <= 30
    throttle.reserve("app_a", "10.0.0.2")  # the same key from elsewhere is not affected
    throttle.reserve("app_b", "10.0.0.1")  # nor another key from the same address


async def test_a_right_secret_gives_its_reservation_back() -> None:
    throttle = AuthFailureThrottle(2)
    for _ in range(10):
        throttle.reserve("app_a", "10.0.0.1")
        throttle.forgive("app_a", "10.0.0.1")
    throttle.reserve("app_a", "10.0.0.1")
    throttle.reserve("app_a", "10.0.0.1")
    with pytest.raises(ResourceExhausted):
        throttle.reserve("app_a", "10.0.0.1")
