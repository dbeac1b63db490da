"""The SMS-pumping guard for verification codes: which counters to count, and what
their counts mean.

Fraudsters pump SMS by asking for codes to ranges of premium numbers that they
are paid for. The guard refuses a code when, for one account:

- the number's country is not on the account's allowlist (``COUNTRY_NOT_ALLOWED``);
- too many codes went to numbers that share its prefix, the number without its
  last 4 digits, within a window (``PREFIX_VELOCITY``);
- too many codes went to its country within a window (``COUNTRY_VELOCITY``).

In monitor-only mode nothing is refused: the decision lists what would have been,
so the caller can log and count it while the limits are being tuned.

This module is pure: the counting itself is a port (``server.store.velocity``
counts in PostgreSQL so that the limits hold across replicas). The intended use::

    raise_if_blocked(check_allowlist(e164, allowed_regions, settings.monitor_only))
    async with conn.transaction():
        results = await counters.hit(conn, guard_checks(account_id, e164, settings))
        raise_if_blocked(judge(results, monitor_only=settings.monitor_only))
        ...  # store the message; a refusal above rolls the counts back
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from server.domain.errors import PermissionDenied, ResourceExhausted
from server.domain.phones import region_of

PREFIX_SCOPE: Final = "otp_prefix"
COUNTRY_SCOPE: Final = "otp_country"

COUNTRY_NOT_ALLOWED: Final = "COUNTRY_NOT_ALLOWED"
PREFIX_VELOCITY: Final = "PREFIX_VELOCITY"
COUNTRY_VELOCITY: Final = "COUNTRY_VELOCITY"

# The region of a number that belongs to no single country (+800, +882, ...), in
# counter keys and allowlists; libphonenumber's code for "unknown".
UNKNOWN_REGION: Final = "ZZ"

# How many trailing digits prefix_of drops.
SUBSCRIBER_DIGITS: Final = 4

_REASON_OF_SCOPE: Final = {PREFIX_SCOPE: PREFIX_VELOCITY, COUNTRY_SCOPE: COUNTRY_VELOCITY}

_E164_SHAPE = re.compile(rf"\+[0-9]{{{SUBSCRIBER_DIGITS + 1},}}")


@dataclass(frozen=True)
class GuardSettings:
    """The guard's limits, read once from the configuration.

    A limit of 0 turns that check off. A limit of N lets N codes through per
    window; the (N+1)th is refused.
    """

    prefix_limit: int = 10
    prefix_window_seconds: float = 3600
    country_limit: int = 1000
    country_window_seconds: float = 3600
    monitor_only: bool = False

    def __post_init__(self) -> None:
        for name in ("prefix_limit", "country_limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or more, not {getattr(self, name)}")
        for name in ("prefix_window_seconds", "country_window_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {value}")


@dataclass(frozen=True)
class VelocityCheck:
    """One counter to increment: ``key`` within ``scope``, in fixed windows of
    ``window_seconds`` aligned to the Unix epoch, allowing ``limit`` per window."""

    scope: str
    key: str
    window_seconds: float
    limit: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_seconds) and self.window_seconds > 0):
            raise ValueError(f"window_seconds must be positive, not {self.window_seconds}")
        if self.limit < 0:
            raise ValueError(f"limit must be 0 or more, not {self.limit}")


@dataclass(frozen=True)
class VelocityResult:
    """A counter after one increment: ``count`` includes the request just counted.

    ``counted_at`` is the counting clock's time (the database's, not this
    process's), so waits computed from it do not depend on clock skew.
    """

    scope: str
    key: str
    count: int
    limit: int
    window_end: datetime
    counted_at: datetime

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    def retry_after(self, now: datetime | None = None) -> float:
        """Whole seconds from ``now`` (default ``counted_at``) until the window
        ends, at least 1."""
        start = self.counted_at if now is None else now
        return float(max(1, math.ceil((self.window_end - start).total_seconds())))


@dataclass(frozen=True)
class GuardDecision:
    """What the guard decided about one request.

    ``reason`` and ``message`` are empty when the request is allowed. ``monitored``
    lists the reasons that would have refused it had the guard not been in
    monitor-only mode (it is empty outside that mode). ``message`` never contains
    the phone number.
    """

    allowed: bool
    reason: str = ""
    retry_after: float = 0.0
    monitored: tuple[str, ...] = ()
    message: str = field(default="", compare=False)


ALLOWED: Final = GuardDecision(allowed=True)


def prefix_of(e164: str) -> str:
    """The number without its last 4 digits: ``+8613800138000`` -> ``+861380013``.

    ``e164`` must be a normalized number (``+`` then at least 5 ASCII digits);
    anything else is a programming error and raises ValueError.
    """
    if _E164_SHAPE.fullmatch(e164) is None:
        raise ValueError("prefix_of expects a normalized E.164 number")
    return e164[:-SUBSCRIBER_DIGITS]


def region_key(e164: str) -> str:
    """The number's ISO 3166 region code, or ``UNKNOWN_REGION`` when it has none."""
    return region_of(e164) or UNKNOWN_REGION


