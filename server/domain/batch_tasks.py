"""Batch tasks (Skynoo batch APIs): create, status, paged detail, watch, cancel.

Numbers are validated one by one: invalid, duplicate or badly-filled ones come back
in ``rejected`` with a reason and the rest go on (SendCloud's partial success). All
accepted messages are stored in one transaction, so a failure stores nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, overload

from server.domain.batch_slots import BatchSlots, SlotLimits
from server.domain.caller_refs import check_reference, check_validity
from server.domain.errors import FieldViolation, InvalidArgument, NotFound
from server.domain.fields import (
    NUL_DESCRIPTION,
    at_most_reported,
    check_id,
    check_text,
    storable,
)
from server.domain.guardrails import (
    COUNTRY_BATCH_REASON,
    DailyCaps,
    country_allowed,
    price_of,
)
from server.domain.messaging import (
    MAX_SCHEDULE_AHEAD,
    Caller,
    check_request_id,
    check_use_type,
    no_route,
    outbound,
)
from server.domain.models import MessageStatus, NewMessage, Priority, UseType
from server.domain.number_judge import judge_numbers
from server.domain.pagination import decode_page_token, encode_page_token, page_size
from server.domain.ports import IdempotencyKey, Routes, TemplateRepository
from server.domain.segments import count_segments
from server.domain.smart_encoding import smart_encode
from server.domain.template_text import ParsedTemplate, parse_template, render, validate_values

log = logging.getLogger(__name__)

MAX_NUMBERS = 100_000
# A number as given (E.164 is at most 16 characters; room for spaces and dashes,
# which are then rejected one by one). Longer strings refuse the whole request.
MAX_NUMBER_CHARS = 64
# Problems of one rejected number given in its reason at most.
MAX_REASON_PROBLEMS = 3
FINAL_BATCH = frozenset({3, 4, 5})  # succeeded, failed, cancelled
WATCH_INTERVAL = 0.25  # at most four snapshots a second
INLINE_NUMBERS = 1_000  # larger batches are prepared in a worker thread
# Messages prepared and stored (COPY) at a time: a batch's memory does not grow
# with its size beyond the numbers themselves.
SLICE_NUMBERS = 5_000


@dataclass(frozen=True)
class CreateBatchCommand:
    use_type: UseType
    numbers: Sequence[str]
    content: str | None = None
    template_id: int | None = None
    template_data: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    request_id: str = ""
    send_at: datetime | None = None
    reference: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    validity: timedelta | None = None
    smart_encoding: bool = False
    # The request's wire bytes when ``numbers`` and ``template_data`` were not decoded
    # here (a large request: ``numbers`` then only counts them, ``template_data`` is
    # empty). Only a Preparer that can decode them takes such a command.
    wire: bytes | None = None


@dataclass(frozen=True)
class BatchOptions:
    """What a batch keeps for its messages: the caller's reference and metadata
    (every message of the batch answers with them), validity and smart encoding."""

    reference: str = ""
    metadata: Mapping[str, str] | None = None
    validity: timedelta | None = None
    smart_encoding: bool = False


@dataclass(frozen=True)
class BatchRecord:
    id: str
    status: int
    total: int
    sent: int
    delivered: int
    failed: int
    cancelled: int
    finished: int
    created_at: datetime
    updated_at: datetime
    rejected: list[tuple[str, str]]
    # The caller's, given at creation (every message of the batch carries them).
    reference: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchMessageRow:
    id: str
    to_number: str
    status: MessageStatus
    error_code: str
    sent_at: datetime | None


class BatchRepository(Protocol):
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
        caps: DailyCaps | None = None,
    ) -> BatchRecord:
        """Stores the batch row and every message of ``messages`` (slices, read in
        turn) in one transaction, or nothing. ``rejected`` is complete only once
        ``messages`` is exhausted (it grows as the slices are prepared). ``content``:
        a campaign's own text when its numbers fill variables without a template."""
        ...

    async def get(self, account_id: int, batch_id: str) -> BatchRecord | None: ...
    async def messages_page(
        self, batch_id: str, after_id: str, limit: int
    ) -> list[BatchMessageRow]: ...
    async def cancel(self, account_id: int, batch_id: str) -> BatchRecord | None: ...


