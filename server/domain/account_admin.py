"""The operators' account settings (AccountService): checks of what an admin sets.

The same store methods serve ``smsgw account …`` and AccountService
(store/accounts.py); this module turns the API's values into the checked changes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from server.domain.errors import FieldViolation, InvalidArgument, PermissionDenied
from server.domain.messaging import Caller
from server.domain.phones import check_region_code
from server.domain.quiet_hours import ANY_COUNTRY, QuietHours

MAX_NAME = 200
MAX_RATE = 10_000_000.0
MAX_CIDRS = 100
# The Account fields UpdateAccount may name in its update_mask.
MASKABLE = (
    "name",
    "verified",
    "otp_max_attempts",
    "otp_allowed_regions",
    "quiet_hours",
    "send_per_second",
    "query_per_second",
    "allowed_countries",
    "daily_message_cap",
    "per_mobile_daily_cap",
    "balance",
)
MAX_BALANCE = 10**15
MAX_CAP = 1_000_000_000


def require_admin(caller: Caller) -> None:
    if not caller.admin:
        raise PermissionDenied(
            "AccountService needs a credential with the admin role "
            "(smsgw credential create ID --admin)",
            reason="ADMIN_REQUIRED",
        )


@dataclass(frozen=True)
class AccountValues:
    """An Account as the API carries it (None: an optional field not set)."""

    name: str = ""
    verified: bool = False
    otp_max_attempts: int | None = None
    otp_allowed_regions: Sequence[str] = ()
    quiet_hours: Sequence[str] = ()
    send_per_second: float | None = None
    query_per_second: float | None = None
    allowed_countries: Sequence[str] = ()
    daily_message_cap: int | None = None
    per_mobile_daily_cap: int | None = None
    balance: int | None = None


def quiet_hours_text(hours: QuietHours | None) -> list[str]:
    """The windows as AccountService shows them: "HH:MM-HH:MM" or "XX=HH:MM-HH:MM"."""
    if hours is None:
        return []
    return [
        str(w) if region == ANY_COUNTRY else f"{region}={w}"
        for region, w in sorted(hours.windows.items())
    ]


def _check(path: str, values: AccountValues, prefix: str, out: list[FieldViolation]) -> object:
    """The stored value of one field, or a violation added to ``out``."""
    where = f"{prefix}.{path}"
    if path == "name":
        name = values.name.strip()
        if not name or len(name) > MAX_NAME or not name.isprintable():
            out.append(FieldViolation(where, f"1 to {MAX_NAME} printable characters"))
        return name
    if path == "verified":
        return values.verified
    if path == "otp_max_attempts":
        n = values.otp_max_attempts
        if n is not None and not 1 <= n <= 100:
            out.append(FieldViolation(where, "1 to 100, or unset for the server's default"))
        return n
    if path in ("otp_allowed_regions", "allowed_countries"):
        given = (
            values.otp_allowed_regions
            if path == "otp_allowed_regions"
            else values.allowed_countries
        )
        regions = [check_region_code(r) for r in given]
        if None in regions:
            out.append(FieldViolation(where, "ISO 3166 region codes (CN, US, ...)"))
        return sorted({r for r in regions if r}) or None
    if path == "quiet_hours":
        if not values.quiet_hours:
            return None
        try:
            return QuietHours.parse(list(values.quiet_hours), where).to_json()
        except InvalidArgument as exc:
            out.extend(exc.violations)
            return None
    if path == "balance":
        if values.balance is not None and not 0 <= values.balance <= MAX_BALANCE:
            out.append(FieldViolation(where, f"0 to {MAX_BALANCE:,}, or unset for unlimited"))
        return values.balance
    if path in ("daily_message_cap", "per_mobile_daily_cap"):
        cap = (
            values.daily_message_cap if path == "daily_message_cap" else values.per_mobile_daily_cap
        )
        if cap is not None and not 0 <= cap <= MAX_CAP:
            out.append(FieldViolation(where, f"0 to {MAX_CAP:,}, or unset for no cap"))
        return cap
    rate = values.send_per_second if path == "send_per_second" else values.query_per_second
    if rate is not None and not 0 < rate <= MAX_RATE:
        out.append(FieldViolation(where, f"more than 0, at most {MAX_RATE:,.0f}"))
    return rate


def account_changes(
    values: AccountValues, paths: Sequence[str], prefix: str = "account"
) -> dict[str, object]:
    """The checked changes (column -> value) the named fields make."""
    violations: list[FieldViolation] = []
    unknown = [p for p in paths if p not in MASKABLE]
    if unknown:
        violations.append(
            FieldViolation(
                "update_mask", f"cannot change {', '.join(unknown)}; only {', '.join(MASKABLE)}"
            )
        )
    changes = {p: _check(p, values, prefix, violations) for p in paths if p in MASKABLE}
    if violations:
        raise InvalidArgument(violations)
    return changes


def set_fields(values: AccountValues) -> list[str]:
    """The fields CreateAccount was given (beyond name and verified)."""
    given = [
        ("otp_max_attempts", values.otp_max_attempts is not None),
        ("otp_allowed_regions", bool(values.otp_allowed_regions)),
        ("quiet_hours", bool(values.quiet_hours)),
        ("send_per_second", values.send_per_second is not None),
        ("query_per_second", values.query_per_second is not None),
        ("allowed_countries", bool(values.allowed_countries)),
        ("daily_message_cap", values.daily_message_cap is not None),
        ("per_mobile_daily_cap", values.per_mobile_daily_cap is not None),
        ("balance", values.balance is not None),
    ]
    return ["name", "verified", *(name for name, yes in given if yes)]


def check_cidrs(cidrs: Sequence[str], field: str = "allow_cidrs") -> list[str]:
    violations: list[FieldViolation] = []
    if len(cidrs) > MAX_CIDRS:
        raise InvalidArgument.field(field, f"at most {MAX_CIDRS}")
    networks: list[str] = []
    for i, cidr in enumerate(cidrs):
        try:
            networks.append(str(ipaddress.ip_network(cidr.strip(), strict=False)))
        except ValueError:
            violations.append(FieldViolation(f"{field}[{i}]", "not a CIDR (10.0.0.0/8)"))
    if violations:
        raise InvalidArgument(violations)
    return networks
