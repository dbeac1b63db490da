"""In-memory fakes of the domain's ports, for unit tests of the use cases.

Like procrastinate's ``InMemoryConnector`` beside its PostgreSQL one, each fake keeps
the promises of its Protocol (server/domain/ports.py, VerificationRepository in
server/domain/verification.py, BatchRepository in server/domain/batch_tasks.py) as
the PostgreSQL adapter in server/store/ keeps them: a refused write stores nothing
(the adapters' transaction rolls back), a request_id is a key for an hour and
refused with other content, a mobile interval and the velocity counters are counted
on the store's clock. The tests in tests/integration run the adapters themselves
against PostgreSQL; these fakes let the use cases' branches run in milliseconds.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from server.domain.batch_tasks import (
    BatchMessageRow,
    BatchOptions,
    BatchRecord,
    EncodedSlice,
    StoredSlice,
)
from server.domain.errors import AlreadyExists, FailedPrecondition, ResourceExhausted
from server.domain.guardrails import DailyCaps
from server.domain.models import (
    MessageState,
    MessageStatus,
    NewMessage,
    OutboundMessage,
    Template,
    UseType,
    VerificationState,
)
from server.domain.otp_guard import VelocityCheck, VelocityResult
from server.domain.ports import IdempotencyKey
from server.domain.verification import (
    CheckOutcome,
    CheckResult,
    NewVerification,
    StoredVerification,
)

# As server/store/idempotency.py: a key is taken for an hour.
IDEMPOTENCY_WINDOW = timedelta(hours=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FakeClock:
    """The time as the fakes (and the use cases given it) see it; moved by hand."""

    def __init__(self, now: datetime = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class _Key:
    request_hash: bytes
    resource_id: str
    created_at: datetime


class IdempotencyKeys:
    """request_id keys (AIP-155) as server/store/idempotency.py keeps them."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._keys: dict[tuple[int, str, str], _Key] = {}

    def earlier(self, key: IdempotencyKey) -> str | None:
        """The resource of an earlier request with this key within the window, else
        None (the key is free); raises FailedPrecondition for other content."""
        found = self._keys.get((key.account_id, key.operation, key.request_id))
        if found is None or found.created_at < self._clock() - IDEMPOTENCY_WINDOW:
            return None
        if found.request_hash != key.request_hash:
            raise FailedPrecondition(
                "request_id was already used with different content", reason="REQUEST_ID_REUSED"
            )
        return found.resource_id

    def claim(self, key: IdempotencyKey, resource_id: str) -> None:
        self._keys[(key.account_id, key.operation, key.request_id)] = _Key(
            key.request_hash, resource_id, self._clock()
        )


@dataclass
class StoredMessage:
    message: NewMessage
    status: MessageStatus = MessageStatus.PENDING
    error_code: str = ""
    provider: str = ""
    updated_at: datetime = EPOCH
    # The status events recorded for it, in order (the first: PENDING).
    events: list[MessageStatus] = field(default_factory=list)


