"""A batch's messages are committed unannounced and announced a chunk at a time
(server/store/batches.py): no worker claims one before its PENDING event is written,
and a batch whose server died announcing it is finished by any replica."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg

from server.domain.models import MessageStatus, NewMessage, Priority
from server.domain.ports import IdempotencyKey
from server.store.accounts import PgAccountStore
from server.store.batches import ANNOUNCE_CHUNK, PgBatchStore
from server.store.outbox import PgOutbox
from tests.integration.builders import new_message


async def slices(messages: list[NewMessage]) -> AsyncIterator[list[NewMessage]]:
    yield messages


async def _batch(pool: asyncpg.Pool, batch_id: str, n: int) -> tuple[int, list[NewMessage]]:
    account_id = (await PgAccountStore(pool).create_account("announce", verified=True)).id
    messages = [
        replace(new_message(account_id, Priority.BATCH), batch_id=batch_id) for _ in range(n)
    ]
    await PgBatchStore(pool).create(batch_id, account_id, 2, slices(messages), [])
    return account_id, messages


async def _pending_events(pool: asyncpg.Pool, batch_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT message_id FROM message_events WHERE batch_id = $1 AND status = $2 "
        "ORDER BY event_id",
        batch_id,
        int(MessageStatus.PENDING),
    )
    return [r["message_id"] for r in rows]


async def test_a_stored_batch_is_announced_whole_across_chunks(pool: asyncpg.Pool) -> None:
    n = 2 * ANNOUNCE_CHUNK + 7
    _, messages = await _batch(pool, "b_announce_whole", n)
    events = await _pending_events(pool, "b_announce_whole")
    assert sorted(events) == sorted(m.id for m in messages)  # one each, none twice
    left = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE batch_id = $1 AND claimed_until IS NOT NULL",
        "b_announce_whole",
    )
    assert left == 0
    assert not await pool.fetchval(
        "SELECT announcing FROM batches WHERE id = $1", "b_announce_whole"
    )
    await pool.execute("UPDATE messages SET status = 8 WHERE batch_id = $1", "b_announce_whole")


async def test_unannounced_messages_are_never_claimed_and_a_dead_servers_batch_is_finished(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute("UPDATE messages SET status = 8 WHERE status IN (1, 2)")
    batch_id = "b_announce_cut"
    _, messages = await _batch(pool, batch_id, 30)
    # As a server that died after the commit, having announced 10 of 30, leaves it.
    cut = sorted(m.id for m in messages)[10:]
    await pool.execute(
        "UPDATE messages SET claimed_until = 'infinity' WHERE id = ANY($1::text[])", cut
    )
    await pool.execute("DELETE FROM message_events WHERE message_id = ANY($1::text[])", cut)
    await pool.execute(
        "UPDATE batches SET announcing = true, created_at = now() - interval '1 hour' "
        "WHERE id = $1",
        batch_id,
    )
    outbox = PgOutbox(pool)
    claimed = await outbox.claim_due(100, 60)
    assert len(claimed) == 10 and not {c.message.id for c in claimed} & set(cut)
    assert await PgBatchStore(pool).announce_unfinished() == 1
    assert sorted(await _pending_events(pool, batch_id)) == sorted(m.id for m in messages)
    claimed = await outbox.claim_due(100, 60)
    assert sorted(c.message.id for c in claimed) == cut
    assert await PgBatchStore(pool).announce_unfinished() == 0
    await pool.execute("UPDATE messages SET status = 8 WHERE batch_id = $1", batch_id)


async def test_a_batch_announcing_on_a_live_server_is_left_to_it(pool: asyncpg.Pool) -> None:
    batch_id = "b_announce_live"
    await _batch(pool, batch_id, 3)
    await pool.execute("UPDATE batches SET announcing = true WHERE id = $1", batch_id)
    # Created moments ago: its own server is taken to be announcing it.
    assert await PgBatchStore(pool).announce_unfinished() == 0
    await pool.execute("UPDATE messages SET status = 8 WHERE batch_id = $1", batch_id)


async def test_a_repeat_of_a_call_cut_off_announcing_finishes_the_announcement(
    pool: asyncpg.Pool,
) -> None:
    account_id = (await PgAccountStore(pool).create_account("announce", verified=True)).id
    batch_id = "b_announce_repeat"
    key = IdempotencyKey(account_id, "CreateBatch", "req-announce", b"fingerprint")
    messages = [
        replace(new_message(account_id, Priority.BATCH), batch_id=batch_id) for _ in range(12)
    ]
    store = PgBatchStore(pool)
    await store.create(batch_id, account_id, 2, slices(messages), [], key)
    cut = sorted(m.id for m in messages)[4:]
    await pool.execute(
        "UPDATE messages SET claimed_until = 'infinity' WHERE id = ANY($1::text[])", cut
    )
    await pool.execute("DELETE FROM message_events WHERE message_id = ANY($1::text[])", cut)
    await pool.execute("UPDATE batches SET announcing = true WHERE id = $1", batch_id)
    # The caller, answered UNAVAILABLE, calls again with the same request_id.
    again = await store.create("b_never_stored", account_id, 2, slices([]), [], key)
    assert (again.id, again.total) == (batch_id, 12)
    assert sorted(await _pending_events(pool, batch_id)) == sorted(m.id for m in messages)
    assert not await pool.fetchval("SELECT announcing FROM batches WHERE id = $1", batch_id)
    await pool.execute("UPDATE messages SET status = 8 WHERE batch_id = $1", batch_id)
