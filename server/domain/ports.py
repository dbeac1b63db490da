"""The interfaces the domain needs from the outside world (adapters implement them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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
        """Stores a PENDING message and its first status event; durable on return."""
        ...

    async def insert_idempotent(self, message: NewMessage, key: IdempotencyKey) -> str | None:
        """Stores the message unless ``key`` was used within the window.

        Returns None when stored, or the id of the message stored for the earlier
        request. Raises FailedPrecondition when the key came with other content.
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
    """What a transport says about one send attempt."""

    accepted: bool
    provider_message_id: str = ""
    error_code: str = ""
    retryable: bool = False
    final_status: MessageStatus = MessageStatus.FAILED


@dataclass(frozen=True)
class Receipt:
    """A delivery report from a provider."""

    provider: str
    message_id: str
    status: MessageStatus
    error_code: str = ""


class ReceiptSink(Protocol):
    async def __call__(self, receipt: Receipt) -> None: ...


class Transport(Protocol):
    """One upstream provider API."""

    name: str

    async def send(self, message: OutboundMessage) -> SendOutcome: ...

    async def close(self) -> None: ...


class EventSource(Protocol):
    async def events_after(
        self, account_id: int, after_event_id: int, ids: Sequence[str] | None, limit: int
    ) -> list[StatusEvent]: ...
