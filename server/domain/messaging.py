"""Single sends and status queries: validation, rendering, idempotency, storage."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from server.domain.caller_refs import check_reference, check_validity
from server.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from server.domain.fields import check_ids, check_text
from server.domain.guardrails import DailyCaps, charge_for, check_country
from server.domain.models import (
    CODE_MARK,
    MessageState,
    MessageStatus,
    NewMessage,
    OutboundMessage,
    Priority,
    UseType,
)
from server.domain.phones import normalize_mobile
from server.domain.ports import IdempotencyKey, MessageRepository, Routes, TemplateRepository
from server.domain.quiet_hours import QuietHours
from server.domain.segments import count_segments
from server.domain.smart_encoding import smart_encode
from server.domain.template_text import ParsedTemplate, render, validate_values

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 460
MAX_REQUEST_ID_CHARS = 128
MAX_SCHEDULE_AHEAD = timedelta(days=30)
MAX_STATUS_IDS = 100


@dataclass(frozen=True)
class Caller:
    """The authenticated account making a call."""

    account_id: int
    verified: bool
    otp_max_attempts: int | None = None  # None: the server's default
    otp_allowed_regions: frozenset[str] | None = None  # None: every country
    quiet_hours: QuietHours | None = None  # marketing is held during these windows
    send_per_second: float | None = None  # None: the server's default rate
    query_per_second: float | None = None
    admin: bool = False  # an operator's credential: may call AccountService
    allowed_countries: frozenset[str] | None = None  # every use type; None: all
    daily_message_cap: int | None = None  # messages accepted per UTC day
    per_mobile_daily_cap: int | None = None  # ... to one mobile
    prepaid: bool = False  # a balance is charged for each message accepted

    def marketing_release(self, use_type: UseType, to_number: str, due: datetime) -> datetime:
        """When a message may go: marketing waits for the recipient's quiet hours to end."""
        if use_type != UseType.MARKETING or self.quiet_hours is None:
            return due
        return self.quiet_hours.release(to_number, due)


@dataclass(frozen=True)
class SendCommand:
    mobile: str
    use_type: UseType
    text: str | None = None
    template_id: int | None = None
    data: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""
    send_at: datetime | None = None
    reference: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    validity: timedelta | None = None
    smart_encoding: bool = False


@dataclass(frozen=True)
class SendResult:
    id: str
    to_number: str
    status: MessageStatus
    segments: int


def new_message_id() -> str:
    return uuid.uuid4().hex


def outbound(message: NewMessage, code: str | None = None) -> OutboundMessage:
    """The message as the dispatcher will hand it to a transport (for ``Routes``)."""
    body, data = message.body, dict(message.template_data or {})
    if code is not None:
        body = body.replace(CODE_MARK, code)
        data = {k: code if v == CODE_MARK else v for k, v in data.items()}
    return OutboundMessage(
        id=message.id,
        account_id=message.account_id,
        to_number=message.to_number,
        body=body,
        use_type=message.use_type,
        attempts=0,
        template_id=message.template_id,
        template_code=message.template_code,
        data=data,
        # template_data is built in the template's variable order (dicts keep it):
        # what the dispatcher reads from the template at claim time.
        variables=tuple(data),
        channel=message.channel,
        code=code,
    )


def no_route(what: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"no configured route can carry {what}; nothing was stored", reason="NO_ROUTE"
    )


def check_request_id(request_id: str, violations: list[FieldViolation]) -> None:
    check_text(request_id, "request_id", MAX_REQUEST_ID_CHARS, violations)


def check_use_type(use_type: UseType, caller: Caller, violations: list[FieldViolation]) -> None:
    if use_type not in (UseType.VERIFICATION, UseType.NOTIFICATION, UseType.MARKETING):
        violations.append(FieldViolation("use_type", "a use type is required"))
    elif not caller.verified and use_type != UseType.VERIFICATION:
        raise PermissionDenied(
            "accounts that are not real-name verified can send only verification messages",
            reason="ACCOUNT_NOT_VERIFIED",
        )


def request_fingerprint(*parts: object) -> bytes:
    """A stable hash of a request's content, to tell a retry from a reused key."""
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


