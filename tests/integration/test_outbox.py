"""The outbox on a real PostgreSQL: group commit, claims under lease, forward-only status."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg

from server.domain.codes import CodeKeys
from server.domain.models import CODE_MARK, MessageStatus, Priority, UseType
from server.domain.outbox_codes import CodeOpeningOutbox
from server.store.accounts import PgAccountStore
from server.store.messages import PgMessageStore
from server.store.outbox import PgOutbox, Transition
from server.store.templates import PgTemplateStore
from tests.integration.builders import new_message


async def _account(pool: asyncpg.Pool) -> int:
    return (await PgAccountStore(pool).create_account("outbox", verified=True)).id


async def _drain(pool: asyncpg.Pool) -> None:
    """Takes every due message out of the way of the next test."""
    await pool.execute("UPDATE messages SET status = 8 WHERE status IN (1, 2)")


async def test_group_commit_stores_every_concurrent_insert_with_its_event(
    pool: asyncpg.Pool,
) -> None:
    account_id = await _account(pool)
    store = PgMessageStore(pool)
    messages = [new_message(account_id) for _ in range(300)]
    await asyncio.gather(*(store.insert(m) for m in messages))
    ids = [m.id for m in messages]
    stored = await pool.fetchval("SELECT count(*) FROM messages WHERE id = ANY($1::text[])", ids)
    events = await pool.fetch(
        "SELECT status FROM message_events WHERE message_id = ANY($1::text[])", ids
    )
    assert stored == 300
    assert len(events) == 300
    assert {e["status"] for e in events} == {MessageStatus.PENDING}
    await _drain(pool)


async def test_two_workers_racing_never_claim_the_samenew_message(pool: asyncpg.Pool) -> None:
    await _drain(pool)
    account_id = await _account(pool)
    store = PgMessageStore(pool)
    messages = [new_message(account_id) for _ in range(600)]
    await asyncio.gather(*(store.insert(m) for m in messages))
    outbox_a, outbox_b = PgOutbox(pool), PgOutbox(pool)

    async def worker(outbox: PgOutbox) -> list[str]:
        taken: list[str] = []
        while True:
            claimed = await outbox.claim_due(25, 60)
            if not claimed:
                return taken
            taken.extend(c.message.id for c in claimed)
            await asyncio.sleep(0)

    a, b = await asyncio.gather(worker(outbox_a), worker(outbox_b))
    assert not set(a) & set(b)
    assert sorted(a + b) == sorted(m.id for m in messages)
    assert a and b, "both workers got a share"
    await _drain(pool)


async def test_expired_lease_is_taken_over(pool: asyncpg.Pool) -> None:
    await _drain(pool)
    account_id = await _account(pool)
    message = new_message(account_id)
    await PgMessageStore(pool).insert(message)
    outbox = PgOutbox(pool)
    first = await outbox.claim_due(10, 1.0)
    assert [c.message.id for c in first] == [message.id]
    assert await outbox.claim_due(10, 1.0) == []  # still leased
    await asyncio.sleep(1.2)
    second = await outbox.claim_due(10, 30)
    assert [c.message.id for c in second] == [message.id]
    assert second[0].message.attempts == 2
    await _drain(pool)


async def test_a_batch_message_taken_over_goes_before_the_rest_of_its_batch(
    pool: asyncpg.Pool,
) -> None:
    """A dead worker's messages are not sent after the whole rest of their batch."""
    await _drain(pool)
    account_id = await _account(pool)
    due = datetime.now(UTC)
    batch = [replace(new_message(account_id, Priority.BATCH), not_before=due) for _ in range(60)]
    store = PgMessageStore(pool)
    for m in batch:
        await store.insert(m)
    outbox = PgOutbox(pool)
    held = await outbox.claim_due(10, 1.0)  # the worker holding these dies
    assert len(held) == 10
    await asyncio.sleep(1.2)
    taken_over = await outbox.claim_due(10, 30)
    assert {c.message.id for c in taken_over} == {c.message.id for c in held}
    assert all(c.message.attempts == 2 for c in taken_over)
    await _drain(pool)


async def test_verification_is_claimed_before_batch_and_single(pool: asyncpg.Pool) -> None:
    await _drain(pool)
    account_id = await _account(pool)
    store = PgMessageStore(pool)
    batch = [new_message(account_id, Priority.BATCH) for _ in range(20)]
    single = new_message(account_id, Priority.SINGLE)
    code = new_message(account_id, Priority.VERIFICATION)
    for m in [*batch, single, code]:
        await store.insert(m)
    claimed = await PgOutbox(pool).claim_due(2, 30)
    assert [c.message.id for c in claimed] == [code.id, single.id]
    await _drain(pool)


async def test_batch_room_is_shared_evenly_between_accounts(pool: asyncpg.Pool) -> None:
    """An early large campaign does not hold back another account's later batch."""
    await _drain(pool)
    early, late, idle = await _account(pool), await _account(pool), await _account(pool)
    store = PgMessageStore(pool)
    big = [new_message(early, Priority.BATCH) for _ in range(300)]
    await asyncio.gather(*(store.insert(m) for m in big))
    small = [new_message(late, Priority.BATCH) for _ in range(30)]
    await asyncio.gather(*(store.insert(m) for m in small))
    scheduled = replace(
        new_message(idle, Priority.BATCH), not_before=datetime.now(UTC) + timedelta(hours=1)
    )
    await store.insert(scheduled)  # nothing due: it takes no share
    code = new_message(late, Priority.VERIFICATION)
    await store.insert(code)

    claimed = await PgOutbox(pool).claim_due(41, 30)
    owners = [c.message.account_id for c in claimed]
    assert claimed[0].message.id == code.id  # codes still go first
    assert len(claimed) == 41
    assert owners[1:].count(early) == 20 and owners[1:].count(late) == 20
    assert scheduled.id not in {c.message.id for c in claimed}

    # The later batch is out after two claims; the room it leaves goes to the other.
    second = await PgOutbox(pool).claim_due(40, 30)
    assert [c.message.account_id for c in second].count(late) == 10 and len(second) == 40
    third = await PgOutbox(pool).claim_due(40, 30)
    assert {c.message.account_id for c in third} == {early} and len(third) == 40
    await _drain(pool)


