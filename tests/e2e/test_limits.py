"""Rate limits as callers meet them: refused at once with RESOURCE_EXHAUSTED, the real
wait (RetryInfo) and the quota hit (QuotaFailure); a refused send stores nothing."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from sms.v1 import common_pb2, message_pb2

from server.domain.limits import RateLimitSettings
from server.domain.models import UseType
from server.store.accounts import PgAccountStore
from tests.conftest import basic_auth
from tests.e2e.conftest import Client, GatewayFactory, Running
from tests.e2e.errors import details, reason

S = common_pb2
NO_LIMITS = RateLimitSettings(0, 0, 0, 1.0, 0)


def retry_delay(err: grpc.aio.AioRpcError) -> float:
    for item in details(err).details:
        if item.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            item.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    raise AssertionError("no RetryInfo")


def quota_subject(err: grpc.aio.AioRpcError) -> str:
    for item in details(err).details:
        if item.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            item.Unpack(failure)
            return str(failure.violations[0].subject)
    raise AssertionError("no QuotaFailure")


async def send(
    client: Client,
    mobile: str = "+8613800138000",
    use_type: S.UseType.ValueType = S.USE_TYPE_NOTIFICATION,
) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=mobile, text="Your parcel is here.", use_type=use_type
        ),
        metadata=client.metadata,
    )
    return reply.id


async def outcomes(calls: list[asyncio.Future[object]]) -> tuple[int, list[grpc.aio.AioRpcError]]:
    results = await asyncio.gather(*calls, return_exceptions=True)
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused), refused
    return len(results) - len(refused), refused


async def stored(running: Running, account_id: int) -> int:
    count: int = await running.gateway.pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1", account_id
    )
    return count


async def test_an_accounts_send_rate_refuses_at_once_and_stores_nothing(
    start_gateway: GatewayFactory,
) -> None:
    running = await start_gateway(limits=RateLimitSettings(0, 5, 0, 1.0, 0))
    client, other = await running.client(), await running.client()
    accepted, refused = await outcomes(
        [asyncio.ensure_future(send(client, f"+86138000{i:05d}")) for i in range(8)]
    )
    assert (accepted, len(refused)) == (5, 3)
    assert {reason(e) for e in refused} == {"ACCOUNT_SEND_RATE"}
    assert {quota_subject(e) for e in refused} == {f"account:{client.account_id}"}
    delays = [retry_delay(e) for e in refused]
    assert all(0 < d <= 1.0 for d in delays), delays
    assert await stored(running, client.account_id) == 5
    await send(other)  # another account has its own bucket

    await asyncio.sleep(max(delays))
    await send(client)  # the wait it was given was enough


async def test_queries_have_their_own_rate(start_gateway: GatewayFactory) -> None:
    running = await start_gateway(limits=RateLimitSettings(0, 0, 3, 1.0, 0))
    client = await running.client()
    message_id = await send(client)
    query = message_pb2.GetMessageStatusRequest(ids=[message_id])
    accepted, refused = await outcomes(
        [
            asyncio.ensure_future(client.messages.GetMessageStatus(query, metadata=client.metadata))
            for _ in range(5)
        ]
    )
    assert (accepted, len(refused)) == (3, 2)
    assert {reason(e) for e in refused} == {"ACCOUNT_QUERY_RATE"}
    await send(client)  # sending is not a query


async def test_an_account_override_replaces_the_default(start_gateway: GatewayFactory) -> None:
    running = await start_gateway(limits=RateLimitSettings(0, 100, 0, 1.0, 0))
    client = await running.client()
    await PgAccountStore(running.gateway.pool).set_rates(
        client.account_id, send_per_second=2, set_send=True
    )
    accepted, refused = await outcomes(
        [asyncio.ensure_future(send(client, f"+86138000{i:05d}")) for i in range(4)]
    )
    assert (accepted, len(refused)) == (2, 2)


async def test_the_overall_send_rate_holds_across_accounts(start_gateway: GatewayFactory) -> None:
    running = await start_gateway(limits=RateLimitSettings(4, 0, 0, 1.0, 0))
    clients = [await running.client() for _ in range(3)]
    accepted, refused = await outcomes(
        [asyncio.ensure_future(send(c, f"+86138000{i:05d}")) for i, c in enumerate(clients * 2)]
    )
    assert (accepted, len(refused)) == (4, 2)
    assert {quota_subject(e) for e in refused} == {"server"}
    assert {reason(e) for e in refused} == {"GLOBAL_SEND_RATE"}


async def test_a_mobile_interval_holds_per_use_type_and_across_replicas(
    start_gateway: GatewayFactory,
) -> None:
    intervals = {UseType.NOTIFICATION: 60.0}
    first = await start_gateway(limits=NO_LIMITS, mobile_intervals=intervals)
    client = await first.client()
    accepted, refused = await outcomes(
        [asyncio.ensure_future(send(client, "+8613800138000")) for _ in range(10)]
    )
    assert (accepted, len(refused)) == (1, 9)
    assert {reason(e) for e in refused} == {"MOBILE_INTERVAL"}
    assert {quota_subject(e) for e in refused} == {"mobile:+8613800138000"}
    assert all(55 < retry_delay(e) <= 60 for e in refused), [retry_delay(e) for e in refused]
    assert await stored(first, client.account_id) == 1

    await send(client, "+8613800138001")  # another mobile
    await send(client, "+8613800138000", S.USE_TYPE_MARKETING)  # another use type

    # A second replica on the same database knows the mobile's last message.
    second = await start_gateway(
        limits=NO_LIMITS,
        mobile_intervals=intervals,
        database_url=first.gateway.settings.database_url,
    )
    on_second = Client(**{**client.__dict__})
    stub = type(client.messages)(second.channel)
    on_second.messages = stub
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(on_second, "+8613800138000")
    assert reason(caught.value) == "MOBILE_INTERVAL"


async def test_a_source_that_fails_auth_too_often_is_refused_for_a_while(
    start_gateway: GatewayFactory,
) -> None:
    running = await start_gateway(limits=RateLimitSettings(0, 0, 0, 1.0, 3))
    client = await running.client()
    wrong = basic_auth(client.api_key, "not-the-secret")
    request = message_pb2.SendMessageRequest(
        mobile="+8613800138000", text="hi", use_type=S.USE_TYPE_NOTIFICATION
    )
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.messages.SendMessage(request, metadata=wrong)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Now even the right secret of this key (never verified yet, so it would need the
    # slow hash) is refused from this address, before any hashing.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(client)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(caught.value) == "TOO_MANY_AUTH_FAILURES"
    assert quota_subject(caught.value) == f"api_key:{client.api_key}@127.0.0.1"
    assert 0 < retry_delay(caught.value) <= 20  # one failure drains in 60/3 s