@dataclass(frozen=True)
class PrepJob:
    """What preparing a batch's messages needs besides its numbers and values
    (picklable: a preparation process is given it)."""

    caller: Caller
    parsed: ParsedTemplate
    template_code: str | None
    batch_id: str
    now: datetime
    # Per-segment prices by region, for a prepaid account's charges (empty otherwise).
    prices: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EncodedSlice:
    """Messages a preparation process has encoded for the store already (one row
    each, opaque here): storing them costs the server no work per message. Routing
    reads their numbers and the first message whole (the others differ from it
    only in id, number, body and values, which no route looks at)."""

    sample: NewMessage
    numbers: list[str]
    rows: list[bytes]

    def __len__(self) -> int:
        return len(self.rows)

    def keep(self, verdicts: Sequence[bool]) -> EncodedSlice:
        return EncodedSlice(
            self.sample,
            [n for n, ok in zip(self.numbers, verdicts, strict=True) if ok],
            [r for r, ok in zip(self.rows, verdicts, strict=True) if ok],
        )


# A prepaid account's batch number whose country the routing file gives no price.
NO_PRICE_BATCH_REASON = "NO_PRICE"

# Messages ready to store, and the numbers rejected since the previous slice.
PreparedSlice = tuple[list[NewMessage] | EncodedSlice, list[tuple[str, str]]]
StoredSlice = Sequence[NewMessage] | EncodedSlice


class PreparationRun(Protocol):
    """One batch being prepared: ``check`` first, then ``slices``, then ``aclose``."""

    async def check(self) -> bytes | None:
        """Raises InvalidArgument for numbers or values that refuse the whole call;
        returns the batch's fingerprint when it has a request_id."""
        ...

    def slices(self) -> AsyncIterator[PreparedSlice]: ...

    async def aclose(self) -> None:
        """Ends the run, finished or not (the batch stored, refused or failed)."""
        ...


class Preparer(Protocol):
    def start(self, cmd: CreateBatchCommand, job: PrepJob) -> PreparationRun: ...


class BatchPreparation:
    """The per-number work of one batch, pure CPU: the checks of every number and
    value, the fingerprint, then the messages in slices of at most ``size``."""

    def __init__(self, cmd: CreateBatchCommand, job: PrepJob, size: int = SLICE_NUMBERS) -> None:
        self._cmd = cmd
        self._job = job
        self._size = size

    def check(self) -> bytes | None:
        violations = entry_violations(self._cmd.numbers, self._cmd.template_data)
        if violations:
            raise InvalidArgument(violations)
        return batch_fingerprint(self._cmd) if self._cmd.request_id else None

    def slices(self) -> Iterator[PreparedSlice]:
        job = self._job
        rejected: list[tuple[str, str]] = []
        for messages in _prepare(
            job.caller,
            self._cmd,
            job.parsed,
            job.template_code,
            job.batch_id,
            job.now,
            rejected,
            self._size,
        ):
            # The account's guardrails, here so a preparation process applies them too:
            # numbers outside its countries rejected (not counted as unroutable), and
            # a prepaid account's messages priced (charged once stored).
            caller = job.caller
            if caller.allowed_countries is not None:
                messages = _in_allowed_countries(caller, messages, rejected)
            if caller.prepaid:
                messages = _priced(job.prices, messages, rejected)
            part = rejected[:]
            rejected.clear()
            yield messages, part
        if rejected:
            yield [], rejected


class InlinePreparer:
    """Prepares in this process: a small batch on the event loop, a large one a
    slice at a time in a worker thread."""

    def start(self, cmd: CreateBatchCommand, job: PrepJob) -> PreparationRun:
        if cmd.wire is not None:
            raise ValueError("a command with undecoded numbers needs a decoding Preparer")
        return _InlineRun(BatchPreparation(cmd, job), len(cmd.numbers) > INLINE_NUMBERS)


