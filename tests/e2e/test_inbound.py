"""InboundService end to end (issue 20): messages from recipients posted over real HTTP
to the gateway (the loopback provider's injection, and the Twilio emulator posting
signed "A message comes in" webhooks), listed and streamed over gRPC; STOP, START
and HELP with their effects on sending; webhook events for them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from sms.v1 import (
    common_pb2,
    inbound_pb2,
    inbound_pb2_grpc,
    message_pb2,
    suppression_pb2,
    suppression_pb2_grpc,
    webhook_pb2,
)

from server.domain.inbound import ENGLISH, InboundConfig, KeywordLanguage
from server.emulators import twilio as twilio_emulator
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.providers.loopback import LoopbackConfig
from server.routes_file import DEFAULT_ROUTING, ProviderSpec
from tests.e2e.conftest import Client, GatewayFactory, Running, final_state, wait_for
from tests.e2e.emulated import only
from tests.e2e.errors import reason
from tests.e2e.test_cli_client import SMSGW, smsgw
from tests.e2e.test_webhooks import Receiver, hooks, verify

SID = "AC" + "1b0d" * 8
TOKEN = "inbound-twilio-auth-token"
TWILIO_NUMBER = "+15005550006"
LOOPBACK_NUMBER = "+15005550001"
SPANISH = KeywordLanguage(
    stop=frozenset({"BAJA", "PARAR"}),
    start=frozenset({"ALTA"}),
    help=frozenset({"AYUDA"}),
    help_reply="Acme: responde BAJA para no recibir más.",
)
INBOUND = InboundConfig(
    languages={
        "en": dataclasses.replace(ENGLISH, help_reply="Acme alerts: reply STOP to opt out."),
        "es": SPANISH,
    }
)


def number(n: int) -> str:
    """A distinct valid mobile per test (the module's gateway shares one database)."""
    return f"+86138{n:08d}"


@pytest.fixture(scope="module")
async def running(start_gateway: GatewayFactory) -> Running:
    """Loopback injection on, webhooks to plain http, keywords in English and Spanish."""
    return await start_gateway(
        loopback=LoopbackConfig(delivery_delay=0.2, inbound=True),
        routing=dataclasses.replace(DEFAULT_ROUTING, inbound=INBOUND),
        webhook_allow_insecure=True,
        webhook_retry_base_seconds=0.05,
    )


def inbound(running: Running) -> inbound_pb2_grpc.InboundServiceAsyncStub:
    stub: inbound_pb2_grpc.InboundServiceAsyncStub = inbound_pb2_grpc.InboundServiceStub(
        running.channel
    )
    return stub


def suppressions(running: Running) -> suppression_pb2_grpc.SuppressionServiceAsyncStub:
    stub: suppression_pb2_grpc.SuppressionServiceAsyncStub = (
        suppression_pb2_grpc.SuppressionServiceStub(running.channel)
    )
    return stub


async def post_form(url: str, form: dict[str, str], headers: dict[str, str] | None = None) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=form, headers=headers or {}) as reply,
    ):
        await reply.read()
        return reply.status


async def inject(running: Running, sender: str, text: str) -> int:
    """A recipient's message through the loopback provider (SMSGW_LOOPBACK_INBOUND)."""
    url = f"http://127.0.0.1:{running.gateway.http_port}/inbound/loopback"
    return await post_form(url, {"From": sender, "To": LOOPBACK_NUMBER, "Body": text})


async def send(
    client: Client,
    mobile: str,
    use_type: common_pb2.UseType.ValueType = common_pb2.USE_TYPE_MARKETING,
) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(mobile=mobile, use_type=use_type, text="Spring sale."),
        metadata=client.metadata,
    )
    return reply.id


async def next_message(stream: Any, within: float = 10) -> inbound_pb2.InboundMessage:
    message: inbound_pb2.InboundMessage = await asyncio.wait_for(stream.read(), within)
    return message


async def listed(running: Running, client: Client) -> list[inbound_pb2.InboundMessage]:
    reply = await inbound(running).ListInboundMessages(
        inbound_pb2.ListInboundMessagesRequest(), metadata=client.metadata
    )
    return list(reply.inbound_messages)


