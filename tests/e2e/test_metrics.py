"""Prometheus metrics as an operator scrapes them: a real gateway, real gRPC calls and a
real HTTP GET of /metrics, parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import grpc
import pytest
from google.protobuf import timestamp_pb2
from prometheus_client.parser import text_string_to_metric_families
from sms.v1 import batch_pb2, common_pb2, message_pb2

from server.emulators.common import RunningEmulator
from server.routes_file import ProviderSpec
from server.store.accounts import PgAccountStore
from tests.e2e.batch_calls import create, numbers
from tests.e2e.conftest import Client, GatewayFactory, Running, final_state, wait_for
from tests.e2e.emulated import failover, sky, start_skynoo

SEND = "/sms.v1.MessageService/SendMessage"
WATCH = "/sms.v1.MessageService/WatchMessageStatus"
CN = "+8613800138000"


class Scrape:
    """One scrape: sample values by (sample name, labels)."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self._values = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in self.families.values()
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 if it is not exposed (a counter not yet incremented)."""
        return self._values.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self._values

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self._values.items() if n == name and wanted <= ls)


async def scrape(running: Running) -> Scrape:
    url = f"http://127.0.0.1:{running.gateway.http_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return Scrape(await response.text())


async def send(client: Client, mobile: str = CN, **fields: object) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=mobile,
            use_type=common_pb2.USE_TYPE_NOTIFICATION,
            text="Your order has shipped.",
            **fields,  # type: ignore[arg-type]
        ),
        metadata=client.metadata,
    )
    return reply.id


async def test_every_metric_is_described_on_the_http_port(gw: Running) -> None:
    families = (await scrape(gw)).families
    assert {
        "smsgw_rpc_requests",
        "smsgw_rpc_duration_seconds",
        "smsgw_messages",
        "smsgw_provider_request_duration_seconds",
        "smsgw_provider_errors",
        "smsgw_breaker_state",
        "smsgw_rate_limited",
        "smsgw_outbox_backlog",
        "smsgw_open_streams",
    } <= set(families)
    assert families["smsgw_rpc_requests"].type == "counter"
    assert families["smsgw_rpc_duration_seconds"].type == "histogram"
    assert families["smsgw_breaker_state"].type == "gauge"
    # The default loopback provider is there with a closed breaker.
    assert (await scrape(gw)).has("smsgw_breaker_state", provider="loopback")


async def test_rpc_calls_are_counted_by_method_and_code(gw: Running) -> None:
    client = await gw.client()
    before = await scrape(gw)
    await send(client)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(client, mobile="12345")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(
            message_pb2.SendMessageRequest(mobile=CN, text="x"),
            metadata=(("authorization", "Basic bm9ib2R5Om5vdGhpbmc="),),
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    after = await scrape(gw)

    def delta(**labels: str) -> float:
        name = "smsgw_rpc_requests_total"
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta(method=SEND, code="OK") == 1
    assert delta(method=SEND, code="INVALID_ARGUMENT") == 1
    assert delta(method=SEND, code="UNAUTHENTICATED") == 1
    count = "smsgw_rpc_duration_seconds_count"
    assert after.value(count, method=SEND) - before.value(count, method=SEND) == 3
    total = "smsgw_rpc_duration_seconds_sum"
    assert after.value(total, method=SEND) > before.value(total, method=SEND)


async def test_status_changes_and_the_outbox_backlog(start_gateway: GatewayFactory) -> None:
    running = await start_gateway()
    client = await running.client()
    tomorrow = timestamp_pb2.Timestamp(seconds=int(time.time()) + 86_400)
    for i in range(3):
        await send(client, f"+86138001380{i:02d}", send_at=tomorrow)
    sent = [await send(client, f"+86139001390{i:02d}") for i in range(2)]
    for message_id in sent:
        assert (await final_state(client, message_id)).status == (
            common_pb2.MESSAGE_STATUS_DELIVERED
        )

    metrics = await scrape(running)
    messages = "smsgw_messages_total"
    assert metrics.value(messages, status="SENT", provider="loopback") == 2
    assert metrics.value(messages, status="DELIVERED", provider="loopback") == 2
    assert metrics.total(messages, status="FAILED") == 0
    # The scheduled ones wait in the outbox.
    assert metrics.value("smsgw_outbox_backlog", status="PENDING") == 3
    assert metrics.value("smsgw_outbox_backlog", status="QUEUED") == 0
    sends = "smsgw_provider_request_duration_seconds_count"
    assert metrics.value(sends, provider="loopback") == 2


async def test_a_cancelled_batch_empties_the_backlog(start_gateway: GatewayFactory) -> None:
    running = await start_gateway(dispatch_workers=0)  # accept only: nothing is sent
    client = await running.client()
    reply = await create(client, content="Sale today.", numbers=numbers(20))
    assert reply.accepted_count == 20
    assert (await scrape(running)).value("smsgw_outbox_backlog", status="PENDING") == 20

    await client.batches.CancelBatch(
        batch_pb2.CancelBatchRequest(task_id=reply.task_id), metadata=client.metadata
    )
    metrics = await scrape(running)
    assert metrics.value("smsgw_outbox_backlog", status="PENDING") == 0
    assert metrics.value("smsgw_messages_total", status="CANCELLED", provider="") == 20
    assert metrics.value("smsgw_provider_request_duration_seconds_count", provider="loopback") == 0


async def test_a_failing_provider_opens_its_breaker_and_counts_errors(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    flaky = await start_skynoo(emulators, fail_rate=1.0, fault="http_500", delivery_delay=0.1)
    routing = failover(sky(flaky, "flaky"), ProviderSpec("spare", "loopback"))
    running = await start_gateway(
        routing=routing,
        retries_per_provider=1,
        breaker_failures=2,
        breaker_reset_seconds=0.5,
        retry_base_seconds=0.05,
        poll_interval_seconds=0.2,
    )
    client = await running.client()
    for message_id in [await send(client) for _ in range(3)]:
        assert (await final_state(client, message_id)).provider == "spare"

    metrics = await scrape(running)
    assert metrics.value("smsgw_breaker_state", provider="flaky") == 2  # open
    assert metrics.value("smsgw_breaker_state", provider="spare") == 0
    assert (
        metrics.value("smsgw_provider_errors_total", provider="flaky", error_code="HTTP_500") >= 2
    )
    assert metrics.total("smsgw_provider_errors_total", provider="spare") == 0
    assert metrics.value("smsgw_provider_request_duration_seconds_count", provider="flaky") >= 2
    assert metrics.value("smsgw_messages_total", status="QUEUED", provider="flaky") >= 1
    assert metrics.value("smsgw_messages_total", status="DELIVERED", provider="spare") == 3

    # Healed: the next probe closes the breaker, and the scrape shows it at once.
    flaky.state.settings.controls.fail_rate = 0.0
    await asyncio.sleep(0.6)
    assert (await final_state(client, await send(client))).provider == "flaky"
    assert (await scrape(running)).value("smsgw_breaker_state", provider="flaky") == 0


async def test_rate_limit_refusals_are_counted_by_quota(gw: Running) -> None:
    client = await gw.client()
    await PgAccountStore(gw.gateway.pool).set_rates(
        client.account_id, send_per_second=2, set_send=True
    )
    before = await scrape(gw)
    results = await asyncio.gather(
        *(send(client, f"+86138000{i:05d}") for i in range(4)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 2
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    after = await scrape(gw)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("smsgw_rate_limited_total", quota="ACCOUNT_SEND_RATE") == 2
    assert delta("smsgw_rpc_requests_total", method=SEND, code="RESOURCE_EXHAUSTED") == 2
    assert delta("smsgw_rpc_requests_total", method=SEND, code="OK") == 2


async def test_open_streams_are_counted_while_open(gw: Running) -> None:
    client = await gw.client()
    tomorrow = timestamp_pb2.Timestamp(seconds=int(time.time()) + 86_400)
    message_id = await send(client, send_at=tomorrow)  # stays PENDING: the stream stays open
    before = await scrape(gw)
    assert before.value("smsgw_open_streams") == 0
    call = client.messages.WatchMessageStatus(
        message_pb2.WatchMessageStatusRequest(ids=[message_id]), metadata=client.metadata
    )
    first = await call.read()
    assert isinstance(first, message_pb2.MessageStatusEvent)
    assert first.status == common_pb2.MESSAGE_STATUS_PENDING

    assert (await scrape(gw)).value("smsgw_open_streams") == 1
    call.cancel()

    async def closed() -> bool:
        return (await scrape(gw)).value("smsgw_open_streams") == 0

    await wait_for(closed)
    after = await scrape(gw)
    name = "smsgw_rpc_requests_total"
    cancelled = after.value(name, method=WATCH, code="CANCELLED")
    assert cancelled - before.value(name, method=WATCH, code="CANCELLED") == 1