class _InlineRun:
    def __init__(self, prep: BatchPreparation, threaded: bool) -> None:
        self._prep = prep
        self._threaded = threaded

    async def check(self) -> bytes | None:
        if self._threaded:
            return await asyncio.to_thread(self._prep.check)
        return self._prep.check()

    async def slices(self) -> AsyncIterator[PreparedSlice]:
        parts = self._prep.slices()
        while True:
            if self._threaded:
                part = await asyncio.to_thread(next, parts, None)
            else:
                part = next(parts, None)
            if part is None:
                return
            yield part

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class MessagesPage:
    messages: list[BatchMessageRow]
    total_size: int
    next_page_token: str
    # The batch's, which each of its messages carries.
    reference: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


NO_ROUTE_REASON = "NO_ROUTE: no configured route can carry this message"


class Batches:
    def __init__(
        self,
        store: BatchRepository,
        templates: TemplateRepository,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_accepted: Callable[[], None] = lambda: None,
        routes: Routes | None = None,
        slots: BatchSlots | None = None,
        prices: Callable[[], Mapping[str, int]] = dict,
        preparer: Preparer | None = None,
    ) -> None:
        self._store = store
        self._prices = prices  # per-segment prices by region (prepaid accounts)
        self._preparer = preparer if preparer is not None else InlinePreparer()
        self._routes = routes  # None: every number is taken (dispatch alone decides)
        self._templates = templates
        self._clock = clock
        self._on_accepted = on_accepted
        # Large batches being stored at once (per account and server); None: no cap.
        self._slots = slots if slots is not None else BatchSlots(SlotLimits(1 << 30, 1 << 30))

    async def create(self, caller: Caller, cmd: CreateBatchCommand) -> BatchRecord:
        violations: list[FieldViolation] = []
        check_use_type(cmd.use_type, caller, violations)
        check_request_id(cmd.request_id, violations)
        check_reference(cmd.reference, cmd.metadata, violations)
        check_validity(cmd.validity, violations)
        if not cmd.numbers:
            violations.append(FieldViolation("numbers", "at least one number is required"))
        elif len(cmd.numbers) > MAX_NUMBERS:
            violations.append(
                FieldViolation("numbers", f"at most {MAX_NUMBERS:,} numbers per batch")
            )
        if cmd.wire is None and max(len(cmd.numbers), len(cmd.template_data)) <= INLINE_NUMBERS:
            # A small batch's numbers and values are checked with its other fields
            # (a large one's while it is prepared, once it has its slot).
            violations.extend(entry_violations(cmd.numbers, cmd.template_data))
        now = self._clock()
        if cmd.send_at is not None and cmd.send_at > now + MAX_SCHEDULE_AHEAD:
            violations.append(FieldViolation("send_at", "must be at most 30 days in the future"))
        parsed: ParsedTemplate | None = None
        template_code: str | None = None
        if cmd.content is not None:
            try:
                parsed = parse_template(cmd.content, "content")
            except InvalidArgument as exc:
                violations.extend(exc.violations)
        elif cmd.template_id is None:
            violations.append(FieldViolation("content", "content or template_id is required"))
        if violations:
            raise InvalidArgument(violations)
        if cmd.template_id is not None:
            template = await self._templates.get(caller.account_id, cmd.template_id)
            if template is None:
                raise NotFound(f"template {cmd.template_id} not found", reason="TEMPLATE_NOT_FOUND")
            parsed = ParsedTemplate(template.content, template.variables)
            template_code = template.code
        assert parsed is not None

        # The slot first: a large batch refused for want of one costs no pass over
        # its numbers (each number and value is checked while preparing).
        slot = self._slots.take(caller.account_id, len(cmd.numbers), cmd.request_id)
        stored = False
        try:
            batch, accepted, rejected = await self._store_batch(
                caller, cmd, parsed, template_code, now
            )
            stored = True
        finally:
            self._slots.release(slot, stored=stored)
        self._on_accepted()
        log.info(
            "batch accepted: %d messages, %d numbers rejected",
            accepted,
            rejected,
            extra={"batch_id": batch.id},
        )
        return batch

    async def _store_batch(
        self,
        caller: Caller,
        cmd: CreateBatchCommand,
        parsed: ParsedTemplate,
        template_code: str | None,
        now: datetime,
    ) -> tuple[BatchRecord, int, int]:
        batch_id = "b_" + secrets.token_hex(12)
        rejected: list[tuple[str, str]] = []
        prices = dict(self._prices()) if caller.prepaid else {}
        run = self._preparer.start(
            cmd, PrepJob(caller, parsed, template_code, batch_id, now, prices)
        )
        accepted = 0
        valid = 0  # numbers that passed validation (before routing)

        async def slices() -> AsyncIterator[StoredSlice]:
            # Each slice is stored before the next is asked for.
            nonlocal accepted, valid
            async for messages, part in run.slices():
                rejected.extend(part)
                valid += len(messages)
                if self._routes is not None and messages:
                    messages = self._routable(messages, rejected)
                if not messages:
                    continue
                accepted += len(messages)
                yield messages
            if valid and not accepted:
                # No route carries any of them: refuse the call (nothing is
                # stored: this ends the store's transaction).
                raise no_route("these messages (their numbers, use type and content)")

        try:
            fingerprint = await run.check()
            key = None
            if cmd.request_id:
                assert fingerprint is not None
                key = IdempotencyKey(caller.account_id, "CreateBatch", cmd.request_id, fingerprint)
            # A campaign of content with per-number variables keeps its text: a
            # provider's bulk API can then take the one text and each number's values.
            content = parsed.content if cmd.template_id is None and parsed.variables else None
            options = BatchOptions(
                cmd.reference, dict(cmd.metadata) or None, cmd.validity, cmd.smart_encoding
            )
            caps = DailyCaps.of(caller)
            batch = await self._store.create(
                batch_id,
                caller.account_id,
                int(cmd.use_type),
                slices(),
                rejected,
                key,
                content,
                options,
                caps if caps.active else None,
            )
        finally:
            await run.aclose()
        return batch, accepted, len(rejected)

    @overload
    def _routable(
        self, messages: list[NewMessage], rejected: list[tuple[str, str]]
    ) -> list[NewMessage]: ...
    @overload
    def _routable(
        self, messages: EncodedSlice, rejected: list[tuple[str, str]]
    ) -> EncodedSlice: ...
    def _routable(
        self, messages: list[NewMessage] | EncodedSlice, rejected: list[tuple[str, str]]
    ) -> list[NewMessage] | EncodedSlice:
        """The messages some route can carry; the others' numbers are rejected with
        NO_ROUTE (the caller refuses the call when no number of the batch can be)."""
        assert self._routes is not None
        if isinstance(messages, EncodedSlice):
            verdicts = self._routes.can_carry_to(outbound(messages.sample), messages.numbers)
            rejected.extend(
                (n, NO_ROUTE_REASON)
                for n, ok in zip(messages.numbers, verdicts, strict=True)
                if not ok
            )
            return messages if all(verdicts) else messages.keep(verdicts)
        verdicts = self._routes.can_carry_batch([outbound(m) for m in messages])
        if all(verdicts):
            return messages
        rejected.extend(
            (m.to_number, NO_ROUTE_REASON)
            for m, ok in zip(messages, verdicts, strict=True)
            if not ok
        )
        return [m for m, ok in zip(messages, verdicts, strict=True) if ok]

    async def get(self, caller: Caller, batch_id: str) -> BatchRecord:
        _check_task_id(batch_id)
        batch = await self._store.get(caller.account_id, batch_id)
        if batch is None:
            raise NotFound(f"batch {batch_id!r} not found", reason="BATCH_NOT_FOUND")
        return batch

    async def messages(
        self, caller: Caller, batch_id: str, requested_size: int, token: str
    ) -> MessagesPage:
        size = page_size(requested_size)
        batch = await self.get(caller, batch_id)
        scope = f"batch:{batch.id}"
        after = ""
        if token:
            (position,) = decode_page_token(token, scope, shape=(str,))
            after = str(position)
        rows = await self._store.messages_page(batch.id, after, size + 1)
        next_token = ""
        if len(rows) > size:
            rows = rows[:size]
            next_token = encode_page_token(scope, [rows[-1].id])
        return MessagesPage(rows, batch.total, next_token, batch.reference, batch.metadata)

    async def cancel(self, caller: Caller, batch_id: str) -> BatchRecord:
        _check_task_id(batch_id)
        batch = await self._store.cancel(caller.account_id, batch_id)
        if batch is None:
            raise NotFound(f"batch {batch_id!r} not found", reason="BATCH_NOT_FOUND")
        return batch

    async def watch(self, caller: Caller, batch_id: str) -> AsyncIterator[BatchRecord]:
        """Snapshots as the counts change (a few a second at most), until final."""
        last: object = None
        while True:
            batch = await self.get(caller, batch_id)
            if batch != last:
                yield batch
                last = batch
            if batch.status in FINAL_BATCH:
                return
            await asyncio.sleep(WATCH_INTERVAL)


