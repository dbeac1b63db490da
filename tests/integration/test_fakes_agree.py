"""The in-memory fakes (tests/fakes.py) keep their ports' promises as the PostgreSQL
adapters do: each scenario runs through the port, once on each, and must see the same.
The use cases' unit tests (tests/unit/test_*_use_case.py) rest on this."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from server.domain.batch_tasks import BatchRepository
from server.domain.errors import FailedPrecondition, ResourceExhausted
from server.domain.models import MessageStatus, NewMessage, Priority, UseType
from server.domain.otp_guard import VelocityCheck, VelocityResult
from server.domain.ports import IdempotencyKey, MessageRepository
from server.domain.verification import (
    CheckResult,
    NewVerification,
    VerificationRepository,
)
from server.store.accounts import PgAccountStore
from server.store.batches import PgBatchStore
from server.store.messages import PgMessageStore
from server.store.velocity import PgVelocityCounters
from server.store.verifications import PgVerificationStore
from tests.fakes import FakeClock, InMemoryBatches, InMemoryMessages, InMemoryVerifications
from tests.integration.builders import new_message

MOBILE = "+8613800138000"
HASH = b"h" * 32


@dataclass
class Ports:
    account_id: int
    other_account_id: int
    messages: MessageRepository
    verifications: VerificationRepository
    batches: BatchRepository
    now: Callable[[], datetime]


@pytest.fixture(params=["postgresql", "in-memory"])
async def ports(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> AsyncIterator[Ports]:
    if request.param == "in-memory":
        clock = FakeClock(datetime.now(UTC))
        messages = InMemoryMessages(clock)
        yield Ports(
            1, 2, messages, InMemoryVerifications(messages), InMemoryBatches(messages), clock
        )
        return
    accounts = PgAccountStore(pool)
    mine = await accounts.create_account("agree", verified=True)
    theirs = await accounts.create_account("agree-other", verified=True)
    yield Ports(
        mine.id,
        theirs.id,
        PgMessageStore(pool),
        PgVerificationStore(pool, PgVelocityCounters(pool)),
        PgBatchStore(pool),
        lambda: datetime.now(UTC),
    )


def key(account_id: int, request_id: str, content: bytes = b"same") -> IdempotencyKey:
    return IdempotencyKey(account_id, "SendMessage", request_id, content)


async def test_a_stored_message_is_pending_for_its_account_only(ports: Ports) -> None:
    message = new_message(ports.account_id)
    await ports.messages.insert(message)
    [state] = await ports.messages.get_states(ports.account_id, [message.id, "0" * 32])
    assert (state.id, state.to_number, state.status, state.segments) == (
        message.id,
        message.to_number,
        MessageStatus.PENDING,
        1,
    )
    assert await ports.messages.get_states(ports.other_account_id, [message.id]) == []


async def test_a_request_id_answers_the_first_message_and_refuses_other_content(
    ports: Ports,
) -> None:
    first, again, other = (new_message(ports.account_id) for _ in range(3))
    assert await ports.messages.insert_idempotent(first, key(ports.account_id, "r1")) is None
    assert await ports.messages.insert_idempotent(again, key(ports.account_id, "r1")) == first.id
    with pytest.raises(FailedPrecondition) as caught:
        await ports.messages.insert_idempotent(other, key(ports.account_id, "r1", b"other"))
    assert caught.value.reason == "REQUEST_ID_REUSED"
    stored = await ports.messages.get_states(ports.account_id, [first.id, again.id, other.id])
    assert [s.id for s in stored] == [first.id]


async def test_the_mobile_interval_refuses_and_stores_nothing_not_even_the_key(
    ports: Ports,
) -> None:
    first = new_message(ports.account_id)
    assert await ports.messages.insert_idempotent(first, None, 60.0) is None
    refused = new_message(ports.account_id)
    with pytest.raises(ResourceExhausted) as caught:
        await ports.messages.insert_idempotent(refused, key(ports.account_id, "r2"), 60.0)
    assert caught.value.reason == "MOBILE_INTERVAL"
    assert 59.0 < caught.value.retry_after <= 60.0
    # Another use type has its own interval; the refused key was not taken.
    other_type = replace(new_message(ports.account_id), use_type=UseType.MARKETING)
    assert await ports.messages.insert_idempotent(other_type, None, 60.0) is None
    retry = new_message(ports.account_id)
    assert await ports.messages.insert_idempotent(retry, key(ports.account_id, "r2")) is None
    stored = await ports.messages.get_states(
        ports.account_id, [first.id, refused.id, other_type.id, retry.id]
    )
    assert {s.id for s in stored} == {first.id, other_type.id, retry.id}


def verification(ports: Ports, *, expires_in: float = 300.0) -> tuple[NewVerification, NewMessage]:
    message = new_message(ports.account_id, priority=Priority.VERIFICATION)
    v = NewVerification(
        id="v_" + secrets.token_hex(12),
        account_id=ports.account_id,
        mobile=MOBILE,
        scene="",
        channel=1,
        code_hash=HASH,
        attempts=3,
        expires_at=ports.now() + timedelta(seconds=expires_in),
    )
    return v, message


def never(results: Sequence[VelocityResult]) -> None:
    raise AssertionError("no counters were asked for")


async def test_checks_use_attempts_until_verified_or_exhausted(ports: Ports) -> None:
    store = ports.verifications
    right, right_message = verification(ports)
    wrong, wrong_message = verification(ports)
    for v, m in ((right, right_message), (wrong, wrong_message)):
        await store.create(v, m, mobile_interval=0, checks=[], judge=never)
    a = ports.account_id
    # Another mobile or account: not found, and no attempt used.
    assert (await store.check(a, right.id, "+8613900139000", HASH)).result == CheckResult.NOT_FOUND
    other = ports.other_account_id
    assert (await store.check(other, right.id, MOBILE, HASH)).result == CheckResult.NOT_FOUND
    miss = await store.check(a, right.id, MOBILE, b"x" * 32)
    assert (miss.result, miss.attempts_left) == (CheckResult.INVALID, 2)
    assert (await store.check(a, right.id, MOBILE, HASH)).result == CheckResult.VALID
    assert (await store.check(a, right.id, MOBILE, HASH)).result == CheckResult.ALREADY_VERIFIED
    outcomes = [await store.check(a, wrong.id, MOBILE, b"x" * 32) for _ in range(3)]
    assert [(o.result, o.attempts_left) for o in outcomes] == [
        (CheckResult.INVALID, 2),
        (CheckResult.INVALID, 1),
        (CheckResult.INVALID, 0),
    ]
    assert (await store.check(a, wrong.id, MOBILE, HASH)).result == CheckResult.EXHAUSTED


async def test_a_late_check_is_expired(ports: Ports) -> None:
    v, m = verification(ports, expires_in=-1.0)
    await ports.verifications.create(v, m, mobile_interval=0, checks=[], judge=never)
    outcome = await ports.verifications.check(ports.account_id, v.id, MOBILE, HASH)
    assert (outcome.result, outcome.attempts_left) == (CheckResult.EXPIRED, 3)


async def test_a_refused_send_is_not_counted_and_stores_nothing(ports: Ports) -> None:
    seen: list[int] = []

    def at_most_one(results: Sequence[VelocityResult]) -> None:
        seen.append(results[0].count)
        if results[0].exceeded:
            raise ResourceExhausted("too many", retry_after=results[0].retry_after())

    checks = [VelocityCheck("otp_prefix", f"agree-{secrets.token_hex(4)}", 3600.0, 1)]
    created = []
    for _ in range(3):
        v, m = verification(ports)
        try:
            await ports.verifications.create(
                v, m, mobile_interval=0, checks=checks, judge=at_most_one
            )
            created.append(v.id)
        except ResourceExhausted:
            outcome = await ports.verifications.check(ports.account_id, v.id, MOBILE, HASH)
            assert outcome.result == CheckResult.NOT_FOUND
            assert await ports.messages.get_states(ports.account_id, [m.id]) == []
    # The refusals rolled their counts back: the third saw 2 again, not 3.
    assert seen == [1, 2, 2] and len(created) == 1


async def test_a_repeated_key_answers_the_first_verification(ports: Ports) -> None:
    v1, m1 = verification(ports)
    v2, m2 = verification(ports)
    k = IdempotencyKey(ports.account_id, "SendVerification", "r3", b"same")
    store = ports.verifications
    first = await store.create(v1, m1, mobile_interval=60, checks=[], judge=never, key=k)
    again = await store.create(v2, m2, mobile_interval=60, checks=[], judge=never, key=k)
    assert again == first and (first.id, first.message_id) == (v1.id, m1.id)


async def test_one_code_per_mobile_per_interval(ports: Ports) -> None:
    v1, m1 = verification(ports)
    v2, m2 = verification(ports)
    await ports.verifications.create(v1, m1, mobile_interval=60, checks=[], judge=never)
    with pytest.raises(ResourceExhausted) as caught:
        await ports.verifications.create(v2, m2, mobile_interval=60, checks=[], judge=never)
    assert caught.value.reason == "MOBILE_INTERVAL" and 59.0 < caught.value.retry_after <= 60
    outcome = await ports.verifications.check(ports.account_id, v2.id, MOBILE, HASH)
    assert outcome.result == CheckResult.NOT_FOUND


def batch_messages(ports: Ports, batch_id: str, count: int) -> list[NewMessage]:
    return [
        replace(
            new_message(ports.account_id, priority=Priority.BATCH),
            batch_id=batch_id,
            to_number=f"+86138{i:08d}",
        )
        for i in range(count)
    ]


async def slices(
    parts: Sequence[Sequence[NewMessage]],
    rejected: list[tuple[str, str]],
    *,
    fail: bool = False,
) -> AsyncIterator[Sequence[NewMessage]]:
    """The slices in turn, a rejected number found while preparing each (as
    ``Batches`` does); with ``fail``, raising after the last."""
    for index, part in enumerate(parts):
        rejected.append((f"bad{index}", "not a number"))
        yield part
    if fail:
        raise FailedPrecondition("no route", reason="NO_ROUTE")


async def test_a_batch_is_stored_whole_or_not_at_all_and_a_key_answers_it(ports: Ports) -> None:
    store, a = ports.batches, ports.account_id
    batch_id = "b_" + secrets.token_hex(12)
    messages = batch_messages(ports, batch_id, 5)
    k = IdempotencyKey(a, "CreateBatch", "r1", b"same")
    # A slice that raises (after two were read) leaves nothing: batch, messages, key.
    rejected: list[tuple[str, str]] = []
    with pytest.raises(FailedPrecondition):
        await store.create(
            batch_id, a, 2, slices([messages[:3], messages[3:]], rejected, fail=True), [], k
        )
    assert await store.get(a, batch_id) is None
    assert await ports.messages.get_states(a, [m.id for m in messages]) == []
    # The key is free: the retry is stored, with the rejected numbers found as it went.
    rejected = []
    batch = await store.create(
        batch_id, a, 2, slices([messages[:3], messages[3:]], rejected), rejected, k
    )
    assert (batch.id, batch.status, batch.total, batch.cancelled, batch.finished) == (
        batch_id,
        1,
        5,
        0,
        0,
    )
    assert batch.rejected == [("bad0", "not a number"), ("bad1", "not a number")]
    states = await ports.messages.get_states(a, [m.id for m in messages])
    assert {s.status for s in states} == {MessageStatus.PENDING} and len(states) == 5
    # A repeat of the key answers the stored batch and reads none of its slices.
    unread: list[tuple[str, str]] = []
    again = await store.create(
        "b_" + secrets.token_hex(12), a, 2, slices([messages], unread), unread, k
    )
    assert again == batch and unread == []
    with pytest.raises(FailedPrecondition):
        await store.create(
            "b_" + secrets.token_hex(12),
            a,
            2,
            slices([], []),
            [],
            IdempotencyKey(a, "CreateBatch", "r1", b"other"),
        )
    assert await store.get(ports.other_account_id, batch_id) is None


async def test_batch_messages_page_in_id_order_and_cancel_is_the_owners(ports: Ports) -> None:
    store, a = ports.batches, ports.account_id
    batch_id = "b_" + secrets.token_hex(12)
    messages = batch_messages(ports, batch_id, 5)
    await store.create(batch_id, a, 2, slices([messages], []), [])
    ids = sorted(m.id for m in messages)
    first = await store.messages_page(batch_id, "", 3)
    rest = await store.messages_page(batch_id, first[-1].id, 3)
    assert [r.id for r in first + rest] == ids
    assert {(r.status, r.error_code, r.sent_at) for r in first + rest} == {
        (MessageStatus.PENDING, "", None)
    }
    assert await store.cancel(ports.other_account_id, batch_id) is None
    cancelled = await store.cancel(a, batch_id)
    assert cancelled is not None
    assert (cancelled.status, cancelled.total, cancelled.cancelled, cancelled.finished) == (
        5,
        5,
        5,
        5,
    )
    assert await store.get(a, batch_id) == cancelled
    page = await store.messages_page(batch_id, "", 10)
    assert {r.status for r in page} == {MessageStatus.CANCELLED}
    # A batch of no accepted message is stored failed.
    empty_id = "b_" + secrets.token_hex(12)
    empty = await store.create(empty_id, a, 2, slices([], []), [("x", "bad")])
    assert (empty.status, empty.total, empty.rejected) == (4, 0, [("x", "bad")])
