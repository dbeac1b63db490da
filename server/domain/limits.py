"""Request rate limits that refuse at once: token buckets per account and overall.

Callers are never made to wait: a call over a limit is refused with
RESOURCE_EXHAUSTED, the real wait (RetryInfo) and the quota it hit (QuotaFailure).
Outbound provider traffic waits smoothly instead (dispatch/provider_set.py).

Each bucket is an aiolimiter ``AsyncLimiter`` (a leaky bucket, which admits the same
traffic as a token bucket of ``rate`` tokens a second holding ``rate * burst_seconds``),
created on first use, inside the running loop. They count calls in this process: with
N replicas the overall rates add up to N times these. What must hold across replicas
(a mobile's send interval, the verification limits) is kept in PostgreSQL instead.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from aiolimiter import AsyncLimiter

from server.domain.errors import ResourceExhausted
from server.domain.messaging import Caller

# The calls that put messages into the outbox; every other call is a query.
SEND_METHODS = frozenset(
    {
        "/sms.v1.MessageService/SendMessage",
        "/sms.v1.VerificationService/SendVerification",
        "/sms.v1.BatchService/CreateBatch",
    }
)
MAX_KEYS = 100_000  # idle buckets are dropped beyond this many


@dataclass(frozen=True)
class RateLimitSettings:
    """Calls per second (0: no limit); a bucket holds ``burst_seconds`` of its rate."""

    global_send_per_second: float = 10_000.0
    account_send_per_second: float = 1_000.0
    account_query_per_second: float = 1_000.0  # seed 002: 1,000 queries a second
    burst_seconds: float = 1.0
    auth_failures_per_minute: int = 10  # per (api key, source address), then refused a while


class Bucket(AsyncLimiter):
    """An AsyncLimiter that can refuse instead of waiting."""

    def wait(self, amount: float = 1.0) -> float:
        """Seconds until ``amount`` fits (0.0: it fits now)."""
        if self.has_capacity(amount):
            return 0.0
        return (self._level + amount - self.max_rate) / self._rate_per_sec

    def take(self, amount: float = 1.0) -> float:
        """Takes ``amount`` now and returns 0.0, or takes nothing and returns the
        seconds until it would fit."""
        wait = self.wait(amount)
        if not wait:
            self._level += amount  # what acquire() does when it need not wait
        return wait

    def give_back(self, amount: float = 1.0) -> None:
        self._level = max(self._level - amount, 0.0)

    @property
    def idle(self) -> bool:
        return self.has_capacity(self.max_rate)


K = TypeVar("K", bound=Hashable)


class KeyedBuckets(Generic[K]):
    """One bucket per key (account, source address), made on first use."""

    def __init__(self, burst_seconds: float) -> None:
        self._burst = burst_seconds
        self._buckets: dict[K, Bucket] = {}

    def bucket(self, key: K, per_second: float) -> Bucket:
        capacity = max(per_second * self._burst, 1.0)
        found = self._buckets.get(key)
        if found is None or found.max_rate != capacity:
            if len(self._buckets) >= MAX_KEYS:
                self._buckets = {k: b for k, b in self._buckets.items() if not b.idle}
            found = self._buckets[key] = Bucket(capacity, capacity / per_second)
        return found


class RateLimits:
    """Admits or refuses each call by its account's send or query rate and the
    overall send rate (per-account overrides come with the caller)."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.settings = settings
        self._accounts: KeyedBuckets[tuple[int, bool]] = KeyedBuckets(settings.burst_seconds)
        self._overall: Bucket | None = None

    def admit(self, caller: Caller, method: str) -> None:
        s = self.settings
        sending = method in SEND_METHODS
        if sending:
            rate = caller.send_per_second or s.account_send_per_second
            kind, reason = "send", "ACCOUNT_SEND_RATE"
        else:
            rate = caller.query_per_second or s.account_query_per_second
            kind, reason = "query", "ACCOUNT_QUERY_RATE"
        account = None
        if rate > 0:
            account = self._accounts.bucket((caller.account_id, sending), rate)
            wait = account.take()
            if wait:
                raise _refusal(f"account:{caller.account_id}", f"{kind} calls", rate, wait, reason)
        if sending and s.global_send_per_second > 0:
            overall = self._overall_bucket()
            wait = overall.take()
            if wait:
                if account is not None:
                    account.give_back()  # refused: the account's call does not count
                raise _refusal(
                    "server", "send calls", s.global_send_per_second, wait, "GLOBAL_SEND_RATE"
                )

    def _overall_bucket(self) -> Bucket:
        if self._overall is None:
            rate = self.settings.global_send_per_second
            capacity = max(rate * self.settings.burst_seconds, 1.0)
            self._overall = Bucket(capacity, capacity / rate)
        return self._overall


