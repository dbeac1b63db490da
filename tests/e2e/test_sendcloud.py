"""SendCloud end to end (issue 15 items 2 and 4, issue 16 item 3): a gateway on its
ports, a real database, the SendCloud emulator over HTTP."""

from __future__ import annotations

import dataclasses
import logging

import aiohttp
import grpc
import pytest
from sms.v1 import common_pb2

from server.emulators.common import RunningEmulator
from server.routes_file import ProviderSpec
from tests.e2e.conftest import GatewayFactory, Running, final_state
from tests.e2e.emulated import cloud, only, start_sendcloud
from tests.e2e.errors import reason
from tests.e2e.test_providers import history, send_template
from tests.e2e.test_verification import otp, send

CN = "+8613800138000"


async def with_webhook(
    start_gateway: GatewayFactory,
    emulators: list[RunningEmulator],
    retry_base_seconds: float = 0.05,
    **emulator_controls: object,
) -> tuple[Running, RunningEmulator]:
    """A gateway whose only route is a SendCloud emulator pushing SMSHook events to it;
    no polling, so only the webhook can report delivery."""
    running = await start_gateway(
        routing=only(ProviderSpec("lb", "loopback")),
        retry_base_seconds=retry_base_seconds,
        poll_interval_seconds=3600,
        otp=otp(),
    )
    hook_url = f"http://127.0.0.1:{running.gateway.http_port}/webhooks/sendcloud"
    emulator = await start_sendcloud(emulators, webhook_url=hook_url, **emulator_controls)
    spec = dataclasses.replace(cloud(emulator), options={"sign_name": "Shop"})
    await running.gateway.reload(dataclasses.replace(running.gateway.settings, routing=only(spec)))
    return running, emulator


async def tune(emulator: RunningEmulator, **knobs: object) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{emulator.base_url}/_emulator/sendcloud", json=knobs) as reply,
    ):
        assert reply.status == 200, await reply.text()


