"""Idempotency where clients retry: repeats of a request_id made while the first call
is still running get the first call's result, and only one thing is stored."""

from __future__ import annotations

import asyncio

from sms.v1 import batch_pb2, common_pb2, message_pb2, verification_pb2

from tests.e2e.batch_calls import numbers
from tests.e2e.conftest import Running

S = common_pb2


async def count(gw: Running, sql: str, account_id: int) -> int:
    found: int = await gw.gateway.pool.fetchval(sql, account_id)
    return found


async def test_concurrent_repeats_of_a_send_store_one_message(gw: Running) -> None:
    client = await gw.client()
    request = message_pb2.SendMessageRequest(
        mobile="+8613800138000",
        text="Order 7 shipped.",
        use_type=S.USE_TYPE_NOTIFICATION,
        request_id="ship-7",
    )
    replies = await asyncio.gather(
        *(client.messages.SendMessage(request, metadata=client.metadata) for _ in range(8))
    )
    assert len({r.id for r in replies}) == 1
    sql = "SELECT count(*) FROM messages WHERE account_id = $1"
    assert await count(gw, sql, client.account_id) == 1


async def test_concurrent_repeats_of_a_verification_send_one_code(gw: Running) -> None:
    client = await gw.client()
    request = verification_pb2.SendVerificationRequest(
        mobile="+8613800138111", code="4711", request_id="signup-9"
    )
    replies = await asyncio.gather(
        *(
            client.verifications.SendVerification(request, metadata=client.metadata)
            for _ in range(8)
        )
    )
    assert len({r.verify_id for r in replies}) == 1
    assert len({r.message_id for r in replies}) == 1
    sql = "SELECT count(*) FROM verifications WHERE account_id = $1"
    assert await count(gw, sql, client.account_id) == 1


async def test_repeats_of_a_large_batch_made_while_it_is_stored_get_the_same_task(
    gw: Running,
) -> None:
    client = await gw.client()
    request = batch_pb2.CreateBatchRequest(
        use_type=S.USE_TYPE_NOTIFICATION,
        content="Store opening on Friday.",
        numbers=numbers(5_000),
        request_id="campaign-3",
    )
    replies = await asyncio.gather(
        *(client.batches.CreateBatch(request, metadata=client.metadata) for _ in range(4))
    )
    assert len({r.task_id for r in replies}) == 1
    assert {r.accepted_count for r in replies} == {5_000}
    batches = "SELECT count(*) FROM batches WHERE account_id = $1"
    messages = "SELECT count(*) FROM messages WHERE account_id = $1"
    assert await count(gw, batches, client.account_id) == 1
    assert await count(gw, messages, client.account_id) == 5_000
