"""Batches through the providers' own bulk APIs (issue 15), end to end: a gateway on its
ports, a real database, the Skynoo and SendCloud emulators over HTTP. A campaign goes
out in a few bulk requests, never one request a number, and each number's receipt
comes back to its own message."""

from __future__ import annotations

import contextlib

import aiohttp
import grpc
import pytest
from sms.v1 import batch_pb2, common_pb2, template_pb2

from server.emulators.common import RunningEmulator
from server.emulators.skynoo import BATCH_CREATE_PATH, SEND_PATH
from tests.e2e.batch_calls import create, final, numbers
from tests.e2e.conftest import Client, GatewayFactory
from tests.e2e.emulated import cloud, only, sky, start_sendcloud, start_skynoo

S = common_pb2
POLL = {"retry_base_seconds": 0.05, "poll_interval_seconds": 0.2}


async def template_id(client: Client, content: str) -> int:
    with contextlib.suppress(grpc.aio.AioRpcError):  # created by an earlier call
        await client.templates.CreateTemplate(
            template_pb2.CreateTemplateRequest(
                template=template_pb2.Template(
                    code="order_shipped", content=content, use_type=S.USE_TYPE_NOTIFICATION
                )
            ),
            metadata=client.metadata,
        )
    page = await client.templates.ListTemplates(
        template_pb2.ListTemplatesRequest(), metadata=client.metadata
    )
    (template,) = [t for t in page.templates if t.code == "order_shipped"]
    return template.id


@pytest.mark.parametrize("source", ["template", "content"])
async def test_a_skynoo_campaign_goes_through_batch_create_with_each_numbers_values(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator], source: str
) -> None:
    emulator = await start_skynoo(emulators, delivery_delay=0.1)
    running = await start_gateway(routing=only(sky(emulator)), **POLL)
    client = await running.client()
    text = "Hi #name#, your order has shipped."
    # A stored template, or the campaign's own content with the same variables.
    by: dict[str, object] = (
        {"template_id": await template_id(client, text)}
        if source == "template"
        else {"content": text}
    )
    to = numbers(250)
    reply = await create(
        client,
        **by,
        numbers=to,
        template_data={
            n: batch_pb2.TemplateData(values={"name": f"u{i}"}) for i, n in enumerate(to)
        },
    )
    batch = await final(client, reply.task_id)
    assert (batch.status, batch.sent, batch.delivered, batch.failed) == (
        S.BATCH_STATUS_SUCCEEDED,
        250,
        250,
        0,
    )
    paths = [r.path for r in emulator.state.requests]
    # A handful of batch/create calls (claims of 100, then as many as a request
    # holds), no per-number send.
    assert 1 <= paths.count(BATCH_CREATE_PATH) <= 10
    assert paths.count(SEND_PATH) == 0
    # Every number reached Skynoo once, with its own values.
    contents = {r.phone: r.content for r in emulator.state.received}
    assert len(emulator.state.received) == 250
    for i, n in enumerate(to):
        assert contents[n] == f"Hi u{i}, your order has shipped."


async def test_a_sendcloud_campaign_shares_send_requests_and_each_number_is_delivered(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    emulator = await start_sendcloud(emulators, delivery_delay=0.1)
    running = await start_gateway(routing=only(cloud(emulator)), **POLL)
    client = await running.client()
    tid = await template_id(client, "Your order #order_no# has shipped.")
    to = numbers(300)
    reply = await create(
        client,
        template_id=tid,
        numbers=to,
        template_data={n: batch_pb2.TemplateData(values={"order_no": "A-1"}) for n in to},
    )
    batch = await final(client, reply.task_id)
    assert (batch.status, batch.sent, batch.delivered, batch.failed) == (
        S.BATCH_STATUS_SUCCEEDED,
        300,
        300,
        0,
    )
    sends = [r for r in emulator.state.requests if r.path.endswith("/smsapi/send")]
    # One request carries many phones (comma-separated): a handful, not 300.
    assert 1 <= len(sends) <= 10
    assert len(emulator.state.received) == 300
    assert len({r.phone for r in emulator.state.received}) == 300
    assert {r.content for r in emulator.state.received} == {"Your order A-1 has shipped."}


async def test_a_sendcloud_campaign_whose_answer_is_lost_is_sent_once(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    emulator = await start_sendcloud(emulators, delivery_delay=0.1)
    running = await start_gateway(routing=only(cloud(emulator)), **POLL)
    client = await running.client()
    tid = await template_id(client, "Your order #order_no# has shipped.")
    await _drop_next_answer(emulator)
    to = numbers(120)
    reply = await create(
        client,
        template_id=tid,
        numbers=to,
        template_data={n: batch_pb2.TemplateData(values={"order_no": "A-1"}) for n in to},
    )
    batch = await final(client, reply.task_id)
    assert (batch.sent, batch.delivered) == (120, 120)
    assert len(emulator.state.received) == 120  # none twice
    assert len({r.phone for r in emulator.state.received}) == 120


async def _drop_next_answer(emulator: RunningEmulator) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{emulator.base_url}/_emulator/sendcloud", json={"drop_answers": 1}) as r,
    ):
        assert r.status == 200, await r.text()
