"""A large CreateBatch is prepared in a process of its own (server/api/batch_prep.py):
its request decoded, its numbers and values checked, its messages rendered there and
sent back a slice at a time. The caller sees the same answers as for any batch; a
preparation process that dies stores nothing of its batch, and the next batch gets a
new process."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest
from sms.v1 import batch_pb2, common_pb2

from server.api.batch_wire import LARGE_REQUEST_BYTES
from tests.e2e.batch_calls import numbers
from tests.e2e.conftest import Running, wait_for
from tests.e2e.errors import bad_fields

S = common_pb2
N = 20_000  # with its values, well past LARGE_REQUEST_BYTES


def campaign(given: list[str]) -> batch_pb2.CreateBatchRequest:
    return batch_pb2.CreateBatchRequest(
        use_type=S.USE_TYPE_NOTIFICATION,
        content="Hi #name#, order #order_no# shipped.",
        numbers=given,
        template_data={
            number: batch_pb2.TemplateData(values={"name": f"u{i}", "order_no": f"A-{i}"})
            for i, number in enumerate(given)
        },
    )


async def stored(running: Running, account_id: int) -> tuple[int, int, int]:
    """(batches, messages, PENDING events) of an account."""
    row = await running.gateway.pool.fetchrow(
        "SELECT (SELECT count(*) FROM batches WHERE account_id = $1),"
        " (SELECT count(*) FROM messages WHERE account_id = $1),"
        " (SELECT count(*) FROM message_events WHERE account_id = $1 AND status = 1)",
        account_id,
    )
    assert row is not None
    return row[0], row[1], row[2]


async def test_a_large_batch_is_prepared_in_another_process_and_stored_whole(
    gw: Running,
) -> None:
    client = await gw.client()
    given = numbers(N)
    given[5] = given[3]  # a duplicate
    given[N - 2] = "+861"  # invalid, in the last slice
    request = campaign(given)
    assert request.ByteSize() > LARGE_REQUEST_BYTES
    reply = await client.batches.CreateBatch(request, metadata=client.metadata)
    assert (reply.accepted_count, sorted(r.number for r in reply.rejected)) == (
        N - 2,
        sorted([given[5], "+861"]),
    )
    # Prepared by a process other than the server's.
    pids = gw.gateway.preparer.pids()
    assert pids and os.getpid() not in pids
    assert await stored(gw, client.account_id) == (1, N - 2, N - 2)
    last = N - 1
    body = await gw.gateway.pool.fetchval(
        "SELECT body FROM messages WHERE batch_id = $1 AND to_number = $2",
        reply.task_id,
        given[last],
    )
    assert body == f"Hi u{last}, order A-{last} shipped."


async def test_bad_numbers_of_a_large_batch_are_named_and_nothing_is_stored(
    gw: Running,
) -> None:
    client = await gw.client()
    given = numbers(N)
    given[7] = "+86\x00138"
    given[N - 1] = "9" * 65
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.batches.CreateBatch(campaign(given), metadata=client.metadata)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # (Their template_data keys are as unreadable as they are.)
    assert bad_fields(info.value) == {"numbers[7]", f"numbers[{N - 1}]", "template_data"}
    assert await stored(gw, client.account_id) == (0, 0, 0)


async def test_a_large_request_with_undecodable_values_is_invalid(gw: Running) -> None:
    """Its header decodes (every field but template_data); the whole does not."""
    client = await gw.client()
    body = batch_pb2.CreateBatchRequest(
        use_type=S.USE_TYPE_NOTIFICATION, content="Sale on Friday.", numbers=numbers(N)
    ).SerializeToString()
    # A template_data entry (field 5) that is not a message.
    body += bytes([5 << 3 | 2, 3]) + b"\xff\xff\xff"
    call = gw.channel.unary_unary(
        "/sms.v1.BatchService/CreateBatch",
        request_serializer=lambda raw: raw,
        response_deserializer=batch_pb2.CreateBatchResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(body, metadata=client.metadata)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(info.value) == {"request"}
    assert await stored(gw, client.account_id) == (0, 0, 0)


async def test_a_preparation_process_killed_mid_batch_stores_nothing(gw: Running) -> None:
    client = await gw.client()
    held = await gw.gateway.pool.acquire()
    tx = held.transaction()
    await tx.start()
    try:
        # The batch's first COPY waits for this lock, its preparation process one
        # slice ahead of it.
        await held.execute("LOCK TABLE messages IN SHARE MODE")
        call = asyncio.ensure_future(
            client.batches.CreateBatch(campaign(numbers(N)), metadata=client.metadata)
        )

        async def copying() -> bool:
            waiting: int = await gw.gateway.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'COPY%messages%'"
            )
            return waiting == 1

        await wait_for(copying, 60)
        busy = gw.gateway.preparer.pids()
        assert busy
        for pid in busy:
            os.kill(pid, signal.SIGKILL)
    finally:
        await tx.rollback()
        await gw.gateway.pool.release(held)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await stored(gw, client.account_id) == (0, 0, 0)
    # The next large batch gets a new process.
    reply = await client.batches.CreateBatch(campaign(numbers(N)), metadata=client.metadata)
    assert reply.accepted_count == N
    assert not set(busy) & set(gw.gateway.preparer.pids())
    assert await stored(gw, client.account_id) == (1, N, N)