def _priced(
    prices: Mapping[str, int], messages: list[NewMessage], rejected: list[tuple[str, str]]
) -> list[NewMessage]:
    """A prepaid account's messages with their charges; a number whose country has no
    price is rejected with NO_PRICE (the rest of the batch goes on)."""
    priced: list[NewMessage] = []
    for m in messages:
        price = price_of(prices, m.to_number)
        if price is None:
            rejected.append((m.to_number, NO_PRICE_BATCH_REASON))
        else:
            priced.append(dataclasses.replace(m, charge=price * m.segments))
    return priced


def _in_allowed_countries(
    caller: Caller, messages: list[NewMessage], rejected: list[tuple[str, str]]
) -> list[NewMessage]:
    """The messages to countries the account may send to; the others' numbers are
    rejected with COUNTRY_NOT_ALLOWED."""
    verdicts = [country_allowed(caller, m.to_number) for m in messages]
    if all(verdicts):
        return messages
    rejected.extend(
        (m.to_number, COUNTRY_BATCH_REASON)
        for m, ok in zip(messages, verdicts, strict=True)
        if not ok
    )
    return [m for m, ok in zip(messages, verdicts, strict=True) if ok]


def _check_task_id(task_id: str) -> None:
    violations: list[FieldViolation] = []
    check_id(task_id, "task_id", violations)
    if violations:
        raise InvalidArgument(violations)


