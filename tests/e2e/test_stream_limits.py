"""Server streams are capped per account (SMSGW_MAX_STREAMS_PER_ACCOUNT) and per process
(SMSGW_MAX_STREAMS): past a cap a new stream is refused with RESOURCE_EXHAUSTED and
RetryInfo, while unary calls go on answering."""

from __future__ import annotations

import asyncio
import statistics
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from sms.v1 import common_pb2, message_pb2

from server.providers.loopback import LoopbackConfig
from tests.e2e.conftest import Client, GatewayFactory, Running
from tests.e2e.errors import details, reason

PER_ACCOUNT, TOTAL = 3, 5
CN = "+8613800138000"


@pytest.fixture(scope="module")
async def capped(start_gateway: GatewayFactory) -> Running:
    # Messages stay SENT (no receipt for a minute): their watches stay open.
    return await start_gateway(
        max_streams_per_account=PER_ACCOUNT,
        max_streams=TOTAL,
        loopback=LoopbackConfig(delivery_delay=60),
    )


async def send(client: Client) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=CN, text="hi", use_type=common_pb2.USE_TYPE_NOTIFICATION
        ),
        metadata=client.metadata,
    )
    return reply.id


async def open_watch(
    client: Client, message_id: str
) -> grpc.aio.UnaryStreamCall[
    message_pb2.WatchMessageStatusRequest, message_pb2.MessageStatusEvent
]:
    """A watch of one open message, once its first event (the snapshot) arrived: the
    server holds it from then on."""
    call = client.messages.WatchMessageStatus(
        message_pb2.WatchMessageStatusRequest(ids=[message_id]), metadata=client.metadata
    )
    await asyncio.wait_for(call.read(), 5)
    return call


async def refused(client: Client, message_id: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await open_watch(client, message_id)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = [
        d for d in details(caught.value).details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)
    ]
    assert retry, "no RetryInfo"
    return caught.value


async def test_streams_are_capped_per_account_then_per_server(capped: Running) -> None:
    alice, bob = await capped.client(), await capped.client()
    a_msg, b_msg = await send(alice), await send(bob)
    alice_streams = [await open_watch(alice, a_msg) for _ in range(PER_ACCOUNT)]
    assert reason(await refused(alice, a_msg)) == "ACCOUNT_STREAMS"

    # Bob is not held by Alice's cap, only by what is left of the server's.
    bob_streams = [await open_watch(bob, b_msg) for _ in range(TOTAL - PER_ACCOUNT)]
    assert reason(await refused(bob, b_msg)) == "SERVER_STREAMS"

    # Unary calls are not streams: Bob's sends and queries answer, and fast.
    latencies = []
    for _ in range(20):
        started = time.perf_counter()
        reply = await bob.messages.GetMessageStatus(
            message_pb2.GetMessageStatusRequest(ids=[b_msg]), metadata=bob.metadata
        )
        latencies.append(time.perf_counter() - started)
        assert reply.messages[0].id == b_msg
    assert statistics.median(latencies) < 0.2
    await send(bob)

    # A stream that ends frees its place.
    alice_streams.pop().cancel()
    deadline = time.monotonic() + 3
    while True:
        try:
            alice_streams.append(await open_watch(alice, a_msg))
            break
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline, "the ended stream still counts"
            await asyncio.sleep(0.05)
    for call in alice_streams + bob_streams:
        call.cancel()
