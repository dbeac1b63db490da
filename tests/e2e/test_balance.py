"""Prepaid balances end to end: charged per segment at the routing file's price for
the country when a message is accepted, never below zero under a race across two
replicas, refunded for messages no provider took; TopUpBalance adds to it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from sms.v1 import (
    account_pb2,
    account_pb2_grpc,
    batch_pb2,
    common_pb2,
    message_pb2,
    message_pb2_grpc,
    suppression_pb2,
    suppression_pb2_grpc,
)

from server.api.batch_wire import LARGE_REQUEST_BYTES
from server.routes_file import DEFAULT_ROUTING, RoutingConfig
from server.store.accounts import PgAccountStore
from tests.conftest import basic_auth
from tests.e2e.batch_calls import create, numbers
from tests.e2e.conftest import Client, GatewayFactory, Running, final_state, wait_for
from tests.e2e.errors import reason
from tests.e2e.test_verification import otp
from tests.e2e.test_verification import send as send_code

CN, CN2, CN3 = "+8613800138000", "+8613900139000", "+8613700137000"
GB, US = "+447400123456", "+14155552671"
NOTE = common_pb2.USE_TYPE_NOTIFICATION
A = account_pb2
# A segment to China costs 5, to the UK 20; the US has no price.
PRICED = RoutingConfig(DEFAULT_ROUTING.providers, DEFAULT_ROUTING.routes, {"CN": 5, "GB": 20})
LONG = "x" * 200  # two GSM-7 segments


@pytest.fixture(scope="module")
async def running(start_gateway: GatewayFactory) -> Running:
    return await start_gateway(routing=PRICED, otp=otp())


@pytest.fixture(scope="module")
async def admin(running: Running) -> tuple[tuple[str, str], ...]:
    store = PgAccountStore(running.gateway.pool)
    ops = await store.create_account("ops", verified=True)
    credential, secret = await store.create_credential(ops.id, admin=True)
    return basic_auth(credential.api_key, secret)


def accounts(running: Running) -> account_pb2_grpc.AccountServiceAsyncStub:
    stub: account_pb2_grpc.AccountServiceAsyncStub = account_pb2_grpc.AccountServiceStub(
        running.channel
    )
    return stub


async def prepaid(
    running: Running, admin: tuple[tuple[str, str], ...], amount: int
) -> tuple[Client, A.Account]:
    client = await running.client()
    account = await accounts(running).TopUpBalance(
        A.TopUpBalanceRequest(account_id=client.account_id, amount=amount), metadata=admin
    )
    await asyncio.sleep(1.1)  # servers see the account turn prepaid within a second
    return client, account


async def balance(running: Running, admin: tuple[tuple[str, str], ...], client: Client) -> int:
    account = await accounts(running).GetAccount(
        A.GetAccountRequest(id=client.account_id), metadata=admin
    )
    return account.balance


async def send_text(
    client: Client,
    mobile: str,
    text: str = "Hello",
    stub: message_pb2_grpc.MessageServiceAsyncStub | None = None,
    send_at: timestamp_pb2.Timestamp | None = None,
) -> str:
    messages = stub or client.messages
    reply = await messages.SendMessage(
        message_pb2.SendMessageRequest(mobile=mobile, use_type=NOTE, text=text, send_at=send_at),
        metadata=client.metadata,
    )
    return reply.id


async def stored(running: Running, client: Client) -> int:
    count: int = await running.gateway.pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1", client.account_id
    )
    return count


async def test_messages_are_charged_per_segment_at_their_countrys_price(
    running: Running, admin: tuple[tuple[str, str], ...]
) -> None:
    client, account = await prepaid(running, admin, 100)
    assert account.balance == 100
    unlimited = await running.client()
    shown = await accounts(running).GetAccount(
        A.GetAccountRequest(id=unlimited.account_id), metadata=admin
    )
    assert not shown.HasField("balance")

    await send_text(client, CN)  # 1 segment x 5
    assert await balance(running, admin, client) == 95
    await send_text(client, CN, LONG)  # 2 x 5
    assert await balance(running, admin, client) == 85
    await send_text(client, GB)  # 1 x 20
    assert await balance(running, admin, client) == 65
    assert (await send_code(client, CN2)).verify_id  # codes are charged too
    assert await balance(running, admin, client) == 60

    with pytest.raises(grpc.aio.AioRpcError) as no_price:
        await send_text(client, US)
    assert no_price.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(no_price.value) == "NO_PRICE"

    # Short of the price: refused, nothing stored, nothing taken.
    await accounts(running).UpdateAccount(
        A.UpdateAccountRequest(
            account=A.Account(id=client.account_id, balance=15),
            update_mask=field_mask_pb2.FieldMask(paths=["balance"]),
        ),
        metadata=admin,
    )
    before = await stored(running, client)
    with pytest.raises(grpc.aio.AioRpcError) as short:
        await send_text(client, GB)
    assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(short.value) == "INSUFFICIENT_BALANCE"
    with pytest.raises(grpc.aio.AioRpcError) as batch_short:
        await create(client, content="Sale", numbers=[CN, CN2, CN3, "+8613600136000"])
    assert reason(batch_short.value) == "INSUFFICIENT_BALANCE"
    assert await stored(running, client) == before
    assert await balance(running, admin, client) == 15
    # An account that is not prepaid sends to countries without a price.
    assert await send_text(unlimited, US)


async def test_refunds_for_cancelled_and_rejected_before_a_provider_took_them(
    running: Running, admin: tuple[tuple[str, str], ...]
) -> None:
    client, _ = await prepaid(running, admin, 1000)
    later = timestamp_pb2.Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=2))
    batch = await create(client, content="Sale", numbers=[CN, CN2, GB], send_at=later)
    assert batch.accepted_count == 3
    assert await balance(running, admin, client) == 1000 - 30
    await client.batches.CancelBatch(
        batch_pb2.CancelBatchRequest(task_id=batch.task_id), metadata=client.metadata
    )
    assert await balance(running, admin, client) == 1000

    # Suppressed after acceptance: REJECTED at dispatch, never sent, refunded.
    soon = timestamp_pb2.Timestamp()
    soon.FromDatetime(datetime.now(UTC) + timedelta(seconds=1.5))
    message_id = await send_text(client, CN3, send_at=soon)
    assert await balance(running, admin, client) == 995
    await suppression_pb2_grpc.SuppressionServiceStub(running.channel).AddSuppressions(
        suppression_pb2.AddSuppressionsRequest(mobiles=[CN3]), metadata=client.metadata
    )
    state = await final_state(client, message_id)
    assert state.status == common_pb2.MESSAGE_STATUS_REJECTED
    assert await balance(running, admin, client) == 1000

    # Delivered: the charge stays.
    delivered = await send_text(client, CN)
    assert (await final_state(client, delivered)).status == common_pb2.MESSAGE_STATUS_DELIVERED
    assert await balance(running, admin, client) == 995


async def test_a_thousand_racing_sends_on_two_replicas_charge_exactly_a_hundred(
    running: Running, start_gateway: GatewayFactory, admin: tuple[tuple[str, str], ...]
) -> None:
    other = await start_gateway(
        database_url=running.gateway.settings.database_url, routing=PRICED, otp=otp()
    )
    client, _ = await prepaid(running, admin, 100 * 5)
    stubs: list[message_pb2_grpc.MessageServiceAsyncStub] = [
        client.messages,
        message_pb2_grpc.MessageServiceStub(other.channel),
    ]
    refusals: list[str] = []

    async def one(i: int) -> bool:
        try:
            await send_text(client, f"+86138{i:08d}", stub=stubs[i % 2])
            return True
        except grpc.aio.AioRpcError as exc:
            refusals.append(reason(exc))
            return False

    results = await asyncio.gather(*(one(i) for i in range(1000)))
    assert sum(results) == 100
    assert set(refusals) == {"INSUFFICIENT_BALANCE"}
    assert await balance(running, admin, client) == 0
    assert await stored(running, client) == 100

    async def all_delivered() -> bool:
        done: int = await running.gateway.pool.fetchval(
            "SELECT count(*) FROM messages WHERE account_id = $1 AND status = $2",
            client.account_id,
            common_pb2.MESSAGE_STATUS_DELIVERED,
        )
        return done == 100

    await wait_for(all_delivered, within=60)
    assert await balance(running, admin, client) == 0


async def test_a_message_that_expires_before_a_provider_took_it_is_refunded(
    start_gateway: GatewayFactory,
) -> None:
    # Messages older than a second are not sent any more (SMSGW_MESSAGE_TTL_SECONDS).
    short = await start_gateway(routing=PRICED, message_ttl_seconds=1.0)
    store = PgAccountStore(short.gateway.pool)
    ops = await store.create_account("ops", verified=True)
    credential, secret = await store.create_credential(ops.id, admin=True)
    ops_auth = basic_auth(credential.api_key, secret)
    client, _ = await prepaid(short, ops_auth, 50)
    soon = timestamp_pb2.Timestamp()
    soon.FromDatetime(datetime.now(UTC) + timedelta(seconds=2))
    message_id = await send_text(client, GB, send_at=soon)
    assert await balance(short, ops_auth, client) == 30
    state = await final_state(client, message_id)
    assert (state.status, state.error_code) == (common_pb2.MESSAGE_STATUS_FAILED, "EXPIRED")
    assert await balance(short, ops_auth, client) == 50


async def test_a_large_batch_prepared_in_another_process_is_charged_and_unpriced_numbers_rejected(
    running: Running, admin: tuple[tuple[str, str], ...]
) -> None:
    # Past LARGE_REQUEST_BYTES: prepared (and priced) in the preparation process.
    given = numbers(20_000)
    given[7] = US  # no price for the US: that number alone is rejected
    request = batch_pb2.CreateBatchRequest(
        use_type=NOTE,
        content="Hi #name#, your order shipped.",
        numbers=given,
        template_data={
            n: batch_pb2.TemplateData(values={"name": f"u{i}"}) for i, n in enumerate(given)
        },
    )
    assert request.ByteSize() > LARGE_REQUEST_BYTES
    client, _ = await prepaid(running, admin, 200_000)
    reply = await client.batches.CreateBatch(request, metadata=client.metadata)
    assert reply.accepted_count == 19_999
    assert [(r.number, r.reason) for r in reply.rejected] == [(US, "NO_PRICE")]
    # 19,999 one-segment messages to China at 5 each, taken with the batch.
    assert await balance(running, admin, client) == 200_000 - 19_999 * 5
    charged = await running.gateway.pool.fetchval(
        "SELECT sum(charged) FROM messages WHERE batch_id = $1", reply.task_id
    )
    assert charged == 19_999 * 5
