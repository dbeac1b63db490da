"""Verification codes do not wait for a campaign (issue 21, P6), end to end: a gateway
with one outbox worker, a real database, the Skynoo emulator over HTTP answering
slowly. While the worker's campaign group is still at the provider, a code sent now
reaches the provider: the urgent worker takes it, not the busy one."""

from __future__ import annotations

import asyncio

from sms.v1 import verification_pb2

from server.emulators.common import RunningEmulator
from server.emulators.skynoo import BATCH_CREATE_PATH, SEND_PATH
from server.routes_file import ProviderSpec
from tests.e2e.batch_calls import create, final, get, numbers
from tests.e2e.conftest import GatewayFactory, wait_for
from tests.e2e.emulated import SKY, only, start_skynoo

SLOW = 1.5  # seconds the provider takes to answer any request
CODE_MOBILE = "+8613912345678"


def arrived(emulator: RunningEmulator, path: str, mobile: str | None = None) -> bool:
    """Whether such a request reached the emulator (recorded as it comes in, before
    the emulator's answer time)."""
    return any(
        r.path == path and (mobile is None or r.json().get("mobile") == mobile)
        for r in emulator.state.requests
    )


async def test_a_code_reaches_the_provider_while_a_campaign_group_is_still_out(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    emulator = await start_skynoo(emulators, latency=SLOW, delivery_delay=0.1)
    spec = ProviderSpec("sky", "skynoo", emulator.base_url, SKY, timeout_seconds=SLOW * 4)
    running = await start_gateway(
        routing=only(spec),
        dispatch_workers=1,  # and the urgent worker, by default
        poll_interval_seconds=0.2,
    )
    client = await running.client()
    batch = await create(client, content="20% off today.", numbers=numbers(20))

    async def campaign_out() -> bool:
        return arrived(emulator, BATCH_CREATE_PATH)

    async def code_out() -> bool:
        return arrived(emulator, SEND_PATH, CODE_MOBILE)

    # The one worker's group is at the provider, which answers in SLOW seconds.
    await wait_for(campaign_out, within=5)
    started = asyncio.get_running_loop().time()
    await client.verifications.SendVerification(
        verification_pb2.SendVerificationRequest(mobile=CODE_MOBILE), metadata=client.metadata
    )
    await wait_for(code_out, within=2 * SLOW)
    # Handed over before the campaign group came back: none of it is recorded yet.
    assert asyncio.get_running_loop().time() - started < SLOW / 2
    assert (await get(client, batch.task_id)).sent == 0
    # And the campaign goes on as before.
    done = await final(client, batch.task_id)
    assert done.sent == 20


async def test_a_code_is_not_held_up_by_an_earlier_code_the_provider_is_slow_with(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    emulator = await start_skynoo(emulators, latency=SLOW, delivery_delay=0.1)
    spec = ProviderSpec("sky", "skynoo", emulator.base_url, SKY, timeout_seconds=SLOW * 4)
    running = await start_gateway(routing=only(spec), dispatch_workers=1)
    client = await running.client()
    first, second = "+8613912340001", "+8613912340002"

    async def out(mobile: str) -> bool:
        return arrived(emulator, SEND_PATH, mobile)

    await client.verifications.SendVerification(
        verification_pb2.SendVerificationRequest(mobile=first), metadata=client.metadata
    )
    await wait_for(lambda: out(first), within=5)
    # The first code's request is at the provider for SLOW seconds; the urgent worker
    # claims the next code meanwhile.
    started = asyncio.get_running_loop().time()
    await client.verifications.SendVerification(
        verification_pb2.SendVerificationRequest(mobile=second), metadata=client.metadata
    )
    await wait_for(lambda: out(second), within=2 * SLOW)
    assert asyncio.get_running_loop().time() - started < SLOW / 2


async def test_a_code_takes_the_providers_next_rate_token_before_a_campaigns_queue(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    emulator = await start_skynoo(emulators, delivery_delay=0.1)
    # Four requests a second, one a number (no bulk): 40 numbers queue for 10 s.
    spec = ProviderSpec("sky", "skynoo", emulator.base_url, SKY, rate_per_second=4)
    running = await start_gateway(routing=only(spec), dispatch_workers=1, dispatch_bulk=False)
    client = await running.client()
    batch = await create(client, content="20% off today.", numbers=numbers(40))

    async def campaign_out() -> bool:
        return arrived(emulator, SEND_PATH)

    async def code_out() -> bool:
        return arrived(emulator, SEND_PATH, CODE_MOBILE)

    await wait_for(campaign_out, within=5)
    started = asyncio.get_running_loop().time()
    await client.verifications.SendVerification(
        verification_pb2.SendVerificationRequest(mobile=CODE_MOBILE), metadata=client.metadata
    )
    await wait_for(code_out, within=10)
    # Behind one campaign request at most: a token or two, not the campaign's ten seconds.
    assert asyncio.get_running_loop().time() - started < 2.0
    assert (await get(client, batch.task_id)).sent < 30
