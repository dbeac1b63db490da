"""The receipt deadline (issue 15, item 4): a message a provider accepted but never
reported on leaves SENT after SMSGW_RECEIPT_DEADLINE_SECONDS for the final state
UNDELIVERED with error_code NO_RECEIPT, whatever the provider; its status stream
ends; a receipt arriving after that changes nothing. Reported in time, it is not
touched."""

from __future__ import annotations

import asyncio

from sms.v1 import common_pb2, message_pb2

from server.emulators.common import RunningEmulator
from server.providers.loopback import LoopbackConfig
from tests.e2e.conftest import Client, GatewayFactory, final_state
from tests.e2e.emulated import only, sky, start_skynoo

S = common_pb2
DEADLINE = 1.0  # SMSGW_RECEIPT_DEADLINE_SECONDS (its least value)


async def send(client: Client) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile="+8613800138000", use_type=S.USE_TYPE_NOTIFICATION, text="Your parcel."
        ),
        metadata=client.metadata,
    )
    return reply.id


async def watched_to_the_end(client: Client, message_id: str) -> list[tuple[int, str]]:
    stream = client.messages.WatchMessageStatus(
        message_pb2.WatchMessageStatusRequest(ids=[message_id]), metadata=client.metadata
    )
    return [(event.status, event.error_code) async for event in stream]


async def test_a_provider_that_never_reports_ends_undelivered_no_receipt(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    # Skynoo answers its status query, but the message never settles there.
    silent = await start_skynoo(emulators, delivery_delay=3600)
    running = await start_gateway(
        routing=only(sky(silent)), receipt_deadline_seconds=DEADLINE, poll_interval_seconds=0.2
    )
    client = await running.client()
    message_id = await send(client)
    events = await asyncio.wait_for(watched_to_the_end(client, message_id), 15)
    assert events[-1] == (S.MESSAGE_STATUS_UNDELIVERED, "NO_RECEIPT")
    assert S.MESSAGE_STATUS_SENT in [status for status, _ in events]
    state = await final_state(client, message_id)
    assert (state.status, state.error_code, state.provider) == (
        S.MESSAGE_STATUS_UNDELIVERED,
        "NO_RECEIPT",
        "sky",
    )
    assert len(silent.state.received) == 1  # sent once, not again


async def test_a_late_receipt_changes_nothing_and_a_timely_one_is_kept(
    start_gateway: GatewayFactory,
) -> None:
    # Loopback reports delivery after 2.5 s: after the 1 s deadline.
    late = await start_gateway(
        loopback=LoopbackConfig(delivery_delay=2.5),
        receipt_deadline_seconds=DEADLINE,
        poll_interval_seconds=0.2,
    )
    client = await late.client()
    message_id = await send(client)
    state = await final_state(client, message_id, within=10)
    assert (state.status, state.error_code) == (S.MESSAGE_STATUS_UNDELIVERED, "NO_RECEIPT")
    await asyncio.sleep(2.5)  # the late DELIVERED receipt has come and gone
    state = await final_state(client, message_id)
    assert (state.status, state.error_code) == (S.MESSAGE_STATUS_UNDELIVERED, "NO_RECEIPT")

    # Reported within the deadline: DELIVERED, and it stays so.
    timely = await start_gateway(
        loopback=LoopbackConfig(delivery_delay=0.1),
        receipt_deadline_seconds=DEADLINE,
        poll_interval_seconds=0.2,
    )
    client = await timely.client()
    message_id = await send(client)
    assert (await final_state(client, message_id)).status == S.MESSAGE_STATUS_DELIVERED
    await asyncio.sleep(DEADLINE + 0.5)
    assert (await final_state(client, message_id)).status == S.MESSAGE_STATUS_DELIVERED
