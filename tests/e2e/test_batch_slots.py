"""Large batches as a shared resource: few are stored at once (per account and per
server), the rest are refused at once with RESOURCE_EXHAUSTED and RetryInfo and store
nothing; one stored in slices is still stored whole or not at all, and once stored
it is announced whole.

A test holds the event-log advisory lock to keep batches "being stored": each waits
at its first chunk of PENDING events (committed, being announced), holding its slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from asyncpg.pool import PoolConnectionProxy
from sms.v1 import batch_pb2, common_pb2

from server.config import Settings
from server.domain.batch_tasks import SLICE_NUMBERS
from server.store.events import EVENT_LANE_CLASS, EVENT_LANES
from tests.e2e.batch_calls import create, numbers
from tests.e2e.conftest import Client, GatewayFactory, Running, wait_for
from tests.e2e.errors import reason
from tests.e2e.test_limits import quota_subject, retry_delay

S = common_pb2
LARGE = 1_001  # the smallest batch that takes a slot


@pytest.fixture(scope="module")
async def running(start_gateway: GatewayFactory) -> Running:
    env = {"SMSGW_LARGE_BATCHES_PER_ACCOUNT": "1", "SMSGW_LARGE_BATCHES_PER_SERVER": "2"}
    return await start_gateway(large_batches=Settings.from_env(env).large_batches)


@pytest.fixture
async def event_log_held(running: Running) -> AsyncIterator[PoolConnectionProxy]:
    """Holds the whole event log (every lane) until the test releases it (or ends)."""
    conn = await running.gateway.pool.acquire()
    await conn.execute(
        "SELECT count(pg_advisory_lock($1, lane)) FROM generate_series(0, $2) AS lane",
        EVENT_LANE_CLASS,
        EVENT_LANES - 1,
    )
    try:
        yield conn
    finally:
        await conn.execute("SELECT pg_advisory_unlock_all()")
        await running.gateway.pool.release(conn)


async def batches_waiting(running: Running) -> int:
    """Batches waiting for the event log (a chunk of their first events)."""
    waiting: int = await running.gateway.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE '%WHERE m.batch_id = $1%'"
    )
    return waiting


async def waiting_at_lock(running: Running, n: int) -> None:
    async def there() -> bool:
        return await batches_waiting(running) >= n

    await wait_for(there, 30)


async def stored(running: Running, account_id: int) -> tuple[int, int, int]:
    """(batches, messages, first events) of an account."""
    row = await running.gateway.pool.fetchrow(
        "SELECT (SELECT count(*) FROM batches WHERE account_id = $1),"
        " (SELECT count(*) FROM messages WHERE account_id = $1),"
        " (SELECT count(*) FROM message_events WHERE account_id = $1 AND status = 1)",
        account_id,
    )
    assert row is not None
    return row[0], row[1], row[2]


def batch(client: Client, n: int, start: int = 0) -> asyncio.Future[object]:
    return asyncio.ensure_future(
        create(client, content="Sale on Friday.", numbers=numbers(n, start))
    )


async def refused(call: asyncio.Future[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(call, 10)
    err = info.value
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert 0 < retry_delay(err) <= 60
    return err


async def test_large_batches_past_the_caps_are_refused_with_retry_info_and_store_nothing(
    running: Running, event_log_held: PoolConnectionProxy
) -> None:
    a, b, c = await running.client(), await running.client(), await running.client()
    first = batch(a, LARGE)
    await waiting_at_lock(running, 1)

    # The account's one slot is taken: its next large batch is refused at once...
    err = await refused(batch(a, LARGE, 10_000))
    assert reason(err) == "LARGE_BATCHES_PER_ACCOUNT"
    assert quota_subject(err) == f"account:{a.account_id}"
    # ...but a batch of 1,000 numbers takes no slot and goes on.
    small = batch(a, 1_000, 20_000)
    await waiting_at_lock(running, 2)

    # Another account takes the server's second slot; a third account finds none.
    second = batch(b, LARGE)
    await waiting_at_lock(running, 3)
    err = await refused(batch(c, 5_000))
    assert reason(err) == "LARGE_BATCHES_PER_SERVER"
    assert quota_subject(err) == "server"
    assert await stored(running, c.account_id) == (0, 0, 0)

    await event_log_held.execute("SELECT pg_advisory_unlock_all()")
    replies = await asyncio.wait_for(asyncio.gather(first, small, second), 30)
    assert [r.accepted_count for r in replies] == [LARGE, 1_000, LARGE]  # type: ignore[attr-defined]
    assert await stored(running, a.account_id) == (2, LARGE + 1_000, LARGE + 1_000)
    assert await stored(running, b.account_id) == (1, LARGE, LARGE)
    # The slots are back: the refused caller's retry is taken.
    reply = await create(c, content="Sale on Friday.", numbers=numbers(5_000))
    assert reply.accepted_count == 5_000
    assert await stored(running, c.account_id) == (1, 5_000, 5_000)


async def test_a_large_batch_is_stored_whole_across_its_slices(running: Running) -> None:
    client = await running.client()
    n = 4 * SLICE_NUMBERS + 123
    given = numbers(n)
    # Rejections spread over every slice: duplicates and an invalid number in each.
    for k in range(0, n, SLICE_NUMBERS):
        given[k + 7] = given[k + 3]
        given[k + 11] = "+861"
    reply = await create(
        client,
        content="Hi #name#, order #order_no# shipped.",
        numbers=given,
        template_data={
            number: batch_pb2.TemplateData(values={"name": f"u{i}", "order_no": f"A-{i}"})
            for i, number in enumerate(given)
        },
    )
    bad = 2 * len(range(0, n, SLICE_NUMBERS))
    assert (reply.accepted_count, len(reply.rejected)) == (n - bad, bad)
    assert await stored(running, client.account_id) == (1, n - bad, n - bad)
    total = await running.gateway.pool.fetchval(
        "SELECT total FROM batches WHERE id = $1", reply.task_id
    )
    assert total == n - bad
    # Every message got its own values, the last slice's as much as the first's.
    last = n - 1
    body = await running.gateway.pool.fetchval(
        "SELECT body FROM messages WHERE batch_id = $1 AND to_number = $2",
        reply.task_id,
        given[last],
    )
    assert body == f"Hi u{last}, order A-{last} shipped."


async def test_a_large_batch_given_up_before_its_messages_commit_stores_nothing(
    running: Running,
) -> None:
    client = await running.client()
    n = 3 * SLICE_NUMBERS
    held = await running.gateway.pool.acquire()
    tx = held.transaction()
    await tx.start()
    try:
        # COPY waits for this lock: the batch's transaction stays open, its row written.
        await held.execute("LOCK TABLE messages IN SHARE MODE")
        call = client.batches.CreateBatch(
            batch_pb2.CreateBatchRequest(
                use_type=S.USE_TYPE_NOTIFICATION, content="Sale on Friday.", numbers=numbers(n)
            ),
            metadata=client.metadata,
            timeout=30,
        )
        task = asyncio.ensure_future(call)

        async def copying() -> bool:
            waiting: int = await running.gateway.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'COPY%messages%'"
            )
            return waiting == 1

        await wait_for(copying, 30)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async def rolled_back() -> bool:
            return not await copying()

        await wait_for(rolled_back, 30)
    finally:
        await tx.rollback()
        await running.gateway.pool.release(held)
    assert await stored(running, client.account_id) == (0, 0, 0)
    # Its slot is back too.
    reply = await create(client, content="Sale on Friday.", numbers=numbers(n))
    assert reply.accepted_count == n


async def test_a_large_batch_given_up_while_announced_is_announced_whole(
    running: Running, event_log_held: PoolConnectionProxy
) -> None:
    """Once its messages are committed a batch is stored: they are announced (their
    PENDING events written, a chunk at a time) even if the caller gives up."""
    client = await running.client()
    n = 3 * SLICE_NUMBERS
    call = client.batches.CreateBatch(
        batch_pb2.CreateBatchRequest(
            use_type=S.USE_TYPE_NOTIFICATION, content="Sale on Friday.", numbers=numbers(n)
        ),
        metadata=client.metadata,
        timeout=30,
    )
    task = asyncio.ensure_future(call)
    # Committed; its first chunk waits for the event log: the caller gives up.
    await waiting_at_lock(running, 1)
    assert (await stored(running, client.account_id))[:2] == (1, n)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await event_log_held.execute("SELECT pg_advisory_unlock_all()")

    async def announced() -> bool:
        return await stored(running, client.account_id) == (1, n, n)

    await wait_for(announced, 30)
    left = await running.gateway.pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1 AND claimed_until = 'infinity'",
        client.account_id,
    )
    assert left == 0
    assert not await running.gateway.pool.fetchval(
        "SELECT announcing FROM batches WHERE account_id = $1", client.account_id
    )
