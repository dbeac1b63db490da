"""Domain records and enums. Enum numbers equal the sms.v1 proto numbers."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from server.domain.quiet_hours import QuietHours


class UseType(enum.IntEnum):
    UNSPECIFIED = 0
    VERIFICATION = 1
    NOTIFICATION = 2
    MARKETING = 3


class MessageStatus(enum.IntEnum):
    UNSPECIFIED = 0
    PENDING = 1
    QUEUED = 2
    SENT = 3
    DELIVERED = 4
    UNDELIVERED = 5
    FAILED = 6
    REJECTED = 7
    CANCELLED = 8

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        MessageStatus.DELIVERED,
        MessageStatus.UNDELIVERED,
        MessageStatus.FAILED,
        MessageStatus.REJECTED,
        MessageStatus.CANCELLED,
    }
)


# Stands for a verification code in a stored message body or template values; the
# real code is put in when the message is handed to a provider.
CODE_MARK = "#code#"


class Channel(enum.IntEnum):
    UNSPECIFIED = 0
    SMS = 1
    VOICE = 2


class VerificationState(enum.IntEnum):
    UNSPECIFIED = 0
    PENDING = 1
    VERIFIED = 2
    EXPIRED = 3
    EXHAUSTED = 4


class Priority(enum.IntEnum):
    """Dispatch order: lower first. A running batch never delays a code."""

    VERIFICATION = 0
    SINGLE = 1
    BATCH = 2


class BatchStatus(enum.IntEnum):
    UNSPECIFIED = 0
    PENDING = 1
    EXECUTING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    verified: bool


@dataclass(frozen=True)
class Credential:
    id: int
    account_id: int
    api_key: str
    secret_hash: str
    allow_cidrs: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    account_verified: bool = True
    otp_max_attempts: int | None = None
    otp_allowed_regions: tuple[str, ...] | None = None
    quiet_hours: QuietHours | None = None
    send_per_second: float | None = None
    query_per_second: float | None = None
    admin: bool = False  # may call AccountService
    allowed_countries: tuple[str, ...] | None = None  # None: every country
    daily_message_cap: int | None = None
    per_mobile_daily_cap: int | None = None
    prepaid: bool = False  # the account has a balance (charged per message)


@dataclass(frozen=True)
class NewMessage:
    """A validated message ready to be stored as PENDING."""

    id: str
    account_id: int
    to_number: str
    use_type: UseType
    body: str
    segments: int
    priority: Priority
    not_before: datetime
    template_id: int | None = None
    batch_id: str | None = None
    # For template-only providers: our template code and the values, in the
    # template's variable order.
    template_code: str | None = None
    template_data: dict[str, str] | None = None
    channel: Channel = Channel.SMS
    # A verification code, sealed (encrypted); the body holds "#code#" in its place.
    sealed_code: bytes | None = field(default=None, repr=False)
    # The caller's own id and key-value pairs, echoed in status answers and events.
    reference: str = ""
    metadata: dict[str, str] | None = None
    # Not handed to a provider by then: FAILED / EXPIRED (None: the server's TTL).
    expires_at: datetime | None = None
    # What a prepaid account is charged for it (0: not charged).
    charge: int = 0


@dataclass(frozen=True)
class MessageState:
    id: str
    to_number: str
    status: MessageStatus
    error_code: str
    provider: str
    updated_at: datetime
    segments: int = 1
    reference: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusEvent:
    event_id: int
    message_id: str
    account_id: int
    to_number: str
    status: MessageStatus
    error_code: str
    batch_id: str | None
    occurred_at: datetime
    reference: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Template:
    id: int
    account_id: int
    code: str
    content: str
    use_type: UseType
    variables: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class OutboundMessage:
    """What a provider transport needs to send one claimed message."""

    id: str
    account_id: int
    to_number: str
    body: str = field(repr=False)  # may hold a verification code: never logged
    use_type: UseType
    attempts: int
    template_id: int | None = None
    # The caller's template code and variable values, for providers that send a
    # provider-side template (SendCloud, sendsms) instead of our rendered body.
    template_code: str | None = None
    data: dict[str, str] = field(default_factory=dict, repr=False)
    channel: Channel = Channel.SMS
    # The verification code this message carries (for voice calls and code APIs).
    code: str | None = field(default=None, repr=False)
    # Our template's variable names in their order of appearance in its text, and the
    # text itself: positional providers (sendsms p1..pn) take the values in this
    # order, never in the order ``data`` happens to hold them; bulk APIs that take
    # the template text with per-number values (Skynoo batch/create) send ``content``.
    variables: tuple[str, ...] = ()
    template_content: str | None = field(default=None, repr=False)