class AuthFailureThrottle:
    """Limits the slow secret checks per (api key, source address): at most
    ``per_minute`` wrong secrets a minute, then that key from that address is refused
    until the bucket drains. Other keys from the same address (clients behind one
    NAT) and the same key from elsewhere are not affected.

    A check is counted *before* the secret is hashed (``reserve``) and given back
    when the secret was right (``forgive``), so calls sent all at once cannot get
    more hashes than the limit."""

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._failures: KeyedBuckets[tuple[str, str | None]] = KeyedBuckets(60.0)

    def reserve(self, api_key: str, source: str | None) -> None:
        """Counts one check as failed in advance, or raises RESOURCE_EXHAUSTED."""
        if self._per_minute <= 0:
            return
        wait = self._failures.bucket((api_key, source), self._per_minute / 60.0).take()
        if wait:
            raise _refusal(
                f"api_key:{api_key}@{source or '-'}",
                "failed authentications",
                self._per_minute,
                wait,
                "TOO_MANY_AUTH_FAILURES",
                per="minute",
            )

    def forgive(self, api_key: str, source: str | None) -> None:
        """The reserved check succeeded: it does not count."""
        if self._per_minute <= 0:
            return
        self._failures.bucket((api_key, source), self._per_minute / 60.0).give_back()


class StreamCaps:
    """Server streams open at once, per account and in this process: past either
    cap a new stream is refused (RESOURCE_EXHAUSTED), so one account's thousands of
    streams cannot slow every other account's calls."""

    RETRY_AFTER = 1.0  # streams end at their callers' will: a hint, not a promise

    def __init__(self, per_account: int, total: int) -> None:
        self.per_account = per_account
        self.total = total
        self._open: dict[int, int] = {}
        self._count = 0

    def open(self, account_id: int) -> None:
        """Counts one more stream of ``account_id``, or raises RESOURCE_EXHAUSTED."""
        mine = self._open.get(account_id, 0)
        if mine >= self.per_account:
            raise _refusal(
                f"account:{account_id}",
                "open streams",
                self.per_account,
                self.RETRY_AFTER,
                "ACCOUNT_STREAMS",
                per=None,
            )
        if self._count >= self.total:
            raise _refusal(
                "server", "open streams", self.total, self.RETRY_AFTER, "SERVER_STREAMS", per=None
            )
        self._open[account_id] = mine + 1
        self._count += 1

    def close(self, account_id: int) -> None:
        mine = self._open.get(account_id, 0) - 1
        if mine > 0:
            self._open[account_id] = mine
        else:
            self._open.pop(account_id, None)
        self._count -= 1

    def open_for(self, account_id: int) -> int:
        return self._open.get(account_id, 0)


def _refusal(
    subject: str, what: str, rate: float, wait: float, reason: str, *, per: str | None = "second"
) -> ResourceExhausted:
    description = f"at most {rate:g} {what}" + (f" a {per}" if per else " at once")
    return ResourceExhausted(
        f"rate limit reached: {description}; retry in {wait:.3f} s",
        retry_after=wait,
        reason=reason,
        quota_subject=subject,
        quota_description=description,
    )
