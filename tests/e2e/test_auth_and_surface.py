"""Authentication, open reflection/health, UNIMPLEMENTED for later RPCs, /healthz."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

from server.store.accounts import PgAccountStore
from tests.conftest import basic_auth
from tests.e2e.conftest import GatewayFactory, Running
from tests.e2e.errors import reason

REQUEST = message_pb2.SendMessageRequest(
    mobile="+8613800138000", use_type=common_pb2.USE_TYPE_NOTIFICATION, text="hi"
)


@pytest.mark.parametrize(
    ("metadata", "expected_reason"),
    [
        ((), "MISSING_CREDENTIALS"),
        ((("authorization", "Bearer abc"),), "BAD_CREDENTIALS"),
        ((("authorization", "Basic !!!"),), "BAD_CREDENTIALS"),
        (basic_auth("app_unknown", "sec_wrong"), "BAD_CREDENTIALS"),
    ],
)
async def test_missing_or_wrong_credentials_are_unauthenticated(
    gw: Running, metadata: tuple[tuple[str, str], ...], expected_reason: str
) -> None:
    client = await gw.client()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(REQUEST, metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(caught.value) == expected_reason


async def test_wrong_secret_for_a_real_key_is_refused(gw: Running) -> None:
    client = await gw.client()
    await client.messages.SendMessage(REQUEST, metadata=client.metadata)  # caches the good one
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(
            REQUEST, metadata=basic_auth(client.api_key, client.api_secret + "x")
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_revoked_credential_stops_working_within_a_few_seconds(gw: Running) -> None:
    client = await gw.client()
    await client.messages.SendMessage(REQUEST, metadata=client.metadata)
    assert await PgAccountStore(gw.gateway.pool).revoke_credential(client.api_key)
    await asyncio.sleep(1.2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(REQUEST, metadata=client.metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_ip_allowlist_is_enforced(gw: Running) -> None:
    store = PgAccountStore(gw.gateway.pool)
    account = await store.create_account("cidr", verified=True)
    elsewhere, secret = await store.create_credential(account.id, ["10.0.0.0/8"])
    here, here_secret = await store.create_credential(account.id, ["127.0.0.0/8", "::1/128"])
    client = await gw.client()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(REQUEST, metadata=basic_auth(elsewhere.api_key, secret))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ok = await client.messages.SendMessage(REQUEST, metadata=basic_auth(here.api_key, here_secret))
    assert ok.id


async def test_ip_allowlist_matches_ipv6_peers(start_gateway: GatewayFactory) -> None:
    running = await start_gateway(grpc_addr="[::1]:0")
    store = PgAccountStore(running.gateway.pool)
    account = await store.create_account("cidr6", verified=True)
    v4_only, v4_secret = await store.create_credential(account.id, ["127.0.0.0/8"])
    other_v6, other_secret = await store.create_credential(account.id, ["2001:db8::/32"])
    loopback_v6, v6_secret = await store.create_credential(account.id, ["::1/128"])
    async with grpc.aio.insecure_channel(f"[::1]:{running.gateway.grpc_port}") as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)
        for key, secret in ((v4_only.api_key, v4_secret), (other_v6.api_key, other_secret)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SendMessage(REQUEST, metadata=basic_auth(key, secret))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        ok = await stub.SendMessage(REQUEST, metadata=basic_auth(loopback_v6.api_key, v6_secret))
        assert ok.id


async def test_secrets_are_stored_only_as_slow_hashes(gw: Running) -> None:
    client = await gw.client()
    stored = await gw.gateway.pool.fetchval(
        "SELECT secret_hash FROM credentials WHERE api_key = $1", client.api_key
    )
    assert client.api_secret not in stored
    assert stored.startswith("scrypt$")


async def test_health_and_reflection_need_no_credentials(gw: Running) -> None:
    health = health_pb2_grpc.HealthStub(gw.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="sms.v1.MessageService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(gw.channel)
    names: set[str] = set()
    async for response in stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    ):
        names.update(s.name for s in response.list_services_response.service)
    assert {
        "sms.v1.MessageService",
        "sms.v1.VerificationService",
        "sms.v1.BatchService",
        "sms.v1.TemplateService",
        "grpc.health.v1.Health",
    } <= names


async def test_http_healthz(gw: Running) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{gw.gateway.http_port}/healthz") as response,
    ):
        assert response.status == 200
        assert (await response.json()) == {"status": "SERVING"}
