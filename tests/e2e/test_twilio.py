"""Twilio end to end (issue 20): a gateway on its ports with its database, the Twilio
emulator over HTTP posting signed status callbacks to the gateway's HTTP port."""

from __future__ import annotations

import dataclasses

import aiohttp
from sms.v1 import common_pb2, message_pb2

from server.emulators import twilio as twilio_emulator
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.routes_file import ProviderSpec
from tests.e2e.conftest import Client, GatewayFactory, Running, final_state, wait_for
from tests.e2e.emulated import only
from tests.e2e.test_providers import history

SID = "AC" + "e2e0" * 8
TOKEN = "e2e-twilio-auth-token"
FROM = "+15005550006"
US = "+14155552671"


async def with_callbacks(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator], delivery_delay: float
) -> tuple[Running, RunningEmulator, str]:
    """A gateway whose only route is Twilio with StatusCallback pointing at its HTTP
    port; no polling, so only a callback can report delivery."""
    running = await start_gateway(
        routing=only(ProviderSpec("lb", "loopback")), poll_interval_seconds=3600
    )
    settings = EmulatorSettings(
        credential_id=SID,
        credential_secret=TOKEN,
        controls=EmulatorControls(delivery_delay=delivery_delay),
    )
    emulator = await RunningEmulator(twilio_emulator.build_app(settings, numbers=[FROM])).start()
    emulators.append(emulator)
    hook = f"http://127.0.0.1:{running.gateway.http_port}/webhooks/twilio/tw"
    spec = ProviderSpec(
        "tw",
        "twilio",
        emulator.base_url,
        {"account_sid": SID, "auth_token": TOKEN},
        timeout_seconds=1.0,
        options={"from_number": FROM, "status_callback": hook},
    )
    await running.gateway.reload(dataclasses.replace(running.gateway.settings, routing=only(spec)))
    return running, emulator, hook


async def send_text(client: Client) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=US, use_type=common_pb2.USE_TYPE_NOTIFICATION, text="Your table is ready."
        ),
        metadata=client.metadata,
    )
    return reply.id


async def status_of(client: Client, message_id: str) -> int:
    reply = await client.messages.GetMessageStatus(
        message_pb2.GetMessageStatusRequest(ids=[message_id]), metadata=client.metadata
    )
    return reply.messages[0].status


async def test_a_message_goes_through_twilio_to_delivered_by_signed_callbacks(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    running, emulator, hook = await with_callbacks(start_gateway, emulators, 0.2)
    client = await running.client()
    message_id = await send_text(client)
    state = await final_state(client, message_id)
    assert (state.status, state.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "tw")
    (received,) = emulator.state.received
    assert (received.phone, received.content) == (US, "Your table is ready.")
    row = await running.gateway.pool.fetchrow(
        "SELECT provider_message_id FROM messages WHERE id = $1", message_id
    )
    assert row is not None and row["provider_message_id"] == received.provider_message_id
    # Twilio called back for "sent" and "delivered", at the URL naming our message,
    # and the gateway took both.
    account = emulator.app[twilio_emulator.ACCOUNT_KEY]
    assert [(c.status, c.url, c.http_status) for c in account.callbacks] == [
        ("sent", f"{hook}?smsgw_id={message_id}", 200),
        ("delivered", f"{hook}?smsgw_id={message_id}", 200),
    ]
    assert (await history(running, message_id))[-2:] == [
        common_pb2.MESSAGE_STATUS_SENT,
        common_pb2.MESSAGE_STATUS_DELIVERED,
    ]


async def test_a_wrongly_signed_callback_is_refused_and_changes_nothing(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    # Twilio settles only after a minute: the message stays SENT meanwhile.
    running, emulator, hook = await with_callbacks(start_gateway, emulators, 60.0)
    client = await running.client()
    message_id = await send_text(client)

    async def is_sent() -> bool:
        return await status_of(client, message_id) == common_pb2.MESSAGE_STATUS_SENT

    await wait_for(is_sent)
    (received,) = emulator.state.received
    before = await history(running, message_id)
    url = f"{hook}?smsgw_id={message_id}"
    form = {
        "AccountSid": SID,
        "ApiVersion": "2010-04-01",
        "From": FROM,
        "MessageSid": received.provider_message_id,
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
        "To": US,
    }
    async with aiohttp.ClientSession() as session:
        for token in ("not-the-auth-token", None):
            headers = (
                {}
                if token is None
                else {"X-Twilio-Signature": twilio_emulator.signature(token, url, form)}
            )
            async with session.post(url, data=form, headers=headers) as reply:
                assert reply.status == 403
        assert await status_of(client, message_id) == common_pb2.MESSAGE_STATUS_SENT
        assert await history(running, message_id) == before
        # The same callback signed with the account's token is taken.
        headers = {"X-Twilio-Signature": twilio_emulator.signature(TOKEN, url, form)}
        async with session.post(url, data=form, headers=headers) as reply:
            assert reply.status == 200
    state = await final_state(client, message_id)
    assert (state.status, state.error_code) == (common_pb2.MESSAGE_STATUS_UNDELIVERED, "30003")
