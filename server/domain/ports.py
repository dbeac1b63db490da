"""The interfaces the domain needs from the outside world (adapters implement them)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from server.domain.models import (
    Credential,
    MessageState,
    MessageStatus,
    NewMessage,
    OutboundMessage,
    StatusEvent,
    Template,
    UseType,
)

if TYPE_CHECKING:
    from server.domain.guardrails import DailyCaps


class CredentialRepository(Protocol):
    async def get_credential(self, api_key: str) -> Credential | None: ...


@dataclass(frozen=True)
class IdempotencyKey:
    account_id: int
    operation: str
    request_id: str
    request_hash: bytes


class MessageRepository(Protocol):
    async def insert(self, message: NewMessage) -> None:
        """Stores a PENDING message and its first status event; durable on return.
        Both inserts raise FailedPrecondition (RECIPIENT_SUPPRESSED), storing nothing,
        when the account suppressed the number for the message's use type."""
        ...

    async def insert_idempotent(
        self,
        message: NewMessage,
        key: IdempotencyKey | None,
        mobile_interval: float = 0.0,
        caps: DailyCaps | None = None,
    ) -> str | None:
        """Stores the message unless ``key`` was used within the window, in one
        transaction with the mobile's send interval when ``mobile_interval`` > 0.

        Returns None when stored, or the id of the message stored for the earlier
        request. Raises FailedPrecondition when the key came with other content, and
        ResourceExhausted when the mobile had a message of this use type too recently.
        """
        ...

    async def get_states(self, account_id: int, ids: Sequence[str]) -> list[MessageState]: ...


class TemplateRepository(Protocol):
    async def create(
        self, account_id: int, code: str, content: str, use_type: UseType, variables: Sequence[str]
    ) -> Template: ...

    async def get(self, account_id: int, template_id: int) -> Template | None: ...

    async def list_page(
        self, account_id: int, after_id: int, limit: int
    ) -> tuple[list[Template], int]: ...

    async def delete(self, account_id: int, template_id: int) -> bool: ...


@dataclass(frozen=True)
class SendOutcome:
    """What a transport says about one send attempt.

    accepted: the provider took the message (provider_message_id identifies it there).
    Otherwise: retryable (5xx, timeout, connection error, garbage, throttling) or a
    final refusal (bad number, bad credentials, unknown template, ...) with
    ``final_status`` FAILED or REJECTED. ``error_code`` keeps the provider's code
    (e.g. "412", "HTTP_503", "TIMEOUT") so callers see why.
    """

    accepted: bool
    provider_message_id: str = ""
    error_code: str = ""
    retryable: bool = False
    final_status: MessageStatus = MessageStatus.FAILED
    # For retryable refusals with a known wait (a provider's rate limit): the
    # earliest sensible retry on this provider, in seconds.
    retry_after: float = 0.0
    # A SuppressionReason number for a final refusal that says the recipient must not
    # be sent to again (Twilio 21610: replied STOP): suppressed with the refusal.
    suppress: int = 0


@dataclass(frozen=True)
class ProviderRef:
    """A message as the provider knows it, for status queries."""

    message_id: str
    provider_message_id: str


@dataclass(frozen=True)
class Receipt:
    """A delivery report from a provider.

    ``message_id`` is ours when the transport knows it (status queries); a webhook
    receipt may carry only ``provider_message_id`` and is matched (or parked until
    the send is recorded) by the receipt recorder.
    """

    provider: str
    message_id: str
    status: MessageStatus
    error_code: str = ""
    provider_message_id: str = ""
    # A SuppressionReason number when the receipt says the recipient must not be sent
    # to again (unsubscribed, blocked): the number is suppressed with the receipt.
    suppress: int = 0


class ReceiptSink(Protocol):
    async def __call__(self, receipt: Receipt) -> None: ...


@dataclass(frozen=True)
class Capabilities:
    """What a provider can carry."""

    free_text: bool
    templates: bool
    voice: bool = False
    # Most ids a status query takes at once (0: the provider has no status query).
    max_status_ids: int = 100


