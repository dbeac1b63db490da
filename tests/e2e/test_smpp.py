"""SMPP end to end (issue 20): gRPC SendMessage -> the gateway's SMPP transport ->
the Net::SMPP test SMSC receives submit_sm -> its deliver_sm receipt -> DELIVERED; and
a recipient's reply as deliver_sm -> InboundService."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sms.v1 import common_pb2, inbound_pb2, message_pb2

from server.emulators.common import EmulatorControls
from server.routes_file import ProviderSpec
from tests.e2e.conftest import Client, GatewayFactory, final_state
from tests.e2e.emulated import only
from tests.e2e.test_inbound import inbound, refused_as_suppressed
from tests.e2e.test_providers import history
from tests.smsc.runner import PASSWORD, SYSTEM_ID, Smsc, start_smsc

CN = "+8613800138000"


@pytest.fixture
async def smscs() -> AsyncIterator[list[Smsc]]:
    started: list[Smsc] = []
    yield started
    for smsc in started:
        await smsc.stop()


def smpp_spec(smsc: Smsc, **options: object) -> ProviderSpec:
    return ProviderSpec(
        "smsc1",
        "smpp",
        f"smpp://127.0.0.1:{smsc.port}",
        {"system_id": SYSTEM_ID, "password": PASSWORD},
        timeout_seconds=2.0,
        options={"system_type": "SMSGW", "source_addr": "ACME", "binds": 2, **options},
    )


async def send(client: Client, text: str) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=CN, use_type=common_pb2.USE_TYPE_NOTIFICATION, text=text
        ),
        metadata=client.metadata,
    )
    return reply.id


async def test_a_message_goes_through_the_smsc_to_delivered(
    start_gateway: GatewayFactory, smscs: list[Smsc]
) -> None:
    smsc = await start_smsc(EmulatorControls(delivery_delay=0.2))
    smscs.append(smsc)
    running = await start_gateway(routing=only(smpp_spec(smsc)), poll_interval_seconds=3600)
    client = await running.client()
    message_id = await send(client, "Your order A-1 has shipped.")
    state = await final_state(client, message_id)
    assert (state.status, state.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "smsc1")
    (submit,) = smsc.submits()
    assert (submit["source_addr"], submit["destination_addr"]) == ("ACME", CN.lstrip("+"))
    assert bytes.fromhex(submit["short_message_hex"]) == b"Your order A-1 has shipped."
    (answer,) = smsc.records("submit_sm_resp")
    row = await running.gateway.pool.fetchrow(
        "SELECT provider_message_id FROM messages WHERE id = $1", message_id
    )
    assert row is not None and row["provider_message_id"] == answer["message_id"]
    assert [r["message_id"] for r in smsc.records("receipt")] == [answer["message_id"]]
    assert (await history(running, message_id))[-2:] == [
        common_pb2.MESSAGE_STATUS_SENT,
        common_pb2.MESSAGE_STATUS_DELIVERED,
    ]


async def test_a_long_message_settles_once_from_its_parts_receipts_even_when_early(
    start_gateway: GatewayFactory, smscs: list[Smsc]
) -> None:
    # Receipts at once: they may reach the gateway before it has recorded the send.
    smsc = await start_smsc(EmulatorControls(delivery_delay=0.0))
    smscs.append(smsc)
    running = await start_gateway(routing=only(smpp_spec(smsc)), poll_interval_seconds=3600)
    client = await running.client()
    message_id = await send(client, "Long " * 60)  # 300 GSM-7 characters: two parts
    state = await final_state(client, message_id)
    assert state.status == common_pb2.MESSAGE_STATUS_DELIVERED
    assert len(smsc.submits()) == 2 and len(smsc.records("receipt")) == 2
    await asyncio.sleep(0.5)  # no later event takes it back
    events = await history(running, message_id)
    assert events.count(common_pb2.MESSAGE_STATUS_DELIVERED) == 1
    assert events[-1] == common_pb2.MESSAGE_STATUS_DELIVERED


async def test_a_reply_over_the_bind_becomes_an_inbound_message_and_stop_suppresses(
    start_gateway: GatewayFactory, smscs: list[Smsc]
) -> None:
    smsc = await start_smsc(EmulatorControls(delivery_delay=0.1))
    smscs.append(smsc)
    running = await start_gateway(routing=only(smpp_spec(smsc)), poll_interval_seconds=3600)
    client = await running.client()
    # The account sent to this number last: the reply is its.
    await final_state(client, await send(client, "Reply STOP to opt out."))
    await smsc.command(
        cmd="mo",
        source_addr=CN.lstrip("+"),
        destination_addr="10690000",
        short_message_hex=b"STOP".hex(),
        data_coding=0,
    )
    stub = inbound(running)

    async def listed() -> list[inbound_pb2.InboundMessage]:
        reply = await stub.ListInboundMessages(
            inbound_pb2.ListInboundMessagesRequest(), metadata=client.metadata
        )
        return list(reply.inbound_messages)

    deadline = asyncio.get_running_loop().time() + 10
    while not (messages := await listed()):
        assert asyncio.get_running_loop().time() < deadline, "no inbound message"
        await asyncio.sleep(0.1)
    (message,) = messages
    assert (message.from_number, message.to, message.text, message.provider) == (
        CN,
        "10690000",
        "STOP",
        "smsc1",
    )
    assert message.keyword == "STOP"
    await refused_as_suppressed(client, CN)  # the recipient opted out over SMPP
