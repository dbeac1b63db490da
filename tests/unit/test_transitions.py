"""Outcome → transition (dispatch/transitions.py): every branch, no I/O, a fixed clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from server.dispatch.bulk import Routed
from server.dispatch.retry import RetryPolicy
from server.dispatch.transitions import TRICKLE_JITTER, transition, within_validity
from server.domain.models import MessageStatus, OutboundMessage, UseType
from server.domain.ports import SendOutcome
from server.store.outbox import Transition

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=300.0)


def routed(
    attempts: int = 1,
    provider: str = "a",
    candidates: tuple[str, ...] = ("a", "b"),
    *,
    trickle: bool = False,
) -> Routed:
    message = OutboundMessage("m1", 7, "+14155550123", "hi", UseType.NOTIFICATION, attempts)
    return Routed(message, provider, candidates, trickle=trickle)


def never_asked() -> float:
    raise AssertionError("the breaker's wait is asked only for a failed trickle send")


def decide(
    r: Routed,
    outcome: SendOutcome,
    *,
    per_provider: int = 2,
    policy: RetryPolicy = POLICY,
    trickle_wait: float | None = None,
    seed: int = 1,
) -> Transition:
    return transition(
        r,
        outcome,
        NOW,
        policy,
        retries_per_provider=per_provider,
        trickle_wait=never_asked if trickle_wait is None else (lambda: trickle_wait),
        rng=random.Random(seed),
    )


RETRYABLE = SendOutcome(accepted=False, retryable=True, error_code="HTTP_503")


def test_accepted_is_sent_with_the_providers_id() -> None:
    t = decide(routed(), SendOutcome(accepted=True, provider_message_id="sky-42"))
    assert t.status == MessageStatus.SENT
    assert t.provider == "a" and t.provider_message_id == "sky-42"
    assert t.not_before is None and t.attempted


def test_accepted_without_a_provider_id_keeps_ours() -> None:
    t = decide(routed(), SendOutcome(accepted=True))
    assert t.provider_message_id == "m1"


@pytest.mark.parametrize("final", [MessageStatus.REJECTED, MessageStatus.FAILED])
def test_a_final_refusal_ends_the_message_with_the_providers_code(final: MessageStatus) -> None:
    refused = SendOutcome(accepted=False, error_code="412", final_status=final)
    # Attempts left and another provider to fail over to change nothing.
    t = decide(routed(attempts=1), refused)
    assert (t.status, t.error_code, t.provider) == (final, "412", "a")
    assert t.not_before is None


def test_retryable_with_attempts_left_backs_off_on_the_same_provider() -> None:
    # Three attempts per provider: attempt 2 on "a" failed, attempt 3 is "a" again,
    # after the policy's backoff for a second failure.
    t = decide(routed(attempts=2), RETRYABLE, per_provider=3, seed=3)
    assert (t.status, t.error_code, t.provider) == (
        MessageStatus.QUEUED,
        "HTTP_503",
        "a",
    )
    expected = POLICY.delay(2, random.Random(3))
    assert t.not_before == NOW + timedelta(seconds=expected)
    assert 0 <= expected <= 2.0 and t.attempted


def test_retryable_waits_at_least_as_long_as_the_provider_asked() -> None:
    throttled = SendOutcome(accepted=False, retryable=True, error_code="429", retry_after=30.0)
    t = decide(routed(attempts=1), throttled)
    # The policy's first backoff is at most 1 s; the provider asked for 30.
    assert t.not_before == NOW + timedelta(seconds=30)
    assert t.status == MessageStatus.QUEUED


def test_retryable_switching_provider_goes_on_at_once() -> None:
    # Two attempts per provider: attempt 2 on "a" failed, attempt 3 goes to "b" now,
    # even though "a" asked to be left alone for a minute.
    throttled = SendOutcome(accepted=False, retryable=True, error_code="429", retry_after=60.0)
    t = decide(routed(attempts=2, candidates=("a", "b")), throttled)
    assert t.status == MessageStatus.QUEUED and t.not_before == NOW
    assert t.provider == "a" and t.attempted


def test_retryable_with_no_attempt_left_fails_with_the_providers_code() -> None:
    t = decide(routed(attempts=5), RETRYABLE)
    assert (t.status, t.error_code, t.provider) == (
        MessageStatus.FAILED,
        "HTTP_503",
        "a",
    )
    assert t.not_before is None


def test_a_failed_trickle_costs_no_attempt_and_waits_for_the_breaker() -> None:
    # Even a message on its last attempt is not failed by a trickle through an open breaker.
    t = decide(routed(attempts=5, trickle=True), RETRYABLE, trickle_wait=12.0)
    assert t.status == MessageStatus.QUEUED and not t.attempted
    assert t.error_code == "HTTP_503" and t.provider == "a"
    assert t.not_before is not None
    wait = (t.not_before - NOW).total_seconds()
    assert 12.0 <= wait <= 12.0 + TRICKLE_JITTER


def test_a_trickle_that_was_accepted_or_refused_is_an_ordinary_answer() -> None:
    sent = decide(routed(trickle=True), SendOutcome(accepted=True, provider_message_id="p"))
    assert sent.status == MessageStatus.SENT
    refused = SendOutcome(accepted=False, error_code="BAD_NUMBER")
    t = decide(routed(trickle=True), refused)
    assert t.status == MessageStatus.FAILED and t.attempted


def test_a_retry_comes_back_no_later_than_the_callers_validity() -> None:
    late = Transition("m1", MessageStatus.QUEUED, not_before=NOW + timedelta(minutes=5))
    expires = NOW + timedelta(minutes=1)
    assert within_validity(late, expires).not_before == expires
    assert within_validity(late, None) == late
    soon = Transition("m1", MessageStatus.QUEUED, not_before=NOW + timedelta(seconds=5))
    assert within_validity(soon, expires) == soon
    sent = Transition("m1", MessageStatus.SENT, provider="a")
    assert within_validity(sent, expires) == sent
