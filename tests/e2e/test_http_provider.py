"""A fourth provider with no code of its own (issue 20): Plivo as a declarative "http"
provider, configured by tests/contract/plivo.toml alone, end to end: a gateway on its
ports with its database, the Plivo emulator (written from Plivo's docs) over HTTP."""

from __future__ import annotations

import dataclasses

import aiohttp
from sms.v1 import common_pb2, message_pb2

from server.emulators import plivo as plivo_emulator
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.routes_file import ProviderSpec
from tests.contract.pair_http import AUTH_ID, AUTH_TOKEN, HOOK_TOKEN, routing
from tests.e2e.conftest import Client, GatewayFactory, Running, final_state, wait_for
from tests.e2e.emulated import only
from tests.e2e.test_providers import history

US = "+14155552671"


async def with_plivo(
    start_gateway: GatewayFactory,
    emulators: list[RunningEmulator],
    *,
    delivery_delay: float,
    poll: bool,
) -> tuple[Running, RunningEmulator, str]:
    """A gateway routed to Plivo by the routing file; receipts by push to its HTTP
    port, or (``poll``) by polling while the pushes go nowhere."""
    running = await start_gateway(
        routing=only(ProviderSpec("lb", "loopback")),
        poll_interval_seconds=0.2 if poll else 3600,
    )
    settings = EmulatorSettings(
        credential_id=AUTH_ID,
        credential_secret=AUTH_TOKEN,
        controls=EmulatorControls(delivery_delay=delivery_delay),
    )
    emulator = await RunningEmulator(plivo_emulator.build_app(settings)).start()
    emulators.append(emulator)
    gateway = "http://127.0.0.1:9" if poll else f"http://127.0.0.1:{running.gateway.http_port}"
    config = routing(emulator.base_url, gateway)
    await running.gateway.reload(dataclasses.replace(running.gateway.settings, routing=config))
    return running, emulator, f"{gateway}/webhooks/http/plivo"


async def send_text(client: Client) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=US, use_type=common_pb2.USE_TYPE_NOTIFICATION, text="Your code is ready."
        ),
        metadata=client.metadata,
    )
    return reply.id


async def test_a_message_goes_through_the_configured_provider_to_delivered_by_push(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    running, emulator, hook = await with_plivo(
        start_gateway, emulators, delivery_delay=0.2, poll=False
    )
    client = await running.client()
    message_id = await send_text(client)
    state = await final_state(client, message_id)
    assert (state.status, state.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "plivo")
    (received,) = emulator.state.received
    assert (received.phone, received.content) == ("14155552671", "Your code is ready.")
    account = emulator.app[plivo_emulator.ACCOUNT_KEY]
    url = f"{hook}?smsgw_id={message_id}&token={HOOK_TOKEN}"
    assert [(c.status, c.url, c.http_status) for c in account.callbacks] == [
        ("sent", url, 200),
        ("delivered", url, 200),
    ]
    assert (await history(running, message_id))[-2:] == [
        common_pb2.MESSAGE_STATUS_SENT,
        common_pb2.MESSAGE_STATUS_DELIVERED,
    ]


async def test_a_push_without_the_token_is_refused_and_changes_nothing(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    running, emulator, hook = await with_plivo(
        start_gateway, emulators, delivery_delay=60.0, poll=False
    )
    client = await running.client()
    message_id = await send_text(client)

    async def is_sent() -> bool:
        reply = await client.messages.GetMessageStatus(
            message_pb2.GetMessageStatusRequest(ids=[message_id]), metadata=client.metadata
        )
        return reply.messages[0].status == common_pb2.MESSAGE_STATUS_SENT

    await wait_for(is_sent)
    before = await history(running, message_id)
    (received,) = emulator.state.received
    form = {"MessageUUID": received.provider_message_id, "Status": "delivered", "To": "1"}
    async with aiohttp.ClientSession() as session:
        for query in (f"smsgw_id={message_id}", f"smsgw_id={message_id}&token=guess"):
            async with session.post(f"{hook}?{query}", data=form) as reply:
                assert reply.status == 403
        assert await is_sent()
        assert await history(running, message_id) == before
        url = f"{hook}?smsgw_id={message_id}&token={HOOK_TOKEN}"
        async with session.post(url, data=form) as reply:
            assert reply.status == 200
    state = await final_state(client, message_id)
    assert state.status == common_pb2.MESSAGE_STATUS_DELIVERED


async def test_without_pushes_the_status_table_polls_it_to_undelivered(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    running, emulator, _ = await with_plivo(start_gateway, emulators, delivery_delay=0.2, poll=True)
    emulator.state.settings.controls.outcome = "undelivered"
    client = await running.client()
    message_id = await send_text(client)
    state = await final_state(client, message_id)
    # Plivo's error_code for the message, read at the configured path.
    assert (state.status, state.error_code) == (common_pb2.MESSAGE_STATUS_UNDELIVERED, "80")
    account = emulator.app[plivo_emulator.ACCOUNT_KEY]
    assert account.callbacks and all(c.http_status == 0 for c in account.callbacks)  # none arrived
