"""BatchService end to end: partial rejection, exact counts, paging while running,
cancel mid-run, watch, priority of codes over campaigns, isolation, idempotency."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import grpc
import pytest
from sms.v1 import batch_pb2, common_pb2, verification_pb2

from server.domain.otp_guard import GuardSettings
from server.domain.verification import OtpSettings
from server.emulators.common import RunningEmulator
from server.providers.loopback import LoopbackConfig
from tests.e2e.batch_calls import create, final, get, numbers
from tests.e2e.conftest import Client, GatewayFactory, Running, wait_for
from tests.e2e.emulated import only, sky, start_skynoo
from tests.e2e.errors import bad_fields

S = common_pb2


async def test_bad_numbers_and_values_are_rejected_one_by_one(gw: Running) -> None:
    client = await gw.client()
    good = numbers(3)
    reply = await create(
        client,
        content="Order #order_no# shipped.",
        numbers=[*good, "12345", good[0], "+8613800000009"],
        template_data={
            good[0]: batch_pb2.TemplateData(values={"order_no": "A-1"}),
            good[1]: batch_pb2.TemplateData(values={"order_no": "A-2"}),
            good[2]: batch_pb2.TemplateData(values={"order_no": "x" * 33}),
            "+8613800000009": batch_pb2.TemplateData(values={}),
        },
    )
    assert reply.task_id.startswith("b_") and reply.status == S.BATCH_STATUS_PENDING
    assert reply.accepted_count == 2
    rejected = [(r.number, r.reason) for r in reply.rejected]
    assert sorted(n for n, _ in rejected) == sorted([good[2], "12345", good[0], "+8613800000009"])
    assert "duplicate" in dict(rejected)[good[0]]
    assert all(reason for _, reason in rejected)
    bodies = await gw.gateway.pool.fetch(
        "SELECT to_number, body FROM messages WHERE batch_id = $1 ORDER BY to_number",
        reply.task_id,
    )
    assert [(r["to_number"], r["body"]) for r in bodies] == [
        (good[0], "Order A-1 shipped."),
        (good[1], "Order A-2 shipped."),
    ]


async def test_a_batch_runs_to_succeeded_with_exact_counts(gw: Running) -> None:
    client = await gw.client()
    reply = await create(client, content="Hello from the campaign.", numbers=numbers(120))
    batch = await final(client, reply.task_id)
    assert batch.status == S.BATCH_STATUS_SUCCEEDED
    assert (batch.total, batch.sent, batch.delivered, batch.failed) == (120, 120, 120, 0)
    assert batch.updated_at.ToDatetime() >= batch.created_at.ToDatetime()


async def test_a_batch_nobody_can_carry_fails(start_gateway: GatewayFactory) -> None:
    running = await start_gateway(loopback=LoopbackConfig(failure_rate=1.0), max_attempts=1)
    client = await running.client()
    batch = await final(client, (await create(client, content="x", numbers=numbers(5))).task_id)
    assert (batch.status, batch.sent, batch.failed) == (S.BATCH_STATUS_FAILED, 0, 5)


async def test_paging_a_running_batch_has_no_gaps_or_duplicates(
    start_gateway: GatewayFactory,
) -> None:
    running = await start_gateway(dispatch_claim_size=7, loopback=LoopbackConfig(0.05))
    client = await running.client()
    reply = await create(client, content="Paging test.", numbers=numbers(333))
    seen: list[str] = []
    token = ""
    while True:
        page = await client.batches.ListBatchMessages(
            batch_pb2.ListBatchMessagesRequest(
                task_id=reply.task_id, page_size=40, page_token=token
            ),
            metadata=client.metadata,
        )
        assert page.total_size == 333 and len(page.messages) <= 40
        seen.extend(m.id for m in page.messages)
        token = page.next_page_token
        if not token:
            break
        await asyncio.sleep(0.02)  # the batch keeps running meanwhile
    stored = await running.gateway.pool.fetch(
        "SELECT id FROM messages WHERE batch_id = $1", reply.task_id
    )
    assert len(seen) == len(set(seen)) == 333
    assert set(seen) == {r["id"] for r in stored}
    big = await client.batches.ListBatchMessages(
        batch_pb2.ListBatchMessagesRequest(task_id=reply.task_id, page_size=1000),
        metadata=client.metadata,
    )
    assert len(big.messages) == 100  # coerced to the maximum (AIP-158)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.batches.ListBatchMessages(
            batch_pb2.ListBatchMessagesRequest(task_id=reply.task_id, page_size=-1),
            metadata=client.metadata,
        )
    assert bad_fields(caught.value) == {"page_size"}


async def test_cancel_stops_what_no_provider_has_yet(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    slow = await start_skynoo(emulators, latency=0.2, delivery_delay=0.05)
    running = await start_gateway(
        routing=only(sky(slow)),
        dispatch_workers=1,
        dispatch_claim_size=5,
        poll_interval_seconds=0.2,
    )
    client = await running.client()
    reply = await create(client, content="Cancel me.", numbers=numbers(200))
    await wait_for(lambda: _sent_some(client, reply.task_id), within=10)
    cancelled = await client.batches.CancelBatch(
        batch_pb2.CancelBatchRequest(task_id=reply.task_id), metadata=client.metadata
    )
    assert cancelled.status == S.BATCH_STATUS_CANCELLED

    # Messages handed out before the cancel go on to the end.
    async def settled() -> bool:
        left = await running.gateway.pool.fetchval(
            "SELECT count(*) FROM messages WHERE batch_id = $1 AND status < 3", reply.task_id
        )
        return bool(left == 0)

    await wait_for(settled, within=20)
    batch = await get(client, reply.task_id)
    counts: dict[int, int] = {
        status: n
        for status, n in await running.gateway.pool.fetch(
            "SELECT status, count(*) FROM messages WHERE batch_id = $1 GROUP BY status",
            reply.task_id,
        )
    }
    handed_out = 200 - counts.get(S.MESSAGE_STATUS_CANCELLED, 0)
    assert 0 < handed_out < 200
    assert batch.status == S.BATCH_STATUS_CANCELLED
    assert batch.sent == handed_out == len(slow.state.received)


async def _sent_some(client: Client, task_id: str) -> bool:
    return (await get(client, task_id)).sent >= 5


async def test_watch_streams_snapshots_until_final(gw: Running) -> None:
    client = await gw.client()
    reply = await create(client, content="Watch me.", numbers=numbers(60))
    snapshots = []
    async for batch in client.batches.WatchBatch(
        batch_pb2.WatchBatchRequest(task_id=reply.task_id), metadata=client.metadata
    ):
        snapshots.append(batch)
    assert snapshots[-1].status == S.BATCH_STATUS_SUCCEEDED
    assert snapshots[-1].delivered == 60
    delivered = [s.delivered for s in snapshots]
    assert delivered == sorted(delivered)
    assert len(snapshots) == len({(s.status, s.sent, s.delivered) for s in snapshots})


async def test_a_code_sent_during_a_large_batch_is_delivered_before_it_finishes(
    start_gateway: GatewayFactory,
) -> None:
    running = await start_gateway(
        otp=OtpSettings(mobile_interval_seconds=0, guard=GuardSettings(0, 3600, 0, 3600)),
        # Requests of at most 100 numbers keep claims at 100, so the batch is far from
        # done when the code comes (with claims grown to 1,000 it could finish first).
        loopback=LoopbackConfig(0.01, max_bulk=100),
    )
    client = await running.client()
    reply = await create(client, content="Big sale today.", numbers=numbers(10_000))
    code = await client.verifications.SendVerification(
        verification_pb2.SendVerificationRequest(mobile="+8613999999999", code="4711"),
        metadata=client.metadata,
    )

    async def code_delivered() -> bool:
        status = await running.gateway.pool.fetchval(
            "SELECT status FROM messages WHERE id = $1", code.message_id
        )
        return bool(status == S.MESSAGE_STATUS_DELIVERED)

    await wait_for(code_delivered, within=30, interval=0.02)
    batch = await get(client, reply.task_id)
    assert batch.delivered < 10_000
    assert (await final(client, reply.task_id, within=120)).delivered == 10_000


async def test_a_large_campaign_does_not_hold_back_another_accounts_batch(
    start_gateway: GatewayFactory,
) -> None:
    # Requests of at most 100 numbers keep claims at 100 (they grow to a full request
    # after a claim that shared requests), so the big campaign takes 40 claims and
    # the small batch comes while it is far from done.
    running = await start_gateway(loopback=LoopbackConfig(0.01, max_bulk=100))
    early, late = await running.client(), await running.client()
    big = await create(early, content="Big sale today.", numbers=numbers(4_000))
    small = await create(late, content="Our own news.", numbers=numbers(200, start=50_000))

    done = await final(late, small.task_id, within=60)
    assert done.delivered == 200
    # Without a share per account the small batch would wait for all 4,000 first.
    assert (await get(early, big.task_id)).sent < 3_000
    assert (await final(early, big.task_id, within=120)).delivered == 4_000


async def test_other_accounts_batches_are_not_found(gw: Running) -> None:
    alice, bob = await gw.client(), await gw.client()
    reply = await create(alice, content="Mine.", numbers=numbers(2))
    calls: list[Awaitable[object]] = [
        bob.batches.GetBatch(
            batch_pb2.GetBatchRequest(task_id=reply.task_id), metadata=bob.metadata
        ),
        bob.batches.CancelBatch(
            batch_pb2.CancelBatchRequest(task_id=reply.task_id), metadata=bob.metadata
        ),
        bob.batches.ListBatchMessages(
            batch_pb2.ListBatchMessagesRequest(task_id=reply.task_id), metadata=bob.metadata
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in bob.batches.WatchBatch(
            batch_pb2.WatchBatchRequest(task_id=reply.task_id), metadata=bob.metadata
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_limits_validation_and_idempotency(gw: Running) -> None:
    client = await gw.client()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(client, content="x", numbers=numbers(100_001))
    assert bad_fields(caught.value) == {"numbers"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(client, numbers=numbers(1), use_type=S.USE_TYPE_UNSPECIFIED)
    assert bad_fields(caught.value) == {"use_type", "content"}
    first = await create(client, content="Once.", numbers=numbers(3), request_id="camp-1")
    again = await create(client, content="Once.", numbers=numbers(3), request_id="camp-1")
    assert again.task_id == first.task_id and again.accepted_count == 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(client, content="Twice.", numbers=numbers(3), request_id="camp-1")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    unverified = await gw.client(verified=False)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(unverified, content="Promo", numbers=numbers(1), use_type=S.USE_TYPE_MARKETING)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_nul_in_template_data_is_a_bad_field_not_an_internal_error(
    start_gateway: GatewayFactory,
) -> None:
    # PostgreSQL stores no NUL (text or jsonb): a key, a variable name or a value with
    # one is refused at the call, naming template_data, and nothing is stored.
    running = await start_gateway()
    client = await running.client()
    for values in ({"na\x00me": "x"}, {"name": "x\x00y"}):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await create(
                client,
                content="Hi #name#",
                numbers=numbers(2),
                template_data={numbers(1)[0]: batch_pb2.TemplateData(values=values)},
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(refused.value) == {"template_data"}
    assert await running.gateway.pool.fetchval("SELECT count(*) FROM batches") == 0