async def test_status_only_moves_forward_and_each_change_is_one_event(
    pool: asyncpg.Pool,
) -> None:
    account_id = await _account(pool)
    message = new_message(account_id)
    await PgMessageStore(pool).insert(message)
    outbox = PgOutbox(pool)
    await outbox.apply(
        [
            Transition(
                message.id, MessageStatus.SENT, provider="loopback", provider_message_id="p1"
            ),
            Transition(message.id, MessageStatus.DELIVERED, provider="loopback"),
        ]
    )
    await outbox.apply([Transition(message.id, MessageStatus.SENT, provider="loopback")])
    await outbox.apply([Transition(message.id, MessageStatus.FAILED, error_code="LATE")])
    row = await pool.fetchrow(
        "SELECT status, provider_message_id, sent_at, error_code FROM messages WHERE id = $1",
        message.id,
    )
    assert row is not None
    assert row["status"] == MessageStatus.DELIVERED
    assert row["provider_message_id"] == "p1"
    assert row["sent_at"] is not None
    assert row["error_code"] == ""
    statuses = [
        r["status"]
        for r in await pool.fetch(
            "SELECT status FROM message_events WHERE message_id = $1 ORDER BY event_id",
            message.id,
        )
    ]
    assert statuses == [MessageStatus.PENDING, MessageStatus.SENT, MessageStatus.DELIVERED]


async def test_event_ids_follow_commit_order_under_concurrent_writers(
    pool: asyncpg.Pool,
) -> None:
    """Concurrent writers; a reader polling by cursor must never skip a committed event."""
    account_id = await _account(pool)
    store = PgMessageStore(pool)
    start = await pool.fetchval("SELECT coalesce(max(event_id), 0) FROM message_events")
    seen: list[int] = []
    done = asyncio.Event()

    async def reader() -> None:
        cursor = start
        while True:
            finished = done.is_set()
            rows = await pool.fetch(
                "SELECT event_id FROM message_events WHERE event_id > $1 ORDER BY event_id",
                cursor,
            )
            for r in rows:
                seen.append(r["event_id"])
                cursor = r["event_id"]
            if finished and not rows:
                return
            await asyncio.sleep(0.001)

    async def writer() -> None:
        for _ in range(40):
            await store.insert(new_message(account_id))

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer() for _ in range(8)))
    done.set()
    await reading
    total = await pool.fetchval("SELECT count(*) FROM message_events WHERE event_id > $1", start)
    assert len(seen) == total == 320
    assert len(set(seen)) == len(seen)
    await _drain(pool)


async def test_a_claimed_template_message_carries_its_variables_in_text_order(
    pool: asyncpg.Pool,
) -> None:
    await _drain(pool)
    account_id = await _account(pool)
    content = "#zeta# then #a# then #mid#"
    template = await PgTemplateStore(pool).create(
        account_id, "ordered", content, UseType.NOTIFICATION, ["zeta", "a", "mid"]
    )
    message = replace(
        new_message(account_id),
        template_id=template.id,
        template_code="ordered",
        template_data={"zeta": "1", "a": "2", "mid": "3"},
    )
    await PgMessageStore(pool).insert(message)
    [claimed] = await PgOutbox(pool).claim_due(10, 30)
    # jsonb hands the keys back shortest first; the template's order survives apart.
    assert list(claimed.message.data) != ["zeta", "a", "mid"]
    assert claimed.message.variables == ("zeta", "a", "mid")
    assert claimed.message.template_content == content
    await _drain(pool)


async def test_a_code_leaves_the_store_sealed_and_opens_only_with_the_server_key(
    pool: asyncpg.Pool,
) -> None:
    await _drain(pool)
    account_id = await _account(pool)
    key, other = CodeKeys(b"k" * 32), CodeKeys(b"o" * 32)
    mine, theirs = (
        replace(
            new_message(account_id, Priority.VERIFICATION),
            use_type=UseType.VERIFICATION,
            body=f"Your code is {CODE_MARK}",
            sealed_code=keys.seal("4711"),
        )
        for keys in (key, other)
    )
    store = PgMessageStore(pool)
    await store.insert(mine)
    await store.insert(theirs)
    raw = {c.message.id: c for c in await PgOutbox(pool).claim_due(10, 30)}
    assert raw[mine.id].code_unavailable and "4711" not in raw[mine.id].message.body
    await PgOutbox(pool).release(list(raw))

    opened = await CodeOpeningOutbox(PgOutbox(pool), key).claim_due(10, 30)
    by_id = {c.message.id: c for c in opened}
    assert by_id[mine.id].message.body == "Your code is 4711"
    assert not by_id[mine.id].code_unavailable
    assert by_id[theirs.id].code_unavailable  # sealed under another SMSGW_SECRET_KEY
    await _drain(pool)
