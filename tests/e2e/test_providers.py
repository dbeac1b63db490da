"""The gateway with real transports talking HTTP to the provider emulators:
failover, the circuit breaker, status polling, template-only routing, webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os

import aiohttp
import grpc
import pytest
from sms.v1 import common_pb2, message_pb2, template_pb2

from server.emulators import sendsms as sendsms_emulator
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.routes_file import ProviderSpec
from tests.e2e.conftest import Client, GatewayFactory, Running, final_state, wait_for
from tests.e2e.emulated import cloud, failover, only, sky, start_sendcloud, start_skynoo
from tests.e2e.errors import reason

CN = "+8613800138000"


async def send_text(client: Client) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=CN, use_type=common_pb2.USE_TYPE_NOTIFICATION, text="Your order has shipped."
        ),
        metadata=client.metadata,
    )
    return reply.id


async def send_template(client: Client) -> str:
    with contextlib.suppress(grpc.aio.AioRpcError):  # created by an earlier call
        await client.templates.CreateTemplate(
            template_pb2.CreateTemplateRequest(
                template=template_pb2.Template(
                    code="order_shipped",
                    content="Your order #order_no# has shipped.",
                    use_type=common_pb2.USE_TYPE_NOTIFICATION,
                )
            ),
            metadata=client.metadata,
        )
    page = await client.templates.ListTemplates(
        template_pb2.ListTemplatesRequest(), metadata=client.metadata
    )
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=CN,
            use_type=common_pb2.USE_TYPE_NOTIFICATION,
            template_id=page.templates[0].id,
            data={"order_no": "A-1"},
        ),
        metadata=client.metadata,
    )
    return reply.id


async def history(running: Running, message_id: str) -> list[int]:
    rows = await running.gateway.pool.fetch(
        "SELECT status FROM message_events WHERE message_id = $1 ORDER BY event_id", message_id
    )
    return [r["status"] for r in rows]


FAST = {"retry_base_seconds": 0.05, "poll_interval_seconds": 0.2}


async def test_skynoo_send_is_polled_to_delivered(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    emulator = await start_skynoo(emulators, delivery_delay=0.2)
    routing = only(sky(emulator))
    running = await start_gateway(routing=routing, **FAST)
    client = await running.client()
    message_id = await send_text(client)
    state = await final_state(client, message_id)
    assert (state.status, state.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "sky")
    assert [r.phone for r in emulator.state.received] == [CN]
    assert await history(running, message_id) == [
        common_pb2.MESSAGE_STATUS_PENDING,
        common_pb2.MESSAGE_STATUS_SENT,
        common_pb2.MESSAGE_STATUS_DELIVERED,
    ]


async def test_primary_answering_5xx_fails_over_to_the_secondary(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    broken = await start_skynoo(emulators, fail_rate=1.0, fault="http_500")
    healthy = await start_skynoo(emulators, delivery_delay=0.1)
    routing = failover(sky(broken, "primary"), sky(healthy, "secondary"))
    running = await start_gateway(routing=routing, retries_per_provider=2, **FAST)
    client = await running.client()
    message_id = await send_text(client)
    state = await final_state(client, message_id)
    assert (state.status, state.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "secondary")
    assert broken.state.received == []
    assert len(healthy.state.received) == 1
    attempts = await running.gateway.pool.fetchval(
        "SELECT attempts FROM messages WHERE id = $1", message_id
    )
    assert attempts == 3  # two on the primary, then the secondary
    assert common_pb2.MESSAGE_STATUS_QUEUED in await history(running, message_id)


async def test_breaker_opens_on_repeated_failures_and_closes_after_a_probe(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    flaky = await start_skynoo(emulators, fail_rate=1.0, fault="http_500", delivery_delay=0.1)
    routing = failover(sky(flaky, "flaky"), ProviderSpec("spare", "loopback"))
    running = await start_gateway(
        routing=routing,
        retries_per_provider=1,
        breaker_failures=2,
        breaker_reset_seconds=0.5,
        **FAST,
    )
    client = await running.client()
    first = [await send_text(client) for _ in range(3)]
    for message_id in first:
        assert (await final_state(client, message_id)).provider == "spare"
    assert running.gateway.providers().breaker_states()["flaky"] == "open"

    flaky.state.settings.controls.fail_rate = 0.0
    await asyncio.sleep(0.6)
    probe = await send_text(client)
    assert (await final_state(client, probe)).provider == "flaky"
    assert running.gateway.providers().breaker_states()["flaky"] == "closed"


async def test_free_text_is_never_sent_to_a_template_only_provider(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    sendcloud = await start_sendcloud(emulators, delivery_delay=0.1)
    skynoo = await start_skynoo(emulators, delivery_delay=0.1)
    routing = failover(cloud(sendcloud), sky(skynoo))
    running = await start_gateway(routing=routing, **FAST)
    client = await running.client()
    text = await final_state(client, await send_text(client))
    assert (text.status, text.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "sky")
    templated = await final_state(client, await send_template(client))
    assert (templated.status, templated.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "cloud")
    assert [r.content for r in sendcloud.state.received] == ["Your order A-1 has shipped."]
    assert len(skynoo.state.received) == 1

    only_cloud = only(cloud(sendcloud))
    await running.gateway.reload(dataclasses.replace(running.gateway.settings, routing=only_cloud))
    # Free text now has no route: refused at the call (routing knows it), not stored.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send_text(client)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(caught.value) == "NO_ROUTE"
    assert len(sendcloud.state.received) == 1


async def test_sendcloud_webhook_delivers_and_a_forged_one_is_refused(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    running = await start_gateway(
        routing=only(ProviderSpec("lb", "loopback")),
        retry_base_seconds=0.05,
        poll_interval_seconds=3600,  # only the webhook can report delivery
    )
    hook_url = f"http://127.0.0.1:{running.gateway.http_port}/webhooks/sendcloud"
    sendcloud = await start_sendcloud(emulators, webhook_url=hook_url, delivery_delay=0.2)
    await running.gateway.reload(
        dataclasses.replace(
            running.gateway.settings,
            routing=only(cloud(sendcloud)),
        )
    )
    client = await running.client()
    message_id = await send_template(client)
    state = await final_state(client, message_id)
    assert (state.status, state.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "cloud")

    forged = {
        "event": "delivered",
        "smsId": sendcloud.state.received[0].provider_message_id,
        "phone": "13800138000",
        "statusCode": "0",
        "message": "ok",
        "timestamp": "1",
        "token": "x" * 32,
        "signature": "0" * 64,
    }
    async with aiohttp.ClientSession() as session, session.post(hook_url, data=forged) as reply:
        assert reply.status == 403
    assert await history(running, message_id) == [
        common_pb2.MESSAGE_STATUS_PENDING,
        common_pb2.MESSAGE_STATUS_SENT,
        common_pb2.MESSAGE_STATUS_DELIVERED,
    ]


@pytest.mark.parametrize("fault", ["garbage", "html", "drop", "timeout"])
async def test_bad_provider_answers_are_retried_never_a_crash(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator], fault: str
) -> None:
    bad = await start_skynoo(emulators, fail_rate=1.0, fault=fault, timeout_seconds=3.0)
    routing = only(sky(bad))
    running = await start_gateway(routing=routing, max_attempts=2, **FAST)
    client = await running.client()
    state = await final_state(client, await send_text(client))
    assert state.status == common_pb2.MESSAGE_STATUS_FAILED
    assert state.error_code in {"BAD_RESPONSE", "HTTP_502", "CONNECTION", "TIMEOUT"}
    assert await running.gateway.health.is_healthy()
    assert os.getpid()  # still here: the process did not crash


async def test_a_providers_per_number_limit_delays_the_retry_by_its_window(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    settings = EmulatorSettings(
        credential_id="cookpad_Server_001",
        credential_secret="ARDOR-7JF3",
        templates={"t1": "Your order ${order_no} has shipped."},
        controls=EmulatorControls(delivery_delay=0.1),
    )
    emulator = await RunningEmulator(sendsms_emulator.build_app(settings)).start()
    emulators.append(emulator)
    spec = ProviderSpec(
        "sms",
        "sendsms",
        emulator.base_url,
        {"client_id": "cookpad_Server_001", "passcode": "ARDOR-7JF3"},
        # Generous: under a loaded CI machine a 1 s timeout could end the second send as
        # TIMEOUT rather than the provider's 429, which is what this test is about.
        timeout_seconds=10.0,
        templates={"order_shipped": "t1"},
    )
    running = await start_gateway(routing=only(spec), **FAST)
    client = await running.client()
    # One after the other: sent together, either could reach the provider first.
    first = await send_template(client)
    assert (await final_state(client, first)).provider == "sms"
    second = await send_template(client)

    async def refused() -> bool:
        row = await running.gateway.pool.fetchrow(
            "SELECT status, error_code, not_before - now() AS wait FROM messages WHERE id = $1",
            second,
        )
        assert row is not None
        return bool(
            row["status"] == common_pb2.MESSAGE_STATUS_QUEUED and row["error_code"] == "HTTP_429"
        )

    await wait_for(refused, within=30.0)
    wait = await running.gateway.pool.fetchval(
        "SELECT extract(epoch FROM not_before - now()) FROM messages WHERE id = $1", second
    )
    assert 50 < wait <= 60
    assert [r.content for r in emulator.state.received] == ["Your order A-1 has shipped."]


async def test_partial_status_answers_still_reach_every_message(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    emulator = await start_skynoo(emulators, delivery_delay=0.1, partial_rate=0.5)
    routing = only(sky(emulator))
    running = await start_gateway(routing=routing, **FAST)
    client = await running.client()
    ids = [await send_text(client) for _ in range(8)]
    for message_id in ids:
        assert (await final_state(client, message_id)).status == common_pb2.MESSAGE_STATUS_DELIVERED


async def test_a_message_past_its_validity_period_fails_as_expired(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    down = await start_skynoo(emulators, fail_rate=1.0, fault="http_500")
    routing = only(sky(down))
    running = await start_gateway(
        routing=routing, max_attempts=1000, message_ttl_seconds=1.0, **FAST
    )
    client = await running.client()
    state = await final_state(client, await send_text(client))
    assert (state.status, state.error_code) == (common_pb2.MESSAGE_STATUS_FAILED, "EXPIRED")


async def test_a_providers_rate_limit_paces_outbound_sends(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    emulator = await start_skynoo(emulators, delivery_delay=0.05)
    spec = dataclasses.replace(sky(emulator), rate_per_second=5.0)
    running = await start_gateway(routing=only(spec), **FAST)
    client = await running.client()
    ids = [await send_text(client) for _ in range(12)]
    for message_id in ids:
        await final_state(client, message_id)
    times = sorted(r.accepted_at for r in emulator.state.received)
    # A bucket of 5 goes at once; the other 7 follow at 5 per second.
    assert times[-1] - times[0] >= 1.2
