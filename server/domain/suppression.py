"""Consent: the numbers an account must not send to (SuppressionService).

A suppression names a number (E.164) and the use types it applies to; one added with
none applies to notification and marketing, so verification codes still go unless
USE_TYPE_VERIFICATION is listed. Every path that sends checks it: SendMessage and
SendVerification refuse the number (FAILED_PRECONDITION, RECIPIENT_SUPPRESSED),
CreateBatch rejects it and takes the rest (one join in the store), and the dispatcher
ends a message accepted before the suppression REJECTED with SUPPRESSED.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from server.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from server.domain.models import UseType
from server.domain.pagination import decode_page_token, encode_page_token, page_size
from server.domain.phones import normalize_any_spelling

MAX_MOBILES = 10_000
# Raw numbers longer than this are refused without being read.
MAX_MOBILE_CHARS = 64
# Reported per request at most (each malformed number is one field violation).
MAX_VIOLATIONS = 100
DEFAULT_USE_TYPES = (UseType.NOTIFICATION, UseType.MARKETING)
SUPPRESSED = "SUPPRESSED"  # the error_code of a message stopped at dispatch
RECIPIENT_SUPPRESSED = "RECIPIENT_SUPPRESSED"
# A batch's number rejected for it (as NO_ROUTE_REASON: the reason code, a sentence).
BATCH_REASON = f"{RECIPIENT_SUPPRESSED}: the account suppressed this number for this use type"


class SuppressionReason(enum.IntEnum):
    UNSPECIFIED = 0
    MANUAL = 1
    OPT_OUT = 2
    PROVIDER_UNSUBSCRIBED = 3
    PROVIDER_BLOCKED = 4


@dataclass(frozen=True)
class Suppression:
    mobile: str
    reason: SuppressionReason
    use_types: tuple[UseType, ...]
    created_at: datetime


class SuppressionRepository(Protocol):
    async def add(
        self,
        account_id: int,
        mobiles: Sequence[str],
        reason: SuppressionReason,
        use_types: Sequence[UseType],
    ) -> list[Suppression]: ...

    async def remove(self, account_id: int, mobile: str) -> bool: ...

    async def get(self, account_id: int, mobile: str) -> Suppression | None: ...

    async def list_page(self, account_id: int, after: str, limit: int) -> list[Suppression]: ...

    async def is_suppressed(self, account_id: int, mobile: str, use_type: UseType) -> bool: ...


def recipient_suppressed(mobile: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"{mobile} is suppressed for this use type (SuppressionService); nothing was stored",
        reason=RECIPIENT_SUPPRESSED,
    )


def stored_use_types(requested: Sequence[int]) -> tuple[UseType, ...]:
    """The use types a suppression holds: the requested ones, or the default two."""
    if not requested:
        return DEFAULT_USE_TYPES
    return tuple(sorted({UseType(t) for t in requested}))


@dataclass(frozen=True)
class SuppressionPage:
    suppressions: list[Suppression]
    next_page_token: str


class Suppressions:
    def __init__(self, repository: SuppressionRepository, default_region: str | None) -> None:
        self._repository = repository
        self._region = default_region

    def _number(self, raw: str, field: str) -> str:
        if len(raw) > MAX_MOBILE_CHARS:
            raise InvalidArgument.field(
                field, f"at most {MAX_MOBILE_CHARS} characters", reason="INVALID_MOBILE"
            )
        return normalize_any_spelling(raw, field, self._region)

    async def add(
        self,
        account_id: int,
        mobiles: Sequence[str],
        reason: int,
        use_types: Sequence[int],
    ) -> list[Suppression]:
        """All or nothing: each malformed number is named (``mobiles[i]``)."""
        violations: list[FieldViolation] = []
        if not mobiles:
            violations.append(FieldViolation("mobiles", "at least one number"))
        elif len(mobiles) > MAX_MOBILES:
            raise InvalidArgument.field("mobiles", f"at most {MAX_MOBILES:,} numbers a request")
        if reason not in {int(r) for r in SuppressionReason}:
            violations.append(FieldViolation("reason", "not a SuppressionReason"))
        if any(t not in (1, 2, 3) for t in use_types):
            violations.append(
                FieldViolation("use_types", "USE_TYPE_VERIFICATION, _NOTIFICATION or _MARKETING")
            )
        numbers: list[str] = []
        bad = 0
        for i, raw in enumerate(mobiles):
            try:
                numbers.append(self._number(raw, f"mobiles[{i}]"))
            except InvalidArgument as exc:
                bad += 1
                if bad <= MAX_VIOLATIONS:
                    violations.extend(exc.violations)
        if bad > MAX_VIOLATIONS:
            violations.append(
                FieldViolation("mobiles", f"{bad} numbers are malformed; the first shown")
            )
        if violations:
            raise InvalidArgument(violations, reason="INVALID_MOBILE" if bad else None)
        return await self._repository.add(
            account_id,
            list(dict.fromkeys(numbers)),
            SuppressionReason(reason or SuppressionReason.MANUAL),
            stored_use_types(use_types),
        )

    async def get(self, account_id: int, raw: str) -> Suppression:
        mobile = self._number(raw, "mobile")
        found = await self._repository.get(account_id, mobile)
        if found is None:
            raise NotFound(f"{mobile} is not suppressed", reason="SUPPRESSION_NOT_FOUND")
        return found

    async def remove(self, account_id: int, raw: str) -> None:
        mobile = self._number(raw, "mobile")
        if not await self._repository.remove(account_id, mobile):
            raise NotFound(f"{mobile} is not suppressed", reason="SUPPRESSION_NOT_FOUND")

    async def list(self, account_id: int, requested_size: int, token: str) -> SuppressionPage:
        size = page_size(requested_size)
        scope = f"suppressions:{account_id}"
        (after,) = decode_page_token(token, scope, shape=(str,)) or ("",)
        rows = await self._repository.list_page(account_id, str(after), size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return SuppressionPage(rows, encode_page_token(scope, [rows[-1].mobile]) if more else "")
