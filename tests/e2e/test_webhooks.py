"""WebhookService: signed deliveries to a real aiohttp receiver started by the test.

Signatures are checked with an implementation written here from the Standard Webhooks
specification (https://www.standardwebhooks.com/), not with server code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.protobuf import timestamp_pb2
from sms.v1 import common_pb2, message_pb2, webhook_pb2, webhook_pb2_grpc

from tests.e2e.conftest import Client, GatewayFactory, Running, final_state, wait_for
from tests.e2e.errors import bad_fields

CN = "+8613800138000"
NOTE = common_pb2.USE_TYPE_NOTIFICATION
STATUS = webhook_pb2.EVENT_TYPE_MESSAGE_STATUS


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, from the spec: key = base64(secret after "whsec_"),
    signed content "{webhook-id}.{webhook-timestamp}.{body}", any "v1,<b64>" matching."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > 300:
        return False
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    return any(
        hmac.compare_digest(part.split(",", 1)[1], expected)
        for part in headers["webhook-signature"].split(" ")
        if part.startswith("v1,")
    )


@dataclass
class Receiver:
    """Answers each POST with the next of ``statuses`` (the last one repeats)."""

    statuses: list[int]
    url: str = ""
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    delay: float = 0.0  # seconds each answer takes
    answer_headers: dict[str, str] = field(default_factory=dict)
    outage: float = 0.0  # seconds from the first request answered 500, whatever statuses say

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.times.append(time.monotonic())
        await asyncio.sleep(self.delay)
        status = self.statuses[min(len(self.requests), len(self.statuses) - 1)]
        if self.times[-1] - self.times[0] < self.outage:
            status = 500
        self.requests.append(({k.lower(): v for k, v in request.headers.items()}, body, status))
        return web.Response(status=status, headers=self.answer_headers if status >= 300 else {})

    def accepted(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, status in self.requests if status < 300]


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    runners: list[web.AppRunner] = []
    made: list[Receiver] = []
    yield made
    for runner in runners:
        await runner.cleanup()


async def start_receiver(made: list[Receiver], statuses: list[int]) -> Receiver:
    receiver = Receiver(statuses)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    made.append(receiver)
    return receiver


def hooks(running: Running) -> webhook_pb2_grpc.WebhookServiceAsyncStub:
    stub: webhook_pb2_grpc.WebhookServiceAsyncStub = webhook_pb2_grpc.WebhookServiceStub(
        running.channel
    )
    return stub


@pytest.fixture(scope="module")
async def insecure(start_gateway: GatewayFactory) -> Running:
    return await start_gateway(webhook_allow_insecure=True, webhook_retry_base_seconds=0.05)


async def create(running: Running, client: Client, url: str) -> webhook_pb2.Webhook:
    return await hooks(running).CreateWebhook(
        webhook_pb2.CreateWebhookRequest(url=url, event_types=[STATUS], description="t"),
        metadata=client.metadata,
    )


async def send(client: Client) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=CN,
            use_type=NOTE,
            text="hello",
            reference="order-77",
            metadata={"team": "shop"},
        ),
        metadata=client.metadata,
    )
    return reply.id


async def test_500s_then_200_get_every_event_once_in_order_signed(
    insecure: Running, receivers: list[Receiver]
) -> None:
    client = await insecure.client()
    receiver = await start_receiver(receivers, [500, 500, 503, 200])
    hook = await create(insecure, client, receiver.url)
    assert hook.secret.startswith("whsec_") and hook.id > 0
    message_id = await send(client)
    await final_state(client, message_id)
    logged = await insecure.gateway.pool.fetch(
        "SELECT event_id, status FROM message_events WHERE message_id = $1 ORDER BY event_id",
        message_id,
    )
    want = [(str(r["event_id"]), r["status"]) for r in logged]

    async def all_accepted() -> bool:
        return len(receiver.accepted()) >= len(want)

    await wait_for(all_accepted, within=20)
    got = [
        (e["id"], common_pb2.MessageStatus.Value(e["messageStatus"]["status"]))
        for e in receiver.accepted()
    ]
    assert got == want  # every event once, in the order of the log
    assert all(e["type"] == "EVENT_TYPE_MESSAGE_STATUS" for e in receiver.accepted())
    assert all(e["messageStatus"]["messageId"] == message_id for e in receiver.accepted())
    # The caller's reference and metadata come back with every pushed event.
    assert all(
        (e["messageStatus"]["reference"], e["messageStatus"]["metadata"])
        == ("order-77", {"team": "shop"})
        for e in receiver.accepted()
    )
    assert receiver.requests[0][2] == 500
    for headers, body, _ in receiver.requests:
        assert verify(hook.secret, headers, body)
        assert not verify(hook.secret, headers, body + b" ")
    # Retries of one delivery carry the same webhook-id (receivers deduplicate on it).
    first_event = json.loads(receiver.requests[0][1])["id"]
    ids = {h["webhook-id"] for h, b, _ in receiver.requests if json.loads(b)["id"] == first_event}
    assert len(ids) == 1

    page = await hooks(insecure).ListWebhookDeliveries(
        webhook_pb2.ListWebhookDeliveriesRequest(webhook_id=hook.id), metadata=client.metadata
    )
    assert {d.state for d in page.deliveries} == {webhook_pb2.DELIVERY_STATE_SUCCEEDED}
    first = next(d for d in page.deliveries if d.event_id == first_event)
    assert first.attempts == 4 and first.last_http_status == 200

    # The secret is shown once and stored sealed, never plain.
    again = await hooks(insecure).GetWebhook(
        webhook_pb2.GetWebhookRequest(id=hook.id), metadata=client.metadata
    )
    assert again.secret == "" and again.url == receiver.url and list(again.event_types) == [STATUS]
    stored = await insecure.gateway.pool.fetchval(
        "SELECT secret_sealed FROM webhooks WHERE id = $1", hook.id
    )
    assert hook.secret.encode() not in bytes(stored)
    assert base64.b64decode(hook.secret[6:]) not in bytes(stored)


async def test_an_endpoint_down_10_minutes_then_up_gets_every_event_once_in_order(
    insecure: Running, receivers: list[Receiver]
) -> None:
    """The insecure gateway's retry schedule is the default's (5 s doubling) scaled by
    1/100 (0.05 s), so its 6 s of 500s stand for 10 minutes of them."""
    client = await insecure.client()
    receiver = await start_receiver(receivers, [200])
    receiver.outage = 600 / 100
    await create(insecure, client, receiver.url)
    sent = [await send(client) for _ in range(3)]
    for message_id in sent:
        await final_state(client, message_id)
    logged = await insecure.gateway.pool.fetch(
        "SELECT event_id, message_id FROM message_events WHERE message_id = ANY($1::text[]) "
        "ORDER BY event_id",
        sent,
    )

    async def all_accepted() -> bool:
        return len(receiver.accepted()) >= len(logged)

    await wait_for(all_accepted, within=30)
    await asyncio.sleep(0.5)  # time for a duplicate to show, if one came
    got = [e["id"] for e in receiver.accepted()]
    assert sorted(got) == sorted(str(r["event_id"]) for r in logged)  # each once
    for message_id in sent:
        mine = [
            e["id"] for e in receiver.accepted() if e["messageStatus"]["messageId"] == message_id
        ]
        assert mine == [str(r["event_id"]) for r in logged if r["message_id"] == message_id]
    failed = [r for r in receiver.requests if r[2] == 500]
    # The endpoint was retried through its whole outage, and the first 200 came after it.
    assert len(failed) >= 5 and receiver.times[len(failed)] - receiver.times[0] >= 6.0


async def test_410_disables_the_endpoint(insecure: Running, receivers: list[Receiver]) -> None:
    client = await insecure.client()
    receiver = await start_receiver(receivers, [410])
    hook = await create(insecure, client, receiver.url)
    await final_state(client, await send(client))

    async def disabled() -> bool:
        got = await hooks(insecure).GetWebhook(
            webhook_pb2.GetWebhookRequest(id=hook.id), metadata=client.metadata
        )
        return got.disabled

    await wait_for(disabled, within=10)
    tried = len(receiver.requests)
    assert tried == 1
    await final_state(client, await send(client))
    page = await hooks(insecure).ListWebhookDeliveries(
        webhook_pb2.ListWebhookDeliveriesRequest(webhook_id=hook.id), metadata=client.metadata
    )
    assert page.deliveries and all(
        d.state == webhook_pb2.DELIVERY_STATE_FAILED for d in page.deliveries
    )
    assert len(receiver.requests) == tried


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",  # not https
        "https://127.0.0.1/hook",  # loopback
        "https://localhost/hook",  # resolves to loopback
        "https://10.1.2.3/hook",  # private
        "https://192.168.0.1/hook",  # private
        "https://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
        "https://[::1]/hook",  # IPv6 loopback
        "https://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
        "ftp://example.com/",
        "not a url",
        "https://a..b/hook",  # an empty label (idna refuses it)
        "https://" + "a" * 70 + ".com/",  # a label longer than 63
        "https://example.com:99999/",
        "https://203.0\x00.113.7/hook",  # a NUL (PostgreSQL cannot store it)
    ],
)
async def test_unsafe_urls_are_refused(gw: Running, url: str) -> None:
    client = await gw.client()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(gw, client, url)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err.value) == {"url"}
    listed = await hooks(gw).ListWebhooks(
        webhook_pb2.ListWebhooksRequest(), metadata=client.metadata
    )
    assert list(listed.webhooks) == []


async def test_delivery_to_a_name_resolving_to_loopback_makes_no_connection(
    start_gateway: GatewayFactory,
) -> None:
    """An endpoint whose host resolves to 127.0.0.1 by the time of delivery (its DNS
    answer changed since it was created: here it was created by a gateway with
    SMSGW_WEBHOOK_ALLOW_INSECURE, which delivers nothing) is refused by a gateway
    without that setting: no connection reaches the address."""
    accepted: list[object] = []

    async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("peername"))
        writer.close()

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        creator = await start_gateway(webhook_allow_insecure=True, dispatch_workers=0)
        strict = await start_gateway(
            database_url=creator.gateway.settings.database_url, webhook_retry_base_seconds=0.05
        )
        client = await strict.client()
        hook = await create(creator, client, f"https://localhost:{port}/hook")
        await final_state(client, await send(client))

        async def tried_three_times() -> bool:
            page = await hooks(strict).ListWebhookDeliveries(
                webhook_pb2.ListWebhookDeliveriesRequest(webhook_id=hook.id),
                metadata=client.metadata,
            )
            # The message's first event is retried; the later ones wait behind it.
            first = min(page.deliveries, key=lambda d: d.event_id, default=None)
            assert all(d.state == webhook_pb2.DELIVERY_STATE_PENDING for d in page.deliveries)
            return first is not None and first.attempts >= 3 and first.last_http_status == 0

        await wait_for(tried_three_times, within=10)
        assert accepted == []
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_description_with_a_nul_is_refused(insecure: Running) -> None:
    client = await insecure.client()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hooks(insecure).CreateWebhook(
            webhook_pb2.CreateWebhookRequest(
                url="http://127.0.0.1:9/hook",
                event_types=[webhook_pb2.EVENT_TYPE_MESSAGE_STATUS],
                description="night\x00shift",
            ),
            metadata=client.metadata,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err.value) == {"description"}


async def test_event_types_are_required(gw: Running) -> None:
    client = await gw.client()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hooks(gw).CreateWebhook(
            webhook_pb2.CreateWebhookRequest(url="http://example.com/"), metadata=client.metadata
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err.value) == {"url", "event_types"}


async def test_another_accounts_webhook_is_not_found(
    insecure: Running, receivers: list[Receiver]
) -> None:
    owner, other = await insecure.client(name="owner"), await insecure.client(name="other")
    receiver = await start_receiver(receivers, [200])
    hook = await create(insecure, owner, receiver.url)
    stub = hooks(insecure)
    calls: list[Awaitable[object]] = [
        stub.GetWebhook(webhook_pb2.GetWebhookRequest(id=hook.id), metadata=other.metadata),
        stub.DeleteWebhook(webhook_pb2.DeleteWebhookRequest(id=hook.id), metadata=other.metadata),
        stub.ListWebhookDeliveries(
            webhook_pb2.ListWebhookDeliveriesRequest(webhook_id=hook.id), metadata=other.metadata
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListWebhooks(webhook_pb2.ListWebhooksRequest(), metadata=other.metadata)
    assert list(listed.webhooks) == []
    # The other account's messages never reach the owner's endpoint.
    await final_state(other, await send(other))
    mine = await send(owner)
    await final_state(owner, mine)

    async def owner_events_in() -> bool:
        return any(
            e["messageStatus"]["status"] == "MESSAGE_STATUS_DELIVERED" for e in receiver.accepted()
        )

    await wait_for(owner_events_in, within=10)
    assert {e["messageStatus"]["messageId"] for e in receiver.accepted()} == {mine}
    await stub.DeleteWebhook(webhook_pb2.DeleteWebhookRequest(id=hook.id), metadata=owner.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetWebhook(webhook_pb2.GetWebhookRequest(id=hook.id), metadata=owner.metadata)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_redeliver_sends_a_time_range_again(
    insecure: Running, receivers: list[Receiver]
) -> None:
    client = await insecure.client()
    receiver = await start_receiver(receivers, [200])
    hook = await create(insecure, client, receiver.url)
    message_id = await send(client)
    await final_state(client, message_id)
    count = await insecure.gateway.pool.fetchval(
        "SELECT count(*) FROM message_events WHERE message_id = $1", message_id
    )

    async def all_in(n: int) -> bool:
        return len(receiver.accepted()) >= n

    await wait_for(lambda: all_in(count), within=10)
    first = [e["id"] for e in receiver.accepted()]
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.GetCurrentTime()
    end.GetCurrentTime()
    start.seconds -= 3600
    end.seconds += 60
    reply = await hooks(insecure).RedeliverWebhookEvents(
        webhook_pb2.RedeliverWebhookEventsRequest(
            webhook_id=hook.id, start_time=start, end_time=end
        ),
        metadata=client.metadata,
    )
    assert reply.count == count
    await wait_for(lambda: all_in(2 * count), within=10)
    assert [e["id"] for e in receiver.accepted()] == first + first

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hooks(insecure).RedeliverWebhookEvents(
            webhook_pb2.RedeliverWebhookEventsRequest(
                webhook_id=hook.id, start_time=end, end_time=start
            ),
            metadata=client.metadata,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err.value) == {"end_time"}


async def test_429_retry_after_is_respected_and_counted(
    insecure: Running, receivers: list[Receiver]
) -> None:
    client = await insecure.client()
    receiver = await start_receiver(receivers, [429, 200])
    receiver.answer_headers = {"Retry-After": "1"}
    await create(insecure, client, receiver.url)
    await final_state(client, await send(client))

    async def two_tries() -> bool:
        return len(receiver.requests) >= 2

    await wait_for(two_tries, within=10)
    # The base delay is 0.05 s; the endpoint asked for a second.
    assert receiver.times[1] - receiver.times[0] >= 0.95
    assert json.loads(receiver.requests[0][1])["id"] == json.loads(receiver.requests[1][1])["id"]
    url = f"http://127.0.0.1:{insecure.gateway.http_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    assert 'smsgw_webhook_deliveries_total{result="retried"}' in text
    assert 'smsgw_webhook_deliveries_total{result="succeeded"}' in text
    assert "smsgw_webhook_backlog " in text
    assert "smsgw_webhook_oldest_pending_seconds " in text


async def test_a_slow_endpoint_does_not_delay_another(
    insecure: Running, receivers: list[Receiver]
) -> None:
    slow_client, fast_client = await insecure.client(), await insecure.client()
    slow = await start_receiver(receivers, [200])
    slow.delay = 4.0
    fast = await start_receiver(receivers, [200])
    await create(insecure, slow_client, slow.url)
    await create(insecure, fast_client, fast.url)
    for _ in range(6):
        await send(slow_client)
    started = time.monotonic()
    fast_id = await send(fast_client)
    await final_state(fast_client, fast_id)

    async def fast_delivered() -> bool:
        return any(
            e["messageStatus"]["status"] == "MESSAGE_STATUS_DELIVERED" for e in fast.accepted()
        )

    await wait_for(fast_delivered, within=3.5)
    # Every event of the fast endpoint came while the slow one still held its first answers.
    assert time.monotonic() - started < 4.0
    assert slow.accepted() == []
