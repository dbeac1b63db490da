"""request_id idempotency in the store, including concurrent first calls."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from server.domain.errors import FailedPrecondition
from server.domain.ports import IdempotencyKey
from server.store.accounts import PgAccountStore
from server.store.messages import PgMessageStore
from tests.integration.builders import new_message


async def test_concurrent_calls_with_one_key_store_onenew_message(pool: asyncpg.Pool) -> None:
    account = await PgAccountStore(pool).create_account("idem", verified=True)
    store = PgMessageStore(pool)
    key = IdempotencyKey(account.id, "SendMessage", "k1", b"same")
    messages = [new_message(account.id) for _ in range(10)]
    results = await asyncio.gather(*(store.insert_idempotent(m, key) for m in messages))
    winners = [m.id for m, r in zip(messages, results, strict=True) if r is None]
    assert len(winners) == 1
    assert {r for r in results if r is not None} == set(winners)
    count = await pool.fetchval("SELECT count(*) FROM messages WHERE account_id = $1", account.id)
    assert count == 1

    with pytest.raises(FailedPrecondition):
        await store.insert_idempotent(
            new_message(account.id), IdempotencyKey(account.id, "SendMessage", "k1", b"other")
        )


async def test_key_is_reusable_after_the_window(pool: asyncpg.Pool) -> None:
    account = await PgAccountStore(pool).create_account("idem2", verified=True)
    store = PgMessageStore(pool)
    key = IdempotencyKey(account.id, "SendMessage", "k2", b"h")
    first = new_message(account.id)
    assert await store.insert_idempotent(first, key) is None
    await pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '61 minutes' "
        "WHERE account_id = $1",
        account.id,
    )
    second = new_message(account.id)
    assert await store.insert_idempotent(second, key) is None
    count = await pool.fetchval("SELECT count(*) FROM messages WHERE account_id = $1", account.id)
    assert count == 2
