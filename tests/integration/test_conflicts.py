"""Deadlocks and serialization failures on a real PostgreSQL (issue 16, item 9).

CancelBatch used to lock the batch and its message rows and only then the event
log, while a worker recording a sent group held the event log and waited for the
batch row: PostgreSQL broke the deadlock and CancelBatch answered INTERNAL. Every
status change now takes the event log first; what still collides is run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from server.domain.errors import Unavailable
from server.domain.models import MessageStatus, NewMessage, Priority
from server.store.accounts import PgAccountStore
from server.store.batches import PgBatchStore
from server.store.events import lock_event_log
from server.store.outbox import Transition, apply_transitions
from server.store.pool import retry_on_conflict
from tests.integration.builders import new_message


async def _two_rows(pool: asyncpg.Pool, table: str) -> None:
    await pool.execute(f"CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, n int)")
    await pool.execute(f"INSERT INTO {table} VALUES (1, 0), (2, 0) ON CONFLICT DO NOTHING")


async def test_a_deadlock_is_run_again_until_it_succeeds(pool: asyncpg.Pool) -> None:
    await _two_rows(pool, "deadlock_rows")
    both_hold_one = asyncio.Barrier(2)
    runs: list[str] = []

    async def transfer(first: int, second: int, name: str) -> None:
        async with pool.acquire() as conn, conn.transaction():
            runs.append(name)
            await conn.execute("UPDATE deadlock_rows SET n = n + 1 WHERE id = $1", first)
            if runs.count(name) == 1:  # only the first run waits for the other
                await both_hold_one.wait()
            await conn.execute("UPDATE deadlock_rows SET n = n + 1 WHERE id = $1", second)

    await asyncio.gather(
        retry_on_conflict(lambda: transfer(1, 2, "a")),
        retry_on_conflict(lambda: transfer(2, 1, "b")),
    )
    # PostgreSQL rolled one of them back; it ran again, and both took effect once.
    assert len(runs) == 3
    rows = await pool.fetch("SELECT n FROM deadlock_rows ORDER BY id")
    assert [r["n"] for r in rows] == [2, 2]


async def test_a_serialization_failure_is_run_again(pool: asyncpg.Pool) -> None:
    await _two_rows(pool, "serial_rows")
    both_read = asyncio.Barrier(2)
    runs = 0

    async def bump() -> None:
        nonlocal runs
        runs += 1
        first = runs <= 2
        async with pool.acquire() as conn, conn.transaction(isolation="serializable"):
            n = await conn.fetchval("SELECT n FROM serial_rows WHERE id = 1")
            if first:
                await both_read.wait()
            await conn.execute("UPDATE serial_rows SET n = $1 WHERE id = 1", n + 1)

    await asyncio.gather(retry_on_conflict(bump), retry_on_conflict(bump))
    assert runs == 3
    assert await pool.fetchval("SELECT n FROM serial_rows WHERE id = 1") == 2


async def test_a_conflict_that_never_clears_is_unavailable_not_internal() -> None:
    calls = 0

    async def always() -> None:
        nonlocal calls
        calls += 1
        raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")

    with pytest.raises(Unavailable):
        await retry_on_conflict(always, attempts=3, base_delay=0.001)
    assert calls == 3


async def one_slice(messages: list[NewMessage]) -> AsyncIterator[list[NewMessage]]:
    """The batch store takes its messages in slices (bounded memory): here, one."""
    yield messages


async def test_cancel_while_a_worker_records_its_group_does_not_deadlock(
    pool: asyncpg.Pool,
) -> None:
    account_id = (await PgAccountStore(pool).create_account("conflicts", verified=True)).id
    batches = PgBatchStore(pool)
    batch_id = "b_conflicts"
    messages = [
        replace(new_message(account_id, Priority.BATCH), batch_id=batch_id) for _ in range(5)
    ]
    await batches.create(batch_id, account_id, 2, one_slice(messages), [])
    taken = messages[0].id
    # A worker has claimed one message and handed it to the provider...
    await pool.execute(
        "UPDATE messages SET claimed_until = $2, attempts = 1 WHERE id = $1",
        taken,
        datetime.now(UTC) + timedelta(seconds=30),
    )
    async with pool.acquire() as worker, worker.transaction():
        # ...and now records it: the event log first, as every status change does.
        await lock_event_log(worker)
        cancelling = asyncio.create_task(batches.cancel(account_id, batch_id))
        await asyncio.sleep(0.3)  # CancelBatch is waiting now (formerly: on the batch row)
        # Counting the sent message updates the batch row: formerly held by cancel.
        await apply_transitions(
            worker,
            [Transition(taken, MessageStatus.SENT, provider="p", provider_message_id="p-1")],
        )
    batch = await asyncio.wait_for(cancelling, 10)
    assert batch is not None
    assert (batch.status, batch.sent, batch.cancelled) == (5, 1, 4)
    rows = await pool.fetch("SELECT id, status FROM messages WHERE batch_id = $1", batch_id)
    assert {r["id"]: MessageStatus(r["status"]) for r in rows} == {
        m.id: MessageStatus.SENT if m.id == taken else MessageStatus.CANCELLED for m in messages
    }