def entry_violations(
    numbers: Sequence[str], template_data: Mapping[str, Mapping[str, str]]
) -> list[FieldViolation]:
    """What refuses a whole call among its numbers and values: a number too long or
    with a NUL, too many or too long template_data keys, a value that cannot be
    stored. (A pass over every entry: run where it stalls no other call.)"""
    violations = _unreadable_numbers(numbers)
    if len(template_data) > MAX_NUMBERS:
        violations.append(
            FieldViolation("template_data", f"at most {MAX_NUMBERS:,} entries per batch")
        )
    elif any(len(key) > MAX_NUMBER_CHARS for key in template_data):
        violations.append(
            FieldViolation(
                "template_data",
                f"keys are numbers as given in numbers: at most {MAX_NUMBER_CHARS} characters",
            )
        )
    elif not _storable_data(template_data):
        violations.append(FieldViolation("template_data", NUL_DESCRIPTION))
    return violations


def _storable_data(data: Mapping[str, Mapping[str, str]]) -> bool:
    """Whether every key, variable name and value of ``template_data`` can be stored
    (a NUL cannot: it would reach a rejected number's reason or a message's values)."""
    return all(
        storable(key) and all(storable(n) and storable(v) for n, v in values.items())
        for key, values in data.items()
    )


def _unreadable_numbers(numbers: Sequence[str]) -> list[FieldViolation]:
    """Numbers that are not even a string to judge and store: too long, or a NUL."""
    violations: list[FieldViolation] = []
    for index, number in enumerate(numbers):
        check_text(number, f"numbers[{index}]", MAX_NUMBER_CHARS, violations)
    return at_most_reported(violations, "numbers")


