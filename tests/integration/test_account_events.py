"""account_events on a real PostgreSQL: batch status changes and verification outcomes
are written with their change, under concurrency every one becomes exactly one
delivery (the endpoint's cursor never skips an event committed late), and a change
rolled back leaves no event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from server.domain.models import BatchStatus, MessageStatus, NewMessage, Priority
from server.domain.verification import CheckResult
from server.store.accounts import PgAccountStore
from server.store.batches import PgBatchStore
from server.store.events import lock_event_log
from server.store.outbox import PgOutbox, Transition, apply_transitions
from server.store.velocity import PgVelocityCounters
from server.store.verifications import PgVerificationStore
from server.store.webhooks import PgWebhookStore
from tests.integration.builders import new_message

BATCH_STATUS, VERIFICATION = 2, 3


async def one_slice(messages: list[NewMessage]) -> AsyncIterator[list[NewMessage]]:
    yield messages


async def pending_verification(
    pool: asyncpg.Pool, account_id: int, verify_id: str, *, late: bool = False
) -> None:
    await pool.execute(
        "INSERT INTO verifications (id, account_id, mobile, channel, code_hash, state, "
        "attempts_left, expires_at, message_id) VALUES ($1, $2, '+8613800138000', 1, "
        "'right', 1, 1, $3, 'm_' || $1)",
        verify_id,
        account_id,
        datetime.now(UTC) + timedelta(minutes=-1 if late else 5),
    )


async def test_every_event_becomes_one_delivery_under_concurrent_writers(
    pool: asyncpg.Pool,
) -> None:
    account_id = (await PgAccountStore(pool).create_account("events", verified=True)).id
    hooks = PgWebhookStore(pool)
    hook = await hooks.create(account_id, "https://example.com/", [2, 3], "", b"sealed")
    batches, outbox = PgBatchStore(pool), PgOutbox(pool)
    verifications = PgVerificationStore(pool, PgVelocityCounters(pool))

    async def run_batch(n: int) -> None:
        batch_id = f"b_events_{n}"
        messages = [
            replace(new_message(account_id, Priority.BATCH), batch_id=batch_id) for _ in range(3)
        ]
        await batches.create(batch_id, account_id, 2, one_slice(messages), [])
        for m in messages:  # one transaction each: the batch runs, then ends
            await outbox.apply([Transition(m.id, MessageStatus.DELIVERED)])

    async def run_verification(n: int) -> None:
        await pending_verification(pool, account_id, f"v_events_{n}")
        outcome = await verifications.check(
            account_id, f"v_events_{n}", "+8613800138000", b"right" if n % 2 else b"wrong"
        )
        assert outcome.result in (CheckResult.VALID, CheckResult.INVALID)

    done = asyncio.Event()

    async def deliver_meanwhile() -> None:
        while not done.is_set():
            await hooks.materialise(7)
            await asyncio.sleep(0)

    materialising = asyncio.create_task(deliver_meanwhile())
    for n in range(10):
        await pending_verification(pool, account_id, f"v_late_{n}", late=True)
    await asyncio.gather(
        *(run_batch(n) for n in range(15)),
        *(run_verification(n) for n in range(30)),
        verifications.expire_pending(),
    )
    done.set()
    await materialising
    while await hooks.materialise(100):
        pass

    events = await pool.fetch(
        "SELECT event_id, event_type, subject_id, status FROM account_events "
        "WHERE account_id = $1 ORDER BY event_id",
        account_id,
    )
    delivered = await pool.fetch(
        "SELECT event_id FROM webhook_deliveries WHERE webhook_id = $1", hook.id
    )
    assert sorted(r["event_id"] for r in delivered) == [r["event_id"] for r in events]
    by_subject: dict[str, list[int]] = {}
    for r in events:
        by_subject.setdefault(r["subject_id"], []).append(r["status"])
    for n in range(15):
        assert by_subject[f"b_events_{n}"] == [
            BatchStatus.PENDING,
            BatchStatus.EXECUTING,
            BatchStatus.SUCCEEDED,
        ]
    for n in range(30):
        assert by_subject[f"v_events_{n}"] == [2 if n % 2 else 4]  # VERIFIED, EXHAUSTED
    for n in range(10):
        assert by_subject[f"v_late_{n}"] == [3]  # EXPIRED, by the sweep
    assert len(events) == 15 * 3 + 30 + 10


async def test_a_change_rolled_back_leaves_no_event(pool: asyncpg.Pool) -> None:
    account_id = (await PgAccountStore(pool).create_account("rollback", verified=True)).id
    batch_id = "b_rolled_back"
    message = replace(new_message(account_id, Priority.BATCH), batch_id=batch_id)
    await PgBatchStore(pool).create(batch_id, account_id, 2, one_slice([message]), [])
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await lock_event_log(conn)
            await apply_transitions(conn, [Transition(message.id, MessageStatus.DELIVERED)])
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM account_events WHERE subject_id = $1", batch_id
                )
                == 2
            )  # PENDING, and SUCCEEDED with the change...
            raise RuntimeError("the process dies before commit")
    statuses = await pool.fetch(
        "SELECT status FROM account_events WHERE subject_id = $1 ORDER BY event_id", batch_id
    )
    assert [r["status"] for r in statuses] == [BatchStatus.PENDING]  # ...gone with it
    assert await pool.fetchval("SELECT status FROM batches WHERE id = $1", batch_id) == 1


async def test_an_event_committed_late_is_not_skipped(pool: asyncpg.Pool) -> None:
    """A batch event drawn first and committed last, a verification outcome committed
    in between: the cursor must not pass the first while it is uncommitted."""
    account_id = (await PgAccountStore(pool).create_account("late", verified=True)).id
    hooks = PgWebhookStore(pool)
    hook = await hooks.create(account_id, "https://example.com/", [2, 3], "", b"sealed")
    batch_id = "b_late"
    message = replace(new_message(account_id, Priority.BATCH), batch_id=batch_id)
    await PgBatchStore(pool).create(batch_id, account_id, 2, one_slice([message]), [])
    await pending_verification(pool, account_id, "v_late")
    verifications = PgVerificationStore(pool, PgVelocityCounters(pool))
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await lock_event_log(conn)
        await apply_transitions(conn, [Transition(message.id, MessageStatus.DELIVERED)])
        checking = asyncio.create_task(
            verifications.check(account_id, "v_late", "+8613800138000", b"right")
        )
        await asyncio.sleep(0.3)  # the outcome waits for the batch's transaction
        await hooks.materialise(100)
        await transaction.commit()
    assert (await checking).result == CheckResult.VALID
    while await hooks.materialise(100):
        pass
    events = await pool.fetch(
        "SELECT event_id FROM account_events WHERE account_id = $1 ORDER BY event_id", account_id
    )
    delivered = await pool.fetch(
        "SELECT event_id FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY event_id", hook.id
    )
    assert len(events) == 3  # PENDING, SUCCEEDED, VERIFIED
    assert [r["event_id"] for r in delivered] == [r["event_id"] for r in events]