async def refused_as_suppressed(client: Client, mobile: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await send(client, mobile)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(err.value) == "RECIPIENT_SUPPRESSED"


async def test_an_inbound_message_is_stored_listed_and_resumable_from_its_event(
    running: Running,
) -> None:
    client = await running.client()
    sender = number(1)
    await send(client, sender, common_pb2.USE_TYPE_NOTIFICATION)  # who owns the replies
    assert await inject(running, sender, "Is the shop open on Sunday?") == 200
    assert await inject(running, sender, "And on Monday?") == 200
    newest, first = await listed(running, client)
    assert (first.from_number, first.to, first.text) == (
        sender,
        LOOPBACK_NUMBER,
        "Is the shop open on Sunday?",
    )
    assert (first.provider, first.keyword) == ("loopback", "")
    assert newest.text == "And on Monday?" and newest.event_id > first.event_id
    assert first.received_at.seconds > 0

    # Resuming after the first replays the second, then new messages as they arrive.
    stream = inbound(running).WatchInboundMessages(
        inbound_pb2.WatchInboundMessagesRequest(after_event_id=first.event_id),
        metadata=client.metadata,
    )
    try:
        replayed = await next_message(stream)
        assert (replayed.id, replayed.text) == (newest.id, "And on Monday?")
        assert await inject(running, sender, "Thanks!") == 200
        live = await next_message(stream)
        assert (live.text, live.event_id > newest.event_id) == ("Thanks!", True)
    finally:
        stream.cancel()


async def test_a_watch_without_a_cursor_sends_only_what_arrives_after_it_opened(
    running: Running,
) -> None:
    client = await running.client()
    sender = number(2)
    await send(client, sender, common_pb2.USE_TYPE_NOTIFICATION)
    assert await inject(running, sender, "before the watch") == 200
    stream = inbound(running).WatchInboundMessages(
        inbound_pb2.WatchInboundMessagesRequest(), metadata=client.metadata
    )
    try:
        await asyncio.sleep(0.5)  # the stream takes its starting point
        assert await inject(running, sender, "after the watch") == 200
        first = await next_message(stream)
        assert first.text == "after the watch"
    finally:
        stream.cancel()


async def test_stop_blocks_the_next_marketing_send_and_start_lifts_it(running: Running) -> None:
    client = await running.client()
    sender = number(3)
    await final_state(client, await send(client, sender))
    assert await inject(running, sender, "  stop ") == 200
    (message,) = await listed(running, client)
    assert message.keyword == "STOP"
    await refused_as_suppressed(client, sender)
    stored = await suppressions(running).GetSuppression(
        suppression_pb2.GetSuppressionRequest(mobile=sender), metadata=client.metadata
    )
    assert stored.reason == suppression_pb2.SUPPRESSION_REASON_OPT_OUT
    assert set(stored.use_types) == {
        common_pb2.USE_TYPE_NOTIFICATION,
        common_pb2.USE_TYPE_MARKETING,
    }

    assert await inject(running, sender, "Start") == 200
    assert (await listed(running, client))[0].keyword == "START"
    assert await send(client, sender)  # accepted again


async def test_a_configured_synonym_in_another_language_stops_too(running: Running) -> None:
    client = await running.client()
    sender = number(4)
    await send(client, sender, common_pb2.USE_TYPE_NOTIFICATION)
    assert await inject(running, sender, "Baja") == 200
    assert (await listed(running, client))[0].keyword == "STOP"
    await refused_as_suppressed(client, sender)
    # Not a keyword: text that merely contains one.
    other = number(5)
    await send(client, other, common_pb2.USE_TYPE_NOTIFICATION)
    assert await inject(running, other, "please do not stop") == 200
    assert (await listed(running, client))[0].keyword == ""
    assert await send(client, other)


async def test_a_sender_spelled_with_spaces_is_stored_and_suppressed_in_e164(
    running: Running,
) -> None:
    client = await running.client()
    sender = number(14)
    await send(client, sender, common_pb2.USE_TYPE_NOTIFICATION)
    spaced = f"{sender[:3]} {sender[3:6]} {sender[6:10]} {sender[10:]}"
    assert await inject(running, spaced, "END") == 200
    (message,) = await listed(running, client)
    assert (message.from_number, message.keyword) == (sender, "STOP")
    await refused_as_suppressed(client, sender)


async def test_start_does_not_lift_a_suppression_the_account_added(running: Running) -> None:
    client = await running.client()
    sender = number(6)
    await send(client, sender, common_pb2.USE_TYPE_NOTIFICATION)
    await suppressions(running).AddSuppressions(
        suppression_pb2.AddSuppressionsRequest(mobiles=[sender]), metadata=client.metadata
    )
    assert await inject(running, sender, "START") == 200
    await refused_as_suppressed(client, sender)
    # And STOP keeps it MANUAL, so a later START still cannot lift it.
    assert await inject(running, sender, "STOP") == 200
    assert await inject(running, sender, "START") == 200
    await refused_as_suppressed(client, sender)


async def test_help_is_answered_with_the_languages_reply_through_the_send_path(
    running: Running,
) -> None:
    client = await running.client()
    sender = number(7)
    await send(client, sender, common_pb2.USE_TYPE_NOTIFICATION)
    assert await inject(running, sender, "ayuda") == 200
    assert (await listed(running, client))[0].keyword == "HELP"
    row = await running.gateway.pool.fetchrow(
        "SELECT id, account_id, use_type FROM messages WHERE to_number = $1 AND body = $2",
        sender,
        SPANISH.help_reply,
    )
    assert row is not None and row["account_id"] == client.account_id
    assert row["use_type"] == common_pb2.USE_TYPE_NOTIFICATION
    state = await final_state(client, row["id"])
    assert state.status == common_pb2.MESSAGE_STATUS_DELIVERED
    loopback: Any = running.gateway.providers().transports["loopback"]
    assert loopback.accepted[row["id"]] == 1


async def test_another_accounts_inbound_messages_are_not_seen(running: Running) -> None:
    owner, other = await running.client(), await running.client()
    sender = number(8)
    await send(owner, sender, common_pb2.USE_TYPE_NOTIFICATION)
    assert await inject(running, sender, "STOP") == 200
    assert [m.from_number for m in await listed(running, owner)] == [sender]
    assert await listed(running, other) == []
    # Nor streamed: the other account's resume from 0 sends nothing of it.
    stream = inbound(running).WatchInboundMessages(
        inbound_pb2.WatchInboundMessagesRequest(after_event_id=1), metadata=other.metadata
    )
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(stream.read(), 1.0)
    finally:
        stream.cancel()
    # And the STOP suppressed the number for its owner alone.
    assert await send(other, sender)


async def test_a_message_nobody_owns_is_dropped_and_a_page_token_pages(running: Running) -> None:
    client = await running.client()
    assert await inject(running, number(9), "who is this?") == 200  # nobody sent to it
    assert await listed(running, client) == []
    sender = number(10)
    await send(client, sender, common_pb2.USE_TYPE_NOTIFICATION)
    for i in range(3):
        assert await inject(running, sender, f"message {i}") == 200
    stub = inbound(running)
    first = await stub.ListInboundMessages(
        inbound_pb2.ListInboundMessagesRequest(page_size=2), metadata=client.metadata
    )
    second = await stub.ListInboundMessages(
        inbound_pb2.ListInboundMessagesRequest(page_size=2, page_token=first.next_page_token),
        metadata=client.metadata,
    )
    texts = [m.text for m in [*first.inbound_messages, *second.inbound_messages]]
    assert texts == ["message 2", "message 1", "message 0"]
    assert second.next_page_token == ""


async def test_injection_is_refused_unless_the_loopback_allows_it(gw: Running) -> None:
    client = await gw.client()
    sender = number(11)
    await send(client, sender, common_pb2.USE_TYPE_NOTIFICATION)
    assert await inject(gw, sender, "STOP") == 403
    assert await listed(gw, client) == []
    assert await send(client, sender)


# -- webhooks ---------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver([200])
    app = web.Application()
    app.router.add_post("/hook", made.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    made.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield made
    await runner.cleanup()


async def test_inbound_and_its_suppression_arrive_as_signed_webhook_events(
    running: Running, receiver: Receiver
) -> None:
    client = await running.client()
    hook = await hooks(running).CreateWebhook(
        webhook_pb2.CreateWebhookRequest(
            url=receiver.url,
            event_types=[
                webhook_pb2.EVENT_TYPE_INBOUND_MESSAGE,
                webhook_pb2.EVENT_TYPE_SUPPRESSION,
            ],
        ),
        metadata=client.metadata,
    )
    sender = number(12)
    await send(client, sender, common_pb2.USE_TYPE_NOTIFICATION)
    assert await inject(running, sender, "STOP") == 200
    (message,) = await listed(running, client)

    async def both() -> bool:
        return len(receiver.accepted()) >= 2

    await wait_for(both, within=20)
    for headers, body, _ in receiver.requests:
        assert verify(hook.secret, headers, body)
    events = {e["type"]: e for e in receiver.accepted()}
    pushed = events["EVENT_TYPE_INBOUND_MESSAGE"]
    assert pushed["id"] == str(message.event_id)
    assert pushed["inboundMessage"]["fromNumber"] == sender
    assert pushed["inboundMessage"]["keyword"] == "STOP"
    assert pushed["inboundMessage"]["id"] == message.id
    change = events["EVENT_TYPE_SUPPRESSION"]["suppression"]
    assert change == {"mobile": sender, "suppressed": True, "inboundMessageId": message.id} | {
        "occurredAt": change["occurredAt"]
    }


# -- Twilio ---------------------------------------------------------------------------


async def with_twilio(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator], **account: Any
) -> tuple[Running, RunningEmulator, str]:
    """A gateway whose only route is the Twilio emulator, whose numbers' inbound
    webhook is the gateway's /inbound/twilio/tw."""
    gateway = await start_gateway(routing=only(ProviderSpec("lb", "loopback")))
    hook = f"http://127.0.0.1:{gateway.gateway.http_port}/inbound/twilio/tw"
    settings = EmulatorSettings(
        credential_id=SID, credential_secret=TOKEN, controls=EmulatorControls(delivery_delay=0.1)
    )
    emulator = await RunningEmulator(
        twilio_emulator.build_app(settings, numbers=[TWILIO_NUMBER], sms_url=hook, **account)
    ).start()
    emulators.append(emulator)
    spec = ProviderSpec(
        "tw",
        "twilio",
        emulator.base_url,
        {"account_sid": SID, "auth_token": TOKEN},
        timeout_seconds=2.0,
        options={"from_number": TWILIO_NUMBER, "inbound_url": hook},
    )
    routing = dataclasses.replace(only(spec), inbound=INBOUND)
    await gateway.gateway.reload(dataclasses.replace(gateway.gateway.settings, routing=routing))
    return gateway, emulator, hook


async def handset(emulator: RunningEmulator, sender: str, text: str) -> dict[str, Any]:
    """A recipient texts the Twilio number; the emulator posts it to the gateway."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            emulator.base_url + "/_emulator/inbound",
            json={"From": sender, "To": TWILIO_NUMBER, "Body": text},
        ) as reply,
    ):
        assert reply.status == 200
        answer: dict[str, Any] = await reply.json()
        return answer


async def test_twilio_inbound_is_verified_stored_and_help_answered_through_twilio(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    gateway, emulator, hook = await with_twilio(start_gateway, emulators)
    client = await gateway.client()
    sender = "+14155552671"
    await final_state(client, await send(client, sender, common_pb2.USE_TYPE_NOTIFICATION))

    answer = await handset(emulator, sender, "Hello from my phone")
    assert answer["http_status"] == 200
    (message,) = await listed(gateway, client)
    assert (message.from_number, message.to, message.text, message.provider) == (
        sender,
        TWILIO_NUMBER,
        "Hello from my phone",
        "tw",
    )
    # Twilio posting the same message again (a retried webhook) stores it once.
    again = {"MessageSid": answer["sid"], "From": sender, "To": TWILIO_NUMBER, "Body": "Hi"}
    signed = twilio_emulator.signature(TOKEN, hook, again)
    assert await post_form(hook, again, {"X-Twilio-Signature": signed}) == 200
    assert [m.id for m in await listed(gateway, client)] == [message.id]

    # A forged post (wrong auth token) is refused, and nothing is stored.
    form = {"MessageSid": "SM" + "f" * 32, "From": sender, "To": TWILIO_NUMBER, "Body": "STOP"}
    forged = twilio_emulator.signature("not-the-token", hook, form)
    assert await post_form(hook, form, {"X-Twilio-Signature": forged}) == 403
    assert await post_form(hook, form) == 403  # unsigned
    assert len(await listed(gateway, client)) == 1
    assert await send(client, sender)  # not suppressed

    # HELP: the configured reply goes out through Twilio to the sender.
    assert (await handset(emulator, sender, "HELP"))["http_status"] == 200
    reply_text = INBOUND.languages["en"].help_reply

    async def replied() -> bool:
        return any((r.phone, r.content) == (sender, reply_text) for r in emulator.state.received)

    await wait_for(replied)


async def test_twilio_stop_suppresses_and_a_21610_refusal_does_too(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    opted_out = "+14155552672"
    gateway, emulator, _ = await with_twilio(start_gateway, emulators, opted_out=[opted_out])
    client = await gateway.client()
    sender = "+14155552673"
    await final_state(client, await send(client, sender))
    assert (await handset(emulator, sender, "UNSUBSCRIBE"))["http_status"] == 200
    await refused_as_suppressed(client, sender)

    # Twilio refuses a number that opted out of its number before we knew (21610):
    # the message is rejected and the number suppressed _OPT_OUT with it.
    state = await final_state(client, await send(client, opted_out))
    assert (state.status, state.error_code) == (common_pb2.MESSAGE_STATUS_REJECTED, "21610")
    stored = await suppressions(gateway).GetSuppression(
        suppression_pb2.GetSuppressionRequest(mobile=opted_out), metadata=client.metadata
    )
    assert stored.reason == suppression_pb2.SUPPRESSION_REASON_OPT_OUT
    await refused_as_suppressed(client, opted_out)


async def test_the_cli_injects_lists_and_watches_inbound_messages(running: Running) -> None:
    client = await running.client()
    sender = number(13)
    await send(client, sender, common_pb2.USE_TYPE_NOTIFICATION)
    http = f"127.0.0.1:{running.gateway.http_port}"
    code, out, err = await smsgw(
        running,
        client,
        "inbound",
        "inject",
        "--from",
        sender,
        "--text",
        "quit",
        "--http-addr",
        http,
    )
    assert (code, out.strip()) == (0, "injected"), err
    code, out, err = await smsgw(running, client, "inbound", "list")
    assert code == 0, err
    (shown,) = json.loads(out)["inboundMessages"]
    assert (shown["fromNumber"], shown["keyword"], shown["text"]) == (sender, "STOP", "quit")
    await refused_as_suppressed(client, sender)
    # watch --after-event-id replays from there (stopped once it printed the message).
    proc = await asyncio.create_subprocess_exec(
        *SMSGW,
        "inbound", "watch", "--after-event-id", str(int(shown["eventId"]) - 1),
        env={
            **os.environ,
            "SMSGW_ADDR": f"127.0.0.1:{running.gateway.grpc_port}",
            "SMSGW_API_KEY": client.api_key,
            "SMSGW_API_SECRET": client.api_secret,
        },
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert json.loads(line)["id"] == shown["id"]
    finally:
        proc.kill()
        await proc.wait()
    # No gateway there: the command says so.
    code, _, err = await smsgw(
        running, client, "inbound", "inject", "--from", sender, "--text", "hi",
        "--http-addr", "127.0.0.1:9",
    )  # fmt: skip
    assert code == 1 and "cannot reach" in err
