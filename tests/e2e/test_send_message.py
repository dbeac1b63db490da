"""SendMessage and GetMessageStatus through a real server and the generated stubs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sms.v1 import common_pb2, message_pb2

from tests.e2e.conftest import Client, GatewayFactory, Running, wait_for
from tests.e2e.errors import bad_fields, reason

CN = "+8613800138000"


def send(
    text: str = "Your order has shipped.", mobile: str = CN, **kw: object
) -> message_pb2.SendMessageRequest:
    return message_pb2.SendMessageRequest(
        mobile=mobile,
        use_type=common_pb2.USE_TYPE_NOTIFICATION,
        text=text,
        **kw,  # type: ignore[arg-type]
    )


async def status_of(client: Client, message_id: str) -> message_pb2.MessageState:
    reply = await client.messages.GetMessageStatus(
        message_pb2.GetMessageStatusRequest(ids=[message_id]), metadata=client.metadata
    )
    assert len(reply.messages) == 1
    return reply.messages[0]


async def test_send_is_accepted_then_delivered_by_loopback(gw: Running) -> None:
    client = await gw.client()
    reply = await client.messages.SendMessage(send(), metadata=client.metadata)
    assert len(reply.id) == 32
    assert reply.to_number == CN
    assert reply.status == common_pb2.MESSAGE_STATUS_PENDING
    assert reply.segments == 1

    async def delivered() -> bool:
        return (await status_of(client, reply.id)).status == common_pb2.MESSAGE_STATUS_DELIVERED

    await wait_for(delivered)
    state = await status_of(client, reply.id)
    assert state.provider == "loopback"
    assert state.error_code == ""
    assert state.updated_at.seconds > 0


async def test_accepted_message_is_durable_before_the_answer(gw: Running) -> None:
    client = await gw.client()
    replies = await asyncio.gather(
        *(client.messages.SendMessage(send(f"n{i}"), metadata=client.metadata) for i in range(50))
    )
    rows = await gw.gateway.pool.fetch(
        "SELECT id FROM messages WHERE id = ANY($1::text[])", [r.id for r in replies]
    )
    assert len(rows) == 50


async def test_segments_follow_gsm7_and_ucs2_limits(gw: Running) -> None:
    client = await gw.client()
    cases = {"a" * 160: 1, "a" * 161: 2, "é" * 160: 1, "中" * 70: 1, "中" * 71: 2, "中" * 135: 3}
    for text, expected in cases.items():
        reply = await client.messages.SendMessage(send(text), metadata=client.metadata)
        assert reply.segments == expected, text[:3]


async def test_invalid_request_names_each_field_and_stores_nothing(gw: Running) -> None:
    client = await gw.client()
    request = message_pb2.SendMessageRequest(mobile="+86 138 0013 8000", request_id="x" * 129)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(request, metadata=client.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == {"mobile", "use_type", "request_id", "text"}
    count = await gw.gateway.pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1", client.account_id
    )
    assert count == 0


@pytest.mark.parametrize(
    "mobile",
    [
        "8613800138000",
        "+86138001380001234",
        "+861380013800\u0660",  # an Arabic-Indic zero: a digit to str.isdigit, not to us
        "+8613800138OOO",
        "+0123456789",
    ],
)
async def test_mobile_must_be_valid_e164_with_ascii_digits(gw: Running, mobile: str) -> None:
    client = await gw.client()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(send(mobile=mobile), metadata=client.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == {"mobile"}


async def test_get_status_limits_and_not_found(gw: Running) -> None:
    alice, bob = await gw.client(), await gw.client()
    mine = await alice.messages.SendMessage(send(), metadata=alice.metadata)
    theirs = await bob.messages.SendMessage(send(), metadata=bob.metadata)
    reply = await alice.messages.GetMessageStatus(
        message_pb2.GetMessageStatusRequest(ids=[mine.id, theirs.id, "nope", mine.id]),
        metadata=alice.metadata,
    )
    assert [m.id for m in reply.messages] == [mine.id]
    assert list(reply.not_found_ids) == [theirs.id, "nope"]

    for ids in ([], [f"id{i}" for i in range(101)]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await alice.messages.GetMessageStatus(
                message_pb2.GetMessageStatusRequest(ids=ids), metadata=alice.metadata
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(caught.value) == {"ids"}


async def test_request_id_returns_the_first_result_and_refuses_other_content(
    gw: Running,
) -> None:
    client = await gw.client()
    first, again = await asyncio.gather(
        client.messages.SendMessage(send(request_id="order-42"), metadata=client.metadata),
        client.messages.SendMessage(send(request_id="order-42"), metadata=client.metadata),
    )
    assert first.id == again.id
    later = await client.messages.SendMessage(send(request_id="order-42"), metadata=client.metadata)
    assert later.id == first.id
    assert later.status == common_pb2.MESSAGE_STATUS_PENDING
    count = await gw.gateway.pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1", client.account_id
    )
    assert count == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(
            send("other text", request_id="order-42"), metadata=client.metadata
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(caught.value) == "REQUEST_ID_REUSED"
    # Another account may use the same key independently.
    other = await gw.client()
    theirs = await other.messages.SendMessage(send(request_id="order-42"), metadata=other.metadata)
    assert theirs.id != first.id


async def test_send_at_holds_the_message_until_then(gw: Running) -> None:
    client = await gw.client()
    at = timestamp_pb2.Timestamp()
    at.FromDatetime(datetime.now(UTC) + timedelta(seconds=1.5))
    reply = await client.messages.SendMessage(send(send_at=at), metadata=client.metadata)
    await asyncio.sleep(0.8)
    assert (await status_of(client, reply.id)).status == common_pb2.MESSAGE_STATUS_PENDING

    async def delivered() -> bool:
        return (await status_of(client, reply.id)).status == common_pb2.MESSAGE_STATUS_DELIVERED

    await wait_for(delivered)
    far = timestamp_pb2.Timestamp()
    far.FromDatetime(datetime.now(UTC) + timedelta(days=31))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(send(send_at=far), metadata=client.metadata)
    assert bad_fields(caught.value) == {"send_at"}


async def test_unverified_account_sends_only_verification(gw: Running) -> None:
    client = await gw.client(verified=False)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(send(), metadata=client.metadata)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ok = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=CN, use_type=common_pb2.USE_TYPE_VERIFICATION, text="Your code is 1234"
        ),
        metadata=client.metadata,
    )
    assert ok.status == common_pb2.MESSAGE_STATUS_PENDING


async def test_provider_failures_are_retried_then_failed(start_gateway: GatewayFactory) -> None:
    from server.providers.loopback import LoopbackConfig

    running = await start_gateway(
        max_attempts=3, loopback=LoopbackConfig(delivery_delay=0.05, failure_rate=1.0)
    )
    client = await running.client()
    reply = await client.messages.SendMessage(send(), metadata=client.metadata)

    async def failed() -> bool:
        return (await status_of(client, reply.id)).status == common_pb2.MESSAGE_STATUS_FAILED

    await wait_for(failed)
    state = await status_of(client, reply.id)
    assert state.error_code == "LOOPBACK_UNAVAILABLE"
    attempts = await running.gateway.pool.fetchval(
        "SELECT attempts FROM messages WHERE id = $1", reply.id
    )
    assert attempts == 3


async def test_loopback_outcome_is_configurable(start_gateway: GatewayFactory) -> None:
    from server.domain.models import MessageStatus
    from server.providers.loopback import LoopbackConfig

    running = await start_gateway(
        loopback=LoopbackConfig(delivery_delay=0.05, outcome=MessageStatus.UNDELIVERED)
    )
    client = await running.client()
    reply = await client.messages.SendMessage(send(), metadata=client.metadata)

    async def undelivered() -> bool:
        return (await status_of(client, reply.id)).status == common_pb2.MESSAGE_STATUS_UNDELIVERED

    await wait_for(undelivered)
    assert (await status_of(client, reply.id)).error_code == "LOOPBACK_UNDELIVERED"
