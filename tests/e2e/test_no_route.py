"""What routing can tell at call time is refused at the call (issue 15, item 5).

A message no route can carry (no route for the number, or only providers that cannot
carry its content) answers FAILED_PRECONDITION with ErrorInfo reason NO_ROUTE and
stores nothing, instead of being accepted and then failing at dispatch. Only a
route taken away after the call (a reload) still ends a message FAILED with NO_ROUTE.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sms.v1 import batch_pb2, common_pb2, message_pb2, verification_pb2

from server.api.batch_wire import LARGE_REQUEST_BYTES
from server.emulators.common import RunningEmulator
from server.routes_file import ProviderSpec, RouteSpec, RoutingConfig
from tests.e2e.batch_calls import create, final
from tests.e2e.conftest import Client, GatewayFactory, Running, final_state
from tests.e2e.emulated import cloud, failover, sky, start_sendcloud, start_skynoo
from tests.e2e.errors import reason

S = common_pb2
CHINA_ONLY = RoutingConfig(
    providers=(ProviderSpec("cn_a", "loopback"), ProviderSpec("cn_b", "loopback")),
    routes=(RouteSpec(providers=("cn_a",), prefixes=("+86",)),),
)
CN, US = "+8613800138000", "+14155550123"


async def send(client: Client, mobile: str, **fields: object) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=mobile,
            use_type=S.USE_TYPE_NOTIFICATION,
            text="hello",
            **fields,  # type: ignore[arg-type]
        ),
        metadata=client.metadata,
    )
    return reply.id


async def stored(running: Running) -> int:
    count: int = await running.gateway.pool.fetchval("SELECT count(*) FROM messages")
    return count


def refused_for_no_route(err: grpc.aio.AioRpcError) -> bool:
    return err.code() == grpc.StatusCode.FAILED_PRECONDITION and reason(err) == "NO_ROUTE"


async def test_a_number_no_route_covers_is_refused_at_the_call(
    start_gateway: GatewayFactory,
) -> None:
    running = await start_gateway(routing=CHINA_ONLY)
    client = await running.client()
    china = await final_state(client, await send(client, CN))
    assert (china.status, china.provider) == (S.MESSAGE_STATUS_DELIVERED, "cn_a")
    before = await stored(running)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(client, US)
    assert refused_for_no_route(caught.value), caught.value
    assert "route" in (caught.value.details() or "")
    assert await stored(running) == before

    # A verification code to that number: the same, before any code is made.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.verifications.SendVerification(
            verification_pb2.SendVerificationRequest(mobile=US), metadata=client.metadata
        )
    assert refused_for_no_route(caught.value), caught.value
    assert await stored(running) == before
    assert await running.gateway.pool.fetchval("SELECT count(*) FROM verifications") == 0


async def test_free_text_to_template_only_providers_is_refused(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    sendcloud = await start_sendcloud(emulators, delivery_delay=0.1)
    running = await start_gateway(
        routing=RoutingConfig(
            providers=(cloud(sendcloud),), routes=(RouteSpec(providers=("cloud",)),)
        )
    )
    client = await running.client()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(client, CN)
    assert refused_for_no_route(caught.value), caught.value
    assert await stored(running) == 0
    assert sendcloud.state.received == []


async def test_a_batch_keeps_the_numbers_a_route_covers(start_gateway: GatewayFactory) -> None:
    running = await start_gateway(routing=CHINA_ONLY)
    client = await running.client()
    reply = await create(client, content="Campaign.", numbers=[CN, US, "+8613900139000"])
    assert reply.accepted_count == 2
    assert [r.number for r in reply.rejected] == [US]
    assert reply.rejected[0].reason.startswith("NO_ROUTE")
    batch = await final(client, reply.task_id)
    assert (batch.status, batch.total, batch.delivered) == (S.BATCH_STATUS_SUCCEEDED, 2, 2)

    # No number covered: the whole call is refused, no batch stored.
    batches = await running.gateway.pool.fetchval("SELECT count(*) FROM batches")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(client, content="Campaign.", numbers=[US, "+14155550124"])
    assert refused_for_no_route(caught.value), caught.value
    assert await running.gateway.pool.fetchval("SELECT count(*) FROM batches") == batches


async def test_a_large_batch_prepared_in_its_process_keeps_the_numbers_a_route_covers(
    start_gateway: GatewayFactory,
) -> None:
    """The preparation process's rows are routed by number, as a small batch's messages."""
    running = await start_gateway(routing=CHINA_ONLY)
    client = await running.client()
    given = [f"+86138{i:08d}" if i % 3 else f"+447911{i:06d}" for i in range(12_000)]
    request = batch_pb2.CreateBatchRequest(
        use_type=S.USE_TYPE_NOTIFICATION,
        content="Hi #name#.",
        numbers=given,
        template_data={
            n: batch_pb2.TemplateData(values={"name": f"u{i}"}) for i, n in enumerate(given)
        },
    )
    assert request.ByteSize() > LARGE_REQUEST_BYTES
    reply = await client.batches.CreateBatch(request, metadata=client.metadata)
    uk = [n for n in given if n.startswith("+44")]
    assert reply.accepted_count == len(given) - len(uk)
    assert sorted(r.number for r in reply.rejected) == sorted(uk)
    assert {r.reason.split(":")[0] for r in reply.rejected} == {"NO_ROUTE"}
    assert running.gateway.preparer.pids()
    stored_numbers = await running.gateway.pool.fetch(
        "SELECT to_number FROM messages WHERE batch_id = $1", reply.task_id
    )
    assert not {r["to_number"] for r in stored_numbers} & set(uk)


async def test_a_route_taken_away_after_the_call_still_fails_with_no_route(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    skynoo = await start_skynoo(emulators, delivery_delay=0.1)
    sendcloud = await start_sendcloud(emulators, delivery_delay=0.1)
    running = await start_gateway(routing=failover(sky(skynoo), cloud(sendcloud)))
    client = await running.client()
    later = timestamp_pb2.Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(seconds=1.5))
    message_id = await send(client, CN, send_at=later)  # Skynoo takes free text
    template_only = RoutingConfig(
        providers=(cloud(sendcloud),), routes=(RouteSpec(providers=("cloud",)),)
    )
    await running.gateway.reload(
        dataclasses.replace(running.gateway.settings, routing=template_only)
    )
    state = await final_state(client, message_id)
    assert (state.status, state.error_code) == (S.MESSAGE_STATUS_FAILED, "NO_ROUTE")
    assert skynoo.state.received == [] and sendcloud.state.received == []
