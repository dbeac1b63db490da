"""An account's guardrails on every send path: the countries its messages may go to,
how many it may send per UTC day (in all, and to one mobile), and what a prepaid
account is charged (per segment at the routing file's price for the country).

The country check is pure (the number's region). The day counts live in PostgreSQL
(store/daily_caps.py), taken in the transaction that stores the messages, so they
hold across replicas and a refused send stores nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from server.domain.errors import FailedPrecondition, PermissionDenied, ResourceExhausted
from server.domain.phones import region_of

if TYPE_CHECKING:
    from server.domain.messaging import Caller

COUNTRY_NOT_ALLOWED = "COUNTRY_NOT_ALLOWED"
# A batch's number rejected for it (the reason code, a sentence).
COUNTRY_BATCH_REASON = f"{COUNTRY_NOT_ALLOWED}: the account may not send to this country"
MOBILE_CAP_BATCH_REASON = "PER_MOBILE_DAILY_CAP: this number had the account's daily most today"


def country_allowed(caller: Caller, e164: str) -> bool:
    allowed = caller.allowed_countries
    return allowed is None or region_of(e164) in allowed


def check_country(caller: Caller, e164: str) -> None:
    if not country_allowed(caller, e164):
        raise PermissionDenied(
            f"this account may not send to {region_of(e164) or 'this number'}; nothing was stored",
            reason=COUNTRY_NOT_ALLOWED,
        )


@dataclass(frozen=True)
class DailyCaps:
    """Messages an account may have accepted per UTC day (None: no cap)."""

    account: int | None = None
    per_mobile: int | None = None

    @classmethod
    def of(cls, caller: Caller) -> DailyCaps:
        return cls(caller.daily_message_cap, caller.per_mobile_daily_cap)

    @property
    def active(self) -> bool:
        return self.account is not None or self.per_mobile is not None


def until_day_ends(now: datetime | None = None) -> float:
    """Seconds until the current UTC day ends (the caps' RetryInfo)."""
    now = now or datetime.now(UTC)
    tomorrow = (now.astimezone(UTC) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return max((tomorrow - now).total_seconds(), 0.001)


def account_cap_reached(account_id: int, cap: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"this account may have at most {cap} messages accepted per day (UTC); nothing was stored",
        retry_after=until_day_ends(),
        reason="DAILY_MESSAGE_CAP",
        quota_subject=f"account:{account_id}",
        quota_description=f"at most {cap} messages a day",
    )


def mobile_cap_reached(mobile: str, cap: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"this account may send at most {cap} messages per day (UTC) to one mobile; "
        "nothing was stored",
        retry_after=until_day_ends(),
        reason="PER_MOBILE_DAILY_CAP",
        quota_subject=f"mobile:{mobile}",
        quota_description=f"at most {cap} messages a day to one mobile",
    )


INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"


def price_of(prices: Mapping[str, int], e164: str) -> int | None:
    """A segment's price to this number's country ("*": any other), or None."""
    region = region_of(e164)
    if region is not None and region in prices:
        return prices[region]
    return prices.get("*")


def charge_for(caller: Caller, prices: Mapping[str, int], e164: str, segments: int) -> int:
    """What a message costs a prepaid account (0 for others); raises when the routing
    file has no price for the number's country."""
    if not caller.prepaid:
        return 0
    price = price_of(prices, e164)
    if price is None:
        raise FailedPrecondition(
            f"no price is configured for {region_of(e164) or 'this number'}'s country, so a "
            "prepaid account cannot send there; nothing was stored",
            reason="NO_PRICE",
        )
    return price * segments


def insufficient_balance(balance: int, needed: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"the balance ({balance}) is short of what this costs ({needed}); nothing was "
        "stored (TopUpBalance adds to it)",
        reason=INSUFFICIENT_BALANCE,
    )