def guard_checks(account_id: int, e164: str, settings: GuardSettings) -> list[VelocityCheck]:
    """The counters to increment for one verification code to ``e164``.

    Checks whose limit is 0 (off) are left out. In monitor-only mode the checks
    are the same: the counts are what monitoring reports on.
    """
    checks: list[VelocityCheck] = []
    if settings.prefix_limit > 0:
        checks.append(
            VelocityCheck(
                PREFIX_SCOPE,
                f"{account_id}:{prefix_of(e164)}",
                settings.prefix_window_seconds,
                settings.prefix_limit,
            )
        )
    if settings.country_limit > 0:
        checks.append(
            VelocityCheck(
                COUNTRY_SCOPE,
                f"{account_id}:{region_key(e164)}",
                settings.country_window_seconds,
                settings.country_limit,
            )
        )
    return checks


def check_allowlist(
    e164: str, allowed_regions: frozenset[str] | None, monitor_only: bool
) -> GuardDecision:
    """Whether the account may send to the number's country.

    ``None`` means the account has no allowlist: every number is allowed. Otherwise
    the number's region code (upper case, ISO 3166) must be in ``allowed_regions``;
    an empty set allows nothing. A number that belongs to no country is allowed only
    when the set holds ``UNKNOWN_REGION`` ("ZZ").
    """
    if allowed_regions is None:
        return ALLOWED
    region = region_key(e164)
    if region in allowed_regions:
        return ALLOWED
    if monitor_only:
        return GuardDecision(allowed=True, monitored=(COUNTRY_NOT_ALLOWED,))
    where = "numbers of no country" if region == UNKNOWN_REGION else f"numbers in {region}"
    return GuardDecision(
        allowed=False,
        reason=COUNTRY_NOT_ALLOWED,
        message=f"This account may not send verification codes to {where}.",
    )


def judge(results: Sequence[VelocityResult], *, monitor_only: bool) -> GuardDecision:
    """Refuses the request if any counter went over its limit.

    When several did, the decision names the one whose window ends last: its
    ``retry_after`` is the real wait, since a refused request is not counted (the
    caller rolls its counts back) and every exceeded window has ended by then.
    """
    exceeded = [r for r in results if r.exceeded]
    if not exceeded:
        return ALLOWED
    reasons = tuple(dict.fromkeys(_reason_of(r.scope) for r in exceeded))
    if monitor_only:
        return GuardDecision(allowed=True, monitored=reasons)
    # max() keeps the first of equal waits, so ties go to the earlier check.
    binding = max(exceeded, key=lambda r: r.retry_after())
    reason = _reason_of(binding.scope)
    retry_after = binding.retry_after()
    target = "numbers with this prefix" if reason == PREFIX_VELOCITY else "this country"
    return GuardDecision(
        allowed=False,
        reason=reason,
        retry_after=retry_after,
        message=(
            f"Too many verification codes were sent to {target} recently; "
            f"retry in {retry_after:.0f} seconds."
        ),
    )


def raise_if_blocked(decision: GuardDecision) -> None:
    """Raises the domain error of a refusal; returns when the request is allowed.

    ``COUNTRY_NOT_ALLOWED`` is a PermissionDenied; the velocity reasons are a
    ResourceExhausted that carries the wait.
    """
    if decision.allowed:
        return
    message = decision.message or "The verification code was refused."
    if decision.reason == COUNTRY_NOT_ALLOWED:
        raise PermissionDenied(message, reason=decision.reason)
    raise ResourceExhausted(message, retry_after=decision.retry_after, reason=decision.reason)


def _reason_of(scope: str) -> str:
    try:
        return _REASON_OF_SCOPE[scope]
    except KeyError:
        raise ValueError(f"the guard does not know the velocity scope {scope!r}") from None