async def test_an_sms_code_goes_through_send_code_with_the_configured_sign_name(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    running, emulator = await with_webhook(start_gateway, emulators, delivery_delay=0.1)
    client = await running.client()
    sent = await send(client, code="4711")
    state = await final_state(client, sent.message_id)
    assert (state.status, state.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "cloud")
    (received,) = emulator.state.received
    # sendCode words the text itself, with the signature the `sign_name` option gave.
    assert (received.phone, received.content) == (
        "13800138000",
        "【Shop】Your verification code is 4711.",
    )
    # A code sendCode cannot carry (8 digits is not 4-6) on a SendCloud-only route is
    # refused at the call (issue 15.5), never accepted and dropped.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await send(client, "+8613900139000", code="12345678")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(refused.value) == "NO_ROUTE"
    assert len(emulator.state.received) == 1


async def test_a_lost_answer_and_a_duplicate_retry_still_end_delivered_by_smshook(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    # Settles after the retry (so the retry's recovered smsId is recorded first).
    running, emulator = await with_webhook(start_gateway, emulators, delivery_delay=1.5)
    # The first send is processed (the message goes out) and its answer is lost; the
    # retry is answered 400 "duplicate request" with no smsIds (as the seed shows it).
    await tune(emulator, drop_answers=1)
    client = await running.client()
    message_id = await send_template(client)
    state = await final_state(client, message_id)
    assert (state.status, state.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "cloud")
    (received,) = emulator.state.received  # sent once, not twice
    row = await running.gateway.pool.fetchrow(
        "SELECT provider_message_id, attempts FROM messages WHERE id = $1", message_id
    )
    # The provider's smsId was recovered, not our own id recorded in its place.
    assert row is not None
    assert row["provider_message_id"] == received.provider_message_id
    assert row["attempts"] >= 2
    assert await history(running, message_id) == [
        common_pb2.MESSAGE_STATUS_PENDING,
        common_pb2.MESSAGE_STATUS_QUEUED,
        common_pb2.MESSAGE_STATUS_SENT,
        common_pb2.MESSAGE_STATUS_DELIVERED,
    ]


async def test_an_smshook_that_comes_before_the_retry_matches_by_our_tag(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    # Settles at once and the retry waits 2 s: the signed event arrives while no
    # smsId is recorded (matching by smsId would park it); the tag we sent names it.
    running, emulator = await with_webhook(
        start_gateway, emulators, retry_base_seconds=2.0, delivery_delay=0.0
    )
    await tune(emulator, drop_answers=1)
    client = await running.client()
    message_id = await send_template(client)
    state = await final_state(client, message_id, within=1.5)  # before any retry
    assert (state.status, state.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "cloud")
    assert len(emulator.state.received) == 1
    # QUEUED (the dropped answer, to retry) is recorded unless the receipt was first:
    # a final status is never followed by an earlier one. The receipt names the
    # provider's smsId, so it records the send it reports on (SENT) before DELIVERED.
    assert await history(running, message_id) in (
        [
            common_pb2.MESSAGE_STATUS_PENDING,
            common_pb2.MESSAGE_STATUS_QUEUED,
            common_pb2.MESSAGE_STATUS_SENT,
            common_pb2.MESSAGE_STATUS_DELIVERED,
        ],
        [
            common_pb2.MESSAGE_STATUS_PENDING,
            common_pb2.MESSAGE_STATUS_SENT,
            common_pb2.MESSAGE_STATUS_DELIVERED,
        ],
    )


async def test_a_voice_code_still_goes_to_send_voice(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    running, emulator = await with_webhook(start_gateway, emulators, delivery_delay=0.1)
    client = await running.client()
    # sendVoice takes 4-6 digits (seed 001): 8 digits is refused at the call.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await send(client, channel=common_pb2.CHANNEL_VOICE, code="12345678")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(refused.value) == "NO_ROUTE"
    assert emulator.state.received == []
    sent = await send(client, channel=common_pb2.CHANNEL_VOICE, code="4711")
    state = await final_state(client, sent.message_id)
    assert state.status == common_pb2.MESSAGE_STATUS_DELIVERED
    assert emulator.state.received[0].content == "[voice call] Your verification code is 4711."


MALFORMED = {
    "bad UTF-8 form": ("application/x-www-form-urlencoded", b"event=\xff\xfe&smsId=\x80"),
    "binary": ("application/octet-stream", bytes(range(256))),
    "binary as a form": ("application/x-www-form-urlencoded", bytes(range(256))),
    "multipart cut short": (
        "multipart/form-data; boundary=b0",
        b'--b0\r\nContent-Disposition: form-data; name="event"\r\n\r\ndeliv',
    ),
    "multipart without boundary": ("multipart/form-data", b"garbage"),
    "multipart bad UTF-8": (
        "multipart/form-data; boundary=b0",
        b'--b0\r\nContent-Disposition: form-data; name="event"\r\n\r\n\xff\xfe\r\n--b0--\r\n',
    ),
    "unknown charset": ("application/x-www-form-urlencoded; charset=nope", b"event=x"),
}


async def test_malformed_webhook_bodies_answer_400_with_one_short_log_line(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_gateway(routing=only(ProviderSpec("lb", "loopback")))
    url = f"http://127.0.0.1:{running.gateway.http_port}/webhooks/sendcloud"
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as session:
        for name, (content_type, body) in MALFORMED.items():
            caplog.clear()
            headers = {"Content-Type": content_type}
            async with session.post(url, data=body, headers=headers) as reply:
                assert reply.status == 400, name
                assert await reply.json() == {"accepted": False, "reason": "malformed body"}
            lines = [r for r in caplog.records if "webhook" in r.getMessage()]
            assert len(lines) == 1, (name, [r.getMessage() for r in caplog.records])
            (line,) = lines
            assert line.levelno < logging.ERROR and line.exc_info is None, name
            assert "\n" not in line.getMessage() and len(line.getMessage()) < 200, name
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], name
        # A well-formed but unsigned form is still refused as before (403), not 400.
        async with session.post(url, data={"event": "delivered"}) as reply:
            assert reply.status == 403
    assert await running.gateway.health.is_healthy()