class Messaging:
    def __init__(
        self,
        messages: MessageRepository,
        templates: TemplateRepository,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_accepted: Callable[[], None] = lambda: None,
        mobile_intervals: Mapping[UseType, float] | None = None,
        routes: Routes | None = None,
        prices: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self._messages = messages
        # Per-segment prices by region, as the routing file gives them now.
        self._prices = prices
        # None: every message is taken (dispatch alone decides).
        self._routes = routes
        self._templates = templates
        self._clock = clock
        self._on_accepted = on_accepted
        # Seconds between two messages of a use type to one mobile (0 or absent: none).
        self._mobile_intervals = dict(mobile_intervals or {})

    async def send(self, caller: Caller, cmd: SendCommand) -> SendResult:
        violations: list[FieldViolation] = []
        to_number = ""
        try:
            to_number = normalize_mobile(cmd.mobile, "mobile")
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        check_use_type(cmd.use_type, caller, violations)
        check_request_id(cmd.request_id, violations)
        check_reference(cmd.reference, cmd.metadata, violations)
        check_validity(cmd.validity, violations)
        now = self._clock()
        not_before = now
        if cmd.send_at is not None:
            if cmd.send_at > now + MAX_SCHEDULE_AHEAD:
                violations.append(
                    FieldViolation("send_at", "must be at most 30 days in the future")
                )
            not_before = max(now, cmd.send_at)
        body = ""
        if cmd.text is not None:
            if cmd.data:
                violations.append(FieldViolation("data", "data is only used with template_id"))
            if not cmd.text.strip():
                violations.append(FieldViolation("text", "must not be empty"))
            else:
                check_text(cmd.text, "text", MAX_TEXT_CHARS, violations)
            body = cmd.text
        elif cmd.template_id is None:
            violations.append(FieldViolation("text", "text or template_id is required"))
        if violations:
            raise InvalidArgument(violations)
        check_country(caller, to_number)

        template_code: str | None = None
        template_data: dict[str, str] | None = None
        if cmd.template_id is not None:
            template = await self._templates.get(caller.account_id, cmd.template_id)
            if template is None:
                raise NotFound(f"template {cmd.template_id} not found", reason="TEMPLATE_NOT_FOUND")
            parsed = ParsedTemplate(template.content, template.variables)
            validate_values(cmd.data, parsed.variables, "data")
            body = render(parsed, cmd.data)
            template_code = template.code
            template_data = {name: cmd.data[name] for name in parsed.variables}

        if cmd.smart_encoding:
            body = smart_encode(body)
        segments = count_segments(body)
        message = NewMessage(
            id=new_message_id(),
            account_id=caller.account_id,
            to_number=to_number,
            use_type=cmd.use_type,
            body=body,
            segments=segments,
            priority=Priority.VERIFICATION
            if cmd.use_type == UseType.VERIFICATION
            else Priority.SINGLE,
            not_before=caller.marketing_release(cmd.use_type, to_number, not_before),
            template_id=cmd.template_id,
            template_code=template_code,
            template_data=template_data,
            reference=cmd.reference,
            metadata=dict(cmd.metadata) or None,
            expires_at=now + cmd.validity if cmd.validity is not None else None,
            charge=charge_for(caller, self._prices(), to_number, segments),
        )
        if self._routes is not None and not self._routes.can_carry(outbound(message)):
            raise no_route("this message (its number, use type and content)")
        interval = self._mobile_intervals.get(cmd.use_type, 0.0)
        caps = DailyCaps.of(caller)
        key: IdempotencyKey | None = None
        if cmd.request_id:
            key = IdempotencyKey(
                account_id=caller.account_id,
                operation="SendMessage",
                request_id=cmd.request_id,
                request_hash=request_fingerprint(
                    to_number,
                    int(cmd.use_type),
                    cmd.text,
                    cmd.template_id,
                    sorted(cmd.data.items()),
                    cmd.send_at.isoformat() if cmd.send_at else None,
                    # Only when given: keys stored before these options keep their hash.
                    *(
                        (
                            cmd.reference,
                            sorted(cmd.metadata.items()),
                            cmd.validity.total_seconds() if cmd.validity else None,
                            cmd.smart_encoding,
                        )
                        if cmd.reference or cmd.metadata or cmd.validity or cmd.smart_encoding
                        else ()
                    ),
                ),
            )
        if key is not None or interval > 0 or caps.active or message.charge:
            earlier_id = await self._messages.insert_idempotent(
                message, key, interval, caps if caps.active else None
            )
            if earlier_id is not None:
                states = await self._messages.get_states(caller.account_id, [earlier_id])
                if states:
                    first = states[0]
                    return SendResult(
                        first.id, first.to_number, MessageStatus.PENDING, first.segments
                    )
        else:
            await self._messages.insert(message)
        self._on_accepted()
        log.debug("message accepted", extra={"message_id": message.id})
        return SendResult(message.id, to_number, MessageStatus.PENDING, segments)

    async def get_status(
        self, caller: Caller, ids: Sequence[str]
    ) -> tuple[list[MessageState], list[str]]:
        if not ids:
            raise InvalidArgument.field("ids", "at least one id is required")
        if len(ids) > MAX_STATUS_IDS:
            raise InvalidArgument.field("ids", f"at most {MAX_STATUS_IDS} ids per request")
        violations: list[FieldViolation] = []
        check_ids(ids, "ids", violations)
        if violations:
            raise InvalidArgument(violations)
        unique = list(dict.fromkeys(ids))
        states = await self._messages.get_states(caller.account_id, unique)
        by_id = {s.id: s for s in states}
        found = [by_id[i] for i in unique if i in by_id]
        missing = [i for i in unique if i not in by_id]
        return found, missing
