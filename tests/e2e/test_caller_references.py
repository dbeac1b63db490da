"""Caller references and per-message options (issue 18): reference and metadata echoed
in status answers and stream events, validity, smart encoding."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2
from sms.v1 import batch_pb2, common_pb2, message_pb2, verification_pb2

from server.emulators.common import RunningEmulator
from tests.e2e import batch_calls
from tests.e2e.conftest import Client, GatewayFactory, Running, final_state, wait_for
from tests.e2e.emulated import only, sky, start_skynoo
from tests.e2e.errors import bad_fields

CN = "+8613800138000"
FAST = {"retry_base_seconds": 0.05, "poll_interval_seconds": 0.2}


def send(text: str = "Your order has shipped.", **kw: object) -> message_pb2.SendMessageRequest:
    return message_pb2.SendMessageRequest(
        mobile=CN,
        use_type=common_pb2.USE_TYPE_NOTIFICATION,
        text=text,
        **kw,  # type: ignore[arg-type]
    )


def send_with(fields: dict[str, object]) -> message_pb2.SendMessageRequest:
    return send("Your order has shipped.", **fields)


def minutes(n: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(n * 60))


async def state_of(client: Client, message_id: str) -> message_pb2.MessageState:
    reply = await client.messages.GetMessageStatus(
        message_pb2.GetMessageStatusRequest(ids=[message_id]), metadata=client.metadata
    )
    return reply.messages[0]


async def test_reference_and_metadata_come_back_in_status_and_every_event(gw: Running) -> None:
    client = await gw.client()
    tags = {"order": "A-1", "customer": "c-42"}
    reply = await client.messages.SendMessage(
        send(reference="order-A-1", metadata=tags), metadata=client.metadata
    )
    # Watched while it is delivered: its current state first, then the live changes.
    events: list[message_pb2.MessageStatusEvent] = []
    request = message_pb2.WatchMessageStatusRequest(ids=[reply.id])
    async with asyncio.timeout(10):
        async for event in client.messages.WatchMessageStatus(request, metadata=client.metadata):
            events.append(event)
    assert events[-1].status == common_pb2.MESSAGE_STATUS_DELIVERED
    for event in events:
        assert (event.reference, dict(event.metadata)) == ("order-A-1", tags)
    state = await final_state(client, reply.id)
    assert (state.reference, dict(state.metadata)) == ("order-A-1", tags)

    # Replayed from a cursor: every stored event of the message, PENDING first.
    replayed: list[message_pb2.MessageStatusEvent] = []
    request = message_pb2.WatchMessageStatusRequest(
        ids=[reply.id], after_event_id=events[0].event_id - 1
    )
    async with asyncio.timeout(10):
        async for event in client.messages.WatchMessageStatus(request, metadata=client.metadata):
            replayed.append(event)
    assert replayed[-1].status == common_pb2.MESSAGE_STATUS_DELIVERED
    for event in replayed:
        assert (event.reference, dict(event.metadata)) == ("order-A-1", tags)


async def test_a_message_without_reference_answers_empty_ones(gw: Running) -> None:
    client = await gw.client()
    reply = await client.messages.SendMessage(send(), metadata=client.metadata)
    state = await state_of(client, reply.id)
    assert (state.reference, dict(state.metadata)) == ("", {})


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"reference": "r" * 129}, {"reference"}),
        ({"metadata": {f"k{i}": "v" for i in range(11)}}, {"metadata"}),
        ({"metadata": {"k" * 41: "v"}}, {"metadata"}),
        ({"metadata": {"k": "v" * 257}}, {"metadata"}),
        ({"validity": duration_pb2.Duration(seconds=59)}, {"validity"}),
        ({"validity": minutes(72 * 60 + 1)}, {"validity"}),
        (
            {"reference": "r" * 129, "metadata": {"": "v"}, "validity": minutes(0)},
            {"reference", "metadata", "validity"},
        ),
    ],
)
async def test_out_of_range_options_are_refused_naming_each_field(
    gw: Running, fields: dict[str, object], bad: set[str]
) -> None:
    client = await gw.client()
    before = await gw.gateway.pool.fetchval("SELECT count(*) FROM messages")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(send_with(fields), metadata=client.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == bad
    assert await gw.gateway.pool.fetchval("SELECT count(*) FROM messages") == before


async def test_limits_themselves_are_accepted(gw: Running) -> None:
    client = await gw.client()
    tags = {f"{i}".rjust(40, "k"): "v" * 256 for i in range(10)}
    for validity in (minutes(1), minutes(72 * 60)):
        reply = await client.messages.SendMessage(
            send(reference="r" * 128, metadata=tags, validity=validity), metadata=client.metadata
        )
        assert (await state_of(client, reply.id)).metadata == tags


async def test_smart_encoding_keeps_a_curly_quote_from_doubling_the_parts(gw: Running) -> None:
    client = await gw.client()
    text = "We\u2019ll text you when your order arrives \u2013 thanks for shopping with us!!"
    text += " See you soon."
    assert 70 < len(text) <= 160
    plain = await client.messages.SendMessage(send(text), metadata=client.metadata)
    smart = await client.messages.SendMessage(
        send(text, smart_encoding=True), metadata=client.metadata
    )
    assert (plain.segments, smart.segments) == (2, 1)
    rows = await gw.gateway.pool.fetch(
        "SELECT id, body FROM messages WHERE id = ANY($1::text[])", [plain.id, smart.id]
    )
    bodies: dict[str, str] = {r["id"]: r["body"] for r in rows}
    assert bodies[plain.id] == text
    assert bodies[smart.id] == text.replace("\u2019", "'").replace("\u2013", "-")


async def test_validity_outlasts_the_server_ttl_while_providers_are_down(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    """The caller's validity, not the server's TTL, bounds the message's wait."""
    down = await start_skynoo(emulators, fail_rate=1.0, fault="http_500")
    running = await start_gateway(
        routing=only(sky(down)), max_attempts=1000, message_ttl_seconds=1.0, **FAST
    )
    client = await running.client()
    patient = await client.messages.SendMessage(
        send(validity=minutes(60)), metadata=client.metadata
    )
    default = await client.messages.SendMessage(send(), metadata=client.metadata)
    state = await final_state(client, default.id)
    assert (state.status, state.error_code) == (common_pb2.MESSAGE_STATUS_FAILED, "EXPIRED")
    await asyncio.sleep(1.0)  # past the server's TTL, still within the validity
    state = await state_of(client, patient.id)
    assert state.status == common_pb2.MESSAGE_STATUS_QUEUED  # still being tried
    assert state.error_code != "EXPIRED"


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_message_not_handed_over_within_its_validity_fails_expired(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    down = await start_skynoo(emulators, fail_rate=1.0, fault="http_500")
    running = await start_gateway(routing=only(sky(down)), max_attempts=100_000, **FAST)
    client = await running.client()
    reply = await client.messages.SendMessage(
        send(validity=minutes(1), reference="short-lived"), metadata=client.metadata
    )

    async def expired() -> bool:
        return (await state_of(client, reply.id)).status == common_pb2.MESSAGE_STATUS_FAILED

    await wait_for(expired, within=90, interval=0.5)
    state = await state_of(client, reply.id)
    assert (state.error_code, state.reference) == ("EXPIRED", "short-lived")
    sent = await running.gateway.pool.fetchrow(  # the row exists: its state was read
        "SELECT created_at, updated_at FROM messages WHERE id = $1", reply.id
    )
    assert sent is not None
    # Ended at its validity (the next claim after it), not at the server's 24 h TTL.
    assert 60 <= (sent["updated_at"] - sent["created_at"]).total_seconds() < 75


async def test_every_message_of_a_batch_carries_the_batchs_reference(gw: Running) -> None:
    client = await gw.client()
    tags = {"campaign": "spring"}
    text = "Spring sale \u2013 it\u2019s on!"
    created = await batch_calls.create(
        client,
        content=text,
        numbers=batch_calls.numbers(3),
        reference="campaign-7",
        metadata=tags,
        validity=minutes(30),
        smart_encoding=True,
    )
    assert (await batch_calls.final(client, created.task_id)).delivered == 3
    page = await client.batches.ListBatchMessages(
        batch_pb2.ListBatchMessagesRequest(task_id=created.task_id), metadata=client.metadata
    )
    ids = [m.id for m in page.messages]
    assert len(ids) == 3
    reply = await client.messages.GetMessageStatus(
        message_pb2.GetMessageStatusRequest(ids=ids), metadata=client.metadata
    )
    for state in reply.messages:
        assert (state.reference, dict(state.metadata)) == ("campaign-7", tags)
    events: list[message_pb2.MessageStatusEvent] = []
    request = message_pb2.WatchMessageStatusRequest(ids=ids)
    async with asyncio.timeout(10):
        async for event in client.messages.WatchMessageStatus(request, metadata=client.metadata):
            events.append(event)
    assert {e.message_id for e in events} == set(ids)
    for event in events:
        assert (event.reference, dict(event.metadata), event.batch_id) == (
            "campaign-7",
            tags,
            created.task_id,
        )
    rows = await gw.gateway.pool.fetch(
        "SELECT body, expires_at - created_at AS validity FROM messages WHERE batch_id = $1",
        created.task_id,
    )
    assert {r["body"] for r in rows} == {"Spring sale - it's on!"}
    assert all(abs(r["validity"].total_seconds() - 1800) < 5 for r in rows)


async def test_a_batch_refuses_out_of_range_options_naming_each_field(gw: Running) -> None:
    client = await gw.client()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await batch_calls.create(
            client,
            content="hi",
            numbers=batch_calls.numbers(2),
            reference="r" * 129,
            metadata={"k": "v" * 257},
            validity=duration_pb2.Duration(seconds=30),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == {"reference", "metadata", "validity"}


async def test_a_verification_codes_message_carries_the_reference(gw: Running) -> None:
    client = await gw.client()
    sent = await client.verifications.SendVerification(
        verification_pb2.SendVerificationRequest(
            mobile=CN, reference="signup-9", metadata={"user": "u-9"}
        ),
        metadata=client.metadata,
    )
    state = await state_of(client, sent.message_id)
    assert (state.reference, dict(state.metadata)) == ("signup-9", {"user": "u-9"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.verifications.SendVerification(
            verification_pb2.SendVerificationRequest(mobile=CN, metadata={"k" * 41: "v"}),
            metadata=client.metadata,
        )
    assert bad_fields(caught.value) == {"metadata"}
