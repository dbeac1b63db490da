"""Batches through a provider's bulk API (issue 15), end to end on the loopback
provider: few requests, each number's outcome on its own message, cancel, retries
without duplicates, and the switch that turns it off."""

from __future__ import annotations

from sms.v1 import batch_pb2, common_pb2

from server.providers.loopback import LoopbackConfig, LoopbackTransport
from tests.e2e.batch_calls import create, final, get, numbers
from tests.e2e.conftest import GatewayFactory, Running, wait_for

S = common_pb2


def loopback(running: Running) -> LoopbackTransport:
    transport = running.gateway.providers().transports["loopback"]
    assert isinstance(transport, LoopbackTransport)
    return transport


async def batch_ids(running: Running, task_id: str) -> set[str]:
    rows = await running.gateway.pool.fetch("SELECT id FROM messages WHERE batch_id = $1", task_id)
    return {r["id"] for r in rows}


async def test_a_batch_goes_out_in_few_requests_and_every_number_is_delivered(
    start_gateway: GatewayFactory,
) -> None:
    running = await start_gateway(loopback=LoopbackConfig(delivery_delay=0.05, max_bulk=40))
    client = await running.client()
    reply = await create(
        client,
        content="Hi #name#, sale today.",
        numbers=numbers(300),
        template_data={
            n: batch_pb2.TemplateData(values={"name": f"u{i}"}) for i, n in enumerate(numbers(300))
        },
    )
    batch = await final(client, reply.task_id)
    assert (batch.status, batch.sent, batch.delivered, batch.failed) == (
        S.BATCH_STATUS_SUCCEEDED,
        300,
        300,
        0,
    )
    lb = loopback(running)
    # Claims of 100 split into requests of at most 40: a handful, never one a number.
    assert 8 <= lb.bulk_requests == lb.requests <= 30
    assert lb.accepted.keys() == await batch_ids(running, reply.task_id)
    assert set(lb.accepted.values()) == {1}


async def test_with_bulk_off_every_number_is_its_own_request(
    start_gateway: GatewayFactory,
) -> None:
    running = await start_gateway(
        dispatch_bulk=False, loopback=LoopbackConfig(delivery_delay=0.05, max_bulk=40)
    )
    client = await running.client()
    batch = await final(client, (await create(client, content="x", numbers=numbers(60))).task_id)
    assert batch.delivered == 60
    lb = loopback(running)
    assert (lb.requests, lb.bulk_requests) == (60, 0)


async def test_refused_numbers_fail_alone_and_the_rest_of_their_request_is_sent(
    start_gateway: GatewayFactory,
) -> None:
    refused = ("+8613800000007", "+861380000002")  # a number and a prefix (20-29)
    running = await start_gateway(
        loopback=LoopbackConfig(delivery_delay=0.05, max_bulk=50, refused=refused)
    )
    client = await running.client()
    reply = await create(client, content="Refuse some.", numbers=numbers(100))
    batch = await final(client, reply.task_id)
    assert (batch.status, batch.sent, batch.delivered, batch.failed) == (
        S.BATCH_STATUS_SUCCEEDED,
        89,
        89,
        11,
    )
    rows = await running.gateway.pool.fetch(
        "SELECT to_number, status, error_code FROM messages WHERE batch_id = $1 AND status <> $2",
        reply.task_id,
        S.MESSAGE_STATUS_DELIVERED,
    )
    assert sorted(r["to_number"] for r in rows) == sorted(
        [refused[0], *(f"{refused[1]}{d}" for d in range(10))]
    )
    assert {(r["status"], r["error_code"]) for r in rows} == {
        (S.MESSAGE_STATUS_REJECTED, "LOOPBACK_REFUSED")
    }
    assert loopback(running).bulk_requests <= 4  # refusals did not split the requests


async def test_retries_after_transient_failures_resend_only_what_failed(
    start_gateway: GatewayFactory,
) -> None:
    running = await start_gateway(
        max_attempts=30,
        retries_per_provider=30,
        loopback=LoopbackConfig(delivery_delay=0.05, max_bulk=50, failure_rate=0.3),
    )
    client = await running.client()
    reply = await create(client, content="Try again.", numbers=numbers(200))
    batch = await final(client, reply.task_id, within=60)
    assert (batch.status, batch.delivered, batch.failed) == (S.BATCH_STATUS_SUCCEEDED, 200, 0)
    lb = loopback(running)
    # Each message reached the provider once although many requests failed in part.
    assert lb.accepted.keys() == await batch_ids(running, reply.task_id)
    assert set(lb.accepted.values()) == {1}
    retried = await running.gateway.pool.fetchval(
        "SELECT count(*) FROM messages WHERE batch_id = $1 AND attempts > 1", reply.task_id
    )
    assert retried >= 20
    sent_events = await running.gateway.pool.fetch(
        "SELECT message_id, count(*) AS n FROM message_events "
        "WHERE batch_id = $1 AND status = $2 GROUP BY message_id",
        reply.task_id,
        S.MESSAGE_STATUS_SENT,
    )
    assert len(sent_events) == 200 and {r["n"] for r in sent_events} == {1}


async def test_cancel_mid_way_stops_the_requests_not_yet_made(
    start_gateway: GatewayFactory,
) -> None:
    running = await start_gateway(
        dispatch_workers=1,
        dispatch_claim_size=10,
        loopback=LoopbackConfig(delivery_delay=0.05, max_bulk=10, latency=0.2),
    )
    client = await running.client()
    reply = await create(client, content="Cancel me.", numbers=numbers(300))

    async def sent_some() -> bool:
        return (await get(client, reply.task_id)).sent >= 10

    await wait_for(sent_some, within=10)
    cancelled = await client.batches.CancelBatch(
        batch_pb2.CancelBatchRequest(task_id=reply.task_id), metadata=client.metadata
    )
    assert cancelled.status == S.BATCH_STATUS_CANCELLED

    async def settled() -> bool:
        left = await running.gateway.pool.fetchval(
            "SELECT count(*) FROM messages WHERE batch_id = $1 AND status < 3", reply.task_id
        )
        return bool(left == 0)

    await wait_for(settled, within=10)
    rows = await running.gateway.pool.fetch(
        "SELECT id, status FROM messages WHERE batch_id = $1", reply.task_id
    )
    cancelled_ids = {r["id"] for r in rows if r["status"] == S.MESSAGE_STATUS_CANCELLED}
    lb = loopback(running)
    assert 0 < len(lb.accepted) < 300
    assert len(cancelled_ids) == 300 - len(lb.accepted)
    assert not cancelled_ids & lb.accepted.keys()  # nothing cancelled reached the provider
    batch = await get(client, reply.task_id)
    assert batch.status == S.BATCH_STATUS_CANCELLED and batch.sent == len(lb.accepted)
    assert lb.bulk_requests == lb.requests <= len(lb.accepted) // 10 + 1
