"""An account's events other than message status changes, as webhooks carry them:
batch status changes, verification outcomes (never a verification's code), inbound
messages and the suppressions their keywords change."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from server.domain.inbound import InboundMessage
from server.domain.models import BatchStatus, VerificationState


@dataclass(frozen=True)
class BatchStatusChange:
    event_id: int
    batch_id: str
    account_id: int
    status: BatchStatus
    total: int
    sent: int
    delivered: int
    failed: int
    occurred_at: datetime
    reference: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VerificationOutcome:
    event_id: int
    verify_id: str
    account_id: int
    state: VerificationState
    mobile: str
    message_id: str
    scene: str
    occurred_at: datetime
    reference: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundReceived:
    """A recipient's message (its event id is the message's)."""

    event_id: int
    account_id: int
    message: InboundMessage
    occurred_at: datetime


@dataclass(frozen=True)
class KeywordSuppression:
    """A number suppressed (STOP) or released (START) by a recipient's keyword."""

    event_id: int
    account_id: int
    mobile: str
    suppressed: bool
    inbound_message_id: str
    occurred_at: datetime