def _reason(exc: InvalidArgument) -> str:
    """The reason a number is rejected: its first few problems."""
    problems = [v.description for v in exc.violations]
    reason = "; ".join(problems[:MAX_REASON_PROBLEMS])
    if len(problems) > MAX_REASON_PROBLEMS:
        reason += f" (and {len(problems) - MAX_REASON_PROBLEMS} more problems)"
    return reason


def _prepare(
    caller: Caller,
    cmd: CreateBatchCommand,
    parsed: ParsedTemplate,
    template_code: str | None,
    batch_id: str,
    now: datetime,
    rejected: list[tuple[str, str]],
    size: int = SLICE_NUMBERS,
) -> Iterator[list[NewMessage]]:
    """Validates every number and its values and renders its message (pure CPU), in
    slices of at most ``size`` messages; rejected numbers go to ``rejected``."""
    not_before = max(now, cmd.send_at) if cmd.send_at else now
    expires_at = now + cmd.validity if cmd.validity is not None else None
    messages: list[NewMessage] = []
    # Message ids, drawn from the OS in one call per slice rather than one per number.
    random_hex = ""
    for raw, e164, reason in judge_numbers(cmd.numbers):
        if e164 is None:
            rejected.append((raw, reason))
            continue
        values = cmd.template_data.get(raw) or cmd.template_data.get(e164) or {}
        if parsed.variables or values:
            try:
                validate_values(values, parsed.variables, "template_data")
            except InvalidArgument as exc:
                rejected.append((raw, _reason(exc)))
                continue
        body = render(parsed, values) if parsed.variables else parsed.content
        if cmd.smart_encoding:
            body = smart_encode(body)
        if not random_hex:
            random_hex = secrets.token_bytes(16 * size).hex()
        index = len(messages)
        messages.append(
            NewMessage(
                id=random_hex[32 * index : 32 * index + 32],
                account_id=caller.account_id,
                to_number=e164,
                use_type=cmd.use_type,
                body=body,
                segments=count_segments(body),
                priority=Priority.BATCH,
                not_before=caller.marketing_release(cmd.use_type, e164, not_before),
                template_id=cmd.template_id,
                batch_id=batch_id,
                template_code=template_code,
                template_data={v: values[v] for v in parsed.variables} or None,
                expires_at=expires_at,
            )
        )
        if len(messages) == size:
            yield messages
            messages, random_hex = [], ""
    if messages:
        yield messages


def batch_fingerprint(cmd: CreateBatchCommand) -> bytes:
    """``request_fingerprint`` of a batch's content, byte for byte, without building
    the whole canonical text (or a sorted copy of the values) at once."""
    digest = hashlib.sha256()

    def dump(value: object) -> str:
        return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))

    digest.update(
        f"[{dump(int(cmd.use_type))},{dump(cmd.content)},{dump(cmd.template_id)},[".encode()
    )
    numbers = cmd.numbers
    for start in range(0, len(numbers), SLICE_NUMBERS):
        part = ",".join(dump(n) for n in numbers[start : start + SLICE_NUMBERS])
        digest.update(("," if start else "").encode() + part.encode())
    digest.update(b"],[")
    keys = sorted(cmd.template_data)
    for start in range(0, len(keys), SLICE_NUMBERS):
        part = ",".join(
            dump([k, sorted(cmd.template_data[k].items())])
            for k in keys[start : start + SLICE_NUMBERS]
        )
        digest.update(("," if start else "").encode() + part.encode())
    send_at = cmd.send_at.isoformat() if cmd.send_at else None
    digest.update(f"],{dump(send_at)}]".encode())
    if cmd.reference or cmd.metadata or cmd.validity or cmd.smart_encoding:
        # Only when given: keys stored before these options keep their hash.
        validity = cmd.validity.total_seconds() if cmd.validity else None
        options = [cmd.reference, sorted(cmd.metadata.items()), validity, cmd.smart_encoding]
        digest.update(dump(options).encode())
    return digest.digest()
