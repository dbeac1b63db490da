"""OTP verification: send a code, check it (Skynoo verification/send and check).

Codes come from ``secrets`` (or the caller: SendCloud sendCode); only a keyed hash
is stored. Each verification allows a number of attempts (3 by default, per account
configurable), expires (5 minutes by default), and verifies once. Sends are limited
per mobile (one per interval) and per account (per hour) and pass the SMS-pumping
guard, all counted in the database so the limits hold across replicas. Codes never
appear in logs or errors.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from server.domain.caller_refs import check_reference
from server.domain.codes import CodeKeys, generate_code
from server.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from server.domain.fields import check_id
from server.domain.guardrails import DailyCaps, charge_for, check_country
from server.domain.messaging import (
    Caller,
    check_request_id,
    no_route,
    outbound,
    request_fingerprint,
)
from server.domain.models import CODE_MARK, Channel, NewMessage, Priority, UseType
from server.domain.models import VerificationState as State
from server.domain.otp_guard import (
    GuardSettings,
    VelocityCheck,
    VelocityResult,
    check_allowlist,
    guard_checks,
    judge,
    raise_if_blocked,
)
from server.domain.phones import normalize_mobile
from server.domain.ports import IdempotencyKey, Routes, TemplateRepository
from server.domain.segments import count_segments
from server.domain.template_text import ParsedTemplate, render

log = logging.getLogger(__name__)

MIN_CODE, MAX_CODE = 4, 8
MAX_SCENE_CHARS = 64
# Variables a verification template may use; #code# is required.
TEMPLATE_VALUES = ("code", "minutes", "expire_minutes", "expireMinutes")
DEFAULT_TEXT = "Your verification code is #code#. It expires in {minutes} minutes."
ACCOUNT_SCOPE = "otp_account"


@dataclass(frozen=True)
class OtpSettings:
    default_length: int = 6
    default_expire_minutes: int = 5
    max_expire_minutes: int = 60
    default_max_attempts: int = 3
    mobile_interval_seconds: float = 60.0
    account_per_hour: int = 100
    guard: GuardSettings = field(default_factory=GuardSettings)


@dataclass(frozen=True)
class SendVerificationCommand:
    mobile: str
    code_length: int = 0
    expire_minutes: int = 0
    scene: str = ""
    template_id: int | None = None
    channel: Channel = Channel.UNSPECIFIED
    code: str = ""
    request_id: str = ""
    reference: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SentVerification:
    verify_id: str
    expire_time: datetime
    message_id: str


@dataclass(frozen=True)
class NewVerification:
    id: str
    account_id: int
    mobile: str
    scene: str
    channel: int
    code_hash: bytes = field(repr=False)
    attempts: int
    expires_at: datetime


@dataclass(frozen=True)
class StoredVerification:
    id: str
    expires_at: datetime
    message_id: str


class CheckResult(enum.Enum):
    NOT_FOUND = "not_found"
    VALID = "valid"
    INVALID = "invalid"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"
    ALREADY_VERIFIED = "already_verified"


@dataclass(frozen=True)
class CheckOutcome:
    result: CheckResult
    attempts_left: int = 0
    state: State = State.UNSPECIFIED


@dataclass(frozen=True)
class CheckedVerification:
    valid: bool
    remaining_attempts: int
    state: State


class VerificationRepository(Protocol):
    async def create(
        self,
        verification: NewVerification,
        message: NewMessage,
        *,
        mobile_interval: float,
        checks: Sequence[VelocityCheck],
        judge: Callable[[Sequence[VelocityResult]], None],
        key: IdempotencyKey | None = None,
        caps: DailyCaps | None = None,
    ) -> StoredVerification:
        """Stores the verification and its message, or raises, storing nothing: a
        mobile the account suppressed for verification codes is refused (FAILED_PRECONDITION,
        RECIPIENT_SUPPRESSED) in the same transaction as the insert."""
        ...

    async def check(
        self, account_id: int, verify_id: str, mobile: str, candidate: bytes
    ) -> CheckOutcome:
        """Compares ``candidate`` (``CodeKeys.digest`` of the code given) with the stored
        hash, and uses an attempt, atomically."""
        ...


class Verifications:
    def __init__(
        self,
        store: VerificationRepository,
        templates: TemplateRepository,
        codes: CodeKeys,
        settings: OtpSettings,
        *,
        routes: Routes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_accepted: Callable[[], None] = lambda: None,
        prices: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self._store = store
        self._prices = prices  # per-segment prices by region (prepaid accounts)
        self._templates = templates
        self._codes = codes
        self._settings = settings
        self._routes = routes
        self._clock = clock
        self._on_accepted = on_accepted

    async def send(self, caller: Caller, cmd: SendVerificationCommand) -> SentVerification:
        s = self._settings
        violations: list[FieldViolation] = []
        mobile = ""
        try:
            mobile = normalize_mobile(cmd.mobile, "mobile")
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        length = cmd.code_length or s.default_length
        if not MIN_CODE <= length <= MAX_CODE:
            violations.append(
                FieldViolation("code_length", f"must be {MIN_CODE} to {MAX_CODE} (0 means 6)")
            )
        minutes = cmd.expire_minutes or s.default_expire_minutes
        if not 1 <= minutes <= s.max_expire_minutes:
            violations.append(
                FieldViolation("expire_minutes", f"must be 1 to {s.max_expire_minutes} (0 means 5)")
            )
        if len(cmd.scene) > MAX_SCENE_CHARS or not cmd.scene.isprintable():
            violations.append(
                FieldViolation("scene", f"must be printable, at most {MAX_SCENE_CHARS} characters")
            )
        if cmd.code:
            if not (cmd.code.isascii() and cmd.code.isdigit()) or not (
                MIN_CODE <= len(cmd.code) <= MAX_CODE
            ):
                violations.append(
                    FieldViolation("code", f"must be {MIN_CODE} to {MAX_CODE} ASCII digits")
                )
            elif cmd.code_length and cmd.code_length != len(cmd.code):
                violations.append(
                    FieldViolation("code_length", "does not match the length of code")
                )
        if cmd.channel not in (Channel.UNSPECIFIED, Channel.SMS, Channel.VOICE):
            violations.append(FieldViolation("channel", "must be SMS or VOICE"))
        check_request_id(cmd.request_id, violations)
        check_reference(cmd.reference, cmd.metadata, violations)
        if violations:
            raise InvalidArgument(violations)

        channel = Channel.VOICE if cmd.channel == Channel.VOICE else Channel.SMS
        if channel == Channel.VOICE and not self._routes.places_calls(mobile):
            raise FailedPrecondition(
                "no configured provider can place voice calls to this number",
                reason="VOICE_UNAVAILABLE",
            )
        allowlist = check_allowlist(mobile, caller.otp_allowed_regions, s.guard.monitor_only)
        if allowlist.monitored:
            log.warning(
                "SMS-pumping guard (monitor only) would refuse a code for account %d: %s",
                caller.account_id,
                ", ".join(allowlist.monitored),
            )
        raise_if_blocked(allowlist)
        check_country(caller, mobile)
        body, template_code, template_data = await self._body(caller, cmd.template_id, minutes)

        code = cmd.code or generate_code(length)
        verify_id = "v_" + secrets.token_hex(12)
        now = self._clock()
        expires_at = now + timedelta(minutes=minutes)
        segments = count_segments(body.replace(CODE_MARK, "0" * len(code)))
        message = NewMessage(
            id=secrets.token_hex(16),
            account_id=caller.account_id,
            to_number=mobile,
            use_type=UseType.VERIFICATION,
            body=body,
            segments=segments,
            charge=charge_for(caller, self._prices(), mobile, segments),
            priority=Priority.VERIFICATION,
            not_before=now,
            template_id=cmd.template_id,
            template_code=template_code,
            template_data=template_data,
            channel=channel,
            sealed_code=self._codes.seal(code),
            reference=cmd.reference,
            metadata=dict(cmd.metadata) or None,
        )
        if not self._routes.can_carry(outbound(message, code)):
            what = "a voice call with this code" if channel == Channel.VOICE else "this code"
            raise no_route(f"{what} to this number")
        verification = NewVerification(
            id=verify_id,
            account_id=caller.account_id,
            mobile=mobile,
            scene=cmd.scene,
            channel=int(channel),
            code_hash=self._codes.digest(verify_id, code),
            attempts=caller.otp_max_attempts or s.default_max_attempts,
            expires_at=expires_at,
        )
        checks = list(guard_checks(caller.account_id, mobile, s.guard))
        if s.account_per_hour > 0:
            checks.insert(
                0, VelocityCheck(ACCOUNT_SCOPE, str(caller.account_id), 3600.0, s.account_per_hour)
            )
        key = None
        if cmd.request_id:
            key = IdempotencyKey(
                caller.account_id,
                "SendVerification",
                cmd.request_id,
                # A caller-chosen code is part of the content, but only as a hash.
                request_fingerprint(
                    mobile,
                    length,
                    minutes,
                    cmd.scene,
                    cmd.template_id,
                    int(channel),
                    self._codes.digest("request", cmd.code) if cmd.code else "",
                    # Only when given: keys stored before these existed keep their hash.
                    *(
                        (cmd.reference, sorted(cmd.metadata.items()))
                        if cmd.reference or cmd.metadata
                        else ()
                    ),
                ),
            )

        def judge_counts(results: Sequence[VelocityResult]) -> None:
            for result in results:
                if result.scope == ACCOUNT_SCOPE and result.exceeded:
                    raise ResourceExhausted(
                        f"this account may send at most {result.limit} verification codes per hour",
                        retry_after=result.retry_after(),
                        reason="ACCOUNT_HOURLY_LIMIT",
                        quota_subject=f"account:{caller.account_id}",
                        quota_description=f"at most {result.limit} verification codes an hour",
                    )
            decision = judge(
                [r for r in results if r.scope != ACCOUNT_SCOPE], monitor_only=s.guard.monitor_only
            )
            if decision.monitored:
                log.warning(
                    "SMS-pumping guard (monitor only) would refuse a code for account %d: %s",
                    caller.account_id,
                    ", ".join(decision.monitored),
                )
            raise_if_blocked(decision)

        stored = await self._store.create(
            verification,
            message,
            mobile_interval=s.mobile_interval_seconds,
            checks=checks,
            judge=judge_counts,
            key=key,
            caps=DailyCaps.of(caller),
        )
        self._on_accepted()
        log.debug(
            "verification code accepted",
            extra={"verify_id": stored.id, "message_id": stored.message_id},
        )
        return SentVerification(stored.id, stored.expires_at, stored.message_id)

    async def _body(
        self, caller: Caller, template_id: int | None, minutes: int
    ) -> tuple[str, str | None, dict[str, str] | None]:
        """The message text with CODE_MARK where the code goes (and template values)."""
        if template_id is None:
            return DEFAULT_TEXT.format(minutes=minutes), None, None
        template = await self._templates.get(caller.account_id, template_id)
        if template is None:
            raise NotFound(f"template {template_id} not found", reason="TEMPLATE_NOT_FOUND")
        if "code" not in template.variables:
            raise InvalidArgument.field(
                "template_id", "the template must contain the #code# variable"
            )
        unknown = [v for v in template.variables if v not in TEMPLATE_VALUES]
        if unknown:
            raise InvalidArgument.field(
                "template_id",
                f"a verification template may use only {', '.join(TEMPLATE_VALUES)}; "
                f"it uses {', '.join(unknown)}",
            )
        values = {v: (CODE_MARK if v == "code" else str(minutes)) for v in template.variables}
        return (
            render(ParsedTemplate(template.content, template.variables), values),
            (template.code),
            values,
        )

    async def check(
        self, caller: Caller, verify_id: str, mobile: str, code: str
    ) -> CheckedVerification:
        violations: list[FieldViolation] = []
        check_id(verify_id, "verify_id", violations)
        normalized = ""
        try:
            normalized = normalize_mobile(mobile, "mobile")
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        if not (code.isascii() and code.isdigit() and 1 <= len(code) <= MAX_CODE):
            violations.append(FieldViolation("code", f"must be 1 to {MAX_CODE} ASCII digits"))
        if violations:
            raise InvalidArgument(violations)
        outcome = await self._store.check(
            caller.account_id,
            verify_id,
            normalized,
            self._codes.digest(verify_id, code),
        )
        match outcome.result:
            case CheckResult.NOT_FOUND:
                raise NotFound("verification not found", reason="VERIFICATION_NOT_FOUND")
            case CheckResult.EXPIRED:
                raise FailedPrecondition("verification code expired", reason="CODE_EXPIRED")
            case CheckResult.EXHAUSTED:
                raise FailedPrecondition("verification code exhausted", reason="CODE_EXHAUSTED")
            case CheckResult.ALREADY_VERIFIED:
                raise FailedPrecondition(
                    "verification code already used", reason="CODE_ALREADY_USED"
                )
            case CheckResult.VALID:
                return CheckedVerification(True, 0, State.VERIFIED)
        return CheckedVerification(False, outcome.attempts_left, outcome.state)
