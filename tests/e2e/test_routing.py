"""Routing through a real gateway: named providers, reload without loss (no route:
test_no_route.py)."""

from __future__ import annotations

import dataclasses

from sms.v1 import common_pb2, message_pb2

from server.routes_file import ProviderSpec, RouteSpec, RoutingConfig
from tests.e2e.conftest import Client, GatewayFactory, final_state


async def send(client: Client, mobile: str) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=mobile, use_type=common_pb2.USE_TYPE_NOTIFICATION, text="hello"
        ),
        metadata=client.metadata,
    )
    return reply.id


CHINA_ONLY = RoutingConfig(
    providers=(ProviderSpec("cn_a", "loopback"), ProviderSpec("cn_b", "loopback")),
    routes=(RouteSpec(providers=("cn_a",), prefixes=("+86",)),),
)


async def test_reload_switches_providers_without_dropping_work(
    start_gateway: GatewayFactory,
) -> None:
    running = await start_gateway(routing=CHINA_ONLY)
    client = await running.client()
    before = await send(client, "+8613800138000")
    moved = dataclasses.replace(
        CHINA_ONLY, routes=(RouteSpec(providers=("cn_b",), prefixes=("+86", "+1")),)
    )
    await running.gateway.reload(dataclasses.replace(running.gateway.settings, routing=moved))
    after = await send(client, "+14155550123")
    assert (await final_state(client, before)).status == common_pb2.MESSAGE_STATUS_DELIVERED
    state = await final_state(client, after)
    assert (state.status, state.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "cn_b")
