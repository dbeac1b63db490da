"""A provider's outcome for one message → the message's next state (pure, no I/O).

The dispatcher (worker.py) sends, then asks ``transition`` what the answer means:

- accepted: SENT, with the provider's id for the message (ours when it gave none);
- a final refusal: the outcome's final status (FAILED or REJECTED) with its code;
- retryable, sent through an open breaker's trickle: QUEUED again when the breaker
  next lets a trickle through; it costs no attempt;
- retryable with no attempt left: FAILED with the provider's code;
- retryable with attempts left: QUEUED again, at once when the next attempt goes to
  another provider (failover), else after the retry policy's backoff, and never
  sooner than the provider asked (``retry_after``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from datetime import datetime, timedelta

from server.dispatch.bulk import Routed
from server.dispatch.retry import RetryPolicy
from server.dispatch.route_choice import failover_order
from server.domain.models import MessageStatus
from server.domain.ports import SendOutcome
from server.store.outbox import Transition

# Seconds of random spread added to a trickle's wait, so the messages waiting for
# one breaker do not all come back at the same instant.
TRICKLE_JITTER = 0.1


def transition(
    routed: Routed,
    outcome: SendOutcome,
    now: datetime,
    retry: RetryPolicy,
    *,
    retries_per_provider: int,
    trickle_wait: Callable[[], float],
    rng: random.Random | None = None,
) -> Transition:
    """The transition of ``routed.message`` after its provider answered ``outcome``.

    ``trickle_wait`` gives the seconds until the provider's breaker lets a trickle
    through again; it is asked only for a failed trickle send. ``rng`` draws the
    jitter (the ``random`` module when None).
    """
    message, name = routed.message, routed.provider
    draw = rng or random
    if outcome.accepted:
        return Transition(
            message.id,
            MessageStatus.SENT,
            provider=name,
            provider_message_id=outcome.provider_message_id or message.id,
        )
    if not outcome.retryable:
        return Transition(
            message.id,
            outcome.final_status,
            error_code=outcome.error_code,
            provider=name,
            suppress=outcome.suppress,
        )
    if routed.trickle:
        # A try through an open breaker tells the breaker, not the message: it
        # costs no attempt (the message's age still bounds its wait).
        return Transition(
            message.id,
            MessageStatus.QUEUED,
            error_code=outcome.error_code,
            provider=name,
            not_before=now + timedelta(seconds=trickle_wait() + draw.uniform(0, TRICKLE_JITTER)),
            attempted=False,
        )
    if not retry.should_retry(message.attempts):
        return Transition(
            message.id, MessageStatus.FAILED, error_code=outcome.error_code, provider=name
        )
    following = failover_order(routed.candidates, message.attempts + 1, retries_per_provider)[0]
    # The same provider again: back off, at least as long as it asked.
    # Another provider: go on at once.
    switch = following != name
    delay = 0.0 if switch else max(retry.delay(message.attempts, rng), outcome.retry_after)
    return Transition(
        message.id,
        MessageStatus.QUEUED,
        error_code=outcome.error_code,
        provider=name,
        not_before=now + timedelta(seconds=delay),
    )


def within_validity(outcome: Transition, expires_at: datetime | None) -> Transition:
    """A retry never waits past the caller's validity: it comes back at ``expires_at``
    at the latest, to be ended EXPIRED then rather than whenever the backoff ends."""
    if (
        expires_at is None
        or outcome.status != MessageStatus.QUEUED
        or outcome.not_before is None
        or outcome.not_before <= expires_at
    ):
        return outcome
    return dataclasses.replace(outcome, not_before=expires_at)
