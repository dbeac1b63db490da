"""What the operator console reads (sms.v1.ConsoleService): batches newest first, a
search over messages by id, batch id, number or caller reference, one message's
history.

Tenant isolation is decided here, once: a credential reads its own account; an admin
credential reads every account, or one it names. The store is given the scope (an
account id, or None for every account) and nothing else decides it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from server.domain.batch_tasks import BatchRecord
from server.domain.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from server.domain.messaging import Caller
from server.domain.models import MessageState, StatusEvent, UseType
from server.domain.pagination import decode_page_token, encode_page_token, page_size
from server.domain.phones import normalize_any_spelling

MAX_QUERY_CHARS = 128
# Searches by number or reference read the messages table without an index: at most
# this many at once per server (every account together), the others are refused.
MAX_SCANS = 2
SCAN_RETRY_SECONDS = 1.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class AccountBatch:
    account_id: int
    batch: BatchRecord


@dataclass(frozen=True)
class ConsoleMessage:
    account_id: int
    state: MessageState
    batch_id: str | None
    created_at: datetime
    sent_at: datetime | None
    attempts: int
    use_type: UseType


@dataclass(frozen=True)
class BatchesPage:
    batches: list[AccountBatch]
    next_page_token: str


class ConsoleRepository(Protocol):
    async def batches_before(
        self, scope: int | None, before: tuple[datetime, str] | None, limit: int
    ) -> list[AccountBatch]:
        """Batches of the account ``scope`` (None: every account), newest first,
        strictly older than ``before`` (created_at, id) when given."""

    async def message(self, scope: int | None, message_id: str) -> ConsoleMessage | None: ...

    async def batch_messages(
        self, scope: int | None, batch_id: str, limit: int
    ) -> list[ConsoleMessage]:
        """The first ``limit`` messages of the batch (none if out of scope), by id."""

    async def messages_matching(
        self, scope: int | None, number: str, reference: str, limit: int
    ) -> list[ConsoleMessage]:
        """Messages to ``number`` or with the caller reference ``reference``, newest
        first (a scan: FailedPrecondition SEARCH_TOO_SLOW if it takes too long)."""

    async def events(self, message_id: str) -> list[StatusEvent]:
        """Every event of the message, oldest first."""


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


class ConsoleViews:
    def __init__(self, repository: ConsoleRepository, *, max_scans: int = MAX_SCANS) -> None:
        self._repository = repository
        self._scans = asyncio.Semaphore(max_scans)

    async def batches(
        self, caller: Caller, requested_size: int, token: str, account_id: int = 0
    ) -> BatchesPage:
        size = page_size(requested_size)
        scope = _scope(caller, account_id)
        token_scope = f"console-batches:{caller.account_id}:{scope}"
        before: tuple[datetime, str] | None = None
        if token:
            micros, last_id = decode_page_token(token, token_scope, shape=(int, str))
            before = (_EPOCH + timedelta(microseconds=int(micros)), str(last_id))
        rows = await self._repository.batches_before(scope, before, size + 1)
        next_token = ""
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1].batch
            next_token = encode_page_token(token_scope, [_micros(last.created_at), last.id])
        return BatchesPage(rows, next_token)

    async def search(
        self, caller: Caller, query: str, requested_size: int, account_id: int = 0
    ) -> list[ConsoleMessage]:
        text = query.strip()
        if not text:
            raise InvalidArgument.field(
                "query", "required: a message id, batch id, number or reference"
            )
        if len(text) > MAX_QUERY_CHARS or "\x00" in text:
            raise InvalidArgument.field(
                "query", f"at most {MAX_QUERY_CHARS} characters, without NUL"
            )
        size = page_size(requested_size)
        scope = _scope(caller, account_id)
        # By the indexes first: a message id, a batch id; then the scan.
        by_id = await self._repository.message(scope, text)
        if by_id is not None:
            return [by_id]
        in_batch = await self._repository.batch_messages(scope, text, size)
        if in_batch:
            return in_batch
        if self._scans.locked():
            raise ResourceExhausted(
                "searches by number or reference are all busy on this server",
                retry_after=SCAN_RETRY_SECONDS,
                reason="SEARCH_BUSY",
            )
        async with self._scans:
            return await self._repository.messages_matching(scope, _as_number(text), text, size)

    async def history(
        self, caller: Caller, message_id: str
    ) -> tuple[ConsoleMessage, list[StatusEvent]]:
        if not message_id or len(message_id) > MAX_QUERY_CHARS or "\x00" in message_id:
            raise InvalidArgument.field("id", "required: a message id")
        message = await self._repository.message(_scope(caller, 0), message_id)
        if message is None:
            raise NotFound(f"message {message_id!r} not found", reason="MESSAGE_NOT_FOUND")
        return message, await self._repository.events(message_id)


def _as_number(text: str) -> str:
    """An international number in any common spelling (``+86 138-0013-8000``) as the
    E.164 form messages store; any other text as it is (a reference)."""
    if not text.startswith(("+", "00")):
        return text
    try:
        return normalize_any_spelling(text, "query", None)
    except InvalidArgument:
        return text


def _scope(caller: Caller, account_id: int) -> int | None:
    """The account a caller may read: its own; an admin's, any (None: all)."""
    if account_id < 0:
        raise InvalidArgument.field("account_id", "must not be negative")
    if caller.admin:
        return account_id or None
    if account_id not in (0, caller.account_id):
        raise PermissionDenied(
            "only an admin credential may read another account", reason="ADMIN_REQUIRED"
        )
    return caller.account_id