class Transport(Protocol):
    """One upstream provider API."""

    name: str
    capabilities: Capabilities

    def can_carry(self, message: OutboundMessage) -> bool:
        """False when sending would need something this provider lacks (for example
        free text to a template-only provider, or a template with no provider id)."""
        ...

    async def send(self, message: OutboundMessage) -> SendOutcome: ...

    async def query_status(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        """Current statuses of up to ``capabilities.max_status_ids`` messages; those the
        provider has not settled yet may be left out. Raises ProviderError when the
        query itself fails."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class VoiceTransport(Protocol):
    """A transport that can read a verification code to the user by phone."""

    async def send_voice(self, message: OutboundMessage, code: str) -> SendOutcome: ...


@runtime_checkable
class BulkTransport(Protocol):
    """A transport whose provider takes many recipients in one request (issue 15):
    Skynoo's ``batch/create`` (per-number ``templateData``), SendCloud's ``send`` (up to
    2,000 phones sharing one content).

    The dispatcher groups the messages of a claim whose ``bulk_key`` is equal and not
    None (at most ``max_bulk`` per request, each mobile at most once per request) and
    hands each group to ``send_bulk``; a message whose key is None goes through
    ``send`` alone. Routing, breakers, rate tokens (one per request) and the lease
    apply to the request as a whole.
    """

    max_bulk: int

    def bulk_key(self, message: OutboundMessage) -> Hashable | None:
        """Messages with the same key may share one request (same template/content,
        use type, ...); None: this message goes alone."""
        ...

    async def send_bulk(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        """One outcome per message, in the order given. A request that failed as a
        whole answers the same retryable (or final) outcome for each message; a
        provider's per-number refusal answers that message alone. Sending the same
        group again after a lost answer must not reach a recipient twice where the
        provider offers a way to prevent it (SendCloud's ``sendRequestId``)."""
        ...


class Routes(Protocol):
    """What routing can already tell at call time (issue 15, item 5): a message no
    route can carry is refused at the call (FAILED_PRECONDITION, reason NO_ROUTE),
    never accepted and then failed at dispatch."""

    def can_carry(self, message: OutboundMessage) -> bool:
        """Whether some provider of the message's route could send it."""
        ...

    def can_carry_batch(self, messages: Sequence[OutboundMessage]) -> list[bool]:
        """``can_carry`` for each message, in order."""
        ...

    def can_carry_to(self, message: OutboundMessage, numbers: Sequence[str]) -> list[bool]:
        """``can_carry_batch`` for ``message`` sent to each of ``numbers`` instead."""
        ...

    def places_calls(self, mobile: str) -> bool:
        """Whether some provider routed for verification codes to ``mobile`` places
        voice calls at all."""
        ...


class ProviderError(Exception):
    """A provider call failed as a whole (status query, webhook parsing)."""


class EventLog(Protocol):
    """The log of status changes (message_events) that streams read and replay. One
    account's event ids follow commit order: a reader of an account that has seen id
    N has seen every committed event of that account below N. (Across accounts they
    do not: never follow two accounts with one cursor.)"""

    async def last_event_id(self, account_id: int) -> int:
        """The account's newest event's id (0: none yet)."""
        ...

    async def accounts_after(
        self, cursors: Mapping[int, int], limit: int
    ) -> dict[int, list[StatusEvent]]:
        """For each account, its events after its own cursor (at most ``limit``)."""
        ...

    async def events_after(
        self, account_id: int, after_event_id: int, ids: Sequence[str] | None, limit: int
    ) -> list[StatusEvent]:
        """One account's events after the cursor, in id order, optionally only for ``ids``."""
        ...

    async def count_after(
        self, account_id: int, after_event_id: int, ids: Sequence[str] | None, limit: int
    ) -> int:
        """How many events ``events_after`` would return, counting at most ``limit``."""
        ...

    async def latest_per_message(self, account_id: int, ids: Sequence[str]) -> list[StatusEvent]:
        """Each message's newest event: its current state with the event id that set it."""
        ...


@dataclass(frozen=True)
class ClaimedMessage:
    """A due message the dispatcher holds under a lease."""

    message: OutboundMessage
    priority: int
    created_at: datetime
    # A verification code not in the message: still sealed as the store keeps it,
    # or sealed under a key this server does not have. outbox_codes.open_claimed
    # opens it into the message (whose text holds CODE_MARK where it goes).
    code_unavailable: bool = False
    sealed_code: bytes | None = field(default=None, repr=False)
    # The caller's validity: not handed to a provider by then, it ends EXPIRED
    # (None: the server's message TTL from created_at).
    expires_at: datetime | None = None
    # The account suppressed the number (for this use type) after accepting it.
    suppressed: bool = False


@dataclass(frozen=True)
class Transition:
    """A status change for one message (dispatch outcome, retry or receipt)."""

    message_id: str
    status: MessageStatus
    error_code: str = ""
    provider: str = ""
    provider_message_id: str | None = None
    not_before: datetime | None = None
    # False: no provider was asked (every breaker open), so the claim's attempt is
    # given back; a message must not run out of attempts while it cannot be tried.
    attempted: bool = True
    # A SuppressionReason number: the number is suppressed with this change (receipts).
    suppress: int = 0


@dataclass(frozen=True)
class ProviderReceipt:
    """A receipt known only by the provider's message id (a webhook's)."""

    provider: str
    provider_message_id: str
    status: MessageStatus
    error_code: str = ""
    suppress: int = 0  # as Receipt.suppress


class Outbox(Protocol):
    """Accepted messages waiting to be sent, as the dispatcher sees them."""

    async def claim_due(
        self,
        limit: int,
        lease_seconds: float,
        *,
        urgent_only: bool = False,
        urgent_grace: float = 0.0,
    ) -> list[ClaimedMessage]:
        """Up to ``limit`` due messages (verification codes and single sends first),
        each leased for ``lease_seconds``: no other worker claims it meanwhile. With
        ``urgent_only``, codes and single sends alone (no batch message); with
        ``urgent_grace``, codes and single sends due for less than that many seconds
        are left out (to the workers that claim only them)."""
        ...

    async def apply(self, transitions: Sequence[Transition]) -> None:
        """Records status changes in one transaction, each with its event, in order."""
        ...

    async def release(self, message_ids: Sequence[str]) -> None:
        """Gives claimed messages back (on shutdown) so another worker can take them now."""
        ...


class ReceiptOutbox(Protocol):
    """Where delivery receipts are recorded."""

    async def apply(self, transitions: Sequence[Transition]) -> None:
        """Records status changes in one transaction, each with its event, in order."""
        ...

    async def apply_provider_receipts(self, receipts: Sequence[ProviderReceipt]) -> int:
        """Records receipts known only by provider id; parks those not matched yet.
        Returns how many matched a message."""
        ...


class PolledOutbox(Protocol):
    """Sent messages waiting for a receipt, as the receipt poller sees them."""

    async def due_for_poll(
        self, provider: str, min_age: float, repoll_after: float, limit: int
    ) -> list[tuple[str, str]]:
        """SENT messages of a provider to ask about, as (message id, provider id)."""
        ...

    async def unpark_matched(self) -> int:
        """Applies parked receipts whose send has been recorded meanwhile."""
        ...

    async def expire_unreceipted(self, deadline_seconds: float, limit: int) -> int:
        """Ends SENT messages with no receipt for ``deadline_seconds`` as UNDELIVERED
        (NO_RECEIPT); returns how many."""
        ...