class InMemoryMessages:
    """A ``MessageRepository``: the outbox's rows and their first events in a dict."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.rows: dict[str, StoredMessage] = {}
        self.keys = IdempotencyKeys(self.clock)
        # (account, mobile, use type) → when its last message was accepted.
        self._last_sent: dict[tuple[int, str, UseType], datetime] = {}

    def store(self, message: NewMessage) -> None:
        """Stores a PENDING message with its first event (one transaction's worth)."""
        if message.id in self.rows:
            raise AssertionError(f"message id {message.id} stored twice")
        self.rows[message.id] = StoredMessage(
            message, updated_at=self.clock(), events=[MessageStatus.PENDING]
        )

    async def insert(self, message: NewMessage) -> None:
        self.store(message)

    async def insert_idempotent(
        self,
        message: NewMessage,
        key: IdempotencyKey | None,
        mobile_interval: float = 0.0,
        caps: DailyCaps | None = None,  # not held here (store/daily_caps.py, e2e tests)
    ) -> str | None:
        # Everything is checked before anything is written: a refusal stores nothing.
        if key is not None:
            earlier = self.keys.earlier(key)
            if earlier is not None:
                return earlier
        now = self.clock()
        slot = (message.account_id, message.to_number, message.use_type)
        if mobile_interval > 0:
            last = self._last_sent.get(slot)
            if last is not None and last > now - timedelta(seconds=mobile_interval):
                wait = (last + timedelta(seconds=mobile_interval) - now).total_seconds()
                raise ResourceExhausted(
                    "a message of this use type went to this mobile moments ago; "
                    "wait before another",
                    retry_after=min(max(wait, 0.001), mobile_interval),
                    reason="MOBILE_INTERVAL",
                    quota_subject=f"mobile:{message.to_number}",
                    quota_description=(
                        f"one {message.use_type.name.lower()} message every {mobile_interval:g} s"
                    ),
                )
            self._last_sent[slot] = now
        if key is not None:
            self.keys.claim(key, message.id)
        self.store(message)
        return None

    async def get_states(self, account_id: int, ids: Sequence[str]) -> list[MessageState]:
        return [
            MessageState(
                id=row.message.id,
                to_number=row.message.to_number,
                status=row.status,
                error_code=row.error_code,
                provider=row.provider,
                updated_at=row.updated_at,
                segments=row.message.segments,
            )
            for i in dict.fromkeys(ids)
            if (row := self.rows.get(i)) is not None and row.message.account_id == account_id
        ]


class InMemoryTemplates:
    """A ``TemplateRepository``: soft-deleted templates, codes unique among the live."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.rows: dict[int, Template] = {}
        self.deleted: set[int] = set()
        self._next_id = 1

    async def create(
        self, account_id: int, code: str, content: str, use_type: UseType, variables: Sequence[str]
    ) -> Template:
        if any(t.account_id == account_id and t.code == code for t in self._live()):
            raise AlreadyExists(
                f"a template with code {code!r} already exists", reason="TEMPLATE_CODE_TAKEN"
            )
        template = Template(
            self._next_id, account_id, code, content, use_type, tuple(variables), self.clock()
        )
        self.rows[template.id] = template
        self._next_id += 1
        return template

    async def get(self, account_id: int, template_id: int) -> Template | None:
        t = self.rows.get(template_id)
        if t is None or t.account_id != account_id or template_id in self.deleted:
            return None
        return t

    async def list_page(
        self, account_id: int, after_id: int, limit: int
    ) -> tuple[list[Template], int]:
        mine = [t for t in self._live() if t.account_id == account_id]
        return [t for t in mine if t.id > after_id][:limit], len(mine)

    async def delete(self, account_id: int, template_id: int) -> bool:
        if await self.get(account_id, template_id) is None:
            return False
        self.deleted.add(template_id)
        return True

    def _live(self) -> list[Template]:
        return [t for i, t in sorted(self.rows.items()) if i not in self.deleted]


class VelocityCounters:
    """Fixed-window counters aligned to the Unix epoch, as server/store/velocity.py."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.counts: dict[tuple[str, str, datetime, datetime], int] = {}

    def hit(self, checks: Sequence[VelocityCheck]) -> list[VelocityResult]:
        """Counts each check once; the caller keeps ``counts`` or puts it back."""
        now = self._clock()
        results = []
        for check in checks:
            width = timedelta(seconds=check.window_seconds)
            start = EPOCH + width * math.floor((now - EPOCH) / width)
            counter = (check.scope, check.key, start, start + width)
            self.counts[counter] = self.counts.get(counter, 0) + 1
            results.append(
                VelocityResult(
                    check.scope, check.key, self.counts[counter], check.limit, start + width, now
                )
            )
        return results


@dataclass
class StoredVerificationRow:
    verification: NewVerification
    message_id: str
    state: VerificationState = VerificationState.PENDING
    attempts_left: int = 0


class InMemoryVerifications:
    """A ``VerificationRepository``: verifications beside their outbox messages (kept
    in ``messages``), one code per mobile interval, the velocity counters."""

    def __init__(self, messages: InMemoryMessages) -> None:
        self.messages = messages
        self.clock = messages.clock
        self.rows: dict[str, StoredVerificationRow] = {}
        self.keys = IdempotencyKeys(self.clock)
        self.velocity = VelocityCounters(self.clock)
        self._last_code: dict[tuple[int, str], datetime] = {}

    async def create(
        self,
        verification: NewVerification,
        message: NewMessage,
        *,
        mobile_interval: float,
        checks: Sequence[VelocityCheck],
        judge: Callable[[Sequence[VelocityResult]], None],
        key: IdempotencyKey | None = None,
        caps: DailyCaps | None = None,  # not held here
    ) -> StoredVerification:
        if key is not None:
            earlier_id = self.keys.earlier(key)
            if earlier_id is not None:
                earlier = self.rows[earlier_id]
                return StoredVerification(
                    earlier_id, earlier.verification.expires_at, earlier.message_id
                )
        now = self.clock()
        slot = (verification.account_id, verification.mobile)
        if mobile_interval > 0:
            last = self._last_code.get(slot)
            if last is not None and last > now - timedelta(seconds=mobile_interval):
                wait = (last + timedelta(seconds=mobile_interval) - now).total_seconds()
                raise ResourceExhausted(
                    "a code was sent to this mobile moments ago; wait before another",
                    retry_after=max(1.0, wait),
                    reason="MOBILE_INTERVAL",
                    quota_subject=f"mobile:{verification.mobile}",
                    quota_description=f"one code every {mobile_interval:g} s",
                )
        if checks:
            # The counts stand only if the judge lets the send through (a rollback).
            before = dict(self.velocity.counts)
            try:
                judge(self.velocity.hit(checks))
            except BaseException:
                self.velocity.counts = before
                raise
        if mobile_interval > 0:
            self._last_code[slot] = now
        if key is not None:
            self.keys.claim(key, verification.id)
        self.messages.store(message)
        self.rows[verification.id] = StoredVerificationRow(
            verification, message.id, attempts_left=verification.attempts
        )
        return StoredVerification(verification.id, verification.expires_at, message.id)

    async def check(
        self, account_id: int, verify_id: str, mobile: str, candidate: bytes
    ) -> CheckOutcome:
        row = self.rows.get(verify_id)
        if row is None or row.verification.account_id != account_id:
            return CheckOutcome(CheckResult.NOT_FOUND)
        if row.verification.mobile != mobile:
            return CheckOutcome(CheckResult.NOT_FOUND)
        if row.state == VerificationState.VERIFIED:
            return CheckOutcome(CheckResult.ALREADY_VERIFIED, 0, row.state)
        if row.state == VerificationState.EXHAUSTED:
            return CheckOutcome(CheckResult.EXHAUSTED, 0, row.state)
        if row.state == VerificationState.EXPIRED:
            return CheckOutcome(CheckResult.EXPIRED, row.attempts_left, row.state)
        if row.verification.expires_at <= self.clock():
            row.state = VerificationState.EXPIRED
            return CheckOutcome(CheckResult.EXPIRED, row.attempts_left, row.state)
        row.attempts_left = max(row.attempts_left - 1, 0)
        if candidate == row.verification.code_hash:
            row.state = VerificationState.VERIFIED
            return CheckOutcome(CheckResult.VALID, 0, row.state)
        if row.attempts_left == 0:
            row.state = VerificationState.EXHAUSTED
        return CheckOutcome(CheckResult.INVALID, row.attempts_left, row.state)


# sms.v1 BatchStatus, as the batches table keeps it.
BATCH_PENDING, BATCH_EXECUTING, BATCH_FAILED, BATCH_CANCELLED = 1, 2, 4, 5


class InMemoryBatches:
    """A ``BatchRepository``: batch rows beside their messages (kept in ``messages``,
    as the batches' messages are rows of the one outbox)."""

    def __init__(self, messages: InMemoryMessages) -> None:
        self.messages = messages
        self.clock = messages.clock
        self.rows: dict[str, tuple[int, BatchRecord]] = {}  # id → (account, batch)
        self.contents: dict[str, str | None] = {}
        self.options: dict[str, BatchOptions] = {}
        self.keys = IdempotencyKeys(self.clock)
        # Keys of creates under way: a repeat waits for the first to end, as a row
        # claimed in an open transaction makes PostgreSQL's INSERT wait for its commit.
        self._claiming: dict[tuple[int, str, str], asyncio.Event] = {}

    async def create(
        self,
        batch_id: str,
        account_id: int,
        use_type: int,
        messages: AsyncIterable[StoredSlice],
        rejected: Sequence[tuple[str, str]],
        key: IdempotencyKey | None = None,
        content: str | None = None,
        options: BatchOptions | None = None,
        caps: DailyCaps | None = None,  # not held here
    ) -> BatchRecord:
        # As the adapter's transaction: the key first (a repeat reads no slice), then
        # every slice read before anything is kept, so a slice that raises (NO_ROUTE,
        # a failure) leaves neither the batch, its messages nor the key.
        if key is None:
            return await self._create(
                batch_id, account_id, messages, rejected, None, content, options
            )
        slot = (key.account_id, key.operation, key.request_id)
        while (under_way := self._claiming.get(slot)) is not None:
            await under_way.wait()
        earlier = self.keys.earlier(key)
        if earlier is not None:
            return self.rows[earlier][1]
        self._claiming[slot] = asyncio.Event()
        try:
            return await self._create(
                batch_id, account_id, messages, rejected, key, content, options
            )
        finally:
            self._claiming.pop(slot).set()

    async def _create(
        self,
        batch_id: str,
        account_id: int,
        messages: AsyncIterable[StoredSlice],
        rejected: Sequence[tuple[str, str]],
        key: IdempotencyKey | None,
        content: str | None,
        options: BatchOptions | None,
    ) -> BatchRecord:
        accepted: list[NewMessage] = []
        async for part in messages:
            # Rows encoded for PostgreSQL's COPY come from a preparation process only.
            assert not isinstance(part, EncodedSlice), "the fake stores messages, not rows"
            accepted.extend(part)
        if batch_id in self.rows or any(m.id in self.messages.rows for m in accepted):
            raise AssertionError(f"batch {batch_id} or one of its messages stored twice")
        now = self.clock()
        batch = BatchRecord(
            id=batch_id,
            status=BATCH_PENDING if accepted else BATCH_FAILED,
            total=len(accepted),
            sent=0,
            delivered=0,
            failed=0,
            cancelled=0,
            finished=0,
            created_at=now,
            updated_at=now,
            rejected=list(rejected),
            reference=options.reference if options else "",
            metadata=dict(options.metadata or {}) if options else {},
        )
        if key is not None:
            self.keys.claim(key, batch_id)
        for message in accepted:
            self.messages.store(message)
        self.rows[batch_id] = (account_id, batch)
        self.contents[batch_id] = content
        # What the batch keeps for its messages (reference, metadata, validity).
        self.options[batch_id] = options or BatchOptions()
        return batch

    async def get(self, account_id: int, batch_id: str) -> BatchRecord | None:
        found = self.rows.get(batch_id)
        return found[1] if found is not None and found[0] == account_id else None

    async def messages_page(
        self, batch_id: str, after_id: str, limit: int
    ) -> list[BatchMessageRow]:
        mine = sorted(
            (row for row in self.messages.rows.values() if row.message.batch_id == batch_id),
            key=lambda row: row.message.id,
        )
        return [
            BatchMessageRow(r.message.id, r.message.to_number, r.status, r.error_code, None)
            for r in mine
            if r.message.id > after_id
        ][:limit]

    async def cancel(self, account_id: int, batch_id: str) -> BatchRecord | None:
        """Cancels the batch's messages not yet sent (no worker holds any here)."""
        batch = await self.get(account_id, batch_id)
        if batch is None:
            return None
        if batch.status not in (BATCH_PENDING, BATCH_EXECUTING):
            return batch
        now = self.clock()
        waiting = [
            row
            for row in self.messages.rows.values()
            if row.message.batch_id == batch_id
            and row.status in (MessageStatus.PENDING, MessageStatus.QUEUED)
        ]
        for row in waiting:
            row.status = MessageStatus.CANCELLED
            row.updated_at = now
            row.events.append(MessageStatus.CANCELLED)
        batch = replace(
            batch,
            status=BATCH_CANCELLED,
            cancelled=batch.cancelled + len(waiting),
            finished=batch.finished + len(waiting),
            updated_at=now,
        )
        self.rows[batch_id] = (account_id, batch)
        return batch


class FakeRoutes:
    """``Routes`` that carry what ``carries`` says (everything by default) and place
    voice calls when ``voice`` is true; remembers what it was asked."""

    def __init__(
        self,
        carries: Callable[[OutboundMessage], bool] = lambda m: True,
        *,
        voice: bool = False,
    ) -> None:
        self._carries = carries
        self.voice = voice
        self.asked: list[OutboundMessage] = []

    def can_carry(self, message: OutboundMessage) -> bool:
        self.asked.append(message)
        return self._carries(message)

    def can_carry_batch(self, messages: Sequence[OutboundMessage]) -> list[bool]:
        return [self.can_carry(m) for m in messages]

    def can_carry_to(self, message: OutboundMessage, numbers: Sequence[str]) -> list[bool]:
        return [self.can_carry(replace(message, to_number=n)) for n in numbers]

    def places_calls(self, mobile: str) -> bool:
        return self.voice
