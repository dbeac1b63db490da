"""Account guardrails end to end, set through AccountService by an admin credential:
allowed_countries on every send path, and the daily caps held across two replicas
on one database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from sms.v1 import (
    account_pb2,
    account_pb2_grpc,
    batch_pb2,
    common_pb2,
    message_pb2,
    message_pb2_grpc,
)

from server.store.accounts import PgAccountStore
from tests.conftest import basic_auth
from tests.e2e.batch_calls import create
from tests.e2e.conftest import Client, GatewayFactory, Running
from tests.e2e.errors import details, reason
from tests.e2e.test_verification import otp
from tests.e2e.test_verification import send as send_code

CN, CN2, CN3 = "+8613800138000", "+8613900139000", "+8613700137000"
GB = "+447400123456"
NOTE = common_pb2.USE_TYPE_NOTIFICATION
A = account_pb2


@pytest.fixture(scope="module")
async def running(start_gateway: GatewayFactory) -> Running:
    return await start_gateway(otp=otp())


@pytest.fixture(scope="module")
async def admin(running: Running) -> tuple[tuple[str, str], ...]:
    store = PgAccountStore(running.gateway.pool)
    ops = await store.create_account("ops", verified=True)
    credential, secret = await store.create_credential(ops.id, admin=True)
    return basic_auth(credential.api_key, secret)


async def set_guardrails(
    running: Running, admin: tuple[tuple[str, str], ...], client: Client, **fields: object
) -> A.Account:
    stub = account_pb2_grpc.AccountServiceStub(running.channel)
    updated: A.Account = await stub.UpdateAccount(
        A.UpdateAccountRequest(
            account=A.Account(id=client.account_id, **fields),  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
        ),
        metadata=admin,
    )
    # Servers read an account's settings again within a second (the auth cache).
    await asyncio.sleep(1.1)
    return updated


async def send_text(client: Client, mobile: str) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(mobile=mobile, use_type=NOTE, text="Hello"),
        metadata=client.metadata,
    )
    return reply.id


def retry_seconds(err: grpc.aio.AioRpcError) -> float:
    for packed in details(err).details:
        if packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            packed.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    raise AssertionError("no RetryInfo")


def until_midnight() -> float:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


async def test_allowed_countries_hold_for_every_use_type_and_in_batches(
    running: Running, admin: tuple[tuple[str, str], ...]
) -> None:
    client = await running.client()
    assert await send_text(client, GB)
    shown = await set_guardrails(running, admin, client, allowed_countries=["cn", "HK"])
    assert list(shown.allowed_countries) == ["CN", "HK"]

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await send_text(client, GB)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(refused.value) == "COUNTRY_NOT_ALLOWED"
    with pytest.raises(grpc.aio.AioRpcError) as code_refused:
        await send_code(client, GB)
    assert reason(code_refused.value) == "COUNTRY_NOT_ALLOWED"
    assert await send_text(client, CN)

    batch = await create(client, content="Sale", numbers=[CN2, GB])
    assert batch.accepted_count == 1
    assert [(r.number, r.reason.split(":")[0]) for r in batch.rejected] == [
        (GB, "COUNTRY_NOT_ALLOWED")
    ]
    only_abroad = await create(client, content="Sale", numbers=[GB])
    assert (only_abroad.accepted_count, only_abroad.status) == (
        0,
        common_pb2.BATCH_STATUS_FAILED,
    )

    # Emptied: every country again.
    await set_guardrails(running, admin, client, allowed_countries=[])
    assert await send_text(client, GB)


async def test_the_daily_cap_refuses_until_the_day_ends_and_stores_nothing(
    running: Running, admin: tuple[tuple[str, str], ...]
) -> None:
    client = await running.client()
    await set_guardrails(running, admin, client, daily_message_cap=4)
    for mobile in (CN, CN2, CN3):
        assert await send_text(client, mobile)
    # A batch of two would pass the cap: refused whole, nothing stored.
    with pytest.raises(grpc.aio.AioRpcError) as batch_refused:
        await create(client, content="Sale", numbers=[CN, CN2])
    assert batch_refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(batch_refused.value) == "DAILY_MESSAGE_CAP"
    assert (await send_code(client, CN)).verify_id  # the fourth
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await send_text(client, GB)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(refused.value) == "DAILY_MESSAGE_CAP"
    assert 0 < retry_seconds(refused.value) <= until_midnight() + 1
    stored = await running.gateway.pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1", client.account_id
    )
    assert stored == 4


async def test_the_per_mobile_cap_refuses_that_number_only(
    running: Running, admin: tuple[tuple[str, str], ...]
) -> None:
    client = await running.client()
    await set_guardrails(running, admin, client, per_mobile_daily_cap=2)
    assert await send_text(client, CN)
    assert await send_text(client, CN)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await send_text(client, CN)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(refused.value) == "PER_MOBILE_DAILY_CAP"
    assert 0 < retry_seconds(refused.value) <= until_midnight() + 1
    assert await send_text(client, CN2)
    batch = await create(client, content="Sale", numbers=[CN, CN2, CN3])
    assert batch.accepted_count == 2
    assert [(r.number, r.reason.split(":")[0]) for r in batch.rejected] == [
        (CN, "PER_MOBILE_DAILY_CAP")
    ]
    got = await client.batches.GetBatch(
        batch_pb2.GetBatchRequest(task_id=batch.task_id), metadata=client.metadata
    )
    assert got.total == 2
    # CN2 is now at two as well.
    with pytest.raises(grpc.aio.AioRpcError) as second:
        await send_text(client, CN2)
    assert reason(second.value) == "PER_MOBILE_DAILY_CAP"


async def test_two_replicas_on_one_database_hold_one_daily_cap(
    running: Running, start_gateway: GatewayFactory, admin: tuple[tuple[str, str], ...]
) -> None:
    other = await start_gateway(database_url=running.gateway.settings.database_url)
    client = await running.client()
    await set_guardrails(running, admin, client, daily_message_cap=10)
    stubs = [client.messages, message_pb2_grpc.MessageServiceStub(other.channel)]
    numbers = [f"+86138001{i:05d}" for i in range(40)]

    async def one(i: int) -> bool:
        try:
            await stubs[i % 2].SendMessage(
                message_pb2.SendMessageRequest(mobile=numbers[i], use_type=NOTE, text="Hi"),
                metadata=client.metadata,
            )
            return True
        except grpc.aio.AioRpcError as exc:
            assert reason(exc) == "DAILY_MESSAGE_CAP", exc
            return False

    results = await asyncio.gather(*(one(i) for i in range(40)))
    assert sum(results) == 10
    stored = await running.gateway.pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1", client.account_id
    )
    assert stored == 10
